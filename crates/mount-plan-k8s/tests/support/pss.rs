//! The Pod Security Standards' Baseline and Restricted levels as a checker, written from the
//! standard's table (kubernetes.io "Pod Security Standards", policy version "latest"), one
//! rule per check. Each violation is returned as "`rule`: where".

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Container, Pod, SELinuxOptions, SeccompProfile, SecurityContext,
};
use mount_plan_k8s::k8s_openapi;

const BASELINE_CAPS: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
const SELINUX_TYPES: [&str; 4] = [
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

fn containers(pod: &Pod) -> Vec<(&'static str, &Container)> {
    let spec = pod.spec.as_ref().expect("a Pod has a spec");
    spec.init_containers
        .iter()
        .flatten()
        .map(|c| ("initContainers", c))
        .chain(spec.containers.iter().map(|c| ("containers", c)))
        .collect()
}

/// Violations of the Baseline level.
pub fn baseline(pod: &Pod) -> Vec<String> {
    let spec = pod.spec.as_ref().expect("a Pod has a spec");
    let mut out = Vec::new();
    let mut v = |rule: &str, at: String| out.push(format!("`{rule}`: {at}"));
    for (flag, name) in [
        (spec.host_network, "hostNetwork"),
        (spec.host_pid, "hostPID"),
        (spec.host_ipc, "hostIPC"),
    ] {
        if flag == Some(true) {
            v("host-namespaces", format!("spec.{name}"));
        }
    }
    for vol in spec.volumes.iter().flatten() {
        if vol.host_path.is_some() {
            v("hostpath-volumes", format!("volume {:?}", vol.name));
        }
    }
    if let Some(p) = spec.security_context.as_ref() {
        let at = "spec.securityContext";
        out.extend(shared_rules(
            at,
            p.seccomp_profile.as_ref(),
            p.se_linux_options.as_ref(),
            p.windows_options.as_ref().and_then(|w| w.host_process),
            p.app_armor_profile.as_ref(),
        ));
        for s in p.sysctls.iter().flatten() {
            if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
                out.push(format!("`sysctls`: sysctl {:?}", s.name));
            }
        }
    }
    let mut v = |rule: &str, at: String| out.push(format!("`{rule}`: {at}"));
    let mut extra = Vec::new();
    for (kind, c) in containers(pod) {
        let at = format!("{kind} {:?}", c.name);
        for port in c.ports.iter().flatten() {
            if port.host_port.is_some_and(|p| p != 0) {
                v("host-ports", at.clone());
            }
        }
        let Some(sc) = &c.security_context else {
            continue;
        };
        if sc.privileged == Some(true) {
            v("privileged", at.clone());
        }
        for cap in sc.capabilities.iter().flat_map(|c| c.add.iter().flatten()) {
            if !BASELINE_CAPS.contains(&cap.as_str()) {
                v("capabilities-baseline", format!("{at} adds {cap}"));
            }
        }
        if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
            v("proc-mount", at.clone());
        }
        for found in shared_rules(
            &at,
            sc.seccomp_profile.as_ref(),
            sc.se_linux_options.as_ref(),
            sc.windows_options.as_ref().and_then(|w| w.host_process),
            sc.app_armor_profile.as_ref(),
        ) {
            extra.push(found);
        }
    }
    out.extend(extra);
    out
}

/// The rules that hold at both the Pod's and each container's security context.
fn shared_rules(
    at: &str,
    seccomp: Option<&SeccompProfile>,
    selinux: Option<&SELinuxOptions>,
    host_process: Option<bool>,
    apparmor: Option<&AppArmorProfile>,
) -> Vec<String> {
    let mut out = Vec::new();
    if seccomp.is_some_and(|s| s.type_ == "Unconfined") {
        out.push(format!("`seccomp`: {at}"));
    }
    if selinux.is_some_and(|se| {
        se.user.is_some()
            || se.role.is_some()
            || se
                .type_
                .as_deref()
                .is_some_and(|t| !SELINUX_TYPES.contains(&t))
    }) {
        out.push(format!("`selinux`: {at}"));
    }
    if host_process == Some(true) {
        out.push(format!("`host-process`: {at}"));
    }
    if apparmor.is_some_and(|a| !matches!(a.type_.as_str(), "RuntimeDefault" | "Localhost")) {
        out.push(format!("`apparmor`: {at}"));
    }
    out
}

/// Violations of the Restricted level (which includes Baseline).
pub fn restricted(pod: &Pod) -> Vec<String> {
    let spec = pod.spec.as_ref().expect("a Pod has a spec");
    let mut out = baseline(pod);
    let mut v = |rule: &str, at: String| out.push(format!("`{rule}`: {at}"));
    for vol in spec.volumes.iter().flatten() {
        let allowed = vol.config_map.is_some()
            || vol.csi.is_some()
            || vol.downward_api.is_some()
            || vol.empty_dir.is_some()
            || vol.ephemeral.is_some()
            || vol.persistent_volume_claim.is_some()
            || vol.projected.is_some()
            || vol.secret.is_some();
        if !allowed {
            v("volume-types", format!("volume {:?}", vol.name));
        }
    }
    let psc = spec.security_context.as_ref();
    let pod_non_root = psc.and_then(|p| p.run_as_non_root) == Some(true);
    if psc.and_then(|p| p.run_as_user) == Some(0) {
        v("run-as-user", "spec.securityContext".into());
    }
    let pod_seccomp = psc
        .and_then(|p| p.seccomp_profile.as_ref())
        .is_some_and(|s| matches!(s.type_.as_str(), "RuntimeDefault" | "Localhost"));
    for (kind, c) in containers(pod) {
        let at = format!("{kind} {:?}", c.name);
        let sc: SecurityContext = c.security_context.clone().unwrap_or_default();
        if sc.allow_privilege_escalation != Some(false) {
            v("privilege-escalation", at.clone());
        }
        match sc.run_as_non_root {
            Some(false) => v("run-as-non-root", at.clone()),
            None if !pod_non_root => v("run-as-non-root", at.clone()),
            _ => {}
        }
        if sc.run_as_user == Some(0) {
            v("run-as-user", at.clone());
        }
        match sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()) {
            Some("RuntimeDefault" | "Localhost") => {}
            None if pod_seccomp => {}
            _ => v("seccomp-restricted", at.clone()),
        }
        let caps = sc.capabilities.unwrap_or_default();
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            v("capabilities-drop-all", at.clone());
        }
        for cap in caps.add.iter().flatten() {
            if cap != "NET_BIND_SERVICE" {
                v("capabilities-restricted", format!("{at} adds {cap}"));
            }
        }
    }
    out
}
