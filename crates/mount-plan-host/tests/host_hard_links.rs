//! Hard links planted in W/J (a link to a file in startup/, written through the job bind) are
//! refused when asked for, at any depth; symlinks in W/J are not followed by the scan.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::{opts, Site, RESOLVERS};
use mount_plan_host::{verify, FindingKind, VerifyOptions, MAX_SCAN_DEPTH};

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
    // One level less is the deepest tree scanned whole.
    let site = Site::new();
    let mut dir = site.ws.join("job1");
    for _ in 0..MAX_SCAN_DEPTH {
        dir.push("d");
    }
    fs::create_dir_all(&dir).unwrap();
    verify(site.plan("job1"), &refusing(RESOLVERS[0])).unwrap();
}

/// A socket and a fifo made outside W, hard-linked into W/J: a job could reach a host service
/// through the socket, or pass data to a host reader through the fifo. Refused like a file.
#[test]
fn a_hard_linked_socket_or_fifo_from_outside_is_refused() {
    let site = Site::new();
    let _listener = std::os::unix::net::UnixListener::bind(site.outside.join("service.sock"))
        .expect("bind a unix socket");
    fs::hard_link(site.outside.join("service.sock"), site.ws.join("job1/sock")).unwrap();
    for resolver in RESOLVERS {
        let err = verify(site.plan("job1"), &refusing(resolver)).unwrap_err();
        assert_eq!(err.rule(), "hard-link", "{err}");
        assert!(
            err.to_string().contains("is a socket with 2 links"),
            "{err}"
        );
    }

    let site = Site::new();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        site.outside.join("pipe").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    fs::create_dir(site.ws.join("job1/deep")).unwrap();
    fs::hard_link(site.outside.join("pipe"), site.ws.join("job1/deep/pipe")).unwrap();
    for resolver in RESOLVERS {
        let err = verify(site.plan("job1"), &refusing(resolver)).unwrap_err();
        assert_eq!(err.rule(), "hard-link", "{err}");
        assert!(err.to_string().contains("is a fifo with 2 links"), "{err}");
        // Not refused without the option, but reported.
        let v = verify(site.plan("job1"), &opts(resolver)).unwrap();
        assert_eq!(v.findings().len(), 1, "{:?}", v.findings());
        assert_eq!(v.findings()[0].kind, FindingKind::Fifo);
    }
}

/// A symlink hard-linked into W/J (a second name for a link made elsewhere) is refused too.
#[test]
fn a_hard_linked_symlink_is_refused() {
    let site = Site::new();
    symlink("/etc/shadow", site.outside.join("link")).unwrap();
    fs::hard_link(site.outside.join("link"), site.ws.join("job1/link")).unwrap();
    let err = verify(site.plan("job1"), &refusing(RESOLVERS[0])).unwrap_err();
    assert_eq!(err.rule(), "hard-link", "{err}");
    assert!(
        err.to_string().contains("is a symlink with 2 links"),
        "{err}"
    );
}

/// A lone socket (one link) in W/J or in a shared directory is not refused, even with hard
/// links refused, but reported with its host path.
#[test]
fn a_lone_socket_is_reported_not_refused() {
    let site = Site::new();
    let _a = std::os::unix::net::UnixListener::bind(site.ws.join("job1/own.sock")).unwrap();
    let _b = std::os::unix::net::UnixListener::bind(site.ws.join("startup/shared.sock")).unwrap();
    for resolver in RESOLVERS {
        for options in [opts(resolver), refusing(resolver)] {
            let v = verify(site.plan("job1"), &options).unwrap();
            let mut found: Vec<(FindingKind, String)> = v
                .findings()
                .iter()
                .map(|f| (f.kind, f.path.clone()))
                .collect();
            found.sort_by(|a, b| a.1.cmp(&b.1));
            assert_eq!(
                found,
                vec![
                    (
                        FindingKind::Socket,
                        site.ws.join("job1/own.sock").to_str().unwrap().to_owned()
                    ),
                    (
                        FindingKind::Socket,
                        site.ws
                            .join("startup/shared.sock")
                            .to_str()
                            .unwrap()
                            .to_owned()
                    ),
                ]
            );
            let json = serde_json::to_value(&v).unwrap();
            assert_eq!(json["findings"][0]["kind"], "socket", "{json}");
        }
    }
}
