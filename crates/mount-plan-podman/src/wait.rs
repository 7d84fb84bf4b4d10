//! libpod's wait, asked directly over the service's socket: podman-api 0.11's `wait` drops the
//! answer's body, which is the exit code, so reading the code would cost every launch one
//! inspect more. One request, `Connection: close`, the answer read whole (bounded) and parsed
//! here; anything unexpected is an error the caller answers with an inspect, as before.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most of an answer read: a wait's answer is a status line, a few headers and a number.
const MAX_ANSWER: u64 = 64 * 1024;

/// Why a direct wait gave no exit code.
#[derive(Debug)]
pub(crate) enum WaitFailed {
    /// The service answered with this HTTP status (404: no such container).
    Status(u16, String),
    /// No usable answer: the socket, or an answer that is not HTTP with a number.
    Other(String),
}

impl std::fmt::Display for WaitFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitFailed::Status(status, body) => write!(f, "the service answered {status}: {body}"),
            WaitFailed::Other(why) => f.write_str(why),
        }
    }
}

/// Whether `id` can go into the request's path as it is (a container id or name).
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The request: libpod's wait for the stopped state, polled by the service every `interval`.
fn request(id: &str, interval: Duration) -> String {
    format!(
        "POST /v4.3.1/libpod/containers/{id}/wait?condition=stopped&interval={}us HTTP/1.1\r\n\
         Host: d\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        interval.as_micros().max(1)
    )
}

/// Wait on the service at `socket` until container `id` stops, and return its exit code.
pub(crate) async fn wait_code(
    socket: &str,
    id: &str,
    interval: Duration,
) -> Result<i64, WaitFailed> {
    if !plain_id(id) {
        return Err(WaitFailed::Other(format!(
            "container {id:?} is not a plain id"
        )));
    }
    let other = |e: std::io::Error| WaitFailed::Other(e.to_string());
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(other)?;
    stream
        .write_all(request(id, interval).as_bytes())
        .await
        .map_err(other)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .map_err(other)?;
    exit_code(&answer)
}

/// The exit code in a whole wait answer: `200` and a body that is a number.
fn exit_code(answer: &[u8]) -> Result<i64, WaitFailed> {
    let (status, body) = parse(answer).map_err(WaitFailed::Other)?;
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    if status != 200 {
        return Err(WaitFailed::Status(status, text));
    }
    text.parse::<i64>()
        .map_err(|_| WaitFailed::Other(format!("the wait answered {text:?}, not an exit code")))
}

/// An HTTP/1.1 answer's status and body (by `Content-Length`, chunked, or to the end).
fn parse(answer: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("an answer without the end of its headers")?;
    let head = std::str::from_utf8(&answer[..end]).map_err(|_| "headers that are not text")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .filter(|l| l.starts_with("HTTP/1."))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let (mut chunked, mut length) = (false, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "a bad Content-Length")?);
        }
    }
    let rest = &answer[end + 4..];
    let body = if chunked {
        unchunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or("a body shorter than its Content-Length")?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

/// A chunked body's bytes.
fn unchunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without its size line")?;
        let size =
            std::str::from_utf8(&rest[..eol]).map_err(|_| "a chunk size that is not text")?;
        let size = size.split(';').next().unwrap_or(size).trim();
        let n =
            usize::from_str_radix(size, 16).map_err(|_| format!("a bad chunk size {size:?}"))?;
        rest = &rest[eol + 2..];
        if n == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..n).ok_or("a chunk shorter than its size")?);
        rest = rest.get(n + 2..).ok_or("a chunk without its end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(answer: &str) -> Result<i64, String> {
        exit_code(answer.as_bytes()).map_err(|e| match e {
            WaitFailed::Status(s, body) => format!("status {s}: {body}"),
            WaitFailed::Other(why) => why,
        })
    }

    #[test]
    fn an_answer_with_a_length_or_in_chunks_gives_the_exit_code() {
        assert_eq!(
            code("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\n42\n"),
            Ok(42)
        );
        assert_eq!(
            code("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\n1\r\n2;x=y\r\n37\r\n0\r\n\r\n"),
            Ok(137)
        );
        assert_eq!(
            code("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n137\r\n0\r\n\r\n"),
            Ok(137),
            "a chunk of three"
        );
        assert_eq!(code("HTTP/1.1 200 OK\r\n\r\n-1"), Ok(-1), "to the end");
        assert_eq!(
            code("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n0trailing"),
            Ok(0),
            "only Content-Length bytes"
        );
    }

    #[test]
    fn a_refusal_or_a_broken_answer_is_no_exit_code() {
        assert_eq!(
            code("HTTP/1.1 404 Not Found\r\nContent-Length: 22\r\n\r\n{\"cause\":\"no such ct\"}"),
            Err("status 404: {\"cause\":\"no such ct\"}".into())
        );
        for broken in [
            "",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
            "SSH-2.0\r\n\r\n0",
            "HTTP/1.1 abc OK\r\n\r\n0",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n0",
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n0",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n0\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n0\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n0",
            "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nno such exit",
            "HTTP/1.1 200 OK\r\n\r\n",
        ] {
            assert!(code(broken).is_err(), "{broken:?}: {:?}", code(broken));
        }
    }

    #[test]
    fn only_a_plain_id_goes_into_the_path() {
        assert!(plain_id("4f3c0a_b.c-d"));
        for bad in ["", "a/b", "a?b", "a b", "a%2f", "..\u{0}"] {
            assert!(!plain_id(bad), "{bad:?}");
        }
        let line = request("c1", Duration::from_millis(5));
        assert!(
            line.starts_with(
                "POST /v4.3.1/libpod/containers/c1/wait?condition=stopped&interval=5000us HTTP/1.1\r\n"
            ) && line.contains("Connection: close\r\n")
                && line.ends_with("\r\n\r\n"),
            "{line}"
        );
        assert!(request("c1", Duration::ZERO).contains("interval=1us"));
    }

    #[test]
    fn a_failure_says_what_the_service_answered() {
        assert_eq!(
            WaitFailed::Status(500, "no such exit code".into()).to_string(),
            "the service answered 500: no such exit code"
        );
        assert_eq!(WaitFailed::Other("reset".into()).to_string(), "reset");
    }

    /// A socket file, removed when dropped.
    struct Socket(std::path::PathBuf);
    impl Drop for Socket {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A service on a socket in the temporary directory that reads the request and answers
    /// `answer`; returns the socket's path and what it was asked.
    async fn service(answer: Vec<u8>) -> (Socket, String, tokio::task::JoinHandle<String>) {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("mp-wait-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let dir = Socket(path.clone());
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let asked = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ends with an empty line");
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(&answer).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (dir, path.to_str().unwrap().to_owned(), asked)
    }

    #[tokio::test]
    async fn the_exit_code_comes_from_the_services_answer_read_whole() {
        // Headers longer than a small buffer (a service may send many): read up to the bound.
        let padding = "X-Padding: ".to_owned() + &"p".repeat(8 * 1024) + "\r\n";
        let answer = format!("HTTP/1.1 200 OK\r\n{padding}Content-Length: 2\r\n\r\n3\n");
        let (_dir, socket, asked) = service(answer.into_bytes()).await;
        let got = wait_code(&socket, "c1", Duration::from_millis(5)).await;
        assert!(matches!(got, Ok(3)), "{got:?}");
        assert_eq!(
            asked.await.unwrap(),
            request("c1", Duration::from_millis(5))
        );

        let (_dir, socket, _) =
            service(b"HTTP/1.1 404 Not Found\r\n\r\nno such container".to_vec()).await;
        let got = wait_code(&socket, "c1", Duration::from_millis(5)).await;
        assert!(
            matches!(&got, Err(WaitFailed::Status(404, body)) if body == "no such container"),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn an_answer_beyond_the_bound_is_not_read_whole() {
        let huge = format!(
            "HTTP/1.1 200 OK\r\nX-Padding: {}\r\nContent-Length: 1\r\n\r\n0",
            "p".repeat(MAX_ANSWER as usize)
        );
        let (_dir, socket, _) = service(huge.into_bytes()).await;
        let got = wait_code(&socket, "c1", Duration::from_millis(5)).await;
        assert!(matches!(got, Err(WaitFailed::Other(_))), "{got:?}");
    }

    #[tokio::test]
    async fn a_socket_that_is_not_there_is_no_exit_code() {
        let failed = wait_code("/nonexistent/podman.sock", "c1", Duration::from_millis(5)).await;
        assert!(matches!(failed, Err(WaitFailed::Other(_))), "{failed:?}");
        let failed = wait_code("/nonexistent/podman.sock", "a/b", Duration::from_millis(5)).await;
        assert!(
            matches!(&failed, Err(WaitFailed::Other(why)) if why.contains("plain id")),
            "{failed:?}"
        );
    }
}
