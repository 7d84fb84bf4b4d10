//! The same layout rendered four ways (OCI mounts, `docker run` and `podman run` arguments,
//! the Pod) agrees on every target, its read-only flag and the working directory. Layouts come
//! from the core's property-test material (`mount-plan/tests/support/invariants.rs`: good and
//! hostile path components), through its byte-driven generator; inputs that build no plan are
//! skipped.

#[path = "../../mount-plan/tests/support/invariants.rs"]
mod invariants;

use std::collections::BTreeMap;

use invariants::{csv_fields, plan_input_from_bytes, rebuild, Cli};
use mount_plan::{BindRole, MountPlan, RootKind};
use mount_plan_k8s::{render_pod, K8sVersion, PodOptions, Target, Volumes};
use proptest::prelude::*;

/// (target, read-only), sorted by target.
type View = Vec<(String, bool)>;

fn oci(plan: &MountPlan) -> View {
    let mut v: View = plan
        .oci_mounts()
        .into_iter()
        .map(|m| {
            let ro = m.options.iter().any(|o| o == "ro");
            assert_ne!(ro, m.options.iter().any(|o| o == "rw"));
            (m.destination, ro)
        })
        .collect();
    v.sort();
    v
}

/// The mounts and `--workdir` of `docker run` / `podman run` arguments, parsed back.
fn cli(cli: Cli, args: &[String]) -> (View, String) {
    let mut v = Vec::new();
    let mut workdir = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().expect("every flag has a value");
        match flag.as_str() {
            "--mount" => {
                let m = rebuild(cli, &csv_fields(value));
                v.push((m.destination, m.readonly));
            }
            "--workdir" => workdir = Some(value.clone()),
            _ => {}
        }
    }
    v.sort();
    (v, workdir.expect("a --workdir"))
}

fn pod(plan: &MountPlan, options: &PodOptions) -> (View, String) {
    let pod = render_pod(plan, options).unwrap();
    let job = &pod.spec.unwrap().containers[0];
    let mut v: View = job
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.clone(), m.read_only == Some(true)))
        .collect();
    v.sort();
    (v, job.working_dir.clone().expect("a workingDir"))
}

fn options(plan: &MountPlan, host_path: bool, minor: u8) -> PodOptions {
    let extra: BTreeMap<String, _> = plan
        .binds()
        .filter(|b| b.role() == BindRole::Extra)
        .enumerate()
        .map(|(i, b)| (b.source().to_string(), format!("x{i}").parse().unwrap()))
        .collect();
    let version = K8sVersion::all().nth(usize::from(minor) % 8).unwrap();
    PodOptions {
        target: Target::new(version, []).unwrap(),
        volumes: if host_path {
            Volumes::HostPath
        } else {
            Volumes::Claims {
                workspace: "ws".parse().unwrap(),
                extra,
            }
        },
        ..PodOptions::with_claim("ws".parse().unwrap())
    }
}

fn build(input: &invariants::PlanInput) -> Option<MountPlan> {
    let layout = input.spec.build().ok()?;
    let workspace = mount_plan::HostPath::parse(&input.workspace).ok()?;
    layout.plan(&workspace, &layout.job(&input.job).ok()?).ok()
}

/// Legal path components, some of them special to mount-option syntax.
const PARTS: &[&str] = &[
    "srv", "site", "data", "job-1", "Z", "x.y", "a,b", "a b", "a=b", "a\"b", "a:b",
];

/// Valid layouts only: shared names, both root policies, extra mounts read-only or not.
fn valid_input() -> impl Strategy<Value = invariants::PlanInput> {
    let path = prop::collection::vec(prop::sample::select(PARTS), 1..4).prop_map(|v| v.join("/"));
    (
        path.clone(),
        prop::sample::select(&["job-1", "train_2", "J", "a..b", "3f2c"][..]),
        prop::option::of(path),
        prop::option::of(prop::sample::subsequence(
            vec!["startup", "local", "data", "models"],
            0..4,
        )),
        any::<bool>(),
        4096u64..(1 << 40),
        prop::collection::vec((prop::sample::select(PARTS), any::<bool>()), 0..3),
    )
        .prop_map(
            |(ws, job, root, shared, scratch, size, extras)| invariants::PlanInput {
                workspace: format!("/w/{ws}"),
                job: job.to_owned(),
                spec: mount_plan::LayoutSpec {
                    container_root: root.map(|r| format!("/r/{r}")),
                    shared: shared.map(|s| s.into_iter().map(str::to_owned).collect()),
                    root: Some(if scratch {
                        RootKind::Scratch
                    } else {
                        RootKind::ReadOnly
                    }),
                    root_size_bytes: Some(size),
                    extra_mounts: extras
                        .into_iter()
                        .enumerate()
                        .map(|(i, (p, read_only))| mount_plan::ExtraMountSpec {
                            source: format!("/mnt/{i}/{p}"),
                            target: format!("/opt/{i}/{p}"),
                            read_only,
                        })
                        .collect(),
                    require: Vec::new(),
                },
            },
        )
}

fn agree(plan: &MountPlan, host_path: bool, minor: u8) -> Result<(), TestCaseError> {
    let oci = oci(plan);
    let (docker, docker_wd) = cli(Cli::Docker, &plan.docker_args());
    let (podman, podman_wd) = cli(Cli::Podman, &plan.podman_args());
    let (pod, pod_wd) = pod(plan, &options(plan, host_path, minor));
    prop_assert_eq!(&oci, &docker);
    prop_assert_eq!(&oci, &podman);
    prop_assert_eq!(&oci, &pod);
    let workdir = plan.workdir().to_string();
    prop_assert_eq!(&docker_wd, &workdir);
    prop_assert_eq!(&podman_wd, &workdir);
    prop_assert_eq!(&pod_wd, &workdir);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Valid layouts: every input builds a plan.
    #[test]
    fn oci_docker_podman_and_the_pod_agree(
        input in valid_input(),
        host_path in any::<bool>(),
        minor in any::<u8>(),
    ) {
        let plan = build(&input).expect("valid material builds a plan");
        agree(&plan, host_path, minor)?;
    }

    /// The core's hostile material: the inputs that still build a plan.
    #[test]
    fn they_agree_on_hostile_material_too(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        host_path in any::<bool>(),
        minor in any::<u8>(),
    ) {
        let Some(plan) = plan_input_from_bytes(&bytes).ok().and_then(|i| build(&i)) else {
            return Ok(());
        };
        agree(&plan, host_path, minor)?;
    }
}

/// The valid generator reaches plans with shared directories, extra mounts and both root
/// policies (so the property is not vacuous).
#[test]
fn the_generator_reaches_rich_plans() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut shared, mut extra, mut scratch) = (0, 0, 0);
    for _ in 0..200 {
        let input = valid_input().new_tree(&mut runner).unwrap().current();
        let plan = build(&input).expect("valid material builds a plan");
        shared += usize::from(plan.binds().any(|b| b.role() == BindRole::Shared));
        extra += usize::from(plan.binds().any(|b| b.role() == BindRole::Extra));
        scratch += usize::from(!plan.root_tmpfs().read_only());
    }
    assert!(
        shared > 50 && extra > 50 && scratch > 50,
        "{shared} {extra} {scratch}"
    );
}
