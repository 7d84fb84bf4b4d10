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
fn write_std(py: Python<'_>, chunk: &LogChunk) -> PyResult<()> {
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

fn stream_name(stream: OutputStream) -> &'static str {
    match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    }
}

fn warn(py: Python<'_>, message: &str) -> PyResult<()> {
    let category = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
    PyErr::warn(
        py,
        &category,
        &std::ffi::CString::new(message.replace('\0', " "))?,
        1,
    )
}

/// `launch(plan, image, command=(), *, runtime="docker", ...)`: see `mount_plan.pyi`.
#[pyfunction]
#[pyo3(signature = (plan, image, command=None, *, runtime="docker", socket=None, userns=None, user=None, env=None, network="none", name=None, labels=None, gpus=None, memory=None, cpus=None, pids_limit=None, keep=false, stop_grace=10.0, accept_missing=None, require=None, cap_add=None, connect_timeout=10.0, on_output=None, on_event=None))]
#[allow(clippy::too_many_arguments)]
pub fn launch(
    py: Python<'_>,
    plan: &Bound<'_, VerifiedPlan>,
    image: String,
    command: Option<Vec<String>>,
    runtime: &str,
    socket: Option<String>,
    userns: Option<String>,
    user: Option<String>,
    env: Option<Bound<'_, PyAny>>,
    network: &str,
    name: Option<String>,
    labels: Option<Bound<'_, PyDict>>,
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
    on_output: Option<Bound<'_, PyAny>>,
    on_event: Option<Bound<'_, PyAny>>,
) -> PyResult<i64> {
    let verified = plan.get().inner.clone();
    // Bounded before anything runs (a longer one would overflow the lifecycle's clock).
    let secs = |what: &'static str, v: f64| {
        mount_plan_launch::duration_secs(what, v).map_err(|e| {
            match mount_plan_run::refuse(&verified, e) {
                Outcome::Failed(failure) => to_py_launch_error(&failure),
                Outcome::Exited(_) => unreachable!("a refusal never runs the command"),
            }
        })
    };
    let stop_grace = secs("stop_grace", stop_grace)?;
    let connect_timeout = secs("connect_timeout", connect_timeout)?.max(Duration::from_secs(1));
    let mut request = LaunchRequest::new(image, command.unwrap_or_default());
    request.user = user;
    request.env = env_of(env.as_ref())?;
    request.network = network.to_owned();
    request.name = name;
    request.labels = match &labels {
        None => Vec::new(),
        Some(map) => map
            .iter()
            .map(|(k, v)| Ok((k.extract()?, v.extract()?)))
            .collect::<PyResult<_>>()?,
    };
    request.gpus = gpus;
    request.memory = memory;
    request.cpus = cpus;
    request.pids_limit = pids_limit;
    request.accept.accept_missing = accept_missing.unwrap_or_default();
    request.accept.require = require.unwrap_or_default();
    request.caps.cap_add = cap_add.unwrap_or_default();
    // The endpoint, as the CLI's --runtime, --socket, --userns, --connect-timeout.
    let endpoint = (|| {
        let mut endpoint = mount_plan_run::Endpoint::new(runtime.parse::<EngineKind>()?);
        endpoint.socket = socket;
        if let Some(userns) = userns.as_deref() {
            endpoint.userns = userns.parse()?;
        }
        endpoint.connect_timeout = connect_timeout;
        Ok::<_, RunError>(endpoint)
    })();
    let endpoint = match endpoint {
        Ok(endpoint) => endpoint,
        Err(e) => match mount_plan_run::refuse(&verified, e) {
            Outcome::Failed(failure) => return Err(to_py_launch_error(&failure)),
            Outcome::Exited(_) => unreachable!("a refusal never runs the command"),
        },
    };

    let cancel = CancelToken::new();
    let options = LaunchOptions {
        keep: if keep { Keep::Keep } else { Keep::Remove },
        stop_grace,
        cancel: cancel.clone(),
        ..LaunchOptions::default()
    };
    let (tx, rx) = mpsc::channel::<Message>();
    let worker = std::thread::Builder::new()
        .name("mount-plan-launch".into())
        .spawn(move || {
            let done = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Err(e) => mount_plan_run::refuse(
                    &verified,
                    LaunchError::Unsupported(format!("cannot start the async runtime: {e}")),
                ),
                Ok(rt) => {
                    let mut observer = ChannelObserver { tx: tx.clone() };
                    rt.block_on(mount_plan_run::run(
                        &verified,
                        &request,
                        &endpoint,
                        &options,
                        &mut observer,
                    ))
                }
            };
            let _ = tx.send(Message::Done(done));
        })
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the launch thread: {e}")))?;

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
    match outcome {
        // Its warnings were delivered as events while it ran.
        Outcome::Exited(finished) => Ok(finished.status.code),
        Outcome::Failed(failure) => Err(to_py_launch_error(&failure)),
    }
}
