//! A named verdict case: one frame judged under one policy, with the verdict,
//! reason and counter rule it must get. Shared by the hand-written fixtures
//! (`fixtures.rs`) and the evasion corpus (`evasion.rs`).

use filter_common::{Reason, Verdict, RULE_FAILSAFE, RULE_GLOBAL};

use crate::spec::PolicySpec;

/// What a frame must get: verdict, reason and the counter rule (zone id,
/// `RULE_FAILSAFE` or `RULE_GLOBAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Expect {
    pub verdict: Verdict,
    pub reason: Reason,
    pub rule: u32,
}

impl Expect {
    /// Pass with a global (non-zone, non-failsafe) rule.
    pub const fn pass(reason: Reason) -> Self {
        Expect {
            verdict: Verdict::Pass,
            reason,
            rule: RULE_GLOBAL,
        }
    }

    /// Drop with a global rule.
    pub const fn drop(reason: Reason) -> Self {
        Expect {
            verdict: Verdict::Drop,
            reason,
            rule: RULE_GLOBAL,
        }
    }

    /// Passed by a failsafe rule.
    pub const fn failsafe() -> Self {
        Expect {
            verdict: Verdict::Pass,
            reason: Reason::Failsafe,
            rule: RULE_FAILSAFE,
        }
    }

    /// Judged by zone `zone` (id, 1-based in policy order).
    pub const fn zone(verdict: Verdict, reason: Reason, zone: u32) -> Self {
        Expect {
            verdict,
            reason,
            rule: zone,
        }
    }

    /// `(verdict, reason)` rendered as `pass/allowed`, `drop/malformed@2`, … for
    /// messages.
    pub fn label(&self) -> String {
        let rule = match self.rule {
            RULE_GLOBAL => String::new(),
            RULE_FAILSAFE => "@failsafe".to_string(),
            z => format!("@zone{z}"),
        };
        format!("{}/{}{rule}", self.verdict.as_str(), self.reason.as_str())
    }
}

/// One named case.
#[derive(Clone, Debug)]
pub struct Case {
    /// snake_case identifier, unique within its list.
    pub name: &'static str,
    /// One-line description (rendered into the docs).
    pub what: &'static str,
    pub policy: PolicySpec,
    pub frame: Vec<u8>,
    pub expect: Expect,
}

/// Names that occur more than once in `cases` (empty when all are unique).
pub fn duplicate_names(cases: &[Case]) -> Vec<&'static str> {
    let mut seen = std::collections::BTreeSet::new();
    let mut dups = Vec::new();
    for c in cases {
        if !seen.insert(c.name) {
            dups.push(c.name);
        }
    }
    dups
}

/// Names that are not snake_case identifiers.
pub fn bad_names(cases: &[Case]) -> Vec<&'static str> {
    cases
        .iter()
        .map(|c| c.name)
        .filter(|n| {
            n.is_empty()
                || !n.starts_with(|ch: char| ch.is_ascii_lowercase())
                || !n
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        })
        .collect()
}

/// Every case whose policy fails `PolicySpec::check`, with the problems.
pub fn invalid_policies(cases: &[Case]) -> Vec<String> {
    cases
        .iter()
        .filter_map(|c| {
            c.policy
                .check()
                .err()
                .map(|e| format!("{}: {}", c.name, e.join("; ")))
        })
        .collect()
}

/// Every case the reference model judges differently from its expectation, as
/// `name: expected …, model says …` lines.
pub fn model_disagreements(cases: &[Case]) -> Vec<String> {
    cases
        .iter()
        .filter_map(|c| {
            let j = crate::model::judge(&c.policy, &c.frame);
            let got = Expect {
                verdict: j.verdict,
                reason: j.reason,
                rule: j.rule,
            };
            (got != c.expect).then(|| {
                format!(
                    "{}: expected {}, model says {}",
                    c.name,
                    c.expect.label(),
                    got.label()
                )
            })
        })
        .collect()
}
