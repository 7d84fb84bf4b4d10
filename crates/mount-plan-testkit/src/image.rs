//! The offline busybox image: Debian's static busybox with applet links, plus any extra files
//! (the probe), as a reproducible tar, and its import into an engine. Used by the engine
//! tests, the CLI tests and the benchmark (and written in shell once more by
//! `.ci/podman-setup`, which has no Rust).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Debian's static busybox, the image's whole userland.
pub const BUSYBOX: &str = "/bin/busybox";

/// The applets linked in `/bin`: every command the tests, the probe scenarios and the
/// benchmark run.
pub const APPLETS: [&str; 16] = [
    "sh", "echo", "cat", "ls", "sleep", "mkdir", "touch", "id", "true", "false", "rm", "stat",
    "test", "env", "pwd", "dd",
];

/// Run a command, returning stdout, or an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Write the image tar into `dir` (`dir/rootfs`, `dir/image.tar`): busybox, its [`APPLETS`],
/// `/tmp`, and each `(host file, path in the image)` of `extra` with mode 0755. Same inputs,
/// same bytes (sorted, owner 0, mtime 0); returns the tar's path and sha256. `dir` and the tar
/// are readable by every user (a rootless engine's user imports it).
pub fn busybox_tar(dir: &Path, extra: &[(&Path, &str)]) -> Result<(PathBuf, String), String> {
    if !Path::new(BUSYBOX).is_file() {
        return Err(format!(
            "{BUSYBOX} is missing (apt-get install busybox-static)"
        ));
    }
    let e = |e: std::io::Error| e.to_string();
    let rootfs = dir.join("rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    fs::create_dir_all(rootfs.join("bin")).map_err(e)?;
    fs::create_dir_all(rootfs.join("tmp")).map_err(e)?;
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).map_err(e)?;
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet)).map_err(e)?;
    }
    for (src, in_image) in extra {
        let dst = rootfs.join(in_image.trim_start_matches('/'));
        fs::copy(src, &dst).map_err(e)?;
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).map_err(e)?;
    }
    let tar = dir.join("image.tar");
    run(Command::new("tar")
        .arg("--sort=name")
        .arg("--owner=0")
        .arg("--group=0")
        .arg("--numeric-owner")
        .arg("--mtime=@0")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(e)?;
    fs::set_permissions(&tar, fs::Permissions::from_mode(0o644)).map_err(e)?;
    let bytes = fs::read(&tar).map_err(e)?;
    let digest = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((tar, digest))
}

/// `<engine cli> import [--change C]... <tar> <tag>`: `cli` is the engine's command with
/// whatever it needs before the subcommand (`docker`, `podman --url ...`, `runuser ... podman`).
pub fn import(cli: &mut Command, tar: &Path, tag: &str, changes: &[String]) -> Result<(), String> {
    cli.arg("import");
    for change in changes {
        cli.arg("--change").arg(change);
    }
    run(cli.arg(tar).arg(tag)).map(drop)
}
