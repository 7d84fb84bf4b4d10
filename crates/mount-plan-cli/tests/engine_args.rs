//! The rendered `docker run` / `podman run` arguments, given to the real CLIs: they must be
//! accepted and mount exactly the planned sources and targets, even when the workspace path
//! holds `,` `"` `=` and spaces.

use std::path::{Path, PathBuf};
use std::process::Command;

fn engine_available(cli: &str, envs: &[(String, String)]) -> bool {
    let ok = Command::new(cli)
        .arg("info")
        .envs(envs.iter().cloned())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    // The harness ignored the test (failed it under CI) when the engine is missing.
    assert!(
        ok,
        "`{cli} info` failed; this test needs a working {cli} engine"
    );
    ok
}

fn podman_env() -> Vec<(String, String)> {
    // .ci/podman-setup writes the containers.conf that works on these machines.
    std::env::var("CONTAINERS_CONF")
        .ok()
        .or_else(|| {
            let p = "/tmp/mount-plan-podman/containers.conf";
            Path::new(p).exists().then(|| p.to_owned())
        })
        .map(|c| vec![("CONTAINERS_CONF".to_owned(), c)])
        .unwrap_or_default()
}

fn run(cli: &str, envs: &[(String, String)], args: &[String]) -> String {
    let o = Command::new(cli)
        .args(args)
        .envs(envs.iter().cloned())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{cli} {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Import a busybox image (Debian's static busybox) unless the engine has it.
fn ensure_image(cli: &str, envs: &[(String, String)], image: &str) {
    let have = Command::new(cli)
        .args(["image", "inspect", image])
        .envs(envs.iter().cloned())
        .output()
        .unwrap();
    if have.status.success() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("mp-img-{}-{cli}", std::process::id()));
    let (tar, _) = mount_plan_testkit::image::busybox_tar(&dir, &[])
        .expect("Debian's busybox-static must be installed at /bin/busybox");
    mount_plan_testkit::image::import(
        Command::new(cli).envs(envs.iter().cloned()),
        &tar,
        image,
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(&dir).unwrap();
}

struct Workspace(PathBuf);
impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
    }
}

fn hostile_workspace(tag: &str) -> Workspace {
    let base = std::env::temp_dir().join(format!("mp-args-{tag}-{}", std::process::id()));
    let ws = base.join("a,b \"c\"=d: e");
    for d in ["startup", "local", "job-1", "job-2"] {
        std::fs::create_dir_all(ws.join(d)).unwrap();
        std::fs::write(ws.join(d).join("marker"), format!("{d}\n")).unwrap();
    }
    Workspace(ws)
}

fn check_cli(cli: &str, format: &str, envs: &[(String, String)], extra: &[&str]) {
    if !engine_available(cli, envs) {
        return;
    }
    let image = "mount-plan-busybox:args-test";
    ensure_image(cli, envs, image);
    let ws = hostile_workspace(cli);
    let w = ws.0.to_str().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mount-plan"))
        .args([
            "plan",
            "--workspace",
            w,
            "--job",
            "job-1",
            "--format",
            format,
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let plan_args: Vec<String> = serde_json::from_slice(&o.stdout).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_mount-plan"))
        .args(["plan", "--workspace", w, "--job", "job-1"])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();

    let mut create: Vec<String> = vec!["create".into()];
    create.extend(extra.iter().map(|s| s.to_string()));
    create.extend(plan_args);
    create.extend([
        image.into(),
        "sh".into(),
        "-c".into(),
        "cat startup/marker 2>&1; cat ../startup/marker ../local/marker marker; ls ..; pwd".into(),
    ]);
    let id = run(cli, envs, &create).trim().to_owned();
    let result = std::panic::catch_unwind(|| {
        let inspect = run(cli, envs, &["inspect".into(), id.clone()]);
        let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        let mut seen: Vec<(String, String, bool)> = inspect[0]["Mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["Type"] == "bind")
            .map(|m| {
                (
                    m["Source"].as_str().unwrap().to_owned(),
                    m["Destination"].as_str().unwrap().to_owned(),
                    m["RW"].as_bool().unwrap(),
                )
            })
            .collect();
        seen.sort();
        let mut planned: Vec<(String, String, bool)> = plan["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["kind"] == "bind")
            .map(|m| {
                (
                    m["source"].as_str().unwrap().to_owned(),
                    m["target"].as_str().unwrap().to_owned(),
                    !m["read_only"].as_bool().unwrap(),
                )
            })
            .collect();
        planned.sort();
        assert_eq!(seen, planned, "{cli} mounted other binds than planned");
        assert_eq!(
            inspect[0]["Config"]["WorkingDir"], plan["workdir"],
            "{cli} working directory"
        );
        let out = run(cli, envs, &["start".into(), "-a".into(), id.clone()]);
        assert_eq!(
            out,
            "cat: can't open 'startup/marker': No such file or directory\n\
             startup\nlocal\njob-1\njob-1\nlocal\nstartup\n/workspace/job-1\n",
            "{cli}: what the container saw"
        );
    });
    run(cli, envs, &["rm".into(), "-f".into(), id]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn docker_run_accepts_the_docker_args_and_mounts_exactly_the_plan() {
    check_cli("docker", "docker-args", &[], &[]);
}

fn podman_run_accepts_the_podman_args_and_mounts_exactly_the_plan() {
    check_cli(
        "podman",
        "podman-args",
        &podman_env(),
        &["--network", "none"],
    );
}

fn main() {
    use mount_plan_testkit::harness::{self, Need};
    const DOCKER: &[Need] = &[Need::Docker, Need::Busybox];
    const PODMAN: &[Need] = &[Need::PodmanRootful, Need::Busybox];
    harness::run(vec![
        harness::test(
            "docker_run_accepts_the_docker_args_and_mounts_exactly_the_plan",
            DOCKER,
            docker_run_accepts_the_docker_args_and_mounts_exactly_the_plan,
        ),
        harness::test(
            "podman_run_accepts_the_podman_args_and_mounts_exactly_the_plan",
            PODMAN,
            podman_run_accepts_the_podman_args_and_mounts_exactly_the_plan,
        ),
    ]);
}
