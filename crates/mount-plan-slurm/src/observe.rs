//! The pure reading of Slurm's answers: `scontrol show job --oneliner` records, what a job
//! state means for the lifecycle, and what a bundle's `config.json` asks of runc (the audit's
//! view, as Swarm's audit reads the service spec the manager stored).

use std::collections::BTreeMap;

use mount_plan::MountFlags;
use mount_plan_launch::{
    ObservedBind, ObservedContainer, ObservedNamespaces, ObservedOtherMount, ObservedTmpfs,
};
use serde_json::Value;

/// One job as `scontrol show job --oneliner` prints it: `Key=Value` words. Values holding
/// spaces (none of the keys read here) are cut at the space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobRecord {
    /// Every `Key=Value` word.
    pub fields: BTreeMap<String, String>,
}

impl JobRecord {
    /// Parse one line.
    pub fn parse(line: &str) -> JobRecord {
        let fields = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        JobRecord { fields }
    }

    /// Parse every line of `scontrol show job --oneliner`.
    pub fn parse_all(out: &str) -> Vec<JobRecord> {
        out.lines()
            .filter(|l| l.starts_with("JobId="))
            .map(JobRecord::parse)
            .collect()
    }

    /// A field.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// `JobId`.
    pub fn id(&self) -> &str {
        self.get("JobId").unwrap_or("")
    }

    /// `JobState` (`PENDING`, `RUNNING`, `COMPLETED`...).
    pub fn state(&self) -> &str {
        self.get("JobState").unwrap_or("")
    }

    /// `JobName`.
    pub fn name(&self) -> &str {
        self.get("JobName").unwrap_or("")
    }

    /// `WorkDir`: the bundle directory of a mount-plan job.
    pub fn work_dir(&self) -> &str {
        self.get("WorkDir").unwrap_or("")
    }

    /// `Reason`.
    pub fn reason(&self) -> &str {
        self.get("Reason").unwrap_or("")
    }

    /// `NodeList` (`(null)` before it is scheduled).
    pub fn node(&self) -> &str {
        self.get("NodeList").unwrap_or("")
    }

    /// `ExitCode=STATUS:SIGNAL` as one exit code (128 + signal when killed).
    pub fn exit_code(&self) -> Option<i64> {
        let (status, signal) = self.get("ExitCode")?.split_once(':')?;
        let status: i64 = status.parse().ok()?;
        let signal: i64 = signal.parse().ok()?;
        Some(if signal != 0 { 128 + signal } else { status })
    }

    /// What the job's state means for the lifecycle.
    pub fn outcome(&self) -> JobOutcome {
        let state = self.state();
        match state {
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
            | "RESV_DEL_HOLD" => JobOutcome::Pending,
            "RUNNING" | "COMPLETING" | "SUSPENDED" | "STAGE_OUT" | "SIGNALING" | "RESIZING"
            | "STOPPED" => JobOutcome::Running,
            "COMPLETED" | "FAILED" => match self.exit_code() {
                Some(code) => JobOutcome::Exited(code),
                None => JobOutcome::Lost(format!("{state} without an exit code")),
            },
            "CANCELLED" => JobOutcome::Cancelled,
            // The batch script ran but Slurm ended it: the command's status is unknown.
            other => JobOutcome::Lost(format!("{other} (reason {})", self.reason())),
        }
    }

    /// Whether Slurm still holds the job in its queue (not terminal).
    pub fn is_active(&self) -> bool {
        matches!(self.outcome(), JobOutcome::Pending | JobOutcome::Running)
    }
}

/// What a job's state means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Waiting (held, or for a node).
    Pending,
    /// The batch script runs.
    Running,
    /// The step ended with this status.
    Exited(i64),
    /// Cancelled (`scancel`) before or while it ran.
    Cancelled,
    /// Ended by Slurm without a status of the command (node failure, time limit...).
    Lost(String),
}

/// A pending job's reason that means no node will ever run it as asked.
pub fn never_runs(reason: &str) -> bool {
    matches!(
        reason,
        "BadConstraints"
            | "PartitionConfig"
            | "ReqNodeNotAvail"
            | "PartitionNodeLimit"
            | "InvalidQOS"
            | "InvalidAccount"
            | "PartitionDown"
            | "NodeDown"
    )
}

/// The strings of a JSON array (none when it is not one).
pub(crate) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn flags_of(options: &[String]) -> MountFlags {
    let has = |o: &str| options.iter().any(|x| x == o);
    MountFlags {
        nosuid: has("nosuid"),
        nodev: has("nodev"),
        noexec: has("noexec"),
    }
}

/// What the bundle's `config.json` asks runc to do, as the audit reads a container. The
/// special filesystems (`/proc`, `/dev`, `/sys`...) are runc's, as on every engine, and are
/// not reported. The gate's bind is reported: the audit requires it read-only and from the
/// gate on the nodes ([`mount_plan_launch::Engine::gate_source`]).
pub fn observe(
    id: &str,
    name: &str,
    image: &str,
    labels: BTreeMap<String, String>,
    job: Option<&JobRecord>,
    config: &Value,
) -> ObservedContainer {
    let special = ["proc", "devpts", "mqueue", "sysfs", "cgroup"];
    let mut binds = Vec::new();
    let mut tmpfs = Vec::new();
    let mut other_mounts = Vec::new();
    for m in config["mounts"].as_array().into_iter().flatten() {
        let target = m["destination"].as_str().unwrap_or("").to_owned();
        let kind = m["type"].as_str().unwrap_or("").to_owned();
        let options = strings(&m["options"]);
        let is_bind = kind == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        if special.contains(&kind.as_str()) || target.starts_with("/dev") {
            continue;
        }
        if is_bind {
            let propagation = options
                .iter()
                .find(|o| {
                    matches!(
                        o.as_str(),
                        "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
                    )
                })
                .cloned();
            binds.push(ObservedBind {
                source: m["source"].as_str().unwrap_or("").to_owned(),
                target,
                read_only: options.iter().any(|o| o == "ro"),
                propagation: Some(propagation.unwrap_or_else(|| "rprivate".into())),
                non_recursive: Some(!options.iter().any(|o| o == "rbind")),
                flags: Some(flags_of(&options)),
            });
        } else if kind == "tmpfs" {
            let value = |key: &str| {
                options
                    .iter()
                    .find_map(|o| o.strip_prefix(key).map(str::to_owned))
            };
            tmpfs.push(ObservedTmpfs {
                target,
                read_only: Some(options.iter().any(|o| o == "ro")),
                mode: value("mode=").and_then(|m| u32::from_str_radix(&m, 8).ok()),
                size_bytes: value("size=").and_then(|s| s.parse().ok()),
                flags: Some(flags_of(&options)),
                copies_up: Some(false),
            });
        } else {
            other_mounts.push(ObservedOtherMount {
                kind,
                source: m["source"].as_str().map(str::to_owned),
                target,
            });
        }
    }
    let process = &config["process"];
    let namespaces: Vec<String> = config["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["type"].as_str().map(str::to_owned))
        .collect();
    let ns = |kind: &str| {
        if namespaces.iter().any(|n| n == kind) {
            "private".to_owned()
        } else {
            "host".to_owned()
        }
    };
    let devices = config["linux"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["path"].as_str().map(str::to_owned))
        .chain(
            config["linux"]["resources"]["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["allow"].as_bool() == Some(true))
                .map(|d| d.to_string()),
        )
        .collect();
    let user = &process["user"];
    ObservedContainer {
        id: id.to_owned(),
        name: name.to_owned(),
        image: image.to_owned(),
        // A Slurm job runs an image named by its id, unpacked: nothing to resolve.
        image_id: None,
        labels,
        state: job.map(|j| j.state().to_ascii_lowercase()),
        exit_code: job.and_then(|j| match j.outcome() {
            JobOutcome::Exited(c) => Some(c),
            _ => None,
        }),
        first_pid: None,
        working_dir: process["cwd"].as_str().map(str::to_owned),
        user: Some(format!(
            "{}:{}",
            user["uid"].as_u64().unwrap_or(0),
            user["gid"].as_u64().unwrap_or(0)
        )),
        binds,
        tmpfs: Some(tmpfs),
        other_mounts,
        volumes_from: Vec::new(),
        privileged: false,
        no_new_privileges: process["noNewPrivileges"].as_bool() == Some(true),
        cap_add: Vec::new(),
        cap_drop: vec!["ALL".to_owned()],
        cap_bounding: Some(strings(&process["capabilities"]["bounding"])),
        devices,
        security_opt: Vec::new(),
        namespaces: ObservedNamespaces {
            network: ns("network"),
            pid: ns("pid"),
            ipc: ns("ipc"),
            uts: ns("uts"),
            userns: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_state_and_exit_code() {
        let r = JobRecord::parse("JobId=7 JobName=mount-plan-k JobState=FAILED Reason=NonZeroExitCode ExitCode=7:0 WorkDir=/s/b");
        assert_eq!(r.id(), "7");
        assert_eq!(r.outcome(), JobOutcome::Exited(7));
        assert_eq!(r.work_dir(), "/s/b");
        let killed = JobRecord::parse("JobId=8 JobState=FAILED ExitCode=0:9");
        assert_eq!(killed.outcome(), JobOutcome::Exited(137));
        let held = JobRecord::parse("JobId=9 JobState=PENDING Reason=JobHeldUser ExitCode=0:0");
        assert!(held.is_active());
        let lost = JobRecord::parse("JobId=9 JobState=NODE_FAIL Reason=NodeDown ExitCode=0:0");
        assert!(matches!(lost.outcome(), JobOutcome::Lost(m) if m.contains("NODE_FAIL")));
    }

    #[test]
    fn a_recursive_shared_bind_is_reported_as_such() {
        let config = serde_json::json!({
            "process": {"cwd": "/w/j", "user": {"uid": 1, "gid": 2}, "noNewPrivileges": false,
                         "capabilities": {"bounding": ["CAP_MKNOD"]}},
            "mounts": [
                {"destination": "/w/j", "type": "bind", "source": "/s/j", "options": ["rbind", "rw", "shared"]},
                {"destination": "/w", "type": "tmpfs", "source": "tmpfs", "options": ["ro", "mode=0555", "size=1024"]},
            ],
            "linux": {"namespaces": [{"type": "pid"}]},
        });
        let o = observe("1", "n", "i", BTreeMap::new(), None, &config);
        assert_eq!(o.binds[0].non_recursive, Some(false));
        assert_eq!(o.binds[0].propagation.as_deref(), Some("shared"));
        assert_eq!(o.tmpfs.as_ref().unwrap()[0].mode, Some(0o555));
        assert_eq!(o.namespaces.network, "host");
        assert_eq!(o.cap_bounding, Some(vec!["CAP_MKNOD".to_owned()]));
        assert!(!o.no_new_privileges);
    }

    /// The gate's bind is reported as written, so that the audit sees a writable gate or one
    /// bound from another file than the gate on the nodes.
    #[test]
    fn the_gate_bind_is_reported_for_the_audit() {
        use mount_plan_launch::gate::GATE_PATH;
        let observed = |source: &str, ro: &str| {
            let config = serde_json::json!({
                "process": {"cwd": "/w/j"},
                "mounts": [
                    {"destination": GATE_PATH, "type": "bind", "source": source, "options": ["bind", ro, "private"]},
                ],
            });
            observe("1", "n", "i", BTreeMap::new(), None, &config)
        };
        let on_nodes = mount_plan_launch::gate::GATE_ON_NODES;
        let o = observed(on_nodes, "ro");
        assert_eq!(o.binds.len(), 1, "{o:?}");
        assert!(o.binds[0].read_only && o.binds[0].target == GATE_PATH);
        assert!(mount_plan_spec::audit_gate_bind(&o, on_nodes).is_empty());
        let o = observed("/tmp/evil", "ro");
        let d = mount_plan_spec::audit_gate_bind(&o, on_nodes);
        assert!(format!("{d:?}").contains("/tmp/evil"), "{d:?}");
        let o = observed(on_nodes, "rw");
        assert!(!o.binds[0].read_only);
    }
}
