//! Build the in-container gate (`gate/main.rs` of this package, std only) as a static
//! executable with rustc alone, so that [`crate::gate`] can embed it: every launch copies it
//! into the container, whatever C library the image has (or none). The source lives inside
//! this package so that it travels with it (`cargo package`, the Python sdist); the
//! `mount-plan-gate` crate only points at the same file to lint and unit-test it.
//!
//! A package without the gate's source is a packaging bug, not a machine's limit: the build
//! fails, naming the missing file.
//!
//! A machine whose C library cannot link statically still builds this crate: the gate is
//! then empty and every launch is refused with a message saying how to get it, never run
//! without it.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let src = manifest.join("gate").join("main.rs");
    println!("cargo:rerun-if-changed={}", src.display());
    assert!(
        src.is_file(),
        "the in-container gate's source {src:?} is missing: this mount-plan-launch package \
         was made without it, and every launch would be refused"
    );
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("mount-plan-gate");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("set by cargo");
    let built = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "--crate-name",
            "mount_plan_gate",
        ])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args(["-C", "target-feature=+crt-static", "-C", "codegen-units=1"])
        .args(["--target", &target, "-o"])
        .arg(&out)
        .arg(&src)
        .status();
    match built {
        Ok(s) if s.success() => {}
        other => {
            println!(
                "cargo:warning=the in-container gate could not be linked statically ({other:?}): \
                 launches will be refused; install the static C library (Debian: libc6-dev, \
                 Fedora: glibc-static) and rebuild"
            );
            std::fs::write(&out, b"").expect("OUT_DIR is writable");
        }
    }
}
