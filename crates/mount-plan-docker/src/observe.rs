//! Pure mapping of Docker's inspect answer to the engine-neutral [`ObservedContainer`].

use bollard::models::{ContainerInspectResponse, MountBindOptionsPropagationEnum, MountType};
use mount_plan::MountFlags;
use mount_plan_launch::{
    ObservedBind, ObservedContainer, ObservedNamespaces, ObservedOtherMount, ObservedTmpfs,
};

/// A bind propagation as Docker's inspect words it (`private`, `rslave`...).
pub fn propagation_name(p: &MountBindOptionsPropagationEnum) -> &'static str {
    match p {
        MountBindOptionsPropagationEnum::EMPTY => "",
        MountBindOptionsPropagationEnum::PRIVATE => "private",
        MountBindOptionsPropagationEnum::RPRIVATE => "rprivate",
        MountBindOptionsPropagationEnum::SHARED => "shared",
        MountBindOptionsPropagationEnum::RSHARED => "rshared",
        MountBindOptionsPropagationEnum::SLAVE => "slave",
        MountBindOptionsPropagationEnum::RSLAVE => "rslave",
    }
}

/// Parse a `--tmpfs` option size (`65536`, `64k`, `1m`, `1g`).
fn parse_size(v: &str) -> Option<u64> {
    let (num, mult) = match v.as_bytes().last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&v[..v.len() - 1], 1 << 20),
        b'g' | b'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Map Docker's inspect answer. Sources:
/// - `Mounts` (what the daemon set up): kind, source, target, RW, propagation;
/// - `HostConfig.Mounts` (what was asked): `NonRecursive`, tmpfs mode and size;
/// - `HostConfig.Tmpfs` (`--tmpfs`): listed as tmpfs mounts with their options;
/// - the rest of `HostConfig` and `Config` for privileges, namespaces and the working dir.
///
/// Docker mounts every tmpfs nosuid,nodev,noexec, so tmpfs flags are reported as such; bind
/// flags are `None` (the Engine API cannot set or report them).
pub fn observe(c: &ContainerInspectResponse) -> ObservedContainer {
    let hc = c.host_config.clone().unwrap_or_default();
    let cfg = c.config.clone().unwrap_or_default();
    let requested = hc.mounts.clone().unwrap_or_default();
    let requested_for = |target: &str, kind: MountType| {
        requested
            .iter()
            .find(|m| m.target.as_deref() == Some(target) && m.typ == Some(kind))
    };

    let mut binds = Vec::new();
    let mut tmpfs = Vec::new();
    let mut other_mounts = Vec::new();
    for mp in c.mounts.clone().unwrap_or_default() {
        let target = mp.destination.clone().unwrap_or_default();
        let read_only = !mp.rw.unwrap_or(true);
        match mp.typ.as_deref() {
            Some("bind") => {
                let req = requested_for(&target, MountType::BIND);
                let bind_opts = req.and_then(|m| m.bind_options.as_ref());
                let propagation = mp
                    .propagation
                    .clone()
                    .filter(|p| !p.is_empty())
                    .or_else(|| {
                        bind_opts
                            .and_then(|b| b.propagation.as_ref())
                            .map(|p| propagation_name(p).to_owned())
                    });
                binds.push(ObservedBind {
                    source: mp.source.clone().unwrap_or_default(),
                    target,
                    read_only,
                    propagation,
                    non_recursive: Some(bind_opts.and_then(|b| b.non_recursive).unwrap_or(false)),
                    flags: None,
                });
            }
            Some("tmpfs") => {
                let opts = requested_for(&target, MountType::TMPFS)
                    .and_then(|m| m.tmpfs_options.clone())
                    .unwrap_or_default();
                tmpfs.push(ObservedTmpfs {
                    target,
                    read_only: Some(read_only),
                    mode: opts.mode.and_then(|m| u32::try_from(m).ok()),
                    size_bytes: opts
                        .size_bytes
                        .and_then(|s| u64::try_from(s).ok())
                        .filter(|s| *s > 0),
                    flags: Some(MountFlags::HARDENED),
                    // Docker never copies an image's files into a tmpfs.
                    copies_up: Some(false),
                });
            }
            other => other_mounts.push(ObservedOtherMount {
                kind: other.unwrap_or("unknown").to_owned(),
                source: mp.name.clone().or_else(|| mp.source.clone()),
                target,
            }),
        }
    }
    // `--tmpfs` entries (HostConfig.Tmpfs) are not listed under Mounts.
    let mut legacy: Vec<_> = hc.tmpfs.clone().unwrap_or_default().into_iter().collect();
    legacy.sort();
    for (target, options) in legacy {
        if tmpfs.iter().any(|t| t.target == target) {
            continue;
        }
        let mut t = ObservedTmpfs {
            target,
            read_only: Some(false),
            mode: None,
            size_bytes: None,
            flags: Some(MountFlags {
                nosuid: false,
                nodev: false,
                noexec: false,
            }),
            copies_up: Some(false),
        };
        let mut flags = MountFlags {
            nosuid: false,
            nodev: false,
            noexec: false,
        };
        for opt in options.split(',') {
            match opt.split_once('=') {
                Some(("mode", v)) => t.mode = u32::from_str_radix(v, 8).ok(),
                Some(("size", v)) => t.size_bytes = parse_size(v),
                _ => match opt {
                    "ro" => t.read_only = Some(true),
                    "nosuid" => flags.nosuid = true,
                    "nodev" => flags.nodev = true,
                    "noexec" => flags.noexec = true,
                    _ => {}
                },
            }
        }
        // Docker adds nosuid,nodev,noexec to --tmpfs unless exec/suid/dev are given.
        if !options.split(',').any(|o| o == "suid") {
            flags.nosuid = true;
        }
        if !options.split(',').any(|o| o == "dev") {
            flags.nodev = true;
        }
        if !options.split(',').any(|o| o == "exec") {
            flags.noexec = true;
        }
        t.flags = Some(flags);
        tmpfs.push(t);
    }

    let security_opt = hc.security_opt.clone().unwrap_or_default();
    let no_new_privileges = security_opt.iter().any(|o| {
        let o = o.replace(':', "=");
        o == "no-new-privileges" || o == "no-new-privileges=true"
    });
    let mut devices: Vec<String> = hc
        .devices
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|d| {
            format!(
                "{}:{}:{}",
                d.path_on_host.unwrap_or_default(),
                d.path_in_container.unwrap_or_default(),
                d.cgroup_permissions.unwrap_or_default()
            )
        })
        .collect();
    devices.extend(
        hc.device_cgroup_rules
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|r| format!("cgroup rule {r}")),
    );

    ObservedContainer {
        id: c.id.clone().unwrap_or_default(),
        name: c
            .name
            .clone()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: cfg.image.clone().unwrap_or_default(),
        image_id: c.image.clone(),
        labels: cfg.labels.clone().unwrap_or_default().into_iter().collect(),
        state: c
            .state
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .map(|s| s.to_string()),
        first_pid: c
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0),
        exit_code: c
            .state
            .as_ref()
            .filter(|s| {
                matches!(
                    s.status,
                    Some(
                        bollard::models::ContainerStateStatusEnum::EXITED
                            | bollard::models::ContainerStateStatusEnum::DEAD
                    )
                )
            })
            .and_then(|s| s.exit_code),
        working_dir: cfg.working_dir.clone().filter(|w| !w.is_empty()),
        user: cfg.user.clone().filter(|u| !u.is_empty()),
        binds,
        tmpfs: Some(tmpfs),
        other_mounts,
        volumes_from: hc.volumes_from.clone().unwrap_or_default(),
        privileged: hc.privileged.unwrap_or(false),
        no_new_privileges,
        cap_add: hc.cap_add.clone().unwrap_or_default(),
        cap_drop: hc.cap_drop.clone().unwrap_or_default(),
        // Docker reports what was asked, not the bounding set it computed.
        cap_bounding: None,
        devices,
        security_opt,
        namespaces: ObservedNamespaces {
            network: hc.network_mode.clone().unwrap_or_default(),
            pid: hc.pid_mode.clone().unwrap_or_default(),
            ipc: hc.ipc_mode.clone().unwrap_or_default(),
            uts: hc.uts_mode.clone().unwrap_or_default(),
            userns: hc.userns_mode.clone().unwrap_or_default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn inspect_json_of_a_hand_started_container() {
        // Shape of `docker inspect` for `docker run -v /srv/w:/workspace --tmpfs /t:size=1m
        // --privileged --network host -w /workspace ...` on Docker 20.10.
        let json = serde_json::json!({
            "Id": "abc",
            "Name": "/hand",
            "State": {"Status": "running"},
            "Mounts": [
                {"Type": "bind", "Source": "/srv/w", "Destination": "/workspace",
                 "Mode": "", "RW": true, "Propagation": "rprivate"}
            ],
            "HostConfig": {
                "Binds": ["/srv/w:/workspace"],
                "Tmpfs": {"/t": "size=1m"},
                "Privileged": true,
                "NetworkMode": "host",
                "CapAdd": ["SYS_ADMIN"],
                "CapDrop": ["MKNOD"],
                "Devices": [{"PathOnHost": "/dev/mem", "PathInContainer": "/dev/mem",
                             "CgroupPermissions": "rwm"}]
            },
            "Config": {"WorkingDir": "/workspace", "Labels": {"a": "b"}, "Image": "img"}
        });
        let c: ContainerInspectResponse = serde_json::from_value(json).unwrap();
        let o = observe(&c);
        assert_eq!(o.name, "hand");
        assert_eq!(o.state.as_deref(), Some("running"));
        assert_eq!(o.binds.len(), 1);
        let b = &o.binds[0];
        assert_eq!(
            (b.source.as_str(), b.target.as_str()),
            ("/srv/w", "/workspace")
        );
        assert!(!b.read_only);
        assert_eq!(b.propagation.as_deref(), Some("rprivate"));
        assert_eq!(b.non_recursive, Some(false));
        let t = &o.tmpfs.as_ref().unwrap()[0];
        assert_eq!((t.target.as_str(), t.size_bytes), ("/t", Some(1 << 20)));
        assert!(o.privileged && !o.no_new_privileges);
        assert_eq!(o.namespaces.network, "host");
        assert_eq!(o.cap_add, vec!["SYS_ADMIN"]);
        assert_eq!(o.cap_drop, vec!["MKNOD"]);
        assert_eq!(o.cap_bounding, None);
        assert_eq!(o.devices, vec!["/dev/mem:/dev/mem:rwm"]);
        assert_eq!(o.working_dir.as_deref(), Some("/workspace"));
    }
}
