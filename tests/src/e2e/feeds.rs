//! List feeds against the real daemon: a small HTTP server in the host
//! namespace (on its loopback) serves the list with an ETag and a
//! Last-Modified, answers conditional GETs with 304 and counts requests;
//! the scenario changes what it serves and probes across veth.
//!
//! The policy's `refresh` is 2 s: the daemon runs with
//! `PORTCULLIS_TEST_FEED_MIN_REFRESH=1s` (the test hook that lowers the 1
//! minute floor; docs/policy.md), so that a failure's backoff (a minute, or
//! `refresh` if shorter) is 2 s as well.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::{
    cleanup, netns,
    scenarios::{check, metric, t, wait_until, Ctx, Exp},
    topology::*,
};

use Exp::{Blocked as B, Open as O};

/// What the server answers.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    /// A list, with this ETag.
    List(String, String),
    Html,
    /// This many bytes of junk, streamed without a Content-Length.
    Junk(usize),
    Status500,
}

#[derive(Default)]
pub(crate) struct Counts {
    pub requests: u64,
    pub not_modified: u64,
}

/// The feed server; stopped (and joined) on drop.
pub(crate) struct FeedServer {
    pub addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    counts: Arc<Mutex<Counts>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Result<()>>>,
    _guard: cleanup::Guard,
}

impl FeedServer {
    pub(crate) fn start(ns: &str, first: Answer) -> Result<FeedServer> {
        let answer = Arc::new(Mutex::new(first));
        let counts = Arc::new(Mutex::new(Counts::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let listener = netns::run_in(ns, || TcpListener::bind("127.0.0.1:0"))??;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (a, c, s) = (answer.clone(), counts.clone(), stop.clone());
        let thread = thread::spawn(move || serve(listener, a, c, s));
        let s = stop.clone();
        let guard = cleanup::register(format!("stop feed server {addr}"), move || {
            s.store(true, Ordering::SeqCst)
        });
        Ok(FeedServer {
            addr,
            answer,
            counts,
            stop,
            thread: Some(thread),
            _guard: guard,
        })
    }

    pub(crate) fn set(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    pub(crate) fn counts(&self) -> (u64, u64) {
        let c = self.counts.lock().unwrap();
        (c.requests, c.not_modified)
    }

    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts until `stop`; one request per connection (`Connection: close`).
fn serve(
    l: TcpListener,
    answer: Arc<Mutex<Answer>>,
    counts: Arc<Mutex<Counts>>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((s, _)) => {
                let a = answer.lock().unwrap().clone();
                let _ = answer_one(s, &a, &counts, &stop);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

const LAST_MODIFIED: &str = "Wed, 02 Dec 2026 10:00:00 GMT";

fn answer_one(
    mut s: TcpStream,
    a: &Answer,
    counts: &Mutex<Counts>,
    stop: &AtomicBool,
) -> Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 << 10 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&req).to_lowercase();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
    };
    counts.lock().unwrap().requests += 1;
    match a {
        Answer::List(body, etag) => {
            let tag = format!("\"{etag}\"");
            if header("if-none-match").as_deref() == Some(tag.to_lowercase().as_str()) {
                counts.lock().unwrap().not_modified += 1;
                write!(
                    s,
                    "HTTP/1.1 304 Not Modified\r\nETag: {tag}\r\nConnection: close\r\n\r\n"
                )?;
                return Ok(());
            }
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: {tag}\r\n\
                 Last-Modified: {LAST_MODIFIED}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
        }
        Answer::Html => {
            let body = "<!DOCTYPE html><html><body>503 maintenance</body></html>\n";
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )?;
        }
        Answer::Junk(total) => {
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
            )?;
            // 64 KiB at a time: nothing large is held here either.
            let chunk = "10.0.0.0/8 junk junk junk\n".repeat(2521).into_bytes();
            let mut sent = 0;
            while sent < *total && !stop.load(Ordering::SeqCst) {
                if s.write_all(&chunk).is_err() {
                    break; // the daemon hung up at its cap
                }
                sent += chunk.len();
            }
        }
        Answer::Status500 => {
            write!(
                s,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops\n"
            )?;
        }
    }
    Ok(())
}

fn policy(addr: SocketAddr) -> String {
    format!(
        r#"version = 1

[[failsafe]]
ports = ["22/tcp"]
from  = ["198.18.0.0/24"]

[[zone]]
name  = "web"
ports = ["8880/tcp"]
allow = ["any"]

[blocklist]
feeds = [{{ url = "http://{addr}/drop.txt", refresh = "2s", name = "e2e" }}]

[metrics]
listen = "127.0.0.1:9469"
"#
    )
}

/// `portcullis_feed_fetches_total{feed="e2e",result}`.
fn fetches(cx: &Ctx, result: &str) -> f64 {
    cx.sb
        .metrics()
        .ok()
        .and_then(|m| {
            metric(
                &m,
                "portcullis_feed_fetches_total",
                &[("feed", "e2e"), ("result", result)],
            )
        })
        .unwrap_or(0.0)
}

/// Waits (bounded) until the feed's `result` count passes `above`.
fn wait_result(cx: &Ctx, result: &str, above: f64) -> Result<()> {
    let ok = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        fetches(cx, result) > above
    });
    ensure!(
        ok,
        "no fetch counted as {result} within 20 s (still {})",
        fetches(cx, result)
    );
    Ok(())
}

fn generation(cx: &Ctx) -> Result<u64> {
    Ok(cx.sb.status()?.generation)
}

const ENV: [(&str, &str); 1] = [("PORTCULLIS_TEST_FEED_MIN_REFRESH", "1s")];

/// A feed is applied after its first fetch; a change adds and removes
/// sources; a 304 changes nothing; a new copy whose reload is rejected (the
/// policy file broken meanwhile) is taken back out of the cache; HTML,
/// 100 MB of junk and a 500 are each refused and counted while the old set
/// keeps enforcing; a restart with the server down starts from the cache.
pub(crate) fn refresh_applies_and_a_bad_feed_keeps_the_old_set(cx: &mut Ctx) -> Result<()> {
    let feeds_dir = cx.sb.state_dir().join("feeds");
    let _ = std::fs::remove_dir_all(&feeds_dir);
    let v1 = Answer::List(
        "# e2e feed v1\n198.51.100.7\n203.0.113.7\n".into(),
        "v1".into(),
    );
    let mut server = FeedServer::start(cx.sb.host_ns(), v1)?;
    let p = cx.policy("feeds.toml", &policy(server.addr))?;
    check(cx.sb, &[(t(LISTED4, 8880), O), (t(BLOCKED4, 8880), O)])?;
    let started = Instant::now();
    let mut d = cx.sb.start_daemon_env(&p, &[], &ENV)?;
    let dropped = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        check(cx.sb, &[(t(LISTED4, 8880), B)]).is_ok()
    });
    ensure!(
        dropped,
        "198.51.100.7 not dropped 10 s after the start (feed: {:?})",
        server.counts()
    );
    cx.note(format!(
        "first fetch applied {} ms after the start",
        started.elapsed().as_millis()
    ));
    check(
        cx.sb,
        &[
            (t(LISTED4, 8880), B),
            (t(BLOCKED4, 8880), B),
            (t(LISTED4B, 8880), O),
            (t(INET4, 8880), O),
        ],
    )?;
    let m = cx.sb.metrics()?;
    let entries = metric(&m, "portcullis_feed_entries", &[("feed", "e2e")]);
    ensure!(
        entries == Some(2.0),
        "portcullis_feed_entries = {entries:?}"
    );
    ensure!(
        metric(
            &m,
            "portcullis_feed_last_success_timestamp_seconds",
            &[("feed", "e2e")]
        )
        .is_some_and(|t| t > 1.7e9),
        "no last-success timestamp"
    );

    // The next refresh is a conditional GET: 304, nothing changes.
    let gen = generation(cx)?;
    let (_, nm0) = server.counts();
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        server.counts().1 > nm0
    });
    ensure!(
        ok,
        "no conditional GET answered 304 within 10 s: {:?}",
        server.counts()
    );
    wait_result(cx, "not_modified", 0.0)?;
    ensure!(generation(cx)? == gen, "a 304 changed the generation");
    check(cx.sb, &[(t(LISTED4, 8880), B), (t(BLOCKED4, 8880), B)])?;

    // A new version adds 192.0.2.7 and drops 203.0.113.7.
    server.set(Answer::List(
        "198.51.100.7\n192.0.2.7\n".into(),
        "v2".into(),
    ));
    let changed = wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        check(cx.sb, &[(t(LISTED4B, 8880), B), (t(BLOCKED4, 8880), O)]).is_ok()
    });
    ensure!(changed, "the changed feed was not applied within 15 s");
    check(cx.sb, &[(t(LISTED4, 8880), B), (t(INET4, 8880), O)])?;
    let enforced = generation(cx)?;
    ensure!(enforced > gen, "the update did not move the generation");

    // `explain` names the feed and the line of its cached copy, and knows
    // the enforced policy (feed copy included) is the one on disk.
    let state = cx.sb.state_dir().display().to_string();
    let root = cx.sb.pin_root.display().to_string();
    let args = [
        "explain",
        "--from",
        "192.0.2.7",
        "--to",
        "8880/tcp",
        "--pin-root",
        &root,
        "--state-dir",
        &state,
        "-o",
        "json",
    ];
    let mut c = cx.sb.portcullis(&args);
    // The CLI reads the policy too: its 2 s refresh needs the hook as well.
    c.envs(ENV);
    let out = super::cmd::run(&mut c, super::patience(Duration::from_secs(20)))?;
    let e: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("explain: {}", String::from_utf8_lossy(&out.stderr)))?;
    let lines = e["lines"].as_array().cloned().unwrap_or_default();
    ensure!(
        e["reason"] == "blocklist"
            && e["policy_changed"] == false
            && lines.iter().any(|l| {
                l["path"].as_str().is_some_and(|p| p.ends_with(".list")) && l["line"] == 2
            }),
        "explain of a feed-listed source: {e}"
    );

    // A new version while the policy file is broken: the reload it asks for
    // is rejected, so the cached copy is put back (v2, as enforced).
    let body = filter_user::feeds::cache::body_path(
        &cx.sb.state_dir(),
        &format!("http://{}/drop.txt", server.addr),
    );
    let v2 = std::fs::read(&body).context("the cached copy")?;
    let good = policy(server.addr);
    super::daemon::Sandbox::write_atomic(&p, &format!("{good}bogus = 1\n"))?;
    let rejected = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        d.log().iter().any(|l| l.contains("rejected"))
    });
    ensure!(rejected, "the broken policy file was not rejected");
    let before = fetches(cx, "apply_failed");
    server.set(Answer::List(
        "198.51.100.7\n192.0.2.7\n10.99.0.7\n".into(),
        "v3".into(),
    ));
    wait_result(cx, "apply_failed", before)?;
    ensure!(
        std::fs::read(&body)? == v2,
        "the cache was not restored after the failed apply"
    );
    check(cx.sb, &[(t(VPN4, 8880), O), (t(LISTED4B, 8880), B)])?;
    ensure!(
        generation(cx)? == enforced,
        "a failed apply moved the generation"
    );
    // The policy fixed: the next refresh fetches v3 again and applies it.
    super::daemon::Sandbox::write_atomic(&p, &good)?;
    let applied = wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        check(cx.sb, &[(t(VPN4, 8880), B)]).is_ok()
    });
    ensure!(applied, "v3 was not applied after the policy was fixed");
    let enforced = generation(cx)?;

    // Bad answers: each refused and counted, the v3 set keeps enforcing.
    for (answer, result) in [
        (Answer::Html, "html"),
        (Answer::Junk(100 << 20), "too_large"),
        (Answer::Status500, "http_status"),
    ] {
        let before = fetches(cx, result);
        server.set(answer);
        wait_result(cx, result, before)?;
        check(
            cx.sb,
            &[
                (t(LISTED4B, 8880), B),
                (t(LISTED4, 8880), B),
                (t(BLOCKED4, 8880), O),
            ],
        )
        .with_context(|| format!("after a refused answer ({result})"))?;
        ensure!(
            generation(cx)? == enforced,
            "a refused answer ({result}) moved the generation"
        );
    }
    let text = String::from_utf8_lossy(&cx.sb.cli(&["status"])?.stdout).into_owned();
    ensure!(
        text.lines()
            .any(|l| l.starts_with("feed        e2e: 3 entries, confirmed")
                && l.contains("last attempt http_status")),
        "status has no feed line with the last error:\n{text}"
    );
    let out = cx.sb.cli(&["status", "--output", "json"])?;
    let v: Value = serde_json::from_slice(&out.stdout).context("status JSON")?;
    let f = &v["daemon"]["feeds"][0];
    ensure!(
        f["name"] == "e2e" && f["entries"] == 3 && f["last_result"] == "http_status",
        "status -o json daemon.feeds: {f}"
    );
    let log = d.log().join("\n");
    ensure!(
        log.contains("refused the download (html)")
            && log.contains(&format!("http://{}/drop.txt", server.addr)),
        "no log line naming the feed and the reason"
    );
    d.terminate()?;

    // Server down, daemon restarted: the cached copy is enforced at start.
    server.stop();
    let mut d = cx.sb.start_daemon_env(&p, &[], &ENV)?;
    check(
        cx.sb,
        &[
            (t(LISTED4B, 8880), B),
            (t(LISTED4, 8880), B),
            (t(VPN4, 8880), B),
            (t(BLOCKED4, 8880), O),
            (t(INET4, 8880), O),
        ],
    )
    .context("after a restart with the feed server down")?;
    wait_result(cx, "unreachable", 0.0)?;
    check(cx.sb, &[(t(LISTED4B, 8880), B)])?;
    d.terminate()?;
    let _ = std::fs::remove_dir_all(&feeds_dir);
    Ok(())
}
