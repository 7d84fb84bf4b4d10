//! An in-memory [`Engine`] for testing the lifecycle's failure paths: every operation can be
//! made to fail, hang, or take effect and lose its answer, and a [`CancelToken`] can be
//! cancelled when a chosen operation is called.
//!
//! It is test support and never the proof that a backend works: real engines are.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use mount_plan::MountPlan;

use crate::container::{ExitStatus, LaunchError, LogChunk, LogStream, OutputStream};
use crate::engine::{CreateRequest, Created, Engine, Listed, Removal};
use crate::lifecycle::CancelToken;
use mount_plan_spec::{Availability, EngineInfo, EngineReport, Protection};
use mount_plan_spec::{ObservedBind, ObservedContainer, ObservedTmpfs};

/// An engine operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `create`.
    Create,
    /// `start`.
    Start,
    /// `inspect`.
    Inspect,
    /// `wait`.
    Wait,
    /// `logs`.
    Logs,
    /// `stop`.
    Stop,
    /// `remove`.
    Remove,
    /// `list`.
    List,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 8] = [
        Op::Create,
        Op::Start,
        Op::Inspect,
        Op::Wait,
        Op::Logs,
        Op::Stop,
        Op::Remove,
        Op::List,
    ];
}

/// How a faulty operation misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The engine answers with an error; nothing happens.
    Fail,
    /// No answer ever comes.
    Hang,
    /// The operation takes effect, then its answer is lost.
    LoseAnswer,
    /// (create only) The engine takes [`SLOW`] to create the container and finishes it even
    /// if the caller stops waiting, as a real engine does with a request already sent.
    Slow,
    /// (remove only) Someone else (its own launcher, another gc) removed the container just
    /// before: the engine answers [`Removal::AlreadyGone`].
    Gone,
    /// (inspect only) The container's process is ending as the engine looks: it answers
    /// [`LaunchError::ProcessEnding`] (Podman's 500 `read /proc/N/cgroup: no such process`).
    Ending,
    /// (create only) The image's name was moved to another image between the engine's read
    /// of the image and the create: the container runs another image than the one its
    /// command line was built from ([`FAKE_IMAGE`]).
    ImageMoved,
}

/// The id of the image every command line of the fake is built from ([`Created::built_for`]).
pub const FAKE_IMAGE: &str = "sha256:fake-image";

/// How long a [`Fault::Slow`] create takes.
pub const SLOW: Duration = Duration::from_secs(1);

/// A container's state in the fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeState {
    /// Created, not started.
    Created,
    /// Running its command.
    Running,
    /// Exited with this code.
    Exited(i64),
}

/// A container held by the fake.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its state.
    pub state: FakeState,
    plan: MountPlan,
    cap_add: Vec<String>,
    gate: crate::gate::Gate,
    /// The image it runs.
    image_id: String,
    /// When it was created (seconds since the epoch), as engines list it.
    created_unix: i64,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    containers: BTreeMap<String, FakeContainer>,
    /// (operation, fault, how many more calls it hits).
    faults: Vec<(Op, Fault, u32)>,
    calls: Vec<Op>,
    /// How many starts took effect (a command ran).
    starts: u32,
    /// How many creates asked for the image to be read again ([`CreateRequest::reread_image`]).
    image_rereads: u32,
}

/// What a started container does.
#[derive(Debug, Clone)]
pub struct Script {
    /// Its output.
    pub output: Vec<LogChunk>,
    /// Its exit code.
    pub exit_code: i64,
    /// Run until stopped (a long job) instead of exiting at once.
    pub until_stopped: bool,
    /// The in-container gate refuses with this check and message (the mounts were not the
    /// verified ones): the container writes the gate's line and exits 125, the command never
    /// runs.
    pub gate_refuses: Option<(String, String)>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            output: vec![LogChunk {
                stream: OutputStream::Stdout,
                bytes: b"hello\n".to_vec(),
            }],
            exit_code: 0,
            until_stopped: false,
            gate_refuses: None,
        }
    }
}

/// The in-memory engine.
#[derive(Debug, Clone)]
pub struct FakeEngine {
    state: Arc<Mutex<State>>,
    changed: Arc<tokio::sync::Notify>,
    info: EngineInfo,
    script: Script,
    cancel_on: Option<(Op, CancelToken)>,
    /// Availability reported for every protection.
    pub availability: Availability,
}

impl Default for FakeEngine {
    fn default() -> Self {
        FakeEngine::new(Script::default())
    }
}

impl FakeEngine {
    /// An engine whose containers follow `script`, with no faults.
    pub fn new(script: Script) -> Self {
        FakeEngine {
            state: Arc::default(),
            changed: Arc::default(),
            info: EngineInfo {
                engine: "fake".into(),
                endpoint: "memory".into(),
                version: "0".into(),
                api_version: "0".into(),
                runtime: None,
                rootless: false,
                // Its jobs write nothing: whoever runs the tests (root or not), no launch is
                // refused for what it could leave (`outputs-unclearable`).
                user_namespace: true,
            },
            script,
            cancel_on: None,
            availability: Availability::Native,
        }
    }

    /// Make the next `times` calls of `op` misbehave as `fault` (`u32::MAX`: every call).
    pub fn fault(self, op: Op, fault: Fault, times: u32) -> Self {
        self.inject(op, fault, times);
        self
    }

    /// [`FakeEngine::fault`] on an engine in use, through a clone (which shares its state):
    /// from an observer, at a given event.
    pub fn inject(&self, op: Op, fault: Fault, times: u32) {
        self.state.lock().unwrap().faults.push((op, fault, times));
    }

    /// Cancel `token` when `op` is first called (before the call takes effect).
    pub fn cancel_on(mut self, op: Op, token: CancelToken) -> Self {
        self.cancel_on = Some((op, token));
        self
    }

    /// The containers it holds now.
    pub fn containers(&self) -> BTreeMap<String, FakeContainer> {
        self.state.lock().unwrap().containers.clone()
    }

    /// How many containers' commands were started (whatever the answers said).
    pub fn starts(&self) -> u32 {
        self.state.lock().unwrap().starts
    }

    /// How many creates asked for the image to be read again, not taken from what was kept.
    pub fn image_rereads(&self) -> u32 {
        self.state.lock().unwrap().image_rereads
    }

    /// Whether the next call of `op` will meet `fault` (without counting it).
    fn next_fault_is(&self, op: Op, fault: Fault) -> bool {
        let state = self.state.lock().unwrap();
        state
            .faults
            .iter()
            .find(|(o, _, n)| *o == op && *n > 0)
            .is_some_and(|(_, f, _)| *f == fault)
    }

    /// Every call made so far, in order.
    pub fn calls(&self) -> Vec<Op> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Record a call; its fault, if any.
    fn enter(&self, op: Op) -> Option<Fault> {
        if let Some((when, token)) = &self.cancel_on {
            if *when == op {
                token.cancel();
            }
        }
        let mut state = self.state.lock().unwrap();
        state.calls.push(op);
        let hit = state
            .faults
            .iter_mut()
            .find(|(o, _, n)| *o == op && *n > 0)?;
        hit.2 = hit.2.saturating_sub(u32::from(hit.2 != u32::MAX));
        Some(hit.1)
    }

    fn refused(op: &'static str, id: &str) -> LaunchError {
        LaunchError::Engine {
            op,
            container: id.to_owned(),
            source: "fake engine: injected failure".into(),
        }
    }

    fn lost(op: &'static str, id: &str) -> LaunchError {
        LaunchError::AnswerLost {
            op,
            container: id.to_owned(),
            source: "fake engine: injected lost answer".into(),
        }
    }

    /// Apply a fault before the call's effect: `Ok(lose)` to go on (losing the answer after
    /// the effect when `lose`), `Err` to answer at once.
    async fn before(&self, op: Op, name: &'static str, id: &str) -> Result<bool, LaunchError> {
        match self.enter(op) {
            None => Ok(false),
            Some(Fault::Fail) => Err(Self::refused(name, id)),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::LoseAnswer) => Ok(true),
            // Handled by the operations that model them (create).
            Some(Fault::Slow | Fault::ImageMoved) => Ok(false),
            Some(Fault::Gone) => {
                self.state.lock().unwrap().containers.remove(id);
                Ok(false)
            }
            Some(Fault::Ending) => Err(LaunchError::ProcessEnding {
                op: name,
                container: id.to_owned(),
                source: "fake engine: read /proc/1/cgroup: no such process".into(),
            }),
        }
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut FakeContainer) -> T) -> Result<T, LaunchError> {
        let mut state = self.state.lock().unwrap();
        let c = state
            .containers
            .get_mut(id)
            .ok_or_else(|| LaunchError::NotFound {
                container: id.to_owned(),
            })?;
        let out = f(c);
        self.changed.notify_waiters();
        Ok(out)
    }

    fn state_of(&self, id: &str) -> Result<FakeState, LaunchError> {
        let state = self.state.lock().unwrap();
        state
            .containers
            .get(id)
            .map(|c| c.state)
            .ok_or_else(|| LaunchError::NotFound {
                container: id.to_owned(),
            })
    }
}

/// What a faithful engine reports for a container of `plan`.
fn observed(id: &str, c: &FakeContainer) -> ObservedContainer {
    let root = c.plan.root_tmpfs();
    let (state, exit_code) = match c.state {
        FakeState::Created => ("created", None),
        FakeState::Running => ("running", None),
        FakeState::Exited(code) => ("exited", Some(code)),
    };
    ObservedContainer {
        id: id.to_owned(),
        image_id: Some(c.image_id.clone()),
        labels: c.labels.clone(),
        state: Some(state.into()),
        exit_code,
        first_pid: None,
        working_dir: Some(c.plan.workdir().as_str().to_owned()),
        tmpfs: Some(vec![ObservedTmpfs {
            target: root.target().as_str().to_owned(),
            read_only: Some(root.read_only()),
            mode: Some(root.mode()),
            size_bytes: Some(root.size_bytes()),
            flags: Some(root.flags()),
            copies_up: Some(false),
        }]),
        binds: c
            .plan
            .binds()
            .map(|b| ObservedBind {
                source: b.source().as_str().to_owned(),
                target: b.target().as_str().to_owned(),
                read_only: b.read_only(),
                propagation: Some("private".into()),
                non_recursive: Some(!b.recursive()),
                flags: Some(b.flags()),
            })
            .collect(),
        no_new_privileges: true,
        cap_drop: vec!["ALL".into()],
        cap_add: c.cap_add.clone(),
        ..ObservedContainer::default()
    }
}

#[async_trait::async_trait]
impl Engine for FakeEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn report(&self) -> EngineReport {
        EngineReport {
            engine: self.info.clone(),
            protections: Protection::ALL
                .into_iter()
                .map(|p| (p, self.availability.clone()))
                .collect(),
            warnings: Vec::new(),
        }
    }

    async fn create(&self, request: &CreateRequest<'_>) -> Result<Created, LaunchError> {
        let slow = self.next_fault_is(Op::Create, Fault::Slow);
        let moved = self.next_fault_is(Op::Create, Fault::ImageMoved);
        let lose = self.before(Op::Create, "create", "").await?;
        if request.reread_image {
            self.state.lock().unwrap().image_rereads += 1;
        }
        let container = FakeContainer {
            labels: request.labels.clone(),
            state: FakeState::Created,
            plan: request.plan.plan().clone(),
            cap_add: request.spec.cap_add.iter().map(|c| c.to_string()).collect(),
            gate: request.gate.clone(),
            image_id: if moved { "sha256:moved" } else { FAKE_IMAGE }.to_owned(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        };
        let insert = {
            let state = self.state.clone();
            let changed = self.changed.clone();
            move || {
                let mut state = state.lock().unwrap();
                state.next += 1;
                let id = format!("fake{}", state.next);
                state.containers.insert(id.clone(), container);
                changed.notify_waiters();
                id
            }
        };
        let id = if slow {
            // The engine goes on with it whether or not the caller still waits.
            tokio::spawn(async move {
                tokio::time::sleep(SLOW).await;
                insert()
            })
            .await
            .expect("the fake's create task")
        } else {
            insert()
        };
        if lose {
            return Err(Self::lost("create", ""));
        }
        Ok(Created {
            id,
            built_for: Some(FAKE_IMAGE.to_owned()),
        })
    }

    async fn start(&self, id: &str) -> Result<(), LaunchError> {
        let lose = self.before(Op::Start, "start", id).await?;
        let script = &self.script;
        let started = self.with(id, |c| {
            let created = c.state == FakeState::Created;
            if created {
                c.state = if script.gate_refuses.is_some() {
                    FakeState::Exited(crate::gate::GATE_REFUSED)
                } else if script.until_stopped {
                    FakeState::Running
                } else {
                    FakeState::Exited(script.exit_code)
                };
            }
            created
        })?;
        if started && script.gate_refuses.is_none() {
            self.state.lock().unwrap().starts += 1;
        }
        if lose {
            return Err(Self::lost("start", id));
        }
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<ObservedContainer, LaunchError> {
        let lose = self.before(Op::Inspect, "inspect", id).await?;
        let out = self.with(id, |c| observed(id, c))?;
        if lose {
            return Err(Self::lost("inspect", id));
        }
        Ok(out)
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, LaunchError> {
        let lose = self.before(Op::Wait, "wait", id).await?;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let FakeState::Exited(code) = self.state_of(id)? {
                if lose {
                    return Err(Self::lost("wait", id));
                }
                return Ok(ExitStatus { code });
            }
            changed.await;
        }
    }

    fn logs(&self, id: &str) -> LogStream {
        let this = self.clone();
        let id = id.to_owned();
        futures_util::stream::once(async move {
            let items: Vec<Result<LogChunk, LaunchError>> =
                match this.before(Op::Logs, "logs", &id).await {
                    Err(e) => vec![Err(e)],
                    Ok(lose) => {
                        let mut items: Vec<_> = match &this.script.gate_refuses {
                            Some((check, message)) => {
                                let line = this
                                    .with(&id, |c| c.gate.refusal_line(check, message))
                                    .unwrap_or_default();
                                vec![Ok(LogChunk {
                                    stream: OutputStream::Stderr,
                                    bytes: line.into_bytes(),
                                })]
                            }
                            None => this.script.output.iter().cloned().map(Ok).collect(),
                        };
                        if lose {
                            items.push(Err(Self::lost("logs", &id)));
                        }
                        items
                    }
                };
            // The stream ends once the container has stopped.
            let stopped = async move {
                loop {
                    let changed = this.changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    match this.state_of(&id) {
                        Ok(FakeState::Exited(_)) | Err(_) => return,
                        Ok(_) => changed.await,
                    }
                }
            };
            futures_util::stream::iter(items)
                .chain(futures_util::stream::once(stopped).filter_map(|()| async { None }))
        })
        .flatten()
        .boxed()
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), LaunchError> {
        let lose = self.before(Op::Stop, "stop", id).await?;
        self.with(id, |c| {
            if c.state == FakeState::Running {
                c.state = FakeState::Exited(143);
            }
        })?;
        if lose {
            return Err(Self::lost("stop", id));
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<Removal, LaunchError> {
        let lose = self.before(Op::Remove, "remove", id).await?;
        let removed = self.state.lock().unwrap().containers.remove(id);
        self.changed.notify_waiters();
        if lose {
            return Err(Self::lost("remove", id));
        }
        Ok(match removed {
            Some(_) => Removal::Removed,
            None => Removal::AlreadyGone,
        })
    }

    async fn list(&self, key: &str, value: &str) -> Result<Vec<Listed>, LaunchError> {
        let lose = self.before(Op::List, "list", "").await?;
        let found = self
            .state
            .lock()
            .unwrap()
            .containers
            .iter()
            .filter(|(_, c)| c.labels.get(key).map(String::as_str) == Some(value))
            .map(|(id, c)| Listed {
                id: id.clone(),
                labels: c.labels.clone(),
                state: None,
                created_unix: Some(c.created_unix),
            })
            .collect();
        if lose {
            return Err(Self::lost("list", ""));
        }
        Ok(found)
    }
}
