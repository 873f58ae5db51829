//! Diagnostics: every problem found in a policy or list file, located by file,
//! line and column, with a hint an operator can act on.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One error in a policy or list file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Everything wrong with a policy, found in one run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.diagnostics))]
pub struct PolicyError {
    /// In file order (policy file first, then list files), then line and column.
    pub diagnostics: Vec<Diagnostic>,
}

fn render(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diags.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&d.to_string());
    }
    out
}

impl PolicyError {
    pub fn len(&self) -> usize {
        self.diagnostics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter()
    }
}

/// A problem with one value, before it is located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// May quote the value (as an [`excerpt`]): for the policy file.
    pub message: String,
    pub help: String,
    /// The same problem told without a byte of the value, for list files: a
    /// list file may be a symlink to anything root can read.
    pub blind: (&'static str, &'static str),
}

/// What a [`Problem`] without a blind form says about a list-file entry.
const BLIND_DEFAULT: (&str, &str) = (
    "not an address or prefix",
    "one address or prefix per line, e.g. 192.0.2.0/24 or 2001:db8::/32",
);

impl Problem {
    pub fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        Problem {
            message: message.into(),
            help: help.into(),
            blind: BLIND_DEFAULT,
        }
    }

    /// Sets the content-free message and help (see [`Problem::blind`]).
    pub fn blind(mut self, message: &'static str, help: &'static str) -> Self {
        self.blind = (message, help);
        self
    }
}

/// Characters of a value quoted in a message; longer values are cut.
pub(crate) const EXCERPT_CHARS: usize = 40;

/// `s` as quoted in a message: at most [`EXCERPT_CHARS`] characters, then `…`,
/// with control characters escaped (`\n`, `\u{1b}`), so a hostile value can
/// neither flood an answer or a log nor rewrite a terminal.
pub(crate) fn excerpt(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Byte offset → (line, column) for one text.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    /// 1-based line and character column of a byte offset (clamped to the text).
    pub fn locate(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, col + 1)
    }
}

/// Diagnostics reported per policy (its file and all its list files); the rest
/// are counted in one last message, so that no policy, however broken, makes a
/// reload answer or a log entry of unbounded size.
pub(crate) const MAX_DIAGNOSTICS: usize = 100;

/// Collects diagnostics from the policy file and its list files.
pub(crate) struct Diags<'a> {
    path: &'a Path,
    index: LineIndex<'a>,
    /// (file rank, diagnostic): rank 0 is the policy file, list files follow.
    items: Vec<(usize, Diagnostic)>,
}

impl<'a> Diags<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Diags {
            path,
            index: LineIndex::new(text),
            items: Vec::new(),
        }
    }

    /// An error in the policy file at a byte span (start of file if unknown).
    pub fn at(
        &mut self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let (line, column) = self.index.locate(span.map_or(0, |s| s.start));
        self.items.push((
            0,
            Diagnostic {
                path: self.path.to_path_buf(),
                line,
                column,
                message: message.into(),
                help,
            },
        ));
    }

    /// 1-based line of a span in the policy file.
    pub fn line_of(&self, span: Option<Range<usize>>) -> usize {
        self.index.locate(span.map_or(0, |s| s.start)).0
    }

    pub fn problem(&mut self, span: Option<Range<usize>>, p: Problem) {
        self.at(span, p.message, Some(p.help));
    }

    /// An error located in another file (a list file); `rank` orders files.
    pub fn external(&mut self, rank: usize, d: Diagnostic) {
        self.items.push((rank, d));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Diagnostics so far (a check compares it before and after).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn into_error(mut self) -> PolicyError {
        self.items
            .sort_by(|(ra, a), (rb, b)| (ra, a.line, a.column).cmp(&(rb, b.line, b.column)));
        let mut diagnostics: Vec<Diagnostic> = self.items.into_iter().map(|(_, d)| d).collect();
        if diagnostics.len() > MAX_DIAGNOSTICS {
            let hidden = diagnostics.split_off(MAX_DIAGNOSTICS);
            let first = &hidden[0];
            diagnostics.push(Diagnostic {
                path: first.path.clone(),
                line: first.line,
                column: first.column,
                message: format!("{} more errors from here on (not shown)", hidden.len()),
                help: Some("fix the errors above and run `portcullis check` again".into()),
            });
        }
        PolicyError { diagnostics }
    }
}

/// The known key closest to an unknown one, if it is plausibly a typo.
pub(crate) fn nearest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = unknown.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::levenshtein(&lower, k), *k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_counts_characters_from_one() {
        let text = "ab\nçd = 1\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.locate(0), (1, 1));
        assert_eq!(idx.locate(3), (2, 1));
        // 'ç' is two bytes but one column.
        assert_eq!(idx.locate(5), (2, 2));
        assert_eq!(idx.locate(999), (3, 1));
    }

    #[test]
    fn nearest_key_suggests_typos_only() {
        assert_eq!(nearest("alow", &["name", "allow"]), Some("allow"));
        assert_eq!(nearest("zones", &["zone", "failsafe"]), Some("zone"));
        assert_eq!(nearest("Name", &["name"]), Some("name"));
        assert_eq!(nearest("colour", &["name", "allow"]), None);
    }

    #[test]
    fn excerpt_cuts_long_values_and_escapes_control_characters() {
        assert_eq!(excerpt("10.0.0.0/33"), "10.0.0.0/33");
        let long = "x".repeat(40_000);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt("a\nb\u{1b}[2J"), "a\\nb\\u{1b}[2J");
        assert_eq!(excerpt(&"é".repeat(41)).chars().count(), 41);
    }

    #[test]
    fn display_is_path_line_col_error_then_help() {
        let d = Diagnostic {
            path: PathBuf::from("p.toml"),
            line: 3,
            column: 9,
            message: "bad".into(),
            help: Some("fix it".into()),
        };
        assert_eq!(d.to_string(), "p.toml:3:9: error: bad\n  help: fix it");
    }
}
