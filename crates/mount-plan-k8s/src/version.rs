//! Which Kubernetes version (and which alpha feature gates) the Pod is written for, and what
//! that target can express of the plan's protections.
//!
//! The facts (see `docs/scale-out.md`): `recursiveReadOnly` is alpha in 1.30 (gate
//! `RecursiveReadOnlyMounts`, off by default), beta and on from 1.31, GA in 1.33;
//! `VolumeMount.bindMountOptions` (gate `VolumeBindMountOptions`) and `emptyDir.mode` (gate
//! `EmptyDirVolumeMode`) exist only from 1.37, as alpha. An API server whose gate is off
//! *drops* an alpha field without an error, so an alpha field is written only when the caller
//! says its gate is on; otherwise the protection it carries is reported missing.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use mount_plan_spec::{Availability, Protection};

use crate::error::PodError;

/// Why a Pod runs without the in-container gate: the gate reaches a Pod only from a gate
/// image, through an init container, and none was given.
pub const GATE_WITHOUT_IMAGE: &str = "no gate image (--k8s-gate-image): the Pod would run without the in-container gate, so the pins of the host check would not be compared with what the Pod got";
/// The oldest Kubernetes minor version the renderer writes for.
pub const MIN_MINOR: u32 = 30;
/// The newest Kubernetes minor version the renderer writes for.
pub const MAX_MINOR: u32 = 37;

/// A Kubernetes version `1.MINOR`, with `MINOR` in [`MIN_MINOR`]..=[`MAX_MINOR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct K8sVersion(u32);

impl K8sVersion {
    /// The default target: 1.33, where `recursiveReadOnly` is GA.
    pub const DEFAULT: K8sVersion = K8sVersion(33);

    /// Every supported version, oldest first.
    pub fn all() -> impl Iterator<Item = K8sVersion> {
        (MIN_MINOR..=MAX_MINOR).map(K8sVersion)
    }

    /// The minor version.
    pub fn minor(self) -> u32 {
        self.0
    }
}

impl Default for K8sVersion {
    fn default() -> Self {
        K8sVersion::DEFAULT
    }
}

impl fmt::Display for K8sVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.0)
    }
}

impl FromStr for K8sVersion {
    type Err = PodError;
    fn from_str(value: &str) -> Result<Self, PodError> {
        let err = || PodError::Version {
            value: value.to_owned(),
        };
        let minor = value
            .strip_prefix("v")
            .unwrap_or(value)
            .strip_prefix("1.")
            .ok_or_else(err)?;
        if minor.is_empty() || !minor.bytes().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        let minor: u32 = minor.parse().map_err(|_| err())?;
        if !(MIN_MINOR..=MAX_MINOR).contains(&minor) {
            return Err(err());
        }
        Ok(K8sVersion(minor))
    }
}

/// An alpha feature gate that must be on in the cluster for a field to survive the API
/// server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FeatureGate {
    /// `recursiveReadOnly` in 1.30 (on by default from 1.31).
    RecursiveReadOnlyMounts,
    /// `VolumeMount.bindMountOptions` (nosuid, nodev, noexec), from 1.37.
    VolumeBindMountOptions,
    /// `emptyDir.mode`, from 1.37.
    EmptyDirVolumeMode,
}

impl FeatureGate {
    /// Every gate, in a fixed order.
    pub const ALL: [FeatureGate; 3] = [
        FeatureGate::RecursiveReadOnlyMounts,
        FeatureGate::VolumeBindMountOptions,
        FeatureGate::EmptyDirVolumeMode,
    ];

    /// The gate's name, as the cluster's `--feature-gates` spells it.
    pub fn name(self) -> &'static str {
        match self {
            FeatureGate::RecursiveReadOnlyMounts => "RecursiveReadOnlyMounts",
            FeatureGate::VolumeBindMountOptions => "VolumeBindMountOptions",
            FeatureGate::EmptyDirVolumeMode => "EmptyDirVolumeMode",
        }
    }

    /// The first minor version that has the field.
    fn since(self) -> u32 {
        match self {
            FeatureGate::RecursiveReadOnlyMounts => 30,
            FeatureGate::VolumeBindMountOptions | FeatureGate::EmptyDirVolumeMode => 37,
        }
    }
}

impl fmt::Display for FeatureGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FeatureGate {
    type Err = PodError;
    fn from_str(value: &str) -> Result<Self, PodError> {
        FeatureGate::ALL
            .into_iter()
            .find(|g| g.name() == value)
            .ok_or_else(|| PodError::FeatureGate {
                value: value.to_owned(),
                known: FeatureGate::ALL.map(FeatureGate::name).join(", "),
            })
    }
}

/// The cluster a Pod is written for: its version and the alpha gates it has turned on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    version: K8sVersion,
    gates: BTreeSet<FeatureGate>,
}

impl Target {
    /// A target; a gate whose field the version does not have is refused.
    pub fn new(
        version: K8sVersion,
        gates: impl IntoIterator<Item = FeatureGate>,
    ) -> Result<Self, PodError> {
        let gates: BTreeSet<FeatureGate> = gates.into_iter().collect();
        if let Some(g) = gates.iter().find(|g| version.minor() < g.since()) {
            return Err(PodError::GateNotInVersion {
                gate: *g,
                version,
                since: K8sVersion(g.since()),
            });
        }
        Ok(Target { version, gates })
    }

    /// The version.
    pub fn version(&self) -> K8sVersion {
        self.version
    }

    /// The alpha gates said to be on.
    pub fn gates(&self) -> &BTreeSet<FeatureGate> {
        &self.gates
    }

    /// Whether `recursiveReadOnly: Enabled` is written on read-only mounts.
    pub fn recursive_read_only(&self) -> bool {
        self.version.minor() >= 31 || self.gates.contains(&FeatureGate::RecursiveReadOnlyMounts)
    }

    /// Whether `bindMountOptions` is written.
    pub fn bind_mount_options(&self) -> bool {
        self.gates.contains(&FeatureGate::VolumeBindMountOptions)
    }

    /// Whether `emptyDir.mode` is written (only on a scratch root: see [`crate::render_pod`]).
    pub fn empty_dir_mode(&self) -> bool {
        self.gates.contains(&FeatureGate::EmptyDirVolumeMode)
    }

    /// How a Pod written for this target honours each protection of [`Protection::ALL`]; the
    /// gate as without a gate image ([`GATE_WITHOUT_IMAGE`]).
    pub fn availability(&self) -> Vec<(Protection, Availability)> {
        let v = self.version;
        Protection::ALL
            .into_iter()
            .map(|p| {
                let a = match p {
                    Protection::ReadOnlyRoot
                    | Protection::ReadOnlyBinds
                    | Protection::PrivatePropagation => Availability::Native,
                    Protection::RootModeAndSize => Availability::Partial(format!(
                        "the size cap is the memory-backed emptyDir's sizeLimit; a read-only \
                         root keeps emptyDir's mode 0777 (mounted read-only, nothing can be \
                         created in it){}",
                        if self.empty_dir_mode() {
                            "; a scratch root gets its mode from emptyDir.mode"
                        } else {
                            "; a scratch root is 0777 without the sticky bit (emptyDir.mode \
                             needs 1.37 and the EmptyDirVolumeMode gate)"
                        }
                    )),
                    Protection::NonRecursiveBinds => {
                        if self.recursive_read_only() {
                            Availability::Native
                        } else {
                            Availability::Partial(format!(
                                "subPath binds are non-recursive, but recursiveReadOnly is alpha \
                                 in {v} and not written (turn on RecursiveReadOnlyMounts)"
                            ))
                        }
                    }
                    Protection::NoSuidOnBinds => {
                        if self.bind_mount_options() {
                            Availability::Native
                        } else {
                            Availability::Substitute(
                                "allowPrivilegeEscalation: false (no_new_privs): set-user-ID bits \
                                 give no privilege"
                                    .into(),
                            )
                        }
                    }
                    Protection::NoDevOnBinds => {
                        if self.bind_mount_options() {
                            Availability::Native
                        } else {
                            Availability::Substitute(
                                "capabilities drop ALL (no MKNOD) and the runtime's device cgroup"
                                    .into(),
                            )
                        }
                    }
                    Protection::NoExecOnBinds => {
                        if self.bind_mount_options() {
                            Availability::Native
                        } else {
                            Availability::Missing(format!(
                                "Kubernetes {v} cannot set noexec on a volume mount \
                                 (bindMountOptions needs 1.37 and the VolumeBindMountOptions gate)"
                            ))
                        }
                    }
                    // The backend says Native when it has a gate image to run it from.
                    Protection::Gate => Availability::Missing(GATE_WITHOUT_IMAGE.into()),
                    _ => Availability::Missing("not known to the Kubernetes renderer".into()),
                };
                (p, a)
            })
            .collect()
    }

    /// Warnings about this target that hold whatever the plan: alpha gates the caller says
    /// are on (an API server without them drops the fields silently; the backend's audit
    /// reads the stored Pod back and catches that).
    pub fn warnings(&self) -> Vec<String> {
        self.gates
            .iter()
            .map(|g| {
                format!(
                    "the Pod relies on the alpha feature gate {g}: an API server without it drops \
                     the field without an error"
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_within_range_only() {
        assert_eq!("1.30".parse::<K8sVersion>().unwrap().minor(), 30);
        assert_eq!("v1.37".parse::<K8sVersion>().unwrap().minor(), 37);
        for bad in [
            "1.29",
            "1.38",
            "2.30",
            "1.",
            "1.3a",
            "",
            "1.+31",
            "1.030000000000",
        ] {
            let err = bad.parse::<K8sVersion>().unwrap_err();
            assert_eq!(err.rule(), "k8s-version", "{bad}");
        }
        assert_eq!(K8sVersion::all().count(), 8);
    }

    #[test]
    fn a_gate_before_its_version_is_refused() {
        let v36: K8sVersion = "1.36".parse().unwrap();
        let err = Target::new(v36, [FeatureGate::VolumeBindMountOptions]).unwrap_err();
        assert_eq!(err.rule(), "k8s-gate-version");
        assert!(err.to_string().contains("1.37"), "{err}");
        assert!(Target::new("1.37".parse().unwrap(), FeatureGate::ALL).is_ok());
        assert!("NoSuchGate".parse::<FeatureGate>().is_err());
    }

    #[test]
    fn noexec_only_with_bind_mount_options() {
        let get = |t: &Target, p| {
            t.availability()
                .into_iter()
                .find(|(q, _)| *q == p)
                .unwrap()
                .1
        };
        for v in K8sVersion::all() {
            let t = Target::new(v, []).unwrap();
            assert!(!get(&t, Protection::NoExecOnBinds).is_available(), "{v}");
            assert_eq!(
                get(&t, Protection::NonRecursiveBinds) == Availability::Native,
                v.minor() >= 31
            );
        }
        let t = Target::new(
            "1.37".parse().unwrap(),
            [FeatureGate::VolumeBindMountOptions],
        )
        .unwrap();
        assert_eq!(get(&t, Protection::NoExecOnBinds), Availability::Native);
        assert_eq!(t.warnings().len(), 1);
    }
}
