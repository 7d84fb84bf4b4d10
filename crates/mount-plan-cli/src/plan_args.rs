//! Plan options shared by `plan`, `launch` and `audit`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use mount_plan::{HostPath, JobName, Layout, LayoutSpec, MountPlan, RootKind};

/// The root tmpfs policy, as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RootArg {
    /// Read-only tmpfs, mode 0555, 1 MiB cap (default): nothing can be created at the root.
    ReadOnly,
    /// Read-write sticky tmpfs, mode 1777, size cap required (--scratch-size).
    Scratch,
}

/// Layout options: where the workspace goes in the container and what is shared.
#[derive(Debug, Clone, Args)]
pub struct LayoutArgs {
    /// Container path of the workspace root R [default: /workspace]
    #[arg(long, value_name = "R")]
    pub container_root: Option<String>,
    /// A shared read-only directory W/NAME, mounted at R/NAME (repeat for several)
    /// [default: startup and local]
    #[arg(long = "shared", value_name = "NAME", conflicts_with = "no_shared")]
    pub shared: Vec<String>,
    /// Share no directory read-only: only the job directory is mounted
    #[arg(long)]
    pub no_shared: bool,
    /// Root tmpfs policy [default: read-only]
    #[arg(long, value_enum, value_name = "POLICY")]
    pub root: Option<RootArg>,
    /// Size cap of the root tmpfs in bytes (required with --root scratch)
    #[arg(long, value_name = "BYTES", alias = "root-size")]
    pub scratch_size: Option<u64>,
    /// Read layout settings (and extra mounts) from a TOML file; flags override it
    #[arg(long, value_name = "FILE")]
    pub layout: Option<PathBuf>,
}

impl LayoutArgs {
    /// The layout these options describe.
    pub fn layout(&self) -> Result<Layout> {
        let mut spec = match &self.layout {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read layout file {path:?}"))?;
                toml::from_str::<LayoutSpec>(&text)
                    .with_context(|| format!("layout file {path:?} is not a valid layout"))?
            }
            None => LayoutSpec::default(),
        };
        if let Some(r) = &self.container_root {
            spec.container_root = Some(r.clone());
        }
        if self.no_shared {
            spec.shared = Some(Vec::new());
        } else if !self.shared.is_empty() {
            spec.shared = Some(self.shared.clone());
        }
        if let Some(root) = self.root {
            spec.root = Some(match root {
                RootArg::ReadOnly => RootKind::ReadOnly,
                RootArg::Scratch => RootKind::Scratch,
            });
        }
        if let Some(size) = self.scratch_size {
            spec.root_size_bytes = Some(size);
        }
        Ok(spec.build()?)
    }
}

/// Workspace, job and layout: everything a plan needs.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Host workspace W, as the engine sees it (absolute, normalised)
    #[arg(long, value_name = "W")]
    pub workspace: String,
    /// Job directory name J (W/J is the only writable host path)
    #[arg(long, value_name = "J")]
    pub job: String,
    #[command(flatten)]
    pub layout: LayoutArgs,
}

impl PlanArgs {
    /// Validate everything and build the plan.
    pub fn plan(&self) -> Result<MountPlan> {
        let layout = self.layout.layout()?;
        let workspace = HostPath::parse_as(&self.workspace, "host workspace")?;
        let job: JobName = layout.job(&self.job)?;
        Ok(layout.plan(&workspace, &job)?)
    }
}
