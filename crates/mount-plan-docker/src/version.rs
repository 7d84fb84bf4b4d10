//! What a Docker engine honours, decided from its versions (pure).
//!
//! Two versions decide: the Engine API version (which fields of a create call the engine
//! reads) and the OCI runtime's version (what runc makes of them). Where neither can tell, a
//! fact is observed once on the engine ([`RootMode`], see `probe`) and passed in here.

use std::fmt;
use std::str::FromStr;

use mount_plan_launch::{Availability, EngineInfo, Protection, Version};

/// An Engine API version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    /// Major (always 1 so far).
    pub major: u32,
    /// Minor.
    pub minor: u32,
}

impl ApiVersion {
    /// `BindOptions.NonRecursive`.
    pub const NON_RECURSIVE: ApiVersion = ApiVersion::new(1, 40);
    /// `BindOptions.CreateMountpoint`.
    pub const CREATE_MOUNTPOINT: ApiVersion = ApiVersion::new(1, 42);
    /// `BindOptions.ReadOnlyNonRecursive` / `ReadOnlyForceRecursive`.
    pub const READ_ONLY_RECURSIVE: ApiVersion = ApiVersion::new(1, 44);
    /// `TmpfsOptions.Options`.
    pub const TMPFS_OPTIONS: ApiVersion = ApiVersion::new(1, 46);

    /// A version.
    pub const fn new(major: u32, minor: u32) -> Self {
        ApiVersion { major, minor }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// An API version string that is not `major.minor`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("docker rule `api-version-format`: API version {0:?} is not MAJOR.MINOR")]
pub struct ApiVersionError(pub String);

impl FromStr for ApiVersion {
    type Err = ApiVersionError;
    fn from_str(s: &str) -> Result<Self, ApiVersionError> {
        let err = || ApiVersionError(s.to_owned());
        let (a, b) = s.split_once('.').ok_or_else(err)?;
        Ok(ApiVersion::new(
            a.parse().map_err(|_| err())?,
            b.parse().map_err(|_| err())?,
        ))
    }
}

/// The oldest upstream runc without the CVE-2024-21626 working-directory escape (the
/// judgement, distributions' backports included, is [`mount_plan_launch::runc_fix`]).
pub const RUNC_FIXED: Version = mount_plan_launch::RUNC_FIXED;
/// The most precise runc version in Docker's `/version` component: Debian builds report the
/// package revision as the commit (`1.1.5+ds1` with commit `1.1.5+ds1-1+deb12u1`), and only
/// that revision says whether a security fix was backported; upstream builds report a hash
/// or a tag (`v1.1.12-0-g51d5e94`), and the version stays.
pub fn runc_version(version: &str, git_commit: Option<&str>) -> String {
    match git_commit.and_then(|c| c.strip_prefix(version)) {
        Some(rest) if rest.starts_with(['-', '+', '~']) => format!("{version}{rest}"),
        _ => version.to_owned(),
    }
}

/// The oldest runc that keeps a tmpfs's `mode=` when the mount point already exists
/// (opencontainers/runc#3916, released in 1.1.8): older ones chmod the tmpfs to the mode of
/// the directory it covers.
pub const RUNC_KEEPS_TMPFS_MODE: Version = Version::new(1, 1, 8);
/// The mode Docker gives the directories it creates for the working directory.
pub const WORKDIR_PARENT_MODE: u32 = 0o755;

/// What R's root inode looks like inside a container whose working directory R/J is below R.
///
/// Docker creates R/J in the container's own filesystem before runc mounts anything, so R's
/// tmpfs is mounted over an existing directory (mode [`WORKDIR_PARENT_MODE`]). Whether the
/// tmpfs keeps its `mode=` then depends on the OCI runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootMode {
    /// R has the planned mode.
    Kept,
    /// R gets this mode instead (that of the directory Docker created).
    Becomes(u32),
}

impl fmt::Display for RootMode {
    /// `kept` or the octal mode (`0755`): the form of the observation cache.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootMode::Kept => f.write_str("kept"),
            RootMode::Becomes(m) => write!(f, "{m:04o}"),
        }
    }
}

impl FromStr for RootMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "kept" => Ok(RootMode::Kept),
            m => u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(RootMode::Becomes)
                .ok_or(()),
        }
    }
}

/// R's mode as the reported OCI runtime decides it: `Some` for runc (a version before
/// [`RUNC_KEEPS_TMPFS_MODE`] gives R the mode of the directory Docker created), `None` when
/// the version cannot tell (another runtime, or none reported): only an observation can.
pub fn root_mode_from_runtime(runtime: Option<&str>) -> Option<RootMode> {
    let (version, _) = Version::split_prefix(runtime?.strip_prefix("runc ")?)?;
    Some(if version < RUNC_KEEPS_TMPFS_MODE {
        RootMode::Becomes(WORKDIR_PARENT_MODE)
    } else {
        RootMode::Kept
    })
}

/// How a fact about the engine became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// From the versions the engine reports.
    ByVersion,
    /// Observed on this engine (a probe container; cached per engine and runtime version).
    Observed,
}

/// What decides how one Docker engine honours a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineFacts {
    /// The API version in use.
    pub api: ApiVersion,
    /// The OCI runtime as reported (`runc 1.1.5+ds1`), if any.
    pub runtime: Option<String>,
    /// What R's mode becomes, and how that is known; `None`: not known.
    pub root_mode: Option<(RootMode, Known)>,
}

impl EngineFacts {
    /// The facts the versions tell; `observed` (from a probe, or its cache) fills in R's
    /// mode when the runtime's version cannot tell it. A version's answer wins over an
    /// observation: the observation cache is keyed by version, so they only differ if the
    /// table is wrong, which the conformance suite checks on every engine.
    pub fn new(api: ApiVersion, runtime: Option<&str>, observed: Option<RootMode>) -> Self {
        let root_mode = root_mode_from_runtime(runtime)
            .map(|m| (m, Known::ByVersion))
            .or(observed.map(|m| (m, Known::Observed)));
        EngineFacts {
            api,
            runtime: runtime.map(str::to_owned),
            root_mode,
        }
    }

    /// The facts of a connected engine (API version as negotiated, runtime as reported).
    pub fn of(engine: &EngineInfo, observed: Option<RootMode>) -> Result<Self, ApiVersionError> {
        Ok(EngineFacts::new(
            engine.api_version.parse()?,
            engine.runtime.as_deref(),
            observed,
        ))
    }

    /// How read-only binds are asked for on this engine.
    pub fn read_only_binds(&self) -> ReadOnlyBinds {
        if self.api >= ApiVersion::READ_ONLY_RECURSIVE {
            ReadOnlyBinds::ForceRecursive
        } else {
            ReadOnlyBinds::Plain
        }
    }
}

/// How the create call asks for a read-only bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnlyBinds {
    /// `ReadOnly: true` only (API before 1.44): the engine mounts the bind read-only and
    /// cannot say whether that held.
    Plain,
    /// `ReadOnly: true` plus `BindOptions.ReadOnlyForceRecursive` (API 1.44 or later): the
    /// engine makes the mount read-only with `mount_setattr` and fails the start if it cannot,
    /// instead of silently falling back.
    ForceRecursive,
}

/// How Docker honours `nosuid` on binds, which the Engine API cannot set per mount.
pub const NOSUID_SUBSTITUTE: &str =
    "\"no-new-privileges\" on the container (setuid bits give no privileges)";
/// How Docker honours `nodev` on binds, which the Engine API cannot set per mount.
pub const NODEV_SUBSTITUTE: &str = "Docker's device cgroup (never privileged, no devices or device rules added): only the default devices null, zero, full, random, urandom, tty, console, ptmx, pts and net/tun can be opened";

/// Why R's mode differs from the plan on an engine whose runtime does it (`mode`: what R gets).
pub fn root_mode_note(mode: u32, known: Known, runtime: Option<&str>) -> String {
    let how = match known {
        Known::ByVersion => format!(
            "{} predates {RUNC_KEEPS_TMPFS_MODE}, which keeps a tmpfs's mode",
            runtime.unwrap_or("the runtime"),
        ),
        Known::Observed => "observed on this engine".to_owned(),
    };
    format!(
        "a writable R: its directory entry written with the planned mode before the container starts (the engine's archive call), from which the runtime copies the tmpfs's mode; without it R's mode would become {mode:04o} ({how}: Docker creates the working directory R/J in the container's own filesystem, and the runtime gives the tmpfs the mode of the directory it covers); a read-only R keeps {mode:04o}, which grants no write on a read-only tmpfs; the in-container gate checks the mode"
    )
}

/// How this engine honours each protection.
pub fn availability(facts: &EngineFacts) -> Vec<(Protection, Availability)> {
    let api = facts.api;
    Protection::ALL
        .into_iter()
        .map(|p| {
            let a = match p {
                Protection::NonRecursiveBinds if api < ApiVersion::NON_RECURSIVE => {
                    Availability::Missing(format!(
                        "BindOptions.NonRecursive needs API {}, the engine speaks {api}",
                        ApiVersion::NON_RECURSIVE
                    ))
                }
                Protection::RootModeAndSize => match facts.root_mode {
                    Some((RootMode::Kept, _)) => Availability::Native,
                    Some((RootMode::Becomes(m), known)) => {
                        Availability::Substitute(root_mode_note(m, known, facts.runtime.as_deref()))
                    }
                    None => Availability::Substitute(format!(
                        "a writable R: its directory entry written with the planned mode before the container starts (whether runtime {:?} would keep it is not known: runc before {RUNC_KEEPS_TMPFS_MODE} gives the tmpfs {WORKDIR_PARENT_MODE:04o}); a read-only R may get {WORKDIR_PARENT_MODE:04o}, which grants no write on a read-only tmpfs; the in-container gate checks the mode",
                        facts.runtime.as_deref().unwrap_or("(not reported)"),
                    )),
                },
                Protection::ReadOnlyBinds
                    if facts.read_only_binds() == ReadOnlyBinds::ForceRecursive =>
                {
                    Availability::Native
                }
                Protection::NoSuidOnBinds => Availability::Substitute(NOSUID_SUBSTITUTE.into()),
                Protection::NoDevOnBinds => Availability::Substitute(NODEV_SUBSTITUTE.into()),
                Protection::NoExecOnBinds => Availability::Missing(
                    "the Engine API has no noexec option for bind mounts, at any version".into(),
                ),
                // The gate's host copy, bound read-only (`gate_copy`), on every version.
                Protection::Gate => Availability::Native,
                _ => Availability::Native,
            };
            (p, a)
        })
        .collect()
}

/// Things worth a look on this engine (they do not stop a launch).
pub fn warnings(engine: &EngineInfo) -> Vec<String> {
    let mut out = Vec::new();
    match engine
        .runtime
        .as_deref()
        .and_then(|r| r.strip_prefix("runc "))
    {
        // The connect reads the package revision when Docker reports one
        // (`1.1.5+ds1-1+deb12u1`), so a distribution's backport is judged as such.
        Some(v) => out.extend(mount_plan_launch::runc_warnings(v)),
        None => out.push("the engine does not report its runc version".into()),
    }
    if engine.rootless {
        out.push("rootless Docker: uid 0 in the container maps to the daemon's user".into());
    }
    out
}

/// The key of an observation in the cache: the engine and runtime versions that decide it.
pub fn observation_key(engine: &EngineInfo) -> String {
    format!(
        "docker {} {}",
        engine.version,
        engine.runtime.as_deref().unwrap_or("-").replace(' ', "-")
    )
}

/// The observation recorded for `key` in a cache file's text (`KEY<TAB>VALUE` lines; the
/// last line for a key wins), if any.
pub fn cached_observation(text: &str, key: &str) -> Option<RootMode> {
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(k, _)| *k == key)
        .filter_map(|(_, v)| v.trim().parse().ok())
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(version: &str, runtime: Option<&str>) -> EngineInfo {
        EngineInfo {
            engine: "docker".into(),
            endpoint: "unix:///var/run/docker.sock".into(),
            version: version.into(),
            api_version: "1.41".into(),
            runtime: runtime.map(str::to_owned),
            rootless: false,
            user_namespace: false,
        }
    }

    fn get(a: &[(Protection, Availability)], p: Protection) -> Availability {
        a.iter().find(|(q, _)| *q == p).unwrap().1.clone()
    }

    #[test]
    fn semver() {
        let v = |t| Version::split_prefix(t).map(|(v, _)| v);
        assert_eq!(v("1.1.5+ds1"), Some(Version::new(1, 1, 5)));
        assert_eq!(v("v1.1.12"), Some(Version::new(1, 1, 12)));
        assert!(v("1.1.5+ds1").unwrap() < RUNC_FIXED);
    }

    #[test]
    fn api_versions() {
        assert_eq!(
            "1.41".parse::<ApiVersion>().unwrap(),
            ApiVersion::new(1, 41)
        );
        assert!("1".parse::<ApiVersion>().is_err());
        assert!(ApiVersion::new(1, 9) < ApiVersion::new(1, 40));
    }

    #[test]
    fn root_mode_by_runc_version() {
        // Docker 20.10 on Debian 12 (measured: R shows 0755).
        assert_eq!(
            root_mode_from_runtime(Some("runc 1.1.5+ds1-1+deb12u1")),
            Some(RootMode::Becomes(0o755))
        );
        assert_eq!(
            root_mode_from_runtime(Some("runc 1.1.7")),
            Some(RootMode::Becomes(0o755))
        );
        // Docker 26 on Debian 13 (measured: R keeps 0555).
        assert_eq!(
            root_mode_from_runtime(Some("runc 1.1.15+ds1-2")),
            Some(RootMode::Kept)
        );
        assert_eq!(
            root_mode_from_runtime(Some("runc 1.1.8")),
            Some(RootMode::Kept)
        );
        assert_eq!(
            root_mode_from_runtime(Some("runc 1.2.0")),
            Some(RootMode::Kept)
        );
        // Not runc, unparsable or unreported: only an observation can tell.
        assert_eq!(root_mode_from_runtime(Some("crun 1.8")), None);
        assert_eq!(root_mode_from_runtime(Some("runc dev")), None);
        assert_eq!(root_mode_from_runtime(None), None);
    }

    #[test]
    fn root_mode_availability_follows_the_runtime() {
        let old = EngineFacts::new(ApiVersion::new(1, 41), Some("runc 1.1.5+ds1"), None);
        let Availability::Substitute(note) = get(&availability(&old), Protection::RootModeAndSize)
        else {
            panic!("runc 1.1.5: written before start");
        };
        assert!(
            note.contains("written with the planned mode")
                && note.contains("become 0755")
                && note.contains("runc 1.1.5+ds1"),
            "{note}"
        );

        let new = EngineFacts::new(ApiVersion::new(1, 45), Some("runc 1.1.15"), None);
        assert_eq!(
            get(&availability(&new), Protection::RootModeAndSize),
            Availability::Native
        );

        // The version wins over an observation; an observation fills in what it cannot tell.
        let crun = EngineFacts::new(ApiVersion::new(1, 45), Some("crun 1.8"), None);
        let Availability::Substitute(note) = get(&availability(&crun), Protection::RootModeAndSize)
        else {
            panic!("unknown: written before start");
        };
        assert!(
            note.contains("not known") && note.contains("written with the planned mode"),
            "{note}"
        );
        let seen = EngineFacts::new(
            ApiVersion::new(1, 45),
            Some("crun 1.8"),
            Some(RootMode::Becomes(0o700)),
        );
        assert_eq!(
            seen.root_mode,
            Some((RootMode::Becomes(0o700), Known::Observed))
        );
        let Availability::Substitute(note) = get(&availability(&seen), Protection::RootModeAndSize)
        else {
            panic!("observed drift: partial");
        };
        assert!(note.contains("0700") && note.contains("observed"), "{note}");
        let both = EngineFacts::new(
            ApiVersion::new(1, 45),
            Some("runc 1.1.15"),
            Some(RootMode::Becomes(0o755)),
        );
        assert_eq!(both.root_mode, Some((RootMode::Kept, Known::ByVersion)));
    }

    #[test]
    fn availability_by_api_version() {
        let a = availability(&EngineFacts::new(ApiVersion::new(1, 41), None, None));
        assert_eq!(get(&a, Protection::NonRecursiveBinds), Availability::Native);
        assert_eq!(get(&a, Protection::ReadOnlyBinds), Availability::Native);
        assert!(matches!(
            get(&a, Protection::NoSuidOnBinds),
            Availability::Substitute(_)
        ));
        assert!(!get(&a, Protection::NoExecOnBinds).is_available());
        let old = availability(&EngineFacts::new(ApiVersion::new(1, 39), None, None));
        assert!(!get(&old, Protection::NonRecursiveBinds).is_available());
    }

    #[test]
    fn read_only_binds_by_api_version() {
        let at = |minor| EngineFacts::new(ApiVersion::new(1, minor), None, None).read_only_binds();
        assert_eq!(at(41), ReadOnlyBinds::Plain);
        assert_eq!(at(43), ReadOnlyBinds::Plain);
        assert_eq!(at(44), ReadOnlyBinds::ForceRecursive);
        assert_eq!(at(45), ReadOnlyBinds::ForceRecursive);
    }

    #[test]
    fn runc_version_takes_the_package_revision_from_the_commit() {
        assert_eq!(
            runc_version("1.1.5+ds1", Some("1.1.5+ds1-1+deb12u1")),
            "1.1.5+ds1-1+deb12u1"
        );
        assert_eq!(runc_version("1.1.12", Some("v1.1.12-0-g51d5e94")), "1.1.12");
        assert_eq!(runc_version("1.1.15", Some("1.1.15")), "1.1.15");
        assert_eq!(runc_version("1.1.5", Some("1.1.50")), "1.1.5");
        assert_eq!(runc_version("1.1.5+ds1", None), "1.1.5+ds1");
    }

    #[test]
    fn warnings_name_old_runc_and_rootless() {
        // Debian 12's security update carries the fix: nothing to warn about.
        let w = warnings(&engine("20.10.24", Some("runc 1.1.5+ds1-1+deb12u1")));
        assert!(!w.iter().any(|w| w.contains("CVE-2024-21626")), "{w:?}");
        // Without the revision, the suffix cannot be judged: check the package.
        let w = warnings(&engine("20.10.24", Some("runc 1.1.5+ds1")));
        assert!(
            w.iter()
                .any(|w| w.contains("CVE-2024-21626") && w.contains("check")),
            "{w:?}"
        );
        let w = warnings(&engine("20.10.24", Some("runc 1.1.5")));
        assert!(w.iter().any(|w| w.contains("is exposed")), "{w:?}");
        // runc 1.1.15: past the 2024 fix, before any of the November 2025 ones.
        let w = warnings(&engine("26.1.5", Some("runc 1.1.15")));
        assert!(
            w.len() == 1 && w[0].contains("1.1.15 is exposed to CVE-2025-31133"),
            "{w:?}"
        );
        assert!(warnings(&engine("28.5.2", Some("runc 1.3.3"))).is_empty());
        let w = warnings(&engine("26.1.5", None));
        assert!(w[0].contains("does not report"), "{w:?}");
    }

    #[test]
    fn observation_cache_lines() {
        let e = engine("26.1.5+dfsg1", Some("crun 1.8"));
        let key = observation_key(&e);
        assert_eq!(key, "docker 26.1.5+dfsg1 crun-1.8");
        let text = format!("other\tkept\n{key}\t0755\n{key}\tkept\nbroken line\n{key}\tzz\n");
        assert_eq!(cached_observation(&text, &key), Some(RootMode::Kept));
        assert_eq!(cached_observation("", &key), None);
        assert_eq!("0755".parse::<RootMode>(), Ok(RootMode::Becomes(0o755)));
        assert_eq!(RootMode::Becomes(0o755).to_string(), "0755");
        assert_eq!(RootMode::Kept.to_string().parse(), Ok(RootMode::Kept));
        assert!("99999".parse::<RootMode>().is_err());
    }
}
