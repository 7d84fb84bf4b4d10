//! Host facts for after a job: the workspace's mount flags, and the sweep of the job
//! directory that takes the set-user-ID and set-group-ID bits off what a job left behind.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{
    fchmod, fchown, fstat, openat, statat, unlinkat, AtFlags, Dir, FileType, Mode, OFlags,
};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

use crate::error::{HostError, Subject};
use crate::open::{dev_of, io_err, mount_id, reopen_dir, Base};
use crate::scan::FindingKind;
use crate::Pin;

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
    /// Whether the file was removed instead, because its bits could not be cleared (a file
    /// the launcher may not `fchmod`: owned by another user).
    pub removed: bool,
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

/// An entry the sweep could not handle: it was neither cleared nor removed, so it may still
/// carry a privilege.
#[derive(Debug)]
#[non_exhaustive]
pub struct SweepProblem {
    /// Its path relative to W/J (empty: W/J itself).
    pub path: PathBuf,
    /// Why (`other-filesystem` for a mount point below W/J, `io` with the OS error as its
    /// source).
    pub error: HostError,
}

/// W/J's owner and mode as they were verified: what the sweep puts back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobDirState {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits (`0o750`).
    pub mode: u32,
}

impl JobDirState {
    /// An owner and a mode (permission bits).
    pub fn new(uid: u32, gid: u32, mode: u32) -> Self {
        JobDirState { uid, gid, mode }
    }
}

/// What [`crate::VerifiedPlan::sweep_job_dir`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct SweepReport {
    /// Regular files whose set-user-ID and set-group-ID bits were cleared (or that were
    /// removed because they could not be).
    pub cleared: Vec<ClearedFile>,
    /// Device nodes, sockets and fifos found (left in place).
    pub special: Vec<SpecialFile>,
    /// W/J's owner and mode as the job left them, when they differed from the verified ones
    /// and were put back.
    pub restored: Option<JobDirState>,
    /// Entries that could not be handled.
    pub unhandled: Vec<SweepProblem>,
}

impl SweepReport {
    /// Whether every entry was handled: nothing the job left in W/J keeps a set-id bit, and
    /// W/J has its verified owner and mode again.
    pub fn is_complete(&self) -> bool {
        self.unhandled.is_empty()
    }
}

/// How many directory handles the sweep keeps open at most: deeper directories are reopened
/// from their parent by name and identity when the walk comes back to them.
const OPEN_DIRS: usize = 64;

/// Sweep the directory W/J, held by `job` (any handle of it), named `at`: first put back
/// W/J's verified owner and mode (`state`), so that whatever the job did to its own
/// directory no longer lets other host users in, then walk every directory below it.
pub(crate) fn sweep(
    job: BorrowedFd<'_>,
    at: &Subject,
    state: Option<JobDirState>,
) -> Result<SweepReport, HostError> {
    let dir = reopen_dir(job).map_err(|e| io_err(at, "open for reading", e))?;
    let st = fstat(&dir).map_err(|e| io_err(at, "stat", e))?;
    let base = Base {
        dev: dev_of(&st),
        mount_id: mount_id(dir.as_fd()),
    };
    let mut report = SweepReport::default();
    if let Some(state) = state {
        if let Err(e) = restore(&dir, &st, state, at, &mut report) {
            report.unhandled.push(SweepProblem {
                path: PathBuf::new(),
                error: e,
            });
        }
    }
    Walk {
        at,
        base: &base,
        report: &mut report,
        stack: Vec::new(),
    }
    .run(dir, Pin::of(&st));
    Ok(report)
}

/// Put back W/J's verified owner and mode: a root job may `chown` or `chmod` its own
/// directory (`chmod 755` lets every host user in).
fn restore(
    dir: &OwnedFd,
    st: &rustix::fs::Stat,
    state: JobDirState,
    at: &Subject,
    report: &mut SweepReport,
) -> Result<(), HostError> {
    let found = JobDirState {
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode & 0o7777,
    };
    if found == state {
        return Ok(());
    }
    // The mode first: it closes W/J to others even when the owner cannot be put back. (A
    // verified mode has no set-id bits for the chown to clear.)
    fchmod(dir, Mode::from_raw_mode(state.mode))
        .map_err(|e| io_err(at, "restore the mode of", e))?;
    if (found.uid, found.gid) != (state.uid, state.gid) {
        fchown(
            dir,
            Some(Uid::from_raw(state.uid)),
            Some(Gid::from_raw(state.gid)),
        )
        .map_err(|e| io_err(at, "restore the owner of", e))?;
    }
    report.restored = Some(found);
    Ok(())
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

/// One directory on the walk's path from W/J down.
struct Frame {
    /// Its handle, or `None` when closed to stay within [`OPEN_DIRS`].
    fd: Option<OwnedFd>,
    /// Its name in its parent (empty for W/J).
    name: OsString,
    /// Its identity, to reopen it by name and know it is the same directory.
    pin: Pin,
    /// Its path relative to W/J.
    rel: PathBuf,
    at: Subject,
    /// Its subdirectories not walked yet.
    pending: Vec<OsString>,
}

/// The walk of W/J: depth-first with an explicit stack (no recursion, no depth limit), at most
/// [`OPEN_DIRS`] handles open. Every entry is opened from its parent's handle, one component,
/// `O_NOFOLLOW`; every decision is taken on the opened descriptor, so an entry swapped
/// meanwhile is either the same kind of object or skipped.
struct Walk<'a> {
    at: &'a Subject,
    base: &'a Base,
    report: &'a mut SweepReport,
    stack: Vec<Frame>,
}

impl Walk<'_> {
    fn problem(&mut self, path: &Path, error: HostError) {
        self.report.unhandled.push(SweepProblem {
            path: path.to_owned(),
            error,
        });
    }

    fn run(mut self, root: OwnedFd, pin: Pin) {
        self.enter(root, OsString::new(), pin, PathBuf::new(), self.at.clone());
        while let Some(top) = self.stack.last_mut() {
            let Some(name) = top.pending.pop() else {
                self.stack.pop();
                continue;
            };
            let path = top.rel.join(&name);
            let child = top.at.child("job directory entry", &name.to_string_lossy());
            let parent = match self.handle(self.stack.len() - 1) {
                Ok(fd) => fd,
                Err(e) => {
                    // The directory holding it cannot be reopened: none of what is left below
                    // it was swept.
                    let top = self.stack.pop().expect("the loop holds a frame");
                    self.problem(&top.rel, e);
                    continue;
                }
            };
            let sub = match openat(parent, &name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                // Gone, or swapped for a link or a file since the listing: nothing to sweep.
                Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => continue,
                Err(e) => {
                    self.problem(&path, io_err(&child, "open", e));
                    continue;
                }
            };
            match fstat(&sub) {
                Ok(st) if dev_of(&st) == self.base.dev && same_mount(self.base, sub.as_fd()) => {
                    self.enter(sub, name, Pin::of(&st), path, child);
                }
                // A mount point below W/J: not the job's (a non-recursive bind does not carry
                // it in), and the sweep never leaves W/J's mount.
                Ok(st) => self.problem(
                    &path,
                    HostError::OtherFilesystem {
                        at: child,
                        dev: Some(dev_of(&st)),
                        workspace_dev: self.base.dev,
                        mount_ids: None,
                    },
                ),
                Err(e) => self.problem(&path, io_err(&child, "stat", e)),
            }
        }
    }

    /// The handle of the frame at `index`, reopened from the nearest open ancestor, one
    /// component at a time, each compared with its recorded identity.
    fn handle(&mut self, index: usize) -> Result<BorrowedFd<'_>, HostError> {
        let open_from = (0..=index)
            .rev()
            .find(|&i| self.stack[i].fd.is_some())
            .expect("W/J's own handle is never closed");
        for i in open_from + 1..=index {
            let (parent, rest) = self.stack.split_at_mut(i);
            let parent = parent[i - 1].fd.as_ref().expect("opened above").as_fd();
            let frame = &mut rest[0];
            let fd = openat(parent, &frame.name, DIR_FLAGS, Mode::empty())
                .map_err(|e| io_err(&frame.at, "reopen", e))?;
            let st = fstat(&fd).map_err(|e| io_err(&frame.at, "stat", e))?;
            if Pin::of(&st) != frame.pin {
                return Err(io_err(&frame.at, "reopen (it was replaced)", Errno::STALE));
            }
            frame.fd = Some(fd);
        }
        self.limit_open();
        Ok(self.stack[index].fd.as_ref().expect("opened above").as_fd())
    }

    /// Close the handles nearest W/J (never W/J's own) beyond [`OPEN_DIRS`].
    fn limit_open(&mut self) {
        let mut open = self.stack.iter().filter(|f| f.fd.is_some()).count();
        for frame in self.stack.iter_mut().skip(1) {
            if open <= OPEN_DIRS {
                break;
            }
            if frame.fd.take().is_some() {
                open -= 1;
            }
        }
    }

    /// Sweep the entries of the directory `dir` at `rel` and push it on the stack with its
    /// subdirectories to walk.
    fn enter(&mut self, dir: OwnedFd, name: OsString, pin: Pin, rel: PathBuf, at: Subject) {
        let mut pending = Vec::new();
        match reopen_dir(dir.as_fd()).and_then(Dir::new) {
            Ok(mut entries) => {
                while let Some(entry) = entries.read() {
                    match entry {
                        Ok(entry) => {
                            let name = OsStr::from_bytes(entry.file_name().to_bytes());
                            if name != "." && name != ".." {
                                self.entry(&dir, name, &rel, &at, &mut pending);
                            }
                        }
                        Err(e) => {
                            self.problem(&rel, io_err(&at, "read", e));
                            break;
                        }
                    }
                }
            }
            Err(e) => self.problem(&rel, io_err(&at, "read", e)),
        }
        self.stack.push(Frame {
            fd: Some(dir),
            name,
            pin,
            rel,
            at,
            pending,
        });
        self.limit_open();
    }

    /// One entry of `dir`: a set-id regular file is cleared (or removed), a special file
    /// reported, a subdirectory added to `pending`.
    fn entry(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        rel: &Path,
        at: &Subject,
        pending: &mut Vec<OsString>,
    ) {
        let path = rel.join(name);
        let child = at.child("job directory entry", &name.to_string_lossy());
        let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return,
            Err(e) => return self.problem(&path, io_err(&child, "stat", e)),
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        if let Some(kind) = FindingKind::of(ft) {
            self.report.special.push(SpecialFile { path, kind });
            return;
        }
        match ft {
            FileType::Directory => pending.push(name.to_owned()),
            FileType::RegularFile if st.st_mode & 0o6000 != 0 => {
                match clear_set_id(dir.as_fd(), name, &child) {
                    Ok(Some(mode_before)) => self.report.cleared.push(ClearedFile {
                        path,
                        mode_before,
                        removed: false,
                    }),
                    Ok(None) => {}
                    // The launcher may not change it (another user's file): remove it, which
                    // needs only write access to its directory.
                    Err(e) => match remove_set_id(dir.as_fd(), name) {
                        Ok(()) => self.report.cleared.push(ClearedFile {
                            path,
                            mode_before: st.st_mode & 0o7777,
                            removed: true,
                        }),
                        Err(_) => self.problem(&path, e),
                    },
                }
            }
            _ => {}
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

/// Remove the entry `name` of `dir` (never a directory: `unlinkat` without `AT_REMOVEDIR`,
/// which does not follow a link).
fn remove_set_id(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
    match unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// The decision to clear is taken on the opened descriptor, not on the listing's `lstat`:
    /// a file that is no longer a set-id regular file when opened (its bits cleared, or the
    /// name now a directory) is left alone and not reported as cleared.
    #[test]
    fn clear_set_id_decides_on_the_descriptor() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = rustix::fs::open(tmp.path(), DIR_FLAGS, Mode::empty()).unwrap();
        let at = Subject::new("job directory", "/j".into(), tmp.path().to_owned());
        let plain = tmp.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(tmp.path().join("dir")).unwrap();
        std::fs::set_permissions(
            tmp.path().join("dir"),
            std::fs::Permissions::from_mode(0o2755),
        )
        .unwrap();
        let set_id = tmp.path().join("set-id");
        std::fs::write(&set_id, b"x").unwrap();
        std::fs::set_permissions(&set_id, std::fs::Permissions::from_mode(0o4755)).unwrap();

        assert_eq!(
            clear_set_id(dir.as_fd(), OsStr::new("plain"), &at).unwrap(),
            None
        );
        let mode = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        assert_eq!(
            clear_set_id(dir.as_fd(), OsStr::new("dir"), &at).unwrap(),
            None,
            "a directory is not a set-id regular file"
        );
        assert_eq!(
            clear_set_id(dir.as_fd(), OsStr::new("gone"), &at).unwrap(),
            None
        );
        assert_eq!(
            clear_set_id(dir.as_fd(), OsStr::new("set-id"), &at).unwrap(),
            Some(0o4755)
        );
        let mode = std::fs::metadata(&set_id).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
    }
}
