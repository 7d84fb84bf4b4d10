//! The race: one thread swaps a real directory and a symlink to an outside directory at W/J
//! with `renameat2(RENAME_EXCHANGE)`, at least 10,000 times, while another verifies in a loop.
//! Every result must be the real directory (with its pin) or a `symlink` error, never the
//! link's target. Run for both resolution methods.

mod common;

use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{opts, pin, Site};
use mount_plan_host::{verify, Resolver};
use rustix::fs::{open, renameat_with, Mode, OFlags, RenameFlags};

const MIN_SWAPS: usize = 10_000;
/// Keep swapping past MIN_SWAPS until both outcomes were seen, at most this long.
const MAX_TIME: Duration = Duration::from_secs(30);

fn race(resolver: Resolver) {
    let site = Site::new();
    let real = pin(&site.ws.join("job1"));
    let outside = pin(&site.outside);
    symlink(&site.outside, site.ws.join("swap")).unwrap();
    let ws = open(&site.ws, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
    let plan = site.plan("job1");
    let options = opts(resolver);

    let done = AtomicBool::new(false);
    let seen_ok = AtomicBool::new(false);
    let seen_err = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    let violations: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let (mut oks, mut errs) = (0usize, 0usize);
    let started = Instant::now();

    std::thread::scope(|s| {
        s.spawn(|| {
            let mut n = 0;
            loop {
                renameat_with(&ws, "job1", &ws, "swap", RenameFlags::EXCHANGE)
                    .expect("RENAME_EXCHANGE");
                n += 1;
                let both = seen_ok.load(Ordering::Relaxed) && seen_err.load(Ordering::Relaxed);
                if n >= MIN_SWAPS
                    && (both
                        || started.elapsed() > MAX_TIME
                        || !violations.lock().unwrap().is_empty())
                {
                    break;
                }
            }
            swaps.store(n, Ordering::SeqCst);
            done.store(true, Ordering::SeqCst);
        });
        while !done.load(Ordering::SeqCst) {
            match verify(plan.clone(), &options) {
                Ok(v) => {
                    oks += 1;
                    seen_ok.store(true, Ordering::Relaxed);
                    if v.job_pin() != real || v.job_pin() == outside {
                        violations.lock().unwrap().push(format!(
                            "verified the wrong directory: {:?} (real {real:?}, outside {outside:?})",
                            v.job_pin()
                        ));
                    }
                }
                Err(e) => {
                    errs += 1;
                    seen_err.store(true, Ordering::Relaxed);
                    if e.rule() != "symlink" {
                        violations.lock().unwrap().push(e.to_string());
                    }
                }
            }
        }
    });

    let swaps = swaps.load(Ordering::SeqCst);
    eprintln!(
        "{resolver:?}: {swaps} swaps, {oks} verified, {errs} refused in {:?}",
        started.elapsed()
    );
    let violations = violations.into_inner().unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(swaps >= MIN_SWAPS, "only {swaps} swaps");
    assert!(oks > 0, "no verification succeeded: the test did not race");
    assert!(
        errs > 0,
        "no verification saw the symlink: the test did not race"
    );
}

#[test]
fn racing_swaps_never_yield_the_links_target_openat2() {
    race(Resolver::Openat2);
}

#[test]
fn racing_swaps_never_yield_the_links_target_walk() {
    race(Resolver::Walk);
}
