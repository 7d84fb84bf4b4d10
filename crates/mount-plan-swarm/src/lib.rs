//! # mount-plan-swarm: the Docker Swarm backend
//!
//! **Guarantee.** [`SwarmEngine`] runs a verified plan's job on a Swarm node as a one-shot
//! service (one replica, restart condition none, no healthcheck; not `replicated-job`, whose
//! removal on Docker 20.10 neither stops nor removes its task: see [`translate`](mod@translate)),
//! with the same typed
//! mounts as the Docker backend: the root tmpfs read-only with the planned mode and size,
//! every bind non-recursive with private propagation and read-only where planned. The service
//! is created with no replica, so nothing runs until the lifecycle has audited the service
//! spec; [`Engine::start`] is the update that asks for one replica, and returns
//! once the task's command runs (a task its node rejects, one that fails to start, and one
//! no node can take are start errors naming the node or the constraints: the command never
//! ran, the CLI exits 125). Placement comes from the launch spec's constraints, by default
//! `node.role==worker`. The exit status is the task's `Status.ContainerStatus.ExitCode`, read
//! only when the command ran; the output is the service's log stream, ended by this crate
//! once the task is terminal (Swarm never ends a followed service log).
//! Every service carries the launch's labels (on the service, for `list` and `gc`, and on
//! its containers).
//!
//! **Limits.** Measured on Docker 20.10 (API 1.41) as manager and workers:
//! - a service's mounts take no nosuid, nodev or noexec, and its privileges take
//!   `NoNewPrivileges` only from API 1.46: nosuid holds by the no-new-privileges the gate
//!   sets on itself before the command runs (gate protocol v2: a stale v1 gate on a node
//!   refuses the launch), nodev through the device cgroup (a service is never privileged and
//!   adds no devices); noexec must be accepted as missing;
//! - R's mode drifts to 0755 as on Docker 20.10, and the manager has no window to fix it;
//! - network `none` cannot be asked of a service (no such swarm network): the job gets the
//!   node's default bridge, said in the report's warnings;
//! - the audit reads the service spec from the manager; what the worker's engine made of it
//!   is proven only from inside the job (the conformance probe, or the identity check);
//! - shared storage is the site's: W must be the same directory at the same path on every
//!   node. A node where a bind source is missing rejects the task, and the launch fails
//!   naming the node (exit 125 from the CLI); a node that mounts *another* directory at W's
//!   path is caught only by an in-container identity check (issue 10), not by this crate;
//! - a node lost mid-job ends the launch with what Swarm knows: the exit status its agent
//!   reported on the way down (255, after about 2 s), `task-lost` (its engine restarted:
//!   about 14 s), or `node-down` once the manager marks it down (about 17 s); the service
//!   is removed, the node removes the container once it is back, and whatever the job
//!   wrote to W/J stays;
//! - `stop` removes the service (Swarm cannot stop a job's task and keep it): the node stops
//!   the container with the service's stop grace period (10 s), not the lifecycle's.
//!
//! The translation ([`translate()`]) and the mapping of services and tasks
//! ([`observe::observe`], [`observe::outcome`]) are pure and unit-tested without a daemon;
//! the rest is thin async glue.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod observe;
pub mod translate;

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{Service, Task};
use bollard::query_parameters::{
    InspectServiceOptions, ListServicesOptions, ListTasksOptions, LogsOptions, UpdateServiceOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use mount_plan_docker::{
    boxed, call_err, log_chunk, status_of, ApiVersion, ConnectOptions, DockerEngine,
};
use mount_plan_launch::{
    CreateRequest, Created, Engine, EngineInfo, EngineReport, ExitStatus, LaunchError, Listed,
    LogStream, ObservedContainer, Removal,
};

pub use observe::{current_task, observe, outcome, TaskOutcome};
pub use translate::{availability, started, translate, DEFAULT_CONSTRAINT};

/// How often `wait` polls the task, and how often it asks about the task's node.
const POLL: Duration = Duration::from_millis(100);
const NODE_EVERY: u32 = 10;
/// How long the log stream stays open after the task is terminal, for the last lines.
const LOG_TAIL: Duration = Duration::from_millis(300);

/// A connected Swarm manager.
#[derive(Debug, Clone)]
pub struct SwarmEngine {
    docker: Docker,
    info: EngineInfo,
    api: ApiVersion,
    node: String,
    gate_on_nodes: String,
}

impl SwarmEngine {
    /// Connect to a manager (the same endpoints as Docker: `DOCKER_HOST`, then the default
    /// socket), and check that it is a swarm manager.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, LaunchError> {
        let docker_engine = DockerEngine::connect(options).await?;
        let docker = docker_engine.client().clone();
        let mut info = docker_engine.info().clone();
        info.engine = "swarm".into();
        let not_manager = |why: String| LaunchError::Connect {
            engine: "swarm",
            endpoint: info.endpoint.clone(),
            source: why.into(),
        };
        let sysinfo = tokio::time::timeout(options.connect_timeout, docker.info())
            .await
            .map_err(|_| not_manager("no answer to GET /info".into()))?
            .map_err(|e| not_manager(e.to_string()))?;
        let swarm = sysinfo.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            return Err(not_manager(format!(
                "swarm rule `manager`: the engine is not a swarm manager (local node state {})",
                swarm
                    .local_node_state
                    .map_or_else(|| "unknown".to_owned(), |s| s.to_string())
            )));
        }
        Ok(SwarmEngine {
            docker,
            info,
            api: docker_engine.api_version(),
            node: swarm.node_id.unwrap_or_default(),
            gate_on_nodes: mount_plan_launch::gate::GATE_ON_NODES.to_owned(),
        })
    }

    /// Where the gate is on every node (default
    /// [`mount_plan_launch::gate::GATE_ON_NODES`]; `mount-plan gate install --path` puts it
    /// there).
    pub fn with_gate_on_nodes(mut self, path: impl Into<String>) -> Self {
        self.gate_on_nodes = path.into();
        self
    }

    /// The negotiated API version.
    pub fn api_version(&self) -> ApiVersion {
        self.api
    }

    /// The manager's node id.
    pub fn manager_node(&self) -> &str {
        &self.node
    }

    /// The bollard client.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    async fn service(&self, op: &'static str, id: &str) -> Result<Service, LaunchError> {
        self.docker
            .inspect_service(id, None::<InspectServiceOptions>)
            .await
            .map_err(|e| call_err(op, id, e))
    }

    async fn tasks(&self, op: &'static str, service_id: &str) -> Result<Vec<Task>, LaunchError> {
        let filters = HashMap::from([("service".to_owned(), vec![service_id.to_owned()])]);
        self.docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| call_err(op, service_id, e))
    }

    /// The service's current task, if it has one.
    async fn task(&self, op: &'static str, id: &str) -> Result<Option<Task>, LaunchError> {
        let tasks = self.tasks(op, id).await?;
        Ok(current_task(&tasks).cloned())
    }

    /// The error of a task that did not run its command: the engine's "no" to `start`.
    async fn not_run(&self, id: &str, task: &Task, state: &str, error: &str) -> LaunchError {
        let node = self.node_of(task).await;
        LaunchError::Start {
            container: id.to_owned(),
            source: format!("swarm rule `task-{state}`: node {node} did not run the job: {error}")
                .into(),
        }
    }

    /// Who runs `task`, for messages: `hostname (id)`, or the bare id.
    async fn node_of(&self, task: &Task) -> String {
        let Some(id) = task.node_id.as_deref().filter(|n| !n.is_empty()) else {
            return "no node (not scheduled)".to_owned();
        };
        match self.docker.inspect_node(id).await {
            Ok(node) => observe::node_name(&node),
            Err(_) => format!("({id})"),
        }
    }
}

/// The placement constraints of a service spec, for messages.
fn constraints_of(spec: &bollard::models::ServiceSpec) -> Vec<String> {
    spec.task_template
        .as_ref()
        .and_then(|t| t.placement.as_ref())
        .and_then(|p| p.constraints.clone())
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl Engine for SwarmEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn report(&self) -> EngineReport {
        EngineReport {
            engine: self.info.clone(),
            protections: availability(self.api),
            warnings: translate::warnings(),
        }
    }

    /// The gate on the nodes (`with_gate_on_nodes`): the audit requires the service's bind at
    /// the gate's path to come from exactly there.
    fn gate_source(&self) -> Option<String> {
        Some(self.gate_on_nodes.clone())
    }

    /// Create the service with no replica: nothing runs until `start`.
    async fn create(&self, request: &CreateRequest<'_>) -> Result<Created, LaunchError> {
        let plan = request.plan.plan();
        // The gate reads the image's entrypoint and command from the manager's copy of the
        // image (images are named by ID and present on every node). A task's container is not
        // inspected before it runs, so only a name that cannot move is read once.
        let image = mount_plan_docker::read_image_command(
            &self.docker,
            &self.info.endpoint,
            &request.spec.image,
            mount_plan_launch::image_command::Reuse::ByContent,
            |e| match status_of(&e) {
                Some(404) => LaunchError::ImageNotFound {
                    image: request.spec.image.to_string(),
                    source: format!(
                        "the manager holds no such image, and reads the image's entrypoint from it: {e}"
                    )
                    .into(),
                },
                Some(_) => LaunchError::Create {
                    job: plan.job().to_string(),
                    source: boxed(e),
                },
                None => call_err("create", "", e),
            },
        )
        .await?;
        // A worker whose runc predates 1.1.8 gives R the mode of the directory it covers,
        // and nothing can correct it before the task starts (see `availability`).
        // The task runs on another machine, which numbers devices its own way.
        let gate = request
            .gate
            .clone()
            .accepting_root_mode(mount_plan_docker::WORKDIR_PARENT_MODE)
            .node_local_devices();
        let (entrypoint, command) =
            gate.command_line(request.spec, &image.entrypoint, &image.cmd)?;
        let call = translate::GateCall {
            on_nodes: self.gate_on_nodes.clone(),
            entrypoint,
            command,
        };
        let spec = translate(plan, request.spec, request.labels, &self.info, Some(&call))?;
        let created =
            self.docker
                .create_service(spec, None)
                .await
                .map_err(|e| match status_of(&e) {
                    Some(_) => LaunchError::Create {
                        job: plan.job().to_string(),
                        source: boxed(e),
                    },
                    None => call_err("create", "", e),
                })?;
        created
            .id
            .map(Created::unchecked)
            .ok_or_else(|| LaunchError::AnswerLost {
                op: "create",
                container: String::new(),
                source: "swarm rule `no-service-id`: the manager answered without a service id"
                    .into(),
            })
    }

    /// Ask for one replica, then follow the task until its command runs (or has already
    /// ended), as Docker's start returns once the process runs. A task that never runs its
    /// command is the engine's "no" ([`LaunchError::Start`], naming the node): rejected by
    /// its node (a bind source missing there, an image it lacks), failed to start (a missing
    /// executable), or with no node to go to (the constraints match no ready node). The
    /// lifecycle then knows the command did not run. A service already started is not
    /// updated again.
    async fn start(&self, id: &str) -> Result<(), LaunchError> {
        let service = self.service("start", id).await?;
        let spec = service.spec.clone().unwrap_or_default();
        if !translate::is_started(&spec) {
            let version = service
                .version
                .as_ref()
                .and_then(|v| v.index)
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or(0);
            let options = UpdateServiceOptions {
                version,
                ..UpdateServiceOptions::default()
            };
            self.docker
                .update_service(id, started(&spec), options, None)
                .await
                .map_err(|e| match status_of(&e) {
                    Some(code) if code != 404 => LaunchError::Start {
                        container: id.to_owned(),
                        source: boxed(e),
                    },
                    _ => call_err("start", id, e),
                })?;
        }
        loop {
            if let Some(task) = self.task("start", id).await? {
                match outcome(&task) {
                    TaskOutcome::Running | TaskOutcome::Exited(_) => return Ok(()),
                    TaskOutcome::NotRun { state, error } | TaskOutcome::Lost { state, error } => {
                        return Err(self.not_run(id, &task, &state, &error).await)
                    }
                    TaskOutcome::Pending => {
                        let err = task.status.as_ref().and_then(|s| s.err.clone());
                        if let Some(err) = err.filter(|e| e.starts_with("no suitable node")) {
                            return Err(LaunchError::Start {
                                container: id.to_owned(),
                                source: format!(
                                    "swarm rule `placement`: no node can run the job ({:?}): {err}",
                                    constraints_of(&spec)
                                )
                                .into(),
                            });
                        }
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn inspect(&self, id: &str) -> Result<ObservedContainer, LaunchError> {
        let service = self.service("inspect", id).await?;
        let task = self
            .task("inspect", service.id.as_deref().unwrap_or(id))
            .await?;
        Ok(observe(&service, task.as_ref()))
    }

    /// Poll the task until it is terminal. A task that never ran its command (rejected by
    /// its node, or failed to start) is a `start` error naming the node; a task that ended
    /// without a status, or whose node the manager marks down, is an `Engine` error naming
    /// the node: no status is ever guessed.
    async fn wait(&self, id: &str) -> Result<ExitStatus, LaunchError> {
        let mut polls = 0u32;
        loop {
            let task = self.task("wait", id).await?;
            if let Some(task) = task {
                match outcome(&task) {
                    TaskOutcome::Exited(code) => return Ok(ExitStatus { code }),
                    TaskOutcome::NotRun { state, error } => {
                        return Err(self.not_run(id, &task, &state, &error).await);
                    }
                    TaskOutcome::Lost { state, error } => {
                        let node = self.node_of(&task).await;
                        return Err(LaunchError::Engine {
                            op: "wait",
                            container: id.to_owned(),
                            source: format!(
                                "swarm rule `task-lost`: the task on node {node} ended {state} without an exit status: {error}"
                            )
                            .into(),
                        });
                    }
                    TaskOutcome::Pending | TaskOutcome::Running => {
                        if polls % NODE_EVERY == NODE_EVERY - 1 {
                            if let Some(node_id) = task.node_id.as_deref().filter(|n| !n.is_empty())
                            {
                                let node = self
                                    .docker
                                    .inspect_node(node_id)
                                    .await
                                    .map_err(|e| call_err("wait", id, e))?;
                                if !observe::node_is_ready(&node) {
                                    let status = node.status.clone().unwrap_or_default();
                                    return Err(LaunchError::Engine {
                                        op: "wait",
                                        container: id.to_owned(),
                                        source: format!(
                                            "swarm rule `node-down`: node {} running the job is {} ({}): the job's state is unknown",
                                            observe::node_name(&node),
                                            status.state.map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
                                            status.message.unwrap_or_default()
                                        )
                                        .into(),
                                    });
                                }
                            }
                        }
                    }
                }
            }
            polls = polls.wrapping_add(1);
            tokio::time::sleep(POLL).await;
        }
    }

    /// The service's log stream, followed; Swarm never ends it, so it is ended here once the
    /// task is terminal (300 ms later, for the last lines).
    fn logs(&self, id: &str) -> LogStream {
        let opts = LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            tail: "all".into(),
            ..LogsOptions::default()
        };
        let owned = id.to_owned();
        let lines = self
            .docker
            .service_logs(id, Some(opts))
            .filter_map(move |item| {
                std::future::ready(log_chunk(item, |e| call_err("logs", &owned, e)))
            });
        let this = self.clone();
        let service = id.to_owned();
        let ended = async move {
            loop {
                match this.task("logs", &service).await {
                    Ok(Some(t)) if outcome(&t).is_terminal() => break,
                    Err(LaunchError::NotFound { .. }) => break,
                    _ => tokio::time::sleep(POLL).await,
                }
            }
            tokio::time::sleep(LOG_TAIL).await;
        };
        lines.take_until(Box::pin(ended)).boxed()
    }

    /// Swarm cannot stop one task of a job and keep the service: stopping removes the
    /// service, and the node stops its container (SIGTERM, then SIGKILL after the service's
    /// stop grace period, 10 s). A service already gone is not an error.
    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), LaunchError> {
        self.remove(id).await.map(drop)
    }

    async fn remove(&self, id: &str) -> Result<Removal, LaunchError> {
        match self.docker.delete_service(id).await {
            Ok(()) => Ok(Removal::Removed),
            Err(e) if status_of(&e) == Some(404) => Ok(Removal::AlreadyGone),
            Err(e) => Err(call_err("remove", id, e)),
        }
    }

    async fn list(&self, key: &str, value: &str) -> Result<Vec<Listed>, LaunchError> {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{key}={value}")])]);
        let opts = ListServicesOptions {
            filters: Some(filters),
            ..ListServicesOptions::default()
        };
        let list = self
            .docker
            .list_services(Some(opts))
            .await
            .map_err(|e| call_err("list", &format!("{key}={value}"), e))?;
        Ok(list
            .into_iter()
            .filter_map(|s| {
                let spec = s.spec.clone().unwrap_or_default();
                Some(Listed {
                    id: s.id?,
                    labels: spec
                        .labels
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                    state: Some(
                        if translate::is_started(&spec) {
                            "started"
                        } else {
                            "created"
                        }
                        .to_owned(),
                    ),
                    created_unix: s.created_at.as_deref().and_then(observe::unix_seconds),
                })
            })
            .collect())
    }
}
