//! Every rendered Pod passes the Pod Security Standards' Restricted level (except the one
//! that asks for hostPath volumes, which Baseline already forbids), and the checker that says
//! so catches each rule when a Pod breaks it.

#[path = "support/cases.rs"]
mod cases;
#[path = "support/pss.rs"]
mod pss;

use mount_plan::LayoutSpec;
use mount_plan_k8s::k8s_openapi::api::core::v1::{
    Capabilities, HostPathVolumeSource, Pod, PodSecurityContext, SeccompProfile, SecurityContext,
    Volume,
};
use mount_plan_k8s::{render_pod, PodOptions};

#[test]
fn every_rendered_pod_is_restricted_unless_it_asks_for_host_paths() {
    for (name, plan, options) in cases::cases() {
        let pod = render_pod(&plan, &options).unwrap();
        let violations = pss::restricted(&pod);
        if name == "extra-host-path.json" {
            assert_eq!(
                violations,
                [
                    "`hostpath-volumes`: volume \"workspace\"",
                    "`hostpath-volumes`: volume \"extra-0\"",
                    "`hostpath-volumes`: volume \"extra-1\"",
                    "`volume-types`: volume \"workspace\"",
                    "`volume-types`: volume \"extra-0\"",
                    "`volume-types`: volume \"extra-1\"",
                ],
                "{name}"
            );
        } else {
            assert!(violations.is_empty(), "{name}: {violations:?}");
        }
    }
}

/// The done-when Pod: restricted, root read-only, the job's subPath the only writable
/// workspace path.
#[test]
fn the_default_pod_mounts_the_root_read_only_and_only_the_job_dir_writable() {
    let plan = cases::plan(LayoutSpec::default());
    let pod = render_pod(&plan, &PodOptions::with_claim("site-ws".parse().unwrap())).unwrap();
    assert!(pss::restricted(&pod).is_empty());
    let job = &pod.spec.as_ref().unwrap().containers[0];
    let mounts = job.volume_mounts.as_ref().unwrap();
    let root = mounts
        .iter()
        .find(|m| m.mount_path == "/workspace")
        .unwrap();
    assert_eq!(root.read_only, Some(true));
    let writable: Vec<_> = mounts
        .iter()
        .filter(|m| m.read_only != Some(true))
        .collect();
    assert_eq!(writable.len(), 1);
    assert_eq!(writable[0].name, "workspace");
    assert_eq!(writable[0].sub_path.as_deref(), Some("job-1"));
    assert_eq!(writable[0].mount_path, "/workspace/job-1");
    assert_eq!(job.working_dir.as_deref(), Some("/workspace/job-1"));
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.security_context.as_ref().unwrap().fs_group, None);
}

fn job_sc(p: &mut Pod) -> &mut SecurityContext {
    let c = &mut p.spec.as_mut().unwrap().containers[0];
    c.security_context.as_mut().unwrap()
}

fn init_sc(p: &mut Pod) -> &mut SecurityContext {
    let c = &mut p.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0];
    c.security_context.as_mut().unwrap()
}

fn pod_sc(p: &mut Pod) -> &mut PodSecurityContext {
    p.spec.as_mut().unwrap().security_context.as_mut().unwrap()
}

#[test]
fn the_checker_catches_each_rule() {
    let plan = cases::plan(LayoutSpec::default());
    let good = render_pod(&plan, &PodOptions::with_claim("site-ws".parse().unwrap())).unwrap();
    type Breaker = fn(&mut Pod);
    let cases: Vec<(&str, Breaker)> = vec![
        ("host-namespaces", |p| {
            p.spec.as_mut().unwrap().host_pid = Some(true)
        }),
        ("hostpath-volumes", |p| {
            p.spec
                .as_mut()
                .unwrap()
                .volumes
                .as_mut()
                .unwrap()
                .push(Volume {
                    name: "h".into(),
                    host_path: Some(HostPathVolumeSource {
                        path: "/".into(),
                        type_: None,
                    }),
                    ..Volume::default()
                })
        }),
        ("privileged", |p| job_sc(p).privileged = Some(true)),
        ("capabilities-baseline", |p| {
            job_sc(p).capabilities = Some(Capabilities {
                add: Some(vec!["SYS_ADMIN".into()]),
                drop: Some(vec!["ALL".into()]),
            })
        }),
        ("capabilities-restricted", |p| {
            job_sc(p).capabilities = Some(Capabilities {
                add: Some(vec!["CHOWN".into()]),
                drop: Some(vec!["ALL".into()]),
            })
        }),
        ("capabilities-drop-all", |p| init_sc(p).capabilities = None),
        ("privilege-escalation", |p| {
            init_sc(p).allow_privilege_escalation = None
        }),
        ("run-as-non-root", |p| pod_sc(p).run_as_non_root = None),
        ("run-as-user", |p| job_sc(p).run_as_user = Some(0)),
        ("seccomp-restricted", |p| pod_sc(p).seccomp_profile = None),
        ("seccomp", |p| {
            job_sc(p).seccomp_profile = Some(SeccompProfile {
                type_: "Unconfined".into(),
                localhost_profile: None,
            })
        }),
    ];
    assert!(pss::restricted(&good).is_empty());
    for (rule, breaker) in cases {
        let mut pod = good.clone();
        breaker(&mut pod);
        let found = pss::restricted(&pod);
        assert!(
            found.iter().any(|v| v.starts_with(&format!("`{rule}`"))),
            "{rule}: not caught, found {found:?}"
        );
    }
}
