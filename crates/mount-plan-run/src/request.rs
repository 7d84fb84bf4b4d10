//! [`LaunchRequest`]: what a front end asks of a launch, in plain values, and the one place it
//! becomes a [`LaunchSpec`].

use std::collections::BTreeSet;

use mount_plan_launch::{Capability, Class, EngineKind, LaunchSpec, Protection, Resources};
use serde::{Deserialize, Serialize};

use crate::error::{RequestError, RunError};

/// Which protections decide whether a launch runs: contract protections accepted as
/// missing, hardening required. Shared by `launch`, `audit` and `doctor`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct Accept {
    /// Run although the engine cannot honour this contract protection of the plan (repeat;
    /// ids: read-only-root, root-mode-size, read-only-binds, non-recursive,
    /// private-propagation, gate). Hardening (nosuid, nodev, noexec) never needs it: an engine
    /// that cannot apply it runs the job with one warning.
    #[cfg_attr(
        feature = "clap",
        arg(long = "accept-missing", value_name = "PROTECTION")
    )]
    #[serde(default)]
    pub accept_missing: Vec<String>,
    /// Refuse to launch (exit 125) when the engine cannot apply this hardening of the plan
    /// (repeat; ids: nosuid, nodev, noexec). Docker cannot set noexec on binds: with
    /// `--require noexec` every Docker launch is refused.
    #[cfg_attr(feature = "clap", arg(long = "require", value_name = "HARDENING"))]
    #[serde(default)]
    pub require: Vec<String>,
}

impl Accept {
    /// The contract protections accepted as missing.
    pub fn accepted(&self) -> Result<BTreeSet<Protection>, RunError> {
        self.accept_missing
            .iter()
            .map(|p| p.parse::<Protection>().map_err(Into::into))
            .collect()
    }

    /// The hardening required; a contract protection is refused (it is always required).
    pub fn required(&self) -> Result<BTreeSet<Protection>, RunError> {
        self.require
            .iter()
            .map(|p| {
                let protection = p.parse::<Protection>()?;
                if protection.class() != Class::Hardening {
                    return Err(RequestError::RequireContract { protection }.into());
                }
                Ok(protection)
            })
            .collect()
    }
}

/// Capabilities granted to the job: every backend drops all of them and adds back these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct Caps {
    /// Add back a capability after all are dropped (repeat; NAME or CAP_NAME, any case; one
    /// of CHOWN, DAC_OVERRIDE, FOWNER, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE,
    /// NET_RAW, SYS_CHROOT, AUDIT_WRITE). MKNOD, FSETID, SETFCAP, SYS_ADMIN... are refused:
    /// they would let a job leave something in its directory a host user can use.
    #[cfg_attr(feature = "clap", arg(long = "cap-add", value_name = "NAME"))]
    #[serde(default)]
    pub cap_add: Vec<String>,
}

impl Caps {
    /// The capabilities added back.
    pub fn granted(&self) -> Result<BTreeSet<Capability>, RunError> {
        self.cap_add
            .iter()
            .map(|c| c.parse::<Capability>().map_err(Into::into))
            .collect()
    }
}

/// What a front end asks of a launch, in plain values (strings and numbers as a user types
/// them). [`LaunchRequest::spec`] is the one place they become a [`LaunchSpec`]: the CLI
/// flattens this struct into `mount-plan launch`'s flags (the `clap` feature), Python fills it
/// from keyword arguments, the bench builds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct LaunchRequest {
    /// The image (never pulled: it must be present on the engine)
    #[cfg_attr(feature = "clap", arg(long, value_name = "IMAGE"))]
    pub image: String,
    /// Run the command as UID or UID:GID (numeric) [default: the image's user]
    #[cfg_attr(feature = "clap", arg(long, value_name = "U[:G]"))]
    #[serde(default)]
    pub user: Option<String>,
    /// Set an environment variable (repeat)
    #[cfg_attr(feature = "clap", arg(long = "env", value_name = "K=V"))]
    #[serde(default)]
    pub env: Vec<String>,
    /// Network: none (default), default, or a network name; host and container:... are refused
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "NAME", default_value = "none")
    )]
    #[serde(default = "default_network")]
    pub network: String,
    /// Container name [default: chosen by the engine]
    #[cfg_attr(feature = "clap", arg(long, value_name = "NAME"))]
    #[serde(default)]
    pub name: Option<String>,
    /// Add a label (repeat); io.mount-plan.* are reserved
    #[cfg_attr(
        feature = "clap",
        arg(long = "label", value_name = "K=V", value_parser = crate::cli::key_value)
    )]
    #[serde(default)]
    pub labels: Vec<(String, String)>,
    /// GPUs: all, a count, or device=ID[,ID...]
    #[cfg_attr(feature = "clap", arg(long, value_name = "GPUS"))]
    #[serde(default)]
    pub gpus: Option<String>,
    /// Memory limit in bytes
    #[cfg_attr(feature = "clap", arg(long, value_name = "BYTES"))]
    #[serde(default)]
    pub memory: Option<u64>,
    /// CPU limit in CPUs (for example 1.5)
    #[cfg_attr(feature = "clap", arg(long, value_name = "CPUS"))]
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Process limit
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    #[serde(default)]
    pub pids_limit: Option<u64>,
    /// Swarm only: where the job may run, KEY==VALUE or KEY!=VALUE (repeat; all must hold;
    /// keys node.id, node.hostname, node.role, node.labels.NAME...) [default: node.role==worker]
    #[cfg_attr(feature = "clap", arg(long = "constraint", value_name = "EXPR"))]
    #[serde(default)]
    pub constraints: Vec<String>,
    // The protections decided by the site (a field's doc would be clap's help heading).
    #[allow(missing_docs)]
    #[cfg_attr(feature = "clap", command(flatten))]
    #[serde(default, flatten)]
    pub accept: Accept,
    // The capabilities added back after all are dropped.
    #[allow(missing_docs)]
    #[cfg_attr(feature = "clap", command(flatten))]
    #[serde(default, flatten)]
    pub caps: Caps,
    /// The command and its arguments
    #[cfg_attr(
        feature = "clap",
        arg(last = true, required = true, value_name = "CMD")
    )]
    #[serde(default)]
    pub command: Vec<String>,
}

fn default_network() -> String {
    "none".to_owned()
}

impl LaunchRequest {
    /// A request to run `command` in `image`, everything else at its default (no network,
    /// the image's user, no limits).
    pub fn new(
        image: impl Into<String>,
        command: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        LaunchRequest {
            image: image.into(),
            user: None,
            env: Vec::new(),
            network: default_network(),
            name: None,
            labels: Vec::new(),
            gpus: None,
            memory: None,
            cpus: None,
            pids_limit: None,
            constraints: Vec::new(),
            accept: Accept::default(),
            caps: Caps::default(),
            command: command.into_iter().map(Into::into).collect(),
        }
    }

    /// The launch spec for an engine of `kind`: every value parsed into its validated type,
    /// the spec checked as a whole. Pure: nothing is created, no engine is asked.
    pub fn spec(&self, kind: EngineKind) -> Result<LaunchSpec, RunError> {
        let mut spec = LaunchSpec::new(self.image.parse()?).with_command(self.command.clone());
        spec.user = self.user.as_deref().map(str::parse).transpose()?;
        spec.env = self
            .env
            .iter()
            .map(|e| e.parse())
            .collect::<Result<_, _>>()?;
        spec.network = self.network.parse()?;
        spec.name = self.name.as_deref().map(str::parse).transpose()?;
        for (k, v) in &self.labels {
            spec.labels.insert(k, v)?;
        }
        spec.gpus = self.gpus.as_deref().map(str::parse).transpose()?;
        let mut res = Resources::new();
        if let Some(m) = self.memory {
            res = res.with_memory_bytes(m)?;
        }
        if let Some(c) = self.cpus {
            if !(c.is_finite() && c > 0.0) {
                return Err(RequestError::Cpus { value: c }.into());
            }
            res = res.with_nano_cpus((c * 1e9) as u64)?;
        }
        if let Some(p) = self.pids_limit {
            res = res.with_pids_limit(p)?;
        }
        spec.resources = res;
        spec.accept_missing = self.accept.accepted()?;
        spec.cap_add = self.caps.granted()?;
        spec.require = self.accept.required()?;
        if let Some(first) = self.constraints.first() {
            if !matches!(kind, EngineKind::Swarm | EngineKind::Slurm) {
                return Err(RequestError::ConstraintEngine {
                    value: first.clone(),
                    kind: kind.to_string(),
                }
                .into());
            }
        }
        spec.placement = self
            .constraints
            .iter()
            .map(|c| c.parse())
            .collect::<Result<_, _>>()?;
        spec.check()?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> LaunchRequest {
        LaunchRequest::new("busybox:local", ["sh", "-c", "true"])
    }

    #[test]
    fn every_value_reaches_the_spec() {
        let mut r = request();
        r.user = Some("1000:1000".into());
        r.env = vec!["MODE=train".into()];
        r.labels = vec![("team".into(), "a=b".into())];
        r.memory = Some(1 << 30);
        r.cpus = Some(1.5);
        r.pids_limit = Some(64);
        r.accept.require = vec!["noexec".into()];
        r.caps.cap_add = vec!["chown".into()];
        let spec = r.spec(EngineKind::Docker).unwrap();
        assert_eq!(spec.user.unwrap().to_string(), "1000:1000");
        assert_eq!(spec.env.len(), 1);
        assert_eq!(spec.resources.nano_cpus(), Some(1_500_000_000));
        assert!(spec.require.contains(&Protection::NoExecOnBinds));
        assert_eq!(spec.cap_add.len(), 1);
        assert_eq!(spec.network, mount_plan_launch::Network::None);
    }

    #[test]
    fn refusals_name_their_rule_and_value() {
        let mut r = request();
        r.cpus = Some(0.0);
        let e = r.spec(EngineKind::Docker).unwrap_err();
        assert_eq!(
            (e.rule(), e.value().as_deref()),
            ("cpus-positive", Some("0"))
        );

        let mut r = request();
        r.accept.require = vec!["read-only-root".into()];
        let e = r.spec(EngineKind::Docker).unwrap_err();
        assert_eq!(e.rule(), "require-contract");
        assert!(e.to_string().contains("part of the contract"), "{e}");

        let mut r = request();
        r.constraints = vec!["node.role==worker".into()];
        let e = r.spec(EngineKind::Podman).unwrap_err();
        assert_eq!(e.rule(), "constraint-engine");
        assert!(r.spec(EngineKind::Swarm).is_ok());

        let mut r = request();
        r.network = "host".into();
        assert!(r.spec(EngineKind::Docker).is_err());
    }

    #[test]
    fn serde_fills_defaults_and_flattens_the_protections() {
        let r: LaunchRequest = serde_json::from_str(
            r#"{"image":"busybox:local","command":["true"],"require":["noexec"]}"#,
        )
        .unwrap();
        assert_eq!(r.network, "none");
        assert_eq!(r.accept.require, ["noexec"]);
        assert_eq!(r, {
            let mut want = LaunchRequest::new("busybox:local", ["true"]);
            want.accept.require = vec!["noexec".into()];
            want
        });
    }
}
