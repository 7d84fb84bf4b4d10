//! The conformance trials every engine runs, written once: each conformance binary gives its
//! engine's name, needs and setup, and gets the same trials (`<prefix>_as_root_conforms`, ...;
//! the nested Docker 26 and Podman 5 skip gc and no-new-privileges, as before),
//! each bounded so that a hung engine fails its trial instead of the run. A missing engine is
//! an ignored trial, a failure under `CI` (the testkit's harness).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use mount_plan_launch::Engine;
use mount_plan_testkit::harness::{self, Need, Runtime, Trial};

use super::conformance::{self, EngineFixture, Scenario};

/// How a conformance binary reaches its engine, with the fixture of a scenario (`AsRoot` for
/// the trials that are not a scenario); `None` when a fixture is missing (already reported).
pub type Setup = fn(Scenario) -> EngineSetup;

/// What a [`Setup`] returns: the engine and the fixture, once connected.
pub type EngineSetup = Pin<Box<dyn Future<Output = Option<(Box<dyn Engine>, EngineFixture)>>>>;

/// How long one trial may take on a live engine.
const BOUND: Duration = Duration::from_secs(180);

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {} s", BOUND.as_secs()))
}

/// The common trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Common {
    /// The probe as the image's user (root) sees exactly the contract.
    AsRootConforms,
    /// The probe as the fixture's non-root user sees exactly the contract.
    AsUserConforms,
    /// The container carries the labels, and the audit passes on it.
    LabelsAndAudit,
    /// A job directory swapped after the check is refused by the gate.
    GateRefusesASwappedJobDir,
    /// Setuid files and device nodes a job plants give host users nothing.
    PlantedSetuidAndDevicesGiveHostUsersNothing,
    /// R has the planned mode.
    ScratchRootHasThePlannedMode,
    /// `gc` removes the orphans of a launcher that is gone, and reports only what it removed.
    GcReportsOnlyWhatItRemoved,
    /// The command runs with no-new-privileges (the gate sets it).
    TheCommandRunsWithNoNewPrivileges,
    /// A tag moved between two launches runs the image it names now (Docker and Podman).
    AMovedTagRunsTheImageItNamesNow,
}

impl Common {
    /// Every common trial.
    pub const ALL: [Common; 9] = [
        Common::AMovedTagRunsTheImageItNamesNow,
        Common::TheCommandRunsWithNoNewPrivileges,
        Common::GcReportsOnlyWhatItRemoved,
        Common::AsRootConforms,
        Common::GateRefusesASwappedJobDir,
        Common::ScratchRootHasThePlannedMode,
        Common::PlantedSetuidAndDevicesGiveHostUsersNothing,
        Common::AsUserConforms,
        Common::LabelsAndAudit,
    ];

    fn name(self) -> &'static str {
        match self {
            Common::AsRootConforms => "as_root_conforms",
            Common::AsUserConforms => "as_user_conforms",
            Common::LabelsAndAudit => "labels_and_audit",
            Common::GateRefusesASwappedJobDir => "gate_refuses_a_swapped_job_dir",
            Common::PlantedSetuidAndDevicesGiveHostUsersNothing => {
                "planted_setuid_and_devices_give_host_users_nothing"
            }
            Common::ScratchRootHasThePlannedMode => "scratch_root_has_the_planned_mode",
            Common::GcReportsOnlyWhatItRemoved => "gc_reports_only_what_it_removed",
            Common::TheCommandRunsWithNoNewPrivileges => "the_command_runs_with_no_new_privileges",
            Common::AMovedTagRunsTheImageItNamesNow => "a_moved_tag_runs_the_image_it_names_now",
        }
    }

    fn scenario(self) -> Scenario {
        match self {
            Common::AsUserConforms => Scenario::AsUser,
            _ => Scenario::AsRoot,
        }
    }

    async fn run(self, engine: &'static str, rt: &dyn Engine, fx: &EngineFixture) {
        match self {
            Common::AsRootConforms | Common::AsUserConforms => {
                let s = self.scenario();
                let failures = bounded("the scenario", conformance::scenario(rt, fx, s)).await;
                conformance::assert_conforms(engine, s, &failures);
            }
            Common::LabelsAndAudit => {
                bounded("labels and audit", conformance::labels_and_audit(rt, fx)).await
            }
            Common::GateRefusesASwappedJobDir => {
                bounded(
                    "the swapped job directory",
                    conformance::swapped_job_dir_is_refused_by_the_gate(rt, fx),
                )
                .await
            }
            Common::PlantedSetuidAndDevicesGiveHostUsersNothing => {
                bounded(
                    "the planted files",
                    conformance::planted_setuid_and_devices_give_host_users_nothing(rt, fx),
                )
                .await
            }
            Common::ScratchRootHasThePlannedMode => {
                bounded(
                    "R's mode",
                    conformance::scratch_root_has_the_planned_mode(rt, fx),
                )
                .await
            }
            Common::GcReportsOnlyWhatItRemoved => {
                bounded("gc", conformance::gc_reports_only_what_it_removed(rt, fx)).await
            }
            Common::TheCommandRunsWithNoNewPrivileges => {
                bounded(
                    "no-new-privileges",
                    conformance::the_command_runs_with_no_new_privileges(rt, fx),
                )
                .await
            }
            Common::AMovedTagRunsTheImageItNamesNow => {
                bounded(
                    "the moved tag",
                    conformance::a_moved_tag_runs_the_image_it_names_now(rt, fx),
                )
                .await
            }
        }
    }
}

/// The common trials on one engine, named `<prefix>_<trial>`, except those in `skip`.
/// `engine` names it in failure messages.
pub fn common(
    prefix: &str,
    engine: &'static str,
    needs: &'static [Need],
    setup: Setup,
    skip: &[Common],
) -> Vec<Trial> {
    Common::ALL
        .into_iter()
        .filter(|c| !skip.contains(c))
        .map(|c| {
            harness::tokio(
                Runtime::Workers(2),
                &format!("{prefix}_{}", c.name()),
                needs,
                move || async move {
                    let Some((rt, fx)) = setup(c.scenario()).await else {
                        return;
                    };
                    c.run(engine, rt.as_ref(), &fx).await;
                },
            )
        })
        .collect()
}
