//! The lock behind a job-directory claim, kept where no other host user can take it.
//!
//! A lock on W/J itself (`flock` on the directory) can be taken by any host user who can open
//! W/J, and a launch waiting for it cannot be stopped. So the lock is a file named after W/J's
//! identity (`DEV-INO`) in a directory only the launcher's user can open: `/run/mount-plan-claims`
//! for root, `$XDG_RUNTIME_DIR/mount-plan-claims` (or `/tmp/mount-plan-claims-UID`) for
//! another user, created mode 0700 and refused ([`HostError::ClaimDirUnsafe`]) unless it is
//! this user's own and closed to group and others. Launches hold it shared; a release takes it
//! exclusive without waiting. Nobody holds it exclusive for longer than a release's `unlink`,
//! so the shared lock is taken within a bounded wait ([`WAIT`], then
//! [`HostError::JobDirBusy`]): a launch never blocks in it.
//!
//! Limit: launchers running as different host users keep their claims apart; a release by one
//! does not see the other's claim (it still removes only the empty directory it created, and
//! the in-container gate refuses a container whose W/J is no longer the pinned directory).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{
    flock, fstat, mkdir, open, openat, statat, unlinkat, AtFlags, FlockOperation, Mode, OFlags,
};
use rustix::io::Errno;

use crate::error::{HostError, Subject};
use crate::open::io_err;
use crate::Pin;

/// The longest wait for a shared claim: only a release's exclusive hold (a few system calls)
/// can be in the way.
const WAIT: Duration = Duration::from_secs(10);
/// Between two tries.
const PAUSE: Duration = Duration::from_millis(5);

/// The directory of this launcher's claims.
pub(crate) fn claims_dir() -> PathBuf {
    claims_dir_of(
        rustix::process::geteuid().as_raw(),
        std::env::var_os("XDG_RUNTIME_DIR"),
    )
}

/// [`claims_dir`] of a launcher of uid `uid` whose `XDG_RUNTIME_DIR` is `runtime_dir`.
fn claims_dir_of(uid: u32, runtime_dir: Option<OsString>) -> PathBuf {
    if uid == 0 {
        return PathBuf::from("/run/mount-plan-claims");
    }
    match runtime_dir.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir.join("mount-plan-claims"),
        _ => PathBuf::from(format!("/tmp/mount-plan-claims-{uid}")),
    }
}

fn subject(path: &std::path::Path) -> Subject {
    Subject::new(
        "claim directory",
        path.display().to_string(),
        path.to_owned(),
    )
}

/// Open (creating it, mode 0700) this launcher's claim directory; refused unless it is a
/// directory of this user, closed to group and others.
fn open_claims_dir() -> Result<OwnedFd, HostError> {
    let path = claims_dir();
    let at = subject(&path);
    match mkdir(&path, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(io_err(&at, "create", e)),
    }
    let dir = open(&path, crate::open::DIR_NOFOLLOW, Mode::empty()).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => HostError::ClaimDirUnsafe {
            at: at.clone(),
            owner: None,
            mode: None,
        },
        e => io_err(&at, "open", e),
    })?;
    let st = fstat(&dir).map_err(|e| io_err(&at, "stat", e))?;
    if !private_to(st.st_uid, st.st_mode, rustix::process::geteuid().as_raw()) {
        return Err(HostError::ClaimDirUnsafe {
            at,
            owner: Some(st.st_uid),
            mode: Some(st.st_mode & 0o7777),
        });
    }
    Ok(dir)
}

/// Whether a claim directory of owner `uid` and mode `mode` is the user `me`'s alone.
fn private_to(uid: u32, mode: u32, me: u32) -> bool {
    uid == me && mode & 0o077 == 0
}

/// The claim file's name for the job directory `pin`, in [`claims_dir`].
fn claim_name(pin: Pin) -> OsString {
    OsString::from(format!("{}-{}", pin.dev, pin.ino))
}

/// A lock on the claim file of one job directory.
#[derive(Debug)]
pub(crate) struct ClaimLock {
    dir: OwnedFd,
    name: OsString,
    file: OwnedFd,
}

/// A claim file: opened read-write, created when missing, never through a link.
const CLAIM_FILE: OFlags = OFlags::RDWR
    .union(OFlags::CREATE)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl ClaimLock {
    /// Open the claim file of `pin` and lock it with `op` (non-blocking), retrying while it
    /// is busy until `until` (`None`: once). `Ok(None)`: busy. The file is the one its name
    /// leads to once locked (a release may unlink it meanwhile: then a new one is made).
    fn lock(
        pin: Pin,
        op: FlockOperation,
        until: Option<Instant>,
        at: &Subject,
    ) -> Result<Option<ClaimLock>, HostError> {
        let dir = open_claims_dir()?;
        let name = claim_name(pin);
        let claim_at = subject(&claims_dir().join(&name));
        loop {
            let file = openat(&dir, &name, CLAIM_FILE, Mode::from_raw_mode(0o600))
                .map_err(|e| io_err(&claim_at, "open", e))?;
            loop {
                match flock(&file, op) {
                    Ok(()) => break,
                    Err(Errno::INTR) => continue,
                    Err(Errno::WOULDBLOCK) => match until {
                        Some(deadline) if Instant::now() < deadline => std::thread::sleep(PAUSE),
                        Some(_) => {
                            return Err(HostError::JobDirBusy {
                                at: at.clone(),
                                waited_secs: WAIT.as_secs(),
                            })
                        }
                        None => return Ok(None),
                    },
                    Err(e) => return Err(io_err(&claim_at, "lock", e)),
                }
            }
            let held = fstat(&file).map_err(|e| io_err(&claim_at, "stat", e))?;
            match statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(named) if Pin::of(&named) == Pin::of(&held) => {
                    return Ok(Some(ClaimLock { dir, name, file }))
                }
                // Unlinked by a release while we waited: take the new one.
                Ok(_) | Err(Errno::NOENT) => continue,
                Err(e) => return Err(io_err(&claim_at, "stat", e)),
            }
        }
    }

    /// A shared claim on the job directory `pin` (`at`), waiting at most [`WAIT`].
    pub(crate) fn shared(pin: Pin, at: &Subject) -> Result<ClaimLock, HostError> {
        let until = Some(Instant::now() + WAIT);
        Ok(
            Self::lock(pin, FlockOperation::NonBlockingLockShared, until, at)?
                .expect("a bounded wait ends with the lock or an error"),
        )
    }

    /// An exclusive claim on `pin`, if no launch holds it (no wait).
    pub(crate) fn exclusive_if_free(
        pin: Pin,
        at: &Subject,
    ) -> Result<Option<ClaimLock>, HostError> {
        Self::lock(pin, FlockOperation::NonBlockingLockExclusive, None, at)
    }

    /// Turn this (shared) claim exclusive if no other launch holds it (no wait).
    pub(crate) fn try_exclusive(&self) -> Result<bool, Errno> {
        loop {
            match flock(&self.file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(true),
                Err(Errno::WOULDBLOCK) => return Ok(false),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for ClaimLock {
    /// The last holder removes the claim file (under an exclusive lock, and only the file it
    /// holds): claim files do not pile up.
    fn drop(&mut self) {
        if matches!(self.try_exclusive(), Ok(true)) {
            if let (Ok(held), Ok(named)) = (
                fstat(&self.file),
                statat(&self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW),
            ) {
                if Pin::of(&held) == Pin::of(&named) {
                    let _ = unlinkat(self.dir.as_fd(), &self.name, AtFlags::empty());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn at() -> Subject {
        Subject::new("job directory", "/w/j".into(), "/w/j".into())
    }

    /// A job directory identity no real one has (device `u64::MAX - n`), one per test.
    fn test_pin(n: u64) -> Pin {
        Pin {
            dev: u64::MAX - n,
            ino: std::process::id().into(),
        }
    }

    #[test]
    fn root_s_claims_are_in_run_a_user_s_in_its_runtime_directory_else_in_tmp() {
        let run = || Some(OsString::from("/run/user/1000"));
        assert_eq!(claims_dir_of(0, run()), Path::new("/run/mount-plan-claims"));
        assert_eq!(claims_dir_of(0, None), Path::new("/run/mount-plan-claims"));
        assert_eq!(
            claims_dir_of(1000, run()),
            Path::new("/run/user/1000/mount-plan-claims")
        );
        for runtime_dir in [None, Some(OsString::from("run/user/1000"))] {
            assert_eq!(
                claims_dir_of(1000, runtime_dir),
                Path::new("/tmp/mount-plan-claims-1000")
            );
        }
        // This process's own, by its effective uid.
        if rustix::process::geteuid().is_root() {
            assert_eq!(claims_dir(), Path::new("/run/mount-plan-claims"));
        } else {
            assert!(
                claims_dir().ends_with("mount-plan-claims") || claims_dir().starts_with("/tmp")
            );
        }
    }

    #[test]
    fn a_claim_directory_must_be_the_launcher_s_and_closed_to_others() {
        assert!(private_to(1000, 0o40700, 1000));
        assert!(private_to(0, 0o700, 0));
        for (uid, mode) in [(0, 0o700), (1000, 0o710), (1000, 0o701), (1000, 0o777)] {
            assert!(!private_to(uid, mode, 1000), "{uid} {mode:o}");
        }
    }

    /// A claim file unlinked by a release while a launch waited for it, and a new one made at
    /// its name: the launch claims the file the name leads to, not the unlinked one.
    #[test]
    fn a_claim_file_unlinked_while_waiting_is_taken_anew() {
        let pin = test_pin(8);
        let path = claims_dir().join(claim_name(pin));
        let releasing = ClaimLock::exclusive_if_free(pin, &at()).unwrap().unwrap();
        let waiter = std::thread::spawn(move || ClaimLock::shared(pin, &at()).unwrap());
        std::thread::sleep(Duration::from_millis(200));
        // The release unlinks it, and another launch makes the next one.
        std::fs::remove_file(&path).unwrap();
        std::fs::File::create(&path).unwrap();
        drop(releasing);
        let claim = waiter.join().unwrap();
        let held = Pin::of(&fstat(&claim.file).unwrap());
        let named = Pin::of(&rustix::fs::stat(&path).unwrap());
        assert_eq!(held, named, "the claim is on the file named {path:?}");
        drop(claim);
        assert!(!path.exists());
    }

    /// A claim held exclusive: a shared claim waits for it until its deadline, then fails
    /// with `job-dir-busy`; released within the deadline, it is taken.
    #[test]
    fn a_shared_claim_waits_until_its_deadline() {
        let pin = test_pin(10);
        let shared = FlockOperation::NonBlockingLockShared;
        let soon = || Some(Instant::now() + Duration::from_millis(100));
        let held = ClaimLock::exclusive_if_free(pin, &at()).unwrap().unwrap();
        let err = ClaimLock::lock(pin, shared, soon(), &at()).unwrap_err();
        assert_eq!(err.rule(), "job-dir-busy", "{err}");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        let later = Some(Instant::now() + Duration::from_secs(30));
        let claim = ClaimLock::lock(pin, shared, later, &at()).unwrap();
        assert!(claim.is_some(), "taken once released");
        release.join().unwrap();
        drop(claim);
        // A launch's shared claim waits the same way (for WAIT).
        let held = ClaimLock::exclusive_if_free(pin, &at()).unwrap().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        ClaimLock::shared(pin, &at()).unwrap();
        release.join().unwrap();
    }

    /// A link planted at a claim's name is not followed.
    #[test]
    fn a_link_at_a_claim_s_name_is_refused() {
        let pin = test_pin(9);
        let path = claims_dir().join(claim_name(pin));
        let target = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(target.path(), &path).unwrap();
        let err = ClaimLock::shared(pin, &at()).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(err.to_string().contains("open"), "{err}");
    }

    #[test]
    fn shared_claims_coexist_and_exclude_an_exclusive_one() {
        let pin = test_pin(7);
        let a = ClaimLock::shared(pin, &at()).unwrap();
        let b = ClaimLock::shared(pin, &at()).unwrap();
        assert!(ClaimLock::exclusive_if_free(pin, &at()).unwrap().is_none());
        assert!(!a.try_exclusive().unwrap());
        drop(a);
        drop(b);
        let path = claims_dir().join(claim_name(pin));
        assert!(!path.exists(), "the last holder removes {path:?}");
        let x = ClaimLock::exclusive_if_free(pin, &at())
            .unwrap()
            .expect("free");
        drop(x);
        assert!(!path.exists());
    }
}
