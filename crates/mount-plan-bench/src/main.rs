//! `mount-plan-bench`: complete job lifecycles (verify, create, start, wait, remove; a trivial
//! command) through mount-plan, through bare Engine API calls (the floor) and through the
//! engines' own CLIs, side by side, at several concurrency levels. Prints a table.
//!
//! `soak` runs many launches with faults injected and checks that none leaks a container,
//! loses an output or hangs (see `soak/mod.rs` and docs/reliability.md).
//!
//! `check-stream` instead measures `mount-plan check --json` as a whole process against the
//! reference launcher's job-name guard.

mod check_stream;
mod raw;
mod soak;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use mount_plan::{HostPath, Layout, MountPlan};
use mount_plan_host::{verify, VerifyOptions};
use mount_plan_launch::{launch, Event, LaunchOptions, LaunchSpec, LogChunk, Observer};

/// The engines measured: the test engines, listed once in the testkit (each with its socket
/// and the front door's endpoint).
use mount_plan_testkit::engines::TestEngine;

/// Parse `--engines`: a test engine's name, Swarm aside (it runs services, not containers).
fn parse_engine(value: &str) -> Result<TestEngine, String> {
    TestEngine::ALL
        .into_iter()
        .filter(|e| *e != TestEngine::Swarm)
        .find(|e| e.name() == value)
        .ok_or_else(|| {
            let names: Vec<&str> = TestEngine::ALL
                .iter()
                .filter(|e| **e != TestEngine::Swarm)
                .map(|e| e.name())
                .collect();
            format!("{value:?}: expected one of {}", names.join(", "))
        })
}

/// Connect to an engine through the front door, as every front end does.
pub async fn connect(engine: TestEngine) -> Result<Box<dyn mount_plan_launch::Engine>> {
    let endpoint = engine.endpoint().map_err(anyhow::Error::msg)?;
    Ok(mount_plan_run::connect(&endpoint).await?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Method {
    /// mount-plan: host verify, then the backend's launch (create, start, audit), wait, remove
    Library,
    /// bare Engine API calls over the unix socket, one request per step, no SDK
    Raw,
    /// `docker run --rm` / `podman run --rm` with the core's rendered arguments
    Cli,
}

/// Benchmark mount-plan's job lifecycle against the raw engine API and the engines' CLIs.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Engines to measure
    #[arg(long, value_parser = parse_engine, value_delimiter = ',', default_values = ["docker", "podman-rootful"])]
    engines: Vec<TestEngine>,
    /// Lifecycles per (engine, method, concurrency)
    #[arg(long, default_value_t = 24)]
    runs: usize,
    /// Concurrency levels
    #[arg(long, value_delimiter = ',', default_values = ["1", "4", "8"])]
    concurrency: Vec<usize>,
    /// Methods to compare, interleaved round by round
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["raw", "library", "cli"])]
    methods: Vec<Method>,
    /// Warm-up lifecycles per (engine, method), not counted
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// A quick check that every path works (2 runs, concurrency 1 and 2); figures are noise
    #[arg(long)]
    smoke: bool,
    /// Print JSON instead of the table
    #[arg(long)]
    json: bool,
    /// Instead of the comparison, time each step of sequential lifecycles (library steps and
    /// raw-API steps) and print the median of each
    #[arg(long)]
    breakdown: bool,
    /// Name the image by its id (`sha256:HEX`) in every method instead of by its tag: an image
    /// named by content is inspected once per process by the library, a tag every time
    #[arg(long)]
    image_by_id: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// `mount-plan check --json` as a whole process on UUID names, against the reference
    /// launcher's job-name guard in Python (needs the release `mount-plan` binary)
    CheckStream(check_stream::CheckStreamArgs),
    /// Launches with faults injected at random points drawn from a seed; exits 1 on any
    /// leaked container, lost output or hang (needs the release `mount-plan` binary)
    Soak(soak::SoakArgs),
}

struct Target {
    engine: TestEngine,
    socket: PathBuf,
    image: String,
    /// (program, leading args, env) for the CLI baseline
    cli: (String, Vec<String>, Vec<(String, String)>),
    runtime: Box<dyn mount_plan_launch::Engine>,
    workspace: PathBuf,
}

#[derive(Debug, serde::Serialize)]
struct Row {
    engine: String,
    method: String,
    concurrency: usize,
    runs: usize,
    min_s: f64,
    p10_s: f64,
    median_s: f64,
    p90_s: f64,
    max_s: f64,
    jobs_per_s: f64,
}

fn main() -> Result<std::process::ExitCode> {
    let mut args = Args::parse();
    match &args.mode {
        Some(Mode::CheckStream(check)) => {
            check_stream::run(check)?;
            return Ok(std::process::ExitCode::SUCCESS);
        }
        Some(Mode::Soak(soak)) => return soak::run(soak),
        None => {}
    }
    if args.smoke {
        args.runs = 2;
        args.concurrency = vec![1, 2];
        args.warmup = 0;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.breakdown {
        for &engine in &args.engines {
            let mut target = rt.block_on(setup(engine, args.runs.max(8)))?;
            if args.image_by_id {
                name_image_by_id(&mut target)?;
            }
            breakdown(&rt, &target, args.runs)?;
            let _ = std::fs::remove_dir_all(&target.workspace);
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    for &engine in &args.engines {
        let mut target = rt
            .block_on(setup(engine, args.runs.max(8)))
            .with_context(|| format!("setting up {engine:?}"))?;
        if args.image_by_id {
            name_image_by_id(&mut target)?;
        }
        let methods = args.methods.clone();
        for &method in &methods {
            for i in 0..args.warmup {
                lifecycle(&rt, &target, method, i)?;
            }
        }
        for &c in &args.concurrency {
            rows.extend(measure_interleaved(&rt, &target, &methods, c, args.runs)?);
            if !args.json {
                eprintln!("measured {engine:?} c={c}, methods interleaved");
            }
        }
        let _ = std::fs::remove_dir_all(&target.workspace);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
        println!(
            "lifecycles that failed and were not timed: {}",
            FAILED.load(std::sync::atomic::Ordering::SeqCst)
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Run a command; fail with its stderr unless it succeeds.
fn run_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn podman_env() -> Vec<(String, String)> {
    let conf = std::env::var("CONTAINERS_CONF")
        .unwrap_or_else(|_| "/tmp/mount-plan-podman/containers.conf".into());
    vec![("CONTAINERS_CONF".into(), conf)]
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn rootless_uid() -> Result<u32> {
    Ok(env_or("MOUNT_PLAN_PODMAN_ROOTLESS_UID", "1001").parse()?)
}

/// The socket of an engine that .ci/engines-setup started (`key` in its env file, exported).
fn nested_socket(key: &str) -> Result<String> {
    std::env::var(key).with_context(|| {
        format!("{key} is not set: run .ci/engines-setup and source /tmp/mount-plan-engines/env")
    })
}

async fn setup(engine: TestEngine, jobs: usize) -> Result<Target> {
    // The engines in containers see only their shared work directory of the host.
    let base = match engine {
        TestEngine::Docker26 | TestEngine::Podman5 => {
            let work = PathBuf::from(nested_socket("MOUNT_PLAN_ENGINES_WORKDIR")?);
            // ...so the gate's host copy is there too (the host's engines see it as well).
            use mount_plan_launch::gate_copy::GATE_DIR_ENV;
            if std::env::var_os(GATE_DIR_ENV).is_none() {
                std::env::set_var(GATE_DIR_ENV, work.join("gate"));
            }
            work
        }
        _ => std::env::temp_dir(),
    };
    let workspace = base.join(format!("mp-bench-{}-{engine:?}", std::process::id()));
    for d in ["startup", "local"] {
        std::fs::create_dir_all(workspace.join(d))?;
    }
    for i in 0..jobs {
        std::fs::create_dir_all(workspace.join(format!("job-{i}")))?;
    }
    let image = "mount-plan-bench:busybox".to_owned();
    let url = engine.socket().map_err(anyhow::Error::msg)?;
    let runtime = connect(engine).await?;
    let socket = PathBuf::from(url.trim_start_matches("unix://"));
    let cli = match engine {
        TestEngine::Docker => ("docker".to_owned(), vec![], vec![]),
        TestEngine::PodmanRootful => ("podman".to_owned(), vec![], podman_env()),
        TestEngine::Docker26 => ("docker".to_owned(), vec!["--host".to_owned(), url], vec![]),
        TestEngine::Podman5 => ("podman".to_owned(), vec!["--url".to_owned(), url], vec![]),
        TestEngine::PodmanRootless => {
            let uid = rootless_uid()?;
            let user = env_or("MOUNT_PLAN_PODMAN_ROOTLESS_USER", "mpjob");
            let mut env = podman_env();
            env.push(("XDG_RUNTIME_DIR".into(), format!("/run/user/{uid}")));
            let lead = ["-u", &user, "--", "env"]
                .iter()
                .map(|s| s.to_string())
                .chain(env.iter().map(|(k, v)| format!("{k}={v}")))
                .chain(["podman".to_owned()])
                .collect();
            ("runuser".to_owned(), lead, vec![])
        }
        TestEngine::Swarm => bail!("the bench runs containers, not Swarm services"),
    };
    if engine == TestEngine::PodmanRootless {
        // The rootless user must be able to reach the workspace (the command writes nothing,
        // so root keeps owning it, as the host checks expect).
        let mut p = workspace.clone();
        loop {
            let _ = Command::new("chmod").arg("o+rx").arg(&p).status();
            if !p.pop() || p == Path::new("/tmp") || p == Path::new("/") {
                break;
            }
        }
    }
    let target = Target {
        engine,
        socket,
        image,
        cli,
        runtime,
        workspace,
    };
    import_image(&target)?;
    Ok(target)
}

/// Import a busybox image (Debian's static busybox, no registry needed).
fn import_image(t: &Target) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("mp-bench-img-{}", std::process::id()));
    let (tar, _) = mount_plan_testkit::image::busybox_tar(&dir, &[]).map_err(anyhow::Error::msg)?;
    let (prog, lead, env) = &t.cli;
    let imported = mount_plan_testkit::image::import(
        Command::new(prog).args(lead).envs(env.iter().cloned()),
        &tar,
        &t.image,
        &[],
    );
    std::fs::remove_dir_all(&dir)?;
    imported.map_err(|e| anyhow::anyhow!("image import failed: {e}"))
}

/// Name the target's image by its id, `sha256:HEX`, as the engine's CLI reports it.
fn name_image_by_id(t: &mut Target) -> Result<()> {
    let (prog, lead, env) = &t.cli;
    let out = Command::new(prog)
        .args(lead)
        .envs(env.iter().cloned())
        .args(["image", "inspect", "-f", "{{.Id}}", &t.image])
        .output()?;
    anyhow::ensure!(out.status.success(), "image inspect of {} failed", t.image);
    let id = String::from_utf8(out.stdout)?;
    let id = id.trim().trim_start_matches("sha256:");
    t.image = format!("sha256:{id}");
    anyhow::ensure!(
        t.image
            .parse::<mount_plan_launch::ImageRef>()?
            .content_digest()
            .is_some(),
        "{} is not a full image id",
        t.image
    );
    Ok(())
}

fn plan_for(t: &Target, i: usize) -> Result<MountPlan> {
    let layout = Layout::default();
    let ws = HostPath::parse(t.workspace.to_str().context("utf-8 workspace")?)?;
    Ok(layout.plan(&ws, &layout.job(&format!("job-{i}"))?)?)
}

/// Every method at one concurrency, interleaved: rounds in which each method in turn runs
/// `concurrency` lifecycles at once (the order rotating each round), until each has run
/// `runs`. A change in the machine's load then falls on every method alike, where measuring
/// one method after another would hand it to whichever ran at the time.
fn measure_interleaved(
    rt: &tokio::runtime::Runtime,
    t: &Target,
    methods: &[Method],
    concurrency: usize,
    runs: usize,
) -> Result<Vec<Row>> {
    let rounds = runs.div_ceil(concurrency);
    let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); methods.len()];
    let mut walls = vec![Duration::ZERO; methods.len()];
    for round in 0..rounds {
        for k in 0..methods.len() {
            let m = (round + k) % methods.len();
            let started = Instant::now();
            latencies[m].extend(batch(rt, t, methods[m], concurrency)?);
            walls[m] += started.elapsed();
        }
    }
    Ok(methods
        .iter()
        .zip(latencies)
        .zip(walls)
        .map(|((method, l), wall)| row(t, *method, concurrency, l, wall))
        .collect())
}

/// How many timed lifecycles failed (an engine's error, of either method): each is told on
/// stderr as it happens and left out of the figures; more than [`FAILURES_TOLERATED`] end
/// the run. The table's footer gives the count.
static FAILED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many failed lifecycles a run goes on past (an engine's rare transient error, such as
/// runc's `read init-p: connection reset by peer` under load, seen on Podman 4.3 and 5).
const FAILURES_TOLERATED: usize = 5;

/// `concurrency` lifecycles of `method` at once, each in its own job directory; the
/// latencies of those that succeeded.
fn batch(
    rt: &tokio::runtime::Runtime,
    t: &Target,
    method: Method,
    concurrency: usize,
) -> Result<Vec<Duration>> {
    let outcomes: Vec<Result<Duration>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..concurrency)
            .map(|i| {
                s.spawn(move || -> Result<Duration> {
                    let t0 = Instant::now();
                    lifecycle(rt, t, method, i)?;
                    Ok(t0.elapsed())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect()
    });
    let mut latencies = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        match outcome {
            Ok(latency) => latencies.push(latency),
            Err(e) => {
                let failed = FAILED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                eprintln!(
                    "a {method:?} lifecycle on {:?} failed (not timed): {e:#}",
                    t.engine
                );
                if failed > FAILURES_TOLERATED {
                    return Err(e.context(format!("{failed} lifecycles failed")));
                }
            }
        }
    }
    Ok(latencies)
}

fn row(
    t: &Target,
    method: Method,
    concurrency: usize,
    mut l: Vec<Duration>,
    wall: Duration,
) -> Row {
    l.sort();
    let pick = |q: f64| l[((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1];
    Row {
        engine: format!("{:?}", t.engine).to_lowercase(),
        method: format!("{method:?}").to_lowercase(),
        concurrency,
        runs: l.len(),
        min_s: l[0].as_secs_f64(),
        p10_s: pick(0.1).as_secs_f64(),
        median_s: pick(0.5).as_secs_f64(),
        p90_s: pick(0.9).as_secs_f64(),
        max_s: l[l.len() - 1].as_secs_f64(),
        jobs_per_s: l.len() as f64 / wall.as_secs_f64(),
    }
}

/// When each lifecycle event arrived.
struct Timeline(Vec<(&'static str, Instant)>);

impl Observer for Timeline {
    fn output(&mut self, _: &LogChunk) {}
    fn event(&mut self, event: &Event) {
        let name = match event {
            Event::Created { .. } => "created",
            Event::Started { .. } => "started",
            Event::Exited { .. } => "exited",
            Event::Removed { .. } => "removed",
            _ => return,
        };
        self.0.push((name, Instant::now()));
    }
}

fn lifecycle(rt: &tokio::runtime::Runtime, t: &Target, method: Method, i: usize) -> Result<()> {
    let plan = plan_for(t, i)?;
    match method {
        Method::Library => {
            let verified = verify(plan, &VerifyOptions::default())?;
            let spec = spec(t)?;
            let status = rt
                .block_on(launch(
                    t.runtime.as_ref(),
                    &verified,
                    &spec,
                    &LaunchOptions::default(),
                    &mut |_: &LogChunk| {},
                ))
                .map_err(|f| f.error)?
                .status;
            if !status.success() {
                bail!("library lifecycle exited {}", status.code);
            }
        }
        Method::Raw => raw_lifecycle(t, &plan)?,
        Method::Cli => {
            let (prog, lead, env) = &t.cli;
            let mut cmd = Command::new(prog);
            cmd.args(lead)
                .envs(env.iter().cloned())
                .args(["run", "--rm", "--network", "none"]);
            match t.engine {
                e if e.is_docker() => cmd.args(plan.docker_args()),
                _ => cmd.args(plan.podman_args()),
            };
            let out = cmd.args([&t.image, "true"]).output()?;
            if !out.status.success() {
                bail!(
                    "cli lifecycle failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    Ok(())
}

fn spec(t: &Target) -> Result<LaunchSpec> {
    let mut request = mount_plan_run::LaunchRequest::new(&t.image, ["true"]);
    if t.engine.is_docker() {
        request.accept.accept_missing.push("noexec".into());
    }
    let endpoint = t.engine.endpoint().map_err(anyhow::Error::msg)?;
    Ok(request.spec(endpoint.kind)?)
}

fn docker_body(t: &Target, plan: &MountPlan) -> serde_json::Value {
    let tmpfs = plan.root_tmpfs();
    let mut mounts = vec![serde_json::json!({
        "Type": "tmpfs", "Target": tmpfs.target().as_str(), "ReadOnly": tmpfs.read_only(),
        "TmpfsOptions": {"SizeBytes": tmpfs.size_bytes(), "Mode": tmpfs.mode()},
    })];
    // API 1.44 and later: the backend also forces read-only binds (ReadOnlyForceRecursive).
    let force = t.engine == TestEngine::Docker26;
    for b in plan.binds() {
        let mut options = serde_json::json!({"Propagation": "private", "NonRecursive": true});
        if force && b.read_only() {
            options["ReadOnlyForceRecursive"] = true.into();
        }
        mounts.push(serde_json::json!({
            "Type": "bind", "Source": b.source().as_str(), "Target": b.target().as_str(),
            "ReadOnly": b.read_only(), "BindOptions": options,
        }));
    }
    serde_json::json!({
        "Image": t.image, "Cmd": ["true"], "WorkingDir": plan.workdir().as_str(),
        // As the backend does for Network::None: no network sandbox is set up at all.
        "NetworkDisabled": true,
        "Labels": {"io.mount-plan.bench": "raw"},
        "HostConfig": {"Mounts": mounts, "SecurityOpt": ["no-new-privileges"], "NetworkMode": "none"},
    })
}

fn podman_body(t: &Target, plan: &MountPlan) -> serde_json::Value {
    let mounts: Vec<serde_json::Value> = plan
        .oci_mounts()
        .into_iter()
        .map(|m| {
            let mut options = m.options;
            if m.kind == "tmpfs" {
                options.push("notmpcopyup".into());
            }
            serde_json::json!({"destination": m.destination, "type": m.kind, "source": m.source, "options": options})
        })
        .collect();
    serde_json::json!({
        "image": t.image, "command": ["true"], "work_dir": plan.workdir().as_str(),
        "mounts": mounts, "netns": {"nsmode": "none"},
        "labels": {"io.mount-plan.bench": "raw"},
    })
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<16} {:<8} {:>4} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9}",
        "engine",
        "method",
        "conc",
        "runs",
        "min_s",
        "p10_s",
        "median_s",
        "p90_s",
        "max_s",
        "jobs/s",
        "vs_floor",
        "vs_cli"
    );
    for r in rows {
        let find = |m: &str| {
            rows.iter()
                .find(|o| o.engine == r.engine && o.concurrency == r.concurrency && o.method == m)
        };
        let ratio = |o: Option<&Row>| {
            o.map_or("-".to_owned(), |o| {
                format!("{:.3}", r.median_s / o.median_s)
            })
        };
        println!(
            "{:<16} {:<8} {:>4} {:>5} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>8.2} {:>9} {:>9}",
            r.engine,
            r.method,
            r.concurrency,
            r.runs,
            r.min_s,
            r.p10_s,
            r.median_s,
            r.p90_s,
            r.max_s,
            r.jobs_per_s,
            ratio(find("raw")),
            ratio(find("cli")),
        );
    }
}

/// Time each step of `runs` sequential lifecycles, through the library and through raw calls.
fn breakdown(rt: &tokio::runtime::Runtime, t: &Target, runs: usize) -> Result<()> {
    let mut steps: Vec<(&str, &str, Vec<Duration>)> = Vec::new();
    let mut record = |method: &'static str, step: &'static str, d: Duration| match steps
        .iter_mut()
        .find(|(m, s, _)| *m == method && *s == step)
    {
        Some((_, _, v)) => v.push(d),
        None => steps.push((method, step, vec![d])),
    };
    for i in 0..runs + 1 {
        let warm = i == 0;
        let mut rec = |m, s, d| {
            if !warm {
                record(m, s, d)
            }
        };
        let plan = plan_for(t, i % runs.max(1))?;
        let t0 = Instant::now();
        let verified = verify(plan.clone(), &VerifyOptions::default())?;
        rec("library", "verify", t0.elapsed());
        let spec = spec(t)?;
        let mut timeline = Timeline(vec![("launching", Instant::now())]);
        let done = rt
            .block_on(launch(
                t.runtime.as_ref(),
                &verified,
                &spec,
                &LaunchOptions::default(),
                &mut timeline,
            ))
            .map_err(|f| f.error)?;
        anyhow::ensure!(done.status.success(), "exit {}", done.status.code);
        for pair in timeline.0.windows(2) {
            let step = match (pair[0].0, pair[1].0) {
                ("launching", "created") => "protection check, create",
                ("created", "started") => "audit, start",
                ("started", "exited") => "audit, run, wait, logs to the end",
                ("exited", "removed") => "remove",
                _ => continue,
            };
            rec("library", step, pair[1].1 - pair[0].1);
        }
        let (api, wait) = raw_api(t);
        let body = raw_body(t, &plan);
        let s = &t.socket;
        let t0 = Instant::now();
        let create = format!("{api}/containers/create");
        let created = raw::call(s, "POST", &create, Some(&serde_json::to_vec(&body)?))?;
        rec("raw", "create", t0.elapsed());
        let id = created["Id"].as_str().context("no Id")?.to_owned();
        let t0 = Instant::now();
        raw::call(s, "POST", &format!("{api}/containers/{id}/start"), None)?;
        rec("raw", "start", t0.elapsed());
        let t0 = Instant::now();
        raw::call(s, "POST", &format!("{api}/containers/{id}/{wait}"), None)?;
        rec("raw", "wait", t0.elapsed());
        let t0 = Instant::now();
        raw::call(
            s,
            "DELETE",
            &format!("{api}/containers/{id}?force=true"),
            None,
        )?;
        rec("raw", "remove", t0.elapsed());
    }
    let requests = library_requests(rt, t)?;
    println!(
        "{:?}: median per step over {runs} sequential lifecycles",
        t.engine
    );
    println!("  {:<8} {:<40} {:>10}", "method", "step", "median_ms");
    for (m, s, mut v) in steps {
        v.sort();
        println!(
            "  {:<8} {:<40} {:>10.3}",
            m,
            s,
            v[v.len() / 2].as_secs_f64() * 1e3
        );
    }
    let archive = requests.iter().filter(|r| r.contains("/archive")).count();
    println!(
        "  the library's requests in one lifecycle ({} in all, {archive} archive call(s)):",
        requests.len()
    );
    for r in &requests {
        println!("    {r}");
    }
    Ok(())
}

/// The engine requests of one library lifecycle, in order, through a counting proxy: the
/// second of two on one connection, with ids shortened.
fn library_requests(rt: &tokio::runtime::Runtime, t: &Target) -> Result<Vec<String>> {
    let sock = std::env::temp_dir().join(format!("mp-bench-proxy-{}.sock", std::process::id()));
    let _enter = rt.enter();
    let proxy = soak::proxy::Proxy::start(&sock, &t.socket, None, None)?;
    let endpoint = t
        .engine
        .endpoint()
        .map_err(anyhow::Error::msg)?
        .with_socket(proxy.url());
    let engine = rt.block_on(mount_plan_run::connect(&endpoint))?;
    // The second of two launches in this process: what a long-lived launcher pays each time.
    let mut before = 0;
    for i in 0..2 {
        before = proxy.request_lines().len();
        let verified = verify(plan_for(t, i)?, &VerifyOptions::default())?;
        let done = rt
            .block_on(launch(
                engine.as_ref(),
                &verified,
                &spec(t)?,
                &LaunchOptions::default(),
                &mut Timeline(Vec::new()),
            ))
            .map_err(|f| f.error)?;
        anyhow::ensure!(done.status.success(), "exit {}", done.status.code);
    }
    Ok(proxy.request_lines()[before..]
        .iter()
        .map(|line| {
            // `POST /v1.41/containers/4f3c...e1/start HTTP/1.1` -> `POST .../containers/{id}/start`
            let words: Vec<&str> = line.split(' ').take(2).collect();
            let path = words.get(1).copied().unwrap_or("");
            let path = path.split('?').next().unwrap_or(path);
            let short: Vec<String> = path
                .split('/')
                .map(|seg| {
                    if seg.len() >= 32 && seg.bytes().all(|b| b.is_ascii_hexdigit()) {
                        "{id}".to_owned()
                    } else {
                        seg.to_owned()
                    }
                })
                .collect();
            format!(
                "{} {}",
                words.first().copied().unwrap_or(""),
                short.join("/")
            )
        })
        .collect())
}

/// The floor's endpoints: (API prefix, wait query) for Docker's API or libpod's.
fn raw_api(t: &Target) -> (&'static str, &'static str) {
    match t.engine {
        TestEngine::Docker26 => ("/v1.45", "wait"),
        e if e.is_docker() => ("/v1.41", "wait"),
        _ => ("/v4.3.1/libpod", "wait?condition=stopped&interval=5ms"),
    }
}

/// The create body the backend would send, in the engine's own API form.
fn raw_body(t: &Target, plan: &MountPlan) -> serde_json::Value {
    match t.engine {
        e if e.is_docker() => docker_body(t, plan),
        _ => podman_body(t, plan),
    }
}

/// One floor lifecycle: create, start, wait, remove, one bare request each.
fn raw_lifecycle(t: &Target, plan: &MountPlan) -> Result<()> {
    let (api, wait) = raw_api(t);
    let s = &t.socket;
    let body = serde_json::to_vec(&raw_body(t, plan))?;
    let created = raw::call(s, "POST", &format!("{api}/containers/create"), Some(&body))?;
    let id = created["Id"]
        .as_str()
        .context("create returned no Id")?
        .to_owned();
    let result = (|| {
        raw::call(s, "POST", &format!("{api}/containers/{id}/start"), None)?;
        let waited = raw::call(s, "POST", &format!("{api}/containers/{id}/{wait}"), None)?;
        // Docker answers {"StatusCode": n}, libpod a bare number.
        let code = waited.get("StatusCode").unwrap_or(&waited);
        if code != 0 {
            bail!("raw {:?} lifecycle exited {code}", t.engine);
        }
        Ok(())
    })();
    raw::call(
        s,
        "DELETE",
        &format!("{api}/containers/{id}?force=true"),
        None,
    )?;
    result
}
