//! # mount-plan-podman: the Podman backend, rootful and rootless
//!
//! **Guarantee.** [`PodmanEngine`] implements [`mount_plan_launch::Engine`] over a libpod API
//! socket. It creates each job container with exactly the plan's mounts, in OCI form: the
//! root tmpfs
//! with `ro` (or `rw` for a scratch root), `nosuid,nodev,noexec`, the planned `mode` and
//! `size`, and `notmpcopyup` (the image's files never show at R); every bind as `bind`
//! (non-recursive), `private`, `ro`/`rw`, with `nosuid,nodev` and, on read-only binds,
//! `noexec`. The working directory is the plan's; image volumes are ignored, so an image's
//! `VOLUME` adds no mount. [`observe`] maps what the service reports (including a tmpfs that
//! copies the image's files up) for the audit. The launch itself (protection check, audits
//! after create and after start, clean-up, cancellation) is the one lifecycle of
//! [`mount_plan_launch::launch`]; this crate only translates and calls.
//!
//! **Rootless.** Connect to the user's socket (`$XDG_RUNTIME_DIR/podman/podman.sock`). With
//! [`UserNamespace::KeepId`], the command runs as the service's user, whose files in the job
//! directory are owned by that user on the host. The rootless service needs `--network none`
//! where slirp4netns cannot open `/dev/net/tun` (the default network here is none).
//!
//! **What it checks, and what it does not.** The service's version is read at connect time;
//! a service older than [`MIN_VERSION`] is refused at launch, naming its version and the
//! feature. libpod reports binds under `Mounts` (with `bind`/`rbind`, `nosuid`, `nodev`,
//! `noexec`, `RW` and propagation) and tmpfs mounts under `HostConfig.Tmpfs` (with their
//! options): both come from the OCI spec the service generated, not from the kernel, so the
//! audit proves what was asked of the runtime. What the kernel really mounted is checked
//! only from inside the container (`/proc/self/mountinfo`). `no-new-privileges` cannot be
//! set through podman-api 0.11 (its key is misspelt and podman ignores it); nosuid on every
//! bind stands in its place and is audited.
//!
//! ```no_run
//! # async fn demo(plan: mount_plan_host::VerifiedPlan) -> Result<(), mount_plan_launch::LaunchError> {
//! use mount_plan_launch::{launch, Engine, LaunchOptions, LaunchSpec};
//! use mount_plan_podman::{PodmanEngine, PodmanOptions, UserNamespace};
//!
//! let options = PodmanOptions { userns: UserNamespace::KeepId, ..PodmanOptions::default() };
//! let engine: Box<dyn Engine> =
//!     Box::new(PodmanEngine::connect("unix:///run/user/1001/podman/podman.sock", options).await?);
//! let spec = LaunchSpec::new("localhost/mount-plan-busybox:latest".parse()?)
//!     .with_command(["sh", "-c", "echo done > out"]);
//! let mut print = |chunk: &mount_plan_launch::LogChunk| print!("{}", String::from_utf8_lossy(&chunk.bytes));
//! let done = launch(engine.as_ref(), &plan, &spec, &LaunchOptions::default(), &mut print)
//!     .await
//!     .map_err(|failed| failed.error)?;
//! assert!(done.status.success());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod endpoint;
mod error;
mod observe;
mod translate;
mod version;

use std::time::Duration;

use futures_util::StreamExt;
use mount_plan_launch::{
    CreateRequest, Engine, EngineInfo, EngineReport, ExitStatus, LaunchError, Listed, LogChunk,
    LogStream, ObservedContainer, OutputStream,
};
use podman_api::conn::TtyChunk;
use podman_api::opts::{
    ContainerDeleteOpts, ContainerListFilter, ContainerListOpts, ContainerLogsOpts,
    ContainerWaitOpts,
};
use podman_api::Podman;

pub use endpoint::{default_endpoint, socket_path, ROOTFUL_SOCKET};
pub use error::PodmanError;
pub use observe::{exit_status, observe, observed_tmpfs};
pub use translate::{
    container_mount, container_mounts, translate, PodmanOptions, UserNamespace, ENGINE, NO_COPY_UP,
};
pub use version::{
    availability, check_version, service_facts, warnings, PodmanVersion, ServiceFacts, MIN_VERSION,
    MIN_VERSION_FEATURE, RUNC_FIXED,
};

/// Serialises keep-id creates within this process (see [`PodmanEngine`]'s `create`).
static KEEP_ID_CREATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A Podman service (rootful or rootless) reached through its libpod API socket.
#[derive(Debug)]
pub struct PodmanEngine {
    podman: Podman,
    info: EngineInfo,
    facts: ServiceFacts,
    options: PodmanOptions,
}

fn status_of(e: &podman_api::Error) -> Option<u16> {
    match e {
        podman_api::Error::Fault { code, .. } => Some(code.as_u16()),
        _ => None,
    }
}

fn is_not_found(e: &podman_api::Error) -> bool {
    status_of(e) == Some(404)
}

/// An engine call's failure: the service's answer (an HTTP status) as the matching error; a
/// missing answer (connection, timeout, a broken body) as [`LaunchError::AnswerLost`].
fn call_error(op: &'static str, container: &str, source: podman_api::Error) -> LaunchError {
    let status = status_of(&source);
    let source = Box::new(PodmanError::Service { op, source });
    LaunchError::from_call(op, container, status, source)
}

impl PodmanEngine {
    /// Connect to the service at `endpoint` (`unix:///path/podman.sock` or `/path/podman.sock`)
    /// and read its version and facts. An unreachable service is a
    /// [`LaunchError::Connect`] whose source says how to start one.
    pub async fn connect(endpoint: &str, options: PodmanOptions) -> Result<Self, LaunchError> {
        let connect_error = |endpoint: &str, source: PodmanError| LaunchError::Connect {
            engine: ENGINE,
            endpoint: endpoint.to_owned(),
            source: Box::new(source),
        };
        let path = socket_path(endpoint).map_err(|e| connect_error(endpoint, e))?;
        let endpoint = format!("unix://{path}");
        let podman = Podman::unix(path);
        let unreachable = |source: podman_api::Error| {
            connect_error(
                &endpoint,
                PodmanError::Unreachable {
                    endpoint: endpoint.clone(),
                    source,
                },
            )
        };
        let timed_out = || {
            unreachable(podman_api::Error::StringError(format!(
                "no answer within {:?}",
                options.connect_timeout
            )))
        };
        let (version, info) = tokio::time::timeout(options.connect_timeout, async {
            let version = podman.version().await?;
            let info = podman.info().await?;
            Ok::<_, podman_api::Error>((version, info))
        })
        .await
        .map_err(|_| timed_out())?
        .map_err(unreachable)?;
        let facts = service_facts(&version, &info).map_err(|e| connect_error(&endpoint, e))?;
        let info = EngineInfo {
            engine: ENGINE.to_owned(),
            endpoint: endpoint.clone(),
            version: facts.version_text.clone(),
            // The libpod API version is Podman's own version; podman-api 0.11 asks for v4.3.1.
            api_version: facts.version_text.clone(),
            // runc's package version when reported (`1.1.5+ds1-1+deb12u1`): only the
            // distribution's revision says whether a security fix was backported.
            runtime: facts.runtime_name.as_ref().map(|name| {
                let package = facts
                    .runtime_package
                    .as_deref()
                    .filter(|_| name == "runc")
                    .and_then(mount_plan_launch::runc_version_of_package);
                match (package, facts.runtime_version) {
                    (Some(p), _) => format!("{name} {p}"),
                    (None, Some(v)) => format!("{name} {v}"),
                    (None, None) => name.clone(),
                }
            }),
            rootless: facts.rootless,
            user_namespace: facts.rootless,
        };
        Ok(PodmanEngine {
            podman,
            info,
            facts,
            options,
        })
    }

    /// Connect to the conventional socket for this process: see [`default_endpoint`]
    /// (`$CONTAINER_HOST`, else `/run/podman/podman.sock` for root, else
    /// `$XDG_RUNTIME_DIR/podman/podman.sock`).
    pub async fn discover(options: PodmanOptions) -> Result<Self, LaunchError> {
        let endpoint = default_endpoint(
            std::env::var("CONTAINER_HOST").ok().as_deref(),
            rustix::process::geteuid().as_raw(),
            std::env::var("XDG_RUNTIME_DIR").ok().as_deref(),
        );
        Self::connect(&endpoint, options).await
    }

    /// What the service said about itself.
    pub fn facts(&self) -> &ServiceFacts {
        &self.facts
    }

    /// The backend options in use.
    pub fn options(&self) -> &PodmanOptions {
        &self.options
    }

    /// The underlying podman-api client.
    pub fn client(&self) -> &Podman {
        &self.podman
    }

    fn report_of(&self) -> EngineReport {
        EngineReport {
            engine: self.info.clone(),
            protections: availability(&self.facts),
            warnings: warnings(&self.facts),
        }
    }

    async fn signal(&self, id: &str, signal: &str) -> Result<(), LaunchError> {
        match self.podman.containers().get(id).send_signal(signal).await {
            Ok(()) => Ok(()),
            // 409 or "container state improper": it is not running any more.
            Err(e)
                if status_of(&e) == Some(409)
                    || e.to_string().contains("container state improper") =>
            {
                Ok(())
            }
            Err(e) => Err(call_error("stop", id, e)),
        }
    }
}

/// How long one libpod wait call may take before the state is read by inspect instead.
const WAIT_SLICE: Duration = Duration::from_secs(5);

/// How long a followed log stream may go on after its container stopped before it is
/// replaced by a one-shot read of the whole log. Podman 4.3's follower only notices the end
/// of a container on its own ~250 ms poll (and sometimes never): once the container has
/// stopped, conmon has written every byte to the log, so reading it once is complete and
/// saves that quarter second on every job (see docs/perf.md).
const LOG_GRACE: Duration = Duration::from_millis(20);

/// States in which a container's command is no longer running.
fn is_stopped(state: Option<&str>) -> bool {
    matches!(state, Some("exited" | "stopped" | "dead"))
}

/// Wait until container `id` stops, and return its exit status.
///
/// libpod's wait endpoint (polling every `interval`) is called in slices of [`WAIT_SLICE`];
/// after each slice, or when it fails, inspect decides. Podman 4.3 sometimes marks a
/// container exited without storing its exit code in its database: its wait endpoint then
/// answers "no such exit code" (or polls on), while inspect reports the code.
async fn wait_stopped(
    podman: &Podman,
    id: &str,
    interval: Duration,
) -> Result<ExitStatus, LaunchError> {
    let container = podman.containers().get(id);
    let opts = ContainerWaitOpts::builder()
        .interval(format!("{}us", interval.as_micros().max(1)))
        .build();
    loop {
        let waited = tokio::time::timeout(WAIT_SLICE, container.wait(&opts)).await;
        if let Ok(Err(e)) = &waited {
            if is_not_found(e) {
                return Err(LaunchError::NotFound {
                    container: id.to_owned(),
                });
            }
        }
        let data = container
            .inspect()
            .await
            .map_err(|e| call_error("wait", id, e))?;
        let state = data.state.as_ref().and_then(|s| s.status.as_deref());
        if is_stopped(state) {
            return exit_status(&data).ok_or_else(|| LaunchError::Engine {
                op: "wait",
                container: id.to_owned(),
                source: Box::new(PodmanError::NoExitCode {
                    container: id.to_owned(),
                }),
            });
        }
        if let Ok(Err(e)) = waited {
            // It failed although the container runs: a real error.
            return Err(call_error("wait", id, e));
        }
    }
}

fn log_chunk(chunk: TtyChunk) -> Option<LogChunk> {
    match chunk {
        TtyChunk::StdOut(bytes) => Some(LogChunk {
            stream: OutputStream::Stdout,
            bytes,
        }),
        TtyChunk::StdErr(bytes) => Some(LogChunk {
            stream: OutputStream::Stderr,
            bytes,
        }),
        TtyChunk::StdIn(_) => None,
    }
}

/// Byte counts per stream of what the followed log delivered, to resume from a second, full
/// read of the log: each stream's bytes come in order in both reads.
#[derive(Debug, Default)]
struct LogResume {
    sent: [usize; 2],
    seen: [usize; 2],
}

impl LogResume {
    fn index(chunk: &LogChunk) -> usize {
        match chunk.stream {
            OutputStream::Stdout => 0,
            OutputStream::Stderr => 1,
        }
    }

    /// Record a chunk the followed read delivered.
    fn delivered(&mut self, chunk: &LogChunk) {
        self.sent[Self::index(chunk)] += chunk.bytes.len();
    }

    /// The part of a chunk of the full read that was not delivered yet, if any.
    fn unsent(&mut self, mut chunk: LogChunk) -> Option<LogChunk> {
        let i = Self::index(&chunk);
        let len = chunk.bytes.len();
        let skip = self.sent[i].saturating_sub(self.seen[i]).min(len);
        self.seen[i] += len;
        if skip == len {
            return None;
        }
        chunk.bytes.drain(..skip);
        self.sent[i] += len - skip;
        Some(chunk)
    }
}

/// Send container `id`'s output to `tx`: follow the log while it runs; if the followed
/// stream has not ended [`LOG_GRACE`] after the container stopped (Podman 4.3's follower
/// waits for a "died" event it can miss when the command exits quickly), read the whole log
/// once more without following and send only what was not sent yet, per stream.
async fn forward_logs(
    podman: Podman,
    id: String,
    interval: Duration,
    tx: tokio::sync::mpsc::Sender<Result<LogChunk, LaunchError>>,
) {
    let container = podman.containers().get(&id);
    let follow = ContainerLogsOpts::builder()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut resume = LogResume::default();
    {
        let mut stream = container.logs(&follow);
        let stopped = wait_stopped(&podman, &id, interval);
        tokio::pin!(stopped);
        let mut stopped_done = false;
        let grace = tokio::time::sleep(Duration::MAX);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    None => return,
                    Some(Ok(chunk)) => {
                        let Some(chunk) = log_chunk(chunk) else { continue };
                        resume.delivered(&chunk);
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Err(call_error("logs", &id, e))).await;
                        return;
                    }
                },
                _ = &mut stopped, if !stopped_done => {
                    stopped_done = true;
                    grace.as_mut().reset(tokio::time::Instant::now() + LOG_GRACE);
                }
                _ = &mut grace, if stopped_done => break,
            }
        }
    }
    let once = ContainerLogsOpts::builder()
        .follow(false)
        .stdout(true)
        .stderr(true)
        .build();
    let mut stream = container.logs(&once);
    while let Some(item) = stream.next().await {
        let chunk = match item {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = tx.send(Err(call_error("logs", &id, e))).await;
                return;
            }
        };
        if let Some(chunk) = log_chunk(chunk).and_then(|c| resume.unsent(c)) {
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    }
}

#[async_trait::async_trait]
impl Engine for PodmanEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn report(&self) -> EngineReport {
        self.report_of()
    }

    async fn create(&self, request: &CreateRequest<'_>) -> Result<String, LaunchError> {
        let plan = request.plan.plan();
        let not_created = |e: podman_api::Error| {
            if e.to_string().contains("image not known") || is_not_found(&e) {
                LaunchError::ImageNotFound {
                    image: request.spec.image.to_string(),
                    source: Box::new(e),
                }
            } else if status_of(&e).is_some() {
                LaunchError::Create {
                    job: plan.job().as_str().to_owned(),
                    source: Box::new(PodmanError::Service {
                        op: "create",
                        source: e,
                    }),
                }
            } else {
                call_error("create", "", e)
            }
        };
        // The gate runs first, then the image's entrypoint with the launch's command (or the
        // image's): the image's own configuration says what that is.
        let image = self
            .podman
            .images()
            .get(request.spec.image.as_str())
            .inspect()
            .await
            .map_err(not_created)?;
        let (image_entrypoint, image_cmd) = image
            .config
            .map(|c| (c.entrypoint, c.cmd))
            .unwrap_or_default();
        let line = request.gate.command_line(
            request.spec,
            &image_entrypoint.unwrap_or_default(),
            &image_cmd.unwrap_or_default(),
        )?;
        let opts = translate(
            plan,
            request.spec,
            request.labels,
            &self.options,
            &self.facts,
            Some(&line),
        )?;
        // Podman 4.3's rootless service reads the subordinate id ranges through libsubid,
        // which is not thread-safe: concurrent keep-id creates crash the service (SIGSEGV in
        // subid_get_uid_ranges, seen here). Creates with keep-id go one at a time per process.
        let _one_at_a_time = match self.options.userns {
            UserNamespace::KeepId => Some(KEEP_ID_CREATE.lock().await),
            _ => None,
        };
        let created = self
            .podman
            .containers()
            .create(&opts)
            .await
            .map_err(not_created)?;
        // The gate and R's directory entry, before anything starts. A failure leaves the
        // container to the lifecycle, which removes every container of this launch.
        self.podman
            .containers()
            .get(&created.id)
            .copy_to("/", request.gate.archive().into())
            .await
            .map_err(|e| call_error("upload", &created.id, e))?;
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<(), LaunchError> {
        self.podman
            .containers()
            .get(id)
            .start(None)
            .await
            .map_err(|e| match status_of(&e) {
                Some(code) if code != 404 => LaunchError::Start {
                    container: id.to_owned(),
                    source: Box::new(PodmanError::Service {
                        op: "start",
                        source: e,
                    }),
                },
                _ => call_error("start", id, e),
            })
    }

    async fn inspect(&self, id: &str) -> Result<ObservedContainer, LaunchError> {
        let data = self
            .podman
            .containers()
            .get(id)
            .inspect()
            .await
            .map_err(|e| call_error("inspect", id, e))?;
        Ok(observe(&data))
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, LaunchError> {
        wait_stopped(&self.podman, id, self.options.wait_interval).await
    }

    fn logs(&self, id: &str) -> LogStream {
        // podman-api's log stream borrows its container handle: read it in a task that owns
        // the handle and hand the chunks over a channel. The task starts on the first poll
        // (inside the caller's runtime) and ends when the stream is dropped.
        let podman = self.podman.clone();
        let id = id.to_owned();
        let interval = self.options.wait_interval;
        futures_util::stream::once(async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<LogChunk, LaunchError>>(64);
            tokio::spawn(forward_logs(podman, id, interval, tx));
            futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            })
        })
        .flatten()
        .boxed()
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), LaunchError> {
        self.signal(id, "SIGTERM").await?;
        let interval = self.options.wait_interval;
        match tokio::time::timeout(grace, wait_stopped(&self.podman, id, interval)).await {
            Ok(result) => result.map(drop),
            Err(_) => {
                self.signal(id, "SIGKILL").await?;
                wait_stopped(&self.podman, id, interval).await.map(drop)
            }
        }
    }

    async fn remove(&self, id: &str) -> Result<(), LaunchError> {
        let removed = self
            .podman
            .containers()
            .get(id)
            .delete(
                // timeout=0: kill at once (libpod's default gives a running container 10 s).
                &ContainerDeleteOpts::builder()
                    .force(true)
                    .volumes(true)
                    .timeout(0)
                    .build(),
            )
            .await;
        match removed {
            Err(e) if is_not_found(&e) => Ok(()),
            other => other.map_err(|e| call_error("remove", id, e)),
        }
    }

    async fn list(&self, key: &str, value: &str) -> Result<Vec<Listed>, LaunchError> {
        let opts = ContainerListOpts::builder()
            .all(true)
            .filter([ContainerListFilter::LabelKeyVal(
                key.to_owned(),
                value.to_owned(),
            )])
            .build();
        let list = self
            .podman
            .containers()
            .list(&opts)
            .await
            .map_err(|e| call_error("list", &format!("{key}={value}"), e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                Some(Listed {
                    id: c.id?,
                    labels: c.labels.unwrap_or_default().into_iter().collect(),
                    state: c.state,
                    created_unix: c.created.map(|t| t.timestamp()),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(stream: OutputStream, bytes: &str) -> LogChunk {
        LogChunk {
            stream,
            bytes: bytes.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_full_second_read_resumes_each_stream_where_the_first_stopped() {
        use OutputStream::{Stderr, Stdout};
        let mut r = LogResume::default();
        // The followed read delivered "hel" of stdout and "e1" of stderr, then hung.
        r.delivered(&chunk(Stdout, "he"));
        r.delivered(&chunk(Stderr, "e1"));
        r.delivered(&chunk(Stdout, "l"));
        // The full read chunks differently and interleaves differently.
        let full = [
            chunk(Stdout, "h"),
            chunk(Stderr, "e1e2"),
            chunk(Stdout, "ello\n"),
            chunk(Stdout, "world\n"),
            chunk(Stderr, "e3"),
        ];
        let rest: Vec<LogChunk> = full.into_iter().filter_map(|c| r.unsent(c)).collect();
        assert_eq!(
            rest,
            vec![
                chunk(Stderr, "e2"),
                chunk(Stdout, "lo\n"),
                chunk(Stdout, "world\n"),
                chunk(Stderr, "e3"),
            ]
        );
        // Output beyond what both reads saw is sent whole.
        assert_eq!(r.unsent(chunk(Stdout, "x")), Some(chunk(Stdout, "x")));
    }

    #[test]
    fn stopped_states() {
        for s in ["exited", "stopped", "dead"] {
            assert!(is_stopped(Some(s)), "{s}");
        }
        for s in ["running", "created", "configured", "paused"] {
            assert!(!is_stopped(Some(s)), "{s}");
        }
        assert!(!is_stopped(None));
    }
}
