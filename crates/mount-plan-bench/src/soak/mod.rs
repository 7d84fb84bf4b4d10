//! `mount-plan-bench soak`: many launches with faults injected at random points drawn from a
//! seed, each checked for its outcome, its output and what it left on the engine; 64 jobs in
//! flight checking from inside that each sees only its own job directory; and the library's
//! resident memory over thousands of in-process launches.
//!
//! Every soak launch runs the CLI (`mount-plan launch`) as a child process, so that the exit
//! status a launcher relies on is the one checked, and so that the launcher itself can be
//! killed. The mapping of faults to outcomes is in `docs/reliability.md`.

mod fault;
mod isolation;
mod memory;
pub(crate) mod proxy;
mod service;
mod slurm;
mod swarm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

use crate::TestEngine;
use fault::{libc_sig, Expect, Fault, Rng, OUTPUT};
use proxy::{Break, Proxy, Trigger};

/// The label every soak container carries (`soak.run=RUN`), and the per-launch one.
const LABEL_RUN: &str = "soak.run";
const LABEL_LAUNCH: &str = "soak.launch";
/// How long after a signalled launcher ends `gc` runs (as a site's periodic gc would, later).
const GC_SETTLE: Duration = Duration::from_secs(2);
/// The request line of a create, on Docker and on Podman; on a Swarm manager.
const CREATE: &str = "/containers/create";
const CREATE_SERVICE: &str = "/services/create";
/// The request line of a removal.
const REMOVE: &str = "DELETE /";
/// How long `cut-create` keeps the create request from the engine after cutting the
/// launcher's connection: longer than the launcher's first look, shorter than its second.
const CUT_PAUSE: Duration = Duration::from_millis(500);
/// How long `sigterm-in-create` holds the create request: longer than the launcher's two
/// looks after a cancellation, shorter than its wait for a create in flight.
const HOLD_CREATE: Duration = Duration::from_secs(3);

/// Launches with faults injected, checked for leaks, lost outputs and hangs.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Engines to soak, one after the other: the test engines (`swarm`: the three-node Swarm
    /// of `.ci/swarm-setup`), and `slurm` (the cluster of `.ci/slurm-setup`; the CLI built
    /// with `--features slurm`)
    #[arg(long, value_parser = parse_soak_engine, value_delimiter = ',', default_values = ["docker"])]
    engines: Vec<SoakEngine>,
    /// Launches per engine
    #[arg(long, default_value_t = 100)]
    launches: usize,
    /// Launches in flight at once (a Podman or Swarm worker restart runs alone)
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Faults to inject: all, none, or a comma-separated list of job-kill, oom, exit,
    /// launcher-sigkill, launcher-sigterm, launcher-sigint, proxy-drop, proxy-delay,
    /// proxy-truncate, podman-restart, fs-full, missing-image, bad-command, the faults
    /// aimed at one clean-up step each: cut-create, drop-remove, sigterm-in-create,
    /// sigkill-after-start, sigterm-after-start, Slurm's scancel and Swarm's worker-restart
    #[arg(long, default_value = "all")]
    faults: String,
    /// Seed of every random choice (which launch gets which fault, when, where)
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of launches that get a fault
    #[arg(long, default_value_t = 0.5)]
    fault_rate: f64,
    /// A launch still running after this many seconds is a hang: it is killed and counted
    #[arg(long, default_value_t = 90)]
    hang_secs: u64,
    /// Before the soak, run this many jobs at once on each engine, each checking from inside
    /// that it sees only its own job directory (64 for the isolation check)
    #[arg(long)]
    isolation: Option<usize>,
    /// Instead of the soak: `--launches` in-process library launches (no faults) on each
    /// engine, printing the resident memory after the first 100 and after all of them
    #[arg(long)]
    memory: bool,
    /// The `mount-plan` binary the soak launches through
    #[arg(long, default_value = "target/release/mount-plan")]
    cli: PathBuf,
    /// The first launches on each engine take each fault kind once, in order (so that a short
    /// run covers them all); the rest are drawn as usual
    #[arg(long)]
    each_fault_once: bool,
    /// Start no launch after this many seconds (per engine): the report counts the launches
    /// actually made
    #[arg(long)]
    max_secs: Option<u64>,
    /// Print every launch's outcome on stderr
    #[arg(long)]
    verbose: bool,
    /// On podman-rootless, launch with `--userns keep-id`: the creates of the launcher
    /// processes running at once then meet on the service's create lock (overlapping keep-id
    /// creates crash Podman 4.3's rootless service)
    #[arg(long)]
    keep_id: bool,
}

/// An engine the soak drives: a test engine behind its API socket (a Swarm behind its
/// manager's), or the Slurm cluster of `.ci/slurm-setup`, reached by its commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoakEngine {
    /// A test engine.
    Socket(TestEngine),
    /// The Slurm cluster.
    Slurm,
}

impl SoakEngine {
    fn name(self) -> &'static str {
        match self {
            SoakEngine::Socket(e) => e.name(),
            SoakEngine::Slurm => "slurm",
        }
    }
}

/// Parse `--engines` of the soak: a test engine's name, `swarm` or `slurm`.
fn parse_soak_engine(value: &str) -> Result<SoakEngine, String> {
    match value {
        "slurm" => Ok(SoakEngine::Slurm),
        "swarm" => Ok(SoakEngine::Socket(TestEngine::Swarm)),
        _ => crate::parse_engine(value)
            .map(SoakEngine::Socket)
            .map_err(|e| format!("{e}, swarm, slurm")),
    }
}

/// VmRSS of this process, in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn parse_faults(text: &str) -> Result<Vec<Fault>> {
    match text {
        "all" => Ok(Fault::ALL.to_vec()),
        "none" | "" => Ok(vec![]),
        list => list
            .split(',')
            .map(|f| Fault::from_str(f.trim(), false).map_err(|e| anyhow::anyhow!("--faults: {e}")))
            .collect(),
    }
}

pub fn run(args: &SoakArgs) -> Result<std::process::ExitCode> {
    let rss_start = rss_kib();
    if args.memory {
        for &engine in &args.engines {
            let SoakEngine::Socket(engine) = engine else {
                bail!("--memory: the in-process launches run on the socket engines only");
            };
            memory::run(
                engine,
                args.launches,
                args.concurrency,
                args.max_secs.map(Duration::from_secs),
            )?;
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let faults = parse_faults(&args.faults)?;
    let cli = std::fs::canonicalize(&args.cli).with_context(|| {
        format!(
            "the CLI {:?} (build it: cargo build --release -p mount-plan-cli)",
            args.cli
        )
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let mut total = Tally::default();
    let mut isolation_failed = false;
    for (index, &engine) in args.engines.iter().enumerate() {
        let engine = match engine {
            SoakEngine::Socket(e) => e,
            SoakEngine::Slurm => {
                if args.isolation.is_some() {
                    eprintln!("soak slurm: no isolation check (the socket engines only)");
                }
                let tally = rt.block_on(slurm::soak(args, &faults, &cli, &run_id, index as u64))?;
                if args.launches > 0 {
                    tally.print(engine.name());
                }
                total.add(&tally);
                continue;
            }
        };
        let ctx = rt.block_on(Ctx::new(engine, index as u64, args, &faults, &cli, &run_id))?;
        if let (Some(_), Some(_)) = (args.isolation, &ctx.swarm) {
            eprintln!("soak swarm: no isolation check (the container engines only)");
        } else if let Some(n) = args.isolation {
            let report = rt.block_on(isolation::run(&ctx, n))?;
            eprintln!("{report}");
            println!("{report}");
            isolation_failed |= !report.passed();
        }
        let tally = rt.block_on(ctx.soak(args))?;
        if args.launches > 0 {
            tally.print(engine.name());
        }
        total.add(&tally);
        ctx.teardown();
    }
    let rss_end = rss_kib();
    println!(
        "soak: {} signalled launchers left a container that gc then removed",
        total.left_for_gc
    );
    if !total.mismatches.is_empty() {
        println!(
            "soak: {} launches ended otherwise than their fault allows (see above)",
            total.mismatches.len()
        );
    }
    println!(
        "soak: {} launches, {} faults, {} leaked, {} lost outputs, {} hangs, RSS {}/{} KiB",
        total.launches,
        total.faulted(),
        total.leaked,
        total.lost,
        total.hangs,
        rss_start,
        rss_end
    );
    let failed = total.leaked > 0
        || total.lost > 0
        || total.hangs > 0
        || !total.mismatches.is_empty()
        || isolation_failed;
    Ok(if failed {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// What a soak on one engine found.
#[derive(Debug, Default)]
struct Tally {
    launches: usize,
    /// Per fault id (`none` for none): outcome -> count.
    outcomes: BTreeMap<String, BTreeMap<String, usize>>,
    leaked: usize,
    lost: usize,
    hangs: usize,
    /// Faults drawn whose trigger was never reached (a proxy fault past the last request).
    not_fired: usize,
    /// Containers `mount-plan gc` reported removing (its `gc_log`).
    gc_removed: usize,
    /// Removals gc reported of containers their own launcher had removed (see `soak`).
    gc_phantoms: usize,
    /// Launches whose containers were still there when the launcher ended (gc removed them).
    left_for_gc: usize,
    /// Launches that ended otherwise than their fault allows (status, or the fault itself
    /// could not be injected).
    mismatches: Vec<String>,
    /// What each leak and lost output was.
    notes: Vec<String>,
}

impl Tally {
    fn faulted(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|(f, _)| *f != "none")
            .map(|(_, o)| o.values().sum::<usize>())
            .sum()
    }

    fn add(&mut self, o: &Tally) {
        self.launches += o.launches;
        for (f, outs) in &o.outcomes {
            let mine = self.outcomes.entry(f.clone()).or_default();
            for (k, n) in outs {
                *mine.entry(k.clone()).or_default() += n;
            }
        }
        self.leaked += o.leaked;
        self.lost += o.lost;
        self.hangs += o.hangs;
        self.not_fired += o.not_fired;
        self.gc_removed += o.gc_removed;
        self.gc_phantoms += o.gc_phantoms;
        self.left_for_gc += o.left_for_gc;
        self.mismatches.extend(o.mismatches.iter().cloned());
        self.notes.extend(o.notes.iter().cloned());
    }

    fn print(&self, name: &str) {
        println!("{name}: {} launches", self.launches);
        println!("  {:<20} {:>6}  outcomes", "fault", "count");
        for (f, outs) in &self.outcomes {
            let n: usize = outs.values().sum();
            let text: Vec<String> = outs.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            println!("  {f:<20} {n:>6}  {}", text.join(", "));
        }
        println!(
            "  leaked {}, lost outputs {}, hangs {}, proxy faults not reached {}, launches that left a container to gc {}, removed by gc {} (of which {} their launcher had removed)",
            self.leaked, self.lost, self.hangs, self.not_fired, self.left_for_gc, self.gc_removed, self.gc_phantoms
        );
        for m in &self.mismatches {
            println!("  MISMATCH {m}");
        }
        for n in &self.notes {
            println!("  {n}");
        }
    }
}

/// One engine's soak.
struct Ctx {
    engine: TestEngine,
    index: u64,
    target: crate::Target,
    run: String,
    seed: u64,
    faults: Vec<Fault>,
    cli: PathBuf,
    /// Sockets, events and stderr of each launch.
    dir: PathBuf,
    /// A W on a 1 MiB tmpfs (fs-full).
    full: Option<PathBuf>,
    /// Normal launches share the engine; a Podman or Swarm worker restart takes it alone.
    lock: tokio::sync::RwLock<()>,
    /// In front of the engine for `gc`, narrowing its listing to this run.
    gc_proxy: Proxy,
    gc_lock: tokio::sync::Mutex<()>,
    /// Every container `gc` removed: (job, why). A gc run after one killed launcher removes
    /// any orphan of this run, so each is judged at the end against the launches whose
    /// launcher was killed: an orphan of a launcher that ended by itself is a leak that
    /// another launch's gc happened to clean.
    gc_log: Mutex<Vec<(String, String)>>,
    /// The launches whose launcher was killed (by a fault, or as a hang).
    killed: Mutex<std::collections::BTreeSet<u64>>,
    /// The launches whose events say their launcher removed the container itself.
    removed_by_launcher: Mutex<std::collections::BTreeSet<u64>>,
    service: Option<Mutex<service::Service>>,
    /// The Swarm's workers and shared directory (`--engines swarm`).
    swarm: Option<swarm::Cluster>,
}

impl Ctx {
    async fn new(
        engine: TestEngine,
        index: u64,
        args: &SoakArgs,
        faults: &[Fault],
        cli: &Path,
        run: &str,
    ) -> Result<Ctx> {
        let swarm = match engine {
            TestEngine::Swarm => Some(swarm::Cluster::find()?),
            _ => None,
        };
        let target = match &swarm {
            Some(cluster) => cluster.target(run, index).await,
            None => crate::setup(engine, 0).await,
        }
        .with_context(|| format!("setting up {engine:?}"))?;
        let dir = std::env::temp_dir().join(format!("mp-soak-{run}-{index}"));
        std::fs::create_dir_all(&dir)?;
        let mut kept = Vec::new();
        for &f in faults {
            match f.unavailable(engine) {
                Some(why) => eprintln!("soak {engine:?}: no {} fault: {why}", f.id()),
                None => kept.push(f),
            }
        }
        // On Swarm in the shared directory, which every worker binds `rslave`: the tmpfs
        // shows in them.
        let full = if kept.contains(&Fault::FsFull) {
            Some(full_workspace(match &swarm {
                Some(c) => c.workdir.join(format!("mp-soak-{run}-{index}-full")),
                None => dir.join("full"),
            })?)
        } else {
            None
        };
        let gc_proxy = Proxy::start(
            &dir.join("gc.sock"),
            &target.socket,
            None,
            Some(format!("{LABEL_RUN}={run}")),
        )?;
        let service = if kept.contains(&Fault::PodmanRestart) {
            Some(Mutex::new(service::Service::find(engine)?))
        } else {
            None
        };
        Ok(Ctx {
            engine,
            index,
            target,
            run: run.to_owned(),
            seed: args.seed,
            faults: kept,
            cli: cli.to_owned(),
            dir,
            full,
            lock: tokio::sync::RwLock::new(()),
            gc_proxy,
            gc_lock: tokio::sync::Mutex::new(()),
            gc_log: Mutex::new(Vec::new()),
            killed: Mutex::new(Default::default()),
            removed_by_launcher: Mutex::new(Default::default()),
            service,
            swarm,
        })
    }

    fn teardown(&self) {
        if let Some(full) = &self.full {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(full)
                .status();
            let _ = std::fs::remove_dir_all(full);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.target.workspace);
    }

    fn runtime_arg(&self) -> &'static str {
        self.engine.kind_id()
    }

    fn engine_url(&self) -> String {
        format!("unix://{}", self.target.socket.display())
    }

    fn rootless(&self) -> bool {
        self.engine == TestEngine::PodmanRootless
    }

    async fn soak(&self, args: &SoakArgs) -> Result<Tally> {
        let name = format!("{:?}", self.engine);
        let mut t = launch_all(args, &name, |i| self.launch(i, args)).await?;
        judge_gc_log(
            &mut t,
            &self.gc_log.lock().expect("gc log"),
            &self.killed.lock().expect("killed"),
            &self.removed_by_launcher.lock().expect("removed"),
            &format!("soak-{}-{}-", self.seed, self.index),
        );
        if let Some(cluster) = &self.swarm {
            cluster.after_all(&self.run, &mut t).await?;
        }
        Ok(t)
    }

    /// One launch with its fault, and its checks.
    async fn launch(&self, i: u64, args: &SoakArgs) -> Result<Record> {
        let (
            Draw {
                fault,
                exit,
                pause_ms,
                tail_ms,
                delay,
            },
            mut rng,
        ) = Draw::new(self.seed, self.index, i, &self.faults, args);
        // Any request of a launch (version, image, create, archive, inspect, start, logs,
        // wait, remove: some 12 to 16); one past the last is counted as not reached.
        let at = 1 + rng.below(16) as usize;
        let pause_for = Duration::from_millis(1000 + rng.below(3000));
        let job = format!("soak-{}-{}-{i}", self.seed, self.index);
        let data = fault::content(self.seed, self.index, i);
        let ws = match (fault, &self.full) {
            (Some(Fault::FsFull), Some(full)) => full.clone(),
            _ => self.target.workspace.clone(),
        };
        let launch_label = format!("{}-{}-{i}", self.run, self.index);
        let events = self.dir.join(format!("events-{i}.jsonl"));
        let stderr_path = self.dir.join(format!("stderr-{i}.txt"));

        let _shared;
        let _alone;
        if fault.is_some_and(Fault::runs_alone) {
            _alone = self.lock.write().await;
        } else {
            _shared = self.lock.read().await;
        }
        let create = match self.swarm {
            Some(_) => CREATE_SERVICE,
            None => CREATE,
        };
        let aim = match fault {
            Some(Fault::ProxyDrop) => Some((Trigger::Nth(at), Break::Drop)),
            Some(Fault::ProxyDelay) => Some((Trigger::Nth(at), Break::Delay(pause_for))),
            Some(Fault::ProxyTruncate) => Some((Trigger::Nth(at), Break::Truncate)),
            Some(Fault::CutCreate) => Some((Trigger::First(create), Break::Cut(CUT_PAUSE))),
            Some(Fault::DropRemove) => Some((Trigger::First(REMOVE), Break::Drop)),
            Some(Fault::SigtermInCreate) => {
                Some((Trigger::First(create), Break::Delay(HOLD_CREATE)))
            }
            _ => None,
        };
        let proxy = match aim {
            Some(aim) => Some(Proxy::start(
                &self.dir.join(format!("p{i}.sock")),
                &self.target.socket,
                Some(aim),
                None,
            )?),
            None => None,
        };
        // The faults aimed at a create's clean-up use a job directory that exists before the
        // launch, as a launcher that prepares it would: a launch releases only a directory it
        // created, and a released directory would make the engine refuse a create that comes
        // late (its bind source gone), hiding a container the clean-up missed.
        let prepared = matches!(fault, Some(Fault::CutCreate | Fault::SigtermInCreate));
        let mut cmd = tokio::process::Command::new(&self.cli);
        cmd.arg("launch")
            .args(["--runtime", self.runtime_arg()])
            .arg("--socket")
            .arg(proxy.as_ref().map_or_else(|| self.engine_url(), Proxy::url))
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
            .arg(&events);
        if self.rootless() && args.keep_id {
            cmd.args(["--userns", "keep-id"]);
        }
        if prepared {
            prepare_job_dir(&ws.join(&job), self.rootless())?;
        } else {
            cmd.arg("--create-job-dir=fresh");
            if self.rootless() {
                let uid = crate::rootless_uid()?;
                cmd.arg("--job-dir-owner").arg(format!("{uid}:{uid}"));
            }
        }
        match fault {
            Some(Fault::MissingImage) => cmd.args(["--image", "mount-plan-soak-missing:never"]),
            _ => cmd.args(["--image", &self.target.image]),
        };
        if fault == Some(Fault::Oom) {
            cmd.args(["--memory", &(16u64 << 20).to_string()]);
        }
        cmd.arg("--");
        match fault {
            Some(Fault::BadCommand) => cmd.arg("/no/such/command"),
            f => cmd.args(["sh", "-c", &fault::script(f, pause_ms, tail_ms, exit)]),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path)?)
            .kill_on_drop(true)
            .env_remove("DOCKER_HOST")
            .env_remove("CONTAINER_HOST");
        let t0 = Instant::now();
        let mut child = cmd.spawn().context("spawning mount-plan launch")?;
        let pid = child.id().unwrap_or_default();

        // The fault that comes from outside, at its moment.
        let outside = async {
            match fault {
                // While the proxy holds the create request: the launcher is certainly
                // running, with its handlers, and its create is in flight.
                Some(Fault::SigtermInCreate) => {
                    let p = proxy.as_ref().expect("a proxy holds the create");
                    let until = Instant::now() + Duration::from_secs(60);
                    while !p.fired() && Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if !p.fired() {
                        return Some("sigterm-in-create: no create request came".to_owned());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    signal(pid, libc_sig::TERM).await;
                    None
                }
                Some(f @ (Fault::SigkillAfterStart | Fault::SigtermAfterStart)) => {
                    if started_container(&events, Duration::from_secs(60))
                        .await
                        .is_none()
                    {
                        return Some(format!("{}: the container never started", f.id()));
                    }
                    signal(pid, f.signal().expect("a signal")).await;
                    None
                }
                Some(f) if f.signal().is_some() => {
                    tokio::time::sleep(Duration::from_millis(50) + delay).await;
                    signal(pid, f.signal().expect("checked")).await;
                    None
                }
                Some(Fault::JobKill) => {
                    let Some(id) = started_container(&events, Duration::from_secs(60)).await else {
                        return Some("job-kill: the container never started".to_owned());
                    };
                    tokio::time::sleep(delay).await;
                    if let Some(cluster) = &self.swarm {
                        return cluster
                            .kill_job(&id)
                            .await
                            .err()
                            .map(|e| format!("job-kill: {e:#}"));
                    }
                    let socket = self.target.socket.clone();
                    let api = if self.engine.is_docker() {
                        "/v1.41"
                    } else {
                        "/v4.3.1/libpod"
                    };
                    let path = format!("{api}/containers/{id}/kill?signal=KILL");
                    let killed = tokio::task::spawn_blocking(move || {
                        crate::raw::call(&socket, "POST", &path, None)
                    })
                    .await;
                    match killed {
                        Ok(Ok(_)) => None,
                        Ok(Err(e)) => Some(format!("job-kill: {e}")),
                        Err(e) => Some(format!("job-kill: {e}")),
                    }
                }
                Some(Fault::PodmanRestart) => {
                    tokio::time::sleep(delay).await;
                    let service = self.service.as_ref().expect("a service for restarts");
                    let result =
                        tokio::task::block_in_place(|| service.lock().expect("service").restart());
                    result.err().map(|e| format!("podman-restart: {e:#}"))
                }
                Some(Fault::WorkerRestart) => {
                    let Some(id) = started_container(&events, Duration::from_secs(60)).await else {
                        return Some("worker-restart: the job never started".to_owned());
                    };
                    tokio::time::sleep(delay).await;
                    let cluster = self.swarm.as_ref().expect("worker-restart on Swarm only");
                    cluster
                        .restart_worker_engine(&id)
                        .await
                        .err()
                        .map(|e| format!("worker-restart: {e:#}"))
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
        record.fired = proxy.as_ref().is_none_or(Proxy::fired);
        record.broke = proxy.as_ref().and_then(Proxy::broken_line);
        // A request the proxy held back reaches the engine after the launcher may have ended:
        // what it made must be there before this launch's leftovers are looked for.
        if let Some(p) = &proxy {
            if !p.settled(Duration::from_secs(30)).await {
                record.mismatch.get_or_insert(
                    "the request the proxy held back got no answer from the engine within 30 s"
                        .to_owned(),
                );
            }
        }
        drop(proxy);
        // A launcher killed by a signal (or a hung one we killed) is followed by gc; what it
        // finds of this launch is counted, and kept as evidence. A launcher that ended with a
        // status (a SIGTERM or SIGINT it handled included) promised to leave nothing: what it
        // left is a leak.
        if record.hang || sig.is_some() {
            self.killed.lock().expect("killed").insert(i);
            // Once now, and once more after a moment: a create the launcher cancelled may
            // still be under way in the engine and take effect after the launcher ended.
            let now = self.leftovers(&launch_label, false).await?.len();
            tokio::time::sleep(GC_SETTLE).await;
            let later = self.leftovers(&launch_label, false).await?.len();
            record.left_for_gc = now.max(later);
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
        record.leaked = self.leftovers(&launch_label, true).await?;
        let events_seen = read_events(&events);
        // A launch that ended before its command ran releases the job directory it created
        // (`--create-job-dir=fresh`).
        if !prepared
            && code.is_some()
            && ended_before_the_command(&events_seen)
            && ws.join(&job).exists()
        {
            record.left_dir = Some(ws.join(&job).display().to_string());
        }
        if !record.leaked.is_empty() || record.left_dir.is_some() {
            keep_evidence(&self.run, self.index, i, &events, &stderr_path, "leaked");
        }
        judge_end(
            &mut record,
            i,
            &ws.join(&job).join(OUTPUT),
            &data,
            exit,
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

    /// `mount-plan gc` through the narrowing proxy; what it removed goes to `gc_log`. One at a
    /// time, as a site runs it: two at once race on the same orphan (see docs/reliability.md).
    async fn gc(&self) -> Result<()> {
        let _one = self.gc_lock.lock().await;
        let mut cmd = tokio::process::Command::new(&self.cli);
        cmd.args(["gc", "--runtime", self.runtime_arg(), "--socket"])
            .arg(self.gc_proxy.url());
        let removed = run_gc(cmd).await?;
        self.gc_log.lock().expect("gc log").extend(removed);
        Ok(())
    }

    /// Containers still carrying this launch's label; with `remove`, removed too.
    async fn leftovers(&self, launch_label: &str, remove: bool) -> Result<Vec<String>> {
        let mut last = None;
        for attempt in 0..5 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let engine = match connect(self.engine).await {
                Ok(e) => e,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match engine.list(LABEL_LAUNCH, launch_label).await {
                Ok(found) => {
                    let ids: Vec<String> = found.into_iter().map(|l| l.id).collect();
                    for id in ids.iter().filter(|_| remove) {
                        let _ = engine.remove(id).await;
                    }
                    return Ok(ids);
                }
                Err(e) => last = Some(e.into()),
            }
        }
        Err(last.expect("attempted")).context("listing the launch's containers")
    }
}

pub use crate::connect;

/// What one launch draws from the seed, on every engine: its fault, the command's own exit
/// status, the pauses of its script and when an outside fault comes.
#[derive(Debug, Clone, Copy)]
struct Draw {
    fault: Option<Fault>,
    exit: u8,
    pause_ms: u64,
    tail_ms: u64,
    delay: Duration,
}

impl Draw {
    /// The draw of launch `i` on engine `index`, and the generator for any further draws.
    fn new(seed: u64, index: u64, i: u64, faults: &[Fault], args: &SoakArgs) -> (Draw, Rng) {
        let mut rng = Rng::new(seed, index, i);
        let fault = if args.each_fault_once && (i as usize) < faults.len() {
            Some(faults[i as usize])
        } else if !faults.is_empty() && rng.chance(args.fault_rate) {
            Some(faults[rng.below(faults.len() as u64) as usize])
        } else {
            None
        };
        let exit = 1 + rng.below(100) as u8;
        let pause_ms = rng.below(300);
        let tail_ms = match fault {
            Some(
                Fault::LauncherSigkill
                | Fault::LauncherSigterm
                | Fault::LauncherSigint
                | Fault::PodmanRestart
                | Fault::JobKill
                | Fault::SigkillAfterStart
                | Fault::SigtermAfterStart
                | Fault::Scancel
                | Fault::WorkerRestart,
            ) => 3000 + rng.below(2000),
            _ => rng.below(200),
        };
        let delay = Duration::from_millis(rng.below(1500));
        (
            Draw {
                fault,
                exit,
                pause_ms,
                tail_ms,
                delay,
            },
            rng,
        )
    }
}

/// `w` made a workspace on a 1 MiB tmpfs (fs-full), its `startup` and `local` in it.
fn full_workspace(w: PathBuf) -> Result<PathBuf> {
    std::fs::create_dir_all(&w)?;
    crate::run_ok(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"])
            .arg(&w),
    )?;
    for d in ["startup", "local"] {
        std::fs::create_dir_all(w.join(d))?;
    }
    Ok(w)
}

/// Copy a launch's events and stderr to /tmp/mp-soak-evidence.
fn keep_evidence(run: &str, index: u64, i: u64, events: &Path, stderr: &Path, what: &str) {
    let dir = std::env::temp_dir().join("mp-soak-evidence");
    let _ = std::fs::create_dir_all(&dir);
    let stem = format!("{run}-{index}-{i}-{what}");
    let _ = std::fs::copy(events, dir.join(format!("{stem}.events.jsonl")));
    let _ = std::fs::copy(stderr, dir.join(format!("{stem}.stderr.txt")));
}

/// Send `sig` to `pid`.
async fn signal(pid: u32, sig: i32) {
    let _ = tokio::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .await;
}

/// The container of the `started` event in a launch's events file, once it appears.
async fn started_container(events: &Path, within: Duration) -> Option<String> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Ok(text) = std::fs::read_to_string(events) {
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                match v["event"].as_str() {
                    Some("started") => return v["container"].as_str().map(str::to_owned),
                    Some("failed" | "cancelled") => return None,
                    _ => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Create a job directory before its launch (mode 0750; on rootless Podman owned by the
/// service's user, whom the container's root is).
fn prepare_job_dir(dir: &Path, rootless: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
    if rootless {
        let uid = crate::rootless_uid()?;
        std::os::unix::fs::chown(dir, Some(uid), Some(uid))?;
    }
    Ok(())
}

/// A launch's events file (`--events`), one JSON object per line; none if it is missing.
fn read_events(events: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(events)
        .map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the events end in `failed` or `cancelled` with `command_ran: false`.
fn ended_before_the_command(events: &[serde_json::Value]) -> bool {
    events
        .iter()
        .rfind(|v| matches!(v["event"].as_str(), Some("failed" | "cancelled")))
        .is_some_and(|v| v["command_ran"] == serde_json::Value::Bool(false))
}

/// Judge what `gc` removed (`gc_log`: job, why) once every launch has ended: a removal of a
/// job whose launcher was killed is gc's work; one whose launcher removed it itself is a
/// phantom (gc listed it while its launcher ran); any other is a leak that gc happened to
/// clean. `prefix` is the soak's job name without the launch's index.
fn judge_gc_log(
    t: &mut Tally,
    gc_log: &[(String, String)],
    killed: &std::collections::BTreeSet<u64>,
    removed_by_launcher: &std::collections::BTreeSet<u64>,
    prefix: &str,
) {
    t.gc_removed = gc_log.len();
    for (job, why) in gc_log {
        let index = job.strip_prefix(prefix).and_then(|i| i.parse::<u64>().ok());
        if index.is_some_and(|i| killed.contains(&i)) {
            continue;
        }
        // gc listed the container while its launcher ran, and judged it once the launcher
        // had removed it and exited: its removal found nothing (the engine's not-found
        // counts as removed), so gc reports a removal that did not happen.
        if index.is_some_and(|i| removed_by_launcher.contains(&i)) {
            t.gc_phantoms += 1;
            continue;
        }
        t.leaked += 1;
        t.notes.push(format!(
            "LEAKED job {job}: its launcher was not killed and did not remove its container, which gc removed ({why})"
        ));
    }
}

/// Run `launch(i)` for `args.launches` launches, `args.concurrency` at a time (none started
/// after `args.max_secs`), and count their records; `name` is the engine's, for the lines on
/// stderr (every launch with `--verbose`, each bad one, and every 50th).
async fn launch_all<F, Fut>(args: &SoakArgs, name: &str, launch: F) -> Result<Tally>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Record>>,
{
    let next = AtomicUsize::new(0);
    let tally = Mutex::new(Tally::default());
    let started = Instant::now();
    let workers = (0..args.concurrency.max(1)).map(|_| async {
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let out_of_time = args
                .max_secs
                .is_some_and(|m| started.elapsed() >= Duration::from_secs(m));
            if i >= args.launches || out_of_time {
                return Ok::<(), anyhow::Error>(());
            }
            let record = launch(i as u64).await?;
            let bad = !record.leaked.is_empty()
                || record.left_dir.is_some()
                || record.lost.is_some()
                || record.hang
                || record.mismatch.is_some();
            if args.verbose || bad {
                eprintln!("soak {name} #{i}: {}", record.line());
            }
            let mut t = tally.lock().expect("tally");
            record.count(&mut t);
            if (i + 1).is_multiple_of(50) {
                eprintln!(
                    "soak {name}: {} launches, {:.0}s, leaked {}, lost {}, hangs {}, mismatches {}",
                    i + 1,
                    started.elapsed().as_secs_f64(),
                    t.leaked,
                    t.lost,
                    t.hangs,
                    t.mismatches.len()
                );
            }
        }
    });
    for r in futures_util::future::join_all(workers).await {
        r?;
    }
    Ok(tally.into_inner().expect("tally"))
}

/// Wait for a launcher at most `hang` while `outside` injects the launch's fault (what it
/// could not do is the record's first mismatch); a launcher still running then is killed and
/// counted as a hang. The launch's record so far, and the launcher's exit code or signal.
async fn await_launcher(
    child: &mut tokio::process::Child,
    fault: Option<Fault>,
    hang: Duration,
    t0: Instant,
    outside: impl std::future::Future<Output = Option<String>>,
) -> Result<(Record, Option<i32>, Option<i32>)> {
    let (waited, outside_error) = tokio::join!(tokio::time::timeout(hang, child.wait()), outside);
    let mut record = Record {
        fault,
        outcome: String::new(),
        leaked: Vec::new(),
        lost: None,
        hang: false,
        fired: true,
        broke: None,
        left_dir: None,
        left_for_gc: 0,
        mismatch: outside_error,
        elapsed: t0.elapsed(),
    };
    let status = match waited {
        Ok(s) => Some(s?),
        Err(_) => {
            record.hang = true;
            let _ = child.start_kill();
            let _ = child.wait().await;
            None
        }
    };
    use std::os::unix::process::ExitStatusExt;
    let (code, sig) = match status {
        Some(s) => (s.code(), s.signal()),
        None => (None, None),
    };
    record.outcome = match (record.hang, code, sig) {
        (true, ..) => "hang".to_owned(),
        (_, Some(c), _) => format!("exit {c}"),
        (_, None, Some(s)) => format!("signal {s}"),
        _ => "unknown".to_owned(),
    };
    Ok((record, code, sig))
}

/// Run `mount-plan gc` (`cmd`, its arguments given) within 120 s; what it removed.
async fn run_gc(mut cmd: tokio::process::Command) -> Result<Vec<(String, String)>> {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        cmd.stdin(Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .context("gc did not end within 120 s")??;
    if !out.status.success() {
        bail!(
            "gc exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(gc_removals(&out.stdout))
}

/// Parse `mount-plan gc`'s output: `removed ID (job J): why`, one line per container removed.
fn gc_removals(stdout: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("removed ")?;
            let (job, why) = rest
                .split_once(" (job ")
                .and_then(|(_, r)| r.split_once("): "))
                .unwrap_or(("?", rest));
            Some((job.to_owned(), why.to_owned()))
        })
        .collect()
}

/// The checks of a launch's end: the output of a job that exited 0 (`out` must hold `data`),
/// and whether the launcher's end is one its fault allows; a mismatch gets the launcher's
/// stderr.
fn judge_end(
    record: &mut Record,
    i: u64,
    out: &Path,
    data: &str,
    exit: u8,
    (code, sig): (Option<i32>, Option<i32>),
    stderr_path: &Path,
) {
    let fault = record.fault;
    let written = std::fs::read(out).ok();
    if code == Some(0) && fault != Some(Fault::FsFull) {
        match &written {
            Some(bytes) if fault::checksum(bytes) == fault::checksum(data.as_bytes()) => {}
            Some(bytes) => {
                record.lost = Some(format!(
                    "{} holds {} bytes, checksum {:016x}, want {:016x}",
                    out.display(),
                    bytes.len(),
                    fault::checksum(bytes),
                    fault::checksum(data.as_bytes())
                ))
            }
            None => record.lost = Some(format!("{} is missing", out.display())),
        }
    }
    if record.mismatch.is_none() {
        record.mismatch = expected(Expect::of(fault, exit), code, sig, record.hang)
            .err()
            .or_else(|| {
                (code == Some(125) && written.is_some()).then(|| {
                    "exit 125 (certainly not run), but the command wrote its output".to_owned()
                })
            });
    }
    if let Some(m) = &mut record.mismatch {
        let err = std::fs::read_to_string(stderr_path).unwrap_or_default();
        *m = format!(
            "#{i} {}: {m}; stderr: {}",
            fault.map_or("none".to_owned(), Fault::id),
            err.trim().replace('\n', " | ")
        );
    }
    if record.hang {
        record.mismatch.get_or_insert(format!("#{i}: hang"));
    }
}

/// Whether the launcher's end is one the fault allows.
fn expected(expect: Expect, code: Option<i32>, sig: Option<i32>, hang: bool) -> Result<(), String> {
    if hang {
        return Err("hang".into());
    }
    let ok = match (expect, code, sig) {
        (Expect::Status(want), Some(c), _) => c == want,
        (Expect::OwnFailure, Some(c), _) => (1..=121).contains(&c),
        (Expect::Recovered, Some(c), _) => matches!(c, 0 | 122 | 125),
        (Expect::NodeLost, Some(c), _) => matches!(c, 0 | 122 | 137 | 143 | 255),
        // 128 + the signal; 0 when the job had ended first; killed by the signal itself when
        // it came before the launcher installed its handlers.
        (Expect::Cancelled(s), Some(c), _) => c == 128 + s || c == 0,
        (Expect::Cancelled(s), None, Some(got)) => got == s,
        (Expect::Killed, None, Some(9)) => true,
        (Expect::Killed, Some(0), _) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "ended with {} where {expect:?} was expected",
            match (code, sig) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "nothing".into(),
            }
        ))
    }
}

/// What one launch showed.
#[derive(Debug)]
struct Record {
    fault: Option<Fault>,
    outcome: String,
    leaked: Vec<String>,
    lost: Option<String>,
    hang: bool,
    fired: bool,
    /// The request line the proxy broke.
    broke: Option<String>,
    /// The job directory a launch created and should have released, still there.
    left_dir: Option<String>,
    /// Containers of this launch still there after its launcher ended, before gc.
    left_for_gc: usize,
    mismatch: Option<String>,
    elapsed: Duration,
}

impl Record {
    fn line(&self) -> String {
        format!(
            "{}{} -> {} in {:.1}s{}{}{}{}{}",
            self.fault.map_or("none".to_owned(), Fault::id),
            self.broke
                .as_ref()
                .map_or(String::new(), |b| format!(" at {b:?}")),
            self.outcome,
            self.elapsed.as_secs_f64(),
            if self.fired {
                ""
            } else {
                " (fault not reached)"
            },
            if self.leaked.is_empty() {
                String::new()
            } else {
                format!(" LEAKED {:?}", self.leaked)
            },
            self.left_dir
                .as_ref()
                .map_or(String::new(), |d| format!(" LEFT DIRECTORY {d}")),
            self.lost
                .as_ref()
                .map_or(String::new(), |l| format!(" LOST {l}")),
            self.mismatch
                .as_ref()
                .map_or(String::new(), |m| format!(" MISMATCH {m}")),
        )
    }

    fn count(self, t: &mut Tally) {
        t.launches += 1;
        let mut outcome = self.outcome.clone();
        if self.left_for_gc > 0 {
            outcome.push_str(" +gc");
            t.left_for_gc += 1;
        }
        if !self.fired {
            outcome.push_str(" (not reached)");
            t.not_fired += 1;
        }
        *t.outcomes
            .entry(self.fault.map_or("none".to_owned(), Fault::id))
            .or_default()
            .entry(outcome)
            .or_default() += 1;
        if !self.leaked.is_empty() || self.left_dir.is_some() {
            t.leaked += 1;
            t.notes.push(format!("LEAKED {}", self.line()));
        }
        if let Some(l) = self.lost {
            t.lost += 1;
            t.notes.push(format!("LOST OUTPUT {l}"));
        }
        if self.hang {
            t.hangs += 1;
        }
        if let Some(m) = self.mismatch {
            t.mismatches.push(m);
        }
    }
}

/// Run `words[0]` with the rest as its arguments: its stdout, or an error naming the command
/// with its stderr (the Slurm commands, `docker` on a Swarm worker, runc on a Slurm node).
async fn command_stdout(words: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(words[0])
        .args(&words[1..])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", words.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            words.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `docker save IMAGE | INTO` (INTO's description `what`, for the errors): INTO's stdout,
/// trimmed, or an error with its stderr.
fn docker_save_into(image: &str, mut into: std::process::Command, what: &str) -> Result<String> {
    let mut save = std::process::Command::new("docker")
        .args(["save", image])
        .stdout(Stdio::piped())
        .spawn()
        .context("docker save")?;
    let out = into
        .stdin(save.stdout.take().context("piped")?)
        .output()
        .with_context(|| what.to_owned())?;
    let saved = save.wait()?;
    if !out.status.success() || !saved.success() {
        bail!(
            "docker save {image} | {what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
