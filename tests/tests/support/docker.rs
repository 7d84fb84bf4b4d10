//! The Docker runtime and conformance fixture shared by the Docker test binaries, on this
//! machine's engine or on one that `.ci/engines-setup` started ([`super::engines`]).

use std::collections::BTreeSet;
use std::path::PathBuf;

use mount_plan_docker::{root_mode_from_runtime, ConnectOptions, DockerEngine};
use mount_plan_launch::{Engine, Protection};

use super::conformance::EngineFixture;
use super::engines::NestedEngine;

/// The Docker runtime and fixture of this machine's engine, or `None` (skipped; a failure
/// under CI). With `shared_tmpfs`, workspaces sit on their own shared-propagation tmpfs, so a
/// bind without private propagation becomes visible.
pub async fn fixture(shared_tmpfs: bool) -> Option<(DockerEngine, EngineFixture)> {
    fixture_at("docker", None, std::env::temp_dir(), shared_tmpfs).await
}

/// The same on an engine started by `.ci/engines-setup`.
pub async fn nested_fixture(
    engine: &NestedEngine,
    shared_tmpfs: bool,
) -> Option<(DockerEngine, EngineFixture)> {
    fixture_at(
        engine.name,
        Some(&engine.url),
        engine.workdir.clone(),
        shared_tmpfs,
    )
    .await
}

async fn fixture_at(
    name: &str,
    host: Option<&str>,
    base_dir: PathBuf,
    shared_tmpfs: bool,
) -> Option<(DockerEngine, EngineFixture)> {
    let options = ConnectOptions {
        host: host.map(str::to_owned),
        ..ConnectOptions::default()
    };
    let rt = super::require(
        &format!("the {name} engine"),
        DockerEngine::connect(&options)
            .await
            .map_err(|e| e.to_string()),
    )?;
    let root = rustix::process::geteuid().is_root();
    super::require("root", if root { Ok(()) } else { Err("not root".into()) })?;
    let image = super::require("the docker test image", super::image::docker_image_on(host))?;
    let probe = super::image::probe_binary().expect("probe built with the image");
    // The default R is read-only: the backend writes no R entry before start (no archive
    // call), so a runc before 1.1.8 gives it the mode of the directory Docker made (0755,
    // which grants no write on a read-only tmpfs; the gate accepts it). A scratch R still gets
    // its planned mode (`scratch_root_has_the_planned_mode`). The runtime must be in the
    // version table, which doctor's report and this expectation rest on.
    let root_inode_mode = match root_mode_from_runtime(rt.info().runtime.as_deref()) {
        Some(mount_plan_docker::RootMode::Becomes(m)) => Some(m),
        Some(mount_plan_docker::RootMode::Kept) => None,
        None => panic!(
            "{name}: runtime {:?} is not in the version table; the suite needs it",
            rt.info().runtime
        ),
    };
    let fx = EngineFixture {
        name: name.into(),
        image,
        probe,
        base_dir,
        nonroot: "1000:1000".parse().unwrap(),
        job_owner: Some((1000, 1000)),
        root_owner: None,
        // Docker cannot set noexec on binds: the suite runs with that gap accepted, and
        // checks nosuid and nodev through their substitutes.
        lacks_hardening: BTreeSet::from([Protection::NoExecOnBinds]),
        bind_flags_in_mountinfo: false,
        shared_tmpfs,
        root_inode_mode,
        cli: std::iter::once("docker")
            .chain(host.map(|h| ["--host", h]).into_iter().flatten())
            .map(str::to_owned)
            .collect(),
    };
    Some((rt, fx))
}
