//! The launch lifecycle through the CLI, on every engine this machine runs (Docker, rootful
//! Podman, rootless Podman run by its unprivileged user), as a launcher drives it:
//! - SIGTERM one second after start stops and removes the container within the grace period
//!   plus 5 s, and `launch` exits 143;
//! - SIGKILL to the launcher, then `mount-plan gc`, leaves no managed container of ours;
//! - two launches of one job, the first failing late, never remove the second's directory;
//! - a job whose status is read normally exits with its own status;
//! - a command's own 125 and 122 are told from the launcher's by `--status-file`;
//! - a container the engine's own CLI runs with exactly `plan --format docker-args` /
//!   `podman-args` passes `mount-plan audit`.;
//! - issue 21: what a job writes gives no other host user a privilege ([`outputs`]).
//!
//! An engine that is missing shows as ignored in the summary; under `CI` it fails.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use mount_plan_testkit::harness::{self, Need};

#[path = "lifecycle_cli/outputs.rs"]
mod outputs;

const BIN: &str = env!("CARGO_BIN_EXE_mount-plan");
const ENV_FILE: &str = "/tmp/mount-plan-podman/env";

fn env_value(key: &str) -> Option<String> {
    if let Ok(v) = std::env::var(key) {
        return Some(v);
    }
    let text = std::fs::read_to_string(ENV_FILE).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

/// One engine as the CLI reaches it.
#[derive(Debug, Clone)]
struct Engine {
    name: &'static str,
    /// `--runtime ...` and its options, without the socket.
    runtime: Vec<String>,
    /// `--socket`, when not the default.
    socket: Option<String>,
    /// Options of `launch` only.
    launch_only: Vec<String>,
    image: String,
    /// The unprivileged user that runs the CLI (rootless Podman), with its uid.
    user: Option<(String, u32)>,
    /// The engine's own CLI, to look for leftovers independently of mount-plan.
    ps: Vec<String>,
    conf: Option<String>,
}

fn output_ok(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The busybox image for Docker, imported once (no registry: built from busybox-static).
fn docker_image() -> Result<String, String> {
    const IMAGE: &str = "mount-plan-busybox:lifecycle-test";
    output_ok(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]))?;
    if output_ok(Command::new("docker").args(["image", "inspect", IMAGE])).is_ok() {
        return Ok(IMAGE.into());
    }
    if !Path::new("/bin/busybox").is_file() {
        return Err("/bin/busybox is missing (apt-get install busybox-static)".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let bin = dir.path().join("rootfs/bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::fs::copy("/bin/busybox", bin.join("busybox")).map_err(|e| e.to_string())?;
    for a in ["sh", "echo", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", bin.join(a)).map_err(|e| e.to_string())?;
    }
    let tar = dir.path().join("image.tar");
    output_ok(
        Command::new("tar")
            .arg("-C")
            .arg(dir.path().join("rootfs"))
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    )?;
    output_ok(Command::new("docker").arg("import").arg(&tar).arg(IMAGE))?;
    Ok(IMAGE.into())
}

fn docker() -> Result<Engine, String> {
    for need in [Need::Docker, Need::Busybox] {
        harness::check(need)?;
    }
    Ok(Engine {
        name: "docker",
        runtime: vec!["--runtime".into(), "docker".into()],
        socket: None,
        launch_only: vec!["--accept-missing".into(), "noexec".into()],
        image: docker_image()?,
        user: None,
        ps: vec!["docker".into()],
        conf: None,
    })
}

fn podman(rootless: bool) -> Result<Engine, String> {
    harness::check(if rootless {
        Need::PodmanRootless
    } else {
        Need::PodmanRootful
    })?;
    let engine = if rootless {
        mount_plan_testkit::engines::TestEngine::PodmanRootless
    } else {
        mount_plan_testkit::engines::TestEngine::PodmanRootful
    };
    let socket = engine.socket()?;
    let missing = || format!("no CONTAINERS_CONF or image in {ENV_FILE} (run .ci/podman-setup)");
    let conf = env_value("CONTAINERS_CONF").ok_or_else(missing)?;
    let image = env_value("MOUNT_PLAN_PODMAN_IMAGE").ok_or_else(missing)?;
    output_ok(
        Command::new("podman")
            .args(["--url", &socket, "version"])
            .env("CONTAINERS_CONF", &conf),
    )?;
    let user = if rootless {
        let name = env_value("MOUNT_PLAN_PODMAN_ROOTLESS_USER").ok_or_else(missing)?;
        let uid = env_value("MOUNT_PLAN_PODMAN_ROOTLESS_UID")
            .and_then(|u| u.parse().ok())
            .ok_or_else(missing)?;
        Some((name, uid))
    } else {
        None
    };
    let mut runtime = vec!["--runtime".into(), "podman".into()];
    if rootless {
        runtime.extend(["--userns".into(), "keep-id".into()]);
    }
    Ok(Engine {
        name: if rootless {
            "podman-rootless"
        } else {
            "podman-rootful"
        },
        runtime,
        socket: Some(socket.clone()),
        launch_only: Vec::new(),
        image,
        user,
        ps: vec!["podman".into(), "--url".into(), socket],
        conf: Some(conf),
    })
}

/// A site for one test: W with startup/ and local/, a copy of the binary the user can run,
/// all owned by the engine's user.
struct Site {
    top: tempfile::TempDir,
    engine: Engine,
    label: String,
}

impl Engine {
    /// `--runtime ...` with the engine's socket.
    fn args(&self) -> Vec<String> {
        let mut args = self.runtime.clone();
        if let Some(s) = &self.socket {
            args.extend(["--socket".into(), s.clone()]);
        }
        args
    }
}

impl Site {
    fn new(engine: &Engine, tag: &str) -> Site {
        let top = tempfile::Builder::new()
            .prefix("mp-lifecycle-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let w = top.path().join("ws");
        for d in ["", "startup", "local"] {
            std::fs::create_dir_all(w.join(d)).unwrap();
        }
        // Where the launcher writes its events: the engine's user must be able to.
        std::fs::create_dir(top.path().join("run")).unwrap();
        std::fs::copy(BIN, top.path().join("mount-plan")).unwrap();
        if let Some((_, uid)) = &engine.user {
            let st = Command::new("chown")
                .args(["-R", &format!("{uid}:{uid}")])
                .arg(&w)
                .arg(top.path().join("run"))
                .status()
                .unwrap();
            assert!(st.success());
        }
        Site {
            label: format!(
                "lifecycle-{tag}-{}-{}",
                std::process::id(),
                top.path().file_name().unwrap().to_string_lossy()
            ),
            top,
            engine: engine.clone(),
        }
    }

    fn w(&self) -> PathBuf {
        self.top.path().join("ws")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.top.path().join(name)
    }

    /// The CLI as the engine's user.
    fn cli(&self, args: &[&str]) -> Command {
        let bin = self.path("mount-plan");
        let mut cmd = match &self.engine.user {
            Some((user, uid)) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "env"])
                    .arg(format!("XDG_RUNTIME_DIR=/run/user/{uid}"))
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(args);
        if let Some(conf) = &self.engine.conf {
            cmd.env("CONTAINERS_CONF", conf);
        }
        cmd
    }

    /// The engine's own CLI (`docker`, `podman --url ...`) as the engine's user.
    fn engine_cli(&self, args: &[&str]) -> Command {
        let mut cmd = match &self.engine.user {
            Some((user, uid)) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "env"])
                    .arg(format!("XDG_RUNTIME_DIR=/run/user/{uid}"))
                    .arg(&self.engine.ps[0]);
                c
            }
            None => Command::new(&self.engine.ps[0]),
        };
        cmd.args(&self.engine.ps[1..]).args(args);
        if let Some(conf) = &self.engine.conf {
            cmd.env("CONTAINERS_CONF", conf);
        }
        cmd
    }

    /// `mount-plan launch` of job-1 (spawned), with this test's label and events file.
    fn launch(&self, extra: &[&str], command: &[&str]) -> Child {
        let w = self.w();
        let events = self.path("run/events.jsonl");
        let label = format!("mount-plan-test.run={}", self.label);
        let engine_args = self.engine.args();
        let mut args: Vec<&str> = vec!["launch"];
        args.extend(engine_args.iter().map(String::as_str));
        args.extend(self.engine.launch_only.iter().map(String::as_str));
        args.extend([
            "--workspace",
            w.to_str().unwrap(),
            "--job",
            "job-1",
            "--create-job-dir",
            "--image",
            &self.engine.image,
            "--label",
            &label,
            "--events",
            events.to_str().unwrap(),
        ]);
        args.extend(extra);
        args.push("--");
        args.extend(command);
        self.cli(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Container ids carrying this test's label, as the engine's own CLI lists them.
    fn leftovers(&self) -> Vec<String> {
        let mut cmd = Command::new(&self.engine.ps[0]);
        cmd.args(&self.engine.ps[1..]).args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=mount-plan-test.run={}", self.label),
        ]);
        if let Some(conf) = &self.engine.conf {
            cmd.env("CONTAINERS_CONF", conf);
        }
        output_ok(&mut cmd)
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    fn events(&self) -> String {
        std::fs::read_to_string(self.path("run/events.jsonl")).unwrap_or_default()
    }

    /// Wait until the events file has a `started` event.
    fn await_started(&self, child: &mut Child) -> Result<(), Failed> {
        until(Duration::from_secs(60), || {
            self.events().contains("\"event\":\"started\"")
        })
        .map_err(|()| {
            let _ = child.kill();
            format!(
                "{}: the job never started: {}",
                self.engine.name,
                collect(child).1
            )
        })?;
        Ok(())
    }

    /// The mount-plan process itself (not the runuser in front of it).
    fn launcher_pid(&self, child: &Child) -> i32 {
        if self.engine.user.is_none() {
            return child.id() as i32;
        }
        let marker = self.path("mount-plan");
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if exe.as_deref() == Some(marker.as_path())
                && String::from_utf8_lossy(&cmdline).contains(&self.label)
            {
                return pid;
            }
        }
        panic!("no mount-plan process for {}", self.label);
    }
}

fn until(limit: Duration, mut done: impl FnMut() -> bool) -> Result<(), ()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(())
}

fn collect(child: &mut Child) -> (ExitStatus, String) {
    let status = child.wait().unwrap();
    let mut text = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    (status, text)
}

fn kill(pid: i32, signal: &str) {
    let st = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{signal} {pid}");
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(what().into())
    }
}

fn sigterm_stops_and_removes_within_the_grace_period(engine: &Engine) -> Result<(), Failed> {
    let site = Site::new(engine, "term");
    let grace = 3;
    let mut child = site.launch(&["--stop-grace", &grace.to_string()], &["sleep", "60"]);
    site.await_started(&mut child)?;
    std::thread::sleep(Duration::from_secs(1));
    let signalled = Instant::now();
    kill(site.launcher_pid(&child), "TERM");
    let (status, stderr) = collect(&mut child);
    let took = signalled.elapsed();
    check(status.code() == Some(143), || {
        format!("{}: exit {status:?}, want 143: {stderr}", engine.name)
    })?;
    check(took <= Duration::from_secs(grace + 5), || {
        format!("{}: took {took:?} to stop", engine.name)
    })?;
    let left = site.leftovers();
    check(left.is_empty(), || {
        format!("{}: containers left: {left:?}", engine.name)
    })?;
    let events = site.events();
    check(
        events.contains("\"event\":\"cancelled\"") && events.contains("\"event\":\"removed\""),
        || format!("{}: events {events}", engine.name),
    )
}

fn sigkill_then_gc_leaves_no_container(engine: &Engine) -> Result<(), Failed> {
    let site = Site::new(engine, "kill");
    // The status file's directory: a killed launcher leaves no temporary file in it.
    let status_dir = site.path("run/status");
    std::fs::create_dir(&status_dir).unwrap();
    if let Some((_, uid)) = &engine.user {
        std::os::unix::fs::chown(&status_dir, Some(*uid), Some(*uid)).unwrap();
    }
    let status_file = status_dir.join("status.json");
    let mut child = site.launch(
        &["--status-file", status_file.to_str().unwrap()],
        &["sleep", "60"],
    );
    site.await_started(&mut child)?;
    kill(site.launcher_pid(&child), "KILL");
    let _ = collect(&mut child);
    let in_status_dir: Vec<_> = std::fs::read_dir(&status_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    check(in_status_dir.is_empty(), || {
        format!(
            "{}: a killed launcher left {in_status_dir:?} beside its status file",
            engine.name
        )
    })?;
    let left = site.leftovers();
    check(left.len() == 1, || {
        format!(
            "{}: a killed launcher leaves its container: {left:?}",
            engine.name
        )
    })?;
    let engine_args = engine.args();
    let mut gc_args = vec!["gc"];
    gc_args.extend(engine_args.iter().map(String::as_str));
    let out = site
        .cli(&gc_args)
        .output()
        .map_err(|e| format!("gc: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    check(out.status.success(), || {
        format!(
            "{}: gc failed: {}",
            engine.name,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    check(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("removed {}", &left[0][..12.min(left[0].len())]))),
        || format!("{}: gc did not report {left:?}: {stdout}", engine.name),
    )?;
    let left = site.leftovers();
    check(left.is_empty(), || {
        format!("{}: containers left after gc: {left:?}", engine.name)
    })
}

fn a_failing_launch_never_removes_the_directory_another_launch_uses(
    engine: &Engine,
) -> Result<(), Failed> {
    let site = Site::new(engine, "two");
    // A creates W/J, then waits on an engine socket that never answers and fails late.
    let silent = site.path("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    std::fs::set_permissions(&silent, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let w = site.w();
    let mut a_args: Vec<String> = vec!["launch".into()];
    a_args.extend(engine.runtime.iter().cloned());
    a_args.extend(engine.launch_only.iter().cloned());
    a_args.extend(
        [
            "--socket",
            &format!("unix://{}", silent.display()),
            "--connect-timeout",
            "4",
            "--workspace",
            w.to_str().unwrap(),
            "--job",
            "job-1",
            "--create-job-dir",
            "--image",
            &engine.image,
            "--",
            "true",
        ]
        .map(String::from),
    );
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let mut a = site.cli(&a_args).stderr(Stdio::piped()).spawn().unwrap();
    if until(Duration::from_secs(10), || w.join("job-1").is_dir()).is_err() {
        let _ = a.kill();
        let (_, err) = collect(&mut a);
        return Err(format!("{}: A never created W/J: {err}", engine.name).into());
    }
    // B finds W/J and runs in it while A is still waiting.
    let mut b = site.launch(
        &[],
        &["sh", "-c", "echo b > b-out; sleep 5; echo done > done"],
    );
    let b_started = site.await_started(&mut b);
    let (a_status, a_err) = collect(&mut a);
    b_started?;
    check(a_status.code() == Some(125), || {
        format!("{}: A exit {a_status:?}: {a_err}", engine.name)
    })?;
    check(w.join("job-1").is_dir(), || {
        format!("{}: A removed the directory B uses", engine.name)
    })?;
    let (b_status, b_err) = collect(&mut b);
    check(b_status.code() == Some(0), || {
        format!("{}: B exit {b_status:?}: {b_err}", engine.name)
    })?;
    for f in ["b-out", "done"] {
        check(w.join("job-1").join(f).is_file(), || {
            format!("{}: B's output {f} is lost", engine.name)
        })?;
    }
    let left = site.leftovers();
    check(left.is_empty(), || {
        format!("{}: containers left: {left:?}", engine.name)
    })
}

fn the_exit_status_is_the_commands_own(engine: &Engine) -> Result<(), Failed> {
    let site = Site::new(engine, "status");
    let mut child = site.launch(&[], &["sh", "-c", "echo hi > out; exit 3"]);
    let (status, stderr) = collect(&mut child);
    check(status.code() == Some(3), || {
        format!("{}: exit {status:?}: {stderr}", engine.name)
    })?;
    check(site.w().join("job-1/out").is_file(), || {
        format!("{}: no out in W/J", engine.name)
    })?;
    let events = site.events();
    check(events.contains("\"status\":3"), || {
        format!("{}: events {events}", engine.name)
    })?;
    let left = site.leftovers();
    check(left.is_empty(), || {
        format!("{}: containers left: {left:?}", engine.name)
    })
}

/// `--status-file`'s document, read back.
fn status_doc(site: &Site, name: &str) -> Result<serde_json::Value, Failed> {
    let text = std::fs::read_to_string(site.path(name))
        .map_err(|e| format!("{}: no status file {name}: {e}", site.engine.name))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{}: status file {text:?}: {e}", site.engine.name).into())
}

/// A command that itself exits 125 or 122 exits with that status, as a launch that never
/// ran the command (125) or lost its status (122) does: the status file tells them apart.
fn a_commands_own_125_and_122_are_told_from_the_launchers(engine: &Engine) -> Result<(), Failed> {
    let site = Site::new(engine, "own125");
    for code in [125, 122] {
        let name = format!("run/status-{code}.json");
        let file = site.path(&name);
        let script = format!("echo ran > ran-{code}; exit {code}");
        let mut child = site.launch(
            &["--status-file", file.to_str().unwrap()],
            &["sh", "-c", &script],
        );
        let (status, stderr) = collect(&mut child);
        check(status.code() == Some(code), || {
            format!("{}: exit {status:?}, want {code}: {stderr}", engine.name)
        })?;
        check(site.w().join(format!("job-1/ran-{code}")).is_file(), || {
            format!("{}: the command did not run", engine.name)
        })?;
        let doc = status_doc(&site, &name)?;
        check(
            doc["outcome"] == "exited"
                && doc["command_ran"] == true
                && doc["status"] == code
                && doc["exit"] == code
                && doc["launch"].is_string(),
            || format!("{}: status file {doc}", engine.name),
        )?;
    }
    // The gate cannot exec the command: 125, and the command certainly did not run.
    let file = site.path("run/status-refused.json");
    let mut child = site.launch(
        &["--status-file", file.to_str().unwrap()],
        &["/no/such/command"],
    );
    let (status, stderr) = collect(&mut child);
    check(status.code() == Some(125), || {
        format!("{}: exit {status:?}, want 125: {stderr}", engine.name)
    })?;
    let doc = status_doc(&site, "run/status-refused.json")?;
    check(
        doc["outcome"] == "failed"
            && doc["command_ran"] == false
            && doc["status"].is_null()
            && doc["exit"] == 125
            && doc["rule"].is_string(),
        || format!("{}: status file {doc}", engine.name),
    )?;
    // A status file is never overwritten: the launch is refused before anything runs.
    let mut child = site.launch(
        &["--status-file", file.to_str().unwrap()],
        &["sh", "-c", "echo ran > again"],
    );
    let (status, stderr) = collect(&mut child);
    check(
        status.code() == Some(125) && stderr.contains("status-file"),
        || format!("{}: exit {status:?}: {stderr}", engine.name),
    )?;
    check(!site.w().join("job-1/again").exists(), || {
        format!(
            "{}: the command ran over an existing status file",
            engine.name
        )
    })?;
    check(status_doc(&site, "run/status-refused.json")? == doc, || {
        format!("{}: the existing status file changed", engine.name)
    })?;
    let left = site.leftovers();
    check(left.is_empty(), || {
        format!("{}: containers left: {left:?}", engine.name)
    })
}

/// Issue 21, finding 6: `--stop-grace` past its bound is refused before anything runs (it
/// overflowed the lifecycle's clock once SIGTERM came: exit 101, the container left running).
fn a_stop_grace_past_its_bound_is_refused_before_anything_runs(
    engine: &Engine,
) -> Result<(), Failed> {
    let site = Site::new(engine, "grace");
    let mut child = site.launch(&["--stop-grace", &u64::MAX.to_string()], &["sleep", "60"]);
    // Today's main starts the job: cancel it as the finding did.
    let started = until(Duration::from_secs(30), || {
        site.events().contains("\"event\":\"started\"") || child.try_wait().ok().flatten().is_some()
    });
    if started.is_ok() && child.try_wait().ok().flatten().is_none() {
        std::thread::sleep(Duration::from_secs(1));
        kill(site.launcher_pid(&child), "TERM");
    }
    let (status, stderr) = collect(&mut child);
    let left = site.leftovers();
    if !left.is_empty() {
        let mut rm = Command::new(&engine.ps[0]);
        rm.args(&engine.ps[1..]).args(["rm", "-f"]).args(&left);
        if let Some(conf) = &engine.conf {
            rm.env("CONTAINERS_CONF", conf);
        }
        let _ = rm.status();
    }
    check(status.code() == Some(125), || {
        format!("{}: exit {status:?}, want 125: {stderr}", engine.name)
    })?;
    check(
        stderr.contains("spec rule `duration`") && stderr.contains("--stop-grace"),
        || format!("{}: stderr does not name the rule: {stderr}", engine.name),
    )?;
    check(left.is_empty(), || {
        format!("{}: containers left: {left:?}", engine.name)
    })?;
    check(!site.w().join("job-1").exists(), || {
        format!("{}: W/J was created for a refused launch", engine.name)
    })
}

/// Issue 21, finding 7: `--events` naming a symbolic link is refused (rule
/// `events-file-link`, on stderr and in the status file) and the link's target is never
/// written.
fn an_events_file_that_is_a_link_is_refused(engine: &Engine) -> Result<(), Failed> {
    let site = Site::new(engine, "events-link");
    let target = site.path("run/target");
    std::fs::write(&target, "precious\n").unwrap();
    std::os::unix::fs::symlink(&target, site.path("run/events.jsonl")).unwrap();
    let status_file = site.path("run/status.json");
    let mut child = site.launch(&["--status-file", status_file.to_str().unwrap()], &["true"]);
    let (status, stderr) = collect(&mut child);
    let kept = std::fs::read_to_string(&target).unwrap();
    check(kept == "precious\n", || {
        format!("{}: the link's target was written: {kept:?}", engine.name)
    })?;
    check(status.code() == Some(125), || {
        format!("{}: exit {status:?}, want 125: {stderr}", engine.name)
    })?;
    check(stderr.contains("events rule `events-file-link`"), || {
        format!("{}: stderr does not name the rule: {stderr}", engine.name)
    })?;
    let doc = status_doc(&site, "run/status.json")?;
    check(
        doc["outcome"] == "failed"
            && doc["command_ran"] == false
            && doc["rule"] == "events-file-link",
        || format!("{}: status file {doc}", engine.name),
    )?;
    let left = site.leftovers();
    check(left.is_empty(), || {
        format!("{}: containers left: {left:?}", engine.name)
    })
}

/// A container started by the engine's own CLI with exactly `plan --format docker-args` (or
/// `podman-args`) passes `mount-plan audit`: the arguments carry everything the audit asks.
fn the_plans_run_args_pass_the_audit(engine: &Engine) -> Result<(), Failed> {
    let site = Site::new(engine, "args");
    let w = site.w();
    let ws = w.to_str().unwrap();
    let job = w.join("job-1");
    std::fs::create_dir(&job).unwrap();
    if let Some((_, uid)) = &engine.user {
        std::os::unix::fs::chown(&job, Some(*uid), Some(*uid)).unwrap();
    }
    let format = if engine.ps[0] == "docker" {
        "docker-args"
    } else {
        "podman-args"
    };
    let plan = site
        .cli(&[
            "plan",
            "--format",
            format,
            "--workspace",
            ws,
            "--job",
            "job-1",
        ])
        .output()
        .map_err(|e| format!("plan: {e}"))?;
    check(plan.status.success(), || {
        format!(
            "{}: plan: {}",
            engine.name,
            String::from_utf8_lossy(&plan.stderr)
        )
    })?;
    let args: Vec<String> = serde_json::from_slice(&plan.stdout)
        .map_err(|e| format!("{}: plan's {format}: {e}", engine.name))?;
    let name = format!("mp-{}", site.label);
    let label = format!("mount-plan-test.run={}", site.label);
    let mut run: Vec<&str> = vec!["run", "-d", "--name", &name, "--label", &label];
    if engine.user.is_some() {
        // This machine's rootless Podman cannot make a network (no /dev/net/tun); the network
        // is the launcher's choice, not the plan's, and the audit does not look at it.
        run.extend(["--network", "none"]);
    }
    run.extend(args.iter().map(String::as_str));
    run.extend([engine.image.as_str(), "sleep", "30"]);
    let started = site
        .engine_cli(&run)
        .output()
        .map_err(|e| format!("{} run: {e}", engine.ps[0]))?;
    check(started.status.success(), || {
        format!(
            "{}: {} run {args:?}: {}",
            engine.name,
            engine.ps[0],
            String::from_utf8_lossy(&started.stderr)
        )
    })?;
    let engine_args = engine.args();
    let mut audit: Vec<&str> = vec!["audit"];
    audit.extend(engine_args.iter().map(String::as_str));
    audit.extend([name.as_str(), "--workspace", ws, "--job", "job-1"]);
    let audited = site
        .cli(&audit)
        .output()
        .map_err(|e| format!("audit: {e}"))?;
    let _ = site.engine_cli(&["rm", "-f", &name]).output();
    let report = String::from_utf8_lossy(&audited.stdout);
    check(
        audited.status.code() == Some(0) && report.contains("conforms"),
        || {
            format!(
                "{}: audit of `{} run` with {args:?}: exit {:?}\n{report}{}",
                engine.name,
                engine.ps[0],
                audited.status.code(),
                String::from_utf8_lossy(&audited.stderr)
            )
        },
    )?;
    let left = site.leftovers();
    check(left.is_empty(), || {
        format!("{}: containers left: {left:?}", engine.name)
    })
}

/// Issue 21, finding 5: another host user (nobody) who can open W/J holds an exclusive
/// `flock` on it. The launch's claim is not that lock: it runs to the end (before, it blocked
/// in the host check and ignored SIGTERM until the lock was released).
fn another_users_lock_on_the_job_dir_blocks_no_launch(engine: &Engine) -> Result<(), Failed> {
    use std::io::BufRead;
    let site = Site::new(engine, "flock");
    let j = site.w().join("job-1");
    std::fs::create_dir(&j).unwrap();
    std::fs::set_permissions(&j, std::fs::Permissions::from_mode(0o755)).unwrap();
    if let Some((_, uid)) = &engine.user {
        std::os::unix::fs::chown(&j, Some(*uid), Some(*uid)).unwrap();
    }
    let mut holder = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["flock", "-x"])
        .arg(&j)
        .args(["sh", "-c", "echo held; exec sleep 120"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.trim() != "held" {
        let _ = holder.kill();
        let _ = holder.wait();
        return Err(format!("{}: nobody could not lock W/J: {line:?}", engine.name).into());
    }
    let mut child = site.launch(&[], &["sh", "-c", "echo ran > out"]);
    let ended = until(Duration::from_secs(60), || {
        child.try_wait().ok().flatten().is_some()
    });
    let mut blocked = String::new();
    if ended.is_err() {
        // Blocked behind nobody's lock: SIGTERM, as a supervisor would.
        kill(site.launcher_pid(&child), "TERM");
        let stopped = until(Duration::from_secs(10), || {
            child.try_wait().ok().flatten().is_some()
        });
        blocked = format!(
            "the launch blocked behind another user's lock on W/J{}",
            if stopped.is_err() {
                " and ignored SIGTERM"
            } else {
                ""
            }
        );
        let _ = child.kill();
    }
    let _ = holder.kill();
    let _ = holder.wait();
    let (status, stderr) = collect(&mut child);
    check(blocked.is_empty(), || format!("{}: {blocked}", engine.name))?;
    check(status.code() == Some(0), || {
        format!("{}: exit {status:?}: {stderr}", engine.name)
    })?;
    check(j.join("out").is_file(), || {
        format!("{}: the command did not run in W/J", engine.name)
    })?;
    let left = site.leftovers();
    check(left.is_empty(), || {
        format!("{}: containers left: {left:?}", engine.name)
    })
}

/// Issue 21, finding 9: `audit --verify` reports what the running container holds (through
/// `/proc/PID/root`) when W/J was swapped for a link before the container started and
/// swapped back after, on every engine (the container identified by its cgroup or its
/// `/run/.containerenv`).
fn audit_verify_sees_what_the_container_holds(engine: &Engine) -> Result<(), Failed> {
    let site = Site::new(engine, "held");
    let w = site.w();
    let (job, real, other) = (w.join("job-1"), w.join("job-1.real"), w.join("other"));
    for d in [&real, &other] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        if let Some((_, uid)) = &engine.user {
            std::os::unix::fs::chown(d, Some(*uid), Some(*uid)).unwrap();
        }
    }
    std::os::unix::fs::symlink(&other, &job).unwrap();
    let ws = w.to_str().unwrap();
    let mut run = Command::new(&engine.ps[0]);
    run.args(&engine.ps[1..]).args([
        "run",
        "-d",
        "--network",
        "none",
        "--label",
        &format!("mount-plan-test.run={}", site.label),
        "-v",
        &format!("{ws}/startup:/workspace/startup:ro"),
        "-v",
        &format!("{ws}/local:/workspace/local:ro"),
        "-v",
        &format!("{ws}/job-1:/workspace/job-1"),
        &engine.image,
        "sleep",
        "60",
    ]);
    if let Some(conf) = &engine.conf {
        run.env("CONTAINERS_CONF", conf);
    }
    let id = output_ok(&mut run)?.trim().to_owned();
    // Swapped back: the host path is the directory the audit's own check pins.
    std::fs::remove_file(&job).unwrap();
    std::fs::rename(&real, &job).unwrap();
    let engine_args = engine.args();
    let mut args: Vec<&str> = vec!["audit"];
    args.extend(engine_args.iter().map(String::as_str));
    args.extend(engine.launch_only.iter().map(String::as_str));
    args.extend([&id, "--workspace", ws, "--job", "job-1", "--verify"]);
    let out = site.cli(&args).output().unwrap();
    let mut rm = Command::new(&engine.ps[0]);
    rm.args(&engine.ps[1..]).args(["rm", "-f", &id]);
    if let Some(conf) = &engine.conf {
        rm.env("CONTAINERS_CONF", conf);
    }
    let _ = rm.output();
    let report = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    check(out.status.code() == Some(1), || {
        format!("{}: exit {:?}: {report}{stderr}", engine.name, out.status)
    })?;
    check(
        report.contains("pin rule `pin-held`: the container holds at \"/workspace/job-1\""),
        || format!("{}: no pin-held for the job: {report}{stderr}", engine.name),
    )?;
    check(report.matches("pin rule").count() == 1, || {
        format!("{}: other pin differences: {report}", engine.name)
    })
}

type Scenario = fn(&Engine) -> Result<(), Failed>;

const SCENARIOS: [(&str, Scenario); 10] = [
    (
        "audit_verify_sees_what_the_container_holds",
        audit_verify_sees_what_the_container_holds,
    ),
    (
        "another_users_lock_on_the_job_dir_blocks_no_launch",
        another_users_lock_on_the_job_dir_blocks_no_launch,
    ),
    (
        "a_stop_grace_past_its_bound_is_refused_before_anything_runs",
        a_stop_grace_past_its_bound_is_refused_before_anything_runs,
    ),
    (
        "an_events_file_that_is_a_link_is_refused",
        an_events_file_that_is_a_link_is_refused,
    ),
    (
        "sigterm_stops_and_removes_within_the_grace_period",
        sigterm_stops_and_removes_within_the_grace_period,
    ),
    (
        "sigkill_then_gc_leaves_no_container",
        sigkill_then_gc_leaves_no_container,
    ),
    (
        "a_failing_launch_never_removes_the_directory_another_launch_uses",
        a_failing_launch_never_removes_the_directory_another_launch_uses,
    ),
    (
        "the_exit_status_is_the_commands_own",
        the_exit_status_is_the_commands_own,
    ),
    (
        "a_commands_own_125_and_122_are_told_from_the_launchers",
        a_commands_own_125_and_122_are_told_from_the_launchers,
    ),
    (
        "the_plans_run_args_pass_the_audit",
        the_plans_run_args_pass_the_audit,
    ),
];

fn main() {
    let mut args = Arguments::from_args();
    // One launcher at a time: Podman 4.3's rootless service crashes on concurrent keep-id
    // creates from several processes (libsubid is not thread-safe), and the timing checks
    // want the machine's two cores.
    args.test_threads.get_or_insert(1);
    let ci = harness::under_ci();
    let root = harness::check(Need::Root);
    type Probe = Box<dyn Fn() -> Result<Engine, String>>;
    let engines: [(&str, Probe); 3] = [
        ("docker", Box::new(docker)),
        ("podman_rootful", Box::new(|| podman(false))),
        ("podman_rootless", Box::new(|| podman(true))),
    ];
    let mut trials = Vec::new();
    for (name, probe) in engines {
        let found = root.clone().and_then(|()| probe());
        let outputs = outputs::SCENARIOS
            .into_iter()
            .filter(|(_, _, docker_only)| !docker_only || name == "docker")
            .map(|(scenario, run, _)| (scenario, run));
        for (scenario, run) in SCENARIOS.into_iter().chain(outputs) {
            let trial_name = format!("{name}::{scenario}");
            let trial = match &found {
                Ok(engine) => {
                    let engine = engine.clone();
                    Trial::test(trial_name, move || run(&engine))
                }
                Err(why) if ci => {
                    let why = format!("{name} is required when CI is set: {why}");
                    Trial::test(trial_name, move || Err(why.into()))
                }
                Err(why) => Trial::test(trial_name, || Ok(()))
                    .with_kind(format!("no {name}: {why}"))
                    .with_ignored_flag(true),
            };
            trials.push(trial);
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
