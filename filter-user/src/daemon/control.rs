//! The control socket: a unix stream socket (mode 0600, so only root), one JSON
//! request line, one JSON response line. Nothing here listens on the network.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream as StdUnixStream},
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use super::{io_err, DaemonError, Reload, Shared};

/// Default path of the control socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/portcullis/control.sock";
const MAX_REQUEST: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Ping,
    Reload,
    Detach,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    fn ok(generation: Option<u32>) -> Response {
        Response {
            ok: true,
            generation,
            error: None,
        }
    }

    fn error(error: impl Into<String>) -> Response {
        Response {
            ok: false,
            generation: None,
            error: Some(error.into()),
        }
    }
}

/// Binds the socket, replacing a stale file no daemon answers on.
pub(super) fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, DaemonError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    }
    if path.exists() {
        if ping(path) {
            return Err(DaemonError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io_err(format!("removing stale {}", path.display())))?;
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

pub(super) async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    reloads: mpsc::Sender<Reload>,
    shutdown: mpsc::Sender<()>,
) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let (shared, reloads, shutdown) = (shared.clone(), reloads.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(conn, shared, reloads, shutdown).await {
                tracing::debug!("control connection: {e}");
            }
        });
    }
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
    let (read, mut write) = conn.into_split();
    let mut line = String::new();
    let mut reader = AsyncBufReader::new(read.take(MAX_REQUEST as u64));
    reader.read_line(&mut line).await?;
    let response = match parse_request(line.as_bytes()) {
        Err(e) => Response::error(e),
        Ok(Request::Ping) => Response::ok(None),
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
    };
    let mut out = serde_json::to_string(&response).unwrap_or_else(|_| "{\"ok\":false}".into());
    out.push('\n');
    write.write_all(out.as_bytes()).await
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
