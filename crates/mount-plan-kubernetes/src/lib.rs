//! # mount-plan-kubernetes: the Kubernetes backend
//!
//! **Guarantee.** [`KubernetesEngine`] implements [`mount_plan_launch::Engine`] over the
//! Kubernetes API (kube-rs): `create` posts the Pod that [`mount_plan_k8s`] renders for the
//! verified plan, **held by a scheduling gate** (`io.mount-plan/audit`), so nothing runs
//! before the driver has audited what the API server stored (an API server that drops an
//! alpha field, or a mutating webhook that adds a mount, is caught there); `start` removes the
//! gate; `wait` follows the Pod to a terminal phase and reads the exit code from the job
//! container's status; `logs` follows the job container's log; `stop`/`remove` delete the
//! Pod; `list` selects by label. The launch itself (protection check, audits, clean-up on
//! every path, cancellation, `gc`) is the one lifecycle of [`mount_plan_launch::launch`].
//!
//! Answers map to [`LaunchError`]s: an API status (403 from admission, 409, 422...) to
//! `Create`/`Start`/`Engine`, 404 to `NotFound`; a missing answer (connection, timeout, a body
//! that does not parse) to `AnswerLost`. While waiting: an image that cannot be pulled is
//! `ImageNotFound` at once; a container that cannot be created is `Start`; a Pod that fails
//! without an exit code of its own (eviction, a deadline) is an `Engine` error; a Pod deleted
//! by someone else is `NotFound`; a Pod still unscheduled after
//! [`KubeOptions::pending_timeout`] is an `Engine` error. `wait` polls the Pod every
//! [`KubeOptions::poll_interval`].
//!
//! **Labels.** Every entry of the request's labels is written as an annotation; those whose key
//! and value are valid Kubernetes labels (63 characters, `[A-Za-z0-9._-]`) are labels too, so
//! `io.mount-plan.managed=1` and `io.mount-plan.launch=<id>` can be selected; the plan digest,
//! the pid namespace and long job names live in annotations only. `list` reads both back.
//!
//! **Limits.** Tested against a mock API server only (tower-test), never a live cluster. The
//! job's stdout and stderr arrive merged (the log API has one stream). A Pod always has a
//! network: `Network::None` is refused (use the default network and a NetworkPolicy). The
//! host checks and identity pins run where the launcher runs; on a node the launcher cannot
//! reach, only the kubelet's own subPath checks stand between W and a swapped link.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod observe;
mod translate;

use std::time::Duration;

use futures_util::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::Client;
use mount_plan_launch::{
    Availability, CreateRequest, Created, Engine, EngineInfo, EngineReport, ExitStatus,
    LaunchError, Listed, LogChunk, LogStream, ObservedContainer, OutputStream, Protection, Removal,
};

pub use observe::{observe, progress, quantity_bytes, state, Progress};
pub use translate::{translate, PodSettings, ANNOTATION_WORKSPACE, AUDIT_GATE};

/// How the backend talks to the cluster and what it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeOptions {
    /// A kubeconfig file; `None`: the usual inference (`KUBECONFIG`, `~/.kube/config`, or the
    /// in-cluster service account).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The namespace; `None`: the kubeconfig context's (or `default`).
    pub namespace: Option<String>,
    /// Target, volumes and init image of every Pod.
    pub pod: PodSettings,
    /// How long connecting and the version request may take.
    pub connect_timeout: Duration,
    /// How often `wait` and `logs` read the Pod.
    pub poll_interval: Duration,
    /// How long a Pod may stay unstarted (unscheduled, pulling, initialising) once `start`
    /// has released it.
    pub pending_timeout: Duration,
}

impl KubeOptions {
    /// Options with defaults for everything but the Pods' settings.
    pub fn new(pod: PodSettings) -> Self {
        KubeOptions {
            kubeconfig: None,
            namespace: None,
            pod,
            connect_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            pending_timeout: Duration::from_secs(600),
        }
    }
}

/// A Kubernetes namespace to run Pods in.
#[derive(Clone)]
pub struct KubernetesEngine {
    pods: Api<Pod>,
    options: KubeOptions,
    info: EngineInfo,
}

impl std::fmt::Debug for KubernetesEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesEngine")
            .field("info", &self.info)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn boxed(e: kube::Error) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

fn status_of(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// A call's failure: 404 as `NotFound`, another answer through `answered`, no answer as
/// `AnswerLost`.
fn call_err(
    op: &'static str,
    pod: &str,
    e: kube::Error,
    answered: impl FnOnce(kube::Error) -> LaunchError,
) -> LaunchError {
    match status_of(&e) {
        Some(404) => LaunchError::NotFound {
            container: pod.to_owned(),
        },
        Some(_) => answered(e),
        None => LaunchError::AnswerLost {
            op,
            container: pod.to_owned(),
            source: boxed(e),
        },
    }
}

fn engine_err<'a>(op: &'static str, pod: &'a str) -> impl FnOnce(kube::Error) -> LaunchError + 'a {
    move |e| LaunchError::Engine {
        op,
        container: pod.to_owned(),
        source: boxed(e),
    }
}

impl KubernetesEngine {
    /// Connect from a kubeconfig (or the environment) and read the server's version.
    pub async fn connect(options: KubeOptions) -> Result<Self, LaunchError> {
        let endpoint = options.kubeconfig.as_ref().map_or_else(
            || "kubeconfig (inferred)".to_owned(),
            |p| p.display().to_string(),
        );
        let connect_err = |source: Box<dyn std::error::Error + Send + Sync>| LaunchError::Connect {
            engine: "kubernetes",
            endpoint: endpoint.clone(),
            source,
        };
        let config = async {
            match &options.kubeconfig {
                Some(path) => {
                    let file = kube::config::Kubeconfig::read_from(path)
                        .map_err(|e| connect_err(Box::new(e)))?;
                    kube::Config::from_custom_kubeconfig(
                        file,
                        &kube::config::KubeConfigOptions::default(),
                    )
                    .await
                    .map_err(|e| connect_err(Box::new(e)))
                }
                None => kube::Config::infer()
                    .await
                    .map_err(|e| connect_err(Box::new(e))),
            }
        };
        let config = config.await?;
        let url = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| connect_err(boxed(e)))?;
        let version = tokio::time::timeout(options.connect_timeout, client.apiserver_version())
            .await
            .map_err(|_| {
                connect_err(format!("no answer within {:?}", options.connect_timeout).into())
            })?
            .map_err(|e| connect_err(boxed(e)))?;
        Ok(Self::with_client(client, options, url, version.git_version))
    }

    /// An engine over an existing client (a mock service in tests), whose server reported
    /// `server_version`.
    pub fn with_client(
        client: Client,
        options: KubeOptions,
        endpoint: String,
        server_version: String,
    ) -> Self {
        let namespace = options
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let info = EngineInfo {
            engine: "kubernetes".into(),
            endpoint: format!("{endpoint} (namespace {namespace})"),
            version: server_version,
            api_version: format!("core/v1, Pods written for {}", options.pod.target.version()),
            runtime: None,
            rootless: false,
            user_namespace: false,
        };
        KubernetesEngine {
            pods: Api::namespaced(client, &namespace),
            options,
            info,
        }
    }

    async fn get(&self, op: &'static str, id: &str) -> Result<Pod, LaunchError> {
        self.pods
            .get(id)
            .await
            .map_err(|e| call_err(op, id, e, engine_err(op, id)))
    }
}

#[async_trait::async_trait]
impl Engine for KubernetesEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn report(&self) -> EngineReport {
        let target = &self.options.pod.target;
        let mut warnings = target.warnings();
        let mut protections = target.availability();
        if self.options.pod.gate_image.is_some() {
            // From the gate image, through an init container (see `render_pod`).
            for (p, a) in &mut protections {
                if *p == Protection::Gate {
                    *a = Availability::Native;
                }
            }
        }
        let server = self.info.version.trim_start_matches('v');
        if !server.starts_with(&format!("{}.", target.version())) {
            warnings.push(format!(
                "the API server is {} and the Pods are written for {}",
                self.info.version,
                target.version()
            ));
        }
        EngineReport {
            engine: self.info.clone(),
            protections,
            warnings,
        }
    }

    async fn create(&self, request: &CreateRequest<'_>) -> Result<Created, LaunchError> {
        let pod = translate(request, &self.options.pod)?;
        let job = request.plan.plan().job().to_string();
        let created = self
            .pods
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|e| match status_of(&e) {
                Some(_) => LaunchError::Create {
                    job: job.clone(),
                    source: boxed(e),
                },
                None => LaunchError::AnswerLost {
                    op: "create",
                    container: String::new(),
                    source: boxed(e),
                },
            })?;
        Ok(Created::unchecked(
            created.metadata.name.unwrap_or_default(),
        ))
    }

    async fn start(&self, id: &str) -> Result<(), LaunchError> {
        let patch = Patch::Merge(serde_json::json!({ "spec": { "schedulingGates": null } }));
        self.pods
            .patch(id, &PatchParams::default(), &patch)
            .await
            .map(drop)
            .map_err(|e| {
                call_err("start", id, e, |e| LaunchError::Start {
                    container: id.to_owned(),
                    source: boxed(e),
                })
            })
    }

    async fn inspect(&self, id: &str) -> Result<ObservedContainer, LaunchError> {
        Ok(observe(
            &self.get("inspect", id).await?,
            &self.options.pod.volumes,
        ))
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, LaunchError> {
        let deadline = tokio::time::Instant::now() + self.options.pending_timeout;
        loop {
            let pod = self.get("wait", id).await?;
            match progress(&pod) {
                Progress::Exited(code) => return Ok(ExitStatus { code }),
                Progress::Failed(e) => return Err(e),
                Progress::Waiting { started: false } if tokio::time::Instant::now() >= deadline => {
                    return Err(LaunchError::Engine {
                        op: "wait",
                        container: id.to_owned(),
                        source: format!(
                            "kubernetes: the job container has not started within {:?} (phase {:?}): the Pod is unschedulable or stuck",
                            self.options.pending_timeout,
                            pod.status.and_then(|s| s.phase)
                        )
                        .into(),
                    })
                }
                Progress::Waiting { .. } => tokio::time::sleep(self.options.poll_interval).await,
            }
        }
    }

    fn logs(&self, id: &str) -> LogStream {
        let engine = self.clone();
        let id = id.to_owned();
        let open = async move {
            // The log can only be read once the job container has started.
            loop {
                let pod = engine.get("logs", &id).await?;
                match progress(&pod) {
                    Progress::Waiting { started: false } => {
                        tokio::time::sleep(engine.options.poll_interval).await
                    }
                    Progress::Failed(_) if observe::exit_code(&pod).is_none() => return Ok(None),
                    _ => break,
                }
            }
            let params = LogParams {
                container: Some(mount_plan_k8s::JOB_CONTAINER.into()),
                follow: true,
                ..LogParams::default()
            };
            let reader = engine
                .pods
                .log_stream(&id, &params)
                .await
                .map_err(|e| call_err("logs", &id, e, engine_err("logs", &id)))?;
            let lines = reader.lines().map(move |line| {
                line.map(|mut l| {
                    l.push('\n');
                    // Kubernetes merges the container's two streams; the gate's line (it
                    // writes it to stderr, carrying this launch's nonce) gets its stream back.
                    let stream = if l.starts_with(mount_plan_launch::gate::GATE_LINE_PREFIX) {
                        OutputStream::Stderr
                    } else {
                        OutputStream::Stdout
                    };
                    LogChunk {
                        stream,
                        bytes: l.into_bytes(),
                    }
                })
                .map_err(|e| LaunchError::AnswerLost {
                    op: "logs",
                    container: String::new(),
                    source: Box::new(e),
                })
            });
            Ok(Some(lines))
        };
        futures_util::stream::once(open)
            .flat_map(|opened: Result<Option<_>, LaunchError>| match opened {
                Ok(Some(lines)) => lines.boxed(),
                Ok(None) => futures_util::stream::empty().boxed(),
                Err(e) => futures_util::stream::once(async { Err(e) }).boxed(),
            })
            .boxed()
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), LaunchError> {
        let params = DeleteParams {
            grace_period_seconds: Some(u32::try_from(grace.as_secs()).unwrap_or(u32::MAX)),
            ..DeleteParams::default()
        };
        match self.pods.delete(id, &params).await {
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            other => other
                .map(drop)
                .map_err(|e| call_err("stop", id, e, engine_err("stop", id))),
        }
    }

    async fn remove(&self, id: &str) -> Result<Removal, LaunchError> {
        match self.pods.delete(id, &DeleteParams::background()).await {
            Ok(_) => Ok(Removal::Removed),
            Err(e) if status_of(&e) == Some(404) => Ok(Removal::AlreadyGone),
            Err(e) => Err(call_err("remove", id, e, engine_err("remove", id))),
        }
    }

    async fn list(&self, key: &str, value: &str) -> Result<Vec<Listed>, LaunchError> {
        let selector = format!("{key}={value}");
        let list = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| call_err("list", &selector, e, engine_err("list", &selector)))?;
        Ok(list
            .items
            .into_iter()
            .map(|pod| Listed {
                id: pod.metadata.name.clone().unwrap_or_default(),
                labels: mount_plan_k8s::names::read_metadata(
                    pod.metadata.labels.as_ref(),
                    pod.metadata.annotations.as_ref(),
                ),
                state: Some(state(&pod).to_owned()),
                created_unix: pod
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second()),
            })
            .collect())
    }
}
