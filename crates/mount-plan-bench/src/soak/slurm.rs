//! The soak on Slurm (`--engines slurm`): the cluster of `.ci/slurm-setup`, reached as the
//! CLI reaches it, by its commands behind `MOUNT_PLAN_SLURM_COMMAND`. Each launch runs
//! `mount-plan launch --runtime slurm` (the CLI built with `--features slurm`) with its fault;
//! a launcher killed by a signal is followed by `mount-plan gc --runtime slurm`.
//!
//! What a launch leaves is looked for three ways: a job of its launch in the queue (`squeue`,
//! matched by the launch id the job's comment carries), a bundle with its label on the shared
//! filesystem, and, once the soak has ended, a container in a node's runc (`runc list`; other
//! launches run meanwhile, so only at the end).
//!
//! The faults that break a request on an engine socket do not apply: the backend runs
//! commands (see [`Fault::unavailable_on_slurm`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::fault::{self, Fault};
use super::{
    await_launcher, command_stdout, docker_save_into, full_workspace, judge_end, judge_gc_log,
    keep_evidence, launch_all, read_events, run_gc, signal, started_container, Draw, Record,
    SoakArgs, Tally, GC_SETTLE, LABEL_LAUNCH, LABEL_RUN,
};

/// An image id no `mount-plan image unpack` made: the missing image.
const MISSING_IMAGE: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";
/// The runc state directory of the nodes' oci.conf (`.ci/slurm-setup`).
const NODE_RUNC_ROOT: &str = "--root=/run/mp-slurm-runc";
/// How long the end-of-soak check waits for the queue and the nodes to empty.
const SETTLE_END: Duration = Duration::from_secs(30);

/// The cluster, from `.ci/slurm-setup`'s env file (or the environment).
#[derive(Debug)]
struct Cluster {
    prefix: Vec<String>,
    shared: PathBuf,
    partition: Option<String>,
    nodes: Vec<String>,
}

impl Cluster {
    fn find() -> Result<Cluster> {
        let setting = mount_plan_testkit::harness::slurm_setting;
        let get = |k: &str| {
            setting(k).with_context(|| {
                format!("{k} is not set: run `bash .ci/slurm-setup` (it writes /tmp/mp-slurm/env)")
            })
        };
        Ok(Cluster {
            prefix: get("MOUNT_PLAN_SLURM_COMMAND")?
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            shared: PathBuf::from(get("MOUNT_PLAN_SLURM_SHARED")?),
            partition: setting("MOUNT_PLAN_SLURM_PARTITION").filter(|p| !p.is_empty()),
            nodes: get("MOUNT_PLAN_SLURM_NODES")?
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The settings the CLI reads for runtime slurm.
    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("MOUNT_PLAN_SLURM_COMMAND", self.prefix.join(" ")),
            ("MOUNT_PLAN_SLURM_SHARED", self.shared.display().to_string()),
        ];
        if let Some(p) = &self.partition {
            env.push(("MOUNT_PLAN_SLURM_PARTITION", p.clone()));
        }
        env
    }

    /// Run a Slurm command behind the prefix; its stdout, or an error with its stderr.
    async fn run(&self, words: &[&str]) -> Result<String> {
        let mut all: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        all.extend_from_slice(words);
        command_stdout(&all).await
    }

    /// mount-plan's jobs in the queue (pending, running, completing): `(id, comment, state)`.
    async fn queued(&self) -> Result<Vec<(String, String, String)>> {
        let text = self
            .run(&["squeue", "--noheader", "--format=%i|%j|%k|%T"])
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let mut f = l.trim().splitn(4, '|');
                let (id, name, comment, state) = (f.next()?, f.next()?, f.next()?, f.next()?);
                name.starts_with("mount-plan-")
                    .then(|| (id.to_owned(), comment.to_owned(), state.to_owned()))
            })
            .collect())
    }

    fn bundles(&self) -> PathBuf {
        self.shared.join("bundles")
    }

    /// The bundles whose labels carry `key=value`.
    fn bundles_labelled(&self, key: &str, value: &str) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.bundles()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|dir| {
                std::fs::read(dir.join("labels.json"))
                    .ok()
                    .and_then(|b| {
                        serde_json::from_slice::<std::collections::BTreeMap<String, String>>(&b)
                            .ok()
                    })
                    .is_some_and(|l| l.get(key).map(String::as_str) == Some(value))
            })
            .collect()
    }

    /// The containers a node's runc holds.
    async fn node_containers(&self, node: &str) -> Result<Vec<String>> {
        let out =
            command_stdout(&["docker", "exec", node, "runc", NODE_RUNC_ROOT, "list", "-q"]).await?;
        Ok(out.split_whitespace().map(str::to_owned).collect())
    }
}

/// The soak on Slurm.
struct Soak<'a> {
    cluster: Cluster,
    args: &'a SoakArgs,
    index: u64,
    run: String,
    faults: Vec<Fault>,
    cli: PathBuf,
    image: String,
    /// The workspace, in the shared directory.
    ws: PathBuf,
    /// A W on a 1 MiB tmpfs in the shared directory (fs-full).
    full: Option<PathBuf>,
    /// Events and stderr of each launch (on this machine).
    dir: PathBuf,
    gc_lock: tokio::sync::Mutex<()>,
    gc_log: Mutex<Vec<(String, String)>>,
    killed: Mutex<BTreeSet<u64>>,
    removed_by_launcher: Mutex<BTreeSet<u64>>,
    /// The launch id of every launch (from its events): the queue is searched for them at the
    /// end.
    launch_ids: Mutex<BTreeSet<String>>,
}

/// Soak the Slurm cluster: `args.launches` launches with `faults` (those that apply).
pub async fn soak(
    args: &SoakArgs,
    faults: &[Fault],
    cli: &Path,
    run: &str,
    index: u64,
) -> Result<Tally> {
    let cluster = Cluster::find()?;
    let mut kept = Vec::new();
    for &f in faults {
        match f.unavailable_on_slurm() {
            Some(why) => eprintln!("soak slurm: no {} fault: {why}", f.id()),
            None => kept.push(f),
        }
    }
    let image = unpack_image(cli, &cluster.shared)?;
    let ws = cluster
        .shared
        .join("work")
        .join(format!("mp-soak-{run}-{index}"));
    for d in ["startup", "local"] {
        std::fs::create_dir_all(ws.join(d))?;
    }
    // Under the shared directory, which the nodes bind `rslave`: the tmpfs shows in them.
    let full = if kept.contains(&Fault::FsFull) {
        let w = cluster.shared.join("work");
        Some(full_workspace(
            w.join(format!("mp-soak-{run}-{index}-full")),
        )?)
    } else {
        None
    };
    let dir = std::env::temp_dir().join(format!("mp-soak-{run}-{index}"));
    std::fs::create_dir_all(&dir)?;
    let soak = Soak {
        cluster,
        args,
        index,
        run: run.to_owned(),
        faults: kept,
        cli: cli.to_owned(),
        image,
        ws,
        full,
        dir,
        gc_lock: tokio::sync::Mutex::new(()),
        gc_log: Mutex::new(Vec::new()),
        killed: Mutex::new(BTreeSet::new()),
        removed_by_launcher: Mutex::new(BTreeSet::new()),
        launch_ids: Mutex::new(BTreeSet::new()),
    };
    let result = soak.launches().await;
    soak.teardown();
    result
}

/// The bench's busybox image, imported into Docker and unpacked onto the shared filesystem by
/// `mount-plan image unpack` (as a site does it); its id.
fn unpack_image(cli: &Path, shared: &Path) -> Result<String> {
    let tag = "mount-plan-bench:busybox";
    let dir = std::env::temp_dir().join(format!("mp-bench-img-{}", std::process::id()));
    let (tar, _) = mount_plan_testkit::image::busybox_tar(&dir, &[]).map_err(anyhow::Error::msg)?;
    let imported = mount_plan_testkit::image::import(
        &mut std::process::Command::new("docker"),
        &tar,
        tag,
        &[],
    );
    std::fs::remove_dir_all(&dir)?;
    imported.map_err(|e| anyhow::anyhow!("image import failed: {e}"))?;
    let mut unpack = std::process::Command::new(cli);
    unpack.args(["image", "unpack", "--shared"]).arg(shared);
    docker_save_into(
        tag,
        unpack,
        "mount-plan image unpack (is the CLI built with --features slurm?)",
    )
}

impl Soak<'_> {
    fn teardown(&self) {
        if let Some(full) = &self.full {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(full)
                .status();
            let _ = std::fs::remove_dir_all(full);
        }
        let _ = std::fs::remove_dir_all(&self.ws);
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    async fn launches(&self) -> Result<Tally> {
        let args = self.args;
        let mut t = launch_all(args, "slurm", |i| self.launch(i)).await?;
        judge_gc_log(
            &mut t,
            &self.gc_log.lock().expect("gc log"),
            &self.killed.lock().expect("killed"),
            &self.removed_by_launcher.lock().expect("removed"),
            &format!("soak-{}-{}-", args.seed, self.index),
        );
        self.after_all(&mut t).await?;
        Ok(t)
    }

    /// Once every launch has ended: no job of the soak in the queue, no bundle of it, no
    /// container in any node's runc (each waited for up to [`SETTLE_END`]).
    async fn after_all(&self, t: &mut Tally) -> Result<()> {
        let until = Instant::now() + SETTLE_END;
        loop {
            let ids = self.launch_ids.lock().expect("ids").clone();
            let queued: Vec<String> = self
                .cluster
                .queued()
                .await?
                .into_iter()
                .filter(|(_, c, _)| {
                    c.strip_prefix("mount-plan:")
                        .is_some_and(|l| ids.contains(l))
                })
                .map(|(id, _, state)| format!("job {id} {state}"))
                .collect();
            let bundles = self.cluster.bundles_labelled(LABEL_RUN, &self.run);
            let mut on_nodes = Vec::new();
            for node in &self.cluster.nodes {
                for c in self.cluster.node_containers(node).await? {
                    on_nodes.push(format!("{node}: {c}"));
                }
            }
            if queued.is_empty() && bundles.is_empty() && on_nodes.is_empty() {
                return Ok(());
            }
            if Instant::now() > until {
                for q in queued {
                    t.leaked += 1;
                    t.notes
                        .push(format!("LEAKED at the end, in the queue: {q}"));
                }
                for b in bundles {
                    t.leaked += 1;
                    t.notes
                        .push(format!("LEAKED at the end, a bundle: {}", b.display()));
                }
                for c in on_nodes {
                    t.leaked += 1;
                    t.notes.push(format!("LEAKED at the end, in runc on {c}"));
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// One launch with its fault, and its checks.
    async fn launch(&self, i: u64) -> Result<Record> {
        let args = self.args;
        let (draw, _) = Draw::new(args.seed, self.index, i, &self.faults, args);
        let fault = draw.fault;
        let job = format!("soak-{}-{}-{i}", args.seed, self.index);
        let data = fault::content(args.seed, self.index, i);
        let ws = match (fault, &self.full) {
            (Some(Fault::FsFull), Some(full)) => full.clone(),
            _ => self.ws.clone(),
        };
        let launch_label = format!("{}-{}-{i}", self.run, self.index);
        let events = self.dir.join(format!("events-{i}.jsonl"));
        let stderr_path = self.dir.join(format!("stderr-{i}.txt"));

        let mut cmd = tokio::process::Command::new(&self.cli);
        cmd.arg("launch")
            .args(["--runtime", "slurm"])
            .arg("--workspace")
            .arg(&ws)
            .args(["--job", &job])
            .args(["--stop-grace", "1"])
            .arg("--label")
            .arg(format!("{LABEL_RUN}={}", self.run))
            .arg("--label")
            .arg(format!("{LABEL_LAUNCH}={launch_label}"))
            .arg("--env")
            .arg(format!("SOAK_DATA={data}"))
            .arg("--events")
            .arg(&events)
            .arg("--create-job-dir=fresh")
            .envs(self.cluster.env());
        match fault {
            Some(Fault::MissingImage) => cmd.args(["--image", MISSING_IMAGE]),
            _ => cmd.args(["--image", &self.image]),
        };
        if fault == Some(Fault::Oom) {
            cmd.args(["--memory", &(16u64 << 20).to_string()]);
        }
        cmd.arg("--");
        match fault {
            Some(Fault::BadCommand) => cmd.arg("/no/such/command"),
            f => cmd.args([
                "sh",
                "-c",
                &fault::script(f, draw.pause_ms, draw.tail_ms, draw.exit),
            ]),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path)?)
            .kill_on_drop(true);
        let t0 = Instant::now();
        let mut child = cmd.spawn().context("spawning mount-plan launch")?;
        let pid = child.id().unwrap_or_default();

        // The fault that comes from outside, at its moment.
        let outside = async {
            match fault {
                Some(f @ (Fault::SigkillAfterStart | Fault::SigtermAfterStart)) => {
                    if started_container(&events, Duration::from_secs(60))
                        .await
                        .is_none()
                    {
                        return Some(format!("{}: the job never started", f.id()));
                    }
                    signal(pid, f.signal().expect("a signal")).await;
                    None
                }
                Some(f) if f.signal().is_some() => {
                    tokio::time::sleep(Duration::from_millis(50) + draw.delay).await;
                    signal(pid, f.signal().expect("checked")).await;
                    None
                }
                Some(Fault::Scancel) => {
                    let Some(id) = started_container(&events, Duration::from_secs(60)).await else {
                        return Some("scancel: the job never started".to_owned());
                    };
                    tokio::time::sleep(draw.delay).await;
                    self.cluster
                        .run(&["scancel", &id])
                        .await
                        .err()
                        .map(|e| format!("scancel: {e:#}"))
                }
                _ => None,
            }
        };
        let (mut record, code, sig) = await_launcher(
            &mut child,
            fault,
            Duration::from_secs(args.hang_secs),
            t0,
            outside,
        )
        .await?;
        let events_seen = read_events(&events);
        let launch_id = events_seen
            .iter()
            .find_map(|v| v["launch"].as_str().map(str::to_owned));
        if let Some(id) = &launch_id {
            self.launch_ids.lock().expect("ids").insert(id.clone());
        }
        // A launcher killed by a signal (or a hung one we killed) is followed by gc; what it
        // finds of this launch is counted. A launcher that ended with a status promised to
        // leave nothing: what it left is a leak.
        if record.hang || sig.is_some() {
            self.killed.lock().expect("killed").insert(i);
            let now = self
                .leftovers(launch_id.as_deref(), &launch_label, false)
                .await?;
            tokio::time::sleep(GC_SETTLE).await;
            let later = self
                .leftovers(launch_id.as_deref(), &launch_label, false)
                .await?;
            record.left_for_gc = now.len().max(later.len());
            if record.left_for_gc > 0 {
                keep_evidence(
                    &self.run,
                    self.index,
                    i,
                    &events,
                    &stderr_path,
                    "left-for-gc",
                );
            }
            if let Err(e) = self.gc().await {
                record.mismatch = Some(format!("gc failed: {e:#}"));
            }
        }
        record.leaked = self
            .leftovers(launch_id.as_deref(), &launch_label, true)
            .await?;
        // A launch that ended before its command ran releases the job directory it created.
        if code.is_some() && super::ended_before_the_command(&events_seen) && ws.join(&job).exists()
        {
            record.left_dir = Some(ws.join(&job).display().to_string());
        }
        if !record.leaked.is_empty() || record.left_dir.is_some() {
            keep_evidence(&self.run, self.index, i, &events, &stderr_path, "leaked");
        }
        judge_end(
            &mut record,
            i,
            &ws.join(&job).join(fault::OUTPUT),
            &data,
            draw.exit,
            (code, sig),
            &stderr_path,
        );
        if events_seen.iter().any(|v| v["event"] == "removed") {
            self.removed_by_launcher.lock().expect("removed").insert(i);
        }
        let _ = std::fs::remove_dir_all(ws.join(&job));
        let _ = std::fs::remove_file(&events);
        let _ = std::fs::remove_file(&stderr_path);
        Ok(record)
    }

    /// What this launch left: its jobs in the queue (by the launch id in their comment) and
    /// its bundles (by its label); with `remove`, cancelled and deleted.
    async fn leftovers(
        &self,
        launch_id: Option<&str>,
        launch_label: &str,
        remove: bool,
    ) -> Result<Vec<String>> {
        let mut found = Vec::new();
        if let Some(launch) = launch_id {
            let comment = format!("mount-plan:{launch}");
            for (id, _, state) in self
                .cluster
                .queued()
                .await?
                .into_iter()
                .filter(|(_, c, _)| *c == comment)
            {
                if remove {
                    let _ = self.cluster.run(&["scancel", &id]).await;
                }
                found.push(format!("job {id} {state}"));
            }
        }
        for dir in self.cluster.bundles_labelled(LABEL_LAUNCH, launch_label) {
            if remove {
                let _ = std::fs::remove_dir_all(&dir);
            }
            found.push(format!("bundle {}", dir.display()));
        }
        Ok(found)
    }

    /// `mount-plan gc --runtime slurm`; what it removed goes to `gc_log`. One at a time.
    async fn gc(&self) -> Result<()> {
        let _one = self.gc_lock.lock().await;
        let mut cmd = tokio::process::Command::new(&self.cli);
        cmd.args(["gc", "--runtime", "slurm"])
            .envs(self.cluster.env());
        let removed = run_gc(cmd).await?;
        self.gc_log.lock().expect("gc log").extend(removed);
        Ok(())
    }
}
