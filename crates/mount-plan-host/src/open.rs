//! Opening directories without following links: `openat2` with `RESOLVE_*` flags, or a
//! component-wise `O_NOFOLLOW` walk where `openat2` is unavailable.
//!
//! Every open here returns an `O_PATH` descriptor opened with `O_NOFOLLOW`: when the last
//! component is a symlink, the descriptor refers to the link itself, and [`inspect`] refuses it
//! from `fstat` on that very descriptor. The decision is never taken from a second lookup by
//! name; a second lookup only ever improves an error message.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{
    fstat, openat, openat2, statat, statx, AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat,
    StatxFlags, CWD,
};
use rustix::io::Errno;

use crate::error::{HostError, Subject};
use crate::Resolver;

/// How a path below the workspace handle is resolved in this verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Openat2,
    Walk,
}

impl Method {
    pub(crate) fn public(self) -> Resolver {
        match self {
            Method::Openat2 => Resolver::Openat2,
            Method::Walk => Resolver::Walk,
        }
    }
}

/// The resolution flags of every `openat2` below the workspace handle. Defence in depth: the
/// names opened are single plain components ([`open_child`]) with `O_NOFOLLOW`, and a
/// mount point is refused by its device and mount id after the open.
pub(crate) const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

const PATH_FLAGS: OFlags = OFlags::PATH.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);
/// The resolution of a strict absolute path (`--strict-paths`): no link in any component.
const NO_LINKS: ResolveFlags = ResolveFlags::NO_SYMLINKS.union(ResolveFlags::NO_MAGICLINKS);
/// A directory opened for reading.
const DIR_READ: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);
/// A directory opened for reading, its last component not followed.
pub(crate) const DIR_NOFOLLOW: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
/// A handle of a directory, for walking and probing only (`O_PATH`: no read permission
/// needed).
pub(crate) const DIR_HANDLE: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

/// `openat2` may report `EAGAIN` when a rename or mount raced with the lookup: try again a few
/// times, then give up with the error.
fn retry_again<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    let mut tries = 0;
    loop {
        match f() {
            Err(Errno::AGAIN) | Err(Errno::INTR) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

/// Pick the resolution method for `resolver`, probing `openat2` on the directory handle `dir`.
pub(crate) fn choose(
    resolver: Resolver,
    dir: BorrowedFd<'_>,
    at: &Subject,
) -> Result<Method, HostError> {
    let probe = match resolver {
        Resolver::Walk => Ok(()),
        Resolver::Openat2 | Resolver::Auto => {
            retry_again(|| openat2(dir, ".", PATH_FLAGS, Mode::empty(), BENEATH)).map(drop)
        }
    };
    decide(resolver, probe).map_err(|e| io_err(at, "probe openat2 on", e))
}

/// The method for `resolver`, given the outcome of an `openat2` probe.
fn decide(resolver: Resolver, probe: rustix::io::Result<()>) -> rustix::io::Result<Method> {
    match (resolver, probe) {
        (Resolver::Walk, _) => Ok(Method::Walk),
        (_, Ok(())) => Ok(Method::Openat2),
        // ENOSYS: kernel before 5.6; EPERM: a seccomp filter that predates openat2 (older
        // container runtimes' default profiles).
        (Resolver::Auto, Err(Errno::NOSYS | Errno::PERM)) => Ok(Method::Walk),
        (_, Err(e)) => Err(e),
    }
}

pub(crate) fn io_err(at: &Subject, op: &'static str, e: Errno) -> HostError {
    HostError::Io {
        at: at.clone(),
        op,
        source: e.into(),
    }
}

/// Open `name`, one plain path component, below the directory `parent`, never following a
/// symlink or magic link and never crossing a mount point. Returns an `O_PATH` descriptor
/// that may refer to a symlink or a non-directory: pass it to [`inspect`].
pub(crate) fn open_child(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    method: Method,
) -> rustix::io::Result<OwnedFd> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        // The core's name grammar never produces these; refuse rather than resolve them.
        return Err(Errno::INVAL);
    }
    match method {
        Method::Openat2 => {
            retry_again(|| openat2(parent, name, PATH_FLAGS, Mode::empty(), BENEATH))
        }
        // One component, opened with O_NOFOLLOW: nothing can be followed. Mount crossing is
        // caught afterwards by `inspect` (device and mount id).
        Method::Walk => openat(parent, name, PATH_FLAGS, Mode::empty()),
    }
}

/// What the workspace handle looks like; every bind source below it must share its mount.
#[derive(Debug)]
pub(crate) struct Base {
    pub(crate) dev: u64,
    pub(crate) mount_id: Option<u64>,
}

/// The mount id of an open file, when the kernel reports it (Linux 5.8+).
pub(crate) fn mount_id(fd: BorrowedFd<'_>) -> Option<u64> {
    match statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID) {
        Ok(x) if x.stx_mask & StatxFlags::MNT_ID.bits() != 0 => Some(x.stx_mnt_id),
        _ => None,
    }
}

pub(crate) fn type_name(st: &Stat) -> &'static str {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown type",
    }
}

pub(crate) fn dev_of(st: &Stat) -> u64 {
    #[allow(clippy::useless_conversion)] // `st_dev`'s type differs between architectures
    u64::from(st.st_dev)
}

/// Check an open descriptor: a real directory, on the same mount as `base` when given.
pub(crate) fn inspect(fd: &OwnedFd, at: &Subject, base: Option<&Base>) -> Result<Stat, HostError> {
    let st = fstat(fd).map_err(|e| io_err(at, "stat", e))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {}
        FileType::Symlink => return Err(HostError::Symlink { at: at.clone() }),
        _ => {
            return Err(HostError::NotADirectory {
                at: at.clone(),
                found: type_name(&st),
            })
        }
    }
    if let Some(base) = base {
        let dev = dev_of(&st);
        if dev != base.dev {
            return Err(HostError::OtherFilesystem {
                at: at.clone(),
                dev: Some(dev),
                workspace_dev: base.dev,
                mount_ids: None,
            });
        }
        if let (Some(ws_mnt), Some(mnt)) = (base.mount_id, mount_id(fd.as_fd())) {
            if ws_mnt != mnt {
                return Err(HostError::OtherFilesystem {
                    at: at.clone(),
                    dev: Some(dev),
                    workspace_dev: base.dev,
                    mount_ids: Some((mnt, ws_mnt)),
                });
            }
        }
    }
    Ok(st)
}

/// Turn a failed [`open_child`] into the error that names the rule.
pub(crate) fn child_open_error(
    e: Errno,
    at: &Subject,
    parent: BorrowedFd<'_>,
    name: &OsStr,
    base: &Base,
) -> HostError {
    match e {
        Errno::NOENT => HostError::Missing { at: at.clone() },
        // RESOLVE_NO_XDEV: the name is a mount point. Stat it (no link followed) only to name
        // the device in the message.
        Errno::XDEV => HostError::OtherFilesystem {
            at: at.clone(),
            dev: statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
                .ok()
                .map(|st| dev_of(&st)),
            workspace_dev: base.dev,
            mount_ids: None,
        },
        Errno::LOOP => HostError::Symlink { at: at.clone() },
        e => io_err(at, "open", e),
    }
}

/// Open a directory named by an absolute path (the workspace, or an extra mount's source)
/// without following a symlink in its last component. With `strict`, no component of the path
/// may be a symlink either.
pub(crate) fn open_absolute(
    path: &Path,
    strict: bool,
    method: Method,
    at: &Subject,
) -> Result<(OwnedFd, Stat), HostError> {
    let map = |e: Errno| match e {
        Errno::NOENT => HostError::Missing { at: at.clone() },
        Errno::LOOP if strict => HostError::SymlinkInPath { at: at.clone() },
        Errno::NOTDIR => HostError::NotADirectory {
            at: at.clone(),
            found: "path whose parent is not a directory",
        },
        e => io_err(at, "open", e),
    };
    let fd = if !strict {
        openat(CWD, path, PATH_FLAGS, Mode::empty()).map_err(map)?
    } else {
        match method {
            Method::Openat2 => {
                retry_again(|| openat2(CWD, path, PATH_FLAGS, Mode::empty(), NO_LINKS))
                    .map_err(map)?
            }
            Method::Walk => walk_absolute(path, at)?,
        }
    };
    let st = inspect(&fd, at, None)?;
    Ok((fd, st))
}

/// Component-wise walk from `/`: every component opened with `O_PATH | O_NOFOLLOW` from its
/// parent's handle; a symlink before the last component is refused.
fn walk_absolute(path: &Path, at: &Subject) -> Result<OwnedFd, HostError> {
    let mut components = path.components().peekable();
    if components.next() != Some(Component::RootDir) {
        return Err(io_err(at, "walk", Errno::INVAL));
    }
    let mut dir = openat(CWD, "/", DIR_HANDLE, Mode::empty()).map_err(|e| io_err(at, "open", e))?;
    while let Some(component) = components.next() {
        let name = match component {
            Component::Normal(name) => name,
            // `..` would step out of the handle; `.` is meaningless here.
            _ => return Err(io_err(at, "walk", Errno::INVAL)),
        };
        let next = openat(&dir, name, PATH_FLAGS, Mode::empty()).map_err(|e| match e {
            Errno::NOENT => HostError::Missing { at: at.clone() },
            e => io_err(at, "open", e),
        })?;
        if components.peek().is_some() {
            let st = fstat(&next).map_err(|e| io_err(at, "stat", e))?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {}
                FileType::Symlink => return Err(HostError::SymlinkInPath { at: at.clone() }),
                _ => {
                    return Err(HostError::NotADirectory {
                        at: at.clone(),
                        found: "path whose parent is not a directory",
                    })
                }
            }
        }
        dir = next;
    }
    Ok(dir)
}

/// Reopen a directory handle for reading (`O_PATH` handles cannot list or `fchmod`). Opening
/// `.` relative to the handle reaches the very same directory.
pub(crate) fn reopen_dir(fd: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    openat(fd, ".", DIR_READ, Mode::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_the_walk_only_when_openat2_is_unavailable() {
        assert_eq!(decide(Resolver::Auto, Ok(())), Ok(Method::Openat2));
        assert_eq!(decide(Resolver::Auto, Err(Errno::NOSYS)), Ok(Method::Walk));
        assert_eq!(decide(Resolver::Auto, Err(Errno::PERM)), Ok(Method::Walk));
        assert_eq!(
            decide(Resolver::Auto, Err(Errno::ACCESS)),
            Err(Errno::ACCESS)
        );
        assert_eq!(
            decide(Resolver::Openat2, Err(Errno::NOSYS)),
            Err(Errno::NOSYS)
        );
        assert_eq!(decide(Resolver::Walk, Err(Errno::NOSYS)), Ok(Method::Walk));
    }

    /// A lookup raced by a rename or mount (`EAGAIN`) or a signal (`EINTR`) is tried again,
    /// 16 times at most; other errors and successes end it.
    #[test]
    fn a_raced_lookup_is_tried_again_a_bounded_number_of_times() {
        let mut calls = 0;
        let r = retry_again(|| {
            calls += 1;
            match calls {
                1 => Err(Errno::AGAIN),
                2 => Err(Errno::INTR),
                _ => Ok(calls),
            }
        });
        assert_eq!(r, Ok(3));
        let mut calls = 0;
        let r: rustix::io::Result<()> = retry_again(|| {
            calls += 1;
            Err(Errno::AGAIN)
        });
        assert_eq!((r, calls), (Err(Errno::AGAIN), 17));
        let mut calls = 0;
        let r: rustix::io::Result<()> = retry_again(|| {
            calls += 1;
            Err(Errno::NOENT)
        });
        assert_eq!((r, calls), (Err(Errno::NOENT), 1));
    }

    #[test]
    fn only_single_plain_components_are_opened() {
        let root = openat(CWD, "/", PATH_FLAGS, Mode::empty()).unwrap();
        for method in [Method::Openat2, Method::Walk] {
            for bad in ["", ".", "..", "tmp/..", "a/b"] {
                assert_eq!(
                    open_child(root.as_fd(), OsStr::new(bad), method).err(),
                    Some(Errno::INVAL),
                    "{bad:?}"
                );
            }
        }
    }
}
