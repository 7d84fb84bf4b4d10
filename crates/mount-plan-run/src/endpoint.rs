//! Which engine, and where: [`Endpoint`] and its one [`connect`].
//!
//! The engine kind is [`EngineKind`] of `mount-plan-launch` (`docker`, `podman`, `swarm`,
//! `kubernetes`); the endpoint adds what a front end chooses about the connection. Every front
//! end (the CLI's `--runtime`, `--socket`, `--userns`..., Python's keyword arguments, the bench,
//! the tests) fills this one type and connects through [`connect`]: no front end calls a
//! backend's own `connect`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use mount_plan_launch::{Engine, EngineKind, LaunchError};
use serde::{Deserialize, Serialize};

use crate::error::RequestError;

/// Whether this build can connect to engines of `kind` (each backend is a cargo feature).
// With every feature on, this is `matches!`; the features decide which arms are true.
#[allow(clippy::match_like_matches_macro)]
pub fn built_in(kind: EngineKind) -> bool {
    match kind {
        EngineKind::Docker => cfg!(feature = "docker"),
        EngineKind::Podman => cfg!(feature = "podman"),
        EngineKind::Swarm => cfg!(feature = "swarm"),
        EngineKind::Kubernetes => cfg!(feature = "kubernetes"),
        EngineKind::Slurm => cfg!(feature = "slurm"),
        _ => false,
    }
}

/// A Podman user namespace mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Userns {
    /// The service's default
    #[default]
    Default,
    /// keep-id (rootless services only)
    KeepId,
}

impl Userns {
    /// The stable id (`default`, `keep-id`).
    pub fn id(self) -> &'static str {
        match self {
            Userns::Default => "default",
            Userns::KeepId => "keep-id",
        }
    }
}

impl fmt::Display for Userns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Userns {
    type Err = RequestError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        [Userns::Default, Userns::KeepId]
            .into_iter()
            .find(|u| u.id() == value)
            .ok_or_else(|| RequestError::Userns {
                value: value.to_owned(),
            })
    }
}

/// How a Kubernetes endpoint reaches its cluster, and the Pods it writes (the `kubernetes`
/// feature). Built by the front end from its own options (the CLI's `--kubeconfig`,
/// `--namespace` and `--k8s-*`).
#[cfg(feature = "kubernetes")]
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The kubeconfig file; `None`: `KUBECONFIG`, `~/.kube/config`, or in-cluster.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The namespace; `None`: the kubeconfig context's.
    pub namespace: Option<String>,
    /// Target, volumes and init image of every Pod.
    pub pod: mount_plan_kubernetes::PodSettings,
}

/// Which engine, and where: everything a front end chooses about the connection.
///
/// `FromStr` reads `KIND` or `KIND@SOCKET` (`docker`, `podman@unix:///run/podman/podman.sock`);
/// serde reads and writes the same fields by name (`kind`, `socket`, `userns`,
/// `connect_timeout` in seconds, `gate_path`, `probe_image`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct Endpoint {
    /// The container engine
    #[cfg_attr(
        feature = "clap",
        arg(long = "runtime", value_name = "RUNTIME", value_parser = crate::cli::KindParser)
    )]
    #[serde(with = "kind_serde")]
    pub kind: EngineKind,
    /// The engine's API socket [default: docker and swarm (a manager): DOCKER_HOST, then
    /// /var/run/docker.sock;
    /// podman: CONTAINER_HOST, then /run/podman/podman.sock as root, else
    /// $XDG_RUNTIME_DIR/podman/podman.sock]
    #[cfg_attr(feature = "clap", arg(long, value_name = "PATH"))]
    #[serde(default)]
    pub socket: Option<String>,
    /// Podman only: the user namespace (keep-id: a rootless service's user keeps its ids in
    /// the container and owns what the job writes)
    #[cfg_attr(
        feature = "clap",
        arg(long, value_enum, value_name = "MODE", default_value = "default")
    )]
    #[serde(default)]
    pub userns: Userns,
    /// Seconds to wait for the engine to answer the version handshake
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "SECS", default_value = "10", value_parser = crate::cli::whole_seconds)
    )]
    #[serde(default = "default_connect_timeout", with = "secs_serde")]
    pub connect_timeout: Duration,
    /// Swarm only: where the gate is on every node (`mount-plan gate install --path`;
    /// default /usr/local/libexec/mount-plan/gate)
    #[cfg_attr(feature = "clap", arg(long, value_name = "PATH"))]
    #[serde(default)]
    pub gate_path: Option<String>,
    /// Docker only: an image with `stat`, to observe (once per engine version, cached) what
    /// the engine's versions cannot tell, such as R's mode on a runtime other than runc
    #[cfg_attr(feature = "clap", arg(long, value_name = "IMAGE"))]
    #[serde(default)]
    pub probe_image: Option<String>,
    /// Kubernetes only: the cluster and the Pods' settings (not serialised: a front end builds
    /// them from its own options).
    #[cfg(feature = "kubernetes")]
    #[cfg_attr(feature = "clap", arg(skip))]
    #[serde(skip)]
    pub cluster: Option<Box<Cluster>>,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Endpoint {
    /// An endpoint of `kind` with every other setting at its default.
    pub fn new(kind: EngineKind) -> Self {
        Endpoint {
            kind,
            socket: None,
            userns: Userns::Default,
            connect_timeout: default_connect_timeout(),
            gate_path: None,
            probe_image: None,
            #[cfg(feature = "kubernetes")]
            cluster: None,
        }
    }

    /// The same endpoint on `socket`.
    pub fn with_socket(mut self, socket: impl Into<String>) -> Self {
        self.socket = Some(socket.into());
        self
    }

    /// A setting this kind of engine does not take, named once for every front end.
    fn unsupported_setting(&self) -> Option<LaunchError> {
        if self.userns != Userns::Default && self.kind != EngineKind::Podman {
            return Some(LaunchError::Unsupported(format!(
                "userns {} is a podman option (runtime {})",
                self.userns, self.kind
            )));
        }
        if self.gate_path.is_some() && !matches!(self.kind, EngineKind::Swarm | EngineKind::Slurm) {
            return Some(LaunchError::Unsupported(
                "gate path names the gate on a cluster's nodes: runtime swarm or slurm only (Docker and Podman bind the launcher's own host copy of the gate: MOUNT_PLAN_GATE_DIR names its directory)".into(),
            ));
        }
        if self.socket.is_some() && self.kind == EngineKind::Slurm {
            return Some(LaunchError::Unsupported(
                "runtime slurm takes no socket: it runs Slurm's commands behind MOUNT_PLAN_SLURM_COMMAND, with the shared directory MOUNT_PLAN_SLURM_SHARED".into(),
            ));
        }
        None
    }
}

impl FromStr for Endpoint {
    type Err = mount_plan_launch::SpecError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (kind, socket) = match value.split_once('@') {
            Some((kind, socket)) => (kind, Some(socket)),
            None => (value, None),
        };
        let mut endpoint = Endpoint::new(kind.parse()?);
        endpoint.socket = socket.map(str::to_owned);
        Ok(endpoint)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.socket {
            Some(socket) => write!(f, "{}@{socket}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

mod kind_serde {
    use mount_plan_launch::EngineKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(kind: &EngineKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.id())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EngineKind, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

mod secs_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// Connect to the engine `endpoint` names: the one place every front end connects.
///
/// The handshake waits at most `connect_timeout` (at least one second). A setting the kind
/// does not take (`userns` off Podman, a gate path off Swarm) and a kind this build lacks
/// are refused with `engine rule `unsupported``.
pub async fn connect(endpoint: &Endpoint) -> Result<Box<dyn Engine>, LaunchError> {
    if let Some(e) = endpoint.unsupported_setting() {
        return Err(e);
    }
    // Bounded (a longer one would overflow the clock), at least a second.
    #[allow(unused_variables)]
    let timeout = mount_plan_launch::duration_secs(
        "connect timeout",
        endpoint.connect_timeout.as_secs_f64(),
    )?
    .max(Duration::from_secs(1));
    match endpoint.kind {
        #[cfg(feature = "docker")]
        EngineKind::Docker => {
            let options = mount_plan_docker::ConnectOptions {
                host: endpoint.socket.clone(),
                connect_timeout: timeout,
                probe_image: endpoint.probe_image.clone(),
                ..mount_plan_docker::ConnectOptions::default()
            };
            Ok(Box::new(
                mount_plan_docker::DockerEngine::connect(&options).await?,
            ))
        }
        #[cfg(feature = "swarm")]
        EngineKind::Swarm => Ok(Box::new(
            mount_plan_swarm::SwarmEngine::connect(&mount_plan_docker::ConnectOptions {
                host: endpoint.socket.clone(),
                connect_timeout: timeout,
                ..mount_plan_docker::ConnectOptions::default()
            })
            .await?
            .with_gate_on_nodes(
                endpoint
                    .gate_path
                    .clone()
                    .unwrap_or_else(|| mount_plan_launch::gate::GATE_ON_NODES.to_owned()),
            ),
        )),
        #[cfg(feature = "podman")]
        EngineKind::Podman => {
            use mount_plan_podman::{PodmanEngine, PodmanOptions, UserNamespace};
            let options = PodmanOptions {
                userns: match endpoint.userns {
                    Userns::Default => UserNamespace::EngineDefault,
                    Userns::KeepId => UserNamespace::KeepId,
                },
                connect_timeout: timeout,
                ..PodmanOptions::default()
            };
            Ok(Box::new(match &endpoint.socket {
                Some(socket) => PodmanEngine::connect(socket, options).await?,
                None => PodmanEngine::discover(options).await?,
            }))
        }
        #[cfg(feature = "kubernetes")]
        EngineKind::Kubernetes => {
            let Some(cluster) = &endpoint.cluster else {
                return Err(LaunchError::Unsupported(
                    "runtime kubernetes needs the cluster's settings (the claim of the workspace, or host paths)".into(),
                ));
            };
            let mut options = mount_plan_kubernetes::KubeOptions::new(cluster.pod.clone());
            options.kubeconfig = cluster.kubeconfig.clone();
            options.namespace = cluster.namespace.clone();
            options.connect_timeout = timeout;
            Ok(Box::new(
                mount_plan_kubernetes::KubernetesEngine::connect(options).await?,
            ))
        }
        #[cfg(feature = "slurm")]
        EngineKind::Slurm => {
            let Some(mut config) = mount_plan_slurm::SlurmConfig::from_env() else {
                return Err(LaunchError::Unsupported(
                    "runtime slurm needs MOUNT_PLAN_SLURM_SHARED (the shared directory, the same path here and on every node) and, unless Slurm's commands run here, MOUNT_PLAN_SLURM_COMMAND (the prefix that runs them, e.g. `ssh login1`)".into(),
                ));
            };
            if let Some(gate) = &endpoint.gate_path {
                config.gate_on_nodes = gate.clone();
            }
            Ok(Box::new(
                mount_plan_slurm::SlurmEngine::connect(config).await?,
            ))
        }
        kind => Err(LaunchError::Unsupported(format!(
            "runtime {kind} is not built into this program"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_reads_kind_and_socket_and_round_trips_through_serde() {
        let e: Endpoint = "podman@unix:///run/podman/podman.sock".parse().unwrap();
        assert_eq!(e.kind, EngineKind::Podman);
        assert_eq!(e.socket.as_deref(), Some("unix:///run/podman/podman.sock"));
        assert_eq!(e.to_string(), "podman@unix:///run/podman/podman.sock");
        let json = serde_json::to_string(&e).unwrap();
        let back: Endpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_string(), e.to_string());
        let minimal: Endpoint = serde_json::from_str(r#"{"kind":"docker"}"#).unwrap();
        assert_eq!(minimal.connect_timeout, Duration::from_secs(10));
        assert_eq!(minimal.userns, Userns::Default);
        let err = "dockr".parse::<Endpoint>().unwrap_err();
        assert_eq!(err.rule(), "engine-kind");
        assert!(serde_json::from_str::<Endpoint>(r#"{"kind":"dockr"}"#).is_err());
    }

    #[test]
    fn userns_parses_its_two_ids_and_names_the_rule_otherwise() {
        assert_eq!("keep-id".parse::<Userns>().unwrap(), Userns::KeepId);
        let err = "keepid".parse::<Userns>().unwrap_err();
        assert_eq!(err.rule(), "userns-mode");
        assert!(err.to_string().contains("\"keepid\""), "{err}");
    }

    #[tokio::test]
    async fn settings_of_another_kind_are_refused_before_connecting() {
        let mut docker = Endpoint::new(EngineKind::Docker).with_socket("unix:///nonexistent");
        docker.userns = Userns::KeepId;
        let Err(err) = connect(&docker).await else {
            panic!("refused")
        };
        assert_eq!(err.rule(), "unsupported");
        assert!(err.to_string().contains("podman option"), "{err}");
        let mut podman = Endpoint::new(EngineKind::Podman).with_socket("unix:///nonexistent");
        podman.gate_path = Some("/gate".into());
        let Err(err) = connect(&podman).await else {
            panic!("refused")
        };
        assert!(err.to_string().contains("swarm or slurm only"), "{err}");
    }
}
