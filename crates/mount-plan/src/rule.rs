//! Rule ids: every refusal in the project names the rule that refused it with a short id
//! (`.rule()`), unique across every crate (a launcher matches on it), written once.
//!
//! [`rules!`](crate::rules) writes an error enum's ids once: it generates `rule()`, the list
//! `RULES` (the ids its own variants name; a variant that wraps another refusal delegates to
//! it), `KIND` and the message prefix ``<kind> rule `<id>`:`` ([`RulePrefix`]), which each
//! `#[error]` string starts with as `{rule}` (`rule = self.prefix()`), so a message can
//! never name another id than `rule()`.

use std::fmt;

/// The start of a refusal's message: ``<kind> rule `<id>`:``.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RulePrefix {
    /// The concern that refused (`path`, `host`, `spec`, `engine`, ...).
    pub kind: &'static str,
    /// The rule id.
    pub rule: &'static str,
}

impl fmt::Display for RulePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rule `{}`: ", self.kind, self.rule)
    }
}

/// Write an error enum's rule ids once:
/// `rules!(PlanError, "plan", { PathTooLong => "mount-path-too-long", ... } via { Name })`
/// generates `KIND`, `RULES`, `rule()` and `prefix()`. A variant listed after `via` holds one
/// refusal (`Name(NameError)`) and answers with that refusal's id.
#[macro_export]
macro_rules! rules {
    (
        $ty:ident, $kind:literal, { $($var:ident => $id:literal),* $(,)? }
        $(via { $($wrap:ident),* $(,)? })?
    ) => {
        impl $ty {
            /// The concern named at the start of each message (``<kind> rule `<id>`:``).
            pub const KIND: &'static str = $kind;
            /// The ids of the rules this type's own variants name (a wrapped refusal keeps
            /// its own), each unique across the project.
            pub const RULES: &'static [&'static str] = &[$($id),*];

            /// The stable short id of the rule that refused.
            pub fn rule(&self) -> &'static str {
                match self {
                    $($ty::$var { .. } => $id,)*
                    $($($ty::$wrap(inner) => inner.rule(),)*)?
                }
            }

            /// The start of the message: ``<kind> rule `<id>`:``.
            #[allow(dead_code)]
            fn prefix(&self) -> $crate::RulePrefix {
                $crate::RulePrefix {
                    kind: $kind,
                    rule: self.rule(),
                }
            }
        }
    };
}
