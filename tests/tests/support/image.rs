//! The static probe binary and the test image (busybox + probe), built offline.
//!
//! The probe is built once per machine state into `target/probe` (its own target directory,
//! so the static RUSTFLAGS do not invalidate the main build cache), guarded by a file lock
//! across test processes. `MOUNT_PLAN_PROBE=/path` skips the build. The image tar holds
//! `/bin/busybox` (Debian's busybox-static) with applet links and `/probe`; it is imported
//! once per content digest (label [`CONTENT_LABEL`]).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::run;

/// The image name used by the Docker tests.
pub const IMAGE: &str = "mount-plan-probe:test";
/// The image label carrying the tar's sha256, so an up-to-date image is not imported again.
pub const CONTENT_LABEL: &str = "mount-plan-test.content";
/// Where the probe lives in the image.
pub const PROBE_IN_IMAGE: &str = "/probe";
/// Debian's static busybox.
pub const BUSYBOX: &str = "/bin/busybox";

const APPLETS: [&str; 16] = [
    "sh", "echo", "cat", "ls", "sleep", "mkdir", "touch", "id", "true", "false", "rm", "stat",
    "test", "env", "pwd", "dd",
];

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

/// Write the image tar into `dir` and return its path and sha256.
pub fn image_tar(dir: &Path) -> Result<(PathBuf, String), String> {
    let probe = probe_binary()?;
    if !Path::new(BUSYBOX).is_file() {
        return Err(format!(
            "{BUSYBOX} is missing (apt-get install busybox-static)"
        ));
    }
    let rootfs = dir.join("rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    fs::create_dir_all(rootfs.join("bin")).map_err(|e| e.to_string())?;
    fs::create_dir_all(rootfs.join("tmp")).map_err(|e| e.to_string())?;
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).map_err(|e| e.to_string())?;
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet)).map_err(|e| e.to_string())?;
    }
    let dst = rootfs.join(PROBE_IN_IMAGE.trim_start_matches('/'));
    fs::copy(&probe, &dst).map_err(|e| e.to_string())?;
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let tar = dir.join("image.tar");
    // Fixed owner and mtime: the same inputs give the same digest.
    run(Command::new("tar")
        .arg("--sort=name")
        .arg("--owner=0")
        .arg("--group=0")
        .arg("--numeric-owner")
        .arg("--mtime=@0")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    let bytes = fs::read(&tar).map_err(|e| e.to_string())?;
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((tar, digest))
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
            let mut import = docker_cli(host);
            import
                .arg("import")
                .arg("--change")
                .arg(format!("LABEL {CONTENT_LABEL}={digest}"));
            for change in changes {
                import.arg("--change").arg(change);
            }
            run(import.arg(&tar).arg(tag))?;
        }
        Ok(tag.to_owned())
    })
}
