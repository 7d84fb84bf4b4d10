//! One version type for every engine and runtime: Docker's runc, Podman and its runc, the
//! CVE judgement of runc.

use std::fmt;

/// A `major.minor.patch` version (`4.3.1`, `v1.1.12`, `1.1.5+ds1`), ordered numerically.
/// Built from text by [`Version::split_prefix`] or [`Version::find_in`]; what follows the
/// numbers (`-dev`, `+ds1-1+deb12u1`) is not part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch (0 when the text has none).
    pub patch: u32,
}

impl Version {
    /// Build a version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// `major.minor[.patch]` at the start of `text` (after an optional `v`; a missing patch
    /// is 0) and the rest of the text; `None` unless it starts with two numbers.
    pub fn split_prefix(text: &str) -> Option<(Version, &str)> {
        let v = text.strip_prefix('v').unwrap_or(text);
        let end = v
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(v.len());
        let (core, rest) = v.split_at(end);
        let mut it = core.split('.').map(|p| p.parse::<u32>().ok());
        let major = it.next()??;
        let minor = it.next()??;
        let patch = it.next().flatten().unwrap_or(0);
        Some((Version::new(major, minor, patch), rest))
    }

    /// The first `major.minor[.patch]` anywhere in `text` (`runc version 1.1.5+ds1`,
    /// `4.9.3-dev`); `None` when there is none.
    pub fn find_in(text: &str) -> Option<Version> {
        let start = text.find(|c: char| c.is_ascii_digit())?;
        Version::split_prefix(&text[start..]).map(|(v, _)| v)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let v = |t| Version::split_prefix(t);
        assert_eq!(v("1.1.5+ds1"), Some((Version::new(1, 1, 5), "+ds1")));
        assert_eq!(v("v1.1.12"), Some((Version::new(1, 1, 12), "")));
        assert_eq!(v("1.2"), Some((Version::new(1, 2, 0), "")));
        assert_eq!(v("1.0.0-rc93"), Some((Version::new(1, 0, 0), "-rc93")));
        for bad in ["", "x", "1", "v", "runc 1.1.5", ".1.2"] {
            assert_eq!(v(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn found_anywhere() {
        assert_eq!(Version::find_in("4.3.1"), Some(Version::new(4, 3, 1)));
        assert_eq!(Version::find_in("4.9.3-dev"), Some(Version::new(4, 9, 3)));
        assert_eq!(
            Version::find_in("runc version 1.1.5+ds1"),
            Some(Version::new(1, 1, 5))
        );
        assert_eq!(Version::find_in("5.0"), Some(Version::new(5, 0, 0)));
        for bad in ["", "dev", "4", "x.y.z"] {
            assert_eq!(Version::find_in(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn order_is_numeric() {
        assert!(Version::new(1, 1, 5) < Version::new(1, 1, 12));
        assert!(Version::new(1, 10, 0) > Version::new(1, 9, 9));
        assert_eq!(Version::new(1, 1, 12).to_string(), "1.1.12");
    }
}
