//! The gate's host copy: how an engine on the launcher's machine receives the gate without an
//! archive call.
//!
//! Docker and Podman bind one file read-only at [`crate::gate::GATE_PATH`] (outside R, so
//! the contract's view is unchanged): `gate-<sha256 of the gate>` in the gate directory
//! ([`gate_dir`]: `MOUNT_PLAN_GATE_DIR`, else [`GATE_DIR_ROOT`] for root, else the user's
//! cache). The name is the content's digest, so one copy serves every launch of the same
//! gate and another build's gate never takes its place. Before each create the copy is
//! checked like a bind source ([`GateCopy::ensure`]): a regular file owned by root or by this
//! launcher, writable by no one, in a directory owned by root or this launcher and writable by
//! no one else, below directories only root or this launcher can change (a sticky directory
//! such as `/tmp` counts as unchangeable for what root owns); its content is compared byte for
//! byte with the embedded gate the first time this process uses it, and its identity (device,
//! inode, owner, mode, size, modification and change times) every time after. The audit then
//! requires the bind at the gate's path to come from exactly this file
//! ([`crate::Engine::gate_source`]).

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

use crate::container::LaunchError;
use crate::gate::GATE_BINARY;

/// The environment variable that names the gate directory (for an engine that sees another
/// filesystem than the launcher's: the directory must be at the same path for both).
pub const GATE_DIR_ENV: &str = "MOUNT_PLAN_GATE_DIR";
/// The gate directory of a launcher running as root.
pub const GATE_DIR_ROOT: &str = "/var/lib/mount-plan/gate";

/// The gate directory this process uses: [`GATE_DIR_ENV`], else [`GATE_DIR_ROOT`] for root,
/// else `$XDG_CACHE_HOME/mount-plan/gate` (`~/.cache/mount-plan/gate`) when that cache is
/// this launcher's own, else `/tmp/mount-plan-gate-UID` ([`user_gate_dir`]).
pub fn gate_dir() -> PathBuf {
    gate_dir_of(
        |name| std::env::var_os(name),
        mount_plan_host::effective_uid(),
    )
}

/// [`gate_dir`] for the launcher `me` whose environment variables `var` reads (an empty
/// value is unset).
fn gate_dir_of(var: impl Fn(&str) -> Option<std::ffi::OsString>, me: u32) -> PathBuf {
    let var = |name| var(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(GATE_DIR_ENV) {
        return PathBuf::from(dir);
    }
    if me == 0 {
        return PathBuf::from(GATE_DIR_ROOT);
    }
    let cache = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")));
    user_gate_dir(cache.as_deref(), me)
}

/// A non-root launcher's gate directory: `CACHE/mount-plan/gate` when the nearest existing
/// directory of that path is owned by `me`, else `/tmp/mount-plan-gate-UID`. A `HOME`
/// inherited from another user (`sudo -u` without `-H`, `setpriv`) is not this launcher's to
/// write; `/tmp` is sticky, and [`GateCopy::ensure`] refuses a directory there that someone
/// else made.
pub fn user_gate_dir(cache: Option<&Path>, me: u32) -> PathBuf {
    if let Some(cache) = cache.filter(|c| c.is_absolute()) {
        let wanted = cache.join("mount-plan").join("gate");
        let nearest = wanted
            .ancestors()
            .find_map(|d| fs::symlink_metadata(d).ok());
        if nearest.is_some_and(|m| m.uid() == me) {
            return wanted;
        }
    }
    PathBuf::from(format!("/tmp/mount-plan-gate-{me}"))
}

/// The path an engine binds the gate from: the copy's name in [`gate_dir`], resolved as far as
/// it exists (what [`GateCopy::ensure`] binds; the audit compares the container's bind with
/// it).
pub fn expected_source() -> String {
    let dir = gate_dir();
    fs::canonicalize(&dir)
        .unwrap_or(dir)
        .join(copy_name())
        .display()
        .to_string()
}

/// The file name of the embedded gate's copy: `gate-` and its SHA-256.
pub fn copy_name() -> String {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let digest = Sha256::digest(GATE_BINARY);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("gate-{hex}")
    })
    .clone()
}

/// A checked host copy of the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateCopy {
    path: PathBuf,
    identity: Identity,
}

/// What must not change between two uses of a copy whose content was compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    uid: u32,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(m: &fs::Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            uid: m.uid(),
            mode: m.mode(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// The copies whose content this process compared, by path.
fn compared() -> &'static Mutex<HashMap<PathBuf, Identity>> {
    static COMPARED: OnceLock<Mutex<HashMap<PathBuf, Identity>>> = OnceLock::new();
    COMPARED.get_or_init(Mutex::default)
}

impl GateCopy {
    /// The copy in [`gate_dir`], written if missing, checked (see the module).
    pub fn ensure() -> Result<GateCopy, LaunchError> {
        GateCopy::ensure_in(&gate_dir())
    }

    /// The copy in `dir`, written if missing, checked (see the module).
    pub fn ensure_in(dir: &Path) -> Result<GateCopy, LaunchError> {
        let err = |path: &Path, problem: String| LaunchError::GateCopy {
            path: path.display().to_string(),
            problem,
        };
        let me = mount_plan_host::effective_uid();
        if !dir.is_absolute() {
            return Err(err(
                dir,
                "the gate directory must be an absolute path".into(),
            ));
        }
        if fs::symlink_metadata(dir).is_err() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| err(dir, format!("cannot create it: {e}")))?;
        }
        let dir = fs::canonicalize(dir).map_err(|e| err(dir, e.to_string()))?;
        check_directories(&dir, me).map_err(|(p, why)| err(&p, why))?;
        let path = dir.join(copy_name());
        if fs::symlink_metadata(&path).is_err() {
            write_copy(&dir, &path).map_err(|e| err(&path, format!("cannot write it: {e}")))?;
        }
        let meta = fs::symlink_metadata(&path).map_err(|e| err(&path, e.to_string()))?;
        check_file(&meta, me).map_err(|why| err(&path, why))?;
        let identity = Identity::of(&meta);
        let known = compared()
            .lock()
            .expect("the gate copy table")
            .get(&path)
            .copied();
        if known != Some(identity) {
            compare_content(&path, identity).map_err(|why| err(&path, why))?;
            compared()
                .lock()
                .expect("the gate copy table")
                .insert(path.clone(), identity);
        }
        Ok(GateCopy { path, identity })
    }

    /// The copy's path, as the bind source (canonical: no link in it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The copy's path as text, for an engine's mount source.
    pub fn source(&self) -> String {
        self.path.display().to_string()
    }

    /// `(st_dev, st_ino)` of the copy.
    pub fn pin(&self) -> (u64, u64) {
        (self.identity.dev, self.identity.ino)
    }
}

/// The directory holding the copy and every directory above it: owned by root or `me`, and
/// writable by no one else (an ancestor may be world-writable when it is sticky, as `/tmp`:
/// then only its owner can rename what root or `me` owns in it).
fn check_directories(dir: &Path, me: u32) -> Result<(), (PathBuf, String)> {
    for (i, d) in dir.ancestors().enumerate() {
        let m = fs::symlink_metadata(d).map_err(|e| (d.to_path_buf(), e.to_string()))?;
        let mode = m.mode();
        if m.uid() != 0 && m.uid() != me {
            return Err((
                d.to_path_buf(),
                format!(
                    "owned by uid {}, neither root nor this launcher (uid {me}): its owner could replace the gate",
                    m.uid()
                ),
            ));
        }
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 && (i == 0 || !sticky) {
            return Err((
                d.to_path_buf(),
                format!(
                    "mode {:04o}: writable by others than its owner, who could replace the gate",
                    mode & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

/// The copy itself: a regular file owned by root or `me`, writable by no one, readable and
/// executable by everyone (a rootless engine's user reads it).
fn check_file(m: &fs::Metadata, me: u32) -> Result<(), String> {
    if !m.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if m.uid() != 0 && m.uid() != me {
        return Err(format!(
            "owned by uid {}, neither root nor this launcher (uid {me})",
            m.uid()
        ));
    }
    let mode = m.mode() & 0o7777;
    if mode != 0o555 {
        return Err(format!("mode {mode:04o}, expected 0555"));
    }
    Ok(())
}

/// Whether the file at `path` (still the one `identity` describes) holds the embedded gate.
fn compare_content(path: &Path, identity: Identity) -> Result<(), String> {
    let mut file = fs::File::open(path).map_err(|e| e.to_string())?;
    let opened = file.metadata().map_err(|e| e.to_string())?;
    if (opened.dev(), opened.ino()) != (identity.dev, identity.ino) {
        return Err("it was replaced while it was being checked".into());
    }
    let mut content = Vec::with_capacity(GATE_BINARY.len());
    std::io::Read::read_to_end(&mut file, &mut content).map_err(|e| e.to_string())?;
    if content != GATE_BINARY {
        return Err(format!(
            "its content ({} bytes) is not this launcher's gate ({} bytes) although its name says it is: remove it and launch again",
            content.len(),
            GATE_BINARY.len()
        ));
    }
    Ok(())
}

/// Write the copy under a temporary name and rename it into place (another launcher writing
/// the same copy at the same time writes the same bytes).
fn write_copy(dir: &Path, path: &Path) -> std::io::Result<()> {
    let tmp = dir.join(format!(
        ".{}.{}.{}",
        copy_name(),
        std::process::id(),
        crate::LaunchId::new()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o500)
            .open(&tmp)?;
        f.write_all(GATE_BINARY)?;
        f.sync_all()?;
        f.set_permissions(fs::Permissions::from_mode(0o555))?;
        // Published without replacing: a launch that found the copy missing at the same time
        // (another thread or process) may have published it first, and a copy another launch
        // is checking must not change under it (a rename would). Theirs is checked like any.
        match fs::hard_link(&tmp, path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    })();
    let _ = fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    /// Launches that find the copy missing at the same time all get the one copy, checked:
    /// none replaces it under another's check (which then refused: "replaced while it was
    /// being checked", seen in CI with parallel tests on a fresh gate directory).
    #[test]
    fn launches_that_find_the_copy_missing_at_once_share_one_copy() {
        for _ in 0..20 {
            let d = dir();
            let gates = d.path().join("gate");
            let barrier = std::sync::Barrier::new(8);
            let copies: Vec<Result<GateCopy, LaunchError>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            GateCopy::ensure_in(&gates)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let pins: Vec<(u64, u64)> = copies
                .into_iter()
                .map(|c| c.unwrap_or_else(|e| panic!("{e}")).pin())
                .collect();
            assert!(pins.windows(2).all(|w| w[0] == w[1]), "{pins:?}");
            let names: Vec<_> = fs::read_dir(&gates)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                names,
                vec![std::ffi::OsString::from(copy_name())],
                "no temporary left"
            );
        }
    }

    #[test]
    fn the_copy_is_written_once_named_by_its_content_and_read_only() {
        let d = dir();
        let gates = d.path().join("gate");
        let a = GateCopy::ensure_in(&gates).unwrap();
        assert_eq!(
            a.path().parent().unwrap(),
            fs::canonicalize(&gates).unwrap()
        );
        let name = a.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(name, copy_name());
        assert_eq!(name.len(), "gate-".len() + 64);
        let m = fs::metadata(a.path()).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o555);
        assert_eq!(fs::read(a.path()).unwrap(), GATE_BINARY);
        // Again: the same file, not rewritten.
        assert_eq!(a.pin(), (m.dev(), m.ino()));
        assert_eq!(a.source(), a.path().to_str().unwrap());
        let b = GateCopy::ensure_in(&gates).unwrap();
        assert_eq!(a.pin(), b.pin());
        assert_eq!(
            fs::read_dir(&gates).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    #[test]
    fn a_changed_copy_is_refused() {
        let d = dir();
        let gates = d.path().join("gate");
        let a = GateCopy::ensure_in(&gates).unwrap();
        // Replaced by other bytes under the same name (by its owner, root here).
        fs::remove_file(a.path()).unwrap();
        fs::write(a.path(), b"#!/bin/sh\nexec \"$@\"\n").unwrap();
        fs::set_permissions(a.path(), fs::Permissions::from_mode(0o555)).unwrap();
        let e = GateCopy::ensure_in(&gates).unwrap_err();
        assert_eq!(e.rule(), "gate-copy");
        assert!(e.to_string().contains("not this launcher's gate"), "{e}");
        // A writable copy.
        fs::remove_file(a.path()).unwrap();
        GateCopy::ensure_in(&gates).unwrap();
        fs::set_permissions(a.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let e = GateCopy::ensure_in(&gates).unwrap_err();
        assert!(e.to_string().contains("mode 0755"), "{e}");
        // A link in its place.
        fs::remove_file(a.path()).unwrap();
        std::os::unix::fs::symlink("/bin/sh", a.path()).unwrap();
        let e = GateCopy::ensure_in(&gates).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_user_cache_the_launcher_does_not_own_is_not_its_gate_directory() {
        let top = dir();
        let mine = top.path().join("home");
        fs::create_dir(&mine).unwrap();
        let owner = fs::metadata(&mine).unwrap().uid();
        // The cache's nearest existing directory is the launcher's: the gate goes there.
        assert_eq!(
            user_gate_dir(Some(&mine.join(".cache")), owner),
            mine.join(".cache/mount-plan/gate")
        );
        // Someone else's (a HOME inherited through setpriv or sudo): /tmp, per uid.
        let other = owner + 4242;
        assert_eq!(
            user_gate_dir(Some(&mine.join(".cache")), other),
            PathBuf::from(format!("/tmp/mount-plan-gate-{other}"))
        );
        // No cache at all, or a relative one.
        assert_eq!(
            user_gate_dir(None, other),
            PathBuf::from(format!("/tmp/mount-plan-gate-{other}"))
        );
        assert_eq!(
            user_gate_dir(Some(Path::new("rel/.cache")), owner),
            PathBuf::from(format!("/tmp/mount-plan-gate-{owner}"))
        );
    }

    #[test]
    fn the_gate_directory_is_the_variable_else_root_s_else_the_launcher_s_cache() {
        // A home of the launcher `me` (root makes it another user's, to be a user launcher).
        let home = dir();
        let mut me = fs::metadata(home.path()).unwrap().uid();
        if me == 0 {
            me = 4242;
            std::os::unix::fs::chown(home.path(), Some(me), None).unwrap();
        }
        let h = home.path().to_str().unwrap();
        let of = |vars: &[(&str, String)], me: u32| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            gate_dir_of(
                move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into()),
                me,
            )
        };
        let set = |v: &str| v.to_owned();
        // The variable wins, for root and anyone.
        for uid in [0, me] {
            assert_eq!(
                of(&[(GATE_DIR_ENV, set("/srv/g"))], uid),
                Path::new("/srv/g")
            );
        }
        // Unset or empty: root's directory for root.
        assert_eq!(of(&[], 0), Path::new(GATE_DIR_ROOT));
        assert_eq!(of(&[(GATE_DIR_ENV, set(""))], 0), Path::new(GATE_DIR_ROOT));
        // A user: XDG_CACHE_HOME, else HOME/.cache (an empty one is unset)...
        let xdg = [
            (GATE_DIR_ENV, set("")),
            ("XDG_CACHE_HOME", format!("{h}/xdg")),
            ("HOME", set("/nowhere")),
        ];
        assert_eq!(of(&xdg, me), Path::new(h).join("xdg/mount-plan/gate"));
        let home_only = [("XDG_CACHE_HOME", set("")), ("HOME", set(h))];
        assert_eq!(
            of(&home_only, me),
            Path::new(h).join(".cache/mount-plan/gate")
        );
        // ...when it is the launcher's; else, and with neither, /tmp per uid.
        let tmp = |uid: u32| PathBuf::from(format!("/tmp/mount-plan-gate-{uid}"));
        assert_eq!(of(&home_only, me + 1), tmp(me + 1));
        assert_eq!(of(&[], me), tmp(me));
    }

    /// Owned by root or by this launcher, whoever the launcher is; anyone else's is refused.
    #[test]
    fn a_directory_of_another_owner_is_refused() {
        let d = dir();
        let owner = fs::metadata(d.path()).unwrap().uid();
        check_directories(d.path(), owner).unwrap();
        if owner != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "under CI this test runs as root"
            );
            eprintln!("skipped: another owner's directory needs root");
            return;
        }
        // Root's directories are fine for a launcher of any uid.
        check_directories(d.path(), 4242).unwrap();
        let theirs = d.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(4243), None).unwrap();
        let (at, why) = check_directories(&theirs, 0).unwrap_err();
        assert_eq!(at, theirs);
        assert!(
            why.starts_with("owned by uid 4243, neither root nor this launcher (uid 0)"),
            "{why}"
        );
        check_directories(&theirs, 4243).unwrap();
        assert!(check_directories(&theirs, 4242).is_err());
        // The copy itself, by the same rule.
        let copy = GateCopy::ensure_in(&d.path().join("gate")).unwrap();
        let meta = |p: &Path| fs::symlink_metadata(p).unwrap();
        check_file(&meta(copy.path()), 4242).unwrap();
        std::os::unix::fs::chown(copy.path(), Some(4243), None).unwrap();
        let why = check_file(&meta(copy.path()), 0).unwrap_err();
        assert_eq!(
            why,
            "owned by uid 4243, neither root nor this launcher (uid 0)"
        );
        check_file(&meta(copy.path()), 4243).unwrap();
        assert!(check_file(&meta(copy.path()), 4242).is_err());
    }

    #[test]
    fn a_directory_others_can_change_is_refused() {
        let d = dir();
        let gates = d.path().join("gate");
        fs::create_dir(&gates).unwrap();
        fs::set_permissions(&gates, fs::Permissions::from_mode(0o777)).unwrap();
        let e = GateCopy::ensure_in(&gates).unwrap_err();
        assert_eq!(e.rule(), "gate-copy");
        assert!(e.to_string().contains("mode 0777"), "{e}");
        // Sticky and world-writable: fine above the directory, not as the directory.
        fs::set_permissions(&gates, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(GateCopy::ensure_in(&gates).is_err());
        fs::set_permissions(&gates, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        GateCopy::ensure_in(&gates).unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let e = GateCopy::ensure_in(&gates).unwrap_err();
        assert!(e.to_string().contains("mode 0777"), "{e}");
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(GateCopy::ensure_in(Path::new("relative/gate")).is_err());
    }
}
