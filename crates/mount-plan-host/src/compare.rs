//! After start: the bind sources an engine reports for a container, compared on this host
//! with the identities the verification pinned.

use std::path::{Path, PathBuf};

use rustix::fs::{statat, AtFlags, FileType, CWD};

use crate::{Pin, VerifiedPlan};

/// A bind source that is not, on this host, the directory the plan pinned. Every variant names
/// a stable rule id ([`PinMismatch::rule`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinMismatch {
    /// The source path is a symlink now (no link is followed to compare).
    #[error(
        "{rule}the bind at {target:?} has the source {host_source:?}, which is a symlink (dev {} ino {}); the plan pinned dev {} ino {}",
        .found.dev, .found.ino, .pinned.dev, .pinned.ino, rule = self.prefix()
    )]
    Link {
        /// The bind's container target.
        target: String,
        /// The source path, as the engine reports it.
        host_source: String,
        /// The path this process looked at.
        checked: PathBuf,
        /// The identity pinned by the verification.
        pinned: Pin,
        /// The link's own identity.
        found: Pin,
    },
    /// The source path leads to another directory than the pinned one.
    #[error(
        "{rule}the bind at {target:?} has the source {host_source:?} with identity dev {} ino {}; the plan pinned dev {} ino {}",
        .found.dev, .found.ino, .pinned.dev, .pinned.ino, rule = self.prefix()
    )]
    Identity {
        /// The bind's container target.
        target: String,
        /// The source path, as the engine reports it.
        host_source: String,
        /// The path this process looked at.
        checked: PathBuf,
        /// The identity pinned by the verification.
        pinned: Pin,
        /// The identity found now.
        found: Pin,
    },
    /// The source path cannot be looked at (the OS error is the source).
    #[error(
        "{rule}the bind at {target:?} has the source {host_source:?}, which cannot be looked at (checked at {checked:?}); the plan pinned dev {} ino {}",
        .pinned.dev, .pinned.ino, rule = self.prefix()
    )]
    Unreadable {
        /// The bind's container target.
        target: String,
        /// The source path, as the engine reports it.
        host_source: String,
        /// The path this process looked at.
        checked: PathBuf,
        /// The identity pinned by the verification.
        pinned: Pin,
        /// Why.
        #[source]
        error: std::io::Error,
    },
    /// What the container holds at a bind's target (looked at through its process's root)
    /// is not the pinned directory.
    #[error(
        "{rule}the container holds at {target:?} the directory with identity dev {} ino {} (seen at {checked:?}); the plan pinned dev {} ino {}",
        .found.dev, .found.ino, .pinned.dev, .pinned.ino, rule = self.prefix()
    )]
    Held {
        /// The bind's container target.
        target: String,
        /// The path this process looked at (`/proc/PID/root/TARGET`).
        checked: PathBuf,
        /// The identity pinned by the verification.
        pinned: Pin,
        /// The identity the container holds.
        found: Pin,
    },
    /// What the container holds at a bind's target cannot be looked at (the OS error is the
    /// source).
    #[error(
        "{rule}the container's {target:?} cannot be looked at (checked at {checked:?}); the plan pinned dev {} ino {}",
        .pinned.dev, .pinned.ino, rule = self.prefix()
    )]
    HeldUnreadable {
        /// The bind's container target.
        target: String,
        /// The path this process looked at.
        checked: PathBuf,
        /// The identity pinned by the verification.
        pinned: Pin,
        /// Why.
        #[source]
        error: std::io::Error,
    },
}

mount_plan::rules!(PinMismatch, "pin", {
    Link => "pin-link",
    Identity => "pin-identity",
    Unreadable => "pin-unreadable",
    Held => "pin-held",
    HeldUnreadable => "pin-held-unreadable",
});

impl VerifiedPlan {
    /// Compare the bind sources an engine reports for a container, `(container target, host
    /// source path)` pairs, with the pinned identities: each source path is looked at on this
    /// host with `lstat` (no link followed; a source below the plan's W is looked at through
    /// [`VerifiedPlan::launcher_workspace`]). A symlink, another (dev, ino) than the pin, or a
    /// path that cannot be looked at is a [`PinMismatch`]. Targets the plan has no bind for
    /// are left to the audit.
    pub fn compare_sources<'a>(
        &self,
        observed: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<PinMismatch> {
        let mut found = Vec::new();
        for (target, source) in observed {
            let Some(pinned) = self
                .pins()
                .binds
                .iter()
                .find(|b| b.target.as_str() == target)
                .map(|b| b.pin)
            else {
                continue;
            };
            let checked = self.launcher_path_of(source);
            let (target, host_source) = (target.to_owned(), source.to_owned());
            match statat(CWD, &checked, AtFlags::SYMLINK_NOFOLLOW) {
                Err(e) => found.push(PinMismatch::Unreadable {
                    target,
                    host_source,
                    checked,
                    pinned,
                    error: e.into(),
                }),
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    found.push(PinMismatch::Link {
                        target,
                        host_source,
                        checked,
                        pinned,
                        found: Pin::of(&st),
                    })
                }
                Ok(st) if Pin::of(&st) != pinned => found.push(PinMismatch::Identity {
                    target,
                    host_source,
                    checked,
                    pinned,
                    found: Pin::of(&st),
                }),
                Ok(_) => {}
            }
        }
        found
    }

    /// Compare what a running container holds at each of the plan's bind targets with the
    /// pins: `root` is the container's root as this host sees it (`/proc/PID/root` of its
    /// first process); each `root/TARGET` is looked at with `lstat`. Unlike
    /// [`VerifiedPlan::compare_sources`], this sees what was mounted, not what the host path
    /// leads to now (a path swapped before the start and back after is caught). The caller
    /// makes sure `root` is the container's.
    pub fn compare_held(&self, root: &Path) -> Vec<PinMismatch> {
        let mut found = Vec::new();
        for bind in &self.pins().binds {
            let target = bind.target.as_str().to_owned();
            let checked = root.join(target.trim_start_matches('/'));
            let pinned = bind.pin;
            match statat(CWD, &checked, AtFlags::SYMLINK_NOFOLLOW) {
                Err(e) => found.push(PinMismatch::HeldUnreadable {
                    target,
                    checked,
                    pinned,
                    error: e.into(),
                }),
                Ok(st) if Pin::of(&st) != pinned => found.push(PinMismatch::Held {
                    target,
                    checked,
                    pinned,
                    found: Pin::of(&st),
                }),
                Ok(_) => {}
            }
        }
        found
    }

    /// Where this process sees the host path `source`: through the launcher's view of W when
    /// it lies in the plan's W, else at the same path.
    fn launcher_path_of(&self, source: &str) -> PathBuf {
        let ws = self.plan().workspace().as_str();
        match source.strip_prefix(ws) {
            Some("") => self.launcher_workspace().to_owned(),
            Some(rest) if rest.starts_with('/') => {
                let rest = Path::new(rest.trim_start_matches('/'));
                self.launcher_workspace().join(rest)
            }
            _ => PathBuf::from(source),
        }
    }
}
