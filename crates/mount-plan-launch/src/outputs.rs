//! Nothing a job writes is a privilege on the host: which layers protect a launch, the
//! refusal before anything runs of a launch whose outputs no layer would make harmless, and
//! the labels with which `gc` finds, by identity, the job directory to sweep.
//!
//! The layers (docs/threat-model.md, "The outside direction"):
//! - **user namespace**: the job's root is an unprivileged host uid (rootless Podman, Docker
//!   with `userns-remap`): a set-user-ID file it writes is set-user-ID to nobody that matters;
//! - **nosuid**: W's mount is `nosuid,nodev` on the host: set-id bits and device nodes in W/J
//!   mean nothing to host users;
//! - **W/J unreachable**: W grants no search to its group or others, so no other host user
//!   reaches W/J whatever mode the job gives it (W is not in the container: the job cannot
//!   change it);
//! - **sweep**: after the job (and in `gc`), W/J's verified owner and mode are put back and
//!   every set-id bit is cleared, with no depth limit; an incomplete sweep fails the launch.
//!   It is complete only when the launcher may change what the job wrote: a root launcher, or
//!   a job that runs as the launcher's own uid.
//!
//! A launch in which the job may write files the launcher cannot change (a non-root launcher,
//! a job whose user is root, another uid or the image's), with neither a user namespace nor a
//! `nosuid,nodev` workspace, is refused before anything is created (rule
//! `outputs-unclearable`).

use std::collections::BTreeMap;

use mount_plan_host::{JobDirState, Pin, SweepReport, VerifiedPlan};

use crate::User;

/// Label carrying W/J as the launcher sees it (for `gc`'s sweep).
pub const LABEL_JOB_DIR: &str = "io.mount-plan.job-dir";
/// Label carrying W/J's identity, `DEV:INO` (`gc` sweeps only that very directory).
pub const LABEL_JOB_DIR_PIN: &str = "io.mount-plan.job-dir-pin";
/// Label carrying W/J's verified owner and mode, `UID:GID:MODE` (mode in octal).
pub const LABEL_JOB_DIR_STATE: &str = "io.mount-plan.job-dir-state";

/// The layers that keep a launch's outputs from being a privilege on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct OutputLayers {
    /// The job's root is an unprivileged host uid.
    pub user_namespace: bool,
    /// W's mount is `nosuid` and `nodev`.
    pub nosuid: bool,
    /// No host user but W's owner (and root) can pass through W.
    pub job_dir_unreachable: bool,
    /// The launcher may change whatever the job writes (it is root, or the job runs as the
    /// launcher's own uid): the sweep can be complete.
    pub sweep_complete: bool,
}

impl OutputLayers {
    /// The layers of a launch by a process of effective uid `launcher_uid` of a job running
    /// as `user` (`None`: the image's user, which may be root).
    pub fn new(
        user_namespace: bool,
        nosuid: bool,
        job_dir_unreachable: bool,
        launcher_uid: u32,
        user: Option<User>,
    ) -> Self {
        let job_is_launcher = user.is_some_and(|u| u.uid() == launcher_uid);
        OutputLayers {
            user_namespace,
            nosuid,
            job_dir_unreachable,
            sweep_complete: launcher_uid == 0 || job_is_launcher,
        }
    }

    /// Why a launch with these layers is refused, if it is: the job may write set-id files
    /// the launcher cannot clear, and neither a user namespace nor a `nosuid` workspace makes
    /// them harmless.
    pub fn refusal(&self) -> Option<&'static str> {
        if self.sweep_complete || self.user_namespace || self.nosuid {
            None
        } else {
            Some("this launcher is not root and the job may run as root or as another user, so it could leave set-user-ID files this launcher cannot clear; the engine gives the job no user namespace and the workspace's mount is not nosuid,nodev")
        }
    }

    /// One line: `user namespace: no; nosuid workspace: no; W/J unreachable: yes; sweep:
    /// complete`.
    pub fn describe(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        format!(
            "user namespace: {}; nosuid workspace: {}; W/J unreachable: {}; sweep: {}",
            yes(self.user_namespace),
            yes(self.nosuid),
            yes(self.job_dir_unreachable),
            if self.sweep_complete {
                "complete"
            } else {
                "cannot clear what the job writes"
            }
        )
    }
}

/// The labels that let `gc` sweep W/J after a launcher that died: its path, identity and
/// verified owner and mode.
pub fn job_dir_labels(plan: &VerifiedPlan) -> [(&'static str, String); 3] {
    let pin = plan.job_pin();
    let state = plan.job_dir_state();
    [
        (
            LABEL_JOB_DIR,
            plan.launcher_job_dir().to_string_lossy().into_owned(),
        ),
        (LABEL_JOB_DIR_PIN, format!("{}:{}", pin.dev, pin.ino)),
        (
            LABEL_JOB_DIR_STATE,
            format!("{}:{}:{:o}", state.uid, state.gid, state.mode),
        ),
    ]
}

/// What a container's labels say about its job directory: (path, identity, owner and mode).
/// `None` when they do not say it completely (a container of an older version).
pub fn job_dir_of(
    labels: &BTreeMap<String, String>,
) -> Option<(std::path::PathBuf, Pin, JobDirState)> {
    let path = labels.get(LABEL_JOB_DIR)?;
    let (dev, ino) = labels.get(LABEL_JOB_DIR_PIN)?.split_once(':')?;
    let pin = Pin {
        dev: dev.parse().ok()?,
        ino: ino.parse().ok()?,
    };
    let mut state = labels.get(LABEL_JOB_DIR_STATE)?.splitn(3, ':');
    let uid = state.next()?.parse().ok()?;
    let gid = state.next()?.parse().ok()?;
    let mode = u32::from_str_radix(state.next()?, 8).ok()?;
    let path = std::path::PathBuf::from(path);
    if !path.is_absolute() || mode > 0o7777 {
        return None;
    }
    Some((path, pin, JobDirState::new(uid, gid, mode)))
}

/// One line about a sweep: what it cleared, what it put back, what it could not handle.
pub fn describe_sweep(report: &SweepReport) -> String {
    let mut parts = vec![format!("{} set-id file(s) cleared", report.cleared.len())];
    let removed = report.cleared.iter().filter(|c| c.removed).count();
    if removed > 0 {
        parts.push(format!("{removed} of them removed"));
    }
    if let Some(r) = report.restored {
        parts.push(format!(
            "owner and mode put back (the job left {}:{} {:04o})",
            r.uid, r.gid, r.mode
        ));
    }
    if !report.unhandled.is_empty() {
        parts.push(format!("{} not handled", report.unhandled.len()));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_launcher_that_cannot_clear_the_job_outputs_is_refused_without_another_layer() {
        let root_job = None;
        let own = Some(User::new(1000, None));
        let other = Some(User::new(0, None));
        // (userns, nosuid, launcher uid, user) -> refused
        let cases = [
            (false, false, 0, root_job, false),
            (false, false, 1000, root_job, true),
            (false, false, 1000, other, true),
            (false, false, 1000, own, false),
            (true, false, 1000, root_job, false),
            (false, true, 1000, other, false),
        ];
        for (userns, nosuid, uid, user, refused) in cases {
            let layers = OutputLayers::new(userns, nosuid, true, uid, user);
            assert_eq!(
                layers.refusal().is_some(),
                refused,
                "{userns} {nosuid} {uid} {user:?}"
            );
        }
    }

    #[test]
    fn the_description_names_every_layer() {
        let layers = OutputLayers::new(false, false, true, 0, None);
        assert_eq!(
            layers.describe(),
            "user namespace: no; nosuid workspace: no; W/J unreachable: yes; sweep: complete"
        );
        let layers = OutputLayers::new(true, true, false, 1000, None);
        assert_eq!(
            layers.describe(),
            "user namespace: yes; nosuid workspace: yes; W/J unreachable: no; sweep: cannot clear what the job writes"
        );
    }

    #[test]
    fn job_dir_labels_read_back_and_partial_ones_are_none() {
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_JOB_DIR.to_owned(), "/srv/w/job-1".to_owned());
        labels.insert(LABEL_JOB_DIR_PIN.to_owned(), "2049:1234".to_owned());
        labels.insert(LABEL_JOB_DIR_STATE.to_owned(), "0:100:750".to_owned());
        let (path, pin, state) = job_dir_of(&labels).unwrap();
        assert_eq!(path, std::path::PathBuf::from("/srv/w/job-1"));
        assert_eq!((pin.dev, pin.ino), (2049, 1234));
        assert_eq!(state, JobDirState::new(0, 100, 0o750));
        for (key, bad) in [
            (LABEL_JOB_DIR, "relative/job-1"),
            (LABEL_JOB_DIR_PIN, "2049"),
            (LABEL_JOB_DIR_PIN, "x:1"),
            (LABEL_JOB_DIR_STATE, "0:100"),
            (LABEL_JOB_DIR_STATE, "0:100:17777"),
            (LABEL_JOB_DIR_STATE, "0:100:9"),
        ] {
            let mut l = labels.clone();
            l.insert(key.to_owned(), bad.to_owned());
            assert!(job_dir_of(&l).is_none(), "{key}={bad}");
        }
        for key in [LABEL_JOB_DIR, LABEL_JOB_DIR_PIN, LABEL_JOB_DIR_STATE] {
            let mut l = labels.clone();
            l.remove(key);
            assert!(job_dir_of(&l).is_none(), "without {key}");
        }
    }
}
