//! Checks of the loader against the kernel: slot images round-trip, a failed
//! write leaves the enforcing policy alone, sampled events are off unless asked
//! for and then bounded by the token bucket, and the blocklist holds 1M IPv4 +
//! 100k IPv6 prefixes.
use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    hash::Hash,
    io::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use filter_common::{
    slot_of, Event, Reason, Verdict, EVENT_IPV4, EVENT_IPV6, MAP_EVENTS, MAP_EVENTS_CFG,
    MAP_EVENTS_STATE, RULE_GLOBAL,
};
use filter_user::{
    events::{record::decode, EventsMaps, Mode, Sampling, Stats},
    loader::{Filter, ImageOptions, LoadOptions, SlotImage},
    policy::{self, CompiledPolicy},
};
use ipnet::Ipv6Net;
use rand::{rngs::SmallRng, Rng, SeedableRng};

use crate::{
    gen,
    harness::{Harness, HarnessError, Observed},
    packet::{ExtHeader, Frame},
};

type Check = fn(&mut Harness) -> Result<(), String>;

/// Runs every check; returns (passed, failed).
pub fn run(h: &mut Harness, scale: bool) -> Result<(u64, u64), HarnessError> {
    let mut checks: Vec<(&str, Check)> = vec![
        ("slot_writer_round_trips_random_policies", slot_round_trip),
        (
            "quota_settings_round_trip_and_a_reload_rewrites_them",
            quota_round_trip,
        ),
        (
            "failed_write_keeps_old_policy_enforcing",
            failed_write_keeps_old_policy,
        ),
        ("events_are_off_unless_asked_for", events_off_by_default),
        (
            "events_token_bucket_bounds_a_burst_and_names_the_packet",
            events_bucket_bounds_a_burst,
        ),
        (
            "events_read_ipv6_behind_vlan_and_extension_header",
            events_name_ipv6_behind_vlan_and_extension_header,
        ),
        (
            "fault_at_every_apply_step_leaves_old_or_new_policy",
            crate::apply_faults::fault_at_every_step_leaves_old_or_new,
        ),
        (
            "oversized_meta_record_changes_nothing",
            crate::apply_faults::oversized_meta_changes_nothing,
        ),
        (
            "v6_blocklist_diffs_read_back_as_fresh_builds",
            crate::loader_v6::diffs_read_back_as_fresh_builds,
        ),
        (
            "v6_list_over_table_capacity_is_refused_before_any_write",
            crate::loader_v6::oversized_list_is_refused_before_any_write,
        ),
        (
            "bl4_group_of_64_partial_nets24_and_edges",
            crate::bl4_checks::group_of_64_partial_nets,
        ),
        (
            "reject_budget_bounds_replies_per_cpu",
            crate::fixtures_reject::budget,
        ),
    ];
    if scale {
        checks.push((
            "bl4_one_line_change_at_1m_writes_o1_entries",
            crate::bl4_checks::one_line_change_at_1m_writes_o1_entries,
        ));
        checks.push((
            "one_prefix_change_on_1m_v6_list_writes_o1_entries",
            crate::loader_v6::one_prefix_change_on_1m_list,
        ));
        checks.push((
            "blocklist_holds_1m_v4_and_100k_v6_prefixes",
            million_prefixes,
        ));
    }
    let (mut passed, mut failed) = (0, 0);
    for (name, check) in checks {
        let started = Instant::now();
        match check(h) {
            Ok(()) => {
                passed += 1;
                eprintln!(
                    "loader check {name}: ok ({:.2}s)",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                failed += 1;
                println!("FAIL loader check {name}: {e}");
            }
        }
    }
    Ok((passed, failed))
}

pub(crate) fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub(crate) fn expect(
    h: &mut Harness,
    frame: &[u8],
    verdict: Verdict,
    reason: Reason,
    rule: u32,
) -> Result<(), String> {
    let want = Observed {
        verdict,
        reason,
        rule,
    };
    match h.check(frame, want).map_err(err)? {
        None => Ok(()),
        Some(got) => Err(format!("expected {want}, got {got}")),
    }
}

pub(crate) fn compile(toml: &str) -> Result<CompiledPolicy, String> {
    policy::compile_str(toml, Path::new("check.toml")).map_err(err)
}

/// After each apply the active slot holds exactly the new image and the other
/// slot still holds the previous one: the writer never touches the live slot.
fn slot_round_trip(h: &mut Harness) -> Result<(), String> {
    let mut rng = SmallRng::seed_from_u64(0x5107);
    let mut previous: Option<SlotImage> = None;
    for i in 0..12 {
        let spec = gen::random_policy(&mut rng);
        let compiled = compile(&spec.to_toml())?;
        // One clock for both: scheduled zones' transitions start from it.
        let opts = ImageOptions::default();
        let image = SlotImage::build(&compiled, opts).map_err(err)?;
        let f = h.filter();
        let meta = f.meta().map_err(err)?;
        f.apply_with_options(&compiled, &meta, opts).map_err(err)?;
        let active = slot_of(f.generation());
        let held = f.read_slot(active).map_err(err)?;
        if held != image {
            return Err(format!(
                "policy {i}: active slot differs from its image: {}\n{}",
                differences(&held, &image),
                spec.to_toml()
            ));
        }
        if let Some(prev) = previous.take() {
            if f.read_slot(1 - active).map_err(err)? != prev {
                return Err(format!("policy {i}: the previous slot was modified"));
            }
        }
        previous = Some(image);
    }
    // Pre-filling copies the enforced policy into the standby slot, unflipped.
    let f = h.filter();
    let generation = f.generation();
    if !f.prefill_standby().map_err(err)? {
        return Err("prefill_standby did nothing after a policy change".into());
    }
    let active = slot_of(generation);
    if f.generation() != generation
        || f.read_slot(1 - active).map_err(err)? != f.read_slot(active).map_err(err)?
    {
        return Err("prefill_standby flipped or left the standby slot different".into());
    }
    if f.prefill_standby().map_err(err)? {
        return Err("a second prefill_standby wrote again".into());
    }
    Ok(())
}

/// Which parts of two slot images differ, for failure messages.
pub(crate) fn differences(held: &SlotImage, want: &SlotImage) -> String {
    let mut out = String::new();
    if held.config != want.config {
        let _ = write!(out, "config {:?} vs {:?}; ", held.config, want.config);
    }
    diff_sets(&mut out, "allow4", &held.allow4, &want.allow4);
    diff_sets(&mut out, "allow6", &held.allow6, &want.allow6);
    if held.bl6.info != want.bl6.info {
        let _ = write!(out, "bl6 info {:?} vs {:?}; ", held.bl6.info, want.bl6.info);
    }
    diff_maps(&mut out, "bl6_words", &held.bl6.words, &want.bl6.words);
    diff_maps(&mut out, "bl6_table", &held.bl6.table, &want.bl6.table);
    for (l, (held, want)) in held.lane6.iter().zip(&want.lane6).enumerate() {
        if held.info != want.info {
            let _ = write!(
                out,
                "lane6 {} info {:?} vs {:?}; ",
                l + 1,
                held.info,
                want.info
            );
        }
        diff_maps(
            &mut out,
            &format!("lane6 {} words", l + 1),
            &held.words,
            &want.words,
        );
        diff_maps(
            &mut out,
            &format!("lane6 {} table", l + 1),
            &held.table,
            &want.table,
        );
    }
    diff_maps(&mut out, "ports", &held.ports, &want.ports);
    diff_maps(&mut out, "bl4_words", &held.bl4_words, &want.bl4_words);
    diff_maps(&mut out, "bl4_hosts", &held.bl4_hosts, &want.bl4_hosts);
    let zones = |z: &std::collections::BTreeMap<u32, _>| z.clone().into_iter().collect();
    diff_maps(&mut out, "zones", &zones(&held.zones), &zones(&want.zones));
    let sched = |z: &std::collections::BTreeMap<u32, _>| z.clone().into_iter().collect();
    diff_maps(&mut out, "sched", &sched(&held.sched), &sched(&want.sched));
    let rates = |z: &std::collections::BTreeMap<u32, _>| z.clone().into_iter().collect();
    diff_maps(&mut out, "rates", &rates(&held.rates), &rates(&want.rates));
    let quotas = |z: &std::collections::BTreeMap<u32, _>| z.clone().into_iter().collect();
    diff_maps(
        &mut out,
        "quotas",
        &quotas(&held.quotas),
        &quotas(&want.quotas),
    );
    out
}

const QUOTAS: &str = "version = 1\n\
    [[zone]]\nname = \"monthly\"\nports = [\"7100/tcp\"]\nallow = [\"any\"]\n\
    quota = { bytes = \"5 TB\", period = \"month\", per = \"zone\" }\n\
    [[zone]]\nname = \"plain\"\nports = [\"7101/tcp\"]\nallow = [\"any\"]\n\
    [[zone]]\nname = \"hourly\"\nports = [\"7102/udp\"]\nallow = [\"any\"]\n\
    quota = { bytes = \"1.5 GiB\", period = \"hour\", direction = \"upload\", per = [\"/24\", \"/64\"] }\n";

/// Applies `p` with the image built at `now` (TAI offset 37 s); the active
/// slot must read back as that image, which is returned.
fn apply_at(h: &mut Harness, p: &CompiledPolicy, now: &str) -> Result<SlotImage, String> {
    let opts = ImageOptions {
        clock: policy::schedule::SchedClock {
            now: now.parse().map_err(err)?,
            kernel_offset_ns: 37_000_000_000,
        },
    };
    let image = SlotImage::build(p, opts).map_err(err)?;
    let f = h.filter();
    let meta = f.meta().map_err(err)?;
    f.apply_with_options(p, &meta, opts).map_err(err)?;
    let held = f.read_slot(slot_of(f.generation())).map_err(err)?;
    if held != image {
        return Err(format!(
            "active slot differs from its image at {now}: {}",
            differences(&held, &image)
        ));
    }
    Ok(image)
}

/// `QUOTAS` is part of the slot: written with it, read back, rewritten by a
/// reload when the period moved on, and cleared (all zero) for zones that
/// lose their quota, while the other slot keeps what it had.
fn quota_round_trip(h: &mut Harness) -> Result<(), String> {
    let p = compile(QUOTAS)?;
    let dec = apply_at(h, &p, "2026-12-31T23:59:00Z")?;
    let flagged = |img: &SlotImage| -> Vec<u32> {
        img.zones
            .iter()
            .filter(|(_, z)| z.flags & filter_common::ZoneInfo::QUOTA != 0)
            .map(|(id, _)| *id)
            .collect()
    };
    if dec.quotas.keys().copied().collect::<Vec<_>>() != vec![1, 3] || flagged(&dec) != [1, 3] {
        return Err(format!(
            "quota zones 1 and 3 expected, image has {:?} (flags {:?})",
            dec.quotas.keys().collect::<Vec<_>>(),
            flagged(&dec)
        ));
    }
    // The same policy a minute later: a new month, a new hour.
    let jan = apply_at(h, &p, "2027-01-01T00:00:30Z")?;
    if jan.quotas[&1].first != dec.quotas[&1].first + 1
        || jan.quotas[&1].next[0] != dec.quotas[&1].next[1]
        || jan.quotas[&3].first != dec.quotas[&3].first + 1
    {
        return Err("a reload in the next period kept the old period".into());
    }
    // Without quotas: the entries are gone, the previous slot keeps them.
    let none = compile(&QUOTAS.replace("quota = {", "# quota = {"))?;
    let cleared = apply_at(h, &none, "2027-01-01T00:01:00Z")?;
    if !cleared.quotas.is_empty() || !flagged(&cleared).is_empty() {
        return Err("a policy without quotas left quota entries".into());
    }
    let f = h.filter();
    if f.read_slot(1 - slot_of(f.generation())).map_err(err)? != jan {
        return Err("the previous slot lost its quota entries".into());
    }
    // On the host's clocks, the datapath reads the period written: a quota
    // of one byte admits the first frame and refuses the next.
    let one = compile(
        "version = 1\n[[zone]]\nname = \"loader-check-one-byte\"\nports = [\"7200/tcp\"]\n\
         allow = [\"any\"]\nquota = { bytes = 1, period = \"day\" }\n",
    )?;
    h.filter().apply(&one).map_err(err)?;
    let frame = Frame::ipv4(Ipv4Addr::new(192, 0, 2, 77), Ipv4Addr::new(10, 9, 9, 9))
        .tcp(40000, 7200)
        .build();
    expect(h, &frame, Verdict::Pass, Reason::Allowed, 1)?;
    expect(h, &frame, Verdict::Drop, Reason::QuotaExceeded, 1)?;
    Ok(())
}

/// Up to 5 entries only the kernel holds and 5 only the image wants.
fn diff_sets<T: std::fmt::Debug + Eq + Hash>(
    out: &mut String,
    name: &str,
    held: &HashSet<T>,
    want: &HashSet<T>,
) {
    if held != want {
        let only = |a: &HashSet<T>, b: &HashSet<T>| {
            a.difference(b)
                .take(5)
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
        };
        let _ = write!(
            out,
            "{name} held-only {:?} wanted-only {:?}; ",
            only(held, want),
            only(want, held)
        );
    }
}

fn diff_maps<V: std::fmt::Debug + PartialEq>(
    out: &mut String,
    name: &str,
    held: &HashMap<u32, V>,
    want: &HashMap<u32, V>,
) {
    if held != want {
        let only = |a: &HashMap<u32, V>, b: &HashMap<u32, V>| {
            a.iter()
                .filter(|(k, v)| b.get(*k) != Some(*v))
                .take(5)
                .map(|e| format!("{e:?}"))
                .collect::<Vec<_>>()
        };
        let _ = write!(
            out,
            "{name} held-only {:?} wanted-only {:?}; ",
            only(held, want),
            only(want, held)
        );
    }
}

const GUARDED: &str =
    "version = 1\n[[zone]]\nname = \"guarded\"\nports = [\"7000/tcp\"]\nallow = [\"10.0.0.0/8\"]\n";

fn failed_write_keeps_old_policy(h: &mut Harness) -> Result<(), String> {
    let frame = Frame::ipv4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(10, 9, 9, 9))
        .tcp(40000, 7000)
        .build();
    let guarded = compile(GUARDED)?;
    h.filter().apply(&guarded).map_err(err)?;
    expect(h, &frame, Verdict::Drop, Reason::NotAllowed, 1)?;

    // More IPv6 allow prefixes than ALLOW6 can hold: the write fails part-way.
    let mut too_big = guarded.clone();
    too_big.zones[0].allow_v6 = (0..300_000u32)
        .map(|i| {
            // Every other /64, so no two can merge.
            let n = i << 1;
            let addr = Ipv6Addr::new(0x2001, 0xdb8, (n >> 16) as u16, n as u16, 0, 0, 0, 0);
            Ipv6Net::new(addr, 64).expect("valid /64")
        })
        .collect();
    let before = h.filter().generation();
    if h.filter().apply(&too_big).is_ok() {
        return Err("a policy larger than the maps was accepted".into());
    }
    if h.filter().generation() != before {
        return Err("a failed write flipped the generation".into());
    }
    expect(h, &frame, Verdict::Drop, Reason::NotAllowed, 1)?;

    // The half-written slot is recovered on the next apply.
    let open = compile(&GUARDED.replace("10.0.0.0/8", "any"))?;
    h.filter().apply(&open).map_err(err)?;
    expect(h, &frame, Verdict::Pass, Reason::Allowed, 1)?;
    let f = h.filter();
    let image = SlotImage::build(&open, ImageOptions::default()).map_err(err)?;
    if f.read_slot(slot_of(f.generation())).map_err(err)? != image {
        return Err("recovered slot differs from its image".into());
    }
    Ok(())
}

// --- sampled events ---------------------------------------------------------

/// A filter without pins, `GUARDED` applied, with handles on its event maps.
fn events_filter() -> Result<(Filter, RingBuf<MapData>, EventsMaps), String> {
    let mut f = Filter::load(LoadOptions {
        quiesce: Duration::ZERO,
        ..LoadOptions::default()
    })
    .map_err(err)?;
    f.apply(&compile(GUARDED)?).map_err(err)?;
    let take = |f: &mut Filter, name: &'static str| {
        f.take_map(name)
            .ok_or(format!("no map {name} in the object"))
    };
    let ring = RingBuf::try_from(take(&mut f, MAP_EVENTS)?).map_err(err)?;
    let cfg = take(&mut f, MAP_EVENTS_CFG)?;
    let state = take(&mut f, MAP_EVENTS_STATE)?;
    let maps = EventsMaps::from_maps(cfg, state).map_err(err)?;
    Ok((f, ring, maps))
}

fn drain(ring: &mut RingBuf<MapData>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(e) = decode(&item) {
            out.push(e);
        }
        if out.len() > 100_000 {
            break;
        }
    }
    out
}

/// Not allowed into zone 1 (`guarded`): dropped.
fn outsider_frame() -> Vec<u8> {
    Frame::ipv4(Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(10, 9, 9, 9))
        .tcp(40000, 7000)
        .build()
}

fn insider_frame() -> Vec<u8> {
    Frame::ipv4(Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(10, 9, 9, 9))
        .tcp(40001, 7000)
        .build()
}

fn events_off_by_default(_: &mut Harness) -> Result<(), String> {
    let (f, mut ring, maps) = events_filter()?;
    // A figure, not an assertion: how much the verifier walked (kernels
    // before 6.x prune less, and stop at 1M).
    for (name, n) in f.verified_instructions() {
        if let Some(n) = n {
            eprintln!("verifier: {name} took {n} instructions to verify");
        }
    }
    f.time_run(&outsider_frame(), 10).map_err(err)?;
    f.time_run(&insider_frame(), 10).map_err(err)?;
    let got = drain(&mut ring);
    let stats = maps.stats().map_err(err)?;
    if !got.is_empty() || stats != Stats::default() {
        return Err(format!(
            "sampling off, yet {} events and {stats:?}",
            got.len()
        ));
    }
    Ok(())
}

fn sampling(sample: Mode, rate: u32, burst: u32) -> Sampling {
    Sampling {
        sample,
        rate,
        burst,
        log: false,
        runtime_override: true,
    }
}

/// 1/s with a burst of 3: one run of 100 drops (on one CPU, within far less
/// than a second) yields exactly 3 events, each naming the packet; passes
/// are not sampled in `drops` mode.
fn events_bucket_bounds_a_burst(_: &mut Harness) -> Result<(), String> {
    let (f, mut ring, mut maps) = events_filter()?;
    maps.set(&sampling(Mode::Drops, 1, 3)).map_err(err)?;
    f.time_run(&outsider_frame(), 100).map_err(err)?;
    f.time_run(&insider_frame(), 10).map_err(err)?;
    let got = drain(&mut ring);
    let stats = maps.stats().map_err(err)?;
    let want = Stats {
        emitted: 3,
        suppressed: 97,
        lost: 0,
    };
    if got.len() != 3 || stats != want {
        return Err(format!(
            "100 drops at burst 3: {} events, {stats:?} (want 3 and {want:?})",
            got.len()
        ));
    }
    let e = &got[0];
    let fields = (
        e.family,
        &e.src[..4],
        &e.dst[..4],
        e.proto,
        e.sport,
        e.dport,
        e.reason,
        e.verdict,
        e.rule,
    );
    let want = (
        EVENT_IPV4,
        &[192u8, 0, 2, 1][..],
        &[10u8, 9, 9, 9][..],
        6u8,
        40000u16,
        7000u16,
        Reason::NotAllowed as u8,
        Verdict::Drop as u8,
        1u32,
    );
    if fields != want {
        return Err(format!("event {fields:?}, want {want:?}"));
    }
    if e.len as usize != outsider_frame().len() || e.ts_ns == 0 {
        return Err(format!("event length {} / time {}", e.len, e.ts_ns));
    }
    // Off again: nothing more.
    maps.set(&sampling(Mode::Off, 1, 3)).map_err(err)?;
    f.time_run(&outsider_frame(), 10).map_err(err)?;
    if !drain(&mut ring).is_empty() {
        return Err("events after sampling was switched off".into());
    }
    Ok(())
}

/// `all` samples passes too; addresses and ports are read at the offsets
/// the parser found (a VLAN tag and an IPv6 extension header in front).
fn events_name_ipv6_behind_vlan_and_extension_header(_: &mut Harness) -> Result<(), String> {
    let (f, mut ring, mut maps) = events_filter()?;
    maps.set(&sampling(Mode::All, 1_000_000, 1_000_000))
        .map_err(err)?;
    let src: Ipv6Addr = "2001:db8:5::7".parse().map_err(err)?;
    let dst: Ipv6Addr = "2001:db8:1::1".parse().map_err(err)?;
    let frame = Frame::ipv6(src, dst)
        .vlan(0x8100, 100)
        .ext(ExtHeader::DestOpts { len_units: 1 })
        .udp(5353, 53)
        .build();
    f.time_run(&frame, 1).map_err(err)?;
    let got = drain(&mut ring);
    let [e] = got.as_slice() else {
        return Err(format!("{} events for one frame", got.len()));
    };
    let fields = (
        e.family, e.src, e.dst, e.proto, e.sport, e.dport, e.reason, e.verdict,
    );
    let want = (
        EVENT_IPV6,
        src.octets(),
        dst.octets(),
        17u8,
        5353u16,
        53u16,
        Reason::Unmatched as u8,
        Verdict::Pass as u8,
    );
    if fields != want {
        return Err(format!("event {fields:?}, want {want:?}"));
    }
    Ok(())
}

// --- scale ------------------------------------------------------------------

const V4_PREFIXES: usize = 1_000_000;
const V6_PREFIXES: usize = 100_000;
const PROBES: usize = 20_000;
/// 100.64.0.0
const NETS_BASE: u32 = 100 << 24 | 64 << 16;

/// 1M IPv4 + 100k IPv6 prefixes from a list file, through the real compiler and
/// loader; random probes inside and outside agree with a plain set lookup.
fn million_prefixes(h: &mut Harness) -> Result<(), String> {
    let mut rng = SmallRng::seed_from_u64(0xb10c);
    // Even /32s never merge with each other; the /24s (every other one, so they
    // cannot merge either) live in 100.64.0.0/10, which the /32s avoid: every
    // prefix survives merging.
    let mut hosts = HashSet::with_capacity(V4_PREFIXES);
    while hosts.len() < V4_PREFIXES - 1000 {
        let a: u32 = rng.gen::<u32>() & !1;
        if a >> 22 != (100 << 2 | 1) {
            hosts.insert(a);
        }
    }
    let host_list: Vec<u32> = hosts.iter().copied().collect();
    let nets24: Vec<u32> = (0..1000u32).map(|i| NETS_BASE + (i << 9)).collect();
    let in_nets24 = |a: u32| {
        let off = a.wrapping_sub(NETS_BASE);
        off < 1000 << 9 && (off >> 8).is_multiple_of(2)
    };
    let v6: Vec<u64> = (0..V6_PREFIXES as u64)
        .map(|i| 0x2001_0db8_0000 + 2 * i)
        .collect();

    let dir = std::env::temp_dir().join(format!("portcullis-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(err)?;
    let result = (|| {
        let list = dir.join("big.netset");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&list).map_err(err)?);
        for a in &hosts {
            writeln!(out, "{}", Ipv4Addr::from(*a)).map_err(err)?;
        }
        for n in &nets24 {
            writeln!(out, "{}/24", Ipv4Addr::from(*n)).map_err(err)?;
        }
        for p in &v6 {
            let addr = Ipv6Addr::from((*p as u128) << 80);
            writeln!(out, "{addr}/48").map_err(err)?;
        }
        out.flush().map_err(err)?;
        drop(out);
        let policy_path = dir.join("policy.toml");
        std::fs::write(
            &policy_path,
            "version = 1\n[blocklist]\nfiles = [\"big.netset\"]\n",
        )
        .map_err(err)?;

        let t = Instant::now();
        let compiled = policy::load(&policy_path).map_err(err)?;
        let compile_s = t.elapsed().as_secs_f64();
        let n4 = compiled.blocklist_v4.len();
        let n6 = compiled.blocklist_v6.len();
        if n4 != V4_PREFIXES || n6 != V6_PREFIXES {
            return Err(format!("compiled {n4} v4 / {n6} v6 prefixes"));
        }
        let t = Instant::now();
        h.filter().apply(&compiled).map_err(err)?;
        eprintln!(
            "scale: {n4} v4 + {n6} v6 prefixes: compile {compile_s:.2}s, write {:.2}s",
            t.elapsed().as_secs_f64()
        );

        let mut report = String::new();
        for i in 0..PROBES {
            let (frame, blocked) = match i % 4 {
                0 => (v4_frame(host_list[rng.gen_range(0..host_list.len())]), true),
                1 => {
                    // Random sources, plus sources in and between the /24s.
                    let a: u32 = if i % 8 == 1 {
                        rng.gen()
                    } else {
                        NETS_BASE + rng.gen_range(0..1000u32 << 9)
                    };
                    (v4_frame(a), hosts.contains(&a) || in_nets24(a))
                }
                2 => {
                    let p = v6[rng.gen_range(0..v6.len())];
                    let addr = Ipv6Addr::from(((p as u128) << 80) | rng.gen_range(0..1u128 << 80));
                    (v6_frame(addr), true)
                }
                _ => {
                    let p = 0x2001_0db8_0000u64 + 2 * rng.gen_range(0..V6_PREFIXES as u64) + 1;
                    (v6_frame(Ipv6Addr::from((p as u128) << 80)), false)
                }
            };
            let (verdict, reason) = if blocked {
                (Verdict::Drop, Reason::Blocklist)
            } else {
                (Verdict::Pass, Reason::Unmatched)
            };
            if let Err(e) = expect(h, &frame, verdict, reason, RULE_GLOBAL) {
                let _ = writeln!(report, "probe {i}: {e}");
                if report.len() > 2000 {
                    break;
                }
            }
        }
        report_cost(h, &compiled, &host_list)?;

        // Clear both slots so later checks run on small maps.
        let empty = compile("version = 1\n")?;
        h.filter().apply(&empty).map_err(err)?;
        h.filter().apply(&empty).map_err(err)?;
        if report.is_empty() {
            Ok(())
        } else {
            Err(report)
        }
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Prints the per-packet cost of lookups at 1M IPv4 prefixes and at 1k (both
/// with the same 100k IPv6 prefixes): a figure for docs/architecture.md, not an
/// assertion (timings do not belong in pass/fail tests).
fn report_cost(h: &mut Harness, big: &CompiledPolicy, host_list: &[u32]) -> Result<(), String> {
    let listed = host_list[0];
    let partial_miss = host_list[1] + 1; // hosts are even: +1 is unlisted, same /24
    let frames = [
        ("v4 listed host (word, base, bits)", v4_frame(listed)),
        ("v4 in a listed /24 (bitmap)", v4_frame(NETS_BASE + 5)),
        ("v4 unlisted, partial /24", v4_frame(partial_miss)),
        (
            "v4 unlisted, empty /24",
            v4_frame(u32::from(Ipv4Addr::new(100, 127, 255, 1))),
        ),
        (
            "v6 listed /48 (bitmap + table)",
            v6_frame(Ipv6Addr::from(0x2001_0db8_0000u128 << 80)),
        ),
        (
            "v6 unlisted, listed /24 (table)",
            v6_frame(Ipv6Addr::from(0x2001_0db8_0001u128 << 80)),
        ),
    ];
    let measure = |h: &mut Harness| -> Result<Vec<f64>, String> {
        frames
            .iter()
            .map(|(_, f)| {
                let mut runs = (0..5)
                    .map(|_| h.time(f, 100_000).map(|d| d.as_nanos() as f64))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?;
                runs.sort_by(f64::total_cmp);
                Ok(runs[2])
            })
            .collect()
    };
    let at_1m = measure(h)?;
    // 1k IPv4 prefixes that still contain the probes' prefixes.
    let mut small = big.clone();
    let keep: Vec<_> = big
        .blocklist_v4
        .iter()
        .filter(|n| {
            let a = u32::from(n.network());
            a == listed || a == host_list[1] || a == NETS_BASE
        })
        .chain(big.blocklist_v4.iter().step_by(1000))
        .copied()
        .take(1000)
        .collect();
    small.blocklist_v4 = policy::merge_v4(keep);
    h.filter().apply(&small).map_err(err)?;
    let at_1k = measure(h)?;
    eprintln!(
        "blocklist lookup cost (ns/packet, BPF_PROG_TEST_RUN, median of 5 x 100k), {} vs {} IPv4 prefixes:",
        big.blocklist_v4.len(),
        small.blocklist_v4.len()
    );
    for (((name, _), big_ns), small_ns) in frames.iter().zip(&at_1m).zip(&at_1k) {
        eprintln!(
            "  {name:34} 1M {big_ns:6.1}  1k {small_ns:6.1}  growth {:.2}",
            big_ns / small_ns
        );
    }
    Ok(())
}

fn v4_frame(src: u32) -> Vec<u8> {
    Frame::ipv4(Ipv4Addr::from(src), Ipv4Addr::new(192, 0, 2, 1))
        .udp(5353, 53)
        .build()
}

fn v6_frame(src: Ipv6Addr) -> Vec<u8> {
    Frame::ipv6(src, "2001:db8::1".parse().expect("valid"))
        .udp(5353, 53)
        .build()
}
