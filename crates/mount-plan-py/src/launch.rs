//! `launch(...)`: the launch lifecycle of `mount-plan-launch`, through the Docker or Podman
//! backend, blocking with the GIL released.

use pyo3::exceptions::PyNotImplementedError;
use pyo3::prelude::*;

/// Launch a verified plan (not yet available: waits for the lifecycle driver).
#[pyfunction]
#[pyo3(signature = (*_args, **_kwargs))]
pub fn launch(
    _args: &Bound<'_, pyo3::types::PyTuple>,
    _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>,
) -> PyResult<i64> {
    Err(PyNotImplementedError::new_err(
        "launch() needs the lifecycle driver of mount-plan-launch",
    ))
}
