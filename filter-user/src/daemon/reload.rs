//! The reload path: the policy file recompiled and applied through the slot
//! swap (or, for a schedule top-up, the enforced policy written again). On
//! any error the enforcing policy is untouched; the error is logged, counted
//! and answered.
use std::sync::atomic::Ordering;

use super::{apply_events, Shared};
use crate::policy;

/// `Reload::why` of a schedule top-up: the enforced policy written again
/// (not re-read from its file), through the normal slot swap.
pub(super) const TOPUP: &str = "schedule top-up";

/// Writes the enforced policy again with transitions from now on. Not a
/// reload: not counted, and the policy file is not read.
fn topup(shared: &Shared) -> Result<u32, String> {
    shared.check_enforcing();
    if let Some(e) = shared.enforcing.read().ok().and_then(|e| e.why.clone()) {
        tracing::warn!("schedule top-up skipped: not enforcing: {e}");
        return Err(e);
    }
    let mut core = shared
        .core
        .lock()
        .map_err(|_| "daemon state poisoned".to_string())?;
    let Some(policy) = core.topup.as_ref().map(|t| t.policy.clone()) else {
        return Ok(core.filter.generation());
    };
    match core.apply(policy, true) {
        Ok((generation, _)) => {
            tracing::info!("schedule top-up: generation {generation}");
            Ok(generation)
        }
        Err(e) => {
            // Try again at the next tick; the stored transitions hold meanwhile.
            tracing::error!("schedule top-up failed ({e}); the previous transitions stay");
            if let Some(t) = core.topup.as_mut() {
                t.due = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
            }
            Err(e.to_string())
        }
    }
}

/// Recompiles and applies the policy file. On any error the enforcing policy
/// is untouched; the error is logged and counted.
pub(super) fn reload(shared: &Shared, why: &str) -> Result<u32, String> {
    if why == TOPUP {
        return topup(shared);
    }
    let outcome = reload_checked(shared, why);
    shared.record_reload(why, &outcome);
    outcome
}

fn reload_checked(shared: &Shared, why: &str) -> Result<u32, String> {
    // Look now, not at the last tick: writing maps nobody enforces would
    // answer with a generation that filters nothing.
    shared.check_enforcing();
    if let Some(e) = shared.enforcing.read().ok().and_then(|e| e.why.clone()) {
        shared.reloads_error.fetch_add(1, Ordering::Relaxed);
        let msg =
            format!("not enforcing: {e}; nothing was changed (restart the daemon to attach again)");
        tracing::error!("reload ({why}) refused: {msg}");
        return Err(msg);
    }
    let mut core = shared
        .core
        .lock()
        .map_err(|_| "daemon state poisoned".to_string())?;
    let path = core.policy_path.clone();
    let outcome = policy::load_in(&path, &core.state_dir)
        .map_err(|e| e.to_string())
        .and_then(|p| {
            p.log_warnings();
            p.log_feeds();
            // A changed metrics `listen` is bound (and TLS files read) first:
            // if that fails, the reload is rejected before anything changes.
            let staged = shared.metrics.stage(&p.metrics)?;
            let events_policy = p.events;
            let applied = core.apply(p, false).map_err(|e| e.to_string())?;
            shared.metrics.commit(staged);
            apply_events(&shared.root, &events_policy, "reload");
            Ok(applied)
        });
    match outcome {
        Ok((generation, current)) => {
            shared.reloads_ok.fetch_add(1, Ordering::Relaxed);
            shared.follow_feeds(&current);
            if let Ok(mut c) = shared.current.write() {
                *c = current;
            }
            tracing::info!(
                "reloaded {} ({why}): generation {generation}",
                path.display()
            );
            Ok(generation)
        }
        Err(e) => {
            shared.reloads_error.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "reload of {} ({why}) rejected; the previous policy keeps enforcing:\n{e}",
                path.display()
            );
            Err(e)
        }
    }
}
