//! The Docker runtime and conformance fixture shared by the Docker test binaries.

use std::collections::BTreeSet;

use mount_plan_docker::{ConnectOptions, DockerEngine};
use mount_plan_launch::Protection;

use super::conformance::EngineFixture;

/// The Docker runtime and fixture, or `None` (skipped; a failure under CI). With
/// `shared_tmpfs`, workspaces sit on their own shared-propagation tmpfs, so a bind without
/// private propagation becomes visible.
pub async fn fixture(shared_tmpfs: bool) -> Option<(DockerEngine, EngineFixture)> {
    let rt = super::require(
        "a docker engine",
        DockerEngine::connect(&ConnectOptions::default())
            .await
            .map_err(|e| e.to_string()),
    )?;
    let root = rustix::process::geteuid().is_root();
    super::require("root", if root { Ok(()) } else { Err("not root".into()) })?;
    let image = super::require("the docker test image", super::image::docker_image())?;
    let probe = super::image::probe_binary().expect("probe built with the image");
    let fx = EngineFixture {
        name: "docker".into(),
        image,
        probe,
        base_dir: std::env::temp_dir(),
        nonroot: "1000:1000".parse().unwrap(),
        job_owner: Some((1000, 1000)),
        // Docker cannot set noexec on binds: the suite runs with that gap accepted, and
        // checks nosuid and nodev through their substitutes.
        accept_missing: BTreeSet::from([Protection::NoExecOnBinds]),
        bind_flags_in_mountinfo: false,
        shared_tmpfs,
        // Docker creates R/J in the image filesystem first; runc gives the tmpfs its mode.
        root_inode_mode: Some(0o755),
    };
    Some((rt, fx))
}
