//! The conformance suite against rootless Podman, through `PodmanEngine` as a
//! `Box<dyn Engine>`.
//!
//! Needs the rootless service of `.ci/podman-setup` (`MOUNT_PLAN_PODMAN_ROOTLESS_SOCKET`,
//! `MOUNT_PLAN_PODMAN_ROOTLESS_USER`), root for the test process (the fixture makes device
//! nodes and chowns W/J to the ids the container user maps to) and Debian's busybox-static.
//! Without them: fails under `CI`, otherwise shown as ignored.
//!
//! Scenarios: as the container's root (the rootless user itself on the host), as a non-root
//! container user (a subordinate id on the host), and as the launching user with `keep-id`.
//! A last scenario mounts the submount below `startup/` inside the rootless service's own
//! mount namespace, where a host mount made after the service started would not show.

#[path = "support/podman.rs"]
mod podman_support;
mod support;

use support::trials::EngineSetup;

use std::process::Command;

use mount_plan_launch::{Engine, Protection};
use mount_plan_podman::UserNamespace;
use podman_support::{Mode, RootlessUser, Service};
use support::conformance::{self, EngineFixture, Failure, Scenario};
use support::workspace::{SUBMOUNT, SUBMOUNT_FILE};

/// Which user the scenario's container runs as.
#[derive(Debug, Clone, Copy)]
enum As {
    /// Container root (the rootless user on the host).
    Root,
    /// Container 1000:1000 (a subordinate id on the host).
    User,
    /// keep-id: the rootless user's own ids in the container.
    KeepId,
}

async fn rootless(who: As) -> Option<(Box<dyn Engine>, EngineFixture, Service)> {
    let service = podman_support::service(Mode::Rootless)?;
    let user = service.user.clone().expect("rootless user");
    let userns = match who {
        As::KeepId => UserNamespace::KeepId,
        As::Root | As::User => UserNamespace::EngineDefault,
    };
    let rt = podman_support::runtime(&service, userns).await?;
    let image = support::require(
        "the podman test image",
        podman_support::podman_image(&service.url),
    )?;
    let own = format!("{}:{}", user.uid, user.gid);
    let (nonroot, owner) = match who {
        As::Root => ("1000:1000".to_owned(), (user.uid, user.gid)),
        As::User => ("1000:1000".to_owned(), user.host_ids(1000, 1000)),
        As::KeepId => (own, (user.uid, user.gid)),
    };
    let fx = podman_support::fixture(&service, image, &nonroot, owner)?;
    Some((Box::new(rt), fx, service))
}

async fn podman_rootless_keep_id_as_user_conforms() {
    let Some((rt, fx, _)) = rootless(As::KeepId).await else {
        return;
    };
    let failures = podman_support::bounded(
        "the scenario",
        180,
        conformance::scenario(rt.as_ref(), &fx, Scenario::AsUser),
    )
    .await;
    conformance::assert_conforms("podman rootless keep-id", Scenario::AsUser, &failures);
}

/// Large interleaved output, four launches at a time, three times over: every byte once (see
/// the rootful twin).
async fn podman_rootless_large_output_arrives_complete_and_once() {
    let Some((rt, fx, _)) = rootless(As::Root).await else {
        return;
    };
    podman_support::bounded(
        "large output",
        300,
        conformance::large_output_arrives_complete_and_once(rt.as_ref(), &fx, 4, 3),
    )
    .await;
}

async fn podman_rootless_doctor_reports_versions_and_protections() {
    let Some((rt, _, service)) = rootless(As::Root).await else {
        return;
    };
    let report = rt.report();
    let engine = rt.info();
    assert_eq!(engine.engine, "podman");
    assert_eq!(engine.endpoint, service.url);
    assert!(engine.rootless);
    for p in Protection::ALL {
        assert!(report.availability(p).is_available(), "{p}: {report:?}");
    }
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("no-new-privileges")),
        "{:?}",
        report.warnings
    );
}

/// Run `podman unshare <args>` as the rootless user: inside its service's user and mount
/// namespaces.
fn unshare(user: &RootlessUser, args: &[&str]) -> Result<String, String> {
    support::run(user.command("podman").arg("unshare").args(args))
}

/// A mount made in the rootless service's own mount namespace, undone on drop.
struct NamespaceMount<'a> {
    user: &'a RootlessUser,
    target: String,
}

impl Drop for NamespaceMount<'_> {
    fn drop(&mut self) {
        let _ = unshare(self.user, &["umount", "-l", &self.target]);
    }
}

async fn podman_rootless_submount_in_the_service_namespace_is_not_carried_in() {
    let Some((rt, fx, service)) = rootless(As::Root).await else {
        return;
    };
    let user = service.user.clone().expect("rootless user");
    let ws = fx.workspace();
    let verified = ws.verified();
    // The host tmpfs at W/startup/sub (mounted by the fixture) is invisible to the rootless
    // service: its mount namespace is older. Mount one where the service sees it.
    let target = ws.w.join(SUBMOUNT).display().to_string();
    support::require(
        "podman unshare as the rootless user",
        unshare(
            &user,
            &["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", &target],
        ),
    )
    .expect("mounted");
    let _mounted = NamespaceMount {
        user: &user,
        target: target.clone(),
    };
    let file = format!("{target}/{SUBMOUNT_FILE}");
    unshare(&user, &["sh", "-c", &format!("echo ns-secret > {file}")]).expect("write");
    let seen = unshare(&user, &["cat", &file]).expect("read back");
    assert_eq!(seen, "ns-secret\n", "the namespace mount holds the file");
    assert!(
        Command::new("grep")
            .args(["-qs", "ns-secret", &file])
            .status()
            .map(|s| !s.success())
            .unwrap_or(true),
        "the namespace mount must not be visible on the host"
    );

    let run_label = support::unique("run");
    let spec = conformance::spec_for(&fx, verified.plan(), Scenario::AsRoot, &run_label);
    let mut failures = Vec::new();
    match podman_support::bounded(
        "the probe",
        180,
        conformance::run_captured(rt.as_ref(), &verified, &spec),
    )
    .await
    {
        Err(e) => failures.push(Failure {
            check: "probe-ran",
            detail: e,
        }),
        Ok(o) => match conformance::parse_report(&o.stdout) {
            Err(e) => failures.push(Failure {
                check: "probe-ran",
                detail: e,
            }),
            Ok(report) => failures.extend(conformance::check(
                &fx,
                &ws,
                &verified,
                Scenario::AsRoot,
                &report,
            )),
        },
    }
    let left = rt
        .list("mount-plan-test.run", &run_label)
        .await
        .expect("list");
    assert!(left.is_empty(), "containers left behind: {left:?}");
    conformance::assert_conforms(
        "podman rootless (namespace submount)",
        Scenario::AsRoot,
        &failures,
    );
}

fn setup(s: Scenario) -> EngineSetup {
    Box::pin(async move {
        let who = match s {
            Scenario::AsRoot => As::Root,
            Scenario::AsUser => As::User,
        };
        let (rt, fx, _) = rootless(who).await?;
        Some((rt, fx))
    })
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const ROOTLESS: &[Need] = &[Need::PodmanRootless, Need::Root, Need::Busybox];
    let mut trials =
        support::trials::common("podman_rootless", "podman rootless", ROOTLESS, setup, &[]);
    trials.extend(vec![
        harness::tokio(
            Runtime::Workers(2),
            "podman_rootless_keep_id_as_user_conforms",
            ROOTLESS,
            podman_rootless_keep_id_as_user_conforms,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "podman_rootless_large_output_arrives_complete_and_once",
            ROOTLESS,
            podman_rootless_large_output_arrives_complete_and_once,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "podman_rootless_doctor_reports_versions_and_protections",
            ROOTLESS,
            podman_rootless_doctor_reports_versions_and_protections,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "podman_rootless_submount_in_the_service_namespace_is_not_carried_in",
            ROOTLESS,
            podman_rootless_submount_in_the_service_namespace_is_not_carried_in,
        ),
    ]);
    harness::run(trials);
}
