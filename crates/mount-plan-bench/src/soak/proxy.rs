//! A unix-socket proxy in front of an engine socket that counts the HTTP requests passing
//! through it and breaks exactly one of them: it closes the connection instead of forwarding
//! it (drop), holds it back (delay), or forwards it and then only part of its answer
//! (truncate). It can also narrow a container listing to one label, so that `mount-plan gc`
//! run through it only sees (and removes) this soak's containers, never another user's.

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
}

#[derive(Debug)]
struct State {
    upstream: PathBuf,
    /// The 1-based request to break, with what to do.
    fault: Option<(usize, Break)>,
    /// Add `label=KEY=VALUE` to every container listing's filters.
    narrow: Option<String>,
    seen: AtomicUsize,
    fired: AtomicBool,
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
        fault: Option<(usize, Break)>,
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
    loop {
        tokio::select! {
            n = cr.read(&mut cbuf), if client_open => {
                let n = match n {
                    Ok(0) | Err(_) => {
                        let _ = sw.shutdown().await;
                        client_open = false;
                        continue;
                    }
                    Ok(n) => n,
                };
                let mut chunk = cbuf[..n].to_vec();
                let requests = request_ends(&before, &chunk);
                before = chunk.clone();
                if requests > 0 {
                    if let Ok(mut log) = st.log.lock() {
                        let line = String::from_utf8_lossy(&chunk);
                        log.push(line.lines().next().unwrap_or_default().to_owned());
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
                    let Some((at, what)) = st.fault else { continue };
                    if k != at {
                        continue;
                    }
                    st.fired.store(true, Ordering::SeqCst);
                    match what {
                        Break::Drop => return,
                        Break::Delay(d) => tokio::time::sleep(d).await,
                        Break::Truncate => truncate_armed = true,
                    }
                }
                if sw.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            n = sr.read(&mut sbuf) => {
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
    }
}

enum Narrowed {
    Unchanged,
    Rewritten(Vec<u8>),
    Refused,
}

/// Add `label` to the `filters` of a container listing (`GET .../containers/json?...`).
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
    if method != "GET" || !path.ends_with("/containers/json") {
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
    }
}
