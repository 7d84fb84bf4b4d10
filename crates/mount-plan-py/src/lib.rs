//! # mount_plan: Python bindings of mount-plan
//!
//! A thin layer over the Rust crates: every rule, rule id, message and rendering comes from
//! `mount-plan` (names, paths, layouts, plans, renderers), `mount-plan-host` (host checks),
//! `mount-plan-docker` (Engine API mounts) and `mount-plan-launch` with its backends (the
//! launch lifecycle). This crate only converts arguments and results, and maps each Rust error
//! to `PlanError`, `HostCheckError` or `LaunchError` with its rule id and refused value.
//!
//! The API is described for Python users in `python/mount_plan/__init__.pyi` (shipped in the wheel with
//! `py.typed`).

use pyo3::prelude::*;

mod convert;
mod errors;
mod handle;
mod launch;
mod layout;
mod plan;
mod verify;

use layout::{default_layout, Layout, LayoutArgs};
use plan::{BindMount, Plan, TmpfsMount};
use verify::{VerifiedPlan, VerifyArgs};

/// `plan(workspace, job, *, layout=None, container_root=None, shared=None, no_shared=False,
/// root=None, scratch_size=None, extra_mounts=None)`: the plan of job `job` in the host
/// workspace `workspace`. `layout` is a `Layout` or the path of a TOML layout file; the other
/// keyword arguments are the CLI's layout options.
#[pyfunction(name = "plan")]
#[pyo3(signature = (workspace, job, *, layout=None, container_root=None, shared=None, no_shared=false, root=None, scratch_size=None, extra_mounts=None))]
#[allow(clippy::too_many_arguments)]
fn plan_fn(
    workspace: &Bound<'_, PyAny>,
    job: &Bound<'_, PyAny>,
    layout: Option<&Bound<'_, PyAny>>,
    container_root: Option<String>,
    shared: Option<Vec<String>>,
    no_shared: bool,
    root: Option<String>,
    scratch_size: Option<u64>,
    extra_mounts: Option<Bound<'_, PyAny>>,
) -> PyResult<Plan> {
    let mut args = LayoutArgs {
        container_root,
        shared,
        no_shared,
        root,
        scratch_size,
        layout: None,
        extra_mounts,
    };
    if let Some(given) = layout.filter(|l| !l.is_none()) {
        if let Ok(layout) = given.cast::<Layout>() {
            if !args.is_empty() {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "plan(): pass either a Layout or layout options, not both",
                ));
            }
            return Plan::build(&layout.get().inner, workspace, job);
        }
        args.layout = Some(given.extract()?);
    }
    if args.is_empty() {
        return Plan::build(default_layout(), workspace, job);
    }
    Plan::build(&args.build()?, workspace, job)
}

/// `check_name(name, layout=None)`: the name if it is a valid job name in `layout` (default:
/// the default layout, whose reserved names are `startup` and `local` in any ASCII case);
/// otherwise raises `PlanError` naming the rule.
#[pyfunction]
#[pyo3(signature = (name, layout=None))]
fn check_name(name: &Bound<'_, PyAny>, layout: Option<&Bound<'_, Layout>>) -> PyResult<String> {
    match layout {
        Some(l) => layout::check_with(&l.get().inner, name),
        None => layout::check_with(default_layout(), name),
    }
}

/// `verify(plan, *, create_job_dir=None, job_dir_mode=0o750, job_dir_owner=None,
/// launcher_workspace=None, expected_owner=None, permissions="refuse",
/// refuse_hard_links=False, strict_paths=False)`: the host checks, with the CLI's options.
#[pyfunction(name = "verify")]
#[pyo3(signature = (plan, *, create_job_dir=None, job_dir_mode=0o750, job_dir_owner=None, launcher_workspace=None, expected_owner=None, permissions="refuse", refuse_hard_links=false, strict_paths=false))]
#[allow(clippy::too_many_arguments)]
fn verify_fn(
    py: Python<'_>,
    plan: &Bound<'_, Plan>,
    create_job_dir: Option<&Bound<'_, PyAny>>,
    job_dir_mode: u32,
    job_dir_owner: Option<(u32, u32)>,
    launcher_workspace: Option<std::path::PathBuf>,
    expected_owner: Option<u32>,
    permissions: &str,
    refuse_hard_links: bool,
    strict_paths: bool,
) -> PyResult<VerifiedPlan> {
    let args = VerifyArgs {
        create_job_dir: verify::create_job_dir_arg(create_job_dir)?,
        job_dir_mode,
        job_dir_owner,
        launcher_workspace,
        expected_owner,
        permissions: permissions.to_owned(),
        refuse_hard_links,
        strict_paths,
    };
    verify::verify(py, plan.get(), &args)
}

/// Give every job container an isolated view of a shared workspace.
#[pymodule]
fn mount_plan(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Layout>()?;
    m.add_class::<Plan>()?;
    m.add_class::<TmpfsMount>()?;
    m.add_class::<BindMount>()?;
    m.add_class::<VerifiedPlan>()?;
    m.add_function(wrap_pyfunction!(plan_fn, m)?)?;
    m.add_function(wrap_pyfunction!(check_name, m)?)?;
    m.add_function(wrap_pyfunction!(verify_fn, m)?)?;
    m.add_function(wrap_pyfunction!(launch::launch, m)?)?;
    m.add_class::<handle::LaunchHandle>()?;
    m.add_function(wrap_pyfunction!(handle::start, m)?)?;
    m.add("PlanError", py.get_type::<errors::PlanError>())?;
    m.add("HostCheckError", py.get_type::<errors::HostCheckError>())?;
    m.add("LaunchError", py.get_type::<errors::LaunchError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
