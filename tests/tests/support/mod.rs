//! Shared helpers of the engine tests: the probe binary and test image, host workspace
//! fixtures, and the engine-neutral conformance suite (`conformance`).
//!
//! Each test binary includes this module with `mod support;` and uses a part of it.
#![allow(dead_code)]

pub mod conformance;
pub mod docker;
pub mod engines;
pub mod image;
pub mod slurm;
pub mod swarm;
pub mod trials;
pub mod workspace;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A fixture the test needs could not be built. The harness (`mount_plan_testkit::harness`)
/// already ignored the test when an engine, root or busybox is missing, so anything left is a
/// failure, never a silent pass.
pub fn require<T>(what: &str, found: Result<T, String>) -> Option<T> {
    match found {
        Ok(v) => Some(v),
        Err(why) => panic!("{what} is not available although the harness found its needs: {why}"),
    }
}

/// A setting of a `.ci` setup script: the environment variable `key`, else its `KEY=value`
/// line in the env file the script writes (so `cargo test` works without sourcing it first).
pub fn env_setting(file: &str, key: &str) -> Result<String, std::env::VarError> {
    std::env::var(key).or_else(|e| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
            })
            .ok_or(e)
    })
}

/// Create and start the container of `spec` through the engine's own calls (not the
/// lifecycle), labelled as the lifecycle labels it: for tests that need a running container.
pub async fn started(
    engine: &dyn mount_plan_launch::Engine,
    verified: &mount_plan_host::VerifiedPlan,
    spec: &mount_plan_launch::LaunchSpec,
) -> Result<String, mount_plan_launch::LaunchError> {
    let labels = mount_plan_launch::lifecycle::launch_labels(
        verified.plan(),
        spec,
        &mount_plan_launch::LaunchId::new(),
        &mount_plan_launch::Launcher::current(),
    );
    let gate = mount_plan_launch::gate::Gate::new(verified);
    let request = mount_plan_launch::CreateRequest {
        plan: verified,
        gate: &gate,
        spec,
        labels: &labels,
        reread_image: false,
    };
    let id = engine.create(&request).await?.id;
    if let Err(e) = engine.start(&id).await {
        let _ = engine.remove(&id).await;
        return Err(e);
    }
    Ok(id)
}

/// Ids of the containers the engine lists with the test label `mount-plan-test.run=run`.
pub async fn leftovers(engine: &dyn mount_plan_launch::Engine, run: &str) -> Vec<String> {
    engine
        .list("mount-plan-test.run", run)
        .await
        .expect("list containers")
        .into_iter()
        .map(|l| l.id)
        .collect()
}

/// A name unique across test processes and threads: `prefix-pid-n-nanos`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub use mount_plan_testkit::image::run;

/// Ids of every container (any state) carrying the label `key=value`, from the docker CLI
/// (independent of the backend under test).
pub fn docker_ps_by_label(key: &str, value: &str) -> Vec<String> {
    let out = run(std::process::Command::new("docker").args([
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={key}={value}"),
    ]))
    .expect("docker ps");
    out.split_whitespace().map(str::to_owned).collect()
}
