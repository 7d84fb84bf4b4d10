//! # mount-plan-spec: the pure half of launching a mount plan
//!
//! **Guarantee.** A [`LaunchSpec`] holds everything a caller may choose about a job container
//! (image, command, environment, user, network, labels, name, GPUs, resource limits, the
//! capabilities added back after all are dropped) and has no field that can set mounts,
//! volumes, the working directory, privileged mode, devices or host namespaces: the
//! verified plan alone owns those. [`Capability`] cannot name `MKNOD`, `FSETID`, `SETFCAP`
//! or `SYS_ADMIN`. Values are validated newtypes (`"host"` as a network, `io.mount-plan.*`
//! labels, non-numeric users are refused with a rule-named [`SpecError`]).
//!
//! Beside the spec: the [`Protection`]s a plan asks of an engine and how an engine reports
//! honouring them ([`EngineReport`]), the pure [`audit()`] that compares what an engine reports
//! about a container ([`ObservedContainer`]) with the plan, one [`Version`] type for every
//! engine and runtime, the runc facts judged with it ([`runc_fix`]), and the in-container
//! gate's protocol ([`gate_protocol`]), which the gate itself includes from
//! this crate's source.
//!
//! **Limits.** Values and decisions only: no async runtime, no engine client, no filesystem
//! (the dependency list says so). `mount-plan-launch` drives the lifecycle around these types
//! and re-exports all of them at the same paths; a renderer that never talks to an engine
//! (`mount-plan-k8s`) depends on this crate alone.
//!
//! ```
//! use mount_plan_spec::{LaunchSpec, Network};
//!
//! let mut spec = LaunchSpec::new("busybox:local".parse()?).with_command(["sh", "-c", "echo hi"]);
//! spec.user = Some("1000:1000".parse()?);
//! spec.env.push("MODE=train".parse()?);
//! spec.network = "none".parse()?;
//! assert!("host".parse::<Network>().is_err());
//! assert!(spec.labels.insert("io.mount-plan.job", "x").is_err());
//! spec.check()?;
//! # Ok::<(), mount_plan_spec::SpecError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
/// The in-container gate's protocol (its path, version, refusal status and line, node
/// variable): one file, included by the gate too.
pub mod gate_protocol;
mod protection;
mod runc;
mod spec;
mod version;

pub use audit::{
    audit, audit_gate_bind, audit_image, Difference, ObservedBind, ObservedContainer,
    ObservedNamespaces, ObservedOtherMount, ObservedTmpfs,
};
pub use protection::{
    required_hardening, Availability, Class, EngineInfo, EngineReport, Protection,
};
pub use runc::{
    runc_fix, runc_version_of_package, runc_warnings, RuncAdvisory, RuncFix, MASKED_PATHS,
    RUNC_ADVISORIES, RUNC_FIXED, WORKDIR_ESCAPE,
};
pub use spec::{
    duration_secs, duration_whole_secs, Capability, ContainerName, EnvVar, GpuRequest, ImageRef,
    Labels, LaunchSpec, Network, NetworkName, PlacementConstraint, Resources, SpecError, User,
    LABEL_JOB, LABEL_MANAGED, LABEL_PLAN_DIGEST, LABEL_PREFIX, MAX_DURATION,
};
pub use version::Version;
