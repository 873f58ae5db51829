//! `[blocklist] feeds`: lists the daemon downloads on a schedule. The policy
//! names them; what they contribute is their last good copy in the feed
//! cache (`<state-dir>/feeds/`, see [`crate::feeds::cache`]), read like a
//! list file: the same caps, the same parser, diagnostics naming the cached
//! file. A feed with no copy yet contributes nothing (the rest loads).
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use sha2::Sha256;
use toml_edit::TableLike;
use url::Url;

use super::diag::{excerpt, nearest};
use super::files::{self, FileError};
use super::lists;
use super::parse::{Field, Walker};
use crate::feeds::cache;

pub(super) const FEED_KEYS: &[&str] = &["url", "refresh", "format", "max_bytes", "name"];

/// `refresh` when the policy does not say.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(6 * 3600);
/// Shortest and longest `refresh`: more often than a minute hammers the
/// source (Spamhaus asks for at most hourly); a month-old list is stale.
pub const MIN_REFRESH: Duration = Duration::from_secs(60);
pub const MAX_REFRESH: Duration = Duration::from_secs(30 * 86400);
/// `max_bytes` when the policy does not say: a 1M-prefix text feed is about
/// 20 MB; a 100 MB answer is junk.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Bounds of `max_bytes`: the list-file cap above, a KiB below.
pub const MIN_MAX_BYTES: u64 = 1 << 10;
/// At most this many feeds per policy.
pub const MAX_FEEDS: usize = 32;
/// Test hook (the e2e suite): a shorter floor for `refresh`, e.g. `1s`.
pub const TEST_MIN_REFRESH_ENV: &str = "PORTCULLIS_TEST_FEED_MIN_REFRESH";

/// How a feed's body is read. Only `auto`: the list parser recognises plain
/// lists, FireHOL netsets and Spamhaus DROP text and JSON lines per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeedFormat {
    Auto,
}

/// One `blocklist.feeds` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSpec {
    pub url: Url,
    /// Labels metrics and status: `name`, else host and path of the URL.
    pub name: String,
    pub refresh: Duration,
    pub format: FeedFormat,
    pub max_bytes: u64,
}

/// A feed as the compiled policy holds it: the spec and what the cache gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedInfo {
    pub spec: FeedSpec,
    /// The cached copy read (it may not exist).
    pub path: PathBuf,
    /// None: no copy yet (never fetched, or the cache was removed).
    pub cached: Option<CachedCopy>,
    /// Why a copy that may exist could not be read (no permission: `check`
    /// run by a user who cannot read the state directory); it then
    /// contributes nothing, as if there were none.
    pub unreadable: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedCopy {
    pub entries: usize,
    pub bytes: u64,
    /// Unix seconds of the download and of the server's last confirmation
    /// (None: the metadata record is missing).
    pub fetched_at: Option<u64>,
    pub checked_at: Option<u64>,
}

/// `name`: like a zone name (it is a label value and a status column).
fn name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'))
}

/// Host (and port) and path: short, stable, no credentials or query.
pub fn default_name(url: &Url) -> String {
    let host = url.host_str().unwrap_or("feed");
    let mut s = match url.port() {
        Some(p) => format!("{host}:{p}{}", url.path()),
        None => format!("{host}{}", url.path()),
    };
    if s.len() > 64 {
        let mut cut = 64;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s.trim_end_matches('/').to_string()
}

/// `"90s"`, `"30m"`/`"30min"`, `"6h"`, `"1d"`.
pub fn parse_refresh(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let unit_s = match unit.trim() {
        "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" | "day" | "days" => 86400,
        _ => return None,
    };
    Some(Duration::from_secs(n.checked_mul(unit_s)?))
}

fn min_refresh() -> Duration {
    std::env::var(TEST_MIN_REFRESH_ENV)
        .ok()
        .and_then(|v| parse_refresh(&v))
        .map_or(MIN_REFRESH, |d| d.min(MIN_REFRESH))
}

impl Walker<'_> {
    /// `blocklist.feeds`: the specs, and each cached copy's prefixes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn feeds(
        &mut self,
        t: &dyn TableLike,
        state_dir: &Path,
        total: &mut u64,
        rank: usize,
        v4: &mut Vec<Ipv4Net>,
        v6: &mut Vec<Ipv6Net>,
        hasher: &mut Sha256,
    ) -> Vec<FeedInfo> {
        let mut out: Vec<FeedInfo> = Vec::new();
        if t.get("feeds").is_none() {
            return out;
        }
        let tables = self.table_array(t, "feeds");
        for (i, (ft, span)) in tables.into_iter().enumerate() {
            if i == MAX_FEEDS {
                self.diags.at(
                    span.clone(),
                    format!("more than {MAX_FEEDS} feeds"),
                    Some("merge feeds at the source, or list fewer".into()),
                );
                break;
            }
            let Some(spec) = self.feed_spec(ft, span, &out) else {
                continue;
            };
            let url_span = ft.get("url").and_then(|i| i.span());
            let info = self.read_cached(spec, state_dir, total, rank + i, url_span, v4, v6, hasher);
            out.push(info);
        }
        out
    }

    fn feed_spec(
        &mut self,
        t: &dyn TableLike,
        span: Option<std::ops::Range<usize>>,
        seen: &[FeedInfo],
    ) -> Option<FeedSpec> {
        self.check_keys(t, FEED_KEYS, "in a blocklist feed");
        const EXAMPLE: &str = "url = \"https://www.spamhaus.org/drop/drop.txt\"";
        let url = match self.string(t, "url", "blocklist.feeds.url", EXAMPLE) {
            Field::Missing => {
                self.missing(span, "a blocklist feed", "url", EXAMPLE);
                None
            }
            Field::Bad => None,
            Field::Ok((s, uspan)) => match Url::parse(s.trim()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                    if let Some(f) = seen.iter().find(|f| f.spec.url == u) {
                        self.diags.at(
                            uspan,
                            format!("feed `{}` is listed twice", crate::fetch::redacted(&u)),
                            Some(format!(
                                "remove one of the entries (the other is named \"{}\")",
                                f.spec.name
                            )),
                        );
                        None
                    } else {
                        Some(u)
                    }
                }
                Ok(u) => {
                    self.diags.at(
                        uspan,
                        format!("feed URL scheme `{}` is not http or https", excerpt(u.scheme())),
                        Some("feeds are downloaded over https:// (or http://); for a local file use `files`".into()),
                    );
                    None
                }
                Err(e) => {
                    self.diags.at(
                        uspan,
                        format!("feed URL \"{}\" is not a URL: {e}", excerpt(s)),
                        Some(format!("write the whole URL, e.g. {EXAMPLE}")),
                    );
                    None
                }
            },
        };
        let refresh = self.feed_refresh(t);
        let format = self.feed_format(t);
        let max_bytes = self.feed_max_bytes(t);
        let name = match self.string(
            t,
            "name",
            "blocklist.feeds.name",
            "name = \"spamhaus-drop\"",
        ) {
            Field::Missing => url.as_ref().map(default_name),
            Field::Bad => None,
            Field::Ok((n, nspan)) if !name_ok(n) => {
                self.diags.at(
                    nspan,
                    format!(
                        "feed name \"{}\" is not 1-64 letters, digits, `.`, `_`, `-`, `/`, `:`",
                        excerpt(n)
                    ),
                    Some("it labels the feed's metrics, e.g. name = \"spamhaus-drop\"".into()),
                );
                None
            }
            Field::Ok((n, _)) => Some(n.to_string()),
        };
        let (url, name, refresh, format, max_bytes) = (url?, name?, refresh?, format?, max_bytes?);
        if let Some(f) = seen.iter().find(|f| f.spec.name == name) {
            let nspan = t
                .get("name")
                .or_else(|| t.get("url"))
                .and_then(|i| i.span());
            self.diags.at(
                nspan,
                format!("two feeds are named \"{name}\""),
                Some(format!(
                    "feed names label metrics: give this feed or `{}` a `name` of its own",
                    crate::fetch::redacted(&f.spec.url)
                )),
            );
            return None;
        }
        Some(FeedSpec {
            url,
            name,
            refresh,
            format,
            max_bytes,
        })
    }

    fn feed_refresh(&mut self, t: &dyn TableLike) -> Option<Duration> {
        let floor = min_refresh();
        match self.string(t, "refresh", "blocklist.feeds.refresh", "refresh = \"6h\"") {
            Field::Missing => Some(DEFAULT_REFRESH),
            Field::Bad => None,
            Field::Ok((s, span)) => {
                let problem = match parse_refresh(s) {
                    None => format!("`refresh` \"{}\" is not a duration", excerpt(s)),
                    Some(d) if d < floor => {
                        format!("`refresh` \"{}\" is shorter than a minute", excerpt(s))
                    }
                    Some(d) if d > MAX_REFRESH => {
                        format!("`refresh` \"{}\" is longer than 30 days", excerpt(s))
                    }
                    Some(d) => return Some(d),
                };
                self.diags.at(
                    span,
                    problem,
                    Some("a number and a unit (s, m, h, d) from 1m to 30d, e.g. refresh = \"6h\"; feeds ask to be fetched at most hourly or so".into()),
                );
                None
            }
        }
    }

    fn feed_format(&mut self, t: &dyn TableLike) -> Option<FeedFormat> {
        match self.string(t, "format", "blocklist.feeds.format", "format = \"auto\"") {
            Field::Missing => Some(FeedFormat::Auto),
            Field::Bad => None,
            Field::Ok(("auto", _)) => Some(FeedFormat::Auto),
            Field::Ok((s, span)) => {
                let help = match nearest(s, &["auto"]) {
                    Some(n) => format!("did you mean \"{n}\"?"),
                    None => "use \"auto\": plain lists, FireHOL netsets and Spamhaus DROP text and JSON lines are recognised line by line".into(),
                };
                self.diags.at(
                    span,
                    format!("unknown feed format \"{}\"", excerpt(s)),
                    Some(help),
                );
                None
            }
        }
    }

    fn feed_max_bytes(&mut self, t: &dyn TableLike) -> Option<u64> {
        let Some(item) = t.get("max_bytes") else {
            return Some(DEFAULT_MAX_BYTES);
        };
        let max = files::LIST_MAX_BYTES;
        match item.as_integer() {
            Some(n) if (MIN_MAX_BYTES as i64..=max as i64).contains(&n) => Some(n as u64),
            Some(n) => {
                self.diags.at(
                    item.span(),
                    format!("`max_bytes` {n} is out of range ({MIN_MAX_BYTES} to {max}, the list-file cap)"),
                    Some(format!("the largest answer accepted, in bytes; the default is {DEFAULT_MAX_BYTES} (64 MiB)")),
                );
                None
            }
            None => {
                self.type_error(
                    item,
                    "blocklist.feeds.max_bytes",
                    "an integer",
                    "max_bytes = 67108864",
                );
                None
            }
        }
    }

    /// The feed's cached copy, parsed like a list file.
    #[allow(clippy::too_many_arguments)]
    fn read_cached(
        &mut self,
        spec: FeedSpec,
        state_dir: &Path,
        total: &mut u64,
        rank: usize,
        url_span: Option<std::ops::Range<usize>>,
        v4: &mut Vec<Ipv4Net>,
        v6: &mut Vec<Ipv6Net>,
        hasher: &mut Sha256,
    ) -> FeedInfo {
        let url_s = spec.url.as_str();
        let path = cache::body_path(state_dir, url_s);
        super::parse::hash_chunk(hasher, b"feed");
        super::parse::hash_chunk(hasher, url_s.as_bytes());
        let limits = self.limits();
        let room = limits.lists_total_max.saturating_sub(*total);
        let cap = spec.max_bytes.min(limits.list_max).min(room);
        let bytes = match files::read_regular(&path, cap, limits.deadline) {
            Ok(b) => b,
            Err(FileError::Open(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                // Length-prefixed chunks: "no copy" differs from an empty one.
                super::parse::hash_chunk(hasher, b"none");
                return FeedInfo {
                    spec,
                    path,
                    cached: None,
                    unreadable: None,
                };
            }
            Err(FileError::Open(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                super::parse::hash_chunk(hasher, b"none");
                return FeedInfo {
                    spec,
                    path,
                    cached: None,
                    unreadable: Some(e.to_string()),
                };
            }
            Err(e) => {
                let subject = format!(
                    "the cached copy `{}` of feed \"{}\"",
                    path.display(),
                    spec.name
                );
                self.diags.at(
                    url_span,
                    e.describe(&subject),
                    Some(format!(
                        "the daemon keeps feeds under {}; remove the file to fetch the feed afresh",
                        cache::dir(state_dir).display()
                    )),
                );
                return FeedInfo {
                    spec,
                    path,
                    cached: None,
                    unreadable: None,
                };
            }
        };
        *total += bytes.len() as u64;
        super::parse::hash_chunk(hasher, b"copy");
        super::parse::hash_chunk(hasher, &bytes);
        let parsed = lists::parse_list(&bytes, &path, v4, v6);
        for d in parsed.diagnostics {
            self.diags.external(rank, d);
        }
        let meta = cache::read_meta(state_dir, url_s);
        FeedInfo {
            cached: Some(CachedCopy {
                entries: parsed.entries,
                bytes: bytes.len() as u64,
                fetched_at: meta.as_ref().map(|m| m.fetched_at),
                checked_at: meta.as_ref().map(|m| m.checked_at),
            }),
            spec,
            path,
            unreadable: None,
        }
    }
}

impl super::CompiledPolicy {
    /// The daemon logs, at start and at every reload, each feed that has no
    /// cached copy yet (it contributes nothing until it is fetched).
    pub fn log_feeds(&self) {
        for f in &self.feeds {
            match &f.cached {
                None if f.unreadable.is_some() => tracing::warn!(
                    "feed \"{}\": its cached copy {} cannot be read ({}): it contributes nothing",
                    f.spec.name,
                    f.path.display(),
                    f.unreadable.as_deref().unwrap_or_default()
                ),
                None => tracing::warn!(
                    "feed \"{}\" ({}): no cached copy yet ({}): it contributes nothing until it is fetched",
                    f.spec.name,
                    crate::fetch::redacted(&f.spec.url),
                    f.path.display()
                ),
                Some(c) => tracing::debug!(
                    "feed \"{}\": {} entries from {}",
                    f.spec.name,
                    c.entries,
                    f.path.display()
                ),
            }
        }
    }
}
