//! `run`'s own decisions, before any engine answers: every refusal releases the job directory
//! the host check created, says the command never ran, and maps to exit status 125; a
//! cancellation during the connection is a cancellation. (Real launches are the engine tests'.)

use std::path::Path;

use mount_plan::{HostPath, Layout};
use mount_plan_host::{verify, JobDir, VerifiedPlan, VerifyOptions};
use mount_plan_launch::{CancelToken, Event, LaunchOptions, LogChunk, Observer};
use mount_plan_run::{run, Endpoint, LaunchRequest, Outcome, Userns, EXIT_LAUNCH_FAILED};

fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for shared in ["startup", "local"] {
        std::fs::create_dir(dir.path().join(shared)).unwrap();
    }
    dir
}

fn verified(site: &Path) -> VerifiedPlan {
    let layout = Layout::default();
    let ws = HostPath::parse(site.to_str().unwrap()).unwrap();
    let plan = layout.plan(&ws, &layout.job("job-1").unwrap()).unwrap();
    let options = VerifyOptions {
        job_dir: JobDir::create_fresh(),
        ..VerifyOptions::default()
    };
    verify(plan, &options).unwrap()
}

#[derive(Default)]
struct Events(Vec<Event>);

impl Observer for Events {
    fn output(&mut self, _: &LogChunk) {}
    fn event(&mut self, event: &Event) {
        self.0.push(event.clone());
    }
}

async fn refused(request: &LaunchRequest, endpoint: &Endpoint, cancel: &CancelToken) -> String {
    let site = site();
    let v = verified(site.path());
    assert!(site.path().join("job-1").is_dir(), "the check created J");
    let options = LaunchOptions {
        cancel: cancel.clone(),
        ..LaunchOptions::default()
    };
    let mut events = Events::default();
    let outcome = run(&v, request, endpoint, &options, &mut events).await;
    assert!(
        !site.path().join("job-1").exists(),
        "the job directory the check created is released"
    );
    let Outcome::Failed(failure) = &outcome else {
        panic!("refused, not run: {outcome:?}");
    };
    assert!(!failure.command_ran && failure.container.is_none());
    assert_eq!(outcome.exit_status(0), EXIT_LAUNCH_FAILED);
    assert!(events.0.is_empty(), "nothing was launched: {:?}", events.0);
    failure.error.rule().to_owned()
}

fn nowhere(kind: &str) -> Endpoint {
    format!("{kind}@unix:///nonexistent/mount-plan-run-test.sock")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_bad_request_is_refused_and_releases_the_job_dir() {
    let mut request = LaunchRequest::new("busybox:local", ["true"]);
    request.cpus = Some(-1.0);
    let never = CancelToken::new();
    assert_eq!(
        refused(&request, &nowhere("docker"), &never).await,
        "cpus-positive"
    );
    let mut request = LaunchRequest::new("busybox:local", ["true"]);
    request.constraints = vec!["node.role==worker".into()];
    assert_eq!(
        refused(&request, &nowhere("podman"), &never).await,
        "constraint-engine"
    );
}

#[tokio::test]
async fn an_engine_that_cannot_be_reached_or_set_up_releases_the_job_dir() {
    let request = LaunchRequest::new("busybox:local", ["true"]);
    let never = CancelToken::new();
    assert_eq!(
        refused(&request, &nowhere("docker"), &never).await,
        "connect"
    );
    let mut keep_id_on_docker = nowhere("docker");
    keep_id_on_docker.userns = Userns::KeepId;
    assert_eq!(
        refused(&request, &keep_id_on_docker, &never).await,
        "unsupported"
    );
}

#[tokio::test]
async fn a_cancellation_before_the_engine_answers_is_a_cancellation() {
    let request = LaunchRequest::new("busybox:local", ["true"]);
    let cancel = CancelToken::new();
    cancel.cancel();
    // A listening socket that never answers: only the cancellation ends the connection.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut endpoint = Endpoint::new(mount_plan_run::EngineKind::Docker)
        .with_socket(format!("unix://{}", socket.display()));
    endpoint.connect_timeout = std::time::Duration::from_secs(60);
    assert_eq!(refused(&request, &endpoint, &cancel).await, "cancelled");
}
