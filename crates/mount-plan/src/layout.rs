//! The site's layout: where the workspace root goes in the container, which directories are
//! shared read-only, how the root tmpfs behaves, and site-configured extra mounts.

use crate::path::{ContainerPath, HostPath, PathError};
use crate::{JobName, NameError};

/// The default container root R.
pub const DEFAULT_CONTAINER_ROOT: &str = "/workspace";
/// The default shared read-only directories.
pub const DEFAULT_SHARED: [&str; 2] = ["startup", "local"];
/// The default size cap of a read-only root tmpfs, in bytes: it only holds mount points.
pub const DEFAULT_READ_ONLY_ROOT_SIZE: u64 = 1 << 20;
/// Mode of a read-only root tmpfs.
pub const READ_ONLY_ROOT_MODE: u32 = 0o555;
/// Mode of a scratch root tmpfs (sticky, world-writable, like `/tmp`).
pub const SCRATCH_ROOT_MODE: u32 = 0o1777;

/// How the tmpfs at the container root R behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RootPolicy {
    /// Mounted read-only, mode 0555: nothing, not even root, can create entries at R.
    ReadOnly {
        /// Size cap in bytes.
        size_bytes: u64,
    },
    /// Mounted read-write, mode 1777, for jobs that must create directories at R.
    Scratch {
        /// Size cap in bytes (required: an unbounded tmpfs lets a job fill RAM).
        size_bytes: u64,
    },
}

impl RootPolicy {
    /// The size cap in bytes.
    pub fn size_bytes(&self) -> u64 {
        match *self {
            RootPolicy::ReadOnly { size_bytes } | RootPolicy::Scratch { size_bytes } => size_bytes,
        }
    }
    /// Whether the root tmpfs is mounted read-only.
    pub fn read_only(&self) -> bool {
        matches!(self, RootPolicy::ReadOnly { .. })
    }
    /// The root tmpfs mode.
    pub fn mode(&self) -> u32 {
        match self {
            RootPolicy::ReadOnly { .. } => READ_ONLY_ROOT_MODE,
            RootPolicy::Scratch { .. } => SCRATCH_ROOT_MODE,
        }
    }
}

/// The root policy's name in a layout file and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum RootKind {
    /// See [`RootPolicy::ReadOnly`].
    #[default]
    ReadOnly,
    /// See [`RootPolicy::Scratch`].
    Scratch,
}

/// A site-configured extra bind (a dataset, say), as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraMount {
    source: HostPath,
    target: ContainerPath,
    read_only: bool,
}

impl ExtraMount {
    /// The host source.
    pub fn source(&self) -> &HostPath {
        &self.source
    }
    /// The container target.
    pub fn target(&self) -> &ContainerPath {
        &self.target
    }
    /// Whether it is mounted read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }
}

/// Unvalidated input for an extra mount, as a layout file or a caller gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct ExtraMountSpec {
    /// Host source path.
    pub source: String,
    /// Container target path.
    pub target: String,
    /// Read-only (the default) or read-write.
    #[cfg_attr(feature = "serde", serde(default = "default_true"))]
    pub read_only: bool,
}

#[cfg(feature = "serde")]
fn default_true() -> bool {
    true
}

/// Unvalidated layout input: every field optional, defaults applied by [`LayoutSpec::build`].
/// This is what a layout file (TOML, JSON...) deserialises into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields, default))]
pub struct LayoutSpec {
    /// The container root R (default [`DEFAULT_CONTAINER_ROOT`]).
    pub container_root: Option<String>,
    /// Shared read-only directory names (default [`DEFAULT_SHARED`]; may be empty).
    pub shared: Option<Vec<String>>,
    /// The root policy (default read-only).
    pub root: Option<RootKind>,
    /// The root tmpfs size cap in bytes (default [`DEFAULT_READ_ONLY_ROOT_SIZE`] for
    /// read-only; required for scratch).
    pub root_size_bytes: Option<u64>,
    /// Site-configured extra mounts.
    pub extra_mounts: Vec<ExtraMountSpec>,
    /// Hardening the site requires (`require = ["noexec"]`): a launch on an engine that
    /// cannot apply it is refused instead of going ahead with a warning.
    pub require: Vec<Hardening>,
}

/// A mount flag on binds that an engine may be unable to set: hardening on top of the
/// contract, which a site can require ([`LayoutSpec::require`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Hardening {
    /// `nosuid` on every bind.
    NoSuid,
    /// `nodev` on every bind.
    NoDev,
    /// `noexec` on read-only binds.
    NoExec,
}

impl Hardening {
    /// Every kind, in a fixed order.
    pub const ALL: [Hardening; 3] = [Hardening::NoSuid, Hardening::NoDev, Hardening::NoExec];

    /// The stable id (`nosuid`, `nodev`, `noexec`), as in a layout file and `--require`.
    pub fn id(self) -> &'static str {
        match self {
            Hardening::NoSuid => "nosuid",
            Hardening::NoDev => "nodev",
            Hardening::NoExec => "noexec",
        }
    }
}

/// Why a layout was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The container root is not an acceptable container path.
    #[error("{rule}{0}", rule = self.prefix())]
    ContainerRoot(#[source] PathError),
    /// A shared directory name breaks the name grammar.
    #[error("{rule}shared directory {value:?}: {source}", rule = self.prefix())]
    SharedName {
        /// The refused value.
        value: String,
        /// Why.
        #[source]
        source: NameError,
    },
    /// Two shared names are equal ignoring ASCII case.
    #[error("{rule}shared directory {value:?} is listed twice (ignoring ASCII case)", rule = self.prefix())]
    SharedDuplicate {
        /// The repeated name.
        value: String,
    },
    /// The scratch policy needs an explicit size.
    #[error("{rule}a scratch root needs a size cap (root_size_bytes / --scratch-size)", rule = self.prefix())]
    ScratchNeedsSize,
    /// A zero-byte tmpfs.
    #[error("{rule}the root size cap must be at least 4096 bytes, got {value}", rule = self.prefix())]
    RootSizeTooSmall {
        /// The refused size.
        value: u64,
    },
    /// An extra mount's source or target is not an acceptable path.
    #[error("{rule}extra mount {index}: {source}", rule = self.prefix())]
    ExtraPath {
        /// Position in the list.
        index: usize,
        /// Why.
        #[source]
        source: PathError,
    },
    /// An extra mount's target overlaps the container root.
    #[error(
        "{rule}extra mount target {target:?} overlaps the container root {root:?}; it may neither contain it nor lie inside it", rule = self.prefix()
    )]
    ExtraOverlapsRoot {
        /// The refused target.
        target: String,
        /// The container root.
        root: String,
    },
    /// Two extra mounts share a target.
    #[error("{rule}two extra mounts have the target {target:?}", rule = self.prefix())]
    ExtraDuplicateTarget {
        /// The repeated target.
        target: String,
    },
}

crate::rules!(LayoutError, "layout", {
    ContainerRoot => "container-root",
    SharedName => "shared-name",
    SharedDuplicate => "shared-duplicate",
    ScratchNeedsSize => "scratch-size",
    RootSizeTooSmall => "root-size",
    ExtraPath => "extra-path",
    ExtraOverlapsRoot => "extra-overlaps-root",
    ExtraDuplicateTarget => "extra-duplicate-target",
});

impl LayoutError {
    /// The refused value, as text (a size in decimal), when the rule concerns one value.
    pub fn value(&self) -> Option<String> {
        match self {
            LayoutError::ContainerRoot(e) | LayoutError::ExtraPath { source: e, .. } => {
                Some(e.value().to_owned())
            }
            LayoutError::SharedName { value, .. } | LayoutError::SharedDuplicate { value } => {
                Some(value.clone())
            }
            LayoutError::ScratchNeedsSize => None,
            LayoutError::RootSizeTooSmall { value } => Some(value.to_string()),
            LayoutError::ExtraOverlapsRoot { target, .. }
            | LayoutError::ExtraDuplicateTarget { target } => Some(target.clone()),
        }
    }
}

/// A validated layout. Build one with [`Layout::default`] or [`LayoutSpec::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub(crate) container_root: ContainerPath,
    pub(crate) shared: Vec<JobName>,
    pub(crate) root: RootPolicy,
    pub(crate) extra_mounts: Vec<ExtraMount>,
    pub(crate) require: std::collections::BTreeSet<Hardening>,
}

impl Default for Layout {
    fn default() -> Self {
        LayoutSpec::default()
            .build()
            .expect("the default layout is valid")
    }
}

impl LayoutSpec {
    /// Validate and apply defaults.
    pub fn build(&self) -> Result<Layout, LayoutError> {
        let container_root = ContainerPath::parse_as(
            self.container_root
                .as_deref()
                .unwrap_or(DEFAULT_CONTAINER_ROOT),
            "container root",
        )
        .map_err(LayoutError::ContainerRoot)?;

        let mut shared: Vec<JobName> = Vec::new();
        let raw_shared: Vec<&str> = match &self.shared {
            Some(v) => v.iter().map(String::as_str).collect(),
            None => DEFAULT_SHARED.to_vec(),
        };
        for value in raw_shared {
            let name = JobName::parse(value).map_err(|source| LayoutError::SharedName {
                value: value.to_owned(),
                source,
            })?;
            if name.check_not_reserved(&shared).is_err() {
                return Err(LayoutError::SharedDuplicate {
                    value: value.to_owned(),
                });
            }
            shared.push(name);
        }

        let root = match (self.root.unwrap_or_default(), self.root_size_bytes) {
            (RootKind::ReadOnly, size) => RootPolicy::ReadOnly {
                size_bytes: size.unwrap_or(DEFAULT_READ_ONLY_ROOT_SIZE),
            },
            (RootKind::Scratch, Some(size_bytes)) => RootPolicy::Scratch { size_bytes },
            (RootKind::Scratch, None) => return Err(LayoutError::ScratchNeedsSize),
        };
        if root.size_bytes() < 4096 {
            return Err(LayoutError::RootSizeTooSmall {
                value: root.size_bytes(),
            });
        }

        let mut extra_mounts: Vec<ExtraMount> = Vec::new();
        for (index, spec) in self.extra_mounts.iter().enumerate() {
            let path_err = |source| LayoutError::ExtraPath { index, source };
            let source =
                HostPath::parse_as(&spec.source, "extra mount source").map_err(path_err)?;
            let target =
                ContainerPath::parse_as(&spec.target, "extra mount target").map_err(path_err)?;
            if target.is_within(&container_root) || container_root.is_within(&target) {
                return Err(LayoutError::ExtraOverlapsRoot {
                    target: target.as_str().to_owned(),
                    root: container_root.as_str().to_owned(),
                });
            }
            if extra_mounts.iter().any(|m| m.target == target) {
                return Err(LayoutError::ExtraDuplicateTarget {
                    target: target.as_str().to_owned(),
                });
            }
            extra_mounts.push(ExtraMount {
                source,
                target,
                read_only: spec.read_only,
            });
        }
        // Parents before children: a prefix sorts before every path below it.
        extra_mounts.sort_by(|a, b| a.target.cmp(&b.target));

        Ok(Layout {
            container_root,
            shared,
            root,
            extra_mounts,
            require: self.require.iter().copied().collect(),
        })
    }
}

impl Layout {
    /// The container root R.
    pub fn container_root(&self) -> &ContainerPath {
        &self.container_root
    }
    /// The shared read-only directory names, in order.
    pub fn shared(&self) -> &[JobName] {
        &self.shared
    }
    /// The root tmpfs policy.
    pub fn root(&self) -> RootPolicy {
        self.root
    }
    /// The site-configured extra mounts, parents before children.
    pub fn extra_mounts(&self) -> &[ExtraMount] {
        &self.extra_mounts
    }
    /// The hardening the site requires ([`LayoutSpec::require`]), carried into every plan.
    pub fn required_hardening(&self) -> &std::collections::BTreeSet<Hardening> {
        &self.require
    }

    /// The layout as the spec (a layout file's keys) that builds it again:
    /// `layout.to_spec().build() == Ok(layout)`. Every key is filled in, defaults included.
    pub fn to_spec(&self) -> LayoutSpec {
        LayoutSpec {
            container_root: Some(self.container_root.to_string()),
            shared: Some(self.shared.iter().map(|n| n.as_str().to_owned()).collect()),
            root: Some(if self.root.read_only() {
                RootKind::ReadOnly
            } else {
                RootKind::Scratch
            }),
            root_size_bytes: Some(self.root.size_bytes()),
            extra_mounts: self
                .extra_mounts
                .iter()
                .map(|m| ExtraMountSpec {
                    source: m.source().to_string(),
                    target: m.target().to_string(),
                    read_only: m.read_only(),
                })
                .collect(),
            require: self.require.iter().copied().collect(),
        }
    }

    /// Parse a job name and refuse it when it is reserved in this layout (equal to a shared
    /// directory name, ignoring ASCII case).
    pub fn job(&self, value: &str) -> Result<JobName, NameError> {
        let name = JobName::parse(value)?;
        name.check_not_reserved(&self.shared)?;
        Ok(name)
    }
}
