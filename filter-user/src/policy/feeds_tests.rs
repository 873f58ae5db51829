//! `[blocklist] feeds`: parsing, located errors, and the cache read like a
//! list file.
use std::path::{Path, PathBuf};

use super::{compile_str_in, CompiledPolicy, Diagnostic};
use crate::feeds::cache;

fn state(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pc-feedpol-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn policy(feeds: &str) -> String {
    format!("version = 1\n[blocklist]\ncidrs = [\"203.0.113.0/24\"]\nfeeds = [\n{feeds}\n]\n")
}

fn ok(text: &str, dir: &Path) -> CompiledPolicy {
    compile_str_in(text, Path::new("p.toml"), dir).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(text: &str) -> Vec<Diagnostic> {
    compile_str_in(text, Path::new("p.toml"), Path::new("/nonexistent"))
        .unwrap_err()
        .diagnostics
}

const URL: &str = "https://lists.example.org/drop.txt";

#[test]
fn a_feed_without_a_cached_copy_contributes_nothing_and_the_rest_loads() {
    let d = state("none");
    let p = ok(&policy(&format!("{{ url = \"{URL}\" }}")), &d);
    assert_eq!(p.blocklist_v4.len(), 1);
    let f = &p.feeds[0];
    assert!(f.cached.is_none());
    assert_eq!(f.spec.name, "lists.example.org/drop.txt");
    assert_eq!(f.spec.refresh, super::feeds::DEFAULT_REFRESH);
    assert_eq!(f.spec.max_bytes, super::feeds::DEFAULT_MAX_BYTES);
    assert_eq!(f.path, cache::body_path(&d, URL));
}

#[test]
fn a_cached_copy_is_read_like_a_list_file_and_changes_the_hash() {
    let d = state("copy");
    let text = policy(&format!(
        "{{ url = \"{URL}\", refresh = \"1h\", name = \"drop\" }}"
    ));
    let before = ok(&text, &d).source_hash;
    let meta = cache::Meta {
        url: URL.into(),
        fetched_at: 1000,
        checked_at: 2000,
        entries: 2,
        bytes: 27,
        ..cache::Meta::default()
    };
    cache::store(&d, b"198.51.100.0/24\n192.0.2.7\n", &meta).unwrap();
    let p = ok(&text, &d);
    assert_eq!(p.blocklist_v4.len(), 3, "{:?}", p.blocklist_v4);
    let c = p.feeds[0].cached.as_ref().unwrap();
    assert_eq!((c.entries, c.checked_at), (2, Some(2000)));
    assert_ne!(p.source_hash, before, "a changed feed is a changed policy");
    cache::store(&d, b"198.51.100.0/24\n", &meta).unwrap();
    assert_ne!(ok(&text, &d).source_hash, p.source_hash);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_bad_cached_copy_is_an_error_located_in_the_cached_file() {
    let d = state("bad");
    let meta = cache::Meta {
        url: URL.into(),
        ..cache::Meta::default()
    };
    cache::store(&d, b"10.0.0.0/8\n10.0.0.1/8\n", &meta).unwrap();
    let e = compile_str_in(
        &policy(&format!("{{ url = \"{URL}\" }}")),
        Path::new("p.toml"),
        &d,
    )
    .unwrap_err()
    .diagnostics;
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, cache::body_path(&d, URL));
    assert_eq!((e[0].line, e[0].column), (2, 1));
    assert!(e[0].message.contains("host bits"), "{e:?}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Each bad feed entry: (the entry, text expected in the message, column).
#[test]
fn bad_feed_entries_are_located_errors_with_a_fix() {
    let cases: &[(&str, &str, usize)] = &[
        ("{ url = \"ftp://x.org/l.txt\" }", "is not http or https", 9),
        ("{ url = \"not a url\" }", "is not a URL", 9),
        (
            "{ url = \"https://x.org/l\", refresh = \"30s\" }",
            "shorter than a minute",
            38,
        ),
        (
            "{ url = \"https://x.org/l\", refresh = \"31d\" }",
            "longer than 30 days",
            38,
        ),
        (
            "{ url = \"https://x.org/l\", refresh = \"6 hours\" }",
            "is not a duration",
            38,
        ),
        (
            "{ url = \"https://x.org/l\", format = \"csv\" }",
            "unknown feed format",
            37,
        ),
        (
            "{ url = \"https://x.org/l\", max_bytes = 0 }",
            "out of range",
            40,
        ),
        (
            "{ url = \"https://x.org/l\", max_bytes = 1000000000000 }",
            "out of range",
            40,
        ),
        (
            "{ url = \"https://x.org/l\", name = \"a b\" }",
            "feed name",
            35,
        ),
        ("{ refresh = \"1h\" }", "has no `url`", 1),
        (
            "{ url = \"https://x.org/l\", refersh = \"1h\" }",
            "unknown key `refersh`",
            28,
        ),
    ];
    for (entry, want, column) in cases {
        let e = errors(&policy(entry));
        assert_eq!(e.len(), 1, "{entry}: {e:?}");
        assert!(e[0].message.contains(want), "{entry}: {e:?}");
        assert!(e[0].help.is_some(), "{entry}: no fix");
        assert_eq!(e[0].line, 5, "{entry}: {e:?}");
        assert_eq!(e[0].column, *column, "{entry}: {e:?}");
    }
    let e = errors(&policy("{ url = \"https://x.org/l\", refersh = \"1h\" }"));
    assert_eq!(e[0].help.as_deref(), Some("did you mean `refresh`?"));
}

#[test]
fn a_feed_listed_twice_is_refused_at_the_second() {
    let e = errors(&policy(
        "{ url = \"https://x.org/l\" },\n{ url = \"https://x.org/l\", refresh = \"1h\" },",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].message.contains("listed twice"), "{e:?}");
    assert_eq!(e[0].line, 6);
}

#[test]
fn feeds_must_be_tables() {
    let e = errors("version = 1\n[blocklist]\nfeeds = \"https://x.org/l\"\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].line, e[0].column), (3, 9));
}

#[test]
fn refresh_durations_take_units() {
    use super::feeds::parse_refresh;
    use std::time::Duration;
    assert_eq!(parse_refresh("90s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_refresh("30min"), Some(Duration::from_secs(1800)));
    assert_eq!(parse_refresh("6h"), Some(Duration::from_secs(21600)));
    assert_eq!(parse_refresh("1d"), Some(Duration::from_secs(86400)));
    assert_eq!(parse_refresh("h"), None);
    assert_eq!(parse_refresh("6"), None);
    assert_eq!(parse_refresh("99999999999999999999d"), None);
}
