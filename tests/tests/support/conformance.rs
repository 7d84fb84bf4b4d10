//! The engine-neutral conformance suite.
//!
//! A scenario launches the probe through the one lifecycle on an `Engine` (any engine) in a
//! fresh workspace,
//! parses its JSON report, and [`check`]s it against the plan and the host pins. Each failed
//! check has a stable id, so that a test that removes one protection can assert that exactly
//! the matching check catches it.
//!
//! An engine's test file provides an [`EngineFixture`] (image, probe path, users, what the
//! engine can express) and calls [`run_all`].

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use mount_plan::{BindRole, MountPlan};
use mount_plan_host::VerifiedPlan;
use mount_plan_launch::{
    launch, Engine, ExitStatus, LaunchOptions, LaunchSpec, LogChunk, OutputStream, Protection,
    User, LABEL_JOB, LABEL_MANAGED, LABEL_PLAN_DIGEST,
};
use serde::Deserialize;

use super::workspace::{
    Workspace, WorkspaceOptions, DEVICES, RUN_ME, SIBLING, SITE_FILE, SUBMOUNT, SUBMOUNT_FILE,
    SUID_PROBE,
};
use super::{image::PROBE_IN_IMAGE, unique};

/// What an engine test supplies.
#[derive(Debug, Clone)]
pub struct EngineFixture {
    /// For messages (`docker`, `podman-rootless`...).
    pub name: String,
    /// The image holding `/bin/busybox` and `/probe`.
    pub image: String,
    /// The static probe on the host (copied into the workspace).
    pub probe: PathBuf,
    /// Where workspaces are created (the engine must see it at the same path).
    pub base_dir: PathBuf,
    /// The non-root container user of the nosuid scenario.
    pub nonroot: User,
    /// Host owner of W/J so that `nonroot` can write there (rootless: the mapped ids).
    pub job_owner: Option<(u32, u32)>,
    /// Host owner of W/J in the as-root scenario: the host ids container root maps to
    /// (`None`: host root, on a rootful engine). Container root holds no capability (every
    /// backend drops them all), so, like any job, it writes only into a directory it owns:
    /// without `DAC_OVERRIDE` it cannot write into a W/J owned by `job_owner`.
    pub root_owner: Option<(u32, u32)>,
    /// Hardening this engine cannot apply (Docker: noexec; Swarm at API 1.41: noexec,
    /// nosuid), as its report says: launches go ahead without it (with a warning), and the
    /// suite skips its checks. No spec of the suite accepts anything as missing.
    pub lacks_hardening: BTreeSet<Protection>,
    /// The engine sets nosuid/nodev/noexec on binds, so mountinfo must show them.
    pub bind_flags_in_mountinfo: bool,
    /// Mount W on a shared tmpfs (root only) so non-private propagation is visible.
    pub shared_tmpfs: bool,
    /// The mode R's root inode really gets, when the engine is known to differ from the
    /// plan's (the superblock's `mode=` option is still checked against the plan). Docker:
    /// `Some(0o755)`: it creates the working directory R/J in the container's own filesystem
    /// before runc mounts anything, and runc then chmods a tmpfs to the mode of the directory
    /// it is mounted on.
    pub root_inode_mode: Option<u32>,
    /// The command line that reaches this engine's image store (`docker --host H`,
    /// `podman --url U`); empty where the suite does not name images by tag (Swarm and Slurm
    /// run images named by id).
    pub cli: Vec<String>,
}

impl EngineFixture {
    /// A fresh workspace, W/J owned by [`EngineFixture::job_owner`].
    pub fn workspace(&self) -> Workspace {
        self.workspace_for(Scenario::AsUser)
    }

    /// A fresh workspace for `scenario`: W/J owned by the host ids its container user maps
    /// to ([`EngineFixture::root_owner`] as root, [`EngineFixture::job_owner`] as the user).
    pub fn workspace_for(&self, scenario: Scenario) -> Workspace {
        let job_owner = match scenario {
            Scenario::AsRoot => self.root_owner,
            Scenario::AsUser => self.job_owner,
        };
        Workspace::new(&WorkspaceOptions {
            base: self.base_dir.clone(),
            shared_tmpfs: self.shared_tmpfs,
            job_owner,
            probe: self.probe.clone(),
        })
        .expect("lay out the test workspace")
    }
}

// ---- the probe's report ------------------------------------------------------------------

/// `ids` of the report.
#[derive(Debug, Clone, Deserialize)]
pub struct Ids {
    /// Real, effective, saved, fs uid.
    pub uid: Vec<u64>,
    /// Real, effective, saved, fs gid.
    pub gid: Vec<u64>,
}

/// A `stat` result.
#[derive(Debug, Clone, Deserialize)]
pub struct Stat {
    /// The path.
    pub path: String,
    /// Whether it exists.
    pub exists: bool,
    /// st_dev.
    pub dev: Option<u64>,
    /// st_ino.
    pub ino: Option<u64>,
    /// Permission bits.
    pub mode: Option<u32>,
    /// errno when it does not exist.
    pub errno: Option<i32>,
}

/// A directory listing.
#[derive(Debug, Clone, Deserialize)]
pub struct Listing {
    /// Whether it could be read.
    pub ok: bool,
    /// Sorted names.
    pub names: Option<Vec<String>>,
}

/// One mountinfo line.
#[derive(Debug, Clone, Deserialize)]
pub struct MountInfo {
    /// Mount point.
    pub mount_point: String,
    /// Per-mount options.
    pub mount_options: String,
    /// Optional fields (`shared:N`, `master:N`).
    pub optional: Vec<String>,
    /// Filesystem type.
    pub fs_type: String,
    /// Superblock options.
    pub super_options: String,
}

impl MountInfo {
    fn has_option(&self, o: &str) -> bool {
        self.mount_options.split(',').any(|x| x == o)
    }
}

/// The outcome of a write, mkdir or file creation.
#[derive(Debug, Clone, Deserialize)]
pub struct Outcome {
    /// The path.
    pub path: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// errno on failure.
    pub errno: Option<i32>,
    /// Message on failure.
    pub error: Option<String>,
}

/// Opening a device node.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceOutcome {
    /// The path.
    pub path: String,
    /// Whether any open succeeded.
    pub opened: bool,
}

/// Running a copy of the probe.
#[derive(Debug, Clone, Deserialize)]
pub struct ExecOutcome {
    /// The path.
    pub path: String,
    /// Whether it could be executed.
    pub ran: bool,
    /// Its `ids` output.
    pub stdout: Option<String>,
    /// errno when it could not run.
    pub errno: Option<i32>,
}

/// The probe's capability sets (hex, as /proc/self/status prints them).
#[derive(Debug, Clone, Deserialize)]
pub struct Caps {
    /// CapEff.
    pub effective: Option<String>,
    /// CapBnd.
    pub bounding: Option<String>,
    /// CapPrm.
    pub permitted: Option<String>,
}

/// Trying to create a device node.
#[derive(Debug, Clone, Deserialize)]
pub struct MknodOutcome {
    /// The path.
    pub path: String,
    /// Whether the node was created.
    pub ok: bool,
    /// busybox mknod's message on failure.
    pub stderr: Option<String>,
}

/// Device nodes root tries to plant in R/J: (name, type, major, minor). `c 5 1` is the
/// console, `b 7 0` the first loop device: a host user who can open them through W/J could
/// read a terminal or a disk image.
pub const MKNODS: [(&str, &str, u32, u32); 2] =
    [("planted-c-5-1", "c", 5, 1), ("planted-b-7-0", "b", 7, 0)];

/// The probe's whole report.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    /// The probe's ids.
    pub ids: Ids,
    /// Its capability sets.
    pub caps: Caps,
    /// `--mknod` results.
    pub mknods: Vec<MknodOutcome>,
    /// The working directory.
    pub cwd: Stat,
    /// R.
    pub root: Stat,
    /// Entries of R.
    pub root_entries: Listing,
    /// Every mount.
    pub mountinfo: Vec<MountInfo>,
    /// `--stat` results.
    pub stats: Vec<Stat>,
    /// `--try-write` results.
    pub writes: Vec<Outcome>,
    /// `--try-mkdir` results.
    pub mkdirs: Vec<Outcome>,
    /// `--write-file` results.
    pub files: Vec<Outcome>,
    /// `--open-device` results.
    pub devices: Vec<DeviceOutcome>,
    /// `--exec` results.
    pub execs: Vec<ExecOutcome>,
}

impl Report {
    fn mount(&self, point: &str) -> Option<&MountInfo> {
        // The last line for a mount point is the one on top.
        self.mountinfo.iter().rev().find(|m| m.mount_point == point)
    }
    fn stat(&self, path: &str) -> Option<&Stat> {
        self.stats.iter().find(|s| s.path == path)
    }
    fn write(&self, path: &str) -> Option<&Outcome> {
        self.writes.iter().find(|s| s.path == path)
    }
}

// ---- scenarios ---------------------------------------------------------------------------

/// Which probe run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The image's user (root): writes, mounts, devices, pins.
    AsRoot,
    /// The fixture's non-root user: the setuid copy must not raise the effective uid.
    AsUser,
}

/// File the probe writes relative to its working directory.
pub fn cwd_file(s: Scenario) -> &'static str {
    match s {
        Scenario::AsRoot => "out-root.txt",
        Scenario::AsUser => "out-user.txt",
    }
}

/// The probe's command line for `scenario` in `ws`.
pub fn probe_command(plan: &MountPlan, s: Scenario) -> Vec<String> {
    let r = plan.container_root().as_str();
    let j = plan.workdir().as_str();
    let mut cmd: Vec<String> = vec![
        PROBE_IN_IMAGE.into(),
        "report".into(),
        "--root".into(),
        r.into(),
    ];
    let mut add = |flag: &str, v: String| {
        cmd.push(flag.into());
        cmd.push(v);
    };
    add("--stat", j.to_owned());
    for b in plan.binds() {
        add("--stat", b.target().as_str().to_owned());
    }
    add("--stat", format!("{r}/{SUBMOUNT}"));
    add("--stat", format!("{r}/{SUBMOUNT}/{SUBMOUNT_FILE}"));
    add("--stat", format!("{r}/{SIBLING}"));
    add("--stat", format!("{r}/{SITE_FILE}"));
    add("--try-write", format!("{r}/probe-write"));
    add("--try-mkdir", format!("{r}/probe-dir"));
    for b in plan.binds().filter(|b| b.role() == BindRole::Shared) {
        add("--try-write", format!("{}/probe-write", b.target()));
    }
    add("--try-write", format!("{r}/{SUBMOUNT}/probe-write"));
    add("--write-file", cwd_file(s).to_owned());
    match s {
        Scenario::AsRoot => {
            for (name, _, _) in DEVICES {
                add("--open-device", format!("{j}/{name}"));
            }
            for (name, kind, major, minor) in MKNODS {
                add("--mknod", format!("{j}/{name}:{kind}:{major}:{minor}"));
            }
            add("--exec", format!("{r}/{RUN_ME}"));
        }
        Scenario::AsUser => add("--exec", format!("{j}/{SUID_PROBE}")),
    }
    cmd
}

/// The launch spec of a scenario, labelled with a unique `mount-plan-test.run` value.
pub fn spec_for(fx: &EngineFixture, plan: &MountPlan, s: Scenario, run_label: &str) -> LaunchSpec {
    let mut spec =
        LaunchSpec::new(fx.image.parse().expect("image ref")).with_command(probe_command(plan, s));
    spec.labels
        .insert("mount-plan-test.run", run_label)
        .expect("label");
    if s == Scenario::AsUser {
        spec.user = Some(fx.nonroot);
    }
    spec
}

/// A tag moved to another image between two launches of one process: the second launch runs
/// the image the tag names now, with that image's entrypoint. The first launch's read of the
/// tag is kept; the container created from it runs the new image, so the audit before start
/// finds the difference, the lifecycle removes that container unstarted and creates once more
/// from a fresh read (two creates in the second launch). Docker and Podman.
pub async fn a_moved_tag_runs_the_image_it_names_now(rt: &dyn Engine, fx: &EngineFixture) {
    let (program, args) = fx.cli.split_first().expect("the engine's command line");
    let cli = || {
        let mut c = std::process::Command::new(program);
        c.args(args);
        c
    };
    let suffix = super::unique("moving");
    let tag = |what: &str| format!("mount-plan-probe:{what}-{suffix}");
    let (a, b, moving) = (tag("a"), tag("b"), tag("tag"));
    let work = super::image::repo_root().join("target/probe/image");
    let tar = super::image::locked(
        &super::image::repo_root().join("target/probe/.image.lock"),
        || super::image::image_tar(&work).map(|(tar, _)| tar),
    )
    .expect("the image tar");
    for (image, word) in [(&a, "image-a"), (&b, "image-b")] {
        let entrypoint = format!(r#"ENTRYPOINT ["/bin/busybox", "echo", "{word}"]"#);
        mount_plan_testkit::image::import(&mut cli(), &tar, image, &[entrypoint]).expect("import");
    }
    /// Counts the containers a launch created, and keeps its output.
    #[derive(Default)]
    struct Seen {
        created: usize,
        out: Vec<u8>,
    }
    impl mount_plan_launch::Observer for Seen {
        fn output(&mut self, chunk: &LogChunk) {
            self.out.extend_from_slice(&chunk.bytes);
        }
        fn event(&mut self, event: &mount_plan_launch::Event) {
            self.created += usize::from(matches!(event, mount_plan_launch::Event::Created { .. }));
        }
    }
    let run_label = super::unique("run");
    let (run_label, moving, cli) = (run_label.as_str(), moving.as_str(), &cli);
    let launch_tag = |to: &str| {
        super::run(cli().args(["tag", to, moving])).expect("tag");
        async move {
            let ws = fx.workspace_for(Scenario::AsRoot);
            let verified = ws.verified();
            let mut spec = spec_for(fx, verified.plan(), Scenario::AsRoot, run_label);
            spec.image = moving.parse().expect("image ref");
            spec.command.clear();
            let mut seen = Seen::default();
            let outcome = launch(rt, &verified, &spec, &LaunchOptions::default(), &mut seen).await;
            (outcome.map(|done| done.status.code), seen)
        }
    };
    let (first, seen) = launch_tag(&a).await;
    assert_eq!(first.map_err(|f| f.error.to_string()), Ok(0), "{}", fx.name);
    assert_eq!(
        String::from_utf8_lossy(&seen.out).trim(),
        "image-a",
        "{}",
        fx.name
    );
    assert_eq!(seen.created, 1, "{}", fx.name);
    let (second, seen) = launch_tag(&b).await;
    assert_eq!(
        second.map_err(|f| f.error.to_string()),
        Ok(0),
        "{}",
        fx.name
    );
    assert_eq!(
        String::from_utf8_lossy(&seen.out).trim(),
        "image-b",
        "{}: the tag names image b now; its entrypoint runs",
        fx.name
    );
    assert_eq!(
        seen.created, 2,
        "{}: the kept read of the tag made a container of the moved image, which the audit caught",
        fx.name
    );
    assert!(
        super::leftovers(rt, run_label).await.is_empty(),
        "{}",
        fx.name
    );
    super::run(cli().args(["rmi", moving, &a, &b])).expect("remove the images");
}

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable check id.
    pub check: &'static str,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.check, self.detail)
    }
}

const EROFS: i32 = 30;

/// Compare a report with the plan and the host. Every check has an id (see the list in the
/// body); an empty result means the container is exactly what the plan says.
pub fn check(
    fx: &EngineFixture,
    ws: &Workspace,
    verified: &VerifiedPlan,
    s: Scenario,
    report: &Report,
) -> Vec<Failure> {
    let plan = verified.plan();
    let mut out = Vec::new();
    let mut fail = |check: &'static str, detail: String| out.push(Failure { check, detail });
    let r = plan.container_root().as_str();
    let workdir = plan.workdir().as_str();
    let t = plan.root_tmpfs();

    // root-entries: exactly the planned names at R (siblings and W's files invisible).
    let mut planned: Vec<String> = plan
        .binds()
        .filter_map(|b| {
            b.target()
                .as_str()
                .strip_prefix(&format!("{r}/"))
                .map(str::to_owned)
        })
        .collect();
    planned.sort();
    match &report.root_entries.names {
        Some(names) if *names == planned => {}
        other => fail(
            "root-entries",
            format!("entries at {r:?}: {other:?}, planned {planned:?}"),
        ),
    }
    for p in [format!("{r}/{SIBLING}"), format!("{r}/{SITE_FILE}")] {
        if report.stat(&p).is_none_or(|st| st.exists) {
            fail("isolation", format!("{p:?} is visible inside"));
        }
    }

    // root-mode and root-mount: mode, read-only flag, hardening and size of R's tmpfs.
    let want_mode = fx.root_inode_mode.unwrap_or(t.mode());
    if report.root.mode != Some(want_mode) {
        fail(
            "root-mode",
            format!(
                "R mode {:?}, expected {want_mode:o} (planned {:o})",
                report.root.mode.map(|m| format!("{m:o}")),
                t.mode()
            ),
        );
    }
    match report.mount(r) {
        None => fail("root-mount", format!("no mount at {r:?}")),
        Some(m) => {
            if m.fs_type != "tmpfs" {
                fail("root-mount", format!("R is {:?}, not tmpfs", m.fs_type));
            }
            if m.has_option("ro") != t.read_only() {
                fail(
                    "root-mount",
                    format!(
                        "R mount options {:?}, planned read-only={}",
                        m.mount_options,
                        t.read_only()
                    ),
                );
            }
            for flag in t.flags().words() {
                if !m.has_option(flag) {
                    fail(
                        "root-mount",
                        format!("R lacks {flag:?}: {:?}", m.mount_options),
                    );
                }
            }
            let size = format!("size={}k", t.size_bytes() / 1024);
            let mode = format!("mode={:o}", t.mode());
            if !m.super_options.split(',').any(|o| o == size)
                || !m.super_options.split(',').any(|o| o == mode)
            {
                fail(
                    "root-mount",
                    format!(
                        "R superblock options {:?}, planned {size},{mode}",
                        m.super_options
                    ),
                );
            }
        }
    }
    // root-write: nothing can be created at R, not even by root.
    if t.read_only() {
        for o in report
            .writes
            .iter()
            .chain(&report.mkdirs)
            .filter(|o| o.path.starts_with(r) && o.path[r.len()..].matches('/').count() == 1)
        {
            if o.ok || o.errno != Some(EROFS) {
                fail(
                    "root-write",
                    format!(
                        "creating {:?} at R: ok={} errno={:?} (want EROFS)",
                        o.path, o.ok, o.errno
                    ),
                );
            }
        }
    }

    // shared binds: read-only, not writable, private, flags where the engine can set them.
    for b in plan.binds() {
        let target = b.target().as_str();
        let Some(m) = report.mount(target) else {
            fail("bind-mount", format!("no mount at {target:?}"));
            continue;
        };
        if m.has_option("ro") != b.read_only() {
            let check = if b.read_only() {
                "shared-mount"
            } else {
                "job-mount"
            };
            fail(
                check,
                format!(
                    "{target:?} options {:?}, planned read-only={}",
                    m.mount_options,
                    b.read_only()
                ),
            );
        }
        if let Some(tag) = m
            .optional
            .iter()
            .find(|o| o.starts_with("shared:") || o.starts_with("master:"))
        {
            fail(
                "propagation",
                format!("{target:?} has propagation tag {tag:?}, planned private"),
            );
        }
        if fx.bind_flags_in_mountinfo {
            for flag in b.flags().words() {
                if !m.has_option(flag) {
                    fail(
                        "bind-flags",
                        format!("{target:?} lacks {flag:?}: {:?}", m.mount_options),
                    );
                }
            }
        }
        if b.role() == BindRole::Shared {
            let p = format!("{target}/probe-write");
            match report.write(&p) {
                Some(o) if !o.ok && o.errno == Some(EROFS) => {}
                other => fail(
                    "shared-write",
                    format!("writing {p:?}: {other:?} (want EROFS)"),
                ),
            }
        }
        // pins: the (dev, ino) inside is the one verified on the host.
        let pin = verified.bind_pin(b.target()).expect("every bind is pinned");
        match report.stat(target) {
            Some(st) if st.dev == Some(pin.dev) && st.ino == Some(pin.ino) => {}
            other => fail(
                "pins",
                format!("{target:?} inside is {other:?}, host pin {pin:?}"),
            ),
        }
    }

    // submount: a host mount below startup/ is not carried in, and not writable.
    let sub = format!("{r}/{SUBMOUNT}");
    if report.mount(&sub).is_some() {
        fail("submount", format!("the host submount shows at {sub:?}"));
    }
    if report
        .stat(&format!("{sub}/{SUBMOUNT_FILE}"))
        .is_none_or(|st| st.exists)
    {
        fail(
            "submount",
            format!("the host submount's file is visible below {sub:?}"),
        );
    }
    match report.write(&format!("{sub}/probe-write")) {
        Some(o) if !o.ok => {}
        other => fail("submount", format!("writing below {sub:?}: {other:?}")),
    }

    // cwd: the working directory is R/J and is the host's W/J (dev, ino).
    let job_pin = verified.job_pin();
    if report.cwd.path != workdir {
        fail(
            "cwd",
            format!("cwd {:?}, planned {workdir:?}", report.cwd.path),
        );
    }
    if report.cwd.dev != Some(job_pin.dev) || report.cwd.ino != Some(job_pin.ino) {
        fail(
            "cwd",
            format!(
                "cwd is ({:?}, {:?}), job pin {job_pin:?}",
                report.cwd.dev, report.cwd.ino
            ),
        );
    }
    // cwd-write: a file written in the working directory appears in W/J on the host.
    let name = cwd_file(s);
    let host_file = ws.job_dir().join(name);
    match std::fs::read_to_string(&host_file) {
        Ok(c) if c == "probe output\n" => {}
        other => fail(
            "cwd-write",
            format!(
                "{host_file:?} on the host: {other:?}; probe said {:?}",
                report.files
            ),
        ),
    }

    // capabilities: every one is dropped (the scenarios grant none), in the kernel's view.
    for (set, value) in [
        ("effective", &report.caps.effective),
        ("permitted", &report.caps.permitted),
        ("bounding", &report.caps.bounding),
    ] {
        match value.as_deref().map(|v| u64::from_str_radix(v, 16)) {
            Some(Ok(0)) => {}
            other => fail(
                "capabilities",
                format!("{set} capability set is {value:?} ({other:?}), want 0: all dropped"),
            ),
        }
    }

    match s {
        Scenario::AsRoot => {
            // mknod: root cannot plant a device node in R/J (no CAP_MKNOD), and afterwards
            // W/J on the host holds no device node but the fixture's own.
            if report.mknods.len() != MKNODS.len() {
                fail("mknod", format!("the probe tried {:?}", report.mknods));
            }
            for m in report.mknods.iter().filter(|m| m.ok) {
                fail("mknod", format!("device node {:?} was created", m.path));
            }
            match std::fs::read_dir(ws.job_dir()) {
                Err(e) => fail("mknod", format!("reading W/J on the host: {e}")),
                Ok(entries) => {
                    use std::os::unix::fs::FileTypeExt;
                    for entry in entries.flatten() {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        let device = entry
                            .file_type()
                            .is_ok_and(|t| t.is_char_device() || t.is_block_device());
                        let planted_by_fixture = DEVICES.iter().any(|(n, _, _)| *n == name);
                        if device && !planted_by_fixture {
                            fail(
                                "mknod",
                                format!(
                                    "{:?} on the host is a device node the job made",
                                    entry.path()
                                ),
                            );
                        }
                    }
                }
            }
            // nodev: device nodes planted in W/J cannot be opened.
            for d in &report.devices {
                if d.opened {
                    fail("nodev", format!("device node {:?} could be opened", d.path));
                }
            }
            // noexec on read-only binds, where the engine can set it.
            if !fx.lacks_hardening.contains(&Protection::NoExecOnBinds) {
                for e in &report.execs {
                    if e.ran {
                        fail(
                            "noexec",
                            format!("{:?} on a read-only bind could be executed", e.path),
                        );
                    }
                }
            }
        }
        Scenario::AsUser => {
            // nosuid: the setuid-root copy does not raise the effective uid (unless the
            // engine cannot honour nosuid and the fixture accepts it: Swarm before API 1.46).
            let nosuid_checked = !fx.lacks_hardening.contains(&Protection::NoSuidOnBinds);
            for e in report.execs.iter().filter(|_| nosuid_checked) {
                let euid = e
                    .stdout
                    .as_deref()
                    .and_then(|o| serde_json::from_str::<Ids>(o).ok())
                    .and_then(|ids| ids.uid.get(1).copied());
                match (e.ran, euid) {
                    (true, Some(u)) if u != 0 => {}
                    (false, _) => {} // not executable at all is stronger than nosuid
                    other => fail(
                        "nosuid",
                        format!("setuid copy {:?} ran with {other:?}", e.path),
                    ),
                }
            }
            if report.ids.uid.get(1).copied() != Some(u64::from(fx.nonroot.uid())) {
                fail(
                    "user",
                    format!("probe ran as {:?}, asked {}", report.ids.uid, fx.nonroot),
                );
            }
        }
    }
    out
}

/// The result of running one scenario.
#[derive(Debug)]
pub struct Outcome2 {
    /// The exit status.
    pub status: ExitStatus,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

/// Parse the probe's stdout.
pub fn parse_report(stdout: &str) -> Result<Report, String> {
    serde_json::from_str(stdout.trim())
        .map_err(|e| format!("probe output is not a report ({e}): {stdout:?}"))
}

/// Launch `spec` on `rt` through the lifecycle, collect output, wait, remove.
pub async fn run_captured(
    rt: &dyn Engine,
    verified: &VerifiedPlan,
    spec: &LaunchSpec,
) -> Result<Outcome2, String> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let status = {
        let mut sink = |c: &LogChunk| match c.stream {
            OutputStream::Stdout => stdout.extend_from_slice(&c.bytes),
            OutputStream::Stderr => stderr.extend_from_slice(&c.bytes),
        };
        launch(rt, verified, spec, &LaunchOptions::default(), &mut sink)
            .await
            .map_err(|e| format!("launch failed: {}", e.error))?
            .status
    };
    Ok(Outcome2 {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Run one scenario through the runtime and return the failed checks (empty: conforming).
pub async fn scenario(rt: &dyn Engine, fx: &EngineFixture, s: Scenario) -> Vec<Failure> {
    let ws = fx.workspace_for(s);
    let verified = ws.verified();
    let run_label = unique("run");
    let spec = spec_for(fx, verified.plan(), s, &run_label);
    let result = run_captured(rt, &verified, &spec).await;
    let leftovers = super::leftovers(rt, &run_label).await;
    let mut failures = Vec::new();
    if !leftovers.is_empty() {
        failures.push(Failure {
            check: "cleanup",
            detail: format!("containers left behind: {leftovers:?}"),
        });
    }
    match result {
        Err(e) => failures.push(Failure {
            check: "probe-ran",
            detail: e,
        }),
        Ok(o) if !o.status.success() => failures.push(Failure {
            check: "probe-ran",
            detail: format!("probe exited {:?}: {}{}", o.status, o.stdout, o.stderr),
        }),
        Ok(o) => match parse_report(&o.stdout) {
            Err(e) => failures.push(Failure {
                check: "probe-ran",
                detail: e,
            }),
            Ok(report) => failures.extend(check(fx, &ws, &verified, s, &report)),
        },
    }
    failures
}

/// Assert that a list of failures is empty, printing each.
pub fn assert_conforms(engine: &str, s: Scenario, failures: &[Failure]) {
    assert!(
        failures.is_empty(),
        "{engine} {s:?}: the container differs from the plan:\n{}",
        failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The labels check: a launched container carries our labels (inspected while it runs).
pub async fn labels_and_audit(rt: &dyn Engine, fx: &EngineFixture) {
    let ws = fx.workspace();
    let verified = ws.verified();
    let run_label = unique("run");
    let mut spec = spec_for(fx, verified.plan(), Scenario::AsRoot, &run_label);
    spec.command = vec!["/bin/sleep".into(), "30".into()];
    let job = super::started(rt, &verified, &spec).await.expect("launch");
    let observed = rt.inspect(&job).await;
    let audit = observed
        .as_ref()
        .map(|o| mount_plan_launch::audit(verified.plan(), o, &fx.lacks_hardening, &spec.cap_add))
        .map_err(ToString::to_string);
    assert_eq!(
        rt.remove(&job).await.expect("remove"),
        mount_plan_launch::Removal::Removed
    );
    let observed = observed.expect("inspect");
    assert!(observed
        .labels
        .contains_key(mount_plan_launch::identity::LABEL_LAUNCH));
    assert_eq!(
        observed.labels.get(LABEL_MANAGED).map(String::as_str),
        Some("1")
    );
    assert_eq!(observed.labels.get(LABEL_JOB), Some(&ws.job));
    assert_eq!(
        observed.labels.get(LABEL_PLAN_DIGEST),
        Some(&mount_plan_launch::plan_digest(verified.plan()))
    );
    assert_eq!(
        audit.expect("inspect"),
        vec![],
        "a launched container conforms to its plan"
    );
    let left = super::leftovers(rt, &run_label).await;
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

/// The attack on the seam between the host check and the engine: W/J is swapped for a link
/// to another directory after `verify` pinned it and before the engine resolves it. The
/// engine mounts the link's target; the in-container gate sees another (device, inode) than
/// the pin and refuses before the command runs: the launch fails with `gate-refused`, the
/// command's marker exists nowhere, and no container is left.
pub async fn swapped_job_dir_is_refused_by_the_gate(rt: &dyn Engine, fx: &EngineFixture) {
    let ws = fx.workspace_for(Scenario::AsRoot);
    let verified = ws.verified();
    let run_label = unique("swap");
    let job = ws.job_dir();
    let elsewhere = ws.top.join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir elsewhere");
    if let Some((uid, gid)) = fx.root_owner {
        std::os::unix::fs::chown(&elsewhere, Some(uid), Some(gid)).expect("chown elsewhere");
    }
    // The swap: the verified directory moves away (within W's filesystem), a link takes its
    // name.
    let moved = ws.w.join("verified-job-dir");
    std::fs::rename(&job, &moved).expect("move W/J away");
    std::os::unix::fs::symlink(&elsewhere, &job).expect("link W/J elsewhere");

    let mut spec = spec_for(fx, verified.plan(), Scenario::AsRoot, &run_label);
    spec.command = vec!["sh".into(), "-c".into(), "echo ran > marker".into()];
    let mut stderr = Vec::new();
    let failed = {
        let mut sink = |c: &LogChunk| {
            if c.stream == OutputStream::Stderr {
                stderr.extend_from_slice(&c.bytes)
            }
        };
        launch(rt, &verified, &spec, &LaunchOptions::default(), &mut sink).await
    };
    let failed = match failed {
        Ok(done) => panic!(
            "{}: the launch into a swapped job directory ran (status {:?})",
            fx.name, done.status
        ),
        Err(failed) => failed,
    };
    assert_eq!(
        failed.error.rule(),
        "gate-refused",
        "{}: {}",
        fx.name,
        failed.error
    );
    assert!(!failed.command_ran, "{}: {}", fx.name, failed.error);
    let msg = failed.error.to_string();
    assert!(
        msg.contains("gate-bind-identity") && msg.contains(verified.plan().workdir().as_str()),
        "{}: {msg}",
        fx.name
    );
    let pin = verified.job_pin();
    assert!(
        msg.contains(&format!("inode {}", pin.ino)),
        "{}: {msg}",
        fx.name
    );
    for dir in [&elsewhere, &moved] {
        assert!(
            !dir.join("marker").exists(),
            "{}: the command ran in {dir:?}",
            fx.name
        );
    }
    let left = super::leftovers(rt, &run_label).await;
    assert!(left.is_empty(), "{}: containers left: {left:?}", fx.name);
    // Restore, so that the workspace cleans up as usual.
    std::fs::remove_file(&job).expect("remove the link");
    std::fs::rename(&moved, &job).expect("move W/J back");
}

/// The outside direction: what a host user finds in W/J after a job that ran as root in the
/// container. The job copies a program into its directory and makes it set-user-ID (its
/// owner: host root on a rootful engine, the service's user rootless) and tries to make a
/// device node. Afterwards no device node exists in W/J, and the program, run by another
/// host user (nobody), does not run with its owner's identity: the launch cleared the set-id
/// bits of what the job left (`VerifiedPlan::sweep_job_dir`) and said so.
pub async fn planted_setuid_and_devices_give_host_users_nothing(
    rt: &dyn Engine,
    fx: &EngineFixture,
) {
    use std::os::unix::fs::PermissionsExt;
    let ws = fx.workspace_for(Scenario::AsRoot);
    let verified = ws.verified();
    let run_label = unique("plant");
    let mut spec = spec_for(fx, verified.plan(), Scenario::AsRoot, &run_label);
    spec.command = vec![
        "sh".into(),
        "-c".into(),
        format!(
            "cp {PROBE_IN_IMAGE} ./planted && chmod 6755 ./planted && ls -ln ./planted; \
             mknod ./console c 5 1; mknod ./loop b 7 0; true"
        ),
    ];
    let mut stdout = Vec::new();
    let done = {
        let mut sink = |c: &LogChunk| stdout.extend_from_slice(&c.bytes);
        launch(rt, &verified, &spec, &LaunchOptions::default(), &mut sink)
            .await
            .unwrap_or_else(|f| panic!("{}: the planting job failed: {}", fx.name, f.error))
    };
    let out = String::from_utf8_lossy(&stdout);
    assert!(
        out.contains("-rwsr-sr-x"),
        "{}: the job did not plant a set-id program: {out}",
        fx.name
    );
    let job = ws.job_dir();
    for node in ["console", "loop"] {
        assert!(
            std::fs::symlink_metadata(job.join(node)).is_err(),
            "{}: the job made a device node {node:?} in W/J",
            fx.name
        );
    }
    let planted = job.join("planted");
    let meta = std::fs::metadata(&planted).expect("the planted program is in W/J");
    assert_eq!(
        meta.permissions().mode() & 0o6000,
        0,
        "{}: set-id bits left on {planted:?}",
        fx.name
    );
    assert!(
        done.warnings
            .iter()
            .any(|w| w.contains("cleared the set-user-ID") && w.contains("planted")),
        "{}: no warning about what was cleared: {:?}",
        fx.name,
        done.warnings
    );
    // Another host user runs it: W's path must be reachable for the attempt to mean anything.
    for dir in [&ws.top, &ws.w, &job] {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o005)).unwrap();
    }
    let ran = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&planted)
        .arg("ids")
        .output()
        .expect("setpriv");
    let ids: Ids = serde_json::from_slice(&ran.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: the planted program did not run as nobody ({e}): {}",
            fx.name,
            String::from_utf8_lossy(&ran.stderr)
        )
    });
    assert_eq!(
        ids.uid.get(1),
        Some(&65534),
        "{}: effective uid {:?}",
        fx.name,
        ids.uid
    );
    assert_eq!(
        ids.gid.get(1),
        Some(&65534),
        "{}: effective gid {:?}",
        fx.name,
        ids.gid
    );
}

/// A scratch root (a size-capped, writable tmpfs at R): the container sees R with the planned
/// mode (1777, sticky) on every engine where the plan is honoured, a user other than root can
/// create a file there, and the gate (which checks R's mode before the command) let it run.
/// On Docker 20.10 this needs R's directory entry written before start (runc 1.1.5 would give
/// 0755, where only root can write).
pub async fn scratch_root_has_the_planned_mode(rt: &dyn Engine, fx: &EngineFixture) {
    use mount_plan::{HostPath, LayoutSpec, RootKind};
    let ws = fx.workspace_for(Scenario::AsUser);
    let layout = LayoutSpec {
        root: Some(RootKind::Scratch),
        root_size_bytes: Some(1 << 20),
        ..LayoutSpec::default()
    }
    .build()
    .expect("scratch layout");
    let plan = layout
        .plan(
            &HostPath::parse(ws.w.to_str().unwrap()).unwrap(),
            &layout.job(&ws.job).unwrap(),
        )
        .expect("plan");
    let verified = mount_plan_host::verify(
        plan,
        &mount_plan_host::VerifyOptions {
            job_dir: mount_plan_host::JobDir::MustExist,
            ..mount_plan_host::VerifyOptions::default()
        },
    )
    .expect("verify");
    let r = verified.plan().container_root().as_str().to_owned();
    let run_label = unique("scratch");
    let mut spec = spec_for(fx, verified.plan(), Scenario::AsUser, &run_label);
    spec.command = vec![
        "sh".into(),
        "-c".into(),
        format!("stat -c %a {r}; echo x > {r}/scratch-file && echo wrote"),
    ];
    let out = run_captured(rt, &verified, &spec)
        .await
        .unwrap_or_else(|e| panic!("{}: the scratch-root launch failed: {e}", fx.name));
    assert!(out.status.success(), "{}: {out:?}", fx.name);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("{:o}", mount_plan::SCRATCH_ROOT_MODE).as_str(),
            "wrote"
        ],
        "{}: R's mode and a user's write at R: {out:?}",
        fx.name
    );
}

/// Issue 21, finding 10: the job's command runs with no-new-privileges, set by the gate
/// itself before `execve`, whatever the engine's API carried (Swarm at API 1.41 drops
/// `NoNewPrivileges` from the service spec). Read from inside: `/proc/self/status` of the
/// command says `NoNewPrivs: 1`.
pub async fn the_command_runs_with_no_new_privileges(rt: &dyn Engine, fx: &EngineFixture) {
    let ws = fx.workspace_for(Scenario::AsRoot);
    let verified = ws.verified();
    let run_label = unique("nnp");
    let mut spec = spec_for(fx, verified.plan(), Scenario::AsRoot, &run_label);
    // Shell built-ins only: the probe image has no grep.
    spec.command = vec![
        "sh".into(),
        "-c".into(),
        "while read -r l; do case \"$l\" in NoNewPrivs*) echo $l;; esac; done < /proc/self/status"
            .into(),
    ];
    let mut stdout = Vec::new();
    let done = {
        let mut sink = |c: &LogChunk| stdout.extend_from_slice(&c.bytes);
        launch(rt, &verified, &spec, &LaunchOptions::default(), &mut sink)
            .await
            .unwrap_or_else(|f| panic!("{}: the job failed: {}", fx.name, f.error))
    };
    let out = String::from_utf8_lossy(&stdout);
    assert_eq!(done.status.code, 0, "{}: {out}", fx.name);
    assert_eq!(
        out.trim(),
        "NoNewPrivs: 1",
        "{}: the command runs without no-new-privileges",
        fx.name
    );
}

/// An engine that shows `gc` only the containers of one test run (other launches share the
/// engine), and whose removal of `raced` comes just after someone else's: as when a launch
/// ends and removes its own container between gc's listing and gc's removal.
#[derive(Debug)]
struct RacedGc<'a> {
    inner: &'a dyn Engine,
    run: String,
    raced: String,
}

#[async_trait::async_trait]
impl Engine for RacedGc<'_> {
    fn info(&self) -> &mount_plan_launch::EngineInfo {
        self.inner.info()
    }
    fn report(&self) -> mount_plan_launch::EngineReport {
        self.inner.report()
    }
    async fn create(
        &self,
        request: &mount_plan_launch::CreateRequest<'_>,
    ) -> Result<mount_plan_launch::Created, mount_plan_launch::LaunchError> {
        self.inner.create(request).await
    }
    async fn start(&self, id: &str) -> Result<(), mount_plan_launch::LaunchError> {
        self.inner.start(id).await
    }
    async fn inspect(
        &self,
        id: &str,
    ) -> Result<mount_plan_launch::ObservedContainer, mount_plan_launch::LaunchError> {
        self.inner.inspect(id).await
    }
    async fn wait(
        &self,
        id: &str,
    ) -> Result<mount_plan_launch::ExitStatus, mount_plan_launch::LaunchError> {
        self.inner.wait(id).await
    }
    fn logs(&self, id: &str) -> mount_plan_launch::LogStream {
        self.inner.logs(id)
    }
    async fn stop(
        &self,
        id: &str,
        grace: std::time::Duration,
    ) -> Result<(), mount_plan_launch::LaunchError> {
        self.inner.stop(id, grace).await
    }
    async fn remove(
        &self,
        id: &str,
    ) -> Result<mount_plan_launch::Removal, mount_plan_launch::LaunchError> {
        if id == self.raced {
            assert_eq!(
                self.inner.remove(id).await.expect("the racing removal"),
                mount_plan_launch::Removal::Removed
            );
        }
        self.inner.remove(id).await
    }
    async fn list(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<mount_plan_launch::Listed>, mount_plan_launch::LaunchError> {
        let mut found = self.inner.list(key, value).await?;
        found.retain(|l| l.labels.get("mount-plan-test.run") == Some(&self.run));
        Ok(found)
    }
}

/// `gc` reports exactly what it removed: of two containers whose launcher is gone, one is
/// removed by someone else between gc's listing and its removal (the engine answers that it
/// is gone): gc reports only the other one as removed, and nothing is left.
pub async fn gc_reports_only_what_it_removed(rt: &dyn Engine, fx: &EngineFixture) {
    let ws = fx.workspace();
    let verified = ws.verified();
    let run = unique("gc");
    let mut spec = spec_for(fx, verified.plan(), Scenario::AsRoot, &run);
    spec.command = vec!["/bin/true".into()];
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut labels = mount_plan_launch::lifecycle::launch_labels(
            verified.plan(),
            &spec,
            &mount_plan_launch::LaunchId::new(),
            &mount_plan_launch::Launcher::current(),
        );
        // A launcher that is gone: no process has this pid.
        labels.insert(
            mount_plan_launch::identity::LABEL_PID.into(),
            "999999999".into(),
        );
        let gate = mount_plan_launch::gate::Gate::new(&verified);
        let request = mount_plan_launch::CreateRequest {
            plan: &verified,
            gate: &gate,
            spec: &spec,
            labels: &labels,
            reread_image: false,
        };
        ids.push(rt.create(&request).await.expect("create").id);
    }
    let engine = RacedGc {
        inner: rt,
        run: run.clone(),
        raced: ids[0].clone(),
    };
    let collected = mount_plan_launch::gc(&engine, &mount_plan_launch::GcOptions::default())
        .await
        .expect("gc");
    let left = super::leftovers(rt, &run).await;
    for id in &left {
        let _ = rt.remove(id).await;
    }
    let reported: Vec<(&str, bool)> = collected
        .iter()
        .map(|c| (c.container.as_str(), c.removed))
        .collect();
    assert_eq!(
        reported,
        vec![(ids[1].as_str(), true)],
        "{}: gc reports only the container it removed ({} was removed before gc's removal): {collected:?}",
        fx.name,
        ids[0]
    );
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

/// Large output, interleaved on both streams, from a job that exits at once, `at_once`
/// launches at a time (the load under which Podman's follower once lost the end of stderr),
/// `rounds` times: every byte arrives exactly once, in order per stream.
pub async fn large_output_arrives_complete_and_once(
    rt: &dyn Engine,
    fx: &EngineFixture,
    at_once: usize,
    rounds: usize,
) {
    let n = 3000;
    let want = |p: &str| (0..n).map(|i| format!("{p}-{i}\n")).collect::<String>();
    let workspaces: Vec<_> = (0..at_once).map(|_| fx.workspace()).collect();
    let verified: Vec<_> = workspaces.iter().map(|ws| ws.verified()).collect();
    for round in 0..rounds {
        let launches = verified.iter().map(|v| async move {
            let mut spec = LaunchSpec::new(fx.image.parse().unwrap()).with_command([
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                format!(
                    "i=0; while [ $i -lt {n} ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); done"
                ),
            ]);
            spec.labels
                .insert("mount-plan-test.run", &unique("run"))
                .unwrap();
            run_captured(rt, v, &spec).await
        });
        for (i, out) in futures_util::future::join_all(launches)
            .await
            .into_iter()
            .enumerate()
        {
            let out = out.expect("run");
            assert_eq!(out.status.code, 0, "{}", fx.name);
            // Where a stream first differs from what the job wrote, with what follows there.
            let differs = |got: &str, want: &str| {
                let at = got
                    .bytes()
                    .zip(want.bytes())
                    .position(|(g, w)| g != w)
                    .unwrap_or(got.len().min(want.len()));
                let show = |s: &str| s[at.min(s.len())..(at + 40).min(s.len())].to_owned();
                format!(
                    "{} of {} bytes, first difference at byte {at}: got {:?}, want {:?}",
                    got.len(),
                    want.len(),
                    show(got),
                    show(want)
                )
            };
            assert!(
                out.stdout == want("out") && out.stderr == want("err"),
                "{}: round {round}, launch {i}: stdout {}; stderr {}",
                fx.name,
                differs(&out.stdout, &want("out")),
                differs(&out.stderr, &want("err")),
            );
        }
    }
}
