//! The plan: the exact list of mounts and the working directory of one job container.

use crate::layout::Layout;
use crate::path::{is_within, ContainerPath, HostPath, PathError};
use crate::{JobName, NameError};

/// The version of the plan's serialised form.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// Mount flags that the plan asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MountFlags {
    /// Set-user-ID and set-group-ID bits are ignored.
    pub nosuid: bool,
    /// Device nodes cannot be opened.
    pub nodev: bool,
    /// Nothing can be executed.
    pub noexec: bool,
}

impl MountFlags {
    /// nosuid, nodev, noexec.
    pub const HARDENED: MountFlags = MountFlags {
        nosuid: true,
        nodev: true,
        noexec: true,
    };
    /// nosuid, nodev (binaries may run: the job directory).
    pub const NO_SUID_DEV: MountFlags = MountFlags {
        nosuid: true,
        nodev: true,
        noexec: false,
    };
    /// The flags as mount(8)-style option words, in a fixed order.
    pub fn words(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.nosuid, "nosuid"),
            (self.nodev, "nodev"),
            (self.noexec, "noexec"),
        ]
        .into_iter()
        .filter_map(|(on, w)| on.then_some(w))
    }
}

/// The tmpfs at the container root.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TmpfsMount {
    target: ContainerPath,
    read_only: bool,
    #[cfg_attr(feature = "serde", serde(serialize_with = "ser_mode"))]
    mode: u32,
    size_bytes: u64,
    #[cfg_attr(feature = "serde", serde(flatten))]
    flags: MountFlags,
}

#[cfg(feature = "serde")]
fn ser_mode<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

impl TmpfsMount {
    /// Where it is mounted (R).
    pub fn target(&self) -> &ContainerPath {
        &self.target
    }
    /// Whether it is mounted read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }
    /// Its permission bits (0o555 or 0o1777).
    pub fn mode(&self) -> u32 {
        self.mode
    }
    /// Its size cap in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
    /// Its mount flags.
    pub fn flags(&self) -> MountFlags {
        self.flags
    }
}

/// Why a bind is in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum BindRole {
    /// A shared read-only directory `W/<name>` at `R/<name>`.
    Shared,
    /// The job directory W/J at R/J: the only writable workspace path.
    Job,
    /// A site-configured extra mount.
    Extra,
}

/// Mount propagation of a bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[non_exhaustive]
pub enum Propagation {
    /// No mount event crosses between host and container.
    Private,
}

/// A bind of a host directory. Always non-recursive with private propagation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BindMount {
    role: BindRole,
    source: HostPath,
    target: ContainerPath,
    read_only: bool,
    recursive: bool,
    propagation: Propagation,
    #[cfg_attr(feature = "serde", serde(flatten))]
    flags: MountFlags,
}

impl BindMount {
    /// Why this bind is here.
    pub fn role(&self) -> BindRole {
        self.role
    }
    /// The host path (as the engine sees it).
    pub fn source(&self) -> &HostPath {
        &self.source
    }
    /// Where it is mounted in the container.
    pub fn target(&self) -> &ContainerPath {
        &self.target
    }
    /// Whether it is mounted read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }
    /// Always false: mounts below the source on the host are not carried into the container.
    pub fn recursive(&self) -> bool {
        self.recursive
    }
    /// Always [`Propagation::Private`].
    pub fn propagation(&self) -> Propagation {
        self.propagation
    }
    /// Its mount flags.
    pub fn flags(&self) -> MountFlags {
        self.flags
    }
}

/// One mount of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "lowercase"))]
pub enum Mount {
    /// The root tmpfs.
    Tmpfs(TmpfsMount),
    /// A bind of a host directory.
    Bind(BindMount),
}

impl Mount {
    /// The container target.
    pub fn target(&self) -> &ContainerPath {
        match self {
            Mount::Tmpfs(t) => &t.target,
            Mount::Bind(b) => &b.target,
        }
    }
    /// Whether it is mounted read-only.
    pub fn read_only(&self) -> bool {
        match self {
            Mount::Tmpfs(t) => t.read_only,
            Mount::Bind(b) => b.read_only,
        }
    }
    /// Its mount flags.
    pub fn flags(&self) -> MountFlags {
        match self {
            Mount::Tmpfs(t) => t.flags,
            Mount::Bind(b) => b.flags,
        }
    }
}

/// Why a plan could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The job name is refused (reserved in this layout).
    #[error(transparent)]
    Name(#[from] NameError),
    /// A bind source `W/<name>` or target `R/<name>` would be longer than
    /// [`crate::MAX_PATH_LEN`].
    #[error("{rule}{0}", rule = self.prefix())]
    PathTooLong(#[source] PathError),
    /// An extra mount's source overlaps the workspace.
    #[error(
        "{rule}extra mount source {source_path:?} overlaps the workspace {workspace:?}; it may neither contain it nor lie inside it", rule = self.prefix()
    )]
    ExtraOverlapsWorkspace {
        /// The refused source.
        source_path: String,
        /// The workspace.
        workspace: String,
    },
}

crate::rules!(PlanError, "plan", {
        PathTooLong => "mount-path-too-long",
        ExtraOverlapsWorkspace => "extra-overlaps-workspace",
    } via { Name });

impl PlanError {
    /// The refused value, as text: the name, the over-long path or the overlapping source.
    pub fn value(&self) -> &str {
        match self {
            PlanError::Name(e) => e.value(),
            PlanError::PathTooLong(e) => e.value(),
            PlanError::ExtraOverlapsWorkspace { source_path, .. } => source_path,
        }
    }
}

/// The mounts and working directory of one job container. Only [`Layout::plan`] builds one.
///
/// Order: the tmpfs at R; the read-only binds `W/<shared>` at `R/<shared>`; the one read-write
/// bind W/J at R/J; the extra mounts. Parents always come before children.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MountPlan {
    version: u32,
    job: JobName,
    workspace: HostPath,
    container_root: ContainerPath,
    workdir: ContainerPath,
    mounts: Vec<Mount>,
    #[cfg_attr(
        feature = "serde",
        serde(skip_serializing_if = "std::collections::BTreeSet::is_empty")
    )]
    require: std::collections::BTreeSet<crate::layout::Hardening>,
}

impl Layout {
    /// Plan the container of job `job` in the host workspace `workspace`.
    pub fn plan(&self, workspace: &HostPath, job: &JobName) -> Result<MountPlan, PlanError> {
        job.check_not_reserved(&self.shared)?;
        let root = &self.container_root;
        let mut mounts = Vec::with_capacity(2 + self.shared.len() + self.extra_mounts.len());
        mounts.push(Mount::Tmpfs(TmpfsMount {
            target: root.clone(),
            read_only: self.root.read_only(),
            mode: self.root.mode(),
            size_bytes: self.root.size_bytes(),
            flags: MountFlags::HARDENED,
        }));
        let bind = |role, name: &JobName, read_only, flags| -> Result<Mount, PlanError> {
            Ok(Mount::Bind(BindMount {
                role,
                source: workspace.join(name).map_err(PlanError::PathTooLong)?,
                target: root.join(name).map_err(PlanError::PathTooLong)?,
                read_only,
                recursive: false,
                propagation: Propagation::Private,
                flags,
            }))
        };
        for name in &self.shared {
            mounts.push(bind(BindRole::Shared, name, true, MountFlags::HARDENED)?);
        }
        mounts.push(bind(BindRole::Job, job, false, MountFlags::NO_SUID_DEV)?);
        for extra in &self.extra_mounts {
            if is_within(extra.source().as_str(), workspace.as_str())
                || is_within(workspace.as_str(), extra.source().as_str())
            {
                return Err(PlanError::ExtraOverlapsWorkspace {
                    source_path: extra.source().as_str().to_owned(),
                    workspace: workspace.as_str().to_owned(),
                });
            }
            let flags = if extra.read_only() {
                MountFlags::HARDENED
            } else {
                MountFlags::NO_SUID_DEV
            };
            mounts.push(Mount::Bind(BindMount {
                role: BindRole::Extra,
                source: extra.source().clone(),
                target: extra.target().clone(),
                read_only: extra.read_only(),
                recursive: false,
                propagation: Propagation::Private,
                flags,
            }));
        }
        Ok(MountPlan {
            version: PLAN_FORMAT_VERSION,
            job: job.clone(),
            workspace: workspace.clone(),
            container_root: root.clone(),
            workdir: root.join(job).map_err(PlanError::PathTooLong)?,
            mounts,
            require: self.require.clone(),
        })
    }
}

impl MountPlan {
    /// Hardening the site's layout requires ([`crate::LayoutSpec::require`]): a launcher
    /// refuses to launch this plan on an engine that cannot apply it.
    pub fn required_hardening(&self) -> &std::collections::BTreeSet<crate::layout::Hardening> {
        &self.require
    }

    /// The job name J.
    pub fn job(&self) -> &JobName {
        &self.job
    }
    /// The host workspace W (as the engine sees it).
    pub fn workspace(&self) -> &HostPath {
        &self.workspace
    }
    /// The container root R.
    pub fn container_root(&self) -> &ContainerPath {
        &self.container_root
    }
    /// The working directory R/J.
    pub fn workdir(&self) -> &ContainerPath {
        &self.workdir
    }
    /// All mounts, in mount order.
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }
    /// The root tmpfs.
    pub fn root_tmpfs(&self) -> &TmpfsMount {
        match &self.mounts[0] {
            Mount::Tmpfs(t) => t,
            Mount::Bind(_) => unreachable!("a plan always starts with its root tmpfs"),
        }
    }
    /// Every bind, in mount order.
    pub fn binds(&self) -> impl Iterator<Item = &BindMount> {
        self.mounts.iter().filter_map(|m| match m {
            Mount::Bind(b) => Some(b),
            Mount::Tmpfs(_) => None,
        })
    }
    /// The one read-write workspace bind, W/J at R/J.
    pub fn job_bind(&self) -> &BindMount {
        self.binds()
            .find(|b| b.role == BindRole::Job)
            .expect("a plan always has its job bind")
    }
}
