//! The library's resident memory over many in-process launches: VmRSS after the first 100
//! and after all of them (no faults; the benchmark's library lifecycle, `true` as the job).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{Method, TestEngine};

/// `launches` launches, or as many as `budget` allows after the first 100.
pub fn run(
    engine: TestEngine,
    launches: usize,
    concurrency: usize,
    budget: Option<Duration>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let target = rt.block_on(crate::setup(engine, 8))?;
    let started = Instant::now();
    let batch = |from: usize, to: usize| -> Result<usize> {
        let next = AtomicUsize::new(from);
        let done = AtomicUsize::new(from);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..concurrency.max(1))
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, Ordering::SeqCst);
                            let out_of_time =
                                i >= 100 && budget.is_some_and(|b| started.elapsed() >= b);
                            if i >= to || out_of_time {
                                return Ok(());
                            }
                            crate::lifecycle(&rt, &target, Method::Library, i % 8)?;
                            done.fetch_add(1, Ordering::SeqCst);
                            if (i + 1).is_multiple_of(500) {
                                eprintln!(
                                    "memory {engine:?}: {} launches, {:.0}s, VmRSS {} KiB",
                                    i + 1,
                                    started.elapsed().as_secs_f64(),
                                    super::rss_kib()
                                );
                            }
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().expect("worker panicked")?;
            }
            Ok(done.load(Ordering::SeqCst))
        })
    };
    let first = launches.min(100);
    batch(0, first)?;
    let after_first = super::rss_kib();
    eprintln!("memory {engine:?}: VmRSS after {first} launches {after_first} KiB");
    let launches = batch(first, launches)?;
    let after_all = super::rss_kib();
    let _ = std::fs::remove_dir_all(&target.workspace);
    println!(
        "memory {engine:?}: VmRSS after {first} launches {after_first} KiB, after {launches} launches {after_all} KiB ({:+.1}%), concurrency {concurrency}, {:.0}s",
        (after_all as f64 / after_first as f64 - 1.0) * 100.0,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
