//! A host workspace W laid out to catch every leak:
//!
//! ```text
//! W/                      (optionally its own tmpfs, made shared, so propagation is visible)
//!   site.conf             W's other entries: must be invisible
//!   other-job/secret      a sibling job: must be invisible
//!   startup/cert.pem      shared, read-only
//!   startup/run-me        an executable copy of the probe (noexec check)
//!   startup/sub/          a host tmpfs mounted here: a non-recursive bind must not show it
//!   local/site.yaml       shared, read-only
//!   J/                    the job directory (chowned to the non-root test user)
//!   J/suid-probe          root-owned 04755 copy of the probe (nosuid check)
//!   J/dev-kmsg, J/dev-mem device nodes c 1 11 and c 1 1 (nodev check)
//! ```

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mount_plan::{HostPath, Layout, MountPlan};
use mount_plan_host::{verify, JobDir, VerifiedPlan, VerifyOptions};

use super::{run, unique};

/// Names inside W.
pub const SIBLING: &str = "other-job";
/// A file at W's top level.
pub const SITE_FILE: &str = "site.conf";
/// The host submount below startup/.
pub const SUBMOUNT: &str = "startup/sub";
/// The file inside the host submount.
pub const SUBMOUNT_FILE: &str = "host-secret";
/// Setuid copy of the probe in W/J.
pub const SUID_PROBE: &str = "suid-probe";
/// Executable copy of the probe in W/startup.
pub const RUN_ME: &str = "startup/run-me";
/// Device nodes in W/J: (name, major, minor).
pub const DEVICES: [(&str, u32, u32); 2] = [("dev-kmsg", 1, 11), ("dev-mem", 1, 1)];

/// How to lay out a workspace.
#[derive(Debug, Clone)]
pub struct WorkspaceOptions {
    /// Directory to create the workspace in (the engine must see it at the same path).
    pub base: PathBuf,
    /// Mount a tmpfs on W and make it shared (root only), so that a bind with non-private
    /// propagation shows a `shared:`/`master:` tag inside.
    pub shared_tmpfs: bool,
    /// Owner of W/J, so a non-root container user can write there.
    pub job_owner: Option<(u32, u32)>,
    /// The static probe to copy into W (setuid and executable copies).
    pub probe: PathBuf,
}

/// A laid-out workspace; unmounts and deletes everything on drop.
#[derive(Debug)]
pub struct Workspace {
    /// The per-test directory holding W.
    pub top: PathBuf,
    /// W.
    pub w: PathBuf,
    /// J.
    pub job: String,
    mounts: Vec<PathBuf>,
}

fn mount_tmpfs(target: &Path, shared: bool) -> Result<(), String> {
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=0755,size=64m", "tmpfs"])
        .arg(target))?;
    if shared {
        run(Command::new("mount").arg("--make-shared").arg(target))?;
    }
    Ok(())
}

impl Workspace {
    /// Lay out a fresh workspace.
    pub fn new(opts: &WorkspaceOptions) -> Result<Workspace, String> {
        let e = |what: &str, err: std::io::Error| format!("{what}: {err}");
        let top = opts.base.join(unique("mp-ws"));
        fs::create_dir_all(&top).map_err(|x| e("mkdir top", x))?;
        fs::set_permissions(&top, fs::Permissions::from_mode(0o755)).map_err(|x| e("chmod", x))?;
        let w = top.join("ws");
        fs::create_dir(&w).map_err(|x| e("mkdir W", x))?;
        let job = unique("job").replace('-', "_");
        let mut ws = Workspace {
            top,
            w: w.clone(),
            job: job.clone(),
            mounts: Vec::new(),
        };
        if opts.shared_tmpfs {
            mount_tmpfs(&w, true)?;
            ws.mounts.push(w.clone());
        }
        fs::set_permissions(&w, fs::Permissions::from_mode(0o755)).map_err(|x| e("chmod W", x))?;
        for d in ["startup", "local", SIBLING, SUBMOUNT, &job] {
            fs::create_dir(w.join(d)).map_err(|x| e(d, x))?;
            fs::set_permissions(w.join(d), fs::Permissions::from_mode(0o755))
                .map_err(|x| e("chmod", x))?;
        }
        fs::write(w.join(SITE_FILE), "site secret\n").map_err(|x| e("site", x))?;
        fs::write(w.join(SIBLING).join("secret"), "sibling secret\n").map_err(|x| e("sib", x))?;
        fs::write(w.join("startup/cert.pem"), "cert\n").map_err(|x| e("cert", x))?;
        fs::write(w.join("local/site.yaml"), "a: 1\n").map_err(|x| e("local", x))?;
        fs::copy(&opts.probe, w.join(RUN_ME)).map_err(|x| e("run-me", x))?;
        fs::set_permissions(w.join(RUN_ME), fs::Permissions::from_mode(0o755))
            .map_err(|x| e("chmod run-me", x))?;

        let sub = w.join(SUBMOUNT);
        mount_tmpfs(&sub, false)?;
        ws.mounts.push(sub.clone());
        fs::write(sub.join(SUBMOUNT_FILE), "host submount\n").map_err(|x| e("sub file", x))?;

        let jdir = w.join(&job);
        let suid = jdir.join(SUID_PROBE);
        fs::copy(&opts.probe, &suid).map_err(|x| e("suid copy", x))?;
        std::os::unix::fs::chown(&suid, Some(0), Some(0)).map_err(|x| e("chown suid", x))?;
        fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755))
            .map_err(|x| e("chmod suid", x))?;
        for (name, major, minor) in DEVICES {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                jdir.join(name).as_path(),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from_raw_mode(0o666),
                rustix::fs::makedev(major, minor),
            )
            .map_err(|x| format!("mknod {name}: {x}"))?;
            fs::set_permissions(jdir.join(name), fs::Permissions::from_mode(0o666))
                .map_err(|x| e("chmod dev", x))?;
        }
        if let Some((uid, gid)) = opts.job_owner {
            std::os::unix::fs::chown(&jdir, Some(uid), Some(gid)).map_err(|x| e("chown J", x))?;
        }
        Ok(ws)
    }

    /// W as a host path.
    pub fn host_path(&self) -> HostPath {
        HostPath::parse(self.w.to_str().expect("utf-8 path")).expect("a valid host path")
    }

    /// The default layout's plan for this workspace.
    pub fn plan(&self) -> MountPlan {
        let layout = Layout::default();
        layout
            .plan(&self.host_path(), &layout.job(&self.job).expect("job name"))
            .expect("plan")
    }

    /// The verified default plan.
    pub fn verified(&self) -> VerifiedPlan {
        let options = VerifyOptions {
            job_dir: JobDir::MustExist,
            ..VerifyOptions::default()
        };
        verify(self.plan(), &options).expect("verify the test workspace")
    }

    /// W/J on the host.
    pub fn job_dir(&self) -> PathBuf {
        self.w.join(&self.job)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        let _ = fs::remove_dir_all(&self.top);
    }
}
