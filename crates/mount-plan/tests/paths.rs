//! Table tests of the path rules: host paths (the workspace W, bind sources) and container
//! paths (the root R, mount targets, the working directory).

use mount_plan::{ContainerPath, HostPath, JobName, PathError, MAX_NAME_LEN, MAX_PATH_LEN};

fn host_refused(value: &str, rule: &str) -> PathError {
    let err = HostPath::parse(value).expect_err(value);
    check(value, rule, &err);
    err
}

fn container_refused(value: &str, rule: &str) -> PathError {
    let err = ContainerPath::parse(value).expect_err(value);
    check(value, rule, &err);
    err
}

fn check(value: &str, rule: &str, err: &PathError) {
    assert_eq!(err.rule(), rule, "{value:?}: {err}");
    assert_eq!(err.value(), value, "{err}");
    let message = err.to_string();
    assert!(message.contains(&format!("`{rule}`")), "{message}");
    assert!(message.contains(&format!("{value:?}")), "{message}");
}

#[test]
fn host_paths_with_option_syntax_characters_are_accepted() {
    for value in [
        "/srv/site",
        "/srv/a,b",
        "/srv/a:b",
        "/srv/a\"b",
        "/srv/a=b",
        "/srv/with space",
        "/srv/job1,source=/,readonly=false",
        "/srv/\u{430}",
        "/srv/...",
        "/srv/.hidden",
        "/srv/a.",
        "/a",
    ] {
        let path = HostPath::parse(value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        assert_eq!(path.as_str(), value);
        assert_eq!(path.to_string(), value);
        assert_eq!(value.parse::<HostPath>().as_ref(), Ok(&path));
    }
}

#[test]
fn host_path_refusals() {
    host_refused("", "path-empty");
    host_refused("/", "is-root");
    host_refused("srv/site", "not-absolute");
    host_refused("./srv", "not-absolute");
    host_refused("~/site", "not-absolute");
    for value in [
        "/srv/..",
        "/srv/../etc",
        "/..",
        "/srv/.",
        "/./srv",
        "//srv",
        "/srv//site",
        "/srv/site/",
        "//",
    ] {
        let err = host_refused(value, "not-normal");
        assert!(matches!(err, PathError::NotNormal { .. }));
    }
    for (value, found) in [
        ("/srv/a\0b", '\0'),
        ("/srv/a\nb", '\n'),
        ("/srv/a\rb", '\r'),
        ("/srv/a\tb", '\t'),
        ("/srv/\u{85}", '\u{85}'),
        ("srv\n", '\n'), // control characters are found before the shape is judged
    ] {
        let err = host_refused(value, "control-char");
        assert!(matches!(err, PathError::ControlChar { found: f, .. } if f == found));
    }
    let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
    let err = host_refused(&long, "path-too-long");
    assert!(matches!(err, PathError::TooLong { len, .. } if len == MAX_PATH_LEN + 1));
    let longest = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
    assert!(HostPath::parse(&longest).is_ok());
}

#[test]
fn refusals_name_the_path() {
    let err = HostPath::parse_as("srv", "host workspace").unwrap_err();
    assert!(err.to_string().contains("host workspace"), "{err}");
    let err = ContainerPath::parse_as("/", "container root").unwrap_err();
    assert!(err.to_string().contains("container root"), "{err}");
}

#[test]
fn container_paths() {
    for value in [
        "/workspace",
        "/var/tmp/nvflare/workspace",
        "/procfoo",
        "/process",
        "/system",
        "/device",
        "/devices/x",
        "/data/proc",
        "/srv/sys",
    ] {
        let path = ContainerPath::parse(value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        assert_eq!(path.as_str(), value);
    }
    for value in [
        "/proc",
        "/proc/1",
        "/sys",
        "/sys/fs/cgroup",
        "/dev",
        "/dev/shm",
    ] {
        let err = container_refused(value, "kernel-fs");
        let prefix = value.split('/').nth(1).map(|p| format!("/{p}")).unwrap();
        assert!(matches!(err, PathError::KernelFs { prefix: p, .. } if p == prefix));
    }
    container_refused("/", "is-root");
    container_refused("workspace", "not-absolute");
    container_refused("/workspace/", "not-normal");
    container_refused("/proc/../workspace", "not-normal");
    container_refused("", "path-empty");
}

#[test]
fn within_is_component_wise() {
    let data = ContainerPath::parse("/data").unwrap();
    let database = ContainerPath::parse("/database").unwrap();
    let below = ContainerPath::parse("/data/set").unwrap();
    assert!(data.is_within(&data));
    assert!(below.is_within(&data));
    assert!(!data.is_within(&below));
    assert!(!database.is_within(&data));
    assert!(!data.is_within(&database));
    let w = HostPath::parse("/srv/site").unwrap();
    assert!(!HostPath::parse("/srv/site-2").unwrap().is_within(&w));
    assert!(HostPath::parse("/srv/site/job").unwrap().is_within(&w));
}

#[test]
fn join_appends_one_component() {
    let w = HostPath::parse("/srv/a,b").unwrap();
    let job = JobName::parse("job-1").unwrap();
    let joined = w.join(&job).unwrap();
    assert_eq!(joined.as_str(), "/srv/a,b/job-1");
    assert!(joined.is_within(&w));
    assert_eq!(HostPath::parse(joined.as_str()).as_ref(), Ok(&joined));
}

#[test]
fn join_refuses_to_pass_the_length_limit() {
    let job = JobName::parse(&"j".repeat(MAX_NAME_LEN)).unwrap();
    // The longest W for which W/J still fits.
    let fits = format!("/{}", "w".repeat(MAX_PATH_LEN - MAX_NAME_LEN - 2));
    let fits = HostPath::parse(&fits).unwrap();
    assert_eq!(fits.join(&job).unwrap().as_str().len(), MAX_PATH_LEN);
    // One byte more: W is a valid path, W/J is not.
    let over = format!("{}w", fits.as_str());
    let over = HostPath::parse(&over).unwrap();
    let err = over.join(&job).unwrap_err();
    assert_eq!(err.rule(), "path-too-long");
    assert!(matches!(err, PathError::TooLong { len, .. } if len == MAX_PATH_LEN + 1));
    let root = ContainerPath::parse(over.as_str()).unwrap();
    assert_eq!(root.join(&job).unwrap_err().rule(), "path-too-long");
}

#[cfg(feature = "serde")]
#[test]
fn serde_goes_through_the_parser() {
    let p: HostPath = serde_json::from_str("\"/srv/site\"").unwrap();
    assert_eq!(p.as_str(), "/srv/site");
    assert!(serde_json::from_str::<HostPath>("\"/srv/../etc\"").is_err());
    assert!(serde_json::from_str::<ContainerPath>("\"/proc/x\"").is_err());
}
