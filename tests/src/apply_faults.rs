//! Apply is all-or-nothing: a fault injected at every write step of an apply
//! (each batch, single-entry write, the META write and the flip) leaves the
//! kernel enforcing exactly the old policy or exactly the new one, and the
//! META record (what `status` reports) names the one that is enforced.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use filter_common::slot_of;
use filter_user::{
    loader::{Filter, ImageOptions, Meta, SlotImage},
    policy::{self, CompiledPolicy},
    status::Status,
};

use crate::{
    harness::{Harness, Observed},
    packet::Frame,
};

/// Differs from `B` in every map: defaults, ports, zones, both allowlists,
/// blocklisted /24s, listed hosts (host bitmaps), IPv6 blocklist, failsafe.
const A: &str = r#"version = 1
[defaults]
unmatched = "pass"
[blocklist]
cidrs = ["203.0.113.0/24", "198.51.100.7", "2001:db8:bad::/48"]
[[failsafe]]
ports = ["22/tcp"]
from = ["10.0.0.0/8"]
[[zone]]
name = "a-admin"
ports = ["8889/tcp"]
allow = ["10.20.0.0/16", "fd20::/48"]
[[zone]]
name = "a-api"
ports = ["8880/tcp"]
allow = ["any"]
"#;

const B: &str = r#"version = 1
[defaults]
unmatched = "drop"
[blocklist]
cidrs = ["192.0.2.0/24", "198.51.100.9", "2001:db8:beef::/48"]
[[failsafe]]
ports = ["2222/tcp"]
from = ["10.1.0.0/16"]
[[zone]]
name = "b-admin"
ports = ["8889/tcp", "9000/udp"]
allow = ["10.30.0.0/16", "fd30::/48"]
"#;

/// Frames whose verdicts tell A and B apart (and which part of each).
fn frames() -> Vec<Vec<u8>> {
    let v4 = |s: [u8; 4]| Frame::ipv4(Ipv4Addr::from(s), Ipv4Addr::new(10, 9, 9, 9));
    let v6 = |s: &str| {
        Frame::ipv6(
            s.parse::<Ipv6Addr>().expect("literal"),
            "fd00::1".parse().expect("literal"),
        )
    };
    vec![
        v4([10, 20, 1, 1]).tcp(40000, 8889).build(),
        v4([10, 30, 1, 1]).tcp(40000, 8889).build(),
        v4([198, 18, 0, 2]).tcp(40000, 8880).build(),
        v4([203, 0, 113, 5]).tcp(40000, 8880).build(),
        v4([192, 0, 2, 5]).tcp(40000, 8880).build(),
        v4([198, 51, 100, 7]).tcp(40000, 5000).build(),
        v4([198, 51, 100, 9]).tcp(40000, 5000).build(),
        v4([10, 1, 2, 3]).tcp(40000, 2222).build(),
        v4([10, 2, 2, 3]).tcp(40000, 22).build(),
        v4([10, 30, 1, 1]).udp(40000, 9000).build(),
        v6("fd20::5").tcp(40000, 8889).build(),
        v6("fd30::5").tcp(40000, 8889).build(),
        v6("2001:db8:bad::1").tcp(40000, 5000).build(),
        v6("2001:db8:beef::1").tcp(40000, 5000).build(),
    ]
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn compile(text: &str) -> Result<CompiledPolicy, String> {
    policy::compile_str(text, Path::new("faults.toml")).map_err(err)
}

fn meta_for(name: &str) -> Meta {
    Meta {
        policy_hash: name.to_string(),
        policy_path: format!("{name}.toml"),
        ..Meta::default()
    }
}

fn observe_all(h: &mut Harness, frames: &[Vec<u8>]) -> Result<Vec<Observed>, String> {
    frames.iter().map(|f| h.observe(f).map_err(err)).collect()
}

struct Known {
    name: &'static str,
    policy: CompiledPolicy,
    image: SlotImage,
    verdicts: Vec<Observed>,
}

/// Which of `a`, `b` the kernel enforces now, judged three ways that must
/// agree: the frames' verdicts, the active slot read back entry by entry,
/// and the META record as `status` reads it.
fn enforced<'k>(
    h: &mut Harness,
    frames: &[Vec<u8>],
    a: &'k Known,
    b: &'k Known,
    read_back: bool,
) -> Result<&'k Known, String> {
    let got = observe_all(h, frames)?;
    let by_frames = [a, b]
        .into_iter()
        .find(|k| k.verdicts == got)
        .ok_or_else(|| {
            let diff: Vec<String> = (0..got.len())
                .map(|i| {
                    format!(
                        "frame {i}: {} (A: {}, B: {})",
                        got[i], a.verdicts[i], b.verdicts[i]
                    )
                })
                .collect();
            format!("frames judged by neither policy:\n  {}", diff.join("\n  "))
        })?;
    let f = h.filter();
    let generation = f.kernel_generation().map_err(err)?;
    // Reading a slot back takes ~1 s (every array index is a syscall).
    if read_back && f.read_slot(slot_of(generation)).map_err(err)? != by_frames.image {
        return Err(format!(
            "the frames say {}, but the active slot is not exactly its image",
            by_frames.name
        ));
    }
    let meta = f.meta().map_err(err)?;
    let status = Status::new(None, "-", generation, &meta, Vec::new(), &[]);
    if !status.policy_known() || status.policy_hash != by_frames.name {
        return Err(format!(
            "{} is enforced, but status says {:?} (META generation {}, active {generation})",
            by_frames.name, status.policy_hash, status.meta_generation
        ));
    }
    Ok(by_frames)
}

fn apply(f: &mut Filter, k: &Known) -> Result<u32, String> {
    f.apply_with_meta(&k.policy, &meta_for(k.name)).map_err(err)
}

/// From `from` enforced, applies `to` with a fault at step 0, 1, 2, … until
/// an apply runs with the fault never reached. Returns the number of steps.
fn every_step(
    h: &mut Harness,
    frames: &[Vec<u8>],
    from: &Known,
    to: &Known,
) -> Result<u64, String> {
    for step in 0..10_000u64 {
        apply(h.filter(), from)?;
        // Both slots hold `from`, so the faulty apply writes every difference.
        h.filter().prefill_standby().map_err(err)?;
        let before = h.filter().kernel_generation().map_err(err)?;
        h.filter().inject_fault(Some(step));
        let result = apply(h.filter(), to);
        let untouched = h.filter().fault_pending();
        h.filter().inject_fault(None);
        let now = enforced(h, frames, from, to, true)?;
        match result {
            Err(e) => {
                if now.name != from.name {
                    return Err(format!(
                        "step {step}: apply failed ({e}) but {} is enforced",
                        now.name
                    ));
                }
                if h.filter().kernel_generation().map_err(err)? != before {
                    return Err(format!("step {step}: a failed apply moved the generation"));
                }
            }
            Ok(_) if now.name != to.name => {
                return Err(format!(
                    "step {step}: apply succeeded but {} is enforced",
                    now.name
                ));
            }
            Ok(_) if untouched => return Ok(step),
            Ok(_) => {
                return Err(format!(
                    "step {step}: the injected fault fired but apply reported success"
                ))
            }
        }
        // The next apply after a failure must recover the half-written slot.
        apply(h.filter(), to)?;
        if enforced(h, frames, from, to, false)?.name != to.name {
            return Err(format!(
                "step {step}: the retry did not enforce {}",
                to.name
            ));
        }
    }
    Err("apply never completed within 10000 steps".into())
}

pub fn fault_at_every_step_leaves_old_or_new(h: &mut Harness) -> Result<(), String> {
    let frames = frames();
    let mut known = Vec::new();
    for (name, text) in [("A", A), ("B", B)] {
        let policy = compile(text)?;
        let image = SlotImage::build(&policy, ImageOptions::default()).map_err(err)?;
        apply(
            h.filter(),
            &Known {
                name,
                policy: policy.clone(),
                image: image.clone(),
                verdicts: Vec::new(),
            },
        )?;
        let verdicts = observe_all(h, &frames)?;
        known.push(Known {
            name,
            policy,
            image,
            verdicts,
        });
    }
    let (a, b) = (&known[0], &known[1]);
    let differ = (0..frames.len())
        .filter(|i| a.verdicts[*i] != b.verdicts[*i])
        .count();
    if differ < frames.len() - 2 {
        return Err(format!(
            "only {differ} of {} frames tell A and B apart",
            frames.len()
        ));
    }
    let ab = every_step(h, &frames, a, b)?;
    let ba = every_step(h, &frames, b, a)?;
    eprintln!("  apply A→B has {ab} write steps, B→A {ba}; a fault at each left A or B whole");
    Ok(())
}

/// A META record too large for its map is refused before anything is
/// written: same generation, same slots, same record.
pub fn oversized_meta_changes_nothing(h: &mut Harness) -> Result<(), String> {
    let frames = frames();
    let a = compile(A)?;
    h.filter()
        .apply_with_meta(&a, &meta_for("A"))
        .map_err(err)?;
    let f = h.filter();
    let generation = f.kernel_generation().map_err(err)?;
    let slots = [f.read_slot(0).map_err(err)?, f.read_slot(1).map_err(err)?];
    let meta = f.meta().map_err(err)?;
    let verdicts = observe_all(h, &frames)?;

    let mut b = compile(B)?;
    b.zones[0].name = "z".repeat(40_000);
    let mut huge = meta_for("B");
    huge.assign_zone_ids(&mut b);
    match h.filter().apply_with_meta(&b, &huge) {
        Ok(g) => {
            return Err(format!(
                "an oversized META record was applied (generation {g})"
            ))
        }
        Err(e) if !e.to_string().contains("META") => {
            return Err(format!("refused, but not for the META record: {e}"))
        }
        Err(_) => {}
    }
    let f = h.filter();
    if f.kernel_generation().map_err(err)? != generation {
        return Err("the generation moved".into());
    }
    if [f.read_slot(0).map_err(err)?, f.read_slot(1).map_err(err)?] != slots {
        return Err("a slot was written before the META record was checked".into());
    }
    if f.meta().map_err(err)? != meta {
        return Err("the META record changed".into());
    }
    if observe_all(h, &frames)? != verdicts {
        return Err("verdicts changed".into());
    }
    Ok(())
}
