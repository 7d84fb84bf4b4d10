//! Table tests of layout validation: container root, shared names, root policy and size,
//! extra mounts.

use mount_plan::{
    ExtraMountSpec, Hardening, Layout, LayoutError, LayoutSpec, NameError, PathError, RootKind,
    RootPolicy, DEFAULT_CONTAINER_ROOT, DEFAULT_READ_ONLY_ROOT_SIZE,
};

/// Assert `spec` is refused by `rule`, with a message naming the rule and quoting `value`.
fn refused(spec: LayoutSpec, rule: &str, value: Option<&str>) -> LayoutError {
    let err = spec.build().expect_err(rule);
    assert_eq!(err.rule(), rule, "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("layout rule `{rule}`")),
        "{message}"
    );
    if let Some(value) = value {
        assert!(message.contains(&format!("{value:?}")), "{message}");
        assert_eq!(err.value().as_deref(), Some(value), "{err}");
    }
    err
}

fn with_root(root: &str) -> LayoutSpec {
    LayoutSpec {
        container_root: Some(root.into()),
        ..LayoutSpec::default()
    }
}

fn extra(source: &str, target: &str) -> ExtraMountSpec {
    ExtraMountSpec {
        source: source.into(),
        target: target.into(),
        read_only: true,
    }
}

fn with_extras(root: &str, extras: &[(&str, &str)]) -> LayoutSpec {
    LayoutSpec {
        container_root: Some(root.into()),
        extra_mounts: extras.iter().map(|(s, t)| extra(s, t)).collect(),
        ..LayoutSpec::default()
    }
}

#[test]
fn default_layout() {
    let layout = Layout::default();
    assert_eq!(layout.container_root().as_str(), DEFAULT_CONTAINER_ROOT);
    let shared: Vec<&str> = layout.shared().iter().map(|n| n.as_str()).collect();
    assert_eq!(shared, ["startup", "local"]);
    assert_eq!(
        layout.root(),
        RootPolicy::ReadOnly {
            size_bytes: DEFAULT_READ_ONLY_ROOT_SIZE
        }
    );
    assert!(layout.root().read_only());
    assert_eq!(layout.root().mode(), 0o555);
    assert!(layout.extra_mounts().is_empty());
    assert!(layout.required_hardening().is_empty());
    assert_eq!(LayoutSpec::default().build().unwrap(), layout);
}

#[test]
fn required_hardening_is_kept_once_each_and_carried_into_plans() {
    let layout = LayoutSpec {
        require: vec![Hardening::NoExec, Hardening::NoSuid, Hardening::NoExec],
        ..LayoutSpec::default()
    }
    .build()
    .unwrap();
    let want: Vec<Hardening> = vec![Hardening::NoSuid, Hardening::NoExec];
    let got: Vec<Hardening> = layout.required_hardening().iter().copied().collect();
    assert_eq!(got, want);
    let plan = layout
        .plan(
            &mount_plan::HostPath::parse("/srv/site").unwrap(),
            &mount_plan::JobName::parse("job-1").unwrap(),
        )
        .unwrap();
    assert_eq!(plan.required_hardening(), layout.required_hardening());
}

#[test]
fn container_root_rules() {
    for (root, inner, value) in [
        ("/", "is-root", "/"),
        ("/proc", "kernel-fs", "/proc"),
        ("/proc/ws", "kernel-fs", "/proc/ws"),
        ("/sys/ws", "kernel-fs", "/sys/ws"),
        ("/dev", "kernel-fs", "/dev"),
        ("/dev/shm/ws", "kernel-fs", "/dev/shm/ws"),
        ("workspace", "not-absolute", "workspace"),
        ("/workspace/", "not-normal", "/workspace/"),
        ("/a/../b", "not-normal", "/a/../b"),
        ("", "path-empty", ""),
        ("/work\nspace", "control-char", "/work\nspace"),
    ] {
        let err = refused(with_root(root), "container-root", Some(value));
        let LayoutError::ContainerRoot(path_err) = &err else {
            panic!("{err:?}");
        };
        assert_eq!(path_err.rule(), inner, "{root:?}");
        assert!(err.to_string().contains(&format!("`{inner}`")), "{err}");
        assert!(err.to_string().contains("container root"), "{err}");
    }
    for root in [
        "/procfoo",
        "/system",
        "/devices",
        "/var/tmp/nvflare/workspace",
        "/ws,x",
    ] {
        let layout = with_root(root).build().unwrap();
        assert_eq!(layout.container_root().as_str(), root);
    }
}

#[test]
fn shared_name_rules() {
    let spec = |names: &[&str]| LayoutSpec {
        shared: Some(names.iter().map(|s| s.to_string()).collect()),
        ..LayoutSpec::default()
    };
    for (name, inner) in [
        ("", "empty"),
        ("..", "bad-first-char"),
        ("a/b", "bad-char"),
        ("a,b", "bad-char"),
        ("certs.", "trailing-dot"),
        ("\u{430}", "bad-first-char"),
    ] {
        let err = refused(spec(&["startup", name]), "shared-name", Some(name));
        let LayoutError::SharedName { source, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(source.rule(), inner, "{name:?}");
    }
    refused(
        spec(&["startup", "Startup"]),
        "shared-duplicate",
        Some("Startup"),
    );
    refused(
        spec(&["local", "x", "LOCAL"]),
        "shared-duplicate",
        Some("LOCAL"),
    );
    refused(spec(&["a", "a"]), "shared-duplicate", Some("a"));
    let layout = spec(&["certs", "models", "Certs2"]).build().unwrap();
    assert_eq!(layout.shared().len(), 3);
    assert!(spec(&[]).build().unwrap().shared().is_empty());
}

#[test]
fn root_policy_rules() {
    let scratch_no_size = LayoutSpec {
        root: Some(RootKind::Scratch),
        ..LayoutSpec::default()
    };
    let err = refused(scratch_no_size, "scratch-size", None);
    assert_eq!(err, LayoutError::ScratchNeedsSize);

    for (kind, size) in [
        (RootKind::Scratch, 0),
        (RootKind::Scratch, 4095),
        (RootKind::ReadOnly, 0),
        (RootKind::ReadOnly, 1),
    ] {
        let err = refused(
            LayoutSpec {
                root: Some(kind),
                root_size_bytes: Some(size),
                ..LayoutSpec::default()
            },
            "root-size",
            None,
        );
        assert_eq!(err, LayoutError::RootSizeTooSmall { value: size });
        assert!(err.to_string().contains(&size.to_string()), "{err}");
    }

    let scratch = LayoutSpec {
        root: Some(RootKind::Scratch),
        root_size_bytes: Some(64 << 20),
        ..LayoutSpec::default()
    }
    .build()
    .unwrap();
    assert_eq!(
        scratch.root(),
        RootPolicy::Scratch {
            size_bytes: 64 << 20
        }
    );
    assert!(!scratch.root().read_only());
    assert_eq!(scratch.root().mode(), 0o1777);

    let small_ro = LayoutSpec {
        root_size_bytes: Some(4096),
        ..LayoutSpec::default()
    }
    .build()
    .unwrap();
    assert_eq!(small_ro.root(), RootPolicy::ReadOnly { size_bytes: 4096 });
}

#[test]
fn extra_mounts_may_not_overlap_the_root() {
    for (root, target) in [
        ("/workspace", "/workspace"),
        ("/workspace", "/workspace/data"),
        ("/workspace", "/workspace/job-1/x"),
        ("/var/tmp/nvflare/workspace", "/var"),
        ("/var/tmp/nvflare/workspace", "/var/tmp"),
    ] {
        let err = refused(
            with_extras(root, &[("/data/set", target)]),
            "extra-overlaps-root",
            Some(target),
        );
        assert_eq!(
            err,
            LayoutError::ExtraOverlapsRoot {
                target: target.into(),
                root: root.into()
            }
        );
        assert!(err.to_string().contains(&format!("{root:?}")), "{err}");
    }
    // Component-wise: a shared prefix is not an overlap.
    for (root, target) in [
        ("/data", "/database"),
        ("/database", "/data"),
        ("/workspace", "/workspace-2"),
        ("/workspace", "/works"),
        ("/var/tmp/ws", "/var/tmp/ws2/x"),
    ] {
        let layout = with_extras(root, &[("/data/set", target)])
            .build()
            .unwrap_or_else(|e| panic!("{root:?} {target:?}: {e}"));
        assert_eq!(layout.extra_mounts()[0].target().as_str(), target);
    }
}

#[test]
fn extra_mount_paths_are_checked() {
    for (source, target, what, inner) in [
        ("data", "/data", "extra mount source", "not-absolute"),
        ("/", "/data", "extra mount source", "is-root"),
        ("/data/../etc", "/data", "extra mount source", "not-normal"),
        ("/srv/x", "/", "extra mount target", "is-root"),
        ("/srv/x", "/proc/x", "extra mount target", "kernel-fs"),
        ("/srv/x", "/dev", "extra mount target", "kernel-fs"),
        ("/srv/x", "data", "extra mount target", "not-absolute"),
        ("/srv/x\0", "/data", "extra mount source", "control-char"),
    ] {
        let value = if what.ends_with("source") {
            source
        } else {
            target
        };
        let err = refused(
            with_extras("/workspace", &[("/ok", "/ok"), (source, target)]),
            "extra-path",
            Some(value),
        );
        let LayoutError::ExtraPath {
            index,
            source: path_err,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(*index, 1);
        assert_eq!(path_err.rule(), inner, "{source:?} {target:?}");
        assert!(err.to_string().contains(what), "{err}");
        assert!(err.to_string().contains("extra mount 1"), "{err}");
    }
}

#[test]
fn extra_mount_targets_are_unique() {
    let err = refused(
        with_extras("/workspace", &[("/a", "/data"), ("/b", "/data")]),
        "extra-duplicate-target",
        Some("/data"),
    );
    assert_eq!(
        err,
        LayoutError::ExtraDuplicateTarget {
            target: "/data".into()
        }
    );
    // Nested targets are fine and sorted parents first, whatever the input order.
    let layout = with_extras(
        "/workspace",
        &[
            ("/s3", "/data/set/a"),
            ("/s4", "/data-x"),
            ("/s1", "/data"),
            ("/s2", "/data/set"),
        ],
    )
    .build()
    .unwrap();
    let targets: Vec<&str> = layout
        .extra_mounts()
        .iter()
        .map(|m| m.target().as_str())
        .collect();
    assert_eq!(targets, ["/data", "/data-x", "/data/set", "/data/set/a"]);
    let sources: Vec<&str> = layout
        .extra_mounts()
        .iter()
        .map(|m| m.source().as_str())
        .collect();
    assert_eq!(sources, ["/s1", "/s4", "/s2", "/s3"]);
}

#[test]
fn first_broken_rule_wins() {
    // The root is checked before the shared names, which are checked before the extras.
    let spec = LayoutSpec {
        container_root: Some("/".into()),
        shared: Some(vec!["a,b".into()]),
        extra_mounts: vec![extra("x", "y")],
        ..LayoutSpec::default()
    };
    assert_eq!(spec.build().unwrap_err().rule(), "container-root");
    let spec = LayoutSpec {
        shared: Some(vec!["a,b".into()]),
        root: Some(RootKind::Scratch),
        ..LayoutSpec::default()
    };
    assert_eq!(spec.build().unwrap_err().rule(), "shared-name");
}

#[test]
fn errors_keep_their_causes() {
    use std::error::Error;
    let err = with_root("/proc").build().unwrap_err();
    let cause = err.source().expect("a cause");
    assert!(cause.downcast_ref::<PathError>().is_some());
    let err = LayoutSpec {
        shared: Some(vec!["..".into()]),
        ..LayoutSpec::default()
    }
    .build()
    .unwrap_err();
    assert!(err.source().unwrap().downcast_ref::<NameError>().is_some());
}

#[cfg(feature = "serde")]
#[test]
fn layout_files_deserialise_strictly() {
    let spec: LayoutSpec = serde_json::from_str(
        r#"{"container_root": "/ws", "shared": ["certs"], "root": "scratch",
            "root_size_bytes": 1048576,
            "extra_mounts": [{"source": "/srv/data", "target": "/data"}]}"#,
    )
    .unwrap();
    let layout = spec.build().unwrap();
    assert_eq!(layout.container_root().as_str(), "/ws");
    assert_eq!(
        layout.root(),
        RootPolicy::Scratch {
            size_bytes: 1 << 20
        }
    );
    assert!(
        layout.extra_mounts()[0].read_only(),
        "extra mounts default to read-only"
    );
    let err = serde_json::from_str::<LayoutSpec>(r#"{"privileged": true}"#).unwrap_err();
    assert!(err.to_string().contains("privileged"), "{err}");
    let err = serde_json::from_str::<LayoutSpec>(
        r#"{"extra_mounts": [{"source": "/a", "target": "/b", "propagation": "shared"}]}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("propagation"), "{err}");
    let err = serde_json::from_str::<LayoutSpec>(r#"{"root": "writable"}"#).unwrap_err();
    assert!(err.to_string().contains("writable"), "{err}");
}

#[test]
fn to_spec_builds_the_same_layout_again() {
    let layouts = [
        Layout::default(),
        LayoutSpec {
            container_root: Some("/job-root".into()),
            shared: Some(vec!["tools".into()]),
            root: Some(RootKind::Scratch),
            root_size_bytes: Some(4096),
            extra_mounts: vec![
                ExtraMountSpec {
                    source: "/opt/data".into(),
                    target: "/data".into(),
                    read_only: false,
                },
                extra("/opt/models", "/models"),
            ],
            require: vec![Hardening::NoExec, Hardening::NoDev],
        }
        .build()
        .unwrap(),
    ];
    for layout in layouts {
        let spec = layout.to_spec();
        assert_eq!(spec.build().unwrap(), layout, "{spec:?}");
        assert_eq!(spec.build().unwrap().to_spec(), spec);
    }
}
