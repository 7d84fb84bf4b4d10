//! `start(...)`: the launch of `launch(...)`, returning at once a `LaunchHandle` (poll, wait,
//! terminate, events, command_ran), for launchers that run many jobs at once (NVIDIA FLARE's
//! job runner).
//!
//! The lifecycle is the same (`mount_plan_run::run`, on its own thread, see
//! `launch::Prepared::spawn`). Its output and events go to the caller's callbacks from that
//! thread (holding the GIL only while calling them); the events are also kept on the handle.
//! The handle's state sits behind one mutex and a condition variable, so any number of Python
//! threads may poll, wait and terminate at once; every wait releases the GIL.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mount_plan_launch::{CancelToken, Event, LogChunk, Observer};
use mount_plan_run::Outcome;
use pyo3::exceptions::{PyBaseException, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::convert::to_py;
use crate::launch::{outcome_result, stream_name, warn, write_std, LaunchArgs};
use crate::verify::VerifiedPlan;

/// How long a waiting thread sleeps between looks for a KeyboardInterrupt.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// What the lifecycle has said so far.
#[derive(Default)]
struct State {
    events: Vec<Event>,
    /// Shared, so that `poll` and `wait` take it out of the lock and make its Python answer
    /// after releasing the lock: making an exception can release the GIL (pyo3 normalises a
    /// new one detached), and another thread holding the GIL may be waiting for this lock (two
    /// threads in `wait` at the end of a launch deadlocked so in a CI run).
    outcome: Option<Arc<Outcome>>,
    /// The first exception a callback raised: it cancelled the launch, and is what `wait` and
    /// `poll` raise once the lifecycle has cleaned up. Kept as the exception object (made while
    /// no lock is held), so that reading it under the lock is a reference count, never Python.
    pending: Option<Py<PyBaseException>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Block (the GIL must be released) until the outcome is there or `deadline` passes;
    /// whether it is there.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let mut state = self.lock();
        while state.outcome.is_none() {
            match deadline {
                None => state = self.done.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    state = self
                        .done
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        true
    }
}

/// Keeps the events and hands output and events to the Python callbacks, on the lifecycle's
/// thread.
struct HandleObserver {
    shared: Arc<Shared>,
    cancel: CancelToken,
    on_output: Option<Py<PyAny>>,
    on_event: Option<Py<PyAny>>,
}

impl HandleObserver {
    /// A callback's exception cancels the launch (once) and is kept for `wait`.
    fn deliver(&self, call: impl FnOnce(Python<'_>) -> PyResult<()>) {
        if self.shared.lock().pending.is_some() {
            return;
        }
        if let Err(e) = Python::attach(|py| call(py).map_err(|e| e.into_value(py))) {
            self.shared.lock().pending.get_or_insert(e);
            self.cancel.cancel();
        }
    }
}

impl Observer for HandleObserver {
    fn output(&mut self, chunk: &LogChunk) {
        self.deliver(|py| match &self.on_output {
            Some(cb) => cb
                .call1(
                    py,
                    (stream_name(chunk.stream), PyBytes::new(py, &chunk.bytes)),
                )
                .map(drop),
            None => write_std(py, chunk),
        });
    }

    fn event(&mut self, event: &Event) {
        self.shared.lock().events.push(event.clone());
        self.deliver(|py| {
            // Every warning is a RuntimeWarning, as launch() raises them.
            if let Event::Warning { message } = event {
                warn(py, message)?;
            }
            match &self.on_event {
                Some(cb) => cb.call1(py, (to_py(py, event)?,)).map(drop),
                None => Ok(()),
            }
        });
    }
}

/// A running (or finished) launch: see `python/mount_plan/__init__.pyi`.
#[pyclass(frozen, module = "mount_plan")]
pub struct LaunchHandle {
    shared: Arc<Shared>,
    cancel: CancelToken,
    job: String,
}

impl std::fmt::Debug for LaunchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchHandle")
            .field("job", &self.job)
            .finish()
    }
}

impl LaunchHandle {
    /// The launch's answer once it is there: its exit status or its error (a callback's
    /// exception first).
    fn result(&self, py: Python<'_>) -> Option<PyResult<i64>> {
        let (outcome, pending) = {
            let state = self.shared.lock();
            let outcome = Arc::clone(state.outcome.as_ref()?);
            (outcome, state.pending.as_ref().map(|e| e.clone_ref(py)))
        };
        Some(match pending {
            Some(e) => Err(PyErr::from_value(e.into_bound(py).into_any())),
            None => outcome_result(&outcome),
        })
    }

    /// Wait (GIL released) until the lifecycle has finished, however long cleanup takes.
    fn wait_done(&self, py: Python<'_>) {
        let shared = Arc::clone(&self.shared);
        py.detach(move || shared.wait_until(None));
    }
}

#[pymethods]
impl LaunchHandle {
    /// None while the launch runs; then the command's exit status (or its LaunchError).
    fn poll(&self, py: Python<'_>) -> PyResult<Option<i64>> {
        self.result(py).transpose()
    }

    /// Wait for the end (at most `timeout` seconds: TimeoutError after it, the launch goes
    /// on); the command's exit status, or LaunchError. A KeyboardInterrupt while waiting
    /// terminates the launch, then is raised.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<i64> {
        let deadline = match timeout {
            None => None,
            Some(t) if t.is_finite() && t >= 0.0 => {
                Some(Instant::now() + Duration::from_secs_f64(t.min(1e9)))
            }
            Some(t) => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "timeout is a number of seconds >= 0, not {t}"
                )))
            }
        };
        loop {
            let shared = Arc::clone(&self.shared);
            let finished = py.detach(move || {
                let slice = Instant::now() + SIGNAL_POLL;
                let until = deadline.map_or(slice, |d| d.min(slice));
                shared.wait_until(Some(until))
            });
            if finished {
                break;
            }
            if let Err(e) = py.check_signals() {
                self.cancel.cancel();
                self.wait_done(py);
                return Err(e);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(PyTimeoutError::new_err(format!(
                    "the launch of job {} is still running after {} s",
                    self.job,
                    timeout.unwrap_or_default()
                )));
            }
        }
        self.result(py).expect("the outcome is there")
    }

    /// Stop the launch (the container is stopped within the launch's `stop_grace` and
    /// removed) and wait until it is cleaned up. Nothing happens to a finished launch.
    fn terminate(&self, py: Python<'_>) {
        self.cancel.cancel();
        self.wait_done(py);
    }

    /// Whether the launch has finished (its container removed or kept).
    #[getter]
    fn done(&self) -> bool {
        self.shared.lock().outcome.is_some()
    }

    /// The job's name.
    #[getter]
    fn job(&self) -> &str {
        &self.job
    }

    /// The lifecycle events so far, as `on_event` receives them.
    #[getter]
    fn events<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = self.shared.lock().events.clone();
        let list = PyList::empty(py);
        for event in &events {
            list.append(to_py(py, event)?)?;
        }
        Ok(list)
    }

    /// The container's id once it was created (the last one: a launch creates once more after
    /// removing, unstarted, a container of an image whose name moved meanwhile).
    #[getter]
    fn container(&self) -> Option<String> {
        self.shared
            .lock()
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Created { container } => Some(container.clone()),
                _ => None,
            })
    }

    /// Whether the command may have run: false means it certainly did not.
    #[getter]
    fn command_ran(&self) -> bool {
        let state = self.shared.lock();
        match state.outcome.as_deref() {
            Some(Outcome::Exited(_)) => true,
            Some(Outcome::Failed(failure)) => failure.command_ran,
            None => state
                .events
                .iter()
                .any(|e| matches!(e, Event::Started { .. })),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Leaving a `with` block terminates a launch that still runs.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.terminate(py);
        false
    }

    fn __repr__(&self) -> String {
        let state = self.shared.lock();
        let status = match state.outcome.as_deref() {
            None => "running".to_owned(),
            Some(Outcome::Exited(f)) => format!("exited {}", f.status.code),
            Some(Outcome::Failed(f)) => format!("failed ({})", f.error.rule()),
        };
        format!("<LaunchHandle job={:?} {status}>", self.job)
    }
}

impl Drop for LaunchHandle {
    /// A handle dropped while its launch runs cancels it: nothing outlives its handle.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// `start(plan, image, command=(), *, ...)`: see `python/mount_plan/__init__.pyi`.
#[pyfunction]
#[pyo3(signature = (plan, image, command=None, *, runtime="docker", socket=None, userns=None, user=None, env=None, network="none", name=None, labels=None, gpus=None, memory=None, cpus=None, pids_limit=None, keep=false, stop_grace=10.0, accept_missing=None, require=None, cap_add=None, connect_timeout=10.0, on_output=None, on_event=None))]
#[allow(clippy::too_many_arguments)]
pub fn start<'py>(
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
) -> PyResult<LaunchHandle> {
    let job = plan.get().inner.plan().job().to_string();
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
    let shared = Arc::new(Shared::default());
    let cancel = prepared.cancel.clone();
    let observer = Box::new(HandleObserver {
        shared: Arc::clone(&shared),
        cancel: cancel.clone(),
        on_output: on_output.filter(|o| !o.is_none()).map(Bound::unbind),
        on_event: on_event.filter(|o| !o.is_none()).map(Bound::unbind),
    });
    let answer = Arc::clone(&shared);
    // Detached: the handle never joins the thread; the outcome under the lock is its end.
    let _worker = prepared.spawn(observer, move |outcome| {
        answer.lock().outcome = Some(Arc::new(outcome));
        answer.done.notify_all();
    })?;
    Ok(LaunchHandle {
        shared,
        cancel,
        job,
    })
}
