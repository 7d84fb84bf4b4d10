//! The gate includes its protocol from `mount-plan-spec` (one file for both sides): hand its
//! path to rustc, as `mount-plan-launch`'s build script does for the embedded gate.

fn main() {
    let protocol = std::env::var("DEP_MOUNT_PLAN_SPEC_GATE_PROTOCOL")
        .expect("mount-plan-spec's build script publishes the gate protocol's path");
    println!("cargo:rerun-if-changed={protocol}");
    println!("cargo:rustc-env=MOUNT_PLAN_GATE_PROTOCOL={protocol}");
}
