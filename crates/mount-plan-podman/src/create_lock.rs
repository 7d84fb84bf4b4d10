//! Creates with keep-id on one rootless service go one at a time, across processes.
//!
//! Podman 4.3's rootless service reads the subordinate id ranges through libsubid, which is
//! not thread-safe: keep-id creates that overlap crash the service (SIGSEGV in
//! `subid_get_uid_ranges`; eight launcher processes at once are enough). Every launcher of
//! the service therefore takes an exclusive `flock` on one file, [`LOCK_FILE`] in the store's
//! run directory that the service reports ([`crate::ServiceFacts::run_root`]), around its
//! create. The run directory is the service's, whichever socket or proxy a launcher reaches
//! it through, and only the service's user (and root) can enter it.
//!
//! The kernel drops a `flock` when the holder's file is closed: a launcher that dies while it
//! holds the lock (killed, crashed) never leaves it held, and a launch whose create is
//! abandoned (timed out, cancelled) drops the file with the create. Waiting polls, so a
//! waiter that is cancelled simply stops. A lock that cannot be opened refuses the create:
//! without it the service could crash.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::error::PodmanError;

/// The lock file's name in the store's run directory.
pub const LOCK_FILE: &str = "mount-plan-create.lock";

/// How often a waiter tries the lock again.
const POLL: Duration = Duration::from_millis(10);

/// The lock of the service whose store runs in `run_root`.
pub(crate) fn lock_path(run_root: &str) -> PathBuf {
    Path::new(run_root).join(LOCK_FILE)
}

/// An exclusive hold of the lock, released when dropped (or when the process ends).
#[derive(Debug)]
pub(crate) struct CreateLock {
    _file: std::os::fd::OwnedFd,
}

/// Wait for the lock at `path`, creating its file if missing.
///
/// The file is opened read-only (a `flock` needs no more), created `0644` if missing, and
/// never through a symbolic link: root's launcher and the user's share one file, whoever
/// created it.
pub(crate) async fn acquire(path: &Path) -> Result<CreateLock, PodmanError> {
    let failed = |source: Errno| PodmanError::CreateLock {
        path: path.display().to_string(),
        source: source.into(),
    };
    let file = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(failed)?;
    loop {
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(CreateLock { _file: file }),
            Err(Errno::WOULDBLOCK | Errno::INTR) => tokio::time::sleep(POLL).await,
            Err(e) => return Err(failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_holder_waits_until_the_first_lets_go() {
        let dir = tempfile_dir();
        let path = lock_path(dir.to_str().unwrap());
        let first = acquire(&path).await.expect("first");
        let second = tokio::time::timeout(Duration::from_millis(100), acquire(&path)).await;
        assert!(
            second.is_err(),
            "the second got the lock while the first held it"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), acquire(&path)).await;
        assert!(second.is_ok(), "the lock was not released with its holder");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_lock_that_cannot_be_opened_refuses_naming_its_path() {
        let dir = tempfile_dir();
        let link = dir.join(LOCK_FILE);
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        let e = acquire(&link).await.expect_err("a link is not followed");
        assert_eq!(e.rule(), "create-lock");
        assert!(
            e.to_string()
                .contains(&format!("{:?}", link.display().to_string())),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mount-plan-create-lock-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir(&dir).unwrap();
        dir
    }
}
