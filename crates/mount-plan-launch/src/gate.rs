//! The in-container gate: no job command runs in a container whose mounts are not the
//! verified ones.
//!
//! The host checks pin the identity (`st_dev`, `st_ino`) of W/J and of every shared
//! directory; the engine then resolves the host paths again when it creates the container.
//! Whatever happened in between (a directory swapped for a link, a launcher view that is not
//! the engine's view, a node of a cluster that sees another directory at W's path), the
//! container's first process is the gate (`gate/main.rs` of this package, a static executable
//! embedded here at build time). It reads what the container got (`/proc/self/mountinfo`,
//! `lstat` of each mount point, the working directory), compares it with the plan and the
//! pins, and only then `exec`s the command (the image's entrypoint and command, or the
//! launch's): the command keeps PID 1, its environment and its signals. On a difference it
//! writes one line carrying this launch's nonce and exits [`GATE_REFUSED`]; the lifecycle
//! recognises the line and fails the launch ([`crate::LaunchError::GateRefused`], the command
//! never ran).
//!
//! What a backend does with a [`Gate`]: bind the gate's checked host copy
//! ([`crate::gate_copy`]) read-only at [`GATE_PATH`] (outside R), and make the container's
//! entrypoint [`Gate::entrypoint`] followed by the image's entrypoint, its command the
//! launch's command or else the image's ([`Gate::command_line`] decides). No archive call is
//! made, except where R's planned mode matters and the runtime may not give it
//! ([`Gate::for_runtime`]): an engine whose runtime copies the mount point's mode onto a tmpfs
//! (runc before 1.1.8 does) gives a scratch R (1777) the mode 0755 unless R's own directory
//! entry is written with the planned mode first ([`Gate::root_archive`]); for the default
//! read-only R the drifted mode grants nothing a read-only tmpfs would not refuse, so the
//! gate accepts it instead. [`Gate::archive`] (the gate and R's entry) remains for a caller
//! that has no host copy the engine can see.

use mount_plan_host::VerifiedPlan;

use crate::container::LaunchError;
use crate::identity::LaunchId;
use mount_plan_spec::LaunchSpec;

/// The gate's executable, built statically from `gate/main.rs` of this package by its
/// build script (empty when the machine could not link it statically).
pub const GATE_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mount-plan-gate"));
pub use mount_plan_spec::gate_protocol::{
    GATE_LINE_PREFIX, GATE_NODE_ENV, GATE_PATH, GATE_PROTOCOL,
};
/// The gate's exit status when it refuses (the command never ran), as an engine reports an
/// exit code ([`mount_plan_spec::gate_protocol::GATE_REFUSED`]).
pub const GATE_REFUSED: i64 = mount_plan_spec::gate_protocol::GATE_REFUSED as i64;
/// Where a cluster engine without an archive call (Swarm) finds the gate on every node, to
/// bind it read-only at [`GATE_PATH`]: `mount-plan gate install` puts it there.
pub const GATE_ON_NODES: &str = "/usr/local/libexec/mount-plan/gate";
/// The index of R's mode among [`Gate::entrypoint`]'s words.
const ROOT_MODE_ARG: usize = 5;
/// The mode a runtime that does not keep a tmpfs's mode gives R: that of the directory the
/// engine made for R/J (runc before 1.1.8).
pub const DRIFTED_ROOT_MODE: u32 = 0o755;

/// What an engine's runtime does to R's planned mode (the tmpfs's `mode=` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeRootMode {
    /// It keeps the planned mode.
    Kept,
    /// It gives R this mode instead (unless R's directory entry was written first).
    Becomes(u32),
    /// Not known (a runtime whose version does not tell, nothing observed).
    Unknown,
}

/// One launch's gate: its arguments and what to copy into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    nonce: String,
    job: String,
    entrypoint: Vec<String>,
    /// R's target, planned mode, and whether it is read-only.
    root: (String, u32, bool),
    /// For each bind: the index of its device word in `entrypoint`, and whether it is one of
    /// W's (shared directories and W/J, on W's filesystem by the host checks).
    devices: Vec<(usize, bool)>,
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
        let mut args: Vec<String> = vec![GATE_PATH.into(), GATE_PROTOCOL.into(), nonce.clone()];
        args.extend([
            "tmpfs".into(),
            root.target().to_string(),
            format!("{:o}", root.mode()),
            ro(root.read_only()).into(),
        ]);
        let mut devices = Vec::new();
        for b in p.binds() {
            let pin = plan
                .bind_pin(b.target())
                .expect("a verified plan pins every bind");
            devices.push((
                args.len() + 2,
                matches!(
                    b.role(),
                    mount_plan::BindRole::Shared | mount_plan::BindRole::Job
                ),
            ));
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
            job: p.job().as_str().to_owned(),
            entrypoint: args,
            root: (root.target().to_string(), root.mode(), root.read_only()),
            devices,
        }
    }

    /// The same gate, also accepting `mode` for R: for an engine known to give R another mode
    /// than the plan's that the launcher cannot correct (Swarm on a node whose runc predates
    /// 1.1.8 gives 0755), said by that engine's report.
    pub fn accepting_root_mode(mut self, mode: u32) -> Gate {
        self.entrypoint[ROOT_MODE_ARG] = format!("{}|{mode:o}", self.entrypoint[ROOT_MODE_ARG]);
        self
    }

    /// The gate for an engine that binds the gate's host copy, whose runtime does `runtime`
    /// to R's mode, and the archive to write before the container starts, if any: R's own
    /// directory entry, only for a writable R on a runtime not known to keep its mode (there
    /// the planned mode decides who may write). A read-only R on such a runtime gets no
    /// archive; the gate accepts the drifted mode, which grants no write on a read-only tmpfs.
    pub fn for_runtime(&self, runtime: RuntimeRootMode) -> (Gate, Option<Vec<u8>>) {
        let drift = match runtime {
            RuntimeRootMode::Kept => return (self.clone(), None),
            RuntimeRootMode::Becomes(m) => m,
            RuntimeRootMode::Unknown => DRIFTED_ROOT_MODE,
        };
        if drift == self.root.1 {
            (self.clone(), None)
        } else if self.root.2 {
            (self.clone().accepting_root_mode(drift), None)
        } else {
            (self.clone(), Some(self.root_archive()))
        }
    }

    /// The same gate for a container on another machine (a cluster node): a node numbers the
    /// devices of its own mounts (an NFS client's device number is its own), so instead of
    /// the launcher's device numbers, each inode must match and W's binds (shared directories
    /// and W/J) must all be on one filesystem, as the host checks found them; an extra mount's
    /// device is not compared.
    pub fn node_local_devices(mut self) -> Gate {
        for (i, (at, of_w)) in self.devices.iter().enumerate() {
            self.entrypoint[*at] = if *of_w {
                "same:w".to_owned()
            } else {
                format!("same:extra{i}")
            };
        }
        self
    }

    /// The container's entrypoint begins with this (the gate, its checks, `--`).
    pub fn entrypoint(&self) -> &[String] {
        &self.entrypoint
    }

    /// The whole entrypoint and command of the container, from the image's own
    /// (`image_entrypoint`, `image_command`) and the launch's command (which, as on every
    /// engine, replaces the image's command and keeps its entrypoint). When there is nothing
    /// to run at all, the create is refused ([`LaunchError::Create`]), as an engine refuses a
    /// container without a command.
    pub fn command_line(
        &self,
        spec: &LaunchSpec,
        image_entrypoint: &[String],
        image_command: &[String],
    ) -> Result<(Vec<String>, Vec<String>), LaunchError> {
        let command = if spec.command.is_empty() {
            image_command.to_vec()
        } else {
            spec.command.clone()
        };
        if image_entrypoint.is_empty() && command.is_empty() {
            return Err(LaunchError::Create {
                job: self.job.clone(),
                source: "no command: neither the launch nor the image gives one".into(),
            });
        }
        let mut entrypoint = self.entrypoint.clone();
        entrypoint.extend(image_entrypoint.iter().cloned());
        Ok((entrypoint, command))
    }

    /// The tar archive that writes R's own directory entry with the planned mode, copied into
    /// the container at `/` before it starts ([`Gate::for_runtime`] says when).
    pub fn root_archive(&self) -> Vec<u8> {
        let mut ar = tar::Builder::new(Vec::new());
        let root = self.root.0.trim_start_matches('/');
        if !root.is_empty() {
            directory_entry(&mut ar, &format!("{root}/"), self.root.1);
        }
        ar.into_inner().expect("writing to memory")
    }

    /// The tar archive to copy into the container at `/` before it starts when the engine
    /// cannot bind the gate's host copy: `.mount-plan/gate` (mode 0555) and R's own
    /// directory entry with the planned mode.
    pub fn archive(&self) -> Vec<u8> {
        let mut ar = tar::Builder::new(Vec::new());
        let root = self.root.0.trim_start_matches('/');
        if !root.is_empty() {
            directory_entry(&mut ar, &format!("{root}/"), self.root.1);
        }
        directory_entry(&mut ar, ".mount-plan/", 0o555);
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

    /// The line the gate of this launch writes when it refuses (`check`, `message`).
    pub fn refusal_line(&self, check: &str, message: &str) -> String {
        format!(
            "{GATE_LINE_PREFIX}{}: refused: {check}: {message}\n",
            self.nonce
        )
    }

    /// This launch's refusal, if `output` (the container's stderr) holds its line.
    pub fn refusal(&self, output: &str) -> Option<GateRefusal> {
        let marker = format!("{GATE_LINE_PREFIX}{}: refused: ", self.nonce);
        let at = output.find(&marker)?;
        let rest = output[at + marker.len()..].lines().next().unwrap_or("");
        let (check, message) = rest.split_once(": ").unwrap_or((rest, ""));
        Some(GateRefusal {
            check: check.to_owned(),
            message: message.to_owned(),
        })
    }
}

/// A directory entry owned by root with `mode`.
fn directory_entry(ar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    ar.append_data(&mut h, path, std::io::empty())
        .expect("writing to memory");
}

fn ro(read_only: bool) -> &'static str {
    if read_only {
        "ro"
    } else {
        "rw"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mount_plan::{HostPath, Layout};
    use mount_plan_host::{verify, JobDir, VerifyOptions};

    fn verified(dir: &std::path::Path) -> VerifiedPlan {
        for d in ["startup", "local", "job-1"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let layout = Layout::default();
        let plan = layout
            .plan(
                &HostPath::parse(dir.to_str().unwrap()).unwrap(),
                &layout.job("job-1").unwrap(),
            )
            .unwrap();
        let options = VerifyOptions {
            job_dir: JobDir::MustExist,
            ..VerifyOptions::default()
        };
        verify(plan, &options).unwrap()
    }

    #[test]
    fn the_arguments_carry_every_pin_and_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let v = verified(dir.path());
        let g = Gate::new(&v);
        let e = g.entrypoint();
        assert_eq!(&e[..2], &[GATE_PATH.to_owned(), GATE_PROTOCOL.to_owned()]);
        assert_eq!(
            &e[3..7],
            &["tmpfs", "/workspace", "555", "ro"].map(String::from)
        );
        assert_eq!(e.last().map(String::as_str), Some("--"));
        let job = v.job_pin();
        let at = e.iter().position(|w| w == "/workspace/job-1").unwrap();
        assert_eq!(e[at - 1], "bind");
        assert_eq!(e[at + 1], job.dev.to_string());
        assert_eq!(e[at + 2], job.ino.to_string());
        assert_eq!(e[at + 3], "rw");
        assert_eq!(e.iter().filter(|w| *w == "bind").count(), 3);
        assert!(e
            .windows(2)
            .any(|w| w[0] == "cwd" && w[1] == "/workspace/job-1"));
        // A fresh nonce per gate.
        assert_ne!(Gate::new(&v).entrypoint()[2], e[2]);
        let drift = g.clone().accepting_root_mode(0o755);
        assert_eq!(drift.entrypoint()[ROOT_MODE_ARG], "555|755");
        let node = g.clone().node_local_devices();
        let e = node.entrypoint();
        assert_eq!(e[at + 1], "same:w");
        assert_eq!(e[at + 2], job.ino.to_string());
        assert_eq!(e.iter().filter(|w| *w == "same:w").count(), 3);
    }

    #[test]
    fn the_command_line_keeps_the_images_entrypoint_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let g = Gate::new(&verified(dir.path()));
        let img: crate::ImageRef = "img".parse().unwrap();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // The launch's command replaces the image's command and keeps its entrypoint.
        let spec = LaunchSpec::new(img.clone()).with_command(["run", "x"]);
        let (ep, cmd) = g
            .command_line(&spec, &s(&["/init"]), &s(&["default"]))
            .unwrap();
        assert_eq!(&ep[ep.len() - 2..], &s(&["--", "/init"]));
        assert_eq!(cmd, s(&["run", "x"]));
        // No command: the image's.
        let spec = LaunchSpec::new(img.clone());
        let (ep, cmd) = g.command_line(&spec, &[], &s(&["sh"])).unwrap();
        assert_eq!(ep.last().unwrap(), "--");
        assert_eq!(cmd, s(&["sh"]));
        // Nothing at all to run: the create is refused, naming the job.
        let err = g.command_line(&spec, &[], &[]).unwrap_err();
        assert_eq!(err.rule(), "create");
        assert!(
            err.to_string().contains("job-1") && err.to_string().contains("no command"),
            "{err}"
        );
    }

    #[test]
    fn the_archive_holds_the_gate_and_r_with_its_planned_mode() {
        let dir = tempfile::tempdir().unwrap();
        let g = Gate::new(&verified(dir.path()));
        let bytes = g.archive();
        let mut ar = tar::Archive::new(&bytes[..]);
        let entries: Vec<(String, u32, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.size().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("workspace/".to_owned(), 0o555, 0),
                (".mount-plan/".to_owned(), 0o555, 0),
                (
                    ".mount-plan/gate".to_owned(),
                    0o555,
                    GATE_BINARY.len() as u64
                ),
            ]
        );
        assert!(Gate::available(), "this build carries a gate");
    }

    #[test]
    fn an_archive_only_where_r_s_mode_matters_and_may_drift() {
        let dir = tempfile::tempdir().unwrap();
        let g = Gate::new(&verified(dir.path()));
        // The default R is read-only 0555.
        assert_eq!(g.for_runtime(RuntimeRootMode::Kept), (g.clone(), None));
        let (drifting, archive) = g.for_runtime(RuntimeRootMode::Becomes(0o755));
        assert_eq!(archive, None);
        assert_eq!(drifting.entrypoint()[ROOT_MODE_ARG], "555|755");
        assert_eq!(
            drifting.entrypoint()[2],
            g.entrypoint()[2],
            "the same nonce"
        );
        let (unknown, archive) = g.for_runtime(RuntimeRootMode::Unknown);
        assert_eq!(archive, None);
        assert_eq!(unknown.entrypoint()[ROOT_MODE_ARG], "555|755");
        // A scratch R (writable, 1777): R's entry is written, nothing else, and the gate
        // accepts only the planned mode.
        let mut scratch = g.clone();
        scratch.root = ("/workspace".into(), 0o1777, false);
        scratch.entrypoint[ROOT_MODE_ARG] = "1777".into();
        for runtime in [RuntimeRootMode::Becomes(0o755), RuntimeRootMode::Unknown] {
            let (gate, archive) = scratch.for_runtime(runtime);
            assert_eq!(gate, scratch);
            let bytes = archive.expect("R's entry");
            let mut ar = tar::Archive::new(&bytes[..]);
            let entries: Vec<(String, u32)> = ar
                .entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let mode = e.header().mode().unwrap();
                    (e.path().unwrap().to_string_lossy().into_owned(), mode)
                })
                .collect();
            assert_eq!(entries, vec![("workspace/".to_owned(), 0o1777)]);
        }
        assert_eq!(scratch.for_runtime(RuntimeRootMode::Kept).1, None);
    }

    #[test]
    fn only_this_launchs_refusal_line_counts() {
        let dir = tempfile::tempdir().unwrap();
        let g = Gate::new(&verified(dir.path()));
        let nonce = &g.entrypoint()[2];
        let line = format!(
            "noise\nmount-plan-gate: {nonce}: refused: gate-bind-identity: the bind at x\nmore"
        );
        assert_eq!(
            g.refusal(&line),
            Some(GateRefusal {
                check: "gate-bind-identity".into(),
                message: "the bind at x".into()
            })
        );
        // Another launch's nonce (or a job printing a look-alike) is not a refusal.
        let other = "mount-plan-gate: 0123: refused: gate-bind-identity: forged";
        assert_eq!(g.refusal(other), None);
    }
}
