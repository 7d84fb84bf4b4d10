//! Issue 21: nothing a job writes is a privilege on the host. Each scenario is an attack a
//! review ran through `mount-plan launch`, with a real set-user-ID binary (a copy of the
//! host's `id`, which prints `euid=` when its effective uid is not its real one) and a second
//! host user (`nobody`, uid 65534) who runs what the job left:
//! - depth: a job plants the binary 100 directories deep and `chmod 755`s its own W/J;
//! - a killed launcher: SIGKILL while the job runs, then `gc`;
//! - a non-root launcher (in the docker group) with a root job: refused before anything runs.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use libtest_mimic::Failed;

use super::{check, collect, kill, until, Engine, Site};

/// The host user who must gain nothing.
const NOBODY: &str = "65534";

/// Stage the host's `id` in W/local/ (bound read-only into the container) for the job to copy.
fn stage_id(site: &Site) {
    let id = site.w().join("local/id");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o755)).unwrap();
    if let Some((_, uid)) = &site.engine.user {
        std::os::unix::fs::chown(&id, Some(*uid), Some(*uid)).unwrap();
    }
}

/// `path` run by host uid 65534: its output (or why it could not run). `Err` when it ran
/// with another effective uid.
fn run_as_nobody(engine: &Engine, path: &Path) -> Result<String, Failed> {
    let out = Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
        .arg(path)
        .output()
        .map_err(|e| format!("setpriv: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    check(!text.contains("euid="), || {
        format!(
            "{}: host uid {NOBODY} ran {path:?} with another effective uid: {text}",
            engine.name
        )
    })?;
    Ok(text)
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .map(|m| m.mode() & 0o7777)
        .unwrap_or(0)
}

/// Finding 1: 100 levels deep (the sweep stopped at 64), W/J opened to everyone by the job.
fn a_set_id_file_planted_deep_gives_no_host_user_its_owner(engine: &Engine) -> Result<(), Failed> {
    let site = Site::new(engine, "deep");
    stage_id(&site);
    let deep = "d/".repeat(100);
    let script = format!(
        "set -e; cd /workspace/job-1; /bin/busybox mkdir -p {deep}; /bin/busybox cp /workspace/local/id {deep}id; /bin/busybox chmod 4755 {deep}id; /bin/busybox chmod 755 ."
    );
    let mut child = site.launch(&[], &["sh", "-c", &script]);
    let (status, stderr) = collect(&mut child);
    check(status.success(), || {
        format!("{}: launch {status:?}: {stderr}", engine.name)
    })?;
    let planted = site.w().join("job-1").join(&deep).join("id");
    check(planted.exists(), || {
        format!("{}: the job planted nothing: {stderr}", engine.name)
    })?;
    check(mode(&planted) & 0o6000 == 0, || {
        format!(
            "{}: {planted:?} keeps mode {:04o}: {stderr}",
            engine.name,
            mode(&planted)
        )
    })?;
    check(mode(&site.w().join("job-1")) == 0o750, || {
        format!(
            "{}: W/J keeps the job's mode {:04o}",
            engine.name,
            mode(&site.w().join("job-1"))
        )
    })?;
    run_as_nobody(engine, &planted)?;
    check(site.leftovers().is_empty(), || {
        format!("{}: containers left", engine.name)
    })
}

/// Finding 3: the launcher is killed while the job runs; `gc` removes the container and
/// sweeps its W/J, found by the container's labels (path and identity).
fn gc_sweeps_the_job_directory_of_a_killed_launcher(engine: &Engine) -> Result<(), Failed> {
    let site = Site::new(engine, "gcsweep");
    stage_id(&site);
    let script = "set -e; cd /workspace/job-1; /bin/busybox cp /workspace/local/id id; /bin/busybox chmod 4755 id; /bin/busybox chmod 755 .; echo > planted; sleep 60";
    let mut child = site.launch(&[], &["sh", "-c", script]);
    site.await_started(&mut child)?;
    let job = site.w().join("job-1");
    until(Duration::from_secs(60), || job.join("planted").exists())
        .map_err(|()| format!("{}: the job planted nothing", engine.name))?;
    kill(site.launcher_pid(&child), "KILL");
    let _ = collect(&mut child);
    let left = site.leftovers();
    check(left.len() == 1, || {
        format!(
            "{}: want the killed launcher's container: {left:?}",
            engine.name
        )
    })?;
    let engine_args = engine.args();
    let mut gc_args = vec!["gc"];
    gc_args.extend(engine_args.iter().map(String::as_str));
    let out = site
        .cli(&gc_args)
        .output()
        .map_err(|e| format!("gc: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    check(out.status.success(), || {
        format!("{}: gc failed: {stdout} {stderr}", engine.name)
    })?;
    let short = &left[0][..12.min(left[0].len())];
    check(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("swept the job directory of {short}"))),
        || {
            format!(
                "{}: gc did not sweep {short}: {stdout} {stderr}",
                engine.name
            )
        },
    )?;
    check(mode(&job.join("id")) & 0o6000 == 0, || {
        format!(
            "{}: the planted file keeps mode {:04o}",
            engine.name,
            mode(&job.join("id"))
        )
    })?;
    check(mode(&job) == 0o750, || {
        format!(
            "{}: W/J keeps the job's mode {:04o}",
            engine.name,
            mode(&job)
        )
    })?;
    run_as_nobody(engine, &job.join("id"))?;
    check(site.leftovers().is_empty(), || {
        format!("{}: containers left after gc", engine.name)
    })
}

/// Finding 2 (Docker): a launcher that is not root, in the docker group, with a job that runs
/// as root (`DAC_OVERRIDE` to write W/J): it could not clear the set-id files the job leaves,
/// and Docker gives the job no user namespace here, so the launch is refused before anything
/// runs. The same launcher with a job running as its own uid goes ahead.
fn a_non_root_launcher_with_a_root_job_is_refused(engine: &Engine) -> Result<(), Failed> {
    let site = Site::new(engine, "nonroot");
    let docker_gid = std::fs::metadata("/var/run/docker.sock")
        .map_err(|e| format!("the docker socket: {e}"))?
        .gid();
    let st = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(site.w())
        .arg(site.path("run"))
        .status()
        .unwrap();
    assert!(st.success());
    let launch = |extra: &[&str], marker: &str| {
        let w = site.w();
        let events = site.path("run/events.jsonl");
        let _ = std::fs::remove_file(&events);
        let label = format!("mount-plan-test.run={}", site.label);
        let script = format!("echo ran > /workspace/job-1/{marker}");
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid",
            NOBODY,
            "--regid",
            NOBODY,
            "--groups",
            &docker_gid.to_string(),
            "--",
        ])
        .arg(site.path("mount-plan"))
        .arg("launch")
        .args(engine.args())
        .args(&engine.launch_only)
        .arg("--workspace")
        .arg(&w)
        .args([
            "--job",
            "job-1",
            "--create-job-dir",
            "--image",
            &engine.image,
        ])
        .args(["--label", &label, "--events"])
        .arg(&events)
        .args(extra)
        .args(["--", "sh", "-c", &script]);
        cmd.output().unwrap()
    };
    let out = launch(&["--cap-add", "DAC_OVERRIDE"], "root-ran");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    check(!out.status.success(), || {
        format!(
            "{}: a root job of a non-root launcher ran: {stderr}",
            engine.name
        )
    })?;
    check(stderr.contains("`outputs-unclearable`"), || {
        format!("{}: not refused by its rule: {stderr}", engine.name)
    })?;
    check(!site.w().join("job-1/root-ran").exists(), || {
        format!("{}: the command ran", engine.name)
    })?;
    let events = site.events();
    check(
        events.contains("\"rule\":\"outputs-unclearable\"")
            && events.contains("\"command_ran\":false"),
        || format!("{}: events {events}", engine.name),
    )?;
    check(site.leftovers().is_empty(), || {
        format!("{}: containers left", engine.name)
    })?;
    // The job as the launcher's own user: the launcher can clear whatever it writes.
    let out = launch(&["--user", NOBODY], "own-ran");
    check(out.status.success(), || {
        format!(
            "{}: a job as the launcher's own user was refused: {}",
            engine.name,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    check(site.w().join("job-1/own-ran").exists(), || {
        format!("{}: the command did not run", engine.name)
    })
}

/// The scenarios, and whether each needs the Docker group (finding 2: a non-root launcher
/// reaches only Docker's socket here).
pub type Scenario = fn(&Engine) -> Result<(), Failed>;
pub const SCENARIOS: [(&str, Scenario, bool); 3] = [
    (
        "a_set_id_file_planted_deep_gives_no_host_user_its_owner",
        a_set_id_file_planted_deep_gives_no_host_user_its_owner,
        false,
    ),
    (
        "gc_sweeps_the_job_directory_of_a_killed_launcher",
        gc_sweeps_the_job_directory_of_a_killed_launcher,
        false,
    ),
    (
        "a_non_root_launcher_with_a_root_job_is_refused",
        a_non_root_launcher_with_a_root_job_is_refused,
        true,
    ),
];
