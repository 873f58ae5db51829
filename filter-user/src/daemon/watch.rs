//! Reload when the policy file or a list file it names changes. Directories are
//! watched, not files: editors and feed updaters replace files by rename, which
//! a watch on the old inode would miss.
//!
//! A path reached through symlinks is watched along the whole chain: each
//! symlink it passes (as a name in its directory) and the file it ends at. A
//! Kubernetes ConfigMap volume is such a chain: `policy.toml` →
//! `..data/policy.toml`, `..data` → `..2026_12_02_…`; kubelet updates it by
//! renaming a new `..data` symlink over the old one, and nothing named
//! `policy.toml` changes. After each reload the chain is resolved again.
use std::{
    collections::BTreeSet,
    path::{Component, Path, PathBuf},
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

/// Symlinks followed while resolving one path, at most (as the kernel's 40).
const MAX_HOPS: usize = 40;

/// The paths whose change changes what `path` names: `path` itself, every
/// symlink met while resolving it (by the name it has in its directory), and
/// the file it resolves to. A dangling or looping chain stops where it breaks.
pub(super) fn chain(path: &Path) -> Vec<PathBuf> {
    let path = absolute(path);
    let mut out = vec![path.clone()];
    let mut todo: Vec<PathBuf> = path
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut cur = PathBuf::from("/");
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        match part.components().next() {
            Some(Component::RootDir) => cur = PathBuf::from("/"),
            Some(Component::ParentDir) => {
                cur.pop();
            }
            Some(Component::Normal(name)) => {
                let next = cur.join(name);
                match std::fs::read_link(&next) {
                    Ok(target) if hops < MAX_HOPS => {
                        hops += 1;
                        out.push(next);
                        if target.is_absolute() {
                            cur = PathBuf::from("/");
                        }
                        todo.extend(
                            target
                                .components()
                                .rev()
                                .map(|c| PathBuf::from(c.as_os_str())),
                        );
                    }
                    _ => cur = next,
                }
            }
            _ => {}
        }
    }
    out.push(cur);
    out.sort();
    out.dedup();
    out
}

impl Watcher {
    pub(super) fn new(changed: mpsc::Sender<()>) -> Watcher {
        Watcher {
            changed,
            inner: None,
            watching: BTreeSet::new(),
        }
    }

    /// Watches exactly `files` and the symlink chains behind them
    /// (re-registering only when that set changed).
    pub(super) fn watch(&mut self, files: &[PathBuf]) {
        let files: BTreeSet<PathBuf> = files.iter().flat_map(|f| chain(f)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pc-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.canonicalize().unwrap()
    }

    /// The layout kubelet gives a ConfigMap volume.
    #[test]
    fn a_configmap_volume_chain_names_the_data_symlink_and_the_real_file() {
        let d = tmp("cm");
        std::fs::create_dir(d.join("..2026_12_02_05_00_00.1")).unwrap();
        std::fs::write(d.join("..2026_12_02_05_00_00.1/policy.toml"), "x").unwrap();
        symlink("..2026_12_02_05_00_00.1", d.join("..data")).unwrap();
        symlink("..data/policy.toml", d.join("policy.toml")).unwrap();
        let c = chain(&d.join("policy.toml"));
        assert_eq!(
            c,
            vec![
                d.join("..2026_12_02_05_00_00.1/policy.toml"),
                d.join("..data"),
                d.join("policy.toml"),
            ]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_plain_file_is_its_own_chain_and_loops_end() {
        let d = tmp("plain");
        std::fs::write(d.join("p.toml"), "x").unwrap();
        assert_eq!(chain(&d.join("p.toml")), vec![d.join("p.toml")]);
        symlink("b", d.join("a")).unwrap();
        symlink("a", d.join("b")).unwrap();
        let c = chain(&d.join("a"));
        assert!(
            c.contains(&d.join("a")) && c.contains(&d.join("b")),
            "{c:?}"
        );
        // Absolute targets and `..` resolve against the real directories.
        std::fs::create_dir(d.join("sub")).unwrap();
        symlink(d.join("sub"), d.join("abs")).unwrap();
        assert!(chain(&d.join("abs/../p.toml")).contains(&d.join("p.toml")));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
