//! The soak on Swarm (`--engines swarm`): the three-node Swarm of `.ci/swarm-setup`, its
//! manager reached through its API socket as the other socket engines are (so the proxy
//! faults cut and hold the launcher's connection to the manager), and its workers, each a
//! dockerd in a container on this machine, reached through their own sockets for what only a
//! node can do: kill a job's container (`job-kill`), restart the node's engine
//! (`worker-restart`), and show the containers a job left on it.
//!
//! What a launch leaves is looked for on the manager after each launch (a service with the
//! launch's label, as on the other engines a container) and on the workers once the soak has
//! ended (a container with the run's label: a removed service's node stops and removes its
//! container later, after the service's stop grace period, so only at the end).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{command_stdout, docker_save_into, Tally, LABEL_RUN};
use crate::{Target, TestEngine};

/// How long the end-of-soak check waits for the manager and the workers to let go of the
/// run's services and containers (a node stops a removed service's container after its stop
/// grace period, 10 s, and one whose engine restarted removes it once it is back).
const SETTLE_END: Duration = Duration::from_secs(90);
/// How long a worker whose engine was restarted may take to answer and be ready again.
const BACK_WITHIN: Duration = Duration::from_secs(120);
/// The label Swarm puts on a task's container: the service it belongs to.
const SERVICE_LABEL: &str = "com.docker.swarm.service.id";
/// How long a job's container may take to run on its worker after the launch's `started`
/// event: the backend's start returns once the task is `starting` (the worker starting the
/// container) or `running`.
const RUNNING_WITHIN: Duration = Duration::from_secs(10);

/// One worker node: its hostname (also its container's name on this machine) and its own
/// engine's socket.
#[derive(Debug, Clone)]
struct Worker {
    hostname: String,
    socket: String,
}

/// The cluster, from `.ci/swarm-setup`'s env file (or the environment).
#[derive(Debug)]
pub struct Cluster {
    workers: Vec<Worker>,
    /// Where workspaces are made: the same path on every node.
    pub workdir: PathBuf,
}

impl Cluster {
    pub fn find() -> Result<Cluster> {
        let workdir = mount_plan_testkit::harness::swarm_setting("MOUNT_PLAN_SWARM_WORKDIR")
            .context("MOUNT_PLAN_SWARM_WORKDIR is not set: run `bash .ci/swarm-setup` (it writes /tmp/mount-plan-swarm/env)")?;
        let workers: Vec<Worker> = mount_plan_testkit::harness::swarm_workers()
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(|(hostname, socket)| Worker { hostname, socket })
            .collect();
        if workers.is_empty() {
            bail!("MOUNT_PLAN_SWARM_WORKERS names no worker");
        }
        Ok(Cluster {
            workers,
            workdir: PathBuf::from(workdir),
        })
    }

    /// The soak's target: the manager's socket, a workspace in the shared work directory, and
    /// the bench's busybox image, imported on the manager and loaded on every worker by ID
    /// (`docker save | docker load` keeps it: no node tries a registry).
    pub async fn target(&self, run: &str, index: u64) -> Result<Target> {
        let engine = TestEngine::Swarm;
        let url = engine.socket().map_err(anyhow::Error::msg)?;
        let workspace = self.workdir.join(format!("mp-soak-{run}-{index}"));
        for d in ["startup", "local"] {
            std::fs::create_dir_all(workspace.join(d))?;
        }
        let mut target = Target {
            engine,
            socket: PathBuf::from(url.trim_start_matches("unix://")),
            image: "mount-plan-bench:busybox".to_owned(),
            cli: ("docker".to_owned(), vec![], vec![]),
            runtime: crate::connect(engine).await?,
            workspace,
        };
        crate::import_image(&target)?;
        let id = docker(&[], &["image", "inspect", "-f", "{{.Id}}", &target.image]).await?;
        for w in &self.workers {
            if w.docker(&["image", "inspect", &id]).await.is_ok() {
                continue;
            }
            let mut load = std::process::Command::new("docker");
            load.args(["-H", &w.socket, "load"]);
            docker_save_into(
                &target.image,
                load,
                &format!("docker load on {}", w.hostname),
            )?;
        }
        target.image = id;
        Ok(target)
    }

    /// The worker running service `service`'s task, and the task's container there, once it
    /// runs (within [`RUNNING_WITHIN`]).
    async fn task_container(&self, service: &str) -> Result<(&Worker, String)> {
        let filter = format!("label={SERVICE_LABEL}={service}");
        let until = Instant::now() + RUNNING_WITHIN;
        loop {
            for w in &self.workers {
                let ids = w.docker(&["ps", "-q", "--filter", &filter]).await?;
                if let Some(id) = ids.split_whitespace().next() {
                    return Ok((w, id.to_owned()));
                }
            }
            if Instant::now() > until {
                bail!("no worker runs a container of service {service} {RUNNING_WITHIN:?} after its start")
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `job-kill`: the container of service `service`'s task killed (SIGKILL) on its worker,
    /// from outside, through that worker's own engine.
    pub async fn kill_job(&self, service: &str) -> Result<()> {
        let (w, container) = self.task_container(service).await?;
        w.docker(&["kill", "--signal", "KILL", &container])
            .await
            .map(drop)
    }

    /// `worker-restart`: the engine of the worker running service `service`'s task
    /// restarted inside the worker: SIGTERM to its dockerd, which the worker's entrypoint
    /// starts again when it exits (`.ci/swarm-setup`); this machine's engine is never
    /// touched. Returns once the worker's engine answers and the manager sees it ready again.
    pub async fn restart_worker_engine(&self, service: &str) -> Result<String> {
        let (w, _) = self.task_container(service).await?;
        let before = w.engine_pid().await?;
        docker(
            &[],
            &[
                "exec",
                &w.hostname,
                "sh",
                "-c",
                "kill -TERM $(cat /var/run/docker.pid)",
            ],
        )
        .await
        .context("restarting the worker's dockerd")?;
        let until = Instant::now() + BACK_WITHIN;
        loop {
            let back = match w.engine_pid().await {
                Ok(pid) if pid != before => {
                    w.docker(&["info", "-f", "{{.Swarm.LocalNodeState}}"])
                        .await
                        .is_ok_and(|s| s.trim() == "active")
                        && self.ready(w).await
                }
                _ => false,
            };
            if back {
                return Ok(w.hostname.clone());
            }
            if Instant::now() > until {
                bail!(
                    "worker {} is not back {BACK_WITHIN:?} after its engine was restarted",
                    w.hostname
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Whether the manager sees worker `w` ready.
    async fn ready(&self, w: &Worker) -> bool {
        docker(
            &[],
            &[
                "node",
                "ls",
                "--filter",
                &format!("name={}", w.hostname),
                "--format",
                "{{.Hostname}} {{.Status}}",
            ],
        )
        .await
        .is_ok_and(|s| s.lines().any(|l| l == format!("{} Ready", w.hostname)))
    }

    /// The containers (any state) labelled `soak.run=run` on each worker: `worker: id`.
    async fn run_containers(&self, run: &str) -> Result<Vec<String>> {
        let filter = format!("label={LABEL_RUN}={run}");
        let mut found = Vec::new();
        for w in &self.workers {
            for id in w
                .docker(&["ps", "-a", "-q", "--filter", &filter])
                .await?
                .split_whitespace()
            {
                found.push(format!("{}: {id}", w.hostname));
            }
        }
        Ok(found)
    }

    /// Once every launch has ended: no service of the run on the manager and no container of
    /// it on any worker (each waited for up to [`SETTLE_END`]); what is left is counted as
    /// leaked, and removed.
    pub async fn after_all(&self, run: &str, t: &mut Tally) -> Result<()> {
        let until = Instant::now() + SETTLE_END;
        let filter = format!("label={LABEL_RUN}={run}");
        loop {
            let services = docker(&[], &["service", "ls", "-q", "--filter", &filter]).await?;
            let services: Vec<&str> = services.split_whitespace().collect();
            let containers = self.run_containers(run).await?;
            if services.is_empty() && containers.is_empty() {
                return Ok(());
            }
            if Instant::now() > until {
                for s in services {
                    t.leaked += 1;
                    t.notes
                        .push(format!("LEAKED at the end, a service on the manager: {s}"));
                    let _ = docker(&[], &["service", "rm", s]).await;
                }
                for c in containers {
                    t.leaked += 1;
                    t.notes
                        .push(format!("LEAKED at the end, a container on {c}"));
                }
                for w in &self.workers {
                    let ids = w.docker(&["ps", "-a", "-q", "--filter", &filter]).await?;
                    for id in ids.split_whitespace() {
                        let _ = w.docker(&["rm", "-f", id]).await;
                    }
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Worker {
    /// `docker -H <its socket> ARGS`: stdout, or an error with stderr.
    async fn docker(&self, args: &[&str]) -> Result<String> {
        docker(&["-H", &self.socket], args).await
    }

    /// The pid of the dockerd inside the worker (its pid file, read through `docker exec`).
    async fn engine_pid(&self) -> Result<String> {
        Ok(
            docker(&[], &["exec", &self.hostname, "cat", "/var/run/docker.pid"])
                .await?
                .trim()
                .to_owned(),
        )
    }
}

/// `docker LEAD ARGS` on this machine: stdout (trimmed), or an error with stderr.
async fn docker(lead: &[&str], args: &[&str]) -> Result<String> {
    let words: Vec<&str> = ["docker"].iter().chain(lead).chain(args).copied().collect();
    Ok(command_stdout(&words).await?.trim().to_owned())
}
