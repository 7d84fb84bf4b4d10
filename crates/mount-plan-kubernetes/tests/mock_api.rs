//! The backend's conversation with the API server, without a cluster: a `tower-test` mock
//! service plays the API server (as kube-rs's own `mock_tests.rs` do), holding Pods in memory
//! and moving a released Pod through a scripted list of statuses, one per read. The launches
//! run through the real lifecycle driver; every request is recorded (method, path, query,
//! body) and asserted. Every test is bounded in (paused, virtual) time: a hang fails it, and
//! each ends by checking that no Pod is left.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::client::Body;
use kube::Client;
use mount_plan::{HostPath, Layout};
use mount_plan_host::{verify, VerifiedPlan, VerifyOptions};
use mount_plan_k8s::{Target, Volumes};
use mount_plan_kubernetes::{translate, KubeOptions, KubernetesEngine, PodSettings, AUDIT_GATE};
use mount_plan_launch::identity::{LaunchId, Launcher};
use mount_plan_launch::{
    gc, launch, Availability, CreateRequest, Engine, Failed, Finished, GcOptions, LaunchError,
    LaunchOptions, LaunchSpec, LogChunk, Network, Protection,
};
use serde_json::{json, Value};
use tower_test::mock;

const NS: &str = "test";
const PODS: &str = "/api/v1/namespaces/test/pods";

/// One request as the mock API server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Value,
}

/// What happens on a read of a released Pod.
#[derive(Debug, Clone)]
enum Step {
    Status(Value),
    /// Someone else deletes the Pod.
    Vanish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum CreateMode {
    #[default]
    Answer,
    /// Admission refuses the Pod (403).
    Forbidden,
    /// The Pod is stored, the answer is lost (connection reset).
    Lose,
}

#[derive(Default)]
struct ApiServer {
    pods: BTreeMap<String, Pod>,
    steps: VecDeque<Step>,
    current: Option<Value>,
    log: String,
    seen: Vec<Seen>,
    create: CreateMode,
    mutate: Option<fn(&mut Pod)>,
    /// The job container's log is the gate's refusal of this check, with the nonce the Pod's
    /// command carries (what a gate that found another directory writes).
    gate_refuses: Option<&'static str>,
}

fn status(code: u16, reason: &str) -> (StatusCode, Vec<u8>) {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("mock: {reason}"), "reason": reason, "code": code});
    (
        StatusCode::from_u16(code).unwrap(),
        serde_json::to_vec(&body).unwrap(),
    )
}

fn ok(value: &impl serde::Serialize) -> (StatusCode, Vec<u8>) {
    (StatusCode::OK, serde_json::to_vec(value).unwrap())
}

fn decode(q: &str) -> String {
    let mut out = Vec::new();
    let b = q.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&q[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

impl ApiServer {
    fn released(pod: &Pod) -> bool {
        pod.spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_none_or(Vec::is_empty)
    }

    /// The answer to one request; `None`: the connection drops before the answer.
    fn answer(
        &mut self,
        method: &Method,
        path: &str,
        query: &str,
        body: &Value,
    ) -> Option<(StatusCode, Vec<u8>)> {
        let rest = path.strip_prefix(PODS)?;
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        match (method.clone(), parts.as_slice()) {
            (Method::POST, []) => {
                let mut pod: Pod = serde_json::from_value(body.clone()).unwrap();
                if self.create == CreateMode::Forbidden {
                    return Some(status(403, "Forbidden"));
                }
                let name = pod.metadata.name.clone().unwrap();
                if self.pods.contains_key(&name) {
                    return Some(status(409, "AlreadyExists"));
                }
                pod.metadata.uid = Some(format!("uid-{name}"));
                pod.metadata.namespace = Some(NS.into());
                pod.metadata.creation_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        "2026-12-02T05:00:00Z".parse().unwrap(),
                    ));
                pod.status = Some(serde_json::from_value(json!({"phase": "Pending"})).unwrap());
                if let Some(m) = self.mutate {
                    m(&mut pod);
                }
                self.pods.insert(name, pod.clone());
                if self.create == CreateMode::Lose {
                    return None;
                }
                Some((StatusCode::CREATED, serde_json::to_vec(&pod).unwrap()))
            }
            (Method::GET, []) => {
                let selector = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("labelSelector="))
                    .map(decode)
                    .unwrap_or_default();
                let (k, v) = selector.split_once('=').unwrap();
                let items: Vec<&Pod> = self
                    .pods
                    .values()
                    .filter(|p| {
                        p.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(k))
                            .map(String::as_str)
                            == Some(v)
                    })
                    .collect();
                Some(ok(&json!({"apiVersion": "v1", "kind": "PodList",
                    "metadata": {"resourceVersion": "7"}, "items": items})))
            }
            (Method::GET, [name]) => {
                let name = name.to_string();
                let Some(pod) = self.pods.get(&name) else {
                    return Some(status(404, "NotFound"));
                };
                if Self::released(pod) {
                    match self.steps.pop_front() {
                        Some(Step::Vanish) => {
                            self.pods.remove(&name);
                            return Some(status(404, "NotFound"));
                        }
                        Some(Step::Status(s)) => self.current = Some(s),
                        None => {}
                    }
                    if let Some(s) = &self.current {
                        let pod = self.pods.get_mut(&name).unwrap();
                        pod.status = Some(serde_json::from_value::<PodStatus>(s.clone()).unwrap());
                    }
                }
                Some(ok(&self.pods[&name]))
            }
            (Method::GET, [name, "log"]) => match self.pods.get(*name) {
                Some(pod) if self.gate_refuses.is_some() => {
                    let command = pod.spec.as_ref().unwrap().containers[0]
                        .command
                        .clone()
                        .unwrap_or_default();
                    let line = format!(
                        "mount-plan-gate: {}: refused: {}: the bind at \"/workspace/job-1\" is another directory than the one verified\n",
                        command.get(2).cloned().unwrap_or_default(),
                        self.gate_refuses.unwrap()
                    );
                    Some((StatusCode::OK, line.into_bytes()))
                }
                Some(_) => Some((StatusCode::OK, self.log.clone().into_bytes())),
                None => Some(status(404, "NotFound")),
            },
            (Method::PATCH, [name]) => {
                let Some(pod) = self.pods.get_mut(*name) else {
                    return Some(status(404, "NotFound"));
                };
                if body.pointer("/spec/schedulingGates") == Some(&Value::Null) {
                    pod.spec.as_mut().unwrap().scheduling_gates = None;
                }
                Some(ok(&*pod))
            }
            (Method::DELETE, [name]) => match self.pods.remove(*name) {
                Some(pod) => Some(ok(&pod)),
                None => Some(status(404, "NotFound")),
            },
            _ => panic!("unexpected request {method} {path}?{query}"),
        }
    }
}

struct Harness {
    engine: KubernetesEngine,
    api: Arc<Mutex<ApiServer>>,
    _dir: tempfile::TempDir,
    plan: VerifiedPlan,
}

fn settings() -> PodSettings {
    PodSettings {
        target: Target::default(),
        volumes: Volumes::Claims {
            workspace: "site-ws".parse().unwrap(),
            extra: BTreeMap::new(),
        },
        init_image: None,
        gate_image: Some("site/mount-plan-gate:1".into()),
    }
}

fn harness(api: ApiServer) -> Harness {
    harness_with(api, settings())
}

fn harness_with(api: ApiServer, settings: PodSettings) -> Harness {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let api = Arc::new(Mutex::new(api));
    let served = api.clone();
    tokio::spawn(async move {
        let mut handle = pin!(handle);
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            let path = parts.uri.path().to_owned();
            let query = parts.uri.query().unwrap_or("").to_owned();
            let answer = {
                let mut api = served.lock().unwrap();
                api.seen.push(Seen {
                    method: parts.method.clone(),
                    path: path.clone(),
                    query: query.clone(),
                    body: body.clone(),
                });
                api.answer(&parts.method, &path, &query, &body)
            };
            match answer {
                Some((code, bytes)) => send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(bytes))
                        .unwrap(),
                ),
                None => send.send_error("mock: connection reset before the answer"),
            }
        }
    });
    let mut options = KubeOptions::new(settings);
    options.pending_timeout = Duration::from_secs(120);
    let engine = KubernetesEngine::with_client(
        Client::new(service, NS),
        options,
        "mock".into(),
        "v1.33.4".into(),
    );

    let dir = tempfile::tempdir().unwrap();
    for d in ["startup", "local", "job-1"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    let layout = Layout::default();
    let plan = layout
        .plan(
            &HostPath::parse(dir.path().to_str().unwrap()).unwrap(),
            &layout.job("job-1").unwrap(),
        )
        .unwrap();
    let plan = verify(plan, &VerifyOptions::default()).unwrap();
    Harness {
        engine,
        api,
        _dir: dir,
        plan,
    }
}

fn spec() -> LaunchSpec {
    let mut spec =
        LaunchSpec::new("trainer:1".parse().unwrap()).with_command(["python", "train.py"]);
    spec.network = Network::Default;
    spec.user = Some("1000:1000".parse().unwrap());
    // Kubernetes 1.33 cannot set noexec on a volume mount.
    spec.accept_missing.insert(Protection::NoExecOnBinds);
    spec
}

/// Run one launch through the driver, bounded: a hang fails the test.
async fn run(h: &Harness, options: LaunchOptions) -> (Result<Finished, Failed>, Vec<u8>) {
    run_spec(h, options, &spec()).await
}

async fn run_spec(
    h: &Harness,
    options: LaunchOptions,
    spec: &LaunchSpec,
) -> (Result<Finished, Failed>, Vec<u8>) {
    let mut out = Vec::new();
    let result = tokio::time::timeout(
        Duration::from_secs(3600),
        launch(&h.engine, &h.plan, spec, &options, &mut |c: &LogChunk| {
            out.extend_from_slice(&c.bytes)
        }),
    )
    .await
    .expect("the launch ended within the bound");
    (result, out)
}

/// The Pod the backend posts for the harness's plan with these labels.
fn pod_for(h: &Harness, labels: &BTreeMap<String, String>) -> Pod {
    let gate = mount_plan_launch::gate::Gate::new(&h.plan);
    let request = CreateRequest {
        plan: &h.plan,
        gate: &gate,
        spec: &spec(),
        labels,
        reread_image: false,
    };
    translate(&request, &settings()).unwrap()
}

/// A launch expected to fail, and its harness.
async fn failing(api: ApiServer) -> (Harness, Failed) {
    let h = harness(api);
    let (result, _) = run(&h, LaunchOptions::default()).await;
    let failed = result.expect_err("the launch fails");
    (h, failed)
}

fn running() -> Value {
    json!({"phase": "Running", "containerStatuses": [{"name": "job", "image": "trainer:1", "imageID": "",
        "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-12-02T05:00:01Z"}}}]})
}

fn terminated(phase: &str, code: i32) -> Value {
    json!({"phase": phase, "containerStatuses": [{"name": "job", "image": "trainer:1", "imageID": "",
        "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": code}}}]})
}

fn pending() -> Value {
    json!({"phase": "Pending", "initContainerStatuses": [{"name": "mountpoints", "image": "trainer:1",
        "imageID": "", "ready": false, "restartCount": 0, "state": {"running": {}}}]})
}

fn steps(list: Vec<Value>) -> VecDeque<Step> {
    list.into_iter().map(Step::Status).collect()
}

fn seen(h: &Harness) -> Vec<Seen> {
    h.api.lock().unwrap().seen.clone()
}

fn assert_no_pod_left(h: &Harness) {
    let api = h.api.lock().unwrap();
    assert!(
        api.pods.is_empty(),
        "left behind: {:?}",
        api.pods.keys().collect::<Vec<_>>()
    );
}

/// (method, path without the pods prefix) of every request.
fn calls(h: &Harness) -> Vec<(Method, String)> {
    seen(h)
        .into_iter()
        .map(|s| (s.method, s.path.trim_start_matches(PODS).to_owned()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn pending_running_succeeded_the_whole_conversation() {
    let h = harness(ApiServer {
        steps: steps(vec![
            pending(),
            running(),
            running(),
            terminated("Succeeded", 0),
        ]),
        log: "epoch 1\nepoch 2\n".into(),
        ..ApiServer::default()
    });
    let (result, out) = run(&h, LaunchOptions::default()).await;
    let finished = result.unwrap();
    assert_eq!(finished.status.code, 0);
    assert!(finished.removed);
    assert_eq!(String::from_utf8(out).unwrap(), "epoch 1\nepoch 2\n");
    assert_no_pod_left(&h);

    let seen = seen(&h);
    let name = &finished.container;
    assert!(name.starts_with("mount-plan-job-1-"), "{name}");
    // 1. create: the translated Pod, gated, exactly.
    assert_eq!(
        (&seen[0].method, seen[0].path.as_str()),
        (&Method::POST, PODS)
    );
    let body = &seen[0].body;
    let posted: Pod = serde_json::from_value(body.clone()).unwrap();
    let mut labels = posted.metadata.annotations.clone().unwrap();
    labels.remove(mount_plan_kubernetes::ANNOTATION_WORKSPACE);
    let mut expected = pod_for(&h, &labels);
    // The gate's nonce is fresh for each launch: the rest of the command is the same.
    let command = |p: &Pod| {
        p.spec.as_ref().unwrap().containers[0]
            .command
            .clone()
            .unwrap()
    };
    let nonce = command(&posted)[2].clone();
    assert_ne!(nonce, command(&expected)[2]);
    expected.spec.as_mut().unwrap().containers[0]
        .command
        .as_mut()
        .unwrap()[2] = nonce;
    assert_eq!(body, &serde_json::to_value(&expected).unwrap());
    assert_eq!(
        body.pointer("/spec/schedulingGates/0/name"),
        Some(&json!(AUDIT_GATE))
    );
    assert_eq!(
        body.pointer("/metadata/labels/io.mount-plan.managed"),
        Some(&json!("1"))
    );
    // The gate runs first and then the command, given whole (no args).
    assert_eq!(
        body.pointer("/spec/containers/0/command/0"),
        Some(&json!(mount_plan_launch::gate::GATE_PATH))
    );
    let command = body.pointer("/spec/containers/0/command").unwrap();
    let words = command.as_array().unwrap();
    assert_eq!(
        &words[words.len() - 3..],
        &[json!("--"), json!("python"), json!("train.py")]
    );
    assert_eq!(body.pointer("/spec/containers/0/args"), None);
    assert_eq!(
        body.pointer("/spec/securityContext/runAsUser"),
        Some(&json!(1000))
    );
    // 2. audit of the gated Pod, 3. release, 4. audit again.
    let pod_path = format!("{PODS}/{name}");
    assert_eq!((&seen[1].method, &seen[1].path), (&Method::GET, &pod_path));
    assert_eq!(
        (&seen[2].method, &seen[2].path),
        (&Method::PATCH, &pod_path)
    );
    assert_eq!(seen[2].body, json!({"spec": {"schedulingGates": null}}));
    assert_eq!((&seen[3].method, &seen[3].path), (&Method::GET, &pod_path));
    // Then the status reads and one log read of the job container, followed.
    let log = seen
        .iter()
        .find(|s| s.path.ends_with("/log"))
        .expect("a log read");
    assert_eq!(log.path, format!("{pod_path}/log"));
    let query: BTreeSet<&str> = log.query.split('&').collect();
    assert!(
        query.contains("container=job") && query.contains("follow=true"),
        "{}",
        log.query
    );
    // 5. the last request deletes the Pod.
    let last = seen.last().unwrap();
    assert_eq!((&last.method, &last.path), (&Method::DELETE, &pod_path));
    assert_eq!(
        seen.iter().filter(|s| s.method == Method::DELETE).count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_pod_reports_the_job_containers_exit_code() {
    let h = harness(ApiServer {
        steps: steps(vec![running(), terminated("Failed", 3)]),
        log: "boom\n".into(),
        ..ApiServer::default()
    });
    let (result, out) = run(&h, LaunchOptions::default()).await;
    assert_eq!(result.unwrap().status.code, 3);
    assert_eq!(out, b"boom\n");
    assert_no_pod_left(&h);
}

/// The gate in the Pod refused (its line on the job container's log, exit 125 in the Pod's
/// status): the launch fails with `gate-refused` naming the gate's check, the command never
/// ran, the Pod is deleted. The Pod that was posted runs the gate first, from its own volume,
/// read-only. (A mock API: what the kubelet and the node would do is not exercised.)
#[tokio::test(start_paused = true)]
async fn a_pod_whose_gate_refuses_fails_with_gate_refused() {
    let h = harness(ApiServer {
        steps: steps(vec![running(), terminated("Failed", 125)]),
        gate_refuses: Some("gate-bind-identity"),
        ..ApiServer::default()
    });
    let (result, _) = run(&h, LaunchOptions::default()).await;
    let failed = result.expect_err("the gate refused");
    assert_eq!(failed.error.rule(), "gate-refused", "{}", failed.error);
    assert!(!failed.command_ran, "{}", failed.error);
    let msg = failed.error.to_string();
    assert!(msg.contains("gate-bind-identity"), "{msg}");
    assert_no_pod_left(&h);
    let posted = seen(&h)
        .into_iter()
        .find(|s| s.method == Method::POST)
        .expect("the create");
    let pod: Pod = serde_json::from_value(posted.body).unwrap();
    let spec = pod.spec.unwrap();
    let job = &spec.containers[0];
    let command = job.command.clone().unwrap();
    assert_eq!(command[0], mount_plan_launch::gate::GATE_PATH);
    assert_eq!(command[1], mount_plan_launch::gate::GATE_PROTOCOL);
    assert_eq!(&command[command.len() - 3..], ["--", "python", "train.py"]);
    // Node-local devices: W's binds by inode and one filesystem; R's emptyDir mode accepted.
    assert!(command.iter().any(|w| w == "same:w"), "{command:?}");
    assert!(command.iter().any(|w| w == "555|777"), "{command:?}");
    let gate = job
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == mount_plan_launch::gate::GATE_PATH)
        .expect("the gate's mount");
    assert_eq!(gate.read_only, Some(true));
    let init = spec.init_containers.unwrap();
    assert_eq!(init[0].name, mount_plan_k8s::GATE_CONTAINER);
    assert!(init[0]
        .volume_mounts
        .iter()
        .flatten()
        .all(|m| m.name == mount_plan_k8s::GATE_VOLUME));
}

/// The same Pod exiting 125 without the gate's line (the job's own status) is the job's
/// failure, not a refusal: only this launch's nonce counts.
#[tokio::test(start_paused = true)]
async fn exit_125_without_the_gates_line_is_the_jobs_own() {
    let h = harness(ApiServer {
        steps: steps(vec![running(), terminated("Failed", 125)]),
        log: "mount-plan-gate: 0000: refused: gate-bind-identity: forged\n".into(),
        ..ApiServer::default()
    });
    let (result, _) = run(&h, LaunchOptions::default()).await;
    assert_eq!(result.expect("the job ran").status.code, 125);
    assert_no_pod_left(&h);
}

#[tokio::test(start_paused = true)]
async fn an_image_that_cannot_be_pulled_fails_and_the_pod_is_deleted() {
    let pull = json!({"phase": "Pending", "containerStatuses": [{"name": "job", "image": "trainer:1",
        "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}]});
    let h = harness(ApiServer {
        steps: steps(vec![pending(), pull]),
        ..ApiServer::default()
    });
    let (result, out) = run(&h, LaunchOptions::default()).await;
    let failed = result.expect_err("the launch fails");
    assert!(
        matches!(failed.error, LaunchError::ImageNotFound { .. }),
        "{}",
        failed.error
    );
    assert!(out.is_empty());
    assert_no_pod_left(&h);
}

#[tokio::test(start_paused = true)]
async fn an_evicted_pod_fails_without_a_status_and_is_deleted() {
    let evicted = json!({"phase": "Failed", "reason": "Evicted",
        "message": "The node was low on resource: memory."});
    let (h, failed) = failing(ApiServer {
        steps: steps(vec![running(), evicted]),
        ..ApiServer::default()
    })
    .await;
    assert!(failed.command_ran);
    assert!(
        failed.error.to_string().contains("Evicted"),
        "{}",
        failed.error
    );
    assert_no_pod_left(&h);
}

#[tokio::test(start_paused = true)]
async fn a_pod_deleted_by_someone_else_ends_the_launch() {
    let (h, failed) = failing(ApiServer {
        steps: VecDeque::from([
            Step::Status(running()),
            Step::Status(running()),
            Step::Vanish,
        ]),
        ..ApiServer::default()
    })
    .await;
    assert!(
        matches!(failed.error, LaunchError::NotFound { .. }),
        "{}",
        failed.error
    );
    assert_no_pod_left(&h);
}

#[tokio::test(start_paused = true)]
async fn a_pod_that_never_starts_times_out_and_is_deleted() {
    let started = tokio::time::Instant::now();
    let (h, failed) = failing(ApiServer {
        steps: steps(vec![pending()]),
        ..ApiServer::default()
    })
    .await;
    assert!(
        failed.error.to_string().contains("has not started within"),
        "{}",
        failed.error
    );
    // The backend's pending timeout (120 s here) ended it, with the driver's retries.
    assert!(
        started.elapsed() < Duration::from_secs(600),
        "{:?}",
        started.elapsed()
    );
    assert_no_pod_left(&h);
}

#[tokio::test(start_paused = true)]
async fn a_pod_refused_by_admission_leaves_nothing() {
    let (h, failed) = failing(ApiServer {
        create: CreateMode::Forbidden,
        ..ApiServer::default()
    })
    .await;
    assert!(
        matches!(failed.error, LaunchError::Create { .. }),
        "{}",
        failed.error
    );
    assert!(!failed.command_ran);
    // The driver looks for Pods of this launch by its label; there are none.
    let c = calls(&h);
    assert_eq!(
        c,
        [(Method::POST, String::new()), (Method::GET, String::new())]
    );
    let list = &seen(&h)[1];
    assert!(
        decode(&list.query).contains("labelSelector=io.mount-plan.launch="),
        "{}",
        list.query
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_create_answer_is_resolved_by_label_and_the_pod_deleted() {
    let (h, failed) = failing(ApiServer {
        create: CreateMode::Lose,
        ..ApiServer::default()
    })
    .await;
    assert!(
        matches!(failed.error, LaunchError::AnswerLost { op: "create", .. }),
        "{}",
        failed.error
    );
    assert!(!failed.command_ran);
    let c = calls(&h);
    assert_eq!(c[0], (Method::POST, String::new()));
    assert_eq!(c[1], (Method::GET, String::new()));
    assert_eq!(c[2].0, Method::DELETE);
    assert_no_pod_left(&h);
}

#[tokio::test(start_paused = true)]
async fn the_audit_catches_a_mount_added_by_the_api_server_and_nothing_runs() {
    fn webhook(pod: &mut Pod) {
        let spec = pod.spec.as_mut().unwrap();
        spec.volumes.as_mut().unwrap().push(
            serde_json::from_value(json!({"name": "host", "hostPath": {"path": "/"}})).unwrap(),
        );
        spec.containers[0]
            .volume_mounts
            .as_mut()
            .unwrap()
            .push(serde_json::from_value(json!({"name": "host", "mountPath": "/host"})).unwrap());
    }
    let (h, failed) = failing(ApiServer {
        mutate: Some(webhook),
        ..ApiServer::default()
    })
    .await;
    assert!(
        matches!(failed.error, LaunchError::Audit { .. }),
        "{}",
        failed.error
    );
    assert!(
        failed.error.to_string().contains("/host"),
        "{}",
        failed.error
    );
    assert!(!failed.command_ran);
    // Never released: no PATCH.
    assert!(calls(&h).iter().all(|(m, _)| *m != Method::PATCH));
    assert_no_pod_left(&h);
}

#[tokio::test(start_paused = true)]
async fn gc_deletes_the_pods_of_a_dead_launcher_found_by_label() {
    let h = harness(ApiServer::default());
    let mut dead = Launcher::current();
    dead.pid = u32::MAX - 7;
    let mut labels: BTreeMap<String, String> = dead
        .labels(&LaunchId::new())
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    labels.insert("io.mount-plan.managed".into(), "1".into());
    labels.insert("io.mount-plan.job".into(), "job-1".into());
    let pod = pod_for(&h, &labels);
    h.api
        .lock()
        .unwrap()
        .pods
        .insert(pod.metadata.name.clone().unwrap(), pod);

    let collected = tokio::time::timeout(
        Duration::from_secs(60),
        gc(&h.engine, &GcOptions::default()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(collected.len(), 1);
    assert!(collected[0].removed, "{collected:?}");
    assert_eq!(collected[0].job.as_deref(), Some("job-1"));
    let c = seen(&h);
    assert!(
        decode(&c[0].query)
            .split('&')
            .any(|kv| kv == "labelSelector=io.mount-plan.managed=1"),
        "{}",
        c[0].query
    );
    assert_eq!(c[1].method, Method::DELETE);
    assert_no_pod_left(&h);
}

/// `remove` says whether it deleted the pod: a pod already gone (deleted by its own launcher
/// between gc's listing and gc's removal) is `AlreadyGone`, so gc does not report it.
#[tokio::test(start_paused = true)]
async fn remove_says_whether_it_deleted_the_pod() {
    let h = harness(ApiServer::default());
    let pod = pod_for(&h, &BTreeMap::new());
    let name = pod.metadata.name.clone().unwrap();
    h.api.lock().unwrap().pods.insert(name.clone(), pod);
    use mount_plan_launch::{Engine, Removal};
    assert_eq!(h.engine.remove(&name).await.unwrap(), Removal::Removed);
    assert_eq!(h.engine.remove(&name).await.unwrap(), Removal::AlreadyGone);
    assert_no_pod_left(&h);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_launch_stops_and_deletes_its_running_pod() {
    let h = harness(ApiServer {
        steps: steps(vec![running()]),
        ..ApiServer::default()
    });
    let options = LaunchOptions::default();
    let cancel = options.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        cancel.cancel();
    });
    let (result, _) = run(&h, options).await;
    let failed = result.unwrap_err();
    assert!(failed.is_cancelled(), "{}", failed.error);
    let deletes: Vec<Seen> = seen(&h)
        .into_iter()
        .filter(|s| s.method == Method::DELETE)
        .collect();
    // stop (with the grace period), then remove (already gone: 404 is fine).
    assert!(
        deletes[0].query.contains("gracePeriodSeconds=10")
            || deletes[0].body.pointer("/gracePeriodSeconds") == Some(&json!(10)),
        "{deletes:?}"
    );
    assert_no_pod_left(&h);
}

#[tokio::test(start_paused = true)]
async fn what_a_pod_cannot_express_is_refused_before_any_request() {
    let h = harness(ApiServer::default());
    let labels = BTreeMap::new();
    let refused = |spec: LaunchSpec| {
        let gate = mount_plan_launch::gate::Gate::new(&h.plan);
        let request = CreateRequest {
            plan: &h.plan,
            gate: &gate,
            spec: &spec,
            labels: &labels,
            reread_image: false,
        };
        translate(&request, &settings()).unwrap_err().to_string()
    };
    let mut none = spec();
    none.network = Network::None;
    assert!(refused(none).contains("--network default"));
    let mut pids = spec();
    pids.resources = mount_plan_launch::Resources::new()
        .with_pids_limit(100)
        .unwrap();
    assert!(refused(pids).contains("pids"));
    let mut root = spec();
    root.user = Some("0".parse().unwrap());
    assert!(refused(root).contains("k8s-run-as-root"));

    // Limits become the job container's resources; the name ends with the launch id.
    let mut limited = spec();
    limited.resources = mount_plan_launch::Resources::new()
        .with_memory_bytes(1 << 30)
        .unwrap()
        .with_nano_cpus(1_500_000_000)
        .unwrap();
    let labels = BTreeMap::from([(
        "io.mount-plan.launch".to_owned(),
        "0123456789abcdef".to_owned(),
    )]);
    let gate = mount_plan_launch::gate::Gate::new(&h.plan);
    let request = CreateRequest {
        plan: &h.plan,
        gate: &gate,
        spec: &limited,
        labels: &labels,
        reread_image: false,
    };
    let pod = serde_json::to_value(translate(&request, &settings()).unwrap()).unwrap();
    assert_eq!(
        pod.pointer("/metadata/name"),
        Some(&json!("mount-plan-job-1-0123456789"))
    );
    assert_eq!(
        pod.pointer("/spec/containers/0/resources/limits"),
        Some(&json!({"cpu": "1500m", "memory": "1073741824"}))
    );
    assert!(seen(&h).is_empty());
}

/// Without a gate image the Pod cannot run the gate: the launch is refused before any
/// request, naming the gate and what to set, unless the launcher accepts it missing; then the
/// Pod runs the job's command itself, with no gate container.
#[tokio::test(start_paused = true)]
async fn without_a_gate_image_the_launch_is_refused_unless_the_gate_is_accepted_missing() {
    let no_gate = PodSettings {
        gate_image: None,
        ..settings()
    };
    let h = harness_with(ApiServer::default(), no_gate.clone());
    let gate = h.engine.report().availability(Protection::Gate);
    assert!(
        matches!(&gate, Availability::Missing(why) if why.contains("--k8s-gate-image")),
        "{gate}"
    );
    let (result, _) = run(&h, LaunchOptions::default()).await;
    let failed = result.expect_err("refused");
    assert_eq!(
        failed.error.rule(),
        "protection-unavailable",
        "{}",
        failed.error
    );
    assert!(
        failed.error.to_string().contains("gate") && !failed.command_ran,
        "{}",
        failed.error
    );
    assert!(seen(&h).is_empty(), "nothing was asked of the API server");

    let h = harness_with(
        ApiServer {
            steps: steps(vec![running(), terminated("Succeeded", 0)]),
            ..ApiServer::default()
        },
        no_gate,
    );
    let mut accepted = spec();
    accepted.accept_missing.insert(Protection::Gate);
    let (result, _) = run_spec(&h, LaunchOptions::default(), &accepted).await;
    assert_eq!(result.expect("accepted missing: it runs").status.code, 0);
    let pod = &seen(&h)[0].body;
    let init: Vec<&Value> = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|c| c.get("name")).collect())
        .unwrap_or_default();
    assert!(
        !init.contains(&&json!("gate")),
        "no gate container: {init:?}"
    );
    assert_eq!(
        (
            pod.pointer("/spec/containers/0/command"),
            pod.pointer("/spec/containers/0/args")
        ),
        (None, Some(&json!(["python", "train.py"]))),
        "the image's entrypoint with the job's command, not the gate"
    );
    assert_no_pod_left(&h);
}

#[tokio::test(start_paused = true)]
async fn with_a_gate_image_the_gate_is_available() {
    let h = harness(ApiServer::default());
    assert_eq!(
        h.engine.report().availability(Protection::Gate),
        Availability::Native
    );
}
