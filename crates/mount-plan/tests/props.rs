//! Property tests. Inputs are built from path components: valid ones and hostile ones (`..`,
//! `.`, `,`, `"`, `=`, `:`, spaces, control characters, look-alike Unicode, long runs).
//! The checks live in `support/invariants.rs`, shared with the fuzz targets.
//!
//! Failures are persisted to `proptest-regressions/props.txt` (committed when it exists) and
//! replayed first on every run.

#[path = "support/invariants.rs"]
mod invariants;

use invariants::{CASE_TOYS, GOOD, HOSTILE, SIZES};
use mount_plan::{
    ContainerPath, ExtraMountSpec, HostPath, JobName, Layout, LayoutSpec, RootKind,
    DEFAULT_CONTAINER_ROOT,
};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::FileFailurePersistence;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/props.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// A shared name with its ASCII case flipped by the bits of `mask`.
fn flip_case(base: &str, mask: u32) -> String {
    base.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 32) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => select(GOOD).prop_map(str::to_owned),
        4 => select(HOSTILE).prop_map(str::to_owned),
        1 => (select(GOOD), select(HOSTILE)).prop_map(|(g, h)| format!("{g}{h}")),
        1 => (select(CASE_TOYS), any::<u32>()).prop_map(|(b, m)| flip_case(b, m)),
        1 => "[a-zA-Z0-9._,:=\" \u{430}\u{ff4a}-]{1,12}",
        1 => (100usize..2100).prop_map(|n| "l".repeat(n)),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => component(),
        2 => prop::collection::vec(component(), 1..4).prop_map(|v| v.concat()),
        1 => (select(GOOD), 1usize..140).prop_map(|(g, n)| g.repeat(n)),
    ]
}

/// Mostly a good component.
fn tame_component() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(GOOD).prop_map(str::to_owned),
        1 => component(),
    ]
}

/// A normal absolute path of about `n` bytes (3900..4200: around the join limit).
fn long_path() -> impl Strategy<Value = String> {
    (3900usize..4200).prop_map(invariants::long_path)
}

/// A path, mostly valid.
fn tame_path() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(tame_component(), 1..4).prop_map(|v| format!("/{}", v.join("/"))),
        2 => path(),
        1 => long_path(),
    ]
}

/// A path from components; shape 0..=4 makes it relative, `/.../`, `//...`, `/` or empty.
fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => raw_path(),
        1 => long_path(),
    ]
}

fn raw_path() -> impl Strategy<Value = String> {
    (prop::collection::vec(component(), 1..5), 0u8..16).prop_map(|(parts, shape)| {
        let body = parts.join("/");
        match shape {
            0 => body,
            1 => format!("/{body}/"),
            2 => format!("//{body}"),
            3 => "/".to_owned(),
            4 => String::new(),
            _ => format!("/{body}"),
        }
    })
}

fn container_path() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => tame_path(),
        1 => (
            select(&["/proc", "/sys", "/dev", "/procfoo", "/devices", "/system"][..]),
            prop::option::of(component()),
        )
            .prop_map(|(p, rest)| match rest {
                Some(c) => format!("{p}/{c}"),
                None => p.to_owned(),
            }),
    ]
}

/// A path related to `base` by `how`: itself, its parent, a child, a prefix sibling.
fn near(base: &str, how: u8, comp: &str) -> String {
    match how % 5 {
        0 => base.to_owned(),
        1 => match std::path::Path::new(base).parent().and_then(|p| p.to_str()) {
            Some(parent) if parent != "/" && !parent.is_empty() => parent.to_owned(),
            _ => format!("{base}/{comp}"),
        },
        2 => format!("{base}/{comp}"),
        3 => format!("{base}{comp}"),
        _ => format!("{base}-x"),
    }
}

#[derive(Debug, Clone)]
struct RawExtra {
    source_near: Option<u8>,
    source: String,
    target_near: Option<u8>,
    target: String,
    comp: String,
    read_only: bool,
}

fn raw_extra() -> impl Strategy<Value = RawExtra> {
    (
        prop::option::weighted(0.3, any::<u8>()),
        tame_path(),
        prop::option::weighted(0.3, any::<u8>()),
        container_path(),
        component(),
        any::<bool>(),
    )
        .prop_map(
            |(source_near, source, target_near, target, comp, read_only)| RawExtra {
                source_near,
                source,
                target_near,
                target,
                comp,
                read_only,
            },
        )
}

fn plan_input() -> impl Strategy<Value = invariants::PlanInput> {
    (
        tame_path(),
        prop_oneof![3 => tame_component(), 1 => name()],
        prop::option::weighted(0.5, container_path()),
        prop::option::weighted(
            0.5,
            prop::collection::vec(prop_oneof![4 => tame_component(), 1 => name()], 0..4),
        ),
        select(&[None, Some(RootKind::ReadOnly), Some(RootKind::Scratch)][..]),
        prop_oneof![
            2 => Just(None),
            1 => any::<u64>().prop_map(Some),
            2 => select(SIZES).prop_map(Some),
        ],
        prop::collection::vec(raw_extra(), 0..3),
    )
        .prop_map(
            |(workspace, job, container_root, shared, root, root_size_bytes, raw)| {
                let root_text = container_root
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CONTAINER_ROOT.to_owned());
                let extra_mounts = raw
                    .into_iter()
                    .map(|r| ExtraMountSpec {
                        source: match r.source_near {
                            Some(how) => near(&workspace, how, &r.comp),
                            None => r.source,
                        },
                        target: match r.target_near {
                            Some(how) => near(&root_text, how, &r.comp),
                            None => r.target,
                        },
                        read_only: r.read_only,
                    })
                    .collect();
                invariants::PlanInput {
                    workspace,
                    job,
                    spec: LayoutSpec {
                        container_root,
                        shared,
                        root,
                        root_size_bytes,
                        extra_mounts,
                        require: Vec::new(),
                    },
                }
            },
        )
}

/// Only valid material: every such input must build a plan.
fn valid_input() -> impl Strategy<Value = invariants::PlanInput> {
    let good_name = select(GOOD)
        .prop_filter("not a default shared name", |g| {
            !["startup", "local"].contains(&g.to_ascii_lowercase().as_str())
        })
        .prop_map(str::to_owned);
    let good_path =
        prop::collection::vec(select(GOOD), 1..4).prop_map(|v| format!("/{}", v.join("/")));
    (
        good_path.clone(),
        good_name,
        prop::option::of(good_path),
        any::<bool>(),
        4096u64..u64::MAX,
        prop::collection::vec((select(GOOD), select(GOOD), any::<bool>()), 0..3),
    )
        .prop_map(|(workspace, job, container_root, scratch, size, extras)| {
            let extra_mounts = extras
                .iter()
                .enumerate()
                .map(|(i, (s, t, ro))| ExtraMountSpec {
                    source: format!("/mnt/{s}"),
                    target: format!("/opt/{i}/{t}"),
                    read_only: *ro,
                })
                .collect();
            invariants::PlanInput {
                // Keep W away from the extra sources under /mnt.
                workspace: format!("/w{workspace}"),
                job,
                spec: LayoutSpec {
                    // Keep R away from the extra targets under /opt.
                    container_root: container_root.map(|r| format!("/r{r}")),
                    shared: None,
                    root: Some(if scratch {
                        RootKind::Scratch
                    } else {
                        RootKind::ReadOnly
                    }),
                    root_size_bytes: Some(size),
                    extra_mounts,
                    require: Vec::new(),
                },
            }
        })
}

/// Paths whose components are legal but special to mount-option syntax.
fn csv_hostile_path() -> impl Strategy<Value = String> {
    let comp = prop_oneof![
        select(GOOD).prop_map(str::to_owned),
        select(
            &[
                ",",
                "\"",
                "=",
                ":",
                " ",
                "a,b",
                "\"\"",
                "x\",\"readonly=false",
                "\u{430}"
            ][..]
        )
        .prop_map(str::to_owned),
        Just("job1,source=/,readonly=false".to_owned()),
        "[^/\u{0}-\u{1f}\u{7f}-\u{9f}]{1,10}".prop_filter("not . or ..", |s| s != "." && s != ".."),
    ];
    prop::collection::vec(comp, 1..4).prop_map(|v| format!("/{}", v.join("/")))
}

proptest! {
    #![proptest_config(config(2048))]

    /// Accepted names are one normal component, ASCII, free of option-syntax bytes, and
    /// reserved in every letter case; refusals match the grammar rule by rule.
    #[test]
    fn names_follow_the_grammar(value in name()) {
        invariants::check_name_bytes(value.as_bytes());
    }

    /// Raw bytes, not only text.
    #[test]
    fn name_bytes_follow_the_grammar(value in prop::collection::vec(any::<u8>(), 0..200)) {
        invariants::check_name_bytes(&value);
    }

    /// Host and container paths are accepted exactly when the `std::path` reference rule
    /// accepts them.
    #[test]
    fn paths_follow_the_reference(value in prop_oneof![path(), container_path()]) {
        let host = HostPath::parse(&value);
        match invariants::reference_host_path(&value) {
            Ok(()) => prop_assert_eq!(host.map(|h| h.as_str().to_owned()), Ok(value.clone())),
            Err(rule) => {
                let err = host.unwrap_err();
                prop_assert_eq!(err.rule(), rule);
                invariants::check_message(&err.to_string(), rule, Some(&value));
            }
        }
        let container = ContainerPath::parse(&value);
        match invariants::reference_container_path(&value) {
            Ok(()) => prop_assert_eq!(container.map(|c| c.as_str().to_owned()), Ok(value.clone())),
            Err(rule) => prop_assert_eq!(container.unwrap_err().rule(), rule),
        }
    }
}

proptest! {
    #![proptest_config(config(1024))]

    /// Every plan: one read-write workspace bind W/J at R/J, workdir R/J, every workspace bind
    /// W/<one component> at R/<same>, targets unique with parents first, extras clear of R and
    /// W, renderings parse back through a CSV reader, and building twice gives the same plan.
    /// Refusals match the reference rules.
    #[test]
    fn plans_hold_every_invariant(input in plan_input()) {
        invariants::check_plan_input(&input);
    }

    /// Valid material always builds a plan (so the property above is not vacuous).
    #[test]
    fn valid_inputs_always_build(input in valid_input()) {
        prop_assert!(invariants::check_plan_input(&input).is_some(), "{:?}", input);
    }

    /// Workspace paths full of `,` `"` `=` `:` spaces render to docker and podman arguments
    /// that parse back to exactly the planned mounts.
    #[test]
    fn renderings_round_trip(
        workspace in csv_hostile_path(),
        root in prop::option::of(csv_hostile_path()),
        source in csv_hostile_path(),
        job in select(&["job-1", "job_1", "train-2026.11", "a"][..]),
        scratch in any::<bool>(),
    ) {
        let spec = LayoutSpec {
            container_root: root.map(|r| format!("/r{r}")),
            root: Some(if scratch { RootKind::Scratch } else { RootKind::ReadOnly }),
            root_size_bytes: Some(1 << 20),
            extra_mounts: vec![ExtraMountSpec {
                source: format!("/mnt{source}"),
                target: "/data/set".to_owned(),
                read_only: true,
            }],
            ..LayoutSpec::default()
        };
        let input = invariants::PlanInput { workspace: format!("/w{workspace}"), job: job.to_owned(), spec };
        let plan = invariants::check_plan_input(&input);
        prop_assert!(plan.is_some(), "{:?}", input);
    }

    /// `csv_quote` is undone exactly by a CSV reader, whatever the text.
    #[test]
    fn csv_quote_round_trips(text in any::<String>()) {
        invariants::check_csv_quote(&text);
    }

    /// A plan depends on its inputs only: two layouts built from equal specs plan equally,
    /// and a layout reused for many jobs gives each the same plan as a fresh layout.
    #[test]
    fn plans_are_deterministic(input in valid_input(), other in select(GOOD)) {
        let ws = HostPath::parse(&input.workspace).unwrap();
        let job = JobName::parse(&input.job).unwrap();
        let a = input.spec.build().unwrap();
        let b = input.spec.clone().build().unwrap();
        if let Ok(other) = a.job(other) {
            let _ = a.plan(&ws, &other);
        }
        prop_assert_eq!(a.plan(&ws, &job), b.plan(&ws, &job));
        let fresh: Layout = input.spec.build().unwrap();
        prop_assert_eq!(a.plan(&ws, &job).unwrap().podman_args(), fresh.plan(&ws, &job).unwrap().podman_args());
    }
}

/// The generator reaches built plans and every refusal rule, so the properties above are
/// not vacuous.
#[test]
fn plan_inputs_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};
    use std::collections::BTreeMap;

    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let strategy = plan_input();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..4000 {
        let input = strategy.new_tree(&mut runner).expect("a value").current();
        *seen.entry(invariants::outcome(&input)).or_default() += 1;
    }
    eprintln!("outcomes of 4000 plan inputs: {seen:?}");
    for rule in [
        "built",
        "reserved",
        "mount-path-too-long",
        "extra-overlaps-workspace",
        "container-root",
        "shared-name",
        "shared-duplicate",
        "scratch-size",
        "root-size",
        "extra-path",
        "extra-overlaps-root",
        "extra-duplicate-target",
        "workspace-not-normal",
        "workspace-not-absolute",
        "workspace-path-too-long",
        "job-bad-char",
        "job-too-long",
    ] {
        assert!(
            seen.contains_key(rule),
            "no input ended in {rule:?}: {seen:?}"
        );
    }
    assert!(seen["built"] >= 200, "too few plans built: {seen:?}");
}
