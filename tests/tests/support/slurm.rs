//! The Slurm cluster of `.ci/slurm-setup`: slurmctld and two slurmd nodes in containers, the
//! shared directory at the same path on this machine and every node, the probe image
//! unpacked there, and the conformance fixture for Slurm.
//!
//! The cluster is named by the env file `.ci/slurm-setup` writes (`/tmp/mp-slurm/env`):
//! `MOUNT_PLAN_SLURM_COMMAND`, `MOUNT_PLAN_SLURM_SHARED`, `MOUNT_PLAN_SLURM_NODES`,
//! `MOUNT_PLAN_SLURM_PARTITION`. Without it: a failure under `CI`, otherwise shown as ignored.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use mount_plan_slurm::{SlurmConfig, SlurmEngine};

use super::conformance::EngineFixture;
use super::{image, run};

/// The cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The Slurm configuration (command prefix, shared directory, partition).
    pub config: SlurmConfig,
    /// The compute nodes' names.
    pub nodes: Vec<String>,
}

impl Cluster {
    /// A Slurm command behind the prefix.
    pub fn command(&self, words: &[&str]) -> Command {
        let mut all = self.config.command_prefix.clone();
        all.extend(words.iter().map(|w| w.to_string()));
        let mut c = Command::new(&all[0]);
        c.args(&all[1..]);
        c
    }

    /// `squeue` lines of the jobs still queued or running whose name is mount-plan's.
    pub fn queued(&self) -> Vec<String> {
        run(&mut self.command(&["squeue", "--noheader", "--format=%i %200j %T %N"]))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(mount_plan_slurm::bundle::JOB_NAME_PREFIX))
            .map(str::to_owned)
            .collect()
    }

    /// The `runc list` of a node: the containers its runtime still holds.
    pub fn node_containers(&self, node: &str) -> Vec<String> {
        run(Command::new("docker").args([
            "exec",
            node,
            "runc",
            "--root=/run/mp-slurm-runc",
            "list",
            "-q",
        ]))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
    }
}

fn setting(key: &str) -> Option<String> {
    mount_plan_testkit::harness::slurm_setting(key)
}

fn lookup() -> Result<Cluster, String> {
    let hint = "run `bash .ci/slurm-setup` (it writes /tmp/mp-slurm/env)";
    let get = |k: &str| setting(k).ok_or_else(|| format!("{k} is not set: {hint}"));
    let mut config = SlurmConfig::new(
        get("MOUNT_PLAN_SLURM_COMMAND")?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        PathBuf::from(get("MOUNT_PLAN_SLURM_SHARED")?),
    );
    config.partition = setting("MOUNT_PLAN_SLURM_PARTITION").filter(|p| !p.is_empty());
    let nodes: Vec<String> = get("MOUNT_PLAN_SLURM_NODES")?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if nodes.len() < 2 {
        return Err(format!("two nodes are needed, the env names {nodes:?}"));
    }
    Ok(Cluster { config, nodes })
}

/// The cluster, or `None` (the harness already ignored the test, or failed it under CI,
/// when Slurm or root is missing).
pub fn cluster() -> Option<Cluster> {
    let root = rustix::process::geteuid().is_root();
    super::require("root", if root { Ok(()) } else { Err("not root".into()) })?;
    super::require("the Slurm cluster of .ci/slurm-setup", lookup())
}

/// The cluster, connected.
pub async fn engine(cluster: &Cluster) -> SlurmEngine {
    SlurmEngine::connect(cluster.config.clone())
        .await
        .expect("connect to the Slurm cluster")
}

/// The probe image unpacked on the shared filesystem (`docker save` of the Docker test
/// image, through `mount_plan_slurm::image::unpack_docker_save`), by id.
pub fn probe_image(cluster: &Cluster) -> Result<String, String> {
    static DONE: OnceLock<Mutex<Option<Result<String, String>>>> = OnceLock::new();
    let done = DONE.get_or_init(|| Mutex::new(None));
    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = done.as_ref() {
        return r.clone();
    }
    let result = (|| {
        let tag = image::docker_image()?;
        image::locked(
            &image::repo_root().join("target/probe/.slurm-image.lock"),
            || {
                let mut save = Command::new("docker")
                    .args(["save", &tag])
                    .stdout(Stdio::piped())
                    .spawn()
                    .map_err(|e| e.to_string())?;
                let id = mount_plan_slurm::image::unpack_docker_save(
                    save.stdout.take().expect("piped"),
                    &cluster.config.shared,
                )
                .map_err(|e| format!("unpack the probe image: {e}"))?;
                let _ = save.wait();
                Ok(id)
            },
        )
    })();
    *done = Some(result.clone());
    result
}

/// The conformance fixture for Slurm: workspaces in the shared directory (seen at the same
/// path by every node), on their own shared tmpfs so that a bind without private propagation
/// shows. runc applies every per-mount flag, so nothing is accepted as missing, and the
/// flags show in mountinfo; R's root inode has the planned mode (its mount point is created
/// with it in the job's rootfs).
pub fn fixture(cluster: &Cluster, image: String) -> EngineFixture {
    EngineFixture {
        name: "slurm".into(),
        image,
        probe: image::probe_binary().expect("probe built with the image"),
        base_dir: cluster.config.shared.join("work"),
        nonroot: "1000:1000".parse().unwrap(),
        job_owner: Some((1000, 1000)),
        root_owner: None,
        lacks_hardening: BTreeSet::new(),
        bind_flags_in_mountinfo: true,
        shared_tmpfs: true,
        root_inode_mode: None,
        // Images are named by id here: no tag to move.
        cli: Vec::new(),
    }
}

/// Nothing of run `run` is left: not in the queue, not as a bundle, not in a node's runc.
pub async fn assert_nothing_left(
    cluster: &Cluster,
    engine: &dyn mount_plan_launch::Engine,
    run: &str,
) {
    let left = super::leftovers(engine, run).await;
    assert!(left.is_empty(), "jobs left behind: {left:?}");
    // Every mount-plan job still in the queue belongs to a launch still going (another
    // test's): its bundle is there. A removed launch's job in the queue would be a leak.
    let orphans: Vec<String> = cluster
        .queued()
        .into_iter()
        .filter(|l| {
            let name = l.split_whitespace().nth(1).unwrap_or("");
            let key = name
                .strip_prefix(mount_plan_slurm::bundle::JOB_NAME_PREFIX)
                .unwrap_or(name);
            !cluster.config.shared.join("bundles").join(key).exists()
        })
        .collect();
    assert!(orphans.is_empty(), "queued without a bundle: {orphans:?}");
    let start = std::time::Instant::now();
    for node in &cluster.nodes {
        loop {
            let c = cluster.node_containers(node);
            if c.is_empty() {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "runc on {node} still holds {c:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
}
