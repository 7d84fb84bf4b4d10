//! The optional hard-link scan of the job directory.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{statat, AtFlags, Dir, FileType};

use crate::error::{HostError, Subject};
use crate::open::{
    child_open_error, dev_of, inspect, io_err, open_child, reopen_dir, Base, Method,
};

/// How deep below the job directory the hard-link scan goes before refusing.
pub const MAX_SCAN_DEPTH: usize = 64;

/// Refuse any regular file with more than one link in the directory `dir` (an `O_PATH`
/// handle of `at`) and, recursively, in its subdirectories on the same mount. Symlinks are
/// never followed; subdirectories are opened like bind sources (no link, no mount crossing);
/// mount points below the job directory are skipped, since a non-recursive bind does not
/// carry them into the container.
pub(crate) fn refuse_hard_links(
    dir: &OwnedFd,
    at: &Subject,
    base: &Base,
    method: Method,
    depth: usize,
) -> Result<(), HostError> {
    if depth > MAX_SCAN_DEPTH {
        return Err(HostError::TooDeep {
            at: at.clone(),
            limit: MAX_SCAN_DEPTH,
        });
    }
    let reader = reopen_dir(dir.as_fd()).map_err(|e| io_err(at, "open for reading", e))?;
    let mut entries = Dir::new(reader).map_err(|e| io_err(at, "read", e))?;
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(|e| io_err(at, "read", e))?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let child = at.child("job directory entry", &name.to_string_lossy());
        let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed while we read: nothing to refuse.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(io_err(&child, "stat", e)),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {
                #[allow(clippy::useless_conversion)] // `st_nlink`'s type differs by architecture
                let links = u64::from(st.st_nlink);
                if links > 1 {
                    return Err(HostError::HardLink { at: child, links });
                }
            }
            FileType::Directory if dev_of(&st) == base.dev => {
                let sub = match open_child(dir.as_fd(), name, method) {
                    Ok(fd) => fd,
                    Err(e) => match child_open_error(e, &child, dir.as_fd(), name, base) {
                        HostError::OtherFilesystem { .. } => continue,
                        HostError::Missing { .. } => continue,
                        other => return Err(other),
                    },
                };
                match inspect(&sub, &child, Some(base)) {
                    Ok(_) => {}
                    Err(HostError::OtherFilesystem { .. }) => continue,
                    Err(other) => return Err(other),
                }
                refuse_hard_links(&sub, &child, base, method, depth + 1)?;
            }
            _ => {}
        }
    }
    Ok(())
}
