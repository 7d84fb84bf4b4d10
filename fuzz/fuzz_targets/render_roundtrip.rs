//! Plans whose paths are full of `,` `"` `=` `:` and spaces, rendered to docker and podman
//! arguments and parsed back with a CSV reader, equal the planned mounts; `csv_quote` of free
//! text parses back to the text.
//!
//! The check lives in `crates/mount-plan/tests/support/invariants.rs`, which the corpus
//! replay test (`cargo test -p mount-plan --test fuzz_corpus`) runs too.
#![no_main]

#[path = "../../crates/mount-plan/tests/support/invariants.rs"]
mod invariants;

libfuzzer_sys::fuzz_target!(|data: &[u8]| invariants::check_render_bytes(data));
