//! Policy warnings as an operator meets them: `check` prints them located and
//! passes, `check --strict` fails, `-o json` carries them, and the daemon logs
//! them (one line each) at start and at reload.
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::{policies, scenarios::Ctx};

/// ARP dropped although SSH has a failsafe rule: W001 at line 3, column 10.
const LOCKOUT: &str = "version = 1\n[defaults]\nnon_ip = \"drop\"\n\
    [[failsafe]]\nports = [\"22/tcp\"]\nfrom = [\"10.99.0.0/16\"]\n";

/// A harmless warning for a running daemon: a zone nobody may reach (W007).
const CLOSED_ZONE: &str = "\n[[zone]]\nname = \"closed\"\nports = [\"9999/tcp\"]\nallow = []\n";

pub fn check_and_daemon_warn(cx: &mut Ctx) -> Result<()> {
    let lockout = cx.policy("lockout.toml", LOCKOUT)?;
    let path = lockout.display().to_string();
    let located = format!("{path}:3:10: warning[W001 lockout-non-ip]");

    let out = cx.sb.cli(&["check", &path])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && err.contains(&located) && err.contains("help: set non_ip"),
        "check of non_ip = \"drop\": {} (want exit 0 and {located}):\n{err}",
        out.status
    );
    cx.note(err.lines().next().unwrap_or_default().to_string());

    let out = cx.sb.cli(&["check", "--strict", &path])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && err.contains(&located),
        "check --strict of non_ip = \"drop\": {} (want exit 1):\n{err}",
        out.status
    );

    for (strict, ok) in [(false, true), (true, false)] {
        let mut args = vec!["check", "-o", "json", &path];
        if strict {
            args.push("--strict");
        }
        let out = cx.sb.cli(&args)?;
        let doc: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("check {args:?}: stdout is not JSON"))?;
        let w = &doc["warnings"][0];
        ensure!(
            doc["ok"] == ok
                && w["code"] == "W001"
                && w["name"] == "lockout-non-ip"
                && w["line"] == 3
                && w["column"] == 10
                && doc["warnings"].as_array().map(Vec::len) == Some(1),
            "check {args:?}: {doc}"
        );
    }

    // The daemon: warned at start, and again at reload.
    let text = format!("{}{CLOSED_ZONE}", policies::policy_a());
    let p = cx.policy("warned.toml", &text)?;
    let mut d = cx.start(&p, &[])?;
    let wanted = "warning[W007 zone-allows-nobody]";
    let count = |d: &super::daemon::Daemon| {
        d.log()
            .iter()
            .filter(|l| l.contains(wanted) && l.contains("warned.toml:"))
            .count()
    };
    let at_start = count(&d);
    ensure!(
        at_start == 1,
        "daemon logged {wanted} {at_start} times at start:\n{}",
        d.log_tail(30)
    );
    let (ok, out) = cx.sb.reload()?;
    ensure!(ok, "reload of a policy with warnings failed:\n{out}");
    let deadline = Instant::now() + super::patience(Duration::from_secs(5));
    while count(&d) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(
        count(&d) == 2,
        "daemon did not log {wanted} at reload:\n{}",
        d.log_tail(30)
    );
    let line = d
        .log()
        .into_iter()
        .find(|l| l.contains(wanted))
        .unwrap_or_default();
    ensure!(line.contains("(help: "), "warning not on one line: {line}");
    cx.note(format!("daemon log: {}", line.trim()));
    d.terminate()?;
    Ok(())
}
