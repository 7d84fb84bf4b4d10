//! Hosts the cross-crate and engine tests in `tests/` (see `tests/support/`), and compiles the
//! README's and docs/lifecycle.md's Rust examples as doctests, since they use several crates of the workspace.

/// The README's Rust examples, compiled (and, where they need no engine, run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The lifecycle page's Rust example (the API a launcher author copies), compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../docs/lifecycle.md")]
pub struct LifecycleDoctests;
