//! Pure renderers: OCI runtime-spec mounts and `docker run` / `podman run` arguments.
//!
//! The argument renderers quote every `--mount` field as a CSV field (both CLIs split
//! `--mount` values with a CSV reader), so a path holding `,` `"` `=` `:` or spaces parses back
//! to exactly the planned mount: a value can never add or drop a key.

use crate::plan::{BindMount, Mount, MountPlan, TmpfsMount};

/// One mount in the OCI runtime-spec form (`config.json`'s `mounts[]`; libpod's create call).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct OciMount {
    /// Target inside the container.
    pub destination: String,
    /// `tmpfs` or `bind`.
    #[cfg_attr(feature = "serde", serde(rename = "type"))]
    pub kind: String,
    /// Host source (`tmpfs` for the tmpfs).
    pub source: String,
    /// Mount options.
    pub options: Vec<String>,
}

/// Protections of the plan that `docker run` (and the Docker Engine API, at every version up
/// to 1.53) cannot express on a bind mount. [`MountPlan::docker_args`] replaces `nosuid` with
/// `--security-opt no-new-privileges` and relies on Docker's device cgroup for `nodev`; no
/// Docker setting replaces `noexec`.
pub const DOCKER_BIND_FLAGS_NOT_EXPRESSIBLE: [&str; 3] = ["nosuid", "nodev", "noexec"];

/// Every capability dropped: the engines' defaults include `MKNOD`, `FSETID` and `SETFCAP`,
/// which the plan's contract does not leave to a job.
const CAP_DROP_ALL: [&str; 2] = ["--cap-drop", "ALL"];

fn tmpfs_oci(t: &TmpfsMount) -> OciMount {
    let mut options = vec![if t.read_only() { "ro" } else { "rw" }.to_owned()];
    options.extend(t.flags().words().map(str::to_owned));
    options.push(format!("mode={:04o}", t.mode()));
    options.push(format!("size={}", t.size_bytes()));
    OciMount {
        destination: t.target().to_string(),
        kind: "tmpfs".into(),
        source: "tmpfs".into(),
        options,
    }
}

fn bind_oci(b: &BindMount) -> OciMount {
    // `bind` (not `rbind`): non-recursive. `private`: no propagation either way.
    let mut options = vec![
        "bind".to_owned(),
        if b.read_only() { "ro" } else { "rw" }.to_owned(),
    ];
    options.extend(b.flags().words().map(str::to_owned));
    options.push("private".to_owned());
    OciMount {
        destination: b.target().to_string(),
        kind: "bind".into(),
        source: b.source().to_string(),
        options,
    }
}

/// Quote one CSV field: always wrapped in `"`, inner `"` doubled.
pub fn csv_quote(field: &str) -> String {
    format!("\"{}\"", field.replace('"', "\"\""))
}

fn mount_arg(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| csv_quote(f))
        .collect::<Vec<_>>()
        .join(",")
}

impl MountPlan {
    /// The mounts in OCI runtime-spec form, in mount order.
    pub fn oci_mounts(&self) -> Vec<OciMount> {
        self.mounts()
            .iter()
            .map(|m| match m {
                Mount::Tmpfs(t) => tmpfs_oci(t),
                Mount::Bind(b) => bind_oci(b),
            })
            .collect()
    }

    /// The `--mount` fields of each mount for `docker run`, unquoted, in mount order.
    pub fn docker_mount_fields(&self) -> Vec<Vec<String>> {
        self.mounts()
            .iter()
            .map(|m| match m {
                Mount::Tmpfs(t) => {
                    let mut f = vec![
                        "type=tmpfs".to_owned(),
                        format!("destination={}", t.target()),
                    ];
                    if t.read_only() {
                        f.push("readonly=true".into());
                    }
                    // Docker always mounts tmpfs nosuid,nodev,noexec.
                    f.push(format!("tmpfs-mode={:04o}", t.mode()));
                    f.push(format!("tmpfs-size={}", t.size_bytes()));
                    f
                }
                Mount::Bind(b) => {
                    let mut f = vec![
                        "type=bind".to_owned(),
                        format!("source={}", b.source()),
                        format!("destination={}", b.target()),
                    ];
                    if b.read_only() {
                        f.push("readonly=true".into());
                    }
                    f.push("bind-propagation=private".into());
                    f.push("bind-nonrecursive=true".into());
                    f
                }
            })
            .collect()
    }

    /// Arguments for `docker run`: one quoted `--mount` per mount, the working directory,
    /// `--security-opt no-new-privileges` in place of `nosuid` on binds (see
    /// [`DOCKER_BIND_FLAGS_NOT_EXPRESSIBLE`]) and `--cap-drop ALL`: everything the container
    /// audit asks of a container (a launcher adds back only the capabilities it names).
    pub fn docker_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for fields in self.docker_mount_fields() {
            args.push("--mount".to_owned());
            args.push(mount_arg(&fields));
        }
        args.extend([
            "--workdir".to_owned(),
            self.workdir().to_string(),
            "--security-opt".to_owned(),
            "no-new-privileges".to_owned(),
        ]);
        args.extend(CAP_DROP_ALL.map(str::to_owned));
        args
    }

    /// The `--mount` fields of each mount for `podman run`, unquoted, in mount order.
    pub fn podman_mount_fields(&self) -> Vec<Vec<String>> {
        self.mounts()
            .iter()
            .map(|m| {
                let mut f = Vec::new();
                match m {
                    Mount::Tmpfs(t) => {
                        f.push("type=tmpfs".to_owned());
                        f.push(format!("destination={}", t.target()));
                        f.push(format!("ro={}", t.read_only()));
                        f.push(format!("tmpfs-mode={:04o}", t.mode()));
                        f.push(format!("tmpfs-size={}", t.size_bytes()));
                        f.push("notmpcopyup".into());
                    }
                    Mount::Bind(b) => {
                        f.push("type=bind".to_owned());
                        f.push(format!("source={}", b.source()));
                        f.push(format!("destination={}", b.target()));
                        f.push(format!("ro={}", b.read_only()));
                        f.push("bind-propagation=private".into());
                        f.push("bind-nonrecursive".into());
                    }
                }
                f.extend(m.flags().words().map(str::to_owned));
                f
            })
            .collect()
    }

    /// Arguments for `podman run`: one quoted `--mount` per mount (with its flags), the working
    /// directory and `--cap-drop ALL`: everything the container audit asks of a container.
    pub fn podman_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for fields in self.podman_mount_fields() {
            args.push("--mount".to_owned());
            args.push(mount_arg(&fields));
        }
        args.extend(["--workdir".to_owned(), self.workdir().to_string()]);
        args.extend(CAP_DROP_ALL.map(str::to_owned));
        args
    }
}
