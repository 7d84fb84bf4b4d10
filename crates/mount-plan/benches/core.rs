//! Criterion benchmarks: name parsing, full plan building and rendering.
//!
//! Run: `cargo bench -p mount-plan --bench core`. Figures and machine: `docs/perf.md`.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mount_plan::{ExtraMountSpec, HostPath, JobName, Layout, LayoutSpec, RootKind};

fn names(c: &mut Criterion) {
    let layout = Layout::default();
    c.bench_function("parse_job_name/uuid", |b| {
        b.iter(|| JobName::parse(black_box("3f2c1a9e-8b4d-4e6f-9a7b-1c2d3e4f5a6b")).unwrap())
    });
    c.bench_function("parse_job_name/refused_comma", |b| {
        b.iter(|| JobName::parse(black_box("job1,source=/,readonly=false")).unwrap_err())
    });
    c.bench_function("parse_job_name/refused_cyrillic", |b| {
        b.iter(|| JobName::parse(black_box("j\u{43e}b-1")).unwrap_err())
    });
    // The full guard a launcher calls: grammar plus the case-insensitive reserved check.
    c.bench_function("layout_job/reserved_check", |b| {
        b.iter(|| layout.job(black_box("train-2026.11")).unwrap())
    });
    c.bench_function("layout_job/refused_reserved", |b| {
        b.iter(|| layout.job(black_box("Startup")).unwrap_err())
    });
}

fn plans(c: &mut Criterion) {
    let layout = Layout::default();
    let ws = HostPath::parse("/srv/site/workspace").unwrap();
    let job = layout.job("train-2026.11").unwrap();
    c.bench_function("plan/default_layout", |b| {
        b.iter(|| layout.plan(black_box(&ws), black_box(&job)).unwrap())
    });
    // Name parse, workspace parse and plan: everything from strings to a plan.
    c.bench_function("plan/from_strings", |b| {
        b.iter(|| {
            let ws = HostPath::parse(black_box("/srv/site/workspace")).unwrap();
            let job = layout.job(black_box("train-2026.11")).unwrap();
            layout.plan(&ws, &job).unwrap()
        })
    });
    let spec = LayoutSpec {
        container_root: Some("/var/tmp/nvflare/workspace".into()),
        shared: Some(vec!["startup".into(), "local".into(), "models".into()]),
        root: Some(RootKind::Scratch),
        root_size_bytes: Some(64 << 20),
        extra_mounts: vec![
            ExtraMountSpec {
                source: "/datasets/study-1/train".into(),
                target: "/data/study-1/train".into(),
                read_only: true,
            },
            ExtraMountSpec {
                source: "/datasets/study-1/eval".into(),
                target: "/data/study-1/eval".into(),
                read_only: true,
            },
        ],
        require: Vec::new(),
    };
    c.bench_function("layout/build_with_extras", |b| {
        b.iter(|| black_box(&spec).build().unwrap())
    });
    let rich = spec.build().unwrap();
    c.bench_function("plan/scratch_3_shared_2_extras", |b| {
        b.iter(|| rich.plan(black_box(&ws), black_box(&job)).unwrap())
    });
    let plan = layout.plan(&ws, &job).unwrap();
    c.bench_function("render/docker_args", |b| {
        b.iter(|| black_box(&plan).docker_args())
    });
    c.bench_function("render/podman_args", |b| {
        b.iter(|| black_box(&plan).podman_args())
    });
    c.bench_function("render/oci_mounts", |b| {
        b.iter(|| black_box(&plan).oci_mounts())
    });
}

criterion_group!(benches, names, plans);
criterion_main!(benches);
