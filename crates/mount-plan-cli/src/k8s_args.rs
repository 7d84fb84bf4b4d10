//! Kubernetes options (built with the `kubernetes` feature): where the Pod's volumes come from
//! and which cluster version it is written for.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use clap::Args;
use mount_plan_k8s::{ClaimName, FeatureGate, K8sVersion, PodOptions, Target, Volumes};

/// Options of the Pod: shared by `plan --format k8s-pod` and `launch --runtime kubernetes`.
#[derive(Debug, Clone, Args)]
pub struct K8sArgs {
    /// Kubernetes: the PersistentVolumeClaim that holds the workspace W at its root
    #[arg(long, value_name = "NAME", conflicts_with = "k8s_host_path")]
    pub k8s_claim: Option<String>,
    /// Kubernetes: mount W and extra mount sources as hostPath volumes instead of claims
    /// (forbidden by the Pod Security Standards from Baseline up)
    #[arg(long)]
    pub k8s_host_path: bool,
    /// Kubernetes: the claim of an extra mount, by its host source (repeat)
    #[arg(long, value_name = "SOURCE=CLAIM")]
    pub k8s_extra_claim: Vec<String>,
    /// Kubernetes: the cluster version the Pod is written for (1.30 to 1.37)
    #[arg(long, value_name = "1.MINOR", default_value = "1.33")]
    pub k8s_version: String,
    /// Kubernetes: an alpha feature gate the cluster has on (repeat): VolumeBindMountOptions
    /// and EmptyDirVolumeMode (1.37), RecursiveReadOnlyMounts (1.30)
    #[arg(long, value_name = "GATE")]
    pub k8s_feature_gate: Vec<String>,
    /// Kubernetes: the image of the init container that creates the mountpoints in the
    /// read-only root (needs mkdir) [default: the job's image]
    #[arg(long, value_name = "IMAGE")]
    pub k8s_init_image: Option<String>,
    /// Kubernetes: an image holding the static gate at /mount-plan-gate; its init container
    /// copies the gate into a memory volume that the job container runs it from, read-only
    /// [default: none: the Pods run without the gate, with a warning]
    #[arg(long, value_name = "IMAGE")]
    pub k8s_gate_image: Option<String>,
}

impl K8sArgs {
    /// The target these flags describe.
    pub fn target(&self) -> Result<Target> {
        let version: K8sVersion = self.k8s_version.parse()?;
        let gates = self
            .k8s_feature_gate
            .iter()
            .map(|g| g.parse::<FeatureGate>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Target::new(version, gates)?)
    }

    /// The volumes these flags describe.
    pub fn volumes(&self) -> Result<Volumes> {
        if self.k8s_host_path {
            if !self.k8s_extra_claim.is_empty() {
                return Err(anyhow!(
                    "kubernetes rule `k8s-volumes-exclusive`: --k8s-extra-claim and --k8s-host-path exclude each other"
                ));
            }
            return Ok(Volumes::HostPath);
        }
        let Some(claim) = &self.k8s_claim else {
            return Err(anyhow!(
                "kubernetes rule `k8s-claim-missing`: give the workspace's claim (--k8s-claim NAME), or --k8s-host-path"
            ));
        };
        let mut extra = BTreeMap::new();
        for pair in &self.k8s_extra_claim {
            let (source, claim) = pair.rsplit_once('=').ok_or_else(|| {
                anyhow!("kubernetes rule `k8s-extra-claim-form`: {pair:?} is not SOURCE=CLAIM")
            })?;
            extra.insert(source.to_owned(), claim.parse::<ClaimName>()?);
        }
        Ok(Volumes::Claims {
            workspace: claim.parse()?,
            extra,
        })
    }

    /// Pod options from these flags (the job container left to the caller).
    pub fn options(&self) -> Result<PodOptions> {
        Ok(PodOptions {
            target: self.target()?,
            volumes: self.volumes()?,
            init_image: self.k8s_init_image.clone(),
            ..PodOptions::with_claim("unused".parse()?)
        })
    }
}

/// How `--runtime kubernetes` reaches the cluster, and the Pods it writes.
#[derive(Debug, Clone, Args)]
pub struct KubeEngineArgs {
    /// Kubernetes: the kubeconfig file [default: KUBECONFIG, ~/.kube/config, or in-cluster]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Kubernetes: the namespace [default: the kubeconfig context's]
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub pod: K8sArgs,
}

impl KubeEngineArgs {
    /// The cluster these flags describe, for the front door's endpoint.
    pub fn cluster(&self) -> Result<mount_plan_run::Cluster, mount_plan_launch::LaunchError> {
        let unsupported = |e: anyhow::Error| mount_plan_launch::LaunchError::SpecUnsupported {
            engine: "kubernetes",
            what: format!("{e:#}"),
        };
        Ok(mount_plan_run::Cluster {
            kubeconfig: self.kubeconfig.clone(),
            namespace: self.namespace.clone(),
            pod: mount_plan_kubernetes::PodSettings {
                target: self.pod.target().map_err(unsupported)?,
                volumes: self.pod.volumes().map_err(unsupported)?,
                init_image: self.pod.k8s_init_image.clone(),
                gate_image: self.pod.k8s_gate_image.clone(),
            },
        })
    }
}
