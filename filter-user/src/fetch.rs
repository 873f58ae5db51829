//! Bounded HTTP(S) GETs for what the daemon pulls from elsewhere (list feeds,
//! the CrowdSec LAPI). Everything on the other end is treated as hostile: a
//! connect and a whole-request deadline, a cap on the body checked while it
//! streams in (not after), few redirects and never from https to http, no
//! transparent decompression (a small gzip can inflate to gigabytes).
use std::time::Duration;

use reqwest::{header, redirect, StatusCode};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}: only http:// and https:// URLs can be fetched")]
    Scheme(String),
    #[error("{url}: the server answered HTTP {status}{detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url}: the answer is larger than {max} bytes; nothing of it was used")]
    TooLarge { url: String, max: u64 },
    #[error("{url}: no complete answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("{url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("TLS setup: {0}")]
    Tls(String),
}

impl FetchError {
    /// A short, label-safe name for metrics (`reason` label).
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Scheme(_) => "scheme",
            FetchError::Status {
                status: 401 | 403, ..
            } => "unauthorized",
            FetchError::Status { .. } => "http_status",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Timeout { .. } => "timeout",
            FetchError::Transport { .. } => "unreachable",
            FetchError::Tls(_) => "tls",
        }
    }
}

/// How a client treats its peers.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Extra trusted roots (PEM), beside Mozilla's.
    pub ca_pem: Option<Vec<u8>>,
    /// Use the HTTP(S)_PROXY environment (feeds from behind a proxy); the
    /// CrowdSec LAPI is local infrastructure and never goes through one.
    pub env_proxy: bool,
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            ca_pem: None,
            env_proxy: false,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Redirects followed at most (feeds move; a loop or a chain is refused).
const MAX_REDIRECTS: usize = 3;

pub fn client(opts: &ClientOptions) -> Result<reqwest::Client, FetchError> {
    let policy = redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() == "http"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            attempt.error("refused a redirect from https to http")
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    });
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(opts.connect_timeout)
        .redirect(policy)
        .https_only(false)
        .pool_max_idle_per_host(1);
    if !opts.env_proxy {
        b = b.no_proxy();
    }
    if let Some(pem) = &opts.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
            FetchError::Tls(format!("the CA file holds no usable certificate: {e}"))
        })?;
        if certs.is_empty() {
            return Err(FetchError::Tls("the CA file holds no certificate".into()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| FetchError::Tls(e.to_string()))
}

/// One GET.
pub struct Request<'a> {
    pub url: &'a Url,
    /// Extra headers (an API key).
    pub headers: &'a [(&'static str, String)],
    /// From the last good answer: sent as If-None-Match / If-Modified-Since.
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
    pub max_bytes: u64,
    pub timeout: Duration,
}

#[derive(Debug)]
pub enum Fetched {
    /// 304: what was fetched last is still current.
    NotModified,
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
        content_type: Option<String>,
    },
}

/// Longest part of an error body quoted in an error (servers explain a 403).
const DETAIL_CHARS: usize = 120;

pub async fn get(client: &reqwest::Client, req: &Request<'_>) -> Result<Fetched, FetchError> {
    let url_s = redacted(req.url);
    if !matches!(req.url.scheme(), "http" | "https") {
        return Err(FetchError::Scheme(url_s));
    }
    let secs = req.timeout.as_secs().max(1);
    match tokio::time::timeout(req.timeout, get_inner(client, req, &url_s)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout { url: url_s, secs }),
    }
}

async fn get_inner(
    client: &reqwest::Client,
    req: &Request<'_>,
    url_s: &str,
) -> Result<Fetched, FetchError> {
    let transport = |e: reqwest::Error| FetchError::Transport {
        url: url_s.to_string(),
        detail: error_chain(&e),
    };
    let mut rb = client
        .get(req.url.clone())
        .header(header::ACCEPT_ENCODING, "identity");
    for (k, v) in req.headers {
        rb = rb.header(*k, v);
    }
    if let Some(e) = req.etag {
        rb = rb.header(header::IF_NONE_MATCH, e);
    }
    if let Some(l) = req.last_modified {
        rb = rb.header(header::IF_MODIFIED_SINCE, l);
    }
    let mut resp = rb.send().await.map_err(transport)?;
    let status = resp.status();
    if status == StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    let too_large = || FetchError::TooLarge {
        url: url_s.to_string(),
        max: req.max_bytes,
    };
    if !status.is_success() {
        // A little of the body explains a refusal; never more than that.
        let mut detail = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            detail.extend_from_slice(&chunk);
            if detail.len() >= 4 * DETAIL_CHARS {
                break;
            }
        }
        let text: String = String::from_utf8_lossy(&detail)
            .chars()
            .filter(|c| !c.is_control())
            .take(DETAIL_CHARS)
            .collect();
        return Err(FetchError::Status {
            url: url_s.to_string(),
            status: status.as_u16(),
            detail: if text.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", text.trim())
            },
        });
    }
    if resp.content_length().is_some_and(|n| n > req.max_bytes) {
        return Err(too_large());
    }
    let text_header = |name: header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = text_header(header::ETAG);
    let last_modified = text_header(header::LAST_MODIFIED);
    let content_type = text_header(header::CONTENT_TYPE);
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if bytes.len() as u64 + chunk.len() as u64 > req.max_bytes {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Fetched::Body {
        bytes,
        etag,
        last_modified,
        content_type,
    })
}

/// The URL as logs may show it: no user, password or query (keys hide there).
pub fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_fragment(None);
    // Marked in plain text: through set_query it would be percent-encoded.
    let had_query = u.query().is_some();
    u.set_query(None);
    let mut s = u.to_string();
    if had_query {
        s.push_str("?…");
    }
    s
}

/// reqwest's Display names only the outer layer ("error sending request");
/// the cause (connection refused, certificate unknown) is further down.
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_urls_hide_credentials_and_queries() {
        let u = Url::parse("https://user:secret@example.org/list.txt?key=abc").unwrap();
        let r = redacted(&u);
        assert!(
            !r.contains("secret") && !r.contains("abc") && !r.contains("user"),
            "{r}"
        );
        assert_eq!(r, "https://example.org/list.txt?…");
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_refused_while_it_streams() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // No Content-Length: the cap must hold on the streamed body.
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                .await;
            let junk = vec![b'x'; 64 * 1024];
            for _ in 0..64 {
                if s.write_all(&junk).await.is_err() {
                    return;
                }
            }
        });
        let c = client(&ClientOptions::default()).unwrap();
        let url = Url::parse(&format!("http://{addr}/feed")).unwrap();
        let r = get(
            &c,
            &Request {
                url: &url,
                headers: &[],
                etag: None,
                last_modified: None,
                max_bytes: 100_000,
                timeout: Duration::from_secs(10),
            },
        )
        .await;
        assert!(
            matches!(r, Err(FetchError::TooLarge { max: 100_000, .. })),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (_s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let c = client(&ClientOptions::default()).unwrap();
        let url = Url::parse(&format!("http://{addr}/")).unwrap();
        let t = std::time::Instant::now();
        let r = get(
            &c,
            &Request {
                url: &url,
                headers: &[],
                etag: None,
                last_modified: None,
                max_bytes: 1000,
                timeout: Duration::from_millis(300),
            },
        )
        .await;
        assert!(matches!(r, Err(FetchError::Timeout { .. })), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    /// The https path, with `ca` (the CrowdSec LAPI's private certificate):
    /// trusted through the extra root, refused without it.
    #[tokio::test]
    async fn https_is_verified_against_the_extra_ca_and_refused_without_it() {
        let d = std::env::temp_dir().join(format!("pc-fetch-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let files = crate::policy::TlsFiles {
            cert: d.join("cert.pem"),
            key: d.join("key.pem"),
        };
        // A CA and a leaf it signed (webpki refuses a CA as the end entity).
        let ca = d.join("ca.pem");
        let openssl = |args: &[&str]| {
            std::process::Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
                .args(args)
                .current_dir(&d)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let made = openssl(&[
            "-subj",
            "/CN=test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]) && openssl(&[
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ]);
        if !made {
            eprintln!("openssl(1) missing: skipped (the bootstrap installs it)");
            return;
        }
        let acceptor = crate::daemon::metrics::tls::load(&files).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            for _ in 0..2 {
                let Ok((s, _)) = l.accept().await else { return };
                let Ok(mut tls) = acceptor.accept(s).await else {
                    continue;
                };
                let mut buf = [0u8; 2048];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
                    )
                    .await;
                let _ = tls.shutdown().await;
            }
        });
        let url = Url::parse(&format!("https://{addr}/")).unwrap();
        let req = Request {
            url: &url,
            headers: &[],
            etag: None,
            last_modified: None,
            max_bytes: 1000,
            timeout: Duration::from_secs(10),
        };
        let untrusted = client(&ClientOptions::default()).unwrap();
        let r = get(&untrusted, &req).await;
        assert!(
            matches!(&r, Err(FetchError::Transport { detail, .. }) if detail.contains("certificate")),
            "{r:?}"
        );
        let pem = std::fs::read(&ca).unwrap();
        let trusted = client(&ClientOptions {
            ca_pem: Some(pem),
            ..ClientOptions::default()
        })
        .unwrap();
        match get(&trusted, &req).await {
            Ok(Fetched::Body { bytes, .. }) => assert_eq!(bytes, b"hello"),
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
