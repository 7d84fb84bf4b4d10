//! What a container call answers (the launch errors, exit statuses and output chunks) and the
//! labels every container carries. (Not the OCI runtime: that is `runc.rs`.)

use std::collections::BTreeMap;

use futures_util::stream::BoxStream;
use mount_plan::MountPlan;
use sha2::{Digest, Sha256};

use mount_plan_spec::Difference;
use mount_plan_spec::Protection;
use mount_plan_spec::{LaunchSpec, SpecError, LABEL_JOB, LABEL_MANAGED, LABEL_PLAN_DIGEST};

/// An error from an engine client, boxed so that the trait stays engine-neutral.
pub type EngineError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a launch (or another runtime call) failed.
///
/// Each message already ends with the engine's answer (`: {source}`), so print it with `{}`;
/// the cause is also available through `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The engine could not be reached.
    #[error("{rule}cannot reach the {engine} engine at {endpoint:?}: {source}", rule = self.prefix())]
    Connect {
        /// Engine kind.
        engine: &'static str,
        /// Socket path or URL.
        endpoint: String,
        /// Why.
        #[source]
        source: EngineError,
    },
    /// The engine's API is older than a feature the plan needs.
    #[error("{rule}{engine} {engine_version} (API {api_version}) lacks {feature:?}, which needs API {needed} or later", rule = self.prefix())]
    ApiTooOld {
        /// Engine kind.
        engine: &'static str,
        /// Engine version.
        engine_version: String,
        /// Negotiated API version.
        api_version: String,
        /// The missing feature.
        feature: &'static str,
        /// The API version that has it.
        needed: &'static str,
    },
    /// The plan needs a protection this engine cannot honour and the spec does not accept
    /// it as missing.
    #[error("{rule}{engine} {engine_version} (API {api_version}) cannot honour {:?} ({why}); {}", .protection.id(), remedy(*.protection), rule = self.prefix())]
    ProtectionUnavailable {
        /// Engine kind.
        engine: String,
        /// Engine version.
        engine_version: String,
        /// Negotiated API version.
        api_version: String,
        /// The protection (its id).
        protection: Protection,
        /// Why it is missing.
        why: String,
    },
    /// The spec is malformed.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The spec asks for something this engine cannot do (GPUs on an engine without them...).
    #[error("{rule}{engine} cannot apply {what:?}", rule = self.prefix())]
    SpecUnsupported {
        /// Engine kind.
        engine: &'static str,
        /// What it cannot do.
        what: String,
    },
    /// The image does not exist locally (nothing is pulled).
    #[error("{rule}image {image:?} is not present on the engine (nothing is pulled): {source}", rule = self.prefix())]
    ImageNotFound {
        /// The image.
        image: String,
        /// The engine's answer.
        #[source]
        source: EngineError,
    },
    /// Creating the container failed.
    #[error("{rule}creating the container for job {job:?} failed: {source}", rule = self.prefix())]
    Create {
        /// The job.
        job: String,
        /// The engine's answer.
        #[source]
        source: EngineError,
    },
    /// Starting the container failed (a missing command, say). The container was removed.
    #[error(
        "{rule}starting container {container:?} failed (it was removed): {source}", rule = self.prefix()
    )]
    Start {
        /// The container id.
        container: String,
        /// The engine's answer.
        #[source]
        source: EngineError,
    },
    /// The engine reports a container that differs from the plan. It was stopped and removed.
    #[error("{rule}container {container:?} differs from the plan (it was removed): {}", join_differences(.differences), rule = self.prefix())]
    Audit {
        /// The container id.
        container: String,
        /// What differs.
        differences: Vec<Difference>,
    },
    /// A launch failed, and removing the container failed too: it may be left behind.
    #[error("{rule}{first}; then removing container {container:?} failed too: {source}", rule = self.prefix())]
    Cleanup {
        /// The container id.
        container: String,
        /// The failure that triggered the cleanup.
        first: Box<LaunchError>,
        /// Why the removal failed.
        #[source]
        source: EngineError,
    },
    /// No such container.
    #[error("{rule}no container {container:?}", rule = self.prefix())]
    NotFound {
        /// The id or name asked for.
        container: String,
    },
    /// Another engine call failed.
    #[error("{rule}{op} of container {container:?} failed: {source}", rule = self.prefix())]
    Engine {
        /// The call (`wait`, `inspect`...).
        op: &'static str,
        /// The container id or name.
        container: String,
        /// The engine's answer.
        #[source]
        source: EngineError,
    },
    /// The runtime cannot serve this request at all (an engine that is not built in).
    #[error("{rule}{0}", rule = self.prefix())]
    Unsupported(String),
    /// The engine failed a call because the container's process was ending as it looked
    /// (Podman: `read /proc/N/cgroup: no such process` for a job that just exited): the same
    /// call made again gets an answer. The lifecycle asks again a few times before it counts.
    #[error("{rule}{op} of container {container:?} failed as its process was ending: {source}", rule = self.prefix())]
    ProcessEnding {
        /// The call.
        op: &'static str,
        /// The container id.
        container: String,
        /// The engine's answer.
        #[source]
        source: EngineError,
    },
    /// The engine's answer to a call was lost (connection reset, timeout, a truncated
    /// body): whether the call took effect is unknown.
    #[error("{rule}the answer to {op} of container {container:?} was lost: {source}", rule = self.prefix())]
    AnswerLost {
        /// The call.
        op: &'static str,
        /// The container id (empty before create answered).
        container: String,
        /// What happened.
        #[source]
        source: EngineError,
    },
    /// The launch was cancelled (a signal, a KeyboardInterrupt...); what it created was
    /// removed.
    #[error("{rule}the launch was cancelled", rule = self.prefix())]
    Cancelled,
    /// The in-container gate found that the container did not get the verified mounts (a
    /// bind of another directory than the one pinned, a flag, R's mode...). The command never
    /// ran; the container was removed.
    #[error("{rule}the gate in container {container:?} did not run the command (it was removed): {check}: {message}", rule = self.prefix())]
    GateRefused {
        /// The container id.
        container: String,
        /// The gate's check (`gate-bind-identity`, `gate-root-mode`...).
        check: String,
        /// What it saw, against what was verified.
        message: String,
    },
    /// The gate's host copy, which the engine binds into the container, cannot be used
    /// ([`crate::gate_copy`]): a directory others could change, a file that is not the gate.
    #[error("{rule}the gate's host copy {path:?} cannot be used: {problem} (the gate directory is {env} or {root} for root: a directory owned by root or this launcher, writable by no one else, that the engine's host sees at the same path)", env = crate::gate_copy::GATE_DIR_ENV, root = crate::gate_copy::GATE_DIR_ROOT, rule = self.prefix())]
    GateCopy {
        /// The file or directory at fault.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The job's outputs could carry a privilege no layer would take away (see
    /// [`crate::outputs`]): refused before anything was created.
    #[error("{rule}{why} ({layers}); run the launcher as root, run the job as the launcher's own user (--user), use an engine with a user namespace (rootless Podman, Docker with userns-remap), or mount the workspace nosuid,nodev", rule = self.prefix())]
    OutputsUnclearable {
        /// Why.
        why: &'static str,
        /// The layers of this launch ([`crate::outputs::OutputLayers::describe`]).
        layers: String,
    },
    /// The command ran, and the sweep of W/J after it could not handle everything: a file the
    /// job left may still carry a privilege (the launch fails whatever the exit status).
    #[error("{rule}the command ran{}, but the sweep of {job}/ could not handle everything the job left (it may still carry a privilege; check it by hand): {problems}", .status.map(|s| format!(" (exit status {s})")).unwrap_or_default(), rule = self.prefix())]
    SweepIncomplete {
        /// The job.
        job: String,
        /// The command's exit status, when it was reported.
        status: Option<i64>,
        /// What could not be handled.
        problems: String,
        /// The failure before the sweep, when the launch had already failed.
        first: Option<Box<LaunchError>>,
    },
    /// Something could not be removed and is left for `mount-plan gc`.
    #[error("{rule}{what} could not be removed (`mount-plan gc` removes it once this launcher is gone): {source}", rule = self.prefix())]
    Leftover {
        /// What is left.
        what: String,
        /// Why the removal failed.
        #[source]
        source: Box<LaunchError>,
    },
}

mount_plan::rules!(LaunchError, "engine", {
        Connect => "connect",
        ApiTooOld => "api-version",
        ProtectionUnavailable => "protection-unavailable",
        SpecUnsupported => "spec-unsupported",
        ImageNotFound => "image-missing",
        Create => "create",
        Start => "start",
        Audit => "audit",
        Cleanup => "cleanup",
        NotFound => "container",
        Engine => "call",
        Unsupported => "unsupported",
        AnswerLost => "answer-lost",
        ProcessEnding => "process-ending",
        Cancelled => "cancelled",
        Leftover => "leftover",
        GateRefused => "gate-refused",
        GateCopy => "gate-copy",
        OutputsUnclearable => "outputs-unclearable",
        SweepIncomplete => "sweep-incomplete",
    } via { Spec });

/// What to do about a protection an engine cannot honour.
fn remedy(p: Protection) -> String {
    match p.class() {
        crate::Class::Required => {
            format!("accept it as missing (--accept-missing {p}) to run without it")
        }
        crate::Class::Hardening => format!(
            "it is hardening the site requires (--require {p}, or require in the layout file): use an engine that applies it, or drop the requirement"
        ),
    }
}

fn join_differences(d: &[Difference]) -> String {
    d.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl LaunchError {
    /// An engine call's failure, classified once for every backend: an answer with status 404
    /// is [`LaunchError::NotFound`], any other answer [`LaunchError::Engine`], no answer at
    /// all (`status` `None`: a reset connection, a timeout, a broken body)
    /// [`LaunchError::AnswerLost`], since the call may have taken effect.
    pub fn from_call(
        op: &'static str,
        container: &str,
        status: Option<u16>,
        source: EngineError,
    ) -> LaunchError {
        let container = container.to_owned();
        match status {
            Some(404) => LaunchError::NotFound { container },
            Some(_) => LaunchError::Engine {
                op,
                container,
                source,
            },
            None => LaunchError::AnswerLost {
                op,
                container,
                source,
            },
        }
    }

    /// The value the failure concerns, as text, when there is one: the endpoint, the
    /// protection id, the refused spec value, the image, the job or the container.
    pub fn value(&self) -> Option<&str> {
        match self {
            LaunchError::Connect { endpoint, .. } => Some(endpoint),
            LaunchError::ApiTooOld { api_version, .. } => Some(api_version),
            LaunchError::ProtectionUnavailable { protection, .. } => Some(protection.id()),
            LaunchError::Spec(e) => Some(e.value()),
            LaunchError::SpecUnsupported { what, .. } => Some(what),
            LaunchError::ImageNotFound { image, .. } => Some(image),
            LaunchError::Create { job, .. } => Some(job),
            LaunchError::Start { container, .. }
            | LaunchError::Audit { container, .. }
            | LaunchError::Cleanup { container, .. }
            | LaunchError::NotFound { container }
            | LaunchError::Engine { container, .. }
            | LaunchError::AnswerLost { container, .. }
            | LaunchError::ProcessEnding { container, .. }
            | LaunchError::GateRefused { container, .. } => Some(container),
            LaunchError::Leftover { what, .. } => Some(what),
            LaunchError::GateCopy { path, .. } => Some(path),
            LaunchError::OutputsUnclearable { layers, .. } => Some(layers),
            LaunchError::SweepIncomplete { job, .. } => Some(job),
            LaunchError::Unsupported(_) | LaunchError::Cancelled => None,
        }
    }
}

/// How a container's command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code as the engine reports it (128 + signal when killed).
    pub code: i64,
}

impl ExitStatus {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Which output a log chunk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
    Stderr,
}

/// A piece of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// stdout or stderr.
    pub stream: OutputStream,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// The output of a container, from its start, followed until it stops.
pub type LogStream = BoxStream<'static, Result<LogChunk, LaunchError>>;

/// `sha256:<hex>` of the plan's JSON form: the `io.mount-plan.plan-digest` label.
pub fn plan_digest(plan: &MountPlan) -> String {
    let json = serde_json::to_vec(plan).expect("a plan always serialises");
    let hash = Sha256::digest(&json);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Every label a backend puts on the container of `plan`: the caller's, then ours
/// (`io.mount-plan.managed=1`, `.job`, `.plan-digest`).
pub fn container_labels(plan: &MountPlan, spec: &LaunchSpec) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    labels.insert(LABEL_MANAGED.into(), "1".into());
    labels.insert(LABEL_JOB.into(), plan.job().as_str().into());
    labels.insert(LABEL_PLAN_DIGEST.into(), plan_digest(plan));
    labels
}

/// Whether to keep the container after [`crate::launch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Keep {
    /// Remove it once it has stopped (the default).
    #[default]
    Remove,
    /// Leave it for inspection.
    Keep,
}

#[cfg(test)]
mod tests {
    use super::*;
    use mount_plan::{HostPath, Layout};

    #[test]
    fn digest_is_stable_and_plan_specific() {
        let layout = Layout::default();
        let ws = HostPath::parse("/srv/w").unwrap();
        let a = layout.plan(&ws, &layout.job("a").unwrap()).unwrap();
        let b = layout.plan(&ws, &layout.job("b").unwrap()).unwrap();
        let da = plan_digest(&a);
        assert_eq!(da, plan_digest(&a.clone()));
        assert_ne!(da, plan_digest(&b));
        assert_eq!(da.len(), 7 + 64);
        assert!(da.starts_with("sha256:"));
        assert!(da[7..]
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn our_labels_win() {
        let layout = Layout::default();
        let plan = layout
            .plan(
                &HostPath::parse("/srv/w").unwrap(),
                &layout.job("j").unwrap(),
            )
            .unwrap();
        let mut spec = LaunchSpec::new("img".parse().unwrap());
        spec.labels.insert("team", "x").unwrap();
        let labels = container_labels(&plan, &spec);
        assert_eq!(labels[LABEL_MANAGED], "1");
        assert_eq!(labels[LABEL_JOB], "j");
        assert_eq!(labels[LABEL_PLAN_DIGEST], plan_digest(&plan));
        assert_eq!(labels["team"], "x");
        assert_eq!(labels.len(), 4);
    }

    #[test]
    fn a_call_failure_is_classified_by_its_answer() {
        let lost = || -> EngineError { "reset".into() };
        assert!(matches!(
            LaunchError::from_call("wait", "c1", Some(404), lost()),
            LaunchError::NotFound { container } if container == "c1"
        ));
        assert!(matches!(
            LaunchError::from_call("wait", "c1", Some(500), lost()),
            LaunchError::Engine { op: "wait", .. }
        ));
        let e = LaunchError::from_call("create", "", None, lost());
        assert_eq!(e.rule(), "answer-lost");
    }

    #[test]
    fn a_missing_protection_says_how_to_go_on_by_its_class() {
        let refusal = |protection| {
            LaunchError::ProtectionUnavailable {
                engine: "docker".into(),
                engine_version: "20.10.24".into(),
                api_version: "1.41".into(),
                protection,
                why: "no such mount option".into(),
            }
            .to_string()
        };
        let required = refusal(Protection::NonRecursiveBinds);
        assert!(
            required.ends_with(
                "docker 20.10.24 (API 1.41) cannot honour \"non-recursive\" (no such mount option); \
                 accept it as missing (--accept-missing non-recursive) to run without it"
            ),
            "{required}"
        );
        let hardening = refusal(Protection::NoSuidOnBinds);
        assert!(
            hardening.ends_with(
                "cannot honour \"nosuid\" (no such mount option); it is hardening the site \
                 requires (--require nosuid, or require in the layout file): use an engine that \
                 applies it, or drop the requirement"
            ),
            "{hardening}"
        );
    }

    #[test]
    fn an_audit_failure_names_every_difference() {
        let differences = vec![
            Difference::MissingMount {
                target: "/ws/startup".into(),
                kind: "bind",
            },
            Difference::UnplannedMount {
                target: "/ws/job-2".into(),
                kind: "bind".into(),
                source: None,
            },
        ];
        let message = LaunchError::Audit {
            container: "c1".into(),
            differences: differences.clone(),
        }
        .to_string();
        assert!(
            message.ends_with(&format!(
                "container \"c1\" differs from the plan (it was removed): {}; {}",
                differences[0], differences[1]
            )),
            "{message}"
        );
    }

    #[test]
    fn only_exit_status_zero_is_success() {
        assert!(ExitStatus { code: 0 }.success());
        for code in [1, 125, 137, -1] {
            assert!(!ExitStatus { code }.success(), "{code}");
        }
    }

    #[test]
    fn a_refused_spec_value_keeps_its_value() {
        for bad in ["root", "1000:", "-1"] {
            let err = bad.parse::<crate::User>().unwrap_err();
            assert_eq!(LaunchError::from(err).value(), Some(bad));
        }
    }
}
