//! The in-container gate: no job command runs in a container whose mounts are not the
//! verified ones.
//!
//! The host checks pin the identity (`st_dev`, `st_ino`) of W/J and of every shared
//! directory; the engine then resolves the host paths again when it creates the container.
//! Whatever happened in between (a directory swapped for a link, a launcher view that is not
//! the engine's view, a node of a cluster that sees another directory at W's path), the
//! container's first process is the gate (`crates/mount-plan-gate`, a static executable
//! embedded here at build time). It reads what the container got (`/proc/self/mountinfo`,
//! `lstat` of each mount point, the working directory), compares it with the plan and the
//! pins, and only then `exec`s the command (the image's entrypoint and command, or the
//! launch's): the command keeps PID 1, its environment and its signals. On a difference it
//! writes one line carrying this launch's nonce and exits [`GATE_REFUSED`]; the lifecycle
//! recognises the line and fails the launch ([`crate::LaunchError::GateRefused`], the command
//! never ran).
//!
//! What a backend does with a [`Gate`]: copy [`Gate::archive`] into the created container at
//! `/` before it starts (the engine's archive call), and make the container's entrypoint
//! [`Gate::entrypoint`] followed by the image's entrypoint, its command the launch's command
//! or else the image's ([`Gate::command_line`] decides). The archive also writes R's own
//! directory entry with the planned mode, so that an engine whose runtime copies the mount
//! point's mode onto a tmpfs (runc before 1.1.12 does) gives R the planned mode.

use mount_plan_host::VerifiedPlan;

use crate::identity::LaunchId;
use crate::spec::LaunchSpec;

/// The gate's executable, built statically from `crates/mount-plan-gate` by this crate's
/// build script (empty when the machine could not link it statically).
pub const GATE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mount-plan-gate"));
/// Where the gate lives in the container (outside R: the root tmpfs hides nothing of it).
pub const GATE_PATH: &str = "/.mount-plan/gate";
/// The gate's exit status when it refuses (the command never ran).
pub const GATE_REFUSED: i64 = 125;
/// How a refusal line starts.
const LINE_PREFIX: &str = "mount-plan-gate: ";

/// One launch's gate: its arguments and what to copy into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    nonce: String,
    entrypoint: Vec<String>,
    root: (String, u32),
}

/// What the gate refused, parsed from its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateRefusal {
    /// The gate's check (`gate-bind-identity`, `gate-root-mode`...).
    pub check: String,
    /// What it saw.
    pub message: String,
}

impl Gate {
    /// The gate for `plan`: every bind with its pinned identity, R with its planned mode and
    /// flags, the working directory. The nonce is fresh for each call.
    pub fn new(plan: &VerifiedPlan) -> Gate {
        let nonce = LaunchId::new().to_string();
        let p = plan.plan();
        let root = p.root_tmpfs();
        let mut args: Vec<String> = vec![GATE_PATH.into(), "v1".into(), nonce.clone()];
        args.extend([
            "tmpfs".into(),
            root.target().to_string(),
            format!("{:o}", root.mode()),
            ro(root.read_only()).into(),
        ]);
        for b in p.binds() {
            let pin = plan
                .bind_pin(b.target())
                .expect("a verified plan pins every bind");
            args.extend([
                "bind".into(),
                b.target().to_string(),
                pin.dev.to_string(),
                pin.ino.to_string(),
                ro(b.read_only()).into(),
                if b.recursive() { "rec" } else { "norec" }.into(),
            ]);
        }
        args.extend(["cwd".into(), p.workdir().to_string(), "--".into()]);
        Gate {
            nonce,
            entrypoint: args,
            root: (root.target().to_string(), root.mode()),
        }
    }

    /// The container's entrypoint begins with this (the gate, its checks, `--`).
    pub fn entrypoint(&self) -> &[String] {
        &self.entrypoint
    }

    /// The whole entrypoint and command of the container, from the image's own
    /// (`image_entrypoint`, `image_command`) and the launch's command (which, as on every
    /// engine, replaces the image's command and keeps its entrypoint). `None` when there is
    /// nothing to run at all.
    pub fn command_line(
        &self,
        spec: &LaunchSpec,
        image_entrypoint: &[String],
        image_command: &[String],
    ) -> Option<(Vec<String>, Vec<String>)> {
        let command = if spec.command.is_empty() {
            image_command.to_vec()
        } else {
            spec.command.clone()
        };
        if image_entrypoint.is_empty() && command.is_empty() {
            return None;
        }
        let mut entrypoint = self.entrypoint.clone();
        entrypoint.extend(image_entrypoint.iter().cloned());
        Some((entrypoint, command))
    }

    /// The tar archive to copy into the container at `/` before it starts: `.mount-plan/gate`
    /// (mode 0555) and R's own directory entry with the planned mode.
    pub fn archive(&self) -> Vec<u8> {
        let mut ar = tar::Builder::new(Vec::new());
        let dir = |path: &str, mode: u32, ar: &mut tar::Builder<Vec<u8>>| {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_size(0);
            ar.append_data(&mut h, path, std::io::empty())
                .expect("writing to memory");
        };
        let root = self.root.0.trim_start_matches('/');
        if !root.is_empty() {
            dir(&format!("{root}/"), self.root.1, &mut ar);
        }
        dir(".mount-plan/", 0o555, &mut ar);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o555);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(GATE_BINARY.len() as u64);
        ar.append_data(&mut h, GATE_PATH.trim_start_matches('/'), GATE_BINARY)
            .expect("writing to memory");
        ar.into_inner().expect("writing to memory")
    }

    /// Whether this build carries a gate at all (see the build script).
    pub fn available() -> bool {
        !GATE_BINARY.is_empty()
    }

    /// This launch's refusal, if `output` (the container's stderr) holds its line.
    pub fn refusal(&self, output: &str) -> Option<GateRefusal> {
        let marker = format!("{LINE_PREFIX}{}: refused: ", self.nonce);
        let at = output.find(&marker)?;
        let rest = output[at + marker.len()..].lines().next().unwrap_or("");
        let (check, message) = rest.split_once(": ").unwrap_or((rest, ""));
        Some(GateRefusal {
            check: check.to_owned(),
            message: message.to_owned(),
        })
    }
}

fn ro(read_only: bool) -> &'static str {
    if read_only {
        "ro"
    } else {
        "rw"
    }
}
