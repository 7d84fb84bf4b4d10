//! `verify(plan, ...)`: the host checks of `mount-plan-host`, with the CLI's host-check
//! options as keyword arguments, and the `VerifiedPlan` they return.

use std::path::PathBuf;

use mount_plan_host::{HostView, JobDir, PermissionPolicy, VerifyOptions};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBool;

use crate::convert::to_py;
use crate::errors::host_error;
use crate::plan::Plan;

/// The host-check keyword arguments, as the CLI names its options.
#[derive(Debug)]
pub struct VerifyArgs {
    pub create_job_dir: Option<String>,
    pub job_dir_mode: u32,
    pub job_dir_owner: Option<(u32, u32)>,
    pub launcher_workspace: Option<PathBuf>,
    pub expected_owner: Option<u32>,
    pub permissions: String,
    pub refuse_hard_links: bool,
    pub strict_paths: bool,
}

impl VerifyArgs {
    /// The `mount-plan-host` options these arguments describe.
    pub fn options(&self) -> PyResult<VerifyOptions> {
        let job_dir = match self.create_job_dir.as_deref() {
            None => JobDir::MustExist,
            Some("if-missing") => JobDir::CreateIfMissing {
                mode: self.job_dir_mode,
            },
            Some("fresh") => JobDir::CreateFresh {
                mode: self.job_dir_mode,
            },
            Some(other) => {
                return Err(PyValueError::new_err(format!(
                    "create_job_dir={other:?}: expected None, True, \"if-missing\" or \"fresh\""
                )))
            }
        };
        let permissions = match self.permissions.as_str() {
            "refuse" => PermissionPolicy::Refuse,
            "warn" => PermissionPolicy::Warn,
            other => {
                return Err(PyValueError::new_err(format!(
                    "permissions={other:?}: expected \"refuse\" or \"warn\""
                )))
            }
        };
        Ok(VerifyOptions {
            view: self.launcher_workspace.as_ref().map(HostView::at),
            job_dir,
            permissions,
            expected_owner: self.expected_owner,
            refuse_hard_links: self.refuse_hard_links,
            strict_paths: self.strict_paths,
            job_dir_owner: self.job_dir_owner,
            ..VerifyOptions::default()
        })
    }
}

/// `create_job_dir=True` means `"if-missing"`, as a bare `--create-job-dir` does.
pub fn create_job_dir_arg(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    let Some(value) = value else { return Ok(None) };
    if value.is_none() {
        return Ok(None);
    }
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(b.is_true().then(|| "if-missing".to_owned()));
    }
    value.extract::<String>().map(Some)
}

/// A plan whose bind sources were checked on the real filesystem, with their (device, inode)
/// pins; the only kind of plan `launch()` takes. While it lives it holds a shared lock on the
/// job directory.
#[pyclass(frozen, module = "mount_plan", name = "VerifiedPlan")]
#[derive(Debug, Clone)]
pub struct VerifiedPlan {
    pub(crate) inner: mount_plan_host::VerifiedPlan,
}

/// `verify(plan, ...)`.
pub fn verify(py: Python<'_>, plan: &Plan, args: &VerifyArgs) -> PyResult<VerifiedPlan> {
    let options = args.options()?;
    let plan = plan.inner.clone();
    // Filesystem calls: let other Python threads run meanwhile.
    let verified = py
        .detach(|| mount_plan_host::verify(plan, &options))
        .map_err(host_error)?;
    Ok(VerifiedPlan { inner: verified })
}

#[pymethods]
impl VerifiedPlan {
    /// The plan, unchanged (host paths).
    #[getter]
    fn plan(&self) -> Plan {
        Plan {
            inner: self.inner.plan().clone(),
        }
    }

    /// The working directory R/J.
    #[getter]
    fn workdir(&self) -> &str {
        self.inner.plan().workdir().as_str()
    }

    /// The pins: `{"workspace": {"dev", "ino"}, "binds": [{"target", "source", "role", "dev",
    /// "ino"}, ...]}`.
    #[getter]
    fn pins(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py(py, self.inner.pins())
    }

    /// (dev, ino) of the workspace W.
    #[getter]
    fn workspace_pin(&self) -> (u64, u64) {
        let p = self.inner.workspace_pin();
        (p.dev, p.ino)
    }

    /// (dev, ino) of the job directory W/J.
    #[getter]
    fn job_pin(&self) -> (u64, u64) {
        let p = self.inner.job_pin();
        (p.dev, p.ino)
    }

    /// Findings that `permissions="warn"` let through.
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.inner.warnings().to_vec()
    }

    /// The path through which W was checked.
    #[getter]
    fn launcher_workspace(&self) -> String {
        self.inner
            .launcher_workspace()
            .to_string_lossy()
            .into_owned()
    }

    /// Whether this verification created W/J.
    #[getter]
    fn job_dir_created(&self) -> bool {
        self.inner.job_dir_created()
    }

    /// The plan with its pins, as `mount-plan plan --verify --format json` prints it (the
    /// host crate's one serialised form of a verified plan).
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        let (dev, ino) = self.job_pin();
        format!(
            "VerifiedPlan(workspace={:?}, job={:?}, job_pin=({dev}, {ino}), job_dir_created={})",
            self.inner.plan().workspace().as_str(),
            self.inner.plan().job().as_str(),
            if self.inner.job_dir_created() {
                "True"
            } else {
                "False"
            }
        )
    }
}
