//! `Layout`: the site's layout, built from keyword arguments named like the CLI's layout options
//! and/or a TOML layout file, validated by the core's `LayoutSpec::build`.

use std::path::PathBuf;
use std::sync::OnceLock;

use mount_plan_core::{ExtraMountSpec, LayoutSpec, RootKind, RootPolicy};
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde::de::IntoDeserializer;
use serde::Deserialize;

use crate::convert::{py_to_value, to_py};
use crate::errors::{plan_error, IntoPlanError, RULE_LAYOUT_FILE};
use crate::plan::Plan;

/// The default layout, built once.
pub fn default_layout() -> &'static mount_plan_core::Layout {
    static DEFAULT: OnceLock<mount_plan_core::Layout> = OnceLock::new();
    DEFAULT.get_or_init(mount_plan_core::Layout::default)
}

/// A validated layout: the container root R, the shared read-only directories, the root tmpfs
/// policy and the site's extra mounts.
#[pyclass(frozen, module = "mount_plan", name = "Layout")]
#[derive(Debug, Clone)]
pub struct Layout {
    pub(crate) inner: mount_plan_core::Layout,
}

/// The layout keyword arguments, as the CLI names its layout options.
#[derive(Debug, Default)]
pub struct LayoutArgs<'py> {
    pub container_root: Option<String>,
    pub shared: Option<Vec<String>>,
    pub no_shared: bool,
    pub root: Option<String>,
    pub scratch_size: Option<u64>,
    pub layout: Option<PathBuf>,
    pub extra_mounts: Option<Bound<'py, PyAny>>,
}

impl LayoutArgs<'_> {
    /// Whether any option was given.
    pub fn is_empty(&self) -> bool {
        self.container_root.is_none()
            && self.shared.is_none()
            && !self.no_shared
            && self.root.is_none()
            && self.scratch_size.is_none()
            && self.layout.is_none()
            && self.extra_mounts.is_none()
    }

    /// The layout these options describe: the file's settings (if any), then the options over
    /// them, as `mount-plan --layout FILE --shared ...` does; validated by the core.
    pub fn build(&self) -> PyResult<mount_plan_core::Layout> {
        if self.is_empty() {
            return Ok(default_layout().clone());
        }
        let mut spec = match &self.layout {
            Some(path) => read_layout_file(path)?,
            None => LayoutSpec::default(),
        };
        if let Some(r) = &self.container_root {
            spec.container_root = Some(r.clone());
        }
        if self.no_shared {
            if self.shared.as_ref().is_some_and(|s| !s.is_empty()) {
                return Err(PyValueError::new_err(
                    "no_shared=True and a non-empty shared= list contradict each other",
                ));
            }
            spec.shared = Some(Vec::new());
        } else if let Some(shared) = &self.shared {
            spec.shared = Some(shared.clone());
        }
        if let Some(root) = &self.root {
            spec.root = Some(parse_root(root)?);
        }
        if let Some(size) = self.scratch_size {
            spec.root_size_bytes = Some(size);
        }
        if let Some(extra) = &self.extra_mounts {
            spec.extra_mounts = extra_mount_specs(extra)?;
        }
        spec.build().map_err(IntoPlanError::into_py_err)
    }
}

/// `"read-only"` or `"scratch"`, by the core's own names for them.
fn parse_root(value: &str) -> PyResult<RootKind> {
    let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        value.into_deserializer();
    RootKind::deserialize(de).map_err(|_| {
        PyValueError::new_err(format!(
            "root={value:?}: expected \"read-only\" or \"scratch\""
        ))
    })
}

fn root_name(root: RootPolicy) -> &'static str {
    if root.read_only() {
        "read-only"
    } else {
        "scratch"
    }
}

/// Extra mounts given as dicts (`source`, `target`, optional `read_only`, as in a layout file)
/// or as `(source, target, read_only)` tuples.
fn extra_mount_specs(obj: &Bound<'_, PyAny>) -> PyResult<Vec<ExtraMountSpec>> {
    let mut out = Vec::new();
    for item in obj.try_iter()? {
        let item = item?;
        if let Ok((source, target, read_only)) = item.extract::<(String, String, bool)>() {
            out.push(ExtraMountSpec {
                source,
                target,
                read_only,
            });
            continue;
        }
        let value = py_to_value(&item)?;
        let spec = ExtraMountSpec::deserialize(value).map_err(|e| {
            PyTypeError::new_err(format!(
                "extra_mounts: each item is {{\"source\": str, \"target\": str, \"read_only\": bool}} or (source, target, read_only): {e}"
            ))
        })?;
        out.push(spec);
    }
    Ok(out)
}

/// A TOML layout file as a `LayoutSpec` (the same keys as `mount-plan --layout FILE`).
fn read_layout_file(path: &PathBuf) -> PyResult<LayoutSpec> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        PyOSError::new_err((
            e.raw_os_error().unwrap_or(0),
            format!("cannot read layout file {path:?}: {e}"),
            path.to_string_lossy().into_owned(),
        ))
    })?;
    toml::from_str::<LayoutSpec>(&text).map_err(|e| {
        let shown = path.to_string_lossy();
        plan_error(
            RULE_LAYOUT_FILE,
            Some(&shown),
            format!("layout file {shown:?} is not a valid layout: {e}"),
        )
    })
}

#[pymethods]
impl Layout {
    /// `Layout(*, container_root=None, shared=None, no_shared=False, root=None,
    /// scratch_size=None, layout=None, extra_mounts=None)`: the CLI's layout options as keyword
    /// arguments; `layout` is a TOML layout file whose settings the other arguments override.
    #[new]
    #[pyo3(signature = (*, container_root=None, shared=None, no_shared=false, root=None, scratch_size=None, layout=None, extra_mounts=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        container_root: Option<String>,
        shared: Option<Vec<String>>,
        no_shared: bool,
        root: Option<String>,
        scratch_size: Option<u64>,
        layout: Option<PathBuf>,
        extra_mounts: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let args = LayoutArgs {
            container_root,
            shared,
            no_shared,
            root,
            scratch_size,
            layout,
            extra_mounts,
        };
        Ok(Layout {
            inner: args.build()?,
        })
    }

    /// The layout of a TOML layout file.
    #[staticmethod]
    fn from_file(path: PathBuf) -> PyResult<Self> {
        let spec = read_layout_file(&path)?;
        Ok(Layout {
            inner: spec.build().map_err(IntoPlanError::into_py_err)?,
        })
    }

    /// The container root R.
    #[getter]
    fn container_root(&self) -> &str {
        self.inner.container_root().as_str()
    }

    /// The shared read-only directory names, in order.
    #[getter]
    fn shared(&self) -> Vec<&str> {
        self.inner.shared().iter().map(|n| n.as_str()).collect()
    }

    /// `"read-only"` or `"scratch"`.
    #[getter]
    fn root(&self) -> &'static str {
        root_name(self.inner.root())
    }

    /// The root tmpfs size cap in bytes.
    #[getter]
    fn root_size_bytes(&self) -> u64 {
        self.inner.root().size_bytes()
    }

    /// The extra mounts, as `{"source", "target", "read_only"}` dicts, parents first.
    #[getter]
    fn extra_mounts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for m in self.inner.extra_mounts() {
            let d = PyDict::new(py);
            d.set_item("source", m.source().as_str())?;
            d.set_item("target", m.target().as_str())?;
            d.set_item("read_only", m.read_only())?;
            list.append(d)?;
        }
        Ok(list)
    }

    /// Check a job name against the grammar and this layout's reserved (shared) names; returns
    /// it, or raises `PlanError`.
    fn job(&self, name: &Bound<'_, PyAny>) -> PyResult<String> {
        check_with(&self.inner, name)
    }

    /// The plan of job `job` in the host workspace `workspace`.
    fn plan(&self, workspace: &Bound<'_, PyAny>, job: &Bound<'_, PyAny>) -> PyResult<Plan> {
        Plan::build(&self.inner, workspace, job)
    }

    /// The layout as a layout file's keys (`container_root`, `shared`, `root`,
    /// `root_size_bytes`, `extra_mounts`, `require`).
    fn to_dict(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        to_py(py, &self.inner.to_spec())
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Layout>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "Layout(container_root={:?}, shared={:?}, root={:?}, root_size_bytes={}, extra_mounts={})",
            self.container_root(),
            self.shared(),
            self.root(),
            self.root_size_bytes(),
            self.inner.extra_mounts().len()
        )
    }
}

/// `layout.job(name)` for a `str` (or `bytes`, checked byte for byte) name.
pub fn job_name(
    layout: &mount_plan_core::Layout,
    name: &Bound<'_, PyAny>,
) -> PyResult<mount_plan_core::JobName> {
    let parsed = if let Ok(text) = name.cast::<pyo3::types::PyString>() {
        layout.job(&text.to_cow()?)
    } else if let Ok(bytes) = name.cast::<pyo3::types::PyBytes>() {
        // Bytes that are not ASCII never pass the grammar; the core says which rule.
        mount_plan_core::JobName::parse_bytes(bytes.as_bytes()).and_then(|n| layout.job(n.as_str()))
    } else {
        return Err(PyTypeError::new_err(
            "a job name is a str (or bytes, checked byte for byte)",
        ));
    };
    parsed.map_err(IntoPlanError::into_py_err)
}

/// [`job_name`] as the text of the accepted name.
pub fn check_with(layout: &mount_plan_core::Layout, name: &Bound<'_, PyAny>) -> PyResult<String> {
    job_name(layout, name).map(String::from)
}
