//! The conformance suite on the three-node Swarm of `.ci/swarm-setup`, through
//! `SwarmEngine`: the probe runs as a one-shot service on a worker (the default placement),
//! in a workspace that every node sees at the same path.
//!
//! Needs the swarm (`bash .ci/swarm-setup`), root and Debian's busybox-static. Without them:
//! fails under `CI`, otherwise shown as ignored.

mod support;

use support::trials::{Common, EngineSetup};

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

fn common_setup(_: Scenario) -> EngineSetup {
    Box::pin(setup())
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const SWARM: &[Need] = &[Need::Swarm, Need::Root, Need::Busybox];
    let mut trials = support::trials::common(
        "swarm",
        "swarm",
        SWARM,
        common_setup,
        // R's mode: see `availability`. A moved tag: Swarm runs images named by id.
        &[
            Common::ScratchRootHasThePlannedMode,
            Common::AMovedTagRunsTheImageItNamesNow,
        ],
    );
    trials.extend(vec![harness::tokio(
        Runtime::Workers(2),
        "swarm_doctor_reports_versions_and_protections",
        SWARM,
        swarm_doctor_reports_versions_and_protections,
    )]);
    harness::run(trials);
}
