//! How an error reaches the operator: one rule for every command.
//!
//! The project's error types carry their cause in their own message
//! (`"{what}: {source}"`, `"the policy is not valid:\n{0}"`) *and* expose it as
//! `source()`, and anyhow contexts add outer layers. Printing either the top
//! message alone (loses anyhow contexts) or the whole chain (prints every
//! thiserror cause twice: "Connection refused (os error 111): Connection
//! refused (os error 111)") is wrong for one of them. So the chain is
//! flattened: each layer is appended only if its text is not already part of
//! what has been said.
use std::error::Error;

use serde::Serialize;

/// The error and its causes as one text, each cause once.
pub fn flatten(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// [`flatten`] for an `anyhow::Error`.
pub fn flatten_anyhow(err: &anyhow::Error) -> String {
    flatten(err.as_ref())
}

/// What `-o json` prints on stdout when a command fails (the exit code is
/// the one text mode would give).
#[derive(Debug, Serialize)]
pub struct Failure {
    pub ok: bool,
    pub error: String,
}

impl Failure {
    pub fn new(error: impl Into<String>) -> Failure {
        Failure {
            ok: false,
            error: error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("no daemon answers on /run/x.sock: {source}")]
    struct Connect {
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the policy is not valid; nothing was changed:\n{0}")]
    struct Outer(#[from] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("p.toml:6:10: error: prefix length /33 is out of range")]
    struct Inner;

    fn refused() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::ECONNREFUSED)
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = anyhow::Error::new(Connect { source: refused() });
        let text = flatten_anyhow(&e);
        assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
        assert_eq!(text.matches("os error 111").count(), 1, "{text}");
    }

    #[test]
    fn a_policy_diagnostic_is_printed_once() {
        let e = anyhow::Error::new(Outer(Inner));
        let text = flatten_anyhow(&e);
        assert_eq!(text.matches("/33 is out of range").count(), 1, "{text}");
    }

    #[test]
    fn anyhow_contexts_and_a_bare_io_error_all_appear() {
        let e = anyhow::Error::new(refused()).context("connecting to /run/x.sock");
        let text = flatten_anyhow(&e);
        assert!(text.starts_with("connecting to /run/x.sock: "), "{text}");
        assert!(text.contains("Connection refused"), "{text}");
        let e = anyhow::Error::new(Connect { source: refused() }).context("reloading");
        let text = flatten_anyhow(&e);
        assert!(text.starts_with("reloading: no daemon answers"), "{text}");
        assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
    }

    #[test]
    fn failure_json_has_ok_false_and_the_error() {
        let v = serde_json::to_value(Failure::new("boom")).unwrap();
        assert_eq!(v, serde_json::json!({"ok": false, "error": "boom"}));
    }
}
