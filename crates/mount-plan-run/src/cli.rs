//! Value parsers for a clap front end (the `clap` feature): the engine kind with its help, whole
//! seconds, `K=V` pairs.

use std::time::Duration;

use clap::builder::{PossibleValue, TypedValueParser};
use mount_plan_launch::EngineKind;

/// Parses `--runtime`: the kinds this build has, each with its help.
#[derive(Debug, Clone, Copy)]
pub struct KindParser;

fn help(kind: EngineKind) -> &'static str {
    match kind {
        EngineKind::Docker => "Docker Engine API (bollard)",
        EngineKind::Podman => "Podman (libpod API)",
        EngineKind::Swarm => "Docker Swarm: a one-shot service on a node (--socket is a manager's)",
        EngineKind::Kubernetes => {
            "Kubernetes Pods (kube-rs); see --kubeconfig, --namespace and the --k8s-* options"
        }
        EngineKind::Slurm => {
            "Slurm: a batch job whose step runs an OCI bundle (srun --container); see MOUNT_PLAN_SLURM_SHARED and MOUNT_PLAN_SLURM_COMMAND"
        }
        _ => "",
    }
}

fn built() -> impl Iterator<Item = EngineKind> {
    EngineKind::ALL
        .into_iter()
        .filter(|k| crate::endpoint::built_in(*k))
}

impl TypedValueParser for KindParser {
    type Value = EngineKind;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<EngineKind, clap::Error> {
        let names: Vec<&str> = built().map(EngineKind::id).collect();
        let inner = clap::builder::PossibleValuesParser::new(names);
        let id = inner.parse_ref(cmd, arg, value)?;
        Ok(id.parse().expect("a built-in kind parses"))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            built().map(|k| PossibleValue::new(k.id()).help(help(k))),
        ))
    }
}

/// A whole number of seconds, at most `mount_plan_launch::MAX_DURATION` (`--connect-timeout`).
pub fn whole_seconds(value: &str) -> Result<Duration, String> {
    let secs = value
        .parse::<u64>()
        .map_err(|e| format!("{value:?} is not a whole number of seconds: {e}"))?;
    mount_plan_launch::duration_whole_secs("--connect-timeout", secs).map_err(|e| e.to_string())
}

/// `K=V`, split at the first `=`.
pub fn key_value(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{value:?} is not K=V"))
}
