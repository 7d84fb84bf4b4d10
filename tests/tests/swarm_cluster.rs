//! What only a cluster can show, on the three-node Swarm of `.ci/swarm-setup`: placement on
//! each worker, eight jobs at once over both workers, a node that cannot see W, and a node that
//! sees another directory at W/J's path (refused by the in-container gate, naming the node).
//!
//! Needs the swarm (`bash .ci/swarm-setup`) and root. Without them: fails under `CI`,
//! otherwise shown as ignored.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use mount_plan_launch::Engine;
use support::swarm::{self, SharedWorkspace};

/// A job pinned to each worker in turn runs there (its cgroup path names that worker's
/// container) and its output appears in W/J on the host.
async fn swarm_job_pinned_to_each_worker_runs_there() {
    let Some(cluster) = swarm::cluster() else {
        return;
    };
    let engine = swarm::engine(&cluster).await;
    for worker in &cluster.workers {
        let ws = SharedWorkspace::new(&cluster.workdir, &["pinned"]);
        let verified = ws.verified("pinned");
        let run = support::unique("pinned");
        let spec = swarm::sh_spec(
            &cluster.busybox,
            "cat /proc/self/cgroup > where; echo done > out; echo to-stdout",
            &run,
            &[format!("node.hostname=={}", worker.hostname)],
        );
        let (result, stdout) = swarm::launch(&engine, &verified, &spec).await;
        let finished = result.unwrap_or_else(|f| panic!("launch on {}: {f}", worker.hostname));
        assert!(finished.status.success(), "{finished:?}");
        assert!(finished.removed, "{finished:?}");
        assert_eq!(stdout, "to-stdout\n");
        let job = ws.w().join("pinned");
        assert_eq!(fs::read_to_string(job.join("out")).unwrap(), "done\n");
        let cgroup = fs::read_to_string(job.join("where")).unwrap();
        assert!(
            cgroup.contains(&worker.container_id()),
            "the job did not run on {}: {cgroup}",
            worker.hostname
        );
        let left = support::leftovers(&engine, &run).await;
        assert!(left.is_empty(), "services left behind: {left:?}");
        // The node removes the exited container too (a `replicated-job` service would
        // leave it there on 20.10).
        swarm::wait_no_containers(worker, &run, Duration::from_secs(20)).await;
    }
}

/// A launch cancelled while its command runs stops the command on its node: the service is
/// removed and the node's container goes (SIGTERM, SIGKILL after the 10 s grace), well
/// before the command would have ended.
async fn swarm_cancelled_job_is_stopped_on_its_node() {
    let Some(cluster) = swarm::cluster() else {
        return;
    };
    let engine = swarm::engine(&cluster).await;
    let worker = &cluster.workers[0];
    let ws = SharedWorkspace::new(&cluster.workdir, &["cancelled"]);
    let verified = ws.verified("cancelled");
    let run = support::unique("cancel");
    let spec = swarm::sh_spec(
        &cluster.busybox,
        "echo started > started; sleep 120; echo finished > finished",
        &run,
        &[format!("node.hostname=={}", worker.hostname)],
    );
    let options = mount_plan_launch::LaunchOptions::default();
    let cancel = options.cancel.clone();
    let started = ws.w().join("cancelled/started");
    let canceller = async {
        while !started.exists() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cancel.cancel();
    };
    let mut sink = |_: &mount_plan_launch::LogChunk| {};
    let (result, ()) = tokio::join!(
        mount_plan_launch::launch(&engine, &verified, &spec, &options, &mut sink),
        canceller
    );
    let failed = result.expect_err("cancelled");
    assert!(failed.is_cancelled() && failed.command_ran, "{failed}");
    let cancelled_at = Instant::now();
    assert!(support::leftovers(&engine, &run).await.is_empty());
    swarm::wait_no_containers(worker, &run, Duration::from_secs(30)).await;
    assert!(cancelled_at.elapsed() < Duration::from_secs(30));
    assert!(!ws.w().join("cancelled/finished").exists());
}

/// Eight jobs launched at once, spread over the two workers by constraint, each see only
/// their own job directory at R (plus the shared ones), and write only there.
async fn swarm_eight_jobs_at_once_see_only_their_own_job_dir() {
    let Some(cluster) = swarm::cluster() else {
        return;
    };
    let engine = swarm::engine(&cluster).await;
    let jobs: Vec<String> = (0..8).map(|i| format!("job{i}")).collect();
    let names: Vec<&str> = jobs.iter().map(String::as_str).collect();
    let ws = SharedWorkspace::new(&cluster.workdir, &names);
    let run = support::unique("eight");
    let verified: Vec<_> = jobs.iter().map(|j| ws.verified(j)).collect();
    let specs: Vec<_> = (0..8)
        .map(|i| {
            let worker = &cluster.workers[i % cluster.workers.len()];
            swarm::sh_spec(
                &cluster.busybox,
                "ls /workspace > seen; cat /proc/self/cgroup > where; echo mine > mine",
                &run,
                &[format!("node.hostname=={}", worker.hostname)],
            )
        })
        .collect();
    let launches = verified
        .iter()
        .zip(&specs)
        .map(|(v, s)| swarm::launch(&engine, v, s));
    let results = futures_util::future::join_all(launches).await;
    for (i, (result, _)) in results.into_iter().enumerate() {
        let job = &jobs[i];
        let finished = result.unwrap_or_else(|f| panic!("{job}: {f}"));
        assert!(finished.status.success(), "{job}: {finished:?}");
        let dir = ws.w().join(job);
        let seen = fs::read_to_string(dir.join("seen")).unwrap();
        assert_eq!(
            seen,
            format!("{job}\nlocal\nstartup\n"),
            "{job} saw {seen:?}"
        );
        assert_eq!(fs::read_to_string(dir.join("mine")).unwrap(), "mine\n");
        let worker = &cluster.workers[i % cluster.workers.len()];
        let cgroup = fs::read_to_string(dir.join("where")).unwrap();
        assert!(cgroup.contains(&worker.container_id()), "{job}: {cgroup}");
        // Nothing else was written into this job's directory by another job.
        let mut entries: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(entries, ["mine", "seen", "where"], "{job}");
    }
    let left = support::leftovers(&engine, &run).await;
    assert!(left.is_empty(), "services left behind: {left:?}");
}

/// A node that cannot see W (here: W outside the shared directory, so the bind source is
/// missing on every worker) rejects the task: the launch fails as a start error naming the
/// node, the command never ran, and no service is left.
async fn swarm_node_without_the_workspace_fails_naming_the_node() {
    let Some(cluster) = swarm::cluster() else {
        return;
    };
    let engine = swarm::engine(&cluster).await;
    let ws = SharedWorkspace::new(&std::env::temp_dir(), &["unseen"]);
    let verified = ws.verified("unseen");
    let run = support::unique("unseen");
    let worker = &cluster.workers[0];
    let spec = swarm::sh_spec(
        &cluster.busybox,
        "echo ran > ran",
        &run,
        &[format!("node.hostname=={}", worker.hostname)],
    );
    let (result, _) = swarm::launch(&engine, &verified, &spec).await;
    let failed = result.expect_err("a node without W must not run the job");
    assert!(!failed.command_ran, "{failed}");
    assert_eq!(failed.error.rule(), "start", "{failed}");
    let msg = failed.error.to_string();
    assert!(
        msg.contains(&worker.hostname) && msg.contains("bind source path does not exist"),
        "{msg}"
    );
    assert!(!ws.w().join("unseen/ran").exists());
    let left = support::leftovers(&engine, &run).await;
    assert!(left.is_empty(), "services left behind: {left:?}");
    assert!(engine
        .list("mount-plan-test.run", &run)
        .await
        .unwrap()
        .is_empty());
}

/// Shared storage is explicit: a node that sees another directory at W/J's path (here a bind
/// mount made inside the worker over W/J, as a node with the wrong filesystem at W's path
/// would) gets its task refused by the in-container gate before the command runs: exit 125
/// (`gate-refused`), the error names the node and both identities, the command's marker exists
/// neither in W/J nor in the directory the node mounted, and the service is removed.
async fn swarm_node_seeing_another_directory_is_refused_by_the_gate() {
    let Some(cluster) = swarm::cluster() else {
        return;
    };
    let engine = swarm::engine(&cluster).await;
    let ws = SharedWorkspace::new(&cluster.workdir, &["other"]);
    let verified = ws.verified("other");
    let run = support::unique("other");
    let worker = &cluster.workers[0];
    let job_dir = ws.w().join("other");
    let elsewhere = format!("/tmp/elsewhere-{run}");
    let exec = |script: &str| {
        let o = std::process::Command::new("docker")
            .args(["exec", &worker.hostname, "sh", "-c", script])
            .output()
            .expect("docker exec");
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    exec(&format!(
        "mkdir -p {elsewhere} && mount --bind {elsewhere} {}",
        job_dir.display()
    ));
    let spec = swarm::sh_spec(
        &cluster.busybox,
        "echo ran > ran",
        &run,
        &[format!("node.hostname=={}", worker.hostname)],
    );
    let (result, _) = swarm::launch(&engine, &verified, &spec).await;
    let seen = exec(&format!(
        "ls -A {elsewhere}; umount {} && rm -rf {elsewhere}",
        job_dir.display()
    ));
    let failed = result.expect_err("a node seeing another directory must not run the job");
    assert!(!failed.command_ran, "{failed}");
    assert_eq!(failed.error.rule(), "gate-refused", "{failed}");
    let msg = failed.error.to_string();
    assert!(
        msg.contains("gate-bind-identity") && msg.contains(&worker.hostname),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("inode {}", verified.job_pin().ino)),
        "{msg}"
    );
    assert_eq!(seen.trim(), "", "the command ran in the node's directory");
    assert!(!job_dir.join("ran").exists(), "the command ran in W/J");
    let left = support::leftovers(&engine, &run).await;
    assert!(left.is_empty(), "services left behind: {left:?}");
}

/// `gc` finds services as it finds containers: one whose launcher is gone is removed, one
/// whose launcher runs (this test) is kept.
async fn swarm_gc_removes_only_services_whose_launcher_is_gone() {
    let Some(cluster) = swarm::cluster() else {
        return;
    };
    let engine = swarm::engine(&cluster).await;
    let ws = SharedWorkspace::new(&cluster.workdir, &["orphan", "alive"]);
    let run = support::unique("gc");
    let spec = swarm::sh_spec(&cluster.busybox, "sleep 60", &run, &[]);
    let gone = mount_plan_launch::Launcher {
        pid: u32::MAX,
        ..mount_plan_launch::Launcher::current()
    };
    let orphan_plan = ws.verified("orphan");
    let labels = mount_plan_launch::lifecycle::launch_labels(
        orphan_plan.plan(),
        &spec,
        &mount_plan_launch::LaunchId::new(),
        &gone,
    );
    let gate = mount_plan_launch::gate::Gate::new(&orphan_plan);
    let request = mount_plan_launch::CreateRequest {
        plan: &orphan_plan,
        gate: &gate,
        spec: &spec,
        labels: &labels,
        reread_image: false,
    };
    let orphan = engine.create(&request).await.expect("create").id;
    engine.start(&orphan).await.expect("start");
    let alive = support::started(&engine, &ws.verified("alive"), &spec)
        .await
        .expect("start the live one");
    let collected = mount_plan_launch::gc(&engine, &mount_plan_launch::GcOptions::default())
        .await
        .expect("gc");
    let verdict = |id: &str| collected.iter().find(|c| c.container == id).cloned();
    let o = verdict(&orphan).expect("gc lists the orphan");
    assert!(o.removed, "{o:?}");
    let a = verdict(&alive).expect("gc lists the live one");
    assert!(!a.removed, "{a:?}");
    let left = support::leftovers(&engine, &run).await;
    assert_eq!(left, vec![alive.clone()]);
    assert_eq!(
        engine.remove(&alive).await.expect("remove"),
        mount_plan_launch::Removal::Removed
    );
    assert!(support::leftovers(&engine, &run).await.is_empty());
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const SWARM: &[Need] = &[Need::Swarm, Need::Root];
    harness::run(vec![
        harness::tokio(
            Runtime::Workers(2),
            "swarm_job_pinned_to_each_worker_runs_there",
            SWARM,
            swarm_job_pinned_to_each_worker_runs_there,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "swarm_cancelled_job_is_stopped_on_its_node",
            SWARM,
            swarm_cancelled_job_is_stopped_on_its_node,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "swarm_eight_jobs_at_once_see_only_their_own_job_dir",
            SWARM,
            swarm_eight_jobs_at_once_see_only_their_own_job_dir,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "swarm_node_without_the_workspace_fails_naming_the_node",
            SWARM,
            swarm_node_without_the_workspace_fails_naming_the_node,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "swarm_node_seeing_another_directory_is_refused_by_the_gate",
            SWARM,
            swarm_node_seeing_another_directory_is_refused_by_the_gate,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "swarm_gc_removes_only_services_whose_launcher_is_gone",
            SWARM,
            swarm_gc_removes_only_services_whose_launcher_is_gone,
        ),
    ]);
}
