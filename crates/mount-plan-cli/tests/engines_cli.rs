//! `mount-plan doctor` says what the engine in front of it does: R's mode is reported from
//! that engine's versions, on this machine's Docker and on the Docker 26 that
//! `.ci/engines-setup` starts (its socket in `/tmp/mount-plan-engines/env`).
//!
//! Without an engine: fails under `CI`, otherwise shown as ignored (`mount_plan_testkit`).

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_mount-plan");

/// The harness already ignored the test (failed it under CI) when its engine is missing.
fn skip_or_fail(why: &str) {
    panic!("the engine was found by the harness, but: {why}");
}

fn doctor(socket: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["doctor", "--runtime", "docker"]);
    if let Some(s) = socket {
        cmd.args(["--socket", s]);
    }
    cmd.output().expect("run mount-plan doctor")
}

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
}

/// `major.minor.patch` of `runc X.Y.Z...` in doctor's `runtime:` line.
fn runc_version(out: &str) -> Option<(u32, u32, u32)> {
    let v = line(out, "runtime:").split_whitespace().nth(2)?;
    let mut it = v
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

fn doctor_reports_r_mode_from_this_engines_runtime() {
    let o = doctor(None);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    if out.contains("engine: unreachable") {
        return skip_or_fail("this machine's docker engine does not answer");
    }
    let mode = line(&out, "root-mode-size");
    match runc_version(&out) {
        Some(v) if v < (1, 1, 8) => assert!(
            mode.contains("written with the planned mode") && mode.contains("become 0755"),
            "{out}"
        ),
        Some(_) => assert!(mode.ends_with("root-mode-size       available"), "{out}"),
        None => assert!(mode.contains("not known"), "{out}"),
    }
}

fn doctor_on_docker26_reports_r_mode_kept() {
    let socket = mount_plan_testkit::engines::TestEngine::Docker26.socket();
    let Ok(socket) = socket else {
        return skip_or_fail("no Docker 26: run `bash .ci/engines-setup`");
    };
    let o = doctor(Some(&socket));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    if out.contains("engine: unreachable") {
        return skip_or_fail(&format!("Docker 26 does not answer at {socket}"));
    }
    assert!(line(&out, "engine:").contains("docker 26."), "{out}");
    assert_eq!(
        line(&out, "root-mode-size").trim(),
        "root-mode-size       available",
        "{out}"
    );
    assert_eq!(
        line(&out, "read-only-binds").trim(),
        "read-only-binds      available"
    );
}

/// runc is judged against CVE-2024-21626 and the November 2025 advisories by its package
/// revision, which Docker reports as runc's commit: Debian 12's `1.1.5+ds1-1+deb12u1` carries
/// the fix for the first, so doctor says so and does not warn about it; the 1.1 line has no
/// upstream fix for the second and no backport is known here, so doctor says to check.
fn doctor_judges_runc_by_the_distributions_revision() {
    let o = doctor(None);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    if out.contains("engine: unreachable") {
        return skip_or_fail("this machine's docker engine does not answer");
    }
    let runtime = line(&out, "runtime:");
    if !runtime.starts_with("runtime:  runc ") {
        return;
    }
    let verdict = line(&out, "runc:");
    assert!(verdict.contains("CVE-2024-21626 "), "{out}");
    let november = out
        .lines()
        .find(|l| l.starts_with("runc:") && l.contains("CVE-2025-31133"))
        .unwrap_or_else(|| panic!("no verdict on the November 2025 advisories: {out}"));
    if runtime.contains("+deb12u") {
        assert!(
            verdict.contains("fixed by the distribution's patch"),
            "{out}"
        );
        assert!(
            !out.lines()
                .any(|l| l.contains("warning: runc") && l.contains("CVE-2024-21626")),
            "{out}"
        );
        // Debian 12's runc 1.1.5: no upstream fix on the 1.1 line, no backport known here.
        assert!(november.contains("unknown, check"), "{out}");
        assert!(
            out.lines()
                .any(|l| l.contains("warning: runc") && l.contains("CVE-2025-52565")),
            "{out}"
        );
    }
}

/// Issue 21: `doctor --workspace W` names the layers that keep a root job's outputs from being
/// a privilege: this Docker's user namespace (from `docker info`), whether W lets other users
/// through, and (as root) a complete sweep.
fn doctor_names_the_layers_that_protect_a_site() {
    use std::os::unix::fs::PermissionsExt;
    let info = Command::new("docker")
        .args(["info", "--format", "{{.SecurityOptions}}"])
        .output()
        .expect("docker info");
    let userns = String::from_utf8_lossy(&info.stdout).contains("name=userns")
        || String::from_utf8_lossy(&info.stdout).contains("name=rootless");
    let tmp = tempfile::tempdir().unwrap();
    for (mode, unreachable) in [(0o700, "yes"), (0o750, "no"), (0o755, "no")] {
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let o = Command::new(BIN)
            .args(["doctor", "--runtime", "docker", "--workspace"])
            .arg(tmp.path())
            .output()
            .expect("run mount-plan doctor");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        if out.contains("engine: unreachable") {
            return skip_or_fail("this machine's docker engine does not answer");
        }
        let want = format!(
            "outputs:  user namespace: {}; nosuid workspace: no; W/J unreachable: {unreachable}; sweep: complete",
            if userns { "yes" } else { "no" }
        );
        assert_eq!(line(&out, "outputs:"), want, "{mode:o}: {out}");
    }
}

fn main() {
    use mount_plan_testkit::harness::{self, Need};
    const DOCKER: &[Need] = &[Need::Docker];
    const D26: &[Need] = &[Need::Docker26];
    harness::run(vec![
        harness::test(
            "doctor_reports_r_mode_from_this_engines_runtime",
            DOCKER,
            doctor_reports_r_mode_from_this_engines_runtime,
        ),
        harness::test(
            "doctor_judges_runc_by_the_distributions_revision",
            DOCKER,
            doctor_judges_runc_by_the_distributions_revision,
        ),
        harness::test(
            "doctor_names_the_layers_that_protect_a_site",
            &[Need::Docker, Need::Root],
            doctor_names_the_layers_that_protect_a_site,
        ),
        harness::test(
            "doctor_on_docker26_reports_r_mode_kept",
            D26,
            doctor_on_docker26_reports_r_mode_kept,
        ),
    ]);
}
