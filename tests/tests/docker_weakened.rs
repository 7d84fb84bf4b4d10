//! The conformance suite can fail: each test removes ONE protection from the Docker
//! translation (the body `translate` produces, edited before the create call), runs the
//! probe in that container, and asserts that the matching conformance check fails, and that
//! the audit of the inspected container reports the matching difference. A last test runs
//! the untouched translation the same way and asserts that nothing fails.

mod support;

use bollard::models::{ContainerCreateBody, MountBindOptionsPropagationEnum, MountType};
use futures_util::StreamExt;
use mount_plan_docker::translate;
use mount_plan_launch::{audit, Engine, OutputStream};
use support::conformance::{self, Scenario};

/// Run the probe in a container created from the translated body after `weaken` edited
/// it. Returns the failed conformance checks and the audit rules the inspect reports.
async fn run_weakened(
    scenario: Scenario,
    weaken: impl FnOnce(&mut ContainerCreateBody),
) -> Option<(Vec<&'static str>, Vec<&'static str>)> {
    let (rt, fx) = support::docker::fixture(true).await?;
    let ws = fx.workspace_for(scenario);
    let verified = ws.verified();
    let run_label = support::unique("weak");
    let spec = conformance::spec_for(&fx, verified.plan(), scenario, &run_label);
    let labels = mount_plan_launch::container_labels(verified.plan(), &spec);
    let mut call = translate(verified.plan(), &spec, &labels, rt.info()).expect("translate");
    weaken(&mut call.body);
    let id = rt
        .client()
        .create_container(Some(call.options), call.body)
        .await
        .expect("create the weakened container")
        .id;
    // R's directory entry with the planned mode, where the backend writes it before start
    // (a writable R on a runtime that may not keep its mode; not the default read-only R).
    let gate = mount_plan_launch::gate::Gate::new(&verified);
    if gate.for_runtime(rt.runtime_root_mode()).1.is_some() {
        rt.put_gate(&id, &gate).await.expect("write R's entry");
    }
    let job = id.clone();
    let observed = rt.inspect(&id).await.expect("inspect");
    let audit_rules: Vec<&'static str> = audit(
        verified.plan(),
        &observed,
        &fx.lacks_hardening,
        &spec.cap_add,
    )
    .iter()
    .map(|d| d.rule())
    .collect();
    rt.client().start_container(&id, None).await.expect("start");
    let status = rt.wait(&job).await.expect("wait");
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut logs = rt.logs(&job);
    while let Some(chunk) = logs.next().await {
        let chunk = chunk.expect("logs");
        match chunk.stream {
            OutputStream::Stdout => stdout.extend(chunk.bytes),
            OutputStream::Stderr => stderr.extend(chunk.bytes),
        }
    }
    assert_eq!(
        rt.remove(&job).await.expect("remove"),
        mount_plan_launch::Removal::Removed
    );
    assert!(support::docker_ps_by_label("mount-plan-test.run", &run_label).is_empty());
    assert!(
        status.success(),
        "probe exited {status:?}: {}",
        String::from_utf8_lossy(&stderr)
    );
    let report = conformance::parse_report(&String::from_utf8_lossy(&stdout)).expect("report");
    let failed: Vec<&'static str> = conformance::check(&fx, &ws, &verified, scenario, &report)
        .iter()
        .map(|f| f.check)
        .collect();
    Some((failed, audit_rules))
}

fn mounts(b: &mut ContainerCreateBody) -> &mut Vec<bollard::models::Mount> {
    b.host_config.as_mut().unwrap().mounts.as_mut().unwrap()
}

fn binds(b: &mut ContainerCreateBody) -> impl Iterator<Item = &mut bollard::models::Mount> {
    mounts(b)
        .iter_mut()
        .filter(|m| m.typ == Some(MountType::BIND))
}

fn assert_caught(
    result: Option<(Vec<&'static str>, Vec<&'static str>)>,
    checks: &[&str],
    audit_rule: &str,
) {
    let Some((failed, audit_rules)) = result else {
        return;
    };
    for c in checks {
        assert!(
            failed.contains(c),
            "check {c:?} did not fail; failed: {failed:?}"
        );
    }
    assert!(
        audit_rules.contains(&audit_rule),
        "audit rule {audit_rule:?} not reported; audit: {audit_rules:?}"
    );
}

async fn untouched_translation_passes() {
    let Some((failed, audit_rules)) = run_weakened(Scenario::AsRoot, |_| {}).await else {
        return;
    };
    assert_eq!(failed, Vec::<&str>::new());
    assert_eq!(audit_rules, Vec::<&str>::new());
}

async fn root_tmpfs_read_only_removed() {
    let r = run_weakened(Scenario::AsRoot, |b| mounts(b)[0].read_only = Some(false)).await;
    assert_caught(r, &["root-mount", "root-write"], "read-only");
}

async fn root_tmpfs_size_changed() {
    let r = run_weakened(Scenario::AsRoot, |b| {
        mounts(b)[0].tmpfs_options.as_mut().unwrap().size_bytes = Some(2 << 20)
    })
    .await;
    assert_caught(r, &["root-mount"], "tmpfs-size");
}

async fn shared_bind_read_only_removed() {
    let r = run_weakened(Scenario::AsRoot, |b| {
        binds(b).next().unwrap().read_only = Some(false)
    })
    .await;
    assert_caught(r, &["shared-mount", "shared-write"], "read-only");
}

async fn non_recursive_removed() {
    let r = run_weakened(Scenario::AsRoot, |b| {
        for m in binds(b) {
            m.bind_options.as_mut().unwrap().non_recursive = None;
        }
    })
    .await;
    assert_caught(r, &["submount"], "recursive");
}

async fn private_propagation_removed() {
    let r = run_weakened(Scenario::AsRoot, |b| {
        for m in binds(b) {
            m.bind_options.as_mut().unwrap().propagation =
                Some(MountBindOptionsPropagationEnum::RSLAVE);
        }
    })
    .await;
    assert_caught(r, &["propagation"], "propagation");
}

async fn no_new_privileges_removed() {
    let r = run_weakened(Scenario::AsUser, |b| {
        b.host_config.as_mut().unwrap().security_opt = None
    })
    .await;
    assert_caught(r, &["nosuid"], "no-new-privileges");
}

async fn device_cgroup_widened() {
    let r = run_weakened(Scenario::AsRoot, |b| {
        b.host_config.as_mut().unwrap().device_cgroup_rules = Some(vec!["c 1:11 rwm".into()])
    })
    .await;
    assert_caught(r, &["nodev"], "devices");
}

async fn capabilities_not_dropped() {
    // The engine's defaults stay (MKNOD among them): root plants device nodes in W/J.
    let r = run_weakened(Scenario::AsRoot, |b| {
        b.host_config.as_mut().unwrap().cap_drop = None
    })
    .await;
    assert_caught(r, &["capabilities", "mknod"], "cap-drop");
}

async fn mknod_capability_added() {
    let r = run_weakened(Scenario::AsRoot, |b| {
        b.host_config.as_mut().unwrap().cap_add = Some(vec!["CAP_MKNOD".into()])
    })
    .await;
    assert_caught(r, &["capabilities", "mknod"], "cap-add");
}

async fn working_dir_moved() {
    let r = run_weakened(Scenario::AsRoot, |b| b.working_dir = Some("/".into())).await;
    assert_caught(r, &["cwd", "cwd-write"], "working-dir");
}

fn main() {
    use mount_plan_testkit::harness::{self, Need, Runtime};
    const DOCKER: &[Need] = &[Need::Docker, Need::Root, Need::Busybox];
    harness::run(vec![
        harness::tokio(
            Runtime::Workers(2),
            "untouched_translation_passes",
            DOCKER,
            untouched_translation_passes,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "root_tmpfs_read_only_removed",
            DOCKER,
            root_tmpfs_read_only_removed,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "root_tmpfs_size_changed",
            DOCKER,
            root_tmpfs_size_changed,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "shared_bind_read_only_removed",
            DOCKER,
            shared_bind_read_only_removed,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "non_recursive_removed",
            DOCKER,
            non_recursive_removed,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "private_propagation_removed",
            DOCKER,
            private_propagation_removed,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "no_new_privileges_removed",
            DOCKER,
            no_new_privileges_removed,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "device_cgroup_widened",
            DOCKER,
            device_cgroup_widened,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "capabilities_not_dropped",
            DOCKER,
            capabilities_not_dropped,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "mknod_capability_added",
            DOCKER,
            mknod_capability_added,
        ),
        harness::tokio(
            Runtime::Workers(2),
            "working_dir_moved",
            DOCKER,
            working_dir_moved,
        ),
    ]);
}
