//! Policy file model, parsing, validation and compilation.
//!
//! `policy.toml` (+ list files) → span-carrying TOML document → walked by hand so
//! that one run reports every problem with file:line:col and a hint → a
//! [`CompiledPolicy`] with normalised, merged prefixes and port ranges, ready for
//! the loader. The format is documented for operators in docs/policy.md.

mod addr;
mod compile;
pub mod crowdsec;
mod diag;
pub mod feeds;
mod files;
mod lists;
mod parse;
mod ports;
pub mod quota;
pub mod rate;
pub mod schedule;
pub mod schema;
mod summary;
mod warn;

#[cfg(test)]
mod feeds_tests;
#[cfg(test)]
mod input_tests;
#[cfg(test)]
mod quota_tests;
#[cfg(test)]
mod rate_tests;
#[cfg(test)]
mod schedule_tests;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use compile::{
    merge_ports, merge_v4, merge_v6, Action, BasicAuth, CompiledFailsafe, CompiledPolicy,
    CompiledZone, Defaults, FragmentMode, ListFileInfo, MetricsConfig, PortRange, Proto,
    RejectWith, TlsFiles, ZoneAction, DEFAULT_METRICS_LISTEN, DEFAULT_REJECT_BURST,
    DEFAULT_REJECT_RATE, MAX_REJECT_BURST, MAX_REJECT_RATE,
};
pub use diag::{Diagnostic, PolicyError};
pub use feeds::{CachedCopy, FeedFormat, FeedInfo, FeedSpec};
pub use parse::POLICY_VERSION;
pub use summary::{
    BlocklistSummary, DefaultsSummary, FailsafeSummary, FeedSummary, InstantSummary,
    ListFileSummary, MetricsSummary, PolicySummary, ReplySummary, ScheduleSummary, ZoneSummary,
};
pub use warn::{Warning, WarningKind};

/// Reads, validates and compiles the policy at `path` and the list files it
/// names; feeds come from the cache under the default state directory.
pub fn load(path: &Path) -> Result<CompiledPolicy, PolicyError> {
    load_in(path, Path::new(crate::bans::DEFAULT_STATE_DIR))
}

/// [`load`], with feeds read from the cache under `state_dir` (the daemon's
/// `--state-dir`).
pub fn load_in(path: &Path, state_dir: &Path) -> Result<CompiledPolicy, PolicyError> {
    load_with(path, files::ReadLimits::standard(), state_dir)
}

/// [`load`] with other caps (tests use small ones).
pub(crate) fn load_with(
    path: &Path,
    limits: files::ReadLimits,
    state_dir: &Path,
) -> Result<CompiledPolicy, PolicyError> {
    let bytes = files::read_regular(path, files::POLICY_MAX_BYTES, limits.deadline)
        .map_err(|e| single(path, 1, 1, e.describe("policy file"), policy_file_help(&e)))?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            // Valid by construction; the fallback only guards the impossible.
            let before = std::str::from_utf8(valid).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            return Err(single(
                path,
                line,
                column,
                "the policy file is not valid UTF-8".into(),
                "save the policy as UTF-8 text",
            ));
        }
    };
    parse::compile(&text, path, limits, state_dir)
}

/// Parses one list file's bytes as `blocklist.files` would, without touching the
/// filesystem: the entries accepted and the diagnostics (located in `path`).
/// The entry point for fuzzing and for checking a list on its own.
pub fn parse_list_bytes(bytes: &[u8], path: &Path) -> (usize, Vec<Diagnostic>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    let parsed = lists::parse_list(bytes, path, &mut v4, &mut v6);
    (parsed.entries, parsed.diagnostics)
}

/// Validates and compiles policy text. `path` names the policy in messages, and
/// list files are resolved relative to its directory (and read from disk).
pub fn compile_str(text: &str, path: &Path) -> Result<CompiledPolicy, PolicyError> {
    compile_str_in(text, path, Path::new(crate::bans::DEFAULT_STATE_DIR))
}

/// [`compile_str`], with feeds read from the cache under `state_dir`.
pub fn compile_str_in(
    text: &str,
    path: &Path,
    state_dir: &Path,
) -> Result<CompiledPolicy, PolicyError> {
    parse::compile(text, path, files::ReadLimits::standard(), state_dir)
}

/// A small file the daemon reads at run time (an API key, a CA): regular
/// files only, at most `cap` bytes, within the usual read deadline; the
/// error is one line.
pub(crate) fn read_small_file(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    let deadline = std::time::Instant::now() + files::READ_TIME_LIMIT;
    files::read_regular(path, cap, deadline).map_err(|e| e.to_string())
}

fn policy_file_help(e: &files::FileError) -> &'static str {
    match e {
        files::FileError::TooLarge { .. } => {
            "a policy file is at most 4 MiB; put large prefix sets in list files \
             ([blocklist] files = [...])"
        }
        files::FileError::NotRegular(_) => "point --policy at a regular file",
        _ => "check the path given with --policy and the file's permissions",
    }
}

fn single(path: &Path, line: usize, column: usize, message: String, help: &str) -> PolicyError {
    PolicyError {
        diagnostics: vec![Diagnostic {
            path: path.to_path_buf(),
            line,
            column,
            message,
            help: Some(help.to_string()),
        }],
    }
}
