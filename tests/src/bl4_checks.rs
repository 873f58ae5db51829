//! Checks of the IPv4 blocklist layout against the kernel (BL4_WORDS →
//! BL4_BASE → BL4_BITS): a group whose 64 /24s are all partly listed, hosts
//! at the edges of every /24 and at group boundaries, through a sequence of
//! diffs; and at 1M prefixes, that a one-line change writes a handful of map
//! entries, not the array.
use std::{collections::HashSet, net::Ipv4Addr, path::Path, time::Instant};

use filter_common::{
    bl4_bits_region, slot_of, Reason, Verdict, BL4_WORDS_PER_SLOT, DEFAULT_BL4_BITS_MAX,
    RULE_GLOBAL,
};
use filter_user::{
    loader::{ImageOptions, SlotImage},
    policy::{self, CompiledPolicy},
};
use ipnet::Ipv4Net;
use rand::{rngs::SmallRng, Rng, SeedableRng};

use crate::{
    harness::{Harness, Observed},
    packet::Frame,
};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn policy_with(list: &[Ipv4Net]) -> Result<CompiledPolicy, String> {
    let mut p = policy::compile_str("version = 1\n", Path::new("bl4.toml")).map_err(err)?;
    p.blocklist_v4 = policy::merge_v4(list.to_vec());
    Ok(p)
}

fn frame(src: Ipv4Addr) -> Vec<u8> {
    Frame::ipv4(src, Ipv4Addr::new(192, 0, 2, 1))
        .udp(5353, 53)
        .build()
}

/// Runs `src` and checks it is dropped by the blocklist iff `listed`.
fn probe(h: &mut Harness, src: Ipv4Addr, listed: bool) -> Result<(), String> {
    let want = if listed {
        Observed {
            verdict: Verdict::Drop,
            reason: Reason::Blocklist,
            rule: RULE_GLOBAL,
        }
    } else {
        Observed {
            verdict: Verdict::Pass,
            reason: Reason::Unmatched,
            rule: RULE_GLOBAL,
        }
    };
    match h.check(&frame(src), want).map_err(err)? {
        None => Ok(()),
        Some(got) => Err(format!("{src}: expected {want}, got {got}")),
    }
}

fn nets(s: &[String]) -> Vec<Ipv4Net> {
    s.iter().map(|n| n.parse().expect("literal")).collect()
}

/// Hosts .0 and .255 of every /24 of 10.0.64.0 – 10.0.127.0 (one group of
/// 64 /24s), the last host of the group before and the first of the group
/// after.
fn edges() -> Vec<String> {
    let mut v: Vec<String> = (64..128)
        .flat_map(|i| [format!("10.0.{i}.0/32"), format!("10.0.{i}.255/32")])
        .collect();
    v.push("10.0.63.255/32".into());
    v.push("10.0.128.0/32".into());
    v
}

/// A sequence of lists that grows, shrinks, refills and empties the group's
/// block; each apply diffs the slot from the list two steps back.
pub fn group_of_64_partial_nets(h: &mut Harness) -> Result<(), String> {
    let full = edges();
    let without_100: Vec<String> = full
        .iter()
        .filter(|n| !n.starts_with("10.0.100."))
        .cloned()
        .collect();
    let mut in_place = without_100.clone();
    in_place.push("10.0.127.128/32".into());
    in_place.push("10.0.100.0/24".into());
    let mut halves = full.clone();
    halves.push("10.0.64.0/25".into());
    halves.push("10.0.127.128/25".into());
    let whole_group = vec![
        "10.0.64.0/18".to_string(),
        "10.0.63.255/32".into(),
        "10.0.128.0/32".into(),
    ];
    let sequence = [
        ("64 partial /24s", full.clone()),
        ("63 partial /24s", without_100),
        ("in place and a whole /24", in_place),
        ("back to 64", full.clone()),
        ("halves", halves),
        ("the group listed whole", whole_group),
        ("64 again", full),
        ("empty", Vec::new()),
    ];
    for (name, list) in &sequence {
        let list = nets(list);
        let p = policy_with(&list)?;
        h.filter().apply(&p).map_err(err)?;
        for third in 62..=129u8 {
            for host in [0u8, 1, 127, 128, 254, 255] {
                let a = Ipv4Addr::new(10, 0, third, host);
                let listed = list.iter().any(|n| n.contains(&a));
                probe(h, a, listed).map_err(|e| format!("{name}: {e}"))?;
            }
        }
        let f = h.filter();
        let image = SlotImage::build(&p, ImageOptions::default()).map_err(err)?;
        if f.read_slot(slot_of(f.generation())).map_err(err)? != image {
            return Err(format!("{name}: the active slot is not its image"));
        }
    }
    Ok(())
}

const PREFIXES: usize = 1_000_000;

/// 1M listed /32s (even addresses, so none merge): 900k spread over the
/// whole space (~1 per /24), 100k in 20.0.0.0/8 (every group's 64 /24s
/// partly listed). Loads, then one-line changes write O(1) entries (counted
/// by the writer, not timed). Prints the figures.
pub fn one_line_change_at_1m_writes_o1_entries(h: &mut Harness) -> Result<(), String> {
    let mut rng = SmallRng::seed_from_u64(0x0b14);
    let mut set = HashSet::with_capacity(PREFIXES);
    while set.len() < PREFIXES {
        let a = if set.len() < PREFIXES / 10 {
            rng.gen::<u32>() & 0x00ff_fffe | 20 << 24
        } else {
            rng.gen::<u32>() & !1
        };
        set.insert(a);
    }
    let mut addrs: Vec<u32> = set.into_iter().collect();
    addrs.sort_unstable();
    let list: Vec<Ipv4Net> = addrs
        .iter()
        .map(|a| Ipv4Net::new(Ipv4Addr::from(*a), 32).expect("valid /32"))
        .collect();
    let big = policy_with(&list)?;
    let f = h.filter();
    let before = f.entries_written();
    let t = Instant::now();
    f.apply(&big).map_err(err)?;
    let load = t.elapsed();
    let load_entries = f.entries_written() - before;
    let t = Instant::now();
    f.prefill_standby().map_err(err)?;
    let prefill = t.elapsed();

    // A new /32 in a /24 that is already partly listed (in place), then one
    // in a /24 with nothing listed (a new block for its group).
    let mut steps: Vec<(&str, u32)> = Vec::new();
    let same24 = addrs[PREFIXES / 2] + 1;
    steps.push(("/32 in a partly listed /24", same24));
    let gap = (1000..addrs.len() - 1)
        .find(|i| addrs[i + 1] >> 8 > (addrs[*i] >> 8) + 1)
        .ok_or("no empty /24 in the list")?;
    let fresh24 = ((addrs[gap] >> 8) + 1) << 8 | 7;
    steps.push(("/32 in an empty /24", fresh24));
    let mut current = list;
    let mut report = Vec::new();
    for (what, a) in steps {
        current.push(Ipv4Net::new(Ipv4Addr::from(a), 32).expect("valid /32"));
        current.sort_unstable();
        let p = policy_with(&current)?;
        let f = h.filter();
        let before = f.entries_written();
        let t = Instant::now();
        f.apply(&p).map_err(err)?;
        let took = t.elapsed();
        let entries = f.entries_written() - before;
        report.push(format!(
            "{what}: {entries} entries, {:.1} ms",
            took.as_secs_f64() * 1e3
        ));
        // Config twice, META, ACTIVE, and at most a block of 64, its base
        // and its word.
        if entries > 4 + 66 {
            return Err(format!("{what}: {entries} entries written"));
        }
        probe(h, Ipv4Addr::from(a), true)?;
        probe(h, Ipv4Addr::from(a ^ 0x80), false)?;
    }
    probe(h, Ipv4Addr::from(addrs[7]), true)?;
    probe(h, Ipv4Addr::from(addrs[7] + 1), false)?;
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    let region = bl4_bits_region(DEFAULT_BL4_BITS_MAX) as u64;
    eprintln!(
        "bl4 scale: {PREFIXES} /32s: load {:.2}s ({load_entries} entries), prefill {:.2}s; {}; \
         kernel memory per slot: words {:.0} MiB + bases {:.0} MiB + host bitmaps {:.0} MiB",
        load.as_secs_f64(),
        prefill.as_secs_f64(),
        report.join("; "),
        mb(BL4_WORDS_PER_SLOT as u64 * 16),
        mb(BL4_WORDS_PER_SLOT as u64 * 8),
        mb(region * 32),
    );
    // Clear both slots so later checks run on small maps.
    let empty = policy_with(&[])?;
    h.filter().apply(&empty).map_err(err)?;
    h.filter().apply(&empty).map_err(err)?;
    Ok(())
}
