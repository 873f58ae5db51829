//! Kubernetes as the daemon meets it: a ConfigMap volume, updated the way
//! kubelet's AtomicWriter does it (pkg/volume/util/atomic_writer.go): the
//! files go into a new timestamped directory `..2026_12_02_05_13_20.<n>`, a
//! symlink `..data_tmp` to it is renamed over `..data`, and the old directory
//! is removed. `policy.toml` itself is a symlink to `..data/policy.toml` that
//! never changes. The daemon must reload on each swap; the second swap shows
//! it watches the new chain, not only the one it started with.
use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

use super::{
    policies,
    scenarios::{check, rows_a, which_policy, Ctx},
};

/// A ConfigMap volume at `dir` holding `policy.toml`.
struct ConfigMapVolume {
    dir: PathBuf,
    current: Option<String>,
    seq: u32,
}

impl ConfigMapVolume {
    fn new(dir: &Path, policy: &str) -> Result<ConfigMapVolume> {
        fs::create_dir_all(dir)?;
        let mut v = ConfigMapVolume {
            dir: dir.to_path_buf(),
            current: None,
            seq: 0,
        };
        v.publish(policy)?;
        symlink("..data/policy.toml", dir.join("policy.toml"))?;
        Ok(v)
    }

    fn policy(&self) -> PathBuf {
        self.dir.join("policy.toml")
    }

    /// One AtomicWriter update: new timestamped directory, `..data_tmp`
    /// renamed over `..data`, old directory removed.
    fn publish(&mut self, policy: &str) -> Result<()> {
        self.seq += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let name = format!(
            "..2026_12_02_{:02}_{:02}_{:02}.{:09}",
            now / 3600 % 24,
            now / 60 % 60,
            now % 60,
            100_000_000 + self.seq
        );
        let ts = self.dir.join(&name);
        fs::create_dir(&ts)?;
        fs::write(ts.join("policy.toml"), policy)?;
        let tmp = self.dir.join("..data_tmp");
        let _ = fs::remove_file(&tmp);
        symlink(&name, &tmp)?;
        fs::rename(&tmp, self.dir.join("..data")).context("renaming ..data_tmp over ..data")?;
        if let Some(old) = self.current.replace(name) {
            fs::remove_dir_all(self.dir.join(old))?;
        }
        Ok(())
    }
}

pub fn configmap_swap_reloads(cx: &mut Ctx) -> Result<()> {
    let dir = cx.policy_dir.join("configmap");
    let mut vol = ConfigMapVolume::new(&dir, &policies::policy_a())?;
    let policy = vol.policy().display().to_string();
    let mut d = cx.start(Path::new(&policy), &[])?;
    check(cx.sb, &rows_a()).context("policy A from the ConfigMap")?;
    let gen0 = cx.sb.status()?.generation;

    for (round, (text, want)) in [(policies::policy_b(), 'B'), (policies::policy_a(), 'A')]
        .into_iter()
        .enumerate()
    {
        let started = Instant::now();
        vol.publish(&text)?;
        let deadline = started + super::patience(Duration::from_secs(5));
        let mut generation = gen0;
        while Instant::now() < deadline {
            generation = cx.sb.status()?.generation;
            if generation > gen0 + round as u64 && which_policy(cx.sb) == Some(want) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        ensure!(
            generation > gen0 + round as u64,
            "swap {} (..data → {}): no reload within 5 s (generation {generation}); log:\n{}",
            round + 1,
            vol.current.as_deref().unwrap_or("?"),
            d.log_tail(20)
        );
        cx.note(format!(
            "swap {}: policy {want} enforced {} ms after ..data was renamed (generation {generation})",
            round + 1,
            started.elapsed().as_millis()
        ));
    }
    check(cx.sb, &rows_a()).context("policy A after the second swap")?;
    d.terminate()?;
    Ok(())
}
