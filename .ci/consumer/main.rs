//! A launcher as its author would write it, built by `.ci/consumer-crates` from the packaged
//! crates (by version only, outside the workspace): plan, verify and launch two jobs on Docker.
//!
//! 1. A job whose command checks, from inside the container, that the gate's executable was
//!    copied in and is not empty, and writes a marker into W/J: it must run and exit 0.
//! 2. A job whose W/J is swapped for a link to another directory after `verify` pinned it: the
//!    gate must refuse it before the command runs (`gate-refused`, `gate-bind-identity`), so the
//!    gate itself ran and compared what the container got with the pins.
//!
//! Usage: consumer W IMAGE RUN_LABEL (W exists, with `startup/` and `local/`).

use std::path::{Path, PathBuf};

use mount_plan::{HostPath, Layout};
use mount_plan_host::{verify, JobDir, VerifiedPlan, VerifyOptions};
use mount_plan_launch::{launch, Engine, LaunchOptions, LaunchSpec, LogChunk};

type Error = Box<dyn std::error::Error>;

fn verified(w: &Path, job: &str) -> Result<VerifiedPlan, Error> {
    let layout = Layout::default();
    let host = HostPath::parse(w.to_str().ok_or("W is not UTF-8")?)?;
    let plan = layout.plan(&host, &layout.job(job)?)?;
    let options = VerifyOptions {
        job_dir: JobDir::create_fresh(),
        ..Default::default()
    };
    Ok(verify(plan, &options)?)
}

fn spec(image: &str, label: &str, script: &str) -> Result<LaunchSpec, Error> {
    let mut spec = LaunchSpec::new(image.parse()?).with_command(["sh", "-c", script]);
    spec.network = "none".parse()?;
    spec.labels.insert("mount-plan-consumer.run", label)?;
    Ok(spec)
}

async fn run(args: &[String]) -> Result<(), Error> {
    let [w, image, label] = args else {
        return Err("usage: consumer W IMAGE RUN_LABEL".into());
    };
    let w = PathBuf::from(w);
    let engine: Box<dyn Engine> =
        Box::new(mount_plan_docker::DockerEngine::connect(&Default::default()).await?);

    // 1. The gate lets a verified job run; the command sees the gate's executable.
    let job1 = verified(&w, "job-1")?;
    let script = "test -s /.mount-plan/gate || { echo 'no gate in the container' >&2; exit 3; }; \
                  echo \"inside: gate executable present, $(wc -c < /.mount-plan/gate) bytes\"; \
                  echo ran > marker";
    let spec1 = spec(image, label, script)?;
    let mut out = Vec::new();
    let mut sink = |c: &LogChunk| out.extend_from_slice(&c.bytes);
    let done = launch(
        engine.as_ref(),
        &job1,
        &spec1,
        &LaunchOptions::default(),
        &mut sink,
    )
    .await
    .map_err(|f| format!("job-1: {} (command ran: {})", f.error, f.command_ran))?;
    print!("{}", String::from_utf8_lossy(&out));
    if done.status.code != 0 {
        return Err(format!("job-1 exited {}", done.status.code).into());
    }
    let marker = std::fs::read_to_string(w.join("job-1/marker"))?;
    if marker != "ran\n" {
        return Err(format!("job-1's marker is {marker:?}").into());
    }
    println!("job-1: ran through the gate, exit 0, marker written in W/job-1");

    // 2. The gate refuses a job directory swapped after verify.
    let job2 = verified(&w, "job-2")?;
    let elsewhere = w.parent().ok_or("W has no parent")?.join("elsewhere");
    std::fs::create_dir(&elsewhere)?;
    let moved = w.join("verified-job-2");
    std::fs::rename(w.join("job-2"), &moved)?;
    std::os::unix::fs::symlink(&elsewhere, w.join("job-2"))?;
    let spec2 = spec(image, label, "echo ran > marker")?;
    let result = launch(
        engine.as_ref(),
        &job2,
        &spec2,
        &LaunchOptions::default(),
        &mut |_: &LogChunk| {},
    )
    .await;
    let failed = match result {
        Ok(done) => {
            return Err(format!(
                "job-2 ran in a swapped directory (exit {})",
                done.status.code
            )
            .into())
        }
        Err(failed) => failed,
    };
    let message = failed.error.to_string();
    if failed.error.rule() != "gate-refused" || !message.contains("gate-bind-identity") {
        return Err(format!("job-2 failed, but not by the gate: {message}").into());
    }
    if failed.command_ran {
        return Err(format!("job-2's command may have run: {message}").into());
    }
    for dir in [&elsewhere, &moved] {
        if dir.join("marker").exists() {
            return Err(format!("job-2's command ran in {dir:?}").into());
        }
    }
    println!("job-2: refused by the gate before the command ran: {message}");
    Ok(())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args).await {
        eprintln!("consumer: {e}");
        std::process::exit(1);
    }
}
