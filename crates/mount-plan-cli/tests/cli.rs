//! The `mount-plan` binary: plan and check, as a user runs them.

use std::process::{Command, Output, Stdio};

fn mount_plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mount-plan"))
        .args(args)
        .output()
        .expect("run mount-plan")
}

fn mount_plan_stdin(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mount-plan"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mount-plan");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}
fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn plan_prints_the_documented_json() {
    let o = mount_plan(&["plan", "--workspace", "/srv/site", "--job", "job-1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["job"], "job-1");
    assert_eq!(v["workspace"], "/srv/site");
    assert_eq!(v["container_root"], "/workspace");
    assert_eq!(v["workdir"], "/workspace/job-1");
    let mounts = v["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 4);
    assert_eq!(mounts[0]["kind"], "tmpfs");
    assert_eq!(mounts[0]["target"], "/workspace");
    assert_eq!(mounts[0]["mode"], "0555");
    assert_eq!(mounts[0]["read_only"], true);
    assert_eq!(mounts[0]["size_bytes"], 1048576);
    let rw: Vec<_> = mounts.iter().filter(|m| m["read_only"] == false).collect();
    assert_eq!(rw.len(), 1);
    assert_eq!(rw[0]["source"], "/srv/site/job-1");
    assert_eq!(rw[0]["target"], "/workspace/job-1");
    assert_eq!(mounts[1]["source"], "/srv/site/startup");
    assert_eq!(mounts[2]["source"], "/srv/site/local");
}

#[test]
fn plan_options_change_the_layout() {
    let o = mount_plan(&[
        "plan",
        "--workspace",
        "/srv/site",
        "--job",
        "j",
        "--container-root",
        "/var/tmp/ws",
        "--shared",
        "certs",
        "--root",
        "scratch",
        "--scratch-size",
        "65536",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mounts = v["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 3);
    assert_eq!(mounts[0]["mode"], "1777");
    assert_eq!(mounts[0]["read_only"], false);
    assert_eq!(mounts[0]["size_bytes"], 65536);
    assert_eq!(mounts[1]["target"], "/var/tmp/ws/certs");
    assert_eq!(v["workdir"], "/var/tmp/ws/j");

    let o = mount_plan(&["plan", "--workspace", "/w", "--job", "j", "--no-shared"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["mounts"].as_array().unwrap().len(), 2);
}

#[test]
fn layout_file_is_read_and_flags_override_it() {
    let dir = std::env::temp_dir().join(format!("mp-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("layout.toml");
    std::fs::write(
        &file,
        r#"
container_root = "/var/tmp/nvflare/workspace"
shared = ["startup", "local"]
root = "scratch"
root_size_bytes = 8388608

[[extra_mounts]]
source = "/datasets/mnist"
target = "/data/mnist"

[[extra_mounts]]
source = "/results"
target = "/data/results"
read_only = false
"#,
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let o = mount_plan(&["plan", "--workspace", "/srv/w", "--job", "j", "--layout", f]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mounts = v["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 6);
    assert_eq!(mounts[0]["size_bytes"], 8388608);
    assert_eq!(mounts[4]["target"], "/data/mnist");
    assert_eq!(mounts[4]["read_only"], true);
    assert_eq!(mounts[5]["target"], "/data/results");
    assert_eq!(mounts[5]["read_only"], false);
    assert_eq!(v["workdir"], "/var/tmp/nvflare/workspace/j");

    let o = mount_plan(&[
        "plan",
        "--workspace",
        "/srv/w",
        "--job",
        "j",
        "--layout",
        f,
        "--root",
        "read-only",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["mounts"][0]["mode"], "0555");

    // An extra mount inside the workspace is refused.
    std::fs::write(
        &file,
        "[[extra_mounts]]\nsource = \"/srv/w/other-job\"\ntarget = \"/data/x\"\n",
    )
    .unwrap();
    let o = mount_plan(&["plan", "--workspace", "/srv/w", "--job", "j", "--layout", f]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("extra-overlaps-workspace"),
        "{}",
        stderr(&o)
    );
    // An unknown key is refused, not ignored.
    std::fs::write(&file, "privileged = true\n").unwrap();
    let o = mount_plan(&["plan", "--workspace", "/srv/w", "--job", "j", "--layout", f]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("privileged"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_input_exits_2_with_nothing_on_stdout() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["--workspace", "/srv/site", "--job", "Startup"],
            "reserved",
            "\"Startup\"",
        ),
        (
            &["--workspace", "/srv/site", "--job", "a,b"],
            "bad-char",
            "\"a,b\"",
        ),
        (
            &["--workspace", "/srv/site", "--job", "../x"],
            "bad-first-char",
            "\"../x\"",
        ),
        (
            &["--workspace", "/srv/site", "--job", "x."],
            "trailing-dot",
            "\"x.\"",
        ),
        (&["--workspace", "/srv/site", "--job", ""], "empty", "empty"),
        (
            &["--workspace", "srv", "--job", "j"],
            "not-absolute",
            "\"srv\"",
        ),
        (
            &["--workspace", "/srv/../etc", "--job", "j"],
            "not-normal",
            "\"/srv/../etc\"",
        ),
        (&["--workspace", "/", "--job", "j"], "is-root", "\"/\""),
        (
            &[
                "--workspace",
                "/w",
                "--job",
                "j",
                "--container-root",
                "/proc/x",
            ],
            "kernel-fs",
            "\"/proc/x\"",
        ),
        (
            &["--workspace", "/w", "--job", "j", "--root", "scratch"],
            "scratch-size",
            "scratch",
        ),
        (
            &["--workspace", "/w", "--job", "j", "--shared", "a:b"],
            "bad-char",
            "\"a:b\"",
        ),
    ];
    for (args, rule, value) in cases {
        let mut full = vec!["plan"];
        full.extend_from_slice(args);
        let o = mount_plan(&full);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}: stdout {:?}", stdout(&o));
        let err = stderr(&o);
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(rule), "{args:?}: {err} lacks rule {rule}");
        assert!(err.contains(value), "{args:?}: {err} lacks value {value}");
    }
}

#[test]
fn check_lists_each_name_and_sets_the_exit_status() {
    let o = mount_plan(&["check", "job-1", "job_1", "train-2026.11"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "ok job-1\nok job_1\nok train-2026.11\n");

    let o = mount_plan(&["check", "job-1", "Startup", "a:b"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "ok job-1");
    assert!(lines[1].starts_with("invalid Startup: ") && lines[1].contains("`reserved`"));
    assert!(lines[2].starts_with("invalid a:b: ") && lines[2].contains("`bad-char`"));

    // --shared changes what is reserved.
    let o = mount_plan(&["check", "--shared", "certs", "startup"]);
    assert_eq!(o.status.code(), Some(0));
    let o = mount_plan(&["check", "--shared", "certs", "CERTS"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn check_json_reads_any_string() {
    let input = "\"job-1\"\n\"a\\u0000b\"\n\"a\\nb\"\n\"Local\"\n\"\\u0430bc\"\n";
    let o = mount_plan_stdin(&["check", "--json"], input);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["ok"], true);
    assert!(rows[0]["rule"].is_null() && rows[0]["error"].is_null());
    assert_eq!(rows[1]["name"], "a\u{0}b");
    assert_eq!(rows[1]["rule"], "bad-char");
    assert_eq!(rows[2]["rule"], "bad-char");
    assert_eq!(rows[3]["rule"], "reserved");
    assert_eq!(rows[4]["rule"], "bad-first-char");
    for r in &rows[1..] {
        assert_eq!(r["ok"], false);
        assert!(r["error"]
            .as_str()
            .unwrap()
            .contains(r["rule"].as_str().unwrap()));
    }
    // A line that is not a JSON string: see tests/stream.rs.
}

#[test]
fn rendered_formats_are_json_arrays() {
    for format in ["docker-args", "podman-args", "oci"] {
        let o = mount_plan(&[
            "plan",
            "--workspace",
            "/w",
            "--job",
            "j",
            "--format",
            format,
        ]);
        assert!(o.status.success());
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v.as_array().is_some_and(|a| !a.is_empty()), "{format}");
    }
    let o = mount_plan(&[
        "plan",
        "--workspace",
        "/w",
        "--job",
        "j",
        "--format",
        "table",
    ]);
    assert!(stdout(&o).contains("/workspace/j"));
}

fn temp_workspace(tag: &str) -> std::path::PathBuf {
    let ws = std::env::temp_dir().join(format!("mp-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ws);
    for d in ["startup", "local", "job1"] {
        std::fs::create_dir_all(ws.join(d)).unwrap();
    }
    ws
}

#[test]
fn verify_prints_pins_that_match_the_real_inodes() {
    use std::os::unix::fs::MetadataExt;
    let ws = temp_workspace("pins");
    let w = ws.to_str().unwrap();
    let o = mount_plan(&["plan", "--workspace", w, "--job", "job1", "--verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The plan's own fields are unchanged; pins are added.
    assert_eq!(v["workdir"], "/workspace/job1");
    let meta = std::fs::metadata(&ws).unwrap();
    assert_eq!(v["pins"]["workspace"]["dev"], meta.dev());
    assert_eq!(v["pins"]["workspace"]["ino"], meta.ino());
    let binds = v["pins"]["binds"].as_array().unwrap();
    assert_eq!(binds.len(), 3);
    for b in binds {
        let m = std::fs::metadata(b["source"].as_str().unwrap()).unwrap();
        assert_eq!(b["ino"], m.ino(), "{b}");
        assert_eq!(b["dev"], m.dev(), "{b}");
    }
    std::fs::remove_dir_all(&ws).unwrap();
}

#[test]
fn verify_refuses_a_symlinked_job_directory_and_names_it() {
    let ws = temp_workspace("symlink");
    let outside = ws.with_extension("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("job2")).unwrap();
    let w = ws.to_str().unwrap();
    let o = mount_plan(&["plan", "--workspace", w, "--job", "job2", "--verify"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    let err = stderr(&o);
    assert!(err.contains("`symlink`"), "{err}");
    assert!(
        err.contains(&format!("{:?}", ws.join("job2").to_str().unwrap())),
        "{err}"
    );
    std::fs::remove_dir_all(&ws).unwrap();
    std::fs::remove_dir_all(&outside).unwrap();
}

#[test]
fn create_job_dir_creates_once_and_fresh_refuses_an_existing_one() {
    use std::os::unix::fs::PermissionsExt;
    let ws = temp_workspace("create");
    let w = ws.to_str().unwrap();
    let args = [
        "plan",
        "--workspace",
        w,
        "--job",
        "job9",
        "--create-job-dir=fresh",
    ];
    let o = mount_plan(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["job_dir_created"], true);
    let mode = std::fs::metadata(ws.join("job9"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o750);
    let o = mount_plan(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`exists`"), "{}", stderr(&o));
    // if-missing reuses it.
    let o = mount_plan(&[
        "plan",
        "--workspace",
        w,
        "--job",
        "job9",
        "--create-job-dir",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A missing job directory without creation is an error, and nothing is created.
    let o = mount_plan(&["plan", "--workspace", w, "--job", "job10", "--verify"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`missing`"), "{}", stderr(&o));
    assert!(!ws.join("job10").exists());
    std::fs::remove_dir_all(&ws).unwrap();
}

#[test]
fn launcher_workspace_checks_the_launcher_view_and_keeps_host_paths() {
    let ws = temp_workspace("view");
    let o = mount_plan(&[
        "plan",
        "--workspace",
        "/host/site/ws",
        "--job",
        "job1",
        "--launcher-workspace",
        ws.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["workspace"], "/host/site/ws");
    assert_eq!(v["mounts"][3]["source"], "/host/site/ws/job1");
    assert_eq!(v["launcher_workspace"], ws.to_str().unwrap());
    std::fs::remove_dir_all(&ws).unwrap();
}

#[test]
fn usage_errors_exit_2_but_125_for_launch_and_help_exits_0() {
    let o = mount_plan(&["plan", "--workspace", "/w"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    let o = mount_plan(&["launch", "--runtime", "docker", "--bogus"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let o = mount_plan(&[
        "launch",
        "--runtime",
        "nope",
        "--workspace",
        "/w",
        "--job",
        "j",
        "--image",
        "i",
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    for args in [
        &["--help"][..],
        &["plan", "--help"],
        &["launch", "--help"],
        &["--version"],
    ] {
        let o = mount_plan(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(!o.stdout.is_empty(), "{args:?}");
    }
    let help = stdout(&mount_plan(&["plan", "--help"]));
    for flag in [
        "--workspace",
        "--job",
        "--verify",
        "--create-job-dir",
        "--launcher-workspace",
        "--format",
    ] {
        assert!(help.contains(flag), "plan --help lacks {flag}");
    }
}

#[test]
fn job_dir_owner_sets_the_owner_of_a_created_job_directory() {
    use std::os::unix::fs::MetadataExt;
    let ws = temp_workspace("owner");
    let w = ws.to_str().unwrap();
    let o = mount_plan(&[
        "plan",
        "--workspace",
        w,
        "--job",
        "job7",
        "--create-job-dir",
        "--job-dir-owner",
        "4321:4322",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = std::fs::metadata(ws.join("job7")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 4322));
    let o = mount_plan(&[
        "plan",
        "--workspace",
        w,
        "--job",
        "job8",
        "--create-job-dir",
        "--job-dir-owner",
        "mpjob",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("UID:GID"), "{}", stderr(&o));
    assert!(!ws.join("job8").exists());
    std::fs::remove_dir_all(&ws).unwrap();
}
