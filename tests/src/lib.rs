//! Hosts the cross-crate and engine tests in `tests/` (see `tests/support/`), and compiles the
//! README's Rust examples as doctests, since they use several crates of the workspace.

/// The README's Rust examples, compiled (and, where they need no engine, run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
