//! Reload when the policy file or a list file it names changes. Directories are
//! watched, not files: editors and feed updaters replace files by rename, which
//! a watch on the old inode would miss.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

pub(super) struct Watcher {
    changed: mpsc::Sender<()>,
    inner: Option<RecommendedWatcher>,
    watching: BTreeSet<PathBuf>,
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Watcher {
    pub(super) fn new(changed: mpsc::Sender<()>) -> Watcher {
        Watcher {
            changed,
            inner: None,
            watching: BTreeSet::new(),
        }
    }

    /// Watches exactly `files` (re-registering only when the set changed).
    pub(super) fn watch(&mut self, files: &[PathBuf]) {
        let files: BTreeSet<PathBuf> = files.iter().map(|f| absolute(f)).collect();
        if files == self.watching && self.inner.is_some() {
            return;
        }
        let wanted = files.clone();
        let changed = self.changed.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_access() {
                return;
            }
            if event.paths.iter().any(|p| wanted.contains(&absolute(p))) {
                let _ = changed.try_send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(
                    "file watching unavailable ({e}); reload with SIGHUP or `portcullis reload`"
                );
                return;
            }
        };
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        for dir in dirs {
            if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                tracing::warn!("not watching {}: {e}", dir.display());
            }
        }
        self.inner = Some(watcher);
        self.watching = files;
    }
}
