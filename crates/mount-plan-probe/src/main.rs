//! `mount-plan-probe`: runs inside a job container and reports, as one JSON object on
//! stdout, what the container can see and do. It never decides whether that is right: the
//! conformance suite compares the report with the plan.
//!
//! ```text
//! mount-plan-probe report --root R [--stat P]... [--try-write P]... [--try-mkdir P]...
//!                  [--write-file P]... [--open-device P]... [--exec P]...
//!                  [--mknod P:TYPE:MAJOR:MINOR]...
//! mount-plan-probe ids        # {"uid":[r,e,s,fs],"gid":[r,e,s,fs]} of this process
//! ```
//!
//! Dependency-free (std only) so that it links statically with
//! `RUSTFLAGS='-C target-feature=+crt-static'`.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::process::{Command, ExitCode};

/// Render a JSON string.
fn s(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn obj(fields: Vec<(&str, String)>) -> String {
    let body: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("{}:{}", s(k), v))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn arr(items: Vec<String>) -> String {
    format!("[{}]", items.join(","))
}

fn err_fields(e: &io::Error) -> Vec<(&'static str, String)> {
    vec![
        ("errno", e.raw_os_error().unwrap_or(-1).to_string()),
        ("error", s(&e.to_string())),
    ]
}

/// `{"path":..,"ok":true}` or `{"path":..,"ok":false,"errno":..,"error":..}`.
fn outcome(path: &str, r: io::Result<()>) -> String {
    let mut f = vec![("path", s(path)), ("ok", r.is_ok().to_string())];
    if let Err(e) = &r {
        f.extend(err_fields(e));
    }
    obj(f)
}

fn stat_json(path: &str) -> String {
    match fs::symlink_metadata(path) {
        Ok(m) => obj(vec![
            ("path", s(path)),
            ("exists", "true".into()),
            ("dev", m.dev().to_string()),
            ("ino", m.ino().to_string()),
            ("mode", (m.mode() & 0o7777).to_string()),
            ("uid", m.uid().to_string()),
            ("gid", m.gid().to_string()),
            ("is_dir", m.is_dir().to_string()),
        ]),
        Err(e) => {
            let mut f = vec![("path", s(path)), ("exists", "false".into())];
            f.extend(err_fields(&e));
            obj(f)
        }
    }
}

/// Real, effective, saved and filesystem ids from /proc/self/status.
fn ids() -> (Vec<u64>, Vec<u64>) {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> Vec<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    (field("Uid:"), field("Gid:"))
}

fn ids_json() -> String {
    let (uid, gid) = ids();
    let nums = |v: Vec<u64>| arr(v.into_iter().map(|n| n.to_string()).collect());
    obj(vec![("uid", nums(uid)), ("gid", nums(gid))])
}

/// One line of /proc/self/mountinfo (see proc(5)).
fn mountinfo_json(line: &str) -> Option<String> {
    let (pre, post) = line.split_once(" - ")?;
    let pre: Vec<&str> = pre.split(' ').collect();
    let post: Vec<&str> = post.split(' ').collect();
    if pre.len() < 6 || post.len() < 3 {
        return None;
    }
    let unescape = |v: &str| {
        v.replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\")
    };
    Some(obj(vec![
        ("mount_id", s(pre[0])),
        ("parent_id", s(pre[1])),
        ("dev", s(pre[2])),
        ("root", s(&unescape(pre[3]))),
        ("mount_point", s(&unescape(pre[4]))),
        ("mount_options", s(pre[5])),
        (
            "optional",
            arr(pre[6..].iter().map(|o| s(o)).collect::<Vec<_>>()),
        ),
        ("fs_type", s(post[0])),
        ("source", s(&unescape(post[1]))),
        ("super_options", s(post[2])),
    ]))
}

fn list_dir(path: &str) -> String {
    match fs::read_dir(path) {
        Ok(rd) => {
            let mut names: Vec<String> = rd
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            obj(vec![
                ("ok", "true".into()),
                ("names", arr(names.iter().map(|n| s(n)).collect())),
            ])
        }
        Err(e) => {
            let mut f = vec![("ok", "false".into())];
            f.extend(err_fields(&e));
            obj(f)
        }
    }
}

fn try_write(path: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    f.write_all(b"written by mount-plan-probe\n")
}

/// Open a device node read-only, then write-only (opening `/dev/kmsg` write-only needs no
/// capability, so only the device cgroup or nodev can refuse it).
fn open_device(path: &str) -> String {
    let ro = fs::OpenOptions::new().read(true).open(path).map(drop);
    let wo = fs::OpenOptions::new().write(true).open(path).map(drop);
    let opened = ro.is_ok() || wo.is_ok();
    let mut f = vec![("path", s(path)), ("opened", opened.to_string())];
    if let Err(e) = &ro {
        f.push(("read_error", s(&e.to_string())));
        f.push(("read_errno", e.raw_os_error().unwrap_or(-1).to_string()));
    }
    if let Err(e) = &wo {
        f.push(("write_error", s(&e.to_string())));
        f.push(("write_errno", e.raw_os_error().unwrap_or(-1).to_string()));
    }
    obj(f)
}

/// The capability sets of this process from /proc/self/status (hex, as the kernel prints
/// them): `{"inheritable":..,"permitted":..,"effective":..,"bounding":..,"ambient":..}`.
fn caps_json() -> String {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| s(v.trim()))
            .unwrap_or_else(|| "null".into())
    };
    obj(vec![
        ("inheritable", field("CapInh:")),
        ("permitted", field("CapPrm:")),
        ("effective", field("CapEff:")),
        ("bounding", field("CapBnd:")),
        ("ambient", field("CapAmb:")),
    ])
}

/// Try to create a device node, `P:TYPE:MAJOR:MINOR` (`TYPE` `c` or `b`), with the image's
/// busybox `mknod` (the probe stays free of unsafe code and of libc).
fn mknod_json(spec: &str) -> String {
    let mut parts = spec.rsplitn(4, ':');
    let (Some(minor), Some(major), Some(kind), Some(path)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return obj(vec![("path", s(spec)), ("ok", "false".into())]);
    };
    let mut f = vec![("path", s(path))];
    match Command::new("/bin/busybox")
        .args(["mknod", path, kind, major, minor])
        .output()
    {
        Ok(out) => {
            f.push(("ok", out.status.success().to_string()));
            f.push(("status", out.status.code().unwrap_or(-1).to_string()));
            f.push(("stderr", s(String::from_utf8_lossy(&out.stderr).trim_end())));
        }
        Err(e) => {
            f.push(("ok", "false".into()));
            f.extend(err_fields(&e));
        }
    }
    obj(f)
}

/// Run `path ids` (a copy of this probe): did it run, and with which ids?
fn exec_json(path: &str) -> String {
    match Command::new(path).arg("ids").output() {
        Ok(out) => obj(vec![
            ("path", s(path)),
            ("ran", "true".into()),
            ("status", out.status.code().unwrap_or(-1).to_string()),
            ("stdout", s(String::from_utf8_lossy(&out.stdout).trim_end())),
        ]),
        Err(e) => {
            let mut f = vec![("path", s(path)), ("ran", "false".into())];
            f.extend(err_fields(&e));
            obj(f)
        }
    }
}

fn report(args: &[String]) -> Result<String, String> {
    let mut root = None;
    let mut stats = Vec::new();
    let mut writes = Vec::new();
    let mut mkdirs = Vec::new();
    let mut files = Vec::new();
    let mut devices = Vec::new();
    let mut execs = Vec::new();
    let mut mknods = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("probe: {flag:?} needs a value"))?
            .clone();
        match flag.as_str() {
            "--root" => root = Some(value),
            "--stat" => stats.push(value),
            "--try-write" => writes.push(value),
            "--try-mkdir" => mkdirs.push(value),
            "--write-file" => files.push(value),
            "--open-device" => devices.push(value),
            "--exec" => execs.push(value),
            "--mknod" => mknods.push(value),
            other => return Err(format!("probe: unknown option {other:?}")),
        }
    }
    let root = root.ok_or("probe: --root is required")?;

    let cwd = std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cwd_stat = stat_json(".");
    cwd_stat = cwd_stat.replacen(&s("."), &s(&cwd), 1);

    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts: Vec<String> = mountinfo.lines().filter_map(mountinfo_json).collect();

    let written: Vec<String> = writes.iter().map(|p| outcome(p, try_write(p))).collect();
    let made: Vec<String> = mkdirs
        .iter()
        .map(|p| outcome(p, fs::create_dir(p)))
        .collect();
    let kept: Vec<String> = files
        .iter()
        .map(|p| outcome(p, fs::write(p, b"probe output\n")))
        .collect();

    let nodes: Vec<String> = mknods.iter().map(|m| mknod_json(m)).collect();

    Ok(obj(vec![
        ("ids", ids_json()),
        ("caps", caps_json()),
        ("cwd", cwd_stat),
        ("root", stat_json(&root)),
        ("root_entries", list_dir(&root)),
        ("mountinfo", arr(mounts)),
        ("stats", arr(stats.iter().map(|p| stat_json(p)).collect())),
        ("writes", arr(written)),
        ("mkdirs", arr(made)),
        ("files", arr(kept)),
        (
            "devices",
            arr(devices.iter().map(|p| open_device(p)).collect()),
        ),
        ("execs", arr(execs.iter().map(|p| exec_json(p)).collect())),
        ("mknods", arr(nodes)),
    ]))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ids") => Ok(ids_json()),
        Some("report") => report(&args[1..]),
        _ => Err("usage: mount-plan-probe report --root R [...] | ids".to_owned()),
    };
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape() {
        assert_eq!(s("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    #[test]
    fn mountinfo_line() {
        let line = "613 590 0:56 / /workspace ro,nosuid,nodev,noexec,relatime master:1 - tmpfs tmpfs rw,size=1024k,mode=555";
        let j = mountinfo_json(line).unwrap();
        assert!(j.contains("\"mount_point\":\"/workspace\""), "{j}");
        assert!(j.contains("\"optional\":[\"master:1\"]"), "{j}");
        assert!(
            j.contains("\"super_options\":\"rw,size=1024k,mode=555\""),
            "{j}"
        );
        assert_eq!(mountinfo_json("garbage"), None);
    }

    #[test]
    fn writes_report_errors() {
        let dir = std::env::temp_dir().join(format!("probe-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        let p = p.to_str().unwrap();
        let _ = fs::remove_file(p);
        assert!(outcome(p, try_write(p)).contains("\"ok\":true"));
        let again = outcome(p, try_write(p));
        assert!(
            again.contains("\"ok\":false") && again.contains("\"errno\":17"),
            "{again}"
        );
        fs::remove_dir_all(&dir).unwrap();
        let rep = report(&["--root".into(), "/".into()]).unwrap();
        assert!(rep.starts_with("{\"ids\":{\"uid\":["), "{rep}");
        assert!(rep.contains("\"caps\":{\"inheritable\":\""), "{rep}");
        assert!(rep.ends_with(",\"mknods\":[]}"), "{rep}");
        let bad = mknod_json("no-colons");
        assert!(bad.contains("\"ok\":false"), "{bad}");
        assert!(std::path::Path::new("/proc/self/mountinfo").exists());
    }
}
