//! Pure translation of a plan and a launch spec into a Swarm service spec: a one-shot service
//! (`replicated`, restart condition none) created with no replica (nothing runs), and the
//! update that starts its one replica.
//!
//! Why not `replicated-job`: on Docker 20.10 removing a job service neither stops its running
//! task nor removes its tasks and containers (moby/moby#44312, fixed by moby/swarmkit#3112 in
//! 2023), so a cancelled job would keep running and every job would leave an exited container
//! on its node. A replicated service with restart condition none runs its task once, and its
//! removal stops and removes it (measured on 20.10).

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    HealthConfig, Limit, Mount, MountType, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecPrivileges,
    TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use mount_plan::MountPlan;
use mount_plan_docker::{ApiVersion, NODEV_SUBSTITUTE};

/// How R's tmpfs differs from the plan on a worker: the manager cannot see the worker's
/// runtime, so the drift of runc before 1.1.8 is assumed.
const ROOT_MODE_NOTE: &str = "the size is as planned, but R's mode becomes 0755 on a worker whose runc predates 1.1.8: Docker creates the working directory R/J in the container's own filesystem first, and that runc gives the tmpfs the mode of the directory it covers (a read-only root still refuses every write; a scratch root refuses non-root writers)";
use mount_plan_launch::{
    Availability, EngineInfo, LaunchError, LaunchSpec, Network, PlacementConstraint, Protection,
};

/// The constraint used when the launch spec names none: jobs go to workers, never to the
/// manager the launcher talks to.
pub const DEFAULT_CONSTRAINT: &str = "node.role==worker";

/// Swarm API versions that gate what a service can carry.
pub mod api {
    use mount_plan_docker::ApiVersion;
    /// `BindOptions.NonRecursive` in a service's mounts.
    pub const NON_RECURSIVE: ApiVersion = ApiVersion::new(1, 40);
    /// `ContainerSpec.Privileges.NoNewPrivileges` in a service (dropped silently before).
    pub const NO_NEW_PRIVILEGES: ApiVersion = ApiVersion::new(1, 46);
    /// `ContainerSpec.CapabilityDrop` and `CapabilityAdd` in a service (dropped silently
    /// before, leaving the engine's default capabilities).
    pub const CAPABILITIES: ApiVersion = ApiVersion::new(1, 41);
}

/// How Swarm (at API `api`) honours `nosuid` on binds: a service's mounts take no nosuid
/// option, so by no-new-privileges, which the in-container gate sets on itself before the
/// command runs, at every API version (the service's own `NoNewPrivileges` exists only from
/// API 1.46 and 20.10 drops it).
pub fn nosuid_availability(api: ApiVersion) -> Availability {
    if api >= api::NO_NEW_PRIVILEGES {
        Availability::Substitute(
            "no-new-privileges: \"NoNewPrivileges\" in the service's privileges, and set by the in-container gate before the command runs (setuid bits give no privileges)"
                .into(),
        )
    } else {
        Availability::Substitute(format!(
            "no-new-privileges, set by the in-container gate before the command runs (setuid bits give no privileges; the service's own NoNewPrivileges needs API {}, this manager speaks {api})",
            api::NO_NEW_PRIVILEGES
        ))
    }
}

/// How this Swarm manager (at API `api`) honours each protection. Measured on Docker 20.10
/// (API 1.41): a service keeps the tmpfs `ReadOnly`, `SizeBytes` and `Mode`, and the binds'
/// `ReadOnly`, `Propagation` and `NonRecursive`; it has no `ReadOnlyForceRecursive`, no
/// `CreateMountpoint`, no per-bind noexec and (before 1.46) no `NoNewPrivileges`.
pub fn availability(api: ApiVersion) -> Vec<(Protection, Availability)> {
    Protection::ALL
        .into_iter()
        .map(|p| {
            let a = match p {
                Protection::NonRecursiveBinds if api < api::NON_RECURSIVE => {
                    Availability::Missing(format!(
                        "a service's BindOptions.NonRecursive needs API {}, the manager speaks {api}",
                        api::NON_RECURSIVE
                    ))
                }
                Protection::RootModeAndSize => Availability::Partial(format!(
                    "{ROOT_MODE_NOTE}; on Swarm the worker's engine creates the container, so the manager has no window to correct it"
                )),
                Protection::NoSuidOnBinds => nosuid_availability(api),
                Protection::NoDevOnBinds => Availability::Substitute(format!(
                    "{NODEV_SUBSTITUTE} (a service cannot be privileged nor add devices)"
                )),
                Protection::NoExecOnBinds => Availability::Missing(
                    "a service's mounts take no noexec option, at any API version".into(),
                ),
                // From the path `mount-plan gate install` put it at on every node.
                Protection::Gate => Availability::Native,
                _ => Availability::Native,
            };
            (p, a)
        })
        .collect()
}

/// What the engine report warns about for every Swarm launch.
pub fn warnings() -> Vec<String> {
    vec![
        "a job asking for network none gets the node's default bridge: Swarm attaches a service to no local network other than its predefined ones (measured on 20.10: \"network none not found\")".to_owned(),
        "the audit reads the service spec from the manager; what the worker's engine and kernel made of it is proven only by an in-container check".to_owned(),
    ]
}

/// How the in-container gate reaches a service's container: a service has no archive call, so
/// the gate is bound read-only from `on_nodes` (the same path on every node: `mount-plan gate
/// install`), and the container's command line starts with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateCall {
    /// The gate's path on every node.
    pub on_nodes: String,
    /// The container's entrypoint (`ContainerSpec.Command`): the gate, its checks, `--`, the
    /// image's entrypoint.
    pub entrypoint: Vec<String>,
    /// Its arguments (`ContainerSpec.Args`): the launch's command, or the image's.
    pub command: Vec<String>,
}

/// Translate `plan`, `spec` and `labels` into the spec of a service that runs nothing yet
/// (`Replicas: 0`); [`started`] is the update that runs it once.
/// Network `none` and `default` both leave the task on the node's default bridge (see
/// [`warnings`]); a named network is attached.
///
/// Mounts are typed `Mount` structs (never `--mount` strings), as for Docker: the tmpfs root
/// read-only with its mode and size, every bind non-recursive with private propagation and
/// read-only where planned. Labels go on the service (for `list` and `gc`) and on its
/// containers (so a worker's leftovers can be found by label too). No healthcheck, restart
/// condition none, placement from the spec's constraints or [`DEFAULT_CONSTRAINT`]. Every
/// capability is dropped and only the spec's `cap_add` added back; a manager below API 1.41
/// (which would drop those fields) is refused.
pub fn translate(
    plan: &MountPlan,
    spec: &LaunchSpec,
    labels: &BTreeMap<String, String>,
    engine: &EngineInfo,
    gate: Option<&GateCall>,
) -> Result<ServiceSpec, LaunchError> {
    spec.check()?;
    let api: ApiVersion = engine
        .api_version
        .parse()
        .map_err(|e: mount_plan_docker::ApiVersionError| LaunchError::Unsupported(e.to_string()))?;
    if spec.gpus.is_some() {
        return Err(LaunchError::SpecUnsupported {
            engine: "swarm",
            what: "gpus (a service reserves GPUs only as generic resources the nodes advertise)"
                .into(),
        });
    }
    if api < api::CAPABILITIES {
        return Err(LaunchError::SpecUnsupported {
            engine: "swarm",
            what: format!(
                "a service that drops all capabilities (CapabilityDrop needs API {}, the manager speaks {api} and would leave the engine's defaults, MKNOD among them)",
                api::CAPABILITIES
            ),
        });
    }
    let non_recursive = (api >= api::NON_RECURSIVE).then_some(true);
    let mut mounts = mount_plan_docker::mounts(plan, non_recursive, false);
    let mut env: Vec<String> = spec.env.iter().map(ToString::to_string).collect();
    if let Some(g) = gate {
        mounts.push(Mount {
            target: Some(mount_plan_launch::gate::GATE_PATH.to_owned()),
            source: Some(g.on_nodes.clone()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Mount::default()
        });
        // A refusal names the node (a Swarm template; the gate removes it before the command).
        env.push(format!(
            "{}={{{{.Node.Hostname}}}}",
            mount_plan_launch::gate::GATE_NODE_ENV
        ));
    }
    let labels: HashMap<String, String> = labels.clone().into_iter().collect();
    let as_i64 = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
    let resources = &spec.resources;
    let limits = (resources.memory_bytes().is_some()
        || resources.nano_cpus().is_some()
        || resources.pids_limit().is_some())
    .then(|| Limit {
        memory_bytes: as_i64(resources.memory_bytes()),
        nano_cpus: as_i64(resources.nano_cpus()),
        pids: as_i64(resources.pids_limit()),
    });
    let constraints: Vec<String> = if spec.placement.is_empty() {
        vec![DEFAULT_CONSTRAINT.to_owned()]
    } else {
        spec.placement
            .iter()
            .map(PlacementConstraint::to_string)
            .collect()
    };
    let networks = match &spec.network {
        Network::Named(n) => Some(vec![NetworkAttachmentConfig {
            target: Some(n.as_str().to_owned()),
            ..NetworkAttachmentConfig::default()
        }]),
        // See `warnings`: neither can be asked of a service; both get the default bridge.
        Network::None | Network::Default => None,
    };
    let container = TaskSpecContainerSpec {
        image: Some(spec.image.to_string()),
        labels: Some(labels.clone()),
        // Without the gate: Args, not Command, so the image's entrypoint stays, as `docker run
        // IMAGE CMD...`. With it: the gate first, then the image's entrypoint (read from the
        // image by the backend) and the command.
        command: gate.map(|g| g.entrypoint.clone()),
        args: match gate {
            Some(g) => Some(g.command.clone()),
            None => (!spec.command.is_empty()).then(|| spec.command.clone()),
        },
        env: Some(env),
        dir: Some(plan.workdir().to_string()),
        user: spec.user.map(|u| u.to_string()),
        privileges: (api >= api::NO_NEW_PRIVILEGES).then(|| TaskSpecContainerSpecPrivileges {
            no_new_privileges: Some(true),
            ..TaskSpecContainerSpecPrivileges::default()
        }),
        capability_drop: Some(vec!["ALL".to_owned()]),
        capability_add: Some(spec.cap_add.iter().map(ToString::to_string).collect()),
        tty: Some(false),
        open_stdin: Some(false),
        mounts: Some(mounts),
        health_check: Some(HealthConfig {
            test: Some(vec!["NONE".to_owned()]),
            ..HealthConfig::default()
        }),
        ..TaskSpecContainerSpec::default()
    };
    Ok(ServiceSpec {
        name: spec.name.as_ref().map(ToString::to_string),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: limits.map(|l| TaskSpecResources {
                limits: Some(l),
                ..TaskSpecResources::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                max_attempts: Some(0),
                ..TaskSpecRestartPolicy::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: Some(constraints),
                ..TaskSpecPlacement::default()
            }),
            networks,
            ..TaskSpec::default()
        }),
        mode: Some(replicas(0)),
        ..ServiceSpec::default()
    })
}

fn replicas(n: i64) -> ServiceSpecMode {
    ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated { replicas: Some(n) }),
        ..ServiceSpecMode::default()
    }
}

/// Whether a service spec asks for its task to run (`Replicas` above 0).
pub fn is_started(spec: &ServiceSpec) -> bool {
    spec.mode
        .as_ref()
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .is_some_and(|n| n > 0)
}

/// The update that starts a created service: the same spec asking for one replica. With
/// restart condition none its task runs once; it is sent once.
pub fn started(spec: &ServiceSpec) -> ServiceSpec {
    ServiceSpec {
        mode: Some(replicas(1)),
        ..spec.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{MountBindOptionsPropagationEnum, MountType};
    use mount_plan::{HostPath, Layout};

    fn engine(api: &str) -> EngineInfo {
        EngineInfo {
            engine: "swarm".into(),
            endpoint: "unix:///var/run/docker.sock".into(),
            version: "20.10.24".into(),
            api_version: api.into(),
            runtime: Some("runc 1.1.5".into()),
            rootless: false,
            user_namespace: false,
        }
    }

    fn plan() -> MountPlan {
        let layout = Layout::default();
        layout
            .plan(
                &HostPath::parse("/srv/w").unwrap(),
                &layout.job("j1").unwrap(),
            )
            .unwrap()
    }

    fn spec() -> LaunchSpec {
        LaunchSpec::new("sha256:abc".parse().unwrap()).with_command(["sh", "-c", "x"])
    }

    fn service(spec: &LaunchSpec, api: &str) -> ServiceSpec {
        let plan = plan();
        let labels = mount_plan_launch::container_labels(&plan, spec);
        translate(&plan, spec, &labels, &engine(api), None).unwrap()
    }

    fn container(s: &ServiceSpec) -> &TaskSpecContainerSpec {
        s.task_template
            .as_ref()
            .unwrap()
            .container_spec
            .as_ref()
            .unwrap()
    }

    #[test]
    fn a_created_service_runs_nothing_until_started() {
        let s = service(&spec(), "1.41");
        assert!(!is_started(&s));
        let r = s.mode.as_ref().unwrap().replicated.as_ref().unwrap();
        assert_eq!(r.replicas, Some(0));
        assert_eq!(s.mode.as_ref().unwrap().replicated_job, None);
        let s2 = started(&s);
        assert!(is_started(&s2));
        assert_eq!(s2.task_template, s.task_template, "only the mode changes");
        let t = s.task_template.as_ref().unwrap();
        assert_eq!(
            t.restart_policy.as_ref().unwrap().condition,
            Some(TaskSpecRestartPolicyConditionEnum::NONE)
        );
        assert_eq!(
            container(&s).health_check.as_ref().unwrap().test,
            Some(vec!["NONE".to_owned()])
        );
    }

    #[test]
    fn mounts_are_typed_and_hardened() {
        let s = service(&spec(), "1.41");
        let c = container(&s);
        let mounts = c.mounts.as_ref().unwrap();
        assert_eq!(mounts.len(), 4);
        let root = &mounts[0];
        assert_eq!(root.typ, Some(MountType::TMPFS));
        assert_eq!(root.read_only, Some(true));
        let t = root.tmpfs_options.as_ref().unwrap();
        assert_eq!((t.mode, t.size_bytes), (Some(0o555), Some(1 << 20)));
        for (m, ro) in mounts[1..].iter().zip([true, true, false]) {
            assert_eq!(m.typ, Some(MountType::BIND));
            assert_eq!(m.read_only, Some(ro));
            let b = m.bind_options.as_ref().unwrap();
            assert_eq!(
                b.propagation,
                Some(MountBindOptionsPropagationEnum::PRIVATE)
            );
            assert_eq!(b.non_recursive, Some(true));
        }
        assert_eq!(mounts[3].source.as_deref(), Some("/srv/w/j1"));
        assert_eq!(c.dir.as_deref(), Some("/workspace/j1"));
        assert_eq!(c.command, None, "the image's entrypoint stays");
        assert_eq!(c.args.as_ref().unwrap()[0], "sh");
        assert_eq!(c.privileges, None, "API 1.41 has no NoNewPrivileges");
        assert_eq!(c.capability_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(c.capability_add, Some(vec![]));
        let labels = s.labels.as_ref().unwrap();
        assert_eq!(labels["io.mount-plan.managed"], "1");
        assert_eq!(c.labels.as_ref(), Some(labels));
    }

    #[test]
    fn a_path_with_commas_stays_one_field() {
        let layout = Layout::default();
        let plan = layout
            .plan(
                &HostPath::parse("/srv/a,readonly=false,source=/x").unwrap(),
                &layout.job("j1").unwrap(),
            )
            .unwrap();
        let labels = mount_plan_launch::container_labels(&plan, &spec());
        let s = translate(&plan, &spec(), &labels, &engine("1.41"), None).unwrap();
        let json = serde_json::to_value(&s).unwrap();
        let m = &json["TaskTemplate"]["ContainerSpec"]["Mounts"][1];
        assert_eq!(m["Source"], "/srv/a,readonly=false,source=/x/startup");
        assert_eq!(m["ReadOnly"], true);
        assert_eq!(m["BindOptions"]["NonRecursive"], true);
    }

    #[test]
    fn placement_defaults_to_workers() {
        let s = service(&spec(), "1.41");
        let p = s
            .task_template
            .as_ref()
            .unwrap()
            .placement
            .as_ref()
            .unwrap();
        assert_eq!(p.constraints, Some(vec![DEFAULT_CONSTRAINT.to_owned()]));
        let mut sp = spec();
        sp.placement = vec![
            "node.hostname==w1".parse().unwrap(),
            "node.labels.gpu != no".parse().unwrap(),
        ];
        let s = service(&sp, "1.41");
        let p = s
            .task_template
            .as_ref()
            .unwrap()
            .placement
            .as_ref()
            .unwrap();
        assert_eq!(
            p.constraints,
            Some(vec![
                "node.hostname==w1".to_owned(),
                "node.labels.gpu!=no".to_owned()
            ])
        );
    }

    #[test]
    fn versions_gate_the_service() {
        // Below 1.41 a service cannot drop capabilities: refused (which also covers the
        // missing NonRecursive below 1.40, which the lifecycle refuses from `availability`).
        for api in ["1.39", "1.40"] {
            let plan = plan();
            let labels = mount_plan_launch::container_labels(&plan, &spec());
            let err = translate(&plan, &spec(), &labels, &engine(api), None).unwrap_err();
            assert_eq!(err.rule(), "spec-unsupported");
            assert!(err.to_string().contains("CapabilityDrop"), "{err}");
        }
        assert!(!availability(ApiVersion::new(1, 39))
            .iter()
            .any(|(p, a)| *p == Protection::NonRecursiveBinds && a.is_available()));
        let s = service(&spec(), "1.46");
        assert_eq!(
            container(&s).privileges.as_ref().unwrap().no_new_privileges,
            Some(true)
        );
        let a = availability(ApiVersion::new(1, 41));
        let get = |p| a.iter().find(|(q, _)| *q == p).unwrap().1.clone();
        // By the gate's no-new-privileges, whatever the API drops (issue 21, finding 10).
        assert!(get(Protection::NoSuidOnBinds).is_available());
        assert!(!get(Protection::NoExecOnBinds).is_available());
        assert_eq!(get(Protection::NonRecursiveBinds), Availability::Native);
        assert_eq!(get(Protection::ReadOnlyRoot), Availability::Native);
        assert!(matches!(
            get(Protection::RootModeAndSize),
            Availability::Partial(_)
        ));
        assert!(nosuid_availability(ApiVersion::new(1, 46)).is_available());
    }

    #[test]
    fn only_the_spec_s_capabilities_are_added() {
        let mut s = spec();
        s.cap_add.insert("KILL".parse().unwrap());
        let svc = service(&s, "1.41");
        let json = serde_json::to_value(&svc).unwrap();
        let c = &json["TaskTemplate"]["ContainerSpec"];
        assert_eq!(c["CapabilityDrop"], serde_json::json!(["ALL"]));
        assert_eq!(c["CapabilityAdd"], serde_json::json!(["CAP_KILL"]));
    }

    #[test]
    fn spec_fields_map() {
        let mut s = spec();
        s.user = Some("1000:1000".parse().unwrap());
        s.env.push("A=b=c".parse().unwrap());
        s.network = "fl-net".parse().unwrap();
        s.name = Some("job-x".parse().unwrap());
        s.resources = mount_plan_launch::Resources::new()
            .with_memory_bytes(64 << 20)
            .unwrap()
            .with_pids_limit(100)
            .unwrap();
        let svc = service(&s, "1.41");
        assert_eq!(svc.name.as_deref(), Some("job-x"));
        let c = container(&svc);
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.env.as_deref(), Some(&["A=b=c".to_owned()][..]));
        let t = svc.task_template.as_ref().unwrap();
        assert_eq!(
            t.networks.as_ref().unwrap()[0].target.as_deref(),
            Some("fl-net")
        );
        let l = t.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!((l.memory_bytes, l.pids), (Some(64 << 20), Some(100)));
        s.gpus = Some("1".parse().unwrap());
        let plan = plan();
        let labels = mount_plan_launch::container_labels(&plan, &s);
        let err = translate(&plan, &s, &labels, &engine("1.41"), None).unwrap_err();
        assert_eq!(err.rule(), "spec-unsupported");
    }
}
