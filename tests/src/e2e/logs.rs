//! The daemon's log as a collector meets it: `--log-format json` is one JSON
//! object per line (a multi-line rejection included), with the documented
//! fields; plain text to journald carries syslog priorities and no timestamps.
use std::{
    fs,
    os::unix::fs::MetadataExt,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::{cmd, policies, scenarios::Ctx};

/// A zone nobody may reach: warning W007, logged with its `code` field.
const CLOSED_ZONE: &str = "\n[[zone]]\nname = \"closed\"\nports = [\"9999/tcp\"]\nallow = []\n";

/// Fields every JSON line has (docs/operations.md#logs).
const FIELDS: [&str; 4] = ["timestamp", "level", "target", "message"];

pub fn daemon_logs_json(cx: &mut Ctx) -> Result<()> {
    let text = format!("{}{CLOSED_ZONE}", policies::policy_a());
    let p = cx.policy("json-logs.toml", &text)?;
    let mut d = cx.start(&p, &["--log-format", "json"])?;
    // Rejected: its diagnostics span lines, the JSON line must not.
    fs::write(&p, policies::policy_invalid())?;
    let (ok, out) = cx.sb.reload()?;
    ensure!(!ok, "an invalid reload succeeded:\n{out}");
    let deadline = Instant::now() + super::patience(Duration::from_secs(5));
    let rejected = |d: &super::daemon::Daemon| {
        d.log()
            .iter()
            .any(|l| l.contains("rejected; the previous policy keeps enforcing"))
    };
    while !rejected(&d) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    d.terminate()?;
    let log = d.log();
    let mut docs = Vec::new();
    for line in &log {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("a log line is not JSON: {line}"))?;
        for f in FIELDS {
            ensure!(v[f].is_string(), "log line without string `{f}`: {line}");
        }
        let ts = v["timestamp"].as_str().unwrap_or_default();
        ensure!(
            ts.len() >= 20 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
            "timestamp is not RFC 3339 UTC: {line}"
        );
        docs.push(v);
    }
    let find = |pred: &dyn Fn(&Value) -> bool, what: &str| -> Result<Value> {
        docs.iter()
            .find(|v| pred(v))
            .cloned()
            .with_context(|| format!("no log line {what}:\n{}", log.join("\n")))
    };
    let msg = |v: &Value| v["message"].as_str().unwrap_or_default().to_string();
    find(
        &|v| v["level"] == "INFO" && msg(v).starts_with("enforcing "),
        "at INFO saying `enforcing …`",
    )?;
    let warned = find(
        &|v| v["level"] == "WARN" && v["code"] == "W007",
        "at WARN with code W007",
    )?;
    let rejection = find(
        &|v| v["level"] == "ERROR" && msg(v).contains("rejected"),
        "at ERROR for the rejected reload",
    )?;
    ensure!(
        msg(&rejection).contains('\n'),
        "the rejection lost its diagnostics: {rejection}"
    );
    cx.note(format!(
        "{} JSON lines, e.g. {}",
        docs.len(),
        serde_json::to_string(&warned)?
    ));
    Ok(())
}

/// `check` logs "policy checked" at info; where its stderr goes decides the
/// plain format. stderr is a file here, so JOURNAL_STREAM can name it.
pub fn plain_logs_follow_journal_stream(cx: &mut Ctx) -> Result<()> {
    let keep = cx.keep_policy.display().to_string();
    let run = |journal: bool| -> Result<String> {
        let path = cx.sb.dir.join(format!("check-stderr-{journal}.log"));
        let file = fs::File::create(&path)?;
        let meta = file.metadata()?;
        let mut c = Command::new(&cx.sb.bin);
        c.args(["check", "-q", &keep])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(file));
        // Not this file: what a child that inherited the variable sees.
        let (dev, ino) = if journal {
            (meta.dev(), meta.ino())
        } else {
            (meta.dev(), meta.ino() + 1)
        };
        c.env("JOURNAL_STREAM", format!("{dev}:{ino}"));
        let mut child = cmd::unblock_signals(&mut c).spawn()?;
        let st = cmd::wait_bounded(&mut child, super::patience(cmd::CMD_TIMEOUT))
            .context("check did not finish")?;
        ensure!(st.success(), "check of keep.toml failed: {st}");
        Ok(fs::read_to_string(&path)?)
    };
    let journal = run(true)?;
    let line = journal
        .lines()
        .find(|l| l.contains("policy checked"))
        .with_context(|| format!("no `policy checked` line:\n{journal}"))?;
    ensure!(
        line.starts_with("<6>") && line[3..].trim_start().starts_with("INFO"),
        "to journald: want `<6>` then the level, no timestamp: {line}"
    );
    ensure!(
        !journal.contains('\x1b'),
        "ANSI escapes to journald: {journal:?}"
    );
    let other = run(false)?;
    let plain = other
        .lines()
        .find(|l| l.contains("policy checked"))
        .with_context(|| format!("no `policy checked` line:\n{other}"))?;
    ensure!(
        plain.starts_with("20") && !plain.starts_with('<') && !other.contains('\x1b'),
        "to a file: want a timestamp first, no priority, no colour: {plain}"
    );
    cx.note(format!("journald: {line}"));
    cx.note(format!("file:     {plain}"));
    Ok(())
}
