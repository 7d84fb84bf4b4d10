//! The gate directory as a launcher's environment names it ([`gate_dir`]), and the bind
//! source the audit expects ([`expected_source`]): in their own test binary, one test, so
//! that nothing else reads the variables while it sets them. (Which directory for which
//! variables and uid is decided in `gate_dir_of`, unit-tested in `gate_copy.rs`.)

use std::path::PathBuf;

use mount_plan_launch::gate_copy::{expected_source, gate_dir, GateCopy, GATE_DIR_ENV};

#[test]
fn the_environment_names_the_gate_directory_and_the_bind_source_is_the_copy_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let gates = dir.path().join("gates");
    std::env::set_var(GATE_DIR_ENV, &gates);
    assert_eq!(gate_dir(), gates);
    let copy = GateCopy::ensure().unwrap();
    assert_eq!(
        copy.path().parent(),
        Some(std::fs::canonicalize(&gates).unwrap().as_path())
    );
    assert_eq!(expected_source(), copy.source());
    // Empty is unset: another directory (root's, or this user's).
    std::env::set_var(GATE_DIR_ENV, "");
    assert_ne!(gate_dir(), gates);
    assert!(gate_dir().is_absolute());
    assert_ne!(gate_dir(), PathBuf::new());
}
