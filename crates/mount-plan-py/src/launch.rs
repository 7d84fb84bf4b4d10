//! `launch(...)`: the one launch lifecycle of `mount-plan-launch`, through the Docker or Podman
//! backend, blocking with the GIL released.
//!
//! The lifecycle runs on its own thread (a current-thread tokio runtime). The calling thread
//! waits for its messages with the GIL released, 100 ms at a time; in between it delivers
//! output and events to the caller's callbacks (or stdout/stderr) and calls
//! `Python::check_signals`, so a KeyboardInterrupt (or an exception raised by a callback)
//! cancels the launch: the lifecycle stops and removes the container, and only then is the
//! exception raised. Every decision is the lifecycle's.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use mount_plan_launch::{
    CancelToken, Event, Keep, LaunchError, LaunchOptions, LogChunk, Observer, OutputStream,
};
use mount_plan_run::{EngineKind, Failure, LaunchRequest, Outcome, RunError};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::convert::to_py;
use crate::errors::launch_error;
use crate::verify::VerifiedPlan;

/// How often the waiting thread looks for a KeyboardInterrupt.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// What the lifecycle thread tells the waiting thread.
enum Message {
    Output(LogChunk),
    Event(Event),
    Done(Outcome),
}

/// Sends output and events to the waiting thread.
struct ChannelObserver {
    tx: mpsc::Sender<Message>,
}

impl Observer for ChannelObserver {
    fn output(&mut self, chunk: &LogChunk) {
        let _ = self.tx.send(Message::Output(chunk.clone()));
    }
    fn event(&mut self, event: &Event) {
        let _ = self.tx.send(Message::Event(event.clone()));
    }
}

/// The caller's `env`: a mapping of str to str, or a list of "K=V".
fn env_of(env: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    let Some(env) = env else {
        return Ok(Vec::new());
    };
    match env.cast::<PyDict>() {
        Ok(map) => map
            .iter()
            .map(|(k, v)| {
                Ok(format!(
                    "{}={}",
                    k.extract::<String>()?,
                    v.extract::<String>()?
                ))
            })
            .collect(),
        Err(_) => env.extract().map_err(|_| {
            PyTypeError::new_err("env is a mapping of str to str or a list of \"K=V\"")
        }),
    }
}

fn to_py_launch_error(failure: &Failure) -> PyErr {
    let e = &failure.error;
    launch_error(
        e.rule(),
        e.value().as_deref(),
        e.to_string(),
        failure.container.as_deref(),
        failure.command_ran,
    )
}

/// Where output goes when no callback is given: the caller's `sys.stdout` / `sys.stderr`
/// (their binary buffer when they have one).
pub(crate) fn write_std(py: Python<'_>, chunk: &LogChunk) -> PyResult<()> {
    let name = match chunk.stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    };
    let stream = py.import("sys")?.getattr(name)?;
    if stream.is_none() {
        return Ok(());
    }
    match stream.getattr("buffer") {
        Ok(buffer) => {
            buffer.call_method1("write", (PyBytes::new(py, &chunk.bytes),))?;
        }
        Err(_) => {
            stream.call_method1("write", (String::from_utf8_lossy(&chunk.bytes),))?;
        }
    }
    stream.call_method0("flush")?;
    Ok(())
}

pub(crate) fn stream_name(stream: OutputStream) -> &'static str {
    match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    }
}

pub(crate) fn warn(py: Python<'_>, message: &str) -> PyResult<()> {
    let category = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
    PyErr::warn(
        py,
        &category,
        &std::ffi::CString::new(message.replace('\0', " "))?,
        1,
    )
}

/// The keyword arguments `launch` and `start` share (the CLI's launch options), as given.
pub struct LaunchArgs<'py> {
    pub image: String,
    pub command: Option<Vec<String>>,
    pub runtime: &'py str,
    pub socket: Option<String>,
    pub userns: Option<String>,
    pub user: Option<String>,
    pub env: Option<Bound<'py, PyAny>>,
    pub network: &'py str,
    pub name: Option<String>,
    pub labels: Option<Bound<'py, PyDict>>,
    pub gpus: Option<String>,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<u64>,
    pub keep: bool,
    pub stop_grace: f64,
    pub accept_missing: Option<Vec<String>>,
    pub require: Option<Vec<String>>,
    pub cap_add: Option<Vec<String>>,
    pub connect_timeout: f64,
}

/// A launch ready to run: what `mount_plan_run::run` takes, and the token that cancels it.
pub struct Prepared {
    pub verified: mount_plan_host::VerifiedPlan,
    pub request: LaunchRequest,
    pub endpoint: mount_plan_run::Endpoint,
    pub options: LaunchOptions,
    pub cancel: CancelToken,
}

/// A refusal before anything runs, as the LaunchError it raises (the job directory a fresh
/// verification created is released).
fn refused(verified: &mount_plan_host::VerifiedPlan, e: impl Into<RunError>) -> PyErr {
    match mount_plan_run::refuse(verified, e) {
        Outcome::Failed(failure) => to_py_launch_error(&failure),
        Outcome::Exited(_) => unreachable!("a refusal never runs the command"),
    }
}

impl LaunchArgs<'_> {
    /// The request, endpoint and options of `mount_plan_run::run`, from the Python arguments.
    pub fn prepare(self, plan: &Bound<'_, VerifiedPlan>) -> PyResult<Prepared> {
        let verified = plan.get().inner.clone();
        // Bounded before anything runs (a longer one would overflow the lifecycle's clock).
        let secs = |what: &'static str, v: f64| {
            mount_plan_launch::duration_secs(what, v).map_err(|e| refused(&verified, e))
        };
        let stop_grace = secs("stop_grace", self.stop_grace)?;
        let connect_timeout =
            secs("connect_timeout", self.connect_timeout)?.max(Duration::from_secs(1));
        let mut request = LaunchRequest::new(self.image, self.command.unwrap_or_default());
        request.user = self.user;
        request.env = env_of(self.env.as_ref())?;
        request.network = self.network.to_owned();
        request.name = self.name;
        request.labels = match &self.labels {
            None => Vec::new(),
            Some(map) => map
                .iter()
                .map(|(k, v)| Ok((k.extract()?, v.extract()?)))
                .collect::<PyResult<_>>()?,
        };
        request.gpus = self.gpus;
        request.memory = self.memory;
        request.cpus = self.cpus;
        request.pids_limit = self.pids_limit;
        request.accept.accept_missing = self.accept_missing.unwrap_or_default();
        request.accept.require = self.require.unwrap_or_default();
        request.caps.cap_add = self.cap_add.unwrap_or_default();
        // The endpoint, as the CLI's --runtime, --socket, --userns, --connect-timeout.
        let (runtime, socket, userns) = (self.runtime, self.socket, self.userns);
        let endpoint = (|| {
            let mut endpoint = mount_plan_run::Endpoint::new(runtime.parse::<EngineKind>()?);
            endpoint.socket = socket;
            if let Some(userns) = userns.as_deref() {
                endpoint.userns = userns.parse()?;
            }
            endpoint.connect_timeout = connect_timeout;
            Ok::<_, RunError>(endpoint)
        })()
        .map_err(|e| refused(&verified, e))?;
        let cancel = CancelToken::new();
        let options = LaunchOptions {
            keep: if self.keep { Keep::Keep } else { Keep::Remove },
            stop_grace,
            cancel: cancel.clone(),
            ..LaunchOptions::default()
        };
        Ok(Prepared {
            verified,
            request,
            endpoint,
            options,
            cancel,
        })
    }
}

impl Prepared {
    /// Run the one lifecycle (`mount_plan_run::run`) on its own thread with a current-thread
    /// tokio runtime; `done` receives its outcome on that thread.
    pub fn spawn(
        self,
        mut observer: Box<dyn Observer>,
        done: impl FnOnce(Outcome) + Send + 'static,
    ) -> PyResult<std::thread::JoinHandle<()>> {
        let Prepared {
            verified,
            request,
            endpoint,
            options,
            ..
        } = self;
        std::thread::Builder::new()
            .name("mount-plan-launch".into())
            .spawn(move || {
                let outcome = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Err(e) => mount_plan_run::refuse(
                        &verified,
                        LaunchError::Unsupported(format!("cannot start the async runtime: {e}")),
                    ),
                    Ok(rt) => rt.block_on(mount_plan_run::run(
                        &verified,
                        &request,
                        &endpoint,
                        &options,
                        observer.as_mut(),
                    )),
                };
                // The observer (and the Python callbacks it may hold) goes before the answer.
                drop(observer);
                done(outcome);
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the launch thread: {e}")))
    }
}

/// The Python value of a finished launch: the command's exit status, or its LaunchError.
pub fn outcome_result(outcome: &Outcome) -> PyResult<i64> {
    match outcome {
        // Its warnings were delivered as events while it ran.
        Outcome::Exited(finished) => Ok(finished.status.code),
        Outcome::Failed(failure) => Err(to_py_launch_error(failure)),
    }
}

/// `launch(plan, image, command=(), *, runtime="docker", ...)`: see `python/mount_plan/__init__.pyi`.
#[pyfunction]
#[pyo3(signature = (plan, image, command=None, *, runtime="docker", socket=None, userns=None, user=None, env=None, network="none", name=None, labels=None, gpus=None, memory=None, cpus=None, pids_limit=None, keep=false, stop_grace=10.0, accept_missing=None, require=None, cap_add=None, connect_timeout=10.0, on_output=None, on_event=None))]
#[allow(clippy::too_many_arguments)]
pub fn launch<'py>(
    py: Python<'py>,
    plan: &Bound<'py, VerifiedPlan>,
    image: String,
    command: Option<Vec<String>>,
    runtime: &'py str,
    socket: Option<String>,
    userns: Option<String>,
    user: Option<String>,
    env: Option<Bound<'py, PyAny>>,
    network: &'py str,
    name: Option<String>,
    labels: Option<Bound<'py, PyDict>>,
    gpus: Option<String>,
    memory: Option<u64>,
    cpus: Option<f64>,
    pids_limit: Option<u64>,
    keep: bool,
    stop_grace: f64,
    accept_missing: Option<Vec<String>>,
    require: Option<Vec<String>>,
    cap_add: Option<Vec<String>>,
    connect_timeout: f64,
    on_output: Option<Bound<'py, PyAny>>,
    on_event: Option<Bound<'py, PyAny>>,
) -> PyResult<i64> {
    let prepared = LaunchArgs {
        image,
        command,
        runtime,
        socket,
        userns,
        user,
        env,
        network,
        name,
        labels,
        gpus,
        memory,
        cpus,
        pids_limit,
        keep,
        stop_grace,
        accept_missing,
        require,
        cap_add,
        connect_timeout,
    }
    .prepare(plan)?;
    let cancel = prepared.cancel.clone();
    let (tx, rx) = mpsc::channel::<Message>();
    let observer = Box::new(ChannelObserver { tx: tx.clone() });
    let worker = prepared.spawn(observer, move |outcome| {
        let _ = tx.send(Message::Done(outcome));
    })?;

    // Detached code must be Send: a Receiver is, behind a lock.
    let rx = std::sync::Mutex::new(rx);
    // The first exception raised while waiting (KeyboardInterrupt, a callback's): it cancels
    // the launch and is raised once the lifecycle has cleaned up.
    let mut pending: Option<PyErr> = None;
    let mut last_check = Instant::now();
    let outcome = loop {
        let message = py.detach(|| {
            rx.lock()
                .unwrap_or_else(|e| e.into_inner())
                .recv_timeout(SIGNAL_POLL)
        });
        let delivered = match message {
            Ok(Message::Done(done)) => break done,
            Ok(Message::Output(chunk)) if pending.is_none() => match &on_output {
                Some(cb) => cb
                    .call1((stream_name(chunk.stream), PyBytes::new(py, &chunk.bytes)))
                    .map(drop),
                None => write_std(py, &chunk),
            },
            Ok(Message::Event(event)) if pending.is_none() => {
                // Every warning is a RuntimeWarning, as the CLI prints every one on stderr.
                let warned = match &event {
                    Event::Warning { message } => warn(py, message),
                    _ => Ok(()),
                };
                warned.and_then(|()| match &on_event {
                    Some(cb) => to_py(py, &event).and_then(|e| cb.call1((e,)).map(drop)),
                    None => Ok(()),
                })
            }
            Ok(_) => Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(()),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Outcome::Failed(Failure {
                    error: LaunchError::Unsupported(
                        "the launch thread ended without an answer".into(),
                    )
                    .into(),
                    command_ran: true,
                    container: None,
                })
            }
        };
        let checked = if last_check.elapsed() >= SIGNAL_POLL {
            last_check = Instant::now();
            py.check_signals()
        } else {
            Ok(())
        };
        if pending.is_none() {
            if let Err(e) = delivered.and(checked) {
                cancel.cancel();
                pending = Some(e);
            }
        }
    };
    let _ = py.detach(|| worker.join());

    if let Some(e) = pending {
        return Err(e);
    }
    outcome_result(&outcome)
}
