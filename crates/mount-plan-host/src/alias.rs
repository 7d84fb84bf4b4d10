//! Extra mount sources compared with the workspace by identity, not by text.
//!
//! The core refuses an extra mount source that is textually at, inside or above W. A path can
//! reach W another way: through a symlink among its parent components (`/x/alias/job-2` with
//! `alias -> W`), or through a bind mount of W (or of one of W's ancestors) elsewhere. Here
//! the opened source and W's handle are each walked up with `..` to `/`, and every identity
//! (`st_dev`, `st_ino`) on one walk is compared with the other's start: a source whose
//! ancestors include W lies inside it; a W whose ancestors include the source lies inside the
//! source.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{fstat, openat, Mode, OFlags};
use rustix::io::Errno;

use crate::error::{HostError, Overlap, Subject};
use crate::open::{io_err, mount_id};
use crate::Pin;

/// More `..` steps than any real path has: a walk that does not reach `/` stops here.
const MAX_WALK: usize = 4096;

/// The identities of the directory `fd` and of each of its ancestors up to `/` (the first is
/// `fd`'s own). `..` at the root of a mount leads to the parent of its mount point, so a walk
/// from a bind mount climbs the tree it is mounted in.
pub(crate) fn ancestors(fd: BorrowedFd<'_>, at: &Subject) -> Result<Vec<Pin>, HostError> {
    let st = fstat(fd).map_err(|e| io_err(at, "stat", e))?;
    let mut pins = vec![Pin::of(&st)];
    let mut last = (Pin::of(&st), mount_id(fd));
    let mut dir: Option<OwnedFd> = None;
    for _ in 0..MAX_WALK {
        let from = dir.as_ref().map_or(fd, |d| d.as_fd());
        let up = openat(
            from,
            "..",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(at, "open the parent directories of", e))?;
        let st = fstat(&up).map_err(|e| io_err(at, "stat the parent directories of", e))?;
        let here = (Pin::of(&st), mount_id(up.as_fd()));
        // `..` of `/` (of this process's root) is itself.
        if here == last {
            return Ok(pins);
        }
        pins.push(here.0);
        last = here;
        dir = Some(up);
    }
    Err(io_err(at, "walk up from", Errno::LOOP))
}

/// Refuse the extra mount source `source` (opened at `at`) when it is W, lies inside W or
/// contains W, by identity. `workspace_up`: [`ancestors`] of W's handle.
pub(crate) fn check_extra(
    source: BorrowedFd<'_>,
    at: &Subject,
    workspace: &str,
    workspace_up: &[Pin],
) -> Result<(), HostError> {
    let source_up = ancestors(source, at)?;
    let (source_pin, workspace_pin) = (source_up[0], workspace_up[0]);
    let relation = if source_pin == workspace_pin {
        Some(Overlap::Is)
    } else if source_up[1..].contains(&workspace_pin) {
        Some(Overlap::Inside)
    } else if workspace_up[1..].contains(&source_pin) {
        Some(Overlap::Contains)
    } else {
        None
    };
    match relation {
        None => Ok(()),
        Some(relation) => Err(HostError::ExtraAliasesWorkspace {
            at: at.clone(),
            relation,
            workspace: workspace.into(),
            source_pin,
            workspace_pin,
        }),
    }
}
