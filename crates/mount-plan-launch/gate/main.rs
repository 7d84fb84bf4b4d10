//! `mount-plan-gate`: the first process of every job container. It compares the mounts the
//! container actually got with the identities the launcher verified on the host, and only
//! then replaces itself (`execve`) with the job's command, so the command keeps PID 1, the
//! image's environment and its signal semantics. On any difference it writes one line and
//! exits [`REFUSED`] without running anything.
//!
//! ```text
//! gate v2 NONCE
//!      tmpfs R MODE[|MODE]... ro|rw            (octal; more than one: a known engine drift)
//!      bind TARGET DEV|same:GROUP INO ro|rw rec|norec   (one per bind, in mount order)
//!      cwd DIR
//!      -- COMMAND [ARG]...
//! ```
//!
//! `DEV` and `INO` are the `st_dev` and `st_ino` the launcher pinned on the host; device
//! numbers and inode numbers are not namespaced, so a bind of the very same directory shows
//! the same pair inside the container (rootless user namespaces included). On a cluster node
//! the device number of a network filesystem is that node's own, so a launcher can write
//! `same:GROUP` instead of a device: the inode must still match, and every bind of the group
//! must be on one filesystem (W's shared directories and W/J are, by the host checks). The
//! refusal line
//! is `mount-plan-gate: NONCE: refused: RULE: MESSAGE` on stderr; the launcher recognises it
//! by its nonce, which the job never sees (it exists only in the gate's own arguments).
//!
//! When the environment holds `MOUNT_PLAN_GATE_NODE` (a cluster engine sets it to the node's
//! name), a refusal names the node; the variable is removed before the command runs.
//!
//! Before `execve` the gate sets no-new-privileges on itself (`PR_SET_NO_NEW_PRIVS`, inherited
//! by the command and everything it starts), whatever the engine's API could carry: a
//! set-user-ID file then gives no privilege in the container on any engine. It refuses
//! (`gate-no-new-privs`) when the kernel does not confirm it.
//!
//! Dependency-free (std only, one `unsafe` call: `prctl`) so that it links statically.
#![deny(unsafe_code)]

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The protocol, shared with the launcher: `mount-plan-spec`'s `src/gate_protocol.rs`, whose
/// path the build script hands to rustc.
#[allow(dead_code)]
mod protocol {
    include!(env!("MOUNT_PLAN_GATE_PROTOCOL"));
}
/// The exit status of a refusal (the status `docker run` uses for "the container did not
/// run the command").
const REFUSED: u8 = protocol::GATE_REFUSED;
/// The only protocol version this gate speaks.
/// v2: the gate sets no-new-privileges before `execve`; a v1 gate (which did not) refuses a v2
/// launch, so a stale gate installed on a cluster's nodes cannot run a job without it.
const VERSION: &str = protocol::GATE_PROTOCOL;
/// The environment variable naming the node, on a cluster engine.
const NODE_ENV: &str = protocol::GATE_NODE_ENV;

/// The root tmpfs, as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Root {
    path: String,
    /// The planned mode first, then modes a known engine drift gives instead.
    modes: Vec<u32>,
    read_only: bool,
}

/// One bind, as planned and pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bind {
    target: String,
    dev: Dev,
    ino: u64,
    read_only: bool,
    recursive: bool,
}

/// The device a bind must be on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dev {
    /// This device number (the launcher's, on the same machine).
    Exact(u64),
    /// Whatever this node numbers it, the same as every other bind of the group.
    Same(String),
}

/// Everything the gate checks, and what it runs afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Gate {
    nonce: String,
    root: Root,
    binds: Vec<Bind>,
    cwd: String,
    command: Vec<OsString>,
}

/// A refusal: a rule id and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    rule: &'static str,
    message: String,
}

fn refuse(rule: &'static str, message: String) -> Refusal {
    Refusal { rule, message }
}

fn flag(value: Option<String>, yes: &str, no: &str, what: &str) -> Result<bool, Refusal> {
    match value.as_deref() {
        Some(v) if v == yes => Ok(true),
        Some(v) if v == no => Ok(false),
        other => Err(refuse(
            "gate-arguments",
            format!("{what}: expected {yes:?} or {no:?}, got {other:?}"),
        )),
    }
}

fn number(value: Option<String>, radix: u32, what: &str) -> Result<u64, Refusal> {
    let v = value.ok_or_else(|| refuse("gate-arguments", format!("{what} is missing")))?;
    u64::from_str_radix(&v, radix)
        .map_err(|_| refuse("gate-arguments", format!("{what} {v:?} is not a number")))
}

/// Parse the arguments after the program name.
fn parse(args: Vec<OsString>) -> Result<Gate, Refusal> {
    let mut args = args.into_iter();
    let mut word = |what: &str| -> Result<String, Refusal> {
        let a = args
            .next()
            .ok_or_else(|| refuse("gate-arguments", format!("{what} is missing")))?;
        a.into_string()
            .map_err(|a| refuse("gate-arguments", format!("{what} {a:?} is not UTF-8")))
    };
    let version = word("the protocol version")?;
    if version != VERSION {
        return Err(refuse(
            "gate-arguments",
            format!("protocol {version:?}, this gate speaks {VERSION:?}"),
        ));
    }
    let nonce = word("the nonce")?;
    let mut root = None;
    let mut binds = Vec::new();
    let mut cwd = None;
    loop {
        match word("a check or \"--\"")?.as_str() {
            "tmpfs" => {
                let path = word("the root path")?;
                let modes = word("the root mode")?
                    .split('|')
                    .map(|m| number(Some(m.to_owned()), 8, "the root mode").map(|m| m as u32))
                    .collect::<Result<Vec<u32>, Refusal>>()?;
                let read_only = flag(Some(word("ro|rw")?), "ro", "rw", "the root")?;
                root = Some(Root {
                    path,
                    modes,
                    read_only,
                });
            }
            "bind" => {
                let target = word("the bind target")?;
                let dev = match word("the device")? {
                    d if d.starts_with("same:") => Dev::Same(d["same:".len()..].to_owned()),
                    d => Dev::Exact(number(Some(d), 10, "the device")?),
                };
                let ino = number(Some(word("the inode")?), 10, "the inode")?;
                let read_only = flag(Some(word("ro|rw")?), "ro", "rw", &target)?;
                let recursive = flag(Some(word("rec|norec")?), "rec", "norec", &target)?;
                binds.push(Bind {
                    target,
                    dev,
                    ino,
                    read_only,
                    recursive,
                });
            }
            "cwd" => cwd = Some(word("the working directory")?),
            "--" => break,
            other => return Err(refuse("gate-arguments", format!("unknown check {other:?}"))),
        }
    }
    let command: Vec<OsString> = args.collect();
    if command.is_empty() {
        return Err(refuse(
            "gate-no-command",
            "no command to run (neither the launch nor the image gives one)".into(),
        ));
    }
    Ok(Gate {
        nonce,
        root: root.ok_or_else(|| refuse("gate-arguments", "no root check".into()))?,
        binds,
        cwd: cwd.ok_or_else(|| refuse("gate-arguments", "no working directory check".into()))?,
        command,
    })
}

/// One line of `/proc/self/mountinfo`: what the gate needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    /// The path inside its filesystem that is mounted (mountinfo's fourth field: `/` for a
    /// whole filesystem, `/sys/kernel/core_pattern` for one procfs file bound elsewhere).
    root: String,
    mount_point: String,
    read_only: bool,
    fstype: String,
}

/// Undo mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Three octal digits after a backslash, of a value that fits a byte (the kernel writes
        // no other); anything else is kept as written.
        let escaped = (b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)))
        .then(|| {
            u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0')
        })
        .and_then(|v| u8::try_from(v).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let root = unescape(fields.get(3)?);
            let mount_point = unescape(fields.get(4)?);
            let read_only = fields.get(5)?.split(',').any(|o| o == "ro");
            let fstype = right.split(' ').next()?.to_owned();
            Some(MountEntry {
                root,
                mount_point,
                read_only,
                fstype,
            })
        })
        .collect()
}

/// The mount visible at `path`: the last entry mounted there.
fn mounted_at<'a>(mounts: &'a [MountEntry], path: &str) -> Option<&'a MountEntry> {
    mounts.iter().rev().find(|m| m.mount_point == path)
}

fn below(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/') || dir.ends_with('/'))
}

fn rw(read_only: bool) -> &'static str {
    if read_only {
        "read-only"
    } else {
        "read-write"
    }
}

/// `major:minor` of a Linux `dev_t` (glibc's `major` and `minor`: the minor's high bits end
/// where the major's begin, at bit 32).
fn dev_name(dev: u64) -> String {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    format!("{major}:{minor}")
}

/// `(st_dev, st_ino, mode bits, is a directory)` of a path, or why it could not be read.
type StatResult = Result<(u64, u64, u32, bool), String>;

/// What the filesystem says of the checks; kept apart from [`compare`] so that the decision
/// is tested without a container.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    mounts: Vec<MountEntry>,
    /// `(dev, ino, mode)` of each path the gate looked at, or the error.
    stats: Vec<(String, StatResult)>,
    cwd: Result<PathBuf, String>,
}

fn stat_of(seen: &Seen, path: &str) -> StatResult {
    seen.stats
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, s)| s.clone())
        .unwrap_or_else(|| Err("not looked at".into()))
}

/// The paths runc, crun and the engines above them mask by default (a file: `/dev/null` bound
/// over it; a directory: an empty read-only tmpfs), for naming a trace found there.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/dev/block",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
    "/sys/fs/selinux",
];

/// Where a procfs or sysfs entry belongs in a container: the mount point of its filesystem
/// followed by its path inside it.
fn kernel_fs_home(fstype: &str) -> Option<&'static str> {
    match fstype {
        "proc" => Some("/proc"),
        "sysfs" => Some("/sys"),
        _ => None,
    }
}

/// The traces the runc advisories of November 2025 leave in mountinfo: a procfs or sysfs file
/// bound somewhere else than its own place (over a masked path, CVE-2025-31133; over
/// `/dev/console`, CVE-2025-52565; anywhere else, the same primitive), and a mask that binds
/// something other than a null device. A runtime that resolved its mask source through a
/// link planted in the container shows one of them; a mask applied as designed, or procfs's
/// own read-only rebinds (`/proc/sys` over itself), show none.
fn kernel_fs_traces(mounts: &[MountEntry]) -> Result<(), Refusal> {
    for m in mounts {
        let masked = MASKED_PATHS.contains(&m.mount_point.as_str());
        if let Some(home) = kernel_fs_home(&m.fstype) {
            let own = if m.root == "/" {
                home.to_owned()
            } else {
                format!("{home}{}", m.root)
            };
            if m.mount_point == own {
                continue;
            }
            let what = format!("{} {:?} (a {} file)", m.fstype, own, m.fstype);
            let (rule, message) = if masked {
                (
                    "gate-masked-path",
                    format!(
                        "the masked path {:?} is {what} bound there instead of a null device or an empty tmpfs (the trace of CVE-2025-31133)",
                        m.mount_point
                    ),
                )
            } else if m.mount_point == "/dev/console" {
                (
                    "gate-console",
                    format!(
                        "/dev/console is {what} bound there instead of a terminal (the trace of CVE-2025-52565)"
                    ),
                )
            } else {
                (
                    "gate-kernel-file-moved",
                    format!(
                        "{:?} is {what} bound away from its place (the primitive of CVE-2025-31133 and CVE-2025-52565)",
                        m.mount_point
                    ),
                )
            };
            return Err(refuse(rule, message));
        }
        // A masked file is the null device bound over it; a masked directory an empty tmpfs.
        let null = m.root == "/" || m.root.ends_with("/null");
        if masked && !null && matches!(m.fstype.as_str(), "tmpfs" | "devtmpfs") {
            return Err(refuse(
                "gate-masked-path",
                format!(
                    "the masked path {:?} is {:?} of a {} bound there, not the null device (the trace of CVE-2025-31133)",
                    m.mount_point, m.root, m.fstype
                ),
            ));
        }
    }
    Ok(())
}

/// Compare what the container got with the plan and its pins.
fn compare(gate: &Gate, seen: &Seen) -> Result<(), Refusal> {
    kernel_fs_traces(&seen.mounts)?;
    let root = &gate.root;
    let Some(m) = mounted_at(&seen.mounts, &root.path) else {
        return Err(refuse(
            "gate-root-missing",
            format!("nothing is mounted at the root {:?}", root.path),
        ));
    };
    if m.fstype != "tmpfs" {
        return Err(refuse(
            "gate-root-type",
            format!("the root {:?} is {}, not a tmpfs", root.path, m.fstype),
        ));
    }
    if m.read_only != root.read_only {
        return Err(refuse(
            "gate-root-flags",
            format!(
                "the root {:?} is {}, planned {}",
                root.path,
                rw(m.read_only),
                rw(root.read_only)
            ),
        ));
    }
    match stat_of(seen, &root.path) {
        Ok((_, _, mode, _)) if root.modes.contains(&mode) => {}
        Ok((_, _, mode, _)) => {
            return Err(refuse(
                "gate-root-mode",
                format!(
                    "the root {:?} has mode {mode:04o}, planned {:04o}",
                    root.path, root.modes[0]
                ),
            ))
        }
        Err(e) => return Err(refuse("gate-root-missing", format!("{:?}: {e}", root.path))),
    }
    // The gate's own bind (from its host copy, outside R) is read-only: a job cannot change
    // what the next check of this container would run.
    if let Some(m) = mounted_at(&seen.mounts, protocol::GATE_PATH) {
        if !m.read_only {
            return Err(refuse(
                "gate-self-writable",
                format!("the gate's bind at {:?} is read-write", protocol::GATE_PATH),
            ));
        }
    }
    // The device each group of `same:` binds turned out to be on, and the bind that said so.
    let mut groups: Vec<(&str, u64, &str)> = Vec::new();
    for b in &gate.binds {
        let Some(m) = mounted_at(&seen.mounts, &b.target) else {
            return Err(refuse(
                "gate-bind-missing",
                format!("nothing is mounted at {:?}", b.target),
            ));
        };
        match (stat_of(seen, &b.target), &b.dev) {
            (Ok((dev, ino, _, true)), Dev::Exact(pinned)) if dev == *pinned && ino == b.ino => {}
            (Ok((dev, ino, _, true)), Dev::Same(group)) if ino == b.ino => {
                match groups.iter().find(|(g, _, _)| g == group) {
                    None => groups.push((group, dev, &b.target)),
                    Some((_, first, _)) if *first == dev => {}
                    Some((_, first, at)) => {
                        return Err(refuse(
                            "gate-bind-identity",
                            format!(
                                "the bind at {:?} is on another filesystem (device {}) than the bind at {at:?} (device {}), where the host check found one",
                                b.target,
                                dev_name(dev),
                                dev_name(*first)
                            ),
                        ))
                    }
                }
            }
            (Ok((dev, ino, _, _)), pinned) => {
                let pinned = match pinned {
                    Dev::Exact(d) => format!("device {}, ", dev_name(*d)),
                    Dev::Same(_) => String::new(),
                };
                return Err(refuse(
                    "gate-bind-identity",
                    format!(
                        "the bind at {:?} is another directory than the one verified: the container got (device {}, inode {ino}), the host check pinned ({pinned}inode {})",
                        b.target,
                        dev_name(dev),
                        b.ino
                    ),
                ));
            }
            (Err(e), _) => return Err(refuse("gate-bind-missing", format!("{:?}: {e}", b.target))),
        }
        if m.read_only != b.read_only {
            return Err(refuse(
                "gate-bind-flags",
                format!(
                    "the bind at {:?} is {}, planned {}",
                    b.target,
                    rw(m.read_only),
                    rw(b.read_only)
                ),
            ));
        }
    }
    // Nothing else below the root, except below a bind planned recursive.
    for m in &seen.mounts {
        let planned = m.mount_point == root.path
            || gate.binds.iter().any(|b| {
                m.mount_point == b.target || (b.recursive && below(&m.mount_point, &b.target))
            });
        if below(&m.mount_point, &root.path) && !planned {
            return Err(refuse(
                "gate-unplanned-mount",
                format!(
                    "{:?} ({}) is mounted below the root but is not in the plan",
                    m.mount_point, m.fstype
                ),
            ));
        }
    }
    match &seen.cwd {
        Ok(cwd) if cwd == Path::new(&gate.cwd) => Ok(()),
        Ok(cwd) => Err(refuse(
            "gate-cwd",
            format!("the working directory is {cwd:?}, planned {:?}", gate.cwd),
        )),
        Err(e) => Err(refuse("gate-cwd", format!("the working directory: {e}"))),
    }
}

fn look(gate: &Gate) -> Result<Seen, Refusal> {
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .map_err(|e| refuse("gate-mountinfo", format!("/proc/self/mountinfo: {e}")))?;
    let paths = std::iter::once(&gate.root.path).chain(gate.binds.iter().map(|b| &b.target));
    let stats = paths
        .map(|p| {
            let s = fs::symlink_metadata(p)
                .map(|m| {
                    (
                        m.dev(),
                        m.ino(),
                        m.permissions().mode() & 0o7777,
                        m.file_type().is_dir(),
                    )
                })
                .map_err(|e| e.to_string());
            (p.clone(), s)
        })
        .collect();
    let cwd = std::env::current_dir().map_err(|e| e.to_string());
    Ok(Seen { mounts, stats, cwd })
}

/// Set no-new-privileges on this process (kept across `execve` and by every child), and
/// whether the kernel confirms it is set.
#[allow(unsafe_code)]
fn no_new_privileges() -> bool {
    // <linux/prctl.h>
    const PR_SET_NO_NEW_PRIVS: i32 = 38;
    const PR_GET_NO_NEW_PRIVS: i32 = 39;
    extern "C" {
        fn prctl(option: i32, ...) -> i32;
    }
    // SAFETY: prctl with these options takes four unsigned long arguments and touches no
    // memory of ours.
    unsafe {
        prctl(PR_SET_NO_NEW_PRIVS, 1u64, 0u64, 0u64, 0u64) == 0
            && prctl(PR_GET_NO_NEW_PRIVS, 0u64, 0u64, 0u64, 0u64) == 1
    }
}

/// `install DEST`: copy this executable to `DEST` (mode 0555, written aside and renamed into
/// place). A Kubernetes init container runs it from a gate image to fill the memory volume the
/// job container then runs the gate from, read-only.
fn install(dest: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let me = fs::read("/proc/self/exe")?;
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o555)
        .open(&tmp)?;
    f.write_all(&me)?;
    f.sync_all()?;
    fs::rename(&tmp, dest)
}

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "install") {
        return match args.get(1).filter(|_| args.len() == 2) {
            Some(dest) => match install(Path::new(dest)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let _ = writeln!(io::stderr(), "mount-plan-gate: install {dest:?}: {e}");
                    ExitCode::FAILURE
                }
            },
            None => {
                let _ = writeln!(io::stderr(), "mount-plan-gate: usage: install DEST");
                ExitCode::FAILURE
            }
        };
    }
    let nonce = args
        .get(1)
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_owned();
    let checked = parse(std::mem::take(&mut args)).and_then(|gate| {
        let seen = look(&gate)?;
        compare(&gate, &seen)?;
        Ok(gate)
    });
    let node = std::env::var(NODE_ENV).ok().filter(|n| !n.is_empty());
    let refusal = match checked {
        Ok(gate) if !no_new_privileges() => refuse(
            "gate-no-new-privs",
            format!(
                "cannot set no-new-privileges before running {:?}: {}",
                gate.command[0],
                io::Error::last_os_error()
            ),
        ),
        Ok(gate) => {
            let err = Command::new(&gate.command[0])
                .args(&gate.command[1..])
                .env_remove(NODE_ENV)
                .exec();
            refuse(
                "gate-exec",
                format!("cannot run {:?}: {err}", gate.command[0]),
            )
        }
        Err(r) => r,
    };
    let on = node.map(|n| format!("on node {n:?}: ")).unwrap_or_default();
    let line = format!(
        "{}{nonce}: refused: {}: {on}{}\n",
        protocol::GATE_LINE_PREFIX,
        refusal.rule,
        refusal.message
    );
    // One write, so that the line arrives as one piece of output.
    let _ = io::stderr().write_all(line.as_bytes());
    ExitCode::from(REFUSED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split(' ').map(OsString::from).collect()
    }

    fn gate() -> Gate {
        parse(args(
            "v2 n1 tmpfs /ws 555 ro bind /ws/startup 2049 11 ro norec bind /ws/job-1 2049 12 rw norec cwd /ws/job-1 -- sh -c true",
        ))
        .unwrap()
    }

    fn entry(p: &str, ro: bool, t: &str) -> MountEntry {
        MountEntry {
            root: "/".into(),
            mount_point: p.into(),
            read_only: ro,
            fstype: t.into(),
        }
    }

    fn seen() -> Seen {
        Seen {
            mounts: vec![
                entry("/", false, "overlay"),
                entry("/ws", true, "tmpfs"),
                entry("/ws/startup", true, "ext4"),
                entry("/ws/job-1", false, "ext4"),
            ],
            stats: vec![
                ("/ws".into(), Ok((40, 1, 0o555, true))),
                ("/ws/startup".into(), Ok((2049, 11, 0o755, true))),
                ("/ws/job-1".into(), Ok((2049, 12, 0o750, true))),
            ],
            cwd: Ok("/ws/job-1".into()),
        }
    }

    #[test]
    fn parses_the_launcher_arguments() {
        let g = gate();
        assert_eq!(g.nonce, "n1");
        assert_eq!(
            g.root,
            Root {
                path: "/ws".into(),
                modes: vec![0o555],
                read_only: true
            }
        );
        assert_eq!(g.binds.len(), 2);
        assert_eq!(g.binds[1].ino, 12);
        assert!(!g.binds[1].read_only);
        assert_eq!(g.command, args("sh -c true"));
    }

    #[test]
    fn refuses_bad_arguments_and_an_empty_command() {
        for (bad, rule) in [
            // A launcher of the old protocol (no no-new-privileges) is refused.
            ("v1 n tmpfs /ws 555 ro cwd /ws -- true", "gate-arguments"),
            ("v3 n tmpfs /ws 555 ro cwd /ws -- true", "gate-arguments"),
            ("v2 n tmpfs /ws 555 xx cwd /ws -- true", "gate-arguments"),
            ("v2 n tmpfs /ws 5x5 ro cwd /ws -- true", "gate-arguments"),
            ("v2 n cwd /ws -- true", "gate-arguments"),
            ("v2 n tmpfs /ws 555 ro -- true", "gate-arguments"),
            ("v2 n tmpfs /ws 555 ro cwd /ws", "gate-arguments"),
            ("v2 n tmpfs /ws 555 ro cwd /ws --", "gate-no-command"),
            ("v2 n frob -- true", "gate-arguments"),
        ] {
            assert_eq!(parse(args(bad)).unwrap_err().rule, rule, "{bad}");
        }
    }

    #[test]
    fn the_planned_container_passes() {
        assert_eq!(compare(&gate(), &seen()), Ok(()));
    }

    #[test]
    fn another_directory_at_a_bind_is_refused_naming_both_identities() {
        let mut s = seen();
        s.stats[2].1 = Ok((2049, 99, 0o755, true));
        let r = compare(&gate(), &s).unwrap_err();
        assert_eq!(r.rule, "gate-bind-identity");
        assert!(r.message.contains("/ws/job-1"), "{}", r.message);
        assert!(r.message.contains("inode 99"), "{}", r.message);
        assert!(r.message.contains("inode 12"), "{}", r.message);
        assert!(r.message.contains("8:1"), "{}", r.message);
        // Same inode number on another device is another directory too.
        let mut s = seen();
        s.stats[1].1 = Ok((2050, 11, 0o755, true));
        assert_eq!(compare(&gate(), &s).unwrap_err().rule, "gate-bind-identity");
        // A link where the directory should be.
        let mut s = seen();
        s.stats[1].1 = Ok((2049, 11, 0o777, false));
        assert_eq!(compare(&gate(), &s).unwrap_err().rule, "gate-bind-identity");
    }

    #[test]
    fn each_difference_has_its_rule() {
        type Change = Box<dyn Fn(&mut Seen)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "gate-root-missing",
                Box::new(|s| s.mounts.retain(|m| m.mount_point != "/ws")),
            ),
            (
                "gate-root-type",
                Box::new(|s| s.mounts[1].fstype = "ext4".into()),
            ),
            (
                "gate-root-flags",
                Box::new(|s| s.mounts[1].read_only = false),
            ),
            (
                "gate-root-mode",
                Box::new(|s| s.stats[0].1 = Ok((40, 1, 0o755, true))),
            ),
            (
                "gate-bind-missing",
                Box::new(|s| s.mounts.retain(|m| m.mount_point != "/ws/startup")),
            ),
            (
                "gate-bind-missing",
                Box::new(|s| s.stats[1].1 = Err("gone".into())),
            ),
            (
                "gate-bind-flags",
                Box::new(|s| s.mounts[2].read_only = false),
            ),
            (
                "gate-bind-flags",
                Box::new(|s| s.mounts[3].read_only = true),
            ),
            (
                "gate-unplanned-mount",
                Box::new(|s| s.mounts.push(entry("/ws/job-2", false, "ext4"))),
            ),
            (
                "gate-unplanned-mount",
                Box::new(|s| s.mounts.push(entry("/ws/job-1/sub", false, "ext4"))),
            ),
            ("gate-cwd", Box::new(|s| s.cwd = Ok("/ws".into()))),
        ];
        for (rule, change) in cases {
            let mut s = seen();
            change(&mut s);
            assert_eq!(compare(&gate(), &s).unwrap_err().rule, rule);
        }
        // The flags' messages say which way each differs.
        let mut s = seen();
        s.mounts[1].read_only = false;
        let r = compare(&gate(), &s).unwrap_err();
        assert!(
            r.message.ends_with("is read-write, planned read-only"),
            "{}",
            r.message
        );
        let mut s = seen();
        s.mounts[3].read_only = true;
        let r = compare(&gate(), &s).unwrap_err();
        assert!(
            r.message.ends_with("is read-only, planned read-write"),
            "{}",
            r.message
        );
        // A later mount over the root hides the planned one.
        let mut s = seen();
        s.mounts.push(entry("/ws", false, "tmpfs"));
        assert_eq!(compare(&gate(), &s).unwrap_err().rule, "gate-root-flags");
    }

    #[test]
    fn a_known_drift_of_the_root_mode_is_accepted_and_nothing_else() {
        let g = parse(args(
            "v2 n tmpfs /ws 555|755 ro bind /ws/startup 2049 11 ro norec bind /ws/job-1 2049 12 rw norec cwd /ws/job-1 -- true",
        ))
        .unwrap();
        assert_eq!(g.root.modes, vec![0o555, 0o755]);
        let mut s = seen();
        assert_eq!(compare(&g, &s), Ok(()));
        s.stats[0].1 = Ok((40, 1, 0o755, true));
        assert_eq!(compare(&g, &s), Ok(()));
        s.stats[0].1 = Ok((40, 1, 0o777, true));
        let r = compare(&g, &s).unwrap_err();
        assert_eq!(r.rule, "gate-root-mode");
        assert!(r.message.contains("planned 0555"), "{}", r.message);
        assert!(parse(args("v2 n tmpfs /ws 555|x ro cwd /ws -- true")).is_err());
    }

    #[test]
    fn on_a_node_the_inode_and_one_filesystem_for_the_group_decide() {
        let g = parse(args(
            "v2 n tmpfs /ws 555 ro bind /ws/startup same:w 11 ro norec bind /ws/job-1 same:w 12 rw norec cwd /ws/job-1 -- true",
        ))
        .unwrap();
        assert_eq!(g.binds[0].dev, Dev::Same("w".into()));
        // Another device number than the launcher's (an NFS client's own): fine.
        let mut s = seen();
        s.stats[1].1 = Ok((77, 11, 0o755, true));
        s.stats[2].1 = Ok((77, 12, 0o750, true));
        assert_eq!(compare(&g, &s), Ok(()));
        // Another inode: refused, without a device for the pin.
        s.stats[2].1 = Ok((77, 99, 0o750, true));
        let r = compare(&g, &s).unwrap_err();
        assert_eq!(r.rule, "gate-bind-identity");
        assert!(r.message.contains("pinned (inode 12)"), "{}", r.message);
        // The right inode on another filesystem than the rest of W: refused.
        s.stats[2].1 = Ok((78, 12, 0o750, true));
        let r = compare(&g, &s).unwrap_err();
        assert_eq!(r.rule, "gate-bind-identity");
        assert!(r.message.contains("another filesystem"), "{}", r.message);
    }

    #[test]
    fn a_mount_below_a_recursive_bind_is_planned() {
        let mut g = gate();
        g.binds[0].recursive = true;
        let mut s = seen();
        s.mounts.push(entry("/ws/startup/data", true, "ext4"));
        assert_eq!(compare(&g, &s), Ok(()));
        // ...but not a sibling that merely shares the prefix.
        s.mounts.push(entry("/ws/startup2", true, "ext4"));
        assert_eq!(compare(&g, &s).unwrap_err().rule, "gate-unplanned-mount");
    }

    #[test]
    fn mountinfo_is_read_with_its_escapes() {
        let text = "22 1 0:21 / / rw,relatime - overlay overlay rw\n\
                    30 22 0:40 / /ws ro,nosuid - tmpfs tmpfs ro,mode=555\n\
                    31 30 8:1 /w/a\\040b /ws/a\\040b rw,nosuid shared:1 - ext4 /dev/sda1 rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1], entry("/ws", true, "tmpfs"));
        assert_eq!(
            m[2],
            MountEntry {
                root: "/w/a b".into(),
                ..entry("/ws/a b", false, "ext4")
            }
        );
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("tail\\04"), "tail\\04");
        // Above a byte: not an escape the kernel writes, kept as written.
        assert_eq!(unescape("\\777\\400x"), "\\777\\400x");
        assert_eq!(unescape("\\377"), "\u{fffd}");
    }

    #[test]
    fn no_new_privileges_is_set_and_confirmed() {
        // Set on the test process's own thread; harmless for a test binary.
        assert!(no_new_privileges());
        let status = fs::read_to_string("/proc/thread-self/status").unwrap();
        assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    }

    /// Docker 26's mountinfo for /proc, /dev and /sys, as measured (runc 1.1.15): procfs's own
    /// read-only rebinds, masks by tmpfs and by the null device.
    const ENGINE_MOUNTS: &str = "\
101 100 0:43 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
102 100 0:44 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
103 102 0:45 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
104 100 0:46 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
105 104 0:47 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
78 101 0:43 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
79 101 0:49 / /proc/acpi ro,relatime - tmpfs tmpfs ro
80 101 0:44 /null /proc/keys rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
82 104 0:50 / /sys/firmware ro,relatime - tmpfs tmpfs ro
";

    fn with_engine_mounts(extra: &str) -> Seen {
        let mut s = seen();
        s.mounts
            .extend(parse_mountinfo(&format!("{ENGINE_MOUNTS}{extra}")));
        s
    }

    #[test]
    fn the_gates_own_bind_is_read_only() {
        let mut s = seen();
        s.mounts.push(entry("/.mount-plan/gate", true, "ext4"));
        assert_eq!(compare(&gate(), &s), Ok(()));
        s.mounts.push(entry("/.mount-plan/gate", false, "ext4"));
        assert_eq!(compare(&gate(), &s).unwrap_err().rule, "gate-self-writable");
    }

    #[test]
    fn masks_and_procfs_rebinds_as_engines_make_them_pass() {
        assert_eq!(compare(&gate(), &with_engine_mounts("")), Ok(()));
    }

    #[test]
    fn a_procfs_file_bound_over_a_masked_path_is_refused() {
        // CVE-2025-31133: the container's /dev/null was a link to core_pattern when runc
        // masked /proc/kcore, so core_pattern itself is bound (writable) at /proc/kcore.
        let s = with_engine_mounts(
            "90 101 0:43 /sys/kernel/core_pattern /proc/kcore rw,nosuid - proc proc rw\n",
        );
        let r = compare(&gate(), &s).unwrap_err();
        assert_eq!(r.rule, "gate-masked-path");
        assert!(r.message.contains("\"/proc/kcore\""), "{}", r.message);
        assert!(
            r.message.contains("/proc/sys/kernel/core_pattern"),
            "{}",
            r.message
        );
        assert!(r.message.contains("CVE-2025-31133"), "{}", r.message);
        // The same from sysfs over a masked directory's place.
        let s = with_engine_mounts(
            "90 104 0:46 /kernel/uevent_helper /sys/firmware rw - sysfs sysfs rw\n",
        );
        assert_eq!(compare(&gate(), &s).unwrap_err().rule, "gate-masked-path");
        // A mask that binds another device node than null.
        let s = with_engine_mounts("90 101 0:44 /sda /proc/timer_list rw - devtmpfs udev rw\n");
        let r = compare(&gate(), &s).unwrap_err();
        assert_eq!(r.rule, "gate-masked-path");
        assert!(r.message.contains("/sda"), "{}", r.message);
    }

    #[test]
    fn a_procfs_file_bound_over_the_console_or_elsewhere_is_refused() {
        // CVE-2025-52565, as a real engine shows it (measured: a bind of the host's
        // /proc/sys/kernel/hostname at /dev/console on Docker 26).
        let s = with_engine_mounts(
            "117 102 0:21 /sys/kernel/hostname /dev/console ro,relatime - proc proc rw\n",
        );
        let r = compare(&gate(), &s).unwrap_err();
        assert_eq!(r.rule, "gate-console");
        assert!(r.message.contains("CVE-2025-52565"), "{}", r.message);
        let s = with_engine_mounts("118 100 0:21 /uptime /mnt/up ro,relatime - proc proc rw\n");
        let r = compare(&gate(), &s).unwrap_err();
        assert_eq!(r.rule, "gate-kernel-file-moved");
        assert!(r.message.contains("\"/mnt/up\""), "{}", r.message);
        // A terminal at /dev/console is what it should be.
        let s = with_engine_mounts("117 102 0:45 /0 /dev/console rw - devpts devpts rw\n");
        assert_eq!(compare(&gate(), &s), Ok(()));
    }

    #[test]
    fn install_copies_this_executable_read_only() {
        let dir = std::env::temp_dir().join(format!("gate-install-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("gate");
        install(&dest).unwrap();
        let m = fs::metadata(&dest).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o555);
        assert_eq!(
            fs::read(&dest).unwrap(),
            fs::read("/proc/self/exe").unwrap()
        );
        assert!(!dir.join("gate.new").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn look_reads_each_planned_path_without_following_it() {
        let dir = std::env::temp_dir().join(format!("mount-plan-gate-look-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("job")).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1750)).unwrap();
        std::os::unix::fs::symlink("job", dir.join("link")).unwrap();
        let p = |name: &str| format!("{}/{name}", dir.display());
        let mut g = gate();
        g.root.path = dir.display().to_string();
        g.binds[0].target = p("job");
        g.binds[1].target = p("link");
        g.binds.push(Bind {
            target: p("missing"),
            ..g.binds[0].clone()
        });
        let seen = look(&g).unwrap();
        assert!(
            seen.mounts.iter().any(|m| m.mount_point == "/"),
            "{:?}",
            seen.mounts
        );
        assert_eq!(seen.cwd, std::env::current_dir().map_err(|e| e.to_string()));
        let job = fs::symlink_metadata(dir.join("job")).unwrap();
        let stat = |path: &str| stat_of(&seen, path);
        let (_, _, mode, is_dir) = stat(&g.root.path).unwrap();
        assert_eq!((mode, is_dir), (0o1750, true));
        assert_eq!(
            stat(&p("job")),
            Ok((
                job.dev(),
                job.ino(),
                job.permissions().mode() & 0o7777,
                true
            ))
        );
        // The link itself, not the directory it names.
        let (_, ino, mode, is_dir) = stat(&p("link")).unwrap();
        assert_eq!((ino == job.ino(), mode, is_dir), (false, 0o777, false));
        assert!(stat(&p("missing")).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn device_numbers_are_named_major_minor() {
        assert_eq!(dev_name(2049), "8:1");
        assert_eq!(dev_name((259 << 8) | 3), "259:3");
        // A large minor, as the kernel encodes it.
        assert_eq!(
            dev_name((0x12345 & 0xff) | ((0x12345 & !0xff) << 12)),
            "0:74565"
        );
        // A large major, whose high bits the kernel keeps above bit 32.
        assert_eq!(
            dev_name(((0x12345 & 0xfff) << 8) | ((0x12345 & !0xfff) << 32)),
            "74565:0"
        );
    }
}
