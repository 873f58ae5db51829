//! Earlier releases, built from their commits, for the upgrade test: a new
//! build must take over a filter each of them pinned (see
//! filter-user/src/loader/migrate.rs). A clone may carry no tags, so releases
//! are named by commit. Every later layout change adds its predecessor here.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{clean_cargo, ebpf_cargo_in, exec};

pub struct Release {
    pub name: &'static str,
    pub commit: &'static str,
    /// Its map layout (filter_common::LAYOUT_VERSION; 1 before that existed).
    pub layout: u32,
}

pub const RELEASES: &[Release] = &[
    Release {
        name: "v0.1.0",
        commit: "b7c6d5e47e5a84b83dbb3bf2a16cac31c55324d7",
        layout: 1,
    },
    // Wave 2's first landed main: split blocklists, events (EVENTS_CFG).
    Release {
        name: "layout-2",
        commit: "2aed241affdcaf045ffc8134b2febfeb39bbb69d",
        layout: 2,
    },
    // Wave 2's third landed main: reject and opening hours.
    Release {
        name: "layout-3",
        commit: "d9a4e08a22274a061ba37a2a04496bc481735b43",
        layout: 3,
    },
    // The main landed by stop 18 (layout 4: no map changed from layout 3).
    Release {
        name: "layout-4",
        commit: "2afea6274ad84d65fcc99505ac281c050cca7c3c",
        layout: 4,
    },
    // Wave 2's main with bans, rate limits, IPv4 allowlist lanes, CrowdSec and feeds.
    Release {
        name: "layout-5",
        commit: "fa704d6cb8cd0fe5db4ed39f9fb97acb87142940",
        layout: 5,
    },
    // The main landed before quotas: IPv6 allowlist lanes, mmapable arrays.
    Release {
        name: "layout-6",
        commit: "ee0cd0fd539a696175aeb785e729afe44a35c091",
        layout: 6,
    },
    // The last main with the rate limits' buckets in the RATE_KEYS hash
    // (and transfer quotas, new in layout 7).
    Release {
        name: "layout-7",
        commit: "5758dbe2f1b6b5b4ebf9329e2c4bc775c806f8b6",
        layout: 7,
    },
];

/// `NAME=PATH` for every release, each built once (cached under
/// target/releases/).
pub fn build_all(root: &Path) -> Result<Vec<String>> {
    RELEASES
        .iter()
        .map(|r| Ok(format!("{}={}", r.name, build(root, r)?.display())))
        .collect()
}

/// The `portcullis` binary of `release`, built from its commit's source with
/// this machine's toolchain (debug profile: only its behaviour is tested).
fn build(root: &Path, release: &Release) -> Result<PathBuf> {
    let dir =
        root.join("target/releases")
            .join(format!("{}-{}", release.name, &release.commit[..12]));
    let bin = dir.join("portcullis");
    if bin.is_file() {
        return Ok(bin);
    }
    let src = dir.join("src");
    if src.exists() {
        fs::remove_dir_all(&src).with_context(|| format!("removing {}", src.display()))?;
    }
    fs::create_dir_all(&src)?;
    extract(root, release.commit, &src)?;

    let ebpf_target = dir.join("ebpf");
    exec(ebpf_cargo_in(&src, &ebpf_target, "build").arg("--locked"))?;
    let object = ebpf_target.join("bpfel-unknown-none/release/filter-ebpf");
    if !object.is_file() {
        bail!("{}: eBPF build left no {}", release.name, object.display());
    }
    // One user-side target dir for all releases: their dependencies overlap.
    let user_target = root.join("target/releases/user");
    exec(
        clean_cargo(None)
            .current_dir(&src)
            .args(["build", "--locked", "-p", "filter-user", "--target-dir"])
            .arg(&user_target)
            .env("PORTCULLIS_EBPF_OBJECT", &object),
    )?;
    let built = user_target.join("debug/portcullis");
    fs::copy(&built, &bin).with_context(|| format!("copying {}", built.display()))?;
    eprintln!(
        "{} ({}, map layout {}): {}",
        release.name,
        release.commit,
        release.layout,
        bin.display()
    );
    Ok(bin)
}

/// `git archive COMMIT | tar -x -m -C DIR`. `-m` stamps the files with the
/// time of extraction: with the commit's times, cargo took a crate whose
/// manifest did not change since another release's build in the shared
/// target dir as fresh (the artifact was newer than the old mtimes) and
/// linked that release's `filter-common` into this one.
fn extract(root: &Path, commit: &str, into: &Path) -> Result<()> {
    let mut archive = Command::new("git")
        .current_dir(root)
        .args(["archive", "--format=tar", commit])
        .stdout(Stdio::piped())
        .spawn()
        .context("running git archive")?;
    let stdout = archive.stdout.take().context("git archive stdout")?;
    let tar = Command::new("tar")
        .args(["-x", "-m", "-C"])
        .arg(into)
        .stdin(stdout)
        .status()
        .context("running tar")?;
    let git = archive.wait()?;
    if !git.success() {
        bail!(
            "git archive {commit} failed: this clone lacks the release's commit \
             (a shallow clone? `git fetch --unshallow`)"
        );
    }
    if !tar.success() {
        bail!("extracting {commit} into {} failed", into.display());
    }
    Ok(())
}
