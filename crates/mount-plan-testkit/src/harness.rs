//! The engine tests' harness: each test names what it needs (an engine, root, busybox); a
//! need that is missing makes the test **ignored** with the reason, in the summary itself
//! (`test docker_as_root_conforms ... ignored (no docker engine: ...)`, `N ignored`), and
//! under `CI` (the variable set) a **failure** that names the need. A `SKIPPED` line on
//! stderr would be swallowed by the output capture; this is STYLE rule 11.
//!
//! # Adding an engine test binary
//!
//! 1. In the crate's `Cargo.toml`: `mount-plan-testkit` as a dev-dependency and
//!    ```toml
//!    [[test]]
//!    name = "docker26_conformance"   # the file tests/docker26_conformance.rs
//!    harness = false
//!    ```
//! 2. Write the tests as plain (async) functions, without `#[test]`/`#[tokio::test]`, and
//!    list them in `main`:
//!    ```ignore
//!    use mount_plan_testkit::harness::{self, Need, Runtime};
//!
//!    async fn docker_as_root_conforms() { /* assertions */ }
//!    fn parses_offline() {}
//!
//!    fn main() {
//!        const DOCKER: &[Need] = &[Need::Docker, Need::Root, Need::Busybox];
//!        harness::run(vec![
//!            harness::tokio(Runtime::Workers(2), "docker_as_root_conforms", DOCKER, docker_as_root_conforms),
//!            harness::test("parses_offline", &[], parses_offline),
//!        ]);
//!    }
//!    ```
//! 3. A new kind of engine (a Swarm manager, Podman 5 on its own socket): add a [`Need`]
//!    variant with its probe in `Need::probe`; every binary that lists it gets the same
//!    ignore/fail behaviour.
//!
//! Each need is probed at most once per test binary, when the first test that lists it runs
//! (a cheap check: a `GET /_ping` on the engine's socket, the effective uid, a file). Inside
//! a test, a fixture that still cannot be built is a plain failure: the need was there.
//!
//! # Simulating a machine without engines
//!
//! `MOUNT_PLAN_TEST_ABSENT=all` (or a comma list of [`Need::name`]s, e.g.
//! `docker,podman-rootless`) makes the probe report those needs missing without asking.
//! Pointing the real probes elsewhere works as well: `DOCKER_HOST=unix:///nonexistent`,
//! `MOUNT_PLAN_PODMAN_ROOTFUL_SOCKET=unix:///nonexistent` (the rootful default socket is
//! otherwise tried), `MOUNT_PLAN_PODMAN_DIR`, `MOUNT_PLAN_SWARM_DIR` and `MOUNT_PLAN_ENGINES_DIR` set to
//! `/nonexistent`, with the other `MOUNT_PLAN_PODMAN_*`, `MOUNT_PLAN_SWARM_*`,
//! `MOUNT_PLAN_DOCKER26_SOCKET` and `MOUNT_PLAN_PODMAN5_SOCKET` variables unset.

use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::engines::TestEngine;
pub use libtest_mimic::Trial;
use libtest_mimic::{Arguments, Completion, Failed};

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Need {
    /// A Docker engine answering on `DOCKER_HOST` (default `unix:///var/run/docker.sock`).
    Docker,
    /// The rootful Podman service of `.ci/podman-setup` (`MOUNT_PLAN_PODMAN_ROOTFUL_SOCKET`,
    /// default `unix:///run/podman/podman.sock`).
    PodmanRootful,
    /// The rootless Podman service of `.ci/podman-setup` (`MOUNT_PLAN_PODMAN_ROOTLESS_SOCKET`
    /// and `MOUNT_PLAN_PODMAN_ROOTLESS_USER`).
    PodmanRootless,
    /// The test process runs as root (it mounts, makes device nodes, chowns).
    Root,
    /// Debian's static busybox at `/bin/busybox`, the test image's userland.
    Busybox,
    /// The three-node Swarm of `.ci/swarm-setup`: its manager (`MOUNT_PLAN_SWARM_SOCKET`)
    /// answers.
    Swarm,
    /// The Docker 26 engine of `.ci/engines-setup` (`MOUNT_PLAN_DOCKER26_SOCKET`) answers.
    Docker26,
    /// The rootful Podman 5 of `.ci/engines-setup` (`MOUNT_PLAN_PODMAN5_SOCKET`) answers.
    Podman5,
    /// The Slurm cluster of `.ci/slurm-setup`: `scontrol ping` behind
    /// `MOUNT_PLAN_SLURM_COMMAND` finds the controller up.
    Slurm,
}

impl Need {
    /// Every need, in probe order.
    pub const ALL: [Need; 9] = [
        Need::Docker,
        Need::PodmanRootful,
        Need::PodmanRootless,
        Need::Root,
        Need::Busybox,
        Need::Swarm,
        Need::Docker26,
        Need::Podman5,
        Need::Slurm,
    ];

    /// The name used in `MOUNT_PLAN_TEST_ABSENT`.
    pub fn name(self) -> &'static str {
        match self {
            Need::Docker => "docker",
            Need::PodmanRootful => "podman-rootful",
            Need::PodmanRootless => "podman-rootless",
            Need::Root => "root",
            Need::Busybox => "busybox",
            Need::Swarm => "swarm",
            Need::Docker26 => "docker26",
            Need::Podman5 => "podman5",
            Need::Slurm => "slurm",
        }
    }

    /// What is missing, as the summary says it (`ignored (<this>: <why>)`).
    fn missing(self) -> &'static str {
        match self {
            Need::Docker => "no docker engine",
            Need::PodmanRootful => "no rootful podman service",
            Need::PodmanRootless => "no rootless podman service",
            Need::Root => "not root",
            Need::Busybox => "no busybox-static",
            Need::Swarm => "no swarm",
            Need::Docker26 => "no docker 26 engine",
            Need::Podman5 => "no podman 5 engine",
            Need::Slurm => "no slurm cluster",
        }
    }

    /// Ask the machine (uncached; [`check`] caches).
    fn probe(self) -> Result<(), String> {
        if let Some(absent) = std::env::var_os("MOUNT_PLAN_TEST_ABSENT") {
            let absent = absent.to_string_lossy().into_owned();
            if absent
                .split(',')
                .any(|n| n.trim() == "all" || n.trim() == self.name())
            {
                return Err(format!("MOUNT_PLAN_TEST_ABSENT={absent}"));
            }
        }
        match self {
            Need::Docker | Need::PodmanRootful | Need::Swarm | Need::Docker26 | Need::Podman5 => {
                ping(&self.engine().expect("an engine need").socket()?)
            }
            Need::PodmanRootless => {
                let hint = "run `bash .ci/podman-setup`";
                podman_setting("MOUNT_PLAN_PODMAN_ROOTLESS_USER").ok_or_else(|| {
                    format!("MOUNT_PLAN_PODMAN_ROOTLESS_USER is not set ({hint})")
                })?;
                ping(&TestEngine::PodmanRootless.socket()?)
            }
            Need::Root => {
                if rustix::process::geteuid().is_root() {
                    Ok(())
                } else {
                    Err(format!("euid {}", rustix::process::geteuid().as_raw()))
                }
            }
            Need::Slurm => {
                let hint = "run `bash .ci/slurm-setup` (it writes /tmp/mp-slurm/env)";
                let prefix = slurm_setting("MOUNT_PLAN_SLURM_COMMAND")
                    .ok_or_else(|| format!("MOUNT_PLAN_SLURM_COMMAND is not set ({hint})"))?;
                let words: Vec<&str> = prefix.split_whitespace().collect();
                let (program, args) = match words.split_first() {
                    Some((p, a)) => (*p, a.to_vec()),
                    None => ("scontrol", Vec::new()),
                };
                let mut cmd = std::process::Command::new(program);
                cmd.args(args);
                if !words.is_empty() {
                    cmd.arg("scontrol");
                }
                let out = cmd
                    .arg("ping")
                    .output()
                    .map_err(|e| format!("{prefix} scontrol ping: {e} ({hint})"))?;
                let text = String::from_utf8_lossy(&out.stdout);
                if out.status.success() && text.contains("UP") {
                    Ok(())
                } else {
                    Err(format!(
                        "{prefix} scontrol ping: {}{} ({hint})",
                        text.trim(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                }
            }
            Need::Busybox => {
                if std::path::Path::new("/bin/busybox").is_file() {
                    Ok(())
                } else {
                    Err("/bin/busybox is missing (apt-get install busybox-static)".to_owned())
                }
            }
        }
    }

    /// The engine this need is, if it is one.
    pub fn engine(self) -> Option<TestEngine> {
        TestEngine::ALL.into_iter().find(|e| e.need() == self)
    }
}

/// Whether `need` is met, probed once per process.
pub fn check(need: Need) -> Result<(), String> {
    static PROBED: OnceLock<Vec<OnceLock<Result<(), String>>>> = OnceLock::new();
    let slots = PROBED.get_or_init(|| Need::ALL.iter().map(|_| OnceLock::new()).collect());
    let i = Need::ALL
        .iter()
        .position(|n| *n == need)
        .expect("every need is in ALL");
    slots[i].get_or_init(|| need.probe()).clone()
}

/// The first missing need of `needs`, as `"<what is missing>: <why>"`.
fn first_missing(needs: &[Need]) -> Option<String> {
    needs
        .iter()
        .find_map(|&n| check(n).err().map(|why| format!("{}: {why}", n.missing())))
}

/// Whether the environment says this is CI (`CI` set): missing needs fail there.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// A setting of `.ci/podman-setup`: the environment variable, else its line in the env file
/// the script writes (`$MOUNT_PLAN_PODMAN_DIR/env`, default `/tmp/mount-plan-podman/env`), so
/// `cargo test` works without sourcing it first.
pub fn podman_setting(key: &str) -> Option<String> {
    setup_setting("MOUNT_PLAN_PODMAN_DIR", "/tmp/mount-plan-podman", key)
}

/// A setting of `.ci/swarm-setup`, as [`podman_setting`] (`$MOUNT_PLAN_SWARM_DIR/env`,
/// default `/tmp/mount-plan-swarm/env`).
pub fn swarm_setting(key: &str) -> Option<String> {
    setup_setting("MOUNT_PLAN_SWARM_DIR", "/tmp/mount-plan-swarm", key)
}

/// The workers of `.ci/swarm-setup`, each as (its node hostname, which is also its
/// container's name on this machine; its own engine's socket), from
/// `MOUNT_PLAN_SWARM_WORKERS` and `MOUNT_PLAN_SWARM_WORKER_SOCKETS` (same order); or why they
/// are unknown.
pub fn swarm_workers() -> Result<Vec<(String, String)>, String> {
    let hint = "run `bash .ci/swarm-setup` (it writes /tmp/mount-plan-swarm/env)";
    let get = |k: &str| swarm_setting(k).ok_or_else(|| format!("{k} is not set: {hint}"));
    let hostnames = get("MOUNT_PLAN_SWARM_WORKERS")?;
    let sockets = get("MOUNT_PLAN_SWARM_WORKER_SOCKETS")?;
    Ok(hostnames
        .split_whitespace()
        .zip(sockets.split_whitespace())
        .map(|(h, s)| (h.to_owned(), s.to_owned()))
        .collect())
}

/// A setting of `.ci/slurm-setup`, as [`podman_setting`] (`$MOUNT_PLAN_SLURM_DIR/env`,
/// default `/tmp/mp-slurm/env`).
pub fn slurm_setting(key: &str) -> Option<String> {
    setup_setting("MOUNT_PLAN_SLURM_DIR", "/tmp/mp-slurm", key)
}

/// A setting of `.ci/engines-setup`, as [`podman_setting`] (`$MOUNT_PLAN_ENGINES_DIR/env`,
/// default `/tmp/mount-plan-engines/env`).
pub fn engines_setting(key: &str) -> Option<String> {
    setup_setting("MOUNT_PLAN_ENGINES_DIR", "/tmp/mount-plan-engines", key)
}

/// `key` from the environment, else from `<$dir_var or default_dir>/env` (`KEY=value`, the
/// value possibly in double quotes).
fn setup_setting(dir_var: &str, default_dir: &str, key: &str) -> Option<String> {
    if let Ok(v) = std::env::var(key) {
        return Some(v);
    }
    let dir = std::env::var_os(dir_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default_dir));
    let text = std::fs::read_to_string(dir.join("env")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix('=')
            .map(|v| v.trim_matches('"').to_owned())
    })
}

/// `GET /_ping` on a Docker-compatible API at `url` (`unix://` or `tcp://`): Ok on a 200.
fn ping(url: &str) -> Result<(), String> {
    const REQUEST: &[u8] = b"GET /_ping HTTP/1.0\r\nHost: localhost\r\n\r\n";
    let timeout = Some(Duration::from_secs(5));
    let mut answer = String::new();
    let talk = |s: &mut dyn ReadWrite, answer: &mut String| -> std::io::Result<()> {
        s.write_all(REQUEST)?;
        s.read_to_string(answer).map(drop)
    };
    let result = if let Some(path) = url.strip_prefix("unix://") {
        UnixStream::connect(path).and_then(|mut s| {
            s.set_read_timeout(timeout)?;
            s.set_write_timeout(timeout)?;
            talk(&mut s, &mut answer)
        })
    } else if let Some(addr) = url.strip_prefix("tcp://") {
        std::net::TcpStream::connect(addr).and_then(|mut s| {
            s.set_read_timeout(timeout)?;
            s.set_write_timeout(timeout)?;
            talk(&mut s, &mut answer)
        })
    } else {
        return Err(format!("{url:?} is neither unix:// nor tcp://"));
    };
    result.map_err(|e| format!("{url}: {e}"))?;
    let status = answer.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(format!("{url}: GET /_ping answered {status:?}"))
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The runtime an async test runs on (what `#[tokio::test]` used to say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `#[tokio::test]`: one thread.
    CurrentThread,
    /// `#[tokio::test(flavor = "multi_thread", worker_threads = n)]`.
    Workers(usize),
}

/// Ignored with the reason outside CI; a failure naming the need under CI; else `None`.
fn gate(needs: &[Need]) -> Option<Result<Completion, Failed>> {
    let why = first_missing(needs)?;
    Some(if under_ci() {
        Err(format!("this test needs what is missing, and CI is set: {why}").into())
    } else {
        Ok(Completion::ignored_with(why))
    })
}

/// A plain test needing `needs`.
///
/// A missing need is decided when the test runs, so the reason is printed on the test's
/// own line (`ignored (<why>)`) and counted in `N ignored`; libtest-mimic 0.8 prints no
/// reason for a trial flagged with `with_ignored_flag(true)` before the run.
pub fn test(name: &str, needs: &'static [Need], body: fn()) -> Trial {
    Trial::ignorable_test(name, move || match gate(needs) {
        Some(outcome) => outcome,
        None => {
            body();
            Ok(Completion::Completed)
        }
    })
}

/// An async test needing `needs`, run on a fresh tokio runtime of the given kind.
pub fn tokio<F, Fut>(runtime: Runtime, name: &str, needs: &'static [Need], body: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    Trial::ignorable_test(name, move || match gate(needs) {
        Some(outcome) => outcome,
        None => {
            let rt = match runtime {
                Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread(),
                Runtime::Workers(n) => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(n);
                    b
                }
            }
            .enable_all()
            .build()
            .expect("a tokio runtime");
            rt.block_on(body());
            Ok(Completion::Completed)
        }
    })
}

/// Run `trials` as libtest does (same flags, same summary) and exit with its status.
pub fn run(trials: Vec<Trial>) -> ! {
    let args = Arguments::from_args();
    libtest_mimic::run(&args, trials).exit()
}
