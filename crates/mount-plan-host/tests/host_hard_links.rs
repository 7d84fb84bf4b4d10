//! Hard links planted in W/J (a link to a file in startup/, written through the job bind) are
//! refused when asked for, at any depth; symlinks in W/J are not followed by the scan.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::{opts, Site, RESOLVERS};
use mount_plan_host::{verify, VerifyOptions, MAX_SCAN_DEPTH};

fn refusing(resolver: mount_plan_host::Resolver) -> VerifyOptions {
    VerifyOptions {
        refuse_hard_links: true,
        ..opts(resolver)
    }
}

#[test]
fn a_hard_link_to_a_startup_file_is_refused_when_asked() {
    let site = Site::new();
    let planted = site.ws.join("job1/cert");
    fs::hard_link(site.ws.join("startup/cert"), &planted).unwrap();
    fs::write(site.ws.join("job1/own-output"), b"fine").unwrap();
    for resolver in RESOLVERS {
        // Off by default.
        verify(site.plan("job1"), &opts(resolver)).unwrap();
        let err = verify(site.plan("job1"), &refusing(resolver)).unwrap_err();
        assert_eq!(err.rule(), "hard-link", "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "host rule `hard-link`: job directory entry {:?} is a regular file with 2 links; a hard link can expose a file from outside the job directory",
                planted.to_str().unwrap()
            )
        );
    }
}

#[test]
fn a_nested_hard_link_is_refused() {
    let site = Site::new();
    let deep = site.ws.join("job1/a/b");
    fs::create_dir_all(&deep).unwrap();
    fs::hard_link(site.ws.join("startup/cert"), deep.join("c")).unwrap();
    for resolver in RESOLVERS {
        let err = verify(site.plan("job1"), &refusing(resolver)).unwrap_err();
        assert_eq!(err.rule(), "hard-link", "{err}");
        assert!(err.to_string().contains("job1/a/b/c"), "{err}");
    }
}

#[test]
fn symlinks_in_the_job_directory_are_not_followed_by_the_scan() {
    let site = Site::new();
    // A directory outside holding a multiply-linked file, reached only through a symlink.
    fs::hard_link(site.outside.join("marker"), site.outside.join("marker2")).unwrap();
    symlink(&site.outside, site.ws.join("job1/out")).unwrap();
    symlink(site.outside.join("marker"), site.ws.join("job1/file-link")).unwrap();
    for resolver in RESOLVERS {
        verify(site.plan("job1"), &refusing(resolver)).unwrap();
    }
}

#[test]
fn the_scan_stops_at_its_depth_limit() {
    let site = Site::new();
    let mut dir = site.ws.join("job1");
    for _ in 0..=MAX_SCAN_DEPTH {
        dir.push("d");
    }
    fs::create_dir_all(&dir).unwrap();
    let err = verify(site.plan("job1"), &refusing(RESOLVERS[0])).unwrap_err();
    assert_eq!(err.rule(), "too-deep", "{err}");
}
