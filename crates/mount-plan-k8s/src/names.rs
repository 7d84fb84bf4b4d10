//! Kubernetes names: claim names, Pod names, and which metadata can be a label.
//!
//! A label value is at most 63 characters of `[A-Za-z0-9._-]`, beginning and ending with an
//! alphanumeric (or empty); a label or annotation key is `[prefix/]name` with a name of at most
//! 63 such characters and an optional DNS-subdomain prefix. Our metadata does not all fit: the
//! plan digest holds `:`, the pid namespace `:[]`, a job name may be 128 bytes or end with `-`.
//! So **every** entry is written as an annotation (no limit on the value), and an entry whose
//! key and value are also valid as a label is written as a label too, so it can be selected
//! (`io.mount-plan.managed=1` and `io.mount-plan.launch=<hex>` always fit). Reading back
//! ([`read_metadata`]) takes the annotations.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::PodError;

/// Whether `s` is a DNS-1123 subdomain (lowercase alphanumerics, `-`, `.`, at most 253).
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && !s.is_empty()
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// The name of a PersistentVolumeClaim (a DNS-1123 subdomain).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClaimName(String);

impl ClaimName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ClaimName {
    type Err = PodError;
    fn from_str(value: &str) -> Result<Self, PodError> {
        if is_dns_subdomain(value) {
            Ok(ClaimName(value.to_owned()))
        } else {
            Err(PodError::ClaimName {
                value: value.to_owned(),
            })
        }
    }
}

impl TryFrom<&str> for ClaimName {
    type Error = PodError;
    fn try_from(value: &str) -> Result<Self, PodError> {
        value.parse()
    }
}

impl fmt::Display for ClaimName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `s` is a label name segment: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both
/// ends, not empty.
fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// Whether `s` is a valid label value (which may be empty).
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

/// Whether `s` is a valid label or annotation key (`[prefix/]name`).
pub fn is_qualified_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

/// Keys to values, as labels or annotations hold them.
pub type Metadata = BTreeMap<String, String>;

/// Split metadata into (labels, annotations): everything is an annotation; what fits is a
/// label too. A key that fits neither is refused.
pub fn split_metadata(entries: &Metadata) -> Result<(Metadata, Metadata), PodError> {
    let mut labels = BTreeMap::new();
    for (k, v) in entries {
        if !is_qualified_key(k) {
            return Err(PodError::MetadataKey { value: k.clone() });
        }
        if is_label_value(v) {
            labels.insert(k.clone(), v.clone());
        }
    }
    Ok((labels, entries.clone()))
}

/// The metadata a Pod carries, as [`split_metadata`] wrote it: its annotations, with any label
/// that is not also an annotation.
pub fn read_metadata(
    labels: Option<&BTreeMap<String, String>>,
    annotations: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut out = labels.cloned().unwrap_or_default();
    if let Some(a) = annotations {
        out.extend(a.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}

/// A Pod name for job `job` (a DNS-1123 label, at most 63): `mount-plan-` and the job name
/// lowercased, every other character than `[a-z0-9-]` made `-`, cut to fit, then `-suffix`
/// when one is given (the launch id's first characters, which keep two launches apart).
pub fn pod_name(job: &str, suffix: Option<&str>) -> String {
    let mut base: String = job
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let room = 63 - "mount-plan-".len() - suffix.map_or(0, |s| s.len() + 1);
    base.truncate(room);
    let base = base.trim_matches('-');
    let mut name = format!("mount-plan-{base}");
    if base.is_empty() {
        name.pop();
    }
    if let Some(s) = suffix {
        name.push('-');
        name.push_str(s);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_names() {
        assert!("site-ws".parse::<ClaimName>().is_ok());
        assert!("a.b-c".parse::<ClaimName>().is_ok());
        for bad in [
            "",
            "Site",
            "-a",
            "a-",
            "a..b",
            "a_b",
            "a/b",
            &"a".repeat(254),
        ] {
            assert_eq!(
                bad.parse::<ClaimName>().unwrap_err().rule(),
                "k8s-claim-name"
            );
        }
    }

    #[test]
    fn metadata_that_does_not_fit_a_label_is_only_an_annotation() {
        let entries: BTreeMap<String, String> = [
            ("io.mount-plan.managed", "1"),
            ("io.mount-plan.plan-digest", "sha256:00ff"),
            ("io.mount-plan.pid-ns", "pid:[4026531836]"),
            ("io.mount-plan.job", "job-"),
            ("team", &"x".repeat(64)),
            ("example.com/owner", "me"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (labels, annotations) = split_metadata(&entries).unwrap();
        assert_eq!(annotations, entries);
        assert_eq!(
            labels.keys().map(String::as_str).collect::<Vec<_>>(),
            ["example.com/owner", "io.mount-plan.managed"]
        );
        assert_eq!(read_metadata(Some(&labels), Some(&annotations)), entries);
        let bad = BTreeMap::from([("a/b/c".to_owned(), "v".to_owned())]);
        assert_eq!(split_metadata(&bad).unwrap_err().rule(), "k8s-metadata-key");
    }

    #[test]
    fn pod_names_are_dns_labels() {
        assert_eq!(pod_name("job-1", None), "mount-plan-job-1");
        assert_eq!(
            pod_name("Train_2026.11", Some("ab12")),
            "mount-plan-train-2026-11-ab12"
        );
        let long = pod_name(&"J".repeat(128), Some("0123456789"));
        assert_eq!(long.len(), 63);
        assert!(is_label_name(&long));
        assert_eq!(pod_name("_", None), "mount-plan");
    }
}
