//! # mount-plan-docker: the Docker backend
//!
//! **Guarantee.** [`DockerEngine`] implements [`mount_plan_launch::Engine`] over the Docker
//! Engine API: it creates a verified plan's container with typed mounts only (never
//! `--mount` strings): the root tmpfs read-only with the planned mode and size, every bind
//! non-recursive with private propagation and read-only where planned, `no-new-privileges`
//! in place of `nosuid` on binds, never privileged and no devices added (Docker's device
//! cgroup in place of `nodev`). It negotiates the API version and reads the engine version;
//! [`availability`] says, from them, which protections this engine honours. The launch
//! itself (protection check, audits, clean-up, cancellation) is the one lifecycle of
//! [`mount_plan_launch::launch`]; this crate only translates and calls.
//!
//! **Limits.** The Engine API has no per-bind `noexec` at any version: a plan asking for it
//! is refused unless the launch spec accepts [`mount_plan_launch::Protection::NoExecOnBinds`] as missing.
//! `nodev` through the device cgroup still lets a job open the few default devices Docker
//! allows (null, zero, full, random, urandom, tty, console, ptmx, pts, net/tun) if such a
//! node is planted in a bound directory. R's tmpfs gets the planned size and `mode=` option,
//! but with runc before 1.1.8 its root inode ends up 0755: Docker creates the working
//! directory R/J in the container's own filesystem before runc mounts anything, and such a
//! runc gives a tmpfs the mode of the directory it covers (measured on Docker 20.10 / runc
//! 1.1.5; Docker 26 / runc 1.1.15 keeps 0555; [`root_mode_from_runtime`], and for another
//! runtime an observation, [`probe`]). A read-only root still refuses every write; a scratch
//! root (1777) refuses non-root writers. Images are never pulled.
//!
//! What an engine honours is decided from its versions ([`version`]); the translation
//! ([`translate`]) and the inspect mapping ([`observe`]) are pure and unit-tested without a
//! daemon; the rest is thin async glue.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod observe;
pub mod probe;
mod translate;
pub mod version;

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    StopContainerOptions, UploadToContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use mount_plan_launch::image_command::{ImageCommand, Reuse};
use mount_plan_launch::{
    CreateRequest, Created, Engine, EngineInfo, EngineReport, ExitStatus, LaunchError, Listed,
    LogChunk, LogStream, ObservedContainer, OutputStream, Removal,
};

pub use observe::{observe, propagation_name};
pub use translate::{engine_mounts, gate_mount, mounts, translate, CreateCall};
pub use version::{
    availability, root_mode_from_runtime, runc_version, ApiVersion, ApiVersionError, EngineFacts,
    RootMode, NODEV_SUBSTITUTE, NOSUID_SUBSTITUTE, RUNC_FIXED, WORKDIR_PARENT_MODE,
};

/// The socket used when neither an explicit host nor `DOCKER_HOST` is given.
pub const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// How to reach the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// `unix:///path`, a bare socket path, or `tcp://host:port`; `None`: `DOCKER_HOST`, then
    /// [`DEFAULT_SOCKET`].
    pub host: Option<String>,
    /// How long connecting and the version handshake may take.
    pub connect_timeout: Duration,
    /// How long any later request may take to answer (streams are not cut).
    pub request_timeout: Duration,
    /// An image with `stat`, to observe at connect what the versions cannot tell
    /// ([`probe`]); `None`: report what the versions and earlier observations tell.
    pub probe_image: Option<String>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            host: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            probe_image: None,
        }
    }
}

/// A connected Docker engine.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    info: EngineInfo,
    api: ApiVersion,
    /// What was observed of R's mode on this engine (cache or probe), if anything.
    observed: Option<RootMode>,
}

/// An engine client's error, boxed for [`LaunchError`].
pub fn boxed(e: DockerError) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

/// The entrypoint and command of `image` on the engine `docker` at `endpoint` (the gate puts
/// them after itself), through this process's table (`mount_plan_launch::image_command`): an
/// image inspect unless `reuse` lets what was read before stand. A failed inspect is
/// `on_error`'s error.
pub async fn read_image_command(
    docker: &Docker,
    endpoint: &str,
    image: &mount_plan_launch::ImageRef,
    reuse: Reuse,
    on_error: impl FnOnce(DockerError) -> LaunchError,
) -> Result<ImageCommand, LaunchError> {
    mount_plan_launch::image_command::image_command(endpoint, image, reuse, || async {
        docker
            .inspect_image(image.as_str())
            .await
            .map(image_command_of)
            .map_err(on_error)
    })
    .await
}

/// The entrypoint, command and id of an image as Docker's image inspect describes them.
fn image_command_of(image: bollard::models::ImageInspect) -> ImageCommand {
    let config = image.config.unwrap_or_default();
    ImageCommand {
        entrypoint: config.entrypoint.unwrap_or_default(),
        cmd: config.cmd.unwrap_or_default(),
        id: image.id,
    }
}

/// The HTTP status of an engine's answer; `None` when there was no answer (a reset
/// connection, a timeout, a truncated body).
pub fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Map an engine call's error: 404 is [`LaunchError::NotFound`], another answer
/// [`LaunchError::Engine`], no answer [`LaunchError::AnswerLost`] (the call may have taken
/// effect). Shared by the Docker and Swarm backends.
pub fn call_err(op: &'static str, container: &str, e: DockerError) -> LaunchError {
    LaunchError::from_call(op, container, status_of(&e), boxed(e))
}

/// One item of an engine log stream (a container's, or a Swarm service's) as a [`LogChunk`]
/// (`None` for stdin echoes); an error is mapped with `err`.
pub fn log_chunk(
    item: Result<bollard::container::LogOutput, DockerError>,
    err: impl FnOnce(DockerError) -> LaunchError,
) -> Option<Result<LogChunk, LaunchError>> {
    use bollard::container::LogOutput;
    match item {
        Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
            Some(Ok(LogChunk {
                stream: OutputStream::Stdout,
                bytes: message.to_vec(),
            }))
        }
        Ok(LogOutput::StdErr { message }) => Some(Ok(LogChunk {
            stream: OutputStream::Stderr,
            bytes: message.to_vec(),
        })),
        Ok(LogOutput::StdIn { .. }) => None,
        Err(e) => Some(Err(err(e))),
    }
}

impl DockerEngine {
    /// Copy the gate and R's directory entry ([`mount_plan_launch::gate::Gate::archive`])
    /// into created container `id`, before it starts: for a container created without the
    /// gate's host copy bound (`create` binds it, and writes at most R's entry).
    pub async fn put_gate(
        &self,
        id: &str,
        gate: &mount_plan_launch::gate::Gate,
    ) -> Result<(), LaunchError> {
        self.put_archive(id, gate.archive()).await
    }

    /// What this engine's runtime does to R's mode (from its version, else an observation).
    pub fn runtime_root_mode(&self) -> mount_plan_launch::gate::RuntimeRootMode {
        use mount_plan_launch::gate::RuntimeRootMode;
        let facts = EngineFacts::new(self.api, self.info.runtime.as_deref(), self.observed);
        match facts.root_mode {
            Some((RootMode::Kept, _)) => RuntimeRootMode::Kept,
            Some((RootMode::Becomes(m), _)) => RuntimeRootMode::Becomes(m),
            None => RuntimeRootMode::Unknown,
        }
    }

    /// Copy a tar archive into created container `id` at `/` (the engine's archive call).
    async fn put_archive(&self, id: &str, archive: Vec<u8>) -> Result<(), LaunchError> {
        self.docker
            .upload_to_container(
                id,
                Some(UploadToContainerOptions {
                    path: "/".into(),
                    ..UploadToContainerOptions::default()
                }),
                bollard::body_full(bytes::Bytes::from(archive)),
            )
            .await
            .map_err(|e| call_err("upload", id, e))
    }

    /// Connect, negotiate the API version, and read the engine's version.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, LaunchError> {
        let host = options
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_SOCKET.to_owned());
        let endpoint = if host.starts_with('/') {
            format!("unix://{host}")
        } else {
            host
        };
        let connect_err = |source: Box<dyn std::error::Error + Send + Sync>| LaunchError::Connect {
            engine: "docker",
            endpoint: endpoint.clone(),
            source,
        };
        let secs = options.request_timeout.as_secs().max(1);
        let docker = if endpoint.starts_with("unix://") {
            Docker::connect_with_unix(&endpoint, secs, bollard::API_DEFAULT_VERSION)
        } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
            Docker::connect_with_http(&endpoint, secs, bollard::API_DEFAULT_VERSION)
        } else {
            return Err(connect_err(
                format!("docker rule `docker-endpoint`: {endpoint:?} is neither unix://, tcp:// nor a socket path").into(),
            ));
        }
        .map_err(|e| connect_err(boxed(e)))?;

        let handshake = async {
            let docker = docker.negotiate_version().await?;
            let version = docker.version().await?;
            let info = docker.info().await?;
            Ok::<_, DockerError>((docker, version, info))
        };
        let (docker, version, sysinfo) = tokio::time::timeout(options.connect_timeout, handshake)
            .await
            .map_err(|_| {
                connect_err(
                    format!(
                        "no answer within {:?} (is the engine running?)",
                        options.connect_timeout
                    )
                    .into(),
                )
            })?
            .map_err(|e| connect_err(boxed(e)))?;

        let client = docker.client_version();
        let negotiated = ApiVersion::new(client.major_version as u32, client.minor_version as u32);
        let server_api: Option<ApiVersion> =
            version.api_version.as_deref().and_then(|v| v.parse().ok());
        let api = server_api.map_or(negotiated, |s| s.min(negotiated));
        let runtime = version
            .components
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.name.eq_ignore_ascii_case("runc")))
            .map(|c| {
                let commit = c.details.as_ref().and_then(|d| d.get("GitCommit"));
                format!(
                    "runc {}",
                    runc_version(&c.version, commit.map(String::as_str))
                )
            })
            .or_else(|| sysinfo.default_runtime.clone());
        let rootless = sysinfo
            .security_options
            .as_ref()
            .is_some_and(|o| o.iter().any(|s| s.contains("name=rootless")));
        let info = EngineInfo {
            engine: "docker".into(),
            endpoint,
            version: version.version.clone().unwrap_or_else(|| "unknown".into()),
            api_version: api.to_string(),
            runtime,
            rootless,
            // userns-remap (`name=userns`) or a rootless daemon: the job's root is not the
            // host's.
            user_namespace: rootless
                || sysinfo
                    .security_options
                    .as_ref()
                    .is_some_and(|o| o.iter().any(|s| s.contains("name=userns"))),
        };
        let observed = probe::root_mode(&docker, &info, options.probe_image.as_deref()).await?;
        Ok(DockerEngine {
            docker,
            info,
            api,
            observed,
        })
    }

    /// The negotiated API version.
    pub fn api_version(&self) -> ApiVersion {
        self.api
    }

    /// The bollard client, for callers that need an engine call this crate does not wrap.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Versions, protections and warnings (pure: from what `connect` learnt).
    fn report_of(&self) -> EngineReport {
        let facts = EngineFacts::new(self.api, self.info.runtime.as_deref(), self.observed);
        EngineReport {
            engine: self.info.clone(),
            protections: availability(&facts),
            warnings: version::warnings(&self.info),
        }
    }
}

#[async_trait::async_trait]
impl Engine for DockerEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn report(&self) -> EngineReport {
        self.report_of()
    }

    async fn create(&self, request: &CreateRequest<'_>) -> Result<Created, LaunchError> {
        let plan = request.plan.plan();
        let mut call = translate(plan, request.spec, request.labels, &self.info)?;
        let not_created = |e: DockerError| {
            let no_image = status_of(&e) == Some(404)
                || matches!(&e, DockerError::DockerResponseServerError { message, .. } if message.contains("No such image"));
            if no_image {
                LaunchError::ImageNotFound {
                    image: request.spec.image.to_string(),
                    source: boxed(e),
                }
            } else if status_of(&e).is_some() {
                LaunchError::Create {
                    job: plan.job().to_string(),
                    source: boxed(e),
                }
            } else {
                call_err("create", "", e)
            }
        };
        // The gate runs first, then the image's entrypoint with the launch's command (or the
        // image's): the image's own configuration says what that is. What was read before may
        // stand for any name: the audit before start checks the container runs that image.
        let image = read_image_command(
            &self.docker,
            &self.info.endpoint,
            &request.spec.image,
            request.checked_reuse(),
            not_created,
        )
        .await?;
        // The gate from its checked host copy, bound read-only outside R; an archive call only
        // for R's entry where its mode matters and the runtime may not give it.
        let copy = mount_plan_launch::gate_copy::GateCopy::ensure()?;
        call.body
            .host_config
            .get_or_insert_with(Default::default)
            .mounts
            .get_or_insert_with(Vec::new)
            .push(translate::gate_mount(
                &copy.source(),
                EngineFacts::new(self.api, None, None).read_only_binds()
                    == version::ReadOnlyBinds::ForceRecursive,
            ));
        let (gate, root_archive) = request.gate.for_runtime(self.runtime_root_mode());
        let (entrypoint, cmd) = gate.command_line(request.spec, &image.entrypoint, &image.cmd)?;
        call.body.entrypoint = Some(entrypoint);
        call.body.cmd = Some(cmd);
        let created = self
            .docker
            .create_container(Some(call.options), call.body)
            .await
            .map_err(not_created)?;
        // R's directory entry, before anything starts, where it is needed. A failure leaves
        // the container to the lifecycle, which removes every container of this launch.
        if let Some(archive) = root_archive {
            self.put_archive(&created.id, archive).await?;
        }
        Ok(Created {
            id: created.id,
            built_for: image.id,
        })
    }

    async fn start(&self, id: &str) -> Result<(), LaunchError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| match status_of(&e) {
                Some(code) if code != 404 => LaunchError::Start {
                    container: id.to_owned(),
                    source: boxed(e),
                },
                _ => call_err("start", id, e),
            })
    }

    async fn inspect(&self, id: &str) -> Result<ObservedContainer, LaunchError> {
        let c = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| call_err("inspect", id, e))?;
        Ok(observe(&c))
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, LaunchError> {
        let opts = WaitContainerOptions {
            condition: "not-running".into(),
        };
        let mut stream = self.docker.wait_container(id, Some(opts));
        match stream.next().await {
            Some(Ok(r)) => Ok(ExitStatus {
                code: r.status_code,
            }),
            // bollard turns a non-zero exit code into this error.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => {
                Ok(ExitStatus { code })
            }
            Some(Err(e)) => Err(call_err("wait", id, e)),
            None => Err(LaunchError::AnswerLost {
                op: "wait",
                container: id.to_owned(),
                source: "docker rule `wait`: the engine closed the wait stream without a status"
                    .into(),
            }),
        }
    }

    fn logs(&self, id: &str) -> LogStream {
        let opts = LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            ..LogsOptions::default()
        };
        let owned = id.to_owned();
        self.docker
            .logs(id, Some(opts))
            .filter_map(move |item| {
                std::future::ready(log_chunk(item, |e| call_err("logs", &owned, e)))
            })
            .boxed()
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), LaunchError> {
        let opts = StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
            signal: None,
        };
        match self.docker.stop_container(id, Some(opts)).await {
            // 304: already stopped.
            Err(e) if status_of(&e) == Some(304) => Ok(()),
            other => other.map_err(|e| call_err("stop", id, e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<Removal, LaunchError> {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(Removal::Removed),
            Err(e) if status_of(&e) == Some(404) => Ok(Removal::AlreadyGone),
            Err(e) => Err(call_err("remove", id, e)),
        }
    }

    fn gate_source(&self) -> Option<String> {
        Some(mount_plan_launch::gate_copy::expected_source())
    }

    async fn list(&self, key: &str, value: &str) -> Result<Vec<Listed>, LaunchError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{key}={value}")])]);
        let opts = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..ListContainersOptions::default()
        };
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| call_err("list", &format!("{key}={value}"), e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                Some(Listed {
                    id: c.id?,
                    labels: c.labels.unwrap_or_default().into_iter().collect(),
                    state: c.state.map(|s| s.to_string()),
                    created_unix: c.created,
                })
            })
            .collect())
    }
}
