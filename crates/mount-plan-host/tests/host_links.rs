//! No link is ever followed: symlinked job, shared and workspace directories, dangling links,
//! links to siblings and outside, non-directories, and job directory creation. Every case runs
//! through both resolution methods (openat2 and the O_NOFOLLOW walk).

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::{chmod, mode, opts, pin, plan_with_extra, Site, RESOLVERS};
use mount_plan_host::{verify, JobDir, Resolver, VerifyOptions};

fn a_plain_site_verifies_and_pins_every_directory() {
    let site = Site::new();
    for resolver in RESOLVERS {
        let v = verify(site.plan("job1"), &opts(resolver)).unwrap();
        assert_eq!(v.resolver(), resolver);
        assert_eq!(v.workspace_pin(), pin(&site.ws));
        assert_eq!(v.job_pin(), pin(&site.ws.join("job1")));
        let root = v.plan().container_root().clone();
        for shared in ["startup", "local"] {
            let target = v
                .plan()
                .binds()
                .find(|b| b.target().as_str() == format!("{}/{shared}", root.as_str()))
                .unwrap()
                .target()
                .clone();
            assert_eq!(v.bind_pin(&target), Some(pin(&site.ws.join(shared))));
        }
        assert!(v.warnings().is_empty(), "{:?}", v.warnings());
        assert!(!v.job_dir_created());
        assert_eq!(v.pins().binds.len(), 3);
    }
}

fn auto_uses_openat2_on_this_kernel() {
    let site = Site::new();
    let v = verify(site.plan("job1"), &VerifyOptions::default()).unwrap();
    assert_eq!(v.resolver(), Resolver::Openat2);
}

fn expect_rule(site: &Site, job: &str, options: &VerifyOptions, rule: &str) -> String {
    let err = verify(site.plan(job), options).expect_err("verification must fail");
    assert_eq!(err.rule(), rule, "{err}");
    err.to_string()
}

fn a_job_directory_linking_to_a_sibling_is_refused() {
    let site = Site::new();
    fs::remove_dir(site.ws.join("job1")).unwrap();
    symlink("startup", site.ws.join("job1")).unwrap();
    for resolver in RESOLVERS {
        let msg = expect_rule(&site, "job1", &opts(resolver), "symlink");
        assert_eq!(
            msg,
            format!(
                "host rule `symlink`: job directory {:?} is a symlink",
                site.ws.join("job1").to_str().unwrap()
            )
        );
    }
}

fn a_job_directory_linking_outside_is_refused() {
    let site = Site::new();
    fs::remove_dir(site.ws.join("job1")).unwrap();
    symlink(&site.outside, site.ws.join("job1")).unwrap();
    for resolver in RESOLVERS {
        expect_rule(&site, "job1", &opts(resolver), "symlink");
    }
}

fn a_dangling_job_link_is_a_symlink_not_a_missing_directory() {
    let site = Site::new();
    fs::remove_dir(site.ws.join("job1")).unwrap();
    let target = site.path("not-yet");
    symlink(&target, site.ws.join("job1")).unwrap();
    for resolver in RESOLVERS {
        expect_rule(&site, "job1", &opts(resolver), "symlink");
        // Creation must not go through the link either.
        for job_dir in [JobDir::create_if_missing(), JobDir::create_fresh()] {
            let options = VerifyOptions {
                job_dir,
                ..opts(resolver)
            };
            let err = verify(site.plan("job1"), &options).unwrap_err();
            assert!(matches!(err.rule(), "symlink" | "exists"), "{err}");
            assert!(!target.exists(), "the link's target was created");
        }
    }
}

fn a_symlinked_shared_directory_is_refused() {
    let site = Site::new();
    fs::rename(site.ws.join("local"), site.path("local-elsewhere")).unwrap();
    symlink(site.path("local-elsewhere"), site.ws.join("local")).unwrap();
    for resolver in RESOLVERS {
        let err = verify(site.plan("job1"), &opts(resolver)).unwrap_err();
        assert_eq!(err.rule(), "symlink", "{err}");
        assert_eq!(err.subject().unwrap().what, "shared directory");
        assert!(err.to_string().contains("shared directory"), "{err}");
    }
}

fn a_workspace_that_is_a_symlink_is_refused() {
    let site = Site::new();
    let link = site.path("ws-link");
    symlink(&site.ws, &link).unwrap();
    for resolver in RESOLVERS {
        let err = verify(common::plan_at(&link, "job1"), &opts(resolver)).unwrap_err();
        assert_eq!(err.rule(), "symlink", "{err}");
        assert!(
            err.to_string()
                .starts_with("host rule `symlink`: workspace "),
            "{err}"
        );
        // A trailing slash in the launcher's view must not make the kernel follow it.
        let options = VerifyOptions {
            view: Some(mount_plan_host::HostView::at(format!(
                "{}/",
                link.display()
            ))),
            ..opts(resolver)
        };
        let err = verify(site.plan("job1"), &options).unwrap_err();
        assert_eq!(err.rule(), "symlink", "{err}");
    }
}

fn strict_paths_refuse_a_symlink_above_the_workspace() {
    let site = Site::new();
    let parent_link = site.path("parent-link");
    symlink(site.tmp.path(), &parent_link).unwrap();
    let via_link = parent_link.join("ws");
    for resolver in RESOLVERS {
        // By default the parent components are trusted.
        let v = verify(common::plan_at(&via_link, "job1"), &opts(resolver)).unwrap();
        assert_eq!(v.workspace_pin(), pin(&site.ws));
        let strict = VerifyOptions {
            strict_paths: true,
            ..opts(resolver)
        };
        let err = verify(common::plan_at(&via_link, "job1"), &strict).unwrap_err();
        assert_eq!(err.rule(), "symlink-in-path", "{err}");
        // The direct path passes in strict mode.
        verify(site.plan("job1"), &strict).unwrap();
    }
}

fn a_job_directory_that_is_a_file_is_refused() {
    let site = Site::new();
    fs::remove_dir(site.ws.join("job1")).unwrap();
    fs::write(site.ws.join("job1"), b"not a dir").unwrap();
    for resolver in RESOLVERS {
        let msg = expect_rule(&site, "job1", &opts(resolver), "not-a-directory");
        assert!(msg.contains("is a regular file, not a directory"), "{msg}");
        let options = VerifyOptions {
            job_dir: JobDir::create_if_missing(),
            ..opts(resolver)
        };
        expect_rule(&site, "job1", &options, "not-a-directory");
    }
}

fn a_missing_job_directory_is_refused_without_creation() {
    let site = Site::new();
    for resolver in RESOLVERS {
        let msg = expect_rule(&site, "job2", &opts(resolver), "missing");
        assert!(msg.contains("job directory"), "{msg}");
        assert!(!site.ws.join("job2").exists());
    }
}

fn a_missing_job_directory_is_created_with_the_exact_mode() {
    let site = Site::new();
    for (i, resolver) in RESOLVERS.into_iter().enumerate() {
        let job = format!("new{i}");
        let dir = site.ws.join(&job);
        // 0o770 survives only through fchmod: the umask (022 here) would clear group write.
        let options = VerifyOptions {
            job_dir: JobDir::CreateIfMissing { mode: 0o770 },
            ..opts(resolver)
        };
        let v = verify(site.plan(&job), &options).unwrap();
        assert!(v.job_dir_created());
        assert!(dir.is_dir());
        assert_eq!(mode(&dir), 0o770);
        assert_eq!(v.job_pin(), pin(&dir));
        // Present now: used as it is, not created, not re-moded.
        chmod(&dir, 0o700);
        let again = verify(site.plan(&job), &options).unwrap();
        assert!(!again.job_dir_created());
        assert_eq!(again.job_pin(), v.job_pin());
        assert_eq!(mode(&dir), 0o700);
    }
}

fn a_created_job_directory_gets_the_asked_owner_and_an_existing_one_is_left_alone() {
    use std::os::unix::fs::MetadataExt;
    // Needs root (chown to another user): the harness ignores it otherwise, fails it under CI.
    let site = Site::new();
    for (i, resolver) in RESOLVERS.into_iter().enumerate() {
        let job = format!("owned{i}");
        let dir = site.ws.join(&job);
        let options = VerifyOptions {
            job_dir: JobDir::CreateFresh { mode: 0o770 },
            job_dir_owner: Some((4321, 4322)),
            ..opts(resolver)
        };
        let v = verify(site.plan(&job), &options).unwrap();
        assert!(v.job_dir_created());
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4321, 4322));
        assert_eq!(mode(&dir), 0o770);
        // An existing directory is used as it is: never re-owned.
        let options = VerifyOptions {
            job_dir: JobDir::CreateIfMissing { mode: 0o750 },
            job_dir_owner: Some((1, 1)),
            ..opts(resolver)
        };
        let again = verify(site.plan(&job), &options).unwrap();
        assert!(!again.job_dir_created());
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4321, 4322));
    }
}

fn a_fresh_job_directory_is_created_and_an_existing_one_refused() {
    let site = Site::new();
    for (i, resolver) in RESOLVERS.into_iter().enumerate() {
        let options = VerifyOptions {
            job_dir: JobDir::create_fresh(),
            ..opts(resolver)
        };
        let msg = expect_rule(&site, "job1", &options, "exists");
        assert!(msg.contains("already exists"), "{msg}");

        let job = format!("fresh{i}");
        let v = verify(site.plan(&job), &options).unwrap();
        assert!(v.job_dir_created());
        assert_eq!(mode(&site.ws.join(&job)), 0o750);
        assert_eq!(v.job_pin(), pin(&site.ws.join(&job)));
        expect_rule(&site, &job, &options, "exists");
    }
}

fn nothing_is_left_behind_when_a_check_after_creation_fails() {
    let site = Site::new();
    let missing_extra = site.path("no-such-dataset");
    for resolver in RESOLVERS {
        for job_dir in [JobDir::create_fresh(), JobDir::create_if_missing()] {
            let options = VerifyOptions {
                job_dir,
                ..opts(resolver)
            };
            let plan = plan_with_extra(&site.ws, "job9", &missing_extra);
            let err = verify(plan, &options).unwrap_err();
            assert_eq!(err.rule(), "missing", "{err}");
            assert_eq!(err.subject().unwrap().what, "extra mount source");
            assert!(
                !site.ws.join("job9").exists(),
                "the job directory created before the failure was left behind"
            );
        }
    }
    // An existing job directory is never removed on failure.
    let plan = plan_with_extra(&site.ws, "job1", &missing_extra);
    let options = VerifyOptions {
        job_dir: JobDir::create_if_missing(),
        ..VerifyOptions::default()
    };
    verify(plan, &options).unwrap_err();
    assert!(site.ws.join("job1").is_dir());
}

fn extra_mounts_are_pinned_and_their_last_component_is_not_followed() {
    let site = Site::new();
    for resolver in RESOLVERS {
        let plan = plan_with_extra(&site.ws, "job1", &site.outside);
        let v = verify(plan, &opts(resolver)).unwrap();
        let data = mount_plan::ContainerPath::parse("/data").unwrap();
        assert_eq!(v.bind_pin(&data), Some(pin(&site.outside)));

        let link = site.path("dataset-link");
        if !link.exists() {
            symlink(&site.outside, &link).unwrap();
        }
        let err = verify(plan_with_extra(&site.ws, "job1", &link), &opts(resolver)).unwrap_err();
        assert_eq!(err.rule(), "symlink", "{err}");
        assert_eq!(err.subject().unwrap().what, "extra mount source");
    }
}

fn bad_options_are_refused_before_any_io() {
    let site = Site::new();
    let options = VerifyOptions {
        job_dir: JobDir::CreateFresh { mode: 0o10750 },
        ..VerifyOptions::default()
    };
    let err = verify(site.plan("job2"), &options).unwrap_err();
    assert_eq!(err.rule(), "mode", "{err}");
    assert!(!site.ws.join("job2").exists());

    let options = VerifyOptions {
        view: Some(mount_plan_host::HostView::at("relative/ws")),
        ..VerifyOptions::default()
    };
    let err = verify(site.plan("job1"), &options).unwrap_err();
    assert_eq!(err.rule(), "launcher-path", "{err}");
}

fn main() {
    use mount_plan_testkit::harness::{self, Need};
    const NOTHING: &[Need] = &[];
    const ROOT: &[Need] = &[Need::Root];
    harness::run(vec![
        harness::test(
            "a_plain_site_verifies_and_pins_every_directory",
            NOTHING,
            a_plain_site_verifies_and_pins_every_directory,
        ),
        harness::test(
            "auto_uses_openat2_on_this_kernel",
            NOTHING,
            auto_uses_openat2_on_this_kernel,
        ),
        harness::test(
            "a_job_directory_linking_to_a_sibling_is_refused",
            NOTHING,
            a_job_directory_linking_to_a_sibling_is_refused,
        ),
        harness::test(
            "a_job_directory_linking_outside_is_refused",
            NOTHING,
            a_job_directory_linking_outside_is_refused,
        ),
        harness::test(
            "a_dangling_job_link_is_a_symlink_not_a_missing_directory",
            NOTHING,
            a_dangling_job_link_is_a_symlink_not_a_missing_directory,
        ),
        harness::test(
            "a_symlinked_shared_directory_is_refused",
            NOTHING,
            a_symlinked_shared_directory_is_refused,
        ),
        harness::test(
            "a_workspace_that_is_a_symlink_is_refused",
            NOTHING,
            a_workspace_that_is_a_symlink_is_refused,
        ),
        harness::test(
            "strict_paths_refuse_a_symlink_above_the_workspace",
            NOTHING,
            strict_paths_refuse_a_symlink_above_the_workspace,
        ),
        harness::test(
            "a_job_directory_that_is_a_file_is_refused",
            NOTHING,
            a_job_directory_that_is_a_file_is_refused,
        ),
        harness::test(
            "a_missing_job_directory_is_refused_without_creation",
            NOTHING,
            a_missing_job_directory_is_refused_without_creation,
        ),
        harness::test(
            "a_missing_job_directory_is_created_with_the_exact_mode",
            NOTHING,
            a_missing_job_directory_is_created_with_the_exact_mode,
        ),
        harness::test(
            "a_created_job_directory_gets_the_asked_owner_and_an_existing_one_is_left_alone",
            ROOT,
            a_created_job_directory_gets_the_asked_owner_and_an_existing_one_is_left_alone,
        ),
        harness::test(
            "a_fresh_job_directory_is_created_and_an_existing_one_refused",
            NOTHING,
            a_fresh_job_directory_is_created_and_an_existing_one_refused,
        ),
        harness::test(
            "nothing_is_left_behind_when_a_check_after_creation_fails",
            NOTHING,
            nothing_is_left_behind_when_a_check_after_creation_fails,
        ),
        harness::test(
            "extra_mounts_are_pinned_and_their_last_component_is_not_followed",
            NOTHING,
            extra_mounts_are_pinned_and_their_last_component_is_not_followed,
        ),
        harness::test(
            "bad_options_are_refused_before_any_io",
            NOTHING,
            bad_options_are_refused_before_any_io,
        ),
    ]);
}
