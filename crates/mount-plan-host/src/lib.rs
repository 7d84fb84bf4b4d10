//! # mount-plan-host: a plan checked against the real workspace
//!
//! **Guarantee.** [`verify`] turns a [`MountPlan`] into a [`VerifiedPlan`], the only type
//! backends accept, when and only when, at the time of the check:
//!
//! - the workspace W, as the launcher sees it, is a real directory (its last component is not a
//!   symlink), owned by the expected user and not writable by group or others
//!   ([`PermissionPolicy`]);
//! - every shared directory W/&lt;name&gt; and the job directory W/J is a real directory reached
//!   from W's handle **without following any symlink or magic link and without crossing a
//!   mount point**: `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`, or, where `openat2` is unavailable, an
//!   `O_PATH | O_NOFOLLOW` open of the single component from W's handle followed by a device
//!   and mount-id comparison ([`Resolver`]). A bind source on another filesystem, or that is
//!   itself a mount point, is refused with both device numbers in the error;
//! - the shared directories pass the same owner and permission rules as W;
//! - every extra mount's source is a directory whose last component is not a symlink, and is
//!   neither W, nor inside W, nor above W **by identity**: the opened source and W's handle
//!   are each walked up with `..` to `/`, and their places in the filesystem are compared, so
//!   a path that reaches W through a symlink or a bind mount (`/x/alias/job-2`, `alias` a bind
//!   of W, or a bind of W/job-2 alone) is refused (`extra-aliases-workspace`).
//!
//! The shared directories and W/J are scanned (same mount, no link followed, at most
//! [`MAX_SCAN_DEPTH`] levels): sockets, fifos and device nodes that a bind would carry into the
//! container are reported as [`Finding`]s ([`VerifiedPlan::findings`]), not refused.
//!
//! The decision is always taken on the descriptor that was opened (`fstat` on it), never on a
//! second lookup by name, so a directory swapped for a symlink mid-check yields either the real
//! directory or an error, never the link's target. The verified plan records the identity
//! ([`Pin`]: `st_dev`, `st_ino`) of W and of every bind source, so that a backend can compare
//! it with what the container really got.
//!
//! **Two views of one workspace.** The plan holds host paths, as the engine sees them. The
//! launcher may see W elsewhere (W mounted at `/var/tmp/ws` in its own container):
//! [`HostView::at`] names that path. Every check runs through the launcher's path, on the same
//! inodes; the verified plan keeps the host paths.
//!
//! **Job directory creation.** [`JobDir::CreateFresh`] and [`JobDir::CreateIfMissing`] create
//! W/J with `mkdirat` from W's handle, then reopen it without following links and set the exact
//! mode with `fchmod` (the umask does not apply). If anything fails after the directory was
//! created, it is removed again: a failed verification leaves nothing behind.
//!
//! ```
//! use mount_plan::{HostPath, Layout};
//! use mount_plan_host::{verify, HostView, JobDir, VerifyOptions};
//! # use std::os::unix::fs::PermissionsExt;
//! # let tmp = tempfile::tempdir()?;
//! # let launcher_view = tmp.path().join("ws");
//! # for dir in ["", "startup", "local"] {
//! #     std::fs::create_dir_all(launcher_view.join(dir))?;
//! #     std::fs::set_permissions(launcher_view.join(dir), std::fs::Permissions::from_mode(0o755))?;
//! # }
//!
//! // The engine mounts /srv/site/...; this process sees the same directory at `launcher_view`.
//! let layout = Layout::default();
//! let plan = layout.plan(&HostPath::parse("/srv/site")?, &layout.job("job-1")?)?;
//! let options = VerifyOptions {
//!     view: Some(HostView::at(&launcher_view)),
//!     job_dir: JobDir::create_fresh(),
//!     ..VerifyOptions::default()
//! };
//! let verified = verify(plan, &options)?;
//! assert!(verified.job_dir_created());
//! assert_eq!(verified.plan().job_bind().source().as_str(), "/srv/site/job-1");
//! println!("job directory pinned at {:?}", verified.job_pin());
//!
//! // A second fresh directory of the same name is refused.
//! let again = layout.plan(&HostPath::parse("/srv/site")?, &layout.job("job-1")?)?;
//! assert_eq!(verify(again, &options).unwrap_err().rule(), "exists");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Limits
//!
//! - **A check, not a lock.** Nothing stops the host from changing after [`verify`] returns:
//!   the engine resolves the host paths again when it mounts them. The pins exist so that a
//!   backend can compare them with the container's view afterwards; refusing writable W and
//!   shared directories keeps other users from swapping entries in between.
//! - **W's parent components are trusted.** Only W's last component is opened with
//!   `O_NOFOLLOW`; the directories above it are site configuration. With
//!   [`VerifyOptions::strict_paths`] no component of W's path (nor of an extra mount's source)
//!   may be a symlink; it is off by default because sites commonly reach their storage through a
//!   symlinked mount (`/data -> /mnt/disk1`), and whoever can change `/` or `/srv` already owns
//!   the host.
//! - **Extra mounts** (role `Extra`, outside W) are opened by their full path with `O_PATH |
//!   O_NOFOLLOW` (the last component only, unless strict) and pinned; they may live on any
//!   filesystem, and no owner or permission rule applies to them: they are site-configured
//!   datasets. Their launcher path is the host path unless [`HostView::map_extra`] says
//!   otherwise.
//! - **The job directory itself** need not be private: the job writes there, and a site may
//!   share it with a group on purpose. What an attacker needs to swap W/J is write access to
//!   W, which is refused. Entries *inside* W/J belong to the job; see the hard-link option.
//!   Its mode may not have set-id bits nor write for others ([`JOB_DIR_FORBIDDEN_BITS`]): a
//!   mode asked for with them is refused (`job-dir-mode`), an existing W/J with them too
//!   (`job-dir-loose`).
//! - **Permissions** are read from the mode bits. POSIX ACL entries that grant write show up
//!   in the group bits (the ACL mask), so they are refused too; other access control (SELinux,
//!   capabilities of other processes, root) is out of scope.
//! - **Hard links.** [`VerifyOptions::refuse_hard_links`] makes the scan of W/J refuse any
//!   non-directory (regular file, socket, fifo, device node, symlink) with more than one link,
//!   and any place it cannot look into. It is off by default: legitimate job directories can
//!   hold hard links (`cp -al` snapshots, package caches), and a fresh job directory
//!   ([`JobDir::CreateFresh`]) is the stronger defence. Like every check, it is a snapshot.
//! - **The scan** reads every directory of the shared directories and of W/J on each
//!   verification: its cost is proportional to their number of entries. Without
//!   `refuse_hard_links`, a directory it cannot read is a [`FindingKind::Incomplete`] finding.
//! - **Extra mounts by identity** compare W with the source and its ancestors, and, for a bind
//!   mount of a directory *below* W mounted elsewhere (no ancestor in common with W), the two
//!   places in their filesystem read from `/proc/self/mountinfo` and `/proc/self/fd`. Without
//!   a readable `/proc`, only the walks decide and such a bind of a subdirectory is not caught.
//! - **After the job**, [`VerifiedPlan::sweep_job_dir`] clears set-user-ID and set-group-ID
//!   bits in W/J and [`VerifiedPlan::workspace_mount_flags`] says whether W's mount is `nosuid`
//!   and `nodev`; [`VerifiedPlan::compare_sources`] compares the bind sources an engine reports
//!   with the pins.
//! - Linux only. `openat2` needs Linux 5.6; the mount-id comparison of the fallback walk needs
//!   `statx` with `STATX_MNT_ID` (5.8) and is skipped where the kernel does not report it (the
//!   device comparison still applies).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod alias;
mod claim;
mod claim_lock;
mod compare;
mod error;
mod open;
mod scan;
mod sweep;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mount_plan::{BindRole, ContainerPath, HostPath, MountPlan};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{fchmod, fstat, mkdirat, Mode};
use rustix::io::Errno;

pub use claim::JobDirRelease;
pub use compare::PinMismatch;
pub use error::{HostError, Overlap, Subject};
pub use scan::{Finding, FindingKind, MAX_SCAN_DEPTH};
pub use sweep::{
    ClearedFile, JobDirState, SpecialFile, SweepProblem, SweepReport, WorkspaceMountFlags,
};

use open::{Base, Method};

/// The default mode of a job directory that [`verify`] creates.
pub const DEFAULT_JOB_DIR_MODE: u32 = 0o750;

/// Mode bits a job directory may not have: set-user-ID, set-group-ID and write for others
/// (any host user could plant links, fifos and sockets in the job's only writable view).
/// A mode asked for with them is refused (rule `job-dir-mode`), and so is an existing W/J
/// that has them (rule `job-dir-loose`).
pub const JOB_DIR_FORBIDDEN_BITS: u32 = 0o6002;

/// (device, inode) identity of a directory, as `stat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Pin {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl Pin {
    fn of(st: &rustix::fs::Stat) -> Pin {
        #[allow(clippy::useless_conversion)] // `st_ino`'s type differs between architectures
        let ino = u64::from(st.st_ino);
        Pin {
            dev: open::dev_of(st),
            ino,
        }
    }
}

/// Where this process sees the plan's host workspace W (and, optionally, extra mount sources).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostView {
    launcher_workspace: Option<PathBuf>,
    extra: Vec<(HostPath, PathBuf)>,
}

impl HostView {
    /// The launcher sees W at the same path the engine does.
    pub fn same_path() -> Self {
        HostView::default()
    }

    /// The launcher sees W at `path` (for example W mounted into the launcher's container).
    /// It must be absolute.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        HostView {
            launcher_workspace: Some(path.into()),
            extra: Vec::new(),
        }
    }

    /// The launcher sees the extra mount source `host` at `path`. Unmapped extra sources are
    /// opened at their host path.
    pub fn map_extra(mut self, host: HostPath, path: impl Into<PathBuf>) -> Self {
        self.extra.retain(|(h, _)| *h != host);
        self.extra.push((host, path.into()));
        self
    }

    /// The path this process opens for the plan's workspace `workspace`.
    pub fn workspace_path(&self, workspace: &HostPath) -> PathBuf {
        match &self.launcher_workspace {
            // `components()` drops a trailing `/`, which would make the kernel follow a
            // symlink in the last component.
            Some(path) => path.components().collect(),
            None => PathBuf::from(workspace.as_str()),
        }
    }

    /// The path this process opens for the extra mount source `source`.
    pub fn extra_path(&self, source: &HostPath) -> PathBuf {
        self.extra.iter().find(|(h, _)| h == source).map_or_else(
            || PathBuf::from(source.as_str()),
            |(_, p)| p.components().collect(),
        )
    }

    fn check(&self) -> Result<(), HostError> {
        for path in self
            .launcher_workspace
            .iter()
            .chain(self.extra.iter().map(|(_, p)| p))
        {
            if !path.is_absolute() {
                return Err(HostError::LauncherPath { path: path.clone() });
            }
        }
        Ok(())
    }
}

/// What to do about the job directory W/J.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobDir {
    /// W/J must already exist.
    #[default]
    MustExist,
    /// Create W/J when missing (with exactly this mode), use it when present.
    CreateIfMissing {
        /// Permission bits (at most 0o7777), applied with `fchmod` regardless of the umask.
        mode: u32,
    },
    /// Create W/J; fail with rule `exists` if the name is taken (by anything, even a link).
    CreateFresh {
        /// Permission bits (at most 0o7777), applied with `fchmod` regardless of the umask.
        mode: u32,
    },
}

impl JobDir {
    /// [`JobDir::CreateFresh`] with [`DEFAULT_JOB_DIR_MODE`].
    pub fn create_fresh() -> Self {
        JobDir::CreateFresh {
            mode: DEFAULT_JOB_DIR_MODE,
        }
    }
    /// [`JobDir::CreateIfMissing`] with [`DEFAULT_JOB_DIR_MODE`].
    pub fn create_if_missing() -> Self {
        JobDir::CreateIfMissing {
            mode: DEFAULT_JOB_DIR_MODE,
        }
    }
}

/// What a permission or owner finding on W or a shared directory does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PermissionPolicy {
    /// Fail with rule `permissions` or `owner`.
    #[default]
    Refuse,
    /// Verify anyway and report the finding in [`VerifiedPlan::warnings`].
    Warn,
}

/// How paths below W are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolver {
    /// `openat2` when the kernel (and any seccomp filter) allows it, otherwise the walk.
    #[default]
    Auto,
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
    /// RESOLVE_NO_XDEV`; fail when it is unavailable.
    Openat2,
    /// The fallback: each component opened with `O_PATH | O_NOFOLLOW` from its parent's
    /// handle, then compared with W's device and mount id.
    Walk,
}

/// Options of [`verify`]. Build with `..VerifyOptions::default()`: fields may be added.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Where this process sees W (default: at the plan's host path).
    pub view: Option<HostView>,
    /// Whether W/J must exist or is created.
    pub job_dir: JobDir,
    /// What an owner or permission finding on W or a shared directory does.
    pub permissions: PermissionPolicy,
    /// Expected owner uid of W and shared dirs (default: this process's effective uid).
    pub expected_owner: Option<u32>,
    /// Refuse a non-directory (regular file, socket, fifo, device node, symlink) with more than
    /// one link anywhere in W/J (default off: see the crate docs' limits).
    pub refuse_hard_links: bool,
    /// Refuse a symlink in any component of W's launcher path and of extra sources' paths,
    /// not only the last (default off: see the crate docs' limits).
    pub strict_paths: bool,
    /// How paths below W are resolved (default [`Resolver::Auto`]).
    pub resolver: Resolver,
    /// Owner (uid, gid) given to a job directory this verification creates (default: this
    /// process's). For a launcher that runs as root but whose jobs run as another user, such
    /// as a rootless Podman service's user. An existing directory is never changed.
    pub job_dir_owner: Option<(u32, u32)>,
}

/// The pin of one bind source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BindPin {
    /// The bind's container target.
    pub target: ContainerPath,
    /// The bind's host source (as the engine sees it).
    pub source: HostPath,
    /// Why the bind is in the plan.
    pub role: BindRole,
    /// The source directory's identity.
    #[serde(flatten)]
    pub pin: Pin,
}

/// The identities recorded by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pins {
    /// The workspace W.
    pub workspace: Pin,
    /// Every bind source, in the plan's mount order.
    pub binds: Vec<BindPin>,
}

/// A plan whose bind sources were checked on the real filesystem; the only type backends accept.
///
/// Serialises as the plan's own fields (`version`, `job`, `workspace`, `container_root`,
/// `workdir`, `mounts`) followed by `"pins": {"workspace": {"dev", "ino"}, "binds": [{"target",
/// "source", "role", "dev", "ino"}]}`, `launcher_workspace`, `resolver`, `job_dir_created`,
/// `warnings` and `findings`: the one form of a verified plan, which `mount-plan plan --verify`
/// prints and Python's `VerifiedPlan.to_dict()` returns.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifiedPlan {
    #[serde(flatten)]
    plan: MountPlan,
    pins: Pins,
    #[serde(serialize_with = "ser_lossy_path")]
    launcher_workspace: PathBuf,
    resolver: Resolver,
    job_dir_created: bool,
    warnings: Vec<String>,
    findings: Vec<Finding>,
    /// The shared claim on W/J, held while this plan (or a clone) lives.
    #[serde(skip)]
    claim: Arc<claim::JobDirClaim>,
    /// W's and W/J's pinned handles.
    #[serde(skip)]
    handles: Arc<Handles>,
    /// W/J's owner and mode as verified, which the sweep puts back.
    #[serde(skip)]
    job_dir_state: JobDirState,
}

/// The handles a verification opened, kept for the host facts asked after it.
#[derive(Debug)]
struct Handles {
    workspace: OwnedFd,
    workspace_at: Subject,
    job: OwnedFd,
    job_at: Subject,
}

fn ser_lossy_path<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

impl VerifiedPlan {
    /// The plan, unchanged (host paths).
    pub fn plan(&self) -> &MountPlan {
        &self.plan
    }
    /// The identity of W.
    pub fn workspace_pin(&self) -> Pin {
        self.pins.workspace
    }
    /// The identity of the source of the bind at `target`, if the plan has such a bind.
    pub fn bind_pin(&self, target: &ContainerPath) -> Option<Pin> {
        self.pins
            .binds
            .iter()
            .find(|b| &b.target == target)
            .map(|b| b.pin)
    }
    /// The identity of the job directory W/J.
    pub fn job_pin(&self) -> Pin {
        self.pins
            .binds
            .iter()
            .find(|b| b.role == BindRole::Job)
            .map(|b| b.pin)
            .expect("a verified plan always pins its job bind")
    }
    /// All recorded identities.
    pub fn pins(&self) -> &Pins {
        &self.pins
    }
    /// Findings that [`PermissionPolicy::Warn`] let through.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
    /// The path through which W was checked.
    pub fn launcher_workspace(&self) -> &Path {
        &self.launcher_workspace
    }
    /// The resolution actually used ([`Resolver::Openat2`] or [`Resolver::Walk`]).
    pub fn resolver(&self) -> Resolver {
        self.resolver
    }
    /// Whether this verification created W/J.
    pub fn job_dir_created(&self) -> bool {
        self.job_dir_created
    }
    /// What the scan of the shared directories and W/J found that is not a refusal: sockets,
    /// fifos and device nodes a bind carries into the container, and places the scan could not
    /// look into.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The mount flags of W's filesystem, read with `fstatvfs` on W's pinned handle (so on the
    /// directory that was checked, wherever it is now). A launcher uses them to know whether a
    /// set-user-ID file or a device node a job leaves in W/J matters to host users: on a
    /// `nosuid`, `nodev` mount it does not.
    pub fn workspace_mount_flags(&self) -> Result<WorkspaceMountFlags, HostError> {
        sweep::mount_flags(self.handles.workspace.as_fd(), &self.handles.workspace_at)
    }

    /// Sweep the job directory after its container is gone. First W/J's owner and mode are
    /// put back as they were verified ([`VerifiedPlan::job_dir_state`]; a root job may have
    /// `chmod`ed its own directory open). Then W/J is walked from its pinned handle, depth
    /// first with an explicit stack and no depth limit (every directory opened `O_RDONLY |
    /// O_DIRECTORY | O_NOFOLLOW` from its parent's handle, no link followed, never leaving
    /// W/J's mount, a bounded number of handles open: a directory closed on the way down is
    /// reopened by name and compared with its identity), and the set-user-ID and set-group-ID
    /// bits of every regular file are cleared (opened `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY`,
    /// then `fstat` and `fchmod` on that descriptor); a set-id file that cannot be changed
    /// (another user's) is removed. Sockets, fifos and device nodes are reported, not removed.
    /// What could be neither cleared nor removed is listed in
    /// [`SweepReport::unhandled`]: the sweep is then incomplete
    /// ([`SweepReport::is_complete`]) and a launcher must say so. Fails only when W/J itself
    /// cannot be read.
    ///
    /// Entries swapped while the sweep runs are either the same kind of object (decided on the
    /// opened descriptor) or skipped; a set-id file renamed into a directory already swept
    /// stays set-id, so run it when nothing writes to W/J any more.
    pub fn sweep_job_dir(&self) -> Result<SweepReport, HostError> {
        sweep::sweep(
            self.handles.job.as_fd(),
            &self.handles.job_at,
            Some(self.job_dir_state),
        )
    }

    /// W/J as this process sees it (W's launcher path and J's name).
    pub fn launcher_job_dir(&self) -> PathBuf {
        self.handles.job_at.launcher_path.clone()
    }

    /// Whether host users other than W's owner may pass through W (its mode grants search
    /// to its group or to others): then W/J is only as closed as its own mode, which a root
    /// job can change while it runs.
    pub fn workspace_reachable_by_others(&self) -> Result<bool, HostError> {
        let st = fstat(&self.handles.workspace)
            .map_err(|e| open::io_err(&self.handles.workspace_at, "stat", e))?;
        Ok(st.st_mode & 0o011 != 0)
    }

    /// W/J's owner and mode when it was verified (or created): what
    /// [`VerifiedPlan::sweep_job_dir`] puts back after the job.
    pub fn job_dir_state(&self) -> JobDirState {
        self.job_dir_state
    }

    /// Release the job directory after a launch whose command never ran: W/J is removed
    /// only if this verification created it, the name still leads to that very directory,
    /// it is empty, and no other launch holds it (each verification holds a shared claim on
    /// W/J while its plan lives: see `claim_lock`, a lock no other host user can take). Never
    /// follows a link; idempotent.
    pub fn release_job_dir(&self) -> Result<JobDirRelease, HostError> {
        self.claim.release()
    }
}

/// A directory opened by its full path, its last component not followed.
const OPEN_DIR_NOFOLLOW: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::DIRECTORY)
    .union(rustix::fs::OFlags::NOFOLLOW)
    .union(rustix::fs::OFlags::CLOEXEC);

/// The facts about a workspace W that decide how far a job's outputs reach, read from `path`
/// (its last component not followed): the mount flags of its filesystem, and whether host
/// users other than its owner may pass through it (its mode grants search to its group or
/// others). For `doctor`; a launch reads the same facts from its verified plan.
pub fn workspace_reach(path: &Path) -> Result<(WorkspaceMountFlags, bool), HostError> {
    let at = Subject::new(
        "workspace",
        path.to_string_lossy().into_owned(),
        path.to_owned(),
    );
    let fd = rustix::fs::openat(rustix::fs::CWD, path, OPEN_DIR_NOFOLLOW, Mode::empty())
        .map_err(|e| open::io_err(&at, "open", e))?;
    let st = fstat(&fd).map_err(|e| open::io_err(&at, "stat", e))?;
    Ok((
        sweep::mount_flags(fd.as_fd(), &at)?,
        st.st_mode & 0o011 != 0,
    ))
}

/// This process's effective uid: whether a launcher may change what a job writes.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Sweep a job directory by its path and identity, without a verified plan: for `gc`, which
/// removes a container whose launcher died before its own sweep. `path` is W/J as this
/// process sees it (its last component is not followed); it is swept only when it is still
/// the directory `pin` names (rule `job-dir-replaced` otherwise), and `state` (its verified
/// owner and mode) is put back first, as [`VerifiedPlan::sweep_job_dir`] does.
pub fn sweep_job_dir_at(
    path: &Path,
    pin: Pin,
    state: JobDirState,
) -> Result<SweepReport, HostError> {
    let at = Subject::new(
        "job directory",
        path.to_string_lossy().into_owned(),
        path.to_owned(),
    );
    let fd = rustix::fs::openat(rustix::fs::CWD, path, OPEN_DIR_NOFOLLOW, Mode::empty()).map_err(
        |e| match e {
            Errno::NOENT => HostError::Missing { at: at.clone() },
            e => open::io_err(&at, "open", e),
        },
    )?;
    let st = fstat(&fd).map_err(|e| open::io_err(&at, "stat", e))?;
    let found = Pin::of(&st);
    if found != pin {
        return Err(HostError::JobDirReplaced {
            at,
            expected: pin,
            found,
        });
    }
    sweep::sweep(fd.as_fd(), &at, Some(state))
}

/// Check `plan` against the real filesystem, through the launcher's view of W.
pub fn verify(plan: MountPlan, options: &VerifyOptions) -> Result<VerifiedPlan, HostError> {
    let view = options.view.clone().unwrap_or_default();
    view.check()?;
    if let JobDir::CreateIfMissing { mode } | JobDir::CreateFresh { mode } = options.job_dir {
        if mode & !0o7777 != 0 {
            return Err(HostError::InvalidMode { mode });
        }
        if mode & JOB_DIR_FORBIDDEN_BITS != 0 {
            return Err(HostError::JobDirMode { mode });
        }
    }
    let expected_owner = options
        .expected_owner
        .unwrap_or_else(|| rustix::process::geteuid().as_raw());
    let mut warnings = Vec::new();
    let mut police = |st: &rustix::fs::Stat, at: &Subject| -> Result<(), HostError> {
        for finding in permission_findings(st, at, expected_owner) {
            match options.permissions {
                PermissionPolicy::Refuse => return Err(finding),
                PermissionPolicy::Warn => warnings.push(finding.to_string()),
            }
        }
        Ok(())
    };

    // W: one handle, its last component not followed.
    let launcher_workspace = view.workspace_path(plan.workspace());
    let ws_at = Subject::new(
        "workspace",
        plan.workspace().as_str().to_owned(),
        launcher_workspace.clone(),
    );
    let method = {
        // Probe openat2 (for `Resolver::Auto`) on a handle of `/`: W's own open needs the
        // method already in strict mode.
        let root = rustix::fs::openat(rustix::fs::CWD, "/", open::DIR_HANDLE, Mode::empty())
            .map_err(|e| open::io_err(&ws_at, "open \"/\" before", e))?;
        open::choose(options.resolver, root.as_fd(), &ws_at)?
    };
    let (ws, ws_st) =
        open::open_absolute(&launcher_workspace, options.strict_paths, method, &ws_at)?;
    police(&ws_st, &ws_at)?;
    let base = Base {
        dev: open::dev_of(&ws_st),
        mount_id: open::mount_id(ws.as_fd()),
    };
    let mut pins: Vec<Option<Pin>> = vec![None; plan.binds().count()];
    let mut findings = Vec::new();

    // Shared directories: checked, pinned, and scanned for sockets, fifos and devices.
    for (i, bind) in plan.binds().enumerate() {
        if bind.role() != BindRole::Shared {
            continue;
        }
        let name = leaf_name(plan.workspace(), bind.source());
        let at = ws_at.child("shared directory", name);
        let (fd, st) = open_below(&ws, OsStr::new(name), &at, &base, method)?;
        police(&st, &at)?;
        pins[i] = Some(Pin::of(&st));
        scan::Scan {
            base: &base,
            method,
            refuse_hard_links: false,
            entry: "shared directory entry",
            findings: &mut findings,
        }
        .dir(&fd, &at, 0)?;
    }

    // The job directory: from here on, a directory created here is removed on failure.
    let job_bind = plan.job_bind();
    let job_name = leaf_name(plan.workspace(), job_bind.source());
    let job_at = ws_at.child("job directory", job_name);
    let (job_fd, job_st, created) = job_directory(
        &ws,
        OsStr::new(job_name),
        &job_at,
        &base,
        method,
        options.job_dir,
        options.job_dir_owner,
    )?;
    let mut cleanup = CreatedDir {
        parent: ws.as_fd(),
        name: OsStr::new(job_name),
        pin: Some(Pin::of(&job_st)),
        armed: created,
    };
    let job_dir_state = JobDirState {
        uid: job_st.st_uid,
        gid: job_st.st_gid,
        mode: job_st.st_mode & 0o7777,
    };
    if job_dir_state.mode & JOB_DIR_FORBIDDEN_BITS != 0 {
        return Err(HostError::JobDirLoose {
            at: job_at,
            mode: job_dir_state.mode,
        });
    }
    let claim = claim::JobDirClaim::take(
        ws.as_fd(),
        OsStr::new(job_name),
        job_fd.as_fd(),
        created,
        &job_at,
    )?;
    // From here on the claim's release removes a directory created here on failure.
    cleanup.disarm();
    drop(cleanup);

    let mut rest = || -> Result<(), HostError> {
        scan::Scan {
            base: &base,
            method,
            refuse_hard_links: options.refuse_hard_links,
            entry: "job directory entry",
            findings: &mut findings,
        }
        .dir(&job_fd, &job_at, 0)?;
        // Extra mounts: outside W, any filesystem; last component not followed; neither W,
        // inside W nor above W by identity, however the path reaches it.
        let mut workspace_up = None;
        for (i, bind) in plan.binds().enumerate() {
            match bind.role() {
                BindRole::Job => pins[i] = Some(Pin::of(&job_st)),
                BindRole::Extra => {
                    let path = view.extra_path(bind.source());
                    let at = Subject::new(
                        "extra mount source",
                        bind.source().as_str().to_owned(),
                        path.clone(),
                    );
                    let (fd, st) = open::open_absolute(&path, options.strict_paths, method, &at)?;
                    if workspace_up.is_none() {
                        workspace_up = Some(alias::ancestors(ws.as_fd(), &ws_at)?);
                    }
                    alias::check_extra(
                        fd.as_fd(),
                        &at,
                        plan.workspace().as_str(),
                        ws.as_fd(),
                        workspace_up.as_deref().unwrap_or_default(),
                    )?;
                    pins[i] = Some(Pin::of(&st));
                }
                BindRole::Shared => {}
            }
        }
        Ok(())
    };
    if let Err(e) = rest() {
        // Best effort: a directory another launch holds, or that was written to, stays.
        let _ = claim.release();
        return Err(e);
    }

    let binds = plan
        .binds()
        .zip(pins)
        .map(|(bind, pin)| BindPin {
            target: bind.target().clone(),
            source: bind.source().clone(),
            role: bind.role(),
            pin: pin.expect("every bind was pinned above"),
        })
        .collect();
    Ok(VerifiedPlan {
        pins: Pins {
            workspace: Pin::of(&ws_st),
            binds,
        },
        plan,
        launcher_workspace,
        resolver: method.public(),
        job_dir_created: created,
        warnings,
        findings,
        claim: Arc::new(claim),
        handles: Arc::new(Handles {
            workspace: ws,
            workspace_at: ws_at,
            job: job_fd,
            job_at,
        }),
        job_dir_state,
    })
}

/// The last component of a bind source below W (a validated name: the plan built it as
/// `W/<name>`).
fn leaf_name<'a>(workspace: &HostPath, source: &'a HostPath) -> &'a str {
    let name = source
        .as_str()
        .rsplit_once('/')
        .map_or(source.as_str(), |(_, name)| name);
    debug_assert_eq!(
        source.as_str(),
        format!("{}/{name}", workspace.as_str()),
        "the core plans shared and job binds as W/<name>"
    );
    name
}

fn permission_findings(st: &rustix::fs::Stat, at: &Subject, expected: u32) -> Vec<HostError> {
    let mut found = Vec::new();
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        found.push(HostError::Permissions {
            at: at.clone(),
            mode,
        });
    }
    if st.st_uid != expected {
        found.push(HostError::Owner {
            at: at.clone(),
            uid: st.st_uid,
            expected,
        });
    }
    found
}

/// Open `name` below W and check it is a real directory on W's mount.
fn open_below(
    ws: &OwnedFd,
    name: &OsStr,
    at: &Subject,
    base: &Base,
    method: Method,
) -> Result<(OwnedFd, rustix::fs::Stat), HostError> {
    let fd = open::open_child(ws.as_fd(), name, method)
        .map_err(|e| open::child_open_error(e, at, ws.as_fd(), name, base))?;
    let st = open::inspect(&fd, at, Some(base))?;
    Ok((fd, st))
}

/// Open (or create) W/J as `how` says. Returns its handle, its stat, and whether it was
/// created here. On failure after creating it, it is removed again.
fn job_directory(
    ws: &OwnedFd,
    name: &OsStr,
    at: &Subject,
    base: &Base,
    method: Method,
    how: JobDir,
    owner: Option<(u32, u32)>,
) -> Result<(OwnedFd, rustix::fs::Stat, bool), HostError> {
    let mode = match how {
        JobDir::MustExist => {
            let (fd, st) = open_below(ws, name, at, base, method)?;
            return Ok((fd, st, false));
        }
        JobDir::CreateIfMissing { mode } => match open_below(ws, name, at, base, method) {
            Ok((fd, st)) => return Ok((fd, st, false)),
            Err(HostError::Missing { .. }) => mode,
            Err(e) => return Err(e),
        },
        JobDir::CreateFresh { mode } => mode,
    };
    match mkdirat(ws, name, Mode::from_raw_mode(mode)) {
        Ok(()) => {}
        Err(Errno::EXIST) => {
            return match how {
                JobDir::CreateFresh { .. } => Err(HostError::Exists { at: at.clone() }),
                // Created by someone else since our open: use it if it passes the checks.
                _ => open_below(ws, name, at, base, method).map(|(fd, st)| (fd, st, false)),
            };
        }
        Err(e) => return Err(open::io_err(at, "create", e)),
    }
    let mut cleanup = CreatedDir {
        parent: ws.as_fd(),
        name,
        pin: None,
        armed: true,
    };
    let (fd, st) = open_below(ws, name, at, base, method)?;
    cleanup.pin = Some(Pin::of(&st));
    // mkdirat applied the umask: set the exact mode on the directory we hold.
    let reader = open::reopen_dir(fd.as_fd()).map_err(|e| open::io_err(at, "open", e))?;
    if let Some((uid, gid)) = owner {
        // Before the chmod: a chown may clear set-id bits.
        rustix::fs::fchown(
            &reader,
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(gid)),
        )
        .map_err(|e| open::io_err(at, "chown", e))?;
    }
    fchmod(&reader, Mode::from_raw_mode(mode)).map_err(|e| open::io_err(at, "chmod", e))?;
    let st = fstat(&reader).map_err(|e| open::io_err(at, "stat", e))?;
    cleanup.disarm();
    Ok((fd, st, true))
}

/// Removes a directory this verification created when dropped armed (see
/// [`claim::remove_unclaimed`]: only that very directory, only empty, only unclaimed).
struct CreatedDir<'a> {
    parent: BorrowedFd<'a>,
    name: &'a OsStr,
    /// The directory we created, when known. Unknown still removes: only an empty, unlocked
    /// directory can be removed, and no link is followed.
    pin: Option<Pin>,
    armed: bool,
}

impl CreatedDir<'_> {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for CreatedDir<'_> {
    fn drop(&mut self) {
        if self.armed {
            let at = Subject::new("job directory", String::new(), PathBuf::new());
            let _ = claim::remove_unclaimed(self.parent, self.name, self.pin, &at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extra_source_maps_to_its_last_launcher_path_and_others_stay_where_they_are() {
        let a = HostPath::parse("/data/a").unwrap();
        let b = HostPath::parse("/data/b").unwrap();
        let c = HostPath::parse("/data/c").unwrap();
        let view = HostView::at("/mnt/w")
            .map_extra(a.clone(), "/mnt/a")
            .map_extra(b.clone(), "/mnt/b")
            .map_extra(a.clone(), "/mnt/a2/");
        assert_eq!(view.extra_path(&a), Path::new("/mnt/a2"));
        assert_eq!(view.extra_path(&b), Path::new("/mnt/b"));
        assert_eq!(view.extra_path(&c), Path::new("/data/c"));
        assert_eq!(view.workspace_path(&a), Path::new("/mnt/w"));
        assert_eq!(
            HostView::same_path().workspace_path(&a),
            Path::new("/data/a")
        );
    }

    #[test]
    fn the_effective_uid_is_the_kernel_s() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let uids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        // real, effective, saved, filesystem
        assert_eq!(effective_uid(), uids[1]);
    }
}
