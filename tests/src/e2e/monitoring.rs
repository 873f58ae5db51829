//! deploy/monitoring against the real daemon: every metric name the rules,
//! their tests and the dashboard use is exported by a running daemon, and
//! every label they select or group by is on its series; the rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), and
//! the dashboard's queries parse as PromQL (promtool, as recording rules).
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::{
    cmd, policies, probe,
    scenarios::{t, Ctx},
    topology::{BLOCKED4, INET4},
};

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];
const RULES: &str = "portcullis-rules.yml";
const RULE_TESTS: &str = "portcullis-rules.test.yml";
const DASHBOARD: &str = "portcullis-dashboard.json";

pub fn dir() -> PathBuf {
    policies::examples_dir().join("../monitoring")
}

/// `portcullis_…` words not part of a longer name (a recording rule's
/// `level:portcullis_x:rate5m` is not a metric the daemon exports).
fn metric_names(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeSet::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find("portcullis_") {
        let at = offset + i;
        let before = text[..at].chars().next_back();
        let len = text[at..]
            .find(|c: char| !word(c))
            .unwrap_or(text.len() - at);
        let name = &text[at..at + len];
        if !before.is_some_and(word) && !name.contains(':') {
            out.insert(name.to_string());
        }
        offset = at + len;
        rest = &text[offset..];
    }
    out
}

/// Labels an expression selects on (`{k="v", k2!~"…"}`) or aggregates by
/// (`by (a, b)`).
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut s = expr;
    while let Some(i) = s.find('{') {
        let end = s[i..].find('}').map_or(s.len(), |j| i + j);
        for part in s[i + 1..end].split(',') {
            if let Some(k) = part.split(['=', '!']).next() {
                let k = k.trim();
                if !k.is_empty() {
                    out.insert(k.to_string());
                }
            }
        }
        s = &s[end.min(s.len())..];
        if s.is_empty() {
            break;
        }
        s = &s[1..];
    }
    let mut s = expr;
    while let Some(i) = s.find("by (") {
        let end = s[i..].find(')').map_or(s.len(), |j| i + j);
        for k in s[i + 4..end].split(',') {
            out.insert(k.trim().to_string());
        }
        s = &s[end..];
    }
    out
}

/// The dashboard's queries with its variables given values.
fn dashboard_exprs(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                let e = e
                    .replace("$__rate_interval", "5m")
                    .replace("$__range", "6h")
                    .replace("$instance", ".*");
                out.push((p["title"].as_str().unwrap_or("?").to_string(), e));
            }
        }
    }
    out
}

/// The `expr:` values of a rule file (one line, or a folded block below).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = yaml.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let Some(v) = l.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = l.len() - l.trim_start().len();
        let v = v.trim();
        if !v.starts_with('>') && !v.starts_with('|') {
            out.push(v.trim_matches('\'').to_string());
            continue;
        }
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|b| b.trim().is_empty() || b.len() - b.trim_start().len() > indent)
            .map(|b| b.trim())
            .collect();
        out.push(block.join(" "));
    }
    out
}

fn promtool(args: &[&str], cwd: &Path) -> Result<String> {
    let out = cmd::run(
        Command::new("promtool").args(args).current_dir(cwd),
        super::patience(cmd::CMD_TIMEOUT),
    )
    .context("running promtool (Debian's prometheus package; `cargo xtask bootstrap`)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "promtool {args:?}:\n{text}");
    Ok(text)
}

pub fn names_are_exported(cx: &mut Ctx) -> Result<()> {
    let dir = dir();
    let rules = fs::read_to_string(dir.join(RULES))?;
    let tests = fs::read_to_string(dir.join(RULE_TESTS))?;
    let dash_text = fs::read_to_string(dir.join(DASHBOARD))?;
    let dash: Value = serde_json::from_str(&dash_text).context("the dashboard is not JSON")?;

    promtool(&["check", "rules", RULES], &dir)?;
    promtool(&["test", "rules", RULE_TESTS], &dir)?;
    // The dashboard's queries, as recording rules: promtool parses each.
    let exprs = dashboard_exprs(&dash);
    ensure!(!exprs.is_empty(), "the dashboard has no queries");
    let mut as_rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, e)) in exprs.iter().enumerate() {
        as_rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(e)?
        ));
    }
    let tmp = cx.policy_dir.join("dashboard-queries.yml");
    fs::create_dir_all(&cx.policy_dir)?;
    fs::write(&tmp, as_rules)?;
    promtool(&["check", "rules", &tmp.display().to_string()], &dir)
        .context("a dashboard query is not valid PromQL")?;

    // A daemon with drops and passes counted, then one scrape.
    let p = cx.policy("monitoring.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    let _ = probe::run_batch(
        &cx.sb.topo,
        &[t(INET4, 8889), t(BLOCKED4, 8880), t(INET4, 8880)],
    );
    let samples = cx.sb.metrics()?;
    d.terminate()?;
    let exported: BTreeSet<String> = samples.iter().map(|s| s.name.clone()).collect();
    let labels: BTreeSet<String> = samples
        .iter()
        .flat_map(|s| s.labels.keys().cloned())
        .chain(TARGET_LABELS.iter().map(|s| s.to_string()))
        .collect();

    let mut used = metric_names(&rules);
    used.extend(metric_names(&tests));
    used.extend(metric_names(&dash_text));
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    ensure!(
        missing.is_empty(),
        "deploy/monitoring uses metrics the daemon does not export: {missing:?} (exported: {exported:?})"
    );
    for e in rule_exprs(&rules)
        .into_iter()
        .chain(exprs.iter().map(|(_, e)| e.clone()))
    {
        for l in label_names(&e) {
            ensure!(
                labels.contains(&l),
                "`{e}` uses label `{l}`, which no exported series has (labels: {labels:?})"
            );
        }
    }
    cx.note(format!(
        "{} metric names used, all exported; {} dashboard queries parse; rules and their tests pass promtool",
        used.len(),
        exprs.len()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_skip_recording_rule_names_and_longer_words() {
        let n = metric_names(
            "a:portcullis_x:rate5m portcullis_packets_total{x} my_portcullis_y (portcullis_enforcing)",
        );
        let want: BTreeSet<String> = ["portcullis_packets_total", "portcullis_enforcing"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(n, want);
    }

    #[test]
    fn label_names_from_selectors_and_by_clauses() {
        let l =
            label_names(r#"sum by (zone, reason) (rate(m{instance=~"$i",verdict!="pass"}[5m]))"#);
        let want: BTreeSet<String> = ["zone", "reason", "instance", "verdict"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(l, want);
    }

    #[test]
    fn rule_exprs_read_folded_blocks() {
        let y = "  - record: r\n    expr: >-\n      sum by (a) (\n        m\n      )\n  - alert: A\n    expr: x == 0\n    for: 1m\n";
        assert_eq!(rule_exprs(y), vec!["sum by (a) ( m )", "x == 0"]);
    }

    /// The checked-in files, without a daemon: names found, queries found.
    #[test]
    fn the_monitoring_files_name_metrics_and_queries() {
        let d = dir();
        let dash: Value =
            serde_json::from_str(&fs::read_to_string(d.join(DASHBOARD)).unwrap()).unwrap();
        assert!(dashboard_exprs(&dash).len() >= 10);
        let rules = fs::read_to_string(d.join(RULES)).unwrap();
        assert!(rule_exprs(&rules).len() >= 5);
        assert!(metric_names(&rules).contains("portcullis_enforcing"));
    }
}
