//! The protections a plan asks of an engine, and how an engine can honour each.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use mount_plan::MountPlan;

use crate::spec::SpecError;

/// One protection a plan can ask of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Protection {
    /// The root tmpfs is mounted read-only (writes at R fail, even as root).
    ReadOnlyRoot,
    /// The root tmpfs gets the planned mode and size cap.
    RootModeAndSize,
    /// Shared binds are mounted read-only.
    ReadOnlyBinds,
    /// Binds are non-recursive: mounts below a source on the host are not carried in.
    NonRecursiveBinds,
    /// Binds have private propagation.
    PrivatePropagation,
    /// Set-user-ID bits on bound files give no privileges.
    NoSuidOnBinds,
    /// Device nodes on bound directories cannot be opened.
    NoDevOnBinds,
    /// Nothing on a read-only bind can be executed.
    NoExecOnBinds,
    /// The in-container gate runs first: it compares what the container got (every mount,
    /// R's mode, the working directory) with the plan and the host check's pins before the
    /// command, and refuses with exit 125 on a difference. Without it, only the engine's
    /// description of the container (the audit) is checked.
    Gate,
}

/// Whether a protection is part of the contract or hardening on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Part of the contract (the root, the binds' read-only flags, non-recursive binds,
    /// private propagation, R's mode): a launch on an engine that cannot honour it is
    /// refused, unless the caller explicitly accepts the gap (`--accept-missing`).
    Required,
    /// Mount flags on binds (nosuid, nodev, noexec): applied where the engine can, reported
    /// by `doctor` and by one warning at launch where it cannot, and refused only when the
    /// site requires them (`--require`).
    Hardening,
}

impl Protection {
    /// Every protection, in a fixed order.
    pub const ALL: [Protection; 9] = [
        Protection::ReadOnlyRoot,
        Protection::RootModeAndSize,
        Protection::ReadOnlyBinds,
        Protection::NonRecursiveBinds,
        Protection::PrivatePropagation,
        Protection::NoSuidOnBinds,
        Protection::NoDevOnBinds,
        Protection::NoExecOnBinds,
        Protection::Gate,
    ];

    /// The stable id (used by `--accept-missing` and in reports).
    pub fn id(self) -> &'static str {
        match self {
            Protection::ReadOnlyRoot => "read-only-root",
            Protection::RootModeAndSize => "root-mode-size",
            Protection::ReadOnlyBinds => "read-only-binds",
            Protection::NonRecursiveBinds => "non-recursive",
            Protection::PrivatePropagation => "private-propagation",
            Protection::NoSuidOnBinds => mount_plan::Hardening::NoSuid.id(),
            Protection::NoDevOnBinds => mount_plan::Hardening::NoDev.id(),
            Protection::NoExecOnBinds => mount_plan::Hardening::NoExec.id(),
            Protection::Gate => "gate",
        }
    }

    /// Whether it is part of the contract or hardening.
    pub fn class(self) -> Class {
        match self {
            Protection::NoSuidOnBinds | Protection::NoDevOnBinds | Protection::NoExecOnBinds => {
                Class::Hardening
            }
            _ => Class::Required,
        }
    }

    /// The protections `plan` asks for.
    pub fn required_by(plan: &MountPlan) -> BTreeSet<Protection> {
        let mut out = BTreeSet::from([Protection::RootModeAndSize, Protection::Gate]);
        if plan.root_tmpfs().read_only() {
            out.insert(Protection::ReadOnlyRoot);
        }
        for b in plan.binds() {
            if b.read_only() {
                out.insert(Protection::ReadOnlyBinds);
            }
            if !b.recursive() {
                out.insert(Protection::NonRecursiveBinds);
            }
            out.insert(Protection::PrivatePropagation);
            let f = b.flags();
            if f.nosuid {
                out.insert(Protection::NoSuidOnBinds);
            }
            if f.nodev {
                out.insert(Protection::NoDevOnBinds);
            }
            if f.noexec {
                out.insert(Protection::NoExecOnBinds);
            }
        }
        out
    }
}

impl From<mount_plan::Hardening> for Protection {
    fn from(h: mount_plan::Hardening) -> Self {
        match h {
            mount_plan::Hardening::NoSuid => Protection::NoSuidOnBinds,
            mount_plan::Hardening::NoDev => Protection::NoDevOnBinds,
            mount_plan::Hardening::NoExec => Protection::NoExecOnBinds,
        }
    }
}

/// The hardening a launch requires: what the caller names and what the plan's layout
/// requires (`require = [...]` in the layout file).
pub fn required_hardening(plan: &MountPlan, named: &BTreeSet<Protection>) -> BTreeSet<Protection> {
    let mut out = named.clone();
    out.extend(
        plan.required_hardening()
            .iter()
            .map(|h| Protection::from(*h)),
    );
    out
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Protection {
    type Err = SpecError;
    fn from_str(value: &str) -> Result<Self, SpecError> {
        Protection::ALL
            .into_iter()
            .find(|p| p.id() == value)
            .ok_or_else(|| SpecError::Protection {
                value: value.to_owned(),
                known: Protection::ALL.map(Protection::id).join(", "),
            })
    }
}

/// How an engine honours one protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// The engine applies exactly what the plan says.
    Native,
    /// The engine cannot express it, but an equivalent setting is applied (described).
    Substitute(String),
    /// The engine applies it with a known difference that does not weaken it (described).
    Partial(String),
    /// The engine cannot honour it (why).
    Missing(String),
}

impl Availability {
    /// Whether the protection holds (natively or through a substitute).
    pub fn is_available(&self) -> bool {
        !matches!(self, Availability::Missing(_))
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Availability::Native => f.write_str("available"),
            Availability::Substitute(how) => write!(f, "available through {how}"),
            Availability::Partial(note) => write!(f, "available, with a difference: {note}"),
            Availability::Missing(why) => write!(f, "not available: {why}"),
        }
    }
}

/// Facts about the engine a runtime talks to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EngineInfo {
    /// The engine kind (`docker`, `podman`).
    pub engine: String,
    /// Where it was reached (socket path or URL).
    pub endpoint: String,
    /// The engine's version.
    pub version: String,
    /// The API version in use (after negotiation).
    pub api_version: String,
    /// The OCI runtime and its version, when the engine reports it (`runc 1.1.5`).
    pub runtime: Option<String>,
    /// Whether the engine runs rootless.
    pub rootless: bool,
    /// Whether a job's root is an unprivileged host uid (rootless engines, Docker with
    /// `userns-remap`): a set-user-ID file it writes is set-user-ID to nobody that matters.
    pub user_namespace: bool,
}

/// What `doctor` reports: versions and each protection's availability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineReport {
    /// The engine.
    pub engine: EngineInfo,
    /// Each protection of [`Protection::ALL`] and how this engine honours it.
    pub protections: Vec<(Protection, Availability)>,
    /// Anything else worth a look (an old runtime, say).
    pub warnings: Vec<String>,
}

impl EngineReport {
    /// How this engine honours `p` (missing when the backend did not say).
    pub fn availability(&self, p: Protection) -> Availability {
        self.protections
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| Availability::Missing("the backend does not report it".into()))
    }

    /// The protections `plan` asks for that this engine cannot honour and that make the
    /// launch fail: contract protections not in `accepted`, and hardening the site requires
    /// (`required`).
    pub fn unmet(
        &self,
        plan: &MountPlan,
        accepted: &BTreeSet<Protection>,
        required: &BTreeSet<Protection>,
    ) -> Vec<Protection> {
        Protection::required_by(plan)
            .into_iter()
            .filter(|p| !self.availability(*p).is_available())
            .filter(|p| match p.class() {
                Class::Required => !accepted.contains(p),
                Class::Hardening => required.contains(p),
            })
            .collect()
    }

    /// The hardening `plan` asks for that this engine cannot apply and that the site does
    /// not require: the launch goes ahead without it, and says so.
    pub fn hardening_missing(
        &self,
        plan: &MountPlan,
        required: &BTreeSet<Protection>,
    ) -> Vec<(Protection, String)> {
        Protection::required_by(plan)
            .into_iter()
            .filter(|p| p.class() == Class::Hardening && !required.contains(p))
            .filter_map(|p| match self.availability(p) {
                Availability::Missing(why) => Some((p, why)),
                _ => None,
            })
            .collect()
    }

    /// The one warning line of a launch that goes ahead without some hardening, or `None`.
    /// Hardening the caller explicitly accepts as missing (`accepted`) is not repeated.
    pub fn hardening_warning(
        &self,
        plan: &MountPlan,
        accepted: &BTreeSet<Protection>,
        required: &BTreeSet<Protection>,
    ) -> Option<String> {
        let mut missing = self.hardening_missing(plan, required);
        missing.retain(|(p, _)| !accepted.contains(p));
        if missing.is_empty() {
            return None;
        }
        let what: Vec<String> = missing
            .iter()
            .map(|(p, why)| format!("{p} ({why})"))
            .collect();
        let flags: Vec<String> = missing
            .iter()
            .map(|(p, _)| format!("--require {p}"))
            .collect();
        Some(format!(
            "{} {} cannot apply this hardening, the launch goes ahead without it: {}; to refuse such launches instead, pass {}",
            self.engine.engine,
            self.engine.version,
            what.join("; "),
            flags.join(" ")
        ))
    }

    /// What this engine does differently from what `plan` asks, for the protections it
    /// honours with a difference (`root-mode-size: ...`): said at launch and by `audit`, so a
    /// launcher reads what this engine does, not what another version did.
    pub fn differences_for(&self, plan: &MountPlan) -> Vec<String> {
        Protection::required_by(plan)
            .into_iter()
            .filter_map(|p| match self.availability(p) {
                Availability::Partial(note) => Some(format!(
                    "{} {}: {p}: {note}",
                    self.engine.engine, self.engine.version
                )),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mount_plan::{HostPath, Layout, LayoutSpec, RootKind};

    #[test]
    fn ids_round_trip() {
        for p in Protection::ALL {
            assert_eq!(p.id().parse::<Protection>().unwrap(), p);
        }
        let err = "no-exec".parse::<Protection>().unwrap_err();
        assert_eq!(err.rule(), "protection");
        assert!(err.to_string().contains("noexec"), "{err}");
    }

    #[test]
    fn the_gate_is_part_of_the_contract() {
        assert_eq!("gate".parse::<Protection>().unwrap(), Protection::Gate);
        assert_eq!(Protection::Gate.class(), Class::Required);
        assert_eq!(Protection::NoDevOnBinds.class(), Class::Hardening);
    }

    #[test]
    fn required_follows_the_plan() {
        let layout = Layout::default();
        let ws = HostPath::parse("/srv/w").unwrap();
        let plan = layout.plan(&ws, &layout.job("j").unwrap()).unwrap();
        assert_eq!(
            Protection::required_by(&plan),
            BTreeSet::from(Protection::ALL)
        );

        let scratch = LayoutSpec {
            shared: Some(vec![]),
            root: Some(RootKind::Scratch),
            root_size_bytes: Some(1 << 20),
            ..LayoutSpec::default()
        }
        .build()
        .unwrap();
        let plan = scratch.plan(&ws, &scratch.job("j").unwrap()).unwrap();
        let req = Protection::required_by(&plan);
        assert!(
            req.contains(&Protection::Gate),
            "every plan asks for the gate"
        );
        assert!(!req.contains(&Protection::ReadOnlyRoot));
        assert!(!req.contains(&Protection::ReadOnlyBinds));
        assert!(!req.contains(&Protection::NoExecOnBinds));
        assert!(req.contains(&Protection::NoSuidOnBinds));
    }

    #[test]
    fn unmet_honours_acceptance_and_differences_name_the_engine() {
        let layout = Layout::default();
        let plan = layout
            .plan(
                &HostPath::parse("/srv/w").unwrap(),
                &layout.job("j").unwrap(),
            )
            .unwrap();
        let mut report = EngineReport {
            engine: EngineInfo {
                engine: "test".into(),
                endpoint: "x".into(),
                version: "1".into(),
                api_version: "1".into(),
                runtime: None,
                rootless: false,
                user_namespace: false,
            },
            protections: Protection::ALL
                .into_iter()
                .map(|p| {
                    let a = if p == Protection::NoExecOnBinds {
                        Availability::Missing("no field".into())
                    } else {
                        Availability::Native
                    };
                    (p, a)
                })
                .collect(),
            warnings: vec![],
        };
        let none = BTreeSet::new();
        let noexec = BTreeSet::from([Protection::NoExecOnBinds]);
        // Hardening: a warning, not a refusal, unless required.
        assert!(report.unmet(&plan, &none, &none).is_empty());
        assert_eq!(
            report.unmet(&plan, &none, &noexec),
            vec![Protection::NoExecOnBinds]
        );
        assert_eq!(
            report.hardening_missing(&plan, &none),
            vec![(Protection::NoExecOnBinds, "no field".to_owned())]
        );
        let warning = report.hardening_warning(&plan, &none, &none).unwrap();
        // Accepted explicitly: no warning.
        assert!(report.hardening_warning(&plan, &noexec, &none).is_none());
        assert!(
            warning.starts_with("test 1 cannot apply")
                && warning.contains("noexec (no field)")
                && warning.contains("--require noexec"),
            "{warning}"
        );
        assert!(report.hardening_warning(&plan, &none, &noexec).is_none());
        assert!(report.hardening_missing(&plan, &noexec).is_empty());
        // The contract: refused unless accepted.
        report.protections[3] = (
            Protection::NonRecursiveBinds,
            Availability::Missing("old API".into()),
        );
        assert_eq!(
            report.unmet(&plan, &none, &none),
            vec![Protection::NonRecursiveBinds]
        );
        let accepted = BTreeSet::from([Protection::NonRecursiveBinds]);
        assert!(report.unmet(&plan, &accepted, &none).is_empty());
        // Accepting hardening changes nothing: it is never refused unless required.
        assert!(report.unmet(&plan, &noexec, &none).len() == 1);
        report.protections[3] = (Protection::NonRecursiveBinds, Availability::Native);
        assert!(report.differences_for(&plan).is_empty());
        report.protections[1] = (
            Protection::RootModeAndSize,
            Availability::Partial("R's mode becomes 0755".into()),
        );
        assert_eq!(
            report.differences_for(&plan),
            vec!["test 1: root-mode-size: R's mode becomes 0755".to_owned()]
        );
    }
}
