//! # mount-plan-k8s: the plan as a Kubernetes Pod
//!
//! **Guarantee.** [`render_pod`] turns a [`MountPlan`] into a Pod whose job container sees
//! the plan and nothing else of the workspace:
//!
//! - the root R is a memory-backed `emptyDir` with the plan's size cap as `sizeLimit`, mounted
//!   **read-only** (or read-write for a scratch root);
//! - each shared directory is the read-only `subPath` `<name>` of the workspace volume at
//!   `R/<name>`, with `recursiveReadOnly: Enabled` where the target version has it (GA in 1.33,
//!   on by default from 1.31): subPath binds are non-recursive, and what might still appear
//!   below is read-only too;
//! - the job directory is the read-write `subPath` J at R/J, the working directory;
//! - every mount has `mountPropagation: None`;
//! - `restartPolicy: Never`, `automountServiceAccountToken: false`, `enableServiceLinks:
//!   false`; every container has `allowPrivilegeEscalation: false` and drops ALL
//!   capabilities; the Pod has `runAsNonRoot: true` and seccomp `RuntimeDefault`; no `fsGroup`
//!   (the kubelet would chown the whole shared volume). The Pod passes the Pod Security
//!   Standards' Restricted level (a test encodes its rules) unless hostPath volumes are asked
//!   for ([`Volumes::HostPath`]).
//!
//! **The read-only root with nested mountpoints.** A read-only `emptyDir` at R with subPath
//! mounts below it fails on runc: the runtime must create R/startup, R/local, R/J inside a bind
//! it already made read-only (EROFS; kubernetes#121294). Of the two ways around it, this crate
//! uses an **init container** that mounts the same volume read-write and creates the
//! mountpoints (`mkdir -p`), rather than an empty `downwardAPI` volume as the root: only an
//! `emptyDir` takes the plan's size cap (and, from 1.37, a mode), R then holds exactly the
//! mountpoints (the downwardAPI atomic writer leaves `..data` entries in it), and one volume
//! type serves both root policies. The cost: the init container needs an image with `mkdir`
//! (the job's own by default, under the same user and security context, with nothing of W
//! mounted).
//!
//! **What a version cannot express** is reported, never silently dropped:
//! [`Target::availability`] says, per protection, how a Pod for that version honours it, in
//! the same terms as the Docker and Podman backends, so the launch driver refuses the same
//! plans (noexec on binds needs `bindMountOptions`: 1.37 with an alpha gate). Alpha fields are
//! written only when the caller says their gate is on: an API server without the gate drops
//! them without an error.
//!
//! **Limits.** Pure: no client, no IO, no clock. W's identity pins cannot travel to a node the
//! launcher cannot reach; the kubelet's own subPath checks (no `..`, no escaping symlink) stand
//! in front, and do not refuse a symlink that stays inside the volume. The PVC's root must hold
//! what W holds. Nothing here was run on a cluster.
//!
//! **Why a crate of its own.** `k8s-openapi` is large (about 25 s of CPU to build here, kube
//! and its TLS stack about 3 minutes more): keeping it
//! out of the core and out of the CLI's default build keeps the README's first command fast;
//! the CLI gets this crate and the backend behind its `kubernetes` feature. `k8s-openapi` is
//! pinned to one version feature (`v1_37`, the newest it knows): its types only carry the
//! JSON; what a target version can express is decided by [`Target`].
//!
//! ```
//! use mount_plan::{HostPath, Layout};
//! use mount_plan_k8s::{render_pod, to_json, PodOptions};
//!
//! let layout = Layout::default();
//! let plan = layout.plan(&HostPath::parse("/srv/site")?, &layout.job("job-1")?)?;
//! let pod = render_pod(&plan, &PodOptions::with_claim("site-ws".parse()?))?;
//! let spec = pod.spec.as_ref().unwrap();
//! let job = &spec.containers[0];
//! assert_eq!(job.working_dir.as_deref(), Some("/workspace/job-1"));
//! let writable: Vec<_> = job.volume_mounts.as_ref().unwrap().iter()
//!     .filter(|m| m.read_only != Some(true)).map(|m| m.sub_path.as_deref()).collect();
//! assert_eq!(writable, [Some("job-1")]);
//! assert!(to_json(&pod).contains("\"claimName\": \"site-ws\""));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod names;
mod pod;
mod version;

pub use error::PodError;
pub use k8s_openapi;
pub use names::ClaimName;
pub use pod::{
    render_pod, JobContainer, PodGate, PodOptions, Volumes, GATE_CONTAINER, GATE_DIR,
    GATE_IN_IMAGE, GATE_VOLUME, INIT_CONTAINER, JOB_CONTAINER, ROOT_VOLUME, WORKSPACE_VOLUME,
};
pub use version::{FeatureGate, K8sVersion, Target, GATE_WITHOUT_IMAGE, MAX_MINOR, MIN_MINOR};

use k8s_openapi::api::core::v1::Pod;
#[doc(no_inline)]
pub use mount_plan::MountPlan;

/// The Pod as pretty-printed JSON (two-space indent, fields in the API's order), without a
/// final newline.
pub fn to_json(pod: &Pod) -> String {
    serde_json::to_string_pretty(pod).expect("a Pod always serialises")
}

/// The Pod as YAML (a single document, ending with a newline).
pub fn to_yaml(pod: &Pod) -> String {
    serde_norway::to_string(pod).expect("a Pod always serialises")
}
