//! Criterion benchmarks: name parsing and full plan building.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mount_plan::{HostPath, JobName, Layout};

fn bench(c: &mut Criterion) {
    let layout = Layout::default();
    let ws = HostPath::parse("/srv/site/workspace").unwrap();
    c.bench_function("parse_job_name/uuid", |b| {
        b.iter(|| JobName::parse(black_box("3f2c1a9e-8b4d-4e6f-9a7b-1c2d3e4f5a6b")).unwrap())
    });
    c.bench_function("parse_job_name/refused_comma", |b| {
        b.iter(|| JobName::parse(black_box("job1,source=/,readonly=false")).unwrap_err())
    });
    c.bench_function("layout_job/reserved_check", |b| {
        b.iter(|| layout.job(black_box("train-2026.11")).unwrap())
    });
    let job = layout.job("train-2026.11").unwrap();
    c.bench_function("plan/default_layout", |b| {
        b.iter(|| layout.plan(black_box(&ws), black_box(&job)).unwrap())
    });
    let plan = layout.plan(&ws, &job).unwrap();
    c.bench_function("render/docker_args", |b| b.iter(|| black_box(&plan).docker_args()));
    c.bench_function("render/oci_mounts", |b| b.iter(|| black_box(&plan).oci_mounts()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
