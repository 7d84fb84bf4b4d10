//! Which Podman this is: its version, what its service reported at connect time, and what
//! that version honours. Pure: unit-tested without a service.

use mount_plan_launch::{Availability, LaunchError, Protection, Version};

use crate::error::PodmanError;
use crate::translate::ENGINE;

/// The oldest Podman this backend drives: podman-api 0.11 speaks the libpod API v4 (it puts
/// `/v4.3.1/libpod/...` in every path), and every plan option used here (`bind`, `private`,
/// `nosuid`/`nodev`/`noexec` on binds, `ro`/`mode`/`size`/`notmpcopyup` on tmpfs, `keep-id`
/// through the API, the wait `interval`) is honoured by Podman 4.0 and later.
pub const MIN_VERSION: Version = Version::new(4, 0, 0);

/// The feature that [`MIN_VERSION`] gates, as [`LaunchError::ApiTooOld`] names it.
pub const MIN_VERSION_FEATURE: &str =
    "the libpod API v4 (create with OCI mounts, keep-id, wait interval)";

/// The first upstream runc release with the fix for CVE-2024-21626 (working-directory escape).
pub const RUNC_FIXED: Version = mount_plan_launch::RUNC_FIXED;

/// Podman's version in `text` (`4.3.1`, `4.9.3-dev`): the first `N.N[.N]` in it.
pub fn parse_version(text: &str) -> Result<Version, PodmanError> {
    Version::find_in(text).ok_or_else(|| PodmanError::Version {
        value: text.to_owned(),
    })
}

/// What the service said about itself when we connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFacts {
    /// Podman's version (also its libpod API version).
    pub version: Version,
    /// The version string as reported.
    pub version_text: String,
    /// Whether the service runs rootless.
    pub rootless: bool,
    /// `v1` or `v2`, when reported.
    pub cgroup_version: Option<String>,
    /// The OCI runtime's name (`runc`, `crun`), when reported.
    pub runtime_name: Option<String>,
    /// The OCI runtime's version, when reported.
    pub runtime_version: Option<Version>,
    /// The OCI runtime's package, when reported (`runc_1.1.5+ds1-1+deb12u1_amd64`).
    pub runtime_package: Option<String>,
    /// The store's run directory (`/run/user/1001/containers`), when reported: every user of
    /// the service shares it, whichever socket (or proxy) they reach it through.
    pub run_root: Option<String>,
}

/// How this service honours each protection: every one natively on Podman 4.0 or later,
/// none on an older service (its API is not spoken).
pub fn availability(facts: &ServiceFacts) -> Vec<(Protection, Availability)> {
    Protection::ALL
        .into_iter()
        .map(|p| {
            let a = if facts.version >= MIN_VERSION {
                Availability::Native
            } else {
                Availability::Missing(format!(
                    "podman {} is older than {MIN_VERSION}: {MIN_VERSION_FEATURE} is not available",
                    facts.version_text
                ))
            };
            (p, a)
        })
        .collect()
}

/// Things worth a look on this service (they do not stop a launch).
pub fn warnings(facts: &ServiceFacts) -> Vec<String> {
    let mut out = Vec::new();
    if facts.runtime_name.as_deref() == Some("runc") {
        // The package's version carries the distribution's revision (`+deb12u1`), which
        // alone says whether the fix was backported.
        let version = facts
            .runtime_package
            .as_deref()
            .and_then(mount_plan_launch::runc_version_of_package)
            .map(str::to_owned)
            .or_else(|| facts.runtime_version.map(|v| v.to_string()));
        if let Some(v) = version {
            out.extend(mount_plan_launch::runc_warnings(&v));
        }
    }
    if facts.rootless {
        out.push(
            "rootless podman resolves bind sources in its own mount namespace, a copy of the host's taken when the service's pause process started: a workspace on a filesystem mounted later is not found (or the directory below that mount is used); keep W on a filesystem mounted before the service starts"
                .to_owned(),
        );
    }
    if facts.rootless && facts.cgroup_version.as_deref() == Some("v1") {
        out.push(
            "rootless podman on cgroup v1 cannot apply resource limits; launches that ask for them are refused"
                .to_owned(),
        );
    }
    out.push(
        "no-new-privileges is not set: podman-api 0.11 sends it under a misspelt key that podman ignores; every bind is mounted nosuid instead"
            .to_owned(),
    );
    out
}

/// Refuse a service older than [`MIN_VERSION`], naming its version and the feature.
pub fn check_version(facts: &ServiceFacts) -> Result<(), LaunchError> {
    if facts.version < MIN_VERSION {
        return Err(LaunchError::ApiTooOld {
            engine: ENGINE,
            engine_version: facts.version_text.clone(),
            api_version: facts.version_text.clone(),
            feature: MIN_VERSION_FEATURE,
            needed: "4.0.0",
        });
    }
    Ok(())
}

/// Read the service's facts from its `version` and `info` answers.
pub fn service_facts(
    version: &podman_api::models::VersionResponse,
    info: &podman_api::models::Info,
) -> Result<ServiceFacts, PodmanError> {
    let version_text = version
        .version
        .clone()
        .or_else(|| info.version.as_ref().and_then(|v| v.version.clone()))
        .ok_or_else(|| PodmanError::Version {
            value: String::new(),
        })?;
    let host = info.host.as_ref();
    let runtime = host.and_then(|h| h.oci_runtime.as_ref());
    Ok(ServiceFacts {
        version: parse_version(&version_text)?,
        version_text,
        rootless: host
            .and_then(|h| h.security.as_ref())
            .and_then(|s| s.rootless)
            .unwrap_or(false),
        cgroup_version: host.and_then(|h| h.cgroup_version.clone()),
        runtime_name: runtime.and_then(|r| r.name.clone()),
        runtime_version: runtime
            .and_then(|r| r.version.as_deref())
            .and_then(|v| v.lines().next())
            .and_then(Version::find_in),
        runtime_package: runtime.and_then(|r| r.package.clone()),
        run_root: info.store.as_ref().and_then(|s| s.run_root.clone()),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Facts of a service at `version`, with Debian 12's runc.
    pub(crate) fn facts(version: &str, rootless: bool) -> ServiceFacts {
        ServiceFacts {
            version: parse_version(version).unwrap(),
            version_text: version.to_owned(),
            rootless,
            cgroup_version: Some("v1".into()),
            runtime_name: Some("runc".into()),
            runtime_version: Some(Version::new(1, 1, 5)),
            runtime_package: Some("runc_1.1.5+ds1-1+deb12u1_amd64".into()),
            run_root: Some("/run/user/1001/containers".into()),
        }
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("4.3.1").unwrap(), Version::new(4, 3, 1));
        assert_eq!(parse_version("4.9.3-dev").unwrap(), Version::new(4, 9, 3));
        assert_eq!(
            parse_version("runc version 1.1.5+ds1").unwrap(),
            Version::new(1, 1, 5)
        );
        assert_eq!(parse_version("5.0").unwrap(), Version::new(5, 0, 0));
        for bad in ["", "dev", "4", "x.y.z"] {
            let e = parse_version(bad).unwrap_err();
            assert_eq!(e.rule(), "version-unreadable", "{bad:?}");
        }
        assert!(Version::new(3, 4, 4) < MIN_VERSION);
        assert!(Version::new(4, 3, 1) >= MIN_VERSION);
    }

    #[test]
    fn old_service_is_refused_naming_version_and_feature() {
        let e = check_version(&facts("3.4.4", false)).unwrap_err();
        assert_eq!(e.rule(), "api-version");
        let msg = e.to_string();
        assert!(
            msg.contains("3.4.4") && msg.contains("libpod API v4") && msg.contains("4.0.0"),
            "{msg}"
        );
        assert!(check_version(&facts("4.0.0", false)).is_ok());
        assert!(availability(&facts("3.4.4", false))
            .iter()
            .all(|(_, a)| !a.is_available()));
        assert!(availability(&facts("4.3.1", true))
            .iter()
            .all(|(_, a)| *a == Availability::Native));
    }

    #[test]
    fn warnings_name_what_to_check() {
        // Debian 12's security update carries the fix.
        let w = warnings(&facts("4.3.1", true));
        assert!(!w.iter().any(|w| w.contains("CVE-2024-21626")), "{w:?}");
        let mut f = facts("4.3.1", true);
        f.runtime_package = Some("runc_1.1.5+ds1-1_amd64".into());
        let w = warnings(&f);
        assert!(
            w.iter()
                .any(|w| w.contains("1.1.5+ds1-1 is exposed to CVE-2024-21626")),
            "{w:?}"
        );
        f.runtime_package = Some("runc-1.1.5-1.el9.x86_64".into());
        let w = warnings(&f);
        assert!(
            w.iter()
                .any(|w| w.contains("CVE-2024-21626") && w.contains("check")),
            "{w:?}"
        );
        assert!(w.iter().any(|w| w.contains("cgroup v1")), "{w:?}");
        assert!(w.iter().any(|w| w.contains("mount namespace")), "{w:?}");
        let mut f = facts("4.3.1", false);
        f.runtime_package = None;
        f.runtime_version = Some(Version::new(1, 1, 12));
        // 1.1.12 fixed the working-directory escape; the 1.1 line never got the November 2025
        // fixes.
        let w = warnings(&f);
        assert!(!w.iter().any(|w| w.contains("CVE-2024-21626")), "{w:?}");
        assert!(
            w.iter()
                .any(|w| w.contains("1.1.12 is exposed to CVE-2025-31133")),
            "{w:?}"
        );
        f.runtime_version = Some(Version::new(1, 2, 8));
        assert!(!warnings(&f).iter().any(|w| w.contains("CVE")));
        assert!(!warnings(&f).iter().any(|w| w.contains("mount namespace")));
    }
}
