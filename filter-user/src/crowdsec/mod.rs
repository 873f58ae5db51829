//! Bouncer mode: the daemon pulls CrowdSec's decision stream from the LAPI
//! (`[crowdsec]` in the policy) and keeps the bans tagged `crowdsec:<origin>`
//! equal to the decisions in force. The first pull, and every pull after a
//! failure, asks for the whole set (`startup=true`) and reconciles: a delta
//! lost in a failed pull (the LAPI may count it as delivered) or a decision
//! deleted while the daemon was down cannot leave a stale ban behind. LAPI
//! down or the key refused: the bans in force stay (they expire by
//! themselves in the datapath), the state is logged once and exported.
pub mod decision;

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::fetch::{self, FetchError};
use crate::policy::crowdsec::CrowdsecConfig;
use crate::policy::schedule::kernel_tai_now_ns;
use decision::{Stream, Tracker};

#[derive(Debug, thiserror::Error)]
pub enum CrowdsecError {
    #[error("API key file {path}: {detail}")]
    KeyFile { path: String, detail: String },
    #[error("CA file {path}: {detail}")]
    CaFile { path: String, detail: String },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("the LAPI's answer is not a decision stream: {0}")]
    Answer(String),
    #[error("applying decisions: {0}")]
    Bans(#[from] crate::bans::BanError),
}

impl CrowdsecError {
    fn reason(&self) -> &'static str {
        match self {
            CrowdsecError::KeyFile { .. } => "key_file",
            CrowdsecError::CaFile { .. } => "ca_file",
            CrowdsecError::Fetch(e) => e.reason(),
            CrowdsecError::Answer(_) => "bad_answer",
            CrowdsecError::Bans(_) => "bans",
        }
    }
}

/// What `status` and /metrics show.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrowdsecStatus {
    pub url: String,
    /// The last pull succeeded.
    pub up: bool,
    /// Unix seconds of the last good pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Decisions tracked (prefixes with at least one decision in force).
    pub tracked: u64,
    /// Pulls by result (`ok` or a failure reason).
    pub pulls: BTreeMap<String, u64>,
    /// Decisions by what became of them: `added`, `updated`, `removed`,
    /// `skipped_<reason>`, `skipped_full`.
    pub decisions: BTreeMap<String, u64>,
}

impl CrowdsecStatus {
    /// `status`'s line: state, age of the last good pull, what is tracked.
    pub fn line(&self, now_unix: u64) -> String {
        let age = match self.last_ok {
            Some(t) => format!("last good pull {} s ago", now_unix.saturating_sub(t)),
            None => "no good pull yet".to_string(),
        };
        match (&self.last_error, self.up) {
            (Some(e), _) => format!("DOWN ({age}; the bans in force are kept): {e}"),
            (None, true) => format!(
                "up, {age}, {} prefixes under decision, from {}",
                self.tracked, self.url
            ),
            (None, false) => format!("starting, from {}", self.url),
        }
    }
}

/// Largest stream answer taken: a startup with the community blocklist is a
/// few MB; anything far beyond is not a LAPI.
const MAX_ANSWER: u64 = 64 << 20;
const PULL_TIMEOUT: Duration = Duration::from_secs(30);
/// A key is a short token; a key file this big is the wrong file.
const MAX_KEY_BYTES: u64 = 4096;

/// Reads the key at each pull: a rotated key is picked up without a reload.
fn read_key(path: &Path) -> Result<String, CrowdsecError> {
    let err = |detail: String| CrowdsecError::KeyFile {
        path: path.display().to_string(),
        detail,
    };
    let bytes = crate::policy::read_small_file(path, MAX_KEY_BYTES).map_err(err)?;
    let key = String::from_utf8(bytes).map_err(|_| err("not text".into()))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(err(
            "empty (put the key `cscli bouncers add` printed in it)".into(),
        ));
    }
    if key.chars().any(|c| c.is_control() || c == ' ') || key.len() > 512 {
        return Err(err(
            "holds more than one token (it should be the key alone)".into(),
        ));
    }
    Ok(key.to_string())
}

/// Where the decisions go: the daemon's bans (a trait so the bouncer does not
/// know the daemon's types; called on a blocking thread).
pub trait BanSink: Send + Sync + 'static {
    fn sync(
        &self,
        adds: &[crate::bans::Ban],
        removes: &[ipnet::IpNet],
        reconcile: bool,
    ) -> Result<crate::bans::SyncTally, crate::bans::BanError>;
}

/// What `check` says of the key file (the daemon reads it at each pull).
pub fn check_key(cfg: &CrowdsecConfig) -> Result<(), String> {
    read_key(&cfg.api_key_file)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One configuration's connection to a LAPI.
pub struct Bouncer {
    cfg: CrowdsecConfig,
    client: reqwest::Client,
    tracker: Tracker,
    /// Ask for the whole set next (first pull, or after any failure).
    startup: bool,
}

impl Bouncer {
    pub fn new(cfg: CrowdsecConfig) -> Result<Bouncer, CrowdsecError> {
        let ca_pem = match &cfg.ca {
            None => None,
            Some(p) => Some(
                crate::policy::read_small_file(p, 1 << 20).map_err(|detail| {
                    CrowdsecError::CaFile {
                        path: p.display().to_string(),
                        detail,
                    }
                })?,
            ),
        };
        let client = fetch::client(&fetch::ClientOptions {
            ca_pem,
            ..fetch::ClientOptions::default()
        })?;
        Ok(Bouncer {
            cfg,
            client,
            tracker: Tracker::default(),
            startup: true,
        })
    }

    pub fn config(&self) -> &CrowdsecConfig {
        &self.cfg
    }

    fn stream_url(&self) -> url::Url {
        let mut u = self.cfg.lapi_url.clone();
        let path = format!("{}/v1/decisions/stream", u.path().trim_end_matches('/'));
        u.set_path(&path);
        let scopes: Vec<&str> = self.cfg.scopes.iter().map(|s| s.query_name()).collect();
        u.query_pairs_mut()
            .append_pair("startup", if self.startup { "true" } else { "false" })
            .append_pair("scopes", &scopes.join(","));
        u
    }

    /// One pull, applied to `bans`.
    async fn pull(
        &mut self,
        sink: &Arc<dyn BanSink>,
        status: &mut CrowdsecStatus,
    ) -> Result<(), CrowdsecError> {
        let key = read_key(&self.cfg.api_key_file)?;
        let url = self.stream_url();
        let headers = [("X-Api-Key", key)];
        let got = fetch::get(
            &self.client,
            &fetch::Request {
                url: &url,
                headers: &headers,
                etag: None,
                last_modified: None,
                max_bytes: MAX_ANSWER,
                timeout: PULL_TIMEOUT,
            },
        )
        .await?;
        let bytes = match got {
            fetch::Fetched::Body { bytes, .. } => bytes,
            fetch::Fetched::NotModified => return Ok(()),
        };
        let stream: Stream = serde_json::from_slice(&bytes)
            .map_err(|e| CrowdsecError::Answer(e.to_string().chars().take(160).collect()))?;
        drop(bytes);
        let reconcile = self.startup;
        if reconcile {
            self.tracker.clear();
        }
        let now = kernel_tai_now_ns();
        self.tracker.expire(now);
        let changes = self.tracker.apply(&stream, &self.cfg, now);
        for s in &changes.skipped {
            *status
                .decisions
                .entry(format!("skipped_{}", s.label()))
                .or_default() += 1;
        }
        let sink = sink.clone();
        let t = tokio::task::spawn_blocking(move || {
            sink.sync(&changes.adds, &changes.removes, reconcile)
        })
        .await
        .map_err(|e| CrowdsecError::Answer(format!("apply task: {e}")))??;
        for (k, n) in [
            ("added", t.tally.added),
            ("updated", t.tally.updated),
            ("removed", t.tally.removed),
            ("skipped_full", t.full),
            ("skipped_held", t.held),
        ] {
            if n > 0 {
                *status.decisions.entry(k.into()).or_default() += n;
            }
        }
        if t.full > 0 {
            tracing::warn!(
                "CrowdSec: {} decisions not applied: the ban map is full",
                t.full
            );
        }
        if reconcile || t.tally != crate::bans::Tally::default() {
            tracing::info!(
                "CrowdSec{}: {} bans added, {} updated, {} removed ({} prefixes under decision)",
                if reconcile { " (full sync)" } else { "" },
                t.tally.added,
                t.tally.updated,
                t.tally.removed,
                self.tracker.len()
            );
        }
        self.startup = false;
        status.tracked = self.tracker.len() as u64;
        Ok(())
    }
}

/// How often a daemon without `[crowdsec]` looks whether a reload added it.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The daemon's bouncer loop: follows the enforced policy's `[crowdsec]`
/// (`config()` is read before every pull) and publishes its state.
pub async fn run(
    config: impl Fn() -> Option<CrowdsecConfig>,
    sink: Arc<dyn BanSink>,
    publish: impl Fn(Option<CrowdsecStatus>),
) {
    let mut bouncer: Option<Bouncer> = None;
    let mut status = CrowdsecStatus::default();
    loop {
        let cfg = config();
        if cfg.as_ref() != bouncer.as_ref().map(Bouncer::config) {
            bouncer = None;
            status = CrowdsecStatus::default();
            if let Some(c) = &cfg {
                status.url = fetch::redacted(&c.lapi_url);
                match Bouncer::new(c.clone()) {
                    Ok(b) => {
                        tracing::info!(
                            "CrowdSec bouncer: pulling decisions from {} every {} s",
                            status.url,
                            c.poll.as_secs()
                        );
                        bouncer = Some(b);
                    }
                    Err(e) => {
                        tracing::error!(
                            "CrowdSec bouncer for {}: {e}; existing bans are kept",
                            status.url
                        );
                        status.last_error = Some(e.to_string());
                        *status.pulls.entry(e.reason().into()).or_default() += 1;
                    }
                }
            }
        }
        publish(cfg.as_ref().map(|_| status.clone()));
        let Some(b) = bouncer.as_mut() else {
            tokio::time::sleep(IDLE_CHECK).await;
            continue;
        };
        let started = Instant::now();
        match b.pull(&sink, &mut status).await {
            Ok(()) => {
                if !status.up && status.last_error.is_some() {
                    tracing::info!("CrowdSec LAPI {}: pulling again", status.url);
                }
                status.up = true;
                status.last_ok = Some(crate::feeds::unix_now());
                status.last_error = None;
                *status.pulls.entry("ok".into()).or_default() += 1;
            }
            Err(e) => {
                b.startup = true;
                let text = e.to_string();
                if status.last_error.as_deref() != Some(text.as_str()) {
                    let hint = match &e {
                        CrowdsecError::Fetch(FetchError::Status { status: 401 | 403, .. }) => {
                            " (check api_key_file: `cscli bouncers list` shows the registered bouncers)"
                        }
                        _ => "",
                    };
                    tracing::warn!("CrowdSec LAPI: {text}{hint}; the bans in force are kept");
                }
                status.up = false;
                status.last_error = Some(text);
                *status.pulls.entry(e.reason().into()).or_default() += 1;
            }
        }
        publish(Some(status.clone()));
        // Sleep the rest of the poll interval, but notice a reload that
        // changes or removes [crowdsec] within a second.
        let poll = b.cfg.poll;
        let until = started + poll;
        while Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(left.min(IDLE_CHECK)).await;
            if config().as_ref() != bouncer.as_ref().map(Bouncer::config) {
                break;
            }
        }
    }
}
