//! The conformance suite against Docker 26 (Debian 13's docker.io, API 1.45, runc 1.1.15),
//! started in a container by `.ci/engines-setup`, through `DockerRuntime`: the same module and
//! checks as on this machine's Docker 20.10, plus what the newer API changes (read-only binds
//! forced with `ReadOnlyForceRecursive`, R keeping its planned mode).
//!
//! Needs that engine (`MOUNT_PLAN_DOCKER26_SOCKET`), root and Debian's busybox-static.
//! Without them: fails under `CI`, otherwise shown as ignored.

mod support;

use support::trials::{Common, EngineSetup};

use bollard::query_parameters::InspectContainerOptions;
use mount_plan_docker::{probe, root_mode_from_runtime, ApiVersion, DockerEngine, RootMode};
use mount_plan_launch::{Availability, Engine, Protection};
use support::conformance::{self, EngineFixture, Scenario};

async fn docker26() -> Option<(DockerEngine, EngineFixture)> {
    let engine = support::engines::docker26()?;
    support::docker::nested_fixture(&engine, true).await
}

async fn docker26_doctor_reports_what_this_engine_does() {
    let Some((rt, _fx)) = docker26().await else {
        return;
    };
    let report = rt.report();
    let engine = rt.info();
    assert!(engine.version.starts_with("26."), "{engine:?}");
    assert!(
        rt.api_version() >= ApiVersion::READ_ONLY_RECURSIVE,
        "{engine:?}"
    );
    // R keeps its planned mode here (runc 1.1.15), unlike on Docker 20.10 / runc 1.1.5.
    assert_eq!(
        report.availability(Protection::RootModeAndSize),
        Availability::Native,
        "{report:?}"
    );
    assert_eq!(
        report.availability(Protection::ReadOnlyBinds),
        Availability::Native
    );
    assert!(!report
        .availability(Protection::NoExecOnBinds)
        .is_available());
    // runc 1.1.15 predates every upstream fix of the November 2025 advisories (1.1 has none):
    // doctor says so, and that is the only warning.
    assert!(
        report
            .warnings
            .iter()
            .all(|w| w.starts_with("runc ") && w.contains("CVE-2025-31133")),
        "{:?}",
        report.warnings
    );
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
}

/// The version table's answer for R's mode is what a probe container observes.
async fn docker26_root_mode_observed_matches_the_version_table() {
    let Some((rt, fx)) = docker26().await else {
        return;
    };
    let seen = probe::observe_root_mode(rt.client(), &fx.image)
        .await
        .expect("probe");
    assert_eq!(seen, RootMode::Kept);
    assert_eq!(
        root_mode_from_runtime(rt.info().runtime.as_deref()),
        Some(seen)
    );
}

/// From API 1.44 read-only binds are asked with `ReadOnlyForceRecursive`, and the engine
/// keeps it (a launched container conforms: see the scenarios above).
async fn docker26_read_only_binds_are_forced() {
    let Some((rt, fx)) = docker26().await else {
        return;
    };
    let ws = fx.workspace();
    let verified = ws.verified();
    let run_label = support::unique("run");
    let mut spec = conformance::spec_for(&fx, verified.plan(), Scenario::AsRoot, &run_label);
    spec.command = vec!["/bin/sleep".into(), "30".into()];
    let id = support::started(&rt, &verified, &spec)
        .await
        .expect("create and start");
    let inspected = rt
        .client()
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await;
    assert_eq!(
        rt.remove(&id).await.expect("remove"),
        mount_plan_launch::Removal::Removed
    );
    let mounts = inspected
        .expect("inspect")
        .host_config
        .and_then(|h| h.mounts)
        .expect("mounts");
    let binds: Vec<_> = mounts.iter().filter(|m| m.source.is_some()).collect();
    // The plan's three binds and the gate's host copy, read-only at its path.
    assert_eq!(binds.len(), 4, "{mounts:?}");
    assert!(
        binds.iter().any(
            |m| m.target.as_deref() == Some(mount_plan_launch::gate::GATE_PATH)
                && m.read_only == Some(true)
        ),
        "{mounts:?}"
    );
    for m in binds {
        let forced = m
            .bind_options
            .as_ref()
            .and_then(|b| b.read_only_force_recursive);
        assert_eq!(forced, m.read_only.filter(|ro| *ro), "{m:?}");
    }
}

fn setup(_: Scenario) -> EngineSetup {
    Box::pin(async {
        let (rt, fx) = docker26().await?;
        Some((Box::new(rt) as Box<dyn Engine>, fx))
    })
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const D26: &[Need] = &[Need::Docker26, Need::Root, Need::Busybox];
    let mut trials = support::trials::common(
        "docker26",
        "docker26",
        D26,
        setup,
        &[
            Common::GcReportsOnlyWhatItRemoved,
            Common::TheCommandRunsWithNoNewPrivileges,
        ],
    );
    trials.extend(vec![
        harness::tokio(
            Runtime::Workers(2),
            "docker26_doctor_reports_what_this_engine_does",
            D26,
            docker26_doctor_reports_what_this_engine_does,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "docker26_root_mode_observed_matches_the_version_table",
            D26,
            docker26_root_mode_observed_matches_the_version_table,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "docker26_read_only_binds_are_forced",
            D26,
            docker26_read_only_binds_are_forced,
        ),
    ]);
    harness::run(trials);
}
