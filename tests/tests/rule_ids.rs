//! Rule ids are an API: a launcher matches on `.rule()`, so each id names exactly one refusal
//! across every crate, and each message starts with `<kind> rule `<id>`: ` derived from
//! `rule()` (the `mount_plan::rules!` macro), never written a second time by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// (type, kind, its own ids) of an error type with rule ids.
macro_rules! rules_of {
    ($ty:path) => {
        (stringify!($ty), <$ty>::KIND, <$ty>::RULES)
    };
}

/// Every error type with rule ids: (type, kind, its own ids).
fn all() -> Vec<(&'static str, &'static str, &'static [&'static str])> {
    vec![
        rules_of!(mount_plan::PathError),
        rules_of!(mount_plan::NameError),
        rules_of!(mount_plan::LayoutError),
        rules_of!(mount_plan::PlanError),
        rules_of!(mount_plan_host::HostError),
        rules_of!(mount_plan_host::PinMismatch),
        rules_of!(mount_plan_launch::SpecError),
        rules_of!(mount_plan_launch::LaunchError),
        rules_of!(mount_plan_launch::Difference),
        rules_of!(mount_plan_podman::PodmanError),
        rules_of!(mount_plan_run::RequestError),
    ]
}

/// Ids written by hand in a message outside the typed errors (`... rule `<id>`: ...` in a
/// string literal of a crate's sources), with where.
fn hand_written() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, text) in sources() {
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") || !code.contains('"') {
                continue;
            }
            let mut rest = code;
            while let Some(at) = rest.find(" rule `") {
                let after = &rest[at + " rule `".len()..];
                let Some(end) = after.find('`') else { break };
                let id = &after[..end];
                if !id.contains('{') && after[end..].starts_with("`:") {
                    found.push((id.to_owned(), format!("{}:{}", path.display(), n + 1)));
                }
                rest = &after[end..];
            }
        }
    }
    found
}

/// Every `rules!(Type, "kind", { Variant => "id", ... })` in the sources, binaries included
/// (the CLI's own errors are not reachable from here as types): (id, "kind (Type)").
fn in_rules_macros() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (_, text) in sources() {
        let mut rest = text.as_str();
        while let Some(at) = rest.find("rules!(") {
            let call = &rest[at + "rules!(".len()..];
            let Some(end) = call.find(");") else { break };
            if let Some((head, arms)) = call[..end].split_once('{') {
                let mut head = head.split(',').map(str::trim);
                let ty = head.next().unwrap_or_default();
                let kind = head.next().unwrap_or_default().trim_matches('"');
                for arm in arms.split('}').next().unwrap_or_default().split(',') {
                    if let Some((_, id)) = arm.split_once("=>") {
                        let id = id.trim().trim_matches('"').to_owned();
                        found.push((id, format!("{kind} ({ty})")));
                    }
                }
            }
            rest = &call[end..];
        }
    }
    found
}

/// Every `.rs` file under `crates/` except test directories, with its text.
fn sources() -> Vec<(std::path::PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    let mut stack = vec![root.join("crates")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("tests") {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((path, text));
            }
        }
    }
    files
}

#[test]
fn every_rule_id_names_one_refusal_across_the_project() {
    let mut owners: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (ty, kind, rules) in all() {
        assert!(!rules.is_empty(), "{ty} has no rules");
        let short = ty.rsplit("::").next().unwrap_or(ty);
        for rule in rules {
            owners
                .entry(rule.to_string())
                .or_default()
                .insert(format!("{kind} ({short})"));
        }
    }
    // The same types seen in the sources (one owner each), plus the binaries' own.
    for (id, owner) in in_rules_macros() {
        owners.entry(id).or_default().insert(owner);
    }
    let hand = hand_written();
    for (id, at) in &hand {
        owners
            .entry(id.clone())
            .or_default()
            .insert(format!("written at {at}"));
    }
    let shared: Vec<_> = owners.iter().filter(|(_, o)| o.len() > 1).collect();
    assert!(
        shared.is_empty(),
        "rule ids naming more than one refusal: {shared:#?}"
    );
    // The typed errors derive their prefix: no `#[error]` repeats an id by hand.
    let in_typed_errors: Vec<_> = hand
        .iter()
        .filter(|(id, _)| {
            all()
                .iter()
                .any(|(_, _, rules)| rules.contains(&id.as_str()))
        })
        .collect();
    assert!(in_typed_errors.is_empty(), "{in_typed_errors:?}");
}

/// `e`'s rule is one of `$ty`'s and its message starts with `<kind> rule `<id>`: `.
macro_rules! starts_with_its_rule {
    ($e:expr, $ty:path) => {{
        let (rule, message) = ($e.rule(), $e.to_string());
        assert!(
            <$ty>::RULES.contains(&rule),
            "{rule} is not in {:?}",
            <$ty>::RULES
        );
        let want = format!("{} rule `{rule}`: ", <$ty>::KIND);
        assert!(
            message.starts_with(&want),
            "{message:?} does not start with {want:?}"
        );
    }};
}

#[test]
fn messages_start_with_their_kind_and_rule() {
    use mount_plan::{ContainerPath, HostPath, JobName, Layout, LayoutSpec};

    let e = HostPath::parse("").unwrap_err();
    starts_with_its_rule!(e, mount_plan::PathError);
    let e = ContainerPath::parse("/proc/x").unwrap_err();
    starts_with_its_rule!(e, mount_plan::PathError);
    let e = JobName::parse("a/b").unwrap_err();
    starts_with_its_rule!(e, mount_plan::NameError);
    let e = LayoutSpec {
        root_size_bytes: Some(1),
        ..LayoutSpec::default()
    }
    .build()
    .unwrap_err();
    starts_with_its_rule!(e, mount_plan::LayoutError);
    let layout = Layout::default();
    let long = format!("/{}", "w".repeat(mount_plan::MAX_PATH_LEN - 2));
    let e = layout
        .plan(
            &HostPath::parse(&long).unwrap(),
            &JobName::parse("job1").unwrap(),
        )
        .unwrap_err();
    starts_with_its_rule!(e, mount_plan::PlanError);
    // A wrapped refusal keeps its own id and message.
    let e = layout
        .plan(
            &HostPath::parse("/srv/site").unwrap(),
            &JobName::parse("startup").unwrap(),
        )
        .unwrap_err();
    starts_with_its_rule!(e, mount_plan::NameError);

    let e: mount_plan_launch::SpecError = "bad image"
        .parse::<mount_plan_launch::ImageRef>()
        .unwrap_err();
    starts_with_its_rule!(e, mount_plan_launch::SpecError);
    let e = mount_plan_launch::LaunchError::Cancelled;
    starts_with_its_rule!(e, mount_plan_launch::LaunchError);
    let e = mount_plan_launch::Difference::Privileged;
    starts_with_its_rule!(e, mount_plan_launch::Difference);
    let e = mount_plan_podman::PodmanError::Version { value: "x".into() };
    starts_with_its_rule!(e, mount_plan_podman::PodmanError);
    let plan = layout
        .plan(
            &HostPath::parse("/nonexistent-mount-plan-rule-ids").unwrap(),
            &JobName::parse("job1").unwrap(),
        )
        .unwrap();
    let e = mount_plan_host::verify(plan, &mount_plan_host::VerifyOptions::default()).unwrap_err();
    starts_with_its_rule!(e, mount_plan_host::HostError);
    let tmp = std::env::temp_dir().join(format!("mp-rule-ids-{}", std::process::id()));
    for d in ["startup", "local", "job1"] {
        std::fs::create_dir_all(tmp.join(d)).unwrap();
    }
    let plan = layout
        .plan(
            &HostPath::parse(tmp.to_str().unwrap()).unwrap(),
            &JobName::parse("job1").unwrap(),
        )
        .unwrap();
    let options = mount_plan_host::VerifyOptions {
        permissions: mount_plan_host::PermissionPolicy::Warn,
        ..Default::default()
    };
    let verified = mount_plan_host::verify(plan, &options).unwrap();
    let e = verified
        .compare_sources([("/workspace/job1", "/nonexistent-mount-plan-rule-ids")])
        .pop()
        .unwrap();
    starts_with_its_rule!(e, mount_plan_host::PinMismatch);
    drop(verified);
    std::fs::remove_dir_all(&tmp).unwrap();
}
