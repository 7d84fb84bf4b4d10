//! The one launch lifecycle, for every engine: check, create, audit, start, audit, stream
//! output, wait, remove; and clean-up on every path, including cancellation and lost
//! answers.
//!
//! Every decision is taken here; an [`Engine`] only answers calls. The sequence:
//!
//! 1. The spec is checked and the plan's protections are compared with what the engine
//!    honours ([`check_protections`]): nothing is created for a plan the engine cannot honour.
//! 2. `create`, with the launch identity in the labels ([`crate::identity`]). When its answer
//!    is an error, lost, late or cancelled, the containers carrying this launch's id are
//!    looked up and removed: a create that took effect unseen leaves nothing behind.
//! 3. The created container is inspected and audited against the plan; then `start`. A lost
//!    `start` answer is resolved by inspecting the container's state. Where the engine says
//!    which image the command line was built from, the container must run that image; a
//!    container that runs another (the image's name moved meanwhile) is removed unstarted and
//!    created once more from a fresh read of the image ([`crate::image_command`]).
//! 4. Audited again once it runs, while its output is forwarded and `wait` runs (a difference
//!    still fails the launch and removes the container). A failed `wait` is resolved by
//!    inspecting the state and waiting again; the status is read from the engine, never
//!    guessed.
//! 5. Removed (unless kept), with retries; a container that cannot be removed is reported by
//!    id and left to `gc`.
//!
//! Whenever the launch fails before the command can have run, a job directory the host check
//! created for it is released ([`VerifiedPlan::release_job_dir`]): removed only if it is still
//! the directory created, still empty, and no other launch holds it.
//!
//! Cancellation ([`CancelToken`]) is honoured at every step: before create nothing is left;
//! after create the container is stopped (with [`LaunchOptions::stop_grace`]) and removed.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mount_plan::MountPlan;
use mount_plan_host::VerifiedPlan;

use crate::container::{container_labels, ExitStatus, Keep, LaunchError, LogChunk, OutputStream};
use crate::engine::{CreateRequest, Created, Engine, Removal};
use crate::gate::{Gate, GATE_REFUSED};
use crate::identity::{judge, process_start, LaunchId, Launcher, Verdict, LABEL_LAUNCH};
use mount_plan_spec::{audit, Difference, ObservedContainer};
use mount_plan_spec::{Availability, EngineReport, Protection};
use mount_plan_spec::{Capability, LaunchSpec, LABEL_MANAGED};

/// How many times a clean-up call (remove, the look-up by launch id) is tried; the pause
/// between tries doubles from [`RETRY_PAUSE`], so the tries span about 6 s: long enough for an
/// engine service that restarts (Podman's takes 1-2 s) to answer again.
const CLEANUP_ATTEMPTS: u32 = 6;
/// How long a `create` already sent may still take to answer once the launch is cancelled:
/// it is not abandoned (the engine would finish it unseen, after the look-up by launch id).
const CANCELLED_CREATE_SETTLE: Duration = Duration::from_secs(10);
/// After a `create` whose outcome is unknown found nothing under the launch id, the look-up
/// runs once more after this pause (the engine may still be creating).
const LATE_CREATE_PAUSE: Duration = Duration::from_secs(1);
/// How many times a failed `wait` is resolved by inspecting and waiting again.
const WAIT_ATTEMPTS: u32 = 3;
/// Pause between retries of a failed call.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How many times an inspect is made while the engine answers that the container's process
/// is ending ([`LaunchError::ProcessEnding`]), [`RETRY_PAUSE`] apart: the process is gone
/// within milliseconds, so the engine answers well within these tries.
const ENDING_ATTEMPTS: u32 = 5;

/// A cancellation signal shared between a launch and whoever may cancel it (a signal
/// handler, a `KeyboardInterrupt`, a supervisor). Cloning shares it.
#[derive(Debug, Clone)]
pub struct CancelToken {
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for CancelToken {
    fn default() -> Self {
        CancelToken::new()
    }
}

impl CancelToken {
    /// A token not cancelled yet.
    pub fn new() -> Self {
        CancelToken {
            tx: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Cancel every launch holding this token (idempotent).
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the token is cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`: wait_for only fails if it is dropped.
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// How a launch runs.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Keep the container after it stops (default: remove it).
    pub keep: Keep,
    /// Between SIGTERM and SIGKILL when a running container is stopped.
    pub stop_grace: Duration,
    /// How long one bounded engine call (create, start, inspect, remove, list) may take
    /// before its answer is treated as lost.
    pub call_timeout: Duration,
    /// How long output may still arrive after the container stopped.
    pub log_drain: Duration,
    /// Cancels the launch.
    pub cancel: CancelToken,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            keep: Keep::Remove,
            stop_grace: Duration::from_secs(10),
            call_timeout: Duration::from_secs(120),
            log_drain: Duration::from_secs(5),
            cancel: CancelToken::new(),
        }
    }
}

/// A step of a launch, as reported to an [`Observer`] (and written by `launch --events`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Event {
    /// The launch begins; its id labels every container it creates.
    Launching {
        /// The launch id.
        launch: String,
        /// The job name.
        job: String,
    },
    /// The container was created (not started). A launch creates a second container only
    /// after removing the first unstarted, when it ran another image than the one its command
    /// line was built from (the image's name moved meanwhile): `Created`, `Removed`, `Created`.
    Created {
        /// Container id.
        container: String,
    },
    /// The container was started: from here on, the command may have run.
    Started {
        /// Container id.
        container: String,
    },
    /// The command exited with this status, as the engine reports it.
    Exited {
        /// Container id.
        container: String,
        /// Exit status.
        status: i64,
    },
    /// The container was removed.
    Removed {
        /// Container id.
        container: String,
    },
    /// The container was kept (`Keep::Keep`).
    Kept {
        /// Container id.
        container: String,
    },
    /// Something worth knowing that does not change the outcome.
    Warning {
        /// What.
        message: String,
    },
    /// The launch failed.
    Failed {
        /// The rule id of the error.
        rule: String,
        /// The error.
        message: String,
        /// Whether the command may have run.
        command_ran: bool,
    },
    /// The launch was cancelled; what it created was removed.
    Cancelled {
        /// Whether the command may have run.
        command_ran: bool,
    },
}

/// Where a launch's output and events go.
pub trait Observer: Send {
    /// A piece of the command's output.
    fn output(&mut self, chunk: &LogChunk);
    /// A lifecycle event (ignored by default).
    fn event(&mut self, _event: &Event) {}
}

impl<F: FnMut(&LogChunk) + Send> Observer for F {
    fn output(&mut self, chunk: &LogChunk) {
        self(chunk)
    }
}

/// A launch whose command ran and whose exit status the engine reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The launch id.
    pub launch: String,
    /// The container id.
    pub container: String,
    /// The command's exit status.
    pub status: ExitStatus,
    /// Whether the container was removed (false: kept, or its removal failed: see warnings).
    pub removed: bool,
    /// What went wrong without changing the status (output cut short, a removal that
    /// failed and is left to `gc`).
    pub warnings: Vec<String>,
}

/// A launch that did not end with a reported exit status.
#[derive(Debug)]
pub struct Failed {
    /// Why.
    pub error: LaunchError,
    /// Whether the command may have run (the container was started). When false, the
    /// command certainly did not run.
    pub command_ran: bool,
    /// The container, when one was created.
    pub container: Option<String>,
}

impl Failed {
    /// Whether the launch was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.error, LaunchError::Cancelled)
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// The protections `plan` needs that the engine `report` describes cannot honour, and that
/// fail the launch: contract protections not in `accepted`, hardening in `required` (see
/// [`crate::Class`]). The first one is refused, naming the engine, its versions and why.
pub fn check_protections(
    report: &EngineReport,
    plan: &MountPlan,
    accepted: &BTreeSet<Protection>,
    required: &BTreeSet<Protection>,
) -> Result<(), LaunchError> {
    let Some(&protection) = report.unmet(plan, accepted, required).first() else {
        return Ok(());
    };
    let why = match report.availability(protection) {
        Availability::Missing(why) => why,
        other => other.to_string(),
    };
    Err(LaunchError::ProtectionUnavailable {
        engine: report.engine.engine.clone(),
        engine_version: report.engine.version.clone(),
        api_version: report.engine.api_version.clone(),
        protection,
        why,
    })
}

/// Every label of a launch's container: the caller's, ours, and the launch identity.
pub fn launch_labels(
    plan: &MountPlan,
    spec: &LaunchSpec,
    launch: &LaunchId,
    launcher: &Launcher,
) -> BTreeMap<String, String> {
    let mut labels = container_labels(plan, spec);
    for (k, v) in launcher.labels(launch) {
        labels.insert(k.to_owned(), v);
    }
    labels
}

/// States in which a container's command no longer runs.
pub fn is_stopped(state: Option<&str>) -> bool {
    matches!(
        state.map(str::to_ascii_lowercase).as_deref(),
        Some("exited" | "stopped" | "dead" | "complete" | "completed" | "failed")
    )
}

/// States in which a container's command has started.
fn has_started(observed: &ObservedContainer) -> bool {
    is_stopped(observed.state.as_deref())
        || matches!(
            observed.state.as_deref(),
            Some("running" | "paused" | "restarting" | "stopping")
        )
}

/// Launch `plan` running `spec` on `engine`: the whole lifecycle, with output and events
/// sent to `observer`. See the module documentation for the sequence and its guarantees.
pub async fn launch(
    engine: &dyn Engine,
    plan: &VerifiedPlan,
    spec: &LaunchSpec,
    options: &LaunchOptions,
    observer: &mut dyn Observer,
) -> Result<Finished, Failed> {
    let launch = LaunchId::new();
    let mut driver = Driver {
        engine,
        options,
        observer,
        launch,
        plan,
        container: None,
        built_for: None,
        tolerated: BTreeSet::new(),
        granted: BTreeSet::new(),
        gate: None,
        gate_output: Vec::new(),
        create_attempted: false,
        started: false,
        warnings: Vec::new(),
    };
    driver.observer.event(&Event::Launching {
        launch: driver.launch.to_string(),
        job: plan.plan().job().as_str().to_owned(),
    });
    let result = driver.run(spec).await;
    match result {
        Ok(status) => driver.finish(status).await,
        Err(error) => Err(driver.fail(error).await),
    }
}

struct Driver<'a> {
    engine: &'a dyn Engine,
    options: &'a LaunchOptions,
    observer: &'a mut dyn Observer,
    launch: LaunchId,
    plan: &'a VerifiedPlan,
    /// The container, once created.
    container: Option<String>,
    /// The image its command line was built from, where the engine says it
    /// ([`crate::engine::Created::built_for`]).
    built_for: Option<String>,
    /// Protections the audit does not ask for: those accepted missing, and hardening the
    /// engine cannot apply that the site does not require.
    tolerated: BTreeSet<Protection>,
    /// The capabilities the spec adds back after all are dropped: the audit allows no other.
    granted: BTreeSet<Capability>,
    /// The gate of this launch (its nonce recognises a refusal).
    gate: Option<Gate>,
    /// The beginning of the container's stderr, where a gate refusal would be.
    gate_output: Vec<u8>,
    /// Whether `create` was called (its effect is unknown until it answers).
    create_attempted: bool,
    /// Whether the command may have run.
    started: bool,
    warnings: Vec<String>,
}

/// Why a step stopped.
enum Stop {
    Error(LaunchError),
    Cancelled,
}

impl From<LaunchError> for Stop {
    fn from(e: LaunchError) -> Self {
        Stop::Error(e)
    }
}

impl<'a> Driver<'a> {
    /// The audit of this launch's container, apart from the driver.
    fn auditor(&self) -> Auditor<'a> {
        Auditor {
            engine: self.engine,
            options: self.options,
            plan: self.plan,
            built_for: self.built_for.clone(),
            tolerated: self.tolerated.clone(),
            granted: self.granted.clone(),
        }
    }
}

impl Driver<'_> {
    fn warn(&mut self, message: String) {
        self.observer.event(&Event::Warning {
            message: message.clone(),
        });
        self.warnings.push(message);
    }

    /// One bounded engine call, cut short by the timeout (a lost answer) or by cancellation.
    async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, LaunchError>>,
    ) -> Result<T, Stop> {
        call(
            op,
            self.container.as_deref().unwrap_or_default(),
            self.options,
            fut,
        )
        .await
    }

    /// A clean-up call: bounded by the timeout, not by cancellation (it runs because of it).
    async fn cleanup_call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, LaunchError>>,
    ) -> Result<T, LaunchError> {
        bounded(
            op,
            self.container.as_deref().unwrap_or_default(),
            self.options,
            fut,
        )
        .await
    }

    fn lost(&self, op: &'static str) -> LaunchError {
        lost(
            op,
            self.container.as_deref().unwrap_or_default(),
            self.options,
        )
    }

    async fn run(&mut self, spec: &LaunchSpec) -> Result<ExitStatus, Stop> {
        let engine = self.engine;
        spec.check().map_err(LaunchError::from)?;
        let report = engine.report();
        // The hardening the caller names and the plan's layout requires.
        let required = mount_plan_spec::required_hardening(self.plan.plan(), &spec.require);
        check_protections(&report, self.plan.plan(), &spec.accept_missing, &required)?;
        // Hardening the engine cannot apply and the site does not require: one warning, and
        // the audit does not ask for it.
        if let Some(warning) =
            report.hardening_warning(self.plan.plan(), &spec.accept_missing, &required)
        {
            self.warn(warning);
        }
        self.granted = spec.cap_add.clone();
        self.tolerated = spec.accept_missing.clone();
        self.tolerated.extend(
            report
                .hardening_missing(self.plan.plan(), &required)
                .into_iter()
                .map(|(p, _)| p),
        );
        // Outputs carry no privilege: refuse, before anything is created, a launch whose job
        // could leave set-id files that this launcher cannot clear and no other layer defuses.
        let layers = self.output_layers(&report, spec);
        if let Some(why) = layers.refusal() {
            return Err(Stop::Error(LaunchError::OutputsUnclearable {
                why,
                layers: layers.describe(),
            }));
        }
        if self.options.cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        if !Gate::available() {
            return Err(Stop::Error(LaunchError::Unsupported(
                "this build of mount-plan has no in-container gate (its build could not link it statically: install the static C library, e.g. Debian's libc6-dev, and rebuild): no launch runs unchecked".into(),
            )));
        }
        let mut labels = launch_labels(self.plan.plan(), spec, &self.launch, &Launcher::current());
        for (k, v) in crate::outputs::job_dir_labels(self.plan) {
            labels.insert(k.to_owned(), v);
        }
        let gate = Gate::new(self.plan);
        let mut request = CreateRequest {
            plan: self.plan,
            spec,
            labels: &labels,
            gate: &gate,
            reread_image: false,
        };
        self.gate = Some(gate.clone());
        // From here, a failure looks for containers of this launch (see `fail`).
        self.create_attempted = true;
        let id = loop {
            let created = self.create(&request).await?;
            let id = created.id;
            self.container = Some(id.clone());
            self.built_for = created.built_for;
            self.observer.event(&Event::Created {
                container: id.clone(),
            });
            // Audit what the engine made of the request before anything runs...
            match self.auditor().audited(&id).await {
                // ...and where the only difference is that the image's name moved between the
                // engine's read of the image and the create (its command line names another
                // image's entrypoint), remove this container, never started, and create once
                // more from a fresh read. A name that moves again fails the launch.
                Err(Stop::Error(LaunchError::Audit { differences, .. }))
                    if !request.reread_image
                        && differences
                            .iter()
                            .all(|d| matches!(d, Difference::Image { .. })) =>
                {
                    self.remove(&id).await?;
                    self.container = None;
                    request.reread_image = true;
                }
                audited => {
                    audited?;
                    break id;
                }
            }
        };
        if let Err(stop) = self.call("start", engine.start(&id)).await {
            // The engine said no: the command did not run.
            let uncertain = matches!(
                stop,
                Stop::Cancelled | Stop::Error(LaunchError::AnswerLost { .. })
            );
            if !uncertain {
                return Err(stop);
            }
            // A start cut short may have taken effect: the container's state tells.
            self.started = match self.cleanup_call("inspect", engine.inspect(&id)).await {
                Ok(observed) => has_started(&observed),
                // Unknown: it may have run.
                Err(_) => true,
            };
            if !self.started || matches!(stop, Stop::Cancelled) {
                return Err(stop);
            }
        }
        self.started = true;
        self.observer.event(&Event::Started {
            container: id.clone(),
        });
        // ...and again once it runs, while its output is followed: the command runs already,
        // so waiting for this answer first would only delay the output and the exit status.
        // A difference still fails the launch, whenever it is found.
        let auditor = self.auditor();
        self.follow(&id, auditor.audited(&id)).await
    }

    /// The layers that keep this launch's outputs from being a privilege on the host
    /// ([`crate::outputs`]). A fact that cannot be read counts as no protection.
    fn output_layers(
        &self,
        report: &crate::EngineReport,
        spec: &LaunchSpec,
    ) -> crate::outputs::OutputLayers {
        let flags = self.plan.workspace_mount_flags().ok();
        crate::outputs::OutputLayers::new(
            report.engine.user_namespace,
            flags.is_some_and(|f| f.nosuid && f.nodev),
            matches!(self.plan.workspace_reachable_by_others(), Ok(false)),
            mount_plan_host::effective_uid(),
            spec.user,
        )
    }

    /// After a command ran (its container stopped or gone): put back W/J's verified owner and
    /// mode and clear the set-user-ID and set-group-ID bits of every file the job left in it,
    /// so that a binary a root job planted gives no host user its owner's identity
    /// (`mount_plan_host::VerifiedPlan::sweep_job_dir`). What was cleared and device nodes
    /// found are warnings; what could not be handled is returned: the launch then fails
    /// (`sweep-incomplete`).
    fn sweep(&mut self) -> Result<(), String> {
        const SHOWN: usize = 5;
        let names = |paths: Vec<String>| {
            let more = paths.len().saturating_sub(SHOWN);
            let mut shown: Vec<String> = paths.into_iter().take(SHOWN).collect();
            if more > 0 {
                shown.push(format!("and {more} more"));
            }
            shown.join(", ")
        };
        let job = self.plan.plan().job().as_str().to_owned();
        match self.plan.sweep_job_dir() {
            Ok(report) => {
                if !report.cleared.is_empty() {
                    let n = report.cleared.len();
                    let paths = report
                        .cleared
                        .iter()
                        .map(|c| {
                            format!(
                                "{:?} (was {:04o}{})",
                                c.path,
                                c.mode_before & 0o7777,
                                if c.removed { ", removed" } else { "" }
                            )
                        })
                        .collect();
                    self.warn(format!(
                        "cleared the set-user-ID/set-group-ID bits of {n} file(s) the job left in {job}/ (they would give host users their owner's identity): {}",
                        names(paths)
                    ));
                }
                if let Some(r) = report.restored {
                    let verified = self.plan.job_dir_state();
                    self.warn(format!(
                        "the job changed {job}/ to owner {}:{} mode {:04o}; put back to {}:{} {:04o}",
                        r.uid, r.gid, r.mode, verified.uid, verified.gid, verified.mode
                    ));
                }
                let devices: Vec<String> = report
                    .special
                    .iter()
                    .filter(|f| {
                        matches!(
                            f.kind,
                            mount_plan_host::FindingKind::CharDevice
                                | mount_plan_host::FindingKind::BlockDevice
                        )
                    })
                    .map(|f| format!("{:?} ({})", f.path, f.kind))
                    .collect();
                if !devices.is_empty() {
                    self.warn(format!(
                        "device nodes in {job}/ (left in place; a host user who can reach them can open them): {}",
                        names(devices)
                    ));
                }
                if report.unhandled.is_empty() {
                    Ok(())
                } else {
                    Err(names(
                        report
                            .unhandled
                            .iter()
                            .map(|p| format!("{:?}: {}", p.path, with_causes(&p.error)))
                            .collect(),
                    ))
                }
            }
            Err(e) => Err(format!("the sweep failed: {}", with_causes(&e))),
        }
    }

    /// Keep the beginning of stderr: the gate writes its refusal there before anything else
    /// can run.
    fn keep_for_gate(&mut self, chunk: &LogChunk) {
        const KEEP: usize = 16 * 1024;
        if chunk.stream == OutputStream::Stderr && self.gate_output.len() < KEEP {
            let room = KEEP - self.gate_output.len();
            self.gate_output
                .extend_from_slice(&chunk.bytes[..chunk.bytes.len().min(room)]);
        }
    }

    fn gate_refusal(&self) -> Option<crate::gate::GateRefusal> {
        self.gate
            .as_ref()?
            .refusal(&String::from_utf8_lossy(&self.gate_output))
    }

    /// Inspect, asked again while the engine answers that the container's process is ending
    /// (a quick job that just exited), [`ENDING_ATTEMPTS`] times at most.
    /// Forward the output while waiting for the status and for `audit` (the audit after
    /// start), whose failure ends the launch.
    async fn follow(
        &mut self,
        id: &str,
        audit: impl Future<Output = Result<(), Stop>>,
    ) -> Result<ExitStatus, Stop> {
        let engine = self.engine;
        let mut logs = engine.logs(id);
        let mut logs_done = false;
        tokio::pin!(audit);
        let mut audited = false;
        let mut status: Option<Result<ExitStatus, LaunchError>> = None;
        let wait = wait_status(engine, self.options, id);
        tokio::pin!(wait);
        let drain = tokio::time::sleep(Duration::MAX);
        tokio::pin!(drain);
        let cancel = self.options.cancel.clone();
        let log_drain = self.options.log_drain;
        let mut late = None;
        while status.is_none() || !logs_done || !audited {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Stop::Cancelled),
                r = &mut audit, if !audited => {
                    r?;
                    audited = true;
                }
                chunk = logs.next(), if !logs_done => match chunk {
                    Some(Ok(chunk)) => {
                        self.keep_for_gate(&chunk);
                        self.observer.output(&chunk);
                    }
                    Some(Err(e)) => {
                        logs_done = true;
                        late = Some(format!("the output stream failed, output may be incomplete: {e}"));
                    }
                    None => logs_done = true,
                },
                s = &mut wait, if status.is_none() => {
                    status = Some(s);
                    drain.as_mut().reset(deadline(log_drain));
                }
                _ = &mut drain, if status.is_some() && !logs_done => {
                    logs_done = true;
                    late = Some(format!("output still open {log_drain:?} after the container stopped: output may be incomplete"));
                }
            }
        }
        drop(logs);
        if let Some(message) = late {
            self.warn(message);
        }
        match status.expect("the loop ends with a status") {
            Ok(status) if status.code == GATE_REFUSED && self.gate_refusal().is_some() => {
                // The gate refused before `exec`: the command never ran.
                self.started = false;
                let refusal = self.gate_refusal().expect("checked");
                Err(Stop::Error(LaunchError::GateRefused {
                    container: id.to_owned(),
                    check: refusal.check,
                    message: refusal.message,
                }))
            }
            Ok(status) => {
                self.observer.event(&Event::Exited {
                    container: id.to_owned(),
                    status: status.code,
                });
                Ok(status)
            }
            Err(e) => Err(Stop::Error(e)),
        }
    }

    /// `create`, bounded by the call timeout. A cancellation while it is in flight does not
    /// abandon it: its answer is awaited a little longer ([`CANCELLED_CREATE_SETTLE`]), so that
    /// the container it made is known and removed, then the launch stops as cancelled.
    async fn create(&mut self, request: &CreateRequest<'_>) -> Result<Created, Stop> {
        let create = self.engine.create(request);
        tokio::pin!(create);
        let timeout = self.options.call_timeout;
        let answered = tokio::select! {
            biased;
            _ = self.options.cancel.cancelled() => None,
            r = tokio::time::timeout(timeout, &mut create) => Some(r),
        };
        match answered {
            Some(Ok(r)) => r.map_err(Stop::Error),
            Some(Err(_)) => Err(Stop::Error(self.lost("create"))),
            None => {
                let settle = CANCELLED_CREATE_SETTLE.min(timeout);
                if let Ok(Ok(created)) = tokio::time::timeout(settle, &mut create).await {
                    self.container = Some(created.id);
                }
                Err(Stop::Cancelled)
            }
        }
    }

    /// Remove every container labelled with this launch's id (after a create whose outcome
    /// is unknown). A look-up that finds nothing is made once more after a pause: a create
    /// whose answer was lost may still be in progress in the engine.
    async fn remove_launch(&mut self, uncertain: bool) -> Result<(), LaunchError> {
        let launch = self.launch.to_string();
        let mut last = None;
        // A definite "no" from the engine created nothing: one empty look-up is enough.
        let mut looked_again = !uncertain;
        let mut attempt = 0;
        while attempt < CLEANUP_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(RETRY_PAUSE * 2u32.pow(attempt - 1)).await;
            }
            attempt += 1;
            match self
                .cleanup_call("list", self.engine.list(LABEL_LAUNCH, &launch))
                .await
            {
                Ok(found) if found.is_empty() && !looked_again => {
                    looked_again = true;
                    attempt = 0;
                    tokio::time::sleep(LATE_CREATE_PAUSE).await;
                }
                Ok(found) => {
                    for listed in found {
                        self.container = Some(listed.id.clone());
                        self.remove(&listed.id).await?;
                    }
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(LaunchError::Leftover {
            what: format!("containers labelled {LABEL_LAUNCH}={launch}"),
            source: Box::new(last.expect("at least one attempt")),
        })
    }

    /// Remove one container, with retries; a container already gone counts as removed.
    async fn remove(&mut self, id: &str) -> Result<(), LaunchError> {
        let mut last = None;
        for attempt in 0..CLEANUP_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(RETRY_PAUSE * 2u32.pow(attempt - 1)).await;
            }
            match self.cleanup_call("remove", self.engine.remove(id)).await {
                Ok(_) | Err(LaunchError::NotFound { .. }) => {
                    self.observer.event(&Event::Removed {
                        container: id.to_owned(),
                    });
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(LaunchError::Leftover {
            what: format!("container {id:?}"),
            source: Box::new(last.expect("at least one attempt")),
        })
    }

    /// Stop a container that may run, then remove it.
    async fn stop_and_remove(&mut self, id: &str) -> Result<(), LaunchError> {
        if self.started {
            let grace = self.options.stop_grace;
            // A failed stop still ends in a forced removal.
            let _ = tokio::time::timeout(
                grace.saturating_add(self.options.call_timeout),
                self.engine.stop(id, grace),
            )
            .await;
        }
        self.remove(id).await
    }

    async fn finish(mut self, status: ExitStatus) -> Result<Finished, Failed> {
        let id = self
            .container
            .clone()
            .expect("a status comes from a container");
        let removed = match self.options.keep {
            Keep::Keep => {
                self.observer.event(&Event::Kept {
                    container: id.clone(),
                });
                false
            }
            Keep::Remove => match self.remove(&id).await {
                Ok(()) => true,
                Err(e) => {
                    self.warn(format!("{e}"));
                    false
                }
            },
        };
        if let Err(problems) = self.sweep() {
            let error = LaunchError::SweepIncomplete {
                job: self.plan.plan().job().as_str().to_owned(),
                status: Some(status.code),
                problems,
                first: None,
            };
            return Err(self.failed(error));
        }
        Ok(Finished {
            launch: self.launch.to_string(),
            container: id,
            status,
            removed,
            warnings: self.warnings,
        })
    }

    async fn fail(mut self, stop: Stop) -> Failed {
        let error = match stop {
            Stop::Cancelled => LaunchError::Cancelled,
            Stop::Error(e) => e,
        };
        let mut error = error;
        if let Some(id) = self.container.clone() {
            if let Err(removal) = self.stop_and_remove(&id).await {
                error = LaunchError::Cleanup {
                    container: id,
                    first: Box::new(error),
                    source: Box::new(removal),
                };
            }
        } else if !self.create_attempted {
            // Refused before any engine call that creates: nothing to look for.
        } else if let Err(leftover) = self
            .remove_launch(matches!(
                error,
                LaunchError::AnswerLost { .. } | LaunchError::Cancelled
            ))
            .await
        {
            error = LaunchError::Cleanup {
                container: String::new(),
                first: Box::new(error),
                source: Box::new(leftover),
            };
        }
        if !self.started {
            // Nothing ran in a job directory created for this launch: release it.
            if let Err(e) = self.plan.release_job_dir() {
                self.warn(with_causes(&e));
            }
        } else if let Err(problems) = self.sweep() {
            error = LaunchError::SweepIncomplete {
                job: self.plan.plan().job().as_str().to_owned(),
                status: None,
                problems,
                first: Some(Box::new(error)),
            };
        }
        self.failed(error)
    }

    /// The end of a failed launch: its event, and the outcome.
    fn failed(self, error: LaunchError) -> Failed {
        if matches!(error, LaunchError::Cancelled) {
            self.observer.event(&Event::Cancelled {
                command_ran: self.started,
            });
        } else {
            self.observer.event(&Event::Failed {
                rule: error.rule().to_owned(),
                message: error.to_string(),
                command_ran: self.started,
            });
        }
        Failed {
            error,
            command_ran: self.started,
            container: self.container,
        }
    }
}

/// `after` from now; a duration past the clock's range is the far future (the options a
/// library caller builds are not bounded as the front ends' are).
fn deadline(after: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// An error with its causes, each once (a cause already in the text is not repeated).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text = format!("{text}: {c_text}");
        }
        cause = c.source();
    }
    text
}

fn lost(op: &'static str, container: &str, options: &LaunchOptions) -> LaunchError {
    LaunchError::AnswerLost {
        op,
        container: container.to_owned(),
        source: format!("no answer within {:?}", options.call_timeout).into(),
    }
}

/// A call bounded by the call timeout (not by cancellation).
/// What the audit of a launch's container needs: the driver's parts it reads, copied, so
/// that the audit after start runs while the driver follows the output.
struct Auditor<'a> {
    engine: &'a dyn Engine,
    options: &'a LaunchOptions,
    plan: &'a VerifiedPlan,
    built_for: Option<String>,
    tolerated: BTreeSet<Protection>,
    granted: BTreeSet<Capability>,
}

impl Auditor<'_> {
    async fn inspect(&self, id: &str) -> Result<ObservedContainer, Stop> {
        let mut attempt = 1;
        loop {
            match call("inspect", id, self.options, self.engine.inspect(id)).await {
                Err(Stop::Error(LaunchError::ProcessEnding { .. }))
                    if attempt < ENDING_ATTEMPTS =>
                {
                    attempt += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    async fn audited(&self, id: &str) -> Result<(), Stop> {
        let observed = self.inspect(id).await?;
        let mut differences = audit(self.plan.plan(), &observed, &self.tolerated, &self.granted);
        if let Some(source) = self.engine.gate_source() {
            differences.extend(mount_plan_spec::audit_gate_bind(&observed, &source));
        }
        if let Some(built_for) = &self.built_for {
            differences.extend(mount_plan_spec::audit_image(&observed, built_for));
        }
        if differences.is_empty() {
            Ok(())
        } else {
            Err(Stop::Error(LaunchError::Audit {
                container: id.to_owned(),
                differences,
            }))
        }
    }
}

/// An engine call of a launch, bounded by the call timeout and cut short by cancellation.
async fn call<T>(
    op: &'static str,
    container: &str,
    options: &LaunchOptions,
    fut: impl Future<Output = Result<T, LaunchError>>,
) -> Result<T, Stop> {
    tokio::select! {
        biased;
        _ = options.cancel.cancelled() => Err(Stop::Cancelled),
        r = bounded(op, container, options, fut) => r.map_err(Stop::Error),
    }
}

async fn bounded<T>(
    op: &'static str,
    container: &str,
    options: &LaunchOptions,
    fut: impl Future<Output = Result<T, LaunchError>>,
) -> Result<T, LaunchError> {
    match tokio::time::timeout(options.call_timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(lost(op, container, options)),
    }
}

/// The exit status, from `wait`; a failed wait is resolved by inspecting the state and
/// waiting again.
async fn wait_status(
    engine: &dyn Engine,
    options: &LaunchOptions,
    id: &str,
) -> Result<ExitStatus, LaunchError> {
    let mut last = None;
    for attempt in 0..WAIT_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        match engine.wait(id).await {
            Ok(status) => return Ok(status),
            Err(e) => last = Some(e),
        }
        match bounded("inspect", id, options, engine.inspect(id)).await {
            Ok(observed) if is_stopped(observed.state.as_deref()) => {
                if let Some(code) = observed.exit_code {
                    return Ok(ExitStatus { code });
                }
            }
            Ok(_) => {}
            Err(e @ LaunchError::NotFound { .. }) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// What `gc` did (or would do) about one managed container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    /// The container.
    pub container: String,
    /// The job it ran, when labelled.
    pub job: Option<String>,
    /// Why it is (or would be) removed, or why it is kept.
    pub verdict: Verdict,
    /// Whether it was removed (false with `dry_run`, and for kept ones).
    pub removed: bool,
    /// The sweep of its job directory after its removal (its launcher died before its own
    /// sweep): `Ok` with what it did, `Err` with what it could not do (the directory may
    /// still hold a privilege). `None`: not removed, or its labels name no job directory.
    pub swept: Option<Result<String, String>>,
}

/// Options of [`gc`].
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Only containers created more than this long ago.
    pub older_than: Option<Duration>,
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
}

/// Find the managed containers whose launcher is gone and remove them.
pub async fn gc(engine: &dyn Engine, options: &GcOptions) -> Result<Vec<Collected>, LaunchError> {
    let here = Launcher::current();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut out = Vec::new();
    for listed in engine.list(LABEL_MANAGED, "1").await? {
        if let (Some(min), Some(created)) = (options.older_than, listed.created_unix) {
            if now.saturating_sub(created) < i64::try_from(min.as_secs()).unwrap_or(i64::MAX) {
                continue;
            }
        }
        let verdict = judge(&listed.labels, &here, &process_start);
        // A removal that fails (another gc removing it at the same moment: Docker answers
        // 409) does not stop the others: the container is reported as kept, with why.
        let (verdict, removed) = match verdict {
            Verdict::Orphan(why) if !options.dry_run => match engine.remove(&listed.id).await {
                Ok(Removal::Removed) => (Verdict::Orphan(why), true),
                // Gone since the listing: its launcher removed it as it ended (the pid is gone
                // because the launch is over), or another gc did. Not an orphan this gc
                // removed, so not reported as one.
                Ok(Removal::AlreadyGone) | Err(LaunchError::NotFound { .. }) => continue,
                Err(e) => (
                    Verdict::Unknown(format!("{why}, but its removal failed: {e}")),
                    false,
                ),
            },
            v => (v, false),
        };
        // A container removed here never had its launcher's sweep: do it now, on the very
        // directory its labels name (by path and identity).
        let swept = if removed {
            crate::outputs::job_dir_of(&listed.labels).map(|(path, pin, state)| {
                match mount_plan_host::sweep_job_dir_at(&path, pin, state) {
                    Ok(report) if report.is_complete() => {
                        Ok(crate::outputs::describe_sweep(&report))
                    }
                    Ok(report) => Err(format!(
                        "{}: {}",
                        crate::outputs::describe_sweep(&report),
                        report
                            .unhandled
                            .iter()
                            .map(|p| format!("{:?}: {}", p.path, with_causes(&p.error)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    // Gone: nothing a job wrote is left to sweep.
                    Err(mount_plan_host::HostError::Missing { .. }) => {
                        Ok("the job directory is gone".to_owned())
                    }
                    Err(e) => Err(with_causes(&e)),
                }
            })
        } else {
            None
        };
        out.push(Collected {
            job: listed.labels.get(mount_plan_spec::LABEL_JOB).cloned(),
            container: listed.id,
            verdict,
            removed,
            swept,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_told_with_each_cause_once() {
        let inner = std::io::Error::other("connection reset");
        let plain = LaunchError::Create {
            job: "j".into(),
            source: Box::new(std::io::Error::other(inner)),
        };
        let text = with_causes(&plain);
        assert!(text.ends_with(": connection reset"), "{text}");
        assert_eq!(text.matches("connection reset").count(), 1, "{text}");
        let io = std::io::Error::other("no such image");
        assert_eq!(with_causes(&io), "no such image");
    }

    #[test]
    fn a_deadline_past_the_clock_s_range_is_a_century_away() {
        let now = tokio::time::Instant::now();
        let far = deadline(Duration::MAX);
        assert!(far.duration_since(now) >= Duration::from_secs(99 * 365 * 24 * 3600));
        let near = deadline(Duration::from_secs(5));
        assert!(near.duration_since(now) >= Duration::from_secs(5));
        assert!(near.duration_since(now) < Duration::from_secs(3600));
    }
}
