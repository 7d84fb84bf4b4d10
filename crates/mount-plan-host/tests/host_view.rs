//! The launcher sees W at another path than the engine: checks run on the launcher's path,
//! the verified plan keeps the host paths. No mounts needed: the host path does not exist here.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::{opts, pin, plan_at, plan_with_extra, Site, RESOLVERS};
use mount_plan_host::{verify, HostView, JobDir, VerifyOptions};

const HOST_WS: &str = "/host/does/not/exist/ws";

#[test]
fn a_workspace_absent_from_the_launcher_is_checked_through_its_view() {
    let site = Site::new();
    assert!(!Path::new(HOST_WS).exists());
    for resolver in RESOLVERS {
        // Without a view, the host path is checked, and it does not exist here.
        let err = verify(plan_at(Path::new(HOST_WS), "job1"), &opts(resolver)).unwrap_err();
        assert_eq!(err.rule(), "missing", "{err}");
        assert_eq!(err.subject().unwrap().what, "workspace");

        let options = VerifyOptions {
            view: Some(HostView::at(&site.ws)),
            ..opts(resolver)
        };
        let v = verify(plan_at(Path::new(HOST_WS), "job1"), &options).unwrap();
        assert_eq!(v.workspace_pin(), pin(&site.ws));
        assert_eq!(v.job_pin(), pin(&site.ws.join("job1")));
        assert_eq!(v.plan().workspace().as_str(), HOST_WS);
        for bind in v.plan().binds() {
            assert!(bind.source().as_str().starts_with(HOST_WS), "{bind:?}");
        }
        for bind in &v.pins().binds {
            assert!(bind.source.as_str().starts_with(HOST_WS), "{bind:?}");
        }
        assert_eq!(v.launcher_workspace(), site.ws.as_path());
    }
}

#[test]
fn errors_name_both_paths_when_the_views_differ() {
    let site = Site::new();
    fs::remove_dir(site.ws.join("job1")).unwrap();
    symlink(&site.outside, site.ws.join("job1")).unwrap();
    let options = VerifyOptions {
        view: Some(HostView::at(&site.ws)),
        ..VerifyOptions::default()
    };
    let err = verify(plan_at(Path::new(HOST_WS), "job1"), &options).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "host rule `symlink`: job directory \"{HOST_WS}/job1\" (checked at {:?}) is a symlink",
            site.ws.join("job1")
        )
    );
}

#[test]
fn the_job_directory_is_created_through_the_view() {
    let site = Site::new();
    let options = VerifyOptions {
        view: Some(HostView::at(&site.ws)),
        job_dir: JobDir::create_fresh(),
        ..VerifyOptions::default()
    };
    let v = verify(plan_at(Path::new(HOST_WS), "job7"), &options).unwrap();
    assert!(v.job_dir_created());
    assert_eq!(v.job_pin(), pin(&site.ws.join("job7")));
    assert!(!Path::new(HOST_WS).exists());
}

#[test]
fn extra_sources_can_be_mapped_too() {
    let site = Site::new();
    let host_data = Path::new("/host/does/not/exist/data");
    let view = HostView::at(&site.ws).map_extra(
        mount_plan::HostPath::parse(host_data.to_str().unwrap()).unwrap(),
        &site.outside,
    );
    let options = VerifyOptions {
        view: Some(view),
        ..VerifyOptions::default()
    };
    let v = verify(
        plan_with_extra(Path::new(HOST_WS), "job1", host_data),
        &options,
    )
    .unwrap();
    let data = mount_plan::ContainerPath::parse("/data").unwrap();
    assert_eq!(v.bind_pin(&data), Some(pin(&site.outside)));
    // Unmapped, the host path is opened, and it is missing here.
    let options = VerifyOptions {
        view: Some(HostView::at(&site.ws)),
        ..VerifyOptions::default()
    };
    let err = verify(
        plan_with_extra(Path::new(HOST_WS), "job1", host_data),
        &options,
    )
    .unwrap_err();
    assert_eq!(err.rule(), "missing", "{err}");
}

#[test]
fn the_serialised_form_carries_the_pins() {
    let site = Site::new();
    let v = verify(site.plan("job1"), &VerifyOptions::default()).unwrap();
    let json = serde_json::to_value(&v).unwrap();
    let ws = pin(&site.ws);
    assert_eq!(json["pins"]["workspace"]["dev"], ws.dev);
    assert_eq!(json["pins"]["workspace"]["ino"], ws.ino);
    let binds = json["pins"]["binds"].as_array().unwrap();
    assert_eq!(binds.len(), 3);
    let job = binds.iter().find(|b| b["role"] == "job").unwrap();
    assert_eq!(job["ino"], pin(&site.ws.join("job1")).ino);
    assert_eq!(job["target"], "/workspace/job1");
    assert_eq!(job["source"], site.ws.join("job1").to_str().unwrap());
    assert_eq!(json["resolver"], "openat2");
    assert_eq!(json["workspace"], site.ws.to_str().unwrap());
    assert_eq!(json["job"], "job1");
    assert!(
        json.get("plan").is_none(),
        "the plan's fields are the form's own: {json}"
    );
    assert_eq!(json["job_dir_created"], false);
    assert!(json["warnings"].as_array().unwrap().is_empty());
}

/// The sources an engine reports are host paths; they are compared with the pins through the
/// launcher's view of W, component-wise: W itself is W seen through the view, and a path that
/// only starts with W's text is not in W.
#[test]
fn reported_sources_are_compared_through_the_launcher_s_view() {
    let site = Site::new();
    fs::create_dir(site.ws.join("2")).unwrap();
    let options = VerifyOptions {
        view: Some(HostView::at(&site.ws)),
        ..opts(RESOLVERS[0])
    };
    let v = verify(plan_at(Path::new(HOST_WS), "job1"), &options).unwrap();
    let pairs: Vec<(String, String)> = v
        .plan()
        .binds()
        .map(|b| (b.target().as_str().into(), b.source().as_str().into()))
        .collect();
    assert!(v
        .compare_sources(pairs.iter().map(|(t, s)| (t.as_str(), s.as_str())))
        .is_empty());
    let target = pairs[0].0.as_str();
    let found = v.compare_sources([(target, HOST_WS)]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].rule(),
        "pin-identity",
        "W through the view: {}",
        found[0]
    );
    let beside = format!("{HOST_WS}2");
    let found = v.compare_sources([(target, beside.as_str())]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].rule(), "pin-unreadable", "not in W: {}", found[0]);
}
