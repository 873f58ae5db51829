//! Apply is all-or-nothing, and "unchanged" is judged from the kernel: a
//! rejected reload leaves ACTIVE, the slots and the META record alone, and a
//! META record that no longer describes the enforced generation makes the
//! next reload rewrite instead of answering "unchanged".
use anyhow::{ensure, Context, Result};
use aya::maps::{Array, Map, MapData};
use filter_common::{MetaBlob, MAP_META};
use filter_user::loader::{Meta, PinRoot};

use super::{
    daemon::Sandbox,
    policies,
    scenarios::{check, rows_a, rows_b, Ctx},
};

/// Policy B with its first zone renamed to a 40,000-character name: the
/// issue's reproducer (its META record would not fit in 64 KiB).
fn huge_zone_name() -> String {
    let b = policies::policy_b();
    let name = b.find("\nname").expect("policy B names its zones");
    let at = name + b[name..].find('"').expect("opening quote") + 1;
    let end = at + b[at..].find('"').expect("closing quote");
    format!("{}{}{}", &b[..at], "z".repeat(40_000), &b[end..])
}

pub fn rejected_reload_changes_nothing(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("reject.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    check(cx.sb, &rows_a())?;
    let before = cx.sb.status()?;

    Sandbox::write_atomic(&p, &huge_zone_name())?;
    let (ok, out) = cx.sb.reload()?;
    ensure!(!ok, "a 40,000-character zone name was accepted:\n{out}");
    let answer = out.len();
    ensure!(
        answer < 16 * 1024,
        "the rejection echoes {answer} bytes of the policy"
    );
    let after = cx.sb.status()?;
    ensure!(
        after.generation == before.generation && after.policy_hash == before.policy_hash,
        "a rejected reload changed what is enforced: generation {} → {}, policy {} → {}",
        before.generation,
        after.generation,
        before.policy_hash,
        after.policy_hash
    );
    check(cx.sb, &rows_a()).context("after the rejected reload")?;

    // Back to A: truly unchanged, so the generation stays.
    Sandbox::write_atomic(&p, &policies::policy_a())?;
    let (ok, out) = cx.sb.reload()?;
    ensure!(ok, "reloading the enforced policy failed:\n{out}");
    let same = cx.sb.status()?;
    ensure!(
        same.generation == before.generation,
        "reloading the enforced policy moved the generation {} → {}",
        before.generation,
        same.generation
    );
    check(cx.sb, &rows_a())?;
    Sandbox::write_atomic(&p, &policies::policy_b())?;
    let (ok, out) = cx.sb.reload()?;
    ensure!(ok, "reload of B failed:\n{out}");
    check(cx.sb, &rows_b()).context("after reloading B")?;
    cx.note(format!(
        "rejected reload: generation stays {}; its answer is {answer} bytes",
        before.generation
    ));
    d.terminate()?;
    Ok(())
}

/// Rewrites the pinned META record as an interrupted apply would leave it:
/// describing a generation that is not the active one.
fn tamper_meta(sb: &Sandbox) -> Result<u32> {
    let path = PinRoot::new(&sb.pin_root).map(MAP_META);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut map: Array<MapData, MetaBlob> = Array::try_from(Map::from_map_data(data)?)?;
    let mut meta = Meta::decode(&map.get(&0, 0)?)?;
    meta.generation = meta.generation.wrapping_add(7);
    map.set(0, meta.encode()?, 0)?;
    Ok(meta.generation)
}

pub fn unchanged_is_judged_from_the_kernel(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("readback.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    let before = cx.sb.status()?;
    let claimed = tamper_meta(cx.sb)?;
    let out = cx.sb.cli(&["status"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("policy      unknown"),
        "status trusts a META record describing generation {claimed} while {} is active:\n{text}",
        before.generation
    );
    let (ok, out) = cx.sb.reload()?;
    ensure!(ok, "reload failed:\n{out}");
    let after = cx.sb.status()?;
    ensure!(
        after.generation == before.generation + 1,
        "the reload answered \"unchanged\" from the daemon's memory (generation {} → {}) \
         although the kernel's META record did not describe the enforced policy",
        before.generation,
        after.generation
    );
    let out = cx.sb.cli(&["status"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        !text.contains("policy      unknown") && after.policy_hash == before.policy_hash,
        "after the rewrite status still does not name the policy:\n{text}"
    );
    check(cx.sb, &rows_a())?;
    cx.note(format!(
        "META claimed generation {claimed}; the reload rewrote it as generation {}",
        after.generation
    ));
    d.terminate()?;
    Ok(())
}
