//! Who launched a container: the labels that let a lost `create` answer be resolved and let
//! `gc` find containers whose launcher is gone, and the pure verdict `gc` acts on.

use std::collections::BTreeMap;
use std::fmt;

/// Label carrying the launch id (one per launch, random).
pub const LABEL_LAUNCH: &str = "io.mount-plan.launch";
/// Label carrying the launcher's host name.
pub const LABEL_HOST: &str = "io.mount-plan.host";
/// Label carrying the launcher machine's id (`/etc/machine-id`): host names repeat across
/// machines, and the pid namespace of a machine's first process has the same number on every
/// machine, so neither tells machines apart. Limit: machines cloned with the same
/// `/etc/machine-id` are one machine to `gc` (a different boot id then reads as a reboot):
/// give each its own id (`systemd-machine-id-setup`).
pub const LABEL_MACHINE: &str = "io.mount-plan.machine";
/// Label carrying the launcher host's boot id (`/proc/sys/kernel/random/boot_id`).
pub const LABEL_BOOT_ID: &str = "io.mount-plan.boot-id";
/// Label carrying the launcher's pid namespace (`/proc/self/ns/pid`).
pub const LABEL_PID_NS: &str = "io.mount-plan.pid-ns";
/// Label carrying the launcher's pid.
pub const LABEL_PID: &str = "io.mount-plan.pid";
/// Label carrying the launcher's start time (clock ticks after boot, `/proc/PID/stat` field 22).
pub const LABEL_PID_START: &str = "io.mount-plan.pid-start";

/// The identity of one launch: a random id, unique per launch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LaunchId(String);

impl LaunchId {
    /// A fresh random id (128 bits from the kernel's random source, as hex).
    pub fn new() -> Self {
        let mut bytes = [0u8; 16];
        let filled = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
        if filled.is_err() {
            // No /dev/urandom: time, pid and a counter still make it unique on this host.
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            bytes[..8].copy_from_slice(&nanos.to_le_bytes());
            let tail = (u64::from(std::process::id()) << 32) | N.fetch_add(1, Ordering::Relaxed);
            bytes[8..].copy_from_slice(&tail.to_le_bytes());
        }
        LaunchId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for LaunchId {
    fn default() -> Self {
        LaunchId::new()
    }
}

impl fmt::Display for LaunchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The launcher process, as far as `gc` needs to tell whether it still runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Launcher {
    /// Host name (for messages: it does not tell machines apart).
    pub host: String,
    /// The machine's id (`/etc/machine-id`, else `/var/lib/dbus/machine-id`); empty when it
    /// has none.
    pub machine: String,
    /// The host's boot id.
    pub boot_id: String,
    /// The pid namespace, as `/proc/self/ns/pid` names it (`pid:[4026531836]`).
    pub pid_ns: String,
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks after boot.
    pub start: u64,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The start time (field 22) of process `pid` from `/proc/PID/stat`; `None` when it is gone.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// This machine's id: `/etc/machine-id` (systemd), else `/var/lib/dbus/machine-id`; empty when
/// neither names one.
fn machine_id() -> String {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .into_iter()
        .map(read_trimmed)
        .find(|id| !id.is_empty())
        .unwrap_or_default()
}

impl Launcher {
    /// This process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Launcher {
            host: read_trimmed("/proc/sys/kernel/hostname"),
            machine: machine_id(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            pid_ns: std::fs::read_link("/proc/self/ns/pid")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pid,
            start: process_start(pid).unwrap_or(0),
        }
    }

    /// The labels that carry this identity and `launch`.
    pub fn labels(&self, launch: &LaunchId) -> [(&'static str, String); 7] {
        [
            (LABEL_LAUNCH, launch.to_string()),
            (LABEL_HOST, self.host.clone()),
            (LABEL_MACHINE, self.machine.clone()),
            (LABEL_BOOT_ID, self.boot_id.clone()),
            (LABEL_PID_NS, self.pid_ns.clone()),
            (LABEL_PID, self.pid.to_string()),
            (LABEL_PID_START, self.start.to_string()),
        ]
    }

    /// The launcher a container's labels name, when they name one completely.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Option<Self> {
        let get = |k: &str| labels.get(k).cloned();
        Some(Launcher {
            host: get(LABEL_HOST)?,
            machine: get(LABEL_MACHINE)?,
            boot_id: get(LABEL_BOOT_ID)?,
            pid_ns: get(LABEL_PID_NS)?,
            pid: get(LABEL_PID)?.parse().ok()?,
            start: get(LABEL_PID_START)?.parse().ok()?,
        })
    }
}

/// What `gc` concludes about one managed container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its launcher is certainly gone: remove it (why).
    Orphan(String),
    /// Its launcher still runs: keep it.
    Alive,
    /// Whether its launcher runs cannot be told from here: keep it (why).
    Unknown(String),
}

/// Judge a container by its labels, from the point of view of `here` (the process running
/// `gc`). `start_of(pid)` answers the start time of a live process in `here`'s pid
/// namespace, `None` when there is no such process.
pub fn judge(
    labels: &BTreeMap<String, String>,
    here: &Launcher,
    start_of: &dyn Fn(u32) -> Option<u64>,
) -> Verdict {
    let Some(launcher) = Launcher::from_labels(labels) else {
        return Verdict::Unknown("it does not carry the launcher labels".into());
    };
    // The machine decides, not the host name (two machines sharing an engine may have the
    // same): a machine with no id cannot tell another machine from a reboot of its own.
    if here.machine.is_empty() {
        return Verdict::Unknown(
            "this machine has no machine id (/etc/machine-id): it cannot tell another machine's launch from its own".into(),
        );
    }
    if launcher.machine != here.machine {
        return Verdict::Unknown(format!(
            "it was launched on another machine (machine id {:?}, host {:?})",
            launcher.machine, launcher.host
        ));
    }
    if launcher.host != here.host {
        return Verdict::Unknown(format!("it was launched on host {:?}", launcher.host));
    }
    if launcher.boot_id != here.boot_id {
        return Verdict::Orphan(format!(
            "host {:?} has rebooted since its launch (boot id {})",
            launcher.host, launcher.boot_id
        ));
    }
    if launcher.pid_ns != here.pid_ns {
        return Verdict::Unknown(format!(
            "its launcher ran in another pid namespace ({})",
            launcher.pid_ns
        ));
    }
    match start_of(launcher.pid) {
        None => Verdict::Orphan(format!("its launcher (pid {}) is gone", launcher.pid)),
        Some(start) if start != launcher.start => Verdict::Orphan(format!(
            "its launcher (pid {}) is gone; the pid now belongs to another process",
            launcher.pid
        )),
        Some(_) => Verdict::Alive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> Launcher {
        Launcher {
            host: "h".into(),
            machine: "m".into(),
            boot_id: "b".into(),
            pid_ns: "pid:[1]".into(),
            pid: 10,
            start: 100,
        }
    }

    fn labels_of(l: &Launcher) -> BTreeMap<String, String> {
        l.labels(&LaunchId::new())
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn files_are_read_trimmed_and_a_missing_one_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("id");
        std::fs::write(&file, " 0a1b\n").unwrap();
        assert_eq!(read_trimmed(file.to_str().unwrap()), "0a1b");
        assert_eq!(read_trimmed(tmp.path().join("none").to_str().unwrap()), "");
    }

    /// The machine id is the first of the two files that names one.
    #[test]
    fn the_machine_id_is_the_system_s() {
        let named = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
            .into_iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_owned())
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        assert_eq!(machine_id(), named);
        assert_eq!(Launcher::current().machine, named);
    }

    #[test]
    fn launch_ids_are_distinct_hex() {
        let a = LaunchId::new();
        let b = LaunchId::new();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn current_process_is_alive_to_itself() {
        let me = Launcher::current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start > 0, "{me:?}");
        assert!(!me.boot_id.is_empty());
        assert_eq!(
            judge(&labels_of(&me), &me, &|pid| process_start(pid)),
            Verdict::Alive
        );
    }

    #[test]
    fn verdicts() {
        let h = here();
        let alive = |pid: u32| (pid == 10).then_some(100);
        assert_eq!(judge(&labels_of(&h), &h, &alive), Verdict::Alive);

        let gone = Launcher {
            pid: 11,
            ..h.clone()
        };
        assert!(
            matches!(judge(&labels_of(&gone), &h, &alive), Verdict::Orphan(m) if m.contains("pid 11"))
        );

        let reused = Launcher {
            start: 99,
            ..h.clone()
        };
        assert!(
            matches!(judge(&labels_of(&reused), &h, &alive), Verdict::Orphan(m) if m.contains("another process"))
        );

        let rebooted = Launcher {
            boot_id: "old".into(),
            ..h.clone()
        };
        assert!(
            matches!(judge(&labels_of(&rebooted), &h, &alive), Verdict::Orphan(m) if m.contains("rebooted"))
        );

        let other_machine = Launcher {
            machine: "m2".into(),
            boot_id: "b2".into(),
            ..h.clone()
        };
        assert!(
            matches!(judge(&labels_of(&other_machine), &h, &alive), Verdict::Unknown(m) if m.contains("another machine") && m.contains("m2"))
        );
        let no_machine_id = Launcher {
            machine: String::new(),
            ..h.clone()
        };
        assert!(matches!(
            judge(&labels_of(&no_machine_id), &no_machine_id, &alive),
            Verdict::Unknown(m) if m.contains("no machine id")
        ));

        let elsewhere = Launcher {
            host: "other".into(),
            ..h.clone()
        };
        assert!(
            matches!(judge(&labels_of(&elsewhere), &h, &alive), Verdict::Unknown(m) if m.contains("other"))
        );

        let other_ns = Launcher {
            pid_ns: "pid:[2]".into(),
            ..h.clone()
        };
        assert!(matches!(
            judge(&labels_of(&other_ns), &h, &alive),
            Verdict::Unknown(_)
        ));

        let mut partial = labels_of(&h);
        partial.remove(LABEL_PID_START);
        assert!(matches!(judge(&partial, &h, &alive), Verdict::Unknown(_)));
    }

    #[test]
    fn process_start_reads_field_22_after_a_spaced_name() {
        // Our own stat line parses; a missing pid does not.
        assert!(process_start(std::process::id()).is_some());
        assert_eq!(process_start(u32::MAX), None);
    }
}
