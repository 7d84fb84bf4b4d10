//! The conformance suite against rootful Podman, through `PodmanEngine` as a
//! `Box<dyn Engine>`, plus the launch failure paths.
//!
//! Needs the rootful service of `.ci/podman-setup` (`MOUNT_PLAN_PODMAN_ROOTFUL_SOCKET`, by
//! default `unix:///run/podman/podman.sock`), root (the fixture mounts tmpfs and makes device
//! nodes) and Debian's busybox-static. Without them: fails under `CI`, otherwise shown as ignored.

#[path = "support/podman.rs"]
mod podman_support;
mod support;

use support::trials::EngineSetup;

use mount_plan_launch::{Engine, LaunchSpec, Protection};
use mount_plan_podman::{PodmanEngine, PodmanOptions, UserNamespace};
use podman_support::{Mode, Service};
use support::conformance::{self, EngineFixture, Scenario};

async fn rootful(
    userns: UserNamespace,
    nonroot: &str,
    job_owner: (u32, u32),
) -> Option<(Box<dyn Engine>, EngineFixture, Service)> {
    let service = podman_support::service(Mode::Rootful)?;
    let rt = podman_support::runtime(&service, userns).await?;
    support::require(
        "root",
        if rustix::process::geteuid().is_root() {
            Ok(())
        } else {
            Err("not root".into())
        },
    )?;
    let image = support::require(
        "the podman test image",
        podman_support::podman_image(&service.url),
    )?;
    let fx = podman_support::fixture(&service, image, nonroot, job_owner)?;
    Some((Box::new(rt), fx, service))
}

async fn podman_rootful_doctor_reports_versions_and_protections() {
    let Some((rt, _, service)) =
        rootful(UserNamespace::EngineDefault, "1000:1000", (1000, 1000)).await
    else {
        return;
    };
    let report = rt.report();
    let engine = rt.info();
    assert_eq!(engine.engine, "podman");
    assert_eq!(engine.endpoint, service.url);
    assert!(!engine.rootless);
    let version = mount_plan_podman::parse_version(&engine.version).expect("version");
    assert!(version >= mount_plan_podman::MIN_VERSION, "{version}");
    assert!(
        engine
            .runtime
            .as_deref()
            .is_some_and(|r| r.starts_with("runc ")),
        "{engine:?}"
    );
    assert_eq!(report.protections.len(), Protection::ALL.len());
    for p in Protection::ALL {
        assert!(report.availability(p).is_available(), "{p}: {report:?}");
    }
}

/// The whole lifecycle; its error when it fails, which must say the command never ran.
async fn refused(
    rt: &dyn Engine,
    verified: &mount_plan_host::VerifiedPlan,
    spec: &LaunchSpec,
) -> mount_plan_launch::LaunchError {
    let mut quiet = |_: &mount_plan_launch::LogChunk| {};
    let options = mount_plan_launch::LaunchOptions::default();
    let failed = mount_plan_launch::launch(rt, verified, spec, &options, &mut quiet)
        .await
        .expect_err("the launch fails");
    assert!(!failed.command_ran, "{}", failed.error);
    failed.error
}

/// Containers carrying `run_label`, as the backend and as the podman CLI see them.
async fn leftovers(rt: &dyn Engine, service: &Service, run_label: &str) -> Vec<String> {
    let mut ids = support::leftovers(rt, run_label).await;
    ids.extend(podman_support::podman_ps_by_label(
        &service.url,
        "mount-plan-test.run",
        run_label,
    ));
    ids
}

async fn podman_rootful_failed_launches_leave_nothing_behind() {
    let Some((rt, fx, service)) =
        rootful(UserNamespace::EngineDefault, "1000:1000", (1000, 1000)).await
    else {
        return;
    };
    let ws = fx.workspace();
    let verified = ws.verified();

    // An image that is not in the store: nothing is pulled, nothing is created.
    let label = support::unique("run");
    let mut spec = conformance::spec_for(&fx, verified.plan(), Scenario::AsRoot, &label);
    spec.image = "localhost/mount-plan-no-such-image:none".parse().unwrap();
    let e = refused(rt.as_ref(), &verified, &spec).await;
    assert_eq!(e.rule(), "image-missing", "{e}");
    assert!(leftovers(rt.as_ref(), &service, &label).await.is_empty());

    // A command that does not exist: the gate cannot exec it (the command never ran), the
    // container is removed.
    let label = support::unique("run");
    let mut spec = conformance::spec_for(&fx, verified.plan(), Scenario::AsRoot, &label);
    spec.command = vec!["/no/such/command".into()];
    let e = refused(rt.as_ref(), &verified, &spec).await;
    assert_eq!(e.rule(), "gate-refused", "{e}");
    assert!(
        e.to_string().contains("gate-exec") && e.to_string().contains("/no/such/command"),
        "{e}"
    );
    assert!(leftovers(rt.as_ref(), &service, &label).await.is_empty());

    // A name that is taken: the second create fails, the first container is untouched.
    let label = support::unique("run");
    let mut spec = conformance::spec_for(&fx, verified.plan(), Scenario::AsRoot, &label);
    spec.command = vec!["/bin/sleep".into(), "30".into()];
    spec.name = Some(support::unique("mp-name").parse().unwrap());
    let first = support::started(rt.as_ref(), &verified, &spec)
        .await
        .expect("first launch");
    // The failed launch looks for its own containers by launch id: the other one stays.
    let e = refused(rt.as_ref(), &verified, &spec).await;
    assert_eq!(e.rule(), "create", "{e}");
    assert_eq!(leftovers(rt.as_ref(), &service, &label).await.len(), 2);
    rt.stop(&first, std::time::Duration::from_millis(200))
        .await
        .expect("stop");
    let status = rt.wait(&first).await.expect("wait");
    assert_eq!(
        status.code, 137,
        "SIGKILL after the grace period: {status:?}"
    );
    assert_eq!(
        rt.remove(&first).await.expect("remove"),
        mount_plan_launch::Removal::Removed
    );
    assert!(leftovers(rt.as_ref(), &service, &label).await.is_empty());
    assert_eq!(
        rt.remove(&first)
            .await
            .expect("removing a container that is gone is not an error"),
        mount_plan_launch::Removal::AlreadyGone
    );

    // keep-id is refused on a rootful service before anything is created.
    let keep_id = PodmanEngine::connect(
        &service.url,
        PodmanOptions {
            userns: UserNamespace::KeepId,
            ..PodmanOptions::default()
        },
    )
    .await
    .expect("connect");
    let label = support::unique("run");
    let spec = conformance::spec_for(&fx, verified.plan(), Scenario::AsRoot, &label);
    let e = refused(&keep_id, &verified, &spec).await;
    assert_eq!(e.rule(), "spec-unsupported", "{e}");
    assert!(leftovers(rt.as_ref(), &service, &label).await.is_empty());
}

async fn podman_rootful_exit_codes_and_output() {
    let Some((rt, fx, _)) = rootful(UserNamespace::EngineDefault, "1000:1000", (1000, 1000)).await
    else {
        return;
    };
    let ws = fx.workspace();
    let verified = ws.verified();
    let mut spec = LaunchSpec::new(fx.image.parse().unwrap()).with_command([
        "/bin/sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2; exit 7",
    ]);
    spec.labels
        .insert("mount-plan-test.run", &support::unique("run"))
        .unwrap();
    let out = conformance::run_captured(rt.as_ref(), &verified, &spec)
        .await
        .expect("run");
    assert_eq!(out.status.code, 7);
    assert_eq!(out.stdout, "to-stdout\n");
    assert_eq!(out.stderr, "to-stderr\n");
}

async fn an_unreachable_service_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("unix://{}/podman.sock", dir.path().display());
    let e = PodmanEngine::connect(&url, PodmanOptions::default())
        .await
        .expect_err("nothing listens there");
    assert_eq!(e.rule(), "connect");
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(
        chain.contains(&format!("podman system service --time=0 {url}")),
        "{chain}"
    );
    let e = PodmanEngine::connect("tcp://127.0.0.1:1", PodmanOptions::default())
        .await
        .expect_err("not a unix socket");
    assert_eq!(e.rule(), "connect");
    assert!(
        std::error::Error::source(&e)
            .unwrap()
            .to_string()
            .contains("rule `podman-endpoint`"),
        "{e}"
    );
}

async fn podman_rootful_audit_catches_a_container_made_without_the_plan() {
    let Some((rt, fx, service)) =
        rootful(UserNamespace::EngineDefault, "1000:1000", (1000, 1000)).await
    else {
        return;
    };
    let ws = fx.workspace();
    let verified = ws.verified();
    let plan = verified.plan();
    // What a hand-written `podman create -v` makes of the same directories: recursive,
    // rprivate, no nosuid/nodev/noexec, the whole workspace writable, no root tmpfs.
    let label = support::unique("run");
    let id = support::run(
        std::process::Command::new("podman")
            .args(["--url", &service.url, "create", "--label"])
            .arg(format!("mount-plan-test.run={label}"))
            .arg("-v")
            .arg(format!("{}:{}", ws.w.display(), plan.container_root()))
            .arg("--workdir")
            .arg(plan.workdir().as_str())
            .args([fx.image.as_str(), "/bin/true"]),
    )
    .expect("podman create");
    let observed = rt.inspect(id.trim()).await;
    support::run(std::process::Command::new("podman").args([
        "--url",
        &service.url,
        "rm",
        "-f",
        id.trim(),
    ]))
    .expect("podman rm");
    let observed = observed.expect("inspect");
    let rules: std::collections::BTreeSet<&str> =
        mount_plan_launch::audit(plan, &observed, &fx.lacks_hardening, &Default::default())
            .iter()
            .map(|d| d.rule())
            .collect();
    // `podman create` keeps the engine's default capabilities (MKNOD, SETFCAP...): the
    // bounding set it reports holds them.
    for rule in ["missing-mount", "unplanned-mount", "cap-drop"] {
        assert!(rules.contains(rule), "{rule} not in {rules:?}");
    }
    // The unplanned bind is reported as podman reports it: recursive, rprivate.
    let bind = &observed.binds[0];
    assert_eq!(bind.non_recursive, Some(false), "{bind:?}");
    assert_eq!(bind.propagation.as_deref(), Some("rprivate"), "{bind:?}");
    assert_eq!(
        observed.tmpfs.as_deref(),
        Some(&[][..]),
        "no tmpfs: {observed:?}"
    );
}

/// Podman's follower can lag after the container stopped, end early as if the log were whole,
/// or break: a job that writes a lot, interleaved on both streams, while it exits at once,
/// four at a time and three times over, must still deliver every byte exactly once and in
/// order per stream.
async fn podman_rootful_large_output_arrives_complete_and_once() {
    let Some((rt, fx, _)) = rootful(UserNamespace::EngineDefault, "1000:1000", (1000, 1000)).await
    else {
        return;
    };
    podman_support::bounded(
        "large output",
        300,
        conformance::large_output_arrives_complete_and_once(rt.as_ref(), &fx, 4, 3),
    )
    .await;
}

fn setup(_: Scenario) -> EngineSetup {
    Box::pin(async {
        let (rt, fx, _) = rootful(UserNamespace::EngineDefault, "1000:1000", (1000, 1000)).await?;
        Some((rt, fx))
    })
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const ROOTFUL: &[Need] = &[Need::PodmanRootful, Need::Root, Need::Busybox];
    const NOTHING: &[Need] = &[];
    let mut trials =
        support::trials::common("podman_rootful", "podman rootful", ROOTFUL, setup, &[]);
    trials.extend(vec![
        harness::tokio(
            Runtime::Workers(2),
            "podman_rootful_doctor_reports_versions_and_protections",
            ROOTFUL,
            podman_rootful_doctor_reports_versions_and_protections,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "podman_rootful_failed_launches_leave_nothing_behind",
            ROOTFUL,
            podman_rootful_failed_launches_leave_nothing_behind,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "podman_rootful_exit_codes_and_output",
            ROOTFUL,
            podman_rootful_exit_codes_and_output,
        ),
        harness::tokio(
            Runtime::CurrentThread,
            "an_unreachable_service_says_how_to_start_one",
            NOTHING,
            an_unreachable_service_says_how_to_start_one,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "podman_rootful_audit_catches_a_container_made_without_the_plan",
            ROOTFUL,
            podman_rootful_audit_catches_a_container_made_without_the_plan,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "podman_rootful_large_output_arrives_complete_and_once",
            ROOTFUL,
            podman_rootful_large_output_arrives_complete_and_once,
        ),
    ]);
    harness::run(trials);
}
