//! `mount-plan launch`, `audit` and `doctor` against the real Docker engine.
//!
//! Needs Docker, root and Debian's busybox-static; without them: fails under `CI`,
//! otherwise shown as ignored.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_mount-plan");
const IMAGE: &str = "mount-plan-busybox:cli-test";

fn sh(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Docker answers and the busybox image (`mount_plan_testkit::image`) is imported.
fn docker_ready() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let r = READY.get_or_init(|| {
        let v = sh(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]));
        if !v.status.success() {
            return Err(format!(
                "docker does not answer: {}",
                String::from_utf8_lossy(&v.stderr)
            ));
        }
        if sh(Command::new("docker").args(["image", "inspect", IMAGE]))
            .status
            .success()
        {
            return Ok(());
        }
        let dir = std::env::temp_dir().join(format!("mp-cli-image-{}", std::process::id()));
        let (tar, _) = mount_plan_testkit::image::busybox_tar(&dir, &[])?;
        let imported =
            mount_plan_testkit::image::import(&mut Command::new("docker"), &tar, IMAGE, &[]);
        let _ = fs::remove_dir_all(&dir);
        imported
    });
    // The harness ignored the test (failed it under CI) when Docker or busybox is missing.
    match r {
        Ok(()) => true,
        Err(why) => panic!("the docker test image: {why}"),
    }
}

/// A workspace W with startup/, local/ and the job directory; removed on drop.
struct Ws {
    top: PathBuf,
    w: PathBuf,
    job: &'static str,
    label: String,
}

impl Ws {
    fn new(tag: &str) -> Ws {
        let label = format!("{tag}-{}-{}", std::process::id(), unique());
        let top = std::env::temp_dir().join(format!("mp-cli-{label}"));
        let w = top.join("ws");
        for d in ["startup", "local", "job1"] {
            fs::create_dir_all(w.join(d)).unwrap();
        }
        for p in [
            &top,
            &w,
            &w.join("startup"),
            &w.join("local"),
            &w.join("job1"),
        ] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        Ws {
            top,
            w,
            job: "job1",
            label,
        }
    }

    fn launch(&self, extra: &[&str], cmd: &[&str]) -> Output {
        self.launch_image(IMAGE, extra, cmd)
    }

    fn launch_image(&self, image: &str, extra: &[&str], cmd: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        c.args([
            "launch",
            "--runtime",
            "docker",
            "--image",
            image,
            "--job",
            self.job,
        ])
        .arg("--workspace")
        .arg(&self.w)
        .args(["--label", &format!("mount-plan-test.run={}", self.label)])
        .args(extra)
        .arg("--")
        .args(cmd);
        sh(&mut c)
    }

    fn leftovers(&self) -> String {
        let o = sh(Command::new("docker").args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=mount-plan-test.run={}", self.label),
        ]));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }
}

impl Drop for Ws {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.top);
    }
}

fn unique() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn launch_leaves_out_in_the_job_dir_and_exits_0() {
    if !docker_ready() {
        return;
    }
    let ws = Ws::new("out");
    let o = ws.launch(&[], &["sh", "-c", "echo hi > out"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    assert_eq!(fs::read_to_string(ws.w.join("job1/out")).unwrap(), "hi\n");
    assert_eq!(ws.leftovers(), "", "no container remains");
}

/// The first try of a new user: no flags. Docker cannot set noexec on binds (hardening): the
/// launch runs, with exactly one warning naming it; a site that requires it gets 125.
fn default_launch_runs_with_one_hardening_warning_and_require_refuses() {
    if !docker_ready() {
        return;
    }
    let ws = Ws::new("default");
    let o = ws.launch(&[], &["true"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "exactly one warning: {err}");
    assert!(
        warnings[0].contains("noexec") && warnings[0].contains("--require noexec"),
        "{err}"
    );
    assert_eq!(ws.leftovers(), "");
    let o = ws.launch(&["--require", "noexec"], &["sh", "-c", "echo ran > ran"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "stderr: {err}");
    assert!(
        err.contains("protection-unavailable") && err.contains("noexec"),
        "{err}"
    );
    assert!(!ws.w.join("job1/ran").exists(), "the command ran");
    assert_eq!(ws.leftovers(), "");
    // The same requirement from the site's layout file.
    let layout = ws.top.join("layout.toml");
    fs::write(&layout, "require = [\"noexec\"]\n").unwrap();
    let o = ws.launch(
        &["--layout", layout.to_str().unwrap()],
        &["sh", "-c", "echo ran > ran"],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "stderr: {err}");
    assert!(
        err.contains("protection-unavailable") && err.contains("noexec"),
        "{err}"
    );
    assert!(!ws.w.join("job1/ran").exists(), "the command ran");
    assert_eq!(ws.leftovers(), "");
}

fn launch_exits_with_the_container_status_and_streams_output() {
    if !docker_ready() {
        return;
    }
    let ws = Ws::new("exit");
    let o = ws.launch(&[], &["sh", "-c", "pwd; echo to-stderr >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "stderr: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "/workspace/job1\n");
    assert!(text(&o.stderr).contains("to-stderr"), "{}", text(&o.stderr));
    assert_eq!(ws.leftovers(), "");
}

fn failures_before_the_command_exit_125_and_leave_nothing() {
    if !docker_ready() {
        return;
    }
    let ws = Ws::new("fail");
    let cases: [(&str, &[&str], &str); 6] = [
        (
            "mount-plan-no-such-image:x",
            &[],
            "engine rule `image-missing`",
        ),
        (IMAGE, &["--require", "noexec"], "cannot honour \"noexec\""),
        (
            IMAGE,
            &["--network", "host"],
            "spec rule `network-namespace`",
        ),
        (IMAGE, &["--user", "root"], "spec rule `user`"),
        (
            IMAGE,
            &["--cap-add", "mknod"],
            "spec rule `capability-forbidden`: capability \"mknod\" is never granted to a job: it lets a job plant device nodes",
        ),
        (
            IMAGE,
            &["--socket", "/nonexistent/docker.sock"],
            "engine rule `connect`",
        ),
    ];
    for (image, extra, want) in cases {
        let o = ws.launch_image(image, extra, &["sh", "-c", "echo ran > ran"]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(125), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(
            !ws.w.join("job1/ran").exists(),
            "{extra:?}: the command ran"
        );
    }
    // A command that does not exist: the gate cannot exec it; 125 too, container removed.
    let o = ws.launch(&[], &["/no/such/command"]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("engine rule `gate-refused`")
            && text(&o.stderr).contains("gate-exec"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(ws.leftovers(), "");
}

/// Every capability is dropped; `--cap-add` adds back exactly the one asked (CAP_CHOWN is
/// bit 0 of the bounding set).
fn cap_add_grants_only_what_is_asked() {
    if !docker_ready() {
        return;
    }
    let ws = Ws::new("caps");
    let script = ["sh", "-c", "grep CapBnd /proc/self/status"];
    let o = ws.launch(&[], &script);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "CapBnd:\t0000000000000000\n");
    let o = ws.launch(&["--cap-add", "cap_chown"], &script);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "CapBnd:\t0000000000000001\n");
    assert_eq!(ws.leftovers(), "");
}

fn audit_reports_a_wider_mount_and_passes_a_launched_container() {
    if !docker_ready() {
        return;
    }
    let ws = Ws::new("audit");
    let w = ws.w.to_str().unwrap();
    // By hand: the whole workspace at R instead of the plan.
    let o = sh(Command::new("docker").args([
        "run",
        "-d",
        "--label",
        &format!("mount-plan-test.run={}", ws.label),
        "-v",
        &format!("{w}:/workspace"),
        "-w",
        "/workspace/job1",
        IMAGE,
        "sleep",
        "30",
    ]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_owned();
    let a = sh(Command::new(BIN).args([
        "audit",
        "--runtime",
        "docker",
        &id,
        "--workspace",
        w,
        "--job",
        "job1",
    ]));
    let report = text(&a.stdout);
    let _ = sh(Command::new("docker").args(["rm", "-f", &id]));
    assert_eq!(a.status.code(), Some(1), "{report}{}", text(&a.stderr));
    assert!(
        report.contains(&format!(
            "audit rule `unplanned-mount`: unplanned bind mount of {w:?} at \"/workspace\""
        )),
        "{report}"
    );
    assert!(
        report.contains("audit rule `missing-mount`: planned tmpfs mount at \"/workspace\""),
        "{report}"
    );
    assert!(
        report.contains("audit rule `no-new-privileges`"),
        "{report}"
    );

    // A container launched by mount-plan (kept) conforms.
    let o = ws.launch(
        &["--keep", "--name", &format!("mp-{}", ws.label)],
        &["sh", "-c", ":"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let name = format!("mp-{}", ws.label);
    let a = sh(Command::new(BIN).args([
        "audit",
        "--runtime",
        "docker",
        &name,
        "--workspace",
        w,
        "--job",
        "job1",
    ]));
    let _ = sh(Command::new("docker").args(["rm", "-f", &name]));
    assert_eq!(
        a.status.code(),
        Some(0),
        "{}{}",
        text(&a.stdout),
        text(&a.stderr)
    );
    assert!(text(&a.stdout).contains("conforms"), "{}", text(&a.stdout));
    assert_eq!(ws.leftovers(), "");
}

/// `audit --verify`: the bind sources Docker reports are looked at on this host and compared
/// with the pins of the audit's own host check. A launched (kept) container conforms; a
/// container whose source paths are a symlink to `startup/` and a sibling job directory gets
/// one difference each, naming the mount and both identities.
fn audit_verify_compares_bind_sources_with_the_pins() {
    if !docker_ready() {
        return;
    }
    let ws = Ws::new("audit-verify");
    let w = ws.w.to_str().unwrap();
    let name = format!("mp-{}", ws.label);
    let o = ws.launch(
        &["--accept-missing", "noexec", "--keep", "--name", &name],
        &["sh", "-c", ":"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let audit = |container: &str| {
        sh(Command::new(BIN).args([
            "audit",
            "--runtime",
            "docker",
            container,
            "--workspace",
            w,
            "--job",
            "job1",
            "--accept-missing",
            "noexec",
            "--verify",
        ]))
    };
    let a = audit(&name);
    let _ = sh(Command::new("docker").args(["rm", "-f", &name]));
    assert_eq!(
        a.status.code(),
        Some(0),
        "{}{}",
        text(&a.stdout),
        text(&a.stderr)
    );

    // By hand: startup through a symlink, a sibling job's directory as the job bind.
    fs::create_dir(ws.w.join("job2")).unwrap();
    let link = ws.top.join("startup-link");
    std::os::unix::fs::symlink(ws.w.join("startup"), &link).unwrap();
    let o = sh(Command::new("docker").args([
        "run",
        "-d",
        "--label",
        &format!("mount-plan-test.run={}", ws.label),
        "-v",
        &format!("{}:/workspace/startup:ro", link.to_str().unwrap()),
        "-v",
        &format!("{w}/job2:/workspace/job1"),
        IMAGE,
        "sleep",
        "30",
    ]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_owned();
    let a = audit(&id);
    let _ = sh(Command::new("docker").args(["rm", "-f", &id]));
    let report = text(&a.stdout);
    assert_eq!(a.status.code(), Some(1), "{report}{}", text(&a.stderr));
    assert!(
        report.contains(&format!(
            "pin rule `pin-identity`: the bind at \"/workspace/job1\" has the source {:?} with identity",
            ws.w.join("job2").to_str().unwrap()
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!(
            "pin rule `pin-link`: the bind at \"/workspace/startup\" has the source {:?}, which is a symlink",
            link.to_str().unwrap()
        )),
        "{report}"
    );
    // And what the running container holds: the sibling at the job's target, nothing at
    // the unmounted local/ (the startup link led to the pinned directory).
    assert!(
        report.contains("pin rule `pin-held`: the container holds at \"/workspace/job1\""),
        "{report}"
    );
    assert!(
        report.contains("pin rule `pin-held-unreadable`: the container's \"/workspace/local\""),
        "{report}"
    );
    assert_eq!(report.matches("pin rule").count(), 4, "{report}");
}

/// Issue 21, finding 9: `audit --verify` compares what the running container holds (through
/// `/proc/PID/root`), not only what the host path leads to now. W/J is swapped for a link to
/// another directory before the container starts and swapped back after: the host path
/// matches the pin again, the container still holds the other directory.
fn audit_verify_compares_what_the_container_holds() {
    if !docker_ready() {
        return;
    }
    let ws = Ws::new("audit-held");
    let w = ws.w.to_str().unwrap();
    let other = ws.w.join("other");
    fs::create_dir(&other).unwrap();
    let (job, real) = (ws.w.join("job1"), ws.w.join("job1.real"));
    fs::rename(&job, &real).unwrap();
    std::os::unix::fs::symlink(&other, &job).unwrap();
    let o = sh(Command::new("docker").args([
        "run",
        "-d",
        "--label",
        &format!("mount-plan-test.run={}", ws.label),
        "-v",
        &format!("{w}/startup:/workspace/startup:ro"),
        "-v",
        &format!("{w}/local:/workspace/local:ro"),
        "-v",
        &format!("{w}/job1:/workspace/job1"),
        IMAGE,
        "sleep",
        "60",
    ]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_owned();
    // Swapped back: the host path is the pinned directory again.
    fs::remove_file(&job).unwrap();
    fs::rename(&real, &job).unwrap();
    let a = sh(Command::new(BIN).args([
        "audit",
        "--runtime",
        "docker",
        &id,
        "--workspace",
        w,
        "--job",
        "job1",
        "--accept-missing",
        "noexec",
        "--verify",
    ]));
    let _ = sh(Command::new("docker").args(["rm", "-f", &id]));
    let report = text(&a.stdout);
    assert_eq!(a.status.code(), Some(1), "{report}{}", text(&a.stderr));
    assert!(
        report.contains("pin rule `pin-held`: the container holds at \"/workspace/job1\""),
        "{report}"
    );
    // Only the swapped bind: the host paths and the other binds are as pinned.
    assert_eq!(report.matches("pin rule").count(), 1, "{report}");
    assert!(!report.contains("were not compared"), "{report}");
}

/// Issue 21, finding 4: a container launched on another machine that shares this engine and
/// this host name (another machine id and boot id) is not judged: `gc` keeps it and names it
/// on stderr (before, a different boot id read as "rebooted": it would be removed). Dry run,
/// so that no other test's container is touched.
fn gc_keeps_and_names_a_container_of_another_machine() {
    if !docker_ready() {
        return;
    }
    let ws = Ws::new("gc-machine");
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let pid_ns = fs::read_link("/proc/self/ns/pid").unwrap();
    let labels = [
        "io.mount-plan.managed=1".to_owned(),
        "io.mount-plan.job=job1".to_owned(),
        format!("mount-plan-test.run={}", ws.label),
        "io.mount-plan.launch=0123456789abcdef0123456789abcdef".to_owned(),
        format!("io.mount-plan.host={}", host.trim()),
        "io.mount-plan.machine=fedcba9876543210fedcba9876543210".to_owned(),
        "io.mount-plan.boot-id=00000000-1111-2222-3333-444444444444".to_owned(),
        format!("io.mount-plan.pid-ns={}", pid_ns.display()),
        "io.mount-plan.pid=999999999".to_owned(),
        "io.mount-plan.pid-start=1".to_owned(),
    ];
    let mut create = Command::new("docker");
    create.arg("create");
    for l in &labels {
        create.args(["--label", l]);
    }
    let o = sh(create.args([IMAGE, "true"]));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_owned();
    let g = sh(Command::new(BIN).args(["gc", "--runtime", "docker", "--dry-run"]));
    let _ = sh(Command::new("docker").args(["rm", "-f", &id]));
    let (stdout, stderr) = (text(&g.stdout), text(&g.stderr));
    assert_eq!(g.status.code(), Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains(&id), "judged an orphan: {stdout}");
    assert!(
        stderr.lines().any(|l| l.starts_with(&format!("kept {id}"))
            && l.contains("another machine")
            && l.contains("fedcba9876543210fedcba9876543210")),
        "{stderr}"
    );
}

fn doctor_exit_status_follows_the_default_plan() {
    if !docker_ready() {
        return;
    }
    let o = sh(Command::new(BIN).args(["doctor", "--runtime", "docker"]));
    let out = text(&o.stdout);
    // noexec is hardening: Docker cannot apply it, and the default plan runs with a warning.
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("api:      1."), "{out}");
    assert!(out.contains("noexec               not available"), "{out}");
    assert!(out.contains("--require refuses them"), "{out}");
    let o = sh(Command::new(BIN).args(["doctor", "--runtime", "docker", "--require", "noexec"]));
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("hardening required by --require"), "{out}");
    // A contract protection is always required: naming it in --require is a usage error.
    let o = sh(Command::new(BIN).args([
        "doctor",
        "--runtime",
        "docker",
        "--require",
        "read-only-root",
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("part of the contract"),
        "{}",
        text(&o.stderr)
    );
    let o = sh(Command::new(BIN).args([
        "doctor",
        "--runtime",
        "docker",
        "--socket",
        "/nonexistent.sock",
    ]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stdout).contains("unreachable"),
        "{}",
        text(&o.stdout)
    );
}

fn a_refused_launch_removes_the_job_directory_it_created() {
    if !docker_ready() {
        return;
    }
    let ws = Ws::new("created");
    let launch_image = |image: &str, extra: &[&str]| {
        sh(Command::new(BIN)
            .args([
                "launch",
                "--runtime",
                "docker",
                "--image",
                image,
                "--job",
                "job-new",
            ])
            .arg("--workspace")
            .arg(&ws.w)
            .args(["--label", &format!("mount-plan-test.run={}", ws.label)])
            .arg("--create-job-dir")
            .args(extra)
            .args(["--", "sh", "-c", "echo ran > ran"]))
    };
    let launch = |extra: &[&str]| launch_image(IMAGE, extra);
    // Refused by the engine check (the site requires noexec, which Docker cannot apply): the
    // directory created by the host check must not survive.
    let o = launch(&["--require", "noexec"]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    assert!(
        !ws.w.join("job-new").exists(),
        "a half-created job directory was left"
    );
    // The same for an image that does not exist.
    let o = launch_image("mount-plan-no-such-image:x", &[]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o.stderr));
    assert!(
        !ws.w.join("job-new").exists(),
        "a half-created job directory was left"
    );
    // A successful launch keeps it, with the output.
    let o = launch(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        fs::read_to_string(ws.w.join("job-new/ran")).unwrap(),
        "ran\n"
    );
    assert_eq!(ws.leftovers(), "");
}

fn main() {
    use mount_plan_testkit::harness::{self, Need};
    const DOCKER: &[Need] = &[Need::Docker, Need::Root, Need::Busybox];
    harness::run(vec![
        harness::test(
            "default_launch_runs_with_one_hardening_warning_and_require_refuses",
            DOCKER,
            default_launch_runs_with_one_hardening_warning_and_require_refuses,
        ),
        harness::test(
            "launch_leaves_out_in_the_job_dir_and_exits_0",
            DOCKER,
            launch_leaves_out_in_the_job_dir_and_exits_0,
        ),
        harness::test(
            "launch_exits_with_the_container_status_and_streams_output",
            DOCKER,
            launch_exits_with_the_container_status_and_streams_output,
        ),
        harness::test(
            "failures_before_the_command_exit_125_and_leave_nothing",
            DOCKER,
            failures_before_the_command_exit_125_and_leave_nothing,
        ),
        harness::test(
            "cap_add_grants_only_what_is_asked",
            DOCKER,
            cap_add_grants_only_what_is_asked,
        ),
        harness::test(
            "audit_reports_a_wider_mount_and_passes_a_launched_container",
            DOCKER,
            audit_reports_a_wider_mount_and_passes_a_launched_container,
        ),
        harness::test(
            "audit_verify_compares_bind_sources_with_the_pins",
            DOCKER,
            audit_verify_compares_bind_sources_with_the_pins,
        ),
        harness::test(
            "audit_verify_compares_what_the_container_holds",
            DOCKER,
            audit_verify_compares_what_the_container_holds,
        ),
        harness::test(
            "gc_keeps_and_names_a_container_of_another_machine",
            DOCKER,
            gc_keeps_and_names_a_container_of_another_machine,
        ),
        harness::test(
            "doctor_exit_status_follows_the_default_plan",
            DOCKER,
            doctor_exit_status_follows_the_default_plan,
        ),
        harness::test(
            "a_refused_launch_removes_the_job_directory_it_created",
            DOCKER,
            a_refused_launch_removes_the_job_directory_it_created,
        ),
    ]);
}
