//! Prometheus metrics over HTTP or HTTPS (`GET /metrics`), optionally behind
//! basic auth checked against an argon2 hash. Counters are read from the
//! pinned maps at scrape time, so they are monotonic across reloads and
//! daemon restarts.
//!
//! - `http`: the accept loop and connections (limits, timeouts, routing);
//! - `auth`: basic auth (constant-time, bounded argon2, a short cache);
//! - `tls`: certificate and key files for HTTPS;
//! - `expo`: the exposition, with label values escaped.
//!
//! A reload [`stage`](Metrics::stage)s what the new policy's `[metrics]`
//! needs (a listener bound to a changed `listen`, the TLS files read) before
//! the policy is applied, and [`commit`](Metrics::commit)s it after: a
//! `listen` that cannot be bound rejects the reload and changes nothing.
mod auth;
mod expo;
mod http;
mod password;
pub(crate) mod tls;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
};

use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

pub(super) use http::serve;
// The request path up to the auth verdict, public for the fuzz targets (fuzz/).
pub use auth::{credentials, Auth, Verdict, Verifier};
pub use http::{MAX_HEADERS, MAX_HEADER_BYTES};
pub use password::{hash_password, read_password, PasswordError};

use super::Shared;
use crate::{
    policy::{MetricsConfig, TlsFiles},
    status::counter_rows,
};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics listener on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// For `portcullis check`: loads the TLS files `cfg` names, as the daemon
/// would. (Its warnings are the policy's own, W008 and W009.)
pub fn check(cfg: &MetricsConfig) -> Result<(), MetricsError> {
    if let Some(files) = &cfg.tls {
        tls::load(files)?;
    }
    Ok(())
}

fn warnings(cfg: &MetricsConfig, listen: SocketAddr) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.basic_auth.is_some() && cfg.tls.is_none() && !listen.ip().is_loopback() {
        out.push(format!(
            "[metrics] basic_auth on {listen}, beyond loopback, without tls: the password \
             crosses the network in clear (base64); add tls = {{ cert = \"…\", key = \"…\" }} \
             or listen on loopback"
        ));
    }
    out
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, MetricsError> {
    let err = |source| MetricsError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

/// What a reload will switch the metrics server to (dropped if it fails).
pub(super) struct Staged {
    listener: Option<(SocketAddr, std::net::TcpListener)>,
    tls: Option<(TlsFiles, TlsAcceptor)>,
}

/// The metrics server's state, shared by the accept loop and the reload path.
pub(super) struct Metrics {
    /// `--metrics-listen` was given: it overrides the policy's `listen`.
    cli_listen: bool,
    addr: Mutex<SocketAddr>,
    /// Bound and not yet taken by the accept loop.
    listener: Mutex<Option<std::net::TcpListener>>,
    swapped: Notify,
    tls: RwLock<Option<(TlsFiles, TlsAcceptor)>>,
    auth: Arc<auth::Auth>,
}

impl Metrics {
    /// Binds the listener and reads the TLS files: called before the filter
    /// is touched, so a busy port or a bad certificate changes nothing.
    pub(super) fn new(
        cli_listen: Option<SocketAddr>,
        cfg: &MetricsConfig,
    ) -> Result<Metrics, MetricsError> {
        let addr = cli_listen.unwrap_or(cfg.listen);
        if !addr.ip().is_loopback() {
            tracing::warn!("metrics listen on {addr}, beyond loopback");
        }
        let listener = bind(addr)?;
        // The policy's W009 already covers its own `listen`; only an address
        // given with --metrics-listen needs this warning of its own.
        if addr != cfg.listen {
            for w in warnings(cfg, addr) {
                tracing::warn!("{w}");
            }
        }
        let tls = match &cfg.tls {
            Some(files) => Some((files.clone(), tls::load(files)?)),
            None => None,
        };
        Ok(Metrics {
            cli_listen: cli_listen.is_some(),
            addr: Mutex::new(addr),
            listener: Mutex::new(Some(listener)),
            swapped: Notify::new(),
            tls: RwLock::new(tls),
            auth: Arc::new(auth::Auth::default()),
        })
    }

    pub(super) fn addr(&self) -> SocketAddr {
        *self.addr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds a changed `listen` and reads the TLS files again. An error
    /// (meant for the operator) rejects the reload.
    pub(super) fn stage(&self, cfg: &MetricsConfig) -> Result<Staged, String> {
        let current = self.addr();
        let listener = if self.cli_listen {
            if cfg.listen != current {
                tracing::info!(
                    "[metrics] listen = \"{}\" ignored: --metrics-listen {current} overrides it",
                    cfg.listen
                );
            }
            None
        } else if cfg.listen != current {
            let l = bind(cfg.listen).map_err(|e| {
                format!(
                    "{e}\n  help: `[metrics] listen` changed from {current} to {}, which cannot be bound; \
                     choose a free address (the old one stays in use until the reload that moves away \
                     from it), or restart the daemon; the reload is rejected and nothing changed",
                    cfg.listen
                )
            })?;
            Some((cfg.listen, l))
        } else {
            None
        };
        let tls = match &cfg.tls {
            Some(files) => Some((
                files.clone(),
                tls::load(files).map_err(|e| {
                    format!("{e}\n  help: fix the file or `[metrics] tls`; the reload is rejected and nothing changed")
                })?,
            )),
            None => None,
        };
        Ok(Staged { listener, tls })
    }

    /// Switches to what [`Metrics::stage`] prepared; connections already
    /// open finish on the old listener.
    pub(super) fn commit(&self, staged: Staged) {
        {
            let mut t = self.tls.write().unwrap_or_else(|e| e.into_inner());
            match (&*t, &staged.tls) {
                (None, Some(_)) => tracing::info!("metrics: TLS on"),
                (Some(_), None) => tracing::info!("metrics: TLS off"),
                _ => {}
            }
            *t = staged.tls;
        }
        if let Some((addr, listener)) = staged.listener {
            if !addr.ip().is_loopback() {
                tracing::warn!("metrics listen on {addr}, beyond loopback");
            }
            *self.addr.lock().unwrap_or_else(|e| e.into_inner()) = addr;
            *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener);
            self.swapped.notify_one();
        }
    }

    /// The TLS files, for the watcher.
    pub(super) fn watched(&self) -> Vec<PathBuf> {
        self.tls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|(f, _)| [f.cert.clone(), f.key.clone()])
            .collect()
    }

    fn tls(&self) -> Option<TlsAcceptor> {
        self.tls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, a)| a.clone())
    }

    /// The listener waiting to be served, as a tokio one (in the runtime).
    fn take_listener(&self) -> Option<tokio::net::TcpListener> {
        let l = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        match tokio::net::TcpListener::from_std(l) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!("metrics listener: {e}");
                None
            }
        }
    }
}

/// One scrape, from the pins and the daemon's counters.
fn render(shared: &Shared) -> Result<String, String> {
    use std::sync::atomic::Ordering::Relaxed;
    let enforcing = shared.enforcing_by_iface();
    // Pins removed from under the daemon: still answer, enforcing 0.
    let pins = match shared.root.open() {
        Ok(p) => p,
        Err(_) if enforcing.iter().any(|(_, on)| !on) => {
            let snapshot = expo::Snapshot {
                reloads_ok: shared.reloads_ok.load(Relaxed),
                reloads_error: shared.reloads_error.load(Relaxed),
                enforcing,
                ..expo::Snapshot::default()
            };
            return expo::render(&snapshot).map_err(|e| e.to_string());
        }
        Err(e) => return Err(e.to_string()),
    };
    let meta = pins.meta().map_err(|e| e.to_string())?;
    let rows = counter_rows(&meta, |slot| pins.counters(slot)).map_err(|e| e.to_string())?;
    let prefixes = match shared.current.read() {
        Ok(c) => vec![
            ("blocklist", c.blocklist.0, c.blocklist.1),
            ("allow", c.allow.0, c.allow.1),
            ("failsafe", c.failsafe.0, c.failsafe.1),
        ],
        Err(_) => Vec::new(),
    };
    let generation = pins.generation().map_err(|e| e.to_string())?;
    let zone_hours = pins
        .schedules(&shared.root, generation)
        .map(|entries| {
            crate::status::zone_hours(
                &meta,
                &entries,
                crate::policy::schedule::kernel_tai_now_ns(),
                crate::policy::schedule::tai_offset_s(),
            )
        })
        .unwrap_or_default();
    let snapshot = expo::Snapshot {
        rows,
        generation,
        zone_hours,
        now_unix: jiff::Timestamp::now().as_second(),
        reloads_ok: shared.reloads_ok.load(Relaxed),
        reloads_error: shared.reloads_error.load(Relaxed),
        prefixes,
        modes: meta
            .interfaces
            .iter()
            .map(|i| (i.name.clone(), i.mode.as_str().to_string()))
            .collect(),
        enforcing,
        events: crate::events::EventsMaps::open(&shared.root)
            .and_then(|m| m.stats())
            .ok(),
        event_subscribers: shared.events.subscribers(),
        event_subscriber_drops: shared.events.subscriber_drops.load(Relaxed),
        event_subscribers_stuck: shared.events.subscriber_stuck.load(Relaxed),
        bans: shared.bans.lock().ok().map(|b| b.stats()),
        crowdsec: shared.crowdsec.read().ok().and_then(|c| c.clone()),
        feeds: shared.feeds.states(),
        quotas: crate::loader::QuotaState::open(&shared.root)
            .ok()
            .flatten()
            .and_then(|state| {
                let quotas = crate::loader::active_quotas(&shared.root, generation).ok()?;
                state
                    .report(&quotas, &meta, crate::policy::schedule::kernel_tai_now_ns())
                    .ok()
            })
            .unwrap_or_default(),
    };
    expo::render(&snapshot).map_err(|e| e.to_string())
}
