//! Extra mount sources compared with the workspace by identity, not by text.
//!
//! The core refuses an extra mount source that is textually at, inside or above W. A path can
//! reach W another way: through a symlink among its parent components (`/x/alias/job-2` with
//! `alias -> W`), or through a bind mount of W (or of one of W's ancestors) elsewhere. Here
//! the opened source and W's handle are each walked up with `..` to `/`, and every identity
//! (`st_dev`, `st_ino`) on one walk is compared with the other's start: a source whose
//! ancestors include W lies inside it; a W whose ancestors include the source lies inside the
//! source.
//!
//! A bind mount of a directory *below* W (W/job-2 alone, mounted at `/x/j2`) shares no
//! ancestor with W: `..` from its root leads out of the mount. For that case each handle's
//! place in its filesystem is read from `/proc/self/mountinfo` (the mount's device and the
//! path of its root in the filesystem) and `/proc/self/fd` (the handle's path below the mount
//! point), and the two filesystem paths are compared component-wise. Where either cannot be
//! read (no `/proc`, a handle outside this process's root), only the walks decide.

use std::os::unix::ffi::OsStringExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{fstat, openat, Mode};
use rustix::io::Errno;

use crate::error::{HostError, Overlap, Subject};
use crate::open::{io_err, mount_id, DIR_HANDLE};
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
        let up = openat(from, "..", DIR_HANDLE, Mode::empty())
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
/// contains W, by identity, or by place in the same filesystem. `workspace_up`: [`ancestors`]
/// of W's handle `workspace_fd`.
pub(crate) fn check_extra(
    source: BorrowedFd<'_>,
    at: &Subject,
    workspace: &str,
    workspace_fd: BorrowedFd<'_>,
    workspace_up: &[Pin],
) -> Result<(), HostError> {
    let source_up = ancestors(source, at)?;
    let (source_pin, workspace_pin) = (source_up[0], workspace_up[0]);
    let relation = by_walks(&source_up, workspace_up).or_else(|| by_place(source, workspace_fd));
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

/// How a source relates to W by their walks up to `/` (each starting with its own identity).
fn by_walks(source_up: &[Pin], workspace_up: &[Pin]) -> Option<Overlap> {
    let (source_pin, workspace_pin) = (source_up[0], workspace_up[0]);
    if source_pin == workspace_pin {
        Some(Overlap::Is)
    } else if source_up[1..].contains(&workspace_pin) {
        Some(Overlap::Inside)
    } else if workspace_up[1..].contains(&source_pin) {
        Some(Overlap::Contains)
    } else {
        None
    }
}

/// How the directory `source` relates to W (`workspace`) by their places in one filesystem;
/// `None` when they are on different filesystems or a place cannot be read.
fn by_place(source: BorrowedFd<'_>, workspace: BorrowedFd<'_>) -> Option<Overlap> {
    match (place_in_filesystem(source), place_in_filesystem(workspace)) {
        (Some((dev, path)), Some((ws_dev, ws_path))) if dev == ws_dev => overlap(&path, &ws_path),
        _ => None,
    }
}

/// How the filesystem path `path` relates to the workspace's `workspace` (component-wise).
fn overlap(path: &Path, workspace: &Path) -> Option<Overlap> {
    if path == workspace {
        Some(Overlap::Is)
    } else if path.starts_with(workspace) {
        Some(Overlap::Inside)
    } else if workspace.starts_with(path) {
        Some(Overlap::Contains)
    } else {
        None
    }
}

/// Where the open directory `fd` lies in its filesystem: (the mount's `major:minor`, its path
/// from the filesystem's root), from the mount's entry in `/proc/self/mountinfo` (its root in
/// the filesystem, its mount point) and the handle's path in `/proc/self/fd`.
fn place_in_filesystem(fd: BorrowedFd<'_>) -> Option<(String, PathBuf)> {
    let id = mount_id(fd)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (dev, root, mount_point) = mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        if fields.next()?.parse::<u64>().ok()? != id {
            return None;
        }
        let _parent = fields.next()?;
        let dev = fields.next()?.to_owned();
        let root = unescape(fields.next()?);
        let mount_point = unescape(fields.next()?);
        Some((dev, root, mount_point))
    })?;
    let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    // A handle this process cannot name ("/x (deleted)", outside its root) is left to the walks.
    if !path.is_absolute() || !path.exists() {
        return None;
    }
    let below = path.strip_prefix(&mount_point).ok()?;
    Some((dev, root.join(below)))
}

/// A `/proc/self/mountinfo` path field: space, tab, newline and backslash are written as
/// three octal digits after a backslash.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b\\134c"), Path::new("/a b\\c"));
        assert_eq!(unescape("/plain"), Path::new("/plain"));
        assert_eq!(unescape("/trailing\\04"), Path::new("/trailing\\04"));
    }

    fn open(path: &Path) -> OwnedFd {
        openat(rustix::fs::CWD, path, DIR_HANDLE, Mode::empty()).unwrap()
    }

    fn walks(source: &Path, ws: &Path) -> Option<Overlap> {
        let at = Subject::new("extra mount source", String::new(), PathBuf::new());
        let up = |p: &Path| ancestors(open(p).as_fd(), &at).unwrap();
        by_walks(&up(source), &up(ws))
    }

    fn place(source: &Path, ws: &Path) -> Option<Overlap> {
        by_place(open(source).as_fd(), open(ws).as_fd())
    }

    /// Each comparison alone sees a path that reaches W through a symlinked parent, W's
    /// parent, and W itself; neither sees a sibling of W.
    #[test]
    fn the_walks_and_the_places_each_see_an_alias() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        std::fs::create_dir_all(ws.join("job2")).unwrap();
        std::fs::create_dir(tmp.path().join("ws2")).unwrap();
        std::os::unix::fs::symlink(&ws, tmp.path().join("alias")).unwrap();
        let alias_job = tmp.path().join("alias/job2");
        for compare in [walks, place] {
            assert_eq!(compare(&alias_job, &ws), Some(Overlap::Inside));
            assert_eq!(compare(&tmp.path().join("alias"), &ws), Some(Overlap::Is));
            assert_eq!(compare(tmp.path(), &ws), Some(Overlap::Contains));
            assert_eq!(compare(&tmp.path().join("ws2"), &ws), None);
        }
    }

    /// Places compare only within one filesystem, and only for a handle this process can
    /// still name.
    #[test]
    fn places_on_two_filesystems_or_of_a_removed_directory_decide_nothing() {
        // procfs's root and the root filesystem's are both "/" in their filesystems.
        assert_eq!(place(Path::new("/proc"), Path::new("/")), None);
        let tmp = tempfile::tempdir().unwrap();
        let gone = tmp.path().join("gone");
        std::fs::create_dir(&gone).unwrap();
        let fd = open(&gone);
        std::fs::remove_dir(&gone).unwrap();
        // Its handle reads "…/gone (deleted)", which is not a place below W.
        assert_eq!(by_place(fd.as_fd(), open(tmp.path()).as_fd()), None);
    }

    #[test]
    fn overlap_is_component_wise() {
        let ws = Path::new("/srv/site");
        assert_eq!(overlap(Path::new("/srv/site"), ws), Some(Overlap::Is));
        assert_eq!(
            overlap(Path::new("/srv/site/job-2"), ws),
            Some(Overlap::Inside)
        );
        assert_eq!(overlap(Path::new("/srv"), ws), Some(Overlap::Contains));
        assert_eq!(overlap(Path::new("/srv/site2"), ws), None);
        assert_eq!(overlap(Path::new("/data"), ws), None);
    }
}
