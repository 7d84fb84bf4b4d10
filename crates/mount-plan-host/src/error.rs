//! Why a plan could not be verified, and what each refusal concerned.

use std::fmt;
use std::path::PathBuf;

use crate::Pin;

/// What a check concerned: the path the engine will mount and the path the check ran on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Subject {
    /// What it is: "workspace", "shared directory", "job directory", "extra mount source" or
    /// "job directory entry".
    pub what: &'static str,
    /// The path as the engine sees it (from the plan).
    pub host_path: String,
    /// The path this process opened (the launcher's view). Equal to `host_path` unless a
    /// [`HostView::at`](crate::HostView::at) maps the workspace elsewhere.
    pub launcher_path: PathBuf,
}

impl Subject {
    pub(crate) fn new(what: &'static str, host_path: String, launcher_path: PathBuf) -> Self {
        Subject {
            what,
            host_path,
            launcher_path,
        }
    }

    /// The same subject one level down: `name` below both paths.
    pub(crate) fn child(&self, what: &'static str, name: &str) -> Subject {
        Subject {
            what,
            host_path: format!("{}/{}", self.host_path, name),
            launcher_path: self.launcher_path.join(name),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.what, self.host_path)?;
        if self.launcher_path.as_os_str() != self.host_path.as_str() {
            write!(f, " (checked at {:?})", self.launcher_path)?;
        }
        Ok(())
    }
}

/// How an extra mount source overlaps the workspace ([`HostError::ExtraAliasesWorkspace`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overlap {
    /// The source is the workspace.
    Is,
    /// The source lies inside the workspace.
    Inside,
    /// The source contains the workspace.
    Contains,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Overlap::Is => "is",
            Overlap::Inside => "lies inside",
            Overlap::Contains => "contains",
        })
    }
}

/// Why a plan was not verified. Every variant names a stable rule id ([`HostError::rule`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The launcher's view of the workspace is a relative path.
    #[error("{rule}the launcher's view of the workspace {path:?} is not an absolute path", rule = self.prefix())]
    LauncherPath {
        /// The refused path.
        path: PathBuf,
    },
    /// A job directory mode with bits outside 0o7777.
    #[error("{rule}the job directory mode {mode:#o} has bits outside 0o7777", rule = self.prefix())]
    InvalidMode {
        /// The refused mode.
        mode: u32,
    },
    /// A job directory mode with bits the contract forbids: set-user-ID, set-group-ID or
    /// write for others ([`crate::JOB_DIR_FORBIDDEN_BITS`]).
    #[error("{rule}the job directory mode {mode:04o} has set-id bits or lets others write (forbidden bits {:04o}); every host user could plant links, fifos and sockets in the job's only writable view", crate::JOB_DIR_FORBIDDEN_BITS, rule = self.prefix())]
    JobDirMode {
        /// The refused mode.
        mode: u32,
    },
    /// An existing job directory whose mode has bits the contract forbids.
    #[error("{rule}{at} has mode {mode:04o}, with set-id bits or write for others (forbidden bits {:04o}); tighten it (chmod o-w,ug-s) before launching", crate::JOB_DIR_FORBIDDEN_BITS, rule = self.prefix())]
    JobDirLoose {
        /// The job directory.
        at: Subject,
        /// Its permission bits.
        mode: u32,
    },
    /// A job directory swept by path (`gc`) is no longer the directory that was launched.
    #[error("{rule}{at} is not the job directory its container was launched with (dev {} ino {}, now dev {} ino {}); it was not swept", .expected.dev, .expected.ino, .found.dev, .found.ino, rule = self.prefix())]
    JobDirReplaced {
        /// The job directory.
        at: Subject,
        /// The identity recorded at launch.
        expected: Pin,
        /// The identity found.
        found: Pin,
    },
    /// The object is a symbolic link.
    #[error("{rule}{at} is a symlink", rule = self.prefix())]
    Symlink {
        /// What was checked.
        at: Subject,
    },
    /// A component of the path before the object is a symbolic link (strict paths only).
    #[error("{rule}{at} has a symlink among its parent components and strict paths were asked for", rule = self.prefix())]
    SymlinkInPath {
        /// What was checked.
        at: Subject,
    },
    /// The object exists but is not a directory.
    #[error("{rule}{at} is a {found}, not a directory", rule = self.prefix())]
    NotADirectory {
        /// What was checked.
        at: Subject,
        /// What it is instead ("regular file", "socket"...).
        found: &'static str,
    },
    /// The object does not exist.
    #[error("{rule}{at} does not exist", rule = self.prefix())]
    Missing {
        /// What was checked.
        at: Subject,
    },
    /// The object is not on the workspace's own mount: another filesystem or a mount point.
    #[error(
        "{rule}{at} is a mount point or on another filesystem (device {}, the workspace's device {workspace_dev}{}); a bind source must be a plain directory of the workspace's own mount",
        fmt_dev(*.dev),
        fmt_mount_ids(*.mount_ids),
        rule = self.prefix()
    )]
    OtherFilesystem {
        /// What was checked.
        at: Subject,
        /// Its device number (`st_dev`), when it could be read.
        dev: Option<u64>,
        /// The workspace's device number.
        workspace_dev: u64,
        /// (its mount id, the workspace's mount id) when the device numbers agree but the
        /// mounts differ (a bind mount from the same filesystem).
        mount_ids: Option<(u64, u64)>,
    },
    /// A fresh job directory was asked for, and the name is taken.
    #[error("{rule}{at} already exists and a fresh job directory was asked for", rule = self.prefix())]
    Exists {
        /// What was checked.
        at: Subject,
    },
    /// The workspace or a shared directory is writable by group or others.
    #[error(
        "{rule}{at} is writable by {} (mode {mode:04o}); whoever can write there can swap the directories it holds",
        writers(*.mode), rule = self.prefix()
    )]
    Permissions {
        /// What was checked.
        at: Subject,
        /// Its permission bits.
        mode: u32,
    },
    /// The workspace or a shared directory is owned by another user than expected.
    #[error("{rule}{at} is owned by uid {uid}, expected uid {expected}", rule = self.prefix())]
    Owner {
        /// What was checked.
        at: Subject,
        /// Its owner.
        uid: u32,
        /// The expected owner.
        expected: u32,
    },
    /// A non-directory in the job directory (regular file, socket, fifo, device node,
    /// symlink) has more than one link.
    #[error("{rule}{at} is a {found} with {links} links; a hard link can expose a file from outside the job directory", rule = self.prefix())]
    HardLink {
        /// The entry.
        at: Subject,
        /// What it is ("regular file", "socket", "fifo"...).
        found: &'static str,
        /// Its link count.
        links: u64,
    },
    /// The hard-link scan met a directory nested too deep.
    #[error("{rule}{at} is nested more than {limit} directories below the job directory; the hard-link scan refuses to go further", rule = self.prefix())]
    TooDeep {
        /// The directory.
        at: Subject,
        /// The depth limit.
        limit: usize,
    },
    /// The job directory was removed (by a failing concurrent launch that had created it)
    /// between its check and its claim.
    #[error("{rule}{at} was removed by a concurrent launch's clean-up while this launch was checking it; nothing ran in it: launch again", rule = self.prefix())]
    JobDirRemoved {
        /// The job directory.
        at: Subject,
    },
    /// Another launch of this launcher's user held the job directory's claim exclusively for
    /// longer than a release takes (the claim lives where no other host user can take it).
    #[error("{rule}{at}: its claim stayed held for {waited_secs} s by a release of another launch of this user; nothing ran: launch again", rule = self.prefix())]
    JobDirBusy {
        /// The job directory.
        at: Subject,
        /// How long this launch waited.
        waited_secs: u64,
    },
    /// The directory of this launcher's job-directory claims is not its own private
    /// directory: another host user could take or block a claim there.
    #[error("{rule}{at} is not this launcher's private directory (owner uid {}, mode {}): job-directory claims live where no other host user can open them", .owner.map_or_else(|| "?".to_owned(), |o| o.to_string()), .mode.map_or_else(|| "not a directory".to_owned(), |m| format!("{m:04o}")), rule = self.prefix())]
    ClaimDirUnsafe {
        /// The claim directory.
        at: Subject,
        /// Its owner, when it is a directory.
        owner: Option<u32>,
        /// Its mode, when it is a directory.
        mode: Option<u32>,
    },
    /// An extra mount's source is the workspace, lies inside it or contains it, reached
    /// through a symlink or a bind mount that the textual overlap rule of the plan cannot see.
    #[error(
        "{rule}{at} {relation} the workspace {workspace:?} (identity dev {} ino {}, the workspace's dev {} ino {}); an extra mount must not expose the workspace or a job directory",
        .source_pin.dev, .source_pin.ino, .workspace_pin.dev, .workspace_pin.ino,
        rule = self.prefix()
    )]
    ExtraAliasesWorkspace {
        /// The extra mount source.
        at: Subject,
        /// How it overlaps the workspace.
        relation: Overlap,
        /// The workspace's host path.
        workspace: Box<str>,
        /// The identity of the opened source.
        source_pin: Pin,
        /// The identity of the workspace.
        workspace_pin: Pin,
    },
    /// A system call failed for another reason. The OS error is the [`source`]
    /// (`std::error::Error::source`), not repeated in this message.
    ///
    /// [`source`]: std::error::Error::source
    #[error("{rule}could not {op} {at}", rule = self.prefix())]
    Io {
        /// What was being checked.
        at: Subject,
        /// The operation ("open", "stat", "create", "read"...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

mount_plan::rules!(HostError, "host", {
    LauncherPath => "launcher-path",
    InvalidMode => "mode",
    JobDirMode => "job-dir-mode",
    JobDirLoose => "job-dir-loose",
    JobDirReplaced => "job-dir-replaced",
    Symlink => "symlink",
    SymlinkInPath => "symlink-in-path",
    NotADirectory => "not-a-directory",
    Missing => "missing",
    OtherFilesystem => "other-filesystem",
    Exists => "exists",
    Permissions => "permissions",
    Owner => "owner",
    HardLink => "hard-link",
    TooDeep => "too-deep",
    JobDirRemoved => "job-dir-removed",
    JobDirBusy => "job-dir-busy",
    ClaimDirUnsafe => "claim-dir-unsafe",
    ExtraAliasesWorkspace => "extra-aliases-workspace",
    Io => "io",
});

fn fmt_dev(dev: Option<u64>) -> String {
    dev.map_or_else(|| "unknown".to_owned(), |d| d.to_string())
}

fn fmt_mount_ids(ids: Option<(u64, u64)>) -> String {
    ids.map_or_else(String::new, |(found, ws)| {
        format!("; mount id {found}, the workspace's mount id {ws}")
    })
}

fn writers(mode: u32) -> &'static str {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group and others",
        (true, false) => "its group",
        _ => "others",
    }
}

impl HostError {
    /// What the refusal concerned, when it concerned a path.
    pub fn subject(&self) -> Option<&Subject> {
        match self {
            HostError::LauncherPath { .. }
            | HostError::InvalidMode { .. }
            | HostError::JobDirMode { .. } => None,
            HostError::Symlink { at }
            | HostError::SymlinkInPath { at }
            | HostError::NotADirectory { at, .. }
            | HostError::Missing { at }
            | HostError::OtherFilesystem { at, .. }
            | HostError::Exists { at }
            | HostError::Permissions { at, .. }
            | HostError::Owner { at, .. }
            | HostError::HardLink { at, .. }
            | HostError::TooDeep { at, .. }
            | HostError::JobDirRemoved { at }
            | HostError::JobDirLoose { at, .. }
            | HostError::JobDirReplaced { at, .. }
            | HostError::JobDirBusy { at, .. }
            | HostError::ClaimDirUnsafe { at, .. }
            | HostError::ExtraAliasesWorkspace { at, .. }
            | HostError::Io { at, .. } => Some(at),
        }
    }

    /// What to do about this refusal, in one sentence (the CLI prints it on its own line after
    /// the error, and as `hint` in JSON).
    pub fn hint(&self) -> &'static str {
        let what = self.subject().map(|s| s.what);
        match self {
            HostError::LauncherPath { .. } => "give the launcher's view of the workspace as an absolute path",
            HostError::InvalidMode { .. } => "give the job directory mode as octal permission bits between 0 and 7777",
            HostError::JobDirMode { .. } => {
                "give a mode without set-id bits and without write for others (0750, 0770, 0755)"
            }
            HostError::JobDirReplaced { .. } => {
                "nothing to do for this container: the directory under its name is another one"
            }
            HostError::JobDirLoose { .. } => {
                "tighten the job directory (chmod o-w,ug-s), or start from a fresh one (--create-job-dir=fresh)"
            }
            HostError::Symlink { .. } if what == Some("extra mount source") => {
                "pass the real path of the extra mount source, not a symlink to it"
            }
            HostError::Symlink { .. } if what == Some("job directory") => {
                "remove the symlink and create the job directory as a real directory of the workspace (--create-job-dir=fresh)"
            }
            HostError::Symlink { .. } => {
                "pass the real path, or flip releases by renaming a directory (rename is atomic) instead of repointing a symlink"
            }
            HostError::SymlinkInPath { .. } => {
                "pass the path with its symlinks resolved (realpath), or drop --strict-paths"
            }
            HostError::NotADirectory { .. } => "replace it with a directory, or fix the path",
            HostError::Missing { .. } if what == Some("job directory") => {
                "create the job directory first, or let the check create it (--create-job-dir)"
            }
            HostError::Missing { .. } => "create the directory, or fix the path",
            HostError::OtherFilesystem { .. } => {
                "unmount what is mounted there, or move the workspace so that it and its bind sources are one mount"
            }
            HostError::Exists { .. } => {
                "pick a new job name, or reuse the directory with --create-job-dir=if-missing"
            }
            HostError::Permissions { .. } => {
                "remove group and other write access (chmod go-w), or pass --permissions warn to go on"
            }
            HostError::Owner { .. } => {
                "chown it to the launcher's user, or name its owner with --expected-owner"
            }
            HostError::HardLink { .. } => {
                "remove the extra links, or start from a fresh job directory (--create-job-dir=fresh)"
            }
            HostError::TooDeep { .. } => {
                "flatten the job directory, or start from a fresh one (--create-job-dir=fresh)"
            }
            HostError::JobDirRemoved { .. } | HostError::JobDirBusy { .. } => {
                "launch again: nothing ran"
            }
            HostError::ClaimDirUnsafe { .. } => {
                "remove it (or make it the launcher user's own, mode 0700): it is recreated mode 0700"
            }
            HostError::ExtraAliasesWorkspace { .. } => {
                "mount a directory outside the workspace, not a path that reaches it through a symlink or a bind mount"
            }
            HostError::Io { .. } => {
                "check that this process may open the path (its user, permissions, SELinux or AppArmor)"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(what: &'static str) -> Subject {
        Subject::new(what, "/srv/w/startup".into(), "/srv/w/startup".into())
    }

    /// Another filesystem names both devices; a bind mount of the same filesystem also both
    /// mount ids; an unreadable device is "unknown".
    #[test]
    fn another_filesystem_names_the_devices_and_the_mount_ids_when_known() {
        let e = |dev, mount_ids| {
            HostError::OtherFilesystem {
                at: at("shared directory"),
                dev,
                workspace_dev: 2049,
                mount_ids,
            }
            .to_string()
        };
        assert!(
            e(Some(2049), Some((31, 29))).contains(
                "(device 2049, the workspace's device 2049; mount id 31, the workspace's mount id 29)"
            ),
            "{}",
            e(Some(2049), Some((31, 29)))
        );
        assert!(
            e(None, None).contains("(device unknown, the workspace's device 2049)"),
            "{}",
            e(None, None)
        );
    }

    #[test]
    fn a_writable_directory_names_who_can_write() {
        for (mode, who) in [
            (0o777, "group and others"),
            (0o775, "its group"),
            (0o757, "others"),
            (0o2772, "group and others"),
        ] {
            let e = HostError::Permissions {
                at: at("workspace"),
                mode,
            };
            assert!(
                e.to_string()
                    .contains(&format!("is writable by {who} (mode {mode:04o})")),
                "{e}"
            );
        }
    }

    #[test]
    fn an_io_cause_is_the_source_not_part_of_the_message() {
        let e = HostError::Io {
            at: at("shared directory"),
            op: "open",
            source: std::io::Error::from_raw_os_error(13),
        };
        assert_eq!(
            e.to_string(),
            format!(
                "{}could not open shared directory \"/srv/w/startup\"",
                e.prefix()
            )
        );
        let cause = std::error::Error::source(&e).unwrap().to_string();
        assert!(cause.contains("os error 13"), "{cause}");
    }

    #[test]
    fn a_symlinked_shared_directory_hints_at_an_atomic_rename() {
        let e = HostError::Symlink {
            at: at("shared directory"),
        };
        assert!(e.hint().contains("rename is atomic"), "{}", e.hint());
        let e = HostError::Symlink {
            at: at("job directory"),
        };
        assert!(e.hint().contains("--create-job-dir=fresh"), "{}", e.hint());
        let e = HostError::Symlink {
            at: at("extra mount source"),
        };
        assert!(
            e.hint().contains("real path of the extra mount source"),
            "{}",
            e.hint()
        );
    }

    #[test]
    fn a_missing_job_directory_hints_at_creating_it_and_another_missing_directory_does_not() {
        let job = HostError::Missing {
            at: at("job directory"),
        };
        assert!(job.hint().contains("--create-job-dir"), "{}", job.hint());
        let shared = HostError::Missing {
            at: at("shared directory"),
        };
        assert_eq!(shared.hint(), "create the directory, or fix the path");
    }
}
