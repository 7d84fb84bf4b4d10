//! Many jobs of different names in flight on one engine at once, each checking from inside
//! that the workspace root shows only the shared directories and its own job directory, and
//! that its file holds its own content; the host then checks each file.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use mount_plan::{HostPath, Layout};
use mount_plan_host::{verify, JobDir, VerifyOptions};
use mount_plan_launch::{launch, Event, LaunchOptions, LogChunk, Observer};

use super::{fault, Ctx, LABEL_LAUNCH, LABEL_RUN};

/// What the isolation run showed.
#[derive(Debug)]
pub struct Report {
    engine: String,
    jobs: usize,
    /// The most jobs running at the same moment (from the started/exited events).
    max_in_flight: usize,
    /// Jobs that exited 0: they saw only their own directory and their own content.
    isolated: usize,
    failures: Vec<String>,
    leaked: usize,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.isolated == self.jobs && self.failures.is_empty() && self.leaked == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "isolation {}: {} jobs, at most {} in flight at once, {} saw only their own job directory and content, {} leaked",
            self.engine, self.jobs, self.max_in_flight, self.isolated, self.leaked
        )?;
        for fail in &self.failures {
            write!(f, "\n  FAILED {fail}")?;
        }
        Ok(())
    }
}

/// When each job started and exited.
struct Times(Arc<Mutex<Vec<(Instant, i32)>>>);

impl Observer for Times {
    fn output(&mut self, _: &LogChunk) {}
    fn event(&mut self, event: &Event) {
        let step = match event {
            Event::Started { .. } => 1,
            Event::Exited { .. } | Event::Failed { .. } | Event::Cancelled { .. } => -1,
            _ => return,
        };
        if let Ok(mut t) = self.0.lock() {
            t.push((Instant::now(), step));
        }
    }
}

pub async fn run(ctx: &Ctx, jobs: usize) -> Result<Report> {
    let layout = Layout::default();
    let ws = HostPath::parse(ctx.target.workspace.to_str().unwrap_or_default())?;
    let owner = if ctx.rootless() {
        let uid = crate::rootless_uid()?;
        Some((uid, uid))
    } else {
        None
    };
    // Every job directory exists on the host before any job runs: each job's siblings are
    // there to be seen, if anything leaked them.
    let mut verified = Vec::new();
    for k in 0..jobs {
        let name = format!("iso-{}-{}-{k}", ctx.seed, ctx.index);
        let plan = layout.plan(&ws, &layout.job(&name)?)?;
        let options = VerifyOptions {
            job_dir: JobDir::create_fresh(),
            job_dir_owner: owner,
            ..Default::default()
        };
        verified.push((name, verify(plan, &options)?));
    }
    let times = Arc::new(Mutex::new(Vec::new()));
    let engine = super::connect(ctx.engine).await?;
    let launches = verified.iter().enumerate().map(|(k, (name, v))| {
        let times = times.clone();
        let engine = engine.as_ref();
        async move {
            let data = fault::content(ctx.seed, 100 + ctx.index, k as u64);
            let mut seen = ["local".to_owned(), "startup".to_owned(), name.clone()];
            seen.sort();
            let expect = seen.join(" ") + " ";
            // Wait for the others to be in flight, then look.
            let script = format!(
                "printf %s \"$SOAK_DATA\" > {out}; sleep 6; \
                 seen=$(ls -A /workspace | tr '\\n' ' '); \
                 [ \"$seen\" = \"$EXPECT\" ] || {{ echo \"/workspace shows: $seen\" >&2; exit 3; }}; \
                 [ \"$(cat {out})\" = \"$SOAK_DATA\" ] || {{ echo 'the file is not mine' >&2; exit 4; }}; \
                 [ \"$(ls -A .)\" = {out} ] || {{ echo \"my directory shows: $(ls -A .)\" >&2; exit 5; }}",
                out = fault::OUTPUT
            );
            let mut request = mount_plan_run::LaunchRequest::new(
                &ctx.target.image,
                ["sh".to_owned(), "-c".to_owned(), script],
            );
            request.env = vec![format!("SOAK_DATA={data}"), format!("EXPECT={expect}")];
            request.labels = vec![
                (LABEL_RUN.to_owned(), ctx.run.clone()),
                (
                    LABEL_LAUNCH.to_owned(),
                    format!("{}-iso-{}-{k}", ctx.run, ctx.index),
                ),
            ];
            let spec = request.spec(ctx.engine.endpoint().map_err(anyhow::Error::msg)?.kind)?;
            let mut errors = Vec::new();
            let mut observer = Times(times);
            let mut output = Vec::new();
            let result = {
                let mut both = Both(&mut observer, &mut output);
                launch(engine, v, &spec, &LaunchOptions::default(), &mut both).await
            };
            match result {
                Ok(done) if done.status.success() => {}
                Ok(done) => errors.push(format!(
                    "{name}: exit {}: {}",
                    done.status.code,
                    String::from_utf8_lossy(&output).trim()
                )),
                Err(failed) => errors.push(format!("{name}: {}", failed.error)),
            }
            let file = std::path::Path::new(v.plan().job_bind().source().as_str())
                .join(fault::OUTPUT);
            match std::fs::read(&file) {
                Ok(b) if b == data.as_bytes() => {}
                _ => errors.push(format!("{name}: {} is not its content", file.display())),
            }
            Ok::<_, anyhow::Error>(errors)
        }
    });
    let results = futures_util::future::join_all(launches).await;
    let mut failures = Vec::new();
    let mut isolated = 0;
    for r in results {
        match r {
            Ok(e) if e.is_empty() => isolated += 1,
            Ok(e) => failures.extend(e),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let mut t = times.lock().expect("times").clone();
    t.sort_by_key(|(at, step)| (*at, *step));
    let (mut now, mut max_in_flight) = (0i32, 0i32);
    for (_, step) in t {
        now += step;
        max_in_flight = max_in_flight.max(now);
    }
    let mut leaked = 0;
    for k in 0..jobs {
        let label = format!("{}-iso-{}-{k}", ctx.run, ctx.index);
        leaked += ctx.leftovers(&label, true).await?.len();
    }
    drop(verified);
    for k in 0..jobs {
        let _ = std::fs::remove_dir_all(
            ctx.target
                .workspace
                .join(format!("iso-{}-{}-{k}", ctx.seed, ctx.index)),
        );
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(Report {
        engine: format!("{:?}", ctx.engine).to_lowercase(),
        jobs,
        max_in_flight: max_in_flight.max(0) as usize,
        isolated,
        failures,
        leaked,
    })
}

/// Events to one observer, output (stderr and stdout) to a buffer.
struct Both<'a>(&'a mut Times, &'a mut Vec<u8>);

impl Observer for Both<'_> {
    fn output(&mut self, chunk: &LogChunk) {
        self.1.extend_from_slice(&chunk.bytes);
    }
    fn event(&mut self, event: &Event) {
        self.0.event(event)
    }
}
