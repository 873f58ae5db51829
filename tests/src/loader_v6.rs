//! Loader checks of the IPv6 blocklist layout against the kernel: random
//! sequences of blocklists diffed into the slots read back exactly as fresh
//! builds, a list over a slot's table capacity is refused before any write,
//! and a one-prefix change to a 1M-prefix list writes a handful of entries
//! (counted, not timed).
use std::{net::Ipv6Addr, time::Instant};

use filter_common::{slot_of, Reason, Verdict, BL6_TABLE_MAX, RULE_GLOBAL};
use filter_user::{
    loader::{ImageOptions, SlotImage},
    policy,
};
use ipnet::Ipv6Net;
use rand::{rngs::SmallRng, Rng, SeedableRng};

use crate::{
    harness::Harness,
    loader_checks::{compile, differences, err, expect},
    packet::Frame,
};

/// Lengths the random lists draw from: more above /24 than are probed.
const LENGTHS: [u8; 17] = [
    19, 22, 24, 25, 26, 29, 32, 33, 40, 47, 48, 56, 63, 64, 100, 127, 128,
];

/// A random merged IPv6 blocklist clustered in 32 /24s (so prefixes share
/// /24s, bitmap words and table buckets).
fn random_list(rng: &mut SmallRng, n: usize) -> Vec<Ipv6Net> {
    let list = (0..n)
        .map(|_| {
            let top: u128 = 0x2a_0000 + rng.gen_range(0..32u128) * 5;
            let low: u128 = rng.gen::<u128>() >> 24;
            let len = LENGTHS[rng.gen_range(0..LENGTHS.len())];
            // Short prefixes elsewhere, so they do not swallow the long ones.
            let top = if len <= 24 { top + 0x10_0000 } else { top };
            Ipv6Net::new(Ipv6Addr::from(top << 104 | low), len)
                .expect("valid length")
                .trunc()
        })
        .collect();
    policy::merge_v6(list)
}

/// After each apply of a random sequence of IPv6 blocklists (diffed into the
/// slot that held the policy before last), the active slot reads back equal
/// to a fresh build of that policy.
pub fn diffs_read_back_as_fresh_builds(h: &mut Harness) -> Result<(), String> {
    let mut rng = SmallRng::seed_from_u64(0xb16);
    let base = compile("version = 1\n")?;
    let mut list = random_list(&mut rng, 400);
    for i in 0..8 {
        let mut policy = base.clone();
        policy.blocklist_v6 = list.clone();
        let want = SlotImage::build(&policy, ImageOptions::default()).map_err(err)?;
        let f = h.filter();
        f.apply(&policy).map_err(err)?;
        let held = f.read_slot(slot_of(f.generation())).map_err(err)?;
        if held != want {
            return Err(format!(
                "list {i} ({} prefixes): {}",
                list.len(),
                differences(&held, &want)
            ));
        }
        // Drop ~10%, add a few of any length.
        let mut next: Vec<Ipv6Net> = list
            .iter()
            .filter(|_| rng.gen_range(0..10) != 0)
            .copied()
            .collect();
        let n = rng.gen_range(1..40);
        next.extend(random_list(&mut rng, n));
        list = policy::merge_v6(next);
    }
    let empty = compile("version = 1\n")?;
    h.filter().apply(&empty).map_err(err)?;
    h.filter().apply(&empty).map_err(err)?;
    Ok(())
}

/// A list with more long prefixes than a slot's table holds is refused
/// before any write, naming the problem; the enforced policy stays.
pub fn oversized_list_is_refused_before_any_write(h: &mut Harness) -> Result<(), String> {
    let mut big = compile("version = 1\n")?;
    big.blocklist_v6 = (0..BL6_TABLE_MAX as u128 + 1)
        .map(|i| {
            Ipv6Net::new(Ipv6Addr::from((0x2001_0db8_0000u128 + 2 * i) << 80), 48).expect("valid")
        })
        .collect();
    let f = h.filter();
    let (generation, written) = (f.generation(), f.entries_written());
    let e = match f.apply(&big) {
        Ok(_) => return Err("a list larger than the table was applied".into()),
        Err(e) => e.to_string(),
    };
    if !e.contains("table entries") || !e.contains(&BL6_TABLE_MAX.to_string()) {
        return Err(format!("unclear error: {e}"));
    }
    if f.generation() != generation || f.entries_written() != written {
        return Err("the refused apply wrote or flipped".into());
    }
    Ok(())
}

const V6_PREFIXES: u128 = 1_000_000;

/// 1M IPv6 /48s loaded into both slots; then one prefix removed and another
/// added: the apply writes O(1) entries (bitmap words, table buckets, the
/// info), not O(list). Prints the entries written and the rough times.
pub fn one_prefix_change_on_1m_list(h: &mut Harness) -> Result<(), String> {
    let base = compile("version = 1\n")?;
    let slash48 = |i: u128| {
        Ipv6Net::new(Ipv6Addr::from((0x2001_0db8_0000u128 + 2 * i) << 80), 48).expect("valid")
    };
    let mut big = base.clone();
    big.blocklist_v6 = (0..V6_PREFIXES).map(slash48).collect();
    let f = h.filter();
    let before = f.entries_written();
    let t = Instant::now();
    f.apply(&big).map_err(err)?;
    let load_s = t.elapsed().as_secs_f64();
    let load_entries = f.entries_written() - before;
    f.prefill_standby().map_err(err)?;

    let mut changed = big.clone();
    changed.blocklist_v6.remove(123_456);
    changed
        .blocklist_v6
        .push(Ipv6Net::new("2a00:1450::".parse().expect("literal"), 48).expect("valid"));
    changed.blocklist_v6 = policy::merge_v6(changed.blocklist_v6);
    let before = f.entries_written();
    let t = Instant::now();
    f.apply(&changed).map_err(err)?;
    let diff_ms = t.elapsed().as_secs_f64() * 1e3;
    let diff_entries = f.entries_written() - before;
    eprintln!(
        "v6 scale: 1M /48s: first load {load_s:.2}s, {load_entries} entries written; \
         one-prefix change {diff_ms:.1}ms, {diff_entries} entries written"
    );
    let removed = Frame::ipv6(
        Ipv6Addr::from((0x2001_0db8_0000u128 + 2 * 123_456) << 80 | 1),
        "2001:db8::1".parse().expect("literal"),
    )
    .udp(5353, 53)
    .build();
    let added = Frame::ipv6(
        "2a00:1450::1".parse().expect("literal"),
        "2001:db8::1".parse().expect("literal"),
    )
    .udp(5353, 53)
    .build();
    let kept = Frame::ipv6(
        Ipv6Addr::from((0x2001_0db8_0000u128 + 2 * 777) << 80 | 9),
        "2001:db8::1".parse().expect("literal"),
    )
    .udp(5353, 53)
    .build();
    let result = (|| {
        // Removing one /48 and adding one: at most a word each, their
        // buckets and the spill runs behind them (≤ 9 buckets each).
        if diff_entries > 24 {
            return Err(format!(
                "a one-prefix change wrote {diff_entries} entries (load wrote {load_entries})"
            ));
        }
        expect(h, &removed, Verdict::Pass, Reason::Unmatched, RULE_GLOBAL)?;
        expect(h, &added, Verdict::Drop, Reason::Blocklist, RULE_GLOBAL)?;
        expect(h, &kept, Verdict::Drop, Reason::Blocklist, RULE_GLOBAL)
    })();
    let empty = compile("version = 1\n")?;
    h.filter().apply(&empty).map_err(err)?;
    h.filter().apply(&empty).map_err(err)?;
    result
}
