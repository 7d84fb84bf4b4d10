//! `Plan` and its typed mounts, and the renderers of the core and the Docker backend.

use mount_plan_core::{HostPath, Mount, MountPlan};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::convert::to_py;
use crate::errors::IntoPlanError;

/// A path argument: `str` or `os.PathLike` whose path is text.
pub fn path_text(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_cow()?.into_owned());
    }
    let path: std::path::PathBuf = obj
        .extract()
        .map_err(|_| PyTypeError::new_err("a path is a str or an os.PathLike"))?;
    path.into_os_string()
        .into_string()
        .map_err(|p| PyValueError::new_err(format!("the path {p:?} is not valid UTF-8")))
}

/// The mounts and working directory of one job container, as the core planned them.
#[pyclass(frozen, module = "mount_plan", name = "Plan")]
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) inner: MountPlan,
}

impl Plan {
    /// Parse the workspace, check the job name in `layout`, plan.
    pub fn build(
        layout: &mount_plan_core::Layout,
        workspace: &Bound<'_, PyAny>,
        job: &Bound<'_, PyAny>,
    ) -> PyResult<Plan> {
        let workspace = HostPath::parse_as(&path_text(workspace)?, "host workspace")
            .map_err(IntoPlanError::into_py_err)?;
        let job = crate::layout::job_name(layout, job)?;
        let inner = layout
            .plan(&workspace, &job)
            .map_err(IntoPlanError::into_py_err)?;
        Ok(Plan { inner })
    }

    /// The plan as the CLI's `plan --format json` prints it.
    pub fn json(&self) -> PyResult<serde_json::Value> {
        serde_json::to_value(&self.inner).map_err(|e| PyValueError::new_err(e.to_string()))
    }
}

/// The tmpfs at the container root R.
#[pyclass(frozen, module = "mount_plan", name = "TmpfsMount", eq)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsMount {
    /// Always `"tmpfs"`.
    #[pyo3(get)]
    kind: &'static str,
    /// Where it is mounted (R).
    #[pyo3(get)]
    target: String,
    /// Whether it is mounted read-only.
    #[pyo3(get)]
    read_only: bool,
    /// Its permission bits (0o555 or 0o1777).
    #[pyo3(get)]
    mode: u32,
    /// Its size cap in bytes.
    #[pyo3(get)]
    size_bytes: u64,
    /// Mount flags.
    #[pyo3(get)]
    nosuid: bool,
    #[pyo3(get)]
    nodev: bool,
    #[pyo3(get)]
    noexec: bool,
}

#[pymethods]
impl TmpfsMount {
    fn __repr__(&self) -> String {
        format!(
            "TmpfsMount(target={:?}, read_only={}, mode=0o{:o}, size_bytes={})",
            self.target,
            py_bool(self.read_only),
            self.mode,
            self.size_bytes
        )
    }
}

/// A bind of a host directory: non-recursive, private propagation.
#[pyclass(frozen, module = "mount_plan", name = "BindMount", eq)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Always `"bind"`.
    #[pyo3(get)]
    kind: &'static str,
    /// `"shared"`, `"job"` or `"extra"`.
    #[pyo3(get)]
    role: String,
    /// The host path, as the engine sees it.
    #[pyo3(get)]
    source: String,
    /// Where it is mounted in the container.
    #[pyo3(get)]
    target: String,
    /// Whether it is mounted read-only.
    #[pyo3(get)]
    read_only: bool,
    /// Always False: mounts below the source are not carried into the container.
    #[pyo3(get)]
    recursive: bool,
    /// Always `"private"`.
    #[pyo3(get)]
    propagation: String,
    /// Mount flags.
    #[pyo3(get)]
    nosuid: bool,
    #[pyo3(get)]
    nodev: bool,
    #[pyo3(get)]
    noexec: bool,
}

#[pymethods]
impl BindMount {
    fn __repr__(&self) -> String {
        format!(
            "BindMount(role={:?}, source={:?}, target={:?}, read_only={})",
            self.role,
            self.source,
            self.target,
            py_bool(self.read_only)
        )
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// A unit enum's name as the core serialises it (`"job"`, `"private"`).
fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

fn typed_mount(py: Python<'_>, m: &Mount) -> PyResult<Py<PyAny>> {
    let flags = m.flags();
    Ok(match m {
        Mount::Tmpfs(t) => Py::new(
            py,
            TmpfsMount {
                kind: "tmpfs",
                target: t.target().to_string(),
                read_only: t.read_only(),
                mode: t.mode(),
                size_bytes: t.size_bytes(),
                nosuid: flags.nosuid,
                nodev: flags.nodev,
                noexec: flags.noexec,
            },
        )?
        .into_any(),
        Mount::Bind(b) => Py::new(
            py,
            BindMount {
                kind: "bind",
                role: serde_name(&b.role()),
                source: b.source().to_string(),
                target: b.target().to_string(),
                read_only: b.read_only(),
                recursive: b.recursive(),
                propagation: serde_name(&b.propagation()),
                nosuid: flags.nosuid,
                nodev: flags.nodev,
                noexec: flags.noexec,
            },
        )?
        .into_any(),
    })
}

/// The Engine API version whose `HostConfig.Mounts` [`Plan::docker_mounts`] renders: the first
/// with `BindOptions.NonRecursive`, which every plan needs.
const DOCKER_MOUNTS_API: mount_plan_docker::ApiVersion =
    mount_plan_docker::ApiVersion::NON_RECURSIVE;

#[pymethods]
impl Plan {
    /// The job name J.
    #[getter]
    fn job(&self) -> &str {
        self.inner.job().as_str()
    }

    /// The host workspace W, as the engine sees it.
    #[getter]
    fn workspace(&self) -> &str {
        self.inner.workspace().as_str()
    }

    /// The container root R.
    #[getter]
    fn container_root(&self) -> &str {
        self.inner.container_root().as_str()
    }

    /// The working directory R/J.
    #[getter]
    fn workdir(&self) -> &str {
        self.inner.workdir().as_str()
    }

    /// Every mount, in mount order: a `TmpfsMount` first, then `BindMount`s.
    #[getter]
    fn mounts(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        self.inner
            .mounts()
            .iter()
            .map(|m| typed_mount(py, m))
            .collect()
    }

    /// The plan as `mount-plan plan --format json` prints it (`version`, `job`, `workspace`,
    /// `container_root`, `workdir`, `mounts`).
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py(py, &self.inner)
    }

    /// The mounts as the Docker Engine API's `HostConfig.Mounts` list (dicts with `Target`,
    /// `Source`, `Type`, `ReadOnly`, `BindOptions`, `TmpfsOptions`), which docker-py takes as
    /// `mounts=`. Binds carry `NonRecursive` (Engine API >= 1.40). Docker cannot set nosuid on
    /// binds: pass `security_opt=["no-new-privileges"]` and `cap_drop=["ALL"]` too (see
    /// `docker_args()`).
    fn docker_mounts(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py(
            py,
            &mount_plan_docker::engine_mounts(&self.inner, DOCKER_MOUNTS_API),
        )
    }

    /// Arguments for `docker run`: one CSV-quoted `--mount` per mount, `--workdir`,
    /// `--security-opt no-new-privileges` and `--cap-drop ALL`.
    fn docker_args(&self) -> Vec<String> {
        self.inner.docker_args()
    }

    /// Arguments for `podman run`: one CSV-quoted `--mount` per mount, `--workdir` and
    /// `--cap-drop ALL`.
    fn podman_args(&self) -> Vec<String> {
        self.inner.podman_args()
    }

    /// The mounts in OCI runtime-spec form (`destination`, `type`, `source`, `options`).
    fn oci_mounts(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py(py, &self.inner.oci_mounts())
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Plan>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "Plan(workspace={:?}, job={:?}, workdir={:?}, mounts={})",
            self.workspace(),
            self.job(),
            self.workdir(),
            self.inner.mounts().len()
        )
    }
}
