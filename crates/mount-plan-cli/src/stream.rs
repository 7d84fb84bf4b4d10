//! The JSON-lines modes, `check --json` and `plan --json-lines`: one answer per input line,
//! written as soon as the line is read.
//!
//! A co-process (a launcher that keeps `mount-plan` running beside it) writes one line and
//! waits for its answer, so the output is flushed whenever no further complete line is already
//! buffered; a batch on a pipe or a file still gets large writes. A line that cannot be read as
//! a request gets its own answer (rule `bad-json`) and the stream goes on.

use std::borrow::Cow;
use std::fmt;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};

use anyhow::{Context, Result};
use mount_plan::{HostPath, JobName, Layout, MountPlan, NameError, PathError, PlanError};
use mount_plan_host::{HostError, VerifyOptions};
use serde::{Deserialize, Serialize};

/// Input and output buffer size: a batch is read and written in blocks of this size.
const BUFFER: usize = 64 * 1024;

/// Why one input line got an error answer. Each variant names a rule id ([`LineError::rule`]),
/// unique across the project.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The line is not the JSON value this mode reads.
    BadJson {
        /// What the mode reads ("a JSON string", ...).
        expected: &'static str,
        /// serde_json's reason, without its position.
        reason: String,
        /// 1-based column in the line where reading stopped.
        column: usize,
    },
}

mount_plan::rules!(LineError, "input", {
    BadJson => "bad-json",
});

impl LineError {
    fn bad_json(expected: &'static str, e: &serde_json::Error) -> Self {
        let text = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        LineError::BadJson {
            expected,
            reason: text.strip_suffix(&position).unwrap_or(&text).to_owned(),
            column: e.column(),
        }
    }
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.prefix())?;
        match self {
            LineError::BadJson {
                expected,
                reason,
                column,
            } => write!(f, "expected {expected}; at column {column}: {reason}"),
        }
    }
}

/// Read `input` line by line and write one answer line per non-blank line to `output`.
///
/// `answer(line_number, line, output)` writes one line (ending with `\n`) and says whether
/// the line was ok. Returns whether every line was ok. Only reading and writing fail.
pub fn serve<R: Read, W: Write>(
    input: R,
    output: W,
    mut answer: impl FnMut(u64, &[u8], &mut BufWriter<W>) -> Result<bool>,
) -> Result<bool> {
    let mut input = BufReader::with_capacity(BUFFER, input);
    let mut output = BufWriter::with_capacity(BUFFER, output);
    let mut line = Vec::new();
    let mut number = 0;
    let mut all_ok = true;
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .context("cannot read stdin")?
            == 0
        {
            break;
        }
        number += 1;
        if !line.trim_ascii().is_empty() {
            all_ok &= answer(number, &line, &mut output)?;
        }
        // The next read would wait for the writer: give it every answer it asked for first.
        if !input.buffer().contains(&b'\n') {
            output.flush().context("cannot write to stdout")?;
        }
    }
    output.flush().context("cannot write to stdout")?;
    Ok(all_ok)
}

/// Parse one line as exactly one JSON string, borrowing it when it has no escapes.
fn json_string(line: &[u8]) -> Result<Cow<'_, str>, serde_json::Error> {
    struct Str;
    impl<'de> serde::de::Visitor<'de> for Str {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON string")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(line);
    let value = serde::Deserializer::deserialize_str(&mut de, Str)?;
    de.end()?;
    Ok(value)
}

/// An error's message followed by its causes, `: `-separated, each once: a cause whose text
/// the message already holds (a wrapper that shows the refusal it wraps) is not repeated.
pub fn chain_text<'a>(
    errors: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut text = String::new();
    for e in errors {
        let part = e.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

/// An error and its causes, as [`chain_text`] writes them.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    chain_text(std::iter::successors(Some(e), |e| e.source()))
}

/// Serialize a message through `Display`, without an intermediate `String`.
struct Shown<'a>(&'a dyn fmt::Display);

impl Serialize for Shown<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// One answer of `check --json`. The fields are in sorted order, as the answers built through
/// `serde_json::Value` had them, so the bytes of a good line's answer are unchanged; `line` is
/// only present on a `bad-json` answer (whose `name` is null).
#[derive(Serialize)]
struct CheckAnswer<'a> {
    error: Option<Shown<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    name: Option<&'a str>,
    ok: bool,
    rule: Option<&'static str>,
}

/// The answer to a valid name, around the name. A valid name is made of `[A-Za-z0-9._-]`, which
/// JSON never escapes, so it is written as it is: this is the [`CheckAnswer`] of a valid name
/// (a unit test holds the two together) without serializing the fixed fields per line.
const CHECK_OK: [&str; 2] = [r#"{"error":null,"name":""#, r#"","ok":true,"rule":null}"#];

/// `check --json`: one JSON string per line in, one [`CheckAnswer`] per line out.
pub fn check(layout: &Layout, input: impl Read, output: impl Write) -> Result<bool> {
    serve(input, output, |number, line, out| match json_string(line) {
        Ok(name) => match layout.job(&name) {
            Ok(job) => {
                write_ok(out, &job).context("cannot write to stdout")?;
                Ok(true)
            }
            Err(e) => {
                let answer = CheckAnswer {
                    error: Some(Shown(&e)),
                    line: None,
                    name: Some(&name),
                    ok: false,
                    rule: Some(e.rule()),
                };
                write_line(out, &answer)?;
                Ok(false)
            }
        },
        Err(e) => {
            let e = LineError::bad_json("a JSON string", &e);
            let answer = CheckAnswer {
                error: Some(Shown(&e)),
                line: Some(number),
                name: None,
                ok: false,
                rule: Some(e.rule()),
            };
            write_line(out, &answer)?;
            Ok(false)
        }
    })
}

fn write_ok(out: &mut impl Write, job: &JobName) -> std::io::Result<()> {
    let [head, tail] = CHECK_OK;
    out.write_all(head.as_bytes())?;
    out.write_all(job.as_str().as_bytes())?;
    out.write_all(tail.as_bytes())?;
    out.write_all(b"\n")
}

fn write_line(out: &mut impl Write, value: &impl Serialize) -> Result<()> {
    serde_json::to_writer(&mut *out, value).context("cannot write to stdout")?;
    out.write_all(b"\n").context("cannot write to stdout")
}

/// One request of `plan --json-lines`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanRequest<'a> {
    #[serde(borrow)]
    workspace: Cow<'a, str>,
    #[serde(borrow)]
    job: Cow<'a, str>,
}

/// Why one plan request was refused. Every variant keeps its own rule id.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The line is not a request object.
    #[error(transparent)]
    Line(#[from] LineError),
    /// The workspace is not an acceptable host path.
    #[error(transparent)]
    Workspace(#[from] PathError),
    /// The job name is refused.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The plan cannot be built.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A host check failed (with --verify).
    #[error(transparent)]
    Host(#[from] HostError),
}

impl RequestError {
    /// What to do about a host refusal.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            RequestError::Host(e) => Some(e.hint()),
            _ => None,
        }
    }

    /// The stable short id of the rule.
    pub fn rule(&self) -> &'static str {
        match self {
            RequestError::Line(e) => e.rule(),
            RequestError::Workspace(e) => e.rule(),
            RequestError::Name(e) => e.rule(),
            RequestError::Plan(e) => e.rule(),
            RequestError::Host(e) => e.rule(),
        }
    }
}

/// Plan job `job` in workspace `workspace`: the checks `plan` makes, in its order.
pub fn plan_for(layout: &Layout, workspace: &str, job: &str) -> Result<MountPlan, RequestError> {
    let workspace = HostPath::parse_as(workspace, "host workspace")?;
    let job = layout.job(job)?;
    Ok(layout.plan(&workspace, &job)?)
}

/// The error answer of `plan --json-lines`: `{"error":…,"line":N,"ok":false,"rule":…}`, and
/// `"hint":…` (what to do) after `error` for a host refusal.
#[derive(Serialize)]
struct PlanErrorAnswer<'a> {
    error: Shown<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<&'static str>,
    line: u64,
    ok: bool,
    rule: &'static str,
}

/// `plan --json-lines`: one request object per line in; per line, the plan exactly as
/// `plan --format json` prints it (on one line) or a [`PlanErrorAnswer`].
///
/// With `verify`, each plan is checked against the host first, as `plan --verify` does.
pub fn plan(
    layout: &Layout,
    verify: Option<&VerifyOptions>,
    input: impl Read,
    output: impl Write,
) -> Result<bool> {
    serve(input, output, |number, line, out| {
        match plan_answer(layout, verify, line) {
            Ok(plan) => {
                write_line(out, &plan)?;
                Ok(true)
            }
            Err(e) => {
                // A host refusal's cause (the OS error) is its source, not in its message.
                let error = with_causes(&e);
                let answer = PlanErrorAnswer {
                    error: Shown(&error),
                    hint: e.hint(),
                    line: number,
                    ok: false,
                    rule: e.rule(),
                };
                write_line(out, &answer)?;
                Ok(false)
            }
        }
    })
}

fn plan_answer(
    layout: &Layout,
    verify: Option<&VerifyOptions>,
    line: &[u8],
) -> Result<serde_json::Value, RequestError> {
    let request: PlanRequest = serde_json::from_slice(line)
        .map_err(|e| LineError::bad_json(r#"a request object {"workspace": W, "job": J}"#, &e))?;
    let plan = plan_for(layout, &request.workspace, &request.job)?;
    Ok(match verify {
        None => crate::plan_json(&plan, None),
        Some(options) => {
            let verified = crate::plan_args::verify_with(plan, options)?;
            crate::plan_json(verified.plan(), Some(&verified))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_answer_to_a_valid_name_is_its_check_answer() {
        let mut out = Vec::new();
        check(&Layout::default(), &b"\"job_1.a-B\"\n"[..], &mut out).unwrap();
        let answer = CheckAnswer {
            error: None,
            line: None,
            name: Some("job_1.a-B"),
            ok: true,
            rule: None,
        };
        let expected = serde_json::to_string(&answer).unwrap() + "\n";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
