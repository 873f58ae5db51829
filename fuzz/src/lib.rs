//! The fuzz entry points and the invariants they assert, one function per target.
//! Shared by the libFuzzer targets (fuzz_targets/) and by the stable regression
//! test filter-user/tests/fuzz_regressions.rs, which includes this file by path
//! and replays fuzz/regressions/<target>/*: keep it one file, depending only on
//! crates filter-user depends on.
//!
//! Each function panics when an invariant breaks; that is the crash libFuzzer
//! reports. A `false` return means "input out of scope" (not kept in the corpus).

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use filter_user::policy::{self, CompiledPolicy, Diagnostic, PolicyError};

/// The targets, by the name of their corpus and regression directories.
pub const TARGETS: &[&str] = &["policy", "list", "control", "metrics"];

/// Runs the target `name` on one input.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "policy" => policy(data),
        "list" => list(data),
        "control" => control(data),
        "metrics" => metrics(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

// ---------------------------------------------------------------------------
// policy: compile_str on arbitrary UTF-8.

/// List files the sandbox holds, as the example policies name them.
const SANDBOX_FILES: &[(&str, &[u8])] = &[
    (
        "lists/drop.txt",
        include_bytes!("../../deploy/examples/lists/drop.txt"),
    ),
    (
        "lists/drop-sample.jsonl",
        include_bytes!("../../deploy/examples/lists/drop-sample.jsonl"),
    ),
];

/// A private directory holding only [`SANDBOX_FILES`], made once per process
/// (libFuzzer's workers are processes), so that what a fuzzed policy can read
/// is the same on every run and every machine. Directories of dead processes
/// are removed.
fn sandbox() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("portcullis-fuzz-"))
                else {
                    continue;
                };
                if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = base.join(format!("portcullis-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (name, bytes) in SANDBOX_FILES {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("sandbox dir");
            std::fs::write(&path, bytes).expect("sandbox file");
        }
        dir
    })
}

/// A list file name that resolves inside the sandbox whether or not the parser
/// trims it: relative, no `..`.
fn confined(name: &str) -> bool {
    [name, name.trim()].iter().all(|n| {
        Path::new(n)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    })
}

/// Would the policy read only files inside the sandbox? Looks where the
/// compiler looks (`blocklist.files`, a table or inline table).
fn reads_only_sandbox(text: &str) -> bool {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return true;
    };
    let files = doc
        .as_table()
        .get("blocklist")
        .and_then(|b| b.as_table_like())
        .and_then(|b| b.get("files"))
        .and_then(|f| f.as_array());
    files.is_none_or(|a| a.iter().all(|v| v.as_str().is_none_or(confined)))
}

pub fn policy(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    if !reads_only_sandbox(text) {
        return false;
    }
    let dir = sandbox();
    let path = dir.join("policy.toml");
    let first = policy::compile_str(text, &path);
    let again = policy::compile_str(text, &path);
    assert_eq!(first, again, "the same text compiled twice differs");
    match first {
        Ok(p) => {
            check_compiled(&p, dir);
            // A comment changes the hash and nothing else.
            let commented = format!("{text}\n# fuzz\n");
            let mut q = policy::compile_str(&commented, &path)
                .unwrap_or_else(|e| panic!("valid policy + a comment is invalid:\n{e}"));
            assert_ne!(q.source_hash, p.source_hash, "the hash ignores the text");
            q.source_hash = p.source_hash;
            assert_eq!(q, p, "a trailing comment changed the compiled policy");
        }
        Err(e) => check_errors(&e, text, &path, dir),
    }
    true
}

fn check_compiled(p: &CompiledPolicy, dir: &Path) {
    assert_eq!(p.blocklist_v4, policy::merge_v4(p.blocklist_v4.clone()));
    assert_eq!(p.blocklist_v6, policy::merge_v6(p.blocklist_v6.clone()));
    for f in &p.failsafe {
        assert_eq!(f.ports, policy::merge_ports(f.ports.clone()));
        assert_eq!(f.from_v4, policy::merge_v4(f.from_v4.clone()));
        assert_eq!(f.from_v6, policy::merge_v6(f.from_v6.clone()));
    }
    let mut claims = Vec::new();
    for (i, z) in p.zones.iter().enumerate() {
        assert_eq!(usize::from(z.id), i + 1, "zone ids are 1.. in order");
        assert!(
            !z.name.trim().is_empty(),
            "zone #{} has an empty name",
            z.id
        );
        assert!(
            p.zones[..i].iter().all(|o| o.name != z.name),
            "duplicate zone name {:?}",
            z.name
        );
        assert_eq!(z.ports, policy::merge_ports(z.ports.clone()));
        assert_eq!(z.allow_v4, policy::merge_v4(z.allow_v4.clone()));
        assert_eq!(z.allow_v6, policy::merge_v6(z.allow_v6.clone()));
        claims.extend(z.ports.iter().map(|r| (r.proto, r.first, r.last, z.id)));
    }
    // Zones' ranges are each merged, so any overlap is between two zones.
    claims.sort();
    for w in claims.windows(2) {
        let ((pa, _, la, za), (pb, fb, _, zb)) = (w[0], w[1]);
        assert!(
            pa != pb || fb > la,
            "zones {za} and {zb} both claim {fb}/{pb:?}"
        );
    }
    for l in &p.list_files {
        assert!(
            l.path.starts_with(dir),
            "a list file outside the sandbox was read: {}",
            l.path.display()
        );
    }
    assert!(!p.summary().to_string().is_empty());
}

/// 1-based line and column inside `text` (lines split at `\n`, columns in
/// characters, one past the end allowed).
fn assert_inside(d: &Diagnostic, text: &str) {
    assert!(
        d.line >= 1 && d.column >= 1,
        "position {}:{} in {d:?}",
        d.line,
        d.column
    );
    let line = text
        .split('\n')
        .nth(d.line - 1)
        .unwrap_or_else(|| panic!("line {} past the end of the text: {d:?}", d.line));
    let width = line.chars().count() + 1;
    assert!(
        d.column <= width,
        "column {} past the end of line {} ({width}): {d:?}",
        d.column,
        d.line
    );
}

fn check_errors(e: &PolicyError, text: &str, path: &Path, dir: &Path) {
    assert!(!e.is_empty(), "an error without diagnostics");
    let mut last_in_policy = (1, 1);
    let mut seen_list = false;
    for d in e.iter() {
        assert!(!d.message.is_empty(), "empty message: {d:?}");
        if d.path == path {
            assert!(!seen_list, "a policy diagnostic after a list one: {e:?}");
            assert_inside(d, text);
            assert!((d.line, d.column) >= last_in_policy, "unsorted: {e:?}");
            last_in_policy = (d.line, d.column);
        } else {
            seen_list = true;
            assert!(
                d.path.starts_with(dir),
                "a diagnostic names a file outside the sandbox: {d:?}"
            );
            let bytes = std::fs::read(&d.path).expect("sandbox list file");
            let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
            assert_inside(d, &String::from_utf8_lossy(body).replace('\r', ""));
        }
    }
    assert!(!e.to_string().is_empty());
}

// ---------------------------------------------------------------------------
// list: one list file's bytes.

pub fn list(data: &[u8]) -> bool {
    let path = Path::new("list.txt");
    let (entries, diags) = policy::parse_list_bytes(data, path);
    let body = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    assert!(
        entries <= lines.len(),
        "{entries} entries from {} lines",
        lines.len()
    );
    assert!(diags.len() <= lines.len(), "more diagnostics than lines");
    assert!(
        diags.len() <= 100,
        "diagnostics are not capped: {}",
        diags.len()
    );
    for d in &diags {
        assert_eq!(d.path, path);
        let raw = lines
            .get(d.line.wrapping_sub(1))
            .unwrap_or_else(|| panic!("line {} out of range: {d:?}", d.line));
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let width = String::from_utf8_lossy(raw).chars().count() + 1;
        assert!(
            d.column >= 1 && d.column <= width,
            "column {} outside line {} ({width}): {d:?}",
            d.column,
            d.line
        );
    }
    // Lines are independent: each one parsed alone gives the same entries and
    // diagnostics (a leading newline keeps a later BOM from being stripped).
    let mut per_line_entries = 0;
    let mut per_line: Vec<Diagnostic> = Vec::new();
    for (i, raw) in lines.iter().enumerate() {
        let mut one = Vec::with_capacity(raw.len() + 1);
        one.push(b'\n');
        one.extend_from_slice(raw);
        let (n, ds) = policy::parse_list_bytes(&one, path);
        per_line_entries += n;
        per_line.extend(ds.into_iter().map(|mut d| {
            assert_eq!(d.line, 2, "a one-line list reported another line: {d:?}");
            d.line = i + 1;
            d
        }));
    }
    assert_eq!(entries, per_line_entries, "entries differ line by line");
    if diags != per_line {
        // Past the per-file cap: the first ones, then one summary line.
        let (summary, shown) = diags
            .split_last()
            .expect("fewer diagnostics than bad lines");
        assert!(
            shown.len() < per_line.len(),
            "diagnostics differ line by line"
        );
        assert_eq!(
            shown,
            &per_line[..shown.len()],
            "diagnostics differ line by line"
        );
        let hidden = per_line.len() - shown.len();
        assert!(
            summary
                .message
                .starts_with(&format!("{hidden} more bad lines")),
            "{hidden} bad lines dropped without a summary saying so: {summary:?}"
        );
        let first_hidden = &per_line[shown.len()];
        assert_eq!(
            (summary.line, summary.column),
            (first_hidden.line, first_hidden.column)
        );
    }
    true
}

// ---------------------------------------------------------------------------
// control: the bytes a control-socket client sends.

pub fn control(data: &[u8]) -> bool {
    use filter_user::daemon::control::{read_request, RequestError, MAX_REQUEST};
    // The framing the daemon applies: one line, at most MAX_REQUEST bytes.
    let framed = runtime().block_on(read_request(data, std::time::Duration::from_secs(1)));
    let newline = data.iter().take(MAX_REQUEST).position(|&b| b == b'\n');
    match (&framed, newline) {
        (Ok(line), Some(i)) => assert_eq!(line.as_slice(), &data[..=i], "not the first line"),
        (Ok(line), None) => {
            assert!(
                data.len() < MAX_REQUEST,
                "an over-long request was accepted"
            );
            assert_eq!(line.as_slice(), data, "not the whole request");
        }
        (Err(RequestError::TooLong), None) => assert!(data.len() >= MAX_REQUEST),
        (other, _) => panic!("framing gave {other:?} (newline at {newline:?})"),
    }
    check_request(data);
    if let Ok(line) = &framed {
        check_request(line);
    }
    true
}

fn check_request(data: &[u8]) {
    use filter_user::daemon::control::parse_request;
    let parsed = parse_request(data);
    match &parsed {
        Ok(req) => {
            let line = serde_json::to_vec(req).expect("requests serialise");
            let back = parse_request(&line).expect("a serialised request parses");
            assert_eq!(format!("{back:?}"), format!("{req:?}"));
        }
        Err(e) => assert!(
            e.starts_with("bad request: ") && e.len() > "bad request: ".len(),
            "error text {e:?}"
        ),
    }
    // Clients end the line with a newline; it must not change the outcome.
    let mut terminated = data.to_vec();
    terminated.push(b'\n');
    assert_eq!(
        parse_request(&terminated).is_ok(),
        parsed.is_ok(),
        "a trailing newline changed the outcome"
    );
}

// ---------------------------------------------------------------------------
// metrics: the HTTP request path up to the auth verdict.
//
// The input is the byte stream of one client connection. It goes through a
// hyper HTTP/1 server with the daemon's header limits, whose service does what
// the daemon's does before rendering: take the Authorization header and ask
// [`Auth::check`] (argon2 replaced by a cheap verifier, so the fuzzer can reach
// the "right password" path). The same bytes are also fed to the header parser
// directly, as one header value.

use filter_user::daemon::metrics::{
    credentials, Auth, Verdict, Verifier, MAX_HEADERS, MAX_HEADER_BYTES,
};
use filter_user::policy::BasicAuth;

const USER: &[u8] = b"prom";
const PASSWORD: &[u8] = b"s3cret";

/// "argon2" that compares the password with the one in a `plain:` hash.
struct Plain;

impl Verifier for Plain {
    fn verify(&self, password: &[u8], phc: &str) -> bool {
        phc.strip_prefix("plain:")
            .is_some_and(|p| p.as_bytes() == password)
    }
    fn dummy_like(&self, _phc: &str) -> Option<String> {
        Some("dummy:".into())
    }
}

fn auth_config() -> BasicAuth {
    BasicAuth {
        user: String::from_utf8(USER.to_vec()).expect("ascii"),
        password_hash: format!("plain:{}", String::from_utf8_lossy(PASSWORD)),
    }
}

/// What the verdict must be for one header value.
fn expected(header: Option<&[u8]>) -> Verdict {
    match header.and_then(credentials) {
        Some((u, p)) if u == USER && p == PASSWORD => Verdict::Allowed,
        _ => Verdict::Denied,
    }
}

fn check_credentials(header: &[u8]) {
    let Some((user, password)) = credentials(header) else {
        return;
    };
    assert!(!user.contains(&b':'), "the user keeps a colon: {user:?}");
    // What was decoded encodes back to a header that decodes the same, under
    // any spelling of the scheme.
    let mut plain = user.clone();
    plain.push(b':');
    plain.extend_from_slice(&password);
    let token = base64_encode(&plain);
    for scheme in ["Basic", "basic", "BASIC"] {
        let again = credentials(format!("{scheme} {token}").as_bytes());
        assert_eq!(
            again.as_ref(),
            Some(&(user.clone(), password.clone())),
            "{scheme}"
        );
    }
}

/// Standard base64 with padding (what Authorization: Basic carries).
fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

pub fn metrics(data: &[u8]) -> bool {
    use http_body_util::Full;
    use hyper::{body::Bytes, server::conn::http1, service::service_fn, Response, StatusCode};
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    check_credentials(data);

    // A fresh cache per input: verdicts may not depend on earlier inputs.
    let auth = std::sync::Arc::new(Auth::new(
        std::sync::Arc::new(Plain),
        std::time::Duration::from_secs(1),
    ));
    let cfg = auth_config();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = requests.clone();
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (auth, cfg, seen) = (auth.clone(), cfg.clone(), seen.clone());
        async move {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let header = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec());
            check_credentials(header.as_deref().unwrap_or_default());
            let verdict = auth.check(header.as_deref(), &cfg).await;
            let want = expected(header.as_deref());
            assert_eq!(verdict, want, "header {header:?}");
            // A second look at an allowed header is served from the cache.
            if verdict == Verdict::Allowed {
                assert_eq!(auth.check(header.as_deref(), &cfg).await, Verdict::Allowed);
            }
            let status = match verdict {
                Verdict::Allowed => StatusCode::OK,
                Verdict::Denied => StatusCode::UNAUTHORIZED,
                Verdict::Busy => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut r = Response::new(Full::new(Bytes::from_static(b"ok\n")));
            *r.status_mut() = status;
            Ok::<_, std::convert::Infallible>(r)
        }
    });

    let served = runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            .max_header_size(MAX_HEADER_BYTES)
            .max_headers(MAX_HEADERS)
            .max_buf_size(16 * 1024)
            .keep_alive(true);
        let conn = b.serve_connection(TokioIo::new(server), service);
        let (mut rx, mut tx) = tokio::io::split(client);
        let talk = async {
            let _ = tx.write_all(data).await;
            let _ = tx.shutdown().await;
            let mut answer = Vec::new();
            let _ = rx.read_to_end(&mut answer).await;
            answer
        };
        let both = async { tokio::join!(conn, talk) };
        tokio::time::timeout(std::time::Duration::from_secs(5), both).await
    });
    let (_, answer) = served.expect("a connection whose client closed did not end in 5 s");
    let n = requests.load(std::sync::atomic::Ordering::Relaxed);
    let responses = answer.windows(7).filter(|w| w == b"HTTP/1.").count();
    assert!(
        responses >= n,
        "{n} requests served, {responses} responses written"
    );
    true
}
