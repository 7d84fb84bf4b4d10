//! Job names and shared directory names: one conservative grammar.

use std::fmt;
use std::str::FromStr;

/// The longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Why a name was refused. Every variant names a stable rule id ([`NameError::rule`])
/// and quotes the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("{rule}the name \"\" is empty", rule = self.prefix())]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("{rule}{value:?} is {len} bytes, the limit is {MAX_NAME_LEN}", rule = self.prefix())]
    TooLong {
        /// The refused value.
        value: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The first character is not an ASCII letter or digit.
    #[error(
        "{rule}{value:?} starts with {found:?}; a name starts with an ASCII letter or digit", rule = self.prefix()
    )]
    BadFirstChar {
        /// The refused value.
        value: String,
        /// The offending character (U+FFFD for bytes that are not UTF-8).
        found: char,
    },
    /// A character outside `[A-Za-z0-9._-]`.
    #[error(
        "{rule}{value:?} contains {found:?} at byte {index}; allowed are ASCII letters, digits, '.', '_' and '-'", rule = self.prefix()
    )]
    BadChar {
        /// The refused value.
        value: String,
        /// The offending character (U+FFFD for bytes that are not UTF-8).
        found: char,
        /// Its byte offset.
        index: usize,
    },
    /// The name ends with `.`.
    #[error("{rule}{value:?} ends with '.'", rule = self.prefix())]
    TrailingDot {
        /// The refused value.
        value: String,
    },
    /// The name equals a reserved (shared) name, ignoring ASCII case.
    #[error(
        "{rule}{value:?} is the shared directory {reserved:?} (names are compared ignoring ASCII case)", rule = self.prefix()
    )]
    Reserved {
        /// The refused value.
        value: String,
        /// The reserved name it collides with.
        reserved: String,
    },
}

crate::rules!(NameError, "name", {
    Empty => "empty",
    TooLong => "too-long",
    BadFirstChar => "bad-first-char",
    BadChar => "bad-char",
    TrailingDot => "trailing-dot",
    Reserved => "reserved",
});

impl NameError {
    /// The refused name, as text (lossy for bytes that are not UTF-8; empty for [`NameError::Empty`]).
    pub fn value(&self) -> &str {
        match self {
            NameError::Empty => "",
            NameError::TooLong { value, .. }
            | NameError::BadFirstChar { value, .. }
            | NameError::BadChar { value, .. }
            | NameError::TrailingDot { value }
            | NameError::Reserved { value, .. } => value,
        }
    }
}

/// A validated directory name: a job name or a shared directory name.
///
/// Grammar: 1 to [`MAX_NAME_LEN`] bytes; the first character an ASCII letter or digit; the
/// rest ASCII letters, digits, `.`, `_`, `-`; not ending with `.`. Such a name is always a
/// single normal path component (never `.`, `..`, empty, or containing `/`), and contains no
/// byte that any mount-option syntax treats as special (`,` `:` `=` `"` whitespace, NUL).
///
/// A `JobName` on its own is not checked against reserved names: that depends on the
/// layout, and [`crate::Layout::job`] and [`crate::Layout::plan`] do it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobName(String);

impl JobName {
    /// Parse a name from text.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        Self::parse_bytes(value.as_bytes())
    }

    /// Parse a name from raw bytes (which need not be UTF-8).
    pub fn parse_bytes(value: &[u8]) -> Result<Self, NameError> {
        let quoted = || String::from_utf8_lossy(value).into_owned();
        let Some(&first) = value.first() else {
            return Err(NameError::Empty);
        };
        if value.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong {
                value: quoted(),
                len: value.len(),
            });
        }
        if !first.is_ascii_alphanumeric() {
            return Err(NameError::BadFirstChar {
                value: quoted(),
                found: char_at(value, 0),
            });
        }
        if let Some(index) = value.iter().position(|&b| !NAME_BYTE[usize::from(b)]) {
            return Err(NameError::BadChar {
                value: quoted(),
                found: char_at(value, index),
                index,
            });
        }
        if value.last() == Some(&b'.') {
            return Err(NameError::TrailingDot { value: quoted() });
        }
        let text = String::from_utf8(value.to_vec());
        Ok(JobName(
            text.expect("every byte was checked to be ASCII above"),
        ))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Refuse this name when it equals one of `reserved`, ignoring ASCII case.
    pub fn check_not_reserved<'a, I>(&self, reserved: I) -> Result<(), NameError>
    where
        I: IntoIterator<Item = &'a JobName>,
    {
        match reserved
            .into_iter()
            .find(|r| r.0.eq_ignore_ascii_case(&self.0))
        {
            Some(r) => Err(NameError::Reserved {
                value: self.0.clone(),
                reserved: r.0.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// Whether a byte may appear in a name after its first: ASCII letters, digits, `.`, `_`, `-`.
/// A table, because `parse_bytes` looks every byte of every name up in it (the launch path
/// and `check --json` check each name once, but a stream of them checks millions).
const NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        table[b] = byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-');
        b += 1;
    }
    table
};

/// The character starting at byte `index`, or U+FFFD when the bytes there are not UTF-8.
fn char_at(value: &[u8], index: usize) -> char {
    let end = (index + 4).min(value.len());
    (index + 1..=end)
        .find_map(|e| std::str::from_utf8(&value[index..e]).ok())
        .and_then(|s| s.chars().next())
        .unwrap_or(char::REPLACEMENT_CHARACTER)
}

impl fmt::Debug for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for JobName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for JobName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for JobName {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for JobName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<JobName> for String {
    fn from(n: JobName) -> String {
        n.0
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for JobName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for JobName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        JobName::parse(&s).map_err(serde::de::Error::custom)
    }
}
