//! Plan options shared by `plan`, `launch` and `audit`.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use mount_plan::{Layout, LayoutSpec, MountPlan, RootKind};

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
    // W and J are required; they are `Option`s only so that `plan --json-lines`, which reads
    // them per request, can lift the requirement.
    /// Host workspace W, as the engine sees it (absolute, normalised, UTF-8)
    // Read as an OS string, so that a path that is not UTF-8 is refused by a project rule
    // (`path-not-utf8`, the path quoted) rather than by the parser's generic message.
    #[arg(long, value_name = "W", required = true, value_parser = clap::value_parser!(OsString))]
    pub workspace: Option<OsString>,
    /// Job directory name J (W/J is the only writable host path)
    #[arg(long, value_name = "J", required = true)]
    pub job: Option<String>,
    #[command(flatten)]
    pub layout: LayoutArgs,
}

impl PlanArgs {
    /// Validate everything and build the plan.
    pub fn plan(&self) -> Result<MountPlan> {
        let layout = self.layout.layout()?;
        let (Some(workspace), Some(job)) = (&self.workspace, &self.job) else {
            anyhow::bail!("--workspace and --job are required");
        };
        let workspace = utf8(workspace, "host workspace")?;
        Ok(crate::stream::plan_for(&layout, workspace, job)?)
    }
}

/// A command-line value refused before any plan is built. Each variant names a rule id
/// ([`ArgError::rule`]), unique across the project.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArgError {
    /// A path that is not UTF-8: plans and engines carry paths as text.
    #[error("{rule}the {what} {value:?} is not UTF-8; plans and engine requests carry paths as text, so rename it or reach it through a UTF-8 path", rule = self.prefix())]
    NotUtf8 {
        /// Which path this is.
        what: &'static str,
        /// The refused value.
        value: OsString,
    },
}

mount_plan::rules!(ArgError, "path", {
    NotUtf8 => "path-not-utf8",
});

/// `value` as text, or the rule `path-not-utf8`.
pub fn utf8<'a>(value: &'a OsString, what: &'static str) -> Result<&'a str, ArgError> {
    value.to_str().ok_or_else(|| ArgError::NotUtf8 {
        what,
        value: value.clone(),
    })
}

/// When to create the job directory W/J.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CreateJobDir {
    /// Create W/J when it is missing, use it when it is a real directory
    IfMissing,
    /// Create W/J; refuse when the name is already taken (by anything, even a link)
    Fresh,
}

/// Permission findings on W or a shared directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PermissionsArg {
    /// Refuse the plan (default)
    Refuse,
    /// Verify anyway and print a warning
    Warn,
}

/// Host checks: open W and every bind source without following links, pin their identities.
///
/// Every host-check flag implies --verify: none is ever silently ignored.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Check the plan against the real workspace and print the (device, inode) pins and what
    /// the scan found; every host-check flag below implies it
    #[arg(long)]
    pub verify: bool,
    /// Create the job directory W/J from a handle on W (implies --verify)
    #[arg(long, value_enum, value_name = "WHEN", num_args = 0..=1, default_missing_value = "if-missing")]
    pub create_job_dir: Option<CreateJobDir>,
    /// Mode of a created job directory, in octal [default: 0750] (implies --verify)
    #[arg(long, value_name = "OCTAL", value_parser = parse_octal)]
    pub job_dir_mode: Option<u32>,
    /// Owner of a created job directory, numeric (for jobs that run as another user than the
    /// launcher, such as a rootless Podman service's user) [default: this process's] (implies
    /// --verify)
    #[arg(long, value_name = "UID:GID", value_parser = parse_owner)]
    pub job_dir_owner: Option<(u32, u32)>,
    /// The path at which THIS process sees W, when it differs from the engine's host path
    /// (for example a launcher running in a container with W mounted at /var/tmp/ws);
    /// implies --verify
    #[arg(long, value_name = "PATH")]
    pub launcher_workspace: Option<PathBuf>,
    /// Owner uid expected of W and the shared directories [default: this process's uid]
    /// (implies --verify)
    #[arg(long, value_name = "UID")]
    pub expected_owner: Option<u32>,
    /// What a group/other-writable or foreign-owned W or shared directory does [default:
    /// refuse] (implies --verify)
    #[arg(long, value_enum)]
    pub permissions: Option<PermissionsArg>,
    /// Refuse a job directory holding a non-directory (file, socket, fifo, device, symlink)
    /// with more than one hard link (implies --verify)
    #[arg(long)]
    pub refuse_hard_links: bool,
    /// Also refuse a symlink in W's own parent directories (trusted by default) (implies
    /// --verify)
    #[arg(long)]
    pub strict_paths: bool,
}

fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    let (u, g) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not UID:GID"))?;
    match (u.parse(), g.parse()) {
        (Ok(u), Ok(g)) => Ok((u, g)),
        _ => Err(format!("{s:?} is not a numeric UID:GID")),
    }
}

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode between 0 and 7777"))
}

impl VerifyArgs {
    /// Whether host checks were asked for: by --verify, or by any host-check flag (a flag
    /// that changes the checks asks for them; it is never dropped).
    pub fn wanted(&self) -> bool {
        let VerifyArgs {
            verify,
            create_job_dir,
            job_dir_mode,
            job_dir_owner,
            launcher_workspace,
            expected_owner,
            permissions,
            refuse_hard_links,
            strict_paths,
        } = self;
        // Destructured so that a new flag cannot be forgotten here.
        *verify
            || create_job_dir.is_some()
            || job_dir_mode.is_some()
            || job_dir_owner.is_some()
            || launcher_workspace.is_some()
            || expected_owner.is_some()
            || permissions.is_some()
            || *refuse_hard_links
            || *strict_paths
    }

    /// The host-check options these flags describe.
    pub fn options(&self) -> mount_plan_host::VerifyOptions {
        use mount_plan_host::{HostView, JobDir, PermissionPolicy, VerifyOptions};
        let mode = self
            .job_dir_mode
            .unwrap_or(mount_plan_host::DEFAULT_JOB_DIR_MODE);
        VerifyOptions {
            view: self.launcher_workspace.as_ref().map(HostView::at),
            job_dir: match self.create_job_dir {
                None => JobDir::MustExist,
                Some(CreateJobDir::IfMissing) => JobDir::CreateIfMissing { mode },
                Some(CreateJobDir::Fresh) => JobDir::CreateFresh { mode },
            },
            permissions: match self.permissions {
                None | Some(PermissionsArg::Refuse) => PermissionPolicy::Refuse,
                Some(PermissionsArg::Warn) => PermissionPolicy::Warn,
            },
            expected_owner: self.expected_owner,
            refuse_hard_links: self.refuse_hard_links,
            strict_paths: self.strict_paths,
            job_dir_owner: self.job_dir_owner,
            ..VerifyOptions::default()
        }
    }

    /// Run the host checks on `plan`; print any warnings to stderr.
    pub fn verify(&self, plan: MountPlan) -> Result<mount_plan_host::VerifiedPlan> {
        Ok(verify_with(plan, &self.options())?)
    }
}

/// Run the host checks on `plan` with `options`; print any warnings and findings to stderr.
pub fn verify_with(
    plan: MountPlan,
    options: &mount_plan_host::VerifyOptions,
) -> Result<mount_plan_host::VerifiedPlan, mount_plan_host::HostError> {
    let verified = mount_plan_host::verify(plan, options)?;
    for w in verified.warnings() {
        eprintln!("warning: {w}");
    }
    for f in verified.findings() {
        eprintln!("note: {f}");
    }
    Ok(verified)
}
