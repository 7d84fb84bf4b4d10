//! Faults on the Slurm cluster of `.ci/slurm-setup` that disturb the whole cluster (a node
//! killed), kept apart from `slurm_cluster` so that no other test's job is on that node.
//!
//! Needs the cluster (`bash .ci/slurm-setup`), root and Docker. Without them: fails under
//! `CI`, otherwise shown as ignored.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use support::slurm;
use support::swarm::{sh_spec, SharedWorkspace};

/// A node lost while its job runs (its slurmd container killed): Slurm marks the node down
/// and the job `NODE_FAIL` (never requeued), the launch ends with `slurm rule `job-lost``
/// and no exit status, and what the job wrote to W/J before the loss stays. The node comes
/// back (ReturnToService=2) and takes jobs again.
async fn slurm_node_lost_mid_job_ends_the_launch_without_a_status() {
    let Some(cluster) = slurm::cluster() else {
        return;
    };
    let image = support::require("the probe image", slurm::probe_image(&cluster)).unwrap();
    let engine = slurm::engine(&cluster).await;
    let node = cluster.nodes[1].clone();
    let ws = SharedWorkspace::new(&cluster.config.shared.join("work"), &["lost"]);
    let verified = ws.verified("lost");
    let run = support::unique("lost");
    let spec = sh_spec(
        &image,
        "echo before > before; sleep 600 && echo after > after",
        &run,
        &[format!("node.hostname=={node}")],
    );
    let before = ws.w().join("lost/before");
    let killer = async {
        while !before.exists() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let out = std::process::Command::new("docker")
            .args(["kill", &node])
            .output()
            .expect("docker kill");
        assert!(out.status.success(), "{out:?}");
        Instant::now()
    };
    let ((result, _), killed_at) =
        tokio::join!(support::swarm::launch(&engine, &verified, &spec), killer);
    let lost_after = killed_at.elapsed();
    let failed = result.expect_err("the node was lost");
    let text = failed.to_string();
    // Bring the node back before any assertion can fail, for the other tests.
    let restarted = std::process::Command::new("docker")
        .args(["start", &node])
        .output()
        .expect("docker start");
    assert!(restarted.status.success(), "{restarted:?}");
    assert!(
        text.contains("slurm rule `job-lost`") && text.contains(node.as_str()),
        "{text}"
    );
    eprintln!("node {node} lost: the launch ended {lost_after:?} after the kill: {text}");
    assert_eq!(fs::read_to_string(&before).unwrap(), "before\n");
    assert!(!ws.w().join("lost/after").exists());
    assert!(support::leftovers(&engine, &run).await.is_empty());
    // The node takes jobs again.
    let start = Instant::now();
    loop {
        let state = std::process::Command::new("docker")
            .args([
                "exec",
                "mp-slurm-ctl",
                "sinfo",
                "-h",
                "-n",
                &node,
                "-o",
                "%t",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        if state == "idle" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{node} is {state}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    slurm::assert_nothing_left(&cluster, &engine, &run).await;
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const SLURM: &[Need] = &[Need::Slurm, Need::Root, Need::Busybox, Need::Docker];
    harness::run(vec![harness::tokio(
        Runtime::Workers(2),
        "slurm_node_lost_mid_job_ends_the_launch_without_a_status",
        SLURM,
        slurm_node_lost_mid_job_ends_the_launch_without_a_status,
    )]);
}
