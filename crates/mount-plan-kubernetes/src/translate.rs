//! Pure translation of a [`CreateRequest`] into the Pod to create.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSchedulingGate, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use mount_plan_k8s::names::pod_name;
use mount_plan_k8s::{render_pod, JobContainer, PodOptions, Target, Volumes};
use mount_plan_launch::identity::LABEL_LAUNCH;
use mount_plan_launch::{CreateRequest, LaunchError, Network};

/// The scheduling gate every Pod is created with: the Pod is not scheduled (so nothing runs)
/// until `start` removes it, after the driver has audited what the API server stored.
pub const AUDIT_GATE: &str = "io.mount-plan/audit";
/// Annotation carrying W as the plan names it: the audit maps a subPath of the workspace
/// claim back to `W/<subPath>` through it.
pub const ANNOTATION_WORKSPACE: &str = "io.mount-plan.workspace";
/// How many characters of the launch id end the Pod name.
const NAME_SUFFIX: usize = 10;

/// What the backend adds to every Pod: the cluster target, the volumes, the init image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSettings {
    /// The cluster the Pods are written for.
    pub target: Target,
    /// Where W and the extra mounts come from.
    pub volumes: Volumes,
    /// The init container's image (default: the job's).
    pub init_image: Option<String>,
    /// An image holding the static gate at [`mount_plan_k8s::GATE_IN_IMAGE`]; `None`: the
    /// protection `gate` is missing, and a launch is refused unless it accepts that.
    pub gate_image: Option<String>,
}

/// The mode an emptyDir gets when the target cannot set one (`emptyDir.mode` is alpha in
/// 1.37): what the gate must accept for R there.
pub const EMPTY_DIR_MODE: u32 = 0o777;

/// The job container's command with the gate first: its checks for a node (device numbers
/// are the node's: inodes must match and W's binds share one filesystem), R's mode as the
/// target can give it, then the launch's command, which must be given in full (Kubernetes
/// replaces the image's entrypoint with `command`, and the launcher does not read the image).
pub fn gate_command(
    request: &CreateRequest<'_>,
    target: &mount_plan_k8s::Target,
) -> Result<Vec<String>, LaunchError> {
    let plan = request.plan.plan();
    let root = plan.root_tmpfs();
    let mut gate = request.gate.clone().node_local_devices();
    if root.read_only() || !target.empty_dir_mode() {
        gate = gate.accepting_root_mode(EMPTY_DIR_MODE);
    }
    if request.spec.command.is_empty() {
        return Err(unsupported(
            "a launch without a command: the gate runs first and Kubernetes replaces the image's entrypoint with the Pod's command, so give the whole command (the image's entrypoint is not read)",
        ));
    }
    let mut command = gate.entrypoint().to_vec();
    command.extend(request.spec.command.iter().cloned());
    Ok(command)
}

fn unsupported(what: impl Into<String>) -> LaunchError {
    LaunchError::SpecUnsupported {
        engine: "kubernetes",
        what: what.into(),
    }
}

/// The Pod for `request`, gated until `start`.
pub fn translate(request: &CreateRequest<'_>, settings: &PodSettings) -> Result<Pod, LaunchError> {
    let plan = request.plan.plan();
    let spec = request.spec;
    match &spec.network {
        Network::Default => {}
        Network::None => {
            return Err(unsupported(
                "network \"none\": a Pod always has the cluster network; ask for the default network (--network default) and isolate it with a NetworkPolicy",
            ))
        }
        other => return Err(unsupported(format!("network {other:?}: a Pod cannot join a named network"))),
    }
    if spec.gpus.is_some() {
        return Err(unsupported(
            "GPUs (request them through the Pod's resources instead)",
        ));
    }
    if let Some(pids) = spec.resources.pids_limit() {
        return Err(unsupported(format!(
            "a pids limit ({pids}): it is set per node, not per Pod"
        )));
    }
    let suffix = request
        .labels
        .get(LABEL_LAUNCH)
        .map(|id| id.chars().take(NAME_SUFFIX).collect::<String>());
    let name = match &spec.name {
        Some(n) => {
            let n = n.as_str();
            let dns_label = n.len() <= 63
                && n.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !n.starts_with('-')
                && !n.ends_with('-');
            if !dns_label {
                return Err(unsupported(format!(
                    "the name {n:?}: a Pod name is lowercase letters, digits and `-`, at most 63"
                )));
            }
            n.to_owned()
        }
        None => pod_name(plan.job().as_str(), suffix.as_deref()),
    };
    let mut metadata: BTreeMap<String, String> = request.labels.clone();
    metadata.insert(
        ANNOTATION_WORKSPACE.into(),
        plan.workspace().as_str().into(),
    );
    let options = PodOptions {
        target: settings.target.clone(),
        volumes: settings.volumes.clone(),
        name: Some(name),
        metadata,
        container: JobContainer {
            image: Some(spec.image.to_string()),
            args: spec.command.clone(),
            env: spec
                .env
                .iter()
                .map(|e| (e.key().to_owned(), e.value().to_owned()))
                .collect(),
            user: spec.user,
            cap_add: spec.cap_add.clone(),
        },
        init_image: settings.init_image.clone(),
        gate: match &settings.gate_image {
            Some(image) => Some(mount_plan_k8s::PodGate {
                image: image.clone(),
                command: gate_command(request, &settings.target)?,
            }),
            None => None,
        },
    };
    let mut pod = render_pod(plan, &options).map_err(|e| unsupported(e.to_string()))?;
    let pod_spec = pod.spec.as_mut().expect("a rendered Pod has a spec");
    pod_spec.scheduling_gates = Some(vec![PodSchedulingGate {
        name: AUDIT_GATE.into(),
    }]);
    let mut limits = BTreeMap::new();
    if let Some(bytes) = spec.resources.memory_bytes() {
        limits.insert("memory".to_owned(), Quantity(bytes.to_string()));
    }
    if let Some(nano) = spec.resources.nano_cpus() {
        limits.insert(
            "cpu".to_owned(),
            Quantity(format!("{}m", nano.div_ceil(1_000_000))),
        );
    }
    if !limits.is_empty() {
        pod_spec.containers[0].resources = Some(ResourceRequirements {
            limits: Some(limits),
            ..ResourceRequirements::default()
        });
    }
    Ok(pod)
}
