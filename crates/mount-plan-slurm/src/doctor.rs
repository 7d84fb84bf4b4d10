//! `mount-plan doctor --runtime slurm`: what each compute node runs and sees, looked at from
//! the node itself by a one-task step (`srun --nodelist=NODE sh -s`, the script on its
//! standard input), and judged here.
//!
//! A launch's guarantees rest on three things of every node that the launcher cannot see from
//! its own machine: the OCI runtime `oci.conf` runs (and that it `exec`s it: without `exec` a
//! plain `scancel` ends the step's shell and the container runs on, measured on 22.05.8), that
//! runtime's version, and that the node sees the shared directory (images, bundles) and the
//! workspace at the same paths as the launcher. This module is pure: the script, the parsing
//! of what it printed, and the judgement; [`crate::SlurmEngine`] runs it.

use mount_plan_launch::{CheckOutcome, SiteCheck, RUNC_ADVISORIES};

/// The rule: `oci.conf` is readable beside the node's `slurm.conf` and names `RunTimeRun`.
pub const RULE_OCI_CONF: &str = "node-oci-conf";
/// The rule: `RunTimeRun` starts with `exec` (the step's process is the runtime itself, so
/// Slurm's signals reach it).
pub const RULE_OCI_EXEC: &str = "node-oci-exec";
/// The rule: the program `RunTimeRun` names is on the node; its version.
pub const RULE_RUNTIME: &str = "node-runtime";
/// The rule: the node sees the shared directory at the launcher's path.
pub const RULE_SHARED: &str = "node-shared";
/// The rule: the node sees the workspace at the launcher's path (the same directory).
pub const RULE_WORKSPACE: &str = "node-workspace";
/// The rule: a one-task step ran on the node.
pub const RULE_STEP: &str = "node-step";

/// The script each node runs, after the two assignments [`node_script`] puts before it.
const NODE_SCRIPT: &str = r#"conf=${SLURM_CONF:-/etc/slurm/slurm.conf}
oci=${conf%/*}/oci.conf
if [ -r "$oci" ]; then
  echo "oci-conf: $oci"
  sed 's/^/oci: /' "$oci"
  prog=$(grep '^[[:space:]]*RunTimeRun=' "$oci" | head -n 1 | sed 's/^[[:space:]]*RunTimeRun="//; s/^exec[[:space:]]*//; s/[[:space:]"].*//')
  if [ -n "$prog" ] && command -v "$prog" >/dev/null 2>&1; then
    echo "runtime: $prog"
    echo "runtime-version: $("$prog" --version 2>&1 | head -n 1)"
    name=${prog##*/}
    pkg=$(dpkg-query -W -f '${Version}' "$name" 2>/dev/null || rpm -q --qf '%{VERSION}-%{RELEASE}' "$name" 2>/dev/null || true)
    [ -n "$pkg" ] && echo "runtime-package: $pkg"
  elif [ -n "$prog" ]; then
    echo "runtime-missing: $prog"
  fi
else
  echo "oci-conf-missing: $oci"
fi
if [ -r "$token_file" ]; then echo "shared: $(cat "$token_file")"; else echo "shared-missing: $token_file"; fi
if [ -n "$workspace" ]; then echo "workspace: $(stat -c '%i %Y' "$workspace" 2>&1)"; fi
"#;

/// The script for one node: the token file to read back (in the shared directory) and the
/// workspace to look at (empty: none), shell-quoted, then the script itself.
pub fn node_script(token_file: &str, workspace: Option<&str>) -> String {
    format!(
        "token_file={}\nworkspace={}\n{NODE_SCRIPT}",
        quote(token_file),
        quote(workspace.unwrap_or(""))
    )
}

/// `s` in single quotes for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A compute node as `sinfo -h -N -o '%N|%P|%t'` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its name.
    pub name: String,
    /// The partition to reach it by.
    pub partition: String,
    /// Its state (`idle`, `mix`, `alloc`, `down*`...).
    pub state: String,
}

impl Node {
    /// Whether a step can run there now: not down, drained, failing, in maintenance or not
    /// responding (a state ending in `*`).
    pub fn usable(&self) -> bool {
        let s = self
            .state
            .trim_end_matches(['~', '#', '!', '%', '$', '@', '^', '-']);
        !s.ends_with('*')
            && ![
                "down", "drain", "drng", "drained", "fail", "failg", "maint", "futr", "unk",
            ]
            .contains(&s)
    }
}

/// The nodes of `sinfo -h -N -o '%N|%P|%t'`, one each: in `partition` when it is given and
/// the node is in it, else in the default partition (`*`), else the first listed.
pub fn parse_nodes(sinfo: &str, partition: Option<&str>) -> Vec<Node> {
    let mut nodes: Vec<(Node, u8)> = Vec::new();
    for line in sinfo.lines() {
        let mut fields = line.trim().split('|');
        let (Some(name), Some(part), Some(state)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let default = part.ends_with('*');
        let part = part.trim_end_matches('*');
        let rank = if Some(part) == partition {
            2
        } else {
            u8::from(default)
        };
        let node = Node {
            name: name.to_owned(),
            partition: part.to_owned(),
            state: state.to_owned(),
        };
        match nodes.iter_mut().find(|(n, _)| n.name == name) {
            Some(slot) if slot.1 < rank => *slot = (node, rank),
            Some(_) => {}
            None => nodes.push((node, rank)),
        }
    }
    nodes.into_iter().map(|(n, _)| n).collect()
}

/// What the script printed on one node.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// The path of `oci.conf`, and its lines; `None` when it was not readable.
    pub oci_conf: Option<(String, Vec<String>)>,
    /// The runtime program `RunTimeRun` names, when it was found on the node.
    pub runtime: Option<String>,
    /// Its first line of `--version`.
    pub runtime_version: Option<String>,
    /// Its package's version (dpkg or rpm), when packaged.
    pub runtime_package: Option<String>,
    /// A runtime `RunTimeRun` names that is not on the node.
    pub runtime_missing: Option<String>,
    /// What the node read from the token file (`None`: it could not).
    pub shared: Option<String>,
    /// `inode mtime` of the workspace as the node sees it, or the error.
    pub workspace: Option<String>,
}

impl NodeView {
    /// Parse the script's output.
    pub fn parse(stdout: &str) -> NodeView {
        let mut view = NodeView::default();
        let mut oci_path = None;
        let mut oci_lines = Vec::new();
        for line in stdout.lines() {
            let Some((key, value)) = line.split_once(": ") else {
                continue;
            };
            let value = value.to_owned();
            match key {
                "oci-conf" => oci_path = Some(value),
                "oci" => oci_lines.push(value),
                "runtime" => view.runtime = Some(value),
                "runtime-version" => view.runtime_version = Some(value),
                "runtime-package" => view.runtime_package = Some(value),
                "runtime-missing" => view.runtime_missing = Some(value),
                "shared" => view.shared = Some(value),
                "workspace" => view.workspace = Some(value),
                _ => {}
            }
        }
        view.oci_conf = oci_path.map(|p| (p, oci_lines));
        view
    }

    /// `RunTimeRun`'s value, unquoted.
    fn run_time_run(&self) -> Option<&str> {
        let (_, lines) = self.oci_conf.as_ref()?;
        lines.iter().find_map(|l| {
            let v = l.trim().strip_prefix("RunTimeRun=")?;
            Some(v.trim().trim_matches('"'))
        })
    }
}

/// What the launcher expects every node to see.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The shared directory (for the messages).
    pub shared: &'a str,
    /// The token the launcher wrote into the shared directory.
    pub token: &'a str,
    /// The workspace and its `inode mtime` here, when it is checked.
    pub workspace: Option<(&'a str, &'a str)>,
}

/// The checks of one node from what it printed.
pub fn judge(node: &str, view: &NodeView, expected: &Expected<'_>) -> Vec<SiteCheck> {
    let check = |rule, outcome, detail: String| SiteCheck {
        place: node.to_owned(),
        rule,
        outcome,
        detail,
    };
    let mut checks = Vec::new();
    match (&view.oci_conf, view.run_time_run()) {
        (None, _) => {
            checks.push(check(
                RULE_OCI_CONF,
                CheckOutcome::Failed,
                "oci.conf is not readable beside the node's slurm.conf: srun --container cannot run a bundle"
                    .into(),
            ));
            checks.push(check(
                RULE_OCI_EXEC,
                CheckOutcome::NotChecked,
                "no oci.conf".into(),
            ));
            checks.push(check(
                RULE_RUNTIME,
                CheckOutcome::NotChecked,
                "no oci.conf".into(),
            ));
        }
        (Some((path, _)), None) => {
            checks.push(check(
                RULE_OCI_CONF,
                CheckOutcome::Failed,
                format!("{path} has no RunTimeRun: srun --container cannot run a bundle"),
            ));
            checks.push(check(
                RULE_OCI_EXEC,
                CheckOutcome::NotChecked,
                "no RunTimeRun".into(),
            ));
            checks.push(check(
                RULE_RUNTIME,
                CheckOutcome::NotChecked,
                "no RunTimeRun".into(),
            ));
        }
        (Some((path, _)), Some(run)) => {
            checks.push(check(
                RULE_OCI_CONF,
                CheckOutcome::Passed,
                format!("{path}: RunTimeRun=\"{run}\""),
            ));
            checks.push(if run.split_whitespace().next() == Some("exec") {
                check(RULE_OCI_EXEC, CheckOutcome::Passed, "RunTimeRun execs the runtime".into())
            } else {
                check(
                    RULE_OCI_EXEC,
                    CheckOutcome::Failed,
                    "RunTimeRun does not start with `exec`: scancel then ends the step's shell and the container runs on (docs/scale-out.md#slurm)".into(),
                )
            });
            checks.push(runtime_check(node, view));
        }
    }
    checks.push(match &view.shared {
        Some(token) if token.trim() == expected.token => check(
            RULE_SHARED,
            CheckOutcome::Passed,
            format!("sees {} (the launcher's token read back)", expected.shared),
        ),
        _ => check(
            RULE_SHARED,
            CheckOutcome::Failed,
            format!(
                "does not see the launcher's {} at the same path: bundles and images written there cannot run on it",
                expected.shared
            ),
        ),
    });
    if let Some((workspace, here)) = expected.workspace {
        checks.push(match view.workspace.as_deref() {
            Some(there) if there.trim() == here => check(
                RULE_WORKSPACE,
                CheckOutcome::Passed,
                format!("sees {workspace} (same inode and modification time)"),
            ),
            there => check(
                RULE_WORKSPACE,
                CheckOutcome::Failed,
                format!(
                    "sees another {workspace} than the launcher (there: {}; here: {here}): the checked directories would not be the bound ones",
                    there.unwrap_or("nothing")
                ),
            ),
        });
    }
    checks
}

/// [`RULE_RUNTIME`]: the runtime is there, and what its version says.
fn runtime_check(node: &str, view: &NodeView) -> SiteCheck {
    let check = |outcome, detail| SiteCheck {
        place: node.to_owned(),
        rule: RULE_RUNTIME,
        outcome,
        detail,
    };
    let (Some(runtime), Some(version)) = (&view.runtime, &view.runtime_version) else {
        let what = view
            .runtime_missing
            .as_deref()
            .unwrap_or("RunTimeRun's program");
        return check(
            CheckOutcome::Failed,
            format!("{what} is not on the node: no bundle can run there"),
        );
    };
    let mut detail = version.clone();
    if let Some(p) = &view.runtime_package {
        detail.push_str(&format!(" (package {p})"));
    }
    if runtime.rsplit('/').next() == Some("runc") {
        // The package's version is the more precise (a distribution's backport).
        let judged = view.runtime_package.clone().or_else(|| {
            version
                .split_whitespace()
                .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
                .map(str::to_owned)
        });
        if let Some(v) = judged {
            for advisory in RUNC_ADVISORIES {
                let fix = advisory.judge(&v);
                detail.push_str(&format!("; {} {fix}", advisory.ids));
                if let Some(w) = advisory.warning(fix, &v) {
                    detail.push_str(&format!(": {w}"));
                }
            }
        }
    }
    check(CheckOutcome::Passed, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "oci-conf: /etc/slurm/oci.conf
oci: RunTimeQuery=\"runc --root=/run/r state %n.%u.%j.%s.%t\"
oci: RunTimeRun=\"exec runc --root=/run/r run %n.%u.%j.%s.%t -b %b\"
runtime: runc
runtime-version: runc version 1.1.5+ds1
runtime-package: 1.1.5+ds1-1+deb12u1
shared: tok-1
workspace: 1234 1700000000
";

    fn expected() -> Expected<'static> {
        Expected {
            shared: "/srv/shared",
            token: "tok-1",
            workspace: Some(("/srv/shared/w", "1234 1700000000")),
        }
    }

    fn outcome(checks: &[SiteCheck], rule: &str) -> CheckOutcome {
        checks
            .iter()
            .find(|c| c.rule == rule)
            .unwrap_or_else(|| panic!("no {rule} in {checks:?}"))
            .outcome
    }

    #[test]
    fn a_node_that_sees_everything_passes_every_rule() {
        let checks = judge("n1", &NodeView::parse(GOOD), &expected());
        assert_eq!(checks.len(), 5, "{checks:?}");
        for c in &checks {
            assert_eq!(c.outcome, CheckOutcome::Passed, "{c:?}");
            assert_eq!(c.place, "n1");
        }
        let runtime = checks.iter().find(|c| c.rule == RULE_RUNTIME).unwrap();
        assert!(
            runtime.detail.contains("package 1.1.5+ds1-1+deb12u1")
                && runtime.detail.contains("fixed by the distribution's patch"),
            "{runtime:?}"
        );
    }

    #[test]
    fn run_time_run_without_exec_fails_its_rule_alone() {
        let text = GOOD.replace("RunTimeRun=\"exec runc", "RunTimeRun=\"runc");
        let checks = judge("n1", &NodeView::parse(&text), &expected());
        assert_eq!(outcome(&checks, RULE_OCI_EXEC), CheckOutcome::Failed);
        assert_eq!(outcome(&checks, RULE_OCI_CONF), CheckOutcome::Passed);
        assert_eq!(outcome(&checks, RULE_RUNTIME), CheckOutcome::Passed);
    }

    #[test]
    fn another_shared_directory_or_workspace_fails() {
        let text = GOOD
            .replace("shared: tok-1", "shared: tok-2")
            .replace("workspace: 1234", "workspace: 999");
        let checks = judge("n1", &NodeView::parse(&text), &expected());
        assert_eq!(outcome(&checks, RULE_SHARED), CheckOutcome::Failed);
        assert_eq!(outcome(&checks, RULE_WORKSPACE), CheckOutcome::Failed);
        let text = GOOD
            .replace("shared: tok-1", "shared-missing: /srv/shared/x")
            .replace(
                "workspace: 1234 1700000000",
                "workspace: stat: cannot statx: No such file",
            );
        let checks = judge("n1", &NodeView::parse(&text), &expected());
        assert_eq!(outcome(&checks, RULE_SHARED), CheckOutcome::Failed);
        let ws = checks.iter().find(|c| c.rule == RULE_WORKSPACE).unwrap();
        assert!(
            ws.outcome == CheckOutcome::Failed && ws.detail.contains("No such file"),
            "{ws:?}"
        );
    }

    #[test]
    fn no_workspace_asked_no_workspace_check() {
        let mut e = expected();
        e.workspace = None;
        let checks = judge("n1", &NodeView::parse(GOOD), &e);
        assert!(
            checks.iter().all(|c| c.rule != RULE_WORKSPACE),
            "{checks:?}"
        );
    }

    #[test]
    fn missing_oci_conf_or_runtime_fails_and_leaves_the_rest_unchecked() {
        let checks = judge(
            "n1",
            &NodeView::parse("oci-conf-missing: /etc/slurm/oci.conf\nshared: tok-1\n"),
            &expected(),
        );
        assert_eq!(outcome(&checks, RULE_OCI_CONF), CheckOutcome::Failed);
        assert_eq!(outcome(&checks, RULE_OCI_EXEC), CheckOutcome::NotChecked);
        assert_eq!(outcome(&checks, RULE_RUNTIME), CheckOutcome::NotChecked);
        assert_eq!(outcome(&checks, RULE_SHARED), CheckOutcome::Passed);
        let no_run = "oci-conf: /etc/slurm/oci.conf\noci: RunTimeQuery=\"runc state\"\n";
        let checks = judge("n1", &NodeView::parse(no_run), &expected());
        assert_eq!(outcome(&checks, RULE_OCI_CONF), CheckOutcome::Failed);
        let missing = GOOD
            .replace("runtime: runc\n", "runtime-missing: /opt/runc\n")
            .replace("runtime-version: runc version 1.1.5+ds1\n", "");
        let checks = judge("n1", &NodeView::parse(&missing), &expected());
        let rt = checks.iter().find(|c| c.rule == RULE_RUNTIME).unwrap();
        assert!(
            rt.outcome == CheckOutcome::Failed && rt.detail.contains("/opt/runc"),
            "{rt:?}"
        );
    }

    #[test]
    fn an_exposed_upstream_runc_is_named() {
        let text = GOOD
            .replace(
                "runtime-version: runc version 1.1.5+ds1",
                "runtime-version: runc version 1.1.5",
            )
            .replace("runtime-package: 1.1.5+ds1-1+deb12u1\n", "");
        let checks = judge("n1", &NodeView::parse(&text), &expected());
        let rt = checks.iter().find(|c| c.rule == RULE_RUNTIME).unwrap();
        assert!(rt.detail.contains("CVE-2024-21626 exposed"), "{rt:?}");
        let crun = GOOD
            .replace("runtime: runc", "runtime: /usr/bin/crun")
            .replace("runc version 1.1.5+ds1", "crun version 1.8.1");
        let checks = judge("n1", &NodeView::parse(&crun), &expected());
        let rt = checks.iter().find(|c| c.rule == RULE_RUNTIME).unwrap();
        assert!(!rt.detail.contains("CVE"), "{rt:?}");
    }

    #[test]
    fn nodes_one_each_in_the_asked_then_the_default_partition() {
        let sinfo = "n1|big|idle\nn1|debug*|idle\nn2|debug*|down*\nn3|big|mix\nn3|gpu|mix\n";
        let nodes = parse_nodes(sinfo, None);
        let names: Vec<_> = nodes
            .iter()
            .map(|n| (n.name.as_str(), n.partition.as_str(), n.usable()))
            .collect();
        assert_eq!(
            names,
            [
                ("n1", "debug", true),
                ("n2", "debug", false),
                ("n3", "big", true)
            ]
        );
        let nodes = parse_nodes(sinfo, Some("gpu"));
        assert_eq!(nodes[2].partition, "gpu");
        assert_eq!(nodes[0].partition, "debug");
        for (state, usable) in [
            ("drain", false),
            ("down", false),
            ("idle*", false),
            ("maint", false),
            ("drng", false),
            ("idle", true),
            ("mix", true),
            ("alloc", true),
            ("comp", true),
            ("idle~", true),
        ] {
            let n = Node {
                name: "n".into(),
                partition: "p".into(),
                state: state.into(),
            };
            assert_eq!(n.usable(), usable, "{state}");
        }
    }

    #[test]
    fn the_script_quotes_what_it_is_given() {
        let s = node_script("/srv/it's/tok", Some("/w"));
        assert!(
            s.starts_with("token_file='/srv/it'\\''s/tok'\nworkspace='/w'\n"),
            "{s}"
        );
        assert!(node_script("/t", None).contains("workspace=''\n"));
    }
}
