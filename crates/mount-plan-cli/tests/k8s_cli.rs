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
    assert!(stderr.contains("--require noexec"), "{stderr}");

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
        (&["--format", "k8s-pod"][..], "k8s-claim-missing"),
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
            "k8s-gate-version",
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

#[test]
fn launch_on_an_unreachable_cluster_exits_125_and_creates_nothing() {
    let dir = tempfile_dir();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"http://127.0.0.1:9\"}\n\
         contexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\nusers:\n- name: u\n  user: {}\n",
    )
    .unwrap();
    for d in ["startup", "local", "job-1"] {
        std::fs::create_dir_all(dir.join("ws").join(d)).unwrap();
    }
    let ws = dir.join("ws");
    let out = mount_plan(&[
        "launch",
        "--runtime",
        "kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--k8s-claim",
        "site-ws",
        "--workspace",
        ws.to_str().unwrap(),
        "--job",
        "job-1",
        "--image",
        "busybox",
        "--network",
        "default",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("kubernetes"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mount-plan-k8s-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
