//! Host facts for after a job: the workspace's mount flags (`fstatvfs` on W's pinned handle)
//! and the sweep of W/J that clears set-user-ID and set-group-ID bits without following a
//! link. Device nodes and tmpfs mounts need root: without it those tests are ignored in the
//! summary (failed under `CI`).

mod common;

use std::ffi::CStr;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{chmod, mode, opts, Mounted, Site, RESOLVERS};
use mount_plan_host::{verify, FindingKind};

fn setid_files_are_cleared_and_links_are_not_followed() {
    let site = Site::new();
    let job = site.ws.join("job1");
    fs::create_dir_all(job.join("a/b")).unwrap();
    let tool = job.join("a/b/tool");
    fs::write(&tool, b"#!/bin/sh\n").unwrap();
    chmod(&tool, 0o6755);
    let plain = job.join("a/plain");
    fs::write(&plain, b"x").unwrap();
    chmod(&plain, 0o755);
    // A set-user-ID file outside W/J, reached from W/J only through symlinks (to the file and
    // to its directory): it keeps its bits.
    let outside = site.outside.join("suid");
    fs::write(&outside, b"outside").unwrap();
    chmod(&outside, 0o4755);
    symlink(&outside, job.join("link")).unwrap();
    symlink(&site.outside, job.join("a/dir-link")).unwrap();
    // Unreadable to its owner: root still opens it.
    let locked = job.join("locked");
    fs::write(&locked, b"x").unwrap();
    chmod(&locked, 0o2000);

    for resolver in RESOLVERS {
        chmod(&tool, 0o6755);
        chmod(&locked, 0o2000);
        let v = verify(site.plan("job1"), &opts(resolver)).unwrap();
        let report = v.sweep_job_dir().unwrap();
        assert!(report.is_complete(), "{:?}", report.unhandled);
        let mut cleared: Vec<(PathBuf, u32)> = report
            .cleared
            .iter()
            .map(|c| (c.path.clone(), c.mode_before))
            .collect();
        cleared.sort();
        assert_eq!(
            cleared,
            vec![
                (PathBuf::from("a/b/tool"), 0o6755),
                (PathBuf::from("locked"), 0o2000)
            ]
        );
        assert_eq!(mode(&tool), 0o755);
        assert_eq!(mode(&locked), 0o000);
        assert_eq!(mode(&plain), 0o755);
        assert_eq!(
            mode(&outside),
            0o4755,
            "the sweep followed a link out of W/J"
        );
        assert!(report.special.is_empty());
        // Idempotent.
        assert!(v.sweep_job_dir().unwrap().cleared.is_empty());
    }
}

fn the_sweep_follows_the_pinned_directory_not_the_name() {
    // W/J renamed away and replaced by a symlink to a directory with a set-id file after the
    // check: the sweep works on the directory that was pinned, never through the new name.
    let site = Site::new();
    let v = verify(site.plan("job1"), &opts(RESOLVERS[0])).unwrap();
    let tool = site.ws.join("job1/tool");
    fs::write(&tool, b"x").unwrap();
    chmod(&tool, 0o4755);
    fs::rename(site.ws.join("job1"), site.ws.join("job1.old")).unwrap();
    let decoy = site.outside.join("suid");
    fs::write(&decoy, b"x").unwrap();
    chmod(&decoy, 0o4755);
    symlink(&site.outside, site.ws.join("job1")).unwrap();
    let report = v.sweep_job_dir().unwrap();
    assert_eq!(report.cleared.len(), 1);
    assert_eq!(mode(&site.ws.join("job1.old/tool")), 0o755);
    assert_eq!(mode(&decoy), 0o4755);
}

fn device_nodes_sockets_and_fifos_are_reported() {
    let site = Site::new();
    let job = site.ws.join("job1");
    fs::create_dir(job.join("d")).unwrap();
    let mknod = |path: &Path, kind, dev| {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            kind,
            rustix::fs::Mode::from_raw_mode(0o666),
            dev,
        )
        .unwrap_or_else(|e| panic!("mknod {path:?}: {e} (needs root)"))
    };
    mknod(
        &job.join("d/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::makedev(1, 3),
    );
    mknod(&job.join("pipe"), rustix::fs::FileType::Fifo, 0);
    let _sock = std::os::unix::net::UnixListener::bind(job.join("sock")).unwrap();
    let v = verify(site.plan("job1"), &opts(RESOLVERS[0])).unwrap();
    let report = v.sweep_job_dir().unwrap();
    let mut special: Vec<(PathBuf, FindingKind)> = report
        .special
        .iter()
        .map(|s| (s.path.clone(), s.kind))
        .collect();
    special.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        special,
        vec![
            (PathBuf::from("d/null"), FindingKind::CharDevice),
            (PathBuf::from("pipe"), FindingKind::Fifo),
            (PathBuf::from("sock"), FindingKind::Socket),
        ]
    );
    // The verification's own scan reported them too.
    assert_eq!(v.findings().len(), 3, "{:?}", v.findings());
}

/// Finding 1 of issue 21: a set-user-ID file far below W/J (deeper than the old 64-level limit,
/// and deeper than the handles the sweep keeps open) is cleared, and W/J's own mode, which a
/// root job may open up, is put back.
fn the_sweep_has_no_depth_limit_and_puts_back_the_job_directory_mode() {
    let site = Site::new();
    let job = site.ws.join("job1");
    chmod(&job, 0o750);
    let v = verify(site.plan("job1"), &opts(RESOLVERS[0])).unwrap();
    assert_eq!(v.job_dir_state().mode, 0o750);
    // What a root job does: nested directories, set-id files at several depths, its own
    // directory opened to everyone.
    let mut dir = job.clone();
    let mut planted = Vec::new();
    let mut rel = PathBuf::new();
    for level in 0..300 {
        dir.push("d");
        rel.push("d");
        fs::create_dir(&dir).unwrap();
        if level % 97 == 96 || level == 299 {
            // A sibling directory too, walked after coming back up from the deep one.
            fs::create_dir(dir.join("side")).unwrap();
            let tool = dir.join("side/tool");
            fs::write(&tool, b"#!/bin/sh\n").unwrap();
            chmod(&tool, 0o4755);
            planted.push((rel.join("side/tool"), tool));
        }
    }
    chmod(&job, 0o777);
    let report = v.sweep_job_dir().unwrap();
    assert!(report.is_complete(), "{:?}", report.unhandled);
    let mut cleared: Vec<PathBuf> = report.cleared.iter().map(|c| c.path.clone()).collect();
    cleared.sort();
    let mut expected: Vec<PathBuf> = planted.iter().map(|(r, _)| r.clone()).collect();
    expected.sort();
    assert_eq!(cleared, expected);
    assert!(report.cleared.iter().all(|c| !c.removed));
    for (_, tool) in &planted {
        assert_eq!(mode(tool), 0o755, "{tool:?}");
    }
    assert_eq!(mode(&job), 0o750, "W/J's verified mode is back");
    assert_eq!(report.restored.map(|r| r.mode), Some(0o777));
    // A second sweep finds nothing left to do.
    let again = v.sweep_job_dir().unwrap();
    assert!(again.cleared.is_empty() && again.restored.is_none());
    assert!(again.is_complete());
}

/// W/J's verified owner is put back too (a root job may `chown` its own directory).
fn the_sweep_puts_back_the_job_directory_owner() {
    use std::os::unix::fs::{chown, MetadataExt};
    let site = Site::new();
    let job = site.ws.join("job1");
    chmod(&job, 0o750);
    let v = verify(site.plan("job1"), &opts(RESOLVERS[0])).unwrap();
    let before = fs::metadata(&job).unwrap();
    chown(&job, Some(4321), Some(4322)).unwrap();
    chmod(&job, 0o2755);
    let report = v.sweep_job_dir().unwrap();
    assert!(report.is_complete(), "{:?}", report.unhandled);
    let after = fs::metadata(&job).unwrap();
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    assert_eq!(mode(&job), 0o750);
    let restored = report.restored.unwrap();
    assert_eq!(
        (restored.uid, restored.gid, restored.mode),
        (4321, 4322, 0o2755)
    );
}

/// A set-id file the sweep can neither clear nor remove (immutable) makes it incomplete, with
/// the file named: never a silent give-up.
fn a_set_id_file_that_cannot_be_cleared_makes_the_sweep_incomplete() {
    let site = Site::new();
    let job = site.ws.join("job1");
    fs::create_dir_all(job.join("a")).unwrap();
    let tool = job.join("a/tool");
    fs::write(&tool, b"x").unwrap();
    chmod(&tool, 0o4755);
    let chattr = |flag: &str| {
        let ok = std::process::Command::new("chattr")
            .arg(flag)
            .arg(&tool)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "chattr {flag} {tool:?} (needs root and ext4 or tmpfs)");
    };
    chattr("+i");
    let v = verify(site.plan("job1"), &opts(RESOLVERS[0])).unwrap();
    let report = v.sweep_job_dir();
    chattr("-i");
    let report = report.unwrap();
    assert!(!report.is_complete());
    assert_eq!(report.unhandled.len(), 1, "{:?}", report.unhandled);
    assert_eq!(report.unhandled[0].path, PathBuf::from("a/tool"));
    assert!(report.cleared.is_empty());
    assert_eq!(mode(&tool), 0o4755);
}

/// `gc`'s sweep by path and identity: the very directory a launch pinned is swept and its mode
/// put back; another directory under that name, a link there or nothing there is not swept.
fn a_job_directory_is_swept_by_path_only_when_it_is_the_pinned_one() {
    use mount_plan_host::sweep_job_dir_at;
    let site = Site::new();
    let job = site.ws.join("job1");
    chmod(&job, 0o750);
    let v = verify(site.plan("job1"), &opts(RESOLVERS[0])).unwrap();
    let (pin, state) = (v.job_pin(), v.job_dir_state());
    assert_eq!(v.launcher_job_dir(), job);
    drop(v);
    let tool = job.join("tool");
    fs::write(&tool, b"x").unwrap();
    chmod(&tool, 0o4755);
    chmod(&job, 0o777);
    let report = sweep_job_dir_at(&job, pin, state).unwrap();
    assert!(report.is_complete(), "{:?}", report.unhandled);
    assert_eq!(report.cleared.len(), 1);
    assert_eq!((mode(&tool), mode(&job)), (0o755, 0o750));
    // Another directory under the name: refused, untouched.
    chmod(&tool, 0o4755);
    let moved = site.ws.join("moved");
    fs::rename(&job, &moved).unwrap();
    fs::create_dir(&job).unwrap();
    let err = sweep_job_dir_at(&job, pin, state).unwrap_err();
    assert_eq!(err.rule(), "job-dir-replaced", "{err}");
    // A link to the pinned directory: not followed.
    fs::remove_dir(&job).unwrap();
    symlink(&moved, &job).unwrap();
    let err = sweep_job_dir_at(&job, pin, state).unwrap_err();
    assert_eq!(err.rule(), "io", "{err}");
    // Nothing there.
    fs::remove_file(&job).unwrap();
    let err = sweep_job_dir_at(&job, pin, state).unwrap_err();
    assert_eq!(err.rule(), "missing", "{err}");
    assert_eq!(mode(&moved.join("tool")), 0o4755, "nothing was swept");
}

/// `doctor`'s facts about a workspace: who may pass through it.
fn workspace_reach_says_who_may_pass_through_w() {
    let site = Site::new();
    for (m, reachable) in [(0o700, false), (0o750, true), (0o701, true), (0o755, true)] {
        chmod(&site.ws, m);
        let (_, got) = mount_plan_host::workspace_reach(&site.ws).unwrap();
        assert_eq!(got, reachable, "{m:o}");
        let v = verify(site.plan("job1"), &opts(RESOLVERS[0])).unwrap();
        assert_eq!(
            v.workspace_reachable_by_others().unwrap(),
            reachable,
            "{m:o}"
        );
    }
    let link = site.path("link");
    symlink(&site.ws, &link).unwrap();
    assert!(mount_plan_host::workspace_reach(&link).is_err());
}

/// A mount point below W/J (a bind of a directory of the same filesystem, and a tmpfs) is not
/// the job's: the sweep never enters it and says it could not handle it, so the launch fails
/// rather than claiming a complete sweep.
fn the_sweep_does_not_enter_a_mount_point_below_the_job_directory() {
    let site = Site::new();
    let job = site.ws.join("job1");
    let outside = site.outside.join("suid");
    fs::write(&outside, b"x").unwrap();
    chmod(&outside, 0o4755);
    fs::create_dir(job.join("bound")).unwrap();
    fs::create_dir(job.join("tmp")).unwrap();
    let v = verify(site.plan("job1"), &opts(RESOLVERS[0])).unwrap();
    let _bound = common::bind_mount(&site.outside, &job.join("bound"));
    let _tmp = tmpfs(&job.join("tmp"), rustix::mount::MountFlags::empty());
    let inside_tmp = job.join("tmp/suid");
    fs::write(&inside_tmp, b"x").unwrap();
    chmod(&inside_tmp, 0o4755);
    let report = v.sweep_job_dir().unwrap();
    let mut unhandled: Vec<(PathBuf, &str)> = report
        .unhandled
        .iter()
        .map(|p| (p.path.clone(), p.error.rule()))
        .collect();
    unhandled.sort();
    assert_eq!(
        unhandled,
        vec![
            (PathBuf::from("bound"), "other-filesystem"),
            (PathBuf::from("tmp"), "other-filesystem")
        ]
    );
    assert!(!report.is_complete());
    assert!(report.cleared.is_empty(), "{:?}", report.cleared);
    assert_eq!((mode(&outside), mode(&inside_tmp)), (0o4755, 0o4755));
}

/// What this test binary does when run as the child of
/// [`a_set_id_file_the_launcher_may_not_change_is_removed`]: sweep the directory that
/// `MP_SWEEP_CHILD` names (`PATH:DEV:INO:UID:GID:MODE`) and print what became of each file.
const SWEEP_CHILD: &str = "MP_SWEEP_CHILD";

fn sweep_child(spec: &str) {
    let parts: Vec<&str> = spec.rsplitn(6, ':').collect();
    let num = |i: usize| parts[i].parse::<u64>().unwrap();
    let pin = mount_plan_host::Pin {
        dev: num(4),
        ino: num(3),
    };
    let state = mount_plan_host::JobDirState::new(num(2) as u32, num(1) as u32, num(0) as u32);
    let report = mount_plan_host::sweep_job_dir_at(Path::new(parts[5]), pin, state).unwrap();
    for c in &report.cleared {
        println!(
            "cleared {:?} {:o} removed={}",
            c.path, c.mode_before, c.removed
        );
    }
    for p in &report.unhandled {
        println!("unhandled {:?} {}", p.path, p.error);
    }
}

/// A launcher that may not `fchmod` a set-id file (another user's) removes it, which needs
/// only write access to its directory: the sweep is still complete. Another user's plain file
/// that the launcher cannot open is no set-id file: it is kept (the sweep opens only what the
/// listing says has a set-id bit). Run as uid 65534 (the test binary re-executed through
/// `setpriv`, needs root).
fn a_set_id_file_the_launcher_may_not_change_is_removed() {
    use std::os::unix::fs::{chown, MetadataExt};
    let site = Site::new();
    chmod(site.tmp.path(), 0o755);
    let job = site.ws.join("job1");
    chown(&job, Some(65534), Some(65534)).unwrap();
    chmod(&job, 0o750);
    let tool = job.join("tool");
    fs::write(&tool, b"x").unwrap();
    chmod(&tool, 0o4755);
    let secret = job.join("secret");
    fs::write(&secret, b"x").unwrap();
    chmod(&secret, 0o600);
    let md = fs::metadata(&job).unwrap();
    let spec = format!(
        "{}:{}:{}:65534:65534:{}",
        job.display(),
        md.dev(),
        md.ino(),
        0o750
    );
    // A copy of this binary uid 65534 can reach, wherever the build put it.
    let exe = site.path("host_sweep");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    chmod(&exe, 0o755);
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(&exe)
        .env(SWEEP_CHILD, &spec)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), "cleared \"tool\" 4755 removed=true", "{text}");
    assert!(fs::symlink_metadata(&tool).is_err(), "the file is gone");
    assert!(
        secret.is_file(),
        "the plain file the launcher cannot open is kept"
    );
}

/// A tree deeper than the open-file limit is swept whole: the sweep keeps a bounded number of
/// directories open (the test binary re-executed under `prlimit --nofile=100`).
fn the_sweep_keeps_few_directories_open() {
    use std::os::unix::fs::MetadataExt;
    let site = Site::new();
    let job = site.ws.join("job1");
    chmod(&job, 0o750);
    let mut dir = job.clone();
    for _ in 0..300 {
        dir.push("d");
    }
    fs::create_dir_all(&dir).unwrap();
    let tool = dir.join("tool");
    fs::write(&tool, b"x").unwrap();
    chmod(&tool, 0o4755);
    let md = fs::metadata(&job).unwrap();
    let spec = format!(
        "{}:{}:{}:{}:{}:{}",
        job.display(),
        md.dev(),
        md.ino(),
        md.uid(),
        md.gid(),
        0o750
    );
    let out = std::process::Command::new("prlimit")
        .args(["--nofile=100:100", "--"])
        .arg(std::env::current_exe().unwrap())
        .env(SWEEP_CHILD, &spec)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("cleared ") && text.contains("removed=false"),
        "{text}"
    );
    assert_eq!(mode(&tool), 0o755);
}

/// A tmpfs at `target` with `data` options and `flags`.
fn tmpfs(target: &Path, flags: rustix::mount::MountFlags) -> Mounted {
    rustix::mount::mount("tmpfs", target, "tmpfs", flags, None::<&CStr>)
        .unwrap_or_else(|e| panic!("mount a tmpfs at {target:?}: {e} (needs root)"));
    Mounted::new(target)
}

fn workspace_mount_flags_come_from_the_workspace_filesystem() {
    use rustix::mount::MountFlags;
    for (flags, nosuid, nodev) in [
        (MountFlags::NOSUID | MountFlags::NODEV, true, true),
        (MountFlags::empty(), false, false),
        (MountFlags::NOSUID, true, false),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let _mounted = tmpfs(tmp.path(), flags);
        let ws = tmp.path().join("ws");
        for dir in ["", "startup", "local", "job1"] {
            fs::create_dir_all(ws.join(dir)).unwrap();
            fs::set_permissions(ws.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let v = verify(common::plan_at(&ws, "job1"), &opts(RESOLVERS[0])).unwrap();
        let got = v.workspace_mount_flags().unwrap();
        assert_eq!((got.nosuid, got.nodev), (nosuid, nodev), "{flags:?}");
        assert!(!got.noexec);
        drop(v);
    }
}

fn main() {
    use mount_plan_testkit::harness::{self, Need};
    if let Ok(spec) = std::env::var(SWEEP_CHILD) {
        return sweep_child(&spec);
    }
    const ROOT: &[Need] = &[Need::Root];
    harness::run(vec![
        harness::test(
            "setid_files_are_cleared_and_links_are_not_followed",
            ROOT,
            setid_files_are_cleared_and_links_are_not_followed,
        ),
        harness::test(
            "the_sweep_follows_the_pinned_directory_not_the_name",
            &[],
            the_sweep_follows_the_pinned_directory_not_the_name,
        ),
        harness::test(
            "the_sweep_has_no_depth_limit_and_puts_back_the_job_directory_mode",
            &[],
            the_sweep_has_no_depth_limit_and_puts_back_the_job_directory_mode,
        ),
        harness::test(
            "a_job_directory_is_swept_by_path_only_when_it_is_the_pinned_one",
            &[],
            a_job_directory_is_swept_by_path_only_when_it_is_the_pinned_one,
        ),
        harness::test(
            "workspace_reach_says_who_may_pass_through_w",
            &[],
            workspace_reach_says_who_may_pass_through_w,
        ),
        harness::test(
            "the_sweep_does_not_enter_a_mount_point_below_the_job_directory",
            ROOT,
            the_sweep_does_not_enter_a_mount_point_below_the_job_directory,
        ),
        harness::test(
            "a_set_id_file_the_launcher_may_not_change_is_removed",
            ROOT,
            a_set_id_file_the_launcher_may_not_change_is_removed,
        ),
        harness::test(
            "the_sweep_keeps_few_directories_open",
            &[],
            the_sweep_keeps_few_directories_open,
        ),
        harness::test(
            "the_sweep_puts_back_the_job_directory_owner",
            ROOT,
            the_sweep_puts_back_the_job_directory_owner,
        ),
        harness::test(
            "a_set_id_file_that_cannot_be_cleared_makes_the_sweep_incomplete",
            ROOT,
            a_set_id_file_that_cannot_be_cleared_makes_the_sweep_incomplete,
        ),
        harness::test(
            "device_nodes_sockets_and_fifos_are_reported",
            ROOT,
            device_nodes_sockets_and_fifos_are_reported,
        ),
        harness::test(
            "workspace_mount_flags_come_from_the_workspace_filesystem",
            ROOT,
            workspace_mount_flags_come_from_the_workspace_filesystem,
        ),
    ]);
}
