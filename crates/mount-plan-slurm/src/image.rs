//! Images on the shared filesystem: unpacked once from `docker save` output into
//! `STORE/images/<id>/` (`rootfs/` and `config.json`, the image's own config), never pulled at
//! run time; and each job's `rootfs`, hard links to the unpacked image (Slurm 22.05 runs a
//! bundle's `rootfs` directory only: see [`crate::bundle`]).
//!
//! A job cannot change the image through its hard links: its root is mounted read-only, and
//! the plan's binds are the only writable places in it.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::bundle::ImageConfig;

/// The directory of image `id` (`sha256:<hex>` or `<hex>`) in `store`.
pub fn image_dir(store: &Path, id: &str) -> PathBuf {
    store
        .join("images")
        .join(id.strip_prefix("sha256:").unwrap_or(id))
}

/// Whether `id` names an image by id (`sha256:` and 64 hex digits).
pub fn is_image_id(id: &str) -> bool {
    id.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// The image's config, from `STORE/images/<id>/config.json`.
pub fn read_config(store: &Path, id: &str) -> io::Result<ImageConfig> {
    let text = fs::read(image_dir(store, id).join("config.json"))?;
    let value: Value = serde_json::from_slice(&text).map_err(io::Error::other)?;
    Ok(ImageConfig::from_json(&value))
}

/// Unpack `docker save` output (one image) into `store`, and return its id (`sha256:<hex>`,
/// the same id Docker gives it). Layers are applied in order, with their whiteouts; an image
/// already unpacked is left as it is. The archive is first extracted to a scratch directory
/// beside the images (its manifest comes last).
pub fn unpack_docker_save(archive: impl Read, store: &Path) -> io::Result<String> {
    let images = store.join("images");
    fs::create_dir_all(&images)?;
    let scratch = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(&images)?;
    tar::Archive::new(archive).unpack(scratch.path())?;
    let manifest: Value = serde_json::from_slice(&fs::read(scratch.path().join("manifest.json"))?)
        .map_err(io::Error::other)?;
    let entry = manifest
        .as_array()
        .and_then(|a| a.first())
        .ok_or_else(|| io::Error::other("docker save output without an image in manifest.json"))?;
    let config_name = entry["Config"]
        .as_str()
        .ok_or_else(|| io::Error::other("manifest.json names no Config"))?;
    let hex = Path::new(config_name)
        .file_stem()
        .and_then(|s| s.to_str())
        .map(|s| s.trim_start_matches("sha256:").to_owned())
        .unwrap_or_default();
    let id = format!("sha256:{hex}");
    if !is_image_id(&id) {
        return Err(io::Error::other(format!(
            "manifest.json's Config {config_name:?} is not named by the image id"
        )));
    }
    let dir = image_dir(store, &id);
    if dir.join("config.json").is_file() {
        return Ok(id);
    }
    let staging = scratch.path().join("image");
    let rootfs = staging.join("rootfs");
    fs::create_dir_all(&rootfs)?;
    fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755))?;
    for layer in entry["Layers"].as_array().into_iter().flatten() {
        let layer = layer
            .as_str()
            .ok_or_else(|| io::Error::other("a layer is not a path"))?;
        apply_layer(fs::File::open(scratch.path().join(layer))?, &rootfs)?;
    }
    fs::copy(
        scratch.path().join(config_name),
        staging.join("config.json"),
    )?;
    fs::rename(&staging, &dir)?;
    Ok(id)
}

/// Apply one layer tar to `rootfs`: whiteouts (`.wh.NAME` removes NAME, `.wh..wh..opq`
/// empties the directory) and entries, with their owners and modes.
fn apply_layer(layer: impl Read, rootfs: &Path) -> io::Result<()> {
    let mut ar = tar::Archive::new(layer);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_overwrite(true);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
        {
            return Err(io::Error::other(format!(
                "a layer entry leaves the root: {}",
                path.display()
            )));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_owned();
        let parent = rootfs.join(path.parent().unwrap_or(Path::new("")));
        if name.starts_with(".wh.") && !inside(rootfs, &parent)? {
            // A whiteout below a symbolic link that leads out of the root filesystem (a
            // hostile layer) would remove this machine's files.
            return Err(io::Error::other(format!(
                "a whiteout leaves the root through a link: {}",
                path.display()
            )));
        }
        if name == ".wh..wh..opq" {
            if parent.is_dir() {
                for child in fs::read_dir(&parent)? {
                    remove_any(&child?.path())?;
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            remove_any(&parent.join(hidden))?;
            continue;
        }
        entry.unpack_in(rootfs)?;
    }
    Ok(())
}

/// Whether `dir` (when it exists) resolves to a place inside `root`.
fn inside(root: &Path, dir: &Path) -> io::Result<bool> {
    match dir.canonicalize() {
        Ok(real) => Ok(real.starts_with(root.canonicalize()?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Make `to` a copy of the tree at `from` in which every file is a hard link to the
/// original (directories and symbolic links are new, with the originals' modes and owners).
pub fn link_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    fs::create_dir(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let m = fs::symlink_metadata(&src)?;
        if m.is_dir() {
            link_tree(&src, &dst)?;
        } else if m.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
            lchown(&dst, Some(m.uid()), Some(m.gid())).or_else(ignore_perm)?;
        } else {
            fs::hard_link(&src, &dst)?;
        }
    }
    lchown(to, Some(meta.uid()), Some(meta.gid())).or_else(ignore_perm)?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    Ok(())
}

/// Create the directory `target` (absolute, inside the container) in a job's `rootfs`, its
/// last component with `mode` (an existing one is replaced by a fresh directory: the job's
/// tree is its own, the image's is never touched).
pub fn mount_point(rootfs: &Path, target: &str, mode: u32) -> io::Result<()> {
    let rel = target.trim_start_matches('/');
    if rel.is_empty() {
        return Ok(());
    }
    // Component by component, never through a link of the image (it would lead out of the
    // job's tree, onto this machine's own directories).
    let mut at = rootfs.to_path_buf();
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} in the image is not a directory (a link?): R's mount point {target} cannot be made there",
                    at.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&at)?,
            Err(e) => return Err(e),
        }
    }
    let path = rootfs.join(rel);
    remove_any(&path)?;
    fs::create_dir(&path)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
}

/// A launcher that is not root keeps its own ownership of the new directories.
fn ignore_perm(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::PermissionDenied {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sha256_and_64_lowercase_hex() {
        assert!(is_image_id(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_image_id("busybox:latest"));
        assert!(!is_image_id(&format!("sha256:{}", "A".repeat(64))));
    }

    #[test]
    fn a_linked_tree_shares_inodes_and_keeps_links() {
        let d = tempfile::tempdir().unwrap();
        let from = d.path().join("from");
        fs::create_dir_all(from.join("bin")).unwrap();
        fs::write(from.join("bin/busybox"), b"x").unwrap();
        std::os::unix::fs::symlink("busybox", from.join("bin/sh")).unwrap();
        link_tree(&from, &d.path().join("to")).unwrap();
        let a = fs::metadata(from.join("bin/busybox")).unwrap();
        let b = fs::metadata(d.path().join("to/bin/busybox")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(
            fs::read_link(d.path().join("to/bin/sh")).unwrap(),
            Path::new("busybox")
        );
    }

    #[test]
    fn whiteouts_remove_what_lower_layers_left() {
        let d = tempfile::tempdir().unwrap();
        let layer = |files: &[(&str, &[u8])]| {
            let mut b = tar::Builder::new(Vec::new());
            for (p, data) in files {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                h.set_cksum();
                b.append_data(&mut h, p, *data).unwrap();
            }
            b.into_inner().unwrap()
        };
        apply_layer(
            &layer(&[("a/x", b"1"), ("a/y", b"2"), ("b/z", b"3")])[..],
            d.path(),
        )
        .unwrap();
        apply_layer(
            &layer(&[("a/.wh.x", b""), ("b/.wh..wh..opq", b"")])[..],
            d.path(),
        )
        .unwrap();
        assert!(!d.path().join("a/x").exists());
        assert!(d.path().join("a/y").exists());
        assert!(!d.path().join("b/z").exists());
    }

    #[test]
    fn a_whiteout_through_a_link_out_of_the_root_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("keep"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "out/.wh.keep", &b""[..]).unwrap();
        let err = apply_layer(&b.into_inner().unwrap()[..], &root).unwrap_err();
        assert!(
            err.to_string().contains("whiteout leaves the root"),
            "{err}"
        );
        assert!(outside.join("keep").exists());
    }
}
