//! `mount-plan launch --runtime podman`, run by the unprivileged user against its own rootless
//! service, as a site would run it: exit status, output in W/J owned by that user, no container
//! left. Needs the services of `.ci/podman-setup` (its env file names them); without them:
//! fails under `CI`, otherwise shown as ignored.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Output};

struct Rootless {
    user: String,
    uid: u32,
    socket: String,
    conf: String,
}

use mount_plan_testkit::harness::podman_setting as env_file_value;

fn rootless() -> Option<Rootless> {
    let found = (|| {
        let r = Rootless {
            user: env_file_value("MOUNT_PLAN_PODMAN_ROOTLESS_USER")?,
            uid: env_file_value("MOUNT_PLAN_PODMAN_ROOTLESS_UID")?
                .parse()
                .ok()?,
            socket: mount_plan_testkit::engines::TestEngine::PodmanRootless
                .socket()
                .ok()?,
            conf: env_file_value("CONTAINERS_CONF")?,
        };
        let ping = Command::new("podman")
            .args(["--url", &r.socket, "version"])
            .env("CONTAINERS_CONF", &r.conf)
            .output()
            .ok()?;
        ping.status.success().then_some(r)
    })();
    // The harness ignored the test (failed it under CI) when the service is missing.
    assert!(
        found.is_some(),
        "the rootless Podman service of .ci/podman-setup does not answer `podman version`"
    );
    found
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn as_user(r: &Rootless, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", &r.user, "--", "env"])
        .arg(format!("XDG_RUNTIME_DIR=/run/user/{}", r.uid))
        .args(args)
        .output()
        .expect("runuser")
}

fn rootless_launch_by_the_user_writes_user_owned_output_and_leaves_nothing() {
    let Some(r) = rootless() else { return };
    // Everything the user runs must be readable by it: copy the binary out of root's tree.
    let top = Dir(std::env::temp_dir().join(format!("mp-podman-cli-{}", std::process::id())));
    let bin = top.0.join("mount-plan");
    let ws = top.0.join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_mount-plan"), &bin).unwrap();
    std::fs::set_permissions(&top.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let st = Command::new("chown")
        .args(["-R", &format!("{0}:{0}", r.uid)])
        .arg(&ws)
        .status()
        .unwrap();
    assert!(st.success());
    let image = env_file_value("MOUNT_PLAN_PODMAN_IMAGE")
        .unwrap_or_else(|| "localhost/mount-plan-busybox:latest".into());
    let label = format!("mount-plan-test.run=podman-cli-{}", std::process::id());
    for d in ["startup", "local"] {
        let o = as_user(&r, &["mkdir", ws.join(d).to_str().unwrap()]);
        assert!(o.status.success());
    }
    let launch = |script: &str| {
        as_user(
            &r,
            &[
                bin.to_str().unwrap(),
                "launch",
                "--runtime",
                "podman",
                "--socket",
                &r.socket,
                "--userns",
                "keep-id",
                "--workspace",
                ws.to_str().unwrap(),
                "--job",
                "job1",
                "--create-job-dir",
                "--image",
                &image,
                "--label",
                &label,
                "--",
                "sh",
                "-c",
                script,
            ],
        )
    };
    let o = launch("echo hi > out");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = ws.join("job1/out");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hi\n");
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (r.uid, r.uid),
        "output owned by the launching user"
    );
    let o = launch("exit 3");
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let left = Command::new("podman")
        .args([
            "--url",
            &r.socket,
            "ps",
            "-aq",
            "--filter",
            &format!("label={label}"),
        ])
        .env("CONTAINERS_CONF", &r.conf)
        .output()
        .unwrap();
    assert!(left.status.success());
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "",
        "no container left"
    );
}

fn main() {
    use mount_plan_testkit::harness::{self, Need};
    const ROOTLESS: &[Need] = &[Need::PodmanRootless, Need::Root];
    harness::run(vec![harness::test(
        "rootless_launch_by_the_user_writes_user_owned_output_and_leaves_nothing",
        ROOTLESS,
        rootless_launch_by_the_user_writes_user_owned_output_and_leaves_nothing,
    )]);
}
