//! Pure translation of a plan and a launch spec into a libpod create call. No I/O:
//! unit-tested without a service.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use mount_plan::{MountPlan, OciMount};
use mount_plan_launch::{LaunchError, LaunchSpec, Network};
use podman_api::models::{
    ContainerMount, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources, Namespace, PerNetworkOptions,
};
use podman_api::opts::{ContainerCreateOpts, ImageVolumeMode};

use crate::error::PodmanError;
use crate::version::{check_version, ServiceFacts};

/// The engine kind, as [`mount_plan_launch::EngineInfo::engine`] and errors name it.
pub const ENGINE: &str = "podman";

/// The tmpfs option that stops Podman from copying the image's content at the mount point
/// into the tmpfs. Podman strips it before the OCI spec, so inspect never shows it; it shows
/// `tmpcopyup` when copy-up is on.
pub const NO_COPY_UP: &str = "notmpcopyup";

/// How the container's user namespace is set up: an option of this backend, not of the
/// engine-neutral spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UserNamespace {
    /// The service's default: rootful, no user namespace (container root is host root);
    /// rootless, container root is the service's user and other ids map to its subordinate
    /// range.
    #[default]
    EngineDefault,
    /// `keep-id` (rootless services only): the service's user keeps its uid and gid in the
    /// container and, unless the spec names a user, the command runs as that user. Files it
    /// writes in the job directory are owned by that user on the host.
    KeepId,
}

impl UserNamespace {
    /// The libpod `userns` mode (`None`: leave the service's default).
    pub fn nsmode(self) -> Option<&'static str> {
        match self {
            UserNamespace::EngineDefault => None,
            UserNamespace::KeepId => Some("keep-id"),
        }
    }
}

impl FromStr for UserNamespace {
    type Err = PodmanError;
    /// `default` or `keep-id`.
    fn from_str(value: &str) -> Result<Self, PodmanError> {
        match value {
            "default" => Ok(UserNamespace::EngineDefault),
            "keep-id" => Ok(UserNamespace::KeepId),
            _ => Err(PodmanError::UserNamespace {
                value: value.to_owned(),
            }),
        }
    }
}

/// Options of the Podman backend that the engine-neutral [`LaunchSpec`] does not carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodmanOptions {
    /// The user namespace mode.
    pub userns: UserNamespace,
    /// How often the service polls a container's state while we wait for it. libpod's default
    /// is 250 ms, which adds up to a quarter second to every launch; the default here is 5 ms.
    pub wait_interval: Duration,
    /// How long connecting (the version and info calls) may take (default 10 s).
    pub connect_timeout: Duration,
}

impl Default for PodmanOptions {
    fn default() -> Self {
        PodmanOptions {
            userns: UserNamespace::EngineDefault,
            wait_interval: Duration::from_millis(5),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The libpod form of one OCI mount of the plan. Tmpfs mounts get `notmpcopyup`, so the
/// image's files at the mount point never show up in the tmpfs.
pub fn container_mount(m: &OciMount) -> ContainerMount {
    let mut options = m.options.clone();
    if m.kind == "tmpfs" {
        options.push(NO_COPY_UP.to_owned());
    }
    ContainerMount {
        destination: Some(m.destination.clone()),
        options: Some(options),
        source: Some(m.source.clone()),
        _type: Some(m.kind.clone()),
        uid_mappings: None,
        gid_mappings: None,
    }
}

/// The gate's bind: its host copy (`source`), read-only, non-recursive and private at
/// [`mount_plan_launch::gate::GATE_PATH`], outside R.
pub fn gate_mount(source: &str) -> ContainerMount {
    ContainerMount {
        destination: Some(mount_plan_launch::gate::GATE_PATH.to_owned()),
        options: Some(["bind", "ro", "private"].map(String::from).to_vec()),
        source: Some(source.to_owned()),
        _type: Some("bind".to_owned()),
        uid_mappings: None,
        gid_mappings: None,
    }
}

/// The mounts of `plan` in libpod form, in mount order.
pub fn container_mounts(plan: &MountPlan) -> Vec<ContainerMount> {
    plan.oci_mounts().iter().map(container_mount).collect()
}

/// The create call for `plan` running `spec`, labelled `labels`, on a service described by
/// `facts`.
///
/// The plan alone sets mounts and the working directory; the spec sets image, command,
/// environment, user, network, labels, name and resource limits; `options` sets the user
/// namespace. Image volumes are ignored (`image_volume_mode=ignore`) so that an image's
/// `VOLUME` cannot add a mount the plan does not have. Every capability is dropped
/// (`cap_drop: ["ALL"]`) and only the spec's `cap_add` added back.
pub fn translate(
    plan: &MountPlan,
    spec: &LaunchSpec,
    labels: &BTreeMap<String, String>,
    options: &PodmanOptions,
    facts: &ServiceFacts,
    line: Option<&(Vec<String>, Vec<String>)>,
    gate_source: Option<&str>,
) -> Result<ContainerCreateOpts, LaunchError> {
    spec.check()?;
    check_version(facts)?;
    if options.userns == UserNamespace::KeepId && !facts.rootless {
        return Err(LaunchError::SpecUnsupported {
            engine: ENGINE,
            what: "user namespace keep-id on a rootful service (podman allows it rootless only)"
                .to_owned(),
        });
    }
    if let Some(gpus) = &spec.gpus {
        return Err(LaunchError::SpecUnsupported {
            engine: ENGINE,
            what: format!("gpu request {gpus:?} (this backend does not map GPUs to CDI devices)"),
        });
    }
    let r = &spec.resources;
    let any_limit =
        r.memory_bytes().is_some() || r.nano_cpus().is_some() || r.pids_limit().is_some();
    if any_limit && facts.rootless && facts.cgroup_version.as_deref() != Some("v2") {
        return Err(LaunchError::SpecUnsupported {
            engine: ENGINE,
            what: format!(
                "resource limits on a rootless service with cgroup {} (podman would ignore them)",
                facts.cgroup_version.as_deref().unwrap_or("(unknown)")
            ),
        });
    }

    let labels: HashMap<String, String> = labels.clone().into_iter().collect();
    let mut mounts = container_mounts(plan);
    if let Some(source) = gate_source {
        mounts.push(gate_mount(source));
    }
    let mut b = ContainerCreateOpts::builder()
        .image(spec.image.as_str())
        .mounts(mounts)
        .work_dir(plan.workdir().as_str())
        .labels(labels)
        .image_volume_mode(ImageVolumeMode::Ignore)
        .drop_capabilities(["ALL"]);
    if !spec.cap_add.is_empty() {
        b = b.add_capabilities(spec.cap_add.iter().map(ToString::to_string));
    }
    match line {
        // The whole entrypoint and command (the gate first: see mount_plan_launch::gate).
        Some((entrypoint, command)) => {
            b = b
                .entrypoint(entrypoint.iter().map(String::as_str))
                .command(command.iter().map(String::as_str));
        }
        None if !spec.command.is_empty() => {
            b = b.command(spec.command.iter().map(String::as_str));
        }
        None => {}
    }
    if !spec.env.is_empty() {
        b = b.env(spec.env.iter().map(|v| (v.key(), v.value())));
    }
    if let Some(user) = spec.user {
        b = b.user(user.to_string());
    }
    if let Some(name) = &spec.name {
        b = b.name(name.as_str());
    }
    match &spec.network {
        Network::None => b = b.net_namespace(namespace("none")),
        Network::Default => {}
        Network::Named(n) => {
            b = b.net_namespace(namespace("bridge")).networks([(
                n.as_str(),
                PerNetworkOptions {
                    aliases: None,
                    interface_name: None,
                    static_ips: None,
                    static_mac: None,
                },
            )]);
        }
    }
    if let Some(mode) = options.userns.nsmode() {
        b = b.user_namespace(namespace(mode));
    }
    if any_limit {
        b = b.resource_limits(resources(spec));
    }
    Ok(b.build())
}

fn namespace(mode: &str) -> Namespace {
    Namespace {
        nsmode: Some(mode.to_owned()),
        value: None,
    }
}

fn resources(spec: &LaunchSpec) -> LinuxResources {
    let r = &spec.resources;
    const PERIOD: u64 = 100_000;
    LinuxResources {
        block_io: None,
        cpu: r.nano_cpus().map(|nano| LinuxCpu {
            cpus: None,
            mems: None,
            period: Some(PERIOD),
            quota: Some((nano.saturating_mul(PERIOD) / 1_000_000_000).max(1000) as i64),
            realtime_period: None,
            realtime_runtime: None,
            shares: None,
        }),
        devices: None,
        hugepage_limits: None,
        memory: r.memory_bytes().map(|bytes| LinuxMemory {
            disable_oom_killer: None,
            kernel: None,
            kernel_tcp: None,
            limit: Some(bytes as i64),
            reservation: None,
            swap: None,
            swappiness: None,
            use_hierarchy: None,
        }),
        network: None,
        pids: r.pids_limit().map(|n| LinuxPids {
            limit: Some(n as i64),
        }),
        rdma: None,
        unified: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::tests::facts;
    use mount_plan::{HostPath, Layout, LayoutSpec, RootKind};
    use mount_plan_launch::Resources;

    fn plan() -> MountPlan {
        let layout = Layout::default();
        layout
            .plan(
                &HostPath::parse("/srv/w").unwrap(),
                &layout.job("job1").unwrap(),
            )
            .unwrap()
    }

    fn spec() -> LaunchSpec {
        LaunchSpec::new("localhost/mount-plan-busybox:latest".parse().unwrap())
            .with_command(["sh", "-c", "echo hi"])
    }

    fn tr(
        plan: &MountPlan,
        spec: &LaunchSpec,
        options: &PodmanOptions,
        facts: &ServiceFacts,
    ) -> Result<ContainerCreateOpts, LaunchError> {
        let labels = mount_plan_launch::container_labels(plan, spec);
        translate(plan, spec, &labels, options, facts, None, None)
    }

    fn json(opts: &ContainerCreateOpts) -> serde_json::Value {
        serde_json::from_str(&opts.serialize().unwrap()).unwrap()
    }

    #[test]
    fn mounts_follow_the_plan_exactly() {
        let mounts = json(
            &tr(
                &plan(),
                &spec(),
                &PodmanOptions::default(),
                &facts("4.3.1", false),
            )
            .unwrap(),
        )["mounts"]
            .clone();
        let expected = serde_json::json!([
            {"destination": "/workspace", "type": "tmpfs", "source": "tmpfs",
             "options": ["ro", "nosuid", "nodev", "noexec", "mode=0555", "size=1048576", "notmpcopyup"]},
            {"destination": "/workspace/startup", "type": "bind", "source": "/srv/w/startup",
             "options": ["bind", "ro", "nosuid", "nodev", "noexec", "private"]},
            {"destination": "/workspace/local", "type": "bind", "source": "/srv/w/local",
             "options": ["bind", "ro", "nosuid", "nodev", "noexec", "private"]},
            {"destination": "/workspace/job1", "type": "bind", "source": "/srv/w/job1",
             "options": ["bind", "rw", "nosuid", "nodev", "private"]},
        ]);
        assert_eq!(mounts, expected);
    }

    #[test]
    fn scratch_root_is_writable_sticky_and_capped() {
        let layout = LayoutSpec {
            root: Some(RootKind::Scratch),
            root_size_bytes: Some(64 << 20),
            ..LayoutSpec::default()
        }
        .build()
        .unwrap();
        let plan = layout
            .plan(
                &HostPath::parse("/srv/w").unwrap(),
                &layout.job("j").unwrap(),
            )
            .unwrap();
        let m = &container_mounts(&plan)[0];
        assert_eq!(
            m.options.as_deref().unwrap(),
            [
                "rw",
                "nosuid",
                "nodev",
                "noexec",
                "mode=1777",
                "size=67108864",
                "notmpcopyup"
            ]
        );
    }

    #[test]
    fn the_rest_of_the_create_call() {
        let mut s = spec();
        s.env.push("MODE=train".parse().unwrap());
        s.user = Some("1000:1000".parse().unwrap());
        s.labels.insert("team", "a").unwrap();
        s.name = Some("job1-run".parse().unwrap());
        let v = json(
            &tr(
                &plan(),
                &s,
                &PodmanOptions::default(),
                &facts("4.3.1", false),
            )
            .unwrap(),
        );
        assert_eq!(v["image"], "localhost/mount-plan-busybox:latest");
        assert_eq!(v["command"], serde_json::json!(["sh", "-c", "echo hi"]));
        assert_eq!(v["work_dir"], "/workspace/job1");
        assert_eq!(v["env"], serde_json::json!({"MODE": "train"}));
        assert_eq!(v["user"], "1000:1000");
        assert_eq!(v["name"], "job1-run");
        assert_eq!(v["netns"], serde_json::json!({"nsmode": "none"}));
        assert_eq!(v["image_volume_mode"], "ignore");
        assert_eq!(v["labels"]["team"], "a");
        assert_eq!(v["labels"]["io.mount-plan.managed"], "1");
        assert_eq!(v["labels"]["io.mount-plan.job"], "job1");
        assert!(v["labels"]["io.mount-plan.plan-digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"));
        assert!(v.get("userns").is_none(), "{v}");
        assert!(v.get("resource_limits").is_none(), "{v}");
        // Nothing the plan owns can come from elsewhere.
        for key in [
            "privileged",
            "volumes",
            "volumes_from",
            "cap_add",
            "devices",
            "pidns",
        ] {
            assert!(v.get(key).is_none(), "{key}: {v}");
        }
        assert_eq!(v["cap_drop"], serde_json::json!(["ALL"]));
    }

    #[test]
    fn all_capabilities_are_dropped_and_only_the_spec_s_added() {
        let mut s = spec();
        s.cap_add.insert("setuid".parse().unwrap());
        s.cap_add.insert("CAP_SETGID".parse().unwrap());
        let v = json(
            &tr(
                &plan(),
                &s,
                &PodmanOptions::default(),
                &facts("4.3.1", true),
            )
            .unwrap(),
        );
        assert_eq!(v["cap_drop"], serde_json::json!(["ALL"]));
        assert_eq!(
            v["cap_add"],
            serde_json::json!(["CAP_SETGID", "CAP_SETUID"])
        );
    }

    #[test]
    fn networks() {
        let mut s = spec();
        s.network = "default".parse().unwrap();
        let v = json(
            &tr(
                &plan(),
                &s,
                &PodmanOptions::default(),
                &facts("4.3.1", false),
            )
            .unwrap(),
        );
        assert!(v.get("netns").is_none(), "{v}");
        s.network = "fl-net".parse().unwrap();
        let v = json(
            &tr(
                &plan(),
                &s,
                &PodmanOptions::default(),
                &facts("4.3.1", false),
            )
            .unwrap(),
        );
        assert_eq!(v["netns"], serde_json::json!({"nsmode": "bridge"}));
        assert!(v["Networks"].get("fl-net").is_some(), "{v}");
    }

    #[test]
    fn keep_id_is_rootless_only() {
        let opts = PodmanOptions {
            userns: UserNamespace::KeepId,
            ..PodmanOptions::default()
        };
        let v = json(&tr(&plan(), &spec(), &opts, &facts("4.3.1", true)).unwrap());
        assert_eq!(v["userns"], serde_json::json!({"nsmode": "keep-id"}));
        let e = tr(&plan(), &spec(), &opts, &facts("4.3.1", false)).unwrap_err();
        assert_eq!(e.rule(), "spec-unsupported");
        assert!(
            e.to_string().contains("keep-id on a rootful service"),
            "{e}"
        );
        assert_eq!(
            "keep-id".parse::<UserNamespace>().unwrap(),
            UserNamespace::KeepId
        );
        assert_eq!(
            "auto".parse::<UserNamespace>().unwrap_err().rule(),
            "user-namespace"
        );
    }

    #[test]
    fn unsupported_spec_fields_are_refused() {
        let mut s = spec();
        s.gpus = Some("all".parse().unwrap());
        let e = tr(
            &plan(),
            &s,
            &PodmanOptions::default(),
            &facts("4.3.1", false),
        )
        .unwrap_err();
        assert_eq!(e.rule(), "spec-unsupported");

        let mut s = spec();
        s.resources = Resources::new()
            .with_memory_bytes(64 << 20)
            .unwrap()
            .with_pids_limit(64)
            .unwrap();
        let e = tr(
            &plan(),
            &s,
            &PodmanOptions::default(),
            &facts("4.3.1", true),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cgroup v1"), "{e}");
        let v = json(
            &tr(
                &plan(),
                &s,
                &PodmanOptions::default(),
                &facts("4.3.1", false),
            )
            .unwrap(),
        );
        assert_eq!(v["resource_limits"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["resource_limits"]["pids"]["limit"], 64);

        let mut s = spec();
        s.command.push("a\0b".into());
        let e = tr(
            &plan(),
            &s,
            &PodmanOptions::default(),
            &facts("4.3.1", false),
        )
        .unwrap_err();
        assert_eq!(e.rule(), "value");
    }
}
