//! Control plane: loading policies of every size (policy file to enforcing),
//! a one-line change to a loaded 1M policy, and how long freeing the old state
//! blocks; `nft -f` of the same sets beside it.
use std::time::{Duration, Instant};

use anyhow::Result;
use filter_user::{
    loader::{Filter, LoadOptions},
    policy,
};

use crate::{nft, policies::PolicySet, report::Results, sys, Plan};

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

fn fresh() -> Result<Filter> {
    Ok(Filter::load(LoadOptions {
        quiesce: Duration::ZERO,
        ..LoadOptions::default()
    })?)
}

pub fn run(plan: &Plan, set: &PolicySet, netns: &str, results: &mut Results) -> Result<()> {
    let max = *plan.sizes.iter().max().expect("sizes");
    for &n in &plan.sizes {
        let mut filter = fresh()?;
        let t = Instant::now();
        let compiled = policy::load(&set.policy_path(n))?;
        let compile_s = secs(t);
        let t2 = Instant::now();
        filter.apply(&compiled)?;
        let apply_s = secs(t2);
        let total = secs(t);
        eprintln!("  load {n:>8}: compile {compile_s:.3}s + write {apply_s:.3}s = {total:.3}s");
        results.push_load(n, compile_s, apply_s);
        if n == max {
            one_line_and_free(&mut filter, set, n, compiled, results)?;
        }
        let t = Instant::now();
        drop(filter);
        let drop_ms = secs(t) * 1e3;
        if n == max {
            results.set_num("drop_filter_1m_ms", drop_ms);
        }
    }
    for &n in &plan.nft_sizes {
        let script = nft::ruleset(set, n, None);
        let s = nft::load_timed(netns, &script)?;
        nft::delete(netns)?;
        eprintln!("  nft -f {n:>8}: {s:.3}s");
        results.push_nft_load(n, s);
    }
    Ok(())
}

fn one_line_and_free(
    filter: &mut Filter,
    set: &PolicySet,
    n: usize,
    compiled: policy::CompiledPolicy,
    results: &mut Results,
) -> Result<()> {
    // Steady state: both slots hold the policy (the second write goes to the
    // other, empty slot, so it costs a full load too).
    let t = Instant::now();
    filter.apply(&compiled)?;
    results.set_num("load_1m_second_slot_s", secs(t));
    drop(compiled);

    let mut one_line = Vec::new();
    let mut one_line_e2e = Vec::new();
    for i in 0..5 {
        // P', P', P, P, P': each apply is a one-line change against what
        // the slot it writes holds (slots alternate).
        let path = if (i / 2) % 2 == 0 {
            set.changed_policy_path(n)
        } else {
            set.policy_path(n)
        };
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        let p = policy::load(&path)?;
        let t2 = Instant::now();
        filter.apply(&p)?;
        one_line.push(secs(t2) * 1e3);
        one_line_e2e.push(secs(t) * 1e3);
    }
    let ms = sys::median(one_line.clone());
    let e2e = sys::median(one_line_e2e.clone());
    eprintln!("  one-line change to {n}: write {ms:.1} ms (runs {one_line:.1?}), with re-reading the files {e2e:.0} ms");
    results.set_num("reload_one_line_ms", ms);
    results.set_num("reload_one_line_with_compile_ms", e2e);

    // Replace the big policy by a small one in both slots: the writer deletes
    // every old entry; the slower of the two applies is the longest stall.
    let small = policy::load(&set.policy_path(1_000))?;
    let mut stall: f64 = 0.0;
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        filter.apply(&small)?;
        stall = stall.max(secs(t) * 1e3);
    }
    eprintln!("  replacing the 1M policy by 1k: longest apply {stall:.1} ms");
    results.set_num("free_stall_ms", stall);
    Ok(())
}
