//! Reaps idle rate-limit keys: a key whose bucket has been full for
//! `IDLE` is deleted from `RATE_KEYS` (a full bucket is the same as no
//! entry, so nothing but the tracking is lost), freeing its room for a new
//! source. Without a running daemon nothing is reaped: the table fills up
//! to each limit's `tracked` and later sources share the zone's ceiling.
use std::{sync::Arc, time::Duration};

use crate::loader::{monotonic_ns, RateState};

use super::Shared;

/// How often the table is swept.
pub const EVERY: Duration = Duration::from_secs(10);
/// How long a key's bucket must have been full before it is deleted.
pub const IDLE: Duration = Duration::from_secs(60);

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
    loop {
        tick.tick().await;
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || sweep(&s)).await;
    }
}
