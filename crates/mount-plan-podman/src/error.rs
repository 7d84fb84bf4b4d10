//! Errors of the Podman backend itself (the trait's calls return
//! [`mount_plan_launch::LaunchError`], with these as sources).

/// Why the Podman backend refused an input or could not reach a service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PodmanError {
    /// The endpoint is not a unix socket path.
    #[error("podman rule `podman-endpoint`: endpoint {value:?} is not a unix socket (unix:///absolute/path or /absolute/path)")]
    Endpoint {
        /// The refused value.
        value: String,
    },
    /// Nothing answers on the socket.
    #[error("podman rule `unreachable`: no podman service answers on {endpoint:?} ({source}); start one with `podman system service --time=0 {endpoint}` (as root for the rootful socket; for a rootless one as that user, with XDG_RUNTIME_DIR set)")]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// The client's error.
        #[source]
        source: podman_api::Error,
    },
    /// The service answered, but not with a version we can read.
    #[error("podman rule `version-unreadable`: cannot read a version from {value:?}")]
    Version {
        /// The reported value.
        value: String,
    },
    /// The user namespace mode is unknown.
    #[error("podman rule `user-namespace`: user namespace {value:?} is not one of \"default\", \"keep-id\"")]
    UserNamespace {
        /// The refused value.
        value: String,
    },
    /// The service refused or failed a call.
    #[error("podman rule `service`: the service answered {op} with: {source}")]
    Service {
        /// The call (`create`, `start`, ...).
        op: &'static str,
        /// The client's error.
        #[source]
        source: podman_api::Error,
    },
    /// A stopped container reports no exit code.
    #[error("podman rule `exit-code`: container {container:?} stopped but reports no exit code")]
    NoExitCode {
        /// The container id.
        container: String,
    },
}

impl PodmanError {
    /// The stable short id of the rule.
    pub fn rule(&self) -> &'static str {
        match self {
            PodmanError::Endpoint { .. } => "podman-endpoint",
            PodmanError::Unreachable { .. } => "unreachable",
            PodmanError::Version { .. } => "version-unreadable",
            PodmanError::UserNamespace { .. } => "user-namespace",
            PodmanError::Service { .. } => "service",
            PodmanError::NoExitCode { .. } => "exit-code",
        }
    }
}
