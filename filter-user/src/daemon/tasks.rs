//! The daemon's background tasks beside the reload loop: removing expired
//! bans, the CrowdSec bouncer, and how the feed task asks for reloads.
use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};

use super::{Reload, Shared};

/// `Reload::why` of a feed update.
pub(super) const FEED_UPDATE: &str = "feed update";

/// How the feed task asks for a reload (and waits for its answer there,
/// not here: the queue is never waited on).
pub(super) fn feed_reload(tx: mpsc::Sender<Reload>) -> crate::feeds::task::RequestReload {
    Arc::new(move || {
        let (reply, answer) = oneshot::channel();
        tx.try_send(Reload {
            why: FEED_UPDATE,
            reply: Some(reply),
        })
        .ok()?;
        Some(answer)
    })
}

/// How often expired bans are removed (the datapath stops dropping at the
/// expiry itself; this only frees the entries).
const BAN_PRUNE_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn prune_bans(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(BAN_PRUNE_EVERY);
    loop {
        tick.tick().await;
        let s = shared.clone();
        let pruned = tokio::task::spawn_blocking(move || match s.bans.lock() {
            Ok(mut b) => b.prune(),
            Err(_) => Ok(0),
        })
        .await;
        match pruned {
            Ok(Ok(n)) if n > 0 => tracing::debug!("removed {n} expired bans"),
            Ok(Err(e)) => tracing::warn!("removing expired bans: {e}"),
            _ => {}
        }
    }
}

/// The CrowdSec bouncer, following the enforced policy's `[crowdsec]`.
pub(super) async fn crowdsec(shared: Arc<Shared>) {
    let (cfg, publish) = (shared.clone(), shared.clone());
    crate::crowdsec::run(
        move || cfg.current.read().ok().and_then(|c| c.crowdsec.clone()),
        shared,
        move |st| {
            if let Ok(mut c) = publish.crowdsec.write() {
                *c = st;
            }
        },
    )
    .await
}
