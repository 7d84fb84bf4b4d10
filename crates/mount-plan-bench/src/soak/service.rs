//! The Podman services of `.ci/podman-setup`, stopped and started again the way that script
//! starts them (the podman-restart fault).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::TestEngine;

/// One service: where its pid file, socket and log are.
#[derive(Debug)]
pub struct Service {
    rootless: bool,
    dir: PathBuf,
    socket: PathBuf,
    /// The service this soak started last (reaped when it is stopped).
    child: Option<std::process::Child>,
    pub restarts: usize,
}

impl Service {
    pub fn find(engine: TestEngine) -> Result<Service> {
        let rootless = match engine {
            TestEngine::PodmanRootful => false,
            TestEngine::PodmanRootless => true,
            other => bail!("{other:?} is not a service this machine runs"),
        };
        let dir = PathBuf::from(crate::env_or(
            "MOUNT_PLAN_PODMAN_DIR",
            "/tmp/mount-plan-podman",
        ));
        let socket = if rootless {
            PathBuf::from(format!(
                "/run/user/{}/podman/podman.sock",
                crate::rootless_uid()?
            ))
        } else {
            PathBuf::from("/run/podman/podman.sock")
        };
        let s = Service {
            rootless,
            dir,
            socket,
            child: None,
            restarts: 0,
        };
        let pid = s.pid()?;
        anyhow::ensure!(
            alive(pid),
            "the podman service of {:?} (pid {pid}) is not running",
            s.pid_file()
        );
        Ok(s)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join(if self.rootless {
            "rootless.pid"
        } else {
            "rootful.pid"
        })
    }

    fn pid(&self) -> Result<u32> {
        let f = self.pid_file();
        std::fs::read_to_string(&f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .parse()
            .with_context(|| format!("{} holds no pid", f.display()))
    }

    /// Stop the service (SIGTERM to its process group, then SIGKILL after 10 s) and start it
    /// again as .ci/podman-setup does; returns once its socket answers.
    pub fn restart(&mut self) -> Result<()> {
        let pid = self.pid()?;
        // setsid made it a process-group leader: its re-exec'd child goes with it.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pid}")])
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while self.running(pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.running(pid) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(if self.rootless {
                "rootless.log"
            } else {
                "rootful.log"
            }))?;
        let conf = crate::env_or(
            "CONTAINERS_CONF",
            &self.dir.join("containers.conf").display().to_string(),
        );
        let url = format!("unix://{}", self.socket.display());
        let mut cmd = Command::new("setsid");
        if self.rootless {
            let uid = crate::rootless_uid()?;
            let user = crate::env_or("MOUNT_PLAN_PODMAN_ROOTLESS_USER", "mpjob");
            cmd.arg("setpriv")
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .args(["--init-groups", "--", "env", "-i"])
                .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
                .arg(format!("HOME=/home/{user}"))
                .arg(format!("USER={user}"))
                .arg(format!("LOGNAME={user}"))
                .arg(format!("XDG_RUNTIME_DIR=/run/user/{uid}"))
                .arg(format!("CONTAINERS_CONF={conf}"));
        } else {
            cmd.env("CONTAINERS_CONF", &conf);
        }
        cmd.args(["podman", "system", "service", "--time=0", &url])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().context("starting the podman service again")?;
        std::fs::write(self.pid_file(), format!("{}\n", child.id()))?;
        self.child = Some(child);
        self.restarts += 1;
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if crate::raw::request(&self.socket, "GET", "/v4.3.1/libpod/_ping", None)
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "the restarted service does not answer on {}",
            self.socket.display()
        )
    }

    fn running(&mut self, pid: u32) -> bool {
        if let Some(child) = &mut self.child {
            if child.id() == pid {
                return !matches!(child.try_wait(), Ok(Some(_)));
            }
        }
        alive(pid)
    }
}

/// Whether `pid` runs (a zombie does not count).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
