//! # mount-plan-run: the front door
//!
//! **Guarantee.** Every front end (the `mount-plan` CLI, the Python bindings, the bench, the
//! tests) reaches an engine, builds its launch spec and reads the outcome of a launch through
//! this crate, so they cannot drift apart:
//! - [`Endpoint`]: which engine ([`EngineKind`]) and where (socket, user namespace, gate path,
//!   timeouts, cluster settings), with `FromStr` and serde, and its one [`connect`];
//! - [`LaunchRequest`]: what a launch asks for in plain values, and the one place they become
//!   a [`LaunchSpec`](mount_plan_launch::LaunchSpec) ([`LaunchRequest::spec`]);
//! - [`run`]: connect (cancellably), say what the engine honours only in part as warning
//!   events, launch through the one lifecycle; every early job-directory release is here
//!   ([`refuse`]); one [`Outcome`] that a CLI maps to an exit status
//!   ([`Outcome::exit_status`]) and Python to a return value or an exception.
//!
//! **Limits.** It decides nothing about a launch itself: the lifecycle
//! (`mount_plan_launch::launch`) does. Each backend is a cargo feature (`docker`, `podman`,
//! `swarm` by default; `kubernetes` off); `clap` derives the CLI flags of [`Endpoint`],
//! [`LaunchRequest`], [`Accept`] and [`Caps`].
//!
//! ```
//! use mount_plan_run::{Endpoint, LaunchRequest};
//!
//! let endpoint: Endpoint = "podman@unix:///run/podman/podman.sock".parse()?;
//! let mut request = LaunchRequest::new("busybox:local", ["sh", "-c", "echo hi"]);
//! request.env.push("MODE=train".into());
//! let spec = request.spec(endpoint.kind)?;
//! assert_eq!(spec.command, ["sh", "-c", "echo hi"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "clap")]
pub mod cli;
mod endpoint;
mod error;
mod request;
mod run;

#[cfg(feature = "kubernetes")]
pub use endpoint::Cluster;
pub use endpoint::{built_in, connect, Endpoint, Userns};
pub use error::{RequestError, RunError};
pub use mount_plan_launch::EngineKind;
pub use request::{Accept, Caps, LaunchRequest};
pub use run::{refuse, run, Failure, Outcome, EXIT_LAUNCH_FAILED, EXIT_STATUS_UNKNOWN};

/// Slurm's images: unpacked once onto the shared filesystem from `docker save` output, never
/// pulled at run time (`mount-plan image unpack`).
#[cfg(feature = "slurm")]
pub mod slurm_image {
    pub use mount_plan_slurm::image::{image_dir, unpack_docker_save};
}
