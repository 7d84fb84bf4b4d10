//! Pure translation between mount-plan types and libpod API types, and the pure reading of
//! what the service reports. No I/O: everything here is unit-tested without a service.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use mount_plan::{MountFlags, MountPlan, OciMount};
use mount_plan_launch::{
    container_labels, Availability, ExitStatus, LaunchError, LaunchSpec, Network, ObservedBind,
    ObservedContainer, ObservedNamespaces, ObservedOtherMount, ObservedTmpfs, Protection,
};
use podman_api::models::{
    ContainerMount, InspectContainerData, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources,
    Namespace, PerNetworkOptions,
};
use podman_api::opts::{ContainerCreateOpts, ImageVolumeMode};

use crate::error::PodmanError;

/// The engine kind, as [`mount_plan_launch::EngineInfo::engine`] and errors name it.
pub const ENGINE: &str = "podman";

/// Where a rootful service listens by convention.
pub const ROOTFUL_SOCKET: &str = "/run/podman/podman.sock";

/// The oldest Podman this backend drives: podman-api 0.11 speaks the libpod API v4 (it puts
/// `/v4.3.1/libpod/...` in every path), and every plan option used here (`bind`, `private`,
/// `nosuid`/`nodev`/`noexec` on binds, `ro`/`mode`/`size`/`notmpcopyup` on tmpfs, `keep-id`
/// through the API, the wait `interval`) is honoured by Podman 4.0 and later.
pub const MIN_VERSION: PodmanVersion = PodmanVersion::new(4, 0, 0);

/// The feature that [`MIN_VERSION`] gates, as [`LaunchError::ApiTooOld`] names it.
pub const MIN_VERSION_FEATURE: &str =
    "the libpod API v4 (create with OCI mounts, keep-id, wait interval)";

/// The first upstream runc release with the fix for CVE-2024-21626 (working-directory escape).
pub const RUNC_FIXED: PodmanVersion = PodmanVersion::new(1, 1, 12);

/// The tmpfs option that stops Podman from copying the image's content at the mount point
/// into the tmpfs. Podman strips it before the OCI spec, so inspect never shows it; it shows
/// `tmpcopyup` when copy-up is on.
pub const NO_COPY_UP: &str = "notmpcopyup";

/// A `major.minor.patch` version (`4.3.1`, `4.9.3-dev`, `runc version 1.1.5+ds1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodmanVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl PodmanVersion {
    /// Build a version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        PodmanVersion {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for PodmanVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for PodmanVersion {
    type Err = PodmanError;
    /// Parse the first `N.N[.N]` in `value`; anything after the numbers (`-dev`, `+ds1`) is
    /// ignored, a missing patch is 0.
    fn from_str(value: &str) -> Result<Self, PodmanError> {
        let err = || PodmanError::Version {
            value: value.to_owned(),
        };
        let start = value.find(|c: char| c.is_ascii_digit()).ok_or_else(err)?;
        let rest = &value[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let mut parts = rest[..end].split('.').filter(|p| !p.is_empty());
        let mut next = |required: bool| -> Result<u32, PodmanError> {
            match parts.next() {
                Some(p) => p.parse().map_err(|_| err()),
                None if required => Err(err()),
                None => Ok(0),
            }
        };
        Ok(PodmanVersion::new(next(true)?, next(true)?, next(false)?))
    }
}

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

/// What the service said about itself when we connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFacts {
    /// Podman's version (also its libpod API version).
    pub version: PodmanVersion,
    /// The version string as reported.
    pub version_text: String,
    /// Whether the service runs rootless.
    pub rootless: bool,
    /// `v1` or `v2`, when reported.
    pub cgroup_version: Option<String>,
    /// The OCI runtime's name (`runc`, `crun`), when reported.
    pub runtime_name: Option<String>,
    /// The OCI runtime's version, when reported.
    pub runtime_version: Option<PodmanVersion>,
    /// The OCI runtime's package, when reported (`runc_1.1.5+ds1-1+deb12u1_amd64`).
    pub runtime_package: Option<String>,
}

/// How this service honours each protection: every one natively on Podman 4.0 or later,
/// none on an older service (its API is not spoken).
pub fn availability(facts: &ServiceFacts) -> Vec<(Protection, Availability)> {
    Protection::ALL
        .into_iter()
        .map(|p| {
            let a = if facts.version >= MIN_VERSION {
                Availability::Native
            } else {
                Availability::Missing(format!(
                    "podman {} is older than {MIN_VERSION}: {MIN_VERSION_FEATURE} is not available",
                    facts.version_text
                ))
            };
            (p, a)
        })
        .collect()
}

/// Things worth a look on this service (they do not stop a launch).
pub fn warnings(facts: &ServiceFacts) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(name), Some(v)) = (&facts.runtime_name, facts.runtime_version) {
        if name == "runc" && v < RUNC_FIXED {
            out.push(format!(
                "runc {v} predates {RUNC_FIXED}, the upstream fix for CVE-2024-21626 (working-directory escape); check that the package {:?} carries the fix",
                facts.runtime_package.as_deref().unwrap_or("(not reported)")
            ));
        }
    }
    if facts.rootless {
        out.push(
            "rootless podman resolves bind sources in its own mount namespace, a copy of the host's taken when the service's pause process started: a workspace on a filesystem mounted later is not found (or the directory below that mount is used); keep W on a filesystem mounted before the service starts"
                .to_owned(),
        );
    }
    if facts.rootless && facts.cgroup_version.as_deref() == Some("v1") {
        out.push(
            "rootless podman on cgroup v1 cannot apply resource limits; launches that ask for them are refused"
                .to_owned(),
        );
    }
    out.push(
        "no-new-privileges is not set: podman-api 0.11 sends it under a misspelt key that podman ignores; every bind is mounted nosuid instead"
            .to_owned(),
    );
    out
}

/// Refuse a service older than [`MIN_VERSION`], naming its version and the feature.
pub fn check_version(facts: &ServiceFacts) -> Result<(), LaunchError> {
    if facts.version < MIN_VERSION {
        return Err(LaunchError::ApiTooOld {
            engine: ENGINE,
            engine_version: facts.version_text.clone(),
            api_version: facts.version_text.clone(),
            feature: MIN_VERSION_FEATURE,
            needed: "4.0.0",
        });
    }
    Ok(())
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

/// The mounts of `plan` in libpod form, in mount order.
pub fn container_mounts(plan: &MountPlan) -> Vec<ContainerMount> {
    plan.oci_mounts().iter().map(container_mount).collect()
}

/// The create call for `plan` running `spec` on a service described by `facts`.
///
/// The plan alone sets mounts and the working directory; the spec sets image, command,
/// environment, user, network, labels, name and resource limits; `options` sets the user
/// namespace. Image volumes are ignored (`image_volume_mode=ignore`) so that an image's
/// `VOLUME` cannot add a mount the plan does not have.
pub fn translate(
    plan: &MountPlan,
    spec: &LaunchSpec,
    options: &PodmanOptions,
    facts: &ServiceFacts,
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

    let labels: HashMap<String, String> = container_labels(plan, spec).into_iter().collect();
    let mut b = ContainerCreateOpts::builder()
        .image(spec.image.as_str())
        .mounts(container_mounts(plan))
        .work_dir(plan.workdir().as_str())
        .labels(labels)
        .image_volume_mode(ImageVolumeMode::Ignore);
    if !spec.command.is_empty() {
        b = b.command(spec.command.iter().map(String::as_str));
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
    }
}

/// Whether libpod reports image copy-up on a tmpfs (`tmpcopyup` in its options): the image's
/// files at the mount point were copied into it.
pub fn tmpfs_copies_up(options: &str) -> bool {
    options.split(',').any(|w| w == "tmpcopyup")
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
        labels: config
            .and_then(|c| c.labels.as_ref())
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        state: data.state.as_ref().and_then(|s| s.status.clone()),
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

/// The tmpfs targets that the service reports with image copy-up on.
pub fn copy_up_targets(data: &InspectContainerData) -> Vec<String> {
    let mut out: Vec<String> = data
        .host_config
        .as_ref()
        .and_then(|h| h.tmpfs.as_ref())
        .map(|t| {
            t.iter()
                .filter(|(_, v)| tmpfs_copies_up(v))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The exit status of a stopped container, from its inspect data.
pub fn exit_status(data: &InspectContainerData) -> Option<ExitStatus> {
    data.state
        .as_ref()
        .and_then(|s| s.exit_code)
        .map(|code| ExitStatus { code: code.into() })
}

/// Read the service's facts from its `version` and `info` answers.
pub fn service_facts(
    version: &podman_api::models::VersionResponse,
    info: &podman_api::models::Info,
) -> Result<ServiceFacts, PodmanError> {
    let version_text = version
        .version
        .clone()
        .or_else(|| info.version.as_ref().and_then(|v| v.version.clone()))
        .ok_or_else(|| PodmanError::Version {
            value: String::new(),
        })?;
    let host = info.host.as_ref();
    let runtime = host.and_then(|h| h.oci_runtime.as_ref());
    Ok(ServiceFacts {
        version: version_text.parse()?,
        version_text,
        rootless: host
            .and_then(|h| h.security.as_ref())
            .and_then(|s| s.rootless)
            .unwrap_or(false),
        cgroup_version: host.and_then(|h| h.cgroup_version.clone()),
        runtime_name: runtime.and_then(|r| r.name.clone()),
        runtime_version: runtime
            .and_then(|r| r.version.as_deref())
            .and_then(|v| v.lines().next())
            .and_then(|l| l.parse().ok()),
        runtime_package: runtime.and_then(|r| r.package.clone()),
    })
}

/// The socket to use when none is given: `$CONTAINER_HOST` when set (Podman's own variable);
/// else, for root, the rootful [`ROOTFUL_SOCKET`]; else `$XDG_RUNTIME_DIR/podman/podman.sock`
/// (`/run/user/<uid>` when `XDG_RUNTIME_DIR` is unset).
pub fn default_endpoint(
    container_host: Option<&str>,
    euid: u32,
    xdg_runtime_dir: Option<&str>,
) -> String {
    if let Some(host) = container_host.filter(|h| !h.is_empty()) {
        return host.to_owned();
    }
    if euid == 0 {
        return format!("unix://{ROOTFUL_SOCKET}");
    }
    match xdg_runtime_dir.filter(|d| d.starts_with('/')) {
        Some(dir) => format!("unix://{}/podman/podman.sock", dir.trim_end_matches('/')),
        None => format!("unix:///run/user/{euid}/podman/podman.sock"),
    }
}

/// The socket path of an endpoint: `unix:///abs/path` or a bare absolute path.
pub fn socket_path(endpoint: &str) -> Result<&str, PodmanError> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if !path.starts_with('/') || path.contains('\0') {
        return Err(PodmanError::Endpoint {
            value: endpoint.to_owned(),
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mount_plan::{HostPath, Layout, LayoutSpec, RootKind};
    use mount_plan_launch::{audit, Resources};
    use std::collections::BTreeSet;

    fn facts(version: &str, rootless: bool) -> ServiceFacts {
        ServiceFacts {
            version: version.parse().unwrap(),
            version_text: version.to_owned(),
            rootless,
            cgroup_version: Some("v1".into()),
            runtime_name: Some("runc".into()),
            runtime_version: Some(PodmanVersion::new(1, 1, 5)),
            runtime_package: Some("runc_1.1.5+ds1-1+deb12u1_amd64".into()),
        }
    }

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

    fn json(opts: &ContainerCreateOpts) -> serde_json::Value {
        serde_json::from_str(&opts.serialize().unwrap()).unwrap()
    }

    #[test]
    fn versions_parse() {
        assert_eq!(
            "4.3.1".parse::<PodmanVersion>().unwrap(),
            PodmanVersion::new(4, 3, 1)
        );
        assert_eq!(
            "4.9.3-dev".parse::<PodmanVersion>().unwrap(),
            PodmanVersion::new(4, 9, 3)
        );
        assert_eq!(
            "runc version 1.1.5+ds1".parse::<PodmanVersion>().unwrap(),
            PodmanVersion::new(1, 1, 5)
        );
        assert_eq!(
            "5.0".parse::<PodmanVersion>().unwrap(),
            PodmanVersion::new(5, 0, 0)
        );
        for bad in ["", "dev", "4", "x.y.z"] {
            let e = bad.parse::<PodmanVersion>().unwrap_err();
            assert_eq!(e.rule(), "version", "{bad:?}");
        }
        assert!(PodmanVersion::new(3, 4, 4) < MIN_VERSION);
        assert!(PodmanVersion::new(4, 3, 1) >= MIN_VERSION);
    }

    #[test]
    fn mounts_follow_the_plan_exactly() {
        let mounts = json(
            &translate(
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
            &translate(
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
    }

    #[test]
    fn networks() {
        let mut s = spec();
        s.network = "default".parse().unwrap();
        let v = json(
            &translate(
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
            &translate(
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
        let v = json(&translate(&plan(), &spec(), &opts, &facts("4.3.1", true)).unwrap());
        assert_eq!(v["userns"], serde_json::json!({"nsmode": "keep-id"}));
        let e = translate(&plan(), &spec(), &opts, &facts("4.3.1", false)).unwrap_err();
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
    fn old_service_is_refused_naming_version_and_feature() {
        let e = translate(
            &plan(),
            &spec(),
            &PodmanOptions::default(),
            &facts("3.4.4", false),
        )
        .unwrap_err();
        assert_eq!(e.rule(), "api-version");
        let msg = e.to_string();
        assert!(
            msg.contains("3.4.4") && msg.contains("libpod API v4") && msg.contains("4.0.0"),
            "{msg}"
        );
        assert!(availability(&facts("3.4.4", false))
            .iter()
            .all(|(_, a)| !a.is_available()));
        assert!(availability(&facts("4.3.1", true))
            .iter()
            .all(|(_, a)| *a == Availability::Native));
    }

    #[test]
    fn unsupported_spec_fields_are_refused() {
        let mut s = spec();
        s.gpus = Some("all".parse().unwrap());
        let e = translate(
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
        let e = translate(
            &plan(),
            &s,
            &PodmanOptions::default(),
            &facts("4.3.1", true),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cgroup v1"), "{e}");
        let v = json(
            &translate(
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
        let e = translate(
            &plan(),
            &s,
            &PodmanOptions::default(),
            &facts("4.3.1", false),
        )
        .unwrap_err();
        assert_eq!(e.rule(), "value");
    }

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
            assert!(copy_up_targets(&data).is_empty());
            assert_eq!(exit_status(&data), Some(ExitStatus { code: 0 }));
            let d = audit(&fixture_plan(), &o, &BTreeSet::new());
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
        assert_eq!(
            copy_up_targets(&data),
            vec!["/t".to_owned(), "/u".to_owned()]
        );
        let d = audit(&fixture_plan(), &o, &BTreeSet::new());
        let rules: BTreeSet<&str> = d.iter().map(|d| d.rule()).collect();
        for r in ["missing-mount", "unplanned-mount", "working-dir"] {
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
        assert!(tmpfs_copies_up("rw,tmpcopyup"));
        assert!(!tmpfs_copies_up("ro,notmpcopyup"));
        let t = observed_tmpfs("/t", "rw");
        assert_eq!((t.mode, t.size_bytes), (None, None));
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            default_endpoint(None, 0, Some("/run/user/0")),
            "unix:///run/podman/podman.sock"
        );
        assert_eq!(
            default_endpoint(None, 1001, Some("/run/user/1001/")),
            "unix:///run/user/1001/podman/podman.sock"
        );
        assert_eq!(
            default_endpoint(None, 1001, None),
            "unix:///run/user/1001/podman/podman.sock"
        );
        assert_eq!(
            default_endpoint(Some("unix:///x.sock"), 0, None),
            "unix:///x.sock"
        );
        assert_eq!(socket_path("unix:///run/p.sock").unwrap(), "/run/p.sock");
        assert_eq!(socket_path("/run/p.sock").unwrap(), "/run/p.sock");
        for bad in ["tcp://127.0.0.1:8080", "unix://relative", "", "ssh://h/x"] {
            assert_eq!(socket_path(bad).unwrap_err().rule(), "endpoint", "{bad}");
        }
    }

    #[test]
    fn warnings_name_what_to_check() {
        let w = warnings(&facts("4.3.1", true));
        assert!(
            w.iter()
                .any(|w| w.contains("CVE-2024-21626") && w.contains("deb12u1")),
            "{w:?}"
        );
        assert!(w.iter().any(|w| w.contains("cgroup v1")), "{w:?}");
        assert!(w.iter().any(|w| w.contains("mount namespace")), "{w:?}");
        let mut f = facts("4.3.1", false);
        f.runtime_version = Some(PodmanVersion::new(1, 1, 12));
        assert!(!warnings(&f).iter().any(|w| w.contains("CVE")));
        assert!(!warnings(&f).iter().any(|w| w.contains("mount namespace")));
    }
}
