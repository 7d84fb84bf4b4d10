//! What an engine reports about a container, in engine-neutral form, and the pure audit that
//! compares it with the plan.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use mount_plan::{Mount, MountFlags, MountPlan};

use crate::protection::Protection;
use crate::spec::Capability;

/// A bind mount as the engine reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedBind {
    /// Host source.
    pub source: String,
    /// Target in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// Propagation (`private`, `rprivate`, `shared`...); `None`: not reported.
    pub propagation: Option<String>,
    /// Whether the bind is non-recursive; `None`: not reported.
    pub non_recursive: Option<bool>,
    /// nosuid/nodev/noexec as set on this mount; `None`: the engine cannot set or report
    /// them per mount (Docker).
    pub flags: Option<MountFlags>,
}

/// A tmpfs mount as the engine reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedTmpfs {
    /// Target in the container.
    pub target: String,
    /// Mounted read-only; `None`: not reported.
    pub read_only: Option<bool>,
    /// Permission bits; `None`: not reported.
    pub mode: Option<u32>,
    /// Size cap in bytes; `None`: not reported (or unlimited).
    pub size_bytes: Option<u64>,
    /// nosuid/nodev/noexec; `None`: not reported.
    pub flags: Option<MountFlags>,
    /// Whether the engine copies the image's files at the target into the tmpfs; `None`:
    /// not reported (Docker never copies up).
    pub copies_up: Option<bool>,
}

/// A mount that is neither a bind nor a tmpfs (a volume, say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedOtherMount {
    /// The engine's kind (`volume`, `npipe`...).
    pub kind: String,
    /// The source or volume name, when reported.
    pub source: Option<String>,
    /// Target in the container.
    pub target: String,
}

/// The namespace settings of a container, as the engine reports them (empty: default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedNamespaces {
    /// Network mode.
    pub network: String,
    /// PID namespace mode.
    pub pid: String,
    /// IPC namespace mode.
    pub ipc: String,
    /// UTS namespace mode.
    pub uts: String,
    /// User namespace mode.
    pub userns: String,
}

/// What an engine reports about one container, engine-neutral. Build it with struct syntax
/// and `..Default::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedContainer {
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Image as configured.
    pub image: String,
    /// The id of the image the engine resolved `image` to, when reported (Docker:
    /// `sha256:HEX`; Podman: `HEX`). [`audit_image`] compares it with the image the command
    /// line was built from.
    pub image_id: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Run state (`created`, `running`, `exited`...), when reported.
    pub state: Option<String>,
    /// The command's exit code, once it has exited and when reported.
    pub exit_code: Option<i64>,
    /// The pid of the container's first process while it runs, as the engine numbers it (in
    /// the engine's pid namespace: this host's only when the engine runs on this host and not
    /// in a container of its own). `audit --verify` looks through `/proc/PID/root` at what the
    /// container holds.
    pub first_pid: Option<u32>,
    /// The working directory; `None`: not reported.
    pub working_dir: Option<String>,
    /// The configured user.
    pub user: Option<String>,
    /// Bind mounts.
    pub binds: Vec<ObservedBind>,
    /// Tmpfs mounts; `None`: this engine does not report tmpfs mounts. (Docker lists them
    /// under `Mounts`; Podman 4.3 under `HostConfig.Tmpfs`, not under `Mounts`.)
    pub tmpfs: Option<Vec<ObservedTmpfs>>,
    /// Volumes and other mounts.
    pub other_mounts: Vec<ObservedOtherMount>,
    /// Containers whose volumes this one takes.
    pub volumes_from: Vec<String>,
    /// Privileged mode.
    pub privileged: bool,
    /// `no-new-privileges` is set.
    pub no_new_privileges: bool,
    /// Added capabilities, as reported (`NET_RAW` or `CAP_NET_RAW`).
    pub cap_add: Vec<String>,
    /// Dropped capabilities, as reported (`ALL` when all are dropped; Podman lists the
    /// dropped defaults one by one instead and reports the set kept in `cap_bounding`).
    pub cap_drop: Vec<String>,
    /// The capability bounding set the engine gave the runtime; `None`: not reported
    /// (Docker, Swarm and Kubernetes report only what was added and dropped).
    pub cap_bounding: Option<Vec<String>>,
    /// Device mappings and device cgroup rules.
    pub devices: Vec<String>,
    /// Security options as given to the engine.
    pub security_opt: Vec<String>,
    /// Namespace modes.
    pub namespaces: ObservedNamespaces,
}

/// One way a container differs from its plan.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Difference {
    /// A planned mount is absent.
    MissingMount {
        /// Planned target.
        target: String,
        /// `bind` or `tmpfs`.
        kind: &'static str,
    },
    /// A mount that is not in the plan.
    UnplannedMount {
        /// Its target.
        target: String,
        /// Its kind as reported.
        kind: String,
        /// Its source, when reported.
        source: Option<String>,
    },
    /// A bind has a different source.
    Source {
        /// Target.
        target: String,
        /// Planned source.
        planned: String,
        /// Observed source.
        observed: String,
    },
    /// Read-only or read-write differs.
    ReadOnly {
        /// Target.
        target: String,
        /// Planned.
        planned: bool,
        /// Observed.
        observed: bool,
    },
    /// A bind's propagation is not private.
    Propagation {
        /// Target.
        target: String,
        /// Observed propagation (`None`: not reported).
        observed: Option<String>,
    },
    /// A bind is (or may be) recursive.
    Recursive {
        /// Target.
        target: String,
    },
    /// A tmpfs has another mode.
    TmpfsMode {
        /// Target.
        target: String,
        /// Planned mode.
        planned: u32,
        /// Observed mode (`None`: not reported).
        observed: Option<u32>,
    },
    /// A tmpfs has another size cap.
    TmpfsSize {
        /// Target.
        target: String,
        /// Planned size.
        planned: u64,
        /// Observed size (`None`: none, or not reported).
        observed: Option<u64>,
    },
    /// A tmpfs is filled with the image's files at its target: the plan's root would not be
    /// empty.
    TmpfsCopyUp {
        /// Target.
        target: String,
    },
    /// A mount flag the plan asks for is missing, and no accepted substitute applies.
    MissingFlag {
        /// Target.
        target: String,
        /// The missing flag (`nosuid`, `nodev`, `noexec`).
        flag: &'static str,
    },
    /// The working directory differs.
    WorkingDir {
        /// Planned.
        planned: String,
        /// Observed (`None`: not reported).
        observed: Option<String>,
    },
    /// The container is privileged.
    Privileged,
    /// The plan's nosuid relies on `no-new-privileges`, which is not set.
    NoNewPrivileges,
    /// Capabilities outside the launch spec's `cap_add` were added.
    CapAdd(Vec<String>),
    /// Not every capability was dropped: the engine's defaults (`MKNOD`, `FSETID`,
    /// `SETFCAP`...) may stay.
    CapDrop {
        /// What the engine reports as dropped.
        dropped: Vec<String>,
        /// The capabilities kept outside the spec's `cap_add`, when the engine reports the
        /// bounding set (empty otherwise).
        kept: Vec<String>,
    },
    /// Devices were added or device cgroup rules widened.
    Devices(Vec<String>),
    /// The container shares a host or container namespace.
    HostNamespace {
        /// Which namespace.
        kind: &'static str,
        /// Its mode.
        value: String,
    },
    /// The container takes volumes from other containers.
    VolumesFrom(Vec<String>),
    /// A security option disables confinement.
    SecurityOpt(String),
    /// The container runs another image than the one whose entrypoint and command its
    /// command line was built from (the gate's command line names them): the image's name
    /// was moved to another image between the image's inspect and the create.
    Image {
        /// The id of the image the command line was built from.
        built_for: String,
        /// The id of the image the container runs (`None`: not reported).
        observed: Option<String>,
    },
}

mount_plan::rules!(Difference, "audit", {
    MissingMount => "missing-mount",
    UnplannedMount => "unplanned-mount",
    Source => "source",
    ReadOnly => "read-only",
    Propagation => "propagation",
    Recursive => "recursive",
    TmpfsMode => "tmpfs-mode",
    TmpfsSize => "tmpfs-size",
    TmpfsCopyUp => "tmpfs-copy-up",
    MissingFlag => "missing-flag",
    WorkingDir => "working-dir",
    Privileged => "privileged",
    NoNewPrivileges => "no-new-privileges",
    CapAdd => "cap-add",
    CapDrop => "cap-drop",
    Devices => "devices",
    HostNamespace => "host-namespace",
    VolumesFrom => "volumes-from",
    SecurityOpt => "security-opt",
    Image => "image-moved",
});

fn rw(read_only: bool) -> &'static str {
    if read_only {
        "read-only"
    } else {
        "read-write"
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.prefix())?;
        match self {
            Difference::MissingMount { target, kind } => {
                write!(f, "planned {kind} mount at {target:?} is missing")
            }
            Difference::UnplannedMount {
                target,
                kind,
                source,
            } => match source {
                Some(s) => write!(f, "unplanned {kind} mount of {s:?} at {target:?}"),
                None => write!(f, "unplanned {kind} mount at {target:?}"),
            },
            Difference::Source {
                target,
                planned,
                observed,
            } => write!(
                f,
                "mount at {target:?} has source {observed:?}, planned {planned:?}"
            ),
            Difference::ReadOnly {
                target,
                planned,
                observed,
            } => write!(
                f,
                "mount at {target:?} is {}, planned {}",
                rw(*observed),
                rw(*planned)
            ),
            Difference::Propagation { target, observed } => write!(
                f,
                "bind at {target:?} has propagation {observed:?}, planned \"private\""
            ),
            Difference::Recursive { target } => write!(
                f,
                "bind at {target:?} is not known to be non-recursive: host mounts below its source would show"
            ),
            Difference::TmpfsMode {
                target,
                planned,
                observed,
            } => write!(
                f,
                "tmpfs at {target:?} has mode {}, planned {planned:04o}",
                observed.map_or_else(|| "unknown".to_owned(), |m| format!("{m:04o}"))
            ),
            Difference::TmpfsSize {
                target,
                planned,
                observed,
            } => write!(
                f,
                "tmpfs at {target:?} has size cap {observed:?}, planned {planned}"
            ),
            Difference::TmpfsCopyUp { target } => write!(
                f,
                "tmpfs at {target:?} copies the image's files up (\"tmpcopyup\"); the plan mounts it empty"
            ),
            Difference::MissingFlag { target, flag } => {
                write!(f, "mount at {target:?} lacks {flag:?}")
            }
            Difference::WorkingDir { planned, observed } => write!(
                f,
                "working directory is {observed:?}, planned {planned:?}"
            ),
            Difference::Privileged => f.write_str("the container is privileged"),
            Difference::NoNewPrivileges => f.write_str(
                "\"no-new-privileges\" is not set, and the engine cannot mount binds nosuid",
            ),
            Difference::CapAdd(caps) => write!(
                f,
                "capabilities added outside the launch spec's cap_add: {caps:?}"
            ),
            Difference::CapDrop { dropped, kept } if kept.is_empty() => write!(
                f,
                "capabilities dropped are {dropped:?}, not \"ALL\": the engine's defaults (MKNOD, FSETID, SETFCAP...) may stay"
            ),
            Difference::CapDrop { kept, .. } => write!(
                f,
                "capabilities kept outside the launch spec's cap_add: {kept:?} (all must be dropped)"
            ),
            Difference::Devices(devs) => write!(f, "devices added: {devs:?}"),
            Difference::HostNamespace { kind, value } => {
                write!(f, "{kind} namespace is {value:?}: shared with the host or another container")
            }
            Difference::VolumesFrom(v) => write!(f, "volumes taken from containers {v:?}"),
            Difference::SecurityOpt(o) => write!(f, "security option {o:?} disables confinement"),
            Difference::Image { built_for, observed } => write!(
                f,
                "the command line was built from image {built_for:?}, but the container runs {} (its name was moved to another image meanwhile)",
                observed.as_deref().map_or_else(|| "an image the engine does not report".to_owned(), |o| format!("{o:?}"))
            ),
        }
    }
}

fn shares_namespace(mode: &str) -> bool {
    mode == "host" || mode.starts_with("container:") || mode.starts_with("ns:")
}

/// Whether a reported capability name is one of `granted` (`NAME` or `CAP_NAME`, any case).
fn is_granted(name: &str, granted: &BTreeSet<Capability>) -> bool {
    name.parse::<Capability>()
        .is_ok_and(|c| granted.contains(&c))
}

/// Compare what an engine reports about a container with the plan.
///
/// `accepted` lists protections the caller accepted as missing on this engine (a planned
/// flag that the engine cannot report and has no substitute for is otherwise a
/// difference). `granted` is the launch spec's `cap_add`: the container must drop `ALL`
/// (or, where the engine reports its bounding set, keep nothing else) and add nothing else.
/// Pure: unit-tested without an engine.
pub fn audit(
    plan: &MountPlan,
    observed: &ObservedContainer,
    accepted: &BTreeSet<Protection>,
    granted: &BTreeSet<Capability>,
) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut seen_binds = vec![false; observed.binds.len()];
    let mut seen_tmpfs = vec![false; observed.tmpfs.as_ref().map_or(0, Vec::len)];

    for mount in plan.mounts() {
        let target = mount.target().as_str();
        match mount {
            Mount::Tmpfs(t) => {
                let Some(list) = &observed.tmpfs else {
                    continue;
                };
                let Some(i) = list
                    .iter()
                    .enumerate()
                    .position(|(i, o)| !seen_tmpfs[i] && o.target == target)
                else {
                    out.push(Difference::MissingMount {
                        target: target.into(),
                        kind: "tmpfs",
                    });
                    continue;
                };
                seen_tmpfs[i] = true;
                let o = &list[i];
                if let Some(ro) = o.read_only {
                    if ro != t.read_only() {
                        out.push(Difference::ReadOnly {
                            target: target.into(),
                            planned: t.read_only(),
                            observed: ro,
                        });
                    }
                } else if t.read_only() {
                    out.push(Difference::ReadOnly {
                        target: target.into(),
                        planned: true,
                        observed: false,
                    });
                }
                if o.mode != Some(t.mode()) {
                    out.push(Difference::TmpfsMode {
                        target: target.into(),
                        planned: t.mode(),
                        observed: o.mode,
                    });
                }
                if o.size_bytes != Some(t.size_bytes()) {
                    out.push(Difference::TmpfsSize {
                        target: target.into(),
                        planned: t.size_bytes(),
                        observed: o.size_bytes,
                    });
                }
                if o.copies_up == Some(true) {
                    out.push(Difference::TmpfsCopyUp {
                        target: target.into(),
                    });
                }
                check_flags(&mut out, target, t.flags(), o.flags, accepted);
            }
            Mount::Bind(b) => {
                let Some(i) = observed
                    .binds
                    .iter()
                    .enumerate()
                    .position(|(i, o)| !seen_binds[i] && o.target == target)
                else {
                    out.push(Difference::MissingMount {
                        target: target.into(),
                        kind: "bind",
                    });
                    continue;
                };
                seen_binds[i] = true;
                let o = &observed.binds[i];
                if o.source != b.source().as_str() {
                    out.push(Difference::Source {
                        target: target.into(),
                        planned: b.source().as_str().into(),
                        observed: o.source.clone(),
                    });
                }
                if o.read_only != b.read_only() {
                    out.push(Difference::ReadOnly {
                        target: target.into(),
                        planned: b.read_only(),
                        observed: o.read_only,
                    });
                }
                if o.propagation.as_deref() != Some("private") {
                    out.push(Difference::Propagation {
                        target: target.into(),
                        observed: o.propagation.clone(),
                    });
                }
                if !b.recursive() && o.non_recursive != Some(true) {
                    out.push(Difference::Recursive {
                        target: target.into(),
                    });
                }
                check_flags(&mut out, target, b.flags(), o.flags, accepted);
            }
        }
    }

    for (i, o) in observed.binds.iter().enumerate() {
        // The gate, bound read-only from the node where an engine has no archive call (Swarm):
        // outside R, a single file, read-only; the gate checks everything else.
        let gate = o.target == crate::gate_protocol::GATE_PATH && o.read_only;
        if !seen_binds[i] && !gate {
            out.push(Difference::UnplannedMount {
                target: o.target.clone(),
                kind: "bind".into(),
                source: Some(o.source.clone()),
            });
        }
    }
    if let Some(list) = &observed.tmpfs {
        for (i, o) in list.iter().enumerate() {
            if !seen_tmpfs[i] {
                out.push(Difference::UnplannedMount {
                    target: o.target.clone(),
                    kind: "tmpfs".into(),
                    source: None,
                });
            }
        }
    }
    for o in &observed.other_mounts {
        out.push(Difference::UnplannedMount {
            target: o.target.clone(),
            kind: o.kind.clone(),
            source: o.source.clone(),
        });
    }

    if observed.working_dir.as_deref() != Some(plan.workdir().as_str()) {
        out.push(Difference::WorkingDir {
            planned: plan.workdir().as_str().into(),
            observed: observed.working_dir.clone(),
        });
    }
    if observed.privileged {
        out.push(Difference::Privileged);
    }
    // An engine that cannot set nosuid per bind (none of the binds reports flags) must set
    // no-new-privileges instead.
    // (Unless nosuid is accepted as missing: an engine that drops no-new-privileges, Swarm
    // before API 1.46, runs only a spec that accepts it.)
    let needs_nnp = plan.binds().any(|b| b.flags().nosuid)
        && observed.binds.iter().all(|b| b.flags.is_none())
        && !accepted.contains(&Protection::NoSuidOnBinds);
    if needs_nnp && !observed.no_new_privileges {
        out.push(Difference::NoNewPrivileges);
    }
    let added: Vec<String> = observed
        .cap_add
        .iter()
        .filter(|c| !is_granted(c, granted))
        .cloned()
        .collect();
    if !added.is_empty() {
        out.push(Difference::CapAdd(added));
    }
    match &observed.cap_bounding {
        Some(bounding) => {
            let kept: Vec<String> = bounding
                .iter()
                .filter(|c| !is_granted(c, granted))
                .cloned()
                .collect();
            if !kept.is_empty() {
                out.push(Difference::CapDrop {
                    dropped: observed.cap_drop.clone(),
                    kept,
                });
            }
        }
        None => {
            let all = |c: &String| {
                let c = c.to_ascii_uppercase();
                c == "ALL" || c == "CAP_ALL"
            };
            if !observed.cap_drop.iter().any(all) {
                out.push(Difference::CapDrop {
                    dropped: observed.cap_drop.clone(),
                    kept: Vec::new(),
                });
            }
        }
    }
    if !observed.devices.is_empty() {
        out.push(Difference::Devices(observed.devices.clone()));
    }
    let ns = &observed.namespaces;
    for (kind, value) in [
        ("network", &ns.network),
        ("pid", &ns.pid),
        ("ipc", &ns.ipc),
        ("uts", &ns.uts),
        ("user", &ns.userns),
    ] {
        if shares_namespace(value) {
            out.push(Difference::HostNamespace {
                kind,
                value: value.clone(),
            });
        }
    }
    if !observed.volumes_from.is_empty() {
        out.push(Difference::VolumesFrom(observed.volumes_from.clone()));
    }
    for opt in &observed.security_opt {
        let o = opt.replace(':', "=");
        if o.ends_with("=unconfined") || o == "label=disable" || o == "label=disabled" {
            out.push(Difference::SecurityOpt(opt.clone()));
        }
    }
    out
}

/// Check planned flags against reported ones. When the engine does not report per-mount
/// flags: nosuid is honoured by `no-new-privileges` (checked once, container-wide), nodev by
/// the device cgroup (checked through `privileged` and `devices`), noexec only if accepted.
fn check_flags(
    out: &mut Vec<Difference>,
    target: &str,
    planned: MountFlags,
    observed: Option<MountFlags>,
    accepted: &BTreeSet<Protection>,
) {
    match observed {
        Some(o) => {
            for (want, have, flag) in [
                (planned.nosuid, o.nosuid, "nosuid"),
                (planned.nodev, o.nodev, "nodev"),
                (planned.noexec, o.noexec, "noexec"),
            ] {
                if want && !have {
                    out.push(Difference::MissingFlag {
                        target: target.into(),
                        flag,
                    });
                }
            }
        }
        None => {
            if planned.noexec && !accepted.contains(&Protection::NoExecOnBinds) {
                out.push(Difference::MissingFlag {
                    target: target.into(),
                    flag: "noexec",
                });
            }
        }
    }
}

/// The gate's bind, for an engine that binds the gate from a known host file (`source`):
/// present at [`crate::gate_protocol::GATE_PATH`] and from exactly that file ([`audit`] already
/// requires it read-only). Pure.
pub fn audit_gate_bind(observed: &ObservedContainer, source: &str) -> Vec<Difference> {
    let target = crate::gate_protocol::GATE_PATH;
    match observed.binds.iter().find(|b| b.target == target) {
        None => vec![Difference::MissingMount {
            target: target.into(),
            kind: "bind",
        }],
        Some(b) if b.source != source => vec![Difference::Source {
            target: target.into(),
            planned: source.into(),
            observed: b.source.clone(),
        }],
        Some(_) => Vec::new(),
    }
}

/// The image check, for an engine that says which image a container's command line was built
/// from (`built_for`, an image id as its image inspect reports it): the container must run
/// exactly that image. Ids compare without Docker's `sha256:` prefix (Podman reports bare
/// hex). Pure.
pub fn audit_image(observed: &ObservedContainer, built_for: &str) -> Option<Difference> {
    let bare = |id: &str| {
        id.strip_prefix("sha256:")
            .unwrap_or(id)
            .to_ascii_lowercase()
    };
    match observed.image_id.as_deref() {
        Some(id) if bare(id) == bare(built_for) && !bare(id).is_empty() => None,
        observed => Some(Difference::Image {
            built_for: built_for.to_owned(),
            observed: observed.map(str::to_owned),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mount_plan::{HostPath, Layout};

    fn plan() -> MountPlan {
        let layout = Layout::default();
        layout
            .plan(
                &HostPath::parse("/srv/w").unwrap(),
                &layout.job("j1").unwrap(),
            )
            .unwrap()
    }

    /// What a faithful Docker container of `plan()` reports.
    fn conforming() -> ObservedContainer {
        let p = plan();
        ObservedContainer {
            working_dir: Some("/workspace/j1".into()),
            tmpfs: Some(vec![ObservedTmpfs {
                target: "/workspace".into(),
                read_only: Some(true),
                mode: Some(0o555),
                size_bytes: Some(1 << 20),
                flags: Some(MountFlags::HARDENED),
                copies_up: None,
            }]),
            binds: p
                .binds()
                .map(|b| ObservedBind {
                    source: b.source().as_str().into(),
                    target: b.target().as_str().into(),
                    read_only: b.read_only(),
                    propagation: Some("private".into()),
                    non_recursive: Some(true),
                    flags: None,
                })
                .collect(),
            no_new_privileges: true,
            cap_drop: vec!["ALL".into()],
            ..ObservedContainer::default()
        }
    }

    fn none() -> BTreeSet<Capability> {
        BTreeSet::new()
    }

    fn accept_noexec() -> BTreeSet<Protection> {
        BTreeSet::from([Protection::NoExecOnBinds])
    }

    fn rules(d: &[Difference]) -> Vec<&'static str> {
        d.iter().map(Difference::rule).collect()
    }

    #[test]
    fn conforming_container_passes() {
        assert_eq!(
            audit(&plan(), &conforming(), &accept_noexec(), &none()),
            vec![]
        );
    }

    #[test]
    fn noexec_without_acceptance_is_a_difference_per_read_only_bind() {
        let d = audit(&plan(), &conforming(), &BTreeSet::new(), &none());
        assert_eq!(rules(&d), vec!["missing-flag", "missing-flag"]);
        assert!(
            d[0].to_string().contains("\"/workspace/startup\""),
            "{}",
            d[0]
        );
    }

    #[test]
    fn no_new_privileges_is_not_asked_when_nosuid_is_accepted_missing() {
        // Swarm at API 1.41 drops NoNewPrivileges: a spec accepting nosuid runs without it.
        let mut o = conforming();
        o.no_new_privileges = false;
        let accepted = BTreeSet::from([Protection::NoExecOnBinds]);
        assert_eq!(
            rules(&audit(&plan(), &o, &accepted, &none())),
            vec!["no-new-privileges"]
        );
        let accepted = BTreeSet::from([Protection::NoExecOnBinds, Protection::NoSuidOnBinds]);
        assert!(audit(&plan(), &o, &accepted, &none()).is_empty());
    }

    #[test]
    fn reported_flags_are_compared() {
        let mut o = conforming();
        for b in &mut o.binds {
            b.flags = Some(MountFlags::NO_SUID_DEV);
        }
        o.no_new_privileges = false;
        let d = audit(&plan(), &o, &BTreeSet::new(), &none());
        assert_eq!(rules(&d), vec!["missing-flag", "missing-flag"]);
    }

    #[test]
    fn each_mutation_is_reported() {
        type Mutation = (&'static str, fn(&mut ObservedContainer));
        let cases: Vec<Mutation> = vec![
            ("read-only", |o| {
                o.tmpfs.as_mut().unwrap()[0].read_only = Some(false)
            }),
            ("tmpfs-mode", |o| {
                o.tmpfs.as_mut().unwrap()[0].mode = Some(0o1777)
            }),
            ("tmpfs-size", |o| {
                o.tmpfs.as_mut().unwrap()[0].size_bytes = None
            }),
            ("missing-mount", |o| o.tmpfs.as_mut().unwrap().clear()),
            ("read-only", |o| o.binds[0].read_only = false),
            ("propagation", |o| {
                o.binds[1].propagation = Some("rprivate".into())
            }),
            ("propagation", |o| o.binds[1].propagation = None),
            ("recursive", |o| o.binds[0].non_recursive = Some(false)),
            ("recursive", |o| o.binds[0].non_recursive = None),
            ("source", |o| o.binds[2].source = "/srv/w/other".into()),
            ("missing-mount", |o| {
                o.binds.remove(2);
            }),
            ("unplanned-mount", |o| {
                o.binds.push(ObservedBind {
                    source: "/srv/w".into(),
                    target: "/data".into(),
                    ..ObservedBind::default()
                })
            }),
            ("unplanned-mount", |o| {
                o.other_mounts.push(ObservedOtherMount {
                    kind: "volume".into(),
                    source: Some("v1".into()),
                    target: "/v".into(),
                })
            }),
            ("working-dir", |o| o.working_dir = Some("/workspace".into())),
            ("working-dir", |o| o.working_dir = None),
            ("privileged", |o| o.privileged = true),
            ("no-new-privileges", |o| o.no_new_privileges = false),
            ("cap-add", |o| o.cap_add = vec!["SYS_ADMIN".into()]),
            ("cap-add", |o| o.cap_add = vec!["CAP_CHOWN".into()]),
            ("cap-drop", |o| o.cap_drop.clear()),
            ("cap-drop", |o| o.cap_drop = vec!["CAP_MKNOD".into()]),
            ("cap-drop", |o| {
                o.cap_bounding = Some(vec!["CAP_MKNOD".into(), "CAP_CHOWN".into()])
            }),
            ("devices", |o| {
                o.devices = vec!["/dev/mem:/dev/mem:rwm".into()]
            }),
            ("host-namespace", |o| o.namespaces.network = "host".into()),
            ("host-namespace", |o| {
                o.namespaces.pid = "container:abc".into()
            }),
            ("host-namespace", |o| o.namespaces.ipc = "host".into()),
            ("host-namespace", |o| o.namespaces.uts = "host".into()),
            ("host-namespace", |o| o.namespaces.userns = "host".into()),
            ("volumes-from", |o| o.volumes_from = vec!["other".into()]),
            ("security-opt", |o| {
                o.security_opt = vec!["seccomp=unconfined".into()]
            }),
            ("security-opt", |o| {
                o.security_opt = vec!["apparmor:unconfined".into()]
            }),
        ];
        for (rule, mutate) in cases {
            let mut o = conforming();
            mutate(&mut o);
            let d = audit(&plan(), &o, &accept_noexec(), &none());
            assert_eq!(rules(&d), vec![rule], "{d:?}");
            assert!(d[0]
                .to_string()
                .starts_with(&format!("audit rule `{rule}`")));
        }
    }

    #[test]
    fn capabilities_are_judged_against_the_spec() {
        let granted = BTreeSet::from([Capability::Chown, Capability::NetRaw]);
        let audit_caps = |o: &ObservedContainer| {
            audit(&plan(), o, &accept_noexec(), &granted)
                .into_iter()
                .map(|d| (d.rule(), d.to_string()))
                .collect::<Vec<_>>()
        };
        // Docker and Swarm report what was asked: ALL dropped, the granted ones added, in
        // either spelling.
        let mut o = conforming();
        o.cap_drop = vec!["all".into()];
        o.cap_add = vec!["CAP_CHOWN".into(), "net_raw".into()];
        assert_eq!(audit_caps(&o), vec![]);
        // Podman reports the bounding set: the granted ones may stay, nothing else.
        o.cap_drop = vec!["CAP_DAC_OVERRIDE".into(), "CAP_MKNOD".into()];
        o.cap_bounding = Some(vec!["CAP_CHOWN".into(), "CAP_NET_RAW".into()]);
        assert_eq!(audit_caps(&o), vec![]);
        o.cap_bounding = Some(vec!["CAP_CHOWN".into(), "CAP_MKNOD".into()]);
        let d = audit_caps(&o);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].0, "cap-drop");
        assert!(d[0].1.contains("[\"CAP_MKNOD\"]"), "{}", d[0].1);
        // One added outside the policy is named, the granted one is not.
        let mut o = conforming();
        o.cap_add = vec!["CHOWN".into(), "MKNOD".into(), "BOGUS".into()];
        let d = audit_caps(&o);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].0, "cap-add");
        assert!(d[0].1.ends_with("[\"MKNOD\", \"BOGUS\"]"), "{}", d[0].1);
        // Nothing dropped: the engine's defaults stay.
        let mut o = conforming();
        o.cap_drop.clear();
        let d = audit_caps(&o);
        assert_eq!(d[0].0, "cap-drop");
        assert!(d[0].1.contains("MKNOD"), "{}", d[0].1);
    }

    #[test]
    fn unreported_tmpfs_is_not_a_difference() {
        let mut o = conforming();
        o.tmpfs = None;
        assert_eq!(audit(&plan(), &o, &accept_noexec(), &none()), vec![]);
    }

    #[test]
    fn a_wider_bind_is_reported() {
        // `docker run -v /srv/w:/workspace ...`: the whole workspace instead of the plan.
        let o = ObservedContainer {
            working_dir: Some("/workspace/j1".into()),
            tmpfs: Some(vec![]),
            binds: vec![ObservedBind {
                source: "/srv/w".into(),
                target: "/workspace".into(),
                read_only: false,
                propagation: Some("rprivate".into()),
                non_recursive: Some(false),
                flags: None,
            }],
            ..ObservedContainer::default()
        };
        let d = audit(&plan(), &o, &BTreeSet::new(), &none());
        let r = rules(&d);
        assert!(r.contains(&"unplanned-mount"), "{r:?}");
        assert_eq!(
            r.iter().filter(|x| **x == "missing-mount").count(),
            4,
            "{r:?}"
        );
    }

    #[test]
    fn the_gate_is_bound_from_its_host_copy_and_nothing_else() {
        let gate = |source: &str| ObservedBind {
            source: source.into(),
            target: crate::gate_protocol::GATE_PATH.into(),
            read_only: true,
            ..ObservedBind::default()
        };
        let mut o = ObservedContainer::default();
        let rules = |o: &ObservedContainer| {
            audit_gate_bind(o, "/var/lib/mount-plan/gate/gate-ab")
                .iter()
                .map(Difference::rule)
                .collect::<Vec<_>>()
        };
        assert_eq!(rules(&o), ["missing-mount"]);
        o.binds.push(gate("/var/lib/mount-plan/gate/gate-ab"));
        assert!(rules(&o).is_empty());
        o.binds[0] = gate("/home/u/gate");
        let d = audit_gate_bind(&o, "/var/lib/mount-plan/gate/gate-ab");
        assert_eq!(d.len(), 1);
        assert!(d[0].to_string().contains("/home/u/gate"), "{}", d[0]);
    }

    #[test]
    fn the_container_runs_the_image_its_command_line_was_built_from() {
        let id = "a".repeat(64);
        let with = |image_id: Option<&str>| ObservedContainer {
            image_id: image_id.map(str::to_owned),
            ..ObservedContainer::default()
        };
        // Docker reports `sha256:HEX`, Podman bare hex, either case: the same image.
        for same in [format!("sha256:{id}"), id.clone(), id.to_uppercase()] {
            assert_eq!(audit_image(&with(Some(&same)), &id), None, "{same}");
            assert_eq!(audit_image(&with(Some(&id)), &same), None, "{same}");
        }
        let other = format!("sha256:{}", "b".repeat(64));
        let d = audit_image(&with(Some(&other)), &id).expect("another image");
        assert_eq!(d.rule(), "image-moved");
        let told = d.to_string();
        assert!(told.contains(&id) && told.contains(&other), "{told}");
        // Not reported, or reported empty: not the image the command line was built from.
        let unknown = audit_image(&with(None), &id).expect("not reported");
        assert!(unknown.to_string().contains("does not report"), "{unknown}");
        assert!(audit_image(&with(Some("sha256:")), "sha256:").is_some());
        assert!(audit_image(&with(Some(&id)), "").is_some());
    }
}
