//! Test support shared by the crates' engine tests (dev-only, never published).
//!
//! - [`harness`]: a test binary with `harness = false` whose tests need an engine, root or a
//!   fixture: a missing need shows as `ignored (<why>)` in the summary (a failure under `CI`).
//! - [`engines`]: the test engines, listed once, each with its socket (and, with the
//!   `endpoints` feature, the front door's endpoint).
//! - [`image`]: the offline busybox image (tar and import) for the tests and the benchmark.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod engines;
pub mod harness;
pub mod image;
