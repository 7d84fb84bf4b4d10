//! Helpers shared by the integration tests: a real site workspace in a temporary directory,
//! pins read with `lstat`, and mounts removed by drop guards.
#![allow(dead_code)] // each test binary uses a different subset

use std::ffi::CStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mount_plan::{HostPath, Layout, LayoutSpec, MountPlan};
use mount_plan_host::{Pin, Resolver, VerifyOptions};

/// Both resolution methods: every link test runs through each.
pub const RESOLVERS: [Resolver; 2] = [Resolver::Openat2, Resolver::Walk];

/// A site: `<tmp>/ws` with `startup/cert`, `local/`, `job1/`, and `<tmp>/outside/marker`.
pub struct Site {
    pub tmp: tempfile::TempDir,
    pub ws: PathBuf,
    pub outside: PathBuf,
}

impl Site {
    pub fn new() -> Site {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ws = tmp.path().join("ws");
        for dir in ["", "startup", "local", "job1"] {
            let path = ws.join(dir);
            fs::create_dir_all(&path).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::write(ws.join("startup/cert"), b"secret").unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("marker"), b"outside").unwrap();
        Site { tmp, ws, outside }
    }

    /// The default layout's plan for `job` in this site's workspace.
    pub fn plan(&self, job: &str) -> MountPlan {
        plan_at(&self.ws, job)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
}

/// The default layout's plan for `job` in workspace `ws` (which need not exist).
pub fn plan_at(ws: &Path, job: &str) -> MountPlan {
    let layout = Layout::default();
    let ws = HostPath::parse(ws.to_str().unwrap()).unwrap();
    layout.plan(&ws, &layout.job(job).unwrap()).unwrap()
}

/// A plan with one extra mount of `source` at `/data`.
pub fn plan_with_extra(ws: &Path, job: &str, source: &Path) -> MountPlan {
    let spec = LayoutSpec {
        extra_mounts: vec![mount_plan::ExtraMountSpec {
            source: source.to_str().unwrap().to_owned(),
            target: "/data".to_owned(),
            read_only: true,
        }],
        ..LayoutSpec::default()
    };
    let layout = spec.build().unwrap();
    let ws = HostPath::parse(ws.to_str().unwrap()).unwrap();
    layout.plan(&ws, &layout.job(job).unwrap()).unwrap()
}

pub fn opts(resolver: Resolver) -> VerifyOptions {
    VerifyOptions {
        resolver,
        ..VerifyOptions::default()
    }
}

/// (dev, ino) of `path` itself, not following a link.
pub fn pin(path: &Path) -> Pin {
    let md = fs::symlink_metadata(path).unwrap();
    Pin {
        dev: md.dev(),
        ino: md.ino(),
    }
}

pub fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A mount that is detached when dropped (declare it after the temporary directory that
/// holds its target, so that it is dropped first).
pub struct Mounted(PathBuf);

impl Mounted {
    /// A guard for a mount made at `target` by the caller.
    pub fn new(target: &Path) -> Mounted {
        Mounted(target.to_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH) {
            eprintln!("warning: could not unmount {:?}: {e}", self.0);
        }
    }
}

/// The harness of `host_mounts` ignores the tests without root (fails them under CI), so a
/// mount that is still refused is a failure.
fn mount_failed(what: &str, target: &Path, e: rustix::io::Errno) -> Option<Mounted> {
    panic!("cannot {what} at {target:?} ({e}); this test needs root (CAP_SYS_ADMIN)");
}

/// Mount a fresh tmpfs at `target`; a failure when not permitted (the harness ignores the test without root).
pub fn mount_tmpfs(target: &Path) -> Option<Mounted> {
    match rustix::mount::mount(
        "tmpfs",
        target,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None::<&CStr>,
    ) {
        Ok(()) => Some(Mounted(target.to_owned())),
        Err(e) => mount_failed("mount a tmpfs", target, e),
    }
}

/// Bind-mount `source` at `target`; a failure when not permitted (the harness ignores the test without root).
pub fn bind_mount(source: &Path, target: &Path) -> Option<Mounted> {
    match rustix::mount::mount_bind(source, target) {
        Ok(()) => Some(Mounted(target.to_owned())),
        Err(e) => mount_failed("bind-mount", target, e),
    }
}
