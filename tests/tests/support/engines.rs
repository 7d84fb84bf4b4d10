//! The engines that `.ci/engines-setup` starts in containers beside this machine's own:
//! Docker 26 and rootful Podman 5 (Debian 13's packages).
//!
//! They are named by the env file the script writes (`/tmp/mount-plan-engines/env`):
//! `MOUNT_PLAN_DOCKER26_SOCKET`, `MOUNT_PLAN_PODMAN5_SOCKET`, and `MOUNT_PLAN_ENGINES_WORKDIR`,
//! the host directory bound at the same path into both (shared, so a workspace tmpfs mounted
//! there by a test is seen by the engine): their workspaces are created there.

use std::path::PathBuf;

use mount_plan_testkit::engines::TestEngine;

/// The env file of `.ci/engines-setup`.
pub const ENV_FILE: &str = "/tmp/mount-plan-engines/env";
const HINT: &str = "run `bash .ci/engines-setup` (it writes /tmp/mount-plan-engines/env)";

/// One engine started by `.ci/engines-setup`.
#[derive(Debug, Clone)]
pub struct NestedEngine {
    /// For messages and fixture names (`docker26`, `podman5`).
    pub name: &'static str,
    /// `unix:///...` on the host.
    pub url: String,
    /// Where this engine's workspaces are created (seen at the same path inside).
    pub workdir: PathBuf,
}

fn setting(key: &str) -> Result<String, String> {
    super::env_setting(ENV_FILE, key).map_err(|_| format!("{key} is not set: {HINT}"))
}

/// `engine`'s socket (the testkit reads its variable), if the engine answers there.
fn lookup(engine: TestEngine) -> Result<NestedEngine, String> {
    let name = engine.name();
    let url = engine.socket()?;
    let workdir = PathBuf::from(setting("MOUNT_PLAN_ENGINES_WORKDIR")?);
    let socket = url.trim_start_matches("unix://");
    if !std::path::Path::new(socket).exists() {
        return Err(format!("no socket at {socket:?}: {HINT}"));
    }
    if !workdir.is_dir() {
        return Err(format!("no work directory {workdir:?}: {HINT}"));
    }
    use_gate_dir_in(&workdir);
    Ok(NestedEngine { name, url, workdir })
}

/// The gate's host copy must be where the engine's host sees it at the same path: in the work
/// directory bound into the engine's container (unless the caller named another).
pub fn use_gate_dir_in(workdir: &std::path::Path) {
    use mount_plan_launch::gate_copy::GATE_DIR_ENV;
    if std::env::var_os(GATE_DIR_ENV).is_none() {
        std::env::set_var(GATE_DIR_ENV, workdir.join("gate"));
    }
}

/// Docker 26, or `None` (skipped; a panic under `CI`).
pub fn docker26() -> Option<NestedEngine> {
    super::require(
        "the Docker 26 engine of .ci/engines-setup",
        lookup(TestEngine::Docker26),
    )
}

/// Rootful Podman 5, or `None` (skipped; a panic under `CI`).
pub fn podman5() -> Option<NestedEngine> {
    super::require(
        "the Podman 5 engine of .ci/engines-setup",
        lookup(TestEngine::Podman5),
    )
}
