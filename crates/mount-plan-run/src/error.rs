//! What the front door refuses before any engine is asked, and the one error of a run.

use mount_plan_launch::{LaunchError, Protection, SpecError};

/// A request that cannot become a launch spec, or an endpoint setting that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// A CPU limit that is not a positive number.
    #[error("{rule}cpus {value} is not a positive number", rule = self.prefix())]
    Cpus {
        /// The value given.
        value: f64,
    },
    /// `require` names a contract protection: those are always required.
    #[error("{rule}require {:?}: {protection} is part of the contract and always required; require names hardening (nosuid, nodev, noexec)", .protection.id(), rule = self.prefix())]
    RequireContract {
        /// The protection named.
        protection: Protection,
    },
    /// Placement constraints on an engine that does not place jobs on nodes.
    #[error("{rule}constraint {value:?} places a job on a cluster node: runtime swarm or slurm only, not {kind}", rule = self.prefix())]
    ConstraintEngine {
        /// The first constraint.
        value: String,
        /// The engine kind named.
        kind: String,
    },
    /// A Podman user namespace mode that is not `default` or `keep-id`.
    #[error("{rule}userns {value:?}: expected \"default\" or \"keep-id\"", rule = self.prefix())]
    Userns {
        /// The value given.
        value: String,
    },
}

mount_plan::rules!(RequestError, "request", {
    Cpus => "cpus-positive",
    RequireContract => "require-contract",
    ConstraintEngine => "constraint-engine",
    Userns => "userns-mode",
});

impl RequestError {
    /// The offending value, as given.
    pub fn value(&self) -> String {
        match self {
            RequestError::Cpus { value } => value.to_string(),
            RequestError::RequireContract { protection } => protection.id().to_owned(),
            RequestError::ConstraintEngine { value, .. } | RequestError::Userns { value } => {
                value.clone()
            }
        }
    }
}

/// Why a run stopped: a request refused before any engine was asked, or the lifecycle's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The request was refused.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The engine, the lifecycle or the spec refused.
    #[error(transparent)]
    Launch(#[from] LaunchError),
}

impl From<SpecError> for RunError {
    fn from(e: SpecError) -> Self {
        RunError::Launch(e.into())
    }
}

impl RunError {
    /// The stable id of the rule that refused.
    pub fn rule(&self) -> &'static str {
        match self {
            RunError::Request(e) => e.rule(),
            RunError::Launch(e) => e.rule(),
        }
    }

    /// The offending value, when the rule names one.
    pub fn value(&self) -> Option<String> {
        match self {
            RunError::Request(e) => Some(e.value()),
            RunError::Launch(e) => e.value().map(str::to_owned),
        }
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, RunError::Launch(LaunchError::Cancelled))
    }
}
