//! The conformance suite against the real Docker engine, through `DockerRuntime`.
//!
//! Needs a Docker engine, root (the fixture mounts tmpfs and makes device nodes) and
//! Debian's busybox-static. Without them: fails under `CI`, otherwise prints SKIPPED.

mod support;

use std::collections::BTreeSet;

use mount_plan_docker::{ConnectOptions, DockerRuntime};
use mount_plan_launch::{JobRuntime, Protection};
use support::conformance::{self, EngineFixture, Scenario};

/// The Docker runtime and fixture, or `None` (skipped).
pub async fn docker_fixture() -> Option<(DockerRuntime, EngineFixture)> {
    let rt = support::require(
        "a docker engine",
        DockerRuntime::connect(&ConnectOptions::default())
            .await
            .map_err(|e| e.to_string()),
    )?;
    let root = rustix::process::geteuid().is_root();
    support::require("root", if root { Ok(()) } else { Err("not root".into()) })?;
    let image = support::require("the docker test image", support::image::docker_image())?;
    let probe = support::image::probe_binary().expect("probe built with the image");
    let fx = EngineFixture {
        name: "docker".into(),
        image,
        probe,
        base_dir: std::env::temp_dir(),
        nonroot: "1000:1000".parse().unwrap(),
        job_owner: Some((1000, 1000)),
        accept_missing: BTreeSet::from([Protection::NoExecOnBinds]),
        bind_flags_in_mountinfo: false,
        shared_tmpfs: true,
        root_inode_mode: Some(0o755),
    };
    Some((rt, fx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_as_root_conforms() {
    let Some((rt, fx)) = docker_fixture().await else {
        return;
    };
    let rt: Box<dyn JobRuntime> = Box::new(rt);
    let failures = conformance::scenario(rt.as_ref(), &fx, Scenario::AsRoot).await;
    conformance::assert_conforms("docker", Scenario::AsRoot, &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_as_user_conforms() {
    let Some((rt, fx)) = docker_fixture().await else {
        return;
    };
    let rt: Box<dyn JobRuntime> = Box::new(rt);
    let failures = conformance::scenario(rt.as_ref(), &fx, Scenario::AsUser).await;
    conformance::assert_conforms("docker", Scenario::AsUser, &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_labels_and_audit() {
    let Some((rt, fx)) = docker_fixture().await else {
        return;
    };
    conformance::labels_and_audit(&rt, &fx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_doctor_reports_versions_and_protections() {
    let Some((rt, _fx)) = docker_fixture().await else {
        return;
    };
    let report = rt.doctor().await.expect("doctor");
    let engine = rt.engine();
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
