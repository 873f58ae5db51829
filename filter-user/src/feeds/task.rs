//! The daemon's feed fetcher: one task for the daemon's life that follows
//! the enforced policy's feed list (a `watch` channel the reload path
//! updates). Each feed is fetched at start unless its cached copy is younger
//! than `refresh`, then every `refresh`; a failure backs off from a minute
//! (or `refresh`, if shorter), doubling, up to `refresh`. A good new body is
//! cached, then a reload is requested; if that reload fails, the previous
//! copy is put back so that the cache keeps describing what is enforced.
//! Downloads run here, never on the reload loop or the control socket.
use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use tokio::{
    sync::{oneshot, watch},
    time::Instant,
};

use super::{cache, unix_now, validate, Board};
use crate::{
    fetch::{self, Fetched},
    policy::FeedSpec,
};

/// A whole download (connect, headers, body) must finish within this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);
/// First wait after a failure (or `refresh`, if shorter).
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// How long a requested reload may take before the task stops waiting
/// (`portcullis reload` waits as long).
const RELOAD_WAIT: Duration = Duration::from_secs(300);

/// Asks the daemon's reload loop for a reload; its answer comes on the
/// receiver (None: the loop is gone).
pub type RequestReload =
    Arc<dyn Fn() -> Option<oneshot::Receiver<Result<u32, String>>> + Send + Sync>;

pub struct Ctx {
    pub state_dir: PathBuf,
    /// The enforced policy's feeds.
    pub specs: watch::Receiver<Vec<FeedSpec>>,
    pub board: Arc<Board>,
    pub reload: RequestReload,
}

struct Slot {
    due: Instant,
    backoff: Option<Duration>,
}

/// When a feed is first due: now, unless the server confirmed its cached
/// copy less than `refresh` ago.
fn first_due(ctx: &Ctx, spec: &FeedSpec) -> Instant {
    let now = Instant::now();
    let url = spec.url.as_str();
    if !cache::body_path(&ctx.state_dir, url).exists() {
        return now;
    }
    match cache::read_meta(&ctx.state_dir, url) {
        Some(m) => {
            let age = Duration::from_secs(unix_now().saturating_sub(m.checked_at));
            now + spec.refresh.saturating_sub(age)
        }
        None => now,
    }
}

pub async fn run(mut ctx: Ctx) {
    let client = match fetch::client(&fetch::ClientOptions {
        env_proxy: true,
        ..fetch::ClientOptions::default()
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("feeds: no HTTP client ({e}); feeds are not fetched");
            return;
        }
    };
    let mut slots: HashMap<String, Slot> = HashMap::new();
    loop {
        let specs = ctx.specs.borrow_and_update().clone();
        slots.retain(|url, _| specs.iter().any(|s| s.url.as_str() == url));
        for s in &specs {
            if !slots.contains_key(s.url.as_str()) {
                let due = first_due(&ctx, s);
                slots.insert(s.url.to_string(), Slot { due, backoff: None });
            }
        }
        let now = Instant::now();
        if let Some(spec) = specs
            .iter()
            .filter(|s| slots[s.url.as_str()].due <= now)
            .min_by_key(|s| slots[s.url.as_str()].due)
        {
            let ok = fetch_one(&ctx, &client, spec).await;
            let slot = slots
                .get_mut(spec.url.as_str())
                .expect("slot of a listed feed");
            if ok {
                slot.backoff = None;
                slot.due = Instant::now() + spec.refresh;
            } else {
                let b = next_backoff(slot.backoff, spec.refresh);
                slot.backoff = Some(b);
                slot.due = Instant::now() + b;
            }
            continue;
        }
        let next = slots.values().map(|s| s.due).min();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            changed = ctx.specs.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// The wait after a failure: a minute (or `refresh`, if shorter) after the
/// first, then doubling, never longer than `refresh`.
fn next_backoff(previous: Option<Duration>, refresh: Duration) -> Duration {
    match previous {
        None => FIRST_BACKOFF.min(refresh),
        Some(b) => b.saturating_mul(2).min(refresh),
    }
}

/// One attempt; true if the feed is current afterwards (updated, or
/// confirmed unchanged).
async fn fetch_one(ctx: &Ctx, client: &reqwest::Client, spec: &FeedSpec) -> bool {
    let url = spec.url.as_str();
    let shown = fetch::redacted(&spec.url);
    let dir = ctx.state_dir.clone();
    let body_path = cache::body_path(&dir, url);
    let have_copy = body_path.exists();
    let meta = cache::read_meta(&dir, url).filter(|_| have_copy);
    let req = fetch::Request {
        url: &spec.url,
        headers: &[],
        etag: meta.as_ref().and_then(|m| m.etag.as_deref()),
        last_modified: meta.as_ref().and_then(|m| m.last_modified.as_deref()),
        max_bytes: spec.max_bytes,
        timeout: FETCH_TIMEOUT,
    };
    let got = fetch::get(client, &req).await;
    let now = unix_now();
    let (bytes, etag, last_modified, content_type) = match got {
        Err(e) => {
            let kept = match &meta {
                Some(m) => format!("the last good copy ({} entries) keeps enforcing", m.entries),
                None => "no copy yet: the feed contributes nothing".into(),
            };
            tracing::warn!("feed {shown}: fetch failed ({}): {e}; {kept}", e.reason());
            ctx.board.record(url, e.reason(), Some(e.to_string()), None);
            return false;
        }
        Ok(Fetched::NotModified) => {
            if let Some(mut m) = meta {
                m.checked_at = now;
                if let Err(e) = cache::write_meta(&dir, &m) {
                    tracing::warn!("feed {shown}: {e}");
                }
                tracing::debug!("feed {shown}: not modified");
                ctx.board.record(url, "not_modified", None, Some(now));
                return true;
            }
            // A 304 to an unconditional GET: nothing to keep.
            tracing::warn!("feed {shown}: answered 304 to a request without a copy");
            ctx.board
                .record(url, "http_status", Some("304 without a copy".into()), None);
            return false;
        }
        Ok(Fetched::Body {
            bytes,
            etag,
            last_modified,
            content_type,
        }) => (bytes, etag, last_modified, content_type),
    };
    let previous = meta.as_ref().map(|m| m.entries);
    let vpath = body_path.clone();
    // Parsing 20 MB takes a while: off the runtime's two workers.
    let checked = tokio::task::spawn_blocking(move || {
        let r = validate(&bytes, content_type.as_deref(), previous, &vpath);
        (r, bytes)
    })
    .await;
    let Ok((verdict, bytes)) = checked else {
        ctx.board
            .record(url, "invalid", Some("validation failed".into()), None);
        return false;
    };
    let entries = match verdict {
        Ok(n) => n,
        Err(r) => {
            let kept = match &meta {
                Some(m) => format!("the last good copy ({} entries) keeps enforcing", m.entries),
                None => "no copy yet: the feed contributes nothing".into(),
            };
            tracing::warn!(
                "feed {shown}: refused the download ({}): {r}; {kept}",
                r.reason()
            );
            ctx.board.record(url, r.reason(), Some(r.to_string()), None);
            return false;
        }
    };
    let new_meta = cache::Meta {
        url: url.to_string(),
        etag,
        last_modified,
        fetched_at: now,
        checked_at: now,
        entries,
        bytes: bytes.len() as u64,
    };
    // The same bytes (a server without validators): only confirmed.
    if have_copy && std::fs::read(&body_path).is_ok_and(|old| old == bytes) {
        let mut m = meta.unwrap_or_else(|| new_meta.clone());
        m.checked_at = now;
        m.etag = new_meta.etag.clone();
        m.last_modified = new_meta.last_modified.clone();
        if let Err(e) = cache::write_meta(&dir, &m) {
            tracing::warn!("feed {shown}: {e}");
        }
        ctx.board.record(url, "unchanged", None, Some(now));
        return true;
    }
    let previous = match cache::store(&dir, &bytes, &new_meta) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("feed {shown}: {e}; the download is not used");
            ctx.board
                .record(url, "cache_error", Some(e.to_string()), None);
            return false;
        }
    };
    drop(bytes);
    let answer = match (ctx.reload)() {
        Some(rx) => match tokio::time::timeout(RELOAD_WAIT, rx).await {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => Err("the reload loop went away".into()),
            Err(_) => {
                // Still running: it reads the new copy; keep it.
                tracing::warn!("feed {shown}: the reload has not answered in {RELOAD_WAIT:?}");
                ctx.board.record(url, "updated", None, Some(now));
                return true;
            }
        },
        None => Err("the reload loop is not running".into()),
    };
    match answer {
        Ok(generation) => {
            tracing::info!("feed {shown}: updated, {entries} entries; generation {generation}");
            ctx.board.record(url, "updated", None, Some(now));
            true
        }
        Err(e) => {
            let first = e.lines().next().unwrap_or_default().to_string();
            match cache::restore(&dir, url, previous) {
                Ok(()) => tracing::error!(
                    "feed {shown}: the policy with the new copy was not applied ({first}); \
                     the previous copy is restored"
                ),
                Err(re) => tracing::error!(
                    "feed {shown}: the policy with the new copy was not applied ({first}), \
                     and restoring the previous copy failed: {re}"
                ),
            }
            ctx.board.record(url, "apply_failed", Some(first), None);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves whatever `answer` holds now: (status line, headers, body); a
    /// request carrying `If-None-Match: "v1"` gets a 304 while it is "v1".
    async fn server(answer: Arc<Mutex<(String, String, String)>>) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                let (status, headers, body) = answer.lock().unwrap().clone();
                let reply = if req.contains("if-none-match: \"v1\"") && headers.contains("\"v1\"") {
                    "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n".to_string()
                } else {
                    format!(
                        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn fetch_one_caches_reloads_honours_304_refuses_html_and_restores_on_a_failed_apply() {
        let dir = std::env::temp_dir().join(format!("pc-feedtask-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let answer = Arc::new(Mutex::new((
            "200 OK".to_string(),
            "ETag: \"v1\"\r\nContent-Type: text/plain\r\n".to_string(),
            "192.0.2.0/24\n198.51.100.7\n".to_string(),
        )));
        let addr = server(answer.clone()).await;
        let url = url::Url::parse(&format!("http://{addr}/drop.txt")).unwrap();
        let spec = FeedSpec {
            url: url.clone(),
            name: "t".into(),
            refresh: Duration::from_secs(60),
            format: crate::policy::FeedFormat::Auto,
            max_bytes: 1 << 20,
        };
        let board = Arc::new(Board::default());
        board.sync(&[crate::policy::FeedInfo {
            spec: spec.clone(),
            path: cache::body_path(&dir, url.as_str()),
            cached: None,
            unreadable: None,
        }]);
        let reloads = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, f) = (reloads.clone(), fail.clone());
        let (_tx, specs) = watch::channel(Vec::new());
        let ctx = Ctx {
            state_dir: dir.clone(),
            specs,
            board: board.clone(),
            reload: Arc::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(if f.load(Ordering::SeqCst) {
                    Err("rejected".into())
                } else {
                    Ok(7)
                });
                Some(rx)
            }),
        };
        let client = fetch::client(&fetch::ClientOptions::default()).unwrap();
        let last = |b: &Board| b.states()[0].last_result.clone().unwrap_or_default();
        let body = cache::body_path(&dir, url.as_str());

        assert!(fetch_one(&ctx, &client, &spec).await);
        assert_eq!(
            (last(&board), reloads.load(Ordering::SeqCst)),
            ("updated".into(), 1)
        );
        assert_eq!(
            std::fs::read(&body).unwrap(),
            b"192.0.2.0/24\n198.51.100.7\n"
        );
        assert_eq!(
            cache::read_meta(&dir, url.as_str())
                .unwrap()
                .etag
                .as_deref(),
            Some("\"v1\"")
        );

        // Conditional GET: 304, no reload.
        assert!(fetch_one(&ctx, &client, &spec).await);
        assert_eq!(
            (last(&board), reloads.load(Ordering::SeqCst)),
            ("not_modified".into(), 1)
        );

        // HTML with 200: refused, nothing replaced, no reload.
        *answer.lock().unwrap() = (
            "200 OK".into(),
            "Content-Type: text/html\r\n".into(),
            "<html>login</html>".into(),
        );
        assert!(!fetch_one(&ctx, &client, &spec).await);
        assert_eq!(
            (last(&board), reloads.load(Ordering::SeqCst)),
            ("html".into(), 1)
        );
        assert_eq!(
            std::fs::read(&body).unwrap(),
            b"192.0.2.0/24\n198.51.100.7\n"
        );

        // A good new copy whose reload fails: the previous copy comes back.
        fail.store(true, Ordering::SeqCst);
        *answer.lock().unwrap() = (
            "200 OK".into(),
            "ETag: \"v2\"\r\n".into(),
            "203.0.113.0/24\n".into(),
        );
        assert!(!fetch_one(&ctx, &client, &spec).await);
        assert_eq!(
            (last(&board), reloads.load(Ordering::SeqCst)),
            ("apply_failed".into(), 2)
        );
        assert_eq!(
            std::fs::read(&body).unwrap(),
            b"192.0.2.0/24\n198.51.100.7\n"
        );
        assert_eq!(
            cache::read_meta(&dir, url.as_str())
                .unwrap()
                .etag
                .as_deref(),
            Some("\"v1\"")
        );

        // A 500: counted by the fetch error's reason.
        *answer.lock().unwrap() = (
            "500 Internal Server Error".into(),
            String::new(),
            "x".into(),
        );
        assert!(!fetch_one(&ctx, &client, &spec).await);
        assert_eq!(last(&board), "http_status");
        let results = &board.states()[0].results;
        assert_eq!(results.values().sum::<u64>(), 5, "{results:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn backoff_starts_at_a_minute_doubles_and_stops_at_refresh() {
        let refresh = Duration::from_secs(6 * 3600);
        let mut b = None;
        let mut seen = Vec::new();
        for _ in 0..12 {
            let n = next_backoff(b, refresh);
            seen.push(n.as_secs());
            b = Some(n);
        }
        assert_eq!(&seen[..4], &[60, 120, 240, 480]);
        assert_eq!(*seen.last().unwrap(), refresh.as_secs());
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
        // A refresh shorter than a minute (the test hook) caps it from the start.
        assert_eq!(
            next_backoff(None, Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        assert_eq!(
            next_backoff(Some(Duration::from_secs(2)), Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }
}
