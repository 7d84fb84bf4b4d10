//! Golden manifests: every case of `support/cases.rs` rendered and compared byte for byte with
//! the committed file in `tests/golden/`; every golden file parses back into `k8s_openapi`'s
//! `Pod` without loss (same JSON value, same bytes when written again).
//!
//! After an intended change: `UPDATE_GOLDEN=1 cargo test -p mount-plan-k8s --test golden`,
//! then read the diff.

#[path = "support/cases.rs"]
mod cases;

use std::path::PathBuf;

use mount_plan_k8s::k8s_openapi::api::core::v1::Pod;
use mount_plan_k8s::{render_pod, to_json, to_yaml};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check(name: &str, rendered: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, rendered).unwrap();
        return;
    }
    let golden = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        golden == rendered,
        "{name} differs from the rendered Pod:\n--- golden\n{golden}\n--- rendered\n{rendered}"
    );
}

#[test]
fn every_case_matches_its_golden_file() {
    for (name, plan, options) in cases::cases() {
        let pod = render_pod(&plan, &options).unwrap();
        check(&name, &format!("{}\n", to_json(&pod)));
    }
    let (_, plan, options) = cases::cases()
        .into_iter()
        .find(|(n, ..)| n == "default-1.33.json")
        .unwrap();
    check(
        "default-1.33.yaml",
        &to_yaml(&render_pod(&plan, &options).unwrap()),
    );
}

#[test]
fn every_golden_file_parses_back_without_loss() {
    let mut seen = 0;
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".json") {
            let pod: Pod = serde_json::from_str(&text).unwrap();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                serde_json::to_value(&pod).unwrap(),
                value,
                "{name}: a field was lost"
            );
            assert_eq!(format!("{}\n", to_json(&pod)), text, "{name}");
        } else if name.ends_with(".yaml") {
            let pod: Pod = serde_norway::from_str(&text).unwrap();
            let value: serde_json::Value = serde_norway::from_str(&text).unwrap();
            assert_eq!(
                serde_json::to_value(&pod).unwrap(),
                value,
                "{name}: a field was lost"
            );
            assert_eq!(to_yaml(&pod), text, "{name}");
        } else {
            panic!("unexpected file {name} in tests/golden");
        }
        seen += 1;
    }
    assert_eq!(
        seen,
        cases::cases().len() + 1,
        "a golden file without a case, or the reverse"
    );
}
