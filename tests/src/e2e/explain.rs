//! `portcullis explain` against the real daemon's pins: the verdict, reason
//! and zone of the live program for an allowed, a blocklisted (inline and by
//! list file) and a not-allowed source, with the policy lines responsible;
//! the same after the daemon stopped (the filter stays in force); `-o json`;
//! and an edited policy file is reported as changed since applied.
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::{
    cmd,
    daemon::Sandbox,
    policies,
    probe::Probe,
    scenarios::{check, Ctx, Exp},
    topology::{BLOCKED4, INET4, LISTED4, MGMT4, MGMT6},
};

const CMD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// `explain --from SRC --to PORT/PROTO -o json` under the sandbox's pin root.
fn explain(sb: &Sandbox, from: &str, to: &str, extra: &[&str]) -> Result<Value> {
    let root = sb.pin_root.display().to_string();
    let mut args = vec![
        "explain",
        "--from",
        from,
        "--to",
        to,
        "--pin-root",
        &root,
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = cmd::run(&mut sb.portcullis(&args), super::patience(CMD_TIMEOUT))?;
    ensure!(
        out.status.success(),
        "explain {from} {to} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "explain -o json is not JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The 1-based line of `policy` holding `needle` (plus `after` lines).
fn line_of(text: &str, needle: &str, after: usize) -> Result<usize> {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1 + after)
        .with_context(|| format!("the test policy has no line with {needle:?}"))
}

/// What one explanation must say.
struct Want<'a> {
    verdict: &'a str,
    reason: &'a str,
    zone: &'a str,
    /// (file name, line) that must be among the lines given.
    line: (&'a str, usize),
}

fn expect(got: &Value, want: &Want, what: &str) -> Result<()> {
    let s = |k: &str| {
        got.get(k)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    ensure!(
        (s("verdict"), s("reason"), s("zone"))
            == (want.verdict.into(), want.reason.into(), want.zone.into()),
        "{what}: expected {} / {} / {}, explain says {} / {} / {}",
        want.verdict,
        want.reason,
        want.zone,
        s("verdict"),
        s("reason"),
        s("zone")
    );
    ensure!(
        got.get("ok") == Some(&Value::Bool(true)),
        "{what}: no \"ok\": true in {got}"
    );
    ensure!(
        s("counted_as") == "other",
        "{what}: counted_as is {}",
        s("counted_as")
    );
    let lines: Vec<(String, u64)> = got
        .get("lines")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|l| {
                    let path = l.get("path").and_then(Value::as_str).unwrap_or_default();
                    let name = Path::new(path)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    (name, l.get("line").and_then(Value::as_u64).unwrap_or(0))
                })
                .collect()
        })
        .unwrap_or_default();
    let (file, line) = want.line;
    if !lines.iter().any(|(f, l)| f == file && *l == line as u64) {
        bail!("{what}: expected {file}:{line} among the lines, got {lines:?}");
    }
    Ok(())
}

pub fn explain_names_verdict_and_lines(cx: &mut Ctx) -> Result<()> {
    let text = policies::policy_blocklist_wins();
    let p = cx.policy("explain.toml", &text)?;
    let name = "explain.toml";
    let admin = line_of(&text, "name  = \"keep-admin\"", 0)? - 1;
    let admin_allow = line_of(&text, "allow = [\"10.20.0.0/16\"", 0)?;
    let cases: Vec<(String, &str, Want)> = vec![
        (
            MGMT4.addr.to_string(),
            "8889/tcp",
            Want {
                verdict: "pass",
                reason: "allowed",
                zone: "keep-admin",
                line: (name, admin_allow),
            },
        ),
        (
            BLOCKED4.addr.to_string(),
            "8889/tcp",
            Want {
                verdict: "drop",
                reason: "blocklist",
                zone: "global",
                line: (name, line_of(&text, "cidrs = [\"203.0.113.0/24\"", 0)?),
            },
        ),
        (
            LISTED4.addr.to_string(),
            "8880/tcp",
            Want {
                verdict: "drop",
                reason: "blocklist",
                zone: "global",
                line: (
                    "bl-list.txt",
                    line_of(policies::BLOCKLIST_FILE, "198.51.100.0/24", 0)?,
                ),
            },
        ),
        (
            INET4.addr.to_string(),
            "8889/tcp",
            Want {
                verdict: "drop",
                reason: "not_allowed",
                zone: "keep-admin",
                line: (name, admin),
            },
        ),
    ];

    let mut d = cx.start(&p, &[])?;
    // The explanations agree with real traffic.
    check(
        cx.sb,
        &[
            (Probe::tcp(MGMT4, 8889), Exp::Open),
            (Probe::tcp(INET4, 8889), Exp::Blocked),
        ],
    )?;
    let before = cx.sb.status()?;
    // Each try of an explain runs the frame once (a try whose counters moved
    // ambiguously is repeated), so the allowed cell grows by that case's tries.
    let mut allowed_tries = 0;
    for (from, to, want) in &cases {
        let got = explain(cx.sb, from, to, &[])?;
        expect(&got, want, &format!("daemon running, {from} → {to}"))?;
        ensure!(
            got.get("policy_changed") == Some(&Value::Bool(false)),
            "{from}: the unchanged policy is reported as changed: {got}"
        );
        if want.reason == "allowed" {
            allowed_tries += got.get("tries").and_then(Value::as_u64).unwrap_or(1);
        }
    }
    let after = cx.sb.status()?;
    let other = |s: &super::daemon::Status| s.packets("other", "keep-admin", "allowed", "pass");
    ensure!(
        other(&after) == other(&before) + allowed_tries,
        "the explain frame of {} was not counted once under interface \"other\" ({} → {})",
        MGMT4.addr,
        other(&before),
        other(&after)
    );
    // IPv6, and an explicit --iface.
    let v6 = explain(
        cx.sb,
        &MGMT6.addr.to_string(),
        "8890/tcp",
        &["--iface", "mgmt0"],
    )?;
    ensure!(
        v6.get("reason").and_then(Value::as_str) == Some("allowed")
            && v6.get("interface").and_then(Value::as_str) == Some("mgmt0"),
        "{} → 8890/tcp on mgmt0: {v6}",
        MGMT6.addr
    );
    // Text output names the same.
    let root = cx.sb.pin_root.display().to_string();
    let out = cmd::run(
        &mut cx.sb.portcullis(&[
            "explain",
            "--from",
            &INET4.addr.to_string(),
            "--to",
            "8889/tcp",
            "--pin-root",
            &root,
        ]),
        super::patience(CMD_TIMEOUT),
    )?;
    let shown = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success()
            && shown.contains("not_allowed")
            && shown.contains(&format!("{name}:{admin}:")),
        "explain (text) for {}:\n{shown}{}",
        INET4.addr,
        String::from_utf8_lossy(&out.stderr)
    );
    if cx.sb.verbose {
        cx.note(format!("explain (text):\n{shown}"));
    }

    // An interface without a link is refused, naming the attached ones.
    let started = std::time::Instant::now();
    let out = cmd::run(
        &mut cx.sb.portcullis(&[
            "explain",
            "--from",
            "10.0.0.1",
            "--to",
            "22/tcp",
            "--pin-root",
            &root,
            "--iface",
            "nosuch0",
        ]),
        super::patience(CMD_TIMEOUT),
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("nosuch0") && err.contains("inet0, mgmt0"),
        "explain --iface nosuch0: {:?}\n{err}",
        out.status
    );
    let refused_ms = started.elapsed().as_millis();
    d.terminate()?;
    // The filter stays in force without the daemon; explain reads only pins.
    for (from, to, want) in &cases {
        let got = explain(cx.sb, from, to, &[])?;
        expect(&got, want, &format!("daemon stopped, {from} → {to}"))?;
    }
    // Fragments and VLAN tags reach the same program.
    let later = explain(
        cx.sb,
        &INET4.addr.to_string(),
        "8889/tcp",
        &["--fragment", "later", "--vlan", "5"],
    )?;
    ensure!(
        later.get("reason").and_then(Value::as_str) == Some("fragment")
            && later.get("verdict").and_then(Value::as_str) == Some("pass"),
        "a later fragment under filter-first: {later}"
    );

    // An edited policy: still explained from the program, flagged as changed.
    Sandbox::write_atomic(&p, &format!("{text}\n# edited after the apply\n"))?;
    let edited = explain(cx.sb, &INET4.addr.to_string(), "8889/tcp", &[])?;
    ensure!(
        edited.get("policy_changed") == Some(&Value::Bool(true))
            && edited.get("reason").and_then(Value::as_str) == Some("not_allowed"),
        "explain of an edited policy file: {edited}"
    );
    let started = std::time::Instant::now();
    explain(cx.sb, &MGMT4.addr.to_string(), "8889/tcp", &[])?;
    cx.note(format!(
        "{} sources explained with the daemon up and down; tries {}; one explain {} ms \
         (a refused one {refused_ms} ms), ip netns exec included",
        cases.len(),
        edited.get("tries").cloned().unwrap_or_default(),
        started.elapsed().as_millis()
    ));
    Ok(())
}
