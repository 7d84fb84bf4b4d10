//! A verification's hold on the job directory W/J, and the only way a job directory is ever
//! removed: by identity, through the workspace handle, when no other launch holds it.
//!
//! Every [`crate::verify`] takes a shared claim on W/J and keeps it while its
//! [`crate::VerifiedPlan`] (or a clone) lives. The claim is a lock no other host user can take
//! or block ([`crate::claim_lock`]: not a lock on W/J itself, which anyone who can open W/J
//! could hold for ever). A launch that created W/J and fails before its command ran releases
//! it: it upgrades to an exclusive claim without waiting, so a directory another launch holds
//! is never removed; it removes only the inode it created, only while empty, and never follows
//! a link. A launch that takes its shared claim after such a removal sees a directory with no
//! links left and refuses to go on.

use std::ffi::{OsStr, OsString};
use std::sync::Mutex;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{fstat, openat, statat, unlinkat, AtFlags, Mode};
use rustix::io::Errno;

use crate::claim_lock::ClaimLock;
use crate::error::{HostError, Subject};
use crate::open;
use crate::Pin;

/// What releasing a job directory did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobDirRelease {
    /// This launch did not create it: it stays.
    NotCreatedHere,
    /// It was removed.
    Removed,
    /// Another launch holds it: it stays.
    InUse,
    /// Something was written into it: it stays.
    NotEmpty,
    /// The name no longer leads to the directory created (renamed, replaced): nothing was
    /// removed.
    Replaced,
    /// It was released before.
    AlreadyReleased,
}

/// The hold on W/J.
#[derive(Debug)]
pub(crate) struct JobDirClaim {
    /// W's handle: the removal goes through it, never through a path.
    workspace: OwnedFd,
    name: OsString,
    /// A readable handle of W/J.
    lock: OwnedFd,
    /// The shared claim on W/J's identity.
    claim: ClaimLock,
    pin: Pin,
    created: bool,
    released: Mutex<bool>,
    at: Subject,
}

impl JobDirClaim {
    /// Take a shared claim on the job directory `dir` (named `name` below `workspace`), and
    /// check it is still linked once the claim is held.
    pub(crate) fn take(
        workspace: BorrowedFd<'_>,
        name: &OsStr,
        dir: BorrowedFd<'_>,
        created: bool,
        at: &Subject,
    ) -> Result<Self, HostError> {
        let lock = open::reopen_dir(dir).map_err(|e| open::io_err(at, "open", e))?;
        let st = fstat(&lock).map_err(|e| open::io_err(at, "stat", e))?;
        let claim = ClaimLock::shared(Pin::of(&st), at)?;
        let st = fstat(&lock).map_err(|e| open::io_err(at, "stat", e))?;
        if st.st_nlink == 0 {
            return Err(HostError::JobDirRemoved { at: at.clone() });
        }
        let workspace = rustix::io::fcntl_dupfd_cloexec(workspace, 0)
            .map_err(|e| open::io_err(at, "duplicate the workspace handle for", e))?;
        Ok(JobDirClaim {
            workspace,
            name: name.to_owned(),
            lock,
            claim,
            pin: Pin::of(&st),
            created,
            released: Mutex::new(false),
            at: at.clone(),
        })
    }

    /// Remove W/J if this claim created it, it is still the same directory, empty, and no
    /// other launch holds it. Idempotent.
    pub(crate) fn release(&self) -> Result<JobDirRelease, HostError> {
        if !self.created {
            return Ok(JobDirRelease::NotCreatedHere);
        }
        let mut released = self.released.lock().unwrap_or_else(|p| p.into_inner());
        if *released {
            return Ok(JobDirRelease::AlreadyReleased);
        }
        *released = true;
        // Another launch's shared claim makes this fail at once: it stays.
        match self.claim.try_exclusive() {
            Ok(true) => {}
            Ok(false) => return Ok(JobDirRelease::InUse),
            Err(e) => return Err(open::io_err(&self.at, "lock", e)),
        }
        let outcome = remove_claimed(
            self.workspace.as_fd(),
            &self.name,
            self.pin,
            self.lock.as_fd(),
        );
        outcome.map_err(|e| open::io_err(&self.at, "remove", e))
    }
}

/// Remove directory `name` below `parent` if it is still the directory `expected` (when
/// known), empty, and no launch claims it (an exclusive claim, without waiting).
pub(crate) fn remove_unclaimed(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    expected: Option<Pin>,
    at: &Subject,
) -> Result<JobDirRelease, HostError> {
    let dir = match openat(parent, name, open::DIR_NOFOLLOW, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(JobDirRelease::Replaced),
        Err(e) => return Err(open::io_err(at, "open", e)),
    };
    let pin = Pin::of(&fstat(&dir).map_err(|e| open::io_err(at, "stat", e))?);
    if expected.is_some_and(|e| e != pin) {
        return Ok(JobDirRelease::Replaced);
    }
    let Some(_exclusive) = ClaimLock::exclusive_if_free(pin, at)? else {
        return Ok(JobDirRelease::InUse);
    };
    remove_claimed(parent, name, pin, dir.as_fd()).map_err(|e| open::io_err(at, "remove", e))
}

/// Remove directory `name` below `parent`, held as `dir` (identity `pin`) under an exclusive
/// claim, if the name still leads to it and it is empty.
fn remove_claimed(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    pin: Pin,
    dir: BorrowedFd<'_>,
) -> Result<JobDirRelease, Errno> {
    if Pin::of(&fstat(dir)?) != pin {
        return Ok(JobDirRelease::Replaced);
    }
    // The name must still lead to the directory we hold.
    match statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if Pin::of(&st) == pin => {}
        Ok(_) | Err(Errno::NOENT) => return Ok(JobDirRelease::Replaced),
        Err(e) => return Err(e),
    }
    match unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) => Ok(JobDirRelease::Removed),
        Err(Errno::NOTEMPTY | Errno::EXIST) => Ok(JobDirRelease::NotEmpty),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn at() -> Subject {
        Subject::new("job directory", String::new(), PathBuf::new())
    }

    fn dir_fd(path: &std::path::Path) -> OwnedFd {
        openat(rustix::fs::CWD, path, open::DIR_NOFOLLOW, Mode::empty()).unwrap()
    }

    /// A parent directory (kept while it lives), its handle, and `job` made in it.
    fn parent_with_job() -> (tempfile::TempDir, OwnedFd, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let parent = dir_fd(tmp.path());
        let job = tmp.path().join("job");
        std::fs::create_dir(&job).unwrap();
        (tmp, parent, job)
    }

    /// An expected identity keeps another directory under the name; the right one goes.
    #[test]
    fn an_unclaimed_directory_is_removed_only_when_it_is_the_one_expected() {
        let (_tmp, parent, job) = parent_with_job();
        let pin = Pin::of(&fstat(dir_fd(&job)).unwrap());
        let other = Pin {
            ino: pin.ino + 1,
            ..pin
        };
        let remove =
            |expected| remove_unclaimed(parent.as_fd(), OsStr::new("job"), expected, &at());
        assert_eq!(remove(Some(other)).unwrap(), JobDirRelease::Replaced);
        assert!(job.exists());
        assert_eq!(remove(Some(pin)).unwrap(), JobDirRelease::Removed);
        assert!(!job.exists());
        assert_eq!(remove(None).unwrap(), JobDirRelease::Replaced);
    }

    /// The directory held is not the one the name leads to any more: the other is kept.
    #[test]
    fn a_name_that_leads_elsewhere_is_not_removed() {
        let (tmp, parent, job) = parent_with_job();
        let held = dir_fd(&job);
        let pin = Pin::of(&fstat(&held).unwrap());
        std::fs::rename(&job, tmp.path().join("moved")).unwrap();
        std::fs::create_dir(&job).unwrap();
        let outcome = remove_claimed(parent.as_fd(), OsStr::new("job"), pin, held.as_fd());
        assert_eq!(outcome, Ok(JobDirRelease::Replaced));
        assert!(job.exists() && tmp.path().join("moved").exists());
    }
}
