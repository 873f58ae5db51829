//! List feeds (`[blocklist] feeds`): the daemon downloads each on its
//! schedule, checks the download like a list file, keeps the last good copy
//! on disk ([`cache`]) and has the policy reloaded with it ([`task`]). The
//! policy compiler reads the copies (`policy::feeds`), so a feed update is
//! an ordinary reload: applied as a diff, all or nothing.
pub mod cache;
pub mod task;

use std::{collections::BTreeMap, path::Path, sync::Mutex};

use serde::{Deserialize, Serialize};

use crate::policy::FeedInfo;

/// Why a download was not used (the `result` label of
/// `portcullis_feed_fetches_total`, beside the fetch errors' reasons).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the answer is an HTML page (Content-Type or first byte), not a list")]
    Html,
    #[error("the answer is not a valid list: {0}")]
    Invalid(String),
    #[error("the answer holds no entries; the last good copy had {0}")]
    Emptied(usize),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Html => "html",
            Refusal::Invalid(_) => "invalid",
            Refusal::Emptied(_) => "emptied",
        }
    }
}

/// A last good copy of at least this many entries is not replaced by an
/// empty one (a feed that "lost" its list is broken, not cleaned up).
pub const EMPTIED_MIN_PREVIOUS: usize = 10;

/// Checks a downloaded body as the policy compiler will read it; the entries
/// it holds, or why it must not replace the last good copy. `path` names the
/// cached file in the parser's diagnostics.
pub fn validate(
    body: &[u8],
    content_type: Option<&str>,
    previous_entries: Option<usize>,
    path: &Path,
) -> Result<usize, Refusal> {
    let html_type = content_type.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/html"))
    });
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let first = text.iter().find(|b| !b.is_ascii_whitespace());
    if html_type || first == Some(&b'<') {
        return Err(Refusal::Html);
    }
    let (entries, diagnostics) = crate::policy::parse_list_bytes(body, path);
    if let Some(d) = diagnostics.first() {
        let more = match diagnostics.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        return Err(Refusal::Invalid(format!(
            "line {}, column {}: {}{more}",
            d.line, d.column, d.message
        )));
    }
    match previous_entries {
        Some(n) if entries == 0 && n >= EMPTIED_MIN_PREVIOUS => Err(Refusal::Emptied(n)),
        _ => Ok(entries),
    }
}

/// One feed as `status` shows it (`ping`'s `daemon.feeds`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedState {
    pub name: String,
    /// Redacted: no credentials, no query.
    pub url: String,
    /// Entries of the copy in force (None: no copy yet).
    #[serde(default)]
    pub entries: Option<usize>,
    /// Unix seconds: downloaded, and last confirmed by the server.
    #[serde(default)]
    pub fetched_at: Option<u64>,
    #[serde(default)]
    pub checked_at: Option<u64>,
    /// The last attempt's result label, and its error if it failed.
    #[serde(default)]
    pub last_result: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Attempts since the daemon started, by result.
    #[serde(default)]
    pub results: BTreeMap<String, u64>,
}

impl FeedState {
    /// Seconds since the server last confirmed the copy.
    pub fn age_s(&self, now: u64) -> Option<u64> {
        self.checked_at.map(|t| now.saturating_sub(t))
    }
}

/// Every feed's state, keyed by URL; shared by the task, metrics and `ping`.
#[derive(Debug, Default)]
pub struct Board {
    feeds: Mutex<BTreeMap<String, FeedState>>,
}

impl Board {
    /// The feeds of the policy now enforced: listed ones are (re)described
    /// from their cached copies, others forgotten; counts are kept.
    pub fn sync(&self, infos: &[FeedInfo]) {
        let Ok(mut m) = self.feeds.lock() else {
            return;
        };
        let mut next = BTreeMap::new();
        for f in infos {
            let key = f.spec.url.to_string();
            let mut st = m.remove(&key).unwrap_or_default();
            st.name = f.spec.name.clone();
            st.url = crate::fetch::redacted(&f.spec.url);
            st.entries = f.cached.as_ref().map(|c| c.entries);
            if let Some(c) = &f.cached {
                st.fetched_at = c.fetched_at.or(st.fetched_at);
                st.checked_at = c.checked_at.or(st.checked_at);
            }
            next.insert(key, st);
        }
        *m = next;
    }

    /// Counts one attempt of `url` and keeps its outcome.
    pub fn record(&self, url: &str, result: &str, error: Option<String>, checked_at: Option<u64>) {
        let Ok(mut m) = self.feeds.lock() else {
            return;
        };
        let Some(st) = m.get_mut(url) else {
            return;
        };
        *st.results.entry(result.to_string()).or_default() += 1;
        st.last_result = Some(result.to_string());
        st.last_error = error;
        if checked_at.is_some() {
            st.checked_at = checked_at;
        }
    }

    pub fn states(&self) -> Vec<FeedState> {
        self.feeds
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// How long ago, for people: `42s`, `17m`, `5h`, `3d`.
pub fn ago(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// One `status` line: `NAME: 1234 entries, confirmed 5m ago (URL)`, and the
/// last error if the last attempt failed.
pub fn describe(f: &FeedState, now: u64) -> String {
    let copy = match (f.entries, f.age_s(now)) {
        (None, _) => "not fetched yet".to_string(),
        (Some(n), Some(age)) => format!("{n} entries, confirmed {} ago", ago(age)),
        (Some(n), None) => format!("{n} entries"),
    };
    let mut s = format!("{}: {copy} ({})", f.name, f.url);
    if let Some(e) = &f.last_error {
        let r = f.last_result.as_deref().unwrap_or("error");
        s.push_str(&format!("; last attempt {r}: {e}"));
    }
    s
}

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(body: &str, ct: Option<&str>, prev: Option<usize>) -> Result<usize, Refusal> {
        validate(body.as_bytes(), ct, prev, Path::new("feed.list"))
    }

    #[test]
    fn a_good_list_is_accepted_with_its_entries() {
        assert_eq!(
            v(
                "# x\n10.0.0.0/8\n192.0.2.0/24 ; y\n",
                Some("text/plain"),
                Some(5)
            ),
            Ok(2)
        );
    }

    #[test]
    fn html_is_refused_by_content_type_or_first_byte() {
        assert_eq!(
            v("10.0.0.0/8\n", Some("text/html; charset=utf-8"), None),
            Err(Refusal::Html)
        );
        assert_eq!(
            v("\n  <p>maintenance</p>", Some("text/plain"), None),
            Err(Refusal::Html)
        );
        assert_eq!(v("\u{feff}<html>", None, None), Err(Refusal::Html));
    }

    #[test]
    fn any_bad_line_refuses_the_whole_download() {
        let r = v("10.0.0.0/8\nnot-an-address\n", None, None);
        match r {
            Err(Refusal::Invalid(m)) => assert!(m.starts_with("line 2, column 1:"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            v("\x00\x01\x02junk", None, None).unwrap_err().reason(),
            "invalid"
        );
    }

    #[test]
    fn an_emptied_feed_is_refused_only_after_a_real_list() {
        assert_eq!(
            v("# nothing today\n", None, Some(500)),
            Err(Refusal::Emptied(500))
        );
        assert_eq!(v("# nothing today\n", None, Some(3)), Ok(0));
        assert_eq!(v("", None, None), Ok(0));
    }
}
