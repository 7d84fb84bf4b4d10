//! The three-node Swarm of `.ci/swarm-setup`: the manager's engine, the workers, the test
//! images on every node, and the conformance fixture for Swarm.
//!
//! The cluster is named by the env file that `.ci/swarm-setup` writes
//! (`/tmp/mount-plan-swarm/env`): `MOUNT_PLAN_SWARM_SOCKET`, `MOUNT_PLAN_SWARM_WORKERS`,
//! `MOUNT_PLAN_SWARM_WORKER_SOCKETS`, `MOUNT_PLAN_SWARM_IMAGE`, `MOUNT_PLAN_SWARM_WORKDIR`.
//! Without it: a failure under `CI`, otherwise shown as ignored.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use mount_plan_docker::ConnectOptions;
use mount_plan_launch::Protection;
use mount_plan_swarm::SwarmEngine;
use mount_plan_testkit::engines::TestEngine;

use super::conformance::EngineFixture;
use super::{image, run};

/// The env file of `.ci/swarm-setup`.
pub const ENV_FILE: &str = "/tmp/mount-plan-swarm/env";

/// One worker node.
#[derive(Debug, Clone)]
pub struct Worker {
    /// Its node hostname (`mount-plan-swarm-w1`), which is also its container's name.
    pub hostname: String,
    /// Its own engine's socket (`unix:///...`).
    pub socket: String,
}

impl Worker {
    /// `docker -H <worker socket> ARGS`.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(&self.socket);
        c
    }

    /// The id of the worker's container on this machine (its jobs' cgroup paths name it).
    pub fn container_id(&self) -> String {
        run(Command::new("docker").args(["inspect", "-f", "{{.Id}}", &self.hostname]))
            .expect("inspect the worker container")
            .trim()
            .to_owned()
    }

    /// Wait until the manager sees this worker `ready` (after a stop or an engine restart).
    pub fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let state = run(Command::new("docker").args([
                "node",
                "ls",
                "--filter",
                &format!("name={}", self.hostname),
                "--format",
                "{{.Hostname}} {{.Status}}",
            ]))
            .unwrap_or_default();
            if state
                .lines()
                .any(|l| l == format!("{} Ready", self.hostname))
            {
                return Ok(());
            }
            if start.elapsed() > within {
                return Err(format!(
                    "worker {} is not ready after {within:?}: {state:?}",
                    self.hostname
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The manager's socket.
    pub socket: String,
    /// The workers.
    pub workers: Vec<Worker>,
    /// The busybox image, by ID, on every node.
    pub busybox: String,
    /// Where workspaces must be created (the same path on every node).
    pub workdir: PathBuf,
}

/// A setting of `.ci/swarm-setup`: the environment variable, else its line in the env file.
pub fn setting(key: &str) -> Option<String> {
    mount_plan_testkit::harness::swarm_setting(key)
}

fn lookup() -> Result<Cluster, String> {
    let hint = "run `bash .ci/swarm-setup` (it writes /tmp/mount-plan-swarm/env)";
    let get = |k: &str| setting(k).ok_or_else(|| format!("{k} is not set: {hint}"));
    let workers: Vec<Worker> = mount_plan_testkit::harness::swarm_workers()?
        .into_iter()
        .map(|(hostname, socket)| Worker { hostname, socket })
        .collect();
    if workers.len() < 2 {
        return Err(format!("two workers are needed, the env names {workers:?}"));
    }
    let cluster = Cluster {
        socket: TestEngine::Swarm.socket()?,
        workers,
        busybox: get("MOUNT_PLAN_SWARM_IMAGE")?,
        workdir: PathBuf::from(get("MOUNT_PLAN_SWARM_WORKDIR")?),
    };
    for w in &cluster.workers {
        w.wait_ready(Duration::from_secs(60))?;
    }
    Ok(cluster)
}

/// The cluster, or `None`; a failure when it cannot be read, since the harness already
/// ignored the test (failed it under CI) when the swarm or root is missing.
pub fn cluster() -> Option<Cluster> {
    let root = rustix::process::geteuid().is_root();
    super::require("root", if root { Ok(()) } else { Err("not root".into()) })?;
    super::require("the three-node swarm of .ci/swarm-setup", lookup())
}

/// The manager, connected.
pub async fn engine(cluster: &Cluster) -> SwarmEngine {
    let engine = SwarmEngine::connect(&ConnectOptions {
        host: Some(cluster.socket.clone()),
        ..ConnectOptions::default()
    })
    .await
    .expect("connect to the swarm manager");
    // A branch's own gate, installed on the workers at another path than the shared one.
    match std::env::var("MOUNT_PLAN_SWARM_GATE") {
        Ok(path) if !path.is_empty() => engine.with_gate_on_nodes(path),
        _ => engine,
    }
}

/// The probe image on every node, by ID (`docker save` on the manager, `docker load` on
/// each worker: the ID survives, so no node tries a pull).
pub fn probe_image(cluster: &Cluster) -> Result<String, String> {
    static DONE: OnceLock<Mutex<Option<Result<String, String>>>> = OnceLock::new();
    let done = DONE.get_or_init(|| Mutex::new(None));
    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = done.as_ref() {
        return r.clone();
    }
    let result = (|| {
        let tag = image::docker_image()?;
        let id = run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &tag]))?
            .trim()
            .to_owned();
        image::locked(
            &image::repo_root().join("target/probe/.swarm-image.lock"),
            || {
                for w in &cluster.workers {
                    if run(w.docker().args(["image", "inspect", &id])).is_ok() {
                        continue;
                    }
                    let mut save = Command::new("docker")
                        .args(["save", &tag])
                        .stdout(Stdio::piped())
                        .spawn()
                        .map_err(|e| e.to_string())?;
                    let out = w
                        .docker()
                        .arg("load")
                        .stdin(save.stdout.take().expect("piped"))
                        .output()
                        .map_err(|e| e.to_string())?;
                    let _ = save.wait();
                    if !out.status.success() {
                        return Err(format!(
                            "docker load on {}: {}",
                            w.hostname,
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                }
                Ok(id)
            },
        )
    })();
    *done = Some(result.clone());
    result
}

/// The conformance fixture for Swarm: workspaces in the shared work directory (seen at the
/// same path by every node, submounts included), on their own shared tmpfs so that a bind
/// without private propagation shows. Accepted gap: noexec (no field at any version); nosuid
/// holds by the no-new-privileges the gate sets (the service's own is dropped before API
/// 1.46), and is checked. R's root inode is 0755, as on Docker 20.10.
pub fn fixture(cluster: &Cluster, image: String) -> EngineFixture {
    EngineFixture {
        name: "swarm".into(),
        image,
        probe: image::probe_binary().expect("probe built with the image"),
        base_dir: cluster.workdir.clone(),
        nonroot: "1000:1000".parse().unwrap(),
        job_owner: Some((1000, 1000)),
        root_owner: None,
        lacks_hardening: BTreeSet::from([Protection::NoExecOnBinds]),
        bind_flags_in_mountinfo: false,
        shared_tmpfs: true,
        root_inode_mode: Some(0o755),
        // Images are named by id here: no tag to move.
        cli: Vec::new(),
    }
}

/// A small workspace in the shared work directory: W with startup/ and local/ (0755) and the
/// given job directories (0755: the jobs run as root, which owns them; a world-writable job
/// directory is refused by the host check, rule `job-dir-loose`). Removed on drop.
#[derive(Debug)]
pub struct SharedWorkspace {
    dir: tempfile::TempDir,
}

impl SharedWorkspace {
    /// Lay it out under `base` (the cluster's work directory, or elsewhere on purpose).
    pub fn new(base: &std::path::Path, jobs: &[&str]) -> SharedWorkspace {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("mp-swarm-")
            .tempdir_in(base)
            .expect("workspace dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod W");
        for (d, mode) in [("startup", 0o755), ("local", 0o755)]
            .into_iter()
            .chain(jobs.iter().map(|j| (*j, 0o755)))
        {
            let p = dir.path().join(d);
            fs::create_dir(&p).expect("mkdir");
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        SharedWorkspace { dir }
    }

    /// W.
    pub fn w(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The verified default plan of job `job`.
    pub fn verified(&self, job: &str) -> mount_plan_host::VerifiedPlan {
        let layout = mount_plan::Layout::default();
        let ws = mount_plan::HostPath::parse(self.w().to_str().expect("utf-8")).expect("path");
        let plan = layout
            .plan(&ws, &layout.job(job).expect("job"))
            .expect("plan");
        let options = mount_plan_host::VerifyOptions {
            job_dir: mount_plan_host::JobDir::MustExist,
            ..mount_plan_host::VerifyOptions::default()
        };
        mount_plan_host::verify(plan, &options).expect("verify")
    }
}

/// A spec running `script` with `sh -c` in `image`, with Swarm's gaps accepted, labelled
/// `mount-plan-test.run=run`, placed by `constraints`.
pub fn sh_spec(
    image: &str,
    script: &str,
    run: &str,
    constraints: &[String],
) -> mount_plan_launch::LaunchSpec {
    let mut spec = mount_plan_launch::LaunchSpec::new(image.parse().expect("image"))
        .with_command(["sh", "-c", script]);
    spec.labels
        .insert("mount-plan-test.run", run)
        .expect("label");
    spec.placement = constraints
        .iter()
        .map(|c| c.parse().expect("constraint"))
        .collect();
    spec
}

/// Launch through the lifecycle with default options, collecting stdout.
pub async fn launch(
    engine: &dyn mount_plan_launch::Engine,
    verified: &mount_plan_host::VerifiedPlan,
    spec: &mount_plan_launch::LaunchSpec,
) -> (
    Result<mount_plan_launch::Finished, mount_plan_launch::Failed>,
    String,
) {
    let mut out = Vec::new();
    let result = {
        let mut sink = |c: &mount_plan_launch::LogChunk| out.extend_from_slice(&c.bytes);
        mount_plan_launch::launch(
            engine,
            verified,
            spec,
            &mount_plan_launch::LaunchOptions::default(),
            &mut sink,
        )
        .await
    };
    (result, String::from_utf8_lossy(&out).into_owned())
}

/// Containers (any state) on `worker`'s own engine labelled `mount-plan-test.run=run`.
pub fn worker_containers(worker: &Worker, run: &str) -> Vec<String> {
    run_cmd(worker.docker().args([
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!("label=mount-plan-test.run={run}"),
    ]))
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// Wait until `worker` has no container (any state) labelled `mount-plan-test.run=run`: a
/// removed service's node stops and removes its container (after the stop grace period).
pub async fn wait_no_containers(worker: &Worker, run: &str, within: Duration) {
    let start = Instant::now();
    loop {
        let left = worker_containers(worker, run);
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < within,
            "containers of run {run} left on {} after {within:?}: {left:?}",
            worker.hostname
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn run_cmd(c: &mut Command) -> String {
    run(c).unwrap_or_default()
}
