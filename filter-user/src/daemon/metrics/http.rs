//! The accept loop and the HTTP/1.1 connections (hyper), with every knob a
//! hostile client could otherwise turn: at most [`MAX_CONNECTIONS`] at once
//! (more are answered 503 and closed at once), headers within
//! [`HEADER_TIMEOUT`] and [`MAX_HEADER_BYTES`], a connection closed after
//! [`CONNECTION_LIFETIME`] whatever it does (keep-alive included), and
//! EMFILE/ENFILE on accept met with a pause instead of a busy loop.
use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
};

use super::{auth::Verdict, Shared};

pub const MAX_CONNECTIONS: usize = 64;
/// Request line and headers must arrive within this (TLS handshake too);
/// hyper also runs it while a keep-alive connection waits for the next request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed this long after it was accepted.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Request line plus headers.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
pub const MAX_HEADERS: usize = 32;
/// After EMFILE/ENFILE (or ENOBUFS/ENOMEM) on accept.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Connection: close\r\nContent-Length: 0\r\n\r\n";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves until the daemon stops; takes a new listener when one is
/// committed by a reload (see [`super::Metrics::commit`]).
pub async fn serve(shared: Arc<Shared>) {
    let Some(listener) = shared.metrics.take_listener() else {
        tracing::error!("metrics server: no listener");
        return;
    };
    let s = shared.clone();
    accept_loop(
        listener,
        MAX_CONNECTIONS,
        &shared.metrics.swapped,
        || {
            let l = shared.metrics.take_listener()?;
            tracing::info!("metrics now served on {}", shared.metrics.addr());
            Some(l)
        },
        move |stream, permit| {
            tokio::spawn(connection(stream, s.clone(), permit));
        },
    )
    .await
}

/// What the accept loop needs of a listener (a trait, so that tests can
/// make `accept` fail).
pub trait Accept: Send {
    type Conn: Send + 'static;
    fn accept(&mut self) -> impl std::future::Future<Output = std::io::Result<Self::Conn>> + Send;
    /// Answers 503 and closes, without waiting.
    fn refuse(conn: Self::Conn);
}

impl Accept for tokio::net::TcpListener {
    type Conn = TcpStream;
    async fn accept(&mut self) -> std::io::Result<TcpStream> {
        tokio::net::TcpListener::accept(self).await.map(|(s, _)| s)
    }
    fn refuse(stream: TcpStream) {
        // A fresh socket's send buffer is empty: this never blocks.
        let _ = stream.try_write(BUSY);
    }
}

/// Accepts until the task is dropped: at most `max` connections served at
/// once (`serve` gets each with its slot), the rest refused at once; on
/// `swapped`, `next` may hand over a new listener.
pub async fn accept_loop<A: Accept>(
    mut listener: A,
    max: usize,
    swapped: &Notify,
    mut next: impl FnMut() -> Option<A>,
    mut serve: impl FnMut(A::Conn, OwnedSemaphorePermit),
) {
    let slots = Arc::new(Semaphore::new(max));
    let mut refused: u64 = 0;
    let mut last_warning: Option<tokio::time::Instant> = None;
    let mut warn = |what: String| {
        // At most one warning every 10 s: a flood must not flood the log.
        let now = tokio::time::Instant::now();
        if last_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
            last_warning = Some(now);
            tracing::warn!("metrics server: {what}");
        }
    };
    loop {
        let accepted = tokio::select! {
            _ = swapped.notified() => {
                if let Some(l) = next() {
                    listener = l;
                }
                continue;
            }
            r = listener.accept() => r,
        };
        match accepted {
            Ok(conn) => match slots.clone().try_acquire_owned() {
                Ok(permit) => serve(conn, permit),
                Err(_) => {
                    refused += 1;
                    A::refuse(conn);
                    warn(format!(
                        "{max} connections open; refused {refused} so far (503)"
                    ));
                }
            },
            Err(e) => {
                let pause = matches!(
                    e.raw_os_error(),
                    Some(
                        libc_errno::EMFILE
                            | libc_errno::ENFILE
                            | libc_errno::ENOBUFS
                            | libc_errno::ENOMEM
                    )
                );
                warn(format!("accept: {e}"));
                // Out of fds or memory, the listener stays readable: without a
                // pause this would spin. Others (ECONNABORTED) are per-connection.
                tokio::time::sleep(if pause {
                    ACCEPT_BACKOFF
                } else {
                    Duration::from_millis(5)
                })
                .await;
            }
        }
    }
}

mod libc_errno {
    pub const EMFILE: i32 = nix::errno::Errno::EMFILE as i32;
    pub const ENFILE: i32 = nix::errno::Errno::ENFILE as i32;
    pub const ENOBUFS: i32 = nix::errno::Errno::ENOBUFS as i32;
    pub const ENOMEM: i32 = nix::errno::Errno::ENOMEM as i32;
}

async fn connection(stream: TcpStream, shared: Arc<Shared>, _slot: OwnedSemaphorePermit) {
    let deadline = tokio::time::Instant::now() + CONNECTION_LIFETIME;
    let _ = stream.set_nodelay(true);
    match shared.metrics.tls() {
        None => serve_http(stream, shared, deadline).await,
        Some(acceptor) => {
            match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_http(tls, shared, deadline).await,
                Ok(Err(e)) => tracing::debug!("metrics TLS handshake: {e}"),
                Err(_) => tracing::debug!("metrics TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<S>(io: S, shared: Arc<Shared>, deadline: tokio::time::Instant)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .max_buf_size(16 * 1024)
        .keep_alive(true);
    let conn = b.serve_connection(
        TokioIo::new(io),
        service_fn(move |req| handle(req, shared.clone())),
    );
    if let Err(e) = tokio::time::timeout_at(deadline, conn).await {
        tracing::debug!("metrics connection closed at its lifetime limit: {e}");
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The routing: `GET /metrics` only.
pub async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let auth_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    Ok(route(
        req.method(),
        req.uri().path(),
        auth_header.as_deref(),
        &shared,
    )
    .await)
}

async fn route(
    method: &Method,
    path: &str,
    auth_header: Option<&[u8]>,
    shared: &Arc<Shared>,
) -> Response<Full<Bytes>> {
    if path != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found; try GET /metrics\n");
    }
    if *method != Method::GET {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        return r;
    }
    let auth = shared
        .current
        .read()
        .ok()
        .and_then(|c| c.basic_auth.clone());
    if let Some(cfg) = auth {
        match shared.metrics.auth.check(auth_header, &cfg).await {
            Verdict::Allowed => {}
            Verdict::Denied => {
                let mut r = plain(StatusCode::UNAUTHORIZED, "unauthorized\n");
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Basic realm=\"portcullis\""),
                );
                return r;
            }
            Verdict::Busy => {
                let mut r = plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many password checks at once; retry\n",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                return r;
            }
        }
    }
    let s = shared.clone();
    match tokio::task::spawn_blocking(move || super::render(&s)).await {
        Ok(Ok(body)) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(OPENMETRICS),
            );
            r
        }
        Ok(Err(e)) => {
            tracing::warn!("metrics: {e}");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the counters (see the daemon's log)\n",
            )
        }
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "render task failed\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Every accept fails with `errno`.
    struct Failing(Arc<AtomicUsize>, i32);

    impl Accept for Failing {
        type Conn = ();
        async fn accept(&mut self) -> std::io::Result<()> {
            self.0.fetch_add(1, SeqCst);
            Err(std::io::Error::from_raw_os_error(self.1))
        }
        fn refuse(_: ()) {}
    }

    #[test]
    fn emfile_and_enfile_on_accept_pause_instead_of_spinning() {
        for errno in [libc_errno::EMFILE, libc_errno::ENFILE] {
            let attempts = Arc::new(AtomicUsize::new(0));
            let notify = Notify::new();
            runtime().block_on(async {
                let run = accept_loop(
                    Failing(attempts.clone(), errno),
                    4,
                    &notify,
                    || None,
                    |(), _| {},
                );
                let _ = tokio::time::timeout(Duration::from_millis(1100), run).await;
            });
            let n = attempts.load(SeqCst);
            // One try per 250 ms pause; a busy loop makes millions.
            assert!((3..=6).contains(&n), "errno {errno}: {n} accepts in 1.1 s");
        }
    }

    /// `n` connections at once, then nothing; refusals are counted.
    struct Burst {
        left: usize,
        refused: Arc<AtomicUsize>,
    }

    struct Conn(Arc<AtomicUsize>);

    impl Accept for Burst {
        type Conn = Conn;
        async fn accept(&mut self) -> std::io::Result<Conn> {
            if self.left == 0 {
                std::future::pending::<()>().await;
            }
            self.left -= 1;
            Ok(Conn(self.refused.clone()))
        }
        fn refuse(conn: Conn) {
            conn.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn connections_past_the_limit_are_refused_at_once_and_slots_come_back() {
        let refused = Arc::new(AtomicUsize::new(0));
        let held = std::sync::Mutex::new(Vec::new());
        let notify = Notify::new();
        let served = AtomicUsize::new(0);
        runtime().block_on(async {
            let run = accept_loop(
                Burst {
                    left: 300,
                    refused: refused.clone(),
                },
                MAX_CONNECTIONS,
                &notify,
                || None,
                |_conn, permit| {
                    served.fetch_add(1, SeqCst);
                    held.lock().unwrap().push(permit);
                },
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), run).await;
        });
        assert_eq!(served.load(SeqCst), MAX_CONNECTIONS);
        assert_eq!(refused.load(SeqCst), 300 - MAX_CONNECTIONS);
        // Closing the served connections frees their slots.
        held.lock().unwrap().clear();
        let (refused2, served2) = (Arc::new(AtomicUsize::new(0)), AtomicUsize::new(0));
        runtime().block_on(async {
            let run = accept_loop(
                Burst {
                    left: 10,
                    refused: refused2.clone(),
                },
                2,
                &notify,
                || None,
                |_conn, _permit| {
                    served2.fetch_add(1, SeqCst);
                },
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), run).await;
        });
        assert_eq!((served2.load(SeqCst), refused2.load(SeqCst)), (10, 0));
    }

    #[test]
    fn a_committed_listener_replaces_the_old_one() {
        let notify = Notify::new();
        let refused = Arc::new(AtomicUsize::new(0));
        let served = AtomicUsize::new(0);
        let mut handed = Some(Burst {
            left: 3,
            refused: refused.clone(),
        });
        notify.notify_one();
        runtime().block_on(async {
            let run = accept_loop(
                Burst {
                    left: 0,
                    refused: refused.clone(),
                },
                8,
                &notify,
                || handed.take(),
                |_conn, _permit| {
                    served.fetch_add(1, SeqCst);
                },
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), run).await;
        });
        assert_eq!(served.load(SeqCst), 3);
    }
}
