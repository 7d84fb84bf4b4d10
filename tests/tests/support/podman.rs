//! Podman fixtures: the rootful and rootless services that `.ci/podman-setup` starts, and the
//! probe image imported into each service's store through its socket.
//!
//! Include it next to `support` with `#[path = "support/podman.rs"] mod podman_support;`.
//!
//! The services are named by the env file that `.ci/podman-setup` writes
//! (`/tmp/mount-plan-podman/env`): `MOUNT_PLAN_PODMAN_ROOTFUL_SOCKET`,
//! `MOUNT_PLAN_PODMAN_ROOTLESS_SOCKET`, `MOUNT_PLAN_PODMAN_ROOTLESS_USER`. The test process
//! runs as root and connects to either socket; containers on the rootless socket run in the
//! rootless user's namespaces, so their workspaces must be readable by that user.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use mount_plan_podman::{PodmanEngine, PodmanOptions, UserNamespace};
use mount_plan_testkit::engines::TestEngine;

use crate::support::conformance::EngineFixture;
use crate::support::image::{image_tar, locked, probe_binary, repo_root, CONTENT_LABEL};
use crate::support::{require, run};

/// The probe image's name in a Podman store.
pub const IMAGE: &str = "localhost/mount-plan-probe:test";

/// Which service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The root service.
    Rootful,
    /// The unprivileged user's service.
    Rootless,
}

/// The rootless service's user.
#[derive(Debug, Clone)]
pub struct RootlessUser {
    /// Login name.
    pub name: String,
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// First host uid of its subordinate range (container uid 1 maps here).
    pub subuid: u32,
    /// First host gid of its subordinate range.
    pub subgid: u32,
}

impl RootlessUser {
    /// The host ids that container ids `uid:gid` map to under the default rootless user
    /// namespace (container 0 is the user itself, container n > 0 is `sub + n - 1`).
    pub fn host_ids(&self, uid: u32, gid: u32) -> (u32, u32) {
        let map = |id: u32, own: u32, sub: u32| if id == 0 { own } else { sub + id - 1 };
        (
            map(uid, self.uid, self.subuid),
            map(gid, self.gid, self.subgid),
        )
    }

    /// Run `args` as this user with its runtime dir and the project's containers.conf.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg("--")
            .arg("env")
            .arg(format!("HOME={}", self.home.display()))
            .arg(format!("USER={}", self.name))
            .arg(format!("XDG_RUNTIME_DIR=/run/user/{}", self.uid));
        if let Ok(conf) = setting("CONTAINERS_CONF") {
            cmd.arg(format!("CONTAINERS_CONF={conf}"));
        }
        cmd.arg(program).current_dir("/");
        cmd
    }
}

/// A Podman service the tests can reach.
#[derive(Debug, Clone)]
pub struct Service {
    /// Which one.
    pub mode: Mode,
    /// `unix:///...`.
    pub url: String,
    /// The rootless user (rootless only).
    pub user: Option<RootlessUser>,
}

fn passwd(user: &str) -> Result<(u32, u32, PathBuf), String> {
    let text = fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 6 && f[0] == user {
                Some((f[2].parse().ok()?, f[3].parse().ok()?, PathBuf::from(f[5])))
            } else {
                None
            }
        })
        .ok_or_else(|| format!("user {user:?} is not in /etc/passwd"))
}

fn subordinate(file: &str, user: &str) -> Result<u32, String> {
    let text = fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    text.lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() == 3 && f[0] == user)
                .then(|| f[1].parse().ok())
                .flatten()
        })
        .ok_or_else(|| format!("no range for {user:?} in {file}"))
}

/// A setting of `.ci/podman-setup`: the environment variable, else its line in the env file
/// that the script writes (so `cargo test` works without sourcing it first).
pub fn setting(key: &str) -> Result<String, String> {
    mount_plan_testkit::harness::podman_setting(key).ok_or_else(|| format!("{key} is not set"))
}

fn lookup(mode: Mode) -> Result<Service, String> {
    let hint = "run `bash .ci/podman-setup` (it writes /tmp/mount-plan-podman/env)";
    match mode {
        Mode::Rootful => Ok(Service {
            mode,
            url: TestEngine::PodmanRootful.socket()?,
            user: None,
        }),
        Mode::Rootless => {
            let url = TestEngine::PodmanRootless.socket()?;
            let name = setting("MOUNT_PLAN_PODMAN_ROOTLESS_USER")
                .map_err(|_| format!("MOUNT_PLAN_PODMAN_ROOTLESS_USER is not set: {hint}"))?;
            let (uid, gid, home) = passwd(&name)?;
            Ok(Service {
                mode,
                url,
                user: Some(RootlessUser {
                    subuid: subordinate("/etc/subuid", &name)?,
                    subgid: subordinate("/etc/subgid", &name)?,
                    name,
                    uid,
                    gid,
                    home,
                }),
            })
        }
    }
}

/// The service of `mode`, or `None` (skipped; a panic under `CI`).
pub fn service(mode: Mode) -> Option<Service> {
    let what = match mode {
        Mode::Rootful => "a rootful podman service",
        Mode::Rootless => "a rootless podman service",
    };
    require(what, lookup(mode))
}

/// Connect to `service` with `userns`, or `None` (skipped; a panic under `CI`).
pub async fn runtime(service: &Service, userns: UserNamespace) -> Option<PodmanEngine> {
    let options = PodmanOptions {
        userns,
        ..PodmanOptions::default()
    };
    let rt = require(
        &format!("the podman service at {}", service.url),
        PodmanEngine::connect(&service.url, options)
            .await
            .map_err(|e| e.to_string()),
    )?;
    use mount_plan_launch::Engine;
    assert_eq!(
        rt.info().rootless,
        service.mode == Mode::Rootless,
        "{} reports rootless={}",
        service.url,
        rt.info().rootless
    );
    Some(rt)
}

/// The probe image in the store of the service at `url`, imported once per content: the
/// root test process streams the tar through the socket (`podman --url ... import`), so the
/// tar need not be readable by a rootless service's user.
pub fn podman_image(url: &str) -> Result<String, String> {
    /// (service url, import result), one per service.
    type Imported = Vec<(String, Result<String, String>)>;
    static DONE: OnceLock<Mutex<Imported>> = OnceLock::new();
    let done = DONE.get_or_init(|| Mutex::new(Vec::new()));
    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, r)) = done.iter().find(|(u, _)| u == url) {
        return r.clone();
    }
    let result = locked(&repo_root().join("target/probe/.image.lock"), || {
        let (tar, digest) = image_tar(&repo_root().join("target/probe/image"))?;
        let current = run(Command::new("podman").args([
            "--url",
            url,
            "image",
            "inspect",
            "--format",
            &format!("{{{{index .Config.Labels \"{CONTENT_LABEL}\"}}}}"),
            IMAGE,
        ]))
        .unwrap_or_default();
        if current.trim() != digest {
            mount_plan_testkit::image::import(
                Command::new("podman").args(["--url", url]),
                &tar,
                IMAGE,
                &[format!("LABEL {CONTENT_LABEL}={digest}")],
            )?;
        }
        Ok(IMAGE.to_owned())
    });
    done.push((url.to_owned(), result.clone()));
    result
}

/// The conformance fixture for `service`: everything native (no accepted gaps), bind flags
/// visible in mountinfo. `nonroot` is the container user of the AsUser scenario and
/// `job_owner` the host owner of W/J (rootless: the host ids the container user maps to).
///
/// Rootless workspaces are not put on a shared tmpfs: the rootless service resolves bind
/// sources in its own mount namespace, a copy of the host's taken when its pause process
/// started (`/` is a private mount on these machines), so a filesystem mounted later is
/// invisible to it.
pub fn fixture(
    service: &Service,
    image: String,
    nonroot: &str,
    job_owner: (u32, u32),
) -> Option<EngineFixture> {
    let probe = require("the probe binary", probe_binary())?;
    let rootless = service.mode == Mode::Rootless;
    Some(EngineFixture {
        name: if rootless {
            "podman-rootless"
        } else {
            "podman-rootful"
        }
        .into(),
        image,
        probe,
        base_dir: std::env::temp_dir(),
        nonroot: nonroot.parse().expect("user"),
        job_owner: Some(job_owner),
        // Rootless: container root is the service's user on the host.
        root_owner: service.user.as_ref().map(|u| (u.uid, u.gid)),
        lacks_hardening: BTreeSet::new(),
        bind_flags_in_mountinfo: true,
        shared_tmpfs: !rootless,
        // Podman mounts the tmpfs with the planned mode and R's inode keeps it (0555 read
        // by the probe), unlike Docker.
        root_inode_mode: None,
        cli: ["podman", "--url", &service.url]
            .map(str::to_owned)
            .to_vec(),
    })
}

/// Ids of every container (any state) with label `key=value` on the service at `url`, from
/// the podman CLI (independent of the backend under test).
pub fn podman_ps_by_label(url: &str, key: &str, value: &str) -> Vec<String> {
    let out = run(Command::new("podman").args([
        "--url",
        url,
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={key}={value}"),
    ]))
    .expect("podman ps");
    out.split_whitespace().map(str::to_owned).collect()
}

/// Run `fut`, failing the test if it takes longer than `secs`: an engine call that hangs
/// must fail the suite, not stall CI.
pub async fn bounded<T>(what: &str, secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
}
