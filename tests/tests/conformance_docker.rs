//! The conformance suite against the real Docker engine, through `DockerEngine`.
//!
//! Needs a Docker engine, root (the fixture mounts tmpfs and makes device nodes) and
//! Debian's busybox-static. Without them: fails under `CI`, otherwise shown as ignored.

mod support;

use mount_plan_launch::{Engine, Protection};
use support::conformance::Scenario;
use support::trials::EngineSetup;

fn setup(_: Scenario) -> EngineSetup {
    Box::pin(async {
        let (rt, fx) = support::docker::fixture(true).await?;
        Some((Box::new(rt) as Box<dyn Engine>, fx))
    })
}

async fn docker_doctor_reports_versions_and_protections() {
    let Some((rt, _fx)) = support::docker::fixture(true).await else {
        return;
    };
    let report = rt.report();
    let engine = rt.info();
    assert_eq!(engine.engine, "docker");
    assert!(
        !engine.version.is_empty() && engine.version != "unknown",
        "{engine:?}"
    );
    let api: mount_plan_docker::ApiVersion = engine.api_version.parse().expect("api version");
    assert!(api >= mount_plan_docker::ApiVersion::new(1, 40), "{api}");
    assert_eq!(report.protections.len(), Protection::ALL.len());
    assert!(!report
        .availability(Protection::NoExecOnBinds)
        .is_available());
    assert!(report
        .availability(Protection::NonRecursiveBinds)
        .is_available());
}

/// The version table's answer for R's mode is what a probe container observes (0755 on
/// Docker 20.10 / runc 1.1.5).
async fn docker_root_mode_observed_matches_the_version_table() {
    let Some((rt, fx)) = support::docker::fixture(true).await else {
        return;
    };
    let seen = mount_plan_docker::probe::observe_root_mode(rt.client(), &fx.image)
        .await
        .expect("probe");
    assert_eq!(
        mount_plan_docker::root_mode_from_runtime(rt.info().runtime.as_deref()),
        Some(seen)
    );
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const DOCKER: &[Need] = &[Need::Docker, Need::Root, Need::Busybox];
    let mut trials = support::trials::common("docker", "docker", DOCKER, setup, &[]);
    trials.extend(vec![
        harness::tokio(
            Runtime::Workers(2),
            "docker_doctor_reports_versions_and_protections",
            DOCKER,
            docker_doctor_reports_versions_and_protections,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "docker_root_mode_observed_matches_the_version_table",
            DOCKER,
            docker_root_mode_observed_matches_the_version_table,
        ),
    ]);
    harness::run(trials);
}
