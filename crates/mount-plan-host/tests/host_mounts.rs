//! Bind sources on another filesystem or behind a mount point, and a launcher that sees the
//! workspace through a bind mount. These tests mount (as root): without root they are
//! ignored in the summary (failed under `CI`, see `mount_plan_testkit::harness`). Mounts are detached by drop
//! guards, whatever the outcome.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::{bind_mount, mount_tmpfs, opts, pin, plan_at, Site, RESOLVERS};
use mount_plan_host::{verify, HostView, VerifyOptions};

fn a_tmpfs_mounted_on_a_shared_directory_is_refused() {
    let site = Site::new();
    let startup = site.ws.join("startup");
    let Some(_mounted) = mount_tmpfs(&startup) else {
        return;
    };
    let tmpfs_dev = pin(&startup).dev;
    let ws_dev = pin(&site.ws).dev;
    assert_ne!(tmpfs_dev, ws_dev);
    for resolver in RESOLVERS {
        let err = verify(site.plan("job1"), &opts(resolver)).unwrap_err();
        assert_eq!(err.rule(), "other-filesystem", "{resolver:?}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(startup.to_str().unwrap()), "{msg}");
        assert!(msg.contains(&format!("device {tmpfs_dev}")), "{msg}");
        assert!(
            msg.contains(&format!("the workspace's device {ws_dev}")),
            "{msg}"
        );
    }
}

fn a_tmpfs_mounted_on_the_job_directory_is_refused() {
    let site = Site::new();
    let job = site.ws.join("job1");
    let Some(_mounted) = mount_tmpfs(&job) else {
        return;
    };
    for resolver in RESOLVERS {
        let err = verify(site.plan("job1"), &opts(resolver)).unwrap_err();
        assert_eq!(err.rule(), "other-filesystem", "{resolver:?}: {err}");
        assert_eq!(err.subject().unwrap().what, "job directory");
    }
}

fn a_bind_mount_from_the_same_filesystem_is_refused() {
    // Same device number: only the mount crossing (RESOLVE_NO_XDEV, or the walk's mount-id
    // comparison) can tell.
    let site = Site::new();
    let elsewhere = site.path("other-startup");
    fs::create_dir(&elsewhere).unwrap();
    let startup = site.ws.join("startup");
    let Some(_mounted) = bind_mount(&elsewhere, &startup) else {
        return;
    };
    assert_eq!(pin(&startup).dev, pin(&site.ws).dev);
    for resolver in RESOLVERS {
        let err = verify(site.plan("job1"), &opts(resolver)).unwrap_err();
        assert_eq!(err.rule(), "other-filesystem", "{resolver:?}: {err}");
    }
}

fn checks_run_through_a_bind_mounted_launcher_view() {
    // The launcher sees the real workspace A through a bind mount at B. The plan's host path is
    // a decoy D whose job directory is a symlink to outside: if any check ran on the host path,
    // verification would fail; it must pass and pin A's inodes, while the plan keeps D's paths.
    let site = Site::new();
    let view = site.path("view");
    fs::create_dir(&view).unwrap();
    let decoy = site.path("decoy");
    for dir in ["", "startup", "local"] {
        fs::create_dir_all(decoy.join(dir)).unwrap();
    }
    symlink(&site.outside, decoy.join("job1")).unwrap();
    let Some(_mounted) = bind_mount(&site.ws, &view) else {
        return;
    };
    for resolver in RESOLVERS {
        let options = VerifyOptions {
            view: Some(HostView::at(&view)),
            ..opts(resolver)
        };
        let v = verify(plan_at(&decoy, "job1"), &options).unwrap();
        assert_eq!(v.workspace_pin(), pin(&site.ws));
        assert_eq!(v.job_pin(), pin(&site.ws.join("job1")));
        assert_ne!(v.job_pin(), pin(&site.outside));
        assert_eq!(v.launcher_workspace(), view.as_path());
        assert_eq!(v.plan().workspace().as_str(), decoy.to_str().unwrap());
        assert_eq!(
            v.plan().job_bind().source().as_str(),
            decoy.join("job1").to_str().unwrap()
        );

        // The other way round: a good host path, a launcher view onto the decoy.
        let options = VerifyOptions {
            view: Some(HostView::at(&decoy)),
            ..opts(resolver)
        };
        let err = verify(plan_at(&view, "job1"), &options).unwrap_err();
        assert_eq!(err.rule(), "symlink", "{err}");
        let at = err.subject().unwrap();
        assert_eq!(at.host_path, view.join("job1").to_str().unwrap());
        assert_eq!(at.launcher_path, decoy.join("job1"));
        assert!(err.to_string().contains("(checked at "), "{err}");
    }
}

fn main() {
    use mount_plan_testkit::harness::{self, Need};
    const ROOT: &[Need] = &[Need::Root];
    harness::run(vec![
        harness::test(
            "a_tmpfs_mounted_on_a_shared_directory_is_refused",
            ROOT,
            a_tmpfs_mounted_on_a_shared_directory_is_refused,
        ),
        harness::test(
            "a_tmpfs_mounted_on_the_job_directory_is_refused",
            ROOT,
            a_tmpfs_mounted_on_the_job_directory_is_refused,
        ),
        harness::test(
            "a_bind_mount_from_the_same_filesystem_is_refused",
            ROOT,
            a_bind_mount_from_the_same_filesystem_is_refused,
        ),
        harness::test(
            "checks_run_through_a_bind_mounted_launcher_view",
            ROOT,
            checks_run_through_a_bind_mounted_launcher_view,
        ),
    ]);
}
