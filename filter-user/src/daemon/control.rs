//! The control socket: a unix stream socket (mode 0600, so only root), one JSON
//! request line, one JSON response line. Nothing here listens on the network.
//!
//! Local clients are not trusted to behave: a request is at most
//! [`MAX_REQUEST`] bytes and must arrive within [`REQUEST_TIMEOUT`], at most
//! [`MAX_CONNECTIONS`] are served at once (the rest wait in the listen
//! backlog, holding no descriptor of ours), and a failing `accept` (EMFILE)
//! backs off instead of spinning.
use std::{
    future::Future,
    io::{BufRead, BufReader, Write},
    os::unix::{
        fs::{DirBuilderExt, FileTypeExt, PermissionsExt},
        net::UnixStream as StdUnixStream,
    },
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, Semaphore},
};

use super::{io_err, DaemonError, Reload, Shared};
use crate::status::DaemonInfo;

/// Default path of the control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/portcullis/control.sock";
/// Longest request line, newline included.
pub const MAX_REQUEST: usize = 4096;
/// A client has this long to send its request line (and to take the answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Control connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Pause after a failed `accept` (EMFILE, ENFILE, ENOMEM …) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Ping,
    Reload,
    Detach,
    /// Stream sampled events (see `events.rs`): the connection stays open.
    Events,
    /// `ban add`: a few targets inline, or a bulk file the daemon reads.
    #[serde(rename = "ban_add")]
    BanAdd(crate::bans::AddRequest),
    #[serde(rename = "ban_del")]
    BanDel {
        targets: Vec<String>,
    },
    #[serde(rename = "ban_list")]
    BanList {
        #[serde(default)]
        tag: Option<String>,
    },
    #[serde(rename = "ban_flush")]
    BanFlush {
        #[serde(default)]
        tag: Option<String>,
    },
}

/// The answer to a ban request.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BanAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally: Option<crate::bans::Tally>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<crate::bans::BanView>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Answer to `ping`: PID, version, enforcing, last reload. Absent from
    /// daemons before it; clients that do not know it ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bans: Option<BanAnswer>,
}

impl Response {
    fn ok(generation: Option<u32>) -> Response {
        Response {
            ok: true,
            generation,
            error: None,
            daemon: None,
            bans: None,
        }
    }

    fn error(error: impl Into<String>) -> Response {
        Response {
            ok: false,
            generation: None,
            error: Some(error.into()),
            daemon: None,
            bans: None,
        }
    }
}

/// Binds the socket. Only a socket no daemon answers on is replaced; anything
/// else at `path` (a regular file, a directory, a symlink) is left alone and
/// refused. A missing parent directory is created with mode 0700.
pub(super) fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, DaemonError> {
    let refuse = |what: String| DaemonError::Io {
        what: format!("control socket {}", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, what),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        prepare_dir(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if ping(path) {
                return Err(DaemonError::AlreadyRunning(path.to_path_buf()));
            }
            std::fs::remove_file(path)
                .map_err(io_err(format!("removing stale {}", path.display())))?;
        }
        Ok(meta) => {
            return Err(refuse(format!(
                "the path exists and is {}, not a socket; it was left untouched: \
                 remove it or pass another --control-socket",
                kind(&meta.file_type())
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("inspecting {}", path.display()))(e)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(io_err(format!("binding {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(format!("chmod 0600 {}", path.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("control socket"))?;
    Ok(listener)
}

/// Creates `dir` (and missing parents) with mode 0700; an existing directory is
/// the operator's and keeps its mode, with a warning if others may write to it
/// (they could replace the socket).
fn prepare_dir(dir: &Path) -> Result<(), DaemonError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let mode = meta.permissions().mode();
            if mode & 0o022 != 0 {
                tracing::warn!(
                    "the control socket's directory {} is writable by group or others \
                     (mode {:04o}): anyone who can write there can replace the socket; \
                     use a directory only root can write (e.g. /run/portcullis, 0700)",
                    dir.display(),
                    mode & 0o7777
                );
            }
            Ok(())
        }
        Ok(meta) => Err(DaemonError::Io {
            what: format!("control socket directory {}", dir.display()),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("is {}, not a directory", kind(&meta.file_type())),
            ),
        }),
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(format!("creating {}", dir.display()))),
    }
}

fn kind(t: &std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symlink"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a socket"
    }
}

/// Removes the socket at `path` at exit, and nothing that is not a socket.
pub fn unbind(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

pub(super) async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    reloads: mpsc::Sender<Reload>,
    shutdown: mpsc::Sender<()>,
) {
    accept_loop(listener, MAX_CONNECTIONS, move |conn| {
        let (shared, reloads, shutdown) = (shared.clone(), reloads.clone(), shutdown.clone());
        async move {
            if let Err(e) = handle(conn, shared, reloads, shutdown).await {
                tracing::debug!("control connection: {e}");
            }
        }
    })
    .await
}

/// Something connections come from; a trait so that the loop's handling of
/// failures can be tested without exhausting the test process's descriptors.
pub(crate) trait Accept {
    type Conn: Send + 'static;
    fn accept(&mut self) -> impl Future<Output = std::io::Result<Self::Conn>> + Send;
}

impl Accept for UnixListener {
    type Conn = UnixStream;
    async fn accept(&mut self) -> std::io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(c, _)| c)
    }
}

/// Accepts forever, at most `limit` connections in service at once, each
/// handled by a task from `handle`. A failed accept waits [`ACCEPT_BACKOFF`]
/// (and is logged once per run of failures): EMFILE would otherwise fail again
/// at once, forever, at full CPU.
pub(crate) async fn accept_loop<A, F, Fut>(mut listener: A, limit: usize, handle: F)
where
    A: Accept,
    F: Fn(A::Conn) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limit));
    let mut failing = false;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok(conn) => {
                failing = false;
                let task = handle(conn);
                tokio::spawn(async move {
                    task.await;
                    drop(slot);
                });
            }
            // The client gave up before we took it: nothing to wait for.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        "control socket: accept failed: {e}; retrying every {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    );
                    failing = true;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no request line within {0:?}")]
    Timeout(Duration),
    #[error("request longer than {MAX_REQUEST} bytes")]
    TooLong,
    #[error("reading the request: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one request line: at most [`MAX_REQUEST`] bytes, within `timeout`.
pub async fn read_request<R: AsyncRead + Unpin>(
    read: R,
    timeout: Duration,
) -> Result<Vec<u8>, RequestError> {
    let mut line = Vec::new();
    let mut reader = AsyncBufReader::new(read.take(MAX_REQUEST as u64));
    tokio::time::timeout(timeout, reader.read_until(b'\n', &mut line))
        .await
        .map_err(|_| RequestError::Timeout(timeout))??;
    if line.len() >= MAX_REQUEST && !line.ends_with(b"\n") {
        return Err(RequestError::TooLong);
    }
    Ok(line)
}

/// One request line (JSON, trailing newline optional) → the request, or the
/// answer's error text. Pure, so that it can be fuzzed.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(line).map_err(|e| format!("bad request: {e}"))
}

async fn handle(
    conn: UnixStream,
    shared: Arc<Shared>,
    reloads: mpsc::Sender<Reload>,
    shutdown: mpsc::Sender<()>,
) -> std::io::Result<()> {
    let (mut read, mut write) = conn.into_split();
    let line = match read_request(&mut read, REQUEST_TIMEOUT).await {
        Ok(line) => Ok(line),
        // A silent client gets nothing; an oversized request is told why.
        Err(RequestError::TooLong) => Err(RequestError::TooLong.to_string()),
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    let response = match line.and_then(|l| parse_request(&l)) {
        Err(e) => Response::error(e),
        Ok(Request::Ping) => Response {
            daemon: Some(shared.info()),
            ..Response::ok(None)
        },
        Ok(Request::Reload) => {
            let (tx, rx) = oneshot::channel();
            let sent = reloads
                .send(Reload {
                    why: "control socket",
                    reply: Some(tx),
                })
                .await;
            match (sent, rx.await) {
                (Ok(()), Ok(Ok(generation))) => Response::ok(Some(generation)),
                (Ok(()), Ok(Err(e))) => Response::error(e),
                _ => Response::error("the daemon is shutting down"),
            }
        }
        Ok(Request::Detach) => {
            shared.detach_requested.store(true, Ordering::SeqCst);
            let _ = shutdown.send(()).await;
            Response::ok(None)
        }
        Ok(Request::Events) => return super::events::stream(read, write, shared).await,
        Ok(
            ban @ (Request::BanAdd(_)
            | Request::BanDel { .. }
            | Request::BanList { .. }
            | Request::BanFlush { .. }),
        ) => {
            let s = shared.clone();
            tokio::task::spawn_blocking(move || ban_request(&s, ban))
                .await
                .unwrap_or_else(|e| Response::error(format!("ban task failed: {e}")))
        }
    };
    let mut out = serde_json::to_string(&response).unwrap_or_else(|_| "{\"ok\":false}".into());
    out.push('\n');
    tokio::time::timeout(REQUEST_TIMEOUT, write.write_all(out.as_bytes()))
        .await
        .map_err(|_| std::io::Error::other("the client did not take the answer"))?
}

/// A ban request, under the ban lock (requests are applied one at a time).
fn ban_request(shared: &Shared, req: Request) -> Response {
    let Ok(mut bans) = shared.bans.lock() else {
        return Response::error("the ban list is unavailable (a ban request panicked)");
    };
    let answer = |a: BanAnswer| Response {
        bans: Some(a),
        ..Response::ok(None)
    };
    let tally = |r: Result<crate::bans::Tally, crate::bans::BanError>| match r {
        Ok(t) => answer(BanAnswer {
            tally: Some(t),
            list: None,
        }),
        Err(e) => Response::error(e.to_string()),
    };
    match req {
        Request::BanAdd(a) => tally(bans.add(&a)),
        Request::BanDel { targets } => tally(bans.del(&targets)),
        Request::BanFlush { tag } => tally(bans.flush(tag.as_deref())),
        Request::BanList { tag } => answer(BanAnswer {
            tally: None,
            list: Some(bans.list(tag.as_deref())),
        }),
        _ => Response::error("not a ban request"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no daemon answers on {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the daemon on {path}: {detail}")]
    Talk { path: PathBuf, detail: String },
}

/// One request, waiting at most `timeout` for the answer.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let talk = |detail: String| ClientError::Talk {
        path: path.to_path_buf(),
        detail,
    };
    let mut stream = StdUnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| talk(e.to_string()))?;
    let mut line = serde_json::to_string(req).map_err(|e| talk(e.to_string()))?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| talk(e.to_string()))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| talk(e.to_string()))?;
    serde_json::from_str(&answer).map_err(|e| talk(format!("bad answer {answer:?}: {e}")))
}

/// Does a daemon answer on `path`?
pub fn ping(path: &Path) -> bool {
    request(path, &Request::Ping, Duration::from_secs(2)).is_ok_and(|r| r.ok)
}

/// The answering daemon's account of itself: `None` if none answers,
/// `Some(None)` for a daemon too old to say.
pub fn ping_info(path: &Path) -> Option<Option<DaemonInfo>> {
    match request(path, &Request::Ping, Duration::from_secs(2)) {
        Ok(r) if r.ok => Some(r.daemon),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Instant;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pc-control-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn ping_answers_stay_readable_both_ways() {
        // An old daemon's answer, read by a new client: no daemon info.
        let old: Response = serde_json::from_str(r#"{"ok":true}"#).unwrap();
        assert!(old.ok && old.daemon.is_none());
        // A new answer without info serializes as before.
        assert_eq!(
            serde_json::to_string(&Response::ok(None)).unwrap(),
            r#"{"ok":true}"#
        );
        // A new answer with info, read by a client that knows only ok/error.
        #[derive(Deserialize)]
        struct OldResponse {
            ok: bool,
        }
        let new =
            r#"{"ok":true,"daemon":{"pid":1,"version":"0","pin_root":"/p","enforcing":true}}"#;
        assert!(serde_json::from_str::<OldResponse>(new).unwrap().ok);
        let r: Response = serde_json::from_str(new).unwrap();
        assert_eq!(r.daemon.unwrap().pid, 1);
    }

    #[test]
    fn bind_refuses_a_regular_file_and_leaves_it() {
        let d = dir("file");
        let path = d.join("control.sock");
        std::fs::write(&path, "precious").unwrap();
        let e = bind(&path).unwrap_err().to_string();
        assert!(e.contains("is a regular file, not a socket"), "{e}");
        assert!(e.contains("left untouched"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn bind_refuses_a_directory_and_a_symlink_and_leaves_them() {
        let d = dir("dirlink");
        let sub = d.join("sub.sock");
        std::fs::create_dir(&sub).unwrap();
        let e = bind(&sub).unwrap_err().to_string();
        assert!(e.contains("is a directory, not a socket"), "{e}");
        assert!(sub.is_dir());
        let target = d.join("target");
        std::fs::write(&target, "x").unwrap();
        let link = d.join("link.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = bind(&link).unwrap_err().to_string();
        assert!(e.contains("is a symlink, not a socket"), "{e}");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "x");
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn bind_replaces_a_stale_socket_and_unbind_removes_only_sockets() {
        let d = dir("stale");
        let path = d.join("control.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let l = bind(&path).expect("a stale socket is replaced");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(l);
        unbind(&path);
        assert!(!path.exists());
        std::fs::write(&path, "not a socket").unwrap();
        unbind(&path);
        assert!(path.exists());
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn missing_parent_is_created_0700_and_an_existing_one_keeps_its_mode() {
        let d = dir("parent");
        let path = d.join("a/b/control.sock");
        let l = bind(&path).unwrap();
        for p in [d.join("a"), d.join("a/b")] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", p.display());
        }
        drop(l);
        let open = d.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let l = bind(&open.join("control.sock")).unwrap();
        let mode = std::fs::metadata(&open).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o777,
            "an operator's directory is not chmodded"
        );
        drop(l);
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn a_silent_client_is_dropped_after_the_timeout() {
        runtime().block_on(async {
            let (server, _client) = UnixStream::pair().unwrap();
            let started = Instant::now();
            let e = read_request(server, Duration::from_millis(200))
                .await
                .unwrap_err();
            assert!(matches!(e, RequestError::Timeout(_)), "{e}");
            assert!(started.elapsed() < Duration::from_secs(2));
        });
    }

    #[test]
    fn an_oversized_request_is_refused_and_a_good_one_read() {
        runtime().block_on(async {
            let (server, mut client) = UnixStream::pair().unwrap();
            let writer = tokio::spawn(async move {
                let _ = client.write_all(&vec![b'x'; 3 * MAX_REQUEST]).await;
                client
            });
            let e = read_request(server, Duration::from_secs(2))
                .await
                .unwrap_err();
            assert!(matches!(e, RequestError::TooLong), "{e}");
            drop(writer);
            let (server, mut client) = UnixStream::pair().unwrap();
            client.write_all(b"{\"cmd\":\"ping\"}\n").await.unwrap();
            let line = read_request(server, Duration::from_secs(2)).await.unwrap();
            assert!(matches!(parse_request(&line), Ok(Request::Ping)));
        });
    }

    #[test]
    fn at_most_the_limit_of_connections_is_served_at_once() {
        runtime().block_on(async {
            let d = dir("limit");
            let path = d.join("c.sock");
            let listener = UnixListener::bind(&path).unwrap();
            let (active, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let (a, p) = (active.clone(), peak.clone());
            tokio::spawn(accept_loop(listener, 4, move |conn: UnixStream| {
                let (a, p) = (a.clone(), p.clone());
                async move {
                    let now = a.fetch_add(1, SeqCst) + 1;
                    p.fetch_max(now, SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    drop(conn);
                    a.fetch_sub(1, SeqCst);
                }
            }));
            let mut clients = Vec::new();
            for _ in 0..12 {
                clients.push(UnixStream::connect(&path).await.unwrap());
            }
            // All 12 are served eventually, 4 at a time.
            for mut c in clients {
                let mut buf = [0u8; 1];
                let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                    .await
                    .expect("served within 5 s")
                    .unwrap_or(0);
                assert_eq!(n, 0);
            }
            assert_eq!(peak.load(SeqCst), 4);
            std::fs::remove_dir_all(d).ok();
        });
    }

    /// Fails every accept with EMFILE, counting the attempts.
    struct Exhausted(Arc<AtomicUsize>);

    impl Accept for Exhausted {
        type Conn = ();
        fn accept(&mut self) -> impl Future<Output = std::io::Result<()>> + Send {
            self.0.fetch_add(1, SeqCst);
            async { Err(std::io::Error::from_raw_os_error(nix::libc::EMFILE)) }
        }
    }

    #[test]
    fn emfile_backs_off_instead_of_spinning() {
        runtime().block_on(async {
            let attempts = Arc::new(AtomicUsize::new(0));
            let run = accept_loop(Exhausted(attempts.clone()), 4, |()| async {});
            let _ = tokio::time::timeout(Duration::from_millis(550), run).await;
            let n = attempts.load(SeqCst);
            // One try per 100 ms backoff; a busy loop makes millions.
            assert!((3..=8).contains(&n), "{n} accept attempts in 550 ms");
        });
    }
}
