//! `mount-plan`: plan (and check) the isolated workspace view of a job container.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use mount_plan::{Mount, MountPlan};
use mount_plan_host::VerifiedPlan;

mod engine;
#[cfg(feature = "kubernetes")]
mod k8s_args;
mod outcome;
mod plan_args;
mod stream;

use plan_args::{LayoutArgs, PlanArgs, VerifyArgs};

/// Give every job container an isolated view of a shared workspace.
///
/// A container planned by mount-plan sees exactly: an empty tmpfs at the workspace root R
/// (read-only by default), the shared directories of the workspace W read-only at R/<name>,
/// the job directory W/J read-write at R/J (its working directory), and nothing else of W.
#[derive(Debug, Parser)]
#[command(name = "mount-plan", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the mount plan of one job container (no engine needed)
    ///
    /// Without --verify it touches no filesystem. With --verify (or any host-check flag:
    /// --create-job-dir, --launcher-workspace, --refuse-hard-links, --expected-owner,
    /// --permissions, --strict-paths, --job-dir-mode, --job-dir-owner; each implies --verify)
    /// it opens W and each bind source from a directory handle without following any link or
    /// crossing filesystems, and adds their (device, inode) pins and the scan's findings
    /// (sockets, fifos and device nodes in a shared directory or W/J).
    ///
    /// Exit status: 0 with the plan on stdout; 2 when an input breaks a rule or a host check
    /// fails (nothing on stdout, `error: ...` on stderr naming the rule, the path and what was
    /// found, then `hint: ...` saying what to do).
    ///
    /// With --json-lines, plans many jobs from one process: reads one request object
    /// `{"workspace":"W","job":"J"}` per line from stdin and answers each line at once (output
    /// is flushed whenever no further line is waiting), with the plan as `--format json` prints
    /// it, on one line, or `{"error":"...","line":N,"ok":false,"rule":"..."}` (rule `bad-json`
    /// for a line that is not such an object). Blank lines get no answer; a refused line does
    /// not stop the stream. The layout and host-check flags apply to every request. Exit
    /// status: 0 when every line got a plan, 1 otherwise, 2 when the stream cannot run.
    Plan(PlanCmd),
    /// Check job names against the name rules: one line per name
    ///
    /// Prints `ok NAME` or `invalid NAME: <reason>`; exit 0 when all are valid, 1 otherwise.
    ///
    /// With --json, reads one JSON string per line from stdin (so NUL, newlines and any
    /// character can be tried) and answers each line at once with one JSON object
    /// `{"error":...,"name":...,"ok":...,"rule":...}`, flushed whenever no further line is
    /// waiting, so a launcher can keep it running as a co-process. A line that is not a JSON
    /// string gets `{"error":"...","line":N,"name":null,"ok":false,"rule":"bad-json"}` and the
    /// stream goes on; blank lines get no answer. Exit 0 when every line was a valid name, 1
    /// otherwise.
    Check(CheckCmd),
    /// Verify the host, launch the job container, stream its output, wait, remove it
    ///
    /// SIGINT, SIGTERM and SIGHUP stop the container (with --stop-grace) and remove it at any
    /// step; a job directory created for the launch is removed only if the command never ran
    /// in it, it is empty and no other launch holds it.
    ///
    /// Exit status: the command's own; 125 when the command certainly did not run (the error
    /// is printed, no container is left behind); 122 when the command ran but its status could
    /// not be read, or when the sweep of W/J after it could not clear everything
    /// (`sweep-incomplete`: the message gives the status); 130, 143 or 129 when SIGINT, SIGTERM or SIGHUP cancelled the launch.
    Launch(Box<engine::LaunchCmd>),
    /// Compare a container with the plan: print each difference
    ///
    /// With --verify (or any host-check flag, which implies it), the host checks run on the
    /// plan first, and each bind source the engine reports is looked at on this host (lstat,
    /// no link followed) and compared with the pinned (device, inode): a source that is a
    /// symlink, is another directory, or cannot be looked at is a difference (rules `pin-link`,
    /// `pin-identity`, `pin-unreadable`) naming the mount and both identities. While the
    /// container runs and its engine's host is this host, what it holds at each bind target is
    /// compared too, through its first process's root `/proc/PID/root` (rules `pin-held`,
    /// `pin-held-unreadable`): a path swapped before the start and back after shows there. A
    /// `note:` line says when that comparison could not be made, and why.
    ///
    /// Exit status: 0 when it conforms, 1 when it differs, 2 when it cannot be audited.
    Audit(engine::AuditCmd),
    /// Engine, API and runtime versions, and which protections the engine can honour
    ///
    /// Each protection is contract (a launch without it is refused unless --accept-missing) or
    /// hardening (nosuid, nodev, noexec on binds: a launch without it goes ahead with one
    /// warning, unless --require makes it refuse). Exit status: 0 when the default plan can be
    /// honoured (given --accept-missing and --require), 1 otherwise.
    Doctor(engine::DoctorCmd),
    /// Remove managed containers whose launcher is gone (killed, crashed, host rebooted)
    ///
    /// Every container launched by mount-plan carries its launcher's identity (host, boot id,
    /// pid namespace, pid and start time). A container whose launcher no longer runs is
    /// removed; one whose launcher cannot be judged from here (another host or pid namespace,
    /// or no identity labels) is kept and named on stderr.
    ///
    /// Prints one line per container removed (or that would be removed). Exit status 0; 2
    /// when the engine cannot be asked.
    Gc(engine::GcCmd),
    /// The in-container gate: install it where a cluster engine binds it from (Swarm)
    ///
    /// Every container launched by mount-plan starts with the gate, a small static program
    /// embedded in this binary, which compares the mounts the container got with the host
    /// check's pins before it runs the command. Docker and Podman bind a host copy that the
    /// launcher writes and checks itself (in /var/lib/mount-plan/gate for root, or the
    /// directory MOUNT_PLAN_GATE_DIR names); a Swarm service runs on other machines, so every
    /// node needs it at the same path
    /// (default /usr/local/libexec/mount-plan/gate): run `mount-plan gate install` on each node
    /// (or copy the file it writes). Exit 0 when written, 2 otherwise.
    #[command(subcommand)]
    Gate(GateCmd),
    /// Images for runtime slurm: unpacked once onto the shared filesystem
    #[cfg(feature = "slurm")]
    #[command(subcommand)]
    Image(ImageCmd),
}

/// `mount-plan image ...`.
#[cfg(feature = "slurm")]
#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Unpack `docker save` output (one image) into SHARED/images/<id> and print its id
    /// (`sha256:<id>`, as Docker names it): launches on runtime slurm name it so. Layers are
    /// applied in order with their whiteouts; an image already there is left as it is.
    Unpack {
        /// The shared directory (what MOUNT_PLAN_SLURM_SHARED names): the same path on every
        /// node
        #[arg(long, value_name = "DIR")]
        shared: std::path::PathBuf,
        /// The `docker save` archive (default: standard input)
        #[arg(value_name = "FILE")]
        archive: Option<std::path::PathBuf>,
    },
}

#[cfg(feature = "slurm")]
fn image_unpack(shared: &std::path::Path, archive: Option<&std::path::Path>) -> Result<ExitCode> {
    use mount_plan_run::slurm_image::unpack_docker_save;
    let id = match archive {
        Some(path) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("cannot open {path:?}"))?;
            unpack_docker_save(std::io::BufReader::new(file), shared)
        }
        None => unpack_docker_save(std::io::stdin().lock(), shared),
    }
    .with_context(|| format!("cannot unpack the image into {shared:?}"))?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// `mount-plan gate ...`.
#[derive(Debug, Subcommand)]
enum GateCmd {
    /// Write the gate (mode 0555) to PATH, replacing it atomically
    Install {
        /// Where to write it (the path Swarm nodes bind it from; `launch --runtime swarm
        /// --gate-path` must name the same)
        #[arg(long, value_name = "PATH", default_value = mount_plan_launch::gate::GATE_ON_NODES)]
        path: std::path::PathBuf,
    },
}

fn gate_install(path: &std::path::Path) -> Result<ExitCode> {
    use std::os::unix::fs::PermissionsExt;
    if !mount_plan_launch::gate::Gate::available() {
        anyhow::bail!("this build of mount-plan has no gate (it could not be linked statically when it was built)");
    }
    let dir = path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{path:?} has no parent directory"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {dir:?}"))?;
    let tmp = dir.join(format!(".gate.{}", std::process::id()));
    std::fs::write(&tmp, mount_plan_launch::gate::GATE_BINARY)
        .with_context(|| format!("cannot write {tmp:?}"))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o555))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {tmp:?} to {path:?}"))?;
    println!(
        "{} ({} bytes)",
        path.display(),
        mount_plan_launch::gate::GATE_BINARY.len()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The plan as a JSON object (version, job, workspace, container_root, workdir, mounts)
    Json,
    /// A human-readable table
    Table,
    /// A JSON array of `docker run` arguments (every --mount field CSV-quoted)
    DockerArgs,
    /// A JSON array of `podman run` arguments (every --mount field CSV-quoted)
    PodmanArgs,
    /// A JSON array of OCI runtime-spec mounts (destination, type, source, options)
    Oci,
    /// A Kubernetes Pod manifest, JSON (needs --k8s-claim or --k8s-host-path)
    #[cfg(feature = "kubernetes")]
    K8sPod,
    /// A Kubernetes Pod manifest, YAML
    #[cfg(feature = "kubernetes")]
    K8sPodYaml,
}

#[derive(Debug, clap::Args)]
#[command(
    mut_arg("workspace", |a| a.required(false).required_unless_present("json_lines")),
    mut_arg("job", |a| a.required(false).required_unless_present("json_lines")),
)]
struct PlanCmd {
    #[command(flatten)]
    plan: PlanArgs,
    #[command(flatten)]
    verify: VerifyArgs,
    /// Output format
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Read one request {"workspace":"W","job":"J"} per line from stdin; answer each with a
    /// plan (as --format json, on one line) or an error object, at once
    #[arg(long, conflicts_with_all = ["workspace", "job", "format"])]
    json_lines: bool,
    #[cfg(feature = "kubernetes")]
    #[command(flatten)]
    k8s: k8s_args::K8sArgs,
    /// Kubernetes formats: the job's image (left out of the Pod when not given)
    #[cfg(feature = "kubernetes")]
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// Kubernetes formats: the job's numeric user (runAsUser, runAsGroup; not 0)
    #[cfg(feature = "kubernetes")]
    #[arg(long, value_name = "UID[:GID]")]
    user: Option<String>,
}

#[derive(Debug, clap::Args)]
struct CheckCmd {
    /// Names to check
    #[arg(value_name = "NAME", required_unless_present = "json")]
    names: Vec<String>,
    /// Read JSON strings from stdin, one per line; answer each with one JSON object, at once
    #[arg(long, conflicts_with = "names")]
    json: bool,
    #[command(flatten)]
    layout: LayoutArgs,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(usage_exit_code(&e));
        }
    };
    let result = match cli.command {
        Command::Plan(cmd) => run_plan(&cmd),
        Command::Check(cmd) => run_check(&cmd),
        Command::Launch(cmd) => Ok(engine::launch(&cmd)),
        Command::Audit(cmd) => engine::audit_cmd(&cmd),
        Command::Doctor(cmd) => engine::doctor(&cmd),
        Command::Gc(cmd) => engine::gc_cmd(&cmd),
        Command::Gate(GateCmd::Install { path }) => gate_install(&path),
        #[cfg(feature = "slurm")]
        Command::Image(ImageCmd::Unpack { shared, archive }) => {
            image_unpack(&shared, archive.as_deref())
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            print_error(&err);
            ExitCode::from(2)
        }
    }
}

/// Print `err` and its causes on one line, each cause once, then what to do about a host
/// refusal on a line of its own.
pub(crate) fn print_error(err: &anyhow::Error) {
    eprintln!("error: {}", stream::chain_text(err.chain()));
    if let Some(host) = err.downcast_ref::<mount_plan_host::HostError>() {
        eprintln!("hint: {}", host.hint());
    }
}

/// Help and version exit 0. A usage error exits 2, except for `launch`, whose every failure
/// before the command runs exits 125 so that a launcher can tell it from the command's own
/// exit status.
fn usage_exit_code(e: &clap::Error) -> u8 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
        _ if std::env::args().nth(1).as_deref() == Some("launch") => engine::EXIT_LAUNCH_FAILED,
        _ => 2,
    }
}

fn run_plan(cmd: &PlanCmd) -> Result<ExitCode> {
    if cmd.json_lines {
        let layout = cmd.plan.layout.layout()?;
        let options = cmd.verify.wanted().then(|| cmd.verify.options());
        let all_ok = stream::plan(
            &layout,
            options.as_ref(),
            std::io::stdin().lock(),
            std::io::stdout().lock(),
        )?;
        return Ok(exit_all_ok(all_ok));
    }
    let plan = cmd.plan.plan()?;
    let verified = if cmd.verify.wanted() {
        Some(cmd.verify.verify(plan.clone())?)
    } else {
        None
    };
    let out = match cmd.format {
        Format::Json => serde_json::to_string_pretty(&plan_json(&plan, verified.as_ref()))?,
        Format::Table => {
            let mut t = table(&plan);
            if let Some(v) = &verified {
                let p = v.pins();
                t.push_str(&format!(
                    "\npins: workspace dev={} ino={}",
                    p.workspace.dev, p.workspace.ino
                ));
                for b in &p.binds {
                    t.push_str(&format!(
                        "\n      {} dev={} ino={}",
                        b.target, b.pin.dev, b.pin.ino
                    ));
                }
                for f in v.findings() {
                    t.push_str(&format!("\nfinding: {f}"));
                }
            }
            t
        }
        Format::DockerArgs => {
            eprintln!(
                "note: docker cannot set nosuid/nodev/noexec on bind mounts; these arguments add \
                 no-new-privileges for setuid and rely on the device cgroup for devices, and leave \
                 read-only binds executable"
            );
            serde_json::to_string_pretty(&plan.docker_args())?
        }
        Format::PodmanArgs => serde_json::to_string_pretty(&plan.podman_args())?,
        Format::Oci => serde_json::to_string_pretty(&plan.oci_mounts())?,
        #[cfg(feature = "kubernetes")]
        Format::K8sPod | Format::K8sPodYaml => k8s_pod(cmd, &plan)?,
    };
    write_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// The plan as `plan --format json` prints it; with host checks, the verified plan's one
/// serialised form (`mount_plan_host::VerifiedPlan`'s: the plan's fields, the pins, warnings
/// and findings), which Python's `VerifiedPlan.to_dict()` returns too.
fn plan_json(plan: &MountPlan, verified: Option<&VerifiedPlan>) -> serde_json::Value {
    match verified {
        Some(v) => serde_json::to_value(v),
        None => serde_json::to_value(plan),
    }
    .expect("plans and pins have string keys and no failing Serialize")
}

/// The plan as a Pod; what the target cannot honour is noted on stderr (a launch refuses it
/// unless accepted as missing).
#[cfg(feature = "kubernetes")]
fn k8s_pod(cmd: &PlanCmd, plan: &MountPlan) -> Result<String> {
    let mut options = cmd.k8s.options()?;
    options.container.image = cmd.image.clone();
    options.container.user = cmd.user.as_deref().map(str::parse).transpose()?;
    let pod = mount_plan_k8s::render_pod(plan, &options)?;
    let target = &options.target;
    for (protection, availability) in target.availability() {
        if mount_plan_launch::Protection::required_by(plan).contains(&protection)
            && !availability.is_available()
        {
            match protection.class() {
                mount_plan_launch::Class::Hardening => eprintln!(
                    "note: {protection} is {availability}; `launch --runtime kubernetes` goes ahead without it with a warning (--require {protection} refuses instead)"
                ),
                mount_plan_launch::Class::Required => eprintln!(
                    "note: {protection} is {availability}; `launch --runtime kubernetes` refuses this plan unless --accept-missing {protection}"
                ),
            }
        }
    }
    for w in target.warnings() {
        eprintln!("note: {w}");
    }
    if options.container.image.is_none() {
        eprintln!(
            "note: no --image: the Pod has no image; the API server refuses it until one is set"
        );
    }
    Ok(match cmd.format {
        Format::K8sPodYaml => mount_plan_k8s::to_yaml(&pod).trim_end().to_owned(),
        _ => mount_plan_k8s::to_json(&pod),
    })
}

fn write_stdout(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").context("cannot write to stdout")?;
    Ok(())
}

fn table(plan: &MountPlan) -> String {
    let mut rows = vec![[
        "KIND".to_owned(),
        "TARGET".to_owned(),
        "SOURCE".to_owned(),
        "ACCESS".to_owned(),
        "OPTIONS".to_owned(),
    ]];
    for m in plan.mounts() {
        let access = if m.read_only() { "ro" } else { "rw" }.to_owned();
        let flags: Vec<&str> = m.flags().words().collect();
        let row = match m {
            Mount::Tmpfs(t) => [
                "tmpfs".to_owned(),
                t.target().to_string(),
                "-".to_owned(),
                access,
                format!(
                    "mode={:04o},size={},{}",
                    t.mode(),
                    t.size_bytes(),
                    flags.join(",")
                ),
            ],
            Mount::Bind(b) => [
                format!("bind ({})", role_name(b.role())),
                b.target().to_string(),
                b.source().to_string(),
                access,
                format!("non-recursive,private,{}", flags.join(",")),
            ],
        };
        rows.push(row);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "job {}  workspace {}  workdir {}\n",
        plan.job(),
        plan.workspace(),
        plan.workdir()
    );
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.trim_end().to_owned()
}

fn role_name(role: mount_plan::BindRole) -> &'static str {
    match role {
        mount_plan::BindRole::Shared => "shared",
        mount_plan::BindRole::Job => "job",
        mount_plan::BindRole::Extra => "extra",
    }
}

fn run_check(cmd: &CheckCmd) -> Result<ExitCode> {
    let layout = cmd.layout.layout()?;
    if cmd.json {
        let all_ok = stream::check(&layout, std::io::stdin().lock(), std::io::stdout().lock())?;
        return Ok(exit_all_ok(all_ok));
    }
    let mut all_ok = true;
    let mut out = String::new();
    for name in &cmd.names {
        match layout.job(name) {
            Ok(_) => out.push_str(&format!("ok {}\n", name.escape_debug())),
            Err(e) => {
                all_ok = false;
                out.push_str(&format!("invalid {}: {e}\n", name.escape_debug()));
            }
        }
    }
    write_stdout(out.trim_end_matches('\n'))?;
    Ok(exit_all_ok(all_ok))
}

/// `check` and the JSON-lines modes: 0 when every name or line was ok, 1 otherwise.
fn exit_all_ok(all_ok: bool) -> ExitCode {
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
