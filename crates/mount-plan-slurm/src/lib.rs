//! # mount-plan-slurm: the Slurm backend
//!
//! **Guarantee.** [`SlurmEngine`] runs a verified plan's job as a Slurm batch job whose one
//! step runs the plan as an OCI bundle (`srun --container=BUNDLE`, the OCI runtime the site's
//! `oci.conf` names): the plan's mounts as written by [`mount_plan::MountPlan::oci_mounts`]
//! (binds non-recursive and private, read-only where planned, with nosuid/nodev/noexec: runc
//! applies per-mount flags, unlike Docker), the plan's working directory, every capability
//! dropped but those the launch grants, no-new-privileges, a network namespace of its own, a
//! device cgroup that denies every device, the gate as the process's first program and the
//! image's entrypoint and command after it. The job runs on a node Slurm chooses within the
//! launch's placement (`node.hostname`, `node.labels.slurm.partition`, `node.labels.slurm.feature`).
//!
//! **How it talks to Slurm.** Through the commands a site's own tooling uses (`sbatch`,
//! `scontrol`, `scancel`, `sinfo`), run behind a configured prefix (`ssh login-node`,
//! `docker exec -i CONTROLLER`, or nothing on a login node). Not `slurmrestd`: its API
//! version changes with every Slurm release (v0.0.36 to v0.0.38 in 22.05 alone), it needs JWT
//! or a local socket set up by the site, and many sites do not run it; the commands are on
//! every login node, authenticate the user by munge, and their `--parsable` and `--oneliner`
//! forms have been stable for a decade.
//!
//! **The lifecycle.** `create` writes the bundle on the shared filesystem (`config.json`, a
//! per-job `rootfs` of hard links to the image unpacked once, the batch script, the labels)
//! and submits the job held (`sbatch --hold`): nothing runs until the lifecycle has audited
//! the bundle; `start` is `scontrol release`. The job's name carries the bundle's key and its
//! comment the launch id, so a lost submit answer is resolved by listing. `wait` reads the
//! exit code from `scontrol show job` (Slurm keeps a finished job for `MinJobAge`; no
//! accounting database is needed); `logs` follows the step's output files; `stop` signals
//! the step (`scancel --signal=TERM`), then ends the job after the grace (`scancel`); `remove` cancels a job
//! still queued or running and deletes its bundle.
//!
//! **Limits.** The audit reads the bundle's `config.json`, what runc is asked to do; what the
//! node did is proven only from inside the job (the gate, the conformance probe). Slurm
//! 22.05.8 runs `BUNDLE/rootfs` whatever `root.path` says (measured), hence the per-job hard
//! link tree. The job's environment is Slurm's step environment (its `SLURM_*` variables)
//! merged with the image's and the launch's. Network `none` only: a job without a network
//! namespace would share the node's.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bundle;
pub mod doctor;
pub mod image;
pub mod observe;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use mount_plan_launch::identity::LABEL_LAUNCH;
use mount_plan_launch::{
    Availability, CheckOutcome, CreateRequest, Created, Engine, EngineInfo, EngineReport,
    ExitStatus, LaunchError, LaunchId, Listed, LogChunk, LogStream, ObservedContainer,
    OutputStream, Protection, Removal, SiteCheck,
};
use serde_json::Value;

pub use bundle::{ImageConfig, ENGINE};
pub use observe::{JobOutcome, JobRecord};

/// How often `start`, `wait`, `logs` and `remove` poll Slurm.
const POLL: Duration = Duration::from_millis(250);
/// How long `remove` waits for a cancelled job to leave the queue.
const REMOVE_WAIT: Duration = Duration::from_secs(60);

/// Where and how to reach a Slurm cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmConfig {
    /// The words put before every Slurm command (`["ssh", "login1"]`,
    /// `["docker", "exec", "-i", "ctl"]`); empty: run them here.
    pub command_prefix: Vec<String>,
    /// The shared directory, the same path on this machine and every node: images
    /// (`images/<id>`) and bundles (`bundles/<key>`) live there.
    pub shared: PathBuf,
    /// The partition jobs go to unless the placement names one (`None`: Slurm's default).
    pub partition: Option<String>,
    /// Where the gate is on every node.
    pub gate_on_nodes: String,
}

impl SlurmConfig {
    /// A configuration with the default gate path and partition.
    pub fn new(command_prefix: Vec<String>, shared: impl Into<PathBuf>) -> Self {
        SlurmConfig {
            command_prefix,
            shared: shared.into(),
            partition: None,
            gate_on_nodes: mount_plan_launch::gate::GATE_ON_NODES.to_owned(),
        }
    }

    /// From the environment: `MOUNT_PLAN_SLURM_COMMAND` (the prefix, split on spaces),
    /// `MOUNT_PLAN_SLURM_SHARED` (required), `MOUNT_PLAN_SLURM_PARTITION`.
    pub fn from_env() -> Option<Self> {
        let shared = std::env::var("MOUNT_PLAN_SLURM_SHARED").ok()?;
        let prefix = std::env::var("MOUNT_PLAN_SLURM_COMMAND")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let mut config = SlurmConfig::new(prefix, shared);
        config.partition = std::env::var("MOUNT_PLAN_SLURM_PARTITION")
            .ok()
            .filter(|p| !p.is_empty());
        Some(config)
    }

    fn bundles(&self) -> PathBuf {
        self.shared.join("bundles")
    }
}

/// What one Slurm command answered.
#[derive(Debug)]
struct Answer {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// A connected Slurm cluster.
#[derive(Debug, Clone)]
pub struct SlurmEngine {
    config: SlurmConfig,
    info: EngineInfo,
}

impl SlurmEngine {
    /// Check that Slurm answers (`sinfo --version`, `scontrol ping`) and that the shared
    /// directory exists here.
    pub async fn connect(config: SlurmConfig) -> Result<Self, LaunchError> {
        let endpoint = if config.command_prefix.is_empty() {
            "local commands".to_owned()
        } else {
            config.command_prefix.join(" ")
        };
        let refused = |why: String| LaunchError::Connect {
            engine: ENGINE,
            endpoint: endpoint.clone(),
            source: why.into(),
        };
        if !config.shared.is_dir() {
            return Err(refused(format!(
                "slurm rule `shared-dir`: the shared directory {} is not a directory here",
                config.shared.display()
            )));
        }
        let mut engine = SlurmEngine {
            info: EngineInfo {
                engine: ENGINE.into(),
                endpoint: endpoint.clone(),
                version: String::new(),
                api_version: "commands".into(),
                runtime: Some("oci.conf's runtime (runc) on the nodes".into()),
                rootless: false,
                user_namespace: false,
            },
            config,
        };
        let version = engine
            .run("connect", &["sinfo", "--version"])
            .await
            .map_err(|e| refused(e.to_string()))?;
        if !version.ok {
            return Err(refused(format!(
                "sinfo --version failed: {}",
                version.stderr.trim()
            )));
        }
        engine.info.version = version.stdout.trim().to_owned();
        let ping = engine
            .run("connect", &["scontrol", "ping"])
            .await
            .map_err(|e| refused(e.to_string()))?;
        if !ping.ok || !ping.stdout.contains("UP") {
            return Err(refused(format!(
                "slurm rule `controller`: scontrol ping: {}{}",
                ping.stdout.trim(),
                ping.stderr.trim()
            )));
        }
        Ok(engine)
    }

    /// The configuration.
    pub fn config(&self) -> &SlurmConfig {
        &self.config
    }

    /// Run one Slurm command behind the prefix. A command that could not be run at all is a
    /// lost answer (the caller cannot know whether it took effect); a command that ran and
    /// failed is an answer (`ok: false`).
    async fn run(&self, op: &'static str, words: &[&str]) -> Result<Answer, LaunchError> {
        self.run_with_input(op, words, None).await
    }

    /// [`SlurmEngine::run`], with `input` on the command's standard input (`srun` gives it to
    /// its task).
    async fn run_with_input(
        &self,
        op: &'static str,
        words: &[&str],
        input: Option<&str>,
    ) -> Result<Answer, LaunchError> {
        let mut all: Vec<&str> = self
            .config
            .command_prefix
            .iter()
            .map(String::as_str)
            .collect();
        all.extend_from_slice(words);
        let lost = |e: std::io::Error| LaunchError::AnswerLost {
            op,
            container: String::new(),
            source: format!("slurm rule `command`: cannot run {}: {e}", all.join(" ")).into(),
        };
        let mut child = tokio::process::Command::new(all[0])
            .args(&all[1..])
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(lost)?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            stdin.write_all(text.as_bytes()).await.map_err(lost)?;
        }
        let output = child.wait_with_output().await.map_err(lost)?;
        Ok(Answer {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// The job's record, `None` when Slurm no longer knows it (purged after `MinJobAge`, or
    /// never existed) or when it is not a mount-plan job.
    async fn job(&self, op: &'static str, id: &str) -> Result<Option<JobRecord>, LaunchError> {
        check_job_id(id)?;
        let a = self
            .run(op, &["scontrol", "show", "job", "--oneliner", id])
            .await?;
        if !a.ok {
            if a.stderr.contains("Invalid job id") {
                return Ok(None);
            }
            return Err(LaunchError::Engine {
                op,
                container: id.to_owned(),
                source: format!("scontrol show job: {}", a.stderr.trim()).into(),
            });
        }
        // A job that is not mount-plan's is not ours to report, signal or cancel (a
        // controller that lost its state numbers jobs from 1 again).
        Ok(JobRecord::parse_all(&a.stdout)
            .into_iter()
            .next()
            .filter(|r| r.name().starts_with(bundle::JOB_NAME_PREFIX)))
    }

    /// Every job Slurm holds (queued, running, or finished within `MinJobAge`).
    async fn jobs(&self, op: &'static str) -> Result<Vec<JobRecord>, LaunchError> {
        let a = self
            .run(op, &["scontrol", "show", "job", "--oneliner"])
            .await?;
        if !a.ok {
            return Err(LaunchError::Engine {
                op,
                container: String::new(),
                source: format!("scontrol show job: {}", a.stderr.trim()).into(),
            });
        }
        Ok(JobRecord::parse_all(&a.stdout))
    }

    /// The bundle of job `id`: from its record, else from the job-id files of the bundles
    /// (a job Slurm has forgotten).
    fn bundle_of(&self, id: &str, record: Option<&JobRecord>) -> Option<PathBuf> {
        if let Some(r) = record {
            let dir = Path::new(r.work_dir());
            if r.name().starts_with(bundle::JOB_NAME_PREFIX)
                && dir.starts_with(self.config.bundles())
            {
                return Some(dir.to_owned());
            }
        }
        let entries = std::fs::read_dir(self.config.bundles()).ok()?;
        entries.flatten().map(|e| e.path()).find(|p| {
            std::fs::read_to_string(p.join(bundle::JOB_ID_FILE)).is_ok_and(|s| s.trim() == id)
        })
    }

    fn not_found(id: &str) -> LaunchError {
        LaunchError::NotFound {
            container: id.to_owned(),
        }
    }

    /// `scancel --signal=SIGNAL ID` (the job's steps, that is the task: runc run, which
    /// forwards it to the container's first process), or with `None` plain `scancel ID`: the
    /// job ends, Slurm signals every process of every step (SIGTERM, then SIGKILL after
    /// KillWait). Never `--signal=KILL`: it kills runc run alone, and on a node whose
    /// proctrack plugin follows the process tree (linuxproc) the container's processes,
    /// re-parented away from the step, run on (measured: a `sleep 60` ran to its end).
    async fn scancel(
        &self,
        op: &'static str,
        id: &str,
        signal: Option<&str>,
    ) -> Result<(), LaunchError> {
        let flag = signal.map(|s| format!("--signal={s}"));
        let mut words = vec!["scancel"];
        words.extend(flag.as_deref());
        words.push(id);
        let a = self.run(op, &words).await?;
        if a.ok
            || a.stderr.contains("already completing or completed")
            || a.stderr.contains("Invalid job id")
        {
            Ok(())
        } else {
            Err(LaunchError::Engine {
                op,
                container: id.to_owned(),
                source: format!("{}: {}", words.join(" "), a.stderr.trim()).into(),
            })
        }
    }
}

/// A job id is digits (it goes into a command line).
fn check_job_id(id: &str) -> Result<(), LaunchError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(LaunchError::NotFound {
            container: id.to_owned(),
        })
    }
}

fn io_err<'a>(op: &'static str, what: &'a Path) -> impl Fn(std::io::Error) -> LaunchError + 'a {
    move |e| LaunchError::Engine {
        op,
        container: String::new(),
        source: format!("{}: {e}", what.display()).into(),
    }
}

/// How this backend honours each protection: runc applies every mount option of the
/// bundle (per-mount nosuid, nodev, noexec included), so all are native.
pub fn availability() -> Vec<(Protection, Availability)> {
    Protection::ALL
        .into_iter()
        .map(|p| (p, Availability::Native))
        .collect()
}

#[async_trait::async_trait]
impl Engine for SlurmEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn report(&self) -> EngineReport {
        EngineReport {
            engine: self.info.clone(),
            protections: availability(),
            warnings: vec![
                "the audit reads the bundle's config.json; what the node's runc made of it is proven only from inside the job (the gate)".into(),
                "the job's environment includes Slurm's SLURM_* variables".into(),
            ],
        }
    }

    /// The gate on the nodes ([`SlurmConfig::gate_on_nodes`]): the audit requires the bundle's
    /// bind at the gate's path to come from exactly there.
    fn gate_source(&self) -> Option<String> {
        Some(self.config.gate_on_nodes.clone())
    }

    /// Each usable node runs a one-task step (`srun --nodelist=NODE sh -s`, the script of
    /// [`doctor`] on its standard input) that prints what its `oci.conf` runs, that runtime's
    /// version, whether it reads back a token written here into the shared directory, and
    /// the workspace's inode and modification time; [`doctor::judge`] decides. A node that
    /// is down or drained is not checked; a step that did not run within 30 s fails
    /// `node-step`.
    async fn site_checks(&self, workspace: Option<&Path>) -> Result<Vec<SiteCheck>, LaunchError> {
        let sinfo = self
            .run("doctor", &["sinfo", "-h", "-N", "-o", "%N|%P|%t"])
            .await?;
        if !sinfo.ok {
            return Err(LaunchError::Engine {
                op: "doctor",
                container: String::new(),
                source: format!("sinfo: {}", sinfo.stderr.trim()).into(),
            });
        }
        let nodes = doctor::parse_nodes(&sinfo.stdout, self.config.partition.as_deref());
        let shared = self.config.shared.display().to_string();
        let token_file = tempfile::Builder::new()
            .prefix(".mount-plan-doctor-")
            .tempfile_in(&self.config.shared)
            .map_err(io_err("doctor", &self.config.shared))?;
        let token = format!("{} {}", token_file.path().display(), std::process::id());
        std::fs::write(token_file.path(), &token).map_err(io_err("doctor", token_file.path()))?;
        let here = match workspace {
            Some(w) => {
                use std::os::unix::fs::MetadataExt;
                let m = std::fs::symlink_metadata(w).map_err(io_err("doctor", w))?;
                Some((
                    w.display().to_string(),
                    format!("{} {}", m.ino(), m.mtime()),
                ))
            }
            None => None,
        };
        let expected = doctor::Expected {
            shared: &shared,
            token: &token,
            workspace: here.as_ref().map(|(w, h)| (w.as_str(), h.as_str())),
        };
        let script = doctor::node_script(
            &token_file.path().display().to_string(),
            here.as_ref().map(|(w, _)| w.as_str()),
        );
        let steps = nodes.iter().map(|node| async {
            if !node.usable() {
                return vec![SiteCheck {
                    place: node.name.clone(),
                    rule: doctor::RULE_STEP,
                    outcome: CheckOutcome::NotChecked,
                    detail: format!("state {}: no step runs there", node.state),
                }];
            }
            let nodelist = format!("--nodelist={}", node.name);
            let partition = format!("--partition={}", node.partition);
            let words = [
                "srun",
                nodelist.as_str(),
                partition.as_str(),
                "--nodes=1",
                "--ntasks=1",
                "--time=1",
                "--immediate=30",
                "--job-name=doctor.mount-plan",
                "--quiet",
                "sh",
                "-s",
            ];
            match self.run_with_input("doctor", &words, Some(&script)).await {
                Ok(a) if a.ok => {
                    let mut checks = vec![SiteCheck {
                        place: node.name.clone(),
                        rule: doctor::RULE_STEP,
                        outcome: CheckOutcome::Passed,
                        detail: format!("a step ran in partition {}", node.partition),
                    }];
                    checks.extend(doctor::judge(
                        &node.name,
                        &doctor::NodeView::parse(&a.stdout),
                        &expected,
                    ));
                    checks
                }
                failed => vec![SiteCheck {
                    place: node.name.clone(),
                    rule: doctor::RULE_STEP,
                    outcome: CheckOutcome::Failed,
                    detail: match failed {
                        Ok(a) => format!("srun failed: {}", a.stderr.trim()),
                        Err(e) => e.to_string(),
                    },
                }],
            }
        });
        let checks = futures_util::future::join_all(steps).await;
        drop(token_file);
        Ok(checks.into_iter().flatten().collect())
    }

    /// Write the bundle and submit the job held: nothing runs until `start`.
    async fn create(&self, request: &CreateRequest<'_>) -> Result<Created, LaunchError> {
        let plan = request.plan.plan();
        let spec = request.spec;
        let image_ref = spec.image.to_string();
        if !image::is_image_id(&image_ref) {
            return Err(LaunchError::ImageNotFound {
                image: image_ref,
                source: "slurm rule `image-by-id`: a Slurm job runs an image unpacked on the shared filesystem, named sha256:<id> (see `mount_plan_slurm::image`)".into(),
            });
        }
        let image_dir = image::image_dir(&self.config.shared, &image_ref);
        let image_config = image::read_config(&self.config.shared, &image_ref).map_err(|e| {
            LaunchError::ImageNotFound {
                image: image_ref.clone(),
                source: format!(
                    "slurm rule `image-unpacked`: {} holds no unpacked image: {e}",
                    image_dir.display()
                )
                .into(),
            }
        })?;
        // The job runs on another machine, which numbers devices its own way.
        let gate = request.gate.clone().node_local_devices();
        let (entrypoint, command) =
            gate.command_line(spec, &image_config.entrypoint, &image_config.cmd)?;
        let args: Vec<String> = entrypoint.into_iter().chain(command).collect();
        let config =
            bundle::config_json(plan, spec, &image_config, &self.config.gate_on_nodes, &args)?;
        let placement = bundle::placement_args(spec, self.config.partition.as_deref())?;
        let launch = request
            .labels
            .get(LABEL_LAUNCH)
            .cloned()
            .unwrap_or_default();
        let key = LaunchId::new().to_string();
        let root_target = plan.root_tmpfs().target().to_string();
        let bundles = self.config.bundles();
        let dir = bundles.join(&key);
        let write = |dir: &Path| -> std::io::Result<()> {
            std::fs::create_dir_all(&bundles)?;
            std::fs::create_dir(dir)?;
            std::fs::write(
                dir.join("config.json"),
                serde_json::to_vec_pretty(&config).map_err(std::io::Error::other)?,
            )?;
            std::fs::write(
                dir.join(bundle::LABELS_FILE),
                serde_json::to_vec(request.labels).map_err(std::io::Error::other)?,
            )?;
            let script = dir.join(bundle::SCRIPT_FILE);
            std::fs::write(&script, bundle::batch_script(&dir.to_string_lossy(), &args))?;
            std::fs::set_permissions(
                &script,
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
            )?;
            image::link_tree(&image_dir.join("rootfs"), &dir.join("rootfs"))?;
            // R's mount point, with R's planned mode: runc before 1.1.8 gives a tmpfs the
            // mode of the directory it is mounted on (Debian 12 ships 1.1.5).
            image::mount_point(&dir.join("rootfs"), &root_target, plan.root_tmpfs().mode())
        };
        if let Err(e) = write(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(LaunchError::Create {
                job: plan.job().to_string(),
                source: format!("slurm rule `bundle`: writing {}: {e}", dir.display()).into(),
            });
        }
        let words = bundle::sbatch_args(&dir.to_string_lossy(), &key, &launch, &placement);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        // Not run at all: a lost answer (the bundle stays, for the look-up by launch id).
        let a = self.run("create", &words).await?;
        let id = a.stdout.trim().split(';').next().unwrap_or("").to_owned();
        if !a.ok && a.stderr.contains("sbatch: error") {
            // Slurm's own "no": nothing was queued.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(LaunchError::Create {
                job: plan.job().to_string(),
                source: format!("sbatch: {}", a.stderr.trim()).into(),
            });
        }
        if check_job_id(&id).is_err() {
            // The prefix (ssh, docker exec) failed or the answer was cut: the job may be
            // queued. The lifecycle finds it by the launch id in its comment.
            return Err(LaunchError::AnswerLost {
                op: "create",
                container: String::new(),
                source: format!(
                    "slurm rule `submit-answer`: sbatch answered {:?} ({})",
                    a.stdout.trim(),
                    a.stderr.trim()
                )
                .into(),
            });
        }
        std::fs::write(dir.join(bundle::JOB_ID_FILE), &id).map_err(io_err("create", &dir))?;
        Ok(Created::unchecked(id))
    }

    /// Release the held job, and return once its batch script runs (or has already ended).
    /// A job no node can take (bad constraints, a node list Slurm cannot meet) is a start
    /// error: it is cancelled, and the command never ran.
    async fn start(&self, id: &str) -> Result<(), LaunchError> {
        check_job_id(id)?;
        let a = self.run("start", &["scontrol", "release", id]).await?;
        if !a.ok {
            return Err(LaunchError::Start {
                container: id.to_owned(),
                source: format!("scontrol release: {}", a.stderr.trim()).into(),
            });
        }
        loop {
            let record = self
                .job("start", id)
                .await?
                .ok_or_else(|| Self::not_found(id))?;
            match record.outcome() {
                JobOutcome::Pending => {
                    if observe::never_runs(record.reason()) {
                        self.scancel("start", id, None).await?;
                        return Err(LaunchError::Start {
                            container: id.to_owned(),
                            source: format!(
                                "slurm rule `unschedulable`: no node can run the job (reason {})",
                                record.reason()
                            )
                            .into(),
                        });
                    }
                }
                _ => return Ok(()),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn inspect(&self, id: &str) -> Result<ObservedContainer, LaunchError> {
        let record = self.job("inspect", id).await?;
        let dir = self
            .bundle_of(id, record.as_ref())
            .ok_or_else(|| Self::not_found(id))?;
        let config: Value = std::fs::read(dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| Self::not_found(id))?;
        let labels: BTreeMap<String, String> = std::fs::read(dir.join(bundle::LABELS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let name = dir
            .file_name()
            .map(|n| format!("{}{}", bundle::JOB_NAME_PREFIX, n.to_string_lossy()))
            .unwrap_or_default();
        let image = labels
            .get("io.mount-plan.image")
            .cloned()
            .unwrap_or_default();
        Ok(observe::observe(
            id,
            &name,
            &image,
            labels,
            record.as_ref(),
            &config,
        ))
    }

    /// Poll the job until it is terminal. The exit code is the step's (the batch script
    /// `exec`s srun, whose status is the task's); a step whose runtime could not start the
    /// container is a start error, and a job Slurm ended without a status (node failure) an
    /// engine error naming the node: no status is ever guessed.
    async fn wait(&self, id: &str) -> Result<ExitStatus, LaunchError> {
        loop {
            let record = self
                .job("wait", id)
                .await?
                .ok_or_else(|| Self::not_found(id))?;
            match record.outcome() {
                JobOutcome::Pending | JobOutcome::Running => {}
                JobOutcome::Exited(code) => {
                    if code != 0 {
                        if let Some(why) = self.runtime_failure(id, &record) {
                            return Err(LaunchError::Start {
                                container: id.to_owned(),
                                source: format!(
                                    "slurm rule `runtime`: the OCI runtime on node {} did not run the job: {why}",
                                    record.node()
                                )
                                .into(),
                            });
                        }
                    }
                    return Ok(ExitStatus { code });
                }
                JobOutcome::Cancelled => {
                    return Err(LaunchError::Engine {
                        op: "wait",
                        container: id.to_owned(),
                        source: format!(
                            "slurm rule `scancelled`: job {id} on node {} was cancelled (scancel) before it ended",
                            record.node()
                        )
                        .into(),
                    })
                }
                JobOutcome::Lost(state) => {
                    return Err(LaunchError::Engine {
                        op: "wait",
                        container: id.to_owned(),
                        source: format!(
                            "slurm rule `job-lost`: job {id} on node {} ended {state} without the command's exit status",
                            record.node()
                        )
                        .into(),
                    })
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The step's output files, followed from their start until the job is terminal.
    fn logs(&self, id: &str) -> LogStream {
        let this = self.clone();
        let id = id.to_owned();
        let stream = futures_util::stream::unfold(
            (this, id, [0u64; 2], false, None::<PathBuf>),
            |(this, id, mut offsets, done, mut dir)| async move {
                if done {
                    return None;
                }
                loop {
                    let record = match this.job("logs", &id).await {
                        Ok(r) => r,
                        Err(e) => return Some((vec![Err(e)], (this, id, offsets, true, dir))),
                    };
                    if dir.is_none() {
                        dir = this.bundle_of(&id, record.as_ref());
                    }
                    let finished = record.as_ref().is_none_or(|r| !r.is_active());
                    let mut chunks = Vec::new();
                    if let Some(d) = &dir {
                        for (i, (file, stream)) in [
                            (bundle::STDOUT_FILE, OutputStream::Stdout),
                            (bundle::STDERR_FILE, OutputStream::Stderr),
                        ]
                        .into_iter()
                        .enumerate()
                        {
                            if let Some(bytes) = read_from(&d.join(file), offsets[i]) {
                                offsets[i] += bytes.len() as u64;
                                chunks.push(Ok(LogChunk { stream, bytes }));
                            }
                        }
                    }
                    if finished || !chunks.is_empty() {
                        return Some((chunks, (this, id, offsets, finished, dir)));
                    }
                    tokio::time::sleep(POLL).await;
                }
            },
        );
        stream.flat_map(futures_util::stream::iter).boxed()
    }

    /// Signal the step (SIGTERM), then end the job once `grace` has passed (Slurm signals
    /// every process of the step, SIGKILL after its KillWait). A job that is not running is
    /// not an error.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), LaunchError> {
        let Some(record) = self.job("stop", id).await? else {
            return Ok(());
        };
        if !record.is_active() {
            return Ok(());
        }
        self.scancel("stop", id, Some("TERM")).await?;
        let until = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < until {
            match self.job("stop", id).await? {
                Some(r) if r.is_active() => tokio::time::sleep(POLL).await,
                _ => return Ok(()),
            }
        }
        self.scancel("stop", id, None).await
    }

    /// Cancel the job if Slurm still holds it queued or running, wait until it left the
    /// queue, and delete its bundle.
    async fn remove(&self, id: &str) -> Result<Removal, LaunchError> {
        let record = self.job("remove", id).await?;
        let dir = self.bundle_of(id, record.as_ref());
        let mut removed = false;
        if record.as_ref().is_some_and(JobRecord::is_active) {
            self.scancel("remove", id, None).await?;
            removed = true;
            let until = tokio::time::Instant::now() + REMOVE_WAIT;
            loop {
                match self.job("remove", id).await? {
                    Some(r) if r.is_active() => {
                        if tokio::time::Instant::now() > until {
                            return Err(LaunchError::Engine {
                                op: "remove",
                                container: id.to_owned(),
                                source: format!(
                                    "slurm rule `cancel-timeout`: job {id} still {} on node {} after scancel",
                                    r.state(),
                                    r.node()
                                )
                                .into(),
                            });
                        }
                        tokio::time::sleep(POLL).await;
                    }
                    _ => break,
                }
            }
        }
        if let Some(dir) = dir.filter(|d| d.exists()) {
            std::fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
            removed = true;
        }
        Ok(if removed {
            Removal::Removed
        } else {
            Removal::AlreadyGone
        })
    }

    /// The jobs of mount-plan carrying `key=value`: those Slurm holds queued or running, and
    /// those whose bundle is still on the shared filesystem (not yet removed).
    async fn list(&self, key: &str, value: &str) -> Result<Vec<Listed>, LaunchError> {
        let jobs = self.jobs("list").await?;
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for r in &jobs {
            let Some(bundle_key) = r.name().strip_prefix(bundle::JOB_NAME_PREFIX) else {
                continue;
            };
            let dir = self.config.bundles().join(bundle_key);
            if !r.is_active() && !dir.exists() {
                continue;
            }
            seen.insert(dir.clone());
            let labels = read_labels(&dir);
            if labels.get(key).map(String::as_str) != Some(value) {
                // A lost create answer: the comment carries the launch id even when the
                // bundle's labels could not be read.
                let by_comment = key == LABEL_LAUNCH
                    && r.get("Comment")
                        .and_then(|c| c.strip_prefix(bundle::COMMENT_PREFIX))
                        == Some(value);
                if !by_comment {
                    continue;
                }
            }
            out.push(Listed {
                id: r.id().to_owned(),
                labels,
                state: Some(r.state().to_ascii_lowercase()),
                created_unix: None,
            });
        }
        // Bundles whose job Slurm has forgotten (finished longer than MinJobAge ago).
        if let Ok(entries) = std::fs::read_dir(self.config.bundles()) {
            for dir in entries.flatten().map(|e| e.path()) {
                if seen.contains(&dir) {
                    continue;
                }
                let Ok(id) = std::fs::read_to_string(dir.join(bundle::JOB_ID_FILE)) else {
                    continue;
                };
                let labels = read_labels(&dir);
                if labels.get(key).map(String::as_str) == Some(value) {
                    out.push(Listed {
                        id: id.trim().to_owned(),
                        labels,
                        state: Some("gone".into()),
                        created_unix: None,
                    });
                }
            }
        }
        Ok(out)
    }
}

impl SlurmEngine {
    /// The OCI runtime's own failure line in the step's error output (`runc run failed:`),
    /// when the container never ran the command.
    fn runtime_failure(&self, id: &str, record: &JobRecord) -> Option<String> {
        let dir = self.bundle_of(id, Some(record))?;
        let err = std::fs::read_to_string(dir.join(bundle::STDERR_FILE)).ok()?;
        err.lines()
            .find(|l| l.contains("runc run failed") || l.contains("level=error"))
            .map(str::to_owned)
    }
}

fn read_labels(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read(dir.join(bundle::LABELS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The bytes of `path` from `offset`, if there are any.
fn read_from(path: &Path, offset: u64) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut out = Vec::new();
    f.read_to_end(&mut out).ok()?;
    (!out.is_empty()).then_some(out)
}
