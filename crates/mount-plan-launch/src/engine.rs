//! The [`Engine`] trait: the few operations a container engine offers, each a thin call.
//!
//! A backend crate (Docker, Podman, Swarm, Kubernetes) implements [`Engine`] and nothing
//! else: it translates a [`CreateRequest`] into its engine's types and maps the engine's
//! answers back. Every decision of a launch (which protections are required, when to audit,
//! what to clean up, what an exit status means) is taken once, by the lifecycle driver in
//! [`crate::lifecycle`], for every engine alike.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use mount_plan_host::VerifiedPlan;

use crate::container::{ExitStatus, LaunchError, LogStream};
use crate::gate::Gate;
use mount_plan_spec::LaunchSpec;
use mount_plan_spec::ObservedContainer;
use mount_plan_spec::{EngineInfo, EngineReport};

/// The kinds of engine mount-plan launches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum EngineKind {
    /// Docker Engine API.
    Docker,
    /// Podman's libpod API (rootful or rootless).
    Podman,
    /// Docker Swarm services.
    Swarm,
    /// Kubernetes Pods.
    Kubernetes,
    /// Slurm batch jobs whose step runs an OCI bundle (`srun --container`).
    Slurm,
}

impl EngineKind {
    /// Every kind, in a fixed order.
    pub const ALL: [EngineKind; 5] = [
        EngineKind::Docker,
        EngineKind::Podman,
        EngineKind::Swarm,
        EngineKind::Kubernetes,
        EngineKind::Slurm,
    ];

    /// The stable id (`docker`, `podman`, `swarm`, `kubernetes`, `slurm`).
    pub fn id(self) -> &'static str {
        match self {
            EngineKind::Docker => "docker",
            EngineKind::Podman => "podman",
            EngineKind::Swarm => "swarm",
            EngineKind::Kubernetes => "kubernetes",
            EngineKind::Slurm => "slurm",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for EngineKind {
    type Err = mount_plan_spec::SpecError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        EngineKind::ALL
            .into_iter()
            .find(|k| k.id() == value)
            .ok_or_else(|| mount_plan_spec::SpecError::EngineKind {
                value: value.to_owned(),
            })
    }
}

impl serde::Serialize for EngineKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// What the lifecycle asks an engine to create: the verified plan (which alone owns mounts
/// and the working directory), the caller's spec, and every label the container must carry
/// (the caller's and ours, including the launch identity that `gc` and the lost-answer
/// look-up rely on).
#[derive(Debug, Clone, Copy)]
pub struct CreateRequest<'a> {
    /// The verified plan.
    pub plan: &'a VerifiedPlan,
    /// The caller's choices (image, command, user...).
    pub spec: &'a LaunchSpec,
    /// Every label to set, ours included.
    pub labels: &'a BTreeMap<String, String>,
    /// The in-container gate: the container's command line starts with it ([`crate::gate`]).
    pub gate: &'a Gate,
    /// Read the image's entrypoint and command from the engine, not from what this process
    /// kept ([`crate::image_command::Reuse::Fresh`]): the lifecycle's second create, after the
    /// first container ran another image than the one its command line was built from.
    pub reread_image: bool,
}

impl CreateRequest<'_> {
    /// How an engine whose audit checks the image a container runs (it says which in
    /// [`Created::built_for`]) reuses what this process read of the image: whatever was read
    /// before, except on the lifecycle's second create, which reads afresh
    /// ([`CreateRequest::reread_image`]).
    pub fn checked_reuse(&self) -> crate::image_command::Reuse {
        if self.reread_image {
            crate::image_command::Reuse::Fresh
        } else {
            crate::image_command::Reuse::Checked
        }
    }
}

/// What [`Engine::create`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The container's id.
    pub id: String,
    /// The id of the image whose entrypoint and command the container's command line was
    /// built from, where the engine reports which image a container runs
    /// ([`ObservedContainer::image_id`]). The audit before start requires the container to
    /// run exactly this image ([`mount_plan_spec::audit_image`]). `None`: the engine cannot
    /// say, and reuses only what cannot move ([`crate::image_command::Reuse::ByContent`]).
    pub built_for: Option<String>,
}

impl Created {
    /// A container whose image is not checked (see [`Created::built_for`]).
    pub fn unchecked(id: impl Into<String>) -> Self {
        Created {
            id: id.into(),
            built_for: None,
        }
    }
}

/// A container (or service, or Pod) as an engine's list call reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listed {
    /// The engine's id.
    pub id: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its state as the engine words it (`created`, `running`, `exited`...), when reported.
    pub state: Option<String>,
    /// When it was created, in seconds since the Unix epoch, when reported.
    pub created_unix: Option<i64>,
}

/// What [`Engine::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Removal {
    /// The container was there and this call removed it.
    Removed,
    /// There was no such container: someone else removed it first (its own launcher, another
    /// `gc`), or it never existed.
    AlreadyGone,
}

/// One container engine: the operations the lifecycle driver needs, each a thin call.
///
/// Errors are [`LaunchError`]s. A backend maps an engine's *answer* (an HTTP error status)
/// to the matching variant ([`LaunchError::NotFound`], [`LaunchError::ImageNotFound`],
/// [`LaunchError::Engine`]...) and a *missing* answer (connection reset, timeout, a
/// truncated body) to [`LaunchError::AnswerLost`]: the driver then cannot know whether the
/// call took effect and looks before it decides.
#[async_trait::async_trait]
pub trait Engine: Send + Sync + fmt::Debug {
    /// What engine this is, where, which versions.
    fn info(&self) -> &EngineInfo;

    /// Which protections this engine honours (decided from what `connect` learnt), and
    /// anything worth a warning.
    fn report(&self) -> EngineReport;

    /// Translate the request and create the container (not started).
    async fn create(&self, request: &CreateRequest<'_>) -> Result<Created, LaunchError>;

    /// Start a created container.
    async fn start(&self, id: &str) -> Result<(), LaunchError>;

    /// What the engine reports about a container (by id or name).
    async fn inspect(&self, id: &str) -> Result<ObservedContainer, LaunchError>;

    /// Wait until the container stops, and return its exit status.
    async fn wait(&self, id: &str) -> Result<ExitStatus, LaunchError>;

    /// The container's output from its start, followed until it stops.
    fn logs(&self, id: &str) -> LogStream;

    /// Ask the command to stop (SIGTERM), then kill it after `grace`. A container that is
    /// not running is not an error.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), LaunchError>;

    /// Remove the container, killing it if it still runs, and say whether this call removed
    /// it: a container that is already gone is [`Removal::AlreadyGone`], not an error.
    async fn remove(&self, id: &str) -> Result<Removal, LaunchError>;

    /// Every container (any state) carrying the label `key=value`.
    async fn list(&self, key: &str, value: &str) -> Result<Vec<Listed>, LaunchError>;

    /// The host file this engine binds read-only at [`crate::gate::GATE_PATH`] for the gate
    /// (Docker and Podman: the checked host copy, [`crate::gate_copy`]; Swarm: the gate on its
    /// nodes), or `None` when the gate arrives otherwise (an archive call). The audit requires
    /// the bind at the gate's path to come from exactly this source.
    fn gate_source(&self) -> Option<String> {
        None
    }

    /// What `mount-plan doctor` checks beyond [`Engine::report`] where the job runs on other
    /// machines than the launcher's (Slurm's compute nodes): each check on each machine, looked
    /// at from there. `workspace`: also whether those machines see this workspace at the same
    /// path. Default: nothing to check (the engine's own answers are the report).
    async fn site_checks(
        &self,
        workspace: Option<&std::path::Path>,
    ) -> Result<Vec<SiteCheck>, LaunchError> {
        let _ = workspace;
        Ok(Vec::new())
    }
}

/// One check `mount-plan doctor` made on one machine of the site ([`Engine::site_checks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteCheck {
    /// Where it was made (a node's name).
    pub place: String,
    /// The rule checked (an id unique within its backend, `node-shared`).
    pub rule: &'static str,
    /// What was found.
    pub outcome: CheckOutcome,
    /// What was seen, and for a failure what it breaks.
    pub detail: String,
}

/// The outcome of one [`SiteCheck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// It holds.
    Passed,
    /// It does not: a launch there would be refused or would break a promise.
    Failed,
    /// It could not be looked at (a node down, busy, or a check that needs another first).
    NotChecked,
}

impl fmt::Display for CheckOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`: a width in the format string (`doctor`'s table) applies.
        f.pad(match self {
            CheckOutcome::Passed => "ok",
            CheckOutcome::Failed => "FAILED",
            CheckOutcome::NotChecked => "not checked",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{CheckOutcome, EngineKind};

    /// One id per kind, the same for `Display`, `FromStr` and serialisation; nothing else parses.
    #[test]
    fn an_engine_kind_is_named_by_its_id_everywhere() {
        let ids: Vec<&str> = EngineKind::ALL.iter().map(|k| k.id()).collect();
        assert_eq!(ids, ["docker", "podman", "swarm", "kubernetes", "slurm"]);
        for kind in EngineKind::ALL {
            assert_eq!(kind.to_string(), kind.id());
            assert_eq!(kind.id().parse::<EngineKind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.id()));
        }
        for bad in ["", "Docker", "docker ", "podman5", "k8s"] {
            let err = bad.parse::<EngineKind>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    /// `doctor` lines its site table up by the format string's width.
    #[test]
    fn a_check_outcome_takes_the_width_it_is_given() {
        assert_eq!(format!("{:<11}|", CheckOutcome::Passed), "ok         |");
        assert_eq!(format!("{:<11}|", CheckOutcome::NotChecked), "not checked|");
        assert_eq!(CheckOutcome::Failed.to_string(), "FAILED");
    }
}
