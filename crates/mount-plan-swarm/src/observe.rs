//! Pure mapping of a service and its task to the engine-neutral [`ObservedContainer`], and
//! of a task's status to what the launch learns from it.

use bollard::models::{MountType, Node, NodeState, Service, Task, TaskState};
use mount_plan::MountFlags;
use mount_plan_launch::{
    ObservedBind, ObservedContainer, ObservedNamespaces, ObservedOtherMount, ObservedTmpfs,
};

use crate::translate::is_started;

/// The task a service's state is read from: the most recent one (by job iteration, then
/// creation time, then version; a started service of ours has exactly one).
pub fn current_task(tasks: &[Task]) -> Option<&Task> {
    tasks.iter().max_by_key(|t| {
        (
            t.job_iteration.as_ref().and_then(|v| v.index).unwrap_or(0),
            t.created_at.as_ref().map(|d| d.to_string()),
            t.version.as_ref().and_then(|v| v.index).unwrap_or(0),
        )
    })
}

/// What a task's status says about the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Not scheduled yet, or on its way to run (`new` to `ready`).
    Pending,
    /// The container is starting or running.
    Running,
    /// The command ran and exited with this code (`complete`, or `failed` with "task:
    /// non-zero exit (N)").
    Exited(i64),
    /// The command never ran: the node rejected the task (a missing bind source, a missing
    /// image) or the container could not start (a missing executable).
    NotRun {
        /// The task's state (`rejected`, `failed`).
        state: String,
        /// The engine's error.
        error: String,
    },
    /// The task ended without an exit status of its command (`shutdown`, `orphaned`,
    /// `remove`), for example because its node's engine went away.
    Lost {
        /// The task's state.
        state: String,
        /// The engine's error or message.
        error: String,
    },
}

impl TaskOutcome {
    /// Whether the task will not change any more.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, TaskOutcome::Pending | TaskOutcome::Running)
    }
}

/// The exit code in a failed task's error, `task: non-zero exit (N)`.
fn non_zero_exit(err: &str) -> Option<i64> {
    err.strip_prefix("task: non-zero exit (")?
        .strip_suffix(')')?
        .parse()
        .ok()
}

/// What `task`'s status says. The exit code is read from `Status.ContainerStatus.ExitCode`
/// only when the command ran: a rejected task reports 0 there, and a container that could not
/// start reports 127 with the error `starting container failed: ...`.
pub fn outcome(task: &Task) -> TaskOutcome {
    let status = task.status.clone().unwrap_or_default();
    let state = status.state.unwrap_or(TaskState::NEW);
    let err = status.err.clone().unwrap_or_default();
    let code = status.container_status.as_ref().and_then(|c| c.exit_code);
    match state {
        TaskState::NEW
        | TaskState::ALLOCATED
        | TaskState::PENDING
        | TaskState::ASSIGNED
        | TaskState::ACCEPTED
        | TaskState::PREPARING
        | TaskState::READY => TaskOutcome::Pending,
        TaskState::STARTING | TaskState::RUNNING => TaskOutcome::Running,
        TaskState::COMPLETE => TaskOutcome::Exited(code.unwrap_or(0)),
        TaskState::FAILED => match (non_zero_exit(&err), code) {
            (Some(n), Some(c)) if c == n => TaskOutcome::Exited(c),
            (Some(n), _) => TaskOutcome::Exited(n),
            // Failed without running its command (start failed), or for a reason the
            // engine words otherwise: no status to report.
            _ if err.starts_with("starting container failed")
                || status.message.as_deref() == Some("starting") =>
            {
                TaskOutcome::NotRun {
                    state: state.to_string(),
                    error: err,
                }
            }
            _ => TaskOutcome::Lost {
                state: state.to_string(),
                error: err,
            },
        },
        TaskState::REJECTED => TaskOutcome::NotRun {
            state: state.to_string(),
            error: err,
        },
        TaskState::SHUTDOWN | TaskState::REMOVE | TaskState::ORPHANED => TaskOutcome::Lost {
            state: state.to_string(),
            error: if err.is_empty() {
                status.message.unwrap_or_default()
            } else {
                err
            },
        },
    }
}

/// Whether the manager sees `node` as able to run tasks.
pub fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.state)
        .is_some_and(|s| s == NodeState::READY)
}

/// A node as messages name it: `hostname (id)`.
pub fn node_name(node: &Node) -> String {
    let id = node.id.clone().unwrap_or_default();
    match node
        .description
        .as_ref()
        .and_then(|d| d.hostname.as_deref())
    {
        Some(h) => format!("{h:?} ({id})"),
        None => format!("({id})"),
    }
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time as the manager writes it
/// (`2026-12-02T05:07:21.986126258Z`); `None` for another form.
pub fn unix_seconds(time: &str) -> Option<i64> {
    let b = time.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !time.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| time.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3_600 + mm * 60 + ss)
}

/// Whether the service's first process is the in-container gate: its command starts with
/// the gate's path, bound there read-only.
fn runs_the_gate(c: &bollard::models::TaskSpecContainerSpec) -> bool {
    use mount_plan_launch::gate::GATE_PATH;
    let first = c.command.as_ref().and_then(|cmd| cmd.first());
    let bound = c.mounts.iter().flatten().any(|m| {
        m.typ == Some(MountType::BIND)
            && m.target.as_deref() == Some(GATE_PATH)
            && m.read_only == Some(true)
    });
    first.map(String::as_str) == Some(GATE_PATH) && bound
}

/// Map a service (its spec as the manager stored it, which is what every task is created
/// from) and its current task to an [`ObservedContainer`].
///
/// State: `created` until the service is started and while its task is on its way
/// (`pending`...); `running`; `exited` with the exit code once the command ran and ended;
/// the task's own state (`rejected`, `failed`, `shutdown`...) without an exit code when the
/// command did not run or its status was lost. Tmpfs mounts are reported nosuid, nodev and
/// noexec: the worker's Docker engine mounts every tmpfs so. Bind flags are `None` (a service
/// cannot set or report them).
pub fn observe(service: &Service, task: Option<&Task>) -> ObservedContainer {
    let spec = service.spec.clone().unwrap_or_default();
    let template = spec.task_template.clone().unwrap_or_default();
    let c = template.container_spec.clone().unwrap_or_default();
    let mut binds = Vec::new();
    let mut tmpfs = Vec::new();
    let mut other_mounts = Vec::new();
    for m in c.mounts.clone().unwrap_or_default() {
        let target = m.target.clone().unwrap_or_default();
        match m.typ {
            Some(MountType::BIND) => {
                let opts = m.bind_options.clone().unwrap_or_default();
                binds.push(ObservedBind {
                    source: m.source.clone().unwrap_or_default(),
                    target,
                    read_only: m.read_only.unwrap_or(false),
                    propagation: opts
                        .propagation
                        .as_ref()
                        .map(|p| mount_plan_docker::propagation_name(p).to_owned())
                        .filter(|p| !p.is_empty()),
                    non_recursive: Some(opts.non_recursive.unwrap_or(false)),
                    flags: None,
                });
            }
            Some(MountType::TMPFS) => {
                let opts = m.tmpfs_options.clone().unwrap_or_default();
                tmpfs.push(ObservedTmpfs {
                    target,
                    read_only: Some(m.read_only.unwrap_or(false)),
                    mode: opts.mode.and_then(|v| u32::try_from(v).ok()),
                    size_bytes: opts
                        .size_bytes
                        .and_then(|v| u64::try_from(v).ok())
                        .filter(|v| *v > 0),
                    flags: Some(MountFlags::HARDENED),
                    ..ObservedTmpfs::default()
                });
            }
            other => other_mounts.push(ObservedOtherMount {
                kind: other.map_or_else(|| "unknown".to_owned(), |k| k.to_string()),
                source: m.source.clone(),
                target,
            }),
        }
    }
    let (state, exit_code) = if !is_started(&spec) {
        ("created".to_owned(), None)
    } else {
        match task.map(outcome) {
            None | Some(TaskOutcome::Pending) => ("created".to_owned(), None),
            Some(TaskOutcome::Running) => ("running".to_owned(), None),
            Some(TaskOutcome::Exited(code)) => ("exited".to_owned(), Some(code)),
            Some(TaskOutcome::NotRun { state, .. } | TaskOutcome::Lost { state, .. }) => {
                (state, None)
            }
        }
    };
    let privileges = c.privileges.clone().unwrap_or_default();
    let mut security_opt = Vec::new();
    if let Some(mode) = privileges.seccomp.as_ref().and_then(|s| s.mode.as_ref()) {
        security_opt.push(format!("seccomp={mode}"));
    }
    if let Some(mode) = privileges.app_armor.as_ref().and_then(|s| s.mode.as_ref()) {
        security_opt.push(format!("apparmor={mode}"));
    }
    let network = template
        .networks
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.target)
        .collect::<Vec<_>>()
        .join(",");
    ObservedContainer {
        id: service.id.clone().unwrap_or_default(),
        name: spec.name.clone().unwrap_or_default(),
        image: c.image.clone().unwrap_or_default(),
        // A task's container is resolved on its node; the service does not say which image.
        image_id: None,
        labels: spec
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        state: Some(state),
        exit_code,
        first_pid: None,
        working_dir: c.dir.clone().filter(|d| !d.is_empty()),
        user: c.user.clone().filter(|u| !u.is_empty()),
        binds,
        tmpfs: Some(tmpfs),
        other_mounts,
        volumes_from: Vec::new(),
        privileged: false,
        // The service's own setting (API 1.46), or the gate as its first process: the gate
        // sets no-new-privileges on itself before `execve`, whatever the API carried.
        no_new_privileges: privileges.no_new_privileges.unwrap_or(false) || runs_the_gate(&c),
        cap_add: c.capability_add.clone().unwrap_or_default(),
        cap_drop: c.capability_drop.clone().unwrap_or_default(),
        cap_bounding: None,
        devices: Vec::new(),
        security_opt,
        namespaces: ObservedNamespaces {
            network,
            ..ObservedNamespaces::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(json: serde_json::Value) -> Task {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn outcomes_of_measured_task_statuses() {
        // Shapes seen on Docker 20.10 (see ../shared/reference/swarm.md).
        let exited = task(
            serde_json::json!({"Status": {"State": "failed", "Message": "started",
            "Err": "task: non-zero exit (3)",
            "ContainerStatus": {"ContainerID": "1d92", "ExitCode": 3}}}),
        );
        assert_eq!(outcome(&exited), TaskOutcome::Exited(3));
        let ok = task(serde_json::json!({"Status": {"State": "complete",
            "ContainerStatus": {"ContainerID": "1d92", "ExitCode": 0}}}));
        assert_eq!(outcome(&ok), TaskOutcome::Exited(0));
        let rejected = task(
            serde_json::json!({"Status": {"State": "rejected", "Message": "preparing",
            "Err": "invalid mount config for type \"bind\": bind source path does not exist: /w/j",
            "ContainerStatus": {"ContainerID": "", "ExitCode": 0}}}),
        );
        assert!(
            matches!(outcome(&rejected), TaskOutcome::NotRun { state, error }
            if state == "rejected" && error.contains("bind source path does not exist"))
        );
        let no_exec = task(
            serde_json::json!({"Status": {"State": "failed", "Message": "starting",
            "Err": "starting container failed: ... exec: \"/nonexistent\": stat /nonexistent: no such file or directory: unknown",
            "ContainerStatus": {"ContainerID": "c451", "ExitCode": 127}}}),
        );
        assert!(matches!(outcome(&no_exec), TaskOutcome::NotRun { .. }));
        let running = task(serde_json::json!({"Status": {"State": "running"}}));
        assert_eq!(outcome(&running), TaskOutcome::Running);
        assert!(!outcome(&running).is_terminal());
        let gone =
            task(serde_json::json!({"Status": {"State": "shutdown", "Message": "shutdown"}}));
        assert!(matches!(outcome(&gone), TaskOutcome::Lost { .. }));
        assert_eq!(non_zero_exit("task: non-zero exit (137)"), Some(137));
        assert_eq!(non_zero_exit("task: non-zero exit"), None);
    }

    #[test]
    fn times() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_seconds("2026-12-02T05:07:21.986126258Z"),
            Some(1_796_188_041)
        );
        assert_eq!(unix_seconds("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(unix_seconds("yesterday"), None);
    }

    #[test]
    fn the_latest_iteration_is_the_current_task() {
        let tasks = vec![
            task(serde_json::json!({"ID": "old", "JobIteration": {"Index": 1}})),
            task(serde_json::json!({"ID": "new", "JobIteration": {"Index": 2}})),
        ];
        assert_eq!(current_task(&tasks).unwrap().id.as_deref(), Some("new"));
        assert!(current_task(&[]).is_none());
    }

    /// Issue 21, finding 10: at API 1.41 the spec carries no `NoNewPrivileges`; the gate as
    /// the first process (bound read-only at its path) sets it, and only then is it observed.
    #[test]
    fn the_gate_as_first_process_is_no_new_privileges() {
        let with = |command: &str, read_only: bool| -> Service {
            serde_json::from_value(serde_json::json!({
                "ID": "svc1",
                "Spec": {"TaskTemplate": {"ContainerSpec": {
                    "Command": [command, "v2", "nonce"],
                    "Mounts": [{"Type": "bind", "Source": "/usr/local/libexec/mount-plan/gate",
                                "Target": "/.mount-plan/gate", "ReadOnly": read_only}]
                }}}
            }))
            .unwrap()
        };
        assert!(observe(&with("/.mount-plan/gate", true), None).no_new_privileges);
        assert!(!observe(&with("/bin/sh", true), None).no_new_privileges);
        assert!(!observe(&with("/.mount-plan/gate", false), None).no_new_privileges);
    }

    #[test]
    fn a_service_maps_to_its_spec_and_task() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "ID": "svc1",
            "Spec": {
                "Name": "job",
                "Labels": {"io.mount-plan.managed": "1"},
                "TaskTemplate": {"ContainerSpec": {
                    "Image": "sha256:abc", "Dir": "/workspace/j", "User": "1000",
                    "Mounts": [
                        {"Type": "tmpfs", "Target": "/workspace", "ReadOnly": true,
                         "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 365}},
                        {"Type": "bind", "Source": "/w/j", "Target": "/workspace/j",
                         "BindOptions": {"Propagation": "private", "NonRecursive": true}},
                        {"Type": "volume", "Source": "v", "Target": "/data"}
                    ],
                    "Privileges": {"NoNewPrivileges": false}
                }, "Networks": [{"Target": "fl-net"}]},
                "Mode": {"Replicated": {"Replicas": 1}}
            }
        }))
        .unwrap();
        let exited = task(serde_json::json!({"Status": {"State": "failed",
            "Err": "task: non-zero exit (3)", "ContainerStatus": {"ExitCode": 3}}}));
        let o = observe(&service, Some(&exited));
        assert_eq!((o.state.as_deref(), o.exit_code), (Some("exited"), Some(3)));
        assert_eq!(o.id, "svc1");
        assert_eq!(o.working_dir.as_deref(), Some("/workspace/j"));
        assert_eq!(o.binds.len(), 1);
        assert_eq!(o.binds[0].propagation.as_deref(), Some("private"));
        assert_eq!(o.binds[0].non_recursive, Some(true));
        assert!(!o.binds[0].read_only);
        let t = &o.tmpfs.as_ref().unwrap()[0];
        assert_eq!(
            (t.mode, t.size_bytes, t.read_only),
            (Some(0o555), Some(1 << 20), Some(true))
        );
        assert_eq!(o.other_mounts.len(), 1);
        assert!(!o.no_new_privileges);
        assert_eq!(o.namespaces.network, "fl-net");
        assert_eq!(o.labels["io.mount-plan.managed"], "1");
        // Not started: created, whatever an old task says.
        let mut unstarted = service.clone();
        unstarted
            .spec
            .as_mut()
            .unwrap()
            .mode
            .as_mut()
            .unwrap()
            .replicated
            .as_mut()
            .unwrap()
            .replicas = Some(0);
        let o = observe(&unstarted, Some(&exited));
        assert_eq!((o.state.as_deref(), o.exit_code), (Some("created"), None));
        let rejected = task(
            serde_json::json!({"Status": {"State": "rejected", "Err": "x",
            "ContainerStatus": {"ExitCode": 0}}}),
        );
        let o = observe(&service, Some(&rejected));
        assert_eq!((o.state.as_deref(), o.exit_code), (Some("rejected"), None));
    }
}
