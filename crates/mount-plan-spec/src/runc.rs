//! One judgement of a runc version against CVE-2024-21626 (working-directory escape through
//! a leaked file descriptor), shared by every backend that reads its runtime's version.
//!
//! Upstream fixed it in runc 1.1.12. Distributions backported the fix to older releases
//! under their own revisions, so `1.1.5` alone says nothing: Debian 12's
//! `1.1.5+ds1-1+deb12u1` carries the fix (its changelog: "CVE-2024-21626: several container
//! breakouts due to internally leaked fds"; Debian's security tracker lists bookworm as fixed
//! in that revision). Only revisions listed here are judged; any other distribution suffix is
//! [`RuncFix::Unknown`], never assumed fixed.

use std::fmt;

use crate::version::Version;

/// The first upstream runc release with the fix for CVE-2024-21626.
pub const RUNC_FIXED: Version = Version::new(1, 1, 12);

/// Distribution revisions known to carry the fix although their upstream version predates
/// 1.1.12: (revision prefix, first fixed update, distribution). A revision
/// `PREFIX<N>` with `N >= first` carries it, `N < first` and the bare upstream part of the
/// prefix (`1.1.5+ds1-1`) do not.
const BACKPORTS: &[(&str, u32, &str)] = &[("1.1.5+ds1-1+deb12u", 1, "Debian 12 (bookworm)")];

/// What a runc version says about CVE-2024-21626.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuncFix {
    /// Upstream 1.1.12 or later.
    Fixed,
    /// An older upstream version in a distribution revision known to carry the fix.
    FixedByDistribution {
        /// The distribution (`Debian 12 (bookworm)`).
        distribution: &'static str,
    },
    /// An upstream version below 1.1.12 without a distribution suffix, or a distribution
    /// revision known to lack the fix.
    Exposed,
    /// A version below 1.1.12 with a distribution suffix this table does not know: the
    /// distribution may have backported the fix; check its security tracker.
    Unknown,
    /// No `major.minor[.patch]` could be read.
    Unreadable,
}

/// Judge a runc version (`1.1.12`, `v1.1.5`, `1.1.5+ds1-1+deb12u1`, `1.1.5-1.el9`) against
/// CVE-2024-21626. Pass the most precise version known: the distribution's package version
/// when the engine reports it ([`runc_version_of_package`]), not the upstream one runc prints.
pub fn runc_fix(version: &str) -> RuncFix {
    let Some((numbers, rest)) = Version::split_prefix(version) else {
        return RuncFix::Unreadable;
    };
    if numbers >= RUNC_FIXED {
        return RuncFix::Fixed;
    }
    // An upstream pre-release (`1.0.0-rc93`) is upstream too.
    let upstream_rc = rest
        .strip_prefix("-rc")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if rest.is_empty() || upstream_rc {
        return RuncFix::Exposed;
    }
    let plain = version.strip_prefix('v').unwrap_or(version);
    for (prefix, first, distribution) in BACKPORTS {
        if let Some(update) = plain.strip_prefix(prefix) {
            return match update.parse::<u32>() {
                Ok(n) if n >= *first => RuncFix::FixedByDistribution { distribution },
                Ok(_) => RuncFix::Exposed,
                Err(_) => RuncFix::Unknown,
            };
        }
        // The distribution's own revision before any security update (`1.1.5+ds1-1`).
        if prefix
            .rsplit_once('+')
            .is_some_and(|(base, _)| base == plain)
        {
            return RuncFix::Exposed;
        }
    }
    RuncFix::Unknown
}

/// The runc version in a package name as Podman reports it: Debian's
/// `runc_1.1.5+ds1-1+deb12u1_amd64` gives `1.1.5+ds1-1+deb12u1`, an RPM's
/// `runc-1.1.12-1.fc39.x86_64` gives `1.1.12-1.fc39.x86_64`. `None` for another package.
pub fn runc_version_of_package(package: &str) -> Option<&str> {
    if let Some(rest) = package.strip_prefix("runc_") {
        // dpkg: NAME_VERSION_ARCH; a Debian version holds no '_'.
        return Some(rest.split('_').next().unwrap_or(rest));
    }
    package
        .strip_prefix("runc-")
        .filter(|r| Version::split_prefix(r).is_some())
}

impl RuncFix {
    /// What `doctor` and the engine report say about runc `version` judged so, if it is
    /// worth a look (`None` when fixed).
    pub fn warning(self, version: &str) -> Option<String> {
        let fixed = RUNC_FIXED;
        match self {
            RuncFix::Fixed | RuncFix::FixedByDistribution { .. } => None,
            RuncFix::Exposed => Some(format!(
                "runc {version} is exposed to CVE-2024-21626 (working-directory escape; fixed upstream in {fixed}): the plan's working directory is fixed, but upgrade runc"
            )),
            RuncFix::Unknown => Some(format!(
                "runc {version} predates {fixed}, the upstream fix for CVE-2024-21626 (working-directory escape), and its distribution revision is not one this check knows: check the distribution's security tracker for that package"
            )),
            RuncFix::Unreadable => Some(format!(
                "runc version {version:?} could not be read; check it against CVE-2024-21626 (fixed upstream in {fixed})"
            )),
        }
    }
}

impl fmt::Display for RuncFix {
    /// A short verdict for `doctor`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuncFix::Fixed => f.write_str("fixed (upstream 1.1.12 or later)"),
            RuncFix::FixedByDistribution { distribution } => {
                write!(f, "fixed by the distribution's patch ({distribution})")
            }
            RuncFix::Exposed => f.write_str("exposed"),
            RuncFix::Unknown => f.write_str("unknown, check the distribution's package"),
            RuncFix::Unreadable => f.write_str("unknown, version unreadable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_at_or_after_the_fix_is_fixed() {
        for v in [
            "1.1.12",
            "v1.1.12",
            "1.1.15",
            "1.1.15+ds1-2",
            "1.2.0-rc.1",
            "2.0",
        ] {
            assert_eq!(runc_fix(v), RuncFix::Fixed, "{v}");
            assert_eq!(runc_fix(v).warning(v), None);
        }
    }

    #[test]
    fn debian_bookworm_security_update_is_fixed_by_the_distribution() {
        for v in [
            "1.1.5+ds1-1+deb12u1",
            "1.1.5+ds1-1+deb12u2",
            "v1.1.5+ds1-1+deb12u1",
        ] {
            let fix = runc_fix(v);
            assert_eq!(
                fix,
                RuncFix::FixedByDistribution {
                    distribution: "Debian 12 (bookworm)"
                },
                "{v}"
            );
            assert_eq!(fix.warning(v), None);
            assert!(fix.to_string().contains("distribution's patch"), "{fix}");
        }
    }

    #[test]
    fn upstream_before_the_fix_and_known_unfixed_revisions_are_exposed() {
        for v in [
            "1.1.5",
            "v1.1.11",
            "1.0.0-rc93",
            "1.1",
            "1.1.5+ds1-1",
            "1.1.5+ds1-1+deb12u0",
        ] {
            let fix = runc_fix(v);
            assert_eq!(fix, RuncFix::Exposed, "{v}");
            let w = fix.warning(v).unwrap();
            assert!(
                w.contains("is exposed to CVE-2024-21626") && w.contains(v),
                "{w}"
            );
        }
    }

    #[test]
    fn a_distribution_suffix_not_in_the_table_is_unknown() {
        for v in [
            "1.1.5+ds1",
            "1.1.7-0ubuntu1~22.04.2",
            "1.1.5-1.el9.x86_64",
            "1.1.5+ds1-1+deb12uX",
            "1.0.0~rc93+ds1-5+deb11u2",
        ] {
            let fix = runc_fix(v);
            assert_eq!(fix, RuncFix::Unknown, "{v}");
            let w = fix.warning(v).unwrap();
            assert!(w.contains("check") && w.contains("CVE-2024-21626"), "{w}");
        }
    }

    #[test]
    fn unreadable_versions_say_so() {
        for v in ["", "dev", "1", "x.y"] {
            assert_eq!(runc_fix(v), RuncFix::Unreadable, "{v:?}");
            assert!(runc_fix(v)
                .warning(v)
                .unwrap()
                .contains("could not be read"));
        }
    }

    #[test]
    fn package_names() {
        assert_eq!(
            runc_version_of_package("runc_1.1.5+ds1-1+deb12u1_amd64"),
            Some("1.1.5+ds1-1+deb12u1")
        );
        assert_eq!(
            runc_version_of_package("runc-1.1.12-1.fc39.x86_64"),
            Some("1.1.12-1.fc39.x86_64")
        );
        assert_eq!(runc_version_of_package("crun_1.8.1-1_amd64"), None);
        assert_eq!(runc_version_of_package("runc-doc"), None);
    }
}
