//! The three exception types and the conversion of every Rust error into one of them.
//!
//! Each exception carries the Rust error's rule id (`.rule`) and the refused value (`.value`);
//! the message is the Rust error's `Display`, which names the rule and quotes the value.
//! Nothing here decides anything: rules, ids and messages all come from the Rust crates.

use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    mount_plan,
    PlanError,
    PyValueError,
    "A name, path or layout broke a rule of the core. `.rule` is the rule id, `.value` the refused value."
);
pyo3::create_exception!(
    mount_plan,
    HostCheckError,
    PyException,
    "A host check failed. `.rule` is the rule id, `.value` and `.path` the path as the engine sees it, `.launcher_path` where it was checked, `.what` what it is."
);
pyo3::create_exception!(
    mount_plan,
    LaunchError,
    PyException,
    "A launch failed. `.rule` is the rule id, `.value` the value it concerns, `.container` the container created (or None), `.command_ran` whether the command may have run."
);

/// Rule id of a layout file that is not TOML or holds unknown keys (the CLI reports the same
/// failure as "layout file ... is not a valid layout").
pub const RULE_LAYOUT_FILE: &str = "layout-file";

/// Attach attributes to a freshly made exception.
fn with_attrs(py: Python<'_>, err: PyErr, attrs: &[(&str, Py<PyAny>)]) -> PyErr {
    let value = err.value(py);
    for (name, v) in attrs {
        // Setting an attribute on a new exception instance cannot fail: it has a __dict__.
        let _ = value.setattr(*name, v.bind(py));
    }
    err
}

fn text(py: Python<'_>, value: Option<&str>) -> Py<PyAny> {
    match value {
        Some(v) => v.into_pyobject(py).map(|s| s.into_any().unbind()),
        None => Ok(py.None()),
    }
    .unwrap_or_else(|_| py.None())
}

/// A `PlanError` with `rule`, `value` and the message.
pub fn plan_error(rule: &str, value: Option<&str>, message: String) -> PyErr {
    Python::attach(|py| {
        with_attrs(
            py,
            PlanError::new_err(message),
            &[("rule", text(py, Some(rule))), ("value", text(py, value))],
        )
    })
}

/// Conversions of the core's errors.
pub trait IntoPlanError {
    /// The `PlanError` for this error.
    fn into_py_err(self) -> PyErr;
}

impl IntoPlanError for mount_plan_core::NameError {
    fn into_py_err(self) -> PyErr {
        plan_error(self.rule(), Some(self.value()), self.to_string())
    }
}

impl IntoPlanError for mount_plan_core::PathError {
    fn into_py_err(self) -> PyErr {
        plan_error(self.rule(), Some(self.value()), self.to_string())
    }
}

impl IntoPlanError for mount_plan_core::LayoutError {
    fn into_py_err(self) -> PyErr {
        plan_error(self.rule(), self.value().as_deref(), self.to_string())
    }
}

impl IntoPlanError for mount_plan_core::PlanError {
    fn into_py_err(self) -> PyErr {
        plan_error(self.rule(), Some(self.value()), self.to_string())
    }
}

/// A `HostCheckError` for a failed host check.
pub fn host_error(err: mount_plan_host::HostError) -> PyErr {
    Python::attach(|py| {
        let subject = err.subject();
        let path = subject.map(|s| s.host_path.clone());
        let launcher_path = subject.map(|s| s.launcher_path.to_string_lossy().into_owned());
        let what = subject.map(|s| s.what);
        let value = match &err {
            mount_plan_host::HostError::LauncherPath { path } => {
                Some(path.to_string_lossy().into_owned())
            }
            mount_plan_host::HostError::InvalidMode { mode }
            | mount_plan_host::HostError::JobDirMode { mode } => Some(format!("{mode:o}")),
            _ => path.clone(),
        };
        with_attrs(
            py,
            // The message and its cause (an OS error is the host error's source, not part of
            // its message).
            HostCheckError::new_err(
                std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(": "),
            ),
            &[
                ("rule", text(py, Some(err.rule()))),
                ("value", text(py, value.as_deref())),
                ("path", text(py, path.as_deref())),
                ("launcher_path", text(py, launcher_path.as_deref())),
                ("what", text(py, what)),
            ],
        )
    })
}

/// A `LaunchError` with its rule, the value it concerns, the container (if one was created)
/// and whether the command may have run.
pub fn launch_error(
    rule: &str,
    value: Option<&str>,
    message: String,
    container: Option<&str>,
    command_ran: bool,
) -> PyErr {
    Python::attach(|py| {
        let ran = pyo3::types::PyBool::new(py, command_ran)
            .to_owned()
            .into_any()
            .unbind();
        with_attrs(
            py,
            LaunchError::new_err(message),
            &[
                ("rule", text(py, Some(rule))),
                ("value", text(py, value)),
                ("container", text(py, container)),
                ("command_ran", ran),
            ],
        )
    })
}
