//! The pure half of a Slurm launch: the OCI bundle's `config.json`, the batch script and the
//! `sbatch` arguments, from a verified plan, the caller's spec and the image's own config.
//!
//! What Slurm 22.05.8 does with a bundle (measured on `.ci/slurm-setup`'s cluster, not taken
//! from the manual): `srun --container=BUNDLE` runs oci.conf's `RunTimeRun` with the bundle's
//! `config.json` as given, except that the root filesystem is always `BUNDLE/rootfs` (the
//! `root.path` we write is not used), `process.args` become srun's command and `process.env`
//! the step's environment merged over ours. The mounts, the working directory, the user, the
//! capabilities and `noNewPrivileges` are runc's to apply as written. So the bundle holds a
//! per-job `rootfs` (hard links to the image unpacked once: [`crate::image`]) and every
//! contract setting is in `config.json`.

use std::collections::BTreeMap;

use mount_plan::MountPlan;
use mount_plan_launch::{LaunchError, LaunchSpec, Network};
use serde_json::{json, Value};

/// The engine id in messages.
pub const ENGINE: &str = "slurm";
/// Every job's name starts with this; the rest is the bundle's key.
pub const JOB_NAME_PREFIX: &str = "mount-plan-";
/// Every job's comment starts with this; the rest is the launch id (Slurm refuses a comment
/// of a few kilobytes, so the labels themselves live in the bundle's `labels.json`).
pub const COMMENT_PREFIX: &str = "mount-plan:";
/// The step's output files, in the bundle directory.
pub const STDOUT_FILE: &str = "stdout";
/// The step's error output file.
pub const STDERR_FILE: &str = "stderr";
/// The batch script's own output (srun's messages), in the bundle directory.
pub const BATCH_LOG_FILE: &str = "batch.log";
/// The labels of the job, in the bundle directory.
pub const LABELS_FILE: &str = "labels.json";
/// The batch script, in the bundle directory.
pub const SCRIPT_FILE: &str = "job.sh";
/// The job id, written once sbatch answered.
pub const JOB_ID_FILE: &str = "job-id";
/// The PATH a job gets when its image names none.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the launch needs of the image's own config (`docker save`'s config blob).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, `KEY=VALUE`.
    pub env: Vec<String>,
    /// `User`, as written (`""`, `UID`, `UID:GID`, or a name).
    pub user: String,
}

impl ImageConfig {
    /// Read from the image config JSON (`{"config": {"Entrypoint": ...}}`).
    pub fn from_json(value: &Value) -> ImageConfig {
        let c = &value["config"];
        let strings = crate::observe::strings;
        ImageConfig {
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            env: strings(&c["Env"]),
            user: c["User"].as_str().unwrap_or("").to_owned(),
        }
    }
}

/// The refusal of what a Slurm job cannot express.
fn unsupported(what: impl Into<String>) -> LaunchError {
    LaunchError::SpecUnsupported {
        engine: ENGINE,
        what: what.into(),
    }
}

/// The process's uid and gid: the launch's user, else the image's (numeric only: the
/// launcher does not read the image's `/etc/passwd`).
pub fn user_of(spec: &LaunchSpec, image: &ImageConfig) -> Result<(u32, u32), LaunchError> {
    if let Some(u) = &spec.user {
        return Ok((u.uid(), u.gid().unwrap_or(u.uid())));
    }
    let user = image.user.trim();
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    match (uid.parse(), gid.parse()) {
        (Ok(u), Ok(g)) => Ok((u, g)),
        _ => Err(unsupported(format!(
            "slurm rule `image-user`: the image's user {user:?} is a name; give --user UID[:GID]"
        ))),
    }
}

/// The bundle's `config.json`: runc's defaults for the special filesystems, the plan's
/// mounts (rendered by [`MountPlan::oci_mounts`]: binds non-recursive and private, with their
/// flags), the gate bound read-only from the node, every capability dropped but the ones the
/// launch grants, no-new-privileges, the plan's working directory, a network namespace of its
/// own (network `none`), and a device cgroup that denies every device.
pub fn config_json(
    plan: &MountPlan,
    spec: &LaunchSpec,
    image: &ImageConfig,
    gate_on_nodes: &str,
    args: &[String],
) -> Result<Value, LaunchError> {
    spec.check()?;
    match &spec.network {
        Network::None => {}
        other => {
            return Err(unsupported(format!(
                "slurm rule `slurm-network`: network {other:?}: a Slurm job runs in a network namespace of its own (none); the node's network would be the host's"
            )))
        }
    }
    if spec.gpus.is_some() {
        return Err(unsupported(
            "slurm rule `slurm-gpus`: GPUs are a site's gres configuration, not built",
        ));
    }
    let (uid, gid) = user_of(spec, image)?;
    let caps: Vec<String> = spec.cap_add.iter().map(ToString::to_string).collect();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for e in std::iter::once(DEFAULT_PATH.to_owned()).chain(image.env.iter().cloned()) {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        env.insert(k.to_owned(), v.to_owned());
    }
    for e in &spec.env {
        env.insert(e.key().to_owned(), e.value().to_owned());
    }
    let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    for m in plan.oci_mounts() {
        mounts.push(json!({
            "destination": m.destination,
            "type": m.kind,
            "source": m.source,
            "options": m.options,
        }));
    }
    mounts.push(json!({
        "destination": mount_plan_launch::gate::GATE_PATH,
        "type": "bind",
        "source": gate_on_nodes,
        "options": ["bind", "ro", "nosuid", "nodev", "private"],
    }));
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(bytes) = spec.resources.memory_bytes() {
        resources["memory"] = json!({"limit": bytes});
    }
    if let Some(nano) = spec.resources.nano_cpus() {
        resources["cpu"] = json!({"quota": nano / 10_000, "period": 100_000});
    }
    if let Some(pids) = spec.resources.pids_limit() {
        resources["pids"] = json!({"limit": pids});
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": plan.workdir().to_string(),
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
                "inheritable": [], "ambient": [],
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": true},
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"},
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    }))
}

/// Quote one word for `/bin/sh`.
pub fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The batch script: the node's name for the gate's messages, then one step running the
/// bundle, its output in the bundle's files. `exec`: the job's exit status is srun's, which is
/// the command's.
pub fn batch_script(bundle: &str, args: &[String]) -> String {
    let words: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
    format!(
        "#!/bin/sh\n# mount-plan job: the plan's container, one step, one task\nexec srun --ntasks=1 --container={b} --output={o} --error={e} --export={n}=\"$SLURMD_NODENAME\" -- {w}\n",
        b = sh_quote(bundle),
        o = sh_quote(&format!("{bundle}/{STDOUT_FILE}")),
        e = sh_quote(&format!("{bundle}/{STDERR_FILE}")),
        n = mount_plan_launch::gate::GATE_NODE_ENV,
        w = words.join(" "),
    )
}

/// Where a job may run, from the launch's placement: `node.hostname==N` (`--nodelist`),
/// `node.hostname!=N` (`--exclude`), `node.labels.slurm.partition==P` (`--partition`),
/// `node.labels.slurm.feature==F` (`--constraint`, all must hold). Anything else is refused.
pub fn placement_args(
    spec: &LaunchSpec,
    default_partition: Option<&str>,
) -> Result<Vec<String>, LaunchError> {
    let mut nodes = Vec::new();
    let mut exclude = Vec::new();
    let mut partition = default_partition.map(str::to_owned);
    let mut features = Vec::new();
    for c in &spec.placement {
        match (c.key(), c.is_equal()) {
            ("node.hostname", true) => nodes.push(c.value().to_owned()),
            ("node.hostname", false) => exclude.push(c.value().to_owned()),
            ("node.labels.slurm.partition", true) => partition = Some(c.value().to_owned()),
            ("node.labels.slurm.feature", true) => features.push(c.value().to_owned()),
            (key, equal) => {
                return Err(unsupported(format!(
                    "slurm rule `placement-key`: {key}{}{}: Slurm places by node.hostname (== or !=), node.labels.slurm.partition== and node.labels.slurm.feature==",
                    if equal { "==" } else { "!=" },
                    c.value()
                )))
            }
        }
    }
    if nodes.len() > 1 {
        return Err(unsupported(format!(
            "slurm rule `one-node`: one job runs on one node, {} named ({})",
            nodes.len(),
            nodes.join(", ")
        )));
    }
    let mut out = Vec::new();
    if let Some(p) = partition {
        out.push(format!("--partition={p}"));
    }
    if let Some(n) = nodes.first() {
        out.push(format!("--nodelist={n}"));
    }
    if !exclude.is_empty() {
        out.push(format!("--exclude={}", exclude.join(",")));
    }
    if !features.is_empty() {
        out.push(format!("--constraint={}", features.join("&")));
    }
    Ok(out)
}

/// The `sbatch` arguments of a job submitted held (nothing runs until `scontrol release`):
/// its name and comment carry the bundle key and the launch id, its output files are in the
/// bundle, its environment is not the submitter's, and it is never requeued.
pub fn sbatch_args(bundle: &str, key: &str, launch: &str, placement: &[String]) -> Vec<String> {
    let mut out = vec![
        "sbatch".to_owned(),
        "--parsable".to_owned(),
        "--hold".to_owned(),
        "--export=NONE".to_owned(),
        // A job whose node fails must not run a second time somewhere else: the launch
        // reports the loss instead.
        "--no-requeue".to_owned(),
        "--nodes=1".to_owned(),
        "--ntasks=1".to_owned(),
        format!("--job-name={JOB_NAME_PREFIX}{key}"),
        format!("--comment={COMMENT_PREFIX}{launch}"),
        format!("--chdir={bundle}"),
        format!("--output={bundle}/{BATCH_LOG_FILE}"),
        format!("--error={bundle}/{BATCH_LOG_FILE}"),
    ];
    out.extend(placement.iter().cloned());
    out.push(format!("{bundle}/{SCRIPT_FILE}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        let s = batch_script(
            "/s/b",
            &["sh".into(), "-c".into(), "echo 'x'; exit 3".into()],
        );
        assert!(s.contains(r"'echo '\''x'\''; exit 3'"), "{s}");
        assert!(s.contains("--container='/s/b'"), "{s}");
    }

    #[test]
    fn image_user_by_name_is_refused_and_numbers_are_read() {
        let spec = LaunchSpec::new("sha256:00".parse().unwrap());
        let mut image = ImageConfig {
            user: "1000:100".into(),
            ..ImageConfig::default()
        };
        assert_eq!(user_of(&spec, &image).unwrap(), (1000, 100));
        image.user = "nobody".into();
        let err = user_of(&spec, &image).unwrap_err().to_string();
        assert!(err.contains("image-user"), "{err}");
    }

    #[test]
    fn placement_maps_and_refuses() {
        let mut spec = LaunchSpec::new("sha256:00".parse().unwrap());
        spec.placement = vec![
            "node.hostname==n1".parse().unwrap(),
            "node.labels.slurm.feature==ssd".parse().unwrap(),
        ];
        assert_eq!(
            placement_args(&spec, Some("mp")).unwrap(),
            ["--partition=mp", "--nodelist=n1", "--constraint=ssd"]
        );
        spec.placement = vec!["node.labels.zone==eu".parse().unwrap()];
        let err = placement_args(&spec, None).unwrap_err().to_string();
        assert!(err.contains("slurm rule `placement-key`"), "{err}");
    }
}
