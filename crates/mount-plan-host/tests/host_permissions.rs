//! Whoever can write W or a shared directory can swap what it holds: refuse (or warn) when
//! they are writable by group or others, or owned by another user than expected.

mod common;

use std::os::unix::fs::chown;

use common::{chmod, opts, Site, RESOLVERS};
use mount_plan_host::{verify, PermissionPolicy, VerifyOptions};

fn a_group_writable_workspace_is_refused() {
    let site = Site::new();
    chmod(&site.ws, 0o775);
    for resolver in RESOLVERS {
        let err = verify(site.plan("job1"), &opts(resolver)).unwrap_err();
        assert_eq!(err.rule(), "permissions", "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "host rule `permissions`: workspace {:?} is writable by its group (mode 0775); whoever can write there can swap the directories it holds",
                site.ws.to_str().unwrap()
            )
        );
    }
}

fn a_sticky_world_writable_workspace_is_refused() {
    // The sticky bit stops deleting others' entries, not creating a planted link at a missing J.
    let site = Site::new();
    chmod(&site.ws, 0o1777);
    let err = verify(site.plan("job1"), &VerifyOptions::default()).unwrap_err();
    assert_eq!(err.rule(), "permissions", "{err}");
    assert!(err.to_string().contains("group and others"), "{err}");
}

fn a_world_writable_shared_directory_is_refused() {
    let site = Site::new();
    chmod(&site.ws.join("startup"), 0o757);
    for resolver in RESOLVERS {
        let err = verify(site.plan("job1"), &opts(resolver)).unwrap_err();
        assert_eq!(err.rule(), "permissions", "{err}");
        assert_eq!(err.subject().unwrap().what, "shared directory");
    }
}

fn warn_lets_it_through_with_warnings() {
    let site = Site::new();
    chmod(&site.ws, 0o770);
    chmod(&site.ws.join("local"), 0o777);
    let options = VerifyOptions {
        permissions: PermissionPolicy::Warn,
        ..VerifyOptions::default()
    };
    let v = verify(site.plan("job1"), &options).unwrap();
    assert_eq!(v.warnings().len(), 2, "{:?}", v.warnings());
    assert!(v.warnings()[0].starts_with("host rule `permissions`: workspace"));
    assert!(v.warnings()[1].starts_with("host rule `permissions`: shared directory"));
}

fn another_owner_is_refused() {
    let site = Site::new();
    // The workspace is ours (this process's euid): expecting someone else refuses it.
    let options = VerifyOptions {
        expected_owner: Some(4242),
        ..VerifyOptions::default()
    };
    let err = verify(site.plan("job1"), &options).unwrap_err();
    assert_eq!(err.rule(), "owner", "{err}");
    assert!(err.to_string().contains("expected uid 4242"), "{err}");
}

/// A shared directory owned by another user, with the default expectation (our euid). Needs
/// root (chown to another uid): the harness ignores it otherwise, fails it under CI.
fn a_shared_directory_of_another_owner_is_refused() {
    let site = Site::new();
    chown(site.ws.join("startup"), Some(4242), None).unwrap();
    for resolver in RESOLVERS {
        let err = verify(site.plan("job1"), &opts(resolver)).unwrap_err();
        assert_eq!(err.rule(), "owner", "{err}");
        assert_eq!(err.subject().unwrap().what, "shared directory");
        assert!(
            err.to_string()
                .contains("owned by uid 4242, expected uid 0"),
            "{err}"
        );
    }
}

fn the_job_directory_may_be_group_writable() {
    let site = Site::new();
    chmod(&site.ws.join("job1"), 0o770);
    verify(site.plan("job1"), &VerifyOptions::default()).unwrap();
}

/// Finding 8 of issue 21: a job directory open to every host user (or with set-id bits) is
/// refused, whether asked for or found.
fn a_job_directory_mode_with_set_id_bits_or_world_write_is_refused() {
    let site = Site::new();
    for mode in [0o7777, 0o777, 0o4750, 0o2750, 0o752] {
        let options = VerifyOptions {
            job_dir: mount_plan_host::JobDir::CreateFresh { mode },
            ..VerifyOptions::default()
        };
        let err = verify(site.plan("fresh"), &options).unwrap_err();
        assert_eq!(err.rule(), "job-dir-mode", "{mode:o}: {err}");
        assert!(err.to_string().contains(&format!("{mode:04o}")), "{err}");
        assert!(!site.ws.join("fresh").exists(), "nothing is created");
    }
    for mode in [0o777, 0o2770, 0o4750, 0o1777, 0o757] {
        chmod(&site.ws.join("job1"), mode);
        let err = verify(site.plan("job1"), &VerifyOptions::default()).unwrap_err();
        assert_eq!(err.rule(), "job-dir-loose", "{mode:o}: {err}");
        assert!(err.to_string().contains(&format!("{mode:04o}")), "{err}");
    }
    for mode in [0o700, 0o750, 0o770, 0o755, 0o1770] {
        chmod(&site.ws.join("job1"), mode);
        verify(site.plan("job1"), &VerifyOptions::default()).unwrap();
    }
}

fn main() {
    use mount_plan_testkit::harness::{self, Need};
    const NOTHING: &[Need] = &[];
    const ROOT: &[Need] = &[Need::Root];
    harness::run(vec![
        harness::test(
            "a_job_directory_mode_with_set_id_bits_or_world_write_is_refused",
            NOTHING,
            a_job_directory_mode_with_set_id_bits_or_world_write_is_refused,
        ),
        harness::test(
            "a_group_writable_workspace_is_refused",
            NOTHING,
            a_group_writable_workspace_is_refused,
        ),
        harness::test(
            "a_sticky_world_writable_workspace_is_refused",
            NOTHING,
            a_sticky_world_writable_workspace_is_refused,
        ),
        harness::test(
            "a_world_writable_shared_directory_is_refused",
            NOTHING,
            a_world_writable_shared_directory_is_refused,
        ),
        harness::test(
            "warn_lets_it_through_with_warnings",
            NOTHING,
            warn_lets_it_through_with_warnings,
        ),
        harness::test(
            "another_owner_is_refused",
            NOTHING,
            another_owner_is_refused,
        ),
        harness::test(
            "a_shared_directory_of_another_owner_is_refused",
            ROOT,
            a_shared_directory_of_another_owner_is_refused,
        ),
        harness::test(
            "the_job_directory_may_be_group_writable",
            NOTHING,
            the_job_directory_may_be_group_writable,
        ),
    ]);
}
