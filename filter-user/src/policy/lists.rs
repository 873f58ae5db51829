//! Blocklist files: one entry per line. Accepted, line by line (formats may mix):
//! - plain / FireHOL netset / Spamhaus DROP text: an address or prefix, then
//!   optionally a `#` or `;` comment (`1.10.16.0/20 ; SBL256894`);
//! - Spamhaus DROP JSON lines: `{"cidr":"1.10.16.0/20","sblid":…}`; lines without
//!   `cidr` whose `type` is `metadata` are skipped;
//! - blank lines and lines that are only a comment.
//!
//! Feeds hold a million lines and more, so the parser works on borrowed line slices
//! and allocates only for errors.
//!
//! Diagnostics never quote a list file's content, only where a line is wrong and
//! what kind of wrong: a list file may be a symlink to a root-only file (a
//! secret) or a multi-megabyte line, and errors go to the reload answer and the
//! log.

use std::borrow::Cow;
use std::path::Path;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;

use super::addr::{self, Use};
use super::diag::{Diagnostic, Problem};

/// Diagnostics reported per file before the rest are summarised; a wrong file (an
/// HTML error page, a gzip archive) would otherwise produce one per line.
pub(crate) const MAX_ERRORS_PER_FILE: usize = 20;

/// What a list file contributed.
#[derive(Debug, Default)]
pub(crate) struct ListParse {
    pub entries: usize,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Deserialize)]
struct DropJson<'a> {
    #[serde(borrow, default)]
    cidr: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

/// Parses one list file's bytes, appending prefixes to `v4`/`v6`.
pub(crate) fn parse_list(
    bytes: &[u8],
    path: &Path,
    v4: &mut Vec<Ipv4Net>,
    v6: &mut Vec<Ipv6Net>,
) -> ListParse {
    let mut out = ListParse::default();
    let mut suppressed = 0usize;
    let mut first_suppressed: Option<(usize, usize)> = None;
    let mut report = |out: &mut ListParse, line: usize, column: usize, p: Problem| {
        if out.diagnostics.len() < MAX_ERRORS_PER_FILE {
            out.diagnostics.push(Diagnostic {
                path: path.to_path_buf(),
                line,
                column,
                message: p.message,
                help: Some(p.help),
            });
        } else {
            suppressed += 1;
            first_suppressed.get_or_insert((line, column));
        }
    };

    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if looks_like_html(bytes) {
        // One error, not twenty: the whole file is the wrong thing.
        out.diagnostics.push(Diagnostic {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message: "this looks like an HTML page (did the download fail?)".into(),
            help: Some(
                "a list file holds one address or prefix per line; fetch the feed again \
                 and check the updater's HTTP status before renaming the file into place"
                    .into(),
            ),
        });
        return out;
    }
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = match std::str::from_utf8(raw) {
            Ok(l) => l,
            Err(e) => {
                let col = String::from_utf8_lossy(&raw[..e.valid_up_to()])
                    .chars()
                    .count()
                    + 1;
                report(
                    &mut out,
                    lineno,
                    col,
                    Problem::new(
                        "line is not valid UTF-8",
                        "a list file is text: one address or prefix per line \
                         (is it compressed or binary?)",
                    ),
                );
                continue;
            }
        };
        let body = line.trim_start();
        if body.starts_with('{') {
            match parse_json_line(body) {
                Ok(None) => {}
                Ok(Some((entry, at))) => match addr::parse_addr(entry.trim(), Use::Block) {
                    Ok(a) => {
                        addr::push(a, v4, v6);
                        out.entries += 1;
                    }
                    Err(p) => {
                        let offset = line.len() - body.len() + at;
                        report(&mut out, lineno, column(line, offset), blind(p));
                    }
                },
                Err((p, at)) => {
                    let offset = line.len() - body.len() + at;
                    report(&mut out, lineno, column(line, offset), p);
                }
            }
            continue;
        }
        let content = match body.find(['#', ';']) {
            Some(cut) => &body[..cut],
            None => body,
        };
        let mut words = content.split_whitespace();
        let Some(entry) = words.next() else { continue };
        let entry_offset = offset_of(line, entry);
        if let Some(extra) = words.next() {
            report(
                &mut out,
                lineno,
                column(line, offset_of(line, extra)),
                Problem::new(
                    "unexpected second word after the entry",
                    "one address or prefix per line; put notes after `#` or `;`",
                ),
            );
            continue;
        }
        match addr::parse_addr(entry, Use::Block) {
            Ok(a) => {
                addr::push(a, v4, v6);
                out.entries += 1;
            }
            Err(p) => report(&mut out, lineno, column(line, entry_offset), blind(p)),
        }
    }
    if let Some((line, column)) = first_suppressed {
        out.diagnostics.push(Diagnostic {
            path: path.to_path_buf(),
            line,
            column,
            message: format!("{suppressed} more bad lines in this file (not shown)"),
            help: Some(
                "check that this is the list you meant; the errors above show the pattern".into(),
            ),
        });
    }
    out
}

/// Whether the file starts (after blank space) like an HTML document: an
/// error page saved in place of a feed.
fn looks_like_html(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let head = &bytes[start..bytes.len().min(start + 16)];
    [&b"<!doctype"[..], b"<html", b"<head", b"<body"]
        .iter()
        .any(|p| head.len() >= p.len() && head[..p.len()].eq_ignore_ascii_case(p))
}

/// `p` told without the entry's text (see the module comment).
fn blind(p: Problem) -> Problem {
    let (message, help) = p.blind;
    Problem::new(message, help)
}

/// An entry and the byte offset in its line where it starts.
type Located<T> = (T, usize);

/// `Ok(Some(cidr))`, or `Ok(None)` for a metadata line.
fn parse_json_line(line: &str) -> Result<Option<Located<Cow<'_, str>>>, Located<Problem>> {
    let parsed: DropJson<'_> = serde_json::from_str(line).map_err(|e| {
        // serde_json's own message may quote the line: only its category.
        let what = match e.classify() {
            serde_json::error::Category::Eof => "invalid JSON line: it ends early",
            serde_json::error::Category::Data => "invalid JSON line: a field has the wrong type",
            _ => "invalid JSON line: syntax error",
        };
        (
            Problem::new(
                what,
                "Spamhaus DROP JSON lines look like {\"cidr\":\"1.10.16.0/20\",\"sblid\":\"SBL256894\"}",
            ),
            // serde_json's column is 1-based bytes on this single line.
            e.column().saturating_sub(1).min(line.len()),
        )
    })?;
    match parsed.cidr {
        Some(c) => {
            let at = line.find(c.as_ref()).unwrap_or(0);
            Ok(Some((c, at)))
        }
        None if parsed.kind.as_deref() == Some("metadata") => Ok(None),
        None => Err((
            Problem::new(
                "JSON line has no `cidr` field",
                "each JSON line needs {\"cidr\":\"…\"}; only {\"type\":\"metadata\",…} lines may omit it",
            ),
            0,
        )),
    }
}

/// Byte offset of `part` (a subslice of `line`) within `line`.
fn offset_of(line: &str, part: &str) -> usize {
    (part.as_ptr() as usize).saturating_sub(line.as_ptr() as usize)
}

/// 1-based character column of a byte offset in `line`. An offset inside a
/// character (serde_json counts bytes) is that character's column.
fn column(line: &str, offset: usize) -> usize {
    let mut end = offset.min(line.len());
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].chars().count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Ipv4Net>, Vec<Ipv6Net>, ListParse) {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        let r = parse_list(text.as_bytes(), Path::new("l.txt"), &mut v4, &mut v6);
        (v4, v6, r)
    }

    fn nets4(s: &[&str]) -> Vec<Ipv4Net> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn spamhaus_drop_text_trailing_comments() {
        let (v4, _, r) = parse(
            "; Spamhaus DROP List 2024/01/01\n; Expires: x\n1.10.16.0/20 ; SBL256894\n\
             1.19.0.0/16 ; SBL434604\r\n",
        );
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
        assert_eq!(v4, nets4(&["1.10.16.0/20", "1.19.0.0/16"]));
        assert_eq!(r.entries, 2);
    }

    #[test]
    fn spamhaus_json_lines_are_parsed() {
        let (v4, v6, r) = parse(
            "{\"cidr\":\"1.10.16.0/20\",\"sblid\":\"SBL256894\",\"rir\":\"apnic\"}\n\
             {\"cidr\":\"2001:db8:bad::/48\",\"sblid\":\"SBL1\",\"rir\":\"ripencc\"}\n\
             {\"type\":\"metadata\",\"timestamp\":1700000000,\"size\":2,\"records\":2}\n",
        );
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
        assert_eq!(v4, nets4(&["1.10.16.0/20"]));
        assert_eq!(v6, vec!["2001:db8:bad::/48".parse::<Ipv6Net>().unwrap()]);
        assert_eq!(r.entries, 2);
    }

    #[test]
    fn json_line_errors_are_located() {
        let (_, _, r) = parse("{\"cidr\":\"1.10.16.1/20\"}\n{\"sblid\":\"x\"}\n{\"cidr\":\n");
        let d = &r.diagnostics;
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!((d[0].line, d[0].column), (1, 10));
        assert!(d[0].message.contains("host bits"));
        assert!(d[1].message.contains("no `cidr`"));
        assert!(d[2].message.contains("invalid JSON"));
    }

    #[test]
    fn firehol_netset_comments_skipped() {
        let text = "#\n# firehol_level1\n#\n# Maintainer : FireHOL\n#\n\n0.0.0.0/8\n1.10.16.0/20\n\
                    5.1.2.3\n  # indented comment\n";
        let (v4, _, r) = parse(text);
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
        assert_eq!(v4, nets4(&["0.0.0.0/8", "1.10.16.0/20", "5.1.2.3/32"]));
    }

    #[test]
    fn list_bad_lines_are_located_by_line_and_column() {
        let (v4, _, r) = parse("10.0.0.0/8\n  10.0.0.1/33\n1.2.3.4 5.6.7.8\n");
        assert_eq!(v4, nets4(&["10.0.0.0/8"]));
        let d = &r.diagnostics;
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].line, d[0].column), (2, 3));
        assert_eq!(d[0].message, "prefix length is out of range");
        assert_eq!((d[1].line, d[1].column), (3, 9));
        assert_eq!(d[1].message, "unexpected second word after the entry");
    }

    #[test]
    fn list_errors_are_capped_per_file() {
        let text = "junk\n".repeat(100);
        let (_, _, r) = parse(&text);
        assert_eq!(r.diagnostics.len(), MAX_ERRORS_PER_FILE + 1);
        let last = r.diagnostics.last().unwrap();
        assert!(last.message.starts_with("80 more bad lines"), "{last:?}");
        assert_eq!(last.line, MAX_ERRORS_PER_FILE + 1);
    }

    #[test]
    fn non_utf8_and_bom_are_handled() {
        let mut bytes = b"\xEF\xBB\xBF10.0.0.0/8\n".to_vec();
        bytes.extend_from_slice(b"1.2.\xff\n");
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        let r = parse_list(&bytes, Path::new("l"), &mut v4, &mut v6);
        assert_eq!(v4, nets4(&["10.0.0.0/8"]));
        assert_eq!(r.diagnostics.len(), 1);
        assert_eq!((r.diagnostics[0].line, r.diagnostics[0].column), (2, 5));
    }

    /// Every byte of every diagnostic, as the reload answer would carry it.
    fn rendered(r: &ListParse) -> String {
        r.diagnostics.iter().map(|d| format!("{d}\n")).collect()
    }

    #[test]
    fn list_errors_never_quote_the_file() {
        // What a list file symlinked to /etc/shadow would hold.
        let secret = "root:$y$j9T$SECRETTOKEN42:19700:0:99999:7:::\n\
                      {\"cidr\":\"SECRETTOKEN42\"}\n\
                      {\"cidr\":7,\"x\":\"SECRETTOKEN42\"}\n\
                      10.0.0.1/8 SECRETTOKEN42\n\
                      SECRETTOKEN42/8\n10.0.0.0/SECRETTOKEN42\nSECRETTOKEN42.*.*.*\n\
                      {\"SECRETTOKEN42\n";
        let (_, _, r) = parse(secret);
        assert_eq!(r.diagnostics.len(), 8, "{:#?}", r.diagnostics);
        let all = rendered(&r);
        for part in ["SECRET", "TOKEN42", "root:", "$y$"] {
            assert!(!all.contains(part), "`{part}` echoed:\n{all}");
        }
        assert!(
            all.contains("l.txt:1:1: error: not an address or prefix"),
            "{all}"
        );
    }

    #[test]
    fn an_html_page_is_named_once_without_quoting_it() {
        for page in [
            "<!DOCTYPE html>\n<html><title>SECRET 404</title>\n",
            "\n  <html lang=\"en\">SECRET\n<body>x</body>\n",
            "<!doctype html><head>SECRET</head>",
        ] {
            let (v4, _, r) = parse(page);
            assert!(v4.is_empty());
            assert_eq!(r.entries, 0);
            assert_eq!(r.diagnostics.len(), 1, "{:#?}", r.diagnostics);
            let all = rendered(&r);
            assert!(
                all.contains(
                    "l.txt:1:1: error: this looks like an HTML page (did the download fail?)"
                ),
                "{all}"
            );
            assert!(!all.contains("SECRET"), "{all}");
        }
        // A list whose comment mentions HTML is still a list.
        let (v4, _, r) = parse("# <html> feeds are refused\n10.0.0.0/8\n");
        assert_eq!(v4, nets4(&["10.0.0.0/8"]));
        assert!(r.diagnostics.is_empty());
    }

    #[test]
    fn list_entry_hints_are_blind() {
        let (_, _, r) = parse("192.168.001.0/24\nfe80::1%wlan7\n");
        let all = rendered(&r);
        assert!(
            all.contains("l.txt:1:1: error: an IPv4 octet has a leading zero"),
            "{all}"
        );
        assert!(
            all.contains("l.txt:2:1: error: IPv6 zone ids (`%…`) are not supported"),
            "{all}"
        );
        assert!(!all.contains("001") && !all.contains("wlan7"), "{all}");
    }

    #[test]
    fn a_20_mb_line_gives_a_short_error() {
        let line = "A".repeat(20 << 20);
        let (_, _, r) = parse(&line);
        assert_eq!(r.diagnostics.len(), 1);
        assert!(rendered(&r).len() < 512, "{}", rendered(&r).len());
    }

    #[test]
    fn errors_of_a_junk_file_stay_small() {
        // 100,000 bad lines of 200 bytes: 20 errors and a summary, a few KB.
        let text = format!("{}\n", "x".repeat(200)).repeat(100_000);
        let (_, _, r) = parse(&text);
        assert_eq!(r.diagnostics.len(), MAX_ERRORS_PER_FILE + 1);
        assert!(rendered(&r).len() < 8 << 10, "{}", rendered(&r).len());
    }

    #[test]
    fn any_in_a_list_file_is_refused() {
        let (_, _, r) = parse("0.0.0.0/0\n");
        assert!(r.diagnostics[0].message.contains("drop every source"));
    }
}
