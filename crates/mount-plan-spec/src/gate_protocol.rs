// The in-container gate's protocol, the one source for both of its sides: the launcher
// (`mount_plan_spec::gate_protocol`, re-exported by `mount_plan_launch::gate`) and the gate
// itself (`mount-plan-gate`, compiled by rustc alone, includes this file through the path
// this crate's build script publishes). Constants only, no `use`, no inner attributes: the
// file must compile as a module of either crate.

/// Where the gate lives in the container (outside R: the root tmpfs hides nothing of it).
pub const GATE_PATH: &str = "/.mount-plan/gate";
/// The protocol version: the gate's first argument after its path; a gate refuses any other.
/// v2: the gate sets no-new-privileges before `execve`, so a v1 gate (which did not) refuses
/// a v2 launch: a stale gate installed on a cluster's nodes cannot run a job without it.
pub const GATE_PROTOCOL: &str = "v2";
/// The gate's exit status when it refuses (the command never ran): the status `docker run`
/// uses for "the container did not run the command".
pub const GATE_REFUSED: u8 = 125;
/// The environment variable a cluster engine sets to the node's name, so that a refusal
/// names the node (the gate removes it before the command runs).
pub const GATE_NODE_ENV: &str = "MOUNT_PLAN_GATE_NODE";
/// How the gate's refusal line starts: `mount-plan-gate: NONCE: refused: RULE: MESSAGE`.
pub const GATE_LINE_PREFIX: &str = "mount-plan-gate: ";
