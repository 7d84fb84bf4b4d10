//! Table tests of plans and their renderings.

#[path = "support/invariants.rs"]
mod invariants;

use mount_plan::{
    BindRole, ExtraMountSpec, HostPath, JobName, Layout, LayoutSpec, Mount, MountFlags, PlanError,
    Propagation, RootKind, MAX_NAME_LEN, MAX_PATH_LEN,
};

fn ws(path: &str) -> HostPath {
    HostPath::parse(path).unwrap()
}

fn job(name: &str) -> JobName {
    JobName::parse(name).unwrap()
}

/// A compact view of a mount: (kind, source, target, read-only, flags).
fn view(m: &Mount) -> (&'static str, String, String, bool, Vec<&'static str>) {
    match m {
        Mount::Tmpfs(t) => (
            "tmpfs",
            String::new(),
            t.target().to_string(),
            t.read_only(),
            t.flags().words().collect(),
        ),
        Mount::Bind(b) => (
            "bind",
            b.source().to_string(),
            b.target().to_string(),
            b.read_only(),
            b.flags().words().collect(),
        ),
    }
}

#[test]
fn default_plan_is_exactly_the_contract() {
    let layout = Layout::default();
    let plan = layout.plan(&ws("/srv/site"), &job("job-1")).unwrap();
    let hardened = vec!["nosuid", "nodev", "noexec"];
    let got: Vec<_> = plan.mounts().iter().map(view).collect();
    assert_eq!(
        got,
        [
            (
                "tmpfs",
                String::new(),
                "/workspace".into(),
                true,
                hardened.clone()
            ),
            (
                "bind",
                "/srv/site/startup".into(),
                "/workspace/startup".into(),
                true,
                hardened.clone()
            ),
            (
                "bind",
                "/srv/site/local".into(),
                "/workspace/local".into(),
                true,
                hardened
            ),
            (
                "bind",
                "/srv/site/job-1".into(),
                "/workspace/job-1".into(),
                false,
                vec!["nosuid", "nodev"]
            ),
        ]
    );
    let tmpfs = plan.root_tmpfs();
    assert_eq!((tmpfs.mode(), tmpfs.size_bytes()), (0o555, 1 << 20));
    assert_eq!(plan.workdir().as_str(), "/workspace/job-1");
    assert_eq!(plan.job().as_str(), "job-1");
    assert_eq!(plan.workspace().as_str(), "/srv/site");
    assert_eq!(plan.container_root().as_str(), "/workspace");
    let roles: Vec<BindRole> = plan.binds().map(|b| b.role()).collect();
    assert_eq!(roles, [BindRole::Shared, BindRole::Shared, BindRole::Job]);
    for b in plan.binds() {
        assert!(!b.recursive());
        assert_eq!(b.propagation(), Propagation::Private);
    }
    invariants::check_plan(&layout, plan.workspace(), plan.job(), &plan);
    invariants::check_render(&plan);
}

#[test]
fn default_plan_renders_exactly() {
    let plan = Layout::default()
        .plan(&ws("/srv/site"), &job("job-1"))
        .unwrap();
    assert_eq!(
        plan.docker_args(),
        [
            "--mount",
            r#""type=tmpfs","destination=/workspace","readonly=true","tmpfs-mode=0555","tmpfs-size=1048576""#,
            "--mount",
            r#""type=bind","source=/srv/site/startup","destination=/workspace/startup","readonly=true","bind-propagation=private","bind-nonrecursive=true""#,
            "--mount",
            r#""type=bind","source=/srv/site/local","destination=/workspace/local","readonly=true","bind-propagation=private","bind-nonrecursive=true""#,
            "--mount",
            r#""type=bind","source=/srv/site/job-1","destination=/workspace/job-1","bind-propagation=private","bind-nonrecursive=true""#,
            "--workdir",
            "/workspace/job-1",
            "--security-opt",
            "no-new-privileges",
            "--cap-drop",
            "ALL",
        ]
    );
    let podman = plan.podman_args();
    assert_eq!(
        podman[1],
        r#""type=tmpfs","destination=/workspace","ro=true","tmpfs-mode=0555","tmpfs-size=1048576","notmpcopyup","nosuid","nodev","noexec""#
    );
    assert_eq!(
        podman[7],
        r#""type=bind","source=/srv/site/job-1","destination=/workspace/job-1","ro=false","bind-propagation=private","bind-nonrecursive","nosuid","nodev""#
    );
    assert_eq!(
        podman[8..],
        ["--workdir", "/workspace/job-1", "--cap-drop", "ALL"]
    );
    let oci = plan.oci_mounts();
    assert_eq!(
        oci[0].options,
        [
            "ro",
            "nosuid",
            "nodev",
            "noexec",
            "mode=0555",
            "size=1048576"
        ]
    );
    assert_eq!(oci[3].options, ["bind", "rw", "nosuid", "nodev", "private"]);
    assert_eq!(oci[3].source, "/srv/site/job-1");
}

#[test]
fn scratch_root() {
    let layout = LayoutSpec {
        root: Some(RootKind::Scratch),
        root_size_bytes: Some(64 << 20),
        shared: Some(vec!["certs".into()]),
        container_root: Some("/var/tmp/nvflare/workspace".into()),
        ..LayoutSpec::default()
    }
    .build()
    .unwrap();
    let plan = layout.plan(&ws("/srv/site"), &job("job-1")).unwrap();
    let tmpfs = plan.root_tmpfs();
    assert!(!tmpfs.read_only());
    assert_eq!((tmpfs.mode(), tmpfs.size_bytes()), (0o1777, 64 << 20));
    assert_eq!(tmpfs.flags(), MountFlags::HARDENED);
    assert_eq!(plan.workdir().as_str(), "/var/tmp/nvflare/workspace/job-1");
    assert_eq!(plan.binds().count(), 2);
    invariants::check_plan(&layout, plan.workspace(), plan.job(), &plan);
    invariants::check_render(&plan);
}

#[test]
fn reserved_jobs_are_refused_by_plan_too() {
    let layout = Layout::default();
    for name in ["startup", "Startup", "LOCAL"] {
        let err = layout.plan(&ws("/srv/site"), &job(name)).unwrap_err();
        assert_eq!(err.rule(), "reserved");
        assert!(err.to_string().contains("`reserved`"), "{err}");
        assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
    }
}

#[test]
fn the_injection_name_never_reaches_a_plan() {
    let err = Layout::default()
        .job("job1,source=/,readonly=false")
        .unwrap_err();
    assert_eq!(err.rule(), "bad-char");
}

#[test]
fn extra_mounts_may_not_overlap_the_workspace() {
    let spec = |source: &str| LayoutSpec {
        extra_mounts: vec![ExtraMountSpec {
            source: source.into(),
            target: "/data".into(),
            read_only: true,
        }],
        ..LayoutSpec::default()
    };
    for source in [
        "/srv/site",
        "/srv/site/job-2",
        "/srv/site/startup",
        "/srv",
        "/srv/site/a/b",
    ] {
        let err = spec(source)
            .build()
            .unwrap()
            .plan(&ws("/srv/site"), &job("job-1"))
            .unwrap_err();
        assert_eq!(err.rule(), "extra-overlaps-workspace", "{source:?}");
        assert_eq!(err.value(), source);
        assert_eq!(
            err,
            PlanError::ExtraOverlapsWorkspace {
                source_path: source.into(),
                workspace: "/srv/site".into()
            }
        );
        let message = err.to_string();
        assert!(message.contains("`extra-overlaps-workspace`"), "{message}");
        assert!(message.contains(&format!("{source:?}")), "{message}");
        assert!(message.contains("\"/srv/site\""), "{message}");
    }
    for source in ["/srv/site-2", "/srv/sit", "/srv/site2/x", "/data/set"] {
        let layout = spec(source).build().unwrap();
        let plan = layout.plan(&ws("/srv/site"), &job("job-1")).unwrap();
        let extra = plan.binds().last().unwrap();
        assert_eq!(extra.role(), BindRole::Extra);
        assert_eq!(extra.source().as_str(), source);
        assert_eq!(extra.target().as_str(), "/data");
        assert!(extra.read_only());
        assert_eq!(extra.flags(), MountFlags::HARDENED);
        invariants::check_plan(&layout, plan.workspace(), plan.job(), &plan);
    }
}

#[test]
fn writable_extra_mounts_keep_nosuid_nodev() {
    let layout = LayoutSpec {
        extra_mounts: vec![ExtraMountSpec {
            source: "/scratch/out".into(),
            target: "/out".into(),
            read_only: false,
        }],
        ..LayoutSpec::default()
    }
    .build()
    .unwrap();
    let plan = layout.plan(&ws("/srv/site"), &job("job-1")).unwrap();
    let extra = plan.binds().last().unwrap();
    assert!(!extra.read_only());
    assert_eq!(extra.flags(), MountFlags::NO_SUID_DEV);
    // The job bind is still the only writable workspace bind.
    assert_eq!(
        plan.binds()
            .filter(|b| !b.read_only() && b.role() != BindRole::Extra)
            .count(),
        1
    );
    invariants::check_plan(&layout, plan.workspace(), plan.job(), &plan);
    invariants::check_render(&plan);
}

#[test]
fn joined_paths_over_the_limit_are_refused() {
    let name = job(&"j".repeat(MAX_NAME_LEN));
    let fits = format!("/{}", "w".repeat(MAX_PATH_LEN - MAX_NAME_LEN - 2));
    let layout = LayoutSpec {
        shared: Some(vec![]),
        ..LayoutSpec::default()
    }
    .build()
    .unwrap();
    let plan = layout.plan(&ws(&fits), &name).unwrap();
    assert_eq!(plan.job_bind().source().as_str().len(), MAX_PATH_LEN);

    let over = format!("{fits}w");
    let err = layout.plan(&ws(&over), &name).unwrap_err();
    assert_eq!(err.rule(), "mount-path-too-long");
    assert_eq!(err.value(), format!("{over}/{name}"));
    let message = err.to_string();
    assert!(message.contains("`mount-path-too-long`"), "{message}");
    assert!(message.contains("`path-too-long`"), "{message}");
    assert!(
        message.contains(&format!("{:?}", format!("{over}/{name}"))),
        "{message}"
    );

    // The same through a long container root: R/J would pass the limit.
    let long_root = LayoutSpec {
        container_root: Some(over.clone()),
        shared: Some(vec![]),
        ..LayoutSpec::default()
    }
    .build()
    .unwrap();
    let err = long_root.plan(&ws("/srv/site"), &name).unwrap_err();
    assert_eq!(err.rule(), "mount-path-too-long");
}

#[test]
fn hostile_workspaces_render_to_the_same_mounts() {
    for w in [
        "/srv/a,b",
        "/srv/job1,source=/,readonly=false",
        "/srv/x\",\"readonly=false",
        "/srv/\"\"",
        "/srv/a=b/c:d",
        "/srv/with space/and  two",
        "/srv/\u{430}/\u{ff4a}",
        "/srv/'single'",
        "/srv/semi;colon",
    ] {
        let layout = Layout::default();
        let plan = layout.plan(&ws(w), &job("job-1")).unwrap();
        invariants::check_plan(&layout, plan.workspace(), plan.job(), &plan);
        invariants::check_render(&plan);
        // The job bind's source reads back whole.
        let fields = invariants::csv_fields(&plan.docker_args()[7]);
        assert_eq!(fields[1], format!("source={w}/job-1"), "{w:?}");
        assert_eq!(
            fields.iter().filter(|f| f.starts_with("source=")).count(),
            1
        );
        assert!(!fields.iter().any(|f| f == "readonly=false"), "{fields:?}");
    }
}

#[test]
fn unquoted_rendering_would_have_been_injectable() {
    // Show the round-trip check bites: the same fields joined without quoting let a comma in
    // the workspace add keys.
    let plan = Layout::default()
        .plan(&ws("/srv/x,source=/,readonly=false"), &job("job-1"))
        .unwrap();
    let fields = &plan.docker_mount_fields()[3];
    let naive = fields.join(",");
    let parsed = invariants::csv_fields(&naive);
    assert_ne!(&parsed, fields);
    assert!(parsed.iter().filter(|f| f.starts_with("source=")).count() > 1);
}

#[test]
fn plans_are_deterministic() {
    let a = Layout::default()
        .plan(&ws("/srv/site"), &job("job-1"))
        .unwrap();
    let b = Layout::default()
        .plan(&ws("/srv/site"), &job("job-1"))
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.docker_args(), b.docker_args());
    let other = Layout::default()
        .plan(&ws("/srv/site"), &job("job-2"))
        .unwrap();
    assert_ne!(a, other);
}

#[cfg(feature = "serde")]
#[test]
fn plan_serialises_with_its_version() {
    let plan = Layout::default()
        .plan(&ws("/srv/site"), &job("job-1"))
        .unwrap();
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["version"], mount_plan::PLAN_FORMAT_VERSION);
    assert_eq!(json["workdir"], "/workspace/job-1");
    assert_eq!(json["mounts"][0]["kind"], "tmpfs");
    assert_eq!(json["mounts"][0]["mode"], "0555");
    assert_eq!(json["mounts"][3]["role"], "job");
    assert_eq!(json["mounts"][3]["read_only"], false);
    assert_eq!(json["mounts"][3]["recursive"], false);
    assert_eq!(json["mounts"].as_array().unwrap().len(), 4);
}
