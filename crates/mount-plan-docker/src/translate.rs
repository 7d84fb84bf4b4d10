//! Pure translation of a plan and a launch spec into a Docker Engine API create call.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, DeviceRequest, HostConfig, Mount as DockerMount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountTmpfsOptions, MountType,
};
use bollard::query_parameters::CreateContainerOptions;
use mount_plan::{Mount, MountPlan};
use mount_plan_launch::{EngineInfo, GpuRequest, LaunchError, LaunchSpec, Network};

use crate::version::{ApiVersion, ApiVersionError, EngineFacts, ReadOnlyBinds};

/// A create call: its query options and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateCall {
    /// Query options (the container name).
    pub options: CreateContainerOptions,
    /// The body.
    pub body: ContainerCreateBody,
}

/// The plan's mounts as Engine API `Mount` structs (never `--mount` strings), as a container
/// and a Swarm service's task template both take them: the tmpfs root with its read-only flag,
/// mode and size; every bind with private propagation, read-only where planned,
/// `NonRecursive` set to `non_recursive` (`None` below API 1.40, which lacks the field), and
/// `ReadOnlyForceRecursive` on read-only binds when `force_recursive` (API 1.44).
pub fn mounts(
    plan: &MountPlan,
    non_recursive: Option<bool>,
    force_recursive: bool,
) -> Vec<DockerMount> {
    plan.mounts()
        .iter()
        .map(|m| match m {
            Mount::Tmpfs(t) => DockerMount {
                target: Some(t.target().to_string()),
                typ: Some(MountType::TMPFS),
                read_only: Some(t.read_only()),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: Some(i64::try_from(t.size_bytes()).unwrap_or(i64::MAX)),
                    mode: Some(i64::from(t.mode())),
                    options: None,
                }),
                ..DockerMount::default()
            },
            Mount::Bind(b) => DockerMount {
                target: Some(b.target().to_string()),
                source: Some(b.source().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(b.read_only()),
                bind_options: Some(MountBindOptions {
                    propagation: Some(MountBindOptionsPropagationEnum::PRIVATE),
                    non_recursive,
                    read_only_force_recursive: (force_recursive && b.read_only()).then_some(true),
                    ..MountBindOptions::default()
                }),
                ..DockerMount::default()
            },
        })
        .collect()
}

/// The gate's bind: its host copy (`source`, [`mount_plan_launch::gate_copy`]) read-only with
/// private propagation at [`mount_plan_launch::gate::GATE_PATH`], outside R (a single file:
/// nothing can be mounted below it); `ReadOnlyForceRecursive` when `force_recursive` (API
/// 1.44), as for the plan's read-only binds.
pub fn gate_mount(source: &str, force_recursive: bool) -> DockerMount {
    DockerMount {
        target: Some(mount_plan_launch::gate::GATE_PATH.to_owned()),
        source: Some(source.to_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        bind_options: Some(MountBindOptions {
            propagation: Some(MountBindOptionsPropagationEnum::PRIVATE),
            read_only_force_recursive: force_recursive.then_some(true),
            ..MountBindOptions::default()
        }),
        ..DockerMount::default()
    }
}

/// The plan's mounts as the Engine API's `HostConfig.Mounts` for an engine speaking `api`,
/// exactly as [`translate`] sends them: serialised with serde, this is the JSON list the
/// Engine API (and docker-py's `mounts=`) takes.
pub fn engine_mounts(plan: &MountPlan, api: ApiVersion) -> Vec<DockerMount> {
    let facts = EngineFacts::new(api, None, None);
    let non_recursive = (api >= ApiVersion::NON_RECURSIVE).then_some(true);
    let force_recursive = facts.read_only_binds() == ReadOnlyBinds::ForceRecursive;
    mounts(plan, non_recursive, force_recursive)
}

/// Translate `plan`, `spec` and `labels` for the engine `engine`. Which protections the
/// engine honours is decided by the lifecycle from [`crate::availability`], before this is
/// called.
///
/// Mounts are typed `Mount` structs (never `--mount` strings): the tmpfs root with its
/// read-only flag, mode and size; every bind non-recursive with private propagation,
/// read-only where planned (from API 1.44 also `ReadOnlyForceRecursive`, so the engine fails
/// the start rather than leave a bind writable). `no-new-privileges` stands in for nosuid on
/// binds. Every capability is dropped (`CapDrop: ["ALL"]`) and only the spec's `cap_add` is
/// added back, so a job running as root cannot plant device nodes (`MKNOD`) in its job
/// directory. The fields sent follow [`EngineFacts`] of `engine`.
pub fn translate(
    plan: &MountPlan,
    spec: &LaunchSpec,
    labels: &BTreeMap<String, String>,
    engine: &EngineInfo,
) -> Result<CreateCall, LaunchError> {
    spec.check()?;
    let facts = EngineFacts::of(engine, None)
        .map_err(|e: ApiVersionError| LaunchError::Unsupported(e.to_string()))?;
    let mounts = engine_mounts(plan, facts.api);

    let network_mode = match &spec.network {
        Network::None => "none".to_owned(),
        Network::Default => "default".to_owned(),
        Network::Named(n) => n.as_str().to_owned(),
    };
    let device_requests = spec.gpus.as_ref().map(|g| {
        let (count, device_ids) = match g {
            GpuRequest::All => (Some(-1), None),
            GpuRequest::Count(n) => (Some(i64::from(*n)), None),
            GpuRequest::Devices(ids) => (None, Some(ids.clone())),
        };
        vec![DeviceRequest {
            driver: Some(String::new()),
            count,
            device_ids,
            capabilities: Some(vec![vec!["gpu".to_owned()]]),
            options: None,
        }]
    });
    let as_i64 = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));

    let host_config = HostConfig {
        mounts: Some(mounts),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        privileged: Some(false),
        cap_drop: Some(vec!["ALL".to_owned()]),
        cap_add: Some(spec.cap_add.iter().map(ToString::to_string).collect()),
        network_mode: Some(network_mode),
        device_requests,
        memory: as_i64(spec.resources.memory_bytes()),
        nano_cpus: as_i64(spec.resources.nano_cpus()),
        pids_limit: as_i64(spec.resources.pids_limit()),
        auto_remove: Some(false),
        ..HostConfig::default()
    };
    let labels: HashMap<String, String> = labels.clone().into_iter().collect();
    let body = ContainerCreateBody {
        image: Some(spec.image.to_string()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(spec.env.iter().map(ToString::to_string).collect()),
        user: spec.user.map(|u| u.to_string()),
        working_dir: Some(plan.workdir().to_string()),
        labels: Some(labels),
        tty: Some(false),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        open_stdin: Some(false),
        network_disabled: Some(matches!(spec.network, Network::None)),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    };
    Ok(CreateCall {
        options: CreateContainerOptions {
            name: spec.name.as_ref().map(ToString::to_string),
            platform: String::new(),
        },
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mount_plan::{HostPath, Layout};
    use mount_plan_launch::Protection;

    fn engine(api: &str) -> EngineInfo {
        EngineInfo {
            engine: "docker".into(),
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

    fn call(plan: &MountPlan, spec: &LaunchSpec, api: &str) -> CreateCall {
        let labels = mount_plan_launch::container_labels(plan, spec);
        translate(plan, spec, &labels, &engine(api)).unwrap()
    }

    fn refusal(spec: &LaunchSpec, api: &str) -> LaunchError {
        let report = mount_plan_launch::EngineReport {
            engine: engine(api),
            protections: crate::availability(&EngineFacts::new(api.parse().unwrap(), None, None)),
            warnings: vec![],
        };
        mount_plan_launch::check_protections(&report, &plan(), &spec.accept_missing, &spec.require)
            .unwrap_err()
    }

    fn spec() -> LaunchSpec {
        LaunchSpec::new("img:1".parse().unwrap()).with_command(["sh", "-c", "x"])
    }

    #[test]
    fn mounts_are_typed_and_hardened() {
        let call = call(&plan(), &spec(), "1.41");
        let hc = call.body.host_config.as_ref().unwrap();
        let mounts = hc.mounts.as_ref().unwrap();
        assert_eq!(mounts.len(), 4);
        let root = &mounts[0];
        assert_eq!(root.typ, Some(MountType::TMPFS));
        assert_eq!(root.target.as_deref(), Some("/workspace"));
        assert_eq!(root.read_only, Some(true));
        let t = root.tmpfs_options.as_ref().unwrap();
        assert_eq!((t.mode, t.size_bytes), (Some(0o555), Some(1 << 20)));
        assert_eq!(t.options, None, "tmpfs Options needs API 1.46");
        let expect = [
            ("/srv/w/startup", "/workspace/startup", true),
            ("/srv/w/local", "/workspace/local", true),
            ("/srv/w/j1", "/workspace/j1", false),
        ];
        for (m, (src, dst, ro)) in mounts[1..].iter().zip(expect) {
            assert_eq!(m.typ, Some(MountType::BIND));
            assert_eq!(m.source.as_deref(), Some(src));
            assert_eq!(m.target.as_deref(), Some(dst));
            assert_eq!(m.read_only, Some(ro));
            let b = m.bind_options.as_ref().unwrap();
            assert_eq!(
                b.propagation,
                Some(MountBindOptionsPropagationEnum::PRIVATE)
            );
            assert_eq!(b.non_recursive, Some(true));
            assert_eq!(b.create_mountpoint, None);
            assert_eq!(
                b.read_only_force_recursive, None,
                "API 1.41 has no such field"
            );
        }
        assert_eq!(
            hc.security_opt.as_deref(),
            Some(&["no-new-privileges".to_owned()][..])
        );
        assert_eq!(hc.privileged, Some(false));
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.binds, None);
        assert_eq!(hc.volumes_from, None);
        assert_eq!(hc.cap_drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(hc.cap_add.as_deref(), Some(&[][..]));
        assert_eq!(hc.devices, None);
        assert_eq!(call.body.working_dir.as_deref(), Some("/workspace/j1"));
        let labels = call.body.labels.as_ref().unwrap();
        assert_eq!(labels["io.mount-plan.managed"], "1");
        assert_eq!(labels["io.mount-plan.job"], "j1");
        assert!(labels["io.mount-plan.plan-digest"].starts_with("sha256:"));
    }

    #[test]
    fn read_only_binds_are_forced_from_api_1_44() {
        for (api, forced) in [("1.43", false), ("1.44", true), ("1.45", true)] {
            let call = call(&plan(), &spec(), api);
            let mounts = call.body.host_config.unwrap().mounts.unwrap();
            for m in &mounts[1..] {
                let b = m.bind_options.as_ref().unwrap();
                let want = (forced && m.read_only == Some(true)).then_some(true);
                assert_eq!(b.read_only_force_recursive, want, "API {api}: {m:?}");
                assert_eq!(b.non_recursive, Some(true));
                assert_eq!(b.read_only_non_recursive, None);
            }
        }
    }

    #[test]
    fn a_path_with_commas_stays_one_field() {
        // Typed structs: a comma in a path cannot add a key. Serialised JSON keeps it whole.
        let layout = Layout::default();
        let plan = layout
            .plan(
                &HostPath::parse("/srv/a,readonly=false,source=/x").unwrap(),
                &layout.job("j1").unwrap(),
            )
            .unwrap();
        let call = call(&plan, &spec(), "1.41");
        let json = serde_json::to_value(&call.body).unwrap();
        let m = &json["HostConfig"]["Mounts"][1];
        assert_eq!(m["Source"], "/srv/a,readonly=false,source=/x/startup");
        assert_eq!(m["ReadOnly"], true);
        assert_eq!(m["BindOptions"]["NonRecursive"], true);
        assert_eq!(m.as_object().unwrap().len(), 5, "{m}");
    }

    #[test]
    fn noexec_is_hardening_refused_only_when_required() {
        let report = mount_plan_launch::EngineReport {
            engine: engine("1.41"),
            protections: crate::availability(&EngineFacts::new(ApiVersion::new(1, 41), None, None)),
            warnings: vec![],
        };
        let s = spec();
        mount_plan_launch::check_protections(&report, &plan(), &s.accept_missing, &s.require)
            .expect("hardening Docker cannot apply is not refused by default");
        let warning = report
            .hardening_warning(&plan(), &s.accept_missing, &s.require)
            .unwrap();
        assert!(
            warning.contains("noexec") && warning.contains("--require noexec"),
            "{warning}"
        );
        let mut s = spec();
        s.require.insert(Protection::NoExecOnBinds);
        let err = refusal(&s, "1.41");
        assert_eq!(err.rule(), "protection-unavailable");
        let msg = err.to_string();
        assert!(
            msg.contains("20.10.24") && msg.contains("API 1.41"),
            "{msg}"
        );
        assert!(msg.contains("noexec"), "{msg}");
    }

    #[test]
    fn api_older_than_1_40_is_refused() {
        let err = refusal(&spec(), "1.39");
        assert_eq!(err.rule(), "protection-unavailable");
        let msg = err.to_string();
        assert!(
            msg.contains("20.10.24") && msg.contains("API 1.39") && msg.contains("NonRecursive"),
            "{msg}"
        );
        // Accepted as missing: the field is left out (an old engine would drop it anyway).
        let mut s = spec();
        s.accept_missing.insert(Protection::NonRecursiveBinds);
        let call = call(&plan(), &s, "1.39");
        let m = &call.body.host_config.unwrap().mounts.unwrap()[1];
        assert_eq!(m.bind_options.as_ref().unwrap().non_recursive, None);
    }

    #[test]
    fn all_capabilities_are_dropped_and_only_the_spec_s_added() {
        let mut s = spec();
        s.cap_add.insert("net_raw".parse().unwrap());
        s.cap_add.insert("CAP_CHOWN".parse().unwrap());
        let call = call(&plan(), &s, "1.41");
        let json = serde_json::to_value(&call.body).unwrap();
        assert_eq!(json["HostConfig"]["CapDrop"], serde_json::json!(["ALL"]));
        assert_eq!(
            json["HostConfig"]["CapAdd"],
            serde_json::json!(["CAP_CHOWN", "CAP_NET_RAW"])
        );
    }

    #[test]
    fn spec_fields_map() {
        let mut s = spec();
        s.user = Some("1000:1000".parse().unwrap());
        s.env.push("A=b=c".parse().unwrap());
        s.network = "fl-net".parse().unwrap();
        s.name = Some("job-x".parse().unwrap());
        s.gpus = Some("2".parse().unwrap());
        s.resources = mount_plan_launch::Resources::new()
            .with_memory_bytes(64 << 20)
            .unwrap()
            .with_pids_limit(100)
            .unwrap();
        s.labels.insert("team", "t").unwrap();
        let call = call(&plan(), &s, "1.41");
        assert_eq!(call.options.name.as_deref(), Some("job-x"));
        let b = &call.body;
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
        assert_eq!(b.env.as_deref(), Some(&["A=b=c".to_owned()][..]));
        assert_eq!(b.network_disabled, Some(false));
        assert_eq!(b.labels.as_ref().unwrap()["team"], "t");
        let hc = b.host_config.as_ref().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("fl-net"));
        assert_eq!(hc.memory, Some(64 << 20));
        assert_eq!(hc.pids_limit, Some(100));
        let dr = &hc.device_requests.as_ref().unwrap()[0];
        assert_eq!(dr.count, Some(2));
    }
}
