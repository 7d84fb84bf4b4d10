//! The test engines, listed once: where each one's socket is (its variable read here and
//! nowhere else), and, with the `endpoints` feature, the front door's
//! [`Endpoint`](mount_plan_run::Endpoint) a test, the bench or the soak connects through.

use crate::harness::{engines_setting, podman_setting, swarm_setting, Need};

/// An engine the tests and the bench run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TestEngine {
    /// The host's Docker (`DOCKER_HOST`, default `unix:///var/run/docker.sock`).
    Docker,
    /// The rootful Podman service of `.ci/podman-setup` (`MOUNT_PLAN_PODMAN_ROOTFUL_SOCKET`,
    /// default `unix:///run/podman/podman.sock`).
    PodmanRootful,
    /// The rootless Podman service of `.ci/podman-setup` (`MOUNT_PLAN_PODMAN_ROOTLESS_SOCKET`).
    PodmanRootless,
    /// The Docker 26 of `.ci/engines-setup` (`MOUNT_PLAN_DOCKER26_SOCKET`).
    Docker26,
    /// The rootful Podman 5 of `.ci/engines-setup` (`MOUNT_PLAN_PODMAN5_SOCKET`).
    Podman5,
    /// The manager of the Swarm of `.ci/swarm-setup` (`MOUNT_PLAN_SWARM_SOCKET`).
    Swarm,
}

impl TestEngine {
    /// Every test engine.
    pub const ALL: [TestEngine; 6] = [
        TestEngine::Docker,
        TestEngine::PodmanRootful,
        TestEngine::PodmanRootless,
        TestEngine::Docker26,
        TestEngine::Podman5,
        TestEngine::Swarm,
    ];

    /// The stable name (as in `MOUNT_PLAN_TEST_ABSENT`).
    pub fn name(self) -> &'static str {
        self.need().name()
    }

    /// What the harness must find for a test on this engine.
    pub fn need(self) -> Need {
        match self {
            TestEngine::Docker => Need::Docker,
            TestEngine::PodmanRootful => Need::PodmanRootful,
            TestEngine::PodmanRootless => Need::PodmanRootless,
            TestEngine::Docker26 => Need::Docker26,
            TestEngine::Podman5 => Need::Podman5,
            TestEngine::Swarm => Need::Swarm,
        }
    }

    /// The engine kind's id the front door takes (`docker`, `podman`, `swarm`).
    pub fn kind_id(self) -> &'static str {
        match self {
            TestEngine::Docker | TestEngine::Docker26 => "docker",
            TestEngine::PodmanRootful | TestEngine::PodmanRootless | TestEngine::Podman5 => {
                "podman"
            }
            TestEngine::Swarm => "swarm",
        }
    }

    /// Whether it speaks the Docker Engine API (else libpod's).
    pub fn is_docker(self) -> bool {
        self.kind_id() != "podman"
    }

    /// Its API socket's URL (`unix:///...`): the one place each socket variable is read
    /// (from the environment, else from the setup script's env file), or why it is unknown.
    pub fn socket(self) -> Result<String, String> {
        let setup = |key: &str, found: Option<String>, script: &str| {
            found.ok_or_else(|| format!("{key} is not set (run `bash .ci/{script}`)"))
        };
        match self {
            TestEngine::Docker => Ok(std::env::var("DOCKER_HOST")
                .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned())),
            TestEngine::PodmanRootful => Ok(podman_setting("MOUNT_PLAN_PODMAN_ROOTFUL_SOCKET")
                .unwrap_or_else(|| "unix:///run/podman/podman.sock".to_owned())),
            TestEngine::PodmanRootless => {
                let key = "MOUNT_PLAN_PODMAN_ROOTLESS_SOCKET";
                setup(key, podman_setting(key), "podman-setup")
            }
            TestEngine::Docker26 => {
                let key = "MOUNT_PLAN_DOCKER26_SOCKET";
                setup(key, engines_setting(key), "engines-setup")
            }
            TestEngine::Podman5 => {
                let key = "MOUNT_PLAN_PODMAN5_SOCKET";
                setup(key, engines_setting(key), "engines-setup")
            }
            TestEngine::Swarm => {
                let key = "MOUNT_PLAN_SWARM_SOCKET";
                setup(key, swarm_setting(key), "swarm-setup")
            }
        }
    }

    /// The front door's endpoint of this engine (every other setting at its default).
    #[cfg(feature = "endpoints")]
    pub fn endpoint(self) -> Result<mount_plan_run::Endpoint, String> {
        let kind = self
            .kind_id()
            .parse()
            .map_err(|e: mount_plan_launch::SpecError| e.to_string())?;
        Ok(mount_plan_run::Endpoint::new(kind).with_socket(self.socket()?))
    }
}
