//! Invariant checkers shared by the property tests (`tests/props.rs`), the fuzz-corpus replay
//! test (`tests/fuzz_corpus.rs`) and the cargo-fuzz targets in `fuzz/fuzz_targets/`.
//!
//! Every user includes this one file with `#[path = "..."] mod invariants;`, so there is one
//! copy of each check. The fuzz targets are thin wrappers over the `*_bytes` entry points; the
//! replay test feeds the committed corpus through the same functions.
//!
//! The checks compare the core with *reference* rules written independently here (paths
//! through `std::path::Path`'s components and component-wise `starts_with`, the name grammar
//! as byte sets), and parse rendered `--mount` values back with the `csv` crate. Every check
//! panics with a message naming the broken invariant.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use arbitrary::{Result as ArbResult, Unstructured};
use mount_plan::{
    BindRole, ExtraMountSpec, HostPath, JobName, Layout, LayoutSpec, Mount, MountFlags, MountPlan,
    NameError, PathError, Propagation, RootKind, DEFAULT_CONTAINER_ROOT,
    DEFAULT_READ_ONLY_ROOT_SIZE, DEFAULT_SHARED, FORBIDDEN_CONTAINER_PREFIXES, MAX_NAME_LEN,
    MAX_PATH_LEN, READ_ONLY_ROOT_MODE, SCRATCH_ROOT_MODE,
};

// ---------------------------------------------------------------------------------------------
// Input material: path components, good and hostile.
// ---------------------------------------------------------------------------------------------

/// Components that are acceptable names (some reserved in the default layout).
pub const GOOD: &[&str] = &[
    "srv",
    "site",
    "workspace",
    "job-1",
    "job_1",
    "train-2026.11",
    "3f2c1a9e-8b4d-4e6f-9a7b-1c2d3e4f5a6b",
    "data",
    "database",
    "a",
    "Z",
    "x.y",
    "0",
    "a..b",
    "startup",
    "local",
    "Startup",
    "LOCAL",
    "proc",
    "procfoo",
    "var",
    "tmp",
];

/// Components that break the name grammar, a path rule, or that mount-option syntax treats
/// as special. Several are legal path components (`,` `=` `"` spaces, Unicode).
pub const HOSTILE: &[&str] = &[
    "",
    ".",
    "..",
    "...",
    ",",
    "\"",
    "=",
    ":",
    " ",
    "a b",
    "a,b",
    "a:b",
    "a=b",
    "a\"b",
    "job1,source=/,readonly=false",
    "x\",\"source=/",
    "a\nb",
    "\0",
    "a\0",
    "\\",
    "\t",
    "\r",
    "\u{430}",                  // Cyrillic a
    "j\u{43e}b",                // Cyrillic o in "job"
    "\u{ff4a}\u{ff4f}\u{ff42}", // fullwidth "job"
    "\u{17f}tartup",            // long s, uppercases to 'S'
    "startup\u{200b}",          // zero-width space
    "\u{212a}",                 // Kelvin sign, lowercases to 'k'
    "\u{e9}",
    "e\u{301}",
    "-rf",
    ".hidden",
    "a.",
    "_a",
    "~",
    "*",
    "$HOME",
    "'",
    "\u{2028}",
    "\u{85}",
    "\u{7f}",
];

/// Shared names whose ASCII case a generator may flip.
pub const CASE_TOYS: &[&str] = &["startup", "local", "job-1", "data"];

/// Sizes around the root size rule.
pub const SIZES: &[u64] = &[0, 1, 4095, 4096, 65_536, 1 << 20, u64::MAX];

// ---------------------------------------------------------------------------------------------
// Reference rules, written independently of the core.
// ---------------------------------------------------------------------------------------------

/// The name grammar as a byte set: the rule id of the first broken rule, in the core's order.
pub fn reference_name(value: &[u8]) -> Result<(), &'static str> {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let allowed = |b: &u8| ALNUM.contains(b) || b"._-".contains(b);
    match value {
        [] => Err("empty"),
        _ if value.len() > 128 => Err("too-long"),
        [first, ..] if !ALNUM.contains(first) => Err("bad-first-char"),
        _ if !value.iter().all(allowed) => Err("bad-char"),
        [.., b'.'] => Err("trailing-dot"),
        _ => Ok(()),
    }
}

/// A host path by the reference launcher's rule: absolute and unchanged by normalisation
/// (`std::path` drops `.`, `//` and a trailing `/`; `..` is refused outright).
pub fn reference_host_path(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("path-empty");
    }
    if value.chars().any(char::is_control) {
        return Err("control-char");
    }
    if value.len() > 4095 {
        return Err("path-too-long");
    }
    if !value.starts_with('/') {
        return Err("not-absolute");
    }
    if value == "/" {
        return Err("is-root");
    }
    let path = Path::new(value);
    let rebuilt: PathBuf = path.components().collect();
    if rebuilt.as_os_str() != path.as_os_str()
        || path.components().any(|c| c == Component::ParentDir)
    {
        return Err("not-normal");
    }
    Ok(())
}

/// A container path: a host path that is not at or under `/proc`, `/sys` or `/dev`.
pub fn reference_container_path(value: &str) -> Result<(), &'static str> {
    reference_host_path(value)?;
    if ["/proc", "/sys", "/dev"]
        .iter()
        .any(|p| Path::new(value).starts_with(p))
    {
        return Err("kernel-fs");
    }
    Ok(())
}

/// True when one path is the other or lies below it, by whole components.
pub fn overlaps(a: &str, b: &str) -> bool {
    Path::new(a).starts_with(b) || Path::new(b).starts_with(a)
}

/// The rule id [`LayoutSpec::build`] must refuse `spec` with, or `Ok`.
pub fn reference_layout(spec: &LayoutSpec) -> Result<(), &'static str> {
    let root = spec
        .container_root
        .as_deref()
        .unwrap_or(DEFAULT_CONTAINER_ROOT);
    if reference_container_path(root).is_err() {
        return Err("container-root");
    }
    let shared: Vec<&str> = match &spec.shared {
        Some(v) => v.iter().map(String::as_str).collect(),
        None => DEFAULT_SHARED.to_vec(),
    };
    let mut seen = HashSet::new();
    for name in shared {
        if reference_name(name.as_bytes()).is_err() {
            return Err("shared-name");
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err("shared-duplicate");
        }
    }
    let size = match (
        spec.root.unwrap_or(RootKind::ReadOnly),
        spec.root_size_bytes,
    ) {
        (RootKind::ReadOnly, size) => size.unwrap_or(DEFAULT_READ_ONLY_ROOT_SIZE),
        (RootKind::Scratch, Some(size)) => size,
        (RootKind::Scratch, None) => return Err("scratch-size"),
    };
    if size < 4096 {
        return Err("root-size");
    }
    let mut targets = HashSet::new();
    for extra in &spec.extra_mounts {
        if reference_host_path(&extra.source).is_err()
            || reference_container_path(&extra.target).is_err()
        {
            return Err("extra-path");
        }
        if overlaps(&extra.target, root) {
            return Err("extra-overlaps-root");
        }
        if !targets.insert(extra.target.as_str()) {
            return Err("extra-duplicate-target");
        }
    }
    Ok(())
}

/// The rule id [`Layout::plan`] must refuse with, or `Ok`.
pub fn reference_plan(layout: &Layout, ws: &HostPath, job: &JobName) -> Result<(), &'static str> {
    let lower = job.as_str().to_ascii_lowercase();
    if layout
        .shared()
        .iter()
        .any(|s| s.as_str().to_ascii_lowercase() == lower)
    {
        return Err("reserved");
    }
    let root = layout.container_root().as_str();
    let names = layout.shared().iter().chain([job]);
    for name in names {
        for base in [ws.as_str(), root] {
            if base.len() + 1 + name.as_str().len() > 4095 {
                return Err("mount-path-too-long");
            }
        }
    }
    if layout
        .extra_mounts()
        .iter()
        .any(|e| overlaps(e.source().as_str(), ws.as_str()))
    {
        return Err("extra-overlaps-workspace");
    }
    Ok(())
}

/// A refusal message names its rule id in backquotes and quotes the value with `{:?}`
/// (`value` is `None` where the rule has no single value to quote).
pub fn check_message(message: &str, rule: &str, value: Option<&str>) {
    assert!(
        message.contains(&format!("`{rule}`")),
        "message {message:?} does not name rule `{rule}`"
    );
    if let Some(value) = value {
        let quoted = format!("{value:?}");
        assert!(
            message.contains(&quoted),
            "message {message:?} does not quote the value {quoted}"
        );
    }
    assert!(
        !message.chars().next().is_some_and(char::is_uppercase),
        "message {message:?} starts with a capital"
    );
}

// ---------------------------------------------------------------------------------------------
// Names.
// ---------------------------------------------------------------------------------------------

/// Fuzz target `name_bytes`: raw bytes into the name parser.
pub fn check_name_bytes(data: &[u8]) {
    let verdict = JobName::parse_bytes(data);
    let expected = reference_name(data);
    match verdict {
        Ok(name) => {
            assert_eq!(expected, Ok(()), "accepted {data:?}");
            check_accepted_name(data, &name);
        }
        Err(err) => {
            assert_eq!(Err(err.rule()), expected, "refused {data:?} as {err}");
            let lossy = String::from_utf8_lossy(data);
            check_message(&err.to_string(), err.rule(), Some(&lossy));
            // Valid UTF-8 goes through `parse` to the same verdict.
            if let Ok(text) = std::str::from_utf8(data) {
                assert_eq!(JobName::parse(text), Err(err));
            }
        }
    }
}

/// What an accepted name must be: the grammar holds, it is one normal path component, it
/// survives every renderer untouched, and `Layout::job` reserves shared names in any case.
pub fn check_accepted_name(data: &[u8], name: &JobName) {
    let text = name.as_str();
    assert_eq!(text.as_bytes(), data, "the name changed while parsing");
    assert!(!text.is_empty() && text.len() <= MAX_NAME_LEN);
    assert!(text.is_ascii(), "non-ASCII name {text:?} accepted");
    assert!(
        !text
            .bytes()
            .any(|b| b",:=\"'\\/ \t\n\r\0".contains(&b) || b.is_ascii_control()),
        "name {text:?} holds a byte special to some option syntax"
    );
    let components: Vec<Component<'_>> = Path::new(text).components().collect();
    assert_eq!(
        components,
        [Component::Normal(text.as_ref())],
        "name {text:?} is not exactly one normal component"
    );
    assert_eq!(JobName::parse(text).as_ref(), Ok(name), "re-parse differs");
    assert_eq!(text.parse::<JobName>().as_ref(), Ok(name));
    assert_eq!(name.to_string(), text);

    let layout = Layout::default();
    let lower = text.to_ascii_lowercase();
    let reserved = DEFAULT_SHARED.contains(&lower.as_str());
    match layout.job(text) {
        Ok(job) => {
            assert!(!reserved, "{text:?} is a shared name in another case");
            assert_eq!(&job, name);
        }
        Err(err) => {
            assert!(reserved, "{text:?} refused by Layout::job: {err}");
            assert!(matches!(err, NameError::Reserved { .. }));
            assert_eq!(err.rule(), "reserved");
            check_message(&err.to_string(), "reserved", Some(text));
        }
    }
    // Every case variant of a reserved name is reserved too.
    for shared in DEFAULT_SHARED {
        let flipped: String = shared
            .bytes()
            .zip(text.bytes().cycle())
            .map(|(s, t)| {
                if t & 1 == 1 {
                    s.to_ascii_uppercase() as char
                } else {
                    s as char
                }
            })
            .collect();
        let err = layout
            .job(&flipped)
            .expect_err("case variant of a shared name");
        assert_eq!(err.rule(), "reserved", "{flipped:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Structured input.
// ---------------------------------------------------------------------------------------------

/// Everything a plan is built from, unvalidated.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// The host workspace W.
    pub workspace: String,
    /// The job name J.
    pub job: String,
    /// The layout.
    pub spec: LayoutSpec,
}

/// One path component: mostly good, sometimes hostile, long or free text.
pub fn gen_component(u: &mut Unstructured<'_>) -> ArbResult<String> {
    Ok(match u.int_in_range(0u8..=19)? {
        0..=11 => (*u.choose(GOOD)?).to_owned(),
        12..=15 => (*u.choose(HOSTILE)?).to_owned(),
        16 => format!("{}{}", u.choose(GOOD)?, u.choose(HOSTILE)?),
        17 => gen_case_flip(u)?,
        18 => "l".repeat(u.int_in_range(100usize..=2100)?),
        _ => u.arbitrary::<String>()?,
    })
}

/// A shared name with its ASCII case flipped at random.
pub fn gen_case_flip(u: &mut Unstructured<'_>) -> ArbResult<String> {
    let base = *u.choose(CASE_TOYS)?;
    base.chars()
        .map(|c| {
            Ok(if u.arbitrary::<bool>()? {
                c.to_ascii_uppercase()
            } else {
                c
            })
        })
        .collect()
}

/// A name: a single component, sometimes a long run of a good one.
pub fn gen_name(u: &mut Unstructured<'_>) -> ArbResult<String> {
    if u.ratio(1u8, 16)? {
        let good = *u.choose(GOOD)?;
        return Ok(good.repeat(u.int_in_range(1usize..=140)?));
    }
    gen_component(u)
}

/// A normal absolute path of exactly `len` bytes (at least 2), in 200-byte components.
pub fn long_path(len: usize) -> String {
    let mut out = String::with_capacity(len + 200);
    while out.len() < len {
        out.push('/');
        out.push_str(&"l".repeat(199));
    }
    out.truncate(len.max(2));
    if out.ends_with('/') {
        out.pop();
        out.push('l');
    }
    out
}

/// A path from components: mostly absolute and normal, sometimes relative, with `//` or a
/// trailing `/`, or about 4 KiB long.
pub fn gen_path(u: &mut Unstructured<'_>) -> ArbResult<String> {
    if u.ratio(1u8, 12)? {
        return Ok(long_path(u.int_in_range(3900usize..=4200)?));
    }
    let n = u.int_in_range(1usize..=4)?;
    let parts = (0..n)
        .map(|_| gen_component(u))
        .collect::<ArbResult<Vec<_>>>()?;
    let body = parts.join("/");
    Ok(match u.int_in_range(0u8..=15)? {
        0 => body,
        1 => format!("/{body}/"),
        2 => format!("//{body}"),
        3 => "/".to_owned(),
        4 => String::new(),
        _ => format!("/{body}"),
    })
}

/// A container path: like [`gen_path`], sometimes under a kernel filesystem.
pub fn gen_container_path(u: &mut Unstructured<'_>) -> ArbResult<String> {
    if u.ratio(1u8, 6)? {
        let prefix = *u.choose(&["/proc", "/sys", "/dev", "/procfoo", "/devices", "/system"])?;
        let rest = if u.arbitrary::<bool>()? {
            format!("/{}", gen_component(u)?)
        } else {
            String::new()
        };
        return Ok(format!("{prefix}{rest}"));
    }
    gen_path(u)
}

/// A path related to `base`: itself, a parent, a child, a sibling sharing a prefix.
pub fn gen_near(u: &mut Unstructured<'_>, base: &str) -> ArbResult<String> {
    Ok(match u.int_in_range(0u8..=4)? {
        0 => base.to_owned(),
        1 => match Path::new(base).parent().and_then(Path::to_str) {
            Some(parent) if parent != "/" && !parent.is_empty() => parent.to_owned(),
            _ => format!("{base}/{}", gen_component(u)?),
        },
        2 => format!("{base}/{}", gen_component(u)?),
        3 => format!("{base}{}", gen_component(u)?),
        _ => format!("{base}-x"),
    })
}

impl PlanInput {
    /// Build an input from fuzzer bytes.
    pub fn generate(u: &mut Unstructured<'_>) -> ArbResult<Self> {
        let workspace = gen_path(u)?;
        let job = gen_name(u)?;
        let container_root = if u.ratio(1u8, 2)? {
            None
        } else {
            Some(gen_container_path(u)?)
        };
        let shared = if u.ratio(1u8, 2)? {
            None
        } else {
            let n = u.int_in_range(0usize..=4)?;
            Some((0..n).map(|_| gen_name(u)).collect::<ArbResult<Vec<_>>>()?)
        };
        let root = *u.choose(&[None, Some(RootKind::ReadOnly), Some(RootKind::Scratch)])?;
        let root_size_bytes = match u.int_in_range(0u8..=3)? {
            0 => None,
            1 => Some(u.arbitrary::<u64>()?),
            _ => Some(*u.choose(SIZES)?),
        };
        let root_text = container_root
            .clone()
            .unwrap_or_else(|| DEFAULT_CONTAINER_ROOT.to_owned());
        let n = u.int_in_range(0usize..=3)?;
        let mut extra_mounts = Vec::with_capacity(n);
        for _ in 0..n {
            let source = if u.ratio(1u8, 3)? {
                gen_near(u, &workspace)?
            } else {
                gen_path(u)?
            };
            let target = match u.int_in_range(0u8..=5)? {
                0 => gen_near(u, &root_text)?,
                1 => extra_mounts
                    .last()
                    .map(|m: &ExtraMountSpec| m.target.clone())
                    .unwrap_or_else(|| "/data".to_owned()),
                2 => format!("/data/{}", gen_component(u)?),
                _ => gen_container_path(u)?,
            };
            extra_mounts.push(ExtraMountSpec {
                source,
                target,
                read_only: u.arbitrary()?,
            });
        }
        Ok(PlanInput {
            workspace,
            job,
            spec: LayoutSpec {
                container_root,
                shared,
                root,
                root_size_bytes,
                extra_mounts,
                require: Vec::new(),
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Plans.
// ---------------------------------------------------------------------------------------------

/// What becomes of an input: `built`, or the id of the first rule that refuses it (prefixed
/// `workspace-` or `job-` for a refused workspace path or job name).
pub fn outcome(input: &PlanInput) -> String {
    let layout = match input.spec.build() {
        Ok(layout) => layout,
        Err(err) => return err.rule().to_owned(),
    };
    let ws = match HostPath::parse(&input.workspace) {
        Ok(ws) => ws,
        Err(err) => return format!("workspace-{}", err.rule()),
    };
    let job = match JobName::parse(&input.job) {
        Ok(job) => job,
        Err(err) => return format!("job-{}", err.rule()),
    };
    match layout.plan(&ws, &job) {
        Ok(_) => "built".to_owned(),
        Err(err) => err.rule().to_owned(),
    }
}

/// The input a `plan_invariants` fuzz input decodes to.
pub fn plan_input_from_bytes(data: &[u8]) -> ArbResult<PlanInput> {
    PlanInput::generate(&mut Unstructured::new(data))
}

/// The input a `render_roundtrip` fuzz input decodes to, with the free text it starts with.
pub fn render_input_from_bytes(data: &[u8]) -> ArbResult<(String, PlanInput)> {
    let mut u = Unstructured::new(data);
    let text = u.arbitrary::<String>()?;
    let input = gen_render_input(&mut u, &text)?;
    Ok((text, input))
}

/// Fuzz target `plan_invariants`: structured input; whatever is built obeys every invariant.
pub fn check_plan_bytes(data: &[u8]) {
    if let Ok(input) = plan_input_from_bytes(data) {
        check_plan_input(&input);
    }
}

/// Check a path the core accepted or refused against the reference rule.
fn check_path_verdict(
    value: &str,
    verdict: Result<&str, &PathError>,
    reference: Result<(), &'static str>,
) {
    match verdict {
        Ok(parsed) => {
            assert_eq!(reference, Ok(()), "accepted path {value:?}");
            assert_eq!(parsed, value);
        }
        Err(err) => {
            assert_eq!(Err(err.rule()), reference, "path {value:?} refused: {err}");
            check_message(&err.to_string(), err.rule(), Some(value));
        }
    }
}

/// Build what `input` describes, compare every verdict with the reference rules, and check
/// every invariant of the plan and its renderings. Returns the plan when one was built.
pub fn check_plan_input(input: &PlanInput) -> Option<MountPlan> {
    let layout = match input.spec.build() {
        Ok(layout) => {
            assert_eq!(reference_layout(&input.spec), Ok(()), "{input:?}");
            layout
        }
        Err(err) => {
            assert_eq!(
                Err(err.rule()),
                reference_layout(&input.spec),
                "{input:?}: {err}"
            );
            check_message(&err.to_string(), err.rule(), None);
            return None;
        }
    };
    check_layout(&input.spec, &layout);

    let ws = HostPath::parse(&input.workspace);
    check_path_verdict(
        &input.workspace,
        ws.as_ref().map(HostPath::as_str),
        reference_host_path(&input.workspace),
    );
    let ws = ws.ok()?;

    let job = match JobName::parse(&input.job) {
        Ok(job) => {
            check_accepted_name(input.job.as_bytes(), &job);
            job
        }
        Err(err) => {
            assert_eq!(Err(err.rule()), reference_name(input.job.as_bytes()));
            check_message(&err.to_string(), err.rule(), Some(&input.job));
            return None;
        }
    };

    let plan = match layout.plan(&ws, &job) {
        Ok(plan) => {
            assert_eq!(reference_plan(&layout, &ws, &job), Ok(()), "{input:?}");
            plan
        }
        Err(err) => {
            assert_eq!(
                Err(err.rule()),
                reference_plan(&layout, &ws, &job),
                "{input:?}: {err}"
            );
            check_message(&err.to_string(), err.rule(), None);
            return None;
        }
    };
    check_plan(&layout, &ws, &job, &plan);
    check_render(&plan);

    // Deterministic: the same input builds the same layout and the same plan.
    let again = input
        .spec
        .build()
        .expect("built once")
        .plan(&ws, &job)
        .expect("planned once");
    assert_eq!(plan, again);
    assert_eq!(format!("{plan:?}"), format!("{again:?}"));
    assert_eq!(plan.docker_args(), again.docker_args());
    assert_eq!(plan.podman_args(), again.podman_args());
    Some(plan)
}

/// A built layout holds exactly what its spec asked for (defaults applied).
pub fn check_layout(spec: &LayoutSpec, layout: &Layout) {
    assert_eq!(
        layout.container_root().as_str(),
        spec.container_root
            .as_deref()
            .unwrap_or(DEFAULT_CONTAINER_ROOT)
    );
    let shared: Vec<&str> = layout.shared().iter().map(JobName::as_str).collect();
    match &spec.shared {
        Some(v) => assert_eq!(shared, v.iter().map(String::as_str).collect::<Vec<_>>()),
        None => assert_eq!(shared, DEFAULT_SHARED),
    }
    let root = layout.root();
    let scratch = spec.root == Some(RootKind::Scratch);
    assert_eq!(root.read_only(), !scratch);
    assert_eq!(
        root.mode(),
        if scratch {
            SCRATCH_ROOT_MODE
        } else {
            READ_ONLY_ROOT_MODE
        }
    );
    assert_eq!(
        root.size_bytes(),
        spec.root_size_bytes.unwrap_or(DEFAULT_READ_ONLY_ROOT_SIZE)
    );
    assert!(root.size_bytes() >= 4096);
    // The extra mounts are the spec's, sorted by target.
    let mut want: Vec<(&str, &str, bool)> = spec
        .extra_mounts
        .iter()
        .map(|e| (e.target.as_str(), e.source.as_str(), e.read_only))
        .collect();
    want.sort();
    let got: Vec<(&str, &str, bool)> = layout
        .extra_mounts()
        .iter()
        .map(|e| (e.target().as_str(), e.source().as_str(), e.read_only()))
        .collect();
    assert_eq!(got, want);
    for e in layout.extra_mounts() {
        assert!(!overlaps(
            e.target().as_str(),
            layout.container_root().as_str()
        ));
    }
}

/// The invariants of a plan, checked against the layout, workspace and job it came from.
pub fn check_plan(layout: &Layout, ws: &HostPath, job: &JobName, plan: &MountPlan) {
    let root = layout.container_root().as_str();
    let w = ws.as_str();
    assert_eq!(plan.job(), job);
    assert_eq!(plan.workspace(), ws);
    assert_eq!(plan.container_root(), layout.container_root());
    assert!(
        !layout
            .shared()
            .iter()
            .any(|s| s.as_str().eq_ignore_ascii_case(job.as_str())),
        "job {job:?} is reserved"
    );

    // The workdir is R/J.
    assert_eq!(plan.workdir().as_str(), format!("{root}/{job}"));

    // Mount 0: the tmpfs at R, as the policy says.
    let mounts = plan.mounts();
    let Mount::Tmpfs(tmpfs) = &mounts[0] else {
        panic!("the first mount is not the root tmpfs: {mounts:?}");
    };
    assert_eq!(tmpfs.target().as_str(), root);
    assert_eq!(tmpfs.read_only(), layout.root().read_only());
    assert_eq!(tmpfs.mode(), layout.root().mode());
    assert_eq!(tmpfs.size_bytes(), layout.root().size_bytes());
    assert_eq!(tmpfs.flags(), MountFlags::HARDENED);
    assert_eq!(plan.root_tmpfs(), tmpfs);
    assert!(
        mounts[1..].iter().all(|m| matches!(m, Mount::Bind(_))),
        "a second tmpfs"
    );

    // Order and roles: shared binds in layout order, the job bind, the extras.
    let binds: Vec<_> = plan.binds().collect();
    let n_shared = layout.shared().len();
    let n_extra = layout.extra_mounts().len();
    assert_eq!(binds.len(), n_shared + 1 + n_extra);
    assert_eq!(mounts.len(), binds.len() + 1);
    for (bind, name) in binds.iter().zip(layout.shared()) {
        assert_eq!(bind.role(), BindRole::Shared);
        assert_eq!(bind.source().as_str(), format!("{w}/{name}"));
        assert_eq!(bind.target().as_str(), format!("{root}/{name}"));
        assert!(bind.read_only(), "shared bind {bind:?} is writable");
    }
    let job_bind = binds[n_shared];
    assert_eq!(job_bind.role(), BindRole::Job);
    assert_eq!(plan.job_bind(), job_bind);
    assert_eq!(job_bind.source().as_str(), format!("{w}/{job}"));
    assert_eq!(job_bind.target(), plan.workdir());
    assert!(!job_bind.read_only());
    for (bind, extra) in binds[n_shared + 1..].iter().zip(layout.extra_mounts()) {
        assert_eq!(bind.role(), BindRole::Extra);
        assert_eq!(bind.source(), extra.source());
        assert_eq!(bind.target(), extra.target());
        assert_eq!(bind.read_only(), extra.read_only());
        assert!(!overlaps(bind.source().as_str(), w), "extra exposes W");
        assert!(!overlaps(bind.target().as_str(), root), "extra overlaps R");
    }

    // Exactly one read-write workspace bind: W/J at R/J.
    let rw_workspace: Vec<_> = binds
        .iter()
        .filter(|b| b.role() != BindRole::Extra && !b.read_only())
        .collect();
    assert_eq!(
        rw_workspace.len(),
        1,
        "read-write workspace binds: {rw_workspace:?}"
    );
    assert_eq!(*rw_workspace[0], job_bind);
    let rw_extra = layout
        .extra_mounts()
        .iter()
        .filter(|e| !e.read_only())
        .count();
    assert_eq!(
        binds.iter().filter(|b| !b.read_only()).count(),
        1 + rw_extra
    );

    // Workspace binds: source W/<one component>, target R/<the same component>.
    for bind in binds.iter().filter(|b| b.role() != BindRole::Extra) {
        let source = Path::new(bind.source().as_str());
        let target = Path::new(bind.target().as_str());
        assert_eq!(source.parent(), Some(Path::new(w)), "{bind:?}");
        assert_eq!(target.parent(), Some(Path::new(root)), "{bind:?}");
        let name = source.file_name().and_then(|n| n.to_str()).expect("a name");
        assert_eq!(target.file_name().and_then(|n| n.to_str()), Some(name));
        assert_eq!(reference_name(name.as_bytes()), Ok(()), "{name:?}");
        assert_eq!(
            source.components().count(),
            Path::new(w).components().count() + 1
        );
    }

    // Every bind: non-recursive, private, nosuid+nodev; read-only ones noexec too.
    for bind in &binds {
        assert!(!bind.recursive(), "{bind:?}");
        assert_eq!(bind.propagation(), Propagation::Private);
        let want = if bind.read_only() {
            MountFlags::HARDENED
        } else {
            MountFlags::NO_SUID_DEV
        };
        assert_eq!(bind.flags(), want, "{bind:?}");
    }

    // Every path in the plan parses back as the type it claims to be.
    for m in mounts {
        let target = m.target().as_str();
        assert_eq!(
            reference_container_path(target),
            Ok(()),
            "target {target:?}"
        );
        assert!(target.len() <= MAX_PATH_LEN);
        if let Mount::Bind(b) = m {
            assert_eq!(
                HostPath::parse(b.source().as_str()).as_ref(),
                Ok(b.source())
            );
        }
        // Targets are R, one component below R, or an extra mount's target.
        let is_workspace_target =
            target == root || Path::new(target).parent() == Some(Path::new(root));
        let is_extra = matches!(m, Mount::Bind(b) if b.role() == BindRole::Extra);
        assert!(is_workspace_target || is_extra, "stray target {target:?}");
        for prefix in FORBIDDEN_CONTAINER_PREFIXES {
            assert!(!Path::new(target).starts_with(prefix));
        }
    }

    // Targets are unique, and no mount comes before one of its parents.
    let mut seen = HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        assert!(seen.insert(m.target()), "duplicate target {:?}", m.target());
        for later in &mounts[i + 1..] {
            assert!(
                !Path::new(m.target().as_str()).starts_with(later.target().as_str()),
                "{:?} is mounted before its parent {:?}",
                m.target(),
                later.target()
            );
        }
    }

    // The OCI form says the same thing.
    let oci = plan.oci_mounts();
    assert_eq!(oci.len(), mounts.len());
    for (o, m) in oci.iter().zip(mounts) {
        assert_eq!(o.destination, m.target().as_str());
        let rw = if m.read_only() { "ro" } else { "rw" };
        assert!(o.options.iter().any(|x| x == rw), "{o:?}");
        assert!(!o.options.iter().any(|x| x == "rbind"), "{o:?}");
        for word in m.flags().words() {
            assert!(o.options.iter().any(|x| x == word), "{o:?} lacks {word}");
        }
        match m {
            Mount::Tmpfs(t) => {
                assert_eq!((o.kind.as_str(), o.source.as_str()), ("tmpfs", "tmpfs"));
                assert!(o.options.contains(&format!("mode={:04o}", t.mode())));
                assert!(o.options.contains(&format!("size={}", t.size_bytes())));
            }
            Mount::Bind(b) => {
                assert_eq!(
                    (o.kind.as_str(), o.source.as_str()),
                    ("bind", b.source().as_str())
                );
                assert!(o.options.iter().any(|x| x == "bind"));
                assert!(o.options.iter().any(|x| x == "private"));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering round trip through a real CSV parser.
// ---------------------------------------------------------------------------------------------

/// A `--mount` value as Docker or Podman reads it back: split by a CSV reader, each field cut
/// at its first `=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMount {
    /// `type=`.
    pub kind: String,
    /// `source=`.
    pub source: Option<String>,
    /// `destination=`.
    pub destination: String,
    /// `readonly=true` / `ro=true`.
    pub readonly: bool,
    /// `bind-propagation=`.
    pub propagation: Option<String>,
    /// `bind-nonrecursive`.
    pub nonrecursive: bool,
    /// `tmpfs-mode=`, parsed as octal.
    pub tmpfs_mode: Option<u32>,
    /// `tmpfs-size=`.
    pub tmpfs_size: Option<u64>,
    /// `notmpcopyup` (Podman).
    pub notmpcopyup: bool,
    /// nosuid/nodev/noexec.
    pub flags: MountFlags,
}

/// Split one `--mount` value with the `csv` crate (no headers, flexible) into its fields.
/// Exactly one record is required: a second record would be a smuggled line.
pub fn csv_fields(value: &str) -> Vec<String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(value.as_bytes());
    let mut records = reader.records();
    let record = records
        .next()
        .unwrap_or_else(|| panic!("no record in {value:?}"))
        .unwrap_or_else(|e| panic!("csv refused {value:?}: {e}"));
    assert!(
        records.next().is_none(),
        "more than one record in {value:?}"
    );
    record.iter().map(str::to_owned).collect()
}

/// No mount flag at all.
pub const NO_FLAGS: MountFlags = MountFlags {
    nosuid: false,
    nodev: false,
    noexec: false,
};

/// Which CLI a `--mount` value is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cli {
    /// `docker run`.
    Docker,
    /// `podman run`.
    Podman,
}

fn parse_bool(cli: Cli, key: &str, value: Option<&str>) -> bool {
    match (cli, value) {
        (_, Some("true")) => true,
        (_, Some("false")) => false,
        // Podman flags without a value mean "true".
        (Cli::Podman, None) => true,
        _ => panic!("{cli:?}: bad boolean {key}={value:?}"),
    }
}

/// Rebuild a mount from its parsed fields the way the CLI would, refusing unknown and
/// repeated keys (a repeated key is how a name used to add `source=/`).
pub fn rebuild(cli: Cli, fields: &[String]) -> ParsedMount {
    let mut out = ParsedMount {
        kind: String::new(),
        source: None,
        destination: String::new(),
        readonly: false,
        propagation: None,
        nonrecursive: false,
        tmpfs_mode: None,
        tmpfs_size: None,
        notmpcopyup: false,
        flags: NO_FLAGS,
    };
    let mut seen = HashSet::new();
    let mut flags = NO_FLAGS;
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field.as_str(), None),
        };
        assert!(
            seen.insert(key.to_owned()),
            "{cli:?}: key {key:?} repeated in {fields:?}"
        );
        let need = |v: Option<&str>| -> String {
            v.unwrap_or_else(|| panic!("{cli:?}: {key} without a value"))
                .to_owned()
        };
        match (cli, key) {
            (_, "type") => out.kind = need(value),
            (_, "source") => out.source = Some(need(value)),
            (_, "destination") => out.destination = need(value),
            (Cli::Docker, "readonly") | (Cli::Podman, "ro") => {
                out.readonly = parse_bool(cli, key, value)
            }
            (_, "bind-propagation") => out.propagation = Some(need(value)),
            (_, "bind-nonrecursive") => out.nonrecursive = parse_bool(cli, key, value),
            (_, "tmpfs-mode") => {
                out.tmpfs_mode = Some(u32::from_str_radix(&need(value), 8).expect("octal mode"))
            }
            (_, "tmpfs-size") => out.tmpfs_size = Some(need(value).parse().expect("size")),
            (Cli::Podman, "notmpcopyup") => {
                assert!(value.is_none());
                out.notmpcopyup = true
            }
            (Cli::Podman, "nosuid") => flags.nosuid = true,
            (Cli::Podman, "nodev") => flags.nodev = true,
            (Cli::Podman, "noexec") => flags.noexec = true,
            _ => panic!("{cli:?}: unknown key {key:?} in {fields:?}"),
        }
    }
    out.flags = flags;
    out
}

/// What a plan's mount must read back as.
pub fn expected(cli: Cli, m: &Mount) -> ParsedMount {
    let no_flags = NO_FLAGS;
    match m {
        Mount::Tmpfs(t) => ParsedMount {
            kind: "tmpfs".into(),
            source: None,
            destination: t.target().to_string(),
            readonly: t.read_only(),
            propagation: None,
            nonrecursive: false,
            tmpfs_mode: Some(t.mode()),
            tmpfs_size: Some(t.size_bytes()),
            notmpcopyup: cli == Cli::Podman,
            // Docker mounts every tmpfs nosuid,nodev,noexec without being asked.
            flags: if cli == Cli::Podman {
                t.flags()
            } else {
                no_flags
            },
        },
        Mount::Bind(b) => ParsedMount {
            kind: "bind".into(),
            source: Some(b.source().to_string()),
            destination: b.target().to_string(),
            readonly: b.read_only(),
            propagation: Some("private".into()),
            nonrecursive: !b.recursive(),
            tmpfs_mode: None,
            tmpfs_size: None,
            notmpcopyup: false,
            // Docker cannot express bind flags (see DOCKER_BIND_FLAGS_NOT_EXPRESSIBLE).
            flags: if cli == Cli::Podman {
                b.flags()
            } else {
                no_flags
            },
        },
    }
}

/// Split rendered CLI arguments into `--mount` values, the workdir and the rest.
fn split_args(cli: Cli, args: &[String]) -> (Vec<String>, String, Vec<(String, String)>) {
    assert_eq!(args.len() % 2, 0, "{cli:?}: odd argument list {args:?}");
    let mut mounts = Vec::new();
    let mut workdir = None;
    let mut other = Vec::new();
    for pair in args.chunks(2) {
        match pair[0].as_str() {
            "--mount" => mounts.push(pair[1].clone()),
            "--workdir" => {
                assert!(workdir.is_none(), "{cli:?}: two --workdir");
                workdir = Some(pair[1].clone());
            }
            flag => other.push((flag.to_owned(), pair[1].clone())),
        }
    }
    (mounts, workdir.expect("a --workdir"), other)
}

/// Render a plan for both CLIs, parse every `--mount` back with a CSV reader, and compare.
pub fn check_render(plan: &MountPlan) {
    for cli in [Cli::Docker, Cli::Podman] {
        let (args, fields) = match cli {
            Cli::Docker => (plan.docker_args(), plan.docker_mount_fields()),
            Cli::Podman => (plan.podman_args(), plan.podman_mount_fields()),
        };
        let (values, workdir, other) = split_args(cli, &args);
        assert_eq!(workdir, plan.workdir().as_str(), "{cli:?} workdir");
        match cli {
            Cli::Docker => assert_eq!(
                other,
                [
                    ("--security-opt".to_owned(), "no-new-privileges".to_owned()),
                    ("--cap-drop".to_owned(), "ALL".to_owned())
                ]
            ),
            Cli::Podman => assert_eq!(other, [("--cap-drop".to_owned(), "ALL".to_owned())]),
        }
        assert_eq!(values.len(), plan.mounts().len());
        assert_eq!(fields.len(), plan.mounts().len());
        for ((value, unquoted), m) in values.iter().zip(&fields).zip(plan.mounts()) {
            assert!(!value.contains('\n') && !value.contains('\r'));
            let parsed = csv_fields(value);
            assert_eq!(&parsed, unquoted, "{cli:?}: {value:?}");
            assert_eq!(
                rebuild(cli, &parsed),
                expected(cli, m),
                "{cli:?}: {value:?}"
            );
        }
    }
}

/// `csv_quote` is undone exactly by a CSV reader, whatever the text.
pub fn check_csv_quote(text: &str) {
    let quoted = mount_plan::csv_quote(text);
    assert_eq!(csv_fields(&quoted), [text.to_owned()], "{quoted:?}");
}

/// Fuzz target `render_roundtrip`: a plan whose paths are rich in CSV-special characters,
/// rendered for Docker and Podman and parsed back; and `csv_quote` on free text.
pub fn check_render_bytes(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(text) = u.arbitrary::<String>() else {
        return;
    };
    check_csv_quote(&text);
    let Ok(input) = gen_render_input(&mut u, &text) else {
        return;
    };
    // check_plan_input renders every plan it builds and parses the arguments back.
    check_plan_input(&input);
}

/// A plan input that usually builds: good names, paths made of hostile-but-legal components.
pub fn gen_render_input(u: &mut Unstructured<'_>, text: &str) -> ArbResult<PlanInput> {
    // Free text as a path component, with what a path may not hold removed.
    let free: String = text
        .chars()
        .filter(|c| !c.is_control() && *c != '/')
        .collect();
    let free = match free.as_str() {
        "" | "." | ".." => "x".to_owned(),
        _ => free,
    };
    let legal = |u: &mut Unstructured<'_>| -> ArbResult<String> {
        Ok(match u.int_in_range(0u8..=3)? {
            0 => (*u.choose(GOOD)?).to_owned(),
            1 => (*u.choose(&[
                ",",
                "\"",
                "=",
                ":",
                " ",
                "a,b",
                "x\",\"readonly=false",
                "\u{430}",
            ])?)
            .to_owned(),
            2 => free.clone(),
            _ => "job1,source=/,readonly=false".to_owned(),
        })
    };
    let path = |u: &mut Unstructured<'_>| -> ArbResult<String> {
        let n = u.int_in_range(1usize..=3)?;
        let mut out = String::new();
        for _ in 0..n {
            out.push('/');
            out.push_str(&legal(u)?);
        }
        Ok(out)
    };
    let workspace = path(u)?;
    let job = (*u.choose(&["job-1", "job_1", "train-2026.11", "a", "Data"])?).to_owned();
    let container_root = if u.arbitrary::<bool>()? {
        Some(path(u)?)
    } else {
        None
    };
    let extra_mounts = if u.arbitrary::<bool>()? {
        vec![ExtraMountSpec {
            source: format!("/mnt{}", path(u)?),
            target: format!("/data{}", path(u)?),
            read_only: u.arbitrary()?,
        }]
    } else {
        Vec::new()
    };
    let scratch = u.arbitrary::<bool>()?;
    Ok(PlanInput {
        workspace,
        job,
        spec: LayoutSpec {
            container_root,
            shared: None,
            root: Some(if scratch {
                RootKind::Scratch
            } else {
                RootKind::ReadOnly
            }),
            root_size_bytes: Some(1 << 20),
            extra_mounts,
            require: Vec::new(),
        },
    })
}
