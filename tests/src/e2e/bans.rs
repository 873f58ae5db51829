//! Bans against the real daemon and kernel: `portcullis ban` drops a source
//! at once on every port but its failsafe ones, expires with the daemon
//! killed (the datapath reads the clock), survives restarts, and bad input
//! changes nothing.

use std::{
    fs,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::Signal;
use serde_json::Value;

use super::{
    patience,
    probe::{self, Outcome},
    scenarios::{check, metric, ms, t, wait_until, Ctx, Exp},
    topology::*,
};

use Exp::{Blocked as B, Open as O};

/// 22/tcp is failsafe for the internet sources; 8880/tcp open to anyone.
pub(crate) const POLICY: &str = r#"version = 1

[defaults]
unmatched = "pass"
non_ip = "pass"
other_protocols = "pass"

[[failsafe]]
ports = ["22/tcp"]
from  = ["198.18.0.0/24", "2001:db8:1::/64"]

[[zone]]
name  = "web"
ports = ["8880/tcp"]
allow = ["any"]

[metrics]
listen = "127.0.0.1:9469"
"#;

/// `portcullis ban ARGS…`: (success, stdout, stderr).
fn ban(cx: &Ctx, args: &[&str]) -> Result<(bool, String, String)> {
    let mut all = vec!["ban"];
    all.extend_from_slice(args);
    let out = cx.sb.cli(&all)?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `portcullis ban ARGS…`; its stdout, or an error with what it said.
pub(crate) fn ban_ok(cx: &Ctx, args: &[&str]) -> Result<String> {
    let (ok, out, err) = ban(cx, args)?;
    ensure!(ok, "portcullis ban {args:?} failed: {err}{out}");
    Ok(out)
}

/// `ban list FILTER… -o json` → its records.
pub(crate) fn listed_with(cx: &Ctx, filter: &[&str]) -> Result<Vec<Value>> {
    let mut args = vec!["list"];
    args.extend_from_slice(filter);
    args.extend_from_slice(&["-o", "json"]);
    let out = ban_ok(cx, &args)?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("ban list JSON: {out}"))?;
    Ok(v["bans"].as_array().cloned().unwrap_or_default())
}

fn listed(cx: &Ctx) -> Result<Vec<Value>> {
    listed_with(cx, &[])
}

/// The `banned` drops `status` counts, over every interface.
pub(crate) fn banned_drops(cx: &Ctx) -> Result<u64> {
    Ok(cx
        .sb
        .status()?
        .counters
        .iter()
        .filter(|c| c.reason == "banned" && c.verdict == "drop")
        .map(|c| c.packets)
        .sum())
}

/// The prefixes banned under `tag`, sorted.
pub(crate) fn tagged(cx: &Ctx, tag: &str) -> Result<Vec<String>> {
    Ok(prefixes_of(&listed_with(cx, &["--tag", tag])?))
}

/// The records' prefixes, sorted.
pub(crate) fn prefixes_of(list: &[Value]) -> Vec<String> {
    let mut p: Vec<String> = list
        .iter()
        .filter_map(|b| b["prefix"].as_str().map(str::to_string))
        .collect();
    p.sort();
    p
}

fn prefixes(cx: &Ctx) -> Result<Vec<String>> {
    Ok(prefixes_of(&listed(cx)?))
}

/// Ban, unban, flush, failsafe precedence, IPv6 prefixes, metrics.
pub(crate) fn drop_and_admit(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("bans.toml", POLICY)?;
    let mut d = cx.start(&p, &[])?;
    check(
        cx.sb,
        &[(t(INET4, 8880), O), (t(INET6, 8880), O), (t(INET4, 22), O)],
    )?;
    let started = Instant::now();
    ban_ok(cx, &["add", "198.18.0.2", "--for", "1h", "--tag", "e2e"])?;
    let took = started.elapsed();
    // The first probe sent after the answer is dropped: the ban is in the
    // kernel when `ban add` returns.
    check(
        cx.sb,
        &[
            (t(INET4, 8880), B),
            (t(INET4, 22), O),
            (t(INET6, 8880), O),
            (t(MGMT4, 8880), O),
        ],
    )?;
    cx.note(format!(
        "ban add → enforced: {} end to end (CLI start to answer)",
        ms(took)
    ));
    ban_ok(
        cx,
        &["add", "2001:db8:1::/64", "--tag", "e2e", "--reason", "scan"],
    )?;
    check(cx.sb, &[(t(INET6, 8880), B), (t(INET6, 22), O)])?;
    let samples = cx.sb.metrics()?;
    let active = metric(&samples, "portcullis_bans_active", &[("tag", "e2e")]);
    ensure!(
        active == Some(2.0),
        "portcullis_bans_active{{tag=e2e}} = {active:?}"
    );
    let drops = metric(&samples, "portcullis_ban_drops_total", &[("tag", "e2e")]);
    ensure!(
        drops.is_some_and(|n| n >= 2.0),
        "portcullis_ban_drops_total{{tag=e2e}} = {drops:?}"
    );
    let banned = banned_drops(cx)?;
    ensure!(banned >= 2, "status counts {banned} banned drops");
    let out = cx.sb.cli(&["status", "--output", "json"])?;
    let v: Value = serde_json::from_slice(&out.stdout).context("status JSON")?;
    let b = &v["daemon"]["bans"];
    ensure!(
        b["in_force"] == 2
            && b["tags"][0]["tag"] == "e2e"
            && b["tags"][0]["dropped"].as_u64() >= Some(2),
        "status -o json daemon.bans: {b}"
    );
    let text = String::from_utf8_lossy(&cx.sb.cli(&["status"])?.stdout).into_owned();
    ensure!(
        text.lines()
            .any(|l| l.starts_with("bans        2 in force: e2e 2 (")),
        "status has no bans line:\n{text}"
    );
    let list = listed(cx)?;
    ensure!(
        list.iter()
            .any(|b| b["prefix"] == "2001:db8:1::/64" && b["reason"] == "scan"),
        "ban list: {list:?}"
    );
    ban_ok(cx, &["del", "198.18.0.2"])?;
    check(cx.sb, &[(t(INET4, 8880), O), (t(INET6, 8880), B)])?;
    ban_ok(cx, &["flush", "--tag", "e2e"])?;
    check(cx.sb, &[(t(INET4, 8880), O), (t(INET6, 8880), O)])?;
    ensure!(prefixes(cx)?.is_empty(), "bans left after flush");
    // A reload never touches bans.
    ban_ok(cx, &["add", "198.18.0.2"])?;
    let (ok, text) = cx.sb.reload()?;
    ensure!(ok, "reload: {text}");
    check(cx.sb, &[(t(INET4, 8880), B)])?;
    ban_ok(cx, &["flush"])?;
    d.terminate()?;
    Ok(())
}

/// Malformed input, whole-space bans, bad TTLs and a full map: an error that
/// says why, and the bans in force stay.
pub(crate) fn bad_input_changes_nothing(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("bans.toml", POLICY)?;
    let mut d = cx.start(&p, &[])?;
    ban_ok(cx, &["add", "198.18.0.2", "--for", "1h"])?;
    for (args, want) in [
        (vec!["add", "198.18.0.300"], "not an IPv4/IPv6"),
        (vec!["add", "any"], "every address"),
        (vec!["add", "0.0.0.0/0"], "/0"),
        (vec!["add", "::/0"], "/0"),
        (vec!["add", "198.18.0.7/24"], "host bits"),
        (vec!["add", "192.0.2.1", "--for", "0"], "longer than 0"),
        (vec!["add", "192.0.2.1", "--for=-5m"], "negative"),
        (vec!["add", "192.0.2.1", "--tag", "a b"], "in a tag"),
        (vec!["add", "192.0.2.1", "198.18.0.300"], "not an IPv4/IPv6"),
    ] {
        let (ok, out, err) = ban(cx, &args)?;
        ensure!(!ok, "ban {args:?} was accepted: {out}");
        ensure!(
            err.contains(want),
            "ban {args:?}: expected `{want}` in: {err}"
        );
    }
    ensure!(
        prefixes(cx)? == ["198.18.0.2/32"],
        "bad requests changed the list: {:?}",
        prefixes(cx)?
    );
    // Fill the IPv4 prefix map to the brim in one bulk request, then one more.
    let max = filter_common::BAN_NETS_MAX as usize;
    let file = cx.policy_dir.join("full.txt");
    let mut text = String::with_capacity(max * 16);
    for i in 0..max as u32 {
        // /30s in 100.64.0.0/10 and on: never a probe source.
        let a = std::net::Ipv4Addr::from(0x6440_0000u32 + (i << 2));
        text.push_str(&format!("{a}/30\n"));
    }
    fs::write(&file, text)?;
    let f = file.display().to_string();
    let started = Instant::now();
    ban_ok(cx, &["add", "--file", &f, "--for", "1h", "--tag", "bulk"])?;
    cx.note(format!(
        "{max} prefixes in one bulk request: {}",
        ms(started.elapsed())
    ));
    let (ok, _, err) = ban(cx, &["add", "100.100.0.0/30"])?;
    ensure!(
        !ok && err.contains("full"),
        "one past a full map: ok={ok} {err}"
    );
    // Hosts still fit (their own map); the full request changed nothing.
    ban_ok(cx, &["add", "192.0.2.1"])?;
    let n = listed(cx)?.len();
    ensure!(n == max + 2, "{n} bans listed, expected {}", max + 2);
    check(cx.sb, &[(t(INET4, 8880), B), (t(MGMT4, 8880), O)])?;
    ban_ok(cx, &["flush"])?;
    check(cx.sb, &[(t(INET4, 8880), O)])?;
    d.terminate()?;
    Ok(())
}

/// A 3 s ban, the daemon `kill -9`ed at once: the source is admitted again
/// at the expiry with nobody left to remove the entry.
pub(crate) fn expire_with_daemon_killed(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("bans.toml", POLICY)?;
    let mut d = cx.start(&p, &[])?;
    let ttl = patience(Duration::from_secs(3));
    let secs = ttl.as_secs().to_string();
    ban_ok(cx, &["add", "198.18.0.2", "--for", &secs])?;
    let added = Instant::now();
    d.signal(Signal::SIGKILL)?;
    d.kill9();
    check(cx.sb, &[(t(INET4, 8880), B), (t(INET4, 22), O)])?;
    let step = Duration::from_millis(100);
    let admitted = wait_until(ttl + Duration::from_secs(5), step, || {
        probe::run_batch(&cx.sb.topo, &[t(INET4, 8880)])[0] == Outcome::Open
    });
    ensure!(
        admitted,
        "still dropped {} s after a {secs} s ban",
        added.elapsed().as_secs()
    );
    let at = added.elapsed();
    ensure!(
        at + Duration::from_millis(200) >= ttl,
        "admitted after {} of a {secs} s ban",
        ms(at)
    );
    cx.note(format!(
        "{secs} s ban, daemon killed: admitted after {}",
        ms(at)
    ));
    Ok(())
}

/// Bans survive SIGTERM + start, kill -9 + start, with the time left kept;
/// a corrupt state file stops the start and the kernel keeps its bans.
pub(crate) fn survive_restart(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("bans.toml", POLICY)?;
    let mut d = cx.start(&p, &[])?;
    ban_ok(cx, &["add", "198.18.0.2", "--for", "1h", "--tag", "keep"])?;
    ban_ok(cx, &["add", "2001:db8:1::/64", "--tag", "keep"])?;
    d.terminate()?;
    check(cx.sb, &[(t(INET4, 8880), B), (t(INET6, 8880), B)])?;
    let mut d = cx.start(&p, &[])?;
    check(cx.sb, &[(t(INET4, 8880), B), (t(INET6, 8880), B)])?;
    let list = listed(cx)?;
    let v4 = list
        .iter()
        .find(|b| b["prefix"] == "198.18.0.2/32")
        .with_context(|| format!("198.18.0.2 not restored: {list:?}"))?;
    let left = v4["remaining_s"].as_u64().unwrap_or(0);
    ensure!(
        (3000..=3600).contains(&left),
        "198.18.0.2 restored with {left} s left of 1 h"
    );
    ensure!(v4["tag"] == "keep", "tag not restored: {v4}");
    d.signal(Signal::SIGKILL)?;
    d.kill9();
    let mut d = cx.start(&p, &[])?;
    ensure!(
        prefixes(cx)? == ["198.18.0.2/32", "2001:db8:1::/64"],
        "after kill -9 + start: {:?}",
        prefixes(cx)?
    );
    d.terminate()?;
    // A corrupt state: the start fails naming the file, the bans stay.
    let snap = cx.sb.state_dir().join("bans");
    fs::write(&snap, "portcullis-bans 1\n198.18.0.2/32 soon - -\n")?;
    match cx.start(&p, &[]) {
        Ok(mut d) => {
            d.terminate()?;
            bail!("the daemon started on a corrupt ban state");
        }
        Err(e) => {
            let e = format!("{e:#}");
            ensure!(
                e.contains("bans:2:") && e.contains("corrupt ban state"),
                "start on a corrupt state: {e}"
            );
        }
    }
    check(cx.sb, &[(t(INET4, 8880), B), (t(INET6, 8880), B)])?;
    // Moved aside: the start adopts the bans the kernel holds.
    fs::remove_file(&snap)?;
    fs::remove_file(cx.sb.state_dir().join("bans.journal")).ok();
    let mut d = cx.start(&p, &[])?;
    check(cx.sb, &[(t(INET4, 8880), B), (t(INET6, 8880), B)])?;
    let list = listed(cx)?;
    ensure!(
        list.len() == 2 && list.iter().all(|b| b["tag"] == "adopted"),
        "adopted from the kernel: {list:?}"
    );
    ban_ok(cx, &["flush"])?;
    check(cx.sb, &[(t(INET4, 8880), O), (t(INET6, 8880), O)])?;
    d.terminate()?;
    Ok(())
}
