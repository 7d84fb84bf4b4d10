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

pub mod create_lock;
mod endpoint;
mod error;
mod observe;
mod translate;
mod version;
mod wait;

use std::time::Duration;

use futures_util::StreamExt;
use mount_plan_launch::image_command::ImageCommand;
use mount_plan_launch::{
    CreateRequest, Created, Engine, EngineInfo, EngineReport, ExitStatus, LaunchError, Listed,
    LogChunk, LogStream, ObservedContainer, OutputStream, Removal,
};
use podman_api::conn::TtyChunk;
use podman_api::models::LibpodPingInfo;
use podman_api::opts::{
    ContainerDeleteOpts, ContainerListFilter, ContainerListOpts, ContainerLogsOpts,
};
use podman_api::Podman;

pub use endpoint::{default_endpoint, socket_path, ROOTFUL_SOCKET};
pub use error::PodmanError;
pub use observe::{exit_status, observe, observed_tmpfs};
pub use translate::{
    container_mount, container_mounts, translate, PodmanOptions, UserNamespace, ENGINE, NO_COPY_UP,
};
pub use version::{
    availability, check_version, parse_version, service_facts, warnings, ServiceFacts, MIN_VERSION,
    MIN_VERSION_FEATURE, RUNC_FIXED,
};

/// Serialises keep-id creates within this process (see [`PodmanEngine`]'s `create`); the
/// [`create_lock`] serialises them across processes.
static KEEP_ID_CREATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A Podman service (rootful or rootless) reached through its libpod API socket.
#[derive(Debug)]
pub struct PodmanEngine {
    podman: Podman,
    info: EngineInfo,
    facts: ServiceFacts,
    options: PodmanOptions,
    stopped: Stopped,
    /// The service's socket path, for the requests podman-api cannot make ([`wait`]).
    socket: String,
}

/// The containers this engine's [`Engine::wait`] (or [`Engine::stop`]) saw stopped, for the
/// log forwarders of the same containers: the lifecycle waits and reads the log at once, and
/// each libpod wait is a poller in the service (every `wait_interval`), so the forwarder takes
/// the wait's answer instead of polling a second time, and falls back to a slow poll of its
/// own ([`LOG_POLL`]) only for a stream read without a wait.
#[derive(Debug, Default)]
struct Stopped(
    std::sync::Mutex<std::collections::HashMap<String, tokio::sync::watch::Sender<bool>>>,
);

impl Stopped {
    fn with<T>(&self, id: &str, f: impl FnOnce(&tokio::sync::watch::Sender<bool>) -> T) -> T {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let sender = map
            .entry(id.to_owned())
            .or_insert_with(|| tokio::sync::watch::channel(false).0);
        f(sender)
    }

    /// Resolves once container `id` was seen stopped.
    fn seen(&self, id: &str) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.with(id, |tx| tx.subscribe());
        async move {
            // A closed channel (the entry forgotten) never resolves: the caller's own poll
            // decides then.
            if rx.wait_for(|stopped| *stopped).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    fn mark(&self, id: &str) {
        self.with(id, |tx| tx.send_replace(true));
    }

    fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
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

/// Whether the service failed a call because the container's process ended as it read it:
/// Podman 4.3 answers 500 `read /proc/N/cgroup: no such process` to an inspect of a job that
/// has just exited.
fn is_process_ending(e: &podman_api::Error) -> bool {
    matches!(e, podman_api::Error::Fault { code, message }
        if code.as_u16() == 500 && message.contains("no such process"))
}

/// An engine call's failure: the service's answer (an HTTP status) as the matching error; a
/// missing answer (connection, timeout, a broken body) as [`LaunchError::AnswerLost`]; a
/// process that ended as the service looked as [`LaunchError::ProcessEnding`].
fn call_error(op: &'static str, container: &str, source: podman_api::Error) -> LaunchError {
    let status = status_of(&source);
    let ending = is_process_ending(&source);
    let source = Box::new(PodmanError::Service { op, source });
    if ending {
        return LaunchError::ProcessEnding {
            op,
            container: container.to_owned(),
            source,
        };
    }
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
            // The ping answers at once and names the service's version; version and info run
            // package and runtime queries (0.3 to 0.6 s each on Debian's Podman 4.3), so a
            // service this process already asked, answering the same ping, is not asked again.
            let ping = podman.ping().await?;
            if let Some(known) = known_services().get(&endpoint, &ping) {
                return Ok(known);
            }
            let version = podman.version().await?;
            let info = podman.info().await?;
            known_services().put(&endpoint, ping, (version.clone(), info.clone()));
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
            stopped: Default::default(),
            socket: path.to_owned(),
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

/// What a service said of itself (its version and info), keyed by endpoint and kept with the
/// ping answer it came with: a service that answers the same ping (the same Podman and Buildah
/// versions) at the same endpoint is taken to be the one asked before. A service restarted at
/// the same version with another configuration (another OCI runtime in `containers.conf`) is
/// seen by the next process, not by this one.
#[derive(Debug, Default)]
struct KnownServices(
    std::sync::Mutex<std::collections::HashMap<String, (LibpodPingInfo, ServiceSaid)>>,
);

type ServiceSaid = (
    podman_api::models::VersionResponse,
    podman_api::models::Info,
);

impl KnownServices {
    fn get(&self, endpoint: &str, ping: &LibpodPingInfo) -> Option<ServiceSaid> {
        let table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match table.get(endpoint) {
            Some((asked, said)) if asked == ping => Some(said.clone()),
            _ => None,
        }
    }

    fn put(&self, endpoint: &str, ping: LibpodPingInfo, said: ServiceSaid) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(endpoint.to_owned(), (ping, said));
    }
}

/// This process's [`KnownServices`].
fn known_services() -> &'static KnownServices {
    static KNOWN: std::sync::OnceLock<KnownServices> = std::sync::OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

/// How long one libpod wait call may take before the state is read by inspect instead.
const WAIT_SLICE: Duration = Duration::from_secs(5);

/// How often a running container's log is read again, at least. Each read is a whole read
/// of the log (see [`forward`]); one that took long spaces the next ones out to
/// [`LOG_READ_SHARE`] times its duration, at most [`LOG_POLL_MAX`] apart, so a large log costs
/// the service a bounded share of its time and its output comes later, not at a cost that
/// grows with it.
const LOG_POLL: Duration = Duration::from_millis(250);
/// The longest pause between two reads of a running container's log.
const LOG_POLL_MAX: Duration = Duration::from_secs(10);
/// The pause after a read, in multiples of how long the read took.
const LOG_READ_SHARE: u32 = 10;

/// States in which a container's command is no longer running.
fn is_stopped(state: Option<&str>) -> bool {
    matches!(state, Some("exited" | "stopped" | "dead"))
}

/// Wait until container `id` stops, and return its exit status.
///
/// libpod's wait endpoint (polling every `interval`), asked directly over `socket` for its
/// answer, the exit code ([`wait::wait_code`]), in slices of [`WAIT_SLICE`]; after each slice,
/// or when it gives no code, inspect decides. Podman 4.3 sometimes marks a container exited
/// without storing its exit code in its database: its wait endpoint then answers "no such exit
/// code" (or polls on), while inspect reports the code.
async fn wait_stopped(
    podman: &Podman,
    socket: &str,
    id: &str,
    interval: Duration,
) -> Result<ExitStatus, LaunchError> {
    let container = podman.containers().get(id);
    loop {
        let waited = tokio::time::timeout(WAIT_SLICE, wait::wait_code(socket, id, interval)).await;
        match waited {
            Ok(Ok(code)) => return Ok(ExitStatus { code }),
            Ok(Err(wait::WaitFailed::Status(404, _))) => {
                return Err(LaunchError::NotFound {
                    container: id.to_owned(),
                })
            }
            _ => {}
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
        if let Ok(Err(failed)) = waited {
            // It failed although the container runs: a real error.
            let status = match &failed {
                wait::WaitFailed::Status(code, _) => Some(*code),
                wait::WaitFailed::Other(_) => None,
            };
            return Err(LaunchError::from_call(
                "wait",
                id,
                status,
                Box::new(PodmanError::Wait {
                    container: id.to_owned(),
                    why: failed.to_string(),
                }),
            ));
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

/// Byte counts per stream of what was sent, to send from each new whole read of the log only
/// what follows: the log only grows, and each stream's bytes come in the same order in every
/// read, however the reads cut them into chunks.
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

    /// A new whole read of the log begins.
    fn next_read(&mut self) {
        self.seen = [0, 0];
    }

    /// The part of a chunk of the current read that was not sent yet, if any.
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

/// Send container `id`'s output to `tx` (see [`forward`]).
async fn forward_logs(
    podman: Podman,
    socket: String,
    id: String,
    seen_stopped: impl std::future::Future<Output = ()>,
    tx: tokio::sync::mpsc::Sender<Result<LogChunk, LaunchError>>,
) {
    let container = podman.containers().get(&id);
    let whole = ContainerLogsOpts::builder()
        .follow(false)
        .stdout(true)
        .stderr(true)
        .build();
    let read = || {
        container
            .logs(&whole)
            .filter_map(|item| {
                std::future::ready(match item {
                    Ok(chunk) => log_chunk(chunk).map(Ok),
                    Err(e) => Some(Err(call_error("logs", &id, e))),
                })
            })
            .boxed()
    };
    // Stopped: as this engine's wait saw it, else as a slow poll of its own sees it, begun
    // only after a first pause (a short job's stream costs the service no second wait).
    let stopped = async {
        tokio::select! {
            _ = seen_stopped => {}
            _ = async {
                tokio::time::sleep(LOG_POLL).await;
                wait_stopped(&podman, &socket, &id, LOG_POLL).await
            } => {}
        }
    };
    forward(stopped, read, tx).await;
}

/// What one whole read of the log came to.
enum Read {
    /// Read to its end.
    Whole,
    /// The read failed.
    Failed(LaunchError),
    /// Nobody listens any more.
    Closed,
}

/// Send what `read` (a whole read of the log) has beyond what was sent, per stream.
async fn send_unsent<F>(
    read: F,
    resume: &mut LogResume,
    tx: &tokio::sync::mpsc::Sender<Result<LogChunk, LaunchError>>,
) -> Read
where
    F: futures_util::Stream<Item = Result<LogChunk, LaunchError>>,
{
    tokio::pin!(read);
    resume.next_read();
    while let Some(item) = read.next().await {
        match item {
            Ok(chunk) => {
                if let Some(chunk) = resume.unsent(chunk) {
                    if tx.send(Ok(chunk)).await.is_err() {
                        return Read::Closed;
                    }
                }
            }
            Err(e) => return Read::Failed(e),
        }
    }
    Read::Whole
}

/// Send the container's output while it runs and once it `stopped`, every byte once: the log
/// is read whole, again and again ([`LOG_POLL`]), and each read sends only what follows what
/// was sent, per stream ([`LogResume`]); the read after the container stopped is the last
/// one and is complete (conmon has written every byte to the log by then).
///
/// Podman's follower (`follow=true`) is not used: under load it skips part of the log and
/// goes on (1,656 lines of stdout missing between two that were delivered, seen here with
/// four large outputs at once), or ends early as if the log were whole (podman#21914; 23,091
/// of 25,890 bytes of stderr were once seen), and what it sent cannot be taken back. A read
/// without following is a faithful copy of the log so far. A failed read while the container
/// runs is made again at the next turn; a failed last read is sent as the error.
async fn forward<F>(
    stopped: impl std::future::Future,
    read: impl Fn() -> F,
    tx: tokio::sync::mpsc::Sender<Result<LogChunk, LaunchError>>,
) where
    F: futures_util::Stream<Item = Result<LogChunk, LaunchError>>,
{
    let mut resume = LogResume::default();
    tokio::pin!(stopped);
    let mut pause = LOG_POLL;
    loop {
        let last = tokio::select! {
            biased;
            _ = &mut stopped => true,
            _ = tokio::time::sleep(pause) => false,
        };
        let began = tokio::time::Instant::now();
        match send_unsent(read(), &mut resume, &tx).await {
            Read::Closed => return,
            Read::Failed(e) if last => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            Read::Whole | Read::Failed(_) if last => return,
            Read::Whole | Read::Failed(_) => {}
        }
        pause = (began.elapsed() * LOG_READ_SHARE).clamp(LOG_POLL, LOG_POLL_MAX);
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

    async fn create(&self, request: &CreateRequest<'_>) -> Result<Created, LaunchError> {
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
        // image's): the image's own configuration says what that is. What was read before may
        // stand for any name: the audit before start checks the container runs that image.
        let image = mount_plan_launch::image_command::image_command(
            &self.info.endpoint,
            &request.spec.image,
            request.checked_reuse(),
            || async {
                let image = self
                    .podman
                    .images()
                    .get(request.spec.image.as_str())
                    .inspect()
                    .await
                    .map_err(not_created)?;
                let (entrypoint, cmd) = image
                    .config
                    .map(|c| (c.entrypoint, c.cmd))
                    .unwrap_or_default();
                Ok(ImageCommand {
                    entrypoint: entrypoint.unwrap_or_default(),
                    cmd: cmd.unwrap_or_default(),
                    id: image.id,
                })
            },
        )
        .await?;
        // The gate from its checked host copy, bound read-only; an archive call only for R's
        // entry where its mode matters and the runtime may not give it (Gate::for_runtime:
        // Podman does not report what its runtime does to a tmpfs's mode).
        let copy = mount_plan_launch::gate_copy::GateCopy::ensure()?;
        let (gate, root_archive) = request
            .gate
            .for_runtime(mount_plan_launch::gate::RuntimeRootMode::Unknown);
        let line = gate.command_line(request.spec, &image.entrypoint, &image.cmd)?;
        let opts = translate(
            plan,
            request.spec,
            request.labels,
            &self.options,
            &self.facts,
            Some(&line),
            Some(&copy.source()),
        )?;
        // Podman 4.3's rootless service reads the subordinate id ranges through libsubid,
        // which is not thread-safe: overlapping keep-id creates crash the service. Creates
        // with keep-id go one at a time: within this process, then across every process of
        // the service ([`create_lock`]). Both are held until the create answered or was
        // abandoned.
        let _one_at_a_time = match self.options.userns {
            UserNamespace::KeepId => {
                let here = KEEP_ID_CREATE.lock().await;
                let refused = |e: PodmanError| LaunchError::Create {
                    job: plan.job().as_str().to_owned(),
                    source: Box::new(e),
                };
                let run_root = self
                    .facts
                    .run_root
                    .as_deref()
                    .ok_or_else(|| refused(PodmanError::NoRunRoot))?;
                let everywhere = create_lock::acquire(&create_lock::lock_path(run_root))
                    .await
                    .map_err(refused)?;
                Some((here, everywhere))
            }
            _ => None,
        };
        let created = self
            .podman
            .containers()
            .create(&opts)
            .await
            .map_err(not_created)?;
        // R's directory entry, before anything starts, where it is needed. A failure leaves
        // the container to the lifecycle, which removes every container of this launch.
        if let Some(archive) = root_archive {
            self.podman
                .containers()
                .get(&created.id)
                .copy_to("/", archive.into())
                .await
                .map_err(|e| call_error("upload", &created.id, e))?;
        }
        Ok(Created {
            id: created.id,
            built_for: image.id,
        })
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
        let status =
            wait_stopped(&self.podman, &self.socket, id, self.options.wait_interval).await?;
        self.stopped.mark(id);
        Ok(status)
    }

    fn logs(&self, id: &str) -> LogStream {
        // podman-api's log stream borrows its container handle: read it in a task that owns
        // the handle and hand the chunks over a channel. The task starts on the first poll
        // (inside the caller's runtime) and ends when the stream is dropped.
        let podman = self.podman.clone();
        let socket = self.socket.clone();
        let seen_stopped = self.stopped.seen(id);
        let id = id.to_owned();
        futures_util::stream::once(async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<LogChunk, LaunchError>>(64);
            tokio::spawn(forward_logs(podman, socket, id, seen_stopped, tx));
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
        match tokio::time::timeout(
            grace,
            wait_stopped(&self.podman, &self.socket, id, interval),
        )
        .await
        {
            Ok(result) => result?,
            Err(_) => {
                self.signal(id, "SIGKILL").await?;
                wait_stopped(&self.podman, &self.socket, id, interval).await?
            }
        };
        self.stopped.mark(id);
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<Removal, LaunchError> {
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
        if removed.is_ok() || removed.as_ref().is_err_and(is_not_found) {
            self.stopped.forget(id);
        }
        match removed {
            Ok(_) => Ok(Removal::Removed),
            Err(e) if is_not_found(&e) => Ok(Removal::AlreadyGone),
            Err(e) => Err(call_error("remove", id, e)),
        }
    }

    fn gate_source(&self) -> Option<String> {
        Some(mount_plan_launch::gate_copy::expected_source())
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
    fn each_read_sends_only_what_follows_what_was_sent_per_stream() {
        use OutputStream::{Stderr, Stdout};
        let mut r = LogResume::default();
        // A first read of the log so far: "hel" of stdout, "e1" of stderr.
        r.next_read();
        let first = [chunk(Stdout, "he"), chunk(Stderr, "e1"), chunk(Stdout, "l")];
        let sent: Vec<LogChunk> = first.into_iter().filter_map(|c| r.unsent(c)).collect();
        assert_eq!(
            sent,
            vec![chunk(Stdout, "he"), chunk(Stderr, "e1"), chunk(Stdout, "l")]
        );
        // The next read has grown, and chunks and interleaves differently.
        r.next_read();
        let next = [
            chunk(Stdout, "h"),
            chunk(Stderr, "e1e2"),
            chunk(Stdout, "ello\n"),
            chunk(Stdout, "world\n"),
            chunk(Stderr, "e3"),
        ];
        let rest: Vec<LogChunk> = next.into_iter().filter_map(|c| r.unsent(c)).collect();
        assert_eq!(
            rest,
            vec![
                chunk(Stderr, "e2"),
                chunk(Stdout, "lo\n"),
                chunk(Stdout, "world\n"),
                chunk(Stderr, "e3"),
            ]
        );
        // A read with nothing new sends nothing.
        r.next_read();
        let same = [chunk(Stdout, "hello\nworld\n"), chunk(Stderr, "e1e2e3")];
        assert!(same.into_iter().all(|c| r.unsent(c).is_none()));
    }

    /// A log of `lines` lines on each stream, interleaved, as conmon writes it.
    fn interleaved(lines: usize) -> Vec<LogChunk> {
        (0..lines)
            .flat_map(|i| {
                [
                    chunk(OutputStream::Stdout, &format!("out-{i}\n")),
                    chunk(OutputStream::Stderr, &format!("err-{i}\n")),
                ]
            })
            .collect()
    }

    #[test]
    fn a_service_is_known_again_only_at_its_endpoint_by_the_same_ping() {
        let ping = |podman: &str| LibpodPingInfo {
            api_version: "1.41".into(),
            libpod_api_version: podman.into(),
            libpod_buildah_version: "1.28.2".into(),
            buildkit_version: None,
            cache_control: "no-cache".into(),
            docker_experimental: true,
            pragma: "no-cache".into(),
        };
        let said = |version: &str| -> ServiceSaid {
            (
                serde_json::from_value(serde_json::json!({ "Version": version })).unwrap(),
                serde_json::from_str("{}").unwrap(),
            )
        };
        let known = KnownServices::default();
        assert_eq!(known.get("unix:///a.sock", &ping("4.3.1")), None);
        known.put("unix:///a.sock", ping("4.3.1"), said("4.3.1"));
        assert_eq!(
            known.get("unix:///a.sock", &ping("4.3.1")),
            Some(said("4.3.1")),
            "the same service, asked again"
        );
        assert_eq!(
            known.get("unix:///a.sock", &ping("5.4.2")),
            None,
            "upgraded since: asked again"
        );
        assert_eq!(
            known.get("unix:///b.sock", &ping("4.3.1")),
            None,
            "another service"
        );
        known.put("unix:///a.sock", ping("5.4.2"), said("5.4.2"));
        assert_eq!(
            known.get("unix:///a.sock", &ping("5.4.2")),
            Some(said("5.4.2"))
        );
        assert!(
            std::ptr::eq(known_services(), known_services()),
            "one table per process"
        );
    }

    /// Whether `fut` has resolved once the runtime has run everything that is ready.
    async fn resolved(fut: &mut (impl std::future::Future<Output = ()> + Unpin)) -> bool {
        tokio::select! {
            biased;
            _ = fut => true,
            _ = tokio::task::yield_now() => false,
        }
    }

    #[tokio::test]
    async fn a_forwarder_learns_of_the_stop_that_a_wait_saw_before_or_after_it_asked() {
        let stopped = Stopped::default();
        let mut early = Box::pin(stopped.seen("c1"));
        let mut other = Box::pin(stopped.seen("c2"));
        assert!(!resolved(&mut early).await, "nothing was seen stopped yet");
        stopped.mark("c1");
        assert!(resolved(&mut early).await, "asked before the wait saw it");
        let mut late = Box::pin(stopped.seen("c1"));
        assert!(resolved(&mut late).await, "asked after the wait saw it");
        assert!(
            !resolved(&mut other).await,
            "another container's stop is not this one's"
        );
        stopped.forget("c2");
        assert!(
            !resolved(&mut other).await,
            "a forgotten container is left to the forwarder's own poll"
        );
        stopped.forget("c1");
        assert!(
            stopped.0.lock().unwrap().is_empty(),
            "remove forgets every entry"
        );
    }

    /// Large interleaved output that grows between reads, read whole again and again while
    /// the container runs, each read cut into chunks its own way, one read failing half-way:
    /// every byte of both streams arrives once, in order, and the last read (after the
    /// container stopped) completes it.
    #[tokio::test(start_paused = true)]
    async fn every_byte_arrives_once_from_whole_reads_of_a_growing_log() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let lines = 3000;
        let log = Arc::new(interleaved(lines));
        let reads = Arc::new(AtomicUsize::new(0));
        let stops_after = 7;
        let read = {
            let (log, reads) = (log.clone(), reads.clone());
            move || {
                let n = reads.fetch_add(1, Ordering::SeqCst);
                // The log so far: a growing prefix, the whole of it from the last read on.
                let upto = if n + 1 >= stops_after {
                    log.len()
                } else {
                    log.len() * (n + 1) / (stops_after + 2)
                };
                let mut items: Vec<Result<LogChunk, LaunchError>> = Vec::new();
                for c in &log[..upto] {
                    // Odd reads join each chunk to the one before it of the same stream.
                    match items.last_mut() {
                        Some(Ok(last)) if n % 2 == 1 && last.stream == c.stream => {
                            last.bytes.extend_from_slice(&c.bytes)
                        }
                        _ => items.push(Ok(c.clone())),
                    }
                }
                if n == 3 {
                    items.truncate(items.len() / 3);
                    items.push(Err(LaunchError::AnswerLost {
                        op: "logs",
                        container: "c1".into(),
                        source: "connection reset".into(),
                    }));
                }
                futures_util::stream::iter(items)
            }
        };
        let stopped = {
            let reads = reads.clone();
            async move {
                while reads.load(Ordering::SeqCst) < stops_after - 1 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let task = tokio::spawn(forward(stopped, read, tx));
        let (mut out, mut err) = (String::new(), String::new());
        while let Some(item) = rx.recv().await {
            let c = item.expect("a failed read while it runs is made again, not sent");
            let text = String::from_utf8(c.bytes).unwrap();
            match c.stream {
                OutputStream::Stdout => out.push_str(&text),
                OutputStream::Stderr => err.push_str(&text),
            }
        }
        task.await.unwrap();
        let want = |p: &str| (0..lines).map(|i| format!("{p}-{i}\n")).collect::<String>();
        assert!(
            out == want("out") && err == want("err"),
            "stdout {} of {} bytes, stderr {} of {}",
            out.len(),
            want("out").len(),
            err.len(),
            want("err").len()
        );
        assert_eq!(
            reads.load(Ordering::SeqCst),
            stops_after,
            "one read after the stop"
        );
    }

    /// A last read that fails is sent as the error.
    #[tokio::test(start_paused = true)]
    async fn a_failed_last_read_is_sent() {
        let read = || {
            futures_util::stream::iter(vec![Err(LaunchError::AnswerLost {
                op: "logs",
                container: "c1".into(),
                source: "connection reset".into(),
            })])
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(forward(std::future::ready(()), read, tx));
        let first = rx.recv().await.expect("an item");
        assert_eq!(first.expect_err("the error").rule(), "answer-lost");
        assert!(rx.recv().await.is_none());
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
