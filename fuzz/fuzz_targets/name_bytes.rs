//! Raw bytes into `JobName::parse_bytes`: the verdict matches the grammar rule by rule, an
//! accepted name is one normal ASCII component, and `Layout::job` reserves shared names in
//! every letter case.
//!
//! The check lives in `crates/mount-plan/tests/support/invariants.rs`, which the corpus
//! replay test (`cargo test -p mount-plan --test fuzz_corpus`) runs too.
#![no_main]

#[path = "../../crates/mount-plan/tests/support/invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::check_name_bytes(data));
