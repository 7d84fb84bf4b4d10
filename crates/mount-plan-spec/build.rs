//! Hand the gate protocol file's path to the build scripts of direct dependents (as
//! `DEP_MOUNT_PLAN_SPEC_GATE_PROTOCOL`): the in-container gate is compiled by rustc alone and
//! includes that file, so the launcher and the gate speak from one source.

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo");
    let file = std::path::Path::new(&manifest).join("src/gate_protocol.rs");
    println!("cargo:rerun-if-changed=src/gate_protocol.rs");
    println!("cargo:gate_protocol={}", file.display());
}
