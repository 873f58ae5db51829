//! Reaps idle rate-limit keys: a key whose bucket has been full for
//! `IDLE` is freed in `RATE_SLOTS` (a full bucket is the same as no
//! entry, so nothing but the tracking is lost), freeing its room for a new
//! source. Without a running daemon nothing is reaped: the table fills up
//! to each limit's `tracked` and later sources share the zone's ceiling.
//!
//! Also, every minute, deletes transfer-quota usage of past periods (and of
//! zones no longer under a quota): a past period reads as nothing used, so
//! this only frees room in `QUOTA_USAGE` for new sources.
use std::{sync::Arc, time::Duration};

use crate::loader::{active_quotas, monotonic_ns, QuotaState, RateState};

use super::Shared;

/// How often the table is swept.
pub const EVERY: Duration = Duration::from_secs(10);
/// How long a key's bucket must have been full before it is deleted.
pub const IDLE: Duration = Duration::from_secs(60);
/// Quota usage is swept every this many rate sweeps (a minute: the
/// shortest period).
const QUOTA_EVERY: u64 = 6;

fn sweep_quotas(shared: &Shared) {
    let reaped = (|| {
        let Some(mut state) = QuotaState::open(&shared.root)? else {
            return Ok((0, 0));
        };
        let generation = shared.root.open()?.generation()?;
        let quotas = active_quotas(&shared.root, generation)?;
        state.reap(&quotas, crate::policy::schedule::kernel_tai_now_ns())
    })();
    match reaped {
        Ok((deleted, kept)) if deleted > 0 => tracing::info!(
            "transfer quotas: {deleted} entries of past periods deleted, {kept} counting"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("transfer quotas: sweeping past periods: {e}"),
    }
}

/// One sweep over the pinned table; quiet when there is nothing to do.
fn sweep(shared: &Shared) {
    let state = match RateState::open(&shared.root) {
        Ok(Some(s)) => s,
        // Pins of a layout without rate limits, or none yet.
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("rate limits: opening the bucket table: {e}");
            return;
        }
    };
    let mut state = state;
    match state.reap(monotonic_ns(), IDLE.as_nanos() as u64) {
        Ok(r) if r.deleted > 0 => tracing::info!(
            "rate limits: {} idle sources no longer tracked, {} tracked",
            r.deleted,
            r.kept
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("rate limits: reaping idle sources: {e}"),
    }
}

pub async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(EVERY);
    for n in 0u64.. {
        tick.tick().await;
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            sweep(&s);
            if n % QUOTA_EVERY == QUOTA_EVERY - 1 {
                sweep_quotas(&s);
            }
        })
        .await;
    }
}
