//! `launch`, `audit` and `doctor`: the subcommands that talk to a container engine.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use mount_plan_launch::{
    audit, duration_whole_secs, Availability, CancelToken, CheckOutcome, Class, Engine, Event,
    GcOptions, Keep, LaunchError, LaunchOptions, LogChunk, Observer, OutputStream, Verdict,
};
use mount_plan_run::{Endpoint, LaunchRequest};

use crate::outcome::{Ending, Outcome, StatusFile};
use crate::plan_args::{PlanArgs, VerifyArgs};

pub use mount_plan_run::EXIT_LAUNCH_FAILED;

/// Which engine, and where: the front door's [`Endpoint`] as flags (`--runtime`, `--socket`,
/// `--userns`, `--connect-timeout`, `--gate-path`, `--probe-image`), plus the cluster's.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    #[command(flatten)]
    pub endpoint: Endpoint,
    #[cfg(feature = "kubernetes")]
    #[command(flatten)]
    pub kube: crate::k8s_args::KubeEngineArgs,
}

impl EngineArgs {
    /// The endpoint these flags name (on Kubernetes, with its cluster's settings).
    pub fn endpoint(&self) -> Result<Endpoint, LaunchError> {
        #[allow(unused_mut)]
        let mut endpoint = self.endpoint.clone();
        #[cfg(feature = "kubernetes")]
        if endpoint.kind == mount_plan_launch::EngineKind::Kubernetes {
            endpoint.cluster = Some(Box::new(self.kube.cluster()?));
        }
        Ok(endpoint)
    }
}

/// Which protections decide whether a launch runs (`--accept-missing`, `--require`).
pub type AcceptArgs = mount_plan_run::Accept;
/// The capabilities added back (`--cap-add`).
pub type CapArgs = mount_plan_run::Caps;

/// Connect to the engine `args` names, through the front door.
pub async fn connect(args: &EngineArgs) -> Result<Box<dyn Engine>, LaunchError> {
    mount_plan_run::connect(&args.endpoint()?).await
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
    request: LaunchRequest,
    /// Keep the container after it stops (default: remove it)
    #[arg(long)]
    keep: bool,
    /// Seconds a container gets between SIGTERM and SIGKILL when the launch is cancelled
    #[arg(long, value_name = "SECS", default_value = "10")]
    stop_grace: u64,
    /// Append machine-readable lifecycle events to FILE, one JSON object per line
    /// (launching, created, started, exited, removed, kept, warning, failed, cancelled; each
    /// with "time" and "launch")
    #[arg(long, value_name = "FILE")]
    events: Option<std::path::PathBuf>,
    /// Write the launch's outcome to FILE (one JSON object, written atomically at the end;
    /// FILE must not exist): whether the command ran, its own status, or why the launch
    /// failed. The exit status alone cannot tell a command's own 125 from a launch that never
    /// ran it; this file can
    #[arg(long, value_name = "FILE")]
    status_file: Option<std::path::PathBuf>,
}

/// Where `launch` sends output and events: the command's output to our stdout and stderr,
/// events to the `--events` file.
struct CliObserver {
    events: Option<std::io::BufWriter<std::fs::File>>,
    launch: String,
}

impl Observer for CliObserver {
    fn output(&mut self, chunk: &LogChunk) {
        // A closed stdout (`| head`) must not stop the wait.
        let _ = match chunk.stream {
            OutputStream::Stdout => {
                let mut o = std::io::stdout().lock();
                o.write_all(&chunk.bytes).and_then(|()| o.flush())
            }
            OutputStream::Stderr => {
                let mut o = std::io::stderr().lock();
                o.write_all(&chunk.bytes).and_then(|()| o.flush())
            }
        };
    }

    fn event(&mut self, event: &Event) {
        match event {
            Event::Launching { launch, .. } => self.launch = launch.clone(),
            Event::Warning { message } => eprintln!("mount-plan: warning: {message}"),
            _ => {}
        }
        let Some(out) = &mut self.events else { return };
        let mut value = serde_json::to_value(event).expect("events serialise");
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if let Some(obj) = value.as_object_mut() {
            obj.insert("time".into(), time.into());
            obj.insert("launch".into(), self.launch.clone().into());
        }
        // Each line is flushed: a launcher may follow the file while the job runs.
        let _ = writeln!(out, "{value}").and_then(|()| out.flush());
    }
}

/// Why the `--events` file was refused. Each variant names a rule id, unique across the
/// project.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsFileError {
    /// The path's last component is a symbolic link: a launcher (often root) would append to
    /// whatever file the link's owner chose.
    #[error("{rule}the events file {path:?} is a symbolic link; it is opened without following one, so name the file itself", rule = self.prefix())]
    Link {
        /// The refused path.
        path: std::path::PathBuf,
    },
    /// Not a regular file (a fifo, a device, a socket, a directory).
    #[error("{rule}the events file {path:?} is not a regular file", rule = self.prefix())]
    NotRegular {
        /// The refused path.
        path: std::path::PathBuf,
    },
    /// It cannot be opened or created.
    #[error("{rule}cannot open the events file {path:?}: {source}", rule = self.prefix())]
    Open {
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

mount_plan::rules!(EventsFileError, "events", {
    Link => "events-file-link",
    NotRegular => "events-file-not-regular",
    Open => "events-file-open",
});

/// Open (or create, mode 0644 less the umask) the `--events` file for appending, without
/// following a symbolic link in its last component and without blocking on a fifo; only a
/// regular file is accepted.
fn open_events(path: &std::path::Path) -> Result<std::fs::File, EventsFileError> {
    use rustix::fs::{fstat, open, FileType, Mode, OFlags};
    let opened = open(
        path,
        OFlags::WRONLY
            | OFlags::APPEND
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::NOCTTY
            | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    );
    let fd = match opened {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP) => {
            return Err(EventsFileError::Link {
                path: path.to_owned(),
            })
        }
        // A fifo with no reader (O_NONBLOCK): not a regular file.
        Err(rustix::io::Errno::NXIO) => {
            return Err(EventsFileError::NotRegular {
                path: path.to_owned(),
            })
        }
        Err(e) => {
            return Err(EventsFileError::Open {
                path: path.to_owned(),
                source: e.into(),
            })
        }
    };
    let st = fstat(&fd).map_err(|e| EventsFileError::Open {
        path: path.to_owned(),
        source: e.into(),
    })?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(EventsFileError::NotRegular {
            path: path.to_owned(),
        });
    }
    Ok(std::fs::File::from(fd))
}

/// The signals that cancel a launch, and the status a shell gives for each.
const CANCEL_SIGNALS: [(i32, &str, u8); 3] =
    [(2, "SIGINT", 130), (15, "SIGTERM", 143), (1, "SIGHUP", 129)];

/// Cancel `token` on SIGINT, SIGTERM or SIGHUP; the exit status to use is stored in `code`.
fn cancel_on_signals(
    token: &CancelToken,
    code: &std::sync::Arc<std::sync::atomic::AtomicU8>,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for (num, name, status) in CANCEL_SIGNALS {
        let mut stream =
            signal(SignalKind::from_raw(num)).with_context(|| format!("cannot handle {name}"))?;
        let token = token.clone();
        let code = code.clone();
        tokio::spawn(async move {
            if stream.recv().await.is_some() {
                eprintln!("mount-plan: {name}: stopping the launch");
                let _ = code.compare_exchange(
                    0,
                    status,
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                );
                token.cancel();
            }
        });
    }
    Ok(())
}

/// Run `mount-plan launch`: verify, then the one lifecycle of [`mount_plan_launch::launch`].
/// Exit status: the command's own; [`EXIT_LAUNCH_FAILED`] when it certainly did not run;
/// [`mount_plan_run::EXIT_STATUS_UNKNOWN`] when it ran but its status could not be read; 128 + the
/// signal number (130, 143, 129) when SIGINT, SIGTERM or SIGHUP cancelled the launch. The
/// number alone cannot tell a command's own 125 from a launch that never ran it:
/// `--status-file` can ([`crate::outcome`]).
pub fn launch(cmd: &LaunchCmd) -> ExitCode {
    let status_file = match cmd
        .status_file
        .as_deref()
        .map(StatusFile::reserve)
        .transpose()
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_LAUNCH_FAILED);
        }
    };
    let outcome = launch_outcome(cmd);
    if let Some(file) = status_file {
        if let Err(e) = file.write(&outcome) {
            let path = cmd
                .status_file
                .as_deref()
                .unwrap_or(std::path::Path::new(""));
            eprintln!("error: status-file: cannot write {path:?}: {e}");
        }
    }
    ExitCode::from(outcome.exit)
}

/// The rule id of an error before the lifecycle, when it has one.
fn rule_of(e: &anyhow::Error) -> Option<&'static str> {
    if let Some(e) = e.downcast_ref::<LaunchError>() {
        return Some(e.rule());
    }
    if let Some(e) = e.downcast_ref::<mount_plan_launch::SpecError>() {
        return Some(e.rule());
    }
    if let Some(e) = e.downcast_ref::<mount_plan_host::HostError>() {
        return Some(e.rule());
    }
    if let Some(e) = e.downcast_ref::<mount_plan::PlanError>() {
        return Some(e.rule());
    }
    if let Some(e) = e.downcast_ref::<mount_plan::NameError>() {
        return Some(e.rule());
    }
    if let Some(e) = e.downcast_ref::<EventsFileError>() {
        return Some(e.rule());
    }
    e.downcast_ref::<mount_plan::PathError>().map(|e| e.rule())
}

/// [`launch`] up to its outcome (printed on stderr as it happens).
fn launch_outcome(cmd: &LaunchCmd) -> Outcome {
    let fail = |e: anyhow::Error, launch: Option<String>| {
        // A LaunchError's message already ends with the engine's answer: print it once.
        match (
            e.downcast_ref::<LaunchError>(),
            e.downcast_ref::<mount_plan_run::RunError>(),
        ) {
            (Some(l), _) => eprintln!("error: {l}"),
            (_, Some(r)) => eprintln!("error: {r}"),
            _ => crate::print_error(&e),
        }
        Outcome::failed(
            Ending::Failed,
            false,
            rule_of(&e),
            crate::stream::chain_text(e.chain()),
            launch,
            EXIT_LAUNCH_FAILED,
        )
    };
    let rt = match tokio_runtime() {
        Ok(r) => r,
        Err(e) => return fail(e, None),
    };
    rt.block_on(async {
        // Signals are handled from here on: before the host check creates anything.
        let cancel = CancelToken::new();
        let signalled = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
        if let Err(e) = cancel_on_signals(&cancel, &signalled) {
            return fail(e, None);
        }
        // Everything that can be refused without the host is refused before the host check
        // creates the job directory; from the check on, the front door releases it.
        let prepared = (|| {
            let plan = cmd.plan.plan()?;
            let endpoint = cmd.engine.endpoint()?;
            cmd.request.spec(endpoint.kind)?;
            let stop_grace = duration_whole_secs("--stop-grace", cmd.stop_grace)?;
            let events = match &cmd.events {
                None => None,
                Some(path) => Some(std::io::BufWriter::new(open_events(path)?)),
            };
            let verified = cmd.verify.verify(plan)?;
            Ok::<_, anyhow::Error>((verified, endpoint, events, stop_grace))
        })();
        let (verified, endpoint, events, stop_grace) = match prepared {
            Ok(v) => v,
            Err(e) => return fail(e, None),
        };
        let mut observer = CliObserver {
            events,
            launch: String::new(),
        };
        // Let the signal tasks run once: a signal that came during the host check cancels.
        tokio::task::yield_now().await;
        let options = LaunchOptions {
            keep: if cmd.keep { Keep::Keep } else { Keep::Remove },
            stop_grace,
            cancel: cancel.clone(),
            ..LaunchOptions::default()
        };
        let outcome =
            mount_plan_run::run(&verified, &cmd.request, &endpoint, &options, &mut observer).await;
        let signalled = signalled.load(std::sync::atomic::Ordering::SeqCst);
        let exit = outcome.exit_status(signalled);
        let launch_id = Some(observer.launch.clone());
        match outcome {
            mount_plan_run::Outcome::Exited(done) => {
                if !done.removed && cmd.keep {
                    eprintln!("mount-plan: kept container {}", done.container);
                }
                if u8::try_from(done.status.code).is_err() {
                    eprintln!(
                        "mount-plan: the command's exit status {} does not fit an exit code",
                        done.status.code
                    );
                }
                Outcome::exited(done.status.code, exit, done.launch)
            }
            mount_plan_run::Outcome::Failed(failed) if failed.error.is_cancelled() => {
                eprintln!(
                    "mount-plan: cancelled; {}",
                    if failed.command_ran {
                        "the container was stopped and removed"
                    } else {
                        "the command never ran"
                    }
                );
                Outcome::failed(
                    Ending::Cancelled,
                    failed.command_ran,
                    Some(failed.error.rule()),
                    failed.error.to_string(),
                    launch_id,
                    exit,
                )
            }
            mount_plan_run::Outcome::Failed(failed) => {
                eprintln!("error: {}", failed.error);
                let sweep_incomplete = matches!(
                    failed.error,
                    mount_plan_run::RunError::Launch(LaunchError::SweepIncomplete { .. })
                );
                // An incomplete sweep's message already says that the command ran, and its
                // status.
                if failed.command_ran && !sweep_incomplete {
                    eprintln!(
                        "mount-plan: the command ran, but its exit status could not be read (exit {})",
                        mount_plan_run::EXIT_STATUS_UNKNOWN
                    );
                }
                Outcome::failed(
                    Ending::Failed,
                    failed.command_ran,
                    Some(failed.error.rule()),
                    failed.error.to_string(),
                    launch_id,
                    exit,
                )
            }
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
    // With --verify (or any host-check flag): run the host checks on the plan, then look at
    // each bind source the engine reports on this host (lstat, no link followed) and compare
    // it with the pinned (device, inode). The subcommand's help says so.
    #[command(flatten)]
    verify: VerifyArgs,
    #[command(flatten)]
    accept: AcceptArgs,
    // The capabilities the container was launched with (its `--cap-add`): any other one
    // added or kept is a difference.
    #[command(flatten)]
    caps: CapArgs,
    /// The container (id or name)
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// Run `mount-plan audit`: print each difference; 0 when the container conforms, 1 when it
/// differs, 2 when it could not be audited.
pub fn audit_cmd(cmd: &AuditCmd) -> Result<ExitCode> {
    let plan = cmd.plan.plan()?;
    let mut accepted = cmd.accept.accepted()?;
    let required = mount_plan_launch::required_hardening(&plan, &cmd.accept.required()?);
    let granted = cmd.caps.granted()?;
    let verified = if cmd.verify.wanted() {
        Some(cmd.verify.verify(plan.clone())?)
    } else {
        None
    };
    tokio_runtime()?.block_on(async {
        // A LaunchError's message already ends with the engine's answer: keep it once.
        let once = |e: LaunchError| anyhow!("{e}");
        let engine = connect(&cmd.engine).await.map_err(once)?;
        let observed = engine.inspect(&cmd.container).await.map_err(once)?;
        // Hardening this engine cannot apply and the site does not require is not asked for,
        // as at launch.
        let report = engine.report();
        accepted.extend(
            report
                .hardening_missing(&plan, &required)
                .into_iter()
                .map(|(p, _)| p),
        );
        let mut differences: Vec<String> = audit(&plan, &observed, &accepted, &granted)
            .iter()
            .map(ToString::to_string)
            .collect();
        // The bind sources on this host, by identity: a source path swapped or made a link
        // since the check (the engine mounted what the path led to then).
        let mut not_compared = None;
        if let Some(verified) = &verified {
            let sources = observed
                .binds
                .iter()
                .map(|b| (b.target.as_str(), b.source.as_str()));
            // ...and what the running container holds, through its process's root: a path
            // swapped before the start and back after shows only there.
            let held = match container_root(&observed) {
                Ok(root) => verified.compare_held(&root),
                Err(why) => {
                    not_compared = Some(why);
                    Vec::new()
                }
            };
            for m in verified.compare_sources(sources).iter().chain(&held) {
                let chain =
                    std::iter::successors(Some(m as &(dyn std::error::Error + 'static)), |e| {
                        e.source()
                    });
                differences.push(crate::stream::chain_text(chain));
            }
        }
        let mut out = std::io::stdout().lock();
        for d in &differences {
            writeln!(out, "{d}")?;
        }
        // What the engine made of what it was asked, which its inspect answer cannot show.
        for d in engine.report().differences_for(&plan) {
            writeln!(out, "note: {d}")?;
        }
        if let Some(why) = &not_compared {
            writeln!(
                out,
                "note: the identities the container holds were not compared: {why}"
            )?;
        }
        if differences.is_empty() {
            writeln!(
                out,
                "container {:?} conforms to the plan of job {:?}{}",
                cmd.container,
                plan.job().as_str(),
                if not_compared.is_some() {
                    " (its bind sources were compared on this host by path only)"
                } else {
                    ""
                }
            )?;
            Ok(ExitCode::SUCCESS)
        } else {
            Ok(ExitCode::from(1))
        }
    })
}

/// The root of a running container as this host sees it (`/proc/PID/root` of its first
/// process), once that process is known to be the container's: its cgroup names the
/// container's id (Docker, rootful Podman), or its parent is the container's monitor started
/// with the id as an argument (Podman's `conmon -c ID`, Docker's `containerd-shim -id ID`;
/// rootless Podman on cgroup v1 has no cgroup of its own). Otherwise why not: it does not
/// run, or the engine numbers pids in another pid namespace (an engine in a container, on
/// another host).
fn container_root(observed: &mount_plan_launch::ObservedContainer) -> Result<PathBuf, String> {
    let Some(pid) = observed.first_pid else {
        return Err("the container has no running process (the engine reports no pid)".into());
    };
    let id = observed.id.as_str();
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let names_it = |text: &str| id.len() >= 12 && text.contains(id);
    let cgroup = std::fs::read_to_string(proc_dir.join("cgroup")).unwrap_or_default();
    // The parent's pid is field 4 of stat, after the parenthesised command name.
    let parent = std::fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|s| {
            let after = s.rfind(')').map(|i| s[i + 1..].to_owned())?;
            after.split_whitespace().nth(1)?.parse::<u32>().ok()
        });
    let monitor = parent
        .and_then(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
        .is_some_and(|argv| argv.split(|b| *b == 0).any(|a| a == id.as_bytes()));
    if !(names_it(&cgroup) || (id.len() >= 12 && monitor)) {
        return Err(format!(
            "pid {pid} on this host is not the container's process (the engine runs in another pid namespace or on another host), or this process may not look at it"
        ));
    }
    let root = proc_dir.join("root");
    std::fs::symlink_metadata(root.join("."))
        .map_err(|e| format!("cannot look into the container's root {root:?}: {e}"))?;
    Ok(root)
}

/// `mount-plan doctor`.
#[derive(Debug, Args)]
pub struct DoctorCmd {
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    accept: AcceptArgs,
    /// Also say which layers keep a job's outputs in this workspace (as this process sees
    /// it) from being a privilege on the host: its mount flags and who can pass through it
    #[arg(long, value_name = "PATH")]
    workspace: Option<std::path::PathBuf>,
}

/// Run `mount-plan doctor`: versions and protections; 0 when the default plan can be
/// honoured (given `--accept-missing`), 1 otherwise.
pub fn doctor(cmd: &DoctorCmd) -> Result<ExitCode> {
    let accepted = cmd.accept.accepted()?;
    let required = cmd.accept.required()?;
    let layout = mount_plan::Layout::default();
    let plan = layout.plan(
        &mount_plan::HostPath::parse("/srv/workspace")?,
        &layout.job("job")?,
    )?;
    tokio_runtime()?.block_on(async {
        let engine = match connect(&cmd.engine).await {
            Ok(r) => r,
            Err(e) => {
                println!("engine: unreachable: {e}");
                return Ok(ExitCode::from(1));
            }
        };
        let report = engine.report();
        let e = &report.engine;
        let mut out = std::io::stdout().lock();
        writeln!(out, "engine:   {} {}", e.engine, e.version)?;
        writeln!(out, "endpoint: {}", e.endpoint)?;
        writeln!(out, "api:      {}", e.api_version)?;
        writeln!(
            out,
            "runtime:  {}",
            e.runtime.as_deref().unwrap_or("not reported")
        )?;
        if let Some(v) = e.runtime.as_deref().and_then(|r| r.strip_prefix("runc ")) {
            for advisory in mount_plan_launch::RUNC_ADVISORIES {
                writeln!(out, "runc:     {} {}", advisory.ids, advisory.judge(v))?;
            }
        }
        writeln!(out, "rootless: {}", e.rootless)?;
        // Which layers keep outputs from being a privilege (for a job running as root, the
        // image's usual user).
        let reach = cmd
            .workspace
            .as_deref()
            .map(mount_plan_host::workspace_reach)
            .transpose()?;
        let layers = mount_plan_launch::outputs::OutputLayers::new(
            e.user_namespace,
            reach.is_some_and(|(f, _)| f.nosuid && f.nodev),
            reach.is_some_and(|(_, reachable)| !reachable),
            mount_plan_host::effective_uid(),
            None,
        );
        let mut line = layers.describe();
        if reach.is_none() {
            line = line.replace(
                "nosuid workspace: no; W/J unreachable: no",
                "nosuid workspace: ?; W/J unreachable: ? (--workspace PATH says)",
            );
        }
        writeln!(out, "outputs:  {line}")?;
        if let Some(why) = layers.refusal() {
            writeln!(out, "outputs:  a launch of a root job is refused: {why}")?;
        }
        writeln!(out, "protections:")?;
        for (p, a) in &report.protections {
            let note = match (a, p.class()) {
                (Availability::Missing(_), Class::Required) if accepted.contains(p) => {
                    " (accepted as missing)"
                }
                (Availability::Missing(_), Class::Hardening) if required.contains(p) => {
                    " (hardening required by --require: launches are refused)"
                }
                (Availability::Missing(_), Class::Hardening) => {
                    " (hardening: launches go ahead with a warning; --require refuses them)"
                }
                _ => "",
            };
            writeln!(out, "  {:<20} {a}{note}", p.id())?;
        }
        for w in &report.warnings {
            writeln!(out, "warning: {w}")?;
        }
        // Where jobs run on other machines (Slurm's nodes): what each of them runs and sees.
        let site = match engine.site_checks(cmd.workspace.as_deref()).await {
            Ok(checks) => checks,
            Err(e) => {
                writeln!(out, "site:     could not be checked: {e}")?;
                return Ok(ExitCode::from(1));
            }
        };
        if !site.is_empty() {
            writeln!(out, "site:")?;
        }
        for c in &site {
            writeln!(
                out,
                "  {:<16} {:<15} {:<11} {}",
                c.place, c.rule, c.outcome, c.detail
            )?;
        }
        let site_failed: Vec<String> = site
            .iter()
            .filter(|c| c.outcome == CheckOutcome::Failed)
            .map(|c| format!("{} on {}", c.rule, c.place))
            .collect();
        if !site_failed.is_empty() {
            writeln!(
                out,
                "the default plan cannot be honoured on the site: {} failed",
                site_failed.join(", ")
            )?;
            return Ok(ExitCode::from(1));
        }
        let unmet = report.unmet(&plan, &accepted, &required);
        if unmet.is_empty() {
            writeln!(out, "the default plan can be honoured")?;
            Ok(ExitCode::SUCCESS)
        } else {
            let ids: Vec<&str> = unmet.iter().map(|p| p.id()).collect();
            let contract: Vec<&str> = unmet
                .iter()
                .filter(|p| p.class() == Class::Required)
                .map(|p| p.id())
                .collect();
            let remedy = if contract.is_empty() {
                "drop the --require of what this engine cannot apply, or use another engine"
                    .to_owned()
            } else {
                format!(
                    "pass --accept-missing {} to run without",
                    contract.join(" --accept-missing ")
                )
            };
            writeln!(
                out,
                "the default plan cannot be honoured: missing {}; {remedy}",
                ids.join(", "),
            )?;
            Ok(ExitCode::from(1))
        }
    })
}

/// `mount-plan gc`.
#[derive(Debug, Args)]
pub struct GcCmd {
    #[command(flatten)]
    engine: EngineArgs,
    /// Only containers created more than SECS seconds ago
    #[arg(long, value_name = "SECS")]
    older_than: Option<u64>,
    /// Print what would be removed; remove nothing
    #[arg(long)]
    dry_run: bool,
}

/// Run `mount-plan gc`: remove the managed containers whose launcher is gone. One line per
/// container removed (or, with --dry-run, that would be removed) on stdout; containers whose
/// launcher cannot be judged from here are kept and named on stderr. A removed container's job
/// directory is swept (its labels name it, by path and identity); an incomplete sweep is named
/// on stderr. Exit 0, 1 when a sweep was incomplete, or 2 when the engine cannot be asked.
pub fn gc_cmd(cmd: &GcCmd) -> Result<ExitCode> {
    let options = GcOptions {
        older_than: cmd.older_than.map(Duration::from_secs),
        dry_run: cmd.dry_run,
    };
    tokio_runtime()?.block_on(async {
        let once = |e: LaunchError| anyhow!("{e}");
        let engine = connect(&cmd.engine).await.map_err(once)?;
        let collected = mount_plan_launch::gc(engine.as_ref(), &options)
            .await
            .map_err(once)?;
        let mut out = std::io::stdout().lock();
        let mut incomplete = false;
        for c in &collected {
            let job = c.job.as_deref().unwrap_or("?");
            match &c.verdict {
                Verdict::Orphan(why) if c.removed => {
                    writeln!(out, "removed {} (job {job}): {why}", c.container)?;
                    match &c.swept {
                        Some(Ok(what)) => {
                            writeln!(out, "swept the job directory of {}: {what}", c.container)?
                        }
                        Some(Err(problems)) => {
                            incomplete = true;
                            let e = LaunchError::SweepIncomplete {
                                job: job.to_owned(),
                                status: None,
                                problems: problems.clone(),
                                first: None,
                            };
                            eprintln!("{e} (container {} removed by gc)", c.container)
                        }
                        None => {}
                    }
                }
                Verdict::Orphan(why) => {
                    writeln!(out, "would remove {} (job {job}): {why}", c.container)?
                }
                Verdict::Unknown(why) => {
                    eprintln!("kept {} (job {job}): {why}", c.container)
                }
                Verdict::Alive => {}
            }
        }
        Ok(if incomplete {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}
