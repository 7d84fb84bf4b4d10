//! A unix-socket proxy in front of an engine socket that counts the HTTP requests passing
//! through it and breaks exactly one of them: it closes the connection instead of forwarding
//! it (drop), holds it back (delay), or forwards it and then only part of its answer
//! (truncate). It can also narrow a container listing (a service listing on a Swarm manager)
//! to one label, so that `mount-plan gc` run through it only sees (and removes) this soak's
//! containers, never another user's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// What happens to the chosen request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// Close the connection instead of forwarding it.
    Drop,
    /// Forward it after this pause.
    Delay(Duration),
    /// Forward it, then half of the first piece of its answer, then close.
    Truncate,
    /// Close the client's connection at once, and hand the request to the engine only after
    /// this pause (its answer is read and thrown away): the launcher sees a lost answer while
    /// the engine is still working on the request.
    Cut(Duration),
}

/// Which request is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The k-th request (1-based) on any connection.
    Nth(usize),
    /// The first request whose request line contains this text.
    First(&'static str),
}

#[derive(Debug)]
struct State {
    upstream: PathBuf,
    /// The request to break, with what to do.
    fault: Option<(Trigger, Break)>,
    /// Add `label=KEY=VALUE` to every container (and service) listing's filters.
    narrow: Option<String>,
    seen: AtomicUsize,
    fired: AtomicBool,
    /// Requests held back (delay, cut) whose answer has not come back from the engine yet.
    held: AtomicUsize,
    /// Request lines seen, for `--verbose`.
    log: std::sync::Mutex<Vec<String>>,
}

/// A running proxy; stops (and removes its socket) when dropped.
#[derive(Debug)]
pub struct Proxy {
    path: PathBuf,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listen on `path`, forwarding to `upstream`.
    pub fn start(
        path: &Path,
        upstream: &Path,
        fault: Option<(Trigger, Break)>,
        narrow: Option<String>,
    ) -> Result<Proxy> {
        let _ = std::fs::remove_file(path);
        let listener =
            UnixListener::bind(path).with_context(|| format!("proxy bind {}", path.display()))?;
        let state = Arc::new(State {
            upstream: upstream.to_owned(),
            fault,
            narrow,
            seen: AtomicUsize::new(0),
            fired: AtomicBool::new(false),
            held: AtomicUsize::new(0),
            log: Default::default(),
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, s.clone()));
            }
        });
        Ok(Proxy {
            path: path.to_owned(),
            state,
            task,
        })
    }

    /// The socket as an engine URL.
    pub fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Whether the fault was injected (the launch made enough requests to reach it).
    pub fn fired(&self) -> bool {
        self.state.fired.load(Ordering::SeqCst)
    }

    /// Wait (at most `within`) until every request held back has reached the engine and been
    /// answered: what the engine made of it is there to be seen. True if it was.
    pub async fn settled(&self, within: Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        while self.state.held.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// The request line the fault was applied to.
    pub fn broken_line(&self) -> Option<String> {
        if !self.fired() {
            return None;
        }
        let lines = self.request_lines();
        match self.state.fault {
            Some((Trigger::Nth(k), _)) => lines.get(k - 1).cloned(),
            Some((Trigger::First(text), _)) => lines.into_iter().find(|l| l.contains(text)),
            None => None,
        }
    }

    /// The request lines seen, in order.
    pub fn request_lines(&self) -> Vec<String> {
        self.state.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

const REQUEST_LINE_END: &[u8] = b" HTTP/1.1\r\n";

/// Where request lines end in `chunk`, given the bytes seen before it on this connection
/// (HTTP/1.1 clients do not pipeline: each request starts after the previous answer, and the
/// JSON bodies sent to an engine hold no CRLF).
fn request_ends(before: &[u8], chunk: &[u8]) -> usize {
    let keep = before.len().min(REQUEST_LINE_END.len() - 1);
    let mut joined = before[before.len() - keep..].to_vec();
    joined.extend_from_slice(chunk);
    joined
        .windows(REQUEST_LINE_END.len())
        .filter(|w| *w == REQUEST_LINE_END)
        .count()
}

/// One held request: counted in `State::held` until dropped.
struct Held(Arc<State>);

impl Held {
    fn new(st: &Arc<State>) -> Held {
        st.held.fetch_add(1, Ordering::SeqCst);
        Held(st.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(client: UnixStream, st: Arc<State>) {
    let Ok(server) = UnixStream::connect(&st.upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut cbuf = vec![0u8; 64 * 1024];
    let mut sbuf = vec![0u8; 64 * 1024];
    let mut before: Vec<u8> = Vec::new();
    let mut truncate_armed = false;
    let mut client_open = true;
    // A delayed request, until the engine's answer to it starts coming back.
    let mut held: Option<Held> = None;
    let (cut, pause, cut_held) = 'conn: loop {
        tokio::select! {
            n = cr.read(&mut cbuf), if client_open => {
                let n = match n {
                    Ok(0) | Err(_) => {
                        // The engine still gets a held request, as from a client that waits.
                        if held.is_none() {
                            let _ = sw.shutdown().await;
                        }
                        client_open = false;
                        continue;
                    }
                    Ok(n) => n,
                };
                let mut chunk = cbuf[..n].to_vec();
                let requests = request_ends(&before, &chunk);
                before = chunk.clone();
                let line = String::from_utf8_lossy(&chunk)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                if requests > 0 {
                    if let Ok(mut log) = st.log.lock() {
                        log.push(line.clone());
                    }
                }
                if let Some(label) = &st.narrow {
                    match narrow(&chunk, label) {
                        Narrowed::Unchanged => {}
                        Narrowed::Rewritten(c) => chunk = c,
                        // A listing it cannot narrow is never forwarded: gc then fails
                        // instead of judging containers that are not this soak's.
                        Narrowed::Refused => return,
                    }
                }
                for _ in 0..requests {
                    let k = st.seen.fetch_add(1, Ordering::SeqCst) + 1;
                    let Some((trigger, what)) = st.fault else { continue };
                    let hit = match trigger {
                        Trigger::Nth(at) => k == at,
                        Trigger::First(text) => {
                            line.contains(text) && !st.fired.load(Ordering::SeqCst)
                        }
                    };
                    if !hit {
                        continue;
                    }
                    st.fired.store(true, Ordering::SeqCst);
                    match what {
                        Break::Drop => return,
                        Break::Delay(d) => {
                            held = Some(Held::new(&st));
                            tokio::time::sleep(d).await;
                        }
                        Break::Truncate => truncate_armed = true,
                        Break::Cut(d) => break 'conn (chunk, d, Some(Held::new(&st))),
                    }
                }
                if sw.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            n = sr.read(&mut sbuf) => {
                // The answer to a held request is coming back.
                held = None;
                let n = match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if truncate_armed {
                    let _ = cw.write_all(&sbuf[..n / 2]).await;
                    return;
                }
                if cw.write_all(&sbuf[..n]).await.is_err() {
                    return;
                }
            }
        }
    };
    // The rest of the request (a body sent after its head), then the launcher's connection
    // ends; the engine gets the request later, as from a client that is still there.
    let mut cut = cut;
    let mut cut_held = cut_held;
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), cr.read(&mut cbuf)).await
    {
        if n == 0 {
            break;
        }
        cut.extend_from_slice(&cbuf[..n]);
    }
    drop((cr, cw));
    tokio::time::sleep(pause).await;
    if sw.write_all(&cut).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(n) = sr.read(&mut sbuf).await {
            cut_held = None;
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

enum Narrowed {
    Unchanged,
    Rewritten(Vec<u8>),
    Refused,
}

/// Add `label` to the `filters` of a container listing (`GET .../containers/json?...`) or a
/// service listing (`GET .../services?...`).
fn narrow(chunk: &[u8], label: &str) -> Narrowed {
    let Some(end) = chunk.windows(2).position(|w| w == b"\r\n") else {
        return Narrowed::Unchanged;
    };
    let Ok(line) = std::str::from_utf8(&chunk[..end]) else {
        return Narrowed::Unchanged;
    };
    let mut parts = line.splitn(3, ' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Narrowed::Unchanged;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" || !(path.ends_with("/containers/json") || path.ends_with("/services")) {
        return Narrowed::Unchanged;
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let Some(filters) = pairs.iter_mut().find(|(k, _)| k == "filters") else {
        return Narrowed::Refused;
    };
    let Some(decoded) = percent_decode(&filters.1) else {
        return Narrowed::Refused;
    };
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&decoded) else {
        return Narrowed::Refused;
    };
    match value.get_mut("label") {
        Some(serde_json::Value::Array(a)) => a.push(label.into()),
        Some(serde_json::Value::Object(o)) => {
            o.insert(label.to_owned(), true.into());
        }
        _ => return Narrowed::Refused,
    }
    filters.1 = percent_encode(&value.to_string());
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut out = format!("{method} {path}?{} {version}", query.join("&")).into_bytes();
    out.extend_from_slice(&chunk[end..]);
    Narrowed::Rewritten(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (c as char).to_string()
            }
            c => format!("%{c:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_request_line_split_across_reads_counts_once() {
        let a = b"GET /_ping HTTP/1.";
        let b = b"1\r\nHost: d\r\n\r\n";
        assert_eq!(request_ends(b"", a), 0);
        assert_eq!(request_ends(a, b), 1);
        assert_eq!(
            request_ends(b"", b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n"),
            2
        );
    }

    /// An engine stand-in: answers each request (head and a 4-byte body) with an empty 200,
    /// and reports each request it got with the time it got it.
    async fn upstream(path: PathBuf) -> tokio::sync::mpsc::UnboundedReceiver<(String, Instant)> {
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        if got.ends_with(b"\r\n\r\nbody") {
                            let _ = tx.send((String::from_utf8_lossy(&got).into(), Instant::now()));
                            got.clear();
                            let _ = conn
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                                .await;
                        }
                    }
                });
            }
        });
        rx
    }

    /// One request, its head and body written apart; what the client read back.
    async fn request(proxy: &Proxy, line: &str) -> Vec<u8> {
        let path = proxy.url().trim_start_matches("unix://").to_owned();
        let mut c = UnixStream::connect(path).await.unwrap();
        c.write_all(format!("{line} HTTP/1.1\r\nContent-Length: 4\r\n\r\n").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        // A dropped request's connection may be closed already.
        let _ = c.write_all(b"body").await;
        let mut answer = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await {
            if n == 0 || answer.ends_with(b"\r\n\r\n") {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.ends_with(b"\r\n\r\n") {
                break;
            }
        }
        answer
    }

    #[tokio::test]
    async fn cut_ends_the_launchers_connection_then_hands_the_whole_request_on_later() {
        let dir = tempfile::tempdir().unwrap();
        let mut got = upstream(dir.path().join("engine.sock")).await;
        let pause = Duration::from_millis(400);
        let proxy = Proxy::start(
            &dir.path().join("proxy.sock"),
            &dir.path().join("engine.sock"),
            Some((Trigger::First("/containers/create"), Break::Cut(pause))),
            None,
        )
        .unwrap();
        let sent = Instant::now();
        let answer = request(&proxy, "POST /v1.41/containers/create?name=x").await;
        assert!(answer.is_empty(), "the launcher got an answer: {answer:?}");
        // Settled: the engine got the whole request and answered it.
        assert!(proxy.settled(Duration::from_secs(5)).await, "never settled");
        let (text, at) = got
            .try_recv()
            .expect("settled before the engine got the request");
        assert!(
            text.starts_with("POST /v1.41/containers/create?name=x HTTP/1.1"),
            "{text}"
        );
        assert!(
            text.ends_with("\r\n\r\nbody"),
            "the body was not handed on: {text:?}"
        );
        assert!(at - sent >= pause, "handed on after {:?}", at - sent);
        assert!(proxy.fired());
        assert_eq!(
            proxy.broken_line().as_deref(),
            Some("POST /v1.41/containers/create?name=x HTTP/1.1")
        );
        // Only the first match is broken: the next create passes through.
        let answer = request(&proxy, "POST /v1.41/containers/create?name=y").await;
        assert!(answer.starts_with(b"HTTP/1.1 200 OK"), "{answer:?}");
    }

    #[tokio::test]
    async fn first_skips_requests_that_do_not_match_and_drops_the_one_that_does() {
        let dir = tempfile::tempdir().unwrap();
        let mut got = upstream(dir.path().join("engine.sock")).await;
        let proxy = Proxy::start(
            &dir.path().join("proxy.sock"),
            &dir.path().join("engine.sock"),
            Some((Trigger::First("DELETE /"), Break::Drop)),
            None,
        )
        .unwrap();
        let answer = request(&proxy, "GET /v1.41/containers/abc/json").await;
        assert!(answer.starts_with(b"HTTP/1.1 200 OK"), "{answer:?}");
        assert!(!proxy.fired());
        got.recv().await.unwrap();
        let answer = request(&proxy, "DELETE /v1.41/containers/abc?force=true").await;
        assert!(answer.is_empty(), "{answer:?}");
        assert!(proxy.fired());
        let answer = request(&proxy, "DELETE /v1.41/containers/abc?force=true").await;
        assert!(answer.starts_with(b"HTTP/1.1 200 OK"), "{answer:?}");
        let (text, _) = got.recv().await.unwrap();
        assert!(text.starts_with("DELETE /"), "{text}");
        assert!(
            got.try_recv().is_err(),
            "the dropped request reached the engine"
        );
    }

    #[test]
    fn a_listing_is_narrowed_to_the_label_and_others_pass() {
        let filters = percent_encode(r#"{"label":["io.mount-plan.managed=1"]}"#);
        let req = format!(
            "GET /v1.41/containers/json?all=true&filters={filters} HTTP/1.1\r\nHost: d\r\n\r\n"
        );
        let Narrowed::Rewritten(out) = narrow(req.as_bytes(), "soak.run=7") else {
            panic!("not narrowed");
        };
        let out = String::from_utf8(out).unwrap();
        let want = percent_encode(r#"{"label":["io.mount-plan.managed=1","soak.run=7"]}"#);
        assert!(out.contains(&want), "{out}");
        assert!(out.ends_with(" HTTP/1.1\r\nHost: d\r\n\r\n"), "{out}");
        let other = b"GET /v1.41/containers/abc/json HTTP/1.1\r\n\r\n";
        assert!(matches!(narrow(other, "x=y"), Narrowed::Unchanged));
        let unfiltered = b"GET /v1.41/containers/json?all=true HTTP/1.1\r\n\r\n";
        assert!(matches!(narrow(unfiltered, "x=y"), Narrowed::Refused));
        // A Swarm manager's service listing, as gc --runtime swarm asks for it.
        let req = format!("GET /v1.41/services?filters={filters} HTTP/1.1\r\nHost: d\r\n\r\n");
        let Narrowed::Rewritten(out) = narrow(req.as_bytes(), "soak.run=7") else {
            panic!("service listing not narrowed");
        };
        assert!(String::from_utf8(out).unwrap().contains(&want));
        let unfiltered = b"GET /v1.41/services HTTP/1.1\r\n\r\n";
        assert!(matches!(narrow(unfiltered, "x=y"), Narrowed::Refused));
        let one = b"GET /v1.41/services/abc HTTP/1.1\r\n\r\n";
        assert!(matches!(narrow(one, "x=y"), Narrowed::Unchanged));
    }
}
