//! Upgrades from earlier releases to this build over a pinned, enforcing
//! filter with another map layout (filter-user/src/loader/migrate.rs). The
//! releases are built from their commits by `cargo xtask releases`
//! (xtask/src/releases.rs) and handed to the suite as `--release NAME=PATH`.
use std::{
    path::PathBuf,
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, ensure, Context, Result};

use super::{
    continuity::{allowed_a, forbidden_a, gaps, reached},
    daemon::Status,
    policies,
    probe::ProbeLoop,
    scenarios::{check, ms, rows_a, usable, Ctx},
};

static RELEASES: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();

/// The earlier releases' binaries (`--release NAME=PATH`).
pub fn set_releases(releases: Vec<(String, PathBuf)>) {
    let _ = RELEASES.set(releases);
}

fn release(name: &str) -> Result<PathBuf> {
    RELEASES
        .get()
        .and_then(|r| r.iter().find(|(n, _)| n == name))
        .map(|(_, p)| p.clone())
        .ok_or_else(|| {
            anyhow!(
                "no binary for release {name}: run the suite with --release {name}=PATH \
                 (`cargo xtask releases` builds it; `cargo xtask test` passes it)"
            )
        })
}

/// Packets per counter, keyed by (interface, zone, reason, verdict).
fn packets(st: &Status) -> Vec<(String, u64)> {
    st.counters
        .iter()
        .map(|c| {
            (
                format!("{}/{}/{}/{}", c.interface, c.zone, c.reason, c.verdict),
                c.packets,
            )
        })
        .collect()
}

/// The pins a finished migration leaves: this layout's maps in `maps/`
/// (with LAYOUT), nothing in `next/` or `retired/`.
fn pins_settled(cx: &Ctx) -> Result<()> {
    let root = &cx.sb.pin_root;
    ensure!(
        root.join("maps/LAYOUT").exists(),
        "no maps/LAYOUT pin after the upgrade"
    );
    for leftover in ["next", "retired"] {
        ensure!(
            !root.join(leftover).exists(),
            "{leftover}/ is still pinned after the upgrade"
        );
    }
    Ok(())
}

/// v0.1.0 (layout 1) enforcing under probing → SIGTERM → this build starts
/// over its pins: no forbidden probe reaches the host, no allowed probe is
/// lost, counters carry over, the old pins are gone.
pub(crate) fn upgrade_from_v0_1_0(cx: &mut Ctx) -> Result<()> {
    upgrade(cx, "v0.1.0", false)
}

/// As above, but the new daemon dies (abort) after switching every link and
/// before retiring the old maps; the next start completes the migration.
pub(crate) fn upgrade_from_v0_1_0_interrupted(cx: &mut Ctx) -> Result<()> {
    upgrade(cx, "v0.1.0", true)
}

fn upgrade(cx: &mut Ctx, name: &str, interrupt: bool) -> Result<()> {
    let old = release(name)?;
    let pa = cx.policy("upgrade-a.toml", &policies::policy_a())?;
    let mut d_old = cx
        .sb
        .start_daemon_of(&old, &pa, &[])
        .with_context(|| format!("starting {name}"))?;
    check(cx.sb, &rows_a()).with_context(|| format!("{name} enforcing policy A"))?;
    let gen0 = cx.sb.status()?.generation;
    let (forbidden, allowed) = (forbidden_a(), allowed_a());
    let all = usable(cx.sb, forbidden.iter().chain(&allowed).copied().collect());
    let started = Instant::now();
    let lp = ProbeLoop::start(&cx.sb.topo, &all, Duration::from_millis(5));
    thread::sleep(Duration::from_millis(700));

    let t_stop = started.elapsed();
    let stopped = d_old.terminate();
    let before = cx.sb.status().map(|s| packets(&s));
    let t_start = started.elapsed();
    let mut crashed = None;
    if interrupt {
        // Dies right after the link updates, before the old maps are retired.
        match cx
            .sb
            .start_daemon_env(&pa, &[], &[("PORTCULLIS_TEST_ABORT_MIGRATION", "1")])
        {
            Ok(mut d) => {
                d.kill9();
                crashed = Some("the aborting daemon sent READY=1".to_string());
            }
            Err(e) => {
                let log = format!("{e:#}");
                if !log.contains("PORTCULLIS_TEST_ABORT_MIGRATION") {
                    crashed = Some(format!("the first start did not stop where told: {log}"));
                }
            }
        }
        thread::sleep(Duration::from_millis(500));
    }
    let t_middle = started.elapsed();
    let d_new = cx.start(&pa, &[]);
    let t_ready = started.elapsed();
    thread::sleep(Duration::from_millis(700));
    let samples = lp.finish();
    stopped?;
    let before = before?;
    let mut d_new = d_new.context("starting this build over the release's pins")?;
    if let Some(why) = crashed {
        anyhow::bail!("{why}");
    }

    let leaks = reached(&samples, &forbidden, None);
    let (timeouts, fails, longest, where_) = gaps(&samples, &allowed);
    cx.note(format!(
        "{name} stopped at {}, this build started at {}{}, ready at {}; {} samples; allowed \
         probes timed out: {timeouts}, failed otherwise: {fails}; longest gap between opens {}",
        ms(t_stop),
        ms(t_start),
        if interrupt {
            format!(
                " (aborted after the link updates; started again at {})",
                ms(t_middle)
            )
        } else {
            String::new()
        },
        ms(t_ready),
        samples.len(),
        ms(longest)
    ));
    ensure!(
        leaks.is_empty(),
        "forbidden probes got through across the upgrade:\n{}",
        leaks
            .iter()
            .take(10)
            .map(|s| format!("  at {}: {}: {}", ms(s.at), s.probe, s.outcome))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ensure!(
        fails == 0 && timeouts == 0,
        "allowed probes were lost across the upgrade:\n{}",
        where_.join("\n")
    );
    let log = d_new.log().join("\n");
    ensure!(
        log.contains("migrated the pinned filter from map layout 1"),
        "the new daemon did not report a migration; its log:\n{}",
        d_new.log_tail(30)
    );
    if interrupt {
        ensure!(
            log.contains("interrupted layout migration"),
            "the restart did not report recovering the interrupted migration"
        );
    }
    pins_settled(cx)?;
    let after = packets(&cx.sb.status()?);
    let mut carried = 0;
    for (key, was) in &before {
        let now = after
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        ensure!(
            now >= *was,
            "counter {key} went from {was} to {now} across the upgrade"
        );
        carried += was;
    }
    ensure!(carried > 0, "no packets were counted before the upgrade");
    cx.note(format!(
        "{} counters carried ({carried} packets before the upgrade)",
        before.len()
    ));
    let gen = cx.sb.status()?.generation;
    ensure!(gen > gen0, "generation {gen} after the upgrade, was {gen0}");
    check(cx.sb, &rows_a()).context("after the upgrade")?;
    d_new.terminate()?;
    Ok(())
}
