//! Structured input (workspace and container root from path components, job, shared names,
//! root policy, extra mounts): verdicts match the reference rules and every plan built holds
//! every invariant.
//!
//! The check lives in `crates/mount-plan/tests/support/invariants.rs`, which the corpus
//! replay test (`cargo test -p mount-plan --test fuzz_corpus`) runs too.
#![no_main]

#[path = "../../crates/mount-plan/tests/support/invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::check_plan_bytes(data));
