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
    bans::{banned_drops, tagged},
    cmd,
    continuity::{allowed_a, forbidden_a, gaps, listed, reached},
    daemon::Status,
    policies,
    probe::{Probe, ProbeLoop},
    scenarios::{check, metric, ms, rows_a, t, u, usable, Ctx, Exp},
    topology::{LISTED4, LISTED4B, LISTED6, VPN4},
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
/// (every one of this build's, LAYOUT and the maps the old layout lacked —
/// from layout 6, QUOTAS and QUOTA_USAGE — among them), nothing in `next/`
/// or `retired/`.
fn pins_settled(cx: &Ctx) -> Result<()> {
    let root = &cx.sb.pin_root;
    let missing: Vec<&str> = filter_common::ALL_MAPS
        .into_iter()
        .filter(|m| !root.join("maps").join(m).exists())
        .collect();
    ensure!(
        missing.is_empty(),
        "maps/ lacks {missing:?} after the upgrade"
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
    upgrade(cx, "v0.1.0", 1, false, Bans::NotInRelease)
}

/// As above, but the new daemon dies (abort) after switching every link and
/// before retiring the old maps; the next start completes the migration.
pub(crate) fn upgrade_from_v0_1_0_interrupted(cx: &mut Ctx) -> Result<()> {
    upgrade(cx, "v0.1.0", 1, true, Bans::NotInRelease)
}

/// Layout 2 (wave 2's first release) → this build, as for v0.1.0; besides
/// the counters, the run-time sampling setting set with the old binary
/// (`portcullis sampling`) is carried over, not reset to the policy's.
pub(crate) fn upgrade_from_layout_2_keeps_sampling(cx: &mut Ctx) -> Result<()> {
    upgrade(cx, "layout-2", 2, false, Bans::NotInRelease)
}

/// Layout 3 (reject and opening hours) → this build, as for layout 2.
pub(crate) fn upgrade_from_layout_3(cx: &mut Ctx) -> Result<()> {
    upgrade(cx, "layout-3", 3, false, Bans::NotInRelease)
}

/// Layout 4 (the last main before limits, bans and allowlist lanes) → this
/// build, as for layout 2.
pub(crate) fn upgrade_from_layout_4(cx: &mut Ctx) -> Result<()> {
    upgrade(cx, "layout-4", 4, false, Bans::NotInRelease)
}

/// Release `layout-L` → this build, for a layout with bans and rate limits
/// (5: rate limits, bans, IPv4 allowlist lanes; 6: IPv6 allowlist lanes;
/// 7: quotas, the last with the buckets in a hash: layout 8 re-places them),
/// as for layout 2; besides, bans added with the old binary keep dropping
/// their sources throughout and after the upgrade, are listed by the new
/// daemon with their tag, and their drop counter carries over; a source the
/// old binary rate-limited stays limited.
pub(crate) fn upgrade_from_layout_with_bans<const L: u32>(cx: &mut Ctx) -> Result<()> {
    upgrade(cx, &format!("layout-{L}"), L, false, Bans::StoreKept)
}

/// As above, with the daemon's ban store gone before the new build starts:
/// the bans live on in the kernel maps the migration carried, and the new
/// daemon adopts them from there (tagged "adopted").
pub(crate) fn upgrade_from_layout_without_ban_store<const L: u32>(cx: &mut Ctx) -> Result<()> {
    upgrade(cx, &format!("layout-{L}"), L, false, Bans::StoreLost)
}

/// The run-time sampling setting this test sets on a layout-2 filter.
const SAMPLING_SET: [&str; 5] = ["drops", "--rate", "7", "--burst", "9"];

/// What an upgrade scenario does with bans.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bans {
    /// The release has none.
    NotInRelease,
    /// Bans made with the old binary; the daemons share the ban store.
    StoreKept,
    /// Bans made with the old binary; the store is moved away before this
    /// build starts.
    StoreLost,
}

/// What the layout-5-on scenarios ban with the old binary: a prefix, an IPv4
/// and an IPv6 address (so both tries' and hashes' kinds and the prefilter
/// are carried) — sources policy A otherwise lets in on 8880.
const BANNED: [&str; 3] = ["198.51.100.0/24", "192.0.2.7", "2001:db8:dead::7"];
const BANNED_LISTED: [&str; 3] = ["192.0.2.7/32", "198.51.100.0/24", "2001:db8:dead::7/128"];
const BAN_TAG: &str = "upgrade";

/// A zone the layout-5-on scenarios add to policy A: one packet a minute per
/// source, so a source that sent one is limited for the rest of the test —
/// unless its bucket is lost on the way (a fresh bucket admits it again).
const LIMITED_ZONE: &str = r#"
[[zone]]
name  = "upgrade-limited"
ports = ["7007/udp"]
allow = ["any"]
rate  = { packets = "1/min", burst = 1 }
"#;

fn limited_probe() -> Probe {
    u(VPN4, 7007)
}

fn banned_probes() -> Vec<Probe> {
    vec![t(LISTED4, 8880), t(LISTED4B, 8880), t(LISTED6, 8880)]
}

/// `portcullis ban ARGS…` of another build's binary, against the daemon.
fn ban_of(cx: &Ctx, bin: &std::path::Path, args: &[&str]) -> Result<()> {
    let control = cx.sb.control.display().to_string();
    let mut all = vec!["ban"];
    all.extend_from_slice(args);
    all.extend(["--control-socket", &control]);
    let out = cmd::run(
        &mut cx.sb.portcullis_of(bin, &all),
        super::patience(cmd::CMD_TIMEOUT),
    )?;
    ensure!(
        out.status.success(),
        "{all:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// `portcullis_ban_drops_total{tag}` of the running daemon.
fn ban_drops(cx: &Ctx, tag: &str) -> Result<f64> {
    Ok(metric(
        &cx.sb.metrics()?,
        "portcullis_ban_drops_total",
        &[("tag", tag)],
    )
    .unwrap_or(0.0))
}

fn upgrade(cx: &mut Ctx, name: &str, layout: u32, interrupt: bool, bans: Bans) -> Result<()> {
    let old = release(name)?;
    let text = if bans == Bans::NotInRelease {
        policies::policy_a()
    } else {
        format!("{}{LIMITED_ZONE}", policies::policy_a())
    };
    let pa = cx.policy("upgrade-a.toml", &text)?;
    if bans == Bans::StoreLost {
        // The sandbox outlives a scenario: the store an earlier one lost (it
        // runs once per release) would make the move below fail.
        let _ = std::fs::remove_dir_all(cx.sb.state_dir().with_extension("lost"));
    }
    let state = cx.sb.state_dir().display().to_string();
    let old_extra: &[&str] = if bans == Bans::NotInRelease {
        &[]
    } else {
        &["--state-dir", &state]
    };
    let mut d_old = cx
        .sb
        .start_daemon_of(&old, &pa, old_extra)
        .with_context(|| format!("starting {name}"))?;
    check(cx.sb, &rows_a()).with_context(|| format!("{name} enforcing policy A"))?;
    if layout >= 2 {
        super::events::sampling_of(cx.sb, &old, &SAMPLING_SET)
            .with_context(|| format!("{name}: sampling"))?;
    }
    let banned = if bans == Bans::NotInRelease {
        Vec::new()
    } else {
        usable(cx.sb, banned_probes())
    };
    let rows = |e: Exp| banned.iter().map(|p| (*p, e)).collect::<Vec<_>>();
    if bans != Bans::NotInRelease {
        check(cx.sb, &rows(Exp::Open)).context("the sources to ban, before the ban")?;
        let mut args = vec!["add"];
        args.extend(BANNED);
        args.extend(["--tag", BAN_TAG]);
        ban_of(cx, &old, &args).with_context(|| format!("{name}: ban add"))?;
        check(cx.sb, &rows(Exp::Blocked)).with_context(|| format!("{name}'s bans"))?;
        check(cx.sb, &[(limited_probe(), Exp::Open)]).context("a limited source's first")?;
        check(cx.sb, &[(limited_probe(), Exp::Blocked)])
            .with_context(|| format!("{name}: a limited source's second"))?;
    }
    let gen0 = cx.sb.status()?.generation;
    let (mut forbidden, allowed) = (forbidden_a(), allowed_a());
    forbidden.extend(&banned);
    let all = usable(cx.sb, forbidden.iter().chain(&allowed).copied().collect());
    let started = Instant::now();
    let lp = ProbeLoop::start(&cx.sb.topo, &all, Duration::from_millis(5));
    thread::sleep(Duration::from_millis(700));

    let drops_before = if bans == Bans::NotInRelease {
        Ok(0.0)
    } else {
        ban_drops(cx, BAN_TAG)
    };
    let t_stop = started.elapsed();
    let stopped = d_old.terminate();
    let before = cx.sb.status().map(|s| packets(&s));
    let store_moved = if bans == Bans::StoreLost {
        let dir = cx.sb.state_dir();
        std::fs::rename(&dir, dir.with_extension("lost"))
            .with_context(|| format!("moving {} away", dir.display()))
    } else {
        Ok(())
    };
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
    let drops_before = drops_before?;
    store_moved?;
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
        listed(leaks.iter().copied())
    );
    ensure!(
        fails == 0 && timeouts == 0,
        "allowed probes were lost across the upgrade:\n{}",
        where_.join("\n")
    );
    let log = d_new.log().join("\n");
    ensure!(
        log.contains(&format!(
            "migrated the pinned filter from map layout {layout}"
        )),
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
    if bans != Bans::NotInRelease {
        check_carried(cx, bans, &log, drops_before, &rows(Exp::Blocked))?;
    }
    if layout >= 2 {
        let shown = super::events::sampling_of(cx.sb, &cx.sb.bin, &[])?;
        let s = &shown["sampling"];
        ensure!(
            s["sample"] == "drops" && s["rate"] == 7 && s["burst"] == 9 && s["runtime"] == true,
            "the run-time sampling setting was not carried over: {s}"
        );
        cx.note("run-time sampling (drops, rate 7, burst 9) carried over".to_string());
    }
    d_new.terminate()?;
    Ok(())
}

/// After an upgrade from layout 5 on: the migration carried the bans and the rate
/// limits' buckets (its log says how many), the banned sources stay dropped,
/// the rate-limited one stays limited, the new daemon lists the bans — with
/// their tag when the store was kept (and the tag's drop count carried
/// over), as adopted from the kernel when it was lost.
fn check_carried(
    cx: &mut Ctx,
    bans: Bans,
    log: &str,
    drops_before: f64,
    blocked: &[(Probe, Exp)],
) -> Result<()> {
    check(cx.sb, blocked).context("the old build's bans after the upgrade")?;
    check(cx.sb, &[(limited_probe(), Exp::Blocked)]).context(
        "a source the old build rate-limited, after the upgrade (its bucket was reset?)",
    )?;
    let tag = if bans == Bans::StoreKept {
        BAN_TAG
    } else {
        filter_user::bans::ADOPTED_TAG
    };
    let listed = tagged(cx, tag)?;
    ensure!(
        listed == BANNED_LISTED,
        "the new daemon lists {listed:?} under tag {tag:?}; expected {BANNED_LISTED:?}"
    );
    if bans == Bans::StoreLost {
        ensure!(
            log.contains("adopted the 3 bans the kernel holds"),
            "the new daemon did not adopt the kernel's bans; its log:\n{log}"
        );
    } else {
        // Every banned drop counts twice: in COUNTERS (reason banned) and in
        // its tag's BAN_COUNTERS cell. Both were carried, so with no probe
        // in flight they agree; a tag count that restarted at the upgrade
        // would be short of the other by what the old program dropped.
        let drops = ban_drops(cx, BAN_TAG)?;
        let counted = banned_drops(cx)?;
        ensure!(
            drops_before > 0.0 && drops >= drops_before && drops == counted as f64,
            "portcullis_ban_drops_total{{tag={BAN_TAG}}} was {drops_before} before the \
             upgrade and is {drops} after; the banned drop counters say {counted}"
        );
        cx.note(format!(
            "ban drops of tag {BAN_TAG}: {drops_before} before the upgrade, {drops} after \
             (banned drop counters: {counted})"
        ));
    }
    let carried = log
        .lines()
        .find_map(|l| l.find("carried from layout").map(|at| l[at..].to_string()))
        .filter(|l| l.contains("banned addresses and"));
    ensure!(
        carried
            .as_deref()
            .is_some_and(|l| l.contains("2 banned addresses and 1 banned prefixes")
                && l.contains(" 1 rate-limit buckets")),
        "the migration did not report carrying the 3 bans and the bucket: {carried:?}"
    );
    cx.note(format!(
        "{}; listed under tag {tag:?}: {listed:?}",
        carried.unwrap_or_default().trim()
    ));
    Ok(())
}

/// Names of the pins under `dir` (sorted), to compare before and after.
fn pin_names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// `run` of this build over v0.1.0's pins with one argument changed, in the
/// host namespace; returns (exit success, stderr).
fn run_new(cx: &Ctx, policy: &std::path::Path, first_iface: &str) -> Result<(bool, String)> {
    let (p, root, control) = (
        policy.display().to_string(),
        cx.sb.pin_root.display().to_string(),
        cx.sb.control.display().to_string(),
    );
    let out = super::cmd::run(
        &mut cx.sb.portcullis(&[
            "run",
            "--policy",
            &p,
            "--iface",
            first_iface,
            "--iface",
            super::topology::HOST_INET_IF,
            "--iface",
            super::topology::HOST_MGMT_IF,
            "--pin-root",
            &root,
            "--control-socket",
            &control,
        ]),
        super::patience(Duration::from_secs(30)),
    )?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A start of this build that fails before any link runs it (its first
/// interface does not exist) leaves v0.1.0's filter exactly as it was: same
/// pins, no `next/`, same verdicts; the next good start migrates.
pub(crate) fn upgrade_failed_start_changes_nothing(cx: &mut Ctx) -> Result<()> {
    let old = release("v0.1.0")?;
    let pa = cx.policy("upgrade-fail-a.toml", &policies::policy_a())?;
    let mut d_old = cx.sb.start_daemon_of(&old, &pa, &[])?;
    d_old.terminate()?;
    let maps = cx.sb.pin_root.join("maps");
    let (pins0, gen0) = (pin_names(&maps), cx.sb.status()?.generation);
    let (ok, err) = run_new(cx, &pa, "pcnosuch0")?;
    ensure!(!ok, "start with a missing interface succeeded");
    ensure!(
        err.contains("the old filter keeps enforcing"),
        "the failed start did not say the old filter stays; stderr:\n{err}"
    );
    ensure!(
        pin_names(&maps) == pins0,
        "the failed start changed the pins: {:?} -> {:?}",
        pins0,
        pin_names(&maps)
    );
    ensure!(
        !cx.sb.pin_root.join("next").exists(),
        "the failed start left next/"
    );
    ensure!(
        cx.sb.status()?.generation == gen0,
        "the failed start changed the generation"
    );
    check(cx.sb, &rows_a()).context("v0.1.0's filter after the failed start")?;
    let mut d = cx.start(&pa, &[])?;
    pins_settled(cx)?;
    check(cx.sb, &rows_a()).context("after the good start")?;
    d.terminate()?;
    Ok(())
}

/// Pins of a newer layout than this build knows are refused with the reason
/// and left alone (a downgrade must go through `detach`); the refusal comes
/// before anything else is looked at (here: an interface that does not exist).
pub(crate) fn newer_layout_is_refused(cx: &mut Ctx) -> Result<()> {
    let pa = cx.policy("upgrade-newer.toml", &policies::policy_a())?;
    let mut d = cx.start(&pa, &[])?;
    d.terminate()?;
    let layout = cx.sb.pin_root.join("maps/LAYOUT");
    // What a future build would have pinned: LAYOUT[0] = 99.
    set_layout_pin(&layout, 99)?;
    let pins0 = pin_names(&cx.sb.pin_root.join("maps"));
    let (ok, err) = run_new(cx, &pa, "pcnosuch1")?;
    ensure!(!ok, "this build started over pins of layout 99");
    ensure!(
        err.contains("newer portcullis (map layout 99"),
        "the refusal does not name the layout; stderr:\n{err}"
    );
    ensure!(
        pin_names(&cx.sb.pin_root.join("maps")) == pins0,
        "the refused start changed the pins"
    );
    check(cx.sb, &rows_a()).context("the pinned filter after the refused start")?;
    Ok(())
}

fn set_layout_pin(path: &std::path::Path, v: u32) -> Result<()> {
    let data = aya::maps::MapData::from_pin(path).context("opening the LAYOUT pin")?;
    let mut map: aya::maps::Array<aya::maps::MapData, u32> =
        aya::maps::Map::from_map_data(data).and_then(aya::maps::Array::try_from)?;
    map.set(0, v, 0)?;
    Ok(())
}
