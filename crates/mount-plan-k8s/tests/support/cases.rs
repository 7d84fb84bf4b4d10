//! The layouts and options the golden files are rendered from (shared by the golden and the
//! Pod Security Standards tests).
#![allow(dead_code)]

use std::collections::BTreeMap;

use mount_plan::{ExtraMountSpec, HostPath, LayoutSpec, MountPlan, RootKind};
use mount_plan_k8s::{FeatureGate, JobContainer, K8sVersion, PodOptions, Target, Volumes};

pub fn plan(spec: LayoutSpec) -> MountPlan {
    let layout = spec.build().unwrap();
    layout
        .plan(
            &HostPath::parse("/srv/site").unwrap(),
            &layout.job("job-1").unwrap(),
        )
        .unwrap()
}

pub fn claims() -> Volumes {
    Volumes::Claims {
        workspace: "site-ws".parse().unwrap(),
        extra: BTreeMap::new(),
    }
}

fn options(target: Target, volumes: Volumes) -> PodOptions {
    PodOptions {
        target,
        volumes,
        ..PodOptions::with_claim("site-ws".parse().unwrap())
    }
}

/// The two alpha gates of 1.37.
const GATES_137: [FeatureGate; 2] = [
    FeatureGate::VolumeBindMountOptions,
    FeatureGate::EmptyDirVolumeMode,
];

fn target(version: &str, gates: &[FeatureGate]) -> Target {
    Target::new(version.parse().unwrap(), gates.iter().copied()).unwrap()
}

fn extras() -> LayoutSpec {
    LayoutSpec {
        extra_mounts: vec![
            ExtraMountSpec {
                source: "/datasets/mnist".into(),
                target: "/data/mnist".into(),
                read_only: true,
            },
            ExtraMountSpec {
                source: "/scratch/cache".into(),
                target: "/cache".into(),
                read_only: false,
            },
        ],
        ..LayoutSpec::default()
    }
}

/// (file name, plan, options): every golden case.
pub fn cases() -> Vec<(String, MountPlan, PodOptions)> {
    let mut out = Vec::new();
    for v in K8sVersion::all() {
        out.push((
            format!("default-{v}.json"),
            plan(LayoutSpec::default()),
            options(Target::new(v, []).unwrap(), claims()),
        ));
    }
    for v in K8sVersion::all() {
        let mut o = options(Target::new(v, []).unwrap(), claims());
        o.gate = Some(mount_plan_k8s::PodGate {
            image: "registry.example/mount-plan-gate:0.1".into(),
            command: [
                "/.mount-plan/gate",
                "v2",
                "0123456789abcdef",
                "tmpfs",
                "/workspace",
                "555|777",
                "ro",
                "bind",
                "/workspace/startup",
                "same:w",
                "11",
                "ro",
                "norec",
                "cwd",
                "/workspace/job-1",
                "--",
                "python",
                "train.py",
            ]
            .map(String::from)
            .to_vec(),
        });
        out.push((format!("gate-{v}.json"), plan(LayoutSpec::default()), o));
    }
    out.push((
        "gates-1.37.json".into(),
        plan(LayoutSpec::default()),
        options(target("1.37", &GATES_137), claims()),
    ));
    out.push((
        "gate-rro-1.30.json".into(),
        plan(LayoutSpec::default()),
        options(
            target("1.30", &[FeatureGate::RecursiveReadOnlyMounts]),
            claims(),
        ),
    ));
    let scratch = LayoutSpec {
        container_root: Some("/var/tmp/nvflare/workspace".into()),
        shared: Some(vec!["startup".into()]),
        root: Some(RootKind::Scratch),
        root_size_bytes: Some(64 << 20),
        ..LayoutSpec::default()
    };
    out.push((
        "scratch.json".into(),
        plan(scratch.clone()),
        options(Target::default(), claims()),
    ));
    out.push((
        "scratch-gates-1.37.json".into(),
        plan(scratch),
        options(target("1.37", &GATES_137), claims()),
    ));
    out.push((
        "extra-claims.json".into(),
        plan(extras()),
        options(
            Target::default(),
            Volumes::Claims {
                workspace: "site-ws".parse().unwrap(),
                extra: BTreeMap::from([
                    ("/datasets/mnist".into(), "mnist".parse().unwrap()),
                    ("/scratch/cache".into(), "cache".parse().unwrap()),
                ]),
            },
        ),
    ));
    out.push((
        "extra-host-path.json".into(),
        plan(extras()),
        options(Target::default(), Volumes::HostPath),
    ));
    out.push((
        "no-shared.json".into(),
        plan(LayoutSpec {
            shared: Some(vec![]),
            ..LayoutSpec::default()
        }),
        options(Target::default(), claims()),
    ));
    let mut launch = options(Target::default(), claims());
    launch.name = Some("mount-plan-job-1-0123456789".into());
    launch.container = JobContainer {
        image: Some("registry.example/trainer:1.0".into()),
        args: vec!["python".into(), "train.py".into(), "--epochs=3".into()],
        env: vec![("MODE".into(), "train".into())],
        user: Some("1000:1000".parse().unwrap()),
        ..JobContainer::default()
    };
    launch.metadata = BTreeMap::from([
        ("io.mount-plan.managed".into(), "1".into()),
        ("io.mount-plan.job".into(), "job-1".into()),
        (
            "io.mount-plan.plan-digest".into(),
            "sha256:0000000000000000000000000000000000000000000000000000000000000000".into(),
        ),
        ("io.mount-plan.pid-ns".into(), "pid:[4026531836]".into()),
    ]);
    out.push(("launch.json".into(), plan(LayoutSpec::default()), launch));
    out
}
