//! Observing what the versions cannot tell ([`RootMode`] on a runtime other than runc), with
//! a tiny container, and the per-user cache of such observations (keyed by engine and
//! runtime version, [`observation_key`]).

use std::path::PathBuf;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount as DockerMount, MountTmpfsOptions, MountType,
};
use bollard::query_parameters::{
    CreateContainerOptions, LogsOptions, RemoveContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use mount_plan_launch::{EngineInfo, LaunchError};

use crate::version::{cached_observation, observation_key, RootMode};

/// R of the probe container (a read-only tmpfs of mode 0555, the working directory below it).
pub const PROBE_ROOT: &str = "/mount-plan-probe";
/// The label every probe container carries.
pub const PROBE_LABEL: &str = "io.mount-plan.probe";
const PLANNED: u32 = 0o555;

/// The observation cache: `$XDG_CACHE_HOME/mount-plan/docker-observations`, else under
/// `$HOME/.cache`, else `/tmp/mount-plan-cache-<uid>`.
pub fn cache_file() -> PathBuf {
    let dir = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .map(|d| d.join("mount-plan"))
        .unwrap_or_else(|| {
            // /proc/self belongs to the effective uid.
            use std::os::unix::fs::MetadataExt;
            let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
            PathBuf::from(format!("/tmp/mount-plan-cache-{uid}"))
        });
    dir.join("docker-observations")
}

/// What was observed on an engine of this version, if it was.
pub fn cached(engine: &EngineInfo) -> Option<RootMode> {
    let text = std::fs::read_to_string(cache_file()).ok()?;
    cached_observation(&text, &observation_key(engine))
}

/// Record an observation (best effort: a cache that cannot be written only costs a probe).
pub fn remember(engine: &EngineInfo, mode: RootMode) {
    use std::io::Write;
    let file = cache_file();
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
    {
        let _ = writeln!(f, "{}\t{mode}", observation_key(engine));
    }
}

fn probe_err(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> LaunchError {
    LaunchError::Engine {
        op: "probe",
        container: PROBE_ROOT.to_owned(),
        source: e.into(),
    }
}

/// The probe's create body: R a read-only tmpfs of mode 0555, the working directory R/j a
/// tmpfs below it (so Docker creates R/j in the image's filesystem first, as for a plan), and
/// `stat -c %a R` from `image` (which must have `stat` on its PATH).
pub fn probe_body(image: &str) -> ContainerCreateBody {
    let tmpfs = |target: String, read_only: bool, mode: u32| DockerMount {
        target: Some(target),
        typ: Some(MountType::TMPFS),
        read_only: Some(read_only),
        tmpfs_options: Some(MountTmpfsOptions {
            size_bytes: Some(64 << 10),
            mode: Some(i64::from(mode)),
            options: None,
        }),
        ..DockerMount::default()
    };
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(vec![
            "stat".into(),
            "-c".into(),
            "%a".into(),
            PROBE_ROOT.into(),
        ]),
        working_dir: Some(format!("{PROBE_ROOT}/j")),
        labels: Some([(PROBE_LABEL.to_owned(), "root-mode".to_owned())].into()),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            mounts: Some(vec![
                tmpfs(PROBE_ROOT.to_owned(), true, PLANNED),
                tmpfs(format!("{PROBE_ROOT}/j"), false, 0o755),
            ]),
            network_mode: Some("none".into()),
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// Parse the probe's output (`555`): kept, or the mode R got instead.
pub fn parse_probe_output(out: &str) -> Option<RootMode> {
    let mode = u32::from_str_radix(out.trim(), 8).ok()?;
    Some(if mode == PLANNED {
        RootMode::Kept
    } else {
        RootMode::Becomes(mode)
    })
}

/// Run the probe on the engine with `image` and return what R's mode became. The container
/// is removed whatever happens.
pub async fn observe_root_mode(docker: &Docker, image: &str) -> Result<RootMode, LaunchError> {
    let created = docker
        .create_container(None::<CreateContainerOptions>, probe_body(image))
        .await
        .map_err(probe_err)?;
    let id = created.id;
    let run = async {
        docker.start_container(&id, None).await?;
        let mut wait = docker.wait_container(
            &id,
            Some(WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        while wait.next().await.transpose()?.is_some() {}
        let mut out = String::new();
        let mut logs = docker.logs(
            &id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                ..LogsOptions::default()
            }),
        );
        while let Some(chunk) = logs.next().await {
            out.push_str(&chunk?.to_string());
        }
        Ok::<String, bollard::errors::Error>(out)
    }
    .await;
    let _ = docker
        .remove_container(
            &id,
            Some(RemoveContainerOptions {
                force: true,
                ..RemoveContainerOptions::default()
            }),
        )
        .await;
    let out = run.map_err(probe_err)?;
    parse_probe_output(&out).ok_or_else(|| {
        probe_err(format!(
            "docker rule `probe`: the probe printed {out:?}, not a mode (does the image have `stat`?)"
        ))
    })
}

/// What is known by observation of R's mode on `engine`: the cache, else (when the versions
/// cannot tell it and `image` is given) a probe run now and remembered.
pub async fn root_mode(
    docker: &Docker,
    engine: &EngineInfo,
    image: Option<&str>,
) -> Result<Option<RootMode>, LaunchError> {
    if let Some(seen) = cached(engine) {
        return Ok(Some(seen));
    }
    match image {
        Some(image) if crate::root_mode_from_runtime(engine.runtime.as_deref()).is_none() => {
            let seen = observe_root_mode(docker, image).await?;
            remember(engine, seen);
            Ok(Some(seen))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output() {
        assert_eq!(parse_probe_output("555\n"), Some(RootMode::Kept));
        assert_eq!(parse_probe_output("755\n"), Some(RootMode::Becomes(0o755)));
        assert_eq!(parse_probe_output("stat: not found"), None);
    }

    #[test]
    fn probe_body_mirrors_a_plan() {
        let b = probe_body("img");
        assert_eq!(b.working_dir.as_deref(), Some("/mount-plan-probe/j"));
        let mounts = b.host_config.unwrap().mounts.unwrap();
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[0].tmpfs_options.as_ref().unwrap().mode, Some(0o555));
        assert_eq!(mounts[1].target.as_deref(), Some("/mount-plan-probe/j"));
    }
}
