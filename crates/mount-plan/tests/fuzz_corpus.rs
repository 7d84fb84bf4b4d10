//! Replays the committed seed corpus of every fuzz target (`fuzz/corpus/<target>/*`) through
//! the same check functions the cargo-fuzz targets call, so `cargo test` exercises them
//! without libFuzzer.
//!
//! Structured seeds are named after what they decode to: `built.N` builds a plan, any other
//! name is the rule id that refuses it (see `invariants::outcome`). The replay asserts that,
//! so the corpus keeps reaching plans and every named refusal. A seed found by fuzzing can be
//! added under the name of its outcome.

#[path = "support/invariants.rs"]
mod invariants;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).expect("read corpus file");
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, data)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "corpus {} has {} files; a seed corpus is committed",
        dir.display(),
        files.len()
    );
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    let files = corpus(target);
    for (name, data) in &files {
        let result = std::panic::catch_unwind(|| check(data));
        assert!(result.is_ok(), "{target}: seed {name} fails");
    }
    eprintln!("{target}: replayed {} corpus files", files.len());
}

/// Each seed of a structured target decodes to the outcome its name says.
fn outcomes_match_names(
    target: &str,
    decode: fn(&[u8]) -> arbitrary::Result<invariants::PlanInput>,
) {
    let files = corpus(target);
    let mut built = 0;
    for (name, data) in &files {
        let want = name.split('.').next().unwrap();
        let Ok(input) = decode(data) else {
            assert_eq!(
                want, "undecodable",
                "{target}: seed {name} decodes to nothing"
            );
            continue;
        };
        let got = invariants::outcome(&input);
        assert_eq!(got, want, "{target}: seed {name} decodes to {input:?}");
        built += usize::from(got == "built");
    }
    assert!(built >= 2, "{target}: fewer than two seeds build a plan");
}

#[test]
fn name_bytes_corpus() {
    replay("name_bytes", invariants::check_name_bytes);
    let files = corpus("name_bytes");
    let accepted: Vec<&str> = files
        .iter()
        .filter(|(_, d)| mount_plan::JobName::parse_bytes(d).is_ok())
        .map(|(n, _)| n.as_str())
        .collect();
    // Startup and LOCAL are valid names that Layout::job reserves.
    assert_eq!(
        accepted,
        [
            "LOCAL",
            "Startup",
            "job-1",
            "job_1",
            "long-128",
            "train-2026.11",
            "uuid"
        ]
    );
}

#[test]
fn plan_invariants_corpus() {
    replay("plan_invariants", invariants::check_plan_bytes);
    outcomes_match_names("plan_invariants", invariants::plan_input_from_bytes);
}

#[test]
fn render_roundtrip_corpus() {
    replay("render_roundtrip", invariants::check_render_bytes);
    outcomes_match_names("render_roundtrip", |data| {
        invariants::render_input_from_bytes(data).map(|(_, input)| input)
    });
}
