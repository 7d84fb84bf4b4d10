//! Host facts for after a job: the workspace's mount flags, and the sweep of the job
//! directory that takes the set-user-ID and set-group-ID bits off what a job left behind.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{fchmod, fstat, openat, statat, AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{HostError, Subject};
use crate::open::{dev_of, io_err, mount_id, reopen_dir, Base};
use crate::scan::{FindingKind, MAX_SCAN_DEPTH};

/// The mount flags of the filesystem that holds W (`fstatvfs` on W's pinned handle). A
/// workspace on a `nosuid` mount makes a set-user-ID file a job leaves behind harmless to host
/// users; on a `nodev` mount, a device node it leaves behind cannot be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct WorkspaceMountFlags {
    /// Set-user-ID and set-group-ID bits are ignored on W's mount.
    pub nosuid: bool,
    /// Device nodes cannot be opened on W's mount.
    pub nodev: bool,
    /// Nothing can be executed from W's mount.
    pub noexec: bool,
}

pub(crate) fn mount_flags(
    ws: BorrowedFd<'_>,
    at: &Subject,
) -> Result<WorkspaceMountFlags, HostError> {
    use rustix::fs::StatVfsMountFlags as F;
    let vfs = rustix::fs::fstatvfs(ws).map_err(|e| io_err(at, "read the mount flags of", e))?;
    Ok(WorkspaceMountFlags {
        nosuid: vfs.f_flag.contains(F::NOSUID),
        nodev: vfs.f_flag.contains(F::NODEV),
        noexec: vfs.f_flag.contains(F::NOEXEC),
    })
}

/// A regular file whose set-id bits [`crate::VerifiedPlan::sweep_job_dir`] cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClearedFile {
    /// Its path relative to W/J.
    pub path: PathBuf,
    /// Its permission bits before (`0o4755`, say); now without `0o6000`.
    pub mode_before: u32,
}

/// A socket, fifo or device node the sweep found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpecialFile {
    /// Its path relative to W/J.
    pub path: PathBuf,
    /// What it is.
    pub kind: FindingKind,
}

/// An entry the sweep could not handle: it was not swept.
#[derive(Debug)]
#[non_exhaustive]
pub struct SweepProblem {
    /// Its path relative to W/J (empty: W/J itself).
    pub path: PathBuf,
    /// Why (`too-deep`, `other-filesystem` for a mount point below W/J, `io` with the OS
    /// error as its source).
    pub error: HostError,
}

/// What [`crate::VerifiedPlan::sweep_job_dir`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct SweepReport {
    /// Regular files whose set-user-ID and set-group-ID bits were cleared.
    pub cleared: Vec<ClearedFile>,
    /// Device nodes, sockets and fifos found (left in place).
    pub special: Vec<SpecialFile>,
    /// Entries that could not be handled.
    pub unhandled: Vec<SweepProblem>,
}

impl SweepReport {
    /// Whether every entry was handled.
    pub fn is_complete(&self) -> bool {
        self.unhandled.is_empty()
    }
}

/// Sweep the directory W/J, held by `job` (any handle of it), named `at`.
pub(crate) fn sweep(job: BorrowedFd<'_>, at: &Subject) -> Result<SweepReport, HostError> {
    let dir = reopen_dir(job).map_err(|e| io_err(at, "open for reading", e))?;
    let st = fstat(&dir).map_err(|e| io_err(at, "stat", e))?;
    let base = Base {
        dev: dev_of(&st),
        mount_id: mount_id(dir.as_fd()),
    };
    let mut report = SweepReport::default();
    sweep_dir(&dir, Path::new(""), at, &base, 0, &mut report);
    Ok(report)
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NOCTTY)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC);

/// Sweep the readable directory handle `dir` at `rel` below W/J. Every entry is opened from
/// its parent's handle, one component, `O_NOFOLLOW`; every decision is taken on the opened
/// descriptor, so an entry swapped meanwhile is either the same kind of object or skipped.
fn sweep_dir(
    dir: &OwnedFd,
    rel: &Path,
    at: &Subject,
    base: &Base,
    depth: usize,
    report: &mut SweepReport,
) {
    let mut problem = |path: &Path, error: HostError| {
        report.unhandled.push(SweepProblem {
            path: path.to_owned(),
            error,
        })
    };
    if depth > MAX_SCAN_DEPTH {
        return problem(
            rel,
            HostError::TooDeep {
                at: at.clone(),
                limit: MAX_SCAN_DEPTH,
            },
        );
    }
    let entries = reopen_dir(dir.as_fd()).and_then(Dir::new);
    let mut entries = match entries {
        Ok(entries) => entries,
        Err(e) => return problem(rel, io_err(at, "read", e)),
    };
    let mut subdirs = Vec::new();
    while let Some(entry) = entries.read() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                problem(rel, io_err(at, "read", e));
                break;
            }
        };
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let path = rel.join(name);
        let child = at.child("job directory entry", &name.to_string_lossy());
        let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => {
                problem(&path, io_err(&child, "stat", e));
                continue;
            }
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        if let Some(kind) = FindingKind::of(ft) {
            report.special.push(SpecialFile { path, kind });
            continue;
        }
        match ft {
            FileType::Directory => subdirs.push((name.to_owned(), path, child)),
            FileType::RegularFile if st.st_mode & 0o6000 != 0 => {
                match clear_set_id(dir.as_fd(), name, &child) {
                    Ok(Some(mode_before)) => report.cleared.push(ClearedFile { path, mode_before }),
                    Ok(None) => {}
                    Err(e) => problem(&path, e),
                }
            }
            _ => {}
        }
    }
    drop(entries);
    for (name, path, child) in subdirs {
        let sub = match openat(dir, &name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            // Gone, or swapped for a link or a file since the listing: nothing to sweep.
            Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => continue,
            Err(e) => {
                report.unhandled.push(SweepProblem {
                    path,
                    error: io_err(&child, "open", e),
                });
                continue;
            }
        };
        match fstat(&sub) {
            Ok(st) if dev_of(&st) == base.dev && same_mount(base, sub.as_fd()) => {
                sweep_dir(&sub, &path, &child, base, depth + 1, report);
            }
            // A mount point below W/J: not the job's (a non-recursive bind does not carry it
            // in), and the sweep never leaves W/J's mount.
            Ok(st) => report.unhandled.push(SweepProblem {
                path,
                error: HostError::OtherFilesystem {
                    at: child,
                    dev: Some(dev_of(&st)),
                    workspace_dev: base.dev,
                    mount_ids: None,
                },
            }),
            Err(e) => report.unhandled.push(SweepProblem {
                path,
                error: io_err(&child, "stat", e),
            }),
        }
    }
}

fn same_mount(base: &Base, fd: BorrowedFd<'_>) -> bool {
    match (base.mount_id, mount_id(fd)) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Open the regular file `name` below `dir` without following a link and clear its set-id
/// bits with `fchmod` on that descriptor. `Ok(None)`: it is no longer a set-id regular file.
fn clear_set_id(dir: BorrowedFd<'_>, name: &OsStr, at: &Subject) -> Result<Option<u32>, HostError> {
    let fd = match openat(dir, name, FILE_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::LOOP) => return Ok(None),
        Err(e) => return Err(io_err(at, "open", e)),
    };
    let st = fstat(&fd).map_err(|e| io_err(at, "stat", e))?;
    let mode = st.st_mode & 0o7777;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || mode & 0o6000 == 0 {
        return Ok(None);
    }
    fchmod(&fd, Mode::from_raw_mode(mode & !0o6000)).map_err(|e| io_err(at, "chmod", e))?;
    Ok(Some(mode))
}
