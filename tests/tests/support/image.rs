//! The static probe binary and the test image (busybox + probe), built offline.
//!
//! The probe is built once per machine state into `target/probe` (its own target directory,
//! so the static RUSTFLAGS do not invalidate the main build cache), guarded by a file lock
//! across test processes. `MOUNT_PLAN_PROBE=/path` skips the build. The image tar holds
//! `/bin/busybox` (Debian's busybox-static) with applet links and `/probe`; it is imported
//! once per content digest (label [`CONTENT_LABEL`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::run;

/// The image name used by the Docker tests.
pub const IMAGE: &str = "mount-plan-probe:test";
/// The image label carrying the tar's sha256, so an up-to-date image is not imported again.
pub const CONTENT_LABEL: &str = "mount-plan-test.content";
/// Where the probe lives in the image.
pub const PROBE_IN_IMAGE: &str = "/probe";

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Hold an exclusive flock on `path` while `f` runs (test processes run in parallel).
pub fn locked<T>(path: &Path, f: impl FnOnce() -> T) -> T {
    fs::create_dir_all(path.parent().expect("lock path has a parent")).expect("lock dir");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .expect("open lock file");
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    let out = f();
    drop(file);
    out
}

/// The static probe binary (built on first use).
pub fn probe_binary() -> Result<PathBuf, String> {
    static PROBE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("MOUNT_PLAN_PROBE") {
                let p = PathBuf::from(p);
                return if p.is_file() {
                    Ok(p)
                } else {
                    Err(format!("MOUNT_PLAN_PROBE={p:?} is not a file"))
                };
            }
            let root = repo_root();
            let target_dir = root.join("target").join("probe");
            locked(&target_dir.join(".build.lock"), || {
                let cargo = option_env!("CARGO").unwrap_or("cargo");
                run(Command::new(cargo)
                    .current_dir(&root)
                    .env("RUSTFLAGS", "-C target-feature=+crt-static")
                    .args([
                        "build",
                        "--quiet",
                        "-p",
                        "mount-plan-probe",
                        "--release",
                        "--target",
                        "x86_64-unknown-linux-gnu",
                        "--target-dir",
                    ])
                    .arg(&target_dir))?;
                Ok(target_dir.join("x86_64-unknown-linux-gnu/release/mount-plan-probe"))
            })
        })
        .clone()
}

/// Write the image tar (busybox and the probe) into `dir`; its path and sha256.
pub fn image_tar(dir: &Path) -> Result<(PathBuf, String), String> {
    let probe = probe_binary()?;
    mount_plan_testkit::image::busybox_tar(dir, &[(&probe, PROBE_IN_IMAGE)])
}

/// The Docker test image, imported once per content (`docker import`), or why not.
pub fn docker_image() -> Result<String, String> {
    docker_image_on(None)
}

/// The `docker` CLI talking to `host` (`unix:///...`; `None`: this machine's engine).
pub fn docker_cli(host: Option<&str>) -> Command {
    let mut cmd = Command::new("docker");
    if let Some(h) = host {
        cmd.arg("--host").arg(h);
    }
    cmd
}

/// The Docker test image on the engine at `host`, imported once per content and engine.
pub fn docker_image_on(host: Option<&str>) -> Result<String, String> {
    /// (host, import result), one per engine.
    type Imported = Vec<(Option<String>, Result<String, String>)>;
    static DONE: OnceLock<std::sync::Mutex<Imported>> = OnceLock::new();
    let mut done = DONE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((_, r)) = done.iter().find(|(h, _)| h.as_deref() == host) {
        return r.clone();
    }
    let result = run(docker_cli(host).args(["version", "--format", "{{.Server.Version}}"]))
        .map_err(|e| format!("the docker engine does not answer: {e}"))
        .and_then(|_| docker_import(host, IMAGE, &[]));
    done.push((host.map(str::to_owned), result.clone()));
    result
}

/// The Docker test image plus `VOLUME /data`: the engine adds an anonymous volume that no
/// plan has, so a launch must be refused by the audit and leave nothing behind.
pub const VOLUME_IMAGE: &str = "mount-plan-probe:test-volume";

/// [`VOLUME_IMAGE`], imported once per content.
pub fn docker_volume_image() -> Result<String, String> {
    static READY: OnceLock<Result<String, String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            docker_image()?;
            docker_import(None, VOLUME_IMAGE, &["VOLUME /data"])
        })
        .clone()
}

/// Import the probe image into the Docker engine at `host` as `tag` (with extra `--change`
/// lines) unless an image of that tag already carries this content's digest label.
fn docker_import(host: Option<&str>, tag: &str, changes: &[&str]) -> Result<String, String> {
    let work = repo_root().join("target").join("probe").join("image");
    locked(&repo_root().join("target/probe/.image.lock"), || {
        let (tar, digest) = image_tar(&work)?;
        let current = run(docker_cli(host).args([
            "image",
            "inspect",
            "--format",
            &format!("{{{{index .Config.Labels \"{CONTENT_LABEL}\"}}}}"),
            tag,
        ]))
        .unwrap_or_default();
        if current.trim() != digest {
            let changes: Vec<String> = std::iter::once(format!("LABEL {CONTENT_LABEL}={digest}"))
                .chain(changes.iter().map(|c| c.to_string()))
                .collect();
            mount_plan_testkit::image::import(&mut docker_cli(host), &tar, tag, &changes)?;
        }
        Ok(tag.to_owned())
    })
}
