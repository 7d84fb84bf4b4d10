//! Faults: a missing image, a command that does not exist, an engine socket that does not
//! answer, a container killed mid-run. Each gives a clear error or exit status, and no
//! container with the test's unique label is left (checked with `docker ps -a`).

mod support;

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use mount_plan_docker::{ConnectOptions, DockerEngine};
use mount_plan_launch::{launch, Engine, LaunchError, LaunchOptions, LaunchSpec, LogChunk};
use support::conformance::{EngineFixture, Scenario};

fn spec(fx: &EngineFixture, plan: &mount_plan::MountPlan, label: &str) -> LaunchSpec {
    support::conformance::spec_for(fx, plan, Scenario::AsRoot, label)
}

/// The whole lifecycle; its error when it fails, which must say the command never ran.
async fn refused(
    rt: &DockerEngine,
    verified: &mount_plan_host::VerifiedPlan,
    spec: &LaunchSpec,
) -> LaunchError {
    let mut quiet = |_: &LogChunk| {};
    let failed = launch(rt, verified, spec, &LaunchOptions::default(), &mut quiet)
        .await
        .expect_err("the launch fails");
    assert!(!failed.command_ran, "{}", failed.error);
    failed.error
}

fn assert_nothing_left(label: &str) {
    let left = support::docker_ps_by_label("mount-plan-test.run", label);
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

async fn missing_image() {
    let Some((rt, fx)) = support::docker::fixture(false).await else {
        return;
    };
    let ws = fx.workspace();
    let verified = ws.verified();
    let label = support::unique("fault");
    let mut spec = spec(&fx, verified.plan(), &label);
    spec.image = "mount-plan-no-such-image:never".parse().unwrap();
    let err = refused(&rt, &verified, &spec).await;
    assert_eq!(err.rule(), "image-missing", "{err}");
    assert!(
        err.to_string().contains("mount-plan-no-such-image:never"),
        "{err}"
    );
    assert_nothing_left(&label);
}

async fn missing_command() {
    let Some((rt, fx)) = support::docker::fixture(false).await else {
        return;
    };
    let ws = fx.workspace();
    let verified = ws.verified();
    let label = support::unique("fault");
    let spec = spec(&fx, verified.plan(), &label).with_command(["/no/such/command"]);
    let err = refused(&rt, &verified, &spec).await;
    // The gate's exec fails: the command never ran (its check is `gate-exec`).
    assert!(
        matches!(&err, LaunchError::GateRefused { check, .. } if check == "gate-exec"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("/no/such/command") && msg.contains("was removed"),
        "{msg}"
    );
    assert_nothing_left(&label);
}

async fn killed_mid_run() {
    let Some((rt, fx)) = support::docker::fixture(false).await else {
        return;
    };
    let ws = fx.workspace();
    let verified = ws.verified();
    let label = support::unique("fault");
    let spec = spec(&fx, verified.plan(), &label).with_command(["/bin/sleep", "60"]);
    let job = support::started(&rt, &verified, &spec)
        .await
        .expect("launch");
    let killer = {
        let id = job.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            support::run(std::process::Command::new("docker").args(["kill", &id]))
        })
    };
    let status = rt.wait(&job).await.expect("wait");
    killer.join().unwrap().expect("docker kill");
    assert_eq!(status.code, 137, "SIGKILL is reported as 128 + 9");
    assert_eq!(
        rt.remove(&job).await.expect("remove"),
        mount_plan_launch::Removal::Removed
    );
    assert_nothing_left(&label);
}

async fn socket_nobody_listens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.sock");
    drop(UnixListener::bind(&path).unwrap()); // the file stays, nobody accepts
    let opts = ConnectOptions {
        host: Some(path.to_str().unwrap().to_owned()),
        connect_timeout: Duration::from_secs(5),
        ..ConnectOptions::default()
    };
    let err = DockerEngine::connect(&opts).await.unwrap_err();
    assert_eq!(err.rule(), "connect", "{err}");
    assert!(err.to_string().contains("dead.sock"), "{err}");
}

async fn socket_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // Accept connections and hold them open without a word.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let opts = ConnectOptions {
        host: Some(format!("unix://{}", path.display())),
        connect_timeout: Duration::from_secs(2),
        ..ConnectOptions::default()
    };
    let started = Instant::now();
    let err = DockerEngine::connect(&opts).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.rule(), "connect", "{err}");
    assert!(err.to_string().contains("no answer within"), "{err}");
}

async fn refused_before_create_leaves_nothing() {
    let Some((rt, fx)) = support::docker::fixture(false).await else {
        return;
    };
    let ws = fx.workspace();
    let verified = ws.verified();
    let label = support::unique("fault");
    let mut spec = spec(&fx, verified.plan(), &label);
    // The site requires noexec, which Docker cannot set on binds at any API version.
    spec.require
        .insert(mount_plan_launch::Protection::NoExecOnBinds);
    let err = refused(&rt, &verified, &spec).await;
    assert_eq!(err.rule(), "protection-unavailable", "{err}");
    let msg = err.to_string();
    let engine = rt.info();
    assert!(
        msg.contains(&engine.version) && msg.contains(&format!("API {}", engine.api_version)),
        "{msg}"
    );
    assert_nothing_left(&label);
}

async fn engine_added_volume_is_refused_by_the_audit() {
    let Some((rt, fx)) = support::docker::fixture(false).await else {
        return;
    };
    let image = support::image::docker_volume_image().expect("volume image");
    // W/J owned by container root, so that `ran` would appear if the command ran.
    let ws = fx.workspace_for(Scenario::AsRoot);
    let verified = ws.verified();
    let label = support::unique("fault");
    let mut spec =
        spec(&fx, verified.plan(), &label).with_command(["/bin/sh", "-c", "echo ran > ran"]);
    spec.image = image.parse().unwrap();
    let err = refused(&rt, &verified, &spec).await;
    assert_eq!(err.rule(), "audit", "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("unplanned volume mount") && msg.contains("\"/data\""),
        "{msg}"
    );
    // Audited before start: the command never ran.
    assert!(!ws.job_dir().join("ran").exists());
    assert_nothing_left(&label);
}

async fn stop_kills_after_the_grace_period() {
    let Some((rt, fx)) = support::docker::fixture(false).await else {
        return;
    };
    let ws = fx.workspace();
    let verified = ws.verified();
    let label = support::unique("fault");
    // PID 1 ignores SIGTERM unless it handles it: only the kill after the grace ends it.
    let spec = spec(&fx, verified.plan(), &label).with_command(["/bin/sleep", "60"]);
    let job = support::started(&rt, &verified, &spec)
        .await
        .expect("launch");
    let started = Instant::now();
    rt.stop(&job, Duration::from_secs(1)).await.expect("stop");
    let took = started.elapsed();
    let status = rt.wait(&job).await.expect("wait");
    assert_eq!(
        rt.remove(&job).await.expect("remove"),
        mount_plan_launch::Removal::Removed
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(20),
        "{took:?}"
    );
    assert_eq!(status.code, 137, "killed after the grace period");
    assert_nothing_left(&label);
}

/// The trace the runc advisories of November 2025 leave (CVE-2025-52565: a procfs file bound
/// at `/dev/console`; CVE-2025-31133: at a masked path), arranged on a real engine: the
/// create call of the backend's translation (gate first, its host copy bound, as `create`
/// sends it) plus a bind of the host's `/proc/sys/kernel/hostname` at `/dev/console`. runc
/// itself refuses a bind below `/proc` at a masked path, so the console is the place a test
/// can reach; the mountinfo the gate reads shows the same thing an exploited runc leaves
/// there (a `proc` entry away from `/proc`). An exploited runc would not report the bind in
/// the inspect, so the audit is left out here: the gate alone must refuse, before the command.
async fn procfs_file_at_the_console_is_refused_by_the_gate() {
    use bollard::models::{Mount, MountType};
    use futures_util::StreamExt;
    let Some((rt, fx)) = support::docker::fixture(false).await else {
        return;
    };
    let ws = fx.workspace();
    let verified = ws.verified();
    let label = support::unique("console");
    let spec = spec(&fx, verified.plan(), &label).with_command(["/bin/sh", "-c", "echo ran"]);
    let labels = mount_plan_launch::container_labels(verified.plan(), &spec);
    let mut call = mount_plan_docker::translate(verified.plan(), &spec, &labels, rt.info())
        .expect("translate");
    let gate = mount_plan_launch::gate::Gate::new(&verified);
    let (gate, archive) = gate.for_runtime(rt.runtime_root_mode());
    assert_eq!(
        archive, None,
        "the default read-only R needs no archive call"
    );
    let (entrypoint, cmd) = gate.command_line(&spec, &[], &[]).expect("command line");
    call.body.entrypoint = Some(entrypoint);
    call.body.cmd = Some(cmd);
    let copy = mount_plan_launch::gate_copy::GateCopy::ensure().expect("the gate's host copy");
    let mounts = call
        .body
        .host_config
        .as_mut()
        .and_then(|h| h.mounts.as_mut())
        .expect("mounts");
    mounts.push(mount_plan_docker::gate_mount(&copy.source(), false));
    mounts.push(Mount {
        target: Some("/dev/console".into()),
        source: Some("/proc/sys/kernel/hostname".into()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        ..Mount::default()
    });
    let id = rt
        .client()
        .create_container(Some(call.options), call.body)
        .await
        .expect("create")
        .id;
    rt.start(&id).await.expect("start");
    let status = rt.wait(&id).await.expect("wait");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut logs = rt.logs(&id);
    while let Some(chunk) = logs.next().await {
        let chunk = chunk.expect("logs");
        match chunk.stream {
            mount_plan_launch::OutputStream::Stdout => out.extend(chunk.bytes),
            mount_plan_launch::OutputStream::Stderr => err.extend(chunk.bytes),
        }
    }
    assert_eq!(
        rt.remove(&id).await.expect("remove"),
        mount_plan_launch::Removal::Removed
    );
    assert_nothing_left(&label);
    let err = String::from_utf8_lossy(&err);
    assert_eq!(status.code, mount_plan_launch::gate::GATE_REFUSED, "{err}");
    let refusal = gate.refusal(&err).expect("the gate's refusal line");
    assert_eq!(refusal.check, "gate-console", "{err}");
    assert!(refusal.message.contains("CVE-2025-52565"), "{err}");
    assert!(
        !String::from_utf8_lossy(&out).contains("ran"),
        "the command ran"
    );
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const DOCKER: &[Need] = &[Need::Docker, Need::Root, Need::Busybox];
    const NOTHING: &[Need] = &[];
    harness::run(vec![
        harness::tokio(Runtime::Workers(2), "missing_image", DOCKER, missing_image),
        harness::tokio(
            Runtime::Workers(2),
            "missing_command",
            DOCKER,
            missing_command,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "procfs_file_at_the_console_is_refused_by_the_gate",
            DOCKER,
            procfs_file_at_the_console_is_refused_by_the_gate,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "killed_mid_run",
            DOCKER,
            killed_mid_run,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "socket_nobody_listens",
            NOTHING,
            socket_nobody_listens,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "socket_never_answers",
            NOTHING,
            socket_never_answers,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "refused_before_create_leaves_nothing",
            DOCKER,
            refused_before_create_leaves_nothing,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "engine_added_volume_is_refused_by_the_audit",
            DOCKER,
            engine_added_volume_is_refused_by_the_audit,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "stop_kills_after_the_grace_period",
            DOCKER,
            stop_kills_after_the_grace_period,
        ),
    ]);
}
