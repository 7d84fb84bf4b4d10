//! Extra mount sources are compared with W by identity: a path that reaches W, a sibling job
//! or an ancestor of W through a symlink or a bind mount is refused, though the core's textual
//! overlap rule lets it through. The bind-mount cases mount (as root): without root they are
//! ignored in the summary (failed under `CI`); mounts are detached by drop guards.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::{bind_mount, opts, pin, plan_with_extra, Site, RESOLVERS};
use mount_plan_host::verify;

/// Verify job1 of `site` with one extra mount of `source`: the rule refused, if any, and the
/// message.
fn refused(site: &Site, source: &Path, relation: &str) {
    for resolver in RESOLVERS {
        let err = verify(plan_with_extra(&site.ws, "job1", source), &opts(resolver)).unwrap_err();
        assert_eq!(err.rule(), "extra-aliases-workspace", "{source:?}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "extra mount source {:?} {relation} the workspace {:?}",
                source.to_str().unwrap(),
                site.ws.to_str().unwrap()
            )),
            "{msg}"
        );
        let ws = pin(&site.ws);
        assert!(
            msg.contains(&format!("the workspace's dev {} ino {}", ws.dev, ws.ino)),
            "{msg}"
        );
        // Nothing was created or left locked: the same plan without the extra mount passes.
        verify(common::plan_at(&site.ws, "job1"), &opts(resolver)).unwrap();
    }
}

fn site_with_sibling() -> Site {
    let site = Site::new();
    fs::create_dir(site.ws.join("job2")).unwrap();
    fs::write(site.ws.join("job2/result"), b"sibling").unwrap();
    site
}

fn a_symlinked_alias_of_the_workspace_is_refused() {
    let site = site_with_sibling();
    symlink(&site.ws, site.path("alias")).unwrap();
    // The sibling job through the alias: inside W.
    refused(&site, &site.path("alias/job2"), "lies inside");
    // W itself through a symlinked parent: `via/ws` with `via -> <tmp>`.
    symlink(site.tmp.path(), site.path("via")).unwrap();
    refused(&site, &site.path("via/ws"), "is");
}

fn a_bind_mount_of_the_workspace_is_refused() {
    let site = site_with_sibling();
    let alias = site.path("mnt");
    fs::create_dir(&alias).unwrap();
    let Some(_mounted) = bind_mount(&site.ws, &alias) else {
        return;
    };
    refused(&site, &alias.join("job2"), "lies inside");
    refused(&site, &alias, "is");
}

fn a_bind_mount_of_an_ancestor_of_the_workspace_is_refused() {
    let site = site_with_sibling();
    let elsewhere = tempfile::tempdir().unwrap();
    let up = elsewhere.path().join("up");
    fs::create_dir(&up).unwrap();
    // `up` shows W's parent directory: mounting it would expose W and every job.
    let Some(_mounted) = bind_mount(site.tmp.path(), &up) else {
        return;
    };
    refused(&site, &up, "contains");
}

fn a_bind_mount_of_a_directory_below_the_workspace_is_refused() {
    // A sibling job's directory (and a directory deeper in it) mounted elsewhere alone: no
    // ancestor in common with W; the place in the filesystem (mountinfo) shows it.
    let site = site_with_sibling();
    fs::create_dir(site.ws.join("job2/sub")).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let (j2, sub) = (elsewhere.path().join("j2"), elsewhere.path().join("sub"));
    fs::create_dir(&j2).unwrap();
    fs::create_dir(&sub).unwrap();
    let Some(_j2) = bind_mount(&site.ws.join("job2"), &j2) else {
        return;
    };
    let Some(_sub) = bind_mount(&site.ws.join("job2/sub"), &sub) else {
        return;
    };
    refused(&site, &j2, "lies inside");
    refused(&site, &sub, "lies inside");
    // A bind of an unrelated directory of the same filesystem passes.
    let data = site.path("data");
    fs::create_dir(&data).unwrap();
    let other = elsewhere.path().join("data");
    fs::create_dir(&other).unwrap();
    let Some(_data) = bind_mount(&data, &other) else {
        return;
    };
    verify(
        plan_with_extra(&site.ws, "job1", &other),
        &opts(RESOLVERS[0]),
    )
    .unwrap();
}

fn an_unrelated_source_passes_and_is_pinned() {
    let site = site_with_sibling();
    for resolver in RESOLVERS {
        let v = verify(
            plan_with_extra(&site.ws, "job1", &site.outside),
            &opts(resolver),
        )
        .unwrap();
        let data = mount_plan::ContainerPath::parse("/data").unwrap();
        assert_eq!(v.bind_pin(&data), Some(pin(&site.outside)));
    }
    // A sibling of W whose name starts like W's is not inside it.
    let near = site.path("ws2");
    fs::create_dir(&near).unwrap();
    verify(
        plan_with_extra(&site.ws, "job1", &near),
        &opts(RESOLVERS[0]),
    )
    .unwrap();
}

fn main() {
    use mount_plan_testkit::harness::{self, Need};
    const ROOT: &[Need] = &[Need::Root];
    harness::run(vec![
        harness::test(
            "a_symlinked_alias_of_the_workspace_is_refused",
            &[],
            a_symlinked_alias_of_the_workspace_is_refused,
        ),
        harness::test(
            "a_bind_mount_of_the_workspace_is_refused",
            ROOT,
            a_bind_mount_of_the_workspace_is_refused,
        ),
        harness::test(
            "a_bind_mount_of_an_ancestor_of_the_workspace_is_refused",
            ROOT,
            a_bind_mount_of_an_ancestor_of_the_workspace_is_refused,
        ),
        harness::test(
            "a_bind_mount_of_a_directory_below_the_workspace_is_refused",
            ROOT,
            a_bind_mount_of_a_directory_below_the_workspace_is_refused,
        ),
        harness::test(
            "an_unrelated_source_passes_and_is_pinned",
            &[],
            an_unrelated_source_passes_and_is_pinned,
        ),
    ]);
}
