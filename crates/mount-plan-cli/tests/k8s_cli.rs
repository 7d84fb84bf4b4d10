//! `plan --format k8s-pod` (built with `--features kubernetes`): the done-when command prints
//! the committed golden Pod byte for byte; refusals exit 2 naming the rule.
#![cfg(feature = "kubernetes")]

use std::process::{Command, Output};

fn mount_plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mount-plan"))
        .args(args)
        .output()
        .expect("the binary runs")
}

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../mount-plan-k8s/tests/golden/"
);

fn golden(name: &str) -> String {
    std::fs::read_to_string(format!("{GOLDEN}{name}")).unwrap()
}

const BASE: [&str; 5] = ["plan", "--workspace", "/srv/site", "--job", "job-1"];

#[test]
fn the_done_when_command_prints_the_golden_pod() {
    let out = mount_plan(
        &[
            &BASE[..],
            &["--format", "k8s-pod", "--k8s-claim", "site-ws"],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        golden("default-1.33.json")
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("--accept-missing noexec"), "{stderr}");

    let out = mount_plan(
        &[
            &BASE[..],
            &["--format", "k8s-pod-yaml", "--k8s-claim", "site-ws"],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        golden("default-1.33.yaml")
    );
}

#[test]
fn each_version_prints_its_golden_pod() {
    for minor in 30..=37 {
        let v = format!("1.{minor}");
        let out = mount_plan(
            &[
                &BASE[..],
                &[
                    "--format",
                    "k8s-pod",
                    "--k8s-claim",
                    "site-ws",
                    "--k8s-version",
                    &v,
                ],
            ]
            .concat(),
        );
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            golden(&format!("default-{v}.json"))
        );
    }
}

#[test]
fn refusals_name_their_rule() {
    for (extra, rule) in [
        (&["--format", "k8s-pod"][..], "k8s-claim-name"),
        (
            &["--format", "k8s-pod", "--k8s-claim", "Site_WS"][..],
            "k8s-claim-name",
        ),
        (
            &[
                "--format",
                "k8s-pod",
                "--k8s-claim",
                "ws",
                "--k8s-version",
                "1.29",
            ][..],
            "k8s-version",
        ),
        (
            &[
                "--format",
                "k8s-pod",
                "--k8s-claim",
                "ws",
                "--k8s-feature-gate",
                "VolumeBindMountOptions",
            ][..],
            "k8s-feature-gate",
        ),
        (
            &["--format", "k8s-pod", "--k8s-claim", "ws", "--user", "0:0"][..],
            "k8s-run-as-root",
        ),
    ] {
        let out = mount_plan(&[&BASE[..], extra].concat());
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {out:?}");
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(&format!("`{rule}`")), "{extra:?}: {stderr}");
    }
}
