//! The pure reading of what a Podman service reports about a container. No I/O:
//! unit-tested against inspect answers recorded from a real service.

use mount_plan::MountFlags;
use mount_plan_launch::{
    ExitStatus, ObservedBind, ObservedContainer, ObservedNamespaces, ObservedOtherMount,
    ObservedTmpfs,
};
use podman_api::models::InspectContainerData;

fn flags_of<'a>(options: impl IntoIterator<Item = &'a str> + Clone) -> MountFlags {
    let has = |w: &str| options.clone().into_iter().any(|o| o == w);
    MountFlags {
        nosuid: has("nosuid"),
        nodev: has("nodev"),
        noexec: has("noexec"),
    }
}

/// Parse a tmpfs size option (`1048576`, `64k`, `1m`, `2g`).
fn parse_size(value: &str) -> Option<u64> {
    let (digits, mult) = match value.as_bytes().last()? {
        b'k' | b'K' => (&value[..value.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&value[..value.len() - 1], 1 << 20),
        b'g' | b'G' => (&value[..value.len() - 1], 1 << 30),
        _ => (value, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// One tmpfs as libpod reports it in `HostConfig.Tmpfs` (target, comma-separated options).
pub fn observed_tmpfs(target: &str, options: &str) -> ObservedTmpfs {
    let words: Vec<&str> = options.split(',').filter(|w| !w.is_empty()).collect();
    let value = |key: &str| {
        words
            .iter()
            .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    ObservedTmpfs {
        target: target.to_owned(),
        read_only: Some(words.contains(&"ro")),
        mode: value("mode").and_then(|m| u32::from_str_radix(m, 8).ok()),
        size_bytes: value("size").and_then(parse_size),
        flags: Some(flags_of(words.iter().copied())),
        // libpod reports `tmpcopyup` when the image's files were copied into the tmpfs.
        copies_up: Some(words.contains(&"tmpcopyup")),
    }
}

/// What the service reports about a container, in engine-neutral form.
///
/// libpod lists binds (and volumes) under `Mounts`, with `RW`, `Propagation` and the mount
/// options (`bind` or `rbind`, `nosuid`, `nodev`, `noexec`); it lists tmpfs mounts, with
/// their options, under `HostConfig.Tmpfs` only. Both come from the OCI spec the service
/// generated for the runtime.
pub fn observe(data: &InspectContainerData) -> ObservedContainer {
    let config = data.config.as_ref();
    let host = data.host_config.as_ref();
    let mut binds = Vec::new();
    let mut other_mounts = Vec::new();
    for m in data.mounts.iter().flatten() {
        let kind = m.type_.clone().unwrap_or_default();
        let target = m.destination.clone().unwrap_or_default();
        if kind == "bind" {
            let opts: Vec<&str> = m.options.iter().flatten().map(String::as_str).collect();
            let non_recursive = if opts.contains(&"rbind") {
                Some(false)
            } else if opts.contains(&"bind") {
                Some(true)
            } else {
                None
            };
            binds.push(ObservedBind {
                source: m.source.clone().unwrap_or_default(),
                target,
                read_only: !m.rw.unwrap_or(true),
                propagation: m.propagation.clone().filter(|p| !p.is_empty()),
                non_recursive,
                flags: Some(flags_of(opts.iter().copied())),
            });
        } else {
            other_mounts.push(ObservedOtherMount {
                kind,
                source: m
                    .name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .or(m.source.clone()),
                target,
            });
        }
    }
    let mut tmpfs: Vec<ObservedTmpfs> = host
        .and_then(|h| h.tmpfs.as_ref())
        .map(|t| t.iter().map(|(k, v)| observed_tmpfs(k, v)).collect())
        .unwrap_or_default();
    tmpfs.sort_by(|a, b| a.target.cmp(&b.target));
    let security_opt: Vec<String> = host
        .and_then(|h| h.security_opt.clone())
        .unwrap_or_default();
    let devices = host
        .and_then(|h| h.devices.as_ref())
        .map(|d| {
            d.iter()
                .map(|d| {
                    format!(
                        "{}:{}:{}",
                        d.path_on_host.as_deref().unwrap_or(""),
                        d.path_in_container.as_deref().unwrap_or(""),
                        d.cgroup_permissions.as_deref().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let ns = |f: fn(&podman_api::models::InspectContainerHostConfig) -> Option<&String>| {
        host.and_then(f).cloned().unwrap_or_default()
    };
    ObservedContainer {
        id: data.id.clone().unwrap_or_default(),
        name: data.name.clone().unwrap_or_default(),
        image: config
            .and_then(|c| c.image.clone())
            .or_else(|| data.image_name.clone())
            .unwrap_or_default(),
        image_id: data.image.clone(),
        labels: config
            .and_then(|c| c.labels.as_ref())
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        state: data.state.as_ref().and_then(|s| s.status.clone()),
        exit_code: exit_status(data).map(|s| s.code),
        first_pid: data
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0),
        working_dir: config.and_then(|c| c.working_dir.clone()),
        user: config
            .and_then(|c| c.user.clone())
            .filter(|u| !u.is_empty()),
        binds,
        tmpfs: Some(tmpfs),
        other_mounts,
        volumes_from: host
            .and_then(|h| h.volumes_from.clone())
            .unwrap_or_default(),
        privileged: host.and_then(|h| h.privileged).unwrap_or(false),
        no_new_privileges: security_opt.iter().any(|o| o == "no-new-privileges"),
        cap_add: host.and_then(|h| h.cap_add.clone()).unwrap_or_default(),
        // libpod lists the dropped defaults one by one (never "ALL"); the bounding set it
        // gave the runtime is what the container keeps, left out of the answer when empty.
        cap_drop: host.and_then(|h| h.cap_drop.clone()).unwrap_or_default(),
        cap_bounding: Some(data.bounding_caps.clone().unwrap_or_default()),
        devices,
        security_opt,
        namespaces: ObservedNamespaces {
            network: ns(|h| h.network_mode.as_ref()),
            pid: ns(|h| h.pid_mode.as_ref()),
            ipc: ns(|h| h.ipc_mode.as_ref()),
            uts: ns(|h| h.uts_mode.as_ref()),
            userns: ns(|h| h.userns_mode.as_ref()),
        },
    }
}

/// The exit status of a stopped container, from its inspect data (`None` while it runs:
/// libpod reports 0 then).
pub fn exit_status(data: &InspectContainerData) -> Option<ExitStatus> {
    let state = data.state.as_ref()?;
    if !mount_plan_launch::is_stopped(state.status.as_deref()) {
        return None;
    }
    state.exit_code.map(|code| ExitStatus { code: code.into() })
}

/// The targets of the tmpfs mounts that copy the image's files up.
#[cfg(test)]
fn copy_up_targets(o: &ObservedContainer) -> Vec<String> {
    o.tmpfs
        .iter()
        .flatten()
        .filter(|t| t.copies_up == Some(true))
        .map(|t| t.target.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mount_plan::{HostPath, LayoutSpec, MountPlan};
    use mount_plan_launch::audit;
    use std::collections::BTreeSet;

    fn fixture(name: &str) -> InspectContainerData {
        let text = match name {
            "rootful" => include_str!("../tests/fixtures/inspect-rootful-4.3.1.json"),
            "rootless" => include_str!("../tests/fixtures/inspect-rootless-4.3.1.json"),
            _ => include_str!("../tests/fixtures/inspect-loose-4.3.1.json"),
        };
        serde_json::from_str(text).unwrap()
    }

    /// The plan the fixtures were created from (by hand, with curl, on Podman 4.3.1): shared
    /// `startup` only, job `job1`, workspace `/srv/w`.
    fn fixture_plan() -> MountPlan {
        let layout = LayoutSpec {
            shared: Some(vec!["startup".into()]),
            ..LayoutSpec::default()
        }
        .build()
        .unwrap();
        layout
            .plan(
                &HostPath::parse("/srv/w").unwrap(),
                &layout.job("job1").unwrap(),
            )
            .unwrap()
    }

    #[test]
    fn real_inspect_of_a_planned_container_passes_the_audit() {
        for name in ["rootful", "rootless"] {
            let data = fixture(name);
            let o = observe(&data);
            assert_eq!(o.tmpfs.as_ref().unwrap().len(), 1, "{name}");
            let t = &o.tmpfs.as_ref().unwrap()[0];
            assert_eq!(
                (t.read_only, t.mode, t.size_bytes, t.flags),
                (
                    Some(true),
                    Some(0o555),
                    Some(1 << 20),
                    Some(MountFlags::HARDENED)
                ),
                "{name}"
            );
            assert_eq!(o.binds.len(), 2);
            assert_eq!(o.binds[0].flags, Some(MountFlags::HARDENED));
            assert_eq!(o.binds[1].flags, Some(MountFlags::NO_SUID_DEV));
            assert!(o.binds.iter().all(|b| b.non_recursive == Some(true)));
            assert_eq!(o.namespaces.network, "none");
            assert_eq!(o.state.as_deref(), Some("exited"));
            assert!(copy_up_targets(&o).is_empty());
            assert_eq!(exit_status(&data), Some(ExitStatus { code: 0 }));
            // Recorded with cap_drop ["ALL"]: libpod lists the dropped defaults and leaves
            // the empty bounding set out.
            assert_eq!(o.cap_bounding, Some(vec![]), "{name}");
            assert!(o.cap_drop.iter().any(|c| c == "CAP_MKNOD"), "{name}");
            let d = audit(&fixture_plan(), &o, &BTreeSet::new(), &BTreeSet::new());
            assert!(d.is_empty(), "{name}: {d:?}");
        }
        assert_eq!(
            observe(&fixture("rootless")).user.as_deref(),
            Some("1001:1001")
        );
        assert_eq!(observe(&fixture("rootful")).user, None);
    }

    #[test]
    fn real_inspect_of_a_loose_container_fails_the_audit() {
        // `podman create -v /srv/w/startup:/data --tmpfs /t --mount type=tmpfs,destination=/u`
        let data = fixture("loose");
        let o = observe(&data);
        assert_eq!(o.binds[0].non_recursive, Some(false));
        assert_eq!(o.binds[0].propagation.as_deref(), Some("rprivate"));
        assert_eq!(copy_up_targets(&o), vec!["/t".to_owned(), "/u".to_owned()]);
        let d = audit(&fixture_plan(), &o, &BTreeSet::new(), &BTreeSet::new());
        let rules: BTreeSet<&str> = d.iter().map(|d| d.rule()).collect();
        for r in [
            "missing-mount",
            "unplanned-mount",
            "working-dir",
            "cap-drop",
        ] {
            assert!(rules.contains(r), "{r}: {d:?}");
        }
    }

    #[test]
    fn tmpfs_options() {
        let t = observed_tmpfs(
            "/t",
            "rw,rprivate,nosuid,nodev,tmpcopyup,size=64m,mode=1777",
        );
        assert_eq!(t.read_only, Some(false));
        assert_eq!(t.mode, Some(0o1777));
        assert_eq!(t.size_bytes, Some(64 << 20));
        assert_eq!(t.flags, Some(MountFlags::NO_SUID_DEV));
        assert_eq!(t.copies_up, Some(true));
        assert_eq!(
            observed_tmpfs("/t", "ro,notmpcopyup").copies_up,
            Some(false)
        );
        let t = observed_tmpfs("/t", "rw");
        assert_eq!((t.mode, t.size_bytes), (None, None));
    }
}
