//! Errors of the Podman backend itself (the trait's calls return
//! [`mount_plan_launch::LaunchError`], with these as sources).

/// Why the Podman backend refused an input or could not reach a service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PodmanError {
    /// The endpoint is not a unix socket path.
    #[error("{rule}endpoint {value:?} is not a unix socket (unix:///absolute/path or /absolute/path)", rule = self.prefix())]
    Endpoint {
        /// The refused value.
        value: String,
    },
    /// Nothing answers on the socket.
    #[error("{rule}no podman service answers on {endpoint:?} ({source}); start one with `podman system service --time=0 {endpoint}` (as root for the rootful socket; for a rootless one as that user, with XDG_RUNTIME_DIR set)", rule = self.prefix())]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// The client's error.
        #[source]
        source: podman_api::Error,
    },
    /// The service answered, but not with a version we can read.
    #[error("{rule}cannot read a version from {value:?}", rule = self.prefix())]
    Version {
        /// The reported value.
        value: String,
    },
    /// The user namespace mode is unknown.
    #[error("{rule}user namespace {value:?} is not one of \"default\", \"keep-id\"", rule = self.prefix())]
    UserNamespace {
        /// The refused value.
        value: String,
    },
    /// The service refused or failed a call.
    #[error("{rule}the service answered {op} with: {source}", rule = self.prefix())]
    Service {
        /// The call (`create`, `start`, ...).
        op: &'static str,
        /// The client's error.
        #[source]
        source: podman_api::Error,
    },
    /// The lock that keeps keep-id creates on a rootless service one at a time cannot be
    /// taken (see [`crate::create_lock`]): nothing is created.
    #[error("{rule}cannot take the create lock {path:?} that keeps keep-id creates on this rootless service one at a time (overlapping ones crash Podman 4.3): {source}", rule = self.prefix())]
    CreateLock {
        /// The lock file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The service reports no store run directory, where the create lock lives.
    #[error("{rule}the rootless service reports no store run directory, where the lock that keeps keep-id creates one at a time lives: nothing is created", rule = self.prefix())]
    NoRunRoot,
    /// A stopped container reports no exit code.
    #[error("{rule}container {container:?} stopped but reports no exit code", rule = self.prefix())]
    NoExitCode {
        /// The container id.
        container: String,
    },
    /// The wait gave no exit code while the container still runs.
    #[error("{rule}waiting for container {container:?}: {why}", rule = self.prefix())]
    Wait {
        /// The container id.
        container: String,
        /// The service's answer, or why there was none.
        why: String,
    },
}

mount_plan::rules!(PodmanError, "podman", {
    Endpoint => "podman-endpoint",
    Unreachable => "unreachable",
    Version => "version-unreadable",
    UserNamespace => "user-namespace",
    Service => "service",
    NoExitCode => "exit-code",
    Wait => "wait-answer",
    CreateLock => "create-lock",
    NoRunRoot => "create-lock-missing",
});
