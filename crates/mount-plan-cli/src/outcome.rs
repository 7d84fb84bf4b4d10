//! What `mount-plan launch` ended with, and `--status-file`: the channel that says what the
//! exit status alone cannot.
//!
//! The exit status is the command's own when the command ran and its status was read, so a
//! command that itself exits 125 (or 122, 129, 130, 143) is indistinguishable from the
//! launcher's own statuses by the number alone. The status file is written once, at the end of
//! every launch that got past its argument parsing, and says which it was: `outcome`
//! (`exited`, `failed`, `cancelled`), `command_ran` (false: the command certainly did not run),
//! `status` (the command's own, for `exited`), `rule` and `message` (for `failed`), `launch`
//! (the launch id, once one was drawn) and `exit` (the CLI's exit status).
//!
//! It is written atomically and never over an existing file: the launch refuses (exit 125,
//! before anything is created) when the path exists, reserves a temporary file beside it
//! before the host check (so a directory it cannot write to is found before the command can
//! run), and at the end fills, syncs and hard-links that file to the path (a link fails rather
//! than replace a file someone else put there). A launcher that finds no file after the launch
//! ended does not know the outcome (the launcher was killed, the disk was full, or the
//! arguments were refused before the launch began, which exits 125 without a file).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use serde::Serialize;

/// How a launch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ending {
    /// The command ran and the engine reported its exit status.
    Exited,
    /// The launch failed (before the command ran, or after, with its status unknown).
    Failed,
    /// SIGINT, SIGTERM or SIGHUP cancelled it.
    Cancelled,
}

/// What a launch ended with: the exit status and the document `--status-file` gets.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// How it ended.
    pub outcome: Ending,
    /// Whether the command ran or may have run; false: it certainly did not.
    pub command_ran: bool,
    /// The command's own exit status (`exited` only).
    pub status: Option<i64>,
    /// The rule id of the failure, when the error has one.
    pub rule: Option<String>,
    /// What failed.
    pub message: Option<String>,
    /// The launch id, once the lifecycle drew one.
    pub launch: Option<String>,
    /// The exit status `mount-plan launch` exits with.
    pub exit: u8,
}

impl Outcome {
    /// The command ran and exited with `status`; the CLI exits `exit`.
    pub fn exited(status: i64, exit: u8, launch: String) -> Outcome {
        Outcome {
            outcome: Ending::Exited,
            command_ran: true,
            status: Some(status),
            rule: None,
            message: None,
            launch: Some(launch),
            exit,
        }
    }

    /// The launch failed or was cancelled.
    pub fn failed(
        outcome: Ending,
        command_ran: bool,
        rule: Option<&str>,
        message: String,
        launch: Option<String>,
        exit: u8,
    ) -> Outcome {
        Outcome {
            outcome,
            command_ran,
            status: None,
            rule: rule.map(str::to_owned),
            message: Some(message),
            launch: launch.filter(|l| !l.is_empty()),
            exit,
        }
    }
}

/// A status file reserved before the launch: its unnamed (or temporary) twin exists, the path
/// does not.
#[derive(Debug)]
pub struct StatusFile {
    path: PathBuf,
    /// The named temporary file, where the file system has no unnamed ones.
    tmp: Option<PathBuf>,
    file: File,
}

/// Why a status file cannot be used (rule `status-file`): the launch is refused before
/// anything is created.
#[derive(Debug, thiserror::Error)]
#[error("status-file: {path:?} {why}")]
pub struct StatusFileError {
    path: PathBuf,
    why: String,
}

impl StatusFile {
    /// Reserve `path`: refused when it exists or its directory cannot take a file. The
    /// document is written to an unnamed file in the same directory (`O_TMPFILE`), so a
    /// launcher killed with SIGKILL leaves nothing behind; where the file system has no
    /// unnamed files, a hidden `.NAME.PID.tmp` beside it.
    pub fn reserve(path: &Path) -> Result<StatusFile, StatusFileError> {
        let err = |why: String| StatusFileError {
            path: path.to_owned(),
            why,
        };
        if path.symlink_metadata().is_ok() {
            return Err(err(
                "already exists: a status file is never overwritten (remove it, or name a new one)"
                    .into(),
            ));
        }
        let name = path
            .file_name()
            .ok_or_else(|| err("names no file".into()))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let unnamed = rustix::fs::open(
            dir,
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        );
        match unnamed {
            Ok(fd) => {
                return Ok(StatusFile {
                    path: path.to_owned(),
                    tmp: None,
                    file: File::from(fd),
                })
            }
            // The file system has no unnamed files: a named one, removed after.
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {}
            Err(e) => return Err(err(format!("cannot be prepared in {}: {e}", dir.display()))),
        }
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| err(format!("cannot be prepared ({}: {e})", tmp.display())))?;
        Ok(StatusFile {
            path: path.to_owned(),
            tmp: Some(tmp),
            file,
        })
    }

    /// Write `outcome` and put the file at its path (never over another file).
    pub fn write(mut self, outcome: &Outcome) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(outcome).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_all());
        match &self.tmp {
            None => written.and_then(|()| {
                // An unnamed file gets its name by a link from its descriptor.
                let fd = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                rustix::fs::linkat(
                    rustix::fs::CWD,
                    fd.as_str(),
                    rustix::fs::CWD,
                    &self.path,
                    AtFlags::SYMLINK_FOLLOW,
                )
                .map_err(std::io::Error::from)
            }),
            Some(tmp) => {
                let linked = written.and_then(|()| std::fs::hard_link(tmp, &self.path));
                let _ = std::fs::remove_file(tmp);
                linked
            }
        }
    }
}
