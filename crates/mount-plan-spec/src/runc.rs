//! Judgements of a runc version against the runc advisories that bear on the contract, shared
//! by every backend that reads its runtime's version ([`RUNC_ADVISORIES`]):
//!
//! - CVE-2024-21626 (working-directory escape through a leaked file descriptor), fixed upstream
//!   in runc 1.1.12. Distributions backported the fix to older releases under their own
//!   revisions, so `1.1.5` alone says nothing: Debian 12's `1.1.5+ds1-1+deb12u1` carries the fix
//!   (its changelog: "CVE-2024-21626: several container breakouts due to internally leaked
//!   fds"; Debian's security tracker lists bookworm as fixed in that revision).
//! - The November 2025 advisories CVE-2025-31133 (a masked path bound from a `/dev/null`
//!   swapped for a link), CVE-2025-52565 (the same on `/dev/console`) and CVE-2025-52881
//!   (redirected procfs writes), fixed upstream in 1.2.8, 1.3.3 and 1.4.0; the 1.1 line and
//!   older have no upstream fix. No distribution backport is listed here yet, so a
//!   distribution's older runc is judged "unknown, check".
//!
//! Only revisions listed here are judged fixed by a distribution; any other distribution suffix
//! is [`RuncFix::Unknown`], never assumed fixed.

use std::fmt;

use crate::version::Version;

/// The first upstream runc release with the fix for CVE-2024-21626.
pub const RUNC_FIXED: Version = Version::new(1, 1, 12);

/// One runc advisory: what it is, the first fixed upstream release of each maintained line,
/// and the distribution revisions known to carry the fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuncAdvisory {
    /// The advisory's ids (`CVE-2024-21626`).
    pub ids: &'static str,
    /// What it lets a container do, in a few words.
    pub what: &'static str,
    /// The first fixed release of each line (`major.minor`), ascending. A version is fixed at
    /// or after the fix of its own line, or on a line after every listed one.
    pub fixed: &'static [Version],
    /// (revision prefix, first fixed update, distribution): a revision `PREFIX<N>` with
    /// `N >= first` carries the fix, `N < first` and the bare upstream part of the prefix
    /// (`1.1.5+ds1-1`) do not.
    pub backports: &'static [(&'static str, u32, &'static str)],
}

/// CVE-2024-21626: the working-directory escape of January 2024.
pub const WORKDIR_ESCAPE: RuncAdvisory = RuncAdvisory {
    ids: "CVE-2024-21626",
    what: "working-directory escape",
    fixed: &[RUNC_FIXED],
    backports: &[("1.1.5+ds1-1+deb12u", 1, "Debian 12 (bookworm)")],
};

/// CVE-2025-31133, CVE-2025-52565, CVE-2025-52881: the masked-path and `/dev/console` bind
/// races of November 2025 (the gate also refuses a container whose mounts show their trace).
pub const MASKED_PATHS: RuncAdvisory = RuncAdvisory {
    ids: "CVE-2025-31133, CVE-2025-52565, CVE-2025-52881",
    what: "masked paths and /dev/console bound from a swapped file",
    fixed: &[
        Version::new(1, 2, 8),
        Version::new(1, 3, 3),
        Version::new(1, 4, 0),
    ],
    backports: &[],
};

/// Every advisory `doctor` and the engine reports judge runc against.
pub const RUNC_ADVISORIES: [RuncAdvisory; 2] = [WORKDIR_ESCAPE, MASKED_PATHS];

/// The warnings about runc `version` for every advisory in [`RUNC_ADVISORIES`] it is not
/// known to be fixed for.
pub fn runc_warnings(version: &str) -> Vec<String> {
    RUNC_ADVISORIES
        .iter()
        .filter_map(|a| a.warning(a.judge(version), version))
        .collect()
}

/// What a runc version says about one advisory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuncFix {
    /// An upstream release at or after the fix.
    Fixed,
    /// An older upstream version in a distribution revision known to carry the fix.
    FixedByDistribution {
        /// The distribution (`Debian 12 (bookworm)`).
        distribution: &'static str,
    },
    /// An upstream version before the fix without a distribution suffix, or a distribution
    /// revision known to lack the fix.
    Exposed,
    /// A version before the fix with a distribution suffix the advisory's table does not know:
    /// the distribution may have backported the fix; check its security tracker.
    Unknown,
    /// No `major.minor[.patch]` could be read.
    Unreadable,
}

/// Judge a runc version (`1.1.12`, `v1.1.5`, `1.1.5+ds1-1+deb12u1`, `1.1.5-1.el9`) against
/// CVE-2024-21626 ([`WORKDIR_ESCAPE`]). Pass the most precise version known: the
/// distribution's package version when the engine reports it ([`runc_version_of_package`]),
/// not the upstream one runc prints.
pub fn runc_fix(version: &str) -> RuncFix {
    WORKDIR_ESCAPE.judge(version)
}

impl RuncAdvisory {
    /// Whether upstream release `numbers` (`rc`: a pre-release of it) carries the fix.
    fn fixed_upstream(&self, numbers: Version, rc: bool) -> bool {
        let line = |v: &Version| (v.major, v.minor);
        match self.fixed.iter().find(|f| line(f) == line(&numbers)) {
            // A pre-release of the fixed release itself predates it.
            Some(f) => numbers > *f || (numbers == *f && !rc),
            None => self.fixed.last().is_some_and(|f| line(&numbers) > line(f)),
        }
    }

    /// Judge runc `version` against this advisory (see [`runc_fix`] for the forms).
    pub fn judge(&self, version: &str) -> RuncFix {
        let Some((numbers, rest)) = Version::split_prefix(version) else {
            return RuncFix::Unreadable;
        };
        // An upstream pre-release (`1.0.0-rc93`, `1.2.0-rc.1`) is upstream too.
        let rc = rest
            .strip_prefix("-rc")
            .map(|n| n.strip_prefix('.').unwrap_or(n))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if self.fixed_upstream(numbers, rc) {
            return RuncFix::Fixed;
        }
        if rest.is_empty() || rc {
            return RuncFix::Exposed;
        }
        let plain = version.strip_prefix('v').unwrap_or(version);
        for (prefix, first, distribution) in self.backports {
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

    /// What `doctor` and the engine report say about runc `version` judged `fix` for this
    /// advisory, if it is worth a look (`None` when fixed).
    pub fn warning(&self, fix: RuncFix, version: &str) -> Option<String> {
        let (ids, what) = (self.ids, self.what);
        let fixed = self
            .fixed
            .iter()
            .map(Version::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match fix {
            RuncFix::Fixed | RuncFix::FixedByDistribution { .. } => None,
            RuncFix::Exposed => Some(format!(
                "runc {version} is exposed to {ids} ({what}; fixed upstream in {fixed}): upgrade runc"
            )),
            RuncFix::Unknown => Some(format!(
                "runc {version} predates {fixed}, the upstream fix for {ids} ({what}), and its distribution revision is not one this check knows: check the distribution's security tracker for that package"
            )),
            RuncFix::Unreadable => Some(format!(
                "runc version {version:?} could not be read; check it against {ids} (fixed upstream in {fixed})"
            )),
        }
    }
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
    /// What `doctor` and the engine report say about runc `version` judged so against
    /// CVE-2024-21626, if it is worth a look (`None` when fixed).
    pub fn warning(self, version: &str) -> Option<String> {
        WORKDIR_ESCAPE.warning(self, version)
    }
}

impl fmt::Display for RuncFix {
    /// A short verdict for `doctor`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuncFix::Fixed => f.write_str("fixed upstream"),
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
    fn the_november_2025_advisories_are_fixed_per_line() {
        let judge = |v: &str| MASKED_PATHS.judge(v);
        for v in [
            "1.2.8", "1.2.9", "1.3.3", "v1.3.4", "1.4.0", "1.4.1", "1.5.0", "2.0",
        ] {
            assert_eq!(judge(v), RuncFix::Fixed, "{v}");
        }
        for v in [
            "1.1.15",
            "1.1.12",
            "1.2.7",
            "1.3.2",
            "1.4.0-rc.2",
            "1.0.0-rc93",
        ] {
            assert_eq!(judge(v), RuncFix::Exposed, "{v}");
            let w = MASKED_PATHS.warning(judge(v), v).unwrap();
            assert!(
                w.contains("exposed to CVE-2025-31133") && w.contains("1.2.8, 1.3.3, 1.4.0"),
                "{w}"
            );
        }
        // No distribution backport is known: Debian's runc is "check", never assumed fixed.
        for v in ["1.1.5+ds1-1+deb12u1", "1.1.15+ds1-2"] {
            assert_eq!(judge(v), RuncFix::Unknown, "{v}");
        }
        assert_eq!(judge("1.2.8+ds1-1"), RuncFix::Fixed);
        // Only `-rc` and digits is an upstream pre-release; anything else is a suffix.
        for v in ["1.1.5-rc", "1.1.5-rcfoo", "1.1.5-rc.x"] {
            assert_eq!(judge(v), RuncFix::Unknown, "{v}");
        }
    }

    #[test]
    fn every_advisory_is_judged_and_only_unfixed_ones_warn() {
        assert!(runc_warnings("1.4.0").is_empty());
        let debian = runc_warnings("1.1.5+ds1-1+deb12u1");
        assert_eq!(debian.len(), 1, "{debian:?}");
        assert!(debian[0].contains("CVE-2025-52565") && debian[0].contains("check"));
        let old = runc_warnings("1.1.5");
        assert_eq!(old.len(), 2, "{old:?}");
        assert!(old[0].contains("CVE-2024-21626") && old[1].contains("CVE-2025-31133"));
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
