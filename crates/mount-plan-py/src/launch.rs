//! `launch(...)`: the one launch lifecycle of `mount-plan-launch`, through the Docker or Podman
//! backend, blocking with the GIL released.
//!
//! The lifecycle runs on its own thread (a current-thread tokio runtime). The calling thread
//! waits for its messages with the GIL released, 100 ms at a time; in between it delivers
//! output and events to the caller's callbacks (or stdout/stderr) and calls
//! `Python::check_signals`, so a KeyboardInterrupt (or an exception raised by a callback)
//! cancels the launch: the lifecycle stops and removes the container, and only then is the
//! exception raised. Every decision is the lifecycle's.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mount_plan_docker::{ConnectOptions, DockerEngine};
use mount_plan_launch::{
    CancelToken, Capability, Engine, Event, Failed, Finished, Keep, LaunchError, LaunchOptions,
    LaunchSpec, LogChunk, Observer, OutputStream, Protection, Resources,
};
use mount_plan_podman::{PodmanEngine, PodmanOptions, UserNamespace};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
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
    Done(Result<Finished, Failed>),
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

/// The engine the caller named, connected (the CLI's `--runtime`, `--socket`, `--userns`).
async fn connect(
    runtime: &str,
    socket: Option<String>,
    userns: Option<&str>,
    connect_timeout: Duration,
) -> Result<Box<dyn Engine>, LaunchError> {
    match runtime {
        "docker" => {
            if userns.is_some_and(|u| u != "default") {
                return Err(LaunchError::Unsupported("userns is a podman option".into()));
            }
            let options = ConnectOptions {
                host: socket,
                connect_timeout,
                ..ConnectOptions::default()
            };
            Ok(Box::new(DockerEngine::connect(&options).await?))
        }
        "podman" => {
            let options = PodmanOptions {
                userns: match userns {
                    None | Some("default") => UserNamespace::EngineDefault,
                    Some("keep-id") => UserNamespace::KeepId,
                    Some(other) => {
                        return Err(LaunchError::Unsupported(format!(
                            "userns {other:?}: expected \"default\" or \"keep-id\""
                        )))
                    }
                },
                connect_timeout,
                ..PodmanOptions::default()
            };
            Ok(Box::new(match socket {
                Some(socket) => PodmanEngine::connect(&socket, options).await?,
                None => PodmanEngine::discover(options).await?,
            }))
        }
        other => Err(LaunchError::Unsupported(format!(
            "runtime {other:?}: expected \"docker\" or \"podman\""
        ))),
    }
}

/// The caller's choices, as `mount-plan launch` takes them.
struct SpecArgs<'py> {
    image: String,
    command: Vec<String>,
    user: Option<String>,
    env: Option<Bound<'py, PyAny>>,
    network: String,
    name: Option<String>,
    labels: Option<Bound<'py, PyDict>>,
    gpus: Option<String>,
    memory: Option<u64>,
    cpus: Option<f64>,
    pids_limit: Option<u64>,
    accept_missing: Vec<String>,
    require: Vec<String>,
    cap_add: Vec<String>,
}

/// A spec failure as the lifecycle reports it.
fn spec_err(e: impl Into<LaunchError>) -> LaunchError {
    e.into()
}

impl SpecArgs<'_> {
    fn spec(&self) -> PyResult<Result<LaunchSpec, LaunchError>> {
        let env: Vec<String> = match &self.env {
            None => Vec::new(),
            Some(env) => match env.cast::<PyDict>() {
                Ok(map) => map
                    .iter()
                    .map(|(k, v)| {
                        Ok(format!(
                            "{}={}",
                            k.extract::<String>()?,
                            v.extract::<String>()?
                        ))
                    })
                    .collect::<PyResult<_>>()?,
                Err(_) => env.extract().map_err(|_| {
                    PyTypeError::new_err("env is a mapping of str to str or a list of \"K=V\"")
                })?,
            },
        };
        let labels: Vec<(String, String)> = match &self.labels {
            None => Vec::new(),
            Some(map) => map
                .iter()
                .map(|(k, v)| Ok((k.extract()?, v.extract()?)))
                .collect::<PyResult<_>>()?,
        };
        if let Some(c) = self.cpus {
            if !(c.is_finite() && c > 0.0) {
                return Err(PyValueError::new_err(format!(
                    "cpus={c} is not a positive number"
                )));
            }
        }
        Ok((|| {
            let image = self.image.parse().map_err(spec_err)?;
            let mut spec = LaunchSpec::new(image).with_command(self.command.clone());
            spec.user = self
                .user
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(spec_err)?;
            spec.env = env
                .iter()
                .map(|e| e.parse())
                .collect::<Result<_, _>>()
                .map_err(spec_err)?;
            spec.network = self.network.parse().map_err(spec_err)?;
            spec.name = self
                .name
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(spec_err)?;
            for (k, v) in &labels {
                spec.labels.insert(k, v).map_err(spec_err)?;
            }
            spec.gpus = self
                .gpus
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(spec_err)?;
            let mut res = Resources::new();
            if let Some(m) = self.memory {
                res = res.with_memory_bytes(m).map_err(spec_err)?;
            }
            if let Some(c) = self.cpus {
                res = res.with_nano_cpus((c * 1e9) as u64).map_err(spec_err)?;
            }
            if let Some(p) = self.pids_limit {
                res = res.with_pids_limit(p).map_err(spec_err)?;
            }
            spec.resources = res;
            spec.accept_missing = self
                .accept_missing
                .iter()
                .map(|p| p.parse::<Protection>())
                .collect::<Result<BTreeSet<_>, _>>()
                .map_err(spec_err)?;
            spec.require = self
                .require
                .iter()
                .map(|p| p.parse::<Protection>())
                .collect::<Result<BTreeSet<_>, _>>()
                .map_err(spec_err)?;
            spec.cap_add = self
                .cap_add
                .iter()
                .map(|c| c.parse::<Capability>())
                .collect::<Result<BTreeSet<_>, _>>()
                .map_err(spec_err)?;
            spec.check().map_err(spec_err)?;
            Ok(spec)
        })())
    }
}

fn to_py_launch_error(e: &LaunchError, container: Option<&str>, command_ran: bool) -> PyErr {
    launch_error(e.rule(), e.value(), e.to_string(), container, command_ran)
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
            let _ = verified.release_job_dir();
            to_py_launch_error(&LaunchError::from(e), None, false)
        })
    };
    let stop_grace = secs("stop_grace", stop_grace)?;
    let connect_timeout = secs("connect_timeout", connect_timeout)?.max(Duration::from_secs(1));
    let args = SpecArgs {
        image,
        command: command.unwrap_or_default(),
        user,
        env,
        network: network.to_owned(),
        name,
        labels,
        gpus,
        memory,
        cpus,
        pids_limit,
        accept_missing: accept_missing.unwrap_or_default(),
        require: require.unwrap_or_default(),
        cap_add: cap_add.unwrap_or_default(),
    };
    let spec = match args.spec()? {
        Ok(spec) => spec,
        Err(e) => {
            // As the lifecycle does for every failure before the command ran.
            let _ = verified.release_job_dir();
            return Err(to_py_launch_error(&e, None, false));
        }
    };

    let cancel = CancelToken::new();
    let options = LaunchOptions {
        keep: if keep { Keep::Keep } else { Keep::Remove },
        stop_grace,
        cancel: cancel.clone(),
        ..LaunchOptions::default()
    };
    let runtime = runtime.to_owned();
    let (tx, rx) = mpsc::channel::<Message>();
    let worker = std::thread::Builder::new()
        .name("mount-plan-launch".into())
        .spawn(move || {
            let done = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Err(e) => Err(Failed {
                    error: LaunchError::Unsupported(format!("cannot start the async runtime: {e}")),
                    command_ran: false,
                    container: None,
                }),
                Ok(rt) => rt.block_on(async {
                    let engine = tokio::select! {
                        connected = connect(&runtime, socket, userns.as_deref(), connect_timeout) => connected,
                        _ = options.cancel.cancelled() => Err(LaunchError::Cancelled),
                    };
                    match engine {
                        Err(error) => {
                            let _ = verified.release_job_dir();
                            Err(Failed {
                                error,
                                command_ran: false,
                                container: None,
                            })
                        }
                        Ok(engine) => {
                            let mut observer = ChannelObserver { tx: tx.clone() };
                            mount_plan_launch::launch(
                                engine.as_ref(),
                                &verified,
                                &spec,
                                &options,
                                &mut observer,
                            )
                            .await
                        }
                    }
                }),
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
            Ok(Message::Event(event)) if pending.is_none() => match &on_event {
                Some(cb) => to_py(py, &event).and_then(|e| cb.call1((e,)).map(drop)),
                None => match &event {
                    Event::Warning { message } => warn(py, message),
                    _ => Ok(()),
                },
            },
            Ok(_) => Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(()),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(Failed {
                    error: LaunchError::Unsupported(
                        "the launch thread ended without an answer".into(),
                    ),
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
        Ok(finished) => {
            for w in &finished.warnings {
                warn(py, w)?;
            }
            Ok(finished.status.code)
        }
        Err(failed) => Err(to_py_launch_error(
            &failed.error,
            failed.container.as_deref(),
            failed.command_ran,
        )),
    }
}
