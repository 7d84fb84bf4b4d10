//! The lifecycle's failure paths, on the in-memory fake engine: every engine operation
//! failing, hanging or losing its answer (once, or on every call), crossed with cancellation
//! at every step. Each case must end with no container left (or one named in the error for
//! gc), no job directory left that this launch created unless its command ran, and an
//! outcome that says truthfully whether the command ran.
//!
//! The fake is never the proof that a backend works: the conformance suite on real engines
//! is. This proves the decisions.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mount_plan::{HostPath, Layout};
use mount_plan_host::{verify, JobDir, JobDirRelease, VerifiedPlan, VerifyOptions};
use mount_plan_launch::fake::{FakeEngine, Fault, Op, Script};
use mount_plan_launch::{
    gc, launch, CancelToken, Event, Failed, Finished, GcOptions, LaunchError, LaunchOptions,
    LaunchSpec, LogChunk, Observer, OutputStream,
};

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for shared in ["startup", "local"] {
            std::fs::create_dir(dir.path().join(shared)).unwrap();
        }
        Site { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn job_dir(&self) -> PathBuf {
        self.path().join("job-1")
    }

    /// W/J made before the launch (mode 0750), as a launch with `JobDir::MustExist` finds it.
    fn make_job_dir(&self) -> PathBuf {
        let dir = self.job_dir();
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        dir
    }

    fn verified(&self, job_dir: JobDir) -> VerifiedPlan {
        let layout = Layout::default();
        let ws = HostPath::parse(self.path().to_str().unwrap()).unwrap();
        let plan = layout.plan(&ws, &layout.job("job-1").unwrap()).unwrap();
        let options = VerifyOptions {
            job_dir,
            ..VerifyOptions::default()
        };
        verify(plan, &options).unwrap()
    }
}

#[derive(Default)]
struct Recorder {
    out: Vec<u8>,
    events: Vec<Event>,
}

impl Observer for Recorder {
    fn output(&mut self, chunk: &LogChunk) {
        self.out.extend_from_slice(&chunk.bytes);
    }
    fn event(&mut self, event: &Event) {
        self.events.push(event.clone());
    }
}

fn options(cancel: &CancelToken) -> LaunchOptions {
    LaunchOptions {
        stop_grace: Duration::from_millis(100),
        call_timeout: Duration::from_millis(500),
        log_drain: Duration::from_millis(200),
        cancel: cancel.clone(),
        ..LaunchOptions::default()
    }
}

/// Launch `plan` on `engine` with the test options, its output and events dropped.
async fn run(engine: &FakeEngine, plan: &VerifiedPlan) -> Result<Finished, Failed> {
    let cancel = CancelToken::new();
    launch(
        engine,
        plan,
        &spec(),
        &options(&cancel),
        &mut Recorder::default(),
    )
    .await
}

/// The one warning of `done` that mentions `about`.
fn warning<'a>(done: &'a Finished, about: &str) -> &'a str {
    done.warnings
        .iter()
        .find(|w| w.contains(about))
        .unwrap_or_else(|| panic!("no warning about {about:?}: {:?}", done.warnings))
}

fn spec() -> LaunchSpec {
    LaunchSpec::new("img:1".parse().unwrap()).with_command(["run"])
}

/// Whether the outcome admits a container left behind: only a removal that failed for good,
/// and then the outcome names it.
fn reports_leftover(outcome: &Result<Finished, Failed>) -> bool {
    match outcome {
        Ok(done) => !done.removed && done.warnings.iter().any(|w| w.contains("gc")),
        Err(failed) => {
            let text = failed.error.to_string();
            matches!(
                failed.error,
                LaunchError::Cleanup { .. } | LaunchError::Leftover { .. }
            ) && text.contains("gc")
        }
    }
}

/// Run one case and check every invariant; returns the outcome for further checks.
async fn case(
    label: &str,
    script: Script,
    faults: &[(Op, Fault, u32)],
    cancel_at: Option<Op>,
) -> (Result<Finished, Failed>, FakeEngine, Recorder) {
    let site = Site::new();
    let verified = site.verified(JobDir::create_fresh());
    let cancel = CancelToken::new();
    let mut engine = FakeEngine::new(script);
    for &(op, fault, times) in faults {
        engine = engine.fault(op, fault, times);
    }
    if let Some(op) = cancel_at {
        engine = engine.cancel_on(op, cancel.clone());
    }
    let mut rec = Recorder::default();
    let outcome = launch(&engine, &verified, &spec(), &options(&cancel), &mut rec).await;
    drop(verified);

    let left = engine.containers();
    // A fault that happens once is recovered from: retried clean-up leaves nothing.
    if faults.iter().all(|&(_, _, times)| times == 1) {
        assert!(
            left.is_empty(),
            "{label}: {left:?} left after a transient fault: {outcome:?}"
        );
    }
    if !left.is_empty() {
        assert!(
            reports_leftover(&outcome),
            "{label}: containers left {:?} and the outcome does not name them: {outcome:?}",
            left.keys().collect::<Vec<_>>()
        );
    }
    let ran = match &outcome {
        Ok(_) => true,
        Err(f) => f.command_ran,
    };
    // Never claim that a command that ran did not run...
    if engine.starts() > 0 {
        assert!(
            ran,
            "{label}: the command ran but the outcome says it did not: {outcome:?}"
        );
    }
    // ...and, when the state could be read, never claim it ran when it did not.
    let inspect_faulty = faults.iter().any(|&(op, _, _)| op == Op::Inspect);
    if ran && !inspect_faulty {
        assert!(
            engine.starts() > 0,
            "{label}: claims the command ran: {outcome:?}"
        );
    }
    if rec
        .events
        .iter()
        .any(|e| matches!(e, Event::Started { .. }))
    {
        assert!(ran, "{label}: a Started event but command_ran is false");
    }
    assert_eq!(
        site.job_dir().exists(),
        ran,
        "{label}: the job directory created for this launch must stay exactly when the command ran ({outcome:?})"
    );
    let last = rec.events.last().expect("events");
    match &outcome {
        Ok(done) => {
            assert!(
                matches!(last, Event::Removed { .. } | Event::Warning { .. }),
                "{label}: {last:?}"
            );
            assert!(
                rec.events.iter().any(
                    |e| matches!(e, Event::Exited { status, .. } if *status == done.status.code)
                ),
                "{label}: no exited event"
            );
        }
        Err(failed) if failed.is_cancelled() => {
            assert!(matches!(last, Event::Cancelled { .. }), "{label}: {last:?}")
        }
        Err(_) => assert!(matches!(last, Event::Failed { .. }), "{label}: {last:?}"),
    }
    (outcome, engine, rec)
}

const FAULTS: [Fault; 3] = [Fault::Fail, Fault::Hang, Fault::LoseAnswer];

#[tokio::test(start_paused = true)]
async fn every_fault_at_every_step_crossed_with_cancellation_leaves_nothing() {
    let mut cases = 0;
    for op in Op::ALL {
        for fault in FAULTS {
            for times in [1, u32::MAX] {
                let cancels = std::iter::once(None).chain(Op::ALL.into_iter().map(Some));
                for cancel_at in cancels {
                    // A wait that never answers is a job that runs forever: only a
                    // cancellation ends it (the wait itself is not bounded), so it needs one
                    // at a step before the wait ends.
                    let before_wait = [Op::Create, Op::Inspect, Op::Start, Op::Wait, Op::Logs];
                    if op == Op::Wait
                        && fault == Fault::Hang
                        && !cancel_at.is_some_and(|c| before_wait.contains(&c))
                    {
                        continue;
                    }
                    let label = format!("{op:?} {fault:?} x{times} cancel at {cancel_at:?}");
                    let (outcome, _, _) =
                        case(&label, Script::default(), &[(op, fault, times)], cancel_at).await;
                    // Cancelled before the command ended: the outcome says cancelled.
                    if cancel_at == Some(Op::Create) && fault != Fault::Hang {
                        assert!(outcome.is_err(), "{label}");
                    }
                    cases += 1;
                }
            }
        }
    }
    assert!(cases > 400, "{cases}");
}

#[tokio::test(start_paused = true)]
async fn a_lost_create_answer_crossed_with_clean_up_faults() {
    for op in [Op::List, Op::Remove] {
        for fault in FAULTS {
            for times in [1, u32::MAX] {
                let label = format!("create answer lost, then {op:?} {fault:?} x{times}");
                let faults = [(Op::Create, Fault::LoseAnswer, 1), (op, fault, times)];
                let (outcome, engine, _) = case(&label, Script::default(), &faults, None).await;
                let failed = outcome.expect_err(&label);
                assert!(!failed.command_ran, "{label}");
                if times == 1 {
                    assert!(engine.containers().is_empty(), "{label}: retried clean-up");
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_long_job_cancelled_at_every_step_is_stopped_and_removed() {
    let long = Script {
        until_stopped: true,
        ..Script::default()
    };
    for cancel_at in [Op::Create, Op::Inspect, Op::Start, Op::Wait, Op::Logs] {
        let label = format!("long job cancelled at {cancel_at:?}");
        let (outcome, engine, rec) = case(&label, long.clone(), &[], Some(cancel_at)).await;
        let failed = outcome.expect_err(&label);
        assert!(failed.is_cancelled(), "{label}: {:?}", failed.error);
        assert!(engine.containers().is_empty(), "{label}");
        if failed.command_ran {
            assert!(engine.calls().contains(&Op::Stop), "{label}: stopped first");
        }
        assert!(
            matches!(rec.events.last(), Some(Event::Cancelled { .. })),
            "{label}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_exit_status_and_output_come_from_the_engine() {
    let script = Script {
        output: vec![
            LogChunk {
                stream: OutputStream::Stdout,
                bytes: b"one\n".to_vec(),
            },
            LogChunk {
                stream: OutputStream::Stderr,
                bytes: b"two\n".to_vec(),
            },
        ],
        exit_code: 3,
        until_stopped: false,
        gate_refuses: None,
    };
    let (outcome, engine, rec) = case("status 3", script, &[], None).await;
    let done = outcome.unwrap();
    assert_eq!(done.status.code, 3);
    assert!(done.removed);
    assert_eq!(rec.out, b"one\ntwo\n");
    assert!(engine.containers().is_empty());
    // A wait that fails is resolved by inspect: the status is still the command's own.
    let script = Script {
        exit_code: 7,
        ..Script::default()
    };
    let (outcome, _, _) = case(
        "wait fails",
        script,
        &[(Op::Wait, Fault::Fail, u32::MAX)],
        None,
    )
    .await;
    assert_eq!(outcome.unwrap().status.code, 7);
}

/// Issue 21: a sweep that cannot handle what the job left fails the launch with its own rule
/// and event, saying that the command ran and its status; never a warning only.
#[tokio::test(start_paused = true)]
async fn an_incomplete_sweep_fails_the_launch_after_the_command_ran() {
    let site = Site::new();
    site.make_job_dir();
    // What the sweep can neither clear nor remove: as root an immutable set-user-ID file, as
    // another user a directory it may not read.
    let root = mount_plan_host::effective_uid() == 0;
    let stuck = site.job_dir().join("stuck");
    let chattr = |flag: &str| {
        let ok = std::process::Command::new("chattr")
            .arg(flag)
            .arg(&stuck)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chattr {flag} {stuck:?}");
    };
    if root {
        std::fs::write(&stuck, b"x").unwrap();
        std::fs::set_permissions(&stuck, std::fs::Permissions::from_mode(0o4755)).unwrap();
        chattr("+i");
    } else {
        std::fs::create_dir(&stuck).unwrap();
        std::fs::set_permissions(&stuck, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let plan = site.verified(JobDir::MustExist);
    let engine = FakeEngine::new(Script {
        exit_code: 3,
        ..Script::default()
    });
    let mut rec = Recorder::default();
    let cancel = CancelToken::new();
    let outcome = launch(&engine, &plan, &spec(), &options(&cancel), &mut rec).await;
    if root {
        chattr("-i");
    } else {
        std::fs::set_permissions(&stuck, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let failed = outcome.expect_err("an incomplete sweep fails the launch");
    assert_eq!(failed.error.rule(), "sweep-incomplete", "{}", failed.error);
    assert!(failed.command_ran);
    let text = failed.error.to_string();
    assert!(
        text.contains("exit status 3") && text.contains("stuck"),
        "{text}"
    );
    assert!(
        rec.events.iter().any(|e| matches!(
            e,
            Event::Failed { rule, command_ran: true, .. } if rule == "sweep-incomplete"
        )),
        "{:?}",
        rec.events
    );
    assert!(engine.containers().is_empty());
}

/// The set-id files the sweep cleared are a warning naming the first five and how many more.
#[tokio::test(start_paused = true)]
async fn the_sweep_s_warning_names_five_cleared_files_and_counts_the_rest() {
    for (files, more) in [(7, Some(2)), (1, None)] {
        let site = Site::new();
        site.make_job_dir();
        for i in 0..files {
            let f = site.job_dir().join(format!("suid-{i}"));
            std::fs::write(&f, b"x").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
        }
        let plan = site.verified(JobDir::MustExist);
        let engine = FakeEngine::new(Script::default());
        let done = run(&engine, &plan).await.unwrap();
        let warning = warning(&done, "set-user-ID/set-group-ID");
        assert!(
            warning.contains(&format!("of {files} file(s)")),
            "{warning}"
        );
        assert_eq!(
            warning.matches("(was 4755)").count(),
            files.min(5),
            "{warning}"
        );
        match more {
            Some(n) => assert!(warning.ends_with(&format!(", and {n} more")), "{warning}"),
            None => assert!(!warning.contains(" more"), "{warning}"),
        }
        assert!(
            !done.warnings.iter().any(|w| w.contains("device nodes")),
            "no device, no warning: {:?}",
            done.warnings
        );
    }
}

/// A device node the job left is a warning (it is left in place).
#[tokio::test(start_paused = true)]
async fn a_device_node_the_job_left_is_a_warning() {
    if mount_plan_host::effective_uid() != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI this test runs as root"
        );
        eprintln!("skipped: making a device node needs root");
        return;
    }
    let site = Site::new();
    site.make_job_dir();
    let node = site.job_dir().join("null");
    let made = std::process::Command::new("mknod")
        .arg(&node)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success());
    let plan = site.verified(JobDir::MustExist);
    let engine = FakeEngine::new(Script::default());
    let done = run(&engine, &plan).await.unwrap();
    let warning = warning(&done, "device nodes");
    assert!(warning.contains("null"), "{warning}");
    assert!(node.exists(), "left in place");
}

/// An inspect that fails because the container's process is ending (Podman's 500 `read
/// /proc/N/cgroup: no such process` for a job that just exited) is asked again: a quick job's
/// launch still ends with its own status. An engine that keeps answering so fails the launch
/// after a bounded number of tries, naming the rule, and leaves nothing behind.
#[tokio::test(start_paused = true)]
async fn an_inspect_that_meets_an_ending_process_is_asked_again_a_bounded_number_of_times() {
    let script = Script {
        exit_code: 4,
        ..Script::default()
    };
    // Both audits (after create, after start) meet it once, then twice in a row.
    for times in [1, 2, 3] {
        let (outcome, engine, _) = case(
            "inspect meets an ending process",
            script.clone(),
            &[(Op::Inspect, Fault::Ending, times)],
            None,
        )
        .await;
        let done = outcome.unwrap_or_else(|f| panic!("{times} ending answers: {}", f.error));
        assert_eq!(done.status.code, 4);
        assert!(engine.containers().is_empty());
    }
    let (outcome, engine, _) = case(
        "inspect always meets an ending process",
        script,
        &[(Op::Inspect, Fault::Ending, u32::MAX)],
        None,
    )
    .await;
    let failed = outcome.expect_err("an engine that never answers fails the launch");
    assert_eq!(failed.error.rule(), "process-ending", "{}", failed.error);
    assert!(engine.containers().is_empty());
    let inspects = engine
        .calls()
        .iter()
        .filter(|&&op| op == Op::Inspect)
        .count();
    assert!(inspects > 1 && inspects < 20, "{inspects} inspects");
}

/// The in-container gate found other mounts than the verified ones: the launch fails with
/// `gate-refused`, the command never ran (a directory created for it is released), the
/// container is removed. A job that exits 125 by itself, or prints a look-alike line without
/// this launch's nonce, is just a job that exited 125.
/// A refusal naming many mounts is read whole (the first 16 KiB of stderr are kept for it).
#[tokio::test(start_paused = true)]
async fn a_long_gate_refusal_is_read_whole() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_if_missing());
    let long = "a mount the plan does not have; ".repeat(300);
    let engine = FakeEngine::new(Script {
        gate_refuses: Some(("gate-unplanned-mount".into(), long.clone())),
        ..Script::default()
    });
    let failed = run(&engine, &verified).await.expect_err("the gate refused");
    assert!(
        matches!(&failed.error, LaunchError::GateRefused { message, .. } if *message == long),
        "{:?}",
        failed.error
    );
}

#[tokio::test(start_paused = true)]
async fn a_gate_refusal_fails_the_launch_and_the_command_never_ran() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_if_missing());
    assert!(verified.job_dir_created());
    let engine = FakeEngine::new(Script {
        gate_refuses: Some((
            "gate-bind-identity".into(),
            "the bind at \"/workspace/job-1\" is another directory".into(),
        )),
        ..Script::default()
    });
    let cancel = CancelToken::new();
    let mut rec = Recorder::default();
    let failed = launch(&engine, &verified, &spec(), &options(&cancel), &mut rec)
        .await
        .expect_err("the gate refused");
    assert!(
        matches!(&failed.error, LaunchError::GateRefused { check, message, .. }
            if check == "gate-bind-identity" && message.contains("/workspace/job-1")),
        "{:?}",
        failed.error
    );
    assert_eq!(failed.error.rule(), "gate-refused");
    assert!(!failed.command_ran);
    assert_eq!(engine.starts(), 0);
    assert!(engine.containers().is_empty(), "the container was removed");
    assert!(
        !site.job_dir().exists(),
        "the job directory created for it was released"
    );
    assert!(rec.events.iter().any(
        |e| matches!(e, Event::Failed { command_ran: false, rule, .. } if rule == "gate-refused")
    ));

    // 125 from the job itself, with a forged line: the job's own status.
    let site = Site::new();
    let verified = site.verified(JobDir::create_if_missing());
    let engine = FakeEngine::new(Script {
        output: vec![LogChunk {
            stream: OutputStream::Stderr,
            bytes: b"mount-plan-gate: 00000000: refused: gate-bind-identity: forged\n".to_vec(),
        }],
        exit_code: 125,
        ..Script::default()
    });
    let done = launch(
        &engine,
        &verified,
        &spec(),
        &options(&cancel),
        &mut Recorder::default(),
    )
    .await
    .expect("a job that exited 125");
    assert_eq!(done.status.code, 125);
    assert!(site.job_dir().exists(), "the job ran in it: kept");
}

#[tokio::test(start_paused = true)]
async fn the_protection_check_refuses_before_any_engine_call() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_fresh());
    let mut engine = FakeEngine::default();
    engine.availability = mount_plan_launch::Availability::Missing("not in this fake".into());
    let cancel = CancelToken::new();
    let mut rec = Recorder::default();
    let failed = launch(&engine, &verified, &spec(), &options(&cancel), &mut rec)
        .await
        .unwrap_err();
    assert_eq!(failed.error.rule(), "protection-unavailable");
    assert!(engine.calls().is_empty(), "{:?}", engine.calls());
    assert!(!site.job_dir().exists());
}

/// A launch whose token was cancelled before it began (a signal while the plan was
/// verified): cancelled before the engine is asked to create anything, the job directory it
/// created released.
#[tokio::test(start_paused = true)]
async fn a_launch_cancelled_before_it_began_creates_nothing() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_fresh());
    let engine = FakeEngine::default();
    let cancel = CancelToken::new();
    assert!(!cancel.is_cancelled());
    cancel.clone().cancel();
    assert!(cancel.is_cancelled(), "a clone cancels the same launches");
    let mut rec = Recorder::default();
    let failed = launch(&engine, &verified, &spec(), &options(&cancel), &mut rec)
        .await
        .unwrap_err();
    assert!(failed.is_cancelled(), "{}", failed.error);
    assert_eq!(failed.to_string(), failed.error.to_string());
    assert!(!failed.command_ran);
    assert!(
        !engine.calls().contains(&Op::Create),
        "{:?}",
        engine.calls()
    );
    assert!(engine.containers().is_empty());
    assert!(!site.job_dir().exists());
}

/// The audit after start runs while the output is followed; when it fails, the launch of a
/// job that would run on still ends, says the command ran, and removes the container.
#[tokio::test(start_paused = true)]
async fn a_failed_audit_after_start_ends_a_running_job() {
    /// Makes every inspect fail from the start on: the audit after create passed, the one
    /// after start cannot.
    struct FailAfterStart(FakeEngine);
    impl Observer for FailAfterStart {
        fn output(&mut self, _: &LogChunk) {}
        fn event(&mut self, event: &Event) {
            if matches!(event, Event::Started { .. }) {
                self.0.inject(Op::Inspect, Fault::Fail, u32::MAX);
            }
        }
    }
    let site = Site::new();
    let verified = site.verified(JobDir::create_fresh());
    let engine = FakeEngine::new(Script {
        until_stopped: true,
        ..Script::default()
    });
    let cancel = CancelToken::new();
    let mut observer = FailAfterStart(engine.clone());
    let failed = tokio::time::timeout(
        Duration::from_secs(3600),
        launch(
            &engine,
            &verified,
            &spec(),
            &options(&cancel),
            &mut observer,
        ),
    )
    .await
    .expect("the launch ends although the job runs on")
    .expect_err("the audit after start failed");
    assert_eq!(failed.error.rule(), "call", "{}", failed.error);
    assert!(
        failed.error.to_string().contains("inspect of container"),
        "{}",
        failed.error
    );
    assert!(failed.command_ran);
    assert!(engine.containers().is_empty(), "{:?}", engine.containers());
    let inspects = engine
        .calls()
        .iter()
        .filter(|&&op| op == Op::Inspect)
        .count();
    assert!(
        inspects >= 2,
        "{inspects} inspects: after create and after start"
    );
}

/// The events that tell what happened to containers, in order.
fn container_events(rec: &Recorder) -> Vec<&'static str> {
    rec.events
        .iter()
        .filter_map(|e| match e {
            Event::Created { .. } => Some("created"),
            Event::Started { .. } => Some("started"),
            Event::Removed { .. } => Some("removed"),
            _ => None,
        })
        .collect()
}

/// A container that runs another image than the one its command line was built from (the
/// image's name moved between the engine's read of the image and the create) never starts:
/// it is removed and created once more from a fresh read; a name that moves again fails the
/// launch with the audit's rule `image-moved`, and nothing ran.
#[tokio::test(start_paused = true)]
async fn a_container_of_a_moved_image_is_created_again_from_a_fresh_read() {
    let moved = |times| [(Op::Create, Fault::ImageMoved, times)];
    let (outcome, engine, rec) = case("moved once", Script::default(), &moved(1), None).await;
    let done = outcome.expect("the second container runs the image read afresh");
    assert_eq!(done.status.code, 0);
    assert_eq!(engine.starts(), 1);
    assert_eq!(
        engine.image_rereads(),
        1,
        "the second create reads the image"
    );
    assert_eq!(
        container_events(&rec),
        ["created", "removed", "created", "started", "removed"]
    );

    let (outcome, engine, rec) = case("moved twice", Script::default(), &moved(2), None).await;
    let failed = outcome.expect_err("a name that moves again is not chased");
    assert_eq!(failed.error.rule(), "audit", "{}", failed.error);
    let told = failed.error.to_string();
    assert!(told.contains("audit rule `image-moved`"), "{told}");
    assert!(told.contains(mount_plan_launch::fake::FAKE_IMAGE), "{told}");
    assert!(!failed.command_ran);
    assert_eq!(engine.starts(), 0);
    assert_eq!(engine.image_rereads(), 1, "read afresh once, not in a loop");
    assert_eq!(
        container_events(&rec),
        ["created", "removed", "created", "removed"]
    );
}

/// The second create of a moved image, crossed with every fault at every step and with
/// cancellation at every step: every invariant of [`case`] holds (nothing left unnamed, a
/// command never said to run or not run wrongly, the job directory kept exactly when it ran).
#[tokio::test(start_paused = true)]
async fn a_moved_image_crossed_with_faults_and_cancellation_leaves_nothing() {
    let mut cases = 0;
    for op in Op::ALL {
        for fault in FAULTS {
            // A wait that never answers is a job that runs forever (see the test above).
            if op == Op::Wait && fault == Fault::Hang {
                continue;
            }
            let cancels = std::iter::once(None).chain(Op::ALL.into_iter().map(Some));
            for cancel_at in cancels {
                let label = format!("moved, then {op:?} {fault:?} once, cancel at {cancel_at:?}");
                let faults = [(Op::Create, Fault::ImageMoved, 1), (op, fault, 1)];
                let (outcome, engine, _) =
                    case(&label, Script::default(), &faults, cancel_at).await;
                if outcome.is_ok() {
                    assert_eq!(engine.starts(), 1, "{label}");
                }
                cases += 1;
            }
        }
    }
    assert!(cases > 150, "{cases}");
}

/// A closure is an observer of the output (and ignores events).
#[tokio::test(start_paused = true)]
async fn a_closure_observes_the_output() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_fresh());
    let engine = FakeEngine::new(Script {
        output: vec![LogChunk {
            stream: OutputStream::Stdout,
            bytes: b"from the job\n".to_vec(),
        }],
        ..Script::default()
    });
    let cancel = CancelToken::new();
    let mut out = Vec::new();
    let mut observer = |chunk: &LogChunk| out.extend_from_slice(&chunk.bytes);
    let done = launch(
        &engine,
        &verified,
        &spec(),
        &options(&cancel),
        &mut observer,
    )
    .await
    .unwrap();
    assert!(done.status.success());
    assert_eq!(out, b"from the job\n");
}

#[tokio::test(start_paused = true)]
async fn a_failing_launch_never_removes_a_job_directory_another_launch_holds() {
    let site = Site::new();
    // A creates W/J; B verifies it as it is (not created by B) and holds it.
    let a = site.verified(JobDir::create_if_missing());
    assert!(a.job_dir_created());
    let b = site.verified(JobDir::create_if_missing());
    assert!(!b.job_dir_created());
    let cancel = CancelToken::new();
    let engine = FakeEngine::default().fault(Op::Create, Fault::Fail, 1);
    let mut rec = Recorder::default();
    let failed = launch(&engine, &a, &spec(), &options(&cancel), &mut rec)
        .await
        .unwrap_err();
    assert!(!failed.command_ran);
    assert!(site.job_dir().exists(), "B holds it: it stays");
    assert_eq!(a.release_job_dir().unwrap(), JobDirRelease::AlreadyReleased);
    // Once B is gone, a later release by its creator would remove it; B itself never does.
    assert_eq!(b.release_job_dir().unwrap(), JobDirRelease::NotCreatedHere);
    drop(b);
    assert!(site.job_dir().exists());
}

/// Create a container of `verified` on the fake as if launched by the launcher with `pid` on
/// `host` (this process otherwise); its id.
async fn create_of_launcher(
    engine: &FakeEngine,
    verified: &VerifiedPlan,
    pid: &str,
    host: &str,
) -> String {
    let mut labels = mount_plan_launch::lifecycle::launch_labels(
        verified.plan(),
        &spec(),
        &mount_plan_launch::LaunchId::new(),
        &mount_plan_launch::Launcher::current(),
    );
    labels.insert(mount_plan_launch::identity::LABEL_PID.into(), pid.into());
    labels.insert(mount_plan_launch::identity::LABEL_HOST.into(), host.into());
    for (k, v) in mount_plan_launch::outputs::job_dir_labels(verified) {
        labels.insert(k.into(), v);
    }
    let gate = mount_plan_launch::gate::Gate::new(verified);
    let req = mount_plan_launch::CreateRequest {
        plan: verified,
        gate: &gate,
        spec: &spec(),
        labels: &labels,
        reread_image: false,
    };
    use mount_plan_launch::Engine;
    engine.create(&req).await.unwrap().id
}

#[tokio::test(start_paused = true)]
async fn gc_removes_containers_whose_launcher_is_gone_and_keeps_the_rest() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_fresh());
    let engine = FakeEngine::new(Script {
        until_stopped: true,
        ..Script::default()
    });
    let me = mount_plan_launch::Launcher::current();
    let mut ids = Vec::new();
    for (pid, host) in [
        (me.pid.to_string(), me.host.as_str()), // alive: this process
        ("999999999".into(), &me.host),         // gone
        ("999999999".into(), "elsewhere"),      // cannot be judged here
    ] {
        ids.push(create_of_launcher(&engine, &verified, &pid, host).await);
    }
    let dry = gc(
        &engine,
        &GcOptions {
            dry_run: true,
            ..GcOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(engine.containers().len(), 3, "dry run removes nothing");
    assert_eq!(dry.iter().filter(|c| !c.removed).count(), 3);
    let done = gc(&engine, &GcOptions::default()).await.unwrap();
    let removed: Vec<&str> = done
        .iter()
        .filter(|c| c.removed)
        .map(|c| c.container.as_str())
        .collect();
    assert_eq!(removed, vec![ids[1].as_str()]);
    let left: Vec<String> = engine.containers().into_keys().collect();
    assert_eq!(left, vec![ids[0].clone(), ids[2].clone()]);
}

/// gc sweeps the job directory of an orphan it removes (its launcher died before its own
/// sweep) and says what the sweep did.
#[tokio::test(start_paused = true)]
async fn gc_sweeps_an_orphan_s_job_directory_and_says_what_it_did() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_fresh());
    let engine = FakeEngine::new(Script {
        until_stopped: true,
        ..Script::default()
    });
    let me = mount_plan_launch::Launcher::current();
    let orphan = create_of_launcher(&engine, &verified, "999999999", &me.host).await;
    // What the job left: two set-user-ID files and a looser mode on W/J.
    for name in ["a", "b"] {
        let f = site.job_dir().join(name);
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
    }
    let verified_mode = verified.job_dir_state().mode;
    std::fs::set_permissions(site.job_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let done = gc(&engine, &GcOptions::default()).await.unwrap();
    let collected = done.iter().find(|c| c.container == orphan).unwrap();
    assert!(collected.removed);
    let swept = collected.swept.clone().expect("swept").expect("complete");
    assert!(swept.starts_with("2 set-id file(s) cleared, "), "{swept}");
    assert!(
        swept.contains("owner and mode put back (the job left "),
        "{swept}"
    );
    assert!(
        !swept.contains("removed") && !swept.contains("not handled"),
        "{swept}"
    );
    let mode = std::fs::metadata(site.job_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, verified_mode);
}

/// A removal that fails is retried with a doubling pause (0.2 s, 0.4 s, ... on the paused
/// test clock): five failures cost 6.2 s before the sixth try removes the container.
#[tokio::test(start_paused = true)]
async fn a_failing_removal_is_retried_with_a_doubling_pause() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_fresh());
    let engine = FakeEngine::new(Script::default()).fault(Op::Remove, Fault::Fail, 5);
    let start = tokio::time::Instant::now();
    let done = run(&engine, &verified).await.unwrap();
    let took = start.elapsed();
    assert!(done.removed, "{:?}", done.warnings);
    assert!(engine.containers().is_empty());
    let backoff = Duration::from_millis(200 + 400 + 800 + 1600 + 3200);
    // The paused clock moves only by the launch's own sleeps: the schedule is exact.
    assert_eq!(took, backoff);
}

/// After a lost create answer the launch lists its containers to remove them; a list that
/// fails is retried with the same doubling pause (three failures: 0.2+0.4+0.8 s).
#[tokio::test(start_paused = true)]
async fn a_failing_look_up_after_a_lost_create_is_retried_with_a_doubling_pause() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_fresh());
    let engine = FakeEngine::new(Script::default())
        .fault(Op::Create, Fault::LoseAnswer, 1)
        .fault(Op::List, Fault::Fail, 3);
    let start = tokio::time::Instant::now();
    let failed = run(&engine, &verified).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(failed.error.rule(), "answer-lost", "{}", failed.error);
    assert!(
        engine.containers().is_empty(),
        "the container it made was found and removed"
    );
    let backoff = Duration::from_millis(200 + 400 + 800);
    // The paused clock moves only by the launch's own sleeps: the schedule is exact.
    assert_eq!(took, backoff);
}

/// `gc --older-than`: an orphan younger than that is kept, an older one removed.
#[tokio::test(start_paused = true)]
async fn gc_keeps_an_orphan_younger_than_asked() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_fresh());
    let engine = FakeEngine::new(Script {
        until_stopped: true,
        ..Script::default()
    });
    let me = mount_plan_launch::Launcher::current();
    let orphan = create_of_launcher(&engine, &verified, "999999999", &me.host).await;
    let older_than = |secs| GcOptions {
        older_than: Some(Duration::from_secs(secs)),
        ..GcOptions::default()
    };
    let kept = gc(&engine, &older_than(3600)).await.unwrap();
    assert!(kept.iter().all(|c| !c.removed), "{kept:?}");
    assert!(engine.containers().contains_key(&orphan));
    let done = gc(&engine, &older_than(0)).await.unwrap();
    assert!(
        done.iter().any(|c| c.removed && c.container == orphan),
        "{done:?}"
    );
    assert!(engine.containers().is_empty());
}

/// A cancellation (SIGTERM, SIGINT) while `create` is in flight: the engine finishes the
/// create anyway. The launch waits for that answer (bounded), then removes the container it
/// made, instead of looking up the launch id before the container exists and leaving it for
/// `gc` (seen by the soak: 7 of 381 signalled launches on Docker before this).
#[tokio::test(start_paused = true)]
async fn a_create_in_flight_when_cancelled_is_awaited_and_its_container_removed() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_if_missing());
    let cancel = CancelToken::new();
    let engine = FakeEngine::default()
        .fault(Op::Create, Fault::Slow, 1)
        .cancel_on(Op::Create, cancel.clone());
    let mut rec = Recorder::default();
    let failed = launch(&engine, &verified, &spec(), &options(&cancel), &mut rec)
        .await
        .expect_err("cancelled");
    assert!(failed.is_cancelled(), "{}", failed.error);
    assert!(!failed.command_ran);
    // Let anything the engine still does finish: nothing may appear afterwards.
    tokio::time::sleep(mount_plan_launch::fake::SLOW * 3).await;
    assert!(
        engine.containers().is_empty(),
        "a container made after the launch gave up: {:?}",
        engine.containers().keys()
    );
    assert_eq!(engine.starts(), 0);
    assert!(!site.job_dir().exists(), "released: the command never ran");
}

/// A `create` whose answer is lost while the engine is still creating: the look-up by launch
/// id finds nothing at first; it looks once more after a pause and removes what appeared.
#[tokio::test(start_paused = true)]
async fn a_lost_create_still_in_progress_is_found_by_the_second_look() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_if_missing());
    let cancel = CancelToken::new();
    // The call timeout (500 ms here) runs out before the slow create (1 s) takes effect.
    let engine = FakeEngine::default().fault(Op::Create, Fault::Slow, 1);
    let failed = launch(
        &engine,
        &verified,
        &spec(),
        &options(&cancel),
        &mut Recorder::default(),
    )
    .await
    .expect_err("the create's answer was lost");
    assert_eq!(failed.error.rule(), "answer-lost", "{}", failed.error);
    tokio::time::sleep(mount_plan_launch::fake::SLOW * 3).await;
    assert!(
        engine.containers().is_empty(),
        "left: {:?}",
        engine.containers().keys()
    );
}

/// A container gone between gc's listing and its removal (its launcher removed it as it
/// ended) is not reported as removed: gc did not remove it, and the report is what a site
/// counts orphans by.
#[tokio::test(start_paused = true)]
async fn gc_does_not_report_a_container_that_was_gone_before_its_removal() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_fresh());
    let engine = FakeEngine::new(Script {
        until_stopped: true,
        ..Script::default()
    })
    .fault(Op::Remove, Fault::Gone, 1);
    let me = mount_plan_launch::Launcher::current();
    for _ in 0..2 {
        create_of_launcher(&engine, &verified, "999999999", &me.host).await;
    }
    let done = gc(&engine, &GcOptions::default()).await.expect("gc");
    assert_eq!(done.len(), 1, "only the container gc removed: {done:?}");
    assert!(done[0].removed, "{done:?}");
    assert!(engine.containers().is_empty());
}

/// `gc` goes on past a removal that fails (another gc removing the same container: Docker
/// answers 409): the others are still judged and removed, the failed one is reported kept
/// with why.
#[tokio::test(start_paused = true)]
async fn gc_goes_on_past_a_removal_that_fails() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_fresh());
    let engine = FakeEngine::new(Script {
        until_stopped: true,
        ..Script::default()
    })
    .fault(Op::Remove, Fault::Fail, 1);
    let me = mount_plan_launch::Launcher::current();
    for _ in 0..2 {
        create_of_launcher(&engine, &verified, "999999999", &me.host).await;
    }
    let done = gc(&engine, &GcOptions::default())
        .await
        .expect("gc goes on");
    assert_eq!(done.len(), 2);
    assert_eq!(done.iter().filter(|c| c.removed).count(), 1, "{done:?}");
    let kept = done.iter().find(|c| !c.removed).unwrap();
    assert!(
        matches!(&kept.verdict, mount_plan_launch::Verdict::Unknown(why) if why.contains("removal failed")),
        "{kept:?}"
    );
    assert_eq!(engine.containers().len(), 1);
}

/// Issue 21, finding 6: a stop grace at the top of `Duration`'s range (what
/// `--stop-grace 18446744073709551615` was before the CLI bounded it, and a library caller
/// can still pass) and a cancellation while the job runs: no overflow panic, the container
/// is stopped and removed.
#[tokio::test(start_paused = true)]
async fn a_stop_grace_at_the_end_of_the_clock_does_not_overflow() {
    let site = Site::new();
    let verified = site.verified(JobDir::create_fresh());
    let cancel = CancelToken::new();
    let engine = FakeEngine::new(Script {
        until_stopped: true,
        ..Script::default()
    })
    .cancel_on(Op::Wait, cancel.clone());
    let options = LaunchOptions {
        stop_grace: Duration::MAX,
        log_drain: Duration::MAX,
        ..options(&cancel)
    };
    let mut rec = Recorder::default();
    let outcome = launch(&engine, &verified, &spec(), &options, &mut rec).await;
    let failed = outcome.expect_err("cancelled");
    assert!(failed.is_cancelled(), "{:?}", failed.error);
    assert!(failed.command_ran);
    assert!(engine.calls().contains(&Op::Stop), "stopped first");
    assert!(engine.containers().is_empty(), "{:?}", engine.containers());
}

/// Issue 21, finding 4: a launcher on a second machine that shares the engine and the host
/// name (another machine id and boot id) is alive as far as this machine can tell: `gc` here
/// cannot judge its container and keeps it, saying which machine launched it.
#[tokio::test(start_paused = true)]
async fn gc_keeps_a_container_of_another_machine_with_the_same_host_name() {
    use mount_plan_launch::identity::{LABEL_BOOT_ID, LABEL_HOST, LABEL_MACHINE, LABEL_PID};
    let site = Site::new();
    let verified = site.verified(JobDir::create_fresh());
    let engine = FakeEngine::new(Script {
        until_stopped: true,
        ..Script::default()
    });
    let me = mount_plan_launch::Launcher::current();
    // Same host name, and a pid that is not ours here (it runs there).
    create_with_labels(
        &engine,
        &verified,
        &[
            (LABEL_PID, "999999999"),
            (LABEL_HOST, &me.host),
            (LABEL_MACHINE, "0123456789abcdef0123456789abcdef"),
            (LABEL_BOOT_ID, "00000000-1111-2222-3333-444444444444"),
        ],
    )
    .await;
    let done = gc(&engine, &GcOptions::default()).await.unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(!done[0].removed, "{done:?}");
    assert!(
        matches!(&done[0].verdict, mount_plan_launch::Verdict::Unknown(why)
            if why.contains("another machine") && why.contains("0123456789abcdef")),
        "{done:?}"
    );
    assert_eq!(engine.containers().len(), 1, "kept");
}

/// Create a container of `verified` on the fake with this process's launch labels, `labels`
/// replacing some of them; its id.
async fn create_with_labels(
    engine: &FakeEngine,
    verified: &VerifiedPlan,
    labels: &[(&str, &str)],
) -> String {
    let mut all = mount_plan_launch::lifecycle::launch_labels(
        verified.plan(),
        &spec(),
        &mount_plan_launch::LaunchId::new(),
        &mount_plan_launch::Launcher::current(),
    );
    for (k, v) in labels {
        all.insert((*k).to_owned(), (*v).to_owned());
    }
    let gate = mount_plan_launch::gate::Gate::new(verified);
    let req = mount_plan_launch::CreateRequest {
        plan: verified,
        gate: &gate,
        spec: &spec(),
        labels: &all,
        reread_image: false,
    };
    use mount_plan_launch::Engine;
    engine.create(&req).await.unwrap().id
}
