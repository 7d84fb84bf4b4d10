//! The plan as a Pod.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, HostPathVolumeSource,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, SeccompProfile,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mount_plan::{BindMount, BindRole, MountPlan};
use mount_plan_spec::{Capability, User};

use crate::error::PodError;
use crate::names::{pod_name, split_metadata, ClaimName};
use crate::version::Target;

/// The job container's name in the Pod.
pub const JOB_CONTAINER: &str = "job";
/// The init container that creates the nested mountpoints in a read-only root.
pub const INIT_CONTAINER: &str = "mountpoints";
/// The volume holding the container root R (a memory-backed emptyDir).
pub const ROOT_VOLUME: &str = "workspace-root";
/// The volume holding the workspace W.
pub const WORKSPACE_VOLUME: &str = "workspace";
/// The init container that copies the gate into [`GATE_VOLUME`] (it mounts nothing of W).
pub const GATE_CONTAINER: &str = "gate";
/// The memory-backed emptyDir the gate is copied into; its one file is mounted read-only in
/// the job container at `/.mount-plan/gate`.
pub const GATE_VOLUME: &str = "mount-plan-gate";
/// Where the init container mounts the gate volume: the directory of the gate's path
/// (`/.mount-plan/gate`), outside R.
pub const GATE_DIR: &str = "/.mount-plan";
/// Where a gate image holds the static gate executable; the init container runs it as
/// `GATE_IN_IMAGE install /.mount-plan/gate` (the gate copies itself).
pub const GATE_IN_IMAGE: &str = "/mount-plan-gate";

/// The in-container gate of a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodGate {
    /// An image holding the static gate at [`GATE_IN_IMAGE`] (a non-root user: the Pod runs
    /// with `runAsNonRoot`).
    pub image: String,
    /// The job container's whole command: the gate (`/.mount-plan/gate`), its checks, `--`,
    /// then the job's command. Kubernetes replaces the image's entrypoint with `command`, so
    /// the job's command must be given in full.
    pub command: Vec<String>,
}

/// Where the Pod's host directories come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Volumes {
    /// W is a PersistentVolumeClaim (its root holds what W holds); each extra mount is a
    /// claim too, given by its host source path. Allowed at the Restricted level.
    Claims {
        /// The workspace's claim.
        workspace: ClaimName,
        /// A claim per extra mount, by the extra mount's host source path.
        extra: BTreeMap<String, ClaimName>,
    },
    /// W and every extra mount source are `hostPath` volumes of type `Directory` on the node.
    /// Forbidden from the Baseline level upward: only where a site asks for it.
    HostPath,
}

/// The job container: what the caller chooses (the plan owns mounts and working directory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobContainer {
    /// The image; `None` leaves it out (the API server then refuses the Pod until it is set).
    pub image: Option<String>,
    /// The command's arguments, in place of the image's CMD (the image's ENTRYPOINT stays, as
    /// on Docker and Podman).
    pub args: Vec<String>,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// The numeric user and group (`runAsUser`, `runAsGroup`); without it the image's user
    /// runs, and `runAsNonRoot` makes the kubelet refuse to start an image whose user is root.
    pub user: Option<User>,
    /// Capabilities added back after `ALL` is dropped (default: none). Pod Security's
    /// Restricted level allows only `NET_BIND_SERVICE`; the Baseline level does not allow
    /// `NET_RAW`.
    pub cap_add: BTreeSet<Capability>,
}

/// Everything besides the plan that a Pod needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOptions {
    /// The cluster the Pod is written for.
    pub target: Target,
    /// Where W and the extra mounts come from.
    pub volumes: Volumes,
    /// The Pod's name (default: [`pod_name`] of the job).
    pub name: Option<String>,
    /// Labels and annotations (see [`crate::names`] for which become labels).
    pub metadata: BTreeMap<String, String>,
    /// The job container.
    pub container: JobContainer,
    /// The image of the init container that creates the mountpoints in a read-only root
    /// (default: the job's image; it needs `mkdir`).
    pub init_image: Option<String>,
    /// The in-container gate; `None`: the job container runs the image's entrypoint with
    /// [`JobContainer::args`], unchecked.
    pub gate: Option<PodGate>,
}

impl PodOptions {
    /// Options for a Pod with W from claim `workspace`, for the default target.
    pub fn with_claim(workspace: ClaimName) -> Self {
        PodOptions {
            target: Target::default(),
            volumes: Volumes::Claims {
                workspace,
                extra: BTreeMap::new(),
            },
            name: None,
            metadata: BTreeMap::new(),
            container: JobContainer::default(),
            init_image: None,
            gate: None,
        }
    }
}

/// Every container drops `ALL` capabilities and adds back only `add` (the names without
/// `CAP_`, as Kubernetes takes them).
fn security_context(add: &BTreeSet<Capability>) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: (!add.is_empty()).then(|| add.iter().map(|c| c.as_str().to_owned()).collect()),
        }),
        ..SecurityContext::default()
    }
}

fn volume_mount(
    target: &Target,
    volume: &str,
    path: &str,
    sub_path: Option<&str>,
    bind: Option<&BindMount>,
    read_only: bool,
) -> VolumeMount {
    let flags = bind.map(BindMount::flags);
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        sub_path: sub_path.map(str::to_owned),
        read_only: read_only.then_some(true),
        // Read-only and recursive: a mount below the source on the node is read-only too.
        recursive_read_only: (read_only && bind.is_some() && target.recursive_read_only())
            .then(|| "Enabled".to_owned()),
        mount_propagation: Some("None".into()),
        bind_mount_options: flags
            .filter(|_| target.bind_mount_options())
            .map(|f| f.words().map(str::to_owned).collect::<Vec<_>>())
            .filter(|w| !w.is_empty()),
        ..VolumeMount::default()
    }
}

/// The last component of a normalised absolute path.
fn last_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The parent of a normalised absolute path (`/` for `/x`).
fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Render `plan` as a Pod: see the crate documentation for what each field does and why.
pub fn render_pod(plan: &MountPlan, options: &PodOptions) -> Result<Pod, PodError> {
    let target = &options.target;
    let user = options.container.user;
    if let Some(u) = user.filter(|u| u.uid() == 0) {
        return Err(PodError::RunAsRoot { uid: u.uid() });
    }
    let root = plan.root_tmpfs();
    let r = plan.container_root().as_str();

    // The root: a memory-backed, size-capped emptyDir.
    let mut volumes = vec![Volume {
        name: ROOT_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity(root.size_bytes().to_string())),
            // A read-only root keeps emptyDir's 0777: the init container (a non-root user)
            // must be able to create the mountpoints, and read-only nothing can be created.
            mode: (target.empty_dir_mode() && !root.read_only()).then_some(root.mode() as i32),
        }),
        ..Volume::default()
    }];
    let workspace_volume = match &options.volumes {
        Volumes::Claims { workspace, .. } => Volume {
            name: WORKSPACE_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: workspace.as_str().into(),
                read_only: None,
            }),
            ..Volume::default()
        },
        Volumes::HostPath => Volume {
            name: WORKSPACE_VOLUME.into(),
            host_path: Some(HostPathVolumeSource {
                path: plan.workspace().as_str().into(),
                type_: Some("Directory".into()),
            }),
            ..Volume::default()
        },
    };
    volumes.push(workspace_volume);

    let mut mounts = vec![VolumeMount {
        bind_mount_options: target
            .bind_mount_options()
            .then(|| root.flags().words().map(str::to_owned).collect::<Vec<_>>()),
        ..volume_mount(target, ROOT_VOLUME, r, None, None, root.read_only())
    }];
    let mut nested = Vec::new();
    let mut extra_index = 0;
    let mut used_claims = Vec::new();
    for bind in plan.binds() {
        let path = bind.target().as_str();
        match bind.role() {
            BindRole::Shared | BindRole::Job => {
                // W/<name> as the subPath <name> of the workspace volume.
                let name = last_of(bind.source().as_str());
                nested.push(path.to_owned());
                mounts.push(volume_mount(
                    target,
                    WORKSPACE_VOLUME,
                    path,
                    Some(name),
                    Some(bind),
                    bind.read_only(),
                ));
            }
            BindRole::Extra => {
                let volume = format!("extra-{extra_index}");
                extra_index += 1;
                let source = bind.source().as_str();
                let v = match &options.volumes {
                    Volumes::Claims { extra, .. } => {
                        let claim =
                            extra
                                .get(source)
                                .ok_or_else(|| PodError::ExtraMountSource {
                                    source_path: source.to_owned(),
                                    target: path.to_owned(),
                                })?;
                        used_claims.push(source);
                        Volume {
                            name: volume.clone(),
                            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                                claim_name: claim.as_str().into(),
                                read_only: bind.read_only().then_some(true),
                            }),
                            ..Volume::default()
                        }
                    }
                    // The source's parent as the volume and its last component as the
                    // subPath: the kubelet binds a subPath non-recursively, a whole hostPath
                    // volume recursively.
                    Volumes::HostPath => Volume {
                        name: volume.clone(),
                        host_path: Some(HostPathVolumeSource {
                            path: parent_of(source).into(),
                            type_: Some("Directory".into()),
                        }),
                        ..Volume::default()
                    },
                };
                let sub_path = match &options.volumes {
                    Volumes::HostPath => Some(last_of(source)),
                    Volumes::Claims { .. } => None,
                };
                volumes.push(v);
                mounts.push(volume_mount(
                    target,
                    &volume,
                    path,
                    sub_path,
                    Some(bind),
                    bind.read_only(),
                ));
            }
        }
    }
    if let Volumes::Claims { extra, .. } = &options.volumes {
        if let Some(unused) = extra.keys().find(|k| !used_claims.contains(&k.as_str())) {
            return Err(PodError::UnusedExtraClaim {
                source_path: unused.clone(),
            });
        }
    }

    let image = options.container.image.clone();
    // The gate first: an init container that mounts nothing of W copies it into a
    // memory-backed emptyDir, which the job container mounts read-only outside R.
    let mut init = Vec::new();
    if let Some(gate) = &options.gate {
        volumes.push(Volume {
            name: GATE_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity("8Mi".into())),
                mode: None,
            }),
            ..Volume::default()
        });
        init.push(Container {
            name: GATE_CONTAINER.into(),
            image: Some(gate.image.clone()),
            command: Some(vec![
                GATE_IN_IMAGE.to_owned(),
                "install".to_owned(),
                format!("{GATE_DIR}/gate"),
            ]),
            security_context: Some(security_context(&BTreeSet::new())),
            volume_mounts: Some(vec![volume_mount(
                target,
                GATE_VOLUME,
                GATE_DIR,
                None,
                None,
                false,
            )]),
            ..Container::default()
        });
        // The one file, read-only, at the gate's path (a subPath of a file: nothing else of the
        // volume is visible to the job).
        mounts.push(volume_mount(
            target,
            GATE_VOLUME,
            &format!("{GATE_DIR}/gate"),
            Some("gate"),
            None,
            true,
        ));
    }
    // A read-only root cannot get mountpoints created in it by the runtime (EROFS on runc):
    // an init container creates them in the same volume, mounted read-write for it alone.
    let mountpoints = (root.read_only() && !nested.is_empty()).then(|| {
        let mut command = vec!["mkdir".to_owned(), "-p".to_owned()];
        command.extend(nested.iter().cloned());
        Container {
            name: INIT_CONTAINER.into(),
            image: options.init_image.clone().or_else(|| image.clone()),
            command: Some(command),
            security_context: Some(security_context(&BTreeSet::new())),
            volume_mounts: Some(vec![volume_mount(
                target,
                ROOT_VOLUME,
                r,
                None,
                None,
                false,
            )]),
            ..Container::default()
        }
    });
    init.extend(mountpoints);
    let init_containers = (!init.is_empty()).then_some(init);

    let c = &options.container;
    let (command, args) = match &options.gate {
        Some(gate) => (Some(gate.command.clone()), None),
        None => (None, (!c.args.is_empty()).then(|| c.args.clone())),
    };
    let job = Container {
        name: JOB_CONTAINER.into(),
        image,
        command,
        args,
        env: (!c.env.is_empty()).then(|| {
            c.env
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.clone(),
                    value: Some(v.clone()),
                    value_from: None,
                })
                .collect()
        }),
        working_dir: Some(plan.workdir().as_str().into()),
        security_context: Some(security_context(&c.cap_add)),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    let (labels, annotations) = split_metadata(&options.metadata)?;
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(
                options
                    .name
                    .clone()
                    .unwrap_or_else(|| pod_name(plan.job().as_str(), None)),
            ),
            labels: (!labels.is_empty()).then_some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: user.map(|u| i64::from(u.uid())),
                run_as_group: user.and_then(|u| u.gid()).map(i64::from),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            init_containers,
            containers: vec![job],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mount_plan::{HostPath, Layout};

    fn capabilities(pod: &Pod) -> Vec<Capabilities> {
        let spec = pod.spec.as_ref().unwrap();
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|c| {
                c.security_context
                    .as_ref()
                    .unwrap()
                    .capabilities
                    .clone()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn every_container_drops_all_and_the_job_adds_only_its_own() {
        let layout = Layout::default();
        let plan = layout
            .plan(
                &HostPath::parse("/srv/w").unwrap(),
                &layout.job("j1").unwrap(),
            )
            .unwrap();
        let mut options = PodOptions::with_claim("ws".parse().unwrap());
        let pod = render_pod(&plan, &options).unwrap();
        let caps = capabilities(&pod);
        assert_eq!(caps.len(), 2, "init and job");
        for c in &caps {
            assert_eq!(c.drop, Some(vec!["ALL".to_owned()]));
            assert_eq!(c.add, None);
        }
        options.container.cap_add = BTreeSet::from([
            "cap_net_bind_service".parse().unwrap(),
            "CHOWN".parse().unwrap(),
        ]);
        let caps = capabilities(&render_pod(&plan, &options).unwrap());
        assert_eq!(caps[0].add, None, "the init container gets none");
        assert_eq!(caps[1].drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(
            caps[1].add,
            Some(vec!["CHOWN".to_owned(), "NET_BIND_SERVICE".to_owned()])
        );
    }

    #[test]
    fn the_gate_runs_first_read_only_on_every_version() {
        use crate::version::{K8sVersion, Target};
        let layout = Layout::default();
        let plan = layout
            .plan(
                &HostPath::parse("/srv/w").unwrap(),
                &layout.job("j1").unwrap(),
            )
            .unwrap();
        let command: Vec<String> = ["/.mount-plan/gate", "v2", "n", "--", "python", "train.py"]
            .map(String::from)
            .to_vec();
        for v in K8sVersion::all() {
            let mut options = PodOptions::with_claim("ws".parse().unwrap());
            options.target = Target::new(v, []).unwrap();
            options.container.args = vec!["ignored".into()];
            options.gate = Some(PodGate {
                image: "site/mount-plan-gate:1".into(),
                command: command.clone(),
            });
            let pod = render_pod(&plan, &options).unwrap();
            let spec = pod.spec.unwrap();
            let init = spec.init_containers.unwrap();
            // The gate's init container first; it mounts its volume and nothing of W.
            assert_eq!(init[0].name, GATE_CONTAINER, "{v}");
            assert_eq!(init[0].image.as_deref(), Some("site/mount-plan-gate:1"));
            assert_eq!(
                init[0].command.as_deref(),
                Some(&["/mount-plan-gate", "install", "/.mount-plan/gate"].map(String::from)[..])
            );
            let init_mounts = init[0].volume_mounts.as_ref().unwrap();
            assert!(
                init_mounts.iter().all(|m| m.name == GATE_VOLUME),
                "{v}: {init_mounts:?}"
            );
            assert_eq!(init[1].name, INIT_CONTAINER, "{v}");
            // The job container runs the gate, which runs the job's command.
            let job = &spec.containers[0];
            assert_eq!(job.command.as_ref(), Some(&command), "{v}");
            assert_eq!(job.args, None, "{v}: the command is whole");
            let gate_mount = job
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == GATE_VOLUME)
                .unwrap();
            assert_eq!(gate_mount.mount_path, "/.mount-plan/gate", "{v}");
            assert_eq!(gate_mount.sub_path.as_deref(), Some("gate"), "{v}");
            assert_eq!(
                gate_mount.read_only,
                Some(true),
                "{v}: the gate is read-only"
            );
            let volume = spec
                .volumes
                .iter()
                .flatten()
                .find(|vol| vol.name == GATE_VOLUME)
                .unwrap();
            let e = volume.empty_dir.as_ref().unwrap();
            assert_eq!(e.medium.as_deref(), Some("Memory"), "{v}");
        }
        // Without a gate: the image's entrypoint with the args, as before.
        let pod = render_pod(&plan, &PodOptions::with_claim("ws".parse().unwrap())).unwrap();
        let spec = pod.spec.unwrap();
        assert_eq!(spec.containers[0].command, None);
        assert!(spec
            .init_containers
            .unwrap()
            .iter()
            .all(|c| c.name != GATE_CONTAINER));
    }
}
