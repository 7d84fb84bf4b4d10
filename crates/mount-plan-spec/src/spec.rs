//! The launch spec: everything a caller may choose about a job container, and nothing that
//! touches mounts, volumes, the working directory, privileges or host namespaces.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::protection::Protection;

/// Prefix of the labels this crate sets on every container; callers cannot set them.
pub const LABEL_PREFIX: &str = "io.mount-plan.";
/// Label marking a container as launched by mount-plan (value `1`).
pub const LABEL_MANAGED: &str = "io.mount-plan.managed";
/// Label carrying the job name J.
pub const LABEL_JOB: &str = "io.mount-plan.job";
/// Label carrying the plan digest (`mount_plan_launch::plan_digest`).
pub const LABEL_PLAN_DIGEST: &str = "io.mount-plan.plan-digest";

const MAX_VALUE_LEN: usize = 4096;

/// Why a launch spec value was refused. Every message names the rule and quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The image reference is empty, too long, starts with `-` or holds whitespace/control
    /// characters.
    #[error("{rule}image {value:?} is not a plain image reference (non-empty, at most 512 bytes, no whitespace or control characters, not starting with '-')", rule = self.prefix())]
    Image {
        /// The refused value.
        value: String,
    },
    /// An environment entry is not `KEY=VALUE`, or its key breaks `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("{rule}environment entry {value:?} needs the form KEY=VALUE with KEY matching [A-Za-z_][A-Za-z0-9_]*", rule = self.prefix())]
    EnvKey {
        /// The refused entry.
        value: String,
    },
    /// A value holds a NUL byte or is too long.
    #[error("{rule}{what} {value:?} holds a NUL byte or is longer than 4096 bytes", rule = self.prefix())]
    Value {
        /// What the value is (`environment value`, `command argument`, `label value`).
        what: &'static str,
        /// The refused value.
        value: String,
    },
    /// The same environment key is given twice.
    #[error("{rule}environment key {key:?} is given twice", rule = self.prefix())]
    EnvDuplicate {
        /// The repeated key.
        key: String,
    },
    /// The user is not `UID[:GID]` with numeric ids.
    #[error("{rule}user {value:?} is not UID or UID:GID with numeric ids", rule = self.prefix())]
    User {
        /// The refused value.
        value: String,
    },
    /// The network would join a host or another container's namespace.
    #[error("{rule}network {value:?} would share a host or container network namespace; use none, default or a named network", rule = self.prefix())]
    NetworkNamespace {
        /// The refused value.
        value: String,
    },
    /// The network name breaks `[A-Za-z0-9][A-Za-z0-9_.-]*` (at most 128 bytes).
    #[error("{rule}network {value:?} is not a plain network name ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 128 bytes)", rule = self.prefix())]
    NetworkName {
        /// The refused value.
        value: String,
    },
    /// The container name breaks `[A-Za-z0-9][A-Za-z0-9_.-]*` (at most 128 bytes).
    #[error("{rule}container name {value:?} does not match [A-Za-z0-9][A-Za-z0-9_.-]* (at most 128 bytes)", rule = self.prefix())]
    ContainerName {
        /// The refused value.
        value: String,
    },
    /// A label key is empty, too long or holds characters outside `[A-Za-z0-9._/-]`.
    #[error("{rule}label key {value:?} does not match [A-Za-z0-9][A-Za-z0-9._/-]* (at most 256 bytes)", rule = self.prefix())]
    LabelKey {
        /// The refused key.
        value: String,
    },
    /// A label key uses the reserved `io.mount-plan.` prefix.
    #[error("{rule}label key {value:?} uses the reserved prefix \"io.mount-plan.\"", rule = self.prefix())]
    LabelReserved {
        /// The refused key.
        value: String,
    },
    /// A GPU request is malformed.
    #[error(
        "{rule}gpu request {value:?} is not \"all\", a count above 0, or device ids", rule = self.prefix()
    )]
    Gpus {
        /// The refused value.
        value: String,
    },
    /// A resource limit is out of range.
    #[error("{rule}{what} {value:?} is out of range ({range})", rule = self.prefix())]
    Resource {
        /// Which limit.
        what: &'static str,
        /// The refused value.
        value: String,
        /// The accepted range.
        range: &'static str,
    },
    /// A duration (a stop grace, a timeout, an age) is not a number of seconds from 0 to its
    /// bound: a longer one would overflow the lifecycle's clock arithmetic.
    #[error("{rule}{what} {value:?} is not a number of seconds from 0 to {max_secs}", rule = self.prefix())]
    Duration {
        /// Which duration (`--stop-grace`, `stop_grace`...).
        what: &'static str,
        /// The refused value.
        value: String,
        /// The largest accepted value, in seconds.
        max_secs: u64,
    },
    /// The protection id is unknown.
    #[error("{rule}{value:?} is not a protection id (one of {known})", rule = self.prefix())]
    Protection {
        /// The refused value.
        value: String,
        /// The known ids, comma-separated.
        known: String,
    },
    /// The engine kind is unknown.
    #[error("{rule}{value:?} is not an engine kind (one of docker, podman, swarm, kubernetes)", rule = self.prefix())]
    EngineKind {
        /// The refused value.
        value: String,
    },
    /// A capability name is not one Linux knows.
    #[error("{rule}{value:?} is not a Linux capability name (NAME or CAP_NAME, any case; grantable: {grantable})", rule = self.prefix())]
    Capability {
        /// The refused value.
        value: String,
        /// The capabilities a job may be granted, comma-separated.
        grantable: String,
    },
    /// A capability a job is never granted.
    #[error("{rule}capability {value:?} is never granted to a job: {why}", rule = self.prefix())]
    CapabilityForbidden {
        /// The refused value.
        value: String,
        /// Why it is never granted.
        why: &'static str,
    },
    /// A placement constraint is not `KEY==VALUE` or `KEY!=VALUE` over a key Swarm knows.
    #[error("{rule}placement constraint {value:?} is not KEY==VALUE or KEY!=VALUE with KEY one of node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.NAME, engine.labels.NAME and a plain VALUE", rule = self.prefix())]
    Constraint {
        /// The refused value.
        value: String,
    },
}

mount_plan::rules!(SpecError, "spec", {
    Image => "image",
    EnvKey => "env-key",
    Value => "value",
    EnvDuplicate => "env-duplicate",
    User => "user",
    NetworkNamespace => "network-namespace",
    NetworkName => "network-name",
    ContainerName => "container-name",
    LabelKey => "label-key",
    LabelReserved => "label-reserved",
    Gpus => "gpus",
    Resource => "resource",
    Duration => "duration",
    Protection => "protection",
    EngineKind => "engine-kind",
    Constraint => "constraint",
    Capability => "capability",
    CapabilityForbidden => "capability-forbidden",
});

impl SpecError {
    /// The refused value, as text.
    pub fn value(&self) -> &str {
        match self {
            SpecError::EnvDuplicate { key } => key,
            SpecError::Image { value }
            | SpecError::EnvKey { value }
            | SpecError::Value { value, .. }
            | SpecError::User { value }
            | SpecError::NetworkNamespace { value }
            | SpecError::NetworkName { value }
            | SpecError::ContainerName { value }
            | SpecError::LabelKey { value }
            | SpecError::LabelReserved { value }
            | SpecError::Gpus { value }
            | SpecError::Resource { value, .. }
            | SpecError::Duration { value, .. }
            | SpecError::Protection { value, .. }
            | SpecError::EngineKind { value }
            | SpecError::Capability { value, .. }
            | SpecError::CapabilityForbidden { value, .. }
            | SpecError::Constraint { value, .. } => value,
        }
    }
}

/// The longest duration a launch takes from its caller (a stop grace, a call or connect
/// timeout, `gc --older-than`): a day. Bounded where it is parsed, so that no sum of durations
/// in the lifecycle can overflow.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `secs` seconds as a duration, refused ([`SpecError::Duration`], naming `what`) unless it
/// is a number from 0 to [`MAX_DURATION`].
pub fn duration_secs(what: &'static str, secs: f64) -> Result<std::time::Duration, SpecError> {
    if secs.is_finite() && (0.0..=MAX_DURATION.as_secs_f64()).contains(&secs) {
        return Ok(std::time::Duration::from_secs_f64(secs));
    }
    Err(SpecError::Duration {
        what,
        value: secs.to_string(),
        max_secs: MAX_DURATION.as_secs(),
    })
}

/// [`duration_secs`] for a whole number of seconds (the CLI's options), quoting it exactly.
pub fn duration_whole_secs(
    what: &'static str,
    secs: u64,
) -> Result<std::time::Duration, SpecError> {
    if secs <= MAX_DURATION.as_secs() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    Err(SpecError::Duration {
        what,
        value: secs.to_string(),
        max_secs: MAX_DURATION.as_secs(),
    })
}

fn plain_name(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn check_value(what: &'static str, value: &str) -> Result<(), SpecError> {
    if value.contains('\0') || value.len() > MAX_VALUE_LEN {
        return Err(SpecError::Value {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);
        impl $name {
            /// The validated value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl TryFrom<&str> for $name {
            type Error = SpecError;
            fn try_from(value: &str) -> Result<Self, SpecError> {
                value.parse()
            }
        }
    };
}

string_newtype!(
    /// An image reference (name, tag or digest, or an image id), checked for shape only:
    /// the engine resolves it.
    ImageRef
);

impl FromStr for ImageRef {
    type Err = SpecError;
    fn from_str(value: &str) -> Result<Self, SpecError> {
        if value.is_empty()
            || value.len() > 512
            || value.starts_with('-')
            || value.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(SpecError::Image {
                value: value.to_owned(),
            });
        }
        Ok(ImageRef(value.to_owned()))
    }
}

impl ImageRef {
    /// The SHA-256 digest this reference names its image by, when it names it by content: a
    /// full image id (`sha256:HEX` or the bare 64 hex digits) or a digest-pinned name
    /// (`NAME@sha256:HEX`). Such a reference means the same image, and so the same
    /// configuration, wherever and whenever it resolves; a tag (`NAME:TAG`) or a short id does
    /// not (a tag moves, a short id can come to match another image).
    pub fn content_digest(&self) -> Option<&str> {
        let hex =
            |h: &str| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let digest = match self.0.rsplit_once('@') {
            Some((name, digest)) if !name.is_empty() => digest.strip_prefix("sha256:")?,
            Some(_) => return None,
            None => self.0.strip_prefix("sha256:").unwrap_or(&self.0),
        };
        hex(digest).then_some(digest)
    }
}

string_newtype!(
    /// A container name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 128 bytes.
    ContainerName
);

impl FromStr for ContainerName {
    type Err = SpecError;
    fn from_str(value: &str) -> Result<Self, SpecError> {
        if !plain_name(value) {
            return Err(SpecError::ContainerName {
                value: value.to_owned(),
            });
        }
        Ok(ContainerName(value.to_owned()))
    }
}

/// One environment variable, `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvVar {
    key: String,
    value: String,
}

impl EnvVar {
    /// Build from a key and a value.
    pub fn new(key: &str, value: &str) -> Result<Self, SpecError> {
        let k = key.as_bytes();
        let key_ok = !k.is_empty()
            && k.len() <= 256
            && (k[0].is_ascii_alphabetic() || k[0] == b'_')
            && k.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
        if !key_ok {
            return Err(SpecError::EnvKey {
                value: format!("{key}={value}"),
            });
        }
        check_value("environment value", value)?;
        Ok(EnvVar {
            key: key.to_owned(),
            value: value.to_owned(),
        })
    }
    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl FromStr for EnvVar {
    type Err = SpecError;
    /// Parse `KEY=VALUE` (the value may be empty and may hold `=`).
    fn from_str(entry: &str) -> Result<Self, SpecError> {
        match entry.split_once('=') {
            Some((k, v)) => EnvVar::new(k, v).map_err(|e| match e {
                SpecError::EnvKey { .. } => SpecError::EnvKey {
                    value: entry.to_owned(),
                },
                other => other,
            }),
            None => Err(SpecError::EnvKey {
                value: entry.to_owned(),
            }),
        }
    }
}

impl fmt::Display for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// The numeric user (and optionally group) the command runs as: `UID[:GID]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct User {
    uid: u32,
    gid: Option<u32>,
}

impl User {
    /// A user id with an optional group id.
    pub fn new(uid: u32, gid: Option<u32>) -> Self {
        User { uid, gid }
    }
    /// The user id.
    pub fn uid(&self) -> u32 {
        self.uid
    }
    /// The group id, when given.
    pub fn gid(&self) -> Option<u32> {
        self.gid
    }
}

impl FromStr for User {
    type Err = SpecError;
    fn from_str(value: &str) -> Result<Self, SpecError> {
        let err = || SpecError::User {
            value: value.to_owned(),
        };
        let num = |s: &str| -> Result<u32, SpecError> {
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                return Err(err());
            }
            s.parse().map_err(|_| err())
        };
        match value.split_once(':') {
            Some((u, g)) => Ok(User::new(num(u)?, Some(num(g)?))),
            None => Ok(User::new(num(value)?, None)),
        }
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gid {
            Some(g) => write!(f, "{}:{}", self.uid, g),
            None => write!(f, "{}", self.uid),
        }
    }
}

/// The container's network. Host and other containers' namespaces cannot be expressed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Network {
    /// No network at all (loopback only). The default.
    #[default]
    None,
    /// The engine's default network (Docker's `bridge`, Podman's default).
    Default,
    /// A named user-defined network.
    Named(NetworkName),
}

string_newtype!(
    /// A user-defined network name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, not `host`.
    NetworkName
);

impl FromStr for NetworkName {
    type Err = SpecError;
    fn from_str(value: &str) -> Result<Self, SpecError> {
        match value.parse::<Network>()? {
            Network::Named(n) => Ok(n),
            _ => Err(SpecError::NetworkName {
                value: value.to_owned(),
            }),
        }
    }
}

impl FromStr for Network {
    type Err = SpecError;
    /// `none`, `default`, or a network name; `host`, `container:...`, `ns:...` and anything
    /// else naming a namespace are refused.
    fn from_str(value: &str) -> Result<Self, SpecError> {
        let lower = value.to_ascii_lowercase();
        if lower == "host" || value.contains(':') || value.contains('/') {
            return Err(SpecError::NetworkNamespace {
                value: value.to_owned(),
            });
        }
        match lower.as_str() {
            "none" => Ok(Network::None),
            "default" => Ok(Network::Default),
            _ if plain_name(value) => Ok(Network::Named(NetworkName(value.to_owned()))),
            _ => Err(SpecError::NetworkName {
                value: value.to_owned(),
            }),
        }
    }
}

/// Caller labels. Keys under `io.mount-plan.` are reserved for the launcher's own labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// No labels.
    pub fn new() -> Self {
        Labels::default()
    }
    /// Add or replace a label.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), SpecError> {
        let k = key.as_bytes();
        let ok = !k.is_empty()
            && k.len() <= 256
            && k[0].is_ascii_alphanumeric()
            && k.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'/'));
        if !ok {
            return Err(SpecError::LabelKey {
                value: key.to_owned(),
            });
        }
        if key.to_ascii_lowercase().starts_with(LABEL_PREFIX) {
            return Err(SpecError::LabelReserved {
                value: key.to_owned(),
            });
        }
        check_value("label value", value)?;
        self.0.insert(key.to_owned(), value.to_owned());
        Ok(())
    }
    /// The labels, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Where a job may run on a cluster engine (Swarm): `KEY==VALUE` or `KEY!=VALUE`, with KEY
/// one of `node.id`, `node.hostname`, `node.role`, `node.platform.os`, `node.platform.arch`,
/// `node.labels.NAME`, `engine.labels.NAME`. Spaces around the operator are dropped; the
/// value is at most 256 bytes of `[A-Za-z0-9_.:/@+-]`. Single-host engines have one node
/// and ignore it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlacementConstraint {
    key: String,
    equal: bool,
    value: String,
}

impl PlacementConstraint {
    /// The key (`node.hostname`).
    pub fn key(&self) -> &str {
        &self.key
    }
    /// Whether the value must match (`==`) or must not (`!=`).
    pub fn is_equal(&self) -> bool {
        self.equal
    }
    /// The value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl FromStr for PlacementConstraint {
    type Err = SpecError;
    fn from_str(value: &str) -> Result<Self, SpecError> {
        let err = || SpecError::Constraint {
            value: value.to_owned(),
        };
        let (key, rest, equal) = match (value.find("=="), value.find("!=")) {
            (Some(i), None) => (&value[..i], &value[i + 2..], true),
            (None, Some(i)) => (&value[..i], &value[i + 2..], false),
            _ => return Err(err()),
        };
        let (key, rest) = (key.trim_matches(' '), rest.trim_matches(' '));
        let plain = |s: &str, extra: &[u8]| {
            !s.is_empty()
                && s.len() <= 256
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c) || extra.contains(&c))
        };
        let key_ok = match key {
            "node.id" | "node.hostname" | "node.role" | "node.platform.os"
            | "node.platform.arch" => true,
            _ => key
                .strip_prefix("node.labels.")
                .or_else(|| key.strip_prefix("engine.labels."))
                .is_some_and(|name| plain(name, b"/")),
        };
        if !key_ok || !plain(rest, b":/@+") {
            return Err(err());
        }
        Ok(PlacementConstraint {
            key: key.to_owned(),
            equal,
            value: rest.to_owned(),
        })
    }
}

impl fmt::Display for PlacementConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.equal { "==" } else { "!=" };
        write!(f, "{}{op}{}", self.key, self.value)
    }
}

/// GPUs to expose to the container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GpuRequest {
    /// Every GPU.
    All,
    /// This many GPUs (at least one).
    Count(u32),
    /// These device ids (indexes or UUIDs), each `[A-Za-z0-9_.-]+`.
    Devices(Vec<String>),
}

impl FromStr for GpuRequest {
    type Err = SpecError;
    /// `all`, a count, or `device=ID[,ID...]`.
    fn from_str(value: &str) -> Result<Self, SpecError> {
        let err = || SpecError::Gpus {
            value: value.to_owned(),
        };
        if value == "all" {
            return Ok(GpuRequest::All);
        }
        if let Some(ids) = value.strip_prefix("device=") {
            let ids: Vec<String> = ids.split(',').map(str::to_owned).collect();
            if ids.iter().any(|id| !plain_name(id)) {
                return Err(err());
            }
            return Ok(GpuRequest::Devices(ids));
        }
        match value.parse::<u32>() {
            Ok(n) if n > 0 => Ok(GpuRequest::Count(n)),
            _ => Err(err()),
        }
    }
}

macro_rules! capabilities {
    ($($(#[$m:meta])* $var:ident => $name:literal,)*) => {
        /// A Linux capability a job may be granted ([`LaunchSpec::cap_add`]). Every backend
        /// drops all capabilities and adds only these, so a job running as root can still
        /// write its own job directory but cannot plant a device node (no `MKNOD`), keep a
        /// set-id bit on a file it writes (no `FSETID`), set file capabilities (no
        /// `SETFCAP`), mount, trace or load modules.
        ///
        /// Listed are the capabilities that act only on what the container sees and leave
        /// nothing in W/J a host user gains from: `CHOWN` can give a file away, but the
        /// kernel clears its set-id bits; `DAC_OVERRIDE` and `FOWNER` bypass permission and
        /// owner checks, but read-only binds stay read-only; the rest act on the container's
        /// own processes and network namespace. Every other capability is refused by
        /// [`FromStr`], a known one with the reason (rule `capability-forbidden`). Parsed
        /// from `NAME` or `CAP_NAME`, any case.
        ///
        /// Limit: dropping capabilities does not stop root in a rootful container from
        /// making a set-user-id root file in W/J (the owner's chmod needs none); only a
        /// `nosuid` mount of W on the host, or a non-root job user, stops a host user from
        /// running it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum Capability {
            $($(#[$m])* $var,)*
        }

        impl Capability {
            /// Every capability a job may be granted.
            pub const ALL: [Capability; [$($name),*].len()] = [$(Capability::$var),*];

            /// The name without the `CAP_` prefix (`CHOWN`), as Kubernetes takes it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Capability::$var => $name,)*
                }
            }
        }
    };
}

capabilities! {
    /// `CAP_CHOWN`: change a file's owner (the kernel clears set-id bits on chown).
    Chown => "CHOWN",
    /// `CAP_DAC_OVERRIDE`: bypass file permission checks (read-only mounts stay read-only).
    DacOverride => "DAC_OVERRIDE",
    /// `CAP_FOWNER`: bypass the owner check of chmod, utime and the like.
    Fowner => "FOWNER",
    /// `CAP_KILL`: signal any process in the container's PID namespace.
    Kill => "KILL",
    /// `CAP_SETGID`: change group ids inside the container.
    Setgid => "SETGID",
    /// `CAP_SETUID`: change user ids inside the container.
    Setuid => "SETUID",
    /// `CAP_SETPCAP`: drop capabilities from the bounding set (never beyond it).
    Setpcap => "SETPCAP",
    /// `CAP_NET_BIND_SERVICE`: bind ports below 1024 in the container's network namespace.
    NetBindService => "NET_BIND_SERVICE",
    /// `CAP_NET_RAW`: raw sockets (ping) in the container's network namespace.
    NetRaw => "NET_RAW",
    /// `CAP_SYS_CHROOT`: chroot inside the container's own view.
    SysChroot => "SYS_CHROOT",
    /// `CAP_AUDIT_WRITE`: write records to the kernel's audit log (login tools need it).
    AuditWrite => "AUDIT_WRITE",
}

/// Why a capability Linux knows is never granted to a job; `None` for a grantable or an
/// unknown name (`name` upper case, without `CAP_`).
fn forbidden(name: &str) -> Option<&'static str> {
    Some(match name {
        "MKNOD" => "it lets a job plant device nodes in W/J that a host user can then open",
        "FSETID" => "it keeps set-user-id and set-group-id bits on files a job writes or chowns in W/J, for host users to run",
        "SETFCAP" => "it sets file capabilities on files in W/J, which the host honours when a host user runs them",
        "SYS_ADMIN" => "it allows mounts, namespaces and much more: the plan's mounts could be undone",
        "SYS_PTRACE" => "it traces processes, reaching past the container's confinement",
        "SYS_MODULE" => "it loads kernel modules",
        "SYS_RAWIO" => "it gives raw I/O port and device access",
        "DAC_READ_SEARCH" => "open_by_handle_at reaches host files outside the planned binds",
        "LINUX_IMMUTABLE" => "it marks files in W/J immutable or append-only, so their host owner cannot remove them",
        "NET_ADMIN" => "it reconfigures networks, firewalls and interfaces",
        "SYS_BOOT" | "SYS_TIME" | "SYS_NICE" | "SYS_RESOURCE" | "SYS_PACCT"
        | "SYS_TTY_CONFIG" | "SYSLOG" | "WAKE_ALARM" | "BLOCK_SUSPEND" | "IPC_LOCK"
        | "IPC_OWNER" | "LEASE" | "NET_BROADCAST" | "AUDIT_CONTROL" | "AUDIT_READ"
        | "MAC_ADMIN" | "MAC_OVERRIDE" | "BPF" | "PERFMON" | "CHECKPOINT_RESTORE" => {
            "it acts on the host kernel or host-wide resources, not only on the container"
        }
        "ALL" => "it grants every capability, MKNOD, FSETID and SETFCAP among them",
        _ => return None,
    })
}

impl fmt::Display for Capability {
    /// `CAP_NAME`, as Docker, Podman and Swarm take it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CAP_{}", self.as_str())
    }
}

impl FromStr for Capability {
    type Err = SpecError;
    /// `NAME` or `CAP_NAME`, any case: one of [`Capability::ALL`]. A known capability that
    /// is never granted is refused with the reason (`capability-forbidden`), anything else
    /// as no capability name (`capability`).
    fn from_str(value: &str) -> Result<Self, SpecError> {
        let upper = value.to_ascii_uppercase();
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if let Some(cap) = Capability::ALL.into_iter().find(|c| c.as_str() == name) {
            return Ok(cap);
        }
        match forbidden(name) {
            Some(why) => Err(SpecError::CapabilityForbidden {
                value: value.to_owned(),
                why,
            }),
            None => Err(SpecError::Capability {
                value: value.to_owned(),
                grantable: Capability::ALL.map(Capability::as_str).join(", "),
            }),
        }
    }
}

impl TryFrom<&str> for Capability {
    type Error = SpecError;
    fn try_from(value: &str) -> Result<Self, SpecError> {
        value.parse()
    }
}

/// Resource limits. `None` leaves the engine's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    memory_bytes: Option<u64>,
    nano_cpus: Option<u64>,
    pids_limit: Option<u64>,
}

impl Resources {
    /// No limits.
    pub fn new() -> Self {
        Resources::default()
    }
    /// Limit memory (at least 6 MiB, Docker's floor).
    pub fn with_memory_bytes(mut self, bytes: u64) -> Result<Self, SpecError> {
        if !(6 << 20..=i64::MAX as u64).contains(&bytes) {
            return Err(SpecError::Resource {
                what: "memory",
                value: bytes.to_string(),
                range: "6 MiB or more",
            });
        }
        self.memory_bytes = Some(bytes);
        Ok(self)
    }
    /// Limit CPU time, in billionths of a CPU (1_000_000_000 = one CPU).
    pub fn with_nano_cpus(mut self, nano: u64) -> Result<Self, SpecError> {
        if !(1_000_000..=i64::MAX as u64).contains(&nano) {
            return Err(SpecError::Resource {
                what: "cpus",
                value: nano.to_string(),
                range: "0.001 CPU or more",
            });
        }
        self.nano_cpus = Some(nano);
        Ok(self)
    }
    /// Limit the number of processes.
    pub fn with_pids_limit(mut self, pids: u64) -> Result<Self, SpecError> {
        if !(1..=i64::MAX as u64).contains(&pids) {
            return Err(SpecError::Resource {
                what: "pids",
                value: pids.to_string(),
                range: "1 or more",
            });
        }
        self.pids_limit = Some(pids);
        Ok(self)
    }
    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory_bytes
    }
    /// The CPU limit in billionths of a CPU.
    pub fn nano_cpus(&self) -> Option<u64> {
        self.nano_cpus
    }
    /// The process limit.
    pub fn pids_limit(&self) -> Option<u64> {
        self.pids_limit
    }
}

/// What a caller may choose about a job container.
///
/// There is deliberately no field for mounts, volumes, the working directory, privileged
/// mode, devices or host namespaces: the verified plan alone decides those, and the backend
/// refuses to start a container whose inspected state differs from it. Capabilities are a
/// typed allow-list: every backend drops them all and adds back only [`LaunchSpec::cap_add`]
/// (empty by default), whose type cannot name `MKNOD`, `FSETID`, `SETFCAP` or `SYS_ADMIN`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaunchSpec {
    /// The image.
    pub image: ImageRef,
    /// The command and its arguments; empty runs the image's default command.
    pub command: Vec<String>,
    /// Environment variables, keys unique.
    pub env: Vec<EnvVar>,
    /// The user, `UID[:GID]`; `None` keeps the image's user.
    pub user: Option<User>,
    /// The network (default: none).
    pub network: Network,
    /// Caller labels (the `io.mount-plan.*` labels are added by the backend).
    pub labels: Labels,
    /// The container name; `None` lets the engine choose.
    pub name: Option<ContainerName>,
    /// GPUs to expose.
    pub gpus: Option<GpuRequest>,
    /// Resource limits.
    pub resources: Resources,
    /// Protections of the plan that the caller accepts an engine cannot honour. A backend
    /// refuses a plan needing a protection it lacks unless it is listed here.
    pub accept_missing: BTreeSet<Protection>,
    /// Hardening the site requires ([`crate::Class::Hardening`]: nosuid, nodev, noexec): a
    /// launch on an engine that cannot apply one of them is refused instead of going ahead
    /// with a warning.
    pub require: BTreeSet<Protection>,
    /// Where the job may run, on a cluster engine (all must hold); empty: the engine's
    /// default (Swarm: workers).
    pub placement: Vec<PlacementConstraint>,
    /// Capabilities added back after every backend drops all of them (default: none).
    pub cap_add: BTreeSet<Capability>,
}

impl LaunchSpec {
    /// A spec running `image`'s default command with every other field at its default.
    pub fn new(image: ImageRef) -> Self {
        LaunchSpec {
            image,
            command: Vec::new(),
            env: Vec::new(),
            user: None,
            network: Network::None,
            labels: Labels::new(),
            name: None,
            gpus: None,
            resources: Resources::new(),
            accept_missing: BTreeSet::new(),
            require: BTreeSet::new(),
            placement: Vec::new(),
            cap_add: BTreeSet::new(),
        }
    }

    /// Set the command.
    pub fn with_command<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command = command.into_iter().map(Into::into).collect();
        self
    }

    /// Check what the field types cannot: command arguments hold no NUL, env keys are unique.
    /// Backends call this before talking to the engine.
    pub fn check(&self) -> Result<(), SpecError> {
        for arg in &self.command {
            check_value("command argument", arg)?;
        }
        let mut seen = BTreeSet::new();
        for var in &self.env {
            if !seen.insert(var.key()) {
                return Err(SpecError::EnvDuplicate {
                    key: var.key().to_owned(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keys() {
        assert_eq!("A_1=x=y".parse::<EnvVar>().unwrap().value(), "x=y");
        assert_eq!("_=".parse::<EnvVar>().unwrap().value(), "");
        for bad in ["1A=x", "A-B=x", "=x", "AB", "A B=x"] {
            assert_eq!(
                bad.parse::<EnvVar>().unwrap_err().rule(),
                "env-key",
                "{bad}"
            );
        }
        assert_eq!(
            "A=x\0y".parse::<EnvVar>().unwrap_err().rule(),
            "value",
            "NUL"
        );
    }

    #[test]
    fn users() {
        assert_eq!(
            "1000:1000".parse::<User>().unwrap(),
            User::new(1000, Some(1000))
        );
        assert_eq!("0".parse::<User>().unwrap(), User::new(0, None));
        for bad in [
            "",
            "root",
            "1000:",
            ":1",
            "1:2:3",
            "-1",
            "+1",
            "99999999999",
        ] {
            let err = bad.parse::<User>().unwrap_err();
            assert_eq!(err.rule(), "user", "{bad}");
            assert_eq!(err.value(), bad);
        }
    }

    #[test]
    fn networks() {
        assert_eq!("none".parse::<Network>().unwrap(), Network::None);
        assert_eq!("default".parse::<Network>().unwrap(), Network::Default);
        assert!(
            matches!("fl-net".parse::<Network>().unwrap(), Network::Named(n) if n.as_str() == "fl-net")
        );
        for bad in [
            "host",
            "HOST",
            "container:abc",
            "ns:/proc/1/ns/net",
            "slirp4netns:x",
        ] {
            assert_eq!(
                bad.parse::<Network>().unwrap_err().rule(),
                "network-namespace",
                "{bad}"
            );
        }
        for bad in ["", "-x", "a b", "a,b"] {
            assert_eq!(
                bad.parse::<Network>().unwrap_err().rule(),
                "network-name",
                "{bad}"
            );
        }
    }

    #[test]
    fn labels_cannot_override_ours() {
        let mut l = Labels::new();
        l.insert("team", "a").unwrap();
        for key in [
            LABEL_MANAGED,
            LABEL_JOB,
            "IO.Mount-Plan.plan-digest",
            "io.mount-plan.x",
        ] {
            assert_eq!(
                l.insert(key, "0").unwrap_err().rule(),
                "label-reserved",
                "{key}"
            );
        }
        for key in ["", "a b", "a=b", "-a"] {
            assert_eq!(l.insert(key, "0").unwrap_err().rule(), "label-key", "{key}");
        }
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("team", "a")]);
    }

    #[test]
    fn images_and_names() {
        assert!("mount-plan-probe:test".parse::<ImageRef>().is_ok());
        assert!("sha256:0123abc".parse::<ImageRef>().is_ok());
        for bad in ["", "-v", "a b", "a\nb"] {
            assert_eq!(
                bad.parse::<ImageRef>().unwrap_err().rule(),
                "image",
                "{bad:?}"
            );
        }
        assert!("job-1.x_y".parse::<ContainerName>().is_ok());
        for bad in ["", "/x", "a/b", ".a", "a b"] {
            assert_eq!(
                bad.parse::<ContainerName>().unwrap_err().rule(),
                "container-name",
                "{bad}"
            );
        }
    }

    #[test]
    fn only_a_reference_by_content_has_a_content_digest() {
        let hex = "0123456789abcdef".repeat(4);
        let digest = |r: &str| {
            r.parse::<ImageRef>()
                .unwrap()
                .content_digest()
                .map(str::to_owned)
        };
        for by_content in [
            format!("sha256:{hex}"),
            hex.clone(),
            format!("registry.example/team/img@sha256:{hex}"),
            format!("img:1.0@sha256:{hex}"),
        ] {
            assert_eq!(
                digest(&by_content).as_deref(),
                Some(hex.as_str()),
                "{by_content}"
            );
        }
        for by_name in [
            "img:latest".to_owned(),
            "sha256:0123abc".to_owned(),
            hex[..12].to_owned(),
            format!("{}0", &hex),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{}g", &hex[1..]),
            format!("img@sha512:{hex}"),
            format!("img@{hex}"),
            format!("@sha256:{hex}"),
            format!("img:{hex}"),
        ] {
            assert_eq!(digest(&by_name), None, "{by_name}");
        }
    }

    #[test]
    fn gpus_and_resources() {
        assert_eq!("all".parse::<GpuRequest>().unwrap(), GpuRequest::All);
        assert_eq!("2".parse::<GpuRequest>().unwrap(), GpuRequest::Count(2));
        assert_eq!(
            "device=0,GPU-1".parse::<GpuRequest>().unwrap(),
            GpuRequest::Devices(vec!["0".into(), "GPU-1".into()])
        );
        for bad in ["0", "", "device=", "device=a b"] {
            assert_eq!(
                bad.parse::<GpuRequest>().unwrap_err().rule(),
                "gpus",
                "{bad}"
            );
        }
        assert!(Resources::new().with_memory_bytes(1 << 20).is_err());
        assert!(Resources::new().with_pids_limit(0).is_err());
        assert_eq!(
            Resources::new().with_pids_limit(64).unwrap().pids_limit(),
            Some(64)
        );
    }

    #[test]
    fn placement_constraints() {
        let c: PlacementConstraint = "node.hostname == w-1".parse().unwrap();
        assert_eq!(
            (c.key(), c.is_equal(), c.value()),
            ("node.hostname", true, "w-1")
        );
        assert_eq!(c.to_string(), "node.hostname==w-1");
        assert_eq!(
            "node.labels.zone!=eu/1"
                .parse::<PlacementConstraint>()
                .unwrap()
                .to_string(),
            "node.labels.zone!=eu/1"
        );
        for bad in [
            "",
            "node.hostname",
            "node.hostname=w1",
            "node.name==w1",
            "node.labels.==x",
            "node.hostname==",
            "node.hostname==a b",
            "node.hostname==a==b",
            "node.hostname==a!=b",
            "node.hostname==a\nb",
        ] {
            assert_eq!(
                bad.parse::<PlacementConstraint>().unwrap_err().rule(),
                "constraint",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn capabilities_parse_as_name_or_cap_name_in_any_case() {
        for text in ["CHOWN", "chown", "CAP_CHOWN", "cap_Chown"] {
            assert_eq!(text.parse::<Capability>().unwrap(), Capability::Chown);
        }
        assert_eq!(
            "net_bind_service".parse::<Capability>().unwrap(),
            Capability::NetBindService
        );
        for cap in Capability::ALL {
            assert_eq!(cap.to_string().parse::<Capability>().unwrap(), cap);
            assert_eq!(cap.as_str().parse::<Capability>().unwrap(), cap);
            assert_eq!(cap.to_string(), format!("CAP_{}", cap.as_str()));
        }
        assert_eq!(LaunchSpec::new("i".parse().unwrap()).cap_add.len(), 0);
    }

    #[test]
    fn forbidden_capabilities_say_why() {
        let err = "mknod".parse::<Capability>().unwrap_err();
        assert_eq!(err.rule(), "capability-forbidden");
        assert_eq!(err.value(), "mknod");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("spec rule `{}`: capability \"mknod\"", err.rule())),
            "{msg}"
        );
        assert!(msg.contains("device nodes"), "{msg}");
        for bad in [
            "CAP_MKNOD",
            "FSETID",
            "setfcap",
            "SYS_ADMIN",
            "CAP_SYS_PTRACE",
            "SYS_MODULE",
            "DAC_READ_SEARCH",
            "LINUX_IMMUTABLE",
            "NET_ADMIN",
            "BPF",
            "all",
        ] {
            let err = bad.parse::<Capability>().unwrap_err();
            assert_eq!(err.rule(), "capability-forbidden", "{bad}");
            assert_eq!(err.value(), bad);
        }
        for bad in ["", "CAP_", "FOO", "CAP_CAP_CHOWN", " CHOWN", "CHOWN,KILL"] {
            let err = bad.parse::<Capability>().unwrap_err();
            assert_eq!(err.rule(), "capability", "{bad:?}");
            assert!(err.to_string().contains("NET_BIND_SERVICE"), "{err}");
        }
    }

    #[test]
    fn spec_check() {
        let mut spec = LaunchSpec::new("img".parse().unwrap()).with_command(["sh", "-c", "x"]);
        assert!(spec.check().is_ok());
        spec.env = vec!["A=1".parse().unwrap(), "A=2".parse().unwrap()];
        assert_eq!(spec.check().unwrap_err().rule(), "env-duplicate");
        spec.env.clear();
        spec.command.push("a\0b".into());
        assert_eq!(spec.check().unwrap_err().rule(), "value");
    }
}
