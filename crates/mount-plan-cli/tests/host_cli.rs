//! The host checks as a user meets them through `mount-plan plan`: each cause printed once,
//! a hint on its own line (and as `hint` in JSON), findings shown, a non-UTF-8 workspace
//! refused by a rule, and no host-check flag ever silently dropped. The EACCES test runs the
//! binary as another user (`setpriv`, as root): without root it is ignored in the summary
//! (failed under `CI`).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mount-plan");

fn run(args: &[&OsStr]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run mount-plan")
}

fn plan(args: &[&str]) -> Output {
    let mut full = vec![OsStr::new("plan")];
    full.extend(args.iter().map(OsStr::new));
    run(&full)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A workspace with startup/, local/ and job1/, mode 0755, in a fresh temporary directory.
struct Ws {
    _tmp: tempfile::TempDir,
    w: PathBuf,
}

impl Ws {
    fn new() -> Ws {
        let tmp = tempfile::tempdir().unwrap();
        let w = tmp.path().join("ws");
        for d in ["", "startup", "local", "job1"] {
            fs::create_dir_all(w.join(d)).unwrap();
            fs::set_permissions(w.join(d), fs::Permissions::from_mode(0o755)).unwrap();
        }
        Ws { _tmp: tmp, w }
    }
    fn w(&self) -> &str {
        self.w.to_str().unwrap()
    }
}

fn a_host_io_error_prints_its_cause_once_and_a_hint() {
    // W below a directory only root may enter: as uid 65534 the open fails with EACCES.
    let tmp = tempfile::tempdir().unwrap();
    let private = tmp.path().join("private");
    fs::create_dir(&private).unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let w = private.join("ws");
    fs::create_dir_all(w.join("job1")).unwrap();
    let o = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            BIN,
        ])
        .args(["plan", "--job", "job1", "--verify", "--workspace"])
        .arg(&w)
        .output()
        .expect("run setpriv (util-linux)");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(o.stdout.is_empty());
    let cause = "Permission denied (os error 13)";
    assert_eq!(err.matches(cause).count(), 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "error: host rule `io`: could not open workspace {:?}: {cause}",
            w.to_str().unwrap()
        )
    );
    assert!(lines[1].starts_with("hint: "), "{err}");
    assert_eq!(lines.len(), 2, "{err}");
}

fn an_over_long_path_is_printed_once() {
    let long = format!("/{}", "a".repeat(4090));
    let o = plan(&["--workspace", &long, "--job", "job1"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("`path-too-long`"), "{err}");
    assert_eq!(
        err.matches(&long).count(),
        1,
        "{} bytes: the path twice",
        err.len()
    );
}

fn a_non_utf8_workspace_is_refused_by_a_rule() {
    let w = OsStr::from_bytes(b"/tmp/w\xff");
    let o = run(&[
        OsStr::new("plan"),
        OsStr::new("--workspace"),
        w,
        OsStr::new("--job"),
        OsStr::new("j"),
    ]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(o.stdout.is_empty());
    assert!(
        err.starts_with(
            "error: path rule `path-not-utf8`: the host workspace \"/tmp/w\\xFF\" is not UTF-8"
        ),
        "{err}"
    );
    assert!(
        !err.contains("invalid UTF-8"),
        "the parser's message: {err}"
    );
}

fn a_symlinked_shared_directory_says_what_to_do() {
    // A release flip by symlink: startup -> startup-v2.
    let ws = Ws::new();
    fs::remove_dir(ws.w.join("startup")).unwrap();
    fs::create_dir(ws.w.join("startup-v2")).unwrap();
    std::os::unix::fs::symlink("startup-v2", ws.w.join("startup")).unwrap();
    let o = plan(&["--workspace", ws.w(), "--job", "job1", "--verify"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines[0].contains("`symlink`"), "{err}");
    assert_eq!(
        lines[1],
        "hint: pass the real path, or flip releases by renaming a directory (rename is atomic) instead of repointing a symlink"
    );

    // The same refusal in JSON lines carries the hint as a field.
    let mut child = Command::new(BIN)
        .args(["plan", "--json-lines", "--verify"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let request = serde_json::json!({"workspace": ws.w(), "job": "job1"}).to_string() + "\n";
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(answer["rule"], "symlink");
    assert!(
        answer["hint"]
            .as_str()
            .unwrap()
            .contains("rename is atomic"),
        "{answer}"
    );
}

fn host_check_flags_imply_verify() {
    // Each flag alone, on a workspace that does not exist: the host check runs and refuses
    // (before, the flag was dropped and the plan printed with exit 0).
    let flags: &[&[&str]] = &[
        &["--refuse-hard-links"],
        &["--expected-owner", "0"],
        &["--permissions", "warn"],
        &["--permissions", "refuse"],
        &["--strict-paths"],
        &["--job-dir-mode", "0700"],
        &["--job-dir-owner", "1:1"],
    ];
    for flag in flags {
        let mut args = vec!["--workspace", "/nonexistent-mount-plan-ws", "--job", "j"];
        args.extend_from_slice(flag);
        let o = plan(&args);
        assert_eq!(o.status.code(), Some(2), "{flag:?}: {}", text(&o.stdout));
        assert!(
            text(&o.stderr).contains("`missing`"),
            "{flag:?}: {}",
            text(&o.stderr)
        );
    }
    // On a real workspace the plan comes with its pins.
    let ws = Ws::new();
    let o = plan(&[
        "--workspace",
        ws.w(),
        "--job",
        "job1",
        "--refuse-hard-links",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["pins"]["workspace"]["ino"].is_u64(), "{v}");

    let help = text(&plan(&["--help"]).stdout);
    for flag in [
        "--refuse-hard-links",
        "--expected-owner",
        "--permissions",
        "--strict-paths",
    ] {
        let at = help
            .find(&format!("      {flag}"))
            .unwrap_or_else(|| panic!("{flag}"));
        let entry = &help[at..];
        let end = entry[2..].find("\n  -").map_or(entry.len(), |e| e + 2);
        assert!(
            entry[..end].contains("implies --verify"),
            "{flag}: {}",
            &entry[..end]
        );
    }
}

fn findings_are_shown_in_json_and_in_the_table() {
    let ws = Ws::new();
    let sock = ws.w.join("job1/agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let o = plan(&["--workspace", ws.w(), "--job", "job1", "--verify"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["findings"][0]["kind"], "socket", "{v}");
    assert_eq!(v["findings"][0]["path"], sock.to_str().unwrap());
    let note = format!(
        "note: socket {:?}: a bind carries it into the container",
        sock.to_str().unwrap()
    );
    assert!(text(&o.stderr).contains(&note), "{}", text(&o.stderr));
    let o = plan(&[
        "--workspace",
        ws.w(),
        "--job",
        "job1",
        "--verify",
        "--format",
        "table",
    ]);
    assert!(text(&o.stdout).contains(&format!("finding: socket {:?}", sock.to_str().unwrap())));
}

/// Issue 21, finding 8: `--job-dir-mode 7777` was accepted silently, and an existing W/J with
/// mode 0777 was used as it was (any host user could plant links, fifos and sockets in the
/// job's only writable view). Both are refused by a rule naming the mode.
fn a_job_directory_mode_beyond_the_contract_is_refused() {
    let ws = Ws::new();
    for mode in ["7777", "0777", "4750", "2770"] {
        let o = plan(&[
            "--workspace",
            ws.w(),
            "--job",
            "fresh",
            "--create-job-dir",
            "fresh",
            "--job-dir-mode",
            mode,
        ]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{mode}: {}", text(&o.stdout));
        assert!(err.contains("`job-dir-mode`"), "{mode}: {err}");
        assert!(err.contains(&format!("{:0>4}", mode)), "{mode}: {err}");
        assert!(!ws.w.join("fresh").exists(), "{mode}: created anyway");
    }
    fs::set_permissions(ws.w.join("job1"), fs::Permissions::from_mode(0o777)).unwrap();
    for extra in [&[][..], &["--create-job-dir", "if-missing"][..]] {
        let mut args = vec!["--workspace", ws.w(), "--job", "job1", "--verify"];
        args.extend_from_slice(extra);
        let o = plan(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o.stdout));
        assert!(
            err.contains("`job-dir-loose`") && err.contains("0777"),
            "{extra:?}: {err}"
        );
    }
    fs::set_permissions(ws.w.join("job1"), fs::Permissions::from_mode(0o750)).unwrap();
    let o = plan(&["--workspace", ws.w(), "--job", "job1", "--verify"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
}

fn main() {
    use mount_plan_testkit::harness::{self, Need};
    const ROOT: &[Need] = &[Need::Root];
    harness::run(vec![
        harness::test(
            "a_job_directory_mode_beyond_the_contract_is_refused",
            &[],
            a_job_directory_mode_beyond_the_contract_is_refused,
        ),
        harness::test(
            "a_host_io_error_prints_its_cause_once_and_a_hint",
            ROOT,
            a_host_io_error_prints_its_cause_once_and_a_hint,
        ),
        harness::test(
            "an_over_long_path_is_printed_once",
            &[],
            an_over_long_path_is_printed_once,
        ),
        harness::test(
            "a_non_utf8_workspace_is_refused_by_a_rule",
            &[],
            a_non_utf8_workspace_is_refused_by_a_rule,
        ),
        harness::test(
            "a_symlinked_shared_directory_says_what_to_do",
            &[],
            a_symlinked_shared_directory_says_what_to_do,
        ),
        harness::test(
            "host_check_flags_imply_verify",
            &[],
            host_check_flags_imply_verify,
        ),
        harness::test(
            "findings_are_shown_in_json_and_in_the_table",
            &[],
            findings_are_shown_in_json_and_in_the_table,
        ),
    ]);
}
