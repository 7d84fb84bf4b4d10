//! The conformance suite against the real Docker engine, through `DockerEngine`.
//!
//! Needs a Docker engine, root (the fixture mounts tmpfs and makes device nodes) and
//! Debian's busybox-static. Without them: fails under `CI`, otherwise shown as ignored.

mod support;

use mount_plan_launch::{Engine, Protection};
use support::conformance::{self, Scenario};

async fn docker_as_root_conforms() {
    let Some((rt, fx)) = support::docker::fixture(true).await else {
        return;
    };
    let rt: Box<dyn Engine> = Box::new(rt);
    let failures = conformance::scenario(rt.as_ref(), &fx, Scenario::AsRoot).await;
    conformance::assert_conforms("docker", Scenario::AsRoot, &failures);
}

async fn docker_as_user_conforms() {
    let Some((rt, fx)) = support::docker::fixture(true).await else {
        return;
    };
    let rt: Box<dyn Engine> = Box::new(rt);
    let failures = conformance::scenario(rt.as_ref(), &fx, Scenario::AsUser).await;
    conformance::assert_conforms("docker", Scenario::AsUser, &failures);
}

async fn docker_labels_and_audit() {
    let Some((rt, fx)) = support::docker::fixture(true).await else {
        return;
    };
    conformance::labels_and_audit(&rt, &fx).await;
}

async fn docker_gc_reports_only_what_it_removed() {
    let Some((rt, fx)) = support::docker::fixture(true).await else {
        return;
    };
    conformance::gc_reports_only_what_it_removed(&rt, &fx).await;
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

async fn docker_gate_refuses_a_swapped_job_dir() {
    let Some((rt, fx)) = support::docker::fixture(true).await else {
        return;
    };
    let rt: Box<dyn Engine> = Box::new(rt);
    conformance::swapped_job_dir_is_refused_by_the_gate(rt.as_ref(), &fx).await;
}

async fn docker_planted_setuid_and_devices_give_host_users_nothing() {
    let Some((rt, fx)) = support::docker::fixture(true).await else {
        return;
    };
    let rt: Box<dyn Engine> = Box::new(rt);
    conformance::planted_setuid_and_devices_give_host_users_nothing(rt.as_ref(), &fx).await;
}

async fn docker_the_command_runs_with_no_new_privileges() {
    let Some((rt, fx)) = support::docker::fixture(true).await else {
        return;
    };
    let rt: Box<dyn Engine> = Box::new(rt);
    conformance::the_command_runs_with_no_new_privileges(rt.as_ref(), &fx).await;
}

async fn docker_scratch_root_has_the_planned_mode() {
    let Some((rt, fx)) = support::docker::fixture(true).await else {
        return;
    };
    let rt: Box<dyn Engine> = Box::new(rt);
    conformance::scratch_root_has_the_planned_mode(rt.as_ref(), &fx).await;
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const DOCKER: &[Need] = &[Need::Docker, Need::Root, Need::Busybox];
    harness::run(vec![
        harness::tokio(
            Runtime::Workers(2),
            "docker_gc_reports_only_what_it_removed",
            DOCKER,
            docker_gc_reports_only_what_it_removed,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "docker_as_root_conforms",
            DOCKER,
            docker_as_root_conforms,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "docker_gate_refuses_a_swapped_job_dir",
            DOCKER,
            docker_gate_refuses_a_swapped_job_dir,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "docker_scratch_root_has_the_planned_mode",
            DOCKER,
            docker_scratch_root_has_the_planned_mode,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "docker_planted_setuid_and_devices_give_host_users_nothing",
            DOCKER,
            docker_planted_setuid_and_devices_give_host_users_nothing,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "docker_the_command_runs_with_no_new_privileges",
            DOCKER,
            docker_the_command_runs_with_no_new_privileges,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "docker_as_user_conforms",
            DOCKER,
            docker_as_user_conforms,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "docker_labels_and_audit",
            DOCKER,
            docker_labels_and_audit,
        ),
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
}
