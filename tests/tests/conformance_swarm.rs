//! The conformance suite on the three-node Swarm of `.ci/swarm-setup`, through
//! `SwarmEngine`: the probe runs as a one-shot service on a worker (the default placement),
//! in a workspace that every node sees at the same path.
//!
//! Needs the swarm (`bash .ci/swarm-setup`), root and Debian's busybox-static. Without them:
//! fails under `CI`, otherwise shown as ignored.

mod support;

use mount_plan_launch::{Engine, Protection};
use support::conformance::{self, Scenario};

async fn setup() -> Option<(Box<dyn Engine>, conformance::EngineFixture)> {
    let cluster = support::swarm::cluster()?;
    let image = support::require(
        "the probe image on every node",
        support::swarm::probe_image(&cluster),
    )?;
    let engine = support::swarm::engine(&cluster).await;
    Some((Box::new(engine), support::swarm::fixture(&cluster, image)))
}

async fn swarm_as_root_conforms() {
    let Some((rt, fx)) = setup().await else {
        return;
    };
    let failures = conformance::scenario(rt.as_ref(), &fx, Scenario::AsRoot).await;
    conformance::assert_conforms("swarm", Scenario::AsRoot, &failures);
}

async fn swarm_as_user_conforms() {
    let Some((rt, fx)) = setup().await else {
        return;
    };
    let failures = conformance::scenario(rt.as_ref(), &fx, Scenario::AsUser).await;
    conformance::assert_conforms("swarm", Scenario::AsUser, &failures);
}

async fn swarm_gate_refuses_a_swapped_job_dir() {
    let Some((rt, fx)) = setup().await else {
        return;
    };
    conformance::swapped_job_dir_is_refused_by_the_gate(rt.as_ref(), &fx).await;
}

async fn swarm_planted_setuid_and_devices_give_host_users_nothing() {
    let Some((rt, fx)) = setup().await else {
        return;
    };
    conformance::planted_setuid_and_devices_give_host_users_nothing(rt.as_ref(), &fx).await;
}

async fn swarm_the_command_runs_with_no_new_privileges() {
    let Some((rt, fx)) = setup().await else {
        return;
    };
    conformance::the_command_runs_with_no_new_privileges(rt.as_ref(), &fx).await;
}

async fn swarm_gc_reports_only_what_it_removed() {
    let Some((rt, fx)) = setup().await else {
        return;
    };
    conformance::gc_reports_only_what_it_removed(rt.as_ref(), &fx).await;
}

async fn swarm_labels_and_audit() {
    let Some((rt, fx)) = setup().await else {
        return;
    };
    conformance::labels_and_audit(rt.as_ref(), &fx).await;
}

async fn swarm_doctor_reports_versions_and_protections() {
    let Some((rt, _fx)) = setup().await else {
        return;
    };
    let report = rt.report();
    assert_eq!(rt.info().engine, "swarm");
    assert_eq!(report.protections.len(), Protection::ALL.len());
    assert!(!report
        .availability(Protection::NoExecOnBinds)
        .is_available());
    // By the gate's no-new-privileges, at every API version (issue 21, finding 10).
    assert!(report
        .availability(Protection::NoSuidOnBinds)
        .is_available());
    for native in [
        Protection::ReadOnlyRoot,
        Protection::ReadOnlyBinds,
        Protection::NonRecursiveBinds,
        Protection::PrivatePropagation,
    ] {
        assert!(report.availability(native).is_available(), "{native}");
    }
    assert!(
        report.warnings.iter().any(|w| w.contains("network none")),
        "{:?}",
        report.warnings
    );
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const SWARM: &[Need] = &[Need::Swarm, Need::Root, Need::Busybox];
    harness::run(vec![
        harness::tokio(
            Runtime::Workers(2),
            "swarm_as_root_conforms",
            SWARM,
            swarm_as_root_conforms,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "swarm_gate_refuses_a_swapped_job_dir",
            SWARM,
            swarm_gate_refuses_a_swapped_job_dir,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "swarm_planted_setuid_and_devices_give_host_users_nothing",
            SWARM,
            swarm_planted_setuid_and_devices_give_host_users_nothing,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "swarm_the_command_runs_with_no_new_privileges",
            SWARM,
            swarm_the_command_runs_with_no_new_privileges,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "swarm_as_user_conforms",
            SWARM,
            swarm_as_user_conforms,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "swarm_gc_reports_only_what_it_removed",
            SWARM,
            swarm_gc_reports_only_what_it_removed,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "swarm_labels_and_audit",
            SWARM,
            swarm_labels_and_audit,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "swarm_doctor_reports_versions_and_protections",
            SWARM,
            swarm_doctor_reports_versions_and_protections,
        ),
    ]);
}
