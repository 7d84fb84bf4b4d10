//! The launcher's view is not the engine's: `--launcher-workspace A --workspace B`, where
//! `A/job-1` is a real directory (checked and pinned) and `B/job-1` a link to a directory
//! outside W (what the engine mounts). The in-container gate compares the pins with what the
//! container got: `launch` exits 125, the command never ran (its marker exists nowhere), and
//! no container is left. On Docker, rootful Podman and rootless Podman (run by the rootless
//! user, as a site runs it).
//!
//! Needs the engines (Docker; the Podman services of `.ci/podman-setup`); without them: fails
//! under `CI`, otherwise shown as ignored.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mount_plan_testkit::engines::TestEngine;
use mount_plan_testkit::harness::podman_setting;

const IMAGE_DOCKER: &str = "mount-plan-busybox:gate-test";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A top directory holding A (the launcher's view) and B (the engine's), removed on drop.
struct Views {
    top: PathBuf,
}

impl Drop for Views {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.top);
    }
}

impl Views {
    /// A/{startup,local,job-1} real directories; B/startup and B/local links to A's (the same
    /// directories), B/job-1 a link to `outside`, a directory outside both workspaces.
    fn new(tag: &str, owner: Option<u32>) -> Views {
        let top = std::env::temp_dir().join(format!("mp-gate-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&top);
        let (a, b, outside) = (top.join("A"), top.join("B"), top.join("outside"));
        for d in ["startup", "local", "job-1"] {
            fs::create_dir_all(a.join(d)).unwrap();
        }
        fs::create_dir_all(&b).unwrap();
        fs::create_dir_all(&outside).unwrap();
        for d in ["startup", "local"] {
            std::os::unix::fs::symlink(a.join(d), b.join(d)).unwrap();
        }
        std::os::unix::fs::symlink(&outside, b.join("job-1")).unwrap();
        let mut dirs = vec![top.clone(), a.clone(), b.clone(), outside.clone()];
        dirs.extend(["startup", "local", "job-1"].map(|d| a.join(d)));
        for d in &dirs {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
            if let Some(uid) = owner {
                std::os::unix::fs::lchown(d, Some(uid), Some(uid)).unwrap();
            }
        }
        Views { top }
    }

    fn a(&self) -> PathBuf {
        self.top.join("A")
    }

    fn b(&self) -> PathBuf {
        self.top.join("B")
    }

    /// Where the command's marker would be, wherever the container's R/J led.
    fn markers(&self) -> Vec<PathBuf> {
        vec![
            self.top.join("outside/ran"),
            self.a().join("job-1/ran"),
            self.top.join("ran"),
        ]
    }

    fn args(&self, image: &str, label: &str) -> Vec<String> {
        let s = |p: &Path| p.to_str().unwrap().to_owned();
        vec![
            "--launcher-workspace".into(),
            s(&self.a()),
            "--workspace".into(),
            s(&self.b()),
            "--job".into(),
            "job-1".into(),
            "--image".into(),
            image.into(),
            "--label".into(),
            format!("mount-plan-test.run={label}"),
            "--".into(),
            "sh".into(),
            "-c".into(),
            "echo ran > ran".into(),
        ]
    }
}

/// The launch was refused by the gate before the command ran.
fn assert_refused_by_the_gate(engine: &str, o: &Output, views: &Views) {
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{engine}: {err}");
    assert!(
        err.contains("gate-refused") && err.contains("gate-bind-identity"),
        "{engine}: {err}"
    );
    assert!(err.contains("/workspace/job-1"), "{engine}: {err}");
    for m in views.markers() {
        assert!(!m.exists(), "{engine}: the command ran: {m:?} exists");
    }
}

fn docker_image() {
    let present = Command::new("docker")
        .args(["image", "inspect", IMAGE_DOCKER])
        .output()
        .unwrap()
        .status
        .success();
    if !present {
        let dir = std::env::temp_dir().join(format!("mp-gate-image-{}", std::process::id()));
        let (tar, _) = mount_plan_testkit::image::busybox_tar(&dir, &[]).expect("busybox tar");
        mount_plan_testkit::image::import(&mut Command::new("docker"), &tar, IMAGE_DOCKER, &[])
            .expect("import the docker test image");
        let _ = fs::remove_dir_all(&dir);
    }
}

fn left(cli: &mut Command, label: &str) -> String {
    let o = cli
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=mount-plan-test.run={label}"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout).trim().to_owned()
}

fn docker_refuses_a_launcher_view_that_is_not_the_engines() {
    docker_image();
    let views = Views::new("docker", None);
    let label = format!("gate-docker-{}", std::process::id());
    let o = Command::new(env!("CARGO_BIN_EXE_mount-plan"))
        .args(["launch", "--runtime", "docker"])
        .args(views.args(IMAGE_DOCKER, &label))
        .output()
        .unwrap();
    assert_refused_by_the_gate("docker", &o, &views);
    assert_eq!(left(&mut Command::new("docker"), &label), "");
}

fn podman_image() -> String {
    podman_setting("MOUNT_PLAN_PODMAN_IMAGE")
        .unwrap_or_else(|| "localhost/mount-plan-busybox:latest".into())
}

fn podman_cli(socket: &str) -> Command {
    let mut c = Command::new("podman");
    c.args(["--url", socket]);
    if let Some(conf) = podman_setting("CONTAINERS_CONF") {
        c.env("CONTAINERS_CONF", conf);
    }
    c
}

fn podman_rootful_refuses_a_launcher_view_that_is_not_the_engines() {
    let socket = TestEngine::PodmanRootful
        .socket()
        .expect("the rootful service of .ci/podman-setup");
    let views = Views::new("rootful", None);
    let label = format!("gate-rootful-{}", std::process::id());
    let o = Command::new(env!("CARGO_BIN_EXE_mount-plan"))
        .args(["launch", "--runtime", "podman", "--socket", &socket])
        .args(views.args(&podman_image(), &label))
        .output()
        .unwrap();
    assert_refused_by_the_gate("podman rootful", &o, &views);
    assert_eq!(left(&mut podman_cli(&socket), &label), "");
}

fn podman_rootless_refuses_a_launcher_view_that_is_not_the_engines() {
    let socket = TestEngine::PodmanRootless
        .socket()
        .expect("the rootless service of .ci/podman-setup");
    let user = podman_setting("MOUNT_PLAN_PODMAN_ROOTLESS_USER").expect("rootless user");
    let uid: u32 = podman_setting("MOUNT_PLAN_PODMAN_ROOTLESS_UID")
        .expect("rootless uid")
        .parse()
        .unwrap();
    let views = Views::new("rootless", Some(uid));
    // The user runs its own copy of the binary, as a site would.
    let bin = views.top.join("mount-plan");
    fs::copy(env!("CARGO_BIN_EXE_mount-plan"), &bin).unwrap();
    let label = format!("gate-rootless-{}", std::process::id());
    let o = Command::new("runuser")
        .args(["-u", &user, "--", "env"])
        .arg(format!("XDG_RUNTIME_DIR=/run/user/{uid}"))
        .arg(&bin)
        .args(["launch", "--runtime", "podman", "--socket", &socket])
        .args(views.args(&podman_image(), &label))
        .output()
        .unwrap();
    assert_refused_by_the_gate("podman rootless", &o, &views);
    assert_eq!(left(&mut podman_cli(&socket), &label), "");
}

fn main() {
    use mount_plan_testkit::harness::{self, Need};
    harness::run(vec![
        harness::test(
            "docker_refuses_a_launcher_view_that_is_not_the_engines",
            &[Need::Docker, Need::Root, Need::Busybox],
            docker_refuses_a_launcher_view_that_is_not_the_engines,
        ),
        harness::test(
            "podman_rootful_refuses_a_launcher_view_that_is_not_the_engines",
            &[Need::PodmanRootful, Need::Root, Need::Busybox],
            podman_rootful_refuses_a_launcher_view_that_is_not_the_engines,
        ),
        harness::test(
            "podman_rootless_refuses_a_launcher_view_that_is_not_the_engines",
            &[Need::PodmanRootless, Need::Root, Need::Busybox],
            podman_rootless_refuses_a_launcher_view_that_is_not_the_engines,
        ),
    ]);
}
