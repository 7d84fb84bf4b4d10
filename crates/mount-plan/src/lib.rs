//! # mount-plan: the sans-IO core
//!
//! **Guarantee.** For a validated workspace W, layout and job name J, [`Layout::plan`] returns
//! a [`MountPlan`] in which a container sees exactly: an empty tmpfs at the workspace root R
//! (read-only, mode 0555, size-capped by default; or a size-capped sticky scratch root);
//! read-only binds `W/<shared>` at `R/<shared>`; one read-write bind W/J at R/J; the site's extra
//! mounts, which may not overlap R or W; and R/J as its working directory. Every bind is
//! non-recursive with private propagation; read-only binds ask for nosuid, nodev, noexec and
//! the job bind for nosuid, nodev.
//!
//! **Rules it owns.** Job and shared names follow one allow-list grammar ([`JobName`]): 1 to
//! 128 bytes of `[A-Za-z0-9._-]`, starting with a letter or digit, not ending with `.`; a job
//! name equal to a shared name in any ASCII case is reserved. Paths are absolute and
//! normalised ([`HostPath`], [`ContainerPath`]). Every refusal names a stable rule id.
//!
//! **What it never does.** No filesystem access, no environment, no clock, no async, no
//! engine types: its dependency list (`thiserror`, optional `serde`) is the boundary. It does
//! not know whether W/J exists, is a symlink or sits on another filesystem: that is
//! `mount-plan-host`'s job, which turns a plan into a verified plan that backends accept.
//!
//! ```
//! use mount_plan::{HostPath, Layout};
//!
//! let layout = Layout::default();
//! let workspace = HostPath::parse("/srv/site")?;
//! let job = layout.job("job-1")?;
//! let plan = layout.plan(&workspace, &job)?;
//! assert_eq!(plan.workdir().as_str(), "/workspace/job-1");
//! assert_eq!(plan.job_bind().source().as_str(), "/srv/site/job-1");
//! assert_eq!(plan.binds().filter(|b| !b.read_only()).count(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod layout;
mod name;
mod path;
mod plan;
mod render;
pub mod rule;

pub use layout::{
    ExtraMount, ExtraMountSpec, Hardening, Layout, LayoutError, LayoutSpec, RootKind, RootPolicy,
    DEFAULT_CONTAINER_ROOT, DEFAULT_READ_ONLY_ROOT_SIZE, DEFAULT_SHARED, READ_ONLY_ROOT_MODE,
    SCRATCH_ROOT_MODE,
};
pub use name::{JobName, NameError, MAX_NAME_LEN};
pub use path::{ContainerPath, HostPath, PathError, FORBIDDEN_CONTAINER_PREFIXES, MAX_PATH_LEN};
pub use plan::{
    BindMount, BindRole, Mount, MountFlags, MountPlan, PlanError, Propagation, TmpfsMount,
    PLAN_FORMAT_VERSION,
};
pub use render::{csv_quote, OciMount, DOCKER_BIND_FLAGS_NOT_EXPRESSIBLE};
pub use rule::RulePrefix;
