//! The scan of the shared directories and the job directory: sockets, fifos and device nodes
//! are reported; in the job directory, hard links can be refused.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{statat, AtFlags, Dir, FileType};

use crate::error::{HostError, Subject};
use crate::open::{
    child_open_error, dev_of, inspect, io_err, open_child, reopen_dir, type_name, Base, Method,
};

/// How deep below a scanned directory the scan goes before refusing (hard-link scan) or
/// reporting that it stopped.
pub const MAX_SCAN_DEPTH: usize = 64;

/// What a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FindingKind {
    /// A unix socket: a job can connect to it through the bind (even a read-only one).
    Socket,
    /// A fifo: a job can write to it through the bind (even a read-only one).
    Fifo,
    /// A character device node (harmless only where the bind is `nodev`).
    CharDevice,
    /// A block device node (harmless only where the bind is `nodev`).
    BlockDevice,
    /// The scan could not look everywhere: see [`Finding::detail`].
    Incomplete,
}

impl FindingKind {
    pub(crate) fn of(ft: FileType) -> Option<FindingKind> {
        match ft {
            FileType::Socket => Some(FindingKind::Socket),
            FileType::Fifo => Some(FindingKind::Fifo),
            FileType::CharacterDevice => Some(FindingKind::CharDevice),
            FileType::BlockDevice => Some(FindingKind::BlockDevice),
            _ => None,
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FindingKind::Socket => "socket",
            FindingKind::Fifo => "fifo",
            FindingKind::CharDevice => "character device",
            FindingKind::BlockDevice => "block device",
            FindingKind::Incomplete => "incomplete scan",
        })
    }
}

/// Something the scan of a shared directory or of the job directory found that is not a
/// refusal: a socket, fifo or device node that a bind carries into the container, or a place
/// the scan could not look into. [`crate::VerifiedPlan::findings`] lists them.
///
/// Serialises as `{"kind": "socket", "path": "/srv/site/job-1/s", "detail": null}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// What was found.
    pub kind: FindingKind,
    /// Its path as the engine sees it (below W).
    pub path: String,
    /// Why the scan stopped there ([`FindingKind::Incomplete`] only).
    pub detail: Option<String>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.detail) {
            (FindingKind::Incomplete, Some(detail)) => {
                write!(f, "the scan did not look into {:?}: {detail}", self.path)
            }
            (kind, _) => write!(
                f,
                "{kind} {:?}: a bind carries it into the container",
                self.path
            ),
        }
    }
}

/// One scan: what it reports into, and whether it refuses hard links.
pub(crate) struct Scan<'a> {
    pub(crate) base: &'a Base,
    pub(crate) method: Method,
    /// Refuse a non-directory with more than one link (and make every failure a refusal).
    pub(crate) refuse_hard_links: bool,
    /// "job directory entry" or "shared directory entry".
    pub(crate) entry: &'static str,
    pub(crate) findings: &'a mut Vec<Finding>,
}

impl Scan<'_> {
    /// A failure: a refusal when refusing hard links (the scan must be complete), otherwise
    /// a finding, and the scan goes on elsewhere.
    fn problem(&mut self, e: HostError) -> Result<(), HostError> {
        if self.refuse_hard_links {
            return Err(e);
        }
        let path = e
            .subject()
            .map_or_else(String::new, |s| s.host_path.clone());
        let mut detail = e.to_string();
        if let Some(cause) = std::error::Error::source(&e) {
            detail.push_str(&format!(": {cause}"));
        }
        self.findings.push(Finding {
            kind: FindingKind::Incomplete,
            path,
            detail: Some(detail),
        });
        Ok(())
    }

    /// Scan the directory `dir` (an `O_PATH` handle of `at`) and, recursively, its
    /// subdirectories on the same mount. Symlinks are never followed; subdirectories are opened
    /// like bind sources (no link, no mount crossing); mount points below are skipped, since a
    /// non-recursive bind does not carry them into the container.
    pub(crate) fn dir(
        &mut self,
        dir: &OwnedFd,
        at: &Subject,
        depth: usize,
    ) -> Result<(), HostError> {
        if depth > MAX_SCAN_DEPTH {
            return self.problem(HostError::TooDeep {
                at: at.clone(),
                limit: MAX_SCAN_DEPTH,
            });
        }
        let reader = match reopen_dir(dir.as_fd()) {
            Ok(r) => r,
            Err(e) => return self.problem(io_err(at, "open for reading", e)),
        };
        let mut entries = match Dir::new(reader) {
            Ok(d) => d,
            Err(e) => return self.problem(io_err(at, "read", e)),
        };
        while let Some(entry) = entries.read() {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => return self.problem(io_err(at, "read", e)),
            };
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let child = at.child(self.entry, &name.to_string_lossy());
            let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Removed while we read: nothing to refuse.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => {
                    self.problem(io_err(&child, "stat", e))?;
                    continue;
                }
            };
            let ft = FileType::from_raw_mode(st.st_mode);
            if let Some(kind) = FindingKind::of(ft) {
                self.findings.push(Finding {
                    kind,
                    path: child.host_path.clone(),
                    detail: None,
                });
            }
            match ft {
                FileType::Directory if dev_of(&st) == self.base.dev => {
                    let sub = match open_child(dir.as_fd(), name, self.method) {
                        Ok(fd) => fd,
                        Err(e) => match child_open_error(e, &child, dir.as_fd(), name, self.base) {
                            HostError::OtherFilesystem { .. } | HostError::Missing { .. } => {
                                continue
                            }
                            other => {
                                self.problem(other)?;
                                continue;
                            }
                        },
                    };
                    match inspect(&sub, &child, Some(self.base)) {
                        Ok(_) => {}
                        // A mount point: a non-recursive bind does not carry it in.
                        Err(HostError::OtherFilesystem { .. }) => continue,
                        Err(other) => {
                            self.problem(other)?;
                            continue;
                        }
                    }
                    self.dir(&sub, &child, depth + 1)?;
                }
                FileType::Directory => {}
                _ if self.refuse_hard_links => {
                    #[allow(clippy::useless_conversion)]
                    // `st_nlink`'s type differs by architecture
                    let links = u64::from(st.st_nlink);
                    if links > 1 {
                        return Err(HostError::HardLink {
                            at: child,
                            found: type_name(&st),
                            links,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_say_what_they_are_and_where() {
        let finding = |kind, detail: Option<&str>| {
            Finding {
                kind,
                path: "/srv/w/job-1/x".into(),
                detail: detail.map(str::to_owned),
            }
            .to_string()
        };
        for (kind, name) in [
            (FindingKind::Socket, "socket"),
            (FindingKind::Fifo, "fifo"),
            (FindingKind::CharDevice, "character device"),
            (FindingKind::BlockDevice, "block device"),
        ] {
            assert_eq!(
                finding(kind, None),
                format!("{name} \"/srv/w/job-1/x\": a bind carries it into the container")
            );
        }
        assert_eq!(
            finding(FindingKind::Incomplete, Some("permission denied")),
            "the scan did not look into \"/srv/w/job-1/x\": permission denied"
        );
        assert_eq!(FindingKind::Incomplete.to_string(), "incomplete scan");
    }

    #[test]
    fn sockets_fifos_and_devices_are_findings_and_nothing_else_is() {
        for (ft, kind) in [
            (FileType::Socket, Some(FindingKind::Socket)),
            (FileType::Fifo, Some(FindingKind::Fifo)),
            (FileType::CharacterDevice, Some(FindingKind::CharDevice)),
            (FileType::BlockDevice, Some(FindingKind::BlockDevice)),
            (FileType::RegularFile, None),
            (FileType::Directory, None),
            (FileType::Symlink, None),
        ] {
            assert_eq!(FindingKind::of(ft), kind, "{ft:?}");
        }
    }
}
