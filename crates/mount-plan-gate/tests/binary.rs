//! The gate's binary run as an engine runs it (its `main`: argument handling, the refusal
//! line and status, no-new-privileges, the node variable, `install`), outside a container.
//! The unit tests in `main.rs` decide on parsed mountinfo; these run the real executable.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use mount_plan_spec::gate_protocol::{
    GATE_LINE_PREFIX, GATE_NODE_ENV, GATE_PROTOCOL, GATE_REFUSED,
};

const GATE: &str = env!("CARGO_BIN_EXE_mount-plan-gate");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gate-bin-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A plan whose root is missing here: the gate must refuse it.
fn refused_run(node: Option<&str>) -> Output {
    let mut c = Command::new(GATE);
    c.args([
        GATE_PROTOCOL,
        "n7",
        "tmpfs",
        "/nonexistent-root",
        "755",
        "ro",
    ])
    .args(["cwd", "/nonexistent-root", "--", "sh", "-c", "echo ran"])
    .env_remove(GATE_NODE_ENV);
    if let Some(n) = node {
        c.env(GATE_NODE_ENV, n);
    }
    c.output().unwrap()
}

#[test]
fn a_refusal_is_one_line_and_the_refused_status_and_the_command_never_runs() {
    let out = refused_run(None);
    assert_eq!(out.status.code(), Some(i32::from(GATE_REFUSED)));
    assert_eq!(text(&out.stdout), "", "the command ran");
    let expected = format!("{GATE_LINE_PREFIX}n7: refused: gate-root-missing: ");
    let err = text(&out.stderr);
    assert!(err.starts_with(&expected), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("on node"), "{err}");
}

#[test]
fn a_refusal_names_the_node_only_when_the_engine_names_one() {
    let err = text(&refused_run(Some("node-3")).stderr);
    assert!(
        err.contains(": refused: gate-root-missing: on node \"node-3\": "),
        "{err}"
    );
    let err = text(&refused_run(Some("")).stderr);
    assert!(!err.contains("on node"), "{err}");
}

#[test]
fn bad_arguments_are_refused_with_the_nonce() {
    let out = Command::new(GATE)
        .args(["v1", "n8", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(i32::from(GATE_REFUSED)));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("{GATE_LINE_PREFIX}n8: refused: gate-arguments: ")),
        "{err}"
    );
}

#[test]
fn install_copies_the_gate_and_nothing_else_is_an_install() {
    let dir = scratch("install");
    let dest = dir.join("gate");
    let out = Command::new(GATE)
        .arg("install")
        .arg(&dest)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fs::read(&dest).unwrap(), fs::read(GATE).unwrap());
    assert_eq!(
        fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
        0o555
    );
    // Without a destination, or with two: the usage, not a launch.
    for extra in [&[][..], &["a", "b"][..]] {
        let out = Command::new(GATE)
            .arg("install")
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "install {extra:?}");
        assert_eq!(text(&out.stderr), "mount-plan-gate: usage: install DEST\n");
    }
    // Into a directory that does not exist: a failure naming it.
    let out = Command::new(GATE)
        .arg("install")
        .arg(dir.join("no/gate"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("mount-plan-gate: install "),
        "{}",
        text(&out.stderr)
    );
    fs::remove_dir_all(&dir).unwrap();
}

/// The planned container in small: a private mount namespace (root only) whose root R is a
/// fresh tmpfs with nothing below it; the gate must pass it and exec the command with
/// no-new-privileges set and the node variable removed.
#[test]
fn the_planned_root_passes_and_the_command_runs_without_new_privileges() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI this test must run as root"
        );
        eprintln!("skipped: needs root for a private mount namespace");
        return;
    }
    let dir = scratch("pass");
    let root = dir.join("ws");
    fs::create_dir(&root).unwrap();
    let script = format!(
        "set -e; mount -t tmpfs -o mode=751 tmpfs {r}; cd {r}; \
         exec {GATE} {GATE_PROTOCOL} n9 tmpfs {r} 751 rw cwd {r} -- \
         sh -c 'grep NoNewPrivs: /proc/self/status; echo \"node=${GATE_NODE_ENV}\"; pwd'",
        r = root.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env(GATE_NODE_ENV, "node-1")
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        format!("NoNewPrivs:\t1\nnode=\n{}\n", root.display()),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(out.status.success());
    fs::remove_dir_all(&dir).unwrap();
}

/// Whether this process runs as root (from /proc: the gate's crate has no dependencies).
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:\t0\t"))
}
