//! The verdict suite: named fixtures, the evasion corpus, loader checks and the
//! differential test against the reference model, all on the real XDP object
//! through BPF_PROG_TEST_RUN. Needs root. Prints one summary line per part and
//! exits non-zero on any failure.
use std::{
    collections::HashMap,
    process::ExitCode,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use clap::Parser;
use portcullis_tests::{
    case::Case,
    evasion, fixtures, fixtures_bans, fixtures_lanes, fixtures_lanes6, fixtures_quota,
    fixtures_rate, fixtures_reject, fixtures_schedule, fixtures_v6, gen, gen_quota,
    harness::{Harness, Observed, MAX_FRAME},
    loader_checks, model,
    packet::hex,
};
use rand::{rngs::SmallRng, Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    /// At least 1,000,000 differential cases (default 200,000).
    #[arg(long)]
    long: bool,
    /// Seed of the differential test; random (and printed) by default.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the number of differential cases.
    #[arg(long)]
    cases: Option<u64>,
    /// Skip the 1M-prefix scale check (for quick local runs).
    #[arg(long)]
    no_scale: bool,
}

const FRAMES_PER_POLICY: u64 = 500;
/// Of a quota policy's frames, the share the host sends (egress).
const EGRESS_SHARE: f64 = 0.2;
/// The TC action the egress program returns for every frame (continue).
const TC_NEXT: i32 = -1;
/// Reproducers printed in full; later mismatches are only counted.
const REPRODUCERS: u64 = 3;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("verdict-suite: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<bool> {
    let mut h = Harness::new().context("loading the XDP object")?;

    let (fp, ff) = run_cases(&mut h, "fixture", &fixtures::fixtures())?;
    let (fp6, ff6) = run_cases(&mut h, "fixture", &fixtures_v6::fixtures())?;
    let (fps, ffs) = run_cases(&mut h, "fixture", &fixtures_schedule::fixtures())?;
    let (fpl, ffl) = run_cases(&mut h, "fixture", &fixtures_lanes::fixtures())?;
    let (fpl6, ffl6) = run_cases(&mut h, "fixture", &fixtures_lanes6::fixtures())?;
    let (fpb, ffb) = run_cases(&mut h, "fixture", &fixtures_bans::fixtures())?;
    let (fpr, ffr) = run_reply_cases(&mut h, &fixtures_reject::cases())?;
    let (fpt, fft) = fixtures_rate::run(&mut h)?;
    let (fpq, ffq) = fixtures_quota::run(&mut h)?;
    let (fp, ff) = (
        fp + fp6 + fps + fpl + fpl6 + fpb + fpr + fpt + fpq,
        ff + ff6 + ffs + ffl + ffl6 + ffb + ffr + fft + ffq,
    );
    let (ep, ef) = run_cases(&mut h, "evasion", &evasion::corpus())?;
    let (lp, lf) = loader_checks::run(&mut h, !args.no_scale)?;

    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let total = args
        .cases
        .unwrap_or(if args.long { 1_000_000 } else { 200_000 });
    let started = Instant::now();
    let (cases, mismatches) = differential(&mut h, seed, total)?;
    eprintln!(
        "differential: {:.1}s, {:.1} µs per case",
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() * 1e6 / cases.max(1) as f64
    );

    println!("verdict-fixtures: {fp} passed, {ff} failed");
    println!("evasion-corpus: {ep} passed, {ef} failed");
    println!("loader-checks: {lp} passed, {lf} failed");
    println!("differential: {cases} cases, {mismatches} mismatches (seed {seed})");
    Ok(ff == 0 && ef == 0 && lf == 0 && mismatches == 0)
}

/// Runs named cases with hand-written expectations; applies each distinct
/// policy once.
fn run_cases(h: &mut Harness, kind: &str, cases: &[Case]) -> Result<(u64, u64)> {
    let mut applied: Option<String> = None;
    let (mut passed, mut failed) = (0, 0);
    for case in cases {
        // The instant scheduled zones are judged at is not in the text.
        let toml = format!(
            "{}\n# at {:?}\n# bans {:?}",
            case.policy.to_toml(),
            case.policy.at,
            case.policy.bans
        );
        if applied.as_deref() != Some(toml.as_str()) {
            h.apply(&case.policy)
                .with_context(|| format!("{kind} {}: applying its policy", case.name))?;
            applied = Some(toml);
        }
        let expect = Observed::from(&case.expect);
        match h.check(&case.frame, expect)? {
            None => passed += 1,
            Some(got) => {
                failed += 1;
                println!(
                    "FAIL {kind} {}: expected {expect}, got {got}\n  what: {}\n  frame: {}",
                    case.name,
                    case.what,
                    hex(&case.frame)
                );
            }
        }
    }
    Ok((passed, failed))
}

/// The reply fixtures: verdict, reason, rule, and the exact bytes the
/// program leaves in the frame (its reply), which must also pass the
/// checksum verifier.
fn run_reply_cases(h: &mut Harness, cases: &[fixtures_reject::ReplyCase]) -> Result<(u64, u64)> {
    let (mut passed, mut failed) = (0, 0);
    let mut applied = None;
    for c in cases {
        let toml = c.case.policy.to_toml();
        if applied.as_deref() != Some(toml.as_str()) {
            h.apply(&c.case.policy)
                .with_context(|| format!("reply fixture {}: applying its policy", c.case.name))?;
            applied = Some(toml);
        }
        let expect = Observed::from(&c.case.expect);
        let outcome = h.check_reply(&c.case.frame, expect, c.reply.as_deref())?;
        let verified = match (&outcome, &c.reply) {
            (Ok(()), Some(r)) => fixtures_reject::verify_reply(r).err(),
            _ => None,
        };
        match (outcome, verified) {
            (Ok(()), None) => passed += 1,
            (Ok(()), Some(e)) => {
                failed += 1;
                println!(
                    "FAIL reply fixture {}: the reply fails the verifier: {e}",
                    c.case.name
                );
            }
            (Err((got, out)), _) => {
                failed += 1;
                println!(
                    "FAIL reply fixture {}: expected {expect}, got {got}\n  what: {}\n  frame: {}\n  \
                     want:  {}\n  left:  {}",
                    c.case.name,
                    c.case.what,
                    hex(&c.case.frame),
                    c.reply.as_deref().map_or("(no reply)".into(), hex),
                    hex(&out)
                );
            }
        }
    }
    Ok((passed, failed))
}

fn differential(h: &mut Harness, seed: u64, total: u64) -> Result<(u64, u64)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut cases, mut mismatches) = (0u64, 0u64);
    let mut policies = 0u64;
    let mut reasons: HashMap<&'static str, u64> = HashMap::new();
    // Quota policies: frames the host sent, those the model counted, and
    // the usage tables compared (after each egress frame and at the end).
    let (mut quota_policies, mut egress, mut counted, mut tables) = (0u64, 0u64, 0u64, 0u64);
    while cases < total {
        let spec = gen::random_policy(&mut rng);
        h.apply(&spec)
            .with_context(|| format!("generated policy rejected:\n{}", spec.to_toml()))?;
        policies += 1;
        let quotas = spec.zones.iter().any(|z| z.quota.is_some());
        quota_policies += u64::from(quotas);
        // One frozen clock per policy (see gen_rate): buckets only drain.
        // Quotas judge at the policy's instant, clear of any period's end
        // (gen_quota).
        let mut rates = model::Sequence::new();
        for step in 0..FRAMES_PER_POLICY {
            if quotas && rng.gen_bool(EGRESS_SHARE) {
                let frame = gen_quota::random_egress(&mut rng, &spec);
                if frame.len() < 14 || frame.len() > MAX_FRAME {
                    continue;
                }
                egress += 1;
                counted += u64::from(model::egress(&spec, &frame, &mut rates).is_some());
                let action = h.egress(&frame)?;
                tables += 1;
                let diff = fixtures_quota::table_differences(h, &rates)?;
                if action != TC_NEXT || !diff.is_empty() {
                    mismatches += 1;
                    if mismatches <= REPRODUCERS {
                        report_quota_mismatch(&spec, step, "egress", &frame, action, &diff);
                    }
                }
                continue;
            }
            let frame = gen::random_frame(&mut rng, &spec);
            if frame.len() < 14 || frame.len() > MAX_FRAME {
                continue; // BPF_PROG_TEST_RUN cannot run these sizes.
            }
            let (j, reply) = model::decide_with(&spec, &frame, &mut rates);
            let expect = Observed {
                verdict: j.verdict,
                reason: j.reason,
                rule: j.rule,
            };
            *reasons.entry(j.reason.as_str()).or_default() += 1;
            cases += 1;
            if let Err((got, _)) = h.check_reply(&frame, expect, reply.as_deref())? {
                mismatches += 1;
                if mismatches <= REPRODUCERS {
                    if quotas {
                        // Its verdict depends on the frames before it: no
                        // minimising by judging it alone.
                        let diff = fixtures_quota::table_differences(h, &rates)?;
                        println!("MISMATCH model says {expect}, program did {got}");
                        report_quota_mismatch(&spec, step, "ingress", &frame, 0, &diff);
                    } else {
                        report_mismatch(h, &spec, &frame, expect, got)?;
                    }
                }
            }
            if cases >= total {
                break;
            }
        }
        if quotas {
            tables += 1;
            let diff = fixtures_quota::table_differences(h, &rates)?;
            if !diff.is_empty() {
                mismatches += 1;
                if mismatches <= REPRODUCERS {
                    report_quota_mismatch(&spec, FRAMES_PER_POLICY, "end", &[], 0, &diff);
                }
            }
        }
    }
    let mut mix: Vec<_> = reasons.into_iter().collect();
    mix.sort();
    eprintln!("differential: {policies} policies; reasons {mix:?}");
    println!(
        "differential quotas: {quota_policies} policies with quotas, {egress} egress frames \
         ({counted} counted by the model), {tables} usage tables compared"
    );
    Ok((cases, mismatches))
}

/// A quota policy's mismatch (a verdict, an egress frame, or the usage
/// table): the policy, where in its sequence, and the table's differences.
fn report_quota_mismatch(
    spec: &portcullis_tests::spec::PolicySpec,
    step: u64,
    what: &str,
    frame: &[u8],
    action: i32,
    diff: &[String],
) {
    println!(
        "QUOTA MISMATCH at frame {step} of the policy ({what}; egress action {action})\n\
         --- policy (judged at {:?}) ---\n{}--- frame ---\n{}\n--- usage: kernel vs model ---\n{}",
        spec.at,
        spec.to_toml(),
        hex(frame),
        diff.join("\n")
    );
}

/// Shrinks a mismatching (policy, frame) and prints a reproducer.
fn report_mismatch(
    h: &mut Harness,
    spec: &portcullis_tests::spec::PolicySpec,
    frame: &[u8],
    expect: Observed,
    got: Observed,
) -> Result<()> {
    println!("MISMATCH model says {expect}, program did {got}");
    let (spec, frame) = gen::minimize(spec.clone(), frame.to_vec(), |s, f| {
        if h.apply(s).is_err() || f.len() < 14 {
            return false;
        }
        let (j, reply) = model::decide(s, f);
        let e = Observed {
            verdict: j.verdict,
            reason: j.reason,
            rule: j.rule,
        };
        matches!(h.check_reply(f, e, reply.as_deref()), Ok(Err(_)))
    });
    let (j, reply) = model::decide(&spec, &frame);
    h.apply(&spec)?;
    let e = Observed {
        verdict: j.verdict,
        reason: j.reason,
        rule: j.rule,
    };
    let left = match h.check_reply(&frame, e, reply.as_deref())? {
        Ok(()) => Vec::new(),
        Err((_, out)) => out,
    };
    let got = h.observe(&frame)?;
    println!(
        "minimal reproducer: model {} ({}, rule {}), program {got}\n--- policy ---\n{}--- bans ---\n{}--- frame ---\n{}",
        j.verdict.as_str(),
        j.reason.as_str(),
        j.rule,
        spec.to_toml(),
        spec.bans
            .iter()
            .map(|b| format!("{} until {:?}\n", b.net, b.until))
            .collect::<String>(),
        hex(&frame)
    );
    if let Some(r) = reply {
        println!(
            "--- model's reply ---\n{}\n--- program's ---\n{}",
            hex(&r),
            hex(&left)
        );
    }
    Ok(())
}
