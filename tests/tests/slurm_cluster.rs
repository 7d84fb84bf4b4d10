//! What only the Slurm cluster of `.ci/slurm-setup` can show: a job pinned to each compute
//! node runs there with its exit status back, a launch cancelled by its launcher and a job
//! cancelled from outside (`scancel`) both stop on the node, `gc` collects the jobs whose
//! launcher is gone (a SIGKILLed launcher leaves exactly that), and `doctor` checks every node
//! from the node. After each: nothing of the
//! test in the queue, no bundle on the shared filesystem, no container in the nodes' runc.
//!
//! Needs the cluster (`bash .ci/slurm-setup`), root and Docker (the probe image is unpacked
//! from `docker save`). Without them: fails under `CI`, otherwise shown as ignored.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use mount_plan_launch::Engine;
use support::slurm;
use support::swarm::{sh_spec, SharedWorkspace};

/// A job pinned to each node in turn runs there (Slurm's own SLURMD_NODENAME, seen from
/// inside the container), its output and exit status come back, and nothing is left.
async fn slurm_job_pinned_to_each_node_runs_there() {
    let Some(cluster) = slurm::cluster() else {
        return;
    };
    let image = support::require("the probe image", slurm::probe_image(&cluster)).unwrap();
    let engine = slurm::engine(&cluster).await;
    for node in &cluster.nodes {
        let ws = SharedWorkspace::new(&cluster.config.shared.join("work"), &["pinned"]);
        let verified = ws.verified("pinned");
        let run = support::unique("pinned");
        let spec = sh_spec(
            &image,
            "echo \"$SLURMD_NODENAME\" > where; echo done > out; echo to-stdout; echo to-stderr >&2; exit 3",
            &run,
            &[format!("node.hostname=={node}")],
        );
        let (result, output) = support::swarm::launch(&engine, &verified, &spec).await;
        let finished = result.unwrap_or_else(|f| panic!("launch on {node}: {f}"));
        assert_eq!(finished.status.code, 3, "{finished:?}");
        assert!(finished.removed, "{finished:?}");
        assert!(output.contains("to-stdout\n"), "{output:?}");
        assert!(output.contains("to-stderr\n"), "{output:?}");
        let job = ws.w().join("pinned");
        assert_eq!(fs::read_to_string(job.join("out")).unwrap(), "done\n");
        assert_eq!(fs::read_to_string(job.join("where")).unwrap().trim(), node);
        slurm::assert_nothing_left(&cluster, &engine, &run).await;
    }
}

/// A launch cancelled by its launcher while the command runs (SIGTERM to the CLI does
/// this): the step is signalled, then killed after the grace, well before it would end.
async fn slurm_cancelled_launch_is_stopped_on_its_node() {
    let Some(cluster) = slurm::cluster() else {
        return;
    };
    let image = support::require("the probe image", slurm::probe_image(&cluster)).unwrap();
    let engine = slurm::engine(&cluster).await;
    let ws = SharedWorkspace::new(&cluster.config.shared.join("work"), &["cancelled"]);
    let verified = ws.verified("cancelled");
    let run = support::unique("cancel");
    let spec = sh_spec(
        &image,
        "echo started > started; sleep 120 && echo finished > finished",
        &run,
        &[format!("node.hostname=={}", cluster.nodes[0])],
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
    let t0 = Instant::now();
    let (result, ()) = tokio::join!(
        mount_plan_launch::launch(&engine, &verified, &spec, &options, &mut sink),
        canceller
    );
    let failed = result.expect_err("cancelled");
    assert!(failed.is_cancelled() && failed.command_ran, "{failed}");
    slurm::assert_nothing_left(&cluster, &engine, &run).await;
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    assert!(!ws.w().join("cancelled/finished").exists());
}

/// A job cancelled from outside (`scancel` by the site or the user) ends the launch with an
/// error naming the rule, and nothing is left.
async fn slurm_job_cancelled_from_outside_ends_the_launch() {
    let Some(cluster) = slurm::cluster() else {
        return;
    };
    let image = support::require("the probe image", slurm::probe_image(&cluster)).unwrap();
    let engine = slurm::engine(&cluster).await;
    let ws = SharedWorkspace::new(&cluster.config.shared.join("work"), &["scancelled"]);
    let verified = ws.verified("scancelled");
    let run = support::unique("scancel");
    let spec = sh_spec(
        &image,
        "echo started > started; sleep 120 && echo finished > finished",
        &run,
        &[],
    );
    let started = ws.w().join("scancelled/started");
    let killer = async {
        while !started.exists() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ids = support::leftovers(&engine, &run).await;
        assert_eq!(ids.len(), 1, "{ids:?}");
        let out = cluster
            .command(&["scancel", &ids[0]])
            .output()
            .expect("scancel");
        assert!(out.status.success(), "{out:?}");
    };
    let (result, ()) = tokio::join!(support::swarm::launch(&engine, &verified, &spec), killer);
    let failed = result.0.expect_err("scancelled");
    let text = failed.to_string();
    assert!(text.contains("slurm rule `scancelled`"), "{text}");
    slurm::assert_nothing_left(&cluster, &engine, &run).await;
    assert!(!ws.w().join("scancelled/finished").exists());
}

/// `gc` finds jobs as it finds containers: one whose launcher is gone (killed with SIGKILL:
/// nothing cleaned up) is cancelled and its bundle removed, one whose launcher runs (this
/// test) is kept.
async fn slurm_gc_removes_only_jobs_whose_launcher_is_gone() {
    let Some(cluster) = slurm::cluster() else {
        return;
    };
    let image = support::require("the probe image", slurm::probe_image(&cluster)).unwrap();
    let engine = slurm::engine(&cluster).await;
    let ws = SharedWorkspace::new(&cluster.config.shared.join("work"), &["orphan", "alive"]);
    let run = support::unique("gc");
    let spec = sh_spec(&image, "sleep 60", &run, &[]);
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
    slurm::assert_nothing_left(&cluster, &engine, &run).await;
}

/// `doctor`'s site checks on the real cluster, each looked at from the node: every node runs
/// a step, its oci.conf execs runc, runc's version is read, it reads back the launcher's
/// token from the shared directory and sees the workspace there as the same directory. A
/// workspace of this host that the nodes do not have fails `node-workspace` on each of them,
/// and the rest still passes. No doctor job stays in the queue.
async fn slurm_doctor_checks_every_node_from_the_node() {
    use mount_plan_launch::CheckOutcome;
    use mount_plan_slurm::doctor;
    let Some(cluster) = slurm::cluster() else {
        return;
    };
    let engine = slurm::engine(&cluster).await;
    let ws = SharedWorkspace::new(&cluster.config.shared.join("work"), &["doctor"]);
    let elsewhere = tempfile::tempdir().expect("tempdir");
    for (workspace, seen) in [(ws.w(), true), (elsewhere.path(), false)] {
        let checks = engine
            .site_checks(Some(workspace))
            .await
            .expect("site checks");
        for node in &cluster.nodes {
            for rule in [
                doctor::RULE_STEP,
                doctor::RULE_OCI_CONF,
                doctor::RULE_OCI_EXEC,
                doctor::RULE_RUNTIME,
                doctor::RULE_SHARED,
                doctor::RULE_WORKSPACE,
            ] {
                let found: Vec<_> = checks
                    .iter()
                    .filter(|c| c.place == *node && c.rule == rule)
                    .collect();
                assert_eq!(found.len(), 1, "{rule} on {node}: {checks:#?}");
                let want = if rule == doctor::RULE_WORKSPACE && !seen {
                    CheckOutcome::Failed
                } else {
                    CheckOutcome::Passed
                };
                assert_eq!(found[0].outcome, want, "{:?}", found[0]);
            }
            let runtime = checks
                .iter()
                .find(|c| c.place == *node && c.rule == doctor::RULE_RUNTIME)
                .unwrap();
            assert!(
                runtime.detail.starts_with("runc version")
                    && runtime.detail.contains("CVE-2024-21626"),
                "{runtime:?}"
            );
        }
        assert_eq!(checks.len(), 6 * cluster.nodes.len(), "{checks:#?}");
    }
    let queued = support::run(&mut cluster.command(&["squeue", "--noheader", "--format=%i %j"]))
        .unwrap_or_default();
    assert!(!queued.contains("doctor.mount-plan"), "{queued}");
    let tokens: Vec<_> = fs::read_dir(&cluster.config.shared)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".mount-plan-doctor-")
        })
        .collect();
    assert!(tokens.is_empty(), "{tokens:?}");
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const SLURM: &[Need] = &[Need::Slurm, Need::Root, Need::Busybox, Need::Docker];
    harness::run(vec![
        harness::tokio(
            Runtime::Workers(2),
            "slurm_job_pinned_to_each_node_runs_there",
            SLURM,
            slurm_job_pinned_to_each_node_runs_there,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "slurm_cancelled_launch_is_stopped_on_its_node",
            SLURM,
            slurm_cancelled_launch_is_stopped_on_its_node,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "slurm_job_cancelled_from_outside_ends_the_launch",
            SLURM,
            slurm_job_cancelled_from_outside_ends_the_launch,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "slurm_gc_removes_only_jobs_whose_launcher_is_gone",
            SLURM,
            slurm_gc_removes_only_jobs_whose_launcher_is_gone,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "slurm_doctor_checks_every_node_from_the_node",
            SLURM,
            slurm_doctor_checks_every_node_from_the_node,
        ),
    ]);
}
