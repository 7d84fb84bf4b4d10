//! # mount-plan-launch: the engine-neutral launch API
//!
//! **Guarantee.** The values a caller chooses about a job container ([`LaunchSpec`]), the
//! protections, the audit and the gate's protocol are pure and live in `mount-plan-spec`;
//! this crate re-exports all of them at the same paths, so a launcher needs only this crate.
//!
//! A backend implements [`Engine`]: a few thin calls (create, start, inspect, wait, logs,
//! stop, remove, list) and a report of what its engine honours. A launcher holds it as
//! `Box<dyn Engine>` and can swap engines by one setting. [`launch`] is the one lifecycle
//! for every engine: it checks the protections, creates, audits, starts, audits again,
//! forwards output, waits and removes, and cleans up on every path, including cancellation
//! ([`CancelToken`]), a lost engine answer and a failed wait. [`gc`] removes containers
//! whose launcher is gone ([`identity`]). [`audit()`] is the pure comparison between what an
//! engine reports ([`ObservedContainer`]) and the plan.
//!
//! **Limits.** This crate talks to no engine; the lifecycle runs on the caller's tokio
//! runtime. An engine that cannot
//! report something (Docker cannot set or report nosuid on binds; Podman reports its tmpfs
//! mounts only as option strings under `HostConfig.Tmpfs`) says so with `None`, and the audit
//! checks the substitute instead (for example `no-new-privileges` for nosuid). What the engine
//! reports is what it asked of the runtime, not what the kernel did: the conformance suite's
//! probe checks the kernel's view from inside.
//!
//! ```
//! use mount_plan_launch::{LaunchSpec, Network};
//!
//! let mut spec = LaunchSpec::new("busybox:local".parse()?).with_command(["sh", "-c", "echo hi"]);
//! spec.user = Some("1000:1000".parse()?);
//! spec.env.push("MODE=train".parse()?);
//! spec.network = "none".parse()?;
//! assert!("host".parse::<Network>().is_err());
//! assert!(spec.labels.insert("io.mount-plan.job", "x").is_err());
//! spec.check()?;
//! # Ok::<(), mount_plan_launch::SpecError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod container;
mod engine;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod gate;
pub mod gate_copy;
pub mod identity;
pub mod image_command;
pub mod lifecycle;
pub mod outputs;

pub use container::{
    container_labels, plan_digest, EngineError, ExitStatus, Keep, LaunchError, LogChunk, LogStream,
    OutputStream,
};
pub use engine::{
    CheckOutcome, CreateRequest, Created, Engine, EngineKind, Listed, Removal, SiteCheck,
};
pub use identity::{LaunchId, Launcher, Verdict};
pub use lifecycle::{
    check_protections, gc, is_stopped, launch, CancelToken, Collected, Event, Failed, Finished,
    GcOptions, LaunchOptions, Observer,
};
pub use mount_plan_spec::audit;
pub use mount_plan_spec::{
    duration_secs, duration_whole_secs, Capability, ContainerName, EnvVar, GpuRequest, ImageRef,
    Labels, LaunchSpec, Network, NetworkName, PlacementConstraint, Resources, SpecError, User,
    LABEL_JOB, LABEL_MANAGED, LABEL_PLAN_DIGEST, LABEL_PREFIX, MAX_DURATION,
};
pub use mount_plan_spec::{
    required_hardening, Availability, Class, EngineInfo, EngineReport, Protection,
};
pub use mount_plan_spec::{
    runc_fix, runc_version_of_package, runc_warnings, RuncAdvisory, RuncFix, Version, MASKED_PATHS,
    RUNC_ADVISORIES, RUNC_FIXED, WORKDIR_ESCAPE,
};
pub use mount_plan_spec::{
    Difference, ObservedBind, ObservedContainer, ObservedNamespaces, ObservedOtherMount,
    ObservedTmpfs,
};
