//! Pure reading of a Pod as the API server stores it: the engine-neutral
//! [`ObservedContainer`] the driver audits, and where the Pod is in its life.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, Volume};
use mount_plan::MountFlags;
use mount_plan_k8s::names::read_metadata;
use mount_plan_k8s::{Volumes, JOB_CONTAINER};
use mount_plan_launch::{
    LaunchError, ObservedBind, ObservedContainer, ObservedNamespaces, ObservedOtherMount,
    ObservedTmpfs,
};

use crate::translate::ANNOTATION_WORKSPACE;

/// Waiting reasons that mean the image cannot be had.
const IMAGE_REASONS: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "ImageInspectError",
];
/// Waiting reasons that mean the container cannot be created or started.
const START_REASONS: [&str; 3] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// A Kubernetes quantity (`1048576`, `1Mi`, `64M`, `1e6`) in bytes; `None` when it is not a
/// whole number of bytes.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let suffixes: [(&str, u64); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    for (s, mult) in suffixes {
        if let Some(num) = q.strip_suffix(s) {
            return num.parse::<u64>().ok()?.checked_mul(mult);
        }
    }
    if let Some((m, e)) = q.split_once(['e', 'E']) {
        return m
            .parse::<u64>()
            .ok()?
            .checked_mul(10u64.checked_pow(e.parse().ok()?)?);
    }
    q.parse().ok()
}

fn flags_of(options: Option<&Vec<String>>) -> Option<MountFlags> {
    options.map(|o| MountFlags {
        nosuid: o.iter().any(|w| w == "nosuid"),
        nodev: o.iter().any(|w| w == "nodev"),
        noexec: o.iter().any(|w| w == "noexec"),
    })
}

/// The host path a workspace-volume or extra-volume mount stands for: `W/<subPath>` for the
/// workspace claim (W from the Pod's annotation), the hostPath (joined with the subPath), or
/// the extra mount's source its claim was given for. `None`: a volume we did not write.
fn host_source(
    volume: &Volume,
    sub_path: Option<&str>,
    w: Option<&str>,
    volumes: &Volumes,
) -> Option<String> {
    let join = |base: &str| match sub_path {
        Some(s) if base == "/" => format!("/{s}"),
        Some(s) => format!("{base}/{s}"),
        None => base.to_owned(),
    };
    if let Some(h) = &volume.host_path {
        return matches!(volumes, Volumes::HostPath).then(|| join(&h.path));
    }
    let claim = &volume.persistent_volume_claim.as_ref()?.claim_name;
    let Volumes::Claims { workspace, extra } = volumes else {
        return None;
    };
    if claim == workspace.as_str() && volume.name == mount_plan_k8s::WORKSPACE_VOLUME {
        return w.map(join);
    }
    let (source, _) = extra.iter().find(|(_, c)| c.as_str() == claim)?;
    Some(join(source))
}

fn job_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == JOB_CONTAINER)
}

/// The Pod's state in the driver's words: `created` (gated or pending), `running`,
/// `exited` (succeeded or failed), `unknown`.
pub fn state(pod: &Pod) -> &'static str {
    let gated = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty());
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        _ if gated => "created",
        None | Some("Pending") => "created",
        Some("Running") => "running",
        Some("Succeeded" | "Failed") => "exited",
        Some(_) => "unknown",
    }
}

/// The job container's exit code, once it has terminated.
pub fn exit_code(pod: &Pod) -> Option<i64> {
    let t = job_status(pod)?.state.as_ref()?.terminated.as_ref()?;
    Some(i64::from(t.exit_code))
}

/// Map a stored Pod to what the driver audits. `volumes` is how this backend writes W and
/// the extra mounts, so a subPath of the workspace claim reads back as `W/<subPath>`.
///
/// - The root emptyDir (memory-backed) is the tmpfs; its mode is the one the container can
///   use: `emptyDir.mode` (0777 when unset), without write bits on a read-only mount (where
///   they grant nothing).
/// - A mount with a subPath is non-recursive (the kubelet binds a subPath without
///   `MS_REC`); a whole-volume mount is bound recursively by the runtime.
/// - Propagation `None` (or unset) is reported as `private`.
/// - Mount flags are the `bindMountOptions`, `None` where none are written.
pub fn observe(pod: &Pod, volumes: &Volumes) -> ObservedContainer {
    let meta = &pod.metadata;
    let labels = read_metadata(meta.labels.as_ref(), meta.annotations.as_ref());
    let w = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_WORKSPACE))
        .map(String::as_str);
    let spec = pod.spec.clone().unwrap_or_default();
    let job = spec
        .containers
        .iter()
        .find(|c| c.name == JOB_CONTAINER)
        .cloned()
        .unwrap_or_default();
    let sc = job.security_context.clone().unwrap_or_default();
    let psc = spec.security_context.clone().unwrap_or_default();
    let find_volume = |name: &str| spec.volumes.iter().flatten().find(|v| v.name == name);

    let mut binds = Vec::new();
    let mut tmpfs = Vec::new();
    let mut other_mounts = Vec::new();
    for m in job.volume_mounts.iter().flatten() {
        let read_only = m.read_only == Some(true);
        let flags = flags_of(m.bind_mount_options.as_ref());
        let Some(volume) = find_volume(&m.name) else {
            other_mounts.push(ObservedOtherMount {
                kind: "missing-volume".into(),
                source: Some(m.name.clone()),
                target: m.mount_path.clone(),
            });
            continue;
        };
        // The gate's file from its own volume (filled by the gate's init container): the audit
        // accepts it at the gate's path, read-only, as on every engine.
        if m.name == mount_plan_k8s::GATE_VOLUME && volume.empty_dir.is_some() {
            binds.push(ObservedBind {
                source: format!(
                    "emptyDir {}/{}",
                    m.name,
                    m.sub_path.as_deref().unwrap_or("")
                ),
                target: m.mount_path.clone(),
                read_only,
                propagation: Some("private".into()),
                non_recursive: Some(true),
                flags,
            });
            continue;
        }
        if let Some(e) = volume
            .empty_dir
            .as_ref()
            .filter(|e| e.medium.as_deref() == Some("Memory"))
        {
            let mode = e.mode.map_or(0o777, |m| m as u32);
            tmpfs.push(ObservedTmpfs {
                target: m.mount_path.clone(),
                read_only: Some(read_only),
                mode: Some(if read_only { mode & !0o222 } else { mode }),
                size_bytes: e.size_limit.as_ref().and_then(|q| quantity_bytes(&q.0)),
                flags,
                copies_up: Some(false),
            });
            continue;
        }
        let sub_path = m.sub_path.as_deref().filter(|s| !s.is_empty());
        match host_source(volume, sub_path, w, volumes) {
            Some(source) => binds.push(ObservedBind {
                source,
                target: m.mount_path.clone(),
                read_only,
                propagation: match m.mount_propagation.as_deref() {
                    None | Some("None") => Some("private".into()),
                    Some(p) => Some(p.to_ascii_lowercase()),
                },
                non_recursive: Some(sub_path.is_some()),
                flags,
            }),
            None => other_mounts.push(ObservedOtherMount {
                kind: "volume".into(),
                source: Some(volume.name.clone()),
                target: m.mount_path.clone(),
            }),
        }
    }

    let mut security_opt = Vec::new();
    for profile in [sc.seccomp_profile.as_ref(), psc.seccomp_profile.as_ref()]
        .into_iter()
        .flatten()
    {
        if profile.type_ == "Unconfined" {
            security_opt.push("seccomp=unconfined".into());
        }
    }
    let host = |on: Option<bool>| {
        if on == Some(true) {
            "host".to_owned()
        } else {
            String::new()
        }
    };
    let user =
        sc.run_as_user
            .or(psc.run_as_user)
            .map(|u| match sc.run_as_group.or(psc.run_as_group) {
                Some(g) => format!("{u}:{g}"),
                None => u.to_string(),
            });
    ObservedContainer {
        id: meta.name.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        image: job.image.clone().unwrap_or_default(),
        // The kubelet reports a repository digest (`imageID`), not an image id: not compared.
        image_id: None,
        labels,
        state: Some(state(pod).to_owned()),
        exit_code: exit_code(pod),
        first_pid: None,
        working_dir: job.working_dir.clone(),
        user,
        binds,
        tmpfs: Some(tmpfs),
        other_mounts,
        volumes_from: Vec::new(),
        privileged: sc.privileged == Some(true),
        no_new_privileges: sc.allow_privilege_escalation == Some(false),
        cap_add: sc
            .capabilities
            .as_ref()
            .and_then(|c| c.add.clone())
            .unwrap_or_default(),
        cap_drop: sc
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.clone())
            .unwrap_or_default(),
        cap_bounding: None,
        devices: job
            .volume_devices
            .iter()
            .flatten()
            .map(|d| d.device_path.clone())
            .collect(),
        security_opt,
        namespaces: ObservedNamespaces {
            network: host(spec.host_network),
            pid: host(spec.host_pid),
            ipc: host(spec.host_ipc),
            uts: String::new(),
            userns: String::new(),
        },
    }
}

/// Where a Pod is, for `wait`.
#[derive(Debug)]
pub enum Progress {
    /// Not finished; `started`: the job container has run or runs.
    Waiting {
        /// Whether the job container has started.
        started: bool,
    },
    /// The job container exited with this code.
    Exited(i64),
    /// It will not run, or stopped without an exit code of its own.
    Failed(LaunchError),
}

fn waiting_reason(s: &ContainerStatus) -> Option<(&str, &str)> {
    let w = s.state.as_ref()?.waiting.as_ref()?;
    Some((w.reason.as_deref()?, w.message.as_deref().unwrap_or("")))
}

/// Judge a Pod's progress from its status.
pub fn progress(pod: &Pod) -> Progress {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for s in statuses.clone() {
        if let Some((reason, message)) = waiting_reason(s) {
            if IMAGE_REASONS.contains(&reason) {
                return Progress::Failed(LaunchError::ImageNotFound {
                    image: s.image.clone(),
                    source: format!("kubernetes: container {:?} of Pod {name:?} is waiting: {reason}: {message}", s.name).into(),
                });
            }
            if START_REASONS.contains(&reason) {
                return Progress::Failed(LaunchError::Start {
                    container: name,
                    source: format!(
                        "kubernetes: container {:?} is waiting: {reason}: {message}",
                        s.name
                    )
                    .into(),
                });
            }
        }
    }
    for s in status.init_container_statuses.iter().flatten() {
        if let Some(t) = s.state.as_ref().and_then(|st| st.terminated.as_ref()) {
            if t.exit_code != 0 {
                return Progress::Failed(LaunchError::Start {
                    container: name,
                    source: format!(
                        "kubernetes: init container {:?} (it creates the mountpoints) exited {}: {}",
                        s.name,
                        t.exit_code,
                        t.message.as_deref().or(t.reason.as_deref()).unwrap_or("")
                    )
                    .into(),
                });
            }
        }
    }
    if let Some(code) = exit_code(pod) {
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return Progress::Exited(code);
        }
    }
    if status.phase.as_deref() == Some("Failed") {
        return Progress::Failed(LaunchError::Engine {
            op: "wait",
            container: name,
            source: format!(
                "kubernetes: the Pod failed without an exit status of its job: {}: {}",
                status.reason.as_deref().unwrap_or("no reason given"),
                status.message.as_deref().unwrap_or("")
            )
            .into(),
        });
    }
    let started = job_status(pod)
        .and_then(|s| s.state.as_ref())
        .is_some_and(|st| st.running.is_some() || st.terminated.is_some());
    Progress::Waiting { started }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("1048576"), Some(1 << 20));
        assert_eq!(quantity_bytes("1Mi"), Some(1 << 20));
        assert_eq!(quantity_bytes("64M"), Some(64_000_000));
        assert_eq!(quantity_bytes("1e6"), Some(1_000_000));
        assert_eq!(quantity_bytes("1.5Gi"), None);
        assert_eq!(quantity_bytes("x"), None);
    }
}
