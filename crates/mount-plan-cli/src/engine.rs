//! `launch`, `audit` and `doctor`: the subcommands that talk to a container engine.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, ValueEnum};
use futures_util::StreamExt;
use mount_plan_docker::{ConnectOptions, DockerRuntime};
use mount_plan_launch::{
    audit, Availability, ExitStatus, JobRuntime, LaunchError, LaunchSpec, OutputStream, Protection,
    Resources,
};
use mount_plan_podman::{PodmanOptions, PodmanRuntime, UserNamespace};

use crate::plan_args::{PlanArgs, VerifyArgs};

/// Exit status of `launch` when anything fails before (or around) the command.
pub const EXIT_LAUNCH_FAILED: u8 = 125;
/// How long a stopped container gets between SIGTERM and SIGKILL on Ctrl-C.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A container engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// Docker Engine API (bollard)
    Docker,
    /// Podman (libpod API)
    Podman,
}

/// A Podman user namespace mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UsernsArg {
    /// The service's default
    Default,
    /// keep-id (rootless services only)
    KeepId,
}

/// Which engine, and where.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// The container engine
    #[arg(long, value_enum)]
    pub runtime: RuntimeArg,
    /// The engine's API socket [default: docker: DOCKER_HOST, then /var/run/docker.sock;
    /// podman: CONTAINER_HOST, then /run/podman/podman.sock as root, else
    /// $XDG_RUNTIME_DIR/podman/podman.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<String>,
    /// Podman only: the user namespace (keep-id: a rootless service's user keeps its ids in
    /// the container and owns what the job writes)
    #[arg(long, value_enum, value_name = "MODE", default_value = "default")]
    pub userns: UsernsArg,
    /// Seconds to wait for the engine to answer the version handshake
    #[arg(long, value_name = "SECS", default_value = "10")]
    pub connect_timeout: u64,
    /// Docker only: an image with `stat`, to observe (once per engine version, cached) what
    /// the engine's versions cannot tell, such as R's mode on a runtime other than runc
    #[arg(long, value_name = "IMAGE")]
    pub probe_image: Option<String>,
}

/// Protections accepted as missing on the chosen engine.
#[derive(Debug, Clone, Args)]
pub struct AcceptArgs {
    /// Run although the engine cannot honour this protection of the plan (repeat; ids:
    /// read-only-root, root-mode-size, read-only-binds, non-recursive, private-propagation,
    /// nosuid, nodev, noexec). Docker cannot set noexec on binds: `--accept-missing noexec`.
    #[arg(long = "accept-missing", value_name = "PROTECTION")]
    pub accept_missing: Vec<String>,
}

impl AcceptArgs {
    fn set(&self) -> Result<BTreeSet<Protection>> {
        self.accept_missing
            .iter()
            .map(|p| p.parse::<Protection>().map_err(Into::into))
            .collect()
    }
}

/// Connect to the engine `args` names.
pub async fn connect(args: &EngineArgs) -> Result<Box<dyn JobRuntime>, LaunchError> {
    match args.runtime {
        RuntimeArg::Docker if args.userns != UsernsArg::Default => Err(LaunchError::Unsupported(
            "--userns is a podman option".into(),
        )),
        RuntimeArg::Docker => {
            let options = ConnectOptions {
                host: args.socket.clone(),
                connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
                probe_image: args.probe_image.clone(),
                ..ConnectOptions::default()
            };
            Ok(Box::new(DockerRuntime::connect(&options).await?))
        }
        RuntimeArg::Podman => {
            let options = PodmanOptions {
                userns: match args.userns {
                    UsernsArg::Default => UserNamespace::EngineDefault,
                    UsernsArg::KeepId => UserNamespace::KeepId,
                },
                connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
                ..PodmanOptions::default()
            };
            Ok(Box::new(match &args.socket {
                Some(socket) => PodmanRuntime::connect(socket, options).await?,
                None => PodmanRuntime::discover(options).await?,
            }))
        }
    }
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `mount-plan launch`.
#[derive(Debug, Args)]
pub struct LaunchCmd {
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    plan: PlanArgs,
    #[command(flatten)]
    verify: VerifyArgs,
    #[command(flatten)]
    accept: AcceptArgs,
    /// The image (never pulled: it must be present on the engine)
    #[arg(long, value_name = "IMAGE")]
    image: String,
    /// Run the command as UID[:GID] (numeric) [default: the image's user]
    #[arg(long, value_name = "U[:G]")]
    user: Option<String>,
    /// Set an environment variable (repeat)
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Network: none (default), default, or a network name; host and container:... are refused
    #[arg(long, value_name = "NAME", default_value = "none")]
    network: String,
    /// Container name [default: chosen by the engine]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Add a label (repeat); io.mount-plan.* are reserved
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// GPUs: all, a count, or device=ID[,ID...]
    #[arg(long, value_name = "GPUS")]
    gpus: Option<String>,
    /// Memory limit in bytes
    #[arg(long, value_name = "BYTES")]
    memory: Option<u64>,
    /// CPU limit in CPUs (for example 1.5)
    #[arg(long, value_name = "CPUS")]
    cpus: Option<f64>,
    /// Process limit
    #[arg(long, value_name = "N")]
    pids_limit: Option<u64>,
    /// Keep the container after it stops (default: remove it)
    #[arg(long)]
    keep: bool,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

impl LaunchCmd {
    fn spec(&self) -> Result<LaunchSpec> {
        let mut spec = LaunchSpec::new(self.image.parse()?).with_command(self.command.clone());
        spec.user = self.user.as_deref().map(str::parse).transpose()?;
        spec.env = self
            .env
            .iter()
            .map(|e| e.parse())
            .collect::<Result<_, _>>()?;
        spec.network = self.network.parse()?;
        spec.name = self.name.as_deref().map(str::parse).transpose()?;
        for l in &self.labels {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| anyhow!("label {l:?} is not K=V"))?;
            spec.labels.insert(k, v)?;
        }
        spec.gpus = self.gpus.as_deref().map(str::parse).transpose()?;
        let mut res = Resources::new();
        if let Some(m) = self.memory {
            res = res.with_memory_bytes(m)?;
        }
        if let Some(c) = self.cpus {
            if !(c.is_finite() && c > 0.0) {
                return Err(anyhow!("--cpus {c} is not a positive number"));
            }
            res = res.with_nano_cpus((c * 1e9) as u64)?;
        }
        if let Some(p) = self.pids_limit {
            res = res.with_pids_limit(p)?;
        }
        spec.resources = res;
        spec.accept_missing = self.accept.set()?;
        spec.check()?;
        Ok(spec)
    }
}

fn exit_code(status: ExitStatus) -> ExitCode {
    match u8::try_from(status.code) {
        Ok(c) => ExitCode::from(c),
        Err(_) => ExitCode::from(EXIT_LAUNCH_FAILED),
    }
}

/// Run `mount-plan launch`: verify, launch, stream output, wait, remove, exit with the
/// container's status (125 for failures of our own).
pub fn launch(cmd: &LaunchCmd) -> ExitCode {
    let fail = |e: anyhow::Error| {
        // A LaunchError's message already ends with the engine's answer: print it once.
        match e.downcast_ref::<LaunchError>() {
            Some(l) => eprintln!("error: {l}"),
            None => eprintln!("error: {e:#}"),
        }
        ExitCode::from(EXIT_LAUNCH_FAILED)
    };
    let prepared = (|| {
        let plan = cmd.plan.plan()?;
        let spec = cmd.spec()?;
        let verified = cmd.verify.verify(plan)?;
        Ok::<_, anyhow::Error>((verified, spec))
    })();
    let (verified, spec) = match prepared {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    // A failure before the command runs loses nothing: a job directory this call created is
    // removed again (it is still empty: nothing ran in it; remove_dir refuses otherwise).
    let fail_before_run = |e: anyhow::Error| {
        if verified.job_dir_created() {
            let dir = verified
                .launcher_workspace()
                .join(verified.plan().job().as_str());
            if let Err(rm) = std::fs::remove_dir(&dir) {
                eprintln!(
                    "error: cannot remove the job directory {dir:?} created for this launch: {rm}"
                );
            }
        }
        fail(e)
    };
    let rt = match tokio_runtime() {
        Ok(r) => r,
        Err(e) => return fail_before_run(e),
    };
    rt.block_on(async {
        let runtime = match connect(&cmd.engine).await {
            Ok(r) => r,
            Err(e) => return fail_before_run(e.into()),
        };
        // Say what this engine does differently from the plan (a report of this engine).
        if let Ok(report) = runtime.doctor().await {
            for d in report.differences_for(verified.plan()) {
                eprintln!("warning: {d}");
            }
        }
        let job = match runtime.launch(&verified, &spec).await {
            Ok(j) => j,
            Err(e) => return fail_before_run(e.into()),
        };
        let forward = async {
            let mut logs = runtime.logs(&job);
            while let Some(chunk) = logs.next().await {
                let chunk = chunk?;
                let written = match chunk.stream {
                    OutputStream::Stdout => {
                        let mut o = std::io::stdout().lock();
                        o.write_all(&chunk.bytes).and_then(|()| o.flush())
                    }
                    OutputStream::Stderr => {
                        let mut o = std::io::stderr().lock();
                        o.write_all(&chunk.bytes).and_then(|()| o.flush())
                    }
                };
                // A closed stdout (`| head`) must not stop the wait.
                let _ = written;
            }
            Ok::<(), LaunchError>(())
        };
        let done = async { futures_util::future::join(forward, runtime.wait(&job)).await };
        let outcome = tokio::select! {
            (logged, status) = done => Some((logged, status)),
            _ = tokio::signal::ctrl_c() => None,
        };
        let result = match outcome {
            None => {
                eprintln!("mount-plan: interrupted: stopping container {}", job.id);
                let _ = runtime.stop(&job, STOP_GRACE).await;
                Err(anyhow!("interrupted"))
            }
            Some((_, Err(e))) | Some((Err(e), _)) => Err(e.into()),
            Some((Ok(()), Ok(status))) => Ok(status),
        };
        if !cmd.keep || result.is_err() {
            if let Err(e) = runtime.remove(&job).await {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_LAUNCH_FAILED);
            }
        } else {
            eprintln!("mount-plan: kept container {}", job.id);
        }
        match result {
            Ok(status) => exit_code(status),
            Err(e) => fail(e),
        }
    })
}

/// `mount-plan audit`.
#[derive(Debug, Args)]
pub struct AuditCmd {
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    plan: PlanArgs,
    #[command(flatten)]
    accept: AcceptArgs,
    /// The container (id or name)
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// Run `mount-plan audit`: print each difference; 0 when the container conforms, 1 when it
/// differs, 2 when it could not be audited.
pub fn audit_cmd(cmd: &AuditCmd) -> Result<ExitCode> {
    let plan = cmd.plan.plan()?;
    let accepted = cmd.accept.set()?;
    tokio_runtime()?.block_on(async {
        // A LaunchError's message already ends with the engine's answer: keep it once.
        let once = |e: LaunchError| anyhow!("{e}");
        let runtime = connect(&cmd.engine).await.map_err(once)?;
        let observed = runtime.inspect(&cmd.container).await.map_err(once)?;
        let differences = audit(&plan, &observed, &accepted);
        let report = runtime.doctor().await.map_err(once)?;
        let mut out = std::io::stdout().lock();
        for d in &differences {
            writeln!(out, "{d}")?;
        }
        // What the engine made of what it was asked, which its inspect answer cannot show.
        for d in report.differences_for(&plan) {
            writeln!(out, "note: {d}")?;
        }
        if differences.is_empty() {
            writeln!(
                out,
                "container {:?} conforms to the plan of job {:?}",
                cmd.container,
                plan.job().as_str()
            )?;
            Ok(ExitCode::SUCCESS)
        } else {
            Ok(ExitCode::from(1))
        }
    })
}

/// `mount-plan doctor`.
#[derive(Debug, Args)]
pub struct DoctorCmd {
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    accept: AcceptArgs,
}

/// Run `mount-plan doctor`: versions and protections; 0 when the default plan can be
/// honoured (given `--accept-missing`), 1 otherwise.
pub fn doctor(cmd: &DoctorCmd) -> Result<ExitCode> {
    let accepted = cmd.accept.set()?;
    let layout = mount_plan::Layout::default();
    let plan = layout.plan(
        &mount_plan::HostPath::parse("/srv/workspace")?,
        &layout.job("job")?,
    )?;
    tokio_runtime()?.block_on(async {
        let runtime = match connect(&cmd.engine).await {
            Ok(r) => r,
            Err(e) => {
                println!("engine: unreachable: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        let report = runtime.doctor().await.map_err(|e| anyhow!("{e}"))?;
        let e = &report.engine;
        let mut out = std::io::stdout().lock();
        writeln!(out, "engine:   {} {}", e.engine, e.version)?;
        writeln!(out, "endpoint: {}", e.endpoint)?;
        writeln!(out, "api:      {}", e.api_version)?;
        writeln!(out, "runtime:  {}", e.runtime.as_deref().unwrap_or("not reported"))?;
        writeln!(out, "rootless: {}", e.rootless)?;
        writeln!(out, "protections:")?;
        for (p, a) in &report.protections {
            let note = match (a, accepted.contains(p)) {
                (Availability::Missing(_), true) => " (accepted as missing)",
                _ => "",
            };
            writeln!(out, "  {:<20} {a}{note}", p.id())?;
        }
        for w in &report.warnings {
            writeln!(out, "warning: {w}")?;
        }
        let unmet = report.unmet(&plan, &accepted);
        if unmet.is_empty() {
            writeln!(out, "the default plan can be honoured")?;
            Ok(ExitCode::SUCCESS)
        } else {
            let ids: Vec<&str> = unmet.iter().map(|p| p.id()).collect();
            writeln!(
                out,
                "the default plan cannot be honoured: missing {}; pass --accept-missing {} to run without",
                ids.join(", "),
                ids.join(" --accept-missing ")
            )?;
            Ok(ExitCode::from(1))
        }
    })
}
