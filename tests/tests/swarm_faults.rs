//! Losing a worker during a job, on the three-node Swarm of `.ci/swarm-setup`: its container
//! stopped, or its engine (the dockerd inside it, never this machine's) restarted. The launch
//! must end within a bounded time with a reported outcome, remove the service, and keep what
//! the job wrote to W/J before the loss. Each test restores its worker.
//!
//! Needs the swarm (`bash .ci/swarm-setup`) and root. Without them: fails under `CI`,
//! otherwise shown as ignored.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::swarm::{self, SharedWorkspace, Worker};

/// A launch that loses its node ends within this bound (the manager marks a silent node
/// down after about 10-15 s; the lifecycle then removes the service).
const BOUND: Duration = Duration::from_secs(90);

async fn wait_for_file(path: &Path, within: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < within,
            "{path:?} did not appear within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run a job pinned to `worker` that writes `before`, then sleeps; once `before` is there,
/// `break_it` runs. Returns the launch's outcome as text, after checking the bound, the
/// removal of the service and that `before` survived.
async fn lose_worker_mid_job(worker: &Worker, break_it: impl FnOnce()) -> String {
    let cluster = swarm::cluster().expect("checked by the caller");
    let engine = swarm::engine(&cluster).await;
    let ws = SharedWorkspace::new(&cluster.workdir, &["victim"]);
    let verified = ws.verified("victim");
    let run = support::unique("lost");
    let spec = swarm::sh_spec(
        &cluster.busybox,
        "echo before > before; sleep 600; echo after > after",
        &run,
        &[format!("node.hostname=={}", worker.hostname)],
    );
    let before = ws.w().join("victim/before");
    let launch = swarm::launch(&engine, &verified, &spec);
    tokio::pin!(launch);
    let broken_at = tokio::select! {
        _ = wait_for_file(&before, Duration::from_secs(60)) => {
            break_it();
            Instant::now()
        }
        (r, _) = &mut launch => panic!("the job ended before the fault: {:?}", r.map(|f| f.status)),
    };
    let (result, _) = tokio::time::timeout(BOUND, &mut launch)
        .await
        .unwrap_or_else(|_| panic!("the launch hung: no outcome {BOUND:?} after the fault"));
    let took = broken_at.elapsed();
    let outcome = match &result {
        Ok(f) => format!("exit status {} after {took:?}", f.status.code),
        Err(f) => format!(
            "failed (rule {}, command ran: {}) after {took:?}: {}",
            f.error.rule(),
            f.command_ran,
            f.error
        ),
    };
    eprintln!("{}: {outcome}", worker.hostname);
    if let Ok(f) = &result {
        assert!(
            !f.status.success(),
            "a job killed mid-way cannot succeed: {outcome}"
        );
    }
    if let Err(f) = &result {
        assert!(f.command_ran, "{outcome}");
        assert!(
            f.error.to_string().contains(&worker.hostname),
            "the error names the node: {outcome}"
        );
    }
    let left = support::leftovers(&engine, &run).await;
    assert!(left.is_empty(), "services left behind: {left:?}");
    assert_eq!(std::fs::read_to_string(&before).unwrap(), "before\n");
    assert!(!ws.w().join("victim/after").exists());
    // Back to a ready worker, and nothing of the job left on it once it has caught up.
    worker
        .wait_ready(Duration::from_secs(90))
        .expect("the worker comes back");
    swarm::wait_no_containers(worker, &run, Duration::from_secs(60)).await;
    outcome
}

/// The worker's container is stopped mid-job, then started again.
async fn swarm_worker_stopped_mid_job_ends_bounded_and_leaks_nothing() {
    let Some(cluster) = swarm::cluster() else {
        return;
    };
    let worker = cluster.workers[1].clone();
    let name = worker.hostname.clone();
    let outcome = lose_worker_mid_job(&worker, move || {
        support::run(Command::new("docker").args(["stop", "-t", "2", &name])).expect("stop");
        let start = Command::new("docker").args(["start", &name]).output();
        assert!(
            start.is_ok_and(|o| o.status.success()),
            "restart the worker"
        );
    })
    .await;
    eprintln!("worker stopped: {outcome}");
}

/// The dockerd inside the worker's container is restarted mid-job (its supervisor starts it
/// again); this machine's engine is never touched.
async fn swarm_worker_engine_restarted_mid_job_is_reported_never_hangs() {
    let Some(cluster) = swarm::cluster() else {
        return;
    };
    let worker = cluster.workers[0].clone();
    let name = worker.hostname.clone();
    let outcome = lose_worker_mid_job(&worker, move || {
        support::run(Command::new("docker").args([
            "exec",
            &name,
            "sh",
            "-c",
            "kill $(cat /var/run/docker.pid)",
        ]))
        .expect("restart the worker's dockerd");
    })
    .await;
    eprintln!("worker engine restarted: {outcome}");
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const SWARM: &[Need] = &[Need::Swarm, Need::Root];
    harness::run(vec![
        harness::tokio(
            Runtime::Workers(2),
            "swarm_worker_stopped_mid_job_ends_bounded_and_leaks_nothing",
            SWARM,
            swarm_worker_stopped_mid_job_ends_bounded_and_leaks_nothing,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "swarm_worker_engine_restarted_mid_job_is_reported_never_hangs",
            SWARM,
            swarm_worker_engine_restarted_mid_job_is_reported_never_hangs,
        ),
    ]);
}
