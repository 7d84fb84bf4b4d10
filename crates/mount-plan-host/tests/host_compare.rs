//! After start, the bind sources an engine reports are compared on this host with the pins:
//! `lstat`, no link followed; a swapped directory, a symlink or a missing path is a mismatch
//! naming the mount and both identities.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::{opts, pin, Site, RESOLVERS};
use mount_plan_host::{verify, PinMismatch};

fn observed(v: &mount_plan_host::VerifiedPlan) -> Vec<(String, String)> {
    v.plan()
        .binds()
        .map(|b| {
            (
                b.target().as_str().to_owned(),
                b.source().as_str().to_owned(),
            )
        })
        .collect()
}

fn compare(v: &mount_plan_host::VerifiedPlan) -> Vec<PinMismatch> {
    let pairs = observed(v);
    v.compare_sources(pairs.iter().map(|(t, s)| (t.as_str(), s.as_str())))
}

#[test]
fn the_pinned_sources_match() {
    let site = Site::new();
    for resolver in RESOLVERS {
        let v = verify(site.plan("job1"), &opts(resolver)).unwrap();
        assert!(compare(&v).is_empty());
        // A target the plan has no bind for is the audit's business, not a mismatch.
        assert!(v.compare_sources([("/elsewhere", "/")]).is_empty());
    }
}

#[test]
fn a_swapped_directory_is_a_mismatch_with_both_identities() {
    let site = Site::new();
    let v = verify(site.plan("job1"), &opts(RESOLVERS[0])).unwrap();
    let pinned = v.job_pin();
    fs::rename(site.ws.join("job1"), site.ws.join("job1.old")).unwrap();
    fs::create_dir(site.ws.join("job1")).unwrap();
    let now = pin(&site.ws.join("job1"));
    let found = compare(&v);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].rule(), "pin-identity");
    assert_eq!(
        found[0].to_string(),
        format!(
            "pin rule `pin-identity`: the bind at \"/workspace/job1\" has the source {:?} with identity dev {} ino {}; the plan pinned dev {} ino {}",
            site.ws.join("job1").to_str().unwrap(),
            now.dev,
            now.ino,
            pinned.dev,
            pinned.ino
        )
    );
}

#[test]
fn a_symlink_is_a_mismatch_even_to_the_pinned_directory() {
    let site = Site::new();
    let v = verify(site.plan("job1"), &opts(RESOLVERS[0])).unwrap();
    fs::rename(site.ws.join("startup"), site.ws.join("startup-v1")).unwrap();
    symlink("startup-v1", site.ws.join("startup")).unwrap();
    let found = compare(&v);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].rule(), "pin-link");
    assert!(
        found[0].to_string().contains("\"/workspace/startup\""),
        "{}",
        found[0]
    );

    fs::remove_file(site.ws.join("startup")).unwrap();
    let found = compare(&v);
    assert_eq!(found[0].rule(), "pin-unreadable");
    let cause = std::error::Error::source(&found[0]).unwrap().to_string();
    assert!(cause.contains("No such file"), "{cause}");
    assert!(
        !found[0].to_string().contains(&cause),
        "the cause is printed once"
    );
}

/// `audit --verify` looks through a running container's root (`/proc/PID/root`): a root whose
/// R leads to W holds the pinned directories; a root whose R is another tree holds other
/// directories at the shared binds and nothing at the job's.
#[test]
fn what_a_container_root_holds_is_compared_with_the_pins() {
    let site = Site::new();
    let v = verify(site.plan("job1"), &opts(RESOLVERS[0])).unwrap();
    let held = site.path("root-held");
    fs::create_dir(&held).unwrap();
    symlink(&site.ws, held.join("workspace")).unwrap();
    assert!(v.compare_held(&held).is_empty());

    let other = site.path("root-other");
    for dir in ["workspace/startup", "workspace/local"] {
        fs::create_dir_all(other.join(dir)).unwrap();
    }
    let found = v.compare_held(&other);
    let mut rules: Vec<(String, &str)> = found.iter().map(|m| (m.to_string(), m.rule())).collect();
    rules.sort_by_key(|(_, rule)| *rule);
    assert_eq!(
        rules.iter().map(|(_, r)| *r).collect::<Vec<_>>(),
        ["pin-held", "pin-held", "pin-held-unreadable"],
        "{found:?}"
    );
    assert!(rules[2].0.contains("/workspace/job1"), "{}", rules[2].0);
}
