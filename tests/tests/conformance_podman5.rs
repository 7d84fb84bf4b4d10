//! The conformance suite against rootful Podman 5 (Debian 13's podman 5.4, runc), started in
//! a container by `.ci/engines-setup`, through `PodmanRuntime` (podman-api 0.11, written for
//! libpod 4.3): the same module and checks as on this machine's Podman 4.3.
//!
//! Needs that engine (`MOUNT_PLAN_PODMAN5_SOCKET`), root and Debian's busybox-static.
//! Without them: fails under `CI`, otherwise shown as ignored.

#[path = "support/podman.rs"]
mod podman_support;
mod support;

use support::trials::{Common, EngineSetup};

use mount_plan_launch::{Engine, Protection};
use mount_plan_podman::{PodmanEngine, UserNamespace};
use podman_support::{Mode, Service};
use support::conformance::{EngineFixture, Scenario};

async fn podman5() -> Option<(PodmanEngine, EngineFixture)> {
    let engine = support::engines::podman5()?;
    let service = Service {
        mode: Mode::Rootful,
        url: engine.url.clone(),
        user: None,
    };
    let rt = podman_support::runtime(&service, UserNamespace::EngineDefault).await?;
    let image = support::require(
        "the podman test image",
        podman_support::podman_image(&service.url),
    )?;
    let mut fx = podman_support::fixture(&service, image, "1000:1000", (1000, 1000))?;
    fx.name = engine.name.into();
    fx.base_dir = engine.workdir;
    Some((rt, fx))
}

async fn podman5_doctor_reports_versions_and_protections() {
    let Some((rt, _fx)) = podman5().await else {
        return;
    };
    let report = rt.report();
    let engine = rt.info();
    assert_eq!(engine.engine, "podman");
    assert!(!engine.rootless);
    let version = mount_plan_podman::parse_version(&engine.version).expect("version");
    assert!(
        version >= mount_plan_launch::Version::new(5, 0, 0),
        "{version}"
    );
    assert_eq!(report.protections.len(), Protection::ALL.len());
    for p in Protection::ALL {
        assert!(report.availability(p).is_available(), "{p}: {report:?}");
    }
}

fn setup(_: Scenario) -> EngineSetup {
    Box::pin(async {
        let (rt, fx) = podman5().await?;
        Some((Box::new(rt) as Box<dyn Engine>, fx))
    })
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const P5: &[Need] = &[Need::Podman5, Need::Root, Need::Busybox];
    let mut trials = support::trials::common(
        "podman5",
        "podman5",
        P5,
        setup,
        &[
            Common::GcReportsOnlyWhatItRemoved,
            Common::TheCommandRunsWithNoNewPrivileges,
        ],
    );
    trials.extend(vec![harness::tokio(
        Runtime::Workers(2),
        "podman5_doctor_reports_versions_and_protections",
        P5,
        podman5_doctor_reports_versions_and_protections,
    )]);
    harness::run(trials);
}
