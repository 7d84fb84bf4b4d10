//! `check-stream`: `mount-plan check --json` as a whole process on many UUID job names, against
//! the reference launcher's job-name guard (Python, timed per call in-process), in one run.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use mount_plan::Layout;

/// Options of `check-stream`.
#[derive(Debug, clap::Args)]
pub struct CheckStreamArgs {
    /// How many UUID names to check
    #[arg(long, default_value_t = 200_000)]
    names: usize,
    /// Whole-process runs (the best and the median are printed)
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The `mount-plan` binary [default: the one next to this benchmark]
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// The Python interpreter that runs the reference guard
    #[arg(long, value_name = "PATH", default_value = "python3")]
    python: String,
}

/// The reference launcher's job-name guard (docs/perf.md), as it is written in Python: the
/// name checks, then realpath containment and the symlink check, per call. `main` times it per
/// call over the names in `argv[2]`, in a workspace `argv[1]`, and prints microseconds per call.
const REFERENCE_GUARD: &str = r#"
import os, sys, time

RESERVED = ("startup", "local")

def guard(workspace, name, allow_reserved=False):
    if not name:
        raise ValueError("job name is empty")
    if os.path.isabs(name):
        raise ValueError(f"job name {name!r} is absolute")
    if os.path.normpath(name) != name:
        raise ValueError(f"job name {name!r} is not normalised")
    if name in (".", ".."):
        raise ValueError(f"job name {name!r} is not a directory name")
    if "/" in name:
        raise ValueError(f"job name {name!r} contains '/'")
    if not allow_reserved and name in RESERVED:
        raise ValueError(f"job name {name!r} is reserved")
    root = os.path.realpath(workspace)
    child = os.path.join(workspace, name)
    if os.path.commonpath([root, os.path.realpath(child)]) != root:
        raise ValueError(f"job directory {child!r} escapes the workspace")
    if os.path.islink(child):
        raise ValueError(f"job directory {child!r} is a symlink")
    return child

def main():
    workspace = sys.argv[1]
    with open(sys.argv[2]) as f:
        names = f.read().split()
    for name in names[:1000]:
        guard(workspace, name)
    start = time.perf_counter()
    for name in names:
        guard(workspace, name)
    elapsed = time.perf_counter() - start
    print(elapsed / len(names) * 1e6)

main()
"#;

/// Run the comparison and print it.
pub fn run(args: &CheckStreamArgs) -> Result<()> {
    ensure!(
        args.names > 0 && args.runs > 0,
        "--names and --runs must be positive"
    );
    let bin = match &args.bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?.with_file_name("mount-plan"),
    };
    if !bin.is_file() {
        bail!(
            "no mount-plan binary at {bin:?}: build it first \
             (cargo build --release --locked -p mount-plan-cli) or pass --bin"
        );
    }
    let names = uuid_names(args.names);

    let core = core_per_name(&names);
    let cpu_before = children_cpu()?;
    let mut process: Vec<Duration> = (0..args.runs)
        .map(|_| whole_process(&bin, &names))
        .collect::<Result<_>>()?;
    let cpu = children_cpu()? - cpu_before;
    process.sort();
    let python_version = python_version(&args.python)?;
    let reference = reference_per_call(&args.python, &names)?;

    let us = |d: Duration| d.as_secs_f64() * 1e6 / names.len() as f64;
    let best = us(process[0]);
    println!(
        "check-stream: {} UUID names; whole process best and median of {} runs",
        names.len(),
        args.runs
    );
    println!(
        "  {:<58} {:>8.3} us/name (median {:.3})",
        "mount-plan check --json, whole process, pipes in and out",
        best,
        us(process[process.len() / 2])
    );
    println!(
        "  {:<58} {:>8.3} us/name",
        "  its CPU time (user + system), mean over the runs",
        cpu.as_secs_f64() * 1e6 / (names.len() * args.runs) as f64
    );
    println!(
        "  {:<58} {:>8.3} us/name",
        "core Layout::job, in-process (for reference)", core
    );
    println!(
        "  {:<58} {:>8.3} us/call",
        format!("reference guard, {python_version} in-process"),
        reference
    );
    println!(
        "  reference guard / whole process: {:.0}x",
        reference / best
    );
    Ok(())
}

/// `n` distinct version-4 UUIDs from a fixed-seed generator: the same names on every run.
fn uuid_names(n: usize) -> Vec<String> {
    let mut state: u64 = 0x6d6f_756e_742d_706c;
    let mut next = || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| {
            let hi = (next() & !0xf000) | 0x4000; // version 4
            let lo = (next() & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
            format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                hi >> 32,
                (hi >> 16) & 0xffff,
                hi & 0xffff,
                lo >> 48,
                lo & 0xffff_ffff_ffff
            )
        })
        .collect()
}

/// The core's own check per name, best of three passes.
fn core_per_name(names: &[String]) -> f64 {
    let layout = Layout::default();
    (0..3)
        .map(|_| {
            let start = Instant::now();
            let valid = names
                .iter()
                .filter(|n| std::hint::black_box(layout.job(n)).is_ok())
                .count();
            assert_eq!(valid, names.len(), "a UUID is a valid job name");
            start.elapsed().as_secs_f64() * 1e6 / names.len() as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// One `mount-plan check --json` process over all names, as a launcher drives it: the names
/// written to its stdin pipe while its answers are read from its stdout pipe. Checks that every
/// name got a valid answer.
fn whole_process(bin: &std::path::Path, names: &[String]) -> Result<Duration> {
    let mut input = Vec::with_capacity(names.len() * 40);
    for name in names {
        serde_json::to_writer(&mut input, name)?;
        input.push(b'\n');
    }
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args(["check", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {bin:?}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut output = Vec::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut output)?;
    let status = child.wait()?;
    let elapsed = start.elapsed();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))??;
    ensure!(
        status.success(),
        "mount-plan check --json exited with {status}"
    );
    let good = br#""ok":true"#;
    let answers = output.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let ok = answers
        .filter(|l| l.windows(good.len()).any(|w| w == good))
        .count();
    ensure!(
        ok == names.len(),
        "{ok} ok answers for {} names",
        names.len()
    );
    Ok(elapsed)
}

/// CPU time (user + system) of this process's waited-for children, from `/proc/self/stat`
/// (in clock ticks of 1/100 s: a run of many names spans many ticks).
fn children_cpu() -> Result<Duration> {
    const TICKS_PER_SECOND: u64 = 100; // USER_HZ, fixed by the /proc ABI
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces: state is
    // field 3; cutime and cstime are fields 16 and 17.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no ')' in /proc/self/stat")?
        .1
        .split_whitespace()
        .collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("no field {n} in /proc/self/stat"))
    };
    let ticks = field(16)? + field(17)?;
    Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

fn python_version(python: &str) -> Result<String> {
    let out = Command::new(python)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {python:?}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The reference guard per call, in microseconds, on the same names in a real workspace.
fn reference_per_call(python: &str, names: &[String]) -> Result<f64> {
    let dir = std::env::temp_dir().join(format!("mp-bench-guard-{}", std::process::id()));
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace)?;
    let list = dir.join("names");
    std::fs::write(&list, names.join("\n"))?;
    let out = Command::new(python)
        .arg("-c")
        .arg(REFERENCE_GUARD)
        .arg(&workspace)
        .arg(&list)
        .output()
        .with_context(|| format!("cannot run {python:?}"));
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    ensure!(
        out.status.success(),
        "the reference guard failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("the reference guard printed {text:?}"))
}
