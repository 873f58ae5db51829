//! Fault injection for the map writer: a test arms it to fail the Nth write
//! (every batch, single-entry write, META write and the flip each count as
//! one step), then checks that the enforced policy is exactly the old or
//! exactly the new one. Disarmed it costs one atomic load per write syscall.
//! It also counts the entries written (a batch of n counts n), so tests can
//! check that a small change writes few entries.
use std::sync::{
    atomic::{AtomicI64, AtomicU64, Ordering},
    Arc,
};

use super::LoaderError;

/// Shared by the writer's threads; negative = disarmed. The second counter:
/// entries written since load.
#[derive(Debug, Clone)]
pub(crate) struct Faults(Arc<AtomicI64>, Arc<AtomicU64>);

impl Default for Faults {
    fn default() -> Self {
        Faults(Arc::new(AtomicI64::new(-1)), Arc::new(AtomicU64::new(0)))
    }
}

impl Faults {
    /// Fails the write step numbered `after` (0 = the next one); `None` disarms.
    pub(crate) fn arm(&self, after: Option<u64>) {
        let v = after.map_or(-1, |n| n.min(i64::MAX as u64) as i64);
        self.0.store(v, Ordering::SeqCst);
    }

    /// True while armed and not yet fired.
    pub(crate) fn pending(&self) -> bool {
        self.0.load(Ordering::SeqCst) >= 0
    }

    /// Entries written so far (batches count their entries).
    pub(crate) fn written(&self) -> u64 {
        self.1.load(Ordering::Relaxed)
    }

    /// Called before a write of one entry; see `step_n`.
    pub(crate) fn step(&self, map: &'static str) -> Result<(), LoaderError> {
        self.step_n(map, 1)
    }

    /// Called before each write (of `entries` entries, one step): counts
    /// down, and fails the armed step.
    pub(crate) fn step_n(&self, map: &'static str, entries: usize) -> Result<(), LoaderError> {
        self.1.fetch_add(entries as u64, Ordering::Relaxed);
        if self.0.load(Ordering::Relaxed) < 0 {
            return Ok(());
        }
        // Several writer threads may race here; exactly one sees 0.
        match self.0.fetch_sub(1, Ordering::SeqCst) {
            0 => Err(LoaderError::Injected(map)),
            n if n < 0 => {
                self.0.store(-1, Ordering::SeqCst);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
