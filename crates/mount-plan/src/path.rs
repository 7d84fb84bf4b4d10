//! Absolute, normalised paths: the host workspace, bind sources and container targets.

use std::fmt;
use std::str::FromStr;

use crate::JobName;

/// The longest accepted path, in bytes (Linux `PATH_MAX` less the terminating NUL).
pub const MAX_PATH_LEN: usize = 4095;

/// Container paths that may never hold the workspace root or an extra mount.
pub const FORBIDDEN_CONTAINER_PREFIXES: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Why a path was refused. Every variant names a stable rule id ([`PathError::rule`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path is empty.
    #[error("{rule}the {what} \"\" is empty", rule = self.prefix())]
    Empty {
        /// Which path this is (for example "host workspace").
        what: &'static str,
    },
    /// The path does not start with `/`.
    #[error("{rule}the {what} {value:?} does not start with '/'", rule = self.prefix())]
    NotAbsolute {
        /// Which path this is.
        what: &'static str,
        /// The refused value.
        value: String,
    },
    /// The path is `/` itself.
    #[error(
        "{rule}the {what} \"/\" is the filesystem root, which is not allowed here", rule = self.prefix()
    )]
    IsRoot {
        /// Which path this is.
        what: &'static str,
    },
    /// The path is not in normal form.
    #[error(
        "{rule}the {what} {value:?} is not normalised ({detail}); write it without '.', '..', '//' or a trailing '/'", rule = self.prefix()
    )]
    NotNormal {
        /// Which path this is.
        what: &'static str,
        /// The refused value.
        value: String,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// The path contains NUL or another control character.
    #[error(
        "{rule}the {what} {value:?} contains the control character {found:?}", rule = self.prefix()
    )]
    ControlChar {
        /// Which path this is.
        what: &'static str,
        /// The refused value.
        value: String,
        /// The offending character.
        found: char,
    },
    /// The path is longer than [`MAX_PATH_LEN`].
    #[error(
        "{rule}the {what} {value:?} is {len} bytes, the limit is {MAX_PATH_LEN}", rule = self.prefix()
    )]
    TooLong {
        /// Which path this is.
        what: &'static str,
        /// The refused value.
        value: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A container path under `/proc`, `/sys` or `/dev`.
    #[error(
        "{rule}the {what} {value:?} is at or under {prefix:?}, which the kernel and engine own", rule = self.prefix()
    )]
    KernelFs {
        /// Which path this is.
        what: &'static str,
        /// The refused value.
        value: String,
        /// The forbidden prefix.
        prefix: &'static str,
    },
}

crate::rules!(PathError, "path", {
    Empty => "path-empty",
    NotAbsolute => "not-absolute",
    IsRoot => "is-root",
    NotNormal => "not-normal",
    ControlChar => "control-char",
    TooLong => "path-too-long",
    KernelFs => "kernel-fs",
});

impl PathError {
    /// The refused path, as text.
    pub fn value(&self) -> &str {
        match self {
            PathError::Empty { .. } => "",
            PathError::IsRoot { .. } => "/",
            PathError::NotAbsolute { value, .. }
            | PathError::NotNormal { value, .. }
            | PathError::ControlChar { value, .. }
            | PathError::TooLong { value, .. }
            | PathError::KernelFs { value, .. } => value,
        }
    }
}

/// Check the grammar shared by every absolute path here.
fn check_abs(value: &str, what: &'static str) -> Result<(), PathError> {
    if value.is_empty() {
        return Err(PathError::Empty { what });
    }
    if let Some(found) = value.chars().find(|c| c.is_control()) {
        return Err(PathError::ControlChar {
            what,
            value: value.to_owned(),
            found,
        });
    }
    if value.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong {
            what,
            value: value.to_owned(),
            len: value.len(),
        });
    }
    if !value.starts_with('/') {
        return Err(PathError::NotAbsolute {
            what,
            value: value.to_owned(),
        });
    }
    if value == "/" {
        return Err(PathError::IsRoot { what });
    }
    let not_normal = |detail| PathError::NotNormal {
        what,
        value: value.to_owned(),
        detail,
    };
    if value.ends_with('/') {
        return Err(not_normal("trailing '/'"));
    }
    for component in value[1..].split('/') {
        match component {
            "" => return Err(not_normal("empty component")),
            "." => return Err(not_normal("'.' component")),
            ".." => return Err(not_normal("'..' component")),
            _ => {}
        }
    }
    Ok(())
}

/// True when `inner` is `outer` or lies below it, compared by whole components.
pub(crate) fn is_within(inner: &str, outer: &str) -> bool {
    inner == outer
        || (inner.len() > outer.len()
            && inner.starts_with(outer)
            && inner.as_bytes()[outer.len()] == b'/')
}

macro_rules! abs_path_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// What this path is called in error messages.
            pub const WHAT: &'static str = $what;

            /// Parse and validate.
            pub fn parse(value: &str) -> Result<Self, PathError> {
                Self::parse_as(value, $what)
            }

            /// Parse and validate; errors call the path `what` (for example "host workspace").
            pub fn parse_as(value: &str, what: &'static str) -> Result<Self, PathError> {
                check_abs(value, what)?;
                let extra: fn(&str, &'static str) -> Result<(), PathError> = $extra;
                extra(value, what)?;
                Ok($name(value.to_owned()))
            }

            /// The path as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// This path with one validated name appended. Refused (rule `path-too-long`) when the
            /// result would be longer than [`MAX_PATH_LEN`]: a name never adds `.`, `..`, `/`
            /// or a control character, so length is the only rule the join can break.
            pub fn join(&self, name: &JobName) -> Result<$name, PathError> {
                let joined = format!("{}/{}", self.0, name.as_str());
                if joined.len() > MAX_PATH_LEN {
                    return Err(PathError::TooLong {
                        what: Self::WHAT,
                        len: joined.len(),
                        value: joined,
                    });
                }
                Ok($name(joined))
            }

            /// True when `self` is `other` or lies below it (whole components).
            pub fn is_within(&self, other: &$name) -> bool {
                is_within(&self.0, &other.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = PathError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = PathError;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::parse(s)
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

abs_path_type!(
    /// An absolute, normalised path on the host, as the engine sees it: the workspace W or
    /// the source of a bind. Not `/`, no `.`/`..`/empty components, no trailing `/`, no NUL or
    /// control characters. Commas, colons, spaces, quotes and `=` are legal and survive every
    /// renderer.
    HostPath,
    "host path",
    |_, _| Ok(())
);

abs_path_type!(
    /// An absolute, normalised path inside the container: the workspace root R, a mount
    /// target or the working directory. As [`HostPath`], and never at or under `/proc`,
    /// `/sys` or `/dev`.
    ContainerPath,
    "container path",
    |value, what| match FORBIDDEN_CONTAINER_PREFIXES
        .iter()
        .find(|p| is_within(value, p))
    {
        Some(prefix) => Err(PathError::KernelFs {
            what,
            value: value.to_owned(),
            prefix,
        }),
        None => Ok(()),
    }
);
