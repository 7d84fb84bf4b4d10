//! The faults a soak injects, how each launch's fault is drawn from the seed, the job each
//! launch runs, and the outcome each fault must end in.

use clap::ValueEnum;

use crate::TestEngine;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Fault {
    /// The job's container is killed with SIGKILL while it runs (through the engine API; on
    /// Swarm through the engine of the worker that runs it).
    JobKill,
    /// The job outgrows its memory limit and the kernel's OOM killer ends it.
    Oom,
    /// The job exits with a non-zero status of its own.
    Exit,
    /// The launcher (`mount-plan launch`) is killed with SIGKILL; `mount-plan gc` follows.
    LauncherSigkill,
    /// The launcher gets SIGTERM.
    LauncherSigterm,
    /// The launcher gets SIGINT.
    LauncherSigint,
    /// The proxy in front of the engine socket closes the connection instead of forwarding
    /// one request.
    ProxyDrop,
    /// The proxy holds one request back for a few seconds.
    ProxyDelay,
    /// The proxy forwards part of one answer, then closes the connection.
    ProxyTruncate,
    /// The Podman service is stopped and started again while the launch runs.
    PodmanRestart,
    /// W is a small size-limited tmpfs that the job's output does not fit in.
    FsFull,
    /// The image does not exist on the engine.
    MissingImage,
    /// The command does not exist in the image.
    BadCommand,
    /// Aimed at the clean-up after a lost create answer: the proxy cuts the connection as soon
    /// as the create request is sent, and hands it to the engine only half a second later
    /// (an engine still creating when the launcher looks).
    CutCreate,
    /// Aimed at the removal's retries: the proxy drops the launch's first remove request.
    DropRemove,
    /// Aimed at a cancellation while create is in flight: the proxy holds the create request
    /// three seconds, and the launcher gets SIGTERM meanwhile.
    SigtermInCreate,
    /// Aimed at `gc`: the launcher is killed with SIGKILL once its container has started.
    SigkillAfterStart,
    /// Aimed at the cancellation of a running job: the launcher gets SIGTERM once its
    /// container has started (on Slurm, `launcher-sigterm` mostly lands while the job is
    /// still being submitted).
    SigtermAfterStart,
    /// Slurm only: the job is cancelled from outside (`scancel JOBID`, as a site's operator or
    /// the user would) while it runs.
    Scancel,
    /// Swarm only: the engine of the worker running the job (the dockerd inside the worker's
    /// container, never this machine's) is restarted while the job runs.
    WorkerRestart,
}

impl Fault {
    pub const ALL: [Fault; 20] = [
        Fault::JobKill,
        Fault::Oom,
        Fault::Exit,
        Fault::LauncherSigkill,
        Fault::LauncherSigterm,
        Fault::LauncherSigint,
        Fault::ProxyDrop,
        Fault::ProxyDelay,
        Fault::ProxyTruncate,
        Fault::PodmanRestart,
        Fault::FsFull,
        Fault::MissingImage,
        Fault::BadCommand,
        Fault::CutCreate,
        Fault::DropRemove,
        Fault::SigtermInCreate,
        Fault::SigkillAfterStart,
        Fault::SigtermAfterStart,
        Fault::Scancel,
        Fault::WorkerRestart,
    ];

    /// The id used on the command line and in the report.
    pub fn id(self) -> String {
        self.to_possible_value()
            .expect("no skipped variants")
            .get_name()
            .to_owned()
    }

    /// Whether this fault can be injected on `engine`, and why not.
    pub fn unavailable(self, engine: TestEngine) -> Option<&'static str> {
        let podman_here = matches!(
            engine,
            TestEngine::PodmanRootful | TestEngine::PodmanRootless
        );
        let swarm = engine == TestEngine::Swarm;
        match self {
            Fault::Scancel => Some("scancel is Slurm's; an engine's own kill is job-kill"),
            // A socket engine's launch takes well under a second, so launcher-sigterm already
            // lands while the container runs; kept out of the CI gate's draw (which would
            // change with it). A Swarm launch takes over a second to start its task.
            Fault::SigtermAfterStart if !swarm => {
                Some("launcher-sigterm already lands once the container runs on this engine")
            }
            Fault::WorkerRestart if !swarm => Some("only a Swarm worker's engine is restarted"),
            Fault::PodmanRestart if !podman_here => {
                Some("only this machine's Podman services are restarted")
            }
            // The rootless service's namespace keeps the host mounts of when its pause
            // process started (README, limits): a tmpfs mounted now is not seen there.
            Fault::FsFull
                if !matches!(
                    engine,
                    TestEngine::Docker | TestEngine::PodmanRootful | TestEngine::Swarm
                ) =>
            {
                Some("the engine does not see a tmpfs mounted after it started")
            }
            // Rootless Podman on cgroup v1 (this machine) cannot set a memory limit.
            Fault::Oom if engine == TestEngine::PodmanRootless && cgroup_v1() => {
                Some("rootless Podman on cgroup v1 ignores memory limits")
            }
            _ => None,
        }
    }

    /// Whether this fault can be injected on Slurm (`--engines slurm`), and why not. The
    /// backend talks to Slurm by commands (`sbatch`, `scontrol`, `scancel`), not through a
    /// socket: the faults a proxy on an engine socket injects have nothing to stand in front of.
    pub fn unavailable_on_slurm(self) -> Option<&'static str> {
        match self {
            Fault::ProxyDrop
            | Fault::ProxyDelay
            | Fault::ProxyTruncate
            | Fault::CutCreate
            | Fault::DropRemove
            | Fault::SigtermInCreate => Some(
                "it breaks a request on an engine socket, and the Slurm backend runs commands (the lost sbatch answer is not injected)",
            ),
            Fault::PodmanRestart => Some("only this machine's Podman services are restarted"),
            Fault::WorkerRestart => Some("only a Swarm worker's engine is restarted"),
            Fault::JobKill => Some(
                "a job is killed from outside by scancel (fault scancel): scancel --signal=KILL kills runc run alone",
            ),
            _ => None,
        }
    }

    /// Whether the launch takes its engine alone: it restarts an engine that the launches
    /// running beside it would lose too.
    pub fn runs_alone(self) -> bool {
        matches!(self, Fault::PodmanRestart | Fault::WorkerRestart)
    }

    /// Whether the launcher runs as a child process that the soak signals.
    pub fn signal(self) -> Option<i32> {
        match self {
            Fault::LauncherSigkill | Fault::SigkillAfterStart => Some(libc_sig::KILL),
            Fault::LauncherSigterm | Fault::SigtermInCreate | Fault::SigtermAfterStart => {
                Some(libc_sig::TERM)
            }
            Fault::LauncherSigint => Some(libc_sig::INT),
            _ => None,
        }
    }
}

/// The signal numbers used (Linux).
pub mod libc_sig {
    pub const INT: i32 = 2;
    pub const KILL: i32 = 9;
    pub const TERM: i32 = 15;
}

fn cgroup_v1() -> bool {
    !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// A small deterministic generator (splitmix64): the same seed and index give the same draw
/// whatever the concurrency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, stream: u64, index: u64) -> Rng {
        let mut r = Rng(seed
            ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next();
        r
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// The content a launch's job writes: derived from the seed and the index only.
pub fn content(seed: u64, engine: u64, index: u64) -> String {
    let mut r = Rng::new(seed, engine.wrapping_add(1000), index);
    let words = 8 + r.below(120) as usize;
    let mut s = format!("soak {seed} {engine} {index}:");
    for _ in 0..words {
        s.push_str(&format!(" {:016x}", r.next()));
    }
    s
}

/// FNV-1a, 64 bits: the checksum compared between what a job should write and what it wrote.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The name of the file each job writes in its job directory.
pub const OUTPUT: &str = "out.txt";

/// The job's shell script. `pause_ms` before the write; `tail_ms` after it (so that a fault
/// arriving at a random delay finds the job running).
pub fn script(fault: Option<Fault>, pause_ms: u64, tail_ms: u64, exit: u8) -> String {
    let pause = format!("sleep {}.{:03}", pause_ms / 1000, pause_ms % 1000);
    let tail = format!("sleep {}.{:03}", tail_ms / 1000, tail_ms % 1000);
    let write = format!("printf %s \"$SOAK_DATA\" > {OUTPUT}");
    match fault {
        Some(Fault::Exit) => format!("{pause}; {write}; exit {exit}"),
        // The shell itself (PID 1, the largest process) grows past the limit.
        Some(Fault::Oom) => {
            format!("{pause}; {write}; x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo survived ${{#x}}")
        }
        // Four MiB into a one-MiB filesystem: `head` fails with ENOSPC and exits 1.
        Some(Fault::FsFull) => format!("{pause}; head -c 4194304 /dev/zero > {OUTPUT}"),
        _ => format!("{pause}; {write}; {tail}"),
    }
}

/// What a launch must end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// This exit status, and (for 0) the output.
    Status(i32),
    /// The command's own non-zero status (1 to 121).
    OwnFailure,
    /// A status this fault may lead to: 0 (with the output), 122 or 125.
    Recovered,
    /// Cancelled by this signal: 128 + the signal; or 0 if the job had already ended.
    Cancelled(i32),
    /// The launcher is killed: no status; `gc` must leave nothing.
    Killed,
    /// The job's node lost it (its engine restarted while it ran): 122 (the command ran, no
    /// status known), or the status the node reported for the job it killed on its way down
    /// (137, 143, 255), or 0 with the output if the job had ended first.
    NodeLost,
}

impl Expect {
    pub fn of(fault: Option<Fault>, exit: u8) -> Expect {
        match fault {
            None | Some(Fault::ProxyDelay | Fault::DropRemove) => Expect::Status(0),
            Some(Fault::Exit) => Expect::Status(i32::from(exit)),
            Some(Fault::JobKill | Fault::Oom) => Expect::Status(137),
            Some(Fault::FsFull) => Expect::OwnFailure,
            Some(Fault::MissingImage | Fault::BadCommand | Fault::CutCreate) => Expect::Status(125),
            Some(Fault::ProxyDrop | Fault::ProxyTruncate | Fault::PodmanRestart) => {
                Expect::Recovered
            }
            Some(Fault::LauncherSigterm) => Expect::Cancelled(libc_sig::TERM),
            Some(Fault::LauncherSigint) => Expect::Cancelled(libc_sig::INT),
            // The signal comes while create is held: the launcher runs, with its handlers.
            Some(Fault::SigtermInCreate) => Expect::Status(128 + libc_sig::TERM),
            // The job runs and its script sleeps three seconds more: the launcher handles it.
            Some(Fault::SigtermAfterStart) => Expect::Status(128 + libc_sig::TERM),
            // The command ran and its end is not its own: no status to report (122).
            Some(Fault::Scancel) => Expect::Status(122),
            Some(Fault::LauncherSigkill | Fault::SigkillAfterStart) => Expect::Killed,
            Some(Fault::WorkerRestart) => Expect::NodeLost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_depend_on_seed_and_index_only() {
        let a: Vec<u64> = (0..4).map(|i| Rng::new(7, 1, i).next()).collect();
        let b: Vec<u64> = (0..4).map(|i| Rng::new(7, 1, i).next()).collect();
        assert_eq!(a, b);
        assert_ne!(Rng::new(7, 1, 0).next(), Rng::new(8, 1, 0).next());
        assert_eq!(content(3, 0, 9), content(3, 0, 9));
        assert_ne!(content(3, 0, 9), content(3, 0, 10));
    }

    #[test]
    fn every_fault_has_an_id_that_parses_back() {
        for f in Fault::ALL {
            assert_eq!(Fault::from_str(&f.id(), false), Ok(f));
        }
    }
}
