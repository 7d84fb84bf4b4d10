//! The JSON-lines modes (`check --json`, `plan --json-lines`) as a launcher drives them: a
//! co-process that gets each answer while its stdin stays open, and a stream that a bad line
//! does not stop.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use serde_json::Value;

/// How long to wait for one answer: the "within a second". A liveness bound, not a
/// performance figure (an answer takes microseconds): an answer held back until stdin closes
/// never arrives at all.
const ANSWER_BOUND: Duration = Duration::from_secs(1);

/// `mount-plan ARGS` with stdin and stdout piped.
fn start(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mount-plan"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run mount-plan")
}

/// `mount-plan` running beside the test, as a launcher keeps it.
struct CoProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: Receiver<String>,
}

impl CoProcess {
    fn spawn(args: &[&str]) -> Self {
        let mut child = start(args);
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line.expect("read an answer")).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        CoProcess {
            child,
            stdin,
            answers,
        }
    }

    /// Write one line and keep stdin open.
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next answer, which must come while stdin is still open.
    fn answer(&self, asked: &str) -> Value {
        let line = self
            .answers
            .recv_timeout(ANSWER_BOUND)
            .unwrap_or_else(|e| panic!("no answer to {asked:?} while stdin is open: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("answer {line:?}: {e}"))
    }

    fn ask(&mut self, line: &str) -> Value {
        self.send(line);
        self.answer(line)
    }

    /// Close stdin; the exit status, once no answer is left over.
    fn finish(mut self) -> ExitStatus {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        let rest: Vec<String> = self.answers.iter().collect();
        assert!(rest.is_empty(), "answers nobody asked for: {rest:?}");
        status
    }
}

impl Drop for CoProcess {
    fn drop(&mut self) {
        // A failed assertion must not leave the child waiting on its stdin.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// All of `input` at once, stdin closed: every answer and the exit status.
fn batch(args: &[&str], input: &str) -> (Vec<Value>, ExitStatus) {
    let mut child = start(args);
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let answers = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("answer {l:?}: {e}")))
        .collect();
    (answers, out.status)
}

#[test]
fn check_json_answers_each_name_while_stdin_stays_open() {
    let mut p = CoProcess::spawn(&["check", "--json"]);
    for name in ["job-1", "train-2026.11", "Startup", "a,b", "job-5"] {
        let a = p.ask(&serde_json::to_string(name).unwrap());
        assert_eq!(a["name"], name);
        let ok = !matches!(name, "Startup" | "a,b");
        assert_eq!(a["ok"], ok, "{a}");
    }
    assert_eq!(p.finish().code(), Some(1));

    let mut p = CoProcess::spawn(&["check", "--json"]);
    for name in ["a", "b", "c"] {
        assert_eq!(p.ask(&format!("{name:?}"))["ok"], true);
    }
    assert_eq!(p.finish().code(), Some(0));
}

#[test]
fn check_json_answers_a_bad_line_and_goes_on() {
    let input = "\"job-1\"\nnot json\n\n\"Local\"\n42\n\"job-2\" \"job-3\"\n\"job-4\"\n";
    let (answers, status) = batch(&["check", "--json"], input);
    assert_eq!(status.code(), Some(1));
    // One answer per non-blank line, in order.
    assert_eq!(answers.len(), 6, "{answers:?}");
    assert_eq!(answers[0]["ok"], true);
    assert_eq!(answers[0]["name"], "job-1");
    assert_eq!(answers[2]["rule"], "reserved");
    assert_eq!(answers[5]["ok"], true);
    assert_eq!(answers[5]["name"], "job-4");
    for (i, line) in [(1, 2), (3, 5), (4, 6)] {
        let a = &answers[i];
        assert_eq!(a["ok"], false, "{a}");
        assert_eq!(a["rule"], "bad-json", "{a}");
        assert_eq!(a["line"], line, "{a}");
        assert!(a["name"].is_null(), "{a}");
        assert!(a["error"].as_str().unwrap().contains("`bad-json`"), "{a}");
    }
    // Good answers keep their shape: no line number, null rule and error.
    assert!(answers[0].get("line").is_none());
    assert!(answers[0]["rule"].is_null() && answers[0]["error"].is_null());

    // A bad line alone still leaves the exit status saying not every line was ok.
    let (answers, status) = batch(&["check", "--json"], "\"job-1\"\n[\n");
    assert_eq!(status.code(), Some(1));
    assert_eq!(answers[1]["rule"], "bad-json");
}

fn request(workspace: &str, job: &str) -> String {
    serde_json::json!({ "workspace": workspace, "job": job }).to_string()
}

#[test]
fn plan_json_lines_answers_each_request_while_stdin_stays_open() {
    let mut p = CoProcess::spawn(&["plan", "--json-lines", "--shared", "certs"]);
    for (i, job) in ["job-1", "job-2", "job-3"].into_iter().enumerate() {
        let a = p.ask(&request(&format!("/srv/site{i}"), job));
        assert_eq!(a["job"], job, "{a}");
        assert_eq!(a["workdir"], format!("/workspace/{job}"));
        assert_eq!(a["mounts"][1]["source"], format!("/srv/site{i}/certs"));
    }
    assert_eq!(p.finish().code(), Some(0));

    // Each plan is the one `plan --format json` prints.
    let mut p = CoProcess::spawn(&["plan", "--json-lines"]);
    let streamed = p.ask(&request("/srv/site", "job-1"));
    assert_eq!(p.finish().code(), Some(0));
    let single = Command::new(env!("CARGO_BIN_EXE_mount-plan"))
        .args(["plan", "--workspace", "/srv/site", "--job", "job-1"])
        .output()
        .unwrap();
    let single: Value = serde_json::from_slice(&single.stdout).unwrap();
    assert_eq!(streamed, single);
}

#[test]
fn plan_json_lines_answers_a_bad_line_and_goes_on() {
    let input = [
        request("/srv/w", "job-1"),
        "{\"workspace\":\"/srv/w\"}".to_owned(),
        request("/srv/w", "Startup"),
        String::new(),
        "{\"workspace\":\"/srv/w\",\"job\":\"j\",\"verify\":true}".to_owned(),
        request("srv", "job-2"),
        "\"job-3\"".to_owned(),
        request("/srv/w", "job-4"),
    ]
    .join("\n");
    let (answers, status) = batch(&["plan", "--json-lines"], &input);
    assert_eq!(status.code(), Some(1));
    assert_eq!(answers.len(), 7, "{answers:?}");
    assert_eq!(answers[0]["job"], "job-1");
    assert_eq!(answers[6]["job"], "job-4");
    assert_eq!(answers[6]["workdir"], "/workspace/job-4");
    for (i, line, rule) in [
        (1, 2, "bad-json"),
        (2, 3, "reserved"),
        (3, 5, "bad-json"),
        (4, 6, "not-absolute"),
        (5, 7, "bad-json"),
    ] {
        let a = &answers[i];
        assert_eq!(a["ok"], false, "{a}");
        assert_eq!(a["line"], line, "{a}");
        assert_eq!(a["rule"], rule, "{a}");
        let error = a["error"].as_str().unwrap();
        assert!(error.contains(&format!("`{rule}`")), "{a}");
    }
    // An unknown key is refused, not ignored.
    assert!(answers[3]["error"].as_str().unwrap().contains("verify"));
}

#[test]
fn plan_json_lines_checks_each_request_on_the_host_with_verify() {
    use std::os::unix::fs::MetadataExt;
    let ws = std::env::temp_dir().join(format!("mp-stream-verify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ws);
    for d in ["startup", "local", "job1"] {
        std::fs::create_dir_all(ws.join(d)).unwrap();
    }
    let w = ws.to_str().unwrap();
    let input = [request(w, "job1"), request(w, "job2"), request(w, "job1")].join("\n");
    let (answers, status) = batch(&["plan", "--json-lines", "--verify"], &input);
    assert_eq!(status.code(), Some(1));
    assert_eq!(answers.len(), 3, "{answers:?}");
    let job1 = std::fs::metadata(ws.join("job1")).unwrap();
    assert_eq!(answers[0]["pins"]["binds"][2]["ino"], job1.ino());
    assert_eq!(answers[1]["rule"], "missing", "{}", answers[1]);
    assert_eq!(answers[2]["pins"]["binds"][2]["ino"], job1.ino());

    // --create-job-dir applies per request too.
    let (answers, status) = batch(&["plan", "--json-lines", "--create-job-dir"], &input);
    assert_eq!(status.code(), Some(0), "{answers:?}");
    assert_eq!(answers[1]["job_dir_created"], true);
    assert!(ws.join("job2").is_dir());
    std::fs::remove_dir_all(&ws).unwrap();
}

#[test]
fn json_lines_refuses_per_job_flags_and_help_describes_the_streams() {
    for extra in [
        &["--workspace", "/w"][..],
        &["--job", "j"],
        &["--format", "table"],
    ] {
        let mut args = vec!["plan", "--json-lines"];
        args.extend_from_slice(extra);
        let o = Command::new(env!("CARGO_BIN_EXE_mount-plan"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    let help = |cmd: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_mount-plan"))
            .args([cmd, "--help"])
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    let plan = help("plan");
    for text in ["--json-lines", "\"line\":N", "bad-json", "at once"] {
        assert!(plan.contains(text), "plan --help lacks {text:?}");
    }
    let check = help("check");
    for text in ["co-process", "bad-json", "at once"] {
        assert!(check.contains(text), "check --help lacks {text:?}");
    }
}
