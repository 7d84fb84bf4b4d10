//! The conformance suite on the Slurm cluster of `.ci/slurm-setup`, through `SlurmEngine`:
//! the probe runs as the one step of a Slurm job on a compute node (`srun --container`, runc
//! as oci.conf names it), in a workspace that every node sees at the same path.
//!
//! Needs the cluster (`bash .ci/slurm-setup`), root and Debian's busybox-static. Without
//! them: fails under `CI`, otherwise shown as ignored.

mod support;

use support::trials::{Common, EngineSetup};

use mount_plan_launch::{Engine, Protection};
use support::conformance::{self, Scenario};

async fn setup() -> Option<(Box<dyn Engine>, conformance::EngineFixture)> {
    let cluster = support::slurm::cluster()?;
    let image = support::require(
        "the probe image on the shared filesystem",
        support::slurm::probe_image(&cluster),
    )?;
    let engine = support::slurm::engine(&cluster).await;
    Some((Box::new(engine), support::slurm::fixture(&cluster, image)))
}

async fn slurm_doctor_reports_versions_and_protections() {
    let Some((rt, _fx)) = setup().await else {
        return;
    };
    let report = rt.report();
    assert_eq!(rt.info().engine, "slurm");
    assert!(
        rt.info().version.starts_with("slurm"),
        "{:?}",
        rt.info().version
    );
    assert_eq!(report.protections.len(), Protection::ALL.len());
    for p in Protection::ALL {
        assert!(report.availability(p).is_available(), "{p}");
    }
}

fn common_setup(_: Scenario) -> EngineSetup {
    Box::pin(setup())
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const SLURM: &[Need] = &[Need::Slurm, Need::Root, Need::Busybox, Need::Docker];
    let mut trials = support::trials::common(
        "slurm",
        "slurm",
        SLURM,
        common_setup,
        // Slurm runs images unpacked and named by id: no tag to move.
        &[Common::AMovedTagRunsTheImageItNamesNow],
    );
    trials.extend(vec![harness::tokio(
        Runtime::Workers(2),
        "slurm_doctor_reports_versions_and_protections",
        SLURM,
        slurm_doctor_reports_versions_and_protections,
    )]);
    harness::run(trials);
}
