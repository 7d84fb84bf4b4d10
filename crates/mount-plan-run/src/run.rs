//! [`run`]: the one launch of every front end (connect, say what the engine does differently,
//! launch), its [`Outcome`], and the exit status a command-line front end gives for it.

use mount_plan_host::VerifiedPlan;
use mount_plan_launch::{Event, Finished, LaunchError, LaunchOptions, Observer};

use crate::endpoint::{connect, Endpoint};
use crate::error::RunError;
use crate::request::LaunchRequest;

/// Exit status when the command certainly did not run (a refusal, an engine error, a failed
/// create or start): nothing is left behind.
pub const EXIT_LAUNCH_FAILED: u8 = 125;
/// Exit status when the command ran (or may have run) but its exit status could not be read
/// from the engine (or does not fit an exit status). The container was removed; the job
/// directory is kept.
pub const EXIT_STATUS_UNKNOWN: u8 = 122;

/// How a launch that did not deliver the command's exit status ended.
#[derive(Debug)]
pub struct Failure {
    /// Why.
    pub error: RunError,
    /// Whether the command may have run. When false, it certainly did not, and the job
    /// directory a fresh verification created was released.
    pub command_ran: bool,
    /// The container, when one was created.
    pub container: Option<String>,
}

/// How a run ended: the one answer every front end reads.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// The command ran and its exit status was read.
    Exited(Finished),
    /// The launch was refused, failed or was cancelled.
    Failed(Failure),
}

impl Outcome {
    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Outcome::Failed(f) if f.error.is_cancelled())
    }

    /// The exit status a command-line front end gives: the command's own;
    /// [`EXIT_LAUNCH_FAILED`] when it certainly did not run; [`EXIT_STATUS_UNKNOWN`] when it
    /// ran but its status could not be read or does not fit; on cancellation `signalled`
    /// (128 + the signal's number), or [`EXIT_LAUNCH_FAILED`] when it is 0.
    pub fn exit_status(&self, signalled: u8) -> u8 {
        match self {
            Outcome::Exited(done) => u8::try_from(done.status.code).unwrap_or(EXIT_STATUS_UNKNOWN),
            Outcome::Failed(f) if f.error.is_cancelled() => match signalled {
                0 => EXIT_LAUNCH_FAILED,
                code => code,
            },
            Outcome::Failed(f) if f.command_ran => EXIT_STATUS_UNKNOWN,
            Outcome::Failed(_) => EXIT_LAUNCH_FAILED,
        }
    }
}

/// End a run before the command: release the job directory a fresh verification created
/// (nothing is left behind) and answer with a failure that did not run the command. Every
/// early release of every front end goes through here.
pub fn refuse(verified: &VerifiedPlan, error: impl Into<RunError>) -> Outcome {
    let _ = verified.release_job_dir();
    Outcome::Failed(Failure {
        error: error.into(),
        command_ran: false,
        container: None,
    })
}

/// Launch `request` on the engine `endpoint` names, with the plan `verified`.
///
/// In order: build the spec ([`LaunchRequest::spec`]); connect, cut short by
/// `options.cancel`; say each protection this engine honours only in part as an
/// [`Event::Warning`] to `observer` (so every front end prints or raises the same notes); then
/// the one lifecycle of [`mount_plan_launch::launch`]. A failure before the lifecycle releases
/// the job directory ([`refuse`]); the lifecycle releases it itself on its own early failures.
pub async fn run(
    verified: &VerifiedPlan,
    request: &LaunchRequest,
    endpoint: &Endpoint,
    options: &LaunchOptions,
    observer: &mut dyn Observer,
) -> Outcome {
    let spec = match request.spec(endpoint.kind) {
        Ok(spec) => spec,
        Err(e) => return refuse(verified, e),
    };
    let engine = tokio::select! {
        connected = connect(endpoint) => connected,
        _ = options.cancel.cancelled() => Err(LaunchError::Cancelled),
    };
    let engine = match engine {
        Ok(engine) => engine,
        Err(e) => return refuse(verified, e),
    };
    for message in engine.report().differences_for(verified.plan()) {
        observer.event(&Event::Warning { message });
    }
    match mount_plan_launch::launch(engine.as_ref(), verified, &spec, options, observer).await {
        Ok(done) => Outcome::Exited(done),
        Err(failed) => Outcome::Failed(Failure {
            error: failed.error.into(),
            command_ran: failed.command_ran,
            container: failed.container,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(error: LaunchError, command_ran: bool) -> Outcome {
        Outcome::Failed(Failure {
            error: error.into(),
            command_ran,
            container: None,
        })
    }

    #[test]
    fn exit_status_tells_never_ran_from_unknown_and_cancelled() {
        let never = failed(LaunchError::Unsupported("x".into()), false);
        assert_eq!(never.exit_status(0), EXIT_LAUNCH_FAILED);
        let ran = failed(LaunchError::Unsupported("x".into()), true);
        assert_eq!(ran.exit_status(0), EXIT_STATUS_UNKNOWN);
        let cancelled = failed(LaunchError::Cancelled, true);
        assert!(cancelled.is_cancelled());
        assert_eq!(cancelled.exit_status(143), 143);
        assert_eq!(cancelled.exit_status(0), EXIT_LAUNCH_FAILED);
    }
}
