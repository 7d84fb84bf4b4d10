//! Why a Pod could not be rendered.

use crate::version::{FeatureGate, K8sVersion, MAX_MINOR, MIN_MINOR};

/// Why a Pod could not be rendered. Every message names the rule and quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PodError {
    /// Not a Kubernetes version the renderer writes for.
    #[error("kubernetes rule `k8s-version`: {value:?} is not a Kubernetes version from 1.{MIN_MINOR} to 1.{MAX_MINOR}")]
    Version {
        /// The refused value.
        value: String,
    },
    /// Not a feature gate the renderer knows.
    #[error("kubernetes rule `k8s-feature-gate`: {value:?} is not a feature gate the renderer uses (known: {known})")]
    FeatureGate {
        /// The refused value.
        value: String,
        /// The known gates.
        known: String,
    },
    /// A gate whose field the version does not have.
    #[error("kubernetes rule `k8s-gate-version`: the feature gate {gate} has no field before Kubernetes {since}, and the target is {version}")]
    GateNotInVersion {
        /// The gate.
        gate: FeatureGate,
        /// The target version.
        version: K8sVersion,
        /// The first version with the field.
        since: K8sVersion,
    },
    /// Not a PersistentVolumeClaim name.
    #[error("kubernetes rule `k8s-claim-name`: {value:?} is not a claim name (lowercase letters, digits, `-` and `.`, at most 253)")]
    ClaimName {
        /// The refused value.
        value: String,
    },
    /// A label key that is not a Kubernetes label or annotation key.
    #[error("kubernetes rule `k8s-metadata-key`: {value:?} is not a Kubernetes label or annotation key ([prefix/]name, name at most 63 of [A-Za-z0-9._-])")]
    MetadataKey {
        /// The refused key.
        value: String,
    },
    /// An extra mount whose host source has no volume in the Pod.
    #[error("kubernetes rule `k8s-extra-mount`: extra mount {source_path:?} (at {target:?}) has no claim; map it to one (--k8s-extra-claim SOURCE=CLAIM) or use hostPath volumes (--k8s-host-path)")]
    ExtraMountSource {
        /// The extra mount's host source.
        source_path: String,
        /// Its container target.
        target: String,
    },
    /// A claim given for an extra mount source that the plan does not have.
    #[error("kubernetes rule `k8s-extra-claim-unused`: a claim is given for {source_path:?}, which is no extra mount source of the plan")]
    UnusedExtraClaim {
        /// The source named.
        source_path: String,
    },
    /// The job would run as root, which the Restricted Pod Security Standard forbids.
    #[error("kubernetes rule `k8s-run-as-root`: the job user {uid} is root; the Pod runs as non-root (Pod Security Standards, Restricted): give a non-zero --user")]
    RunAsRoot {
        /// The refused uid.
        uid: u32,
    },
}

impl PodError {
    /// The stable short id of the rule.
    pub fn rule(&self) -> &'static str {
        match self {
            PodError::Version { .. } => "k8s-version",
            PodError::FeatureGate { .. } => "k8s-feature-gate",
            PodError::GateNotInVersion { .. } => "k8s-gate-version",
            PodError::ClaimName { .. } => "k8s-claim-name",
            PodError::MetadataKey { .. } => "k8s-metadata-key",
            PodError::ExtraMountSource { .. } => "k8s-extra-mount",
            PodError::UnusedExtraClaim { .. } => "k8s-extra-claim-unused",
            PodError::RunAsRoot { .. } => "k8s-run-as-root",
        }
    }
}
