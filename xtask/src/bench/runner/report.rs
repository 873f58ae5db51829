//! Results: the JSON file, the stdout table and the SVG plot (hand-written
//! SVG: no font or system dependencies).
use std::{fmt::Write as _, path::Path};

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::{perpkt::KINDS, sys, Plan};

pub struct Results {
    json: Map<String, Value>,
    /// (size, compile s, write s)
    loads: Vec<(usize, f64, f64)>,
    nft_loads: Vec<(usize, f64)>,
    floods: Vec<Flood>,
    sizes: Vec<usize>,
    /// ns per probe kind per size
    per_packet: Vec<Vec<f64>>,
}

impl Results {
    pub fn new(plan: &Plan) -> Results {
        let mut json = Map::new();
        json.insert("quick".into(), json!(plan.quick));
        json.insert("repeat".into(), json!(plan.repeat));
        json.insert("runs".into(), json!(plan.runs));
        json.insert("veth_rounds".into(), json!(plan.veth_rounds));
        json.insert("veth_window_ms".into(), json!(plan.veth_window_ms));
        json.insert("v6_flood_prefixes".into(), json!(plan.v6_flood_prefixes));
        json.insert(
            "allowlist_prefixes".into(),
            json!([crate::ALLOW_BIG, crate::ALLOW_SMALL]),
        );
        json.insert("loadavg_at_start".into(), json!(sys::loadavg()));
        json.insert(
            "kernel".into(),
            json!(std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()),
        );
        json.insert(
            "cpus".into(),
            json!(std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)),
        );
        Results {
            json,
            loads: Vec::new(),
            nft_loads: Vec::new(),
            floods: Vec::new(),
            sizes: Vec::new(),
            per_packet: Vec::new(),
        }
    }

    pub fn set_num(&mut self, key: &str, v: f64) {
        self.json.insert(key.into(), json!(round(v)));
    }

    fn num(&self, key: &str) -> Option<f64> {
        self.json.get(key).and_then(Value::as_f64)
    }

    pub fn set_per_packet(&mut self, sizes: &[usize], table: &[Vec<f64>], empty: f64, parse: f64) {
        self.sizes = sizes.to_vec();
        self.per_packet = table.to_vec();
        let mut kinds = Map::new();
        for ((k, _, _), v) in KINDS.iter().zip(table) {
            kinds.insert(
                (*k).into(),
                json!(v.iter().map(|x| round(*x)).collect::<Vec<_>>()),
            );
        }
        self.json.insert(
            "per_packet_ns".into(),
            json!({ "sizes": sizes, "empty_pass": round(empty), "parse_only": round(parse), "kinds": kinds }),
        );
        // Growth from the smallest to the largest size: the worst IPv4 probe
        // (the IPv6 list is 100k at every size; its growth is reported apart).
        let growth = |v6: bool| {
            KINDS
                .iter()
                .zip(table)
                .filter(|((_, _, is_v4), _)| *is_v4 != v6)
                .map(|(_, v)| v.last().copied().unwrap_or(f64::NAN) / v[0])
                .fold(f64::NAN, f64::max)
        };
        self.set_num("growth_1m_over_1k", growth(false));
        self.set_num("growth_1m_over_1k_v6_probes", growth(true));
        if let Some(i) = KINDS.iter().position(|(k, _, _)| *k == "v4_listed_host") {
            self.set_num("portcullis_ns_1m_listed_host", *table[i].last().unwrap());
        }
    }

    pub fn push_load(&mut self, n: usize, compile_s: f64, write_s: f64) {
        self.loads.push((n, compile_s, write_s));
        self.json.insert(
            "load_s".into(),
            json!(self
                .loads
                .iter()
                .map(|(n, c, w)| json!({"prefixes": n, "compile": round(*c), "write": round(*w), "total": round(c + w)}))
                .collect::<Vec<_>>()),
        );
        if n == 1_000_000 {
            self.set_num("load_1m_seconds", compile_s + write_s);
            self.set_num("load_1m_write_seconds", write_s);
        }
    }

    pub fn push_nft_load(&mut self, n: usize, s: f64) {
        self.nft_loads.push((n, s));
        self.nft_loads.sort_by_key(|x| x.0);
        self.json.insert(
            "nft_load_s".into(),
            json!(self
                .nft_loads
                .iter()
                .map(|(n, s)| json!({"prefixes": n, "seconds": round(*s)}))
                .collect::<Vec<_>>()),
        );
        if n == 1_000_000 {
            self.set_num("nft_load_1m_seconds", s);
        }
    }

    pub fn push_flood(&mut self, f: Flood) {
        let (lo, hi) = range(&f.samples);
        let key = &f.key;
        self.json.insert(
            format!("{key}_trials_mpps"),
            json!(f.samples.iter().map(|x| round(*x)).collect::<Vec<_>>()),
        );
        self.json
            .insert(format!("{key}_range_mpps"), json!([round(lo), round(hi)]));
        self.set_num(&format!("{key}_mpps"), f.median());
        self.set_num(&format!("{key}_generator_mpps"), sys::median(f.gen.clone()));
        self.set_num(
            &format!("{key}_napi_sleeps_per_s"),
            sys::median(f.napi_sleeps.clone()),
        );
        self.floods.retain(|g| g.key != f.key);
        self.floods.push(f);
        for (ratio, num, den, _) in RATIOS {
            if let Some((m, lo, hi)) = self.ratio(num, den) {
                self.set_num(ratio, m);
                self.json
                    .insert(format!("{ratio}_range"), json!([round(lo), round(hi)]));
            }
        }
    }

    /// The range written for ratio key `ratio` (NaN when missing).
    fn ratio_range(&self, ratio: &str) -> (f64, f64) {
        let v = self.json.get(&format!("{ratio}_range"));
        let at = |i: usize| v.and_then(|v| v[i].as_f64()).unwrap_or(f64::NAN);
        (at(0), at(1))
    }

    fn flood(&self, key: &str) -> Option<&Flood> {
        self.floods.iter().find(|f| f.key == key)
    }

    /// `num` / `den`: (median, min, max) of the per-round ratios when both
    /// were measured in the same interleaved rounds; else the ratio of the
    /// medians, with the extremes of the samples as its range.
    fn ratio(&self, num: &str, den: &str) -> Option<(f64, f64, f64)> {
        let (a, b) = (self.flood(num)?, self.flood(den)?);
        if a.interleaved && b.interleaved && a.samples.len() == b.samples.len() {
            let r: Vec<f64> = a
                .samples
                .iter()
                .zip(&b.samples)
                .map(|(x, y)| x / y)
                .collect();
            let (lo, hi) = range(&r);
            Some((sys::median(r), lo, hi))
        } else {
            let ((alo, ahi), (blo, bhi)) = (range(&a.samples), range(&b.samples));
            Some((a.median() / b.median(), alo / bhi, ahi / blo))
        }
    }
}

/// Which part of the throughput run a flood belongs to (the plot's colours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Programs of the bench object: empty XDP_DROP, the floors.
    Baseline,
    /// The daemon with the flood policy.
    Portcullis,
    /// nftables, iptables + ipset.
    Other,
}

/// One flood: receiver Mpps per round (or trial), generator Mpps beside.
pub struct Flood {
    pub key: String,
    pub label: String,
    pub group: Group,
    pub samples: Vec<f64>,
    pub gen: Vec<f64>,
    /// How often per second the receiver's NAPI thread slept, per sample.
    pub napi_sleeps: Vec<f64>,
    /// Measured in the interleaved rounds (one sample per round).
    pub interleaved: bool,
}

impl Flood {
    fn median(&self) -> f64 {
        sys::median(self.samples.clone())
    }
}

fn range(v: &[f64]) -> (f64, f64) {
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

/// (ratio key, flood, baseline flood, target). The floor keys compare each
/// flood with the baseline every filter pays: `floor_drop` for IPv4 floods
/// that drop, `floor_drop_v6` for IPv6, `floor_pass` (`floor_pass_v6`) for
/// floods that pass (it pays the stack behind the filter too).
#[rustfmt::skip]
pub const RATIOS: [(&str, &str, &str, Option<f64>); 24] = [
    ("ratio_vs_floor", "portcullis_drop_hosts", "floor_drop", Some(0.5)),
    ("ratio_vs_floor_v6", "portcullis_drop_v6", "floor_drop_v6", Some(0.4)),
    ("ratio_vs_floor_uniform", "portcullis_drop_uniform", "floor_drop", None),
    ("ratio_vs_floor_uniform_v6", "portcullis_drop_uniform_v6", "floor_drop_v6", None),
    ("ratio_vs_floor_spoofed_limited", "portcullis_spoofed_limited", "floor_drop", None),
    // Issue 12: a spoofed flood at a rate-limited zone against the same
    // random sources refused by an unlimited zone's allowlist.
    ("ratio_spoofed_limited", "portcullis_spoofed_limited", "portcullis_drop_uniform", Some(0.8)),
    ("ratio_vs_floor_mixed", "portcullis_drop", "floor_drop", None),
    ("ratio_vs_floor_nets", "portcullis_drop_nets", "floor_drop", Some(0.9)),
    ("ratio_vs_floor_hot", "portcullis_drop_hot", "floor_drop", Some(0.9)),
    ("ratio_vs_floor_allowed", "portcullis_allowed", "floor_pass", None),
    ("ratio_vs_floor_allow_100k", "portcullis_allow_100k", "floor_pass", None),
    ("ratio_vs_floor_allow_100k_miss", "portcullis_allow_100k_miss", "floor_drop", None),
    ("ratio_vs_floor_allow_1k", "portcullis_allow_1k", "floor_pass", None),
    ("ratio_vs_floor_allow6_60k", "portcullis_allow6_60k", "floor_pass_v6", None),
    ("ratio_vs_floor_allow6_60k_miss", "portcullis_allow6_60k_miss", "floor_drop_v6", None),
    ("ratio_vs_floor_allow_1k_miss", "portcullis_allow_1k_miss", "floor_drop", None),
    ("floor_ratio_vs_empty", "floor_drop", "xdp_drop_empty", None),
    ("ratio_vs_empty", "portcullis_drop", "xdp_drop_empty", None),
    ("ratio_vs_empty_nets_only", "portcullis_drop_nets", "xdp_drop_empty", None),
    ("ratio_vs_empty_cache_resident", "portcullis_drop_hot", "xdp_drop_empty", None),
    ("ratio_vs_nftables", "portcullis_drop", "nftables_drop", Some(8.0)),
    ("ratio_vs_iptables", "portcullis_drop", "iptables_drop", None),
    ("nftables_ratio_vs_floor", "nftables_drop", "floor_drop", None),
    ("iptables_ratio_vs_floor", "iptables_drop", "floor_drop", None),
];

/// The floor ratio of a flood, for the tables and the plot.
fn floor_ratio_of(key: &str) -> Option<(&'static str, &'static str, Option<f64>)> {
    RATIOS
        .iter()
        .find(|(_, num, den, _)| *num == key && den.starts_with("floor"))
        .map(|(r, _, den, t)| (*r, *den, *t))
}

fn round(v: f64) -> f64 {
    if v.is_finite() {
        (v * 1000.0).round() / 1000.0
    } else {
        -1.0
    }
}

/// Keys every run must write.
pub const REQUIRED: [&str; 20] = [
    "xdp_drop_empty_mpps",
    "floor_drop_mpps",
    "floor_drop_v6_mpps",
    "portcullis_drop_mpps",
    "nftables_drop_mpps",
    "ratio_vs_floor",
    "ratio_vs_floor_v6",
    "ratio_vs_floor_uniform",
    "ratio_vs_floor_uniform_v6",
    "ratio_vs_floor_allow_100k",
    "ratio_vs_floor_allow_1k",
    "ratio_vs_empty",
    "ratio_vs_nftables",
    "growth_1m_over_1k",
    "load_1m_seconds",
    "reload_one_line_ms",
    "rss_mib",
    "ban_unlisted_ratio_1m",
    "ban_add_one_ms",
    "ban_add_100k_s",
];

pub fn write(out: &Path, r: &Results) -> Result<()> {
    let mut json = r.json.clone();
    json.insert("loadavg_at_end".into(), json!(sys::loadavg()));
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|k| !json.contains_key(*k))
        .collect();
    json.insert("missing_keys".into(), json!(missing));
    let path = out.join("results.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&Value::Object(json))? + "\n",
    )
    .with_context(|| path.display().to_string())?;
    let svg = out.join("results.svg");
    std::fs::write(&svg, plot(r)).with_context(|| svg.display().to_string())?;
    eprintln!("[bench] wrote {} and {}", path.display(), svg.display());
    if !missing.is_empty() {
        anyhow::bail!("results.json lacks {missing:?}");
    }
    Ok(())
}

fn target(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

pub fn print_table(r: &Results) {
    let n = |k: &str| r.num(k).unwrap_or(f64::NAN);
    println!(
        "\n## portcullis benchmark{}\n",
        if r.json["quick"] == json!(true) {
            " (--quick)"
        } else {
            ""
        }
    );
    println!(
        "Per-packet cost, BPF_PROG_TEST_RUN (ns/packet; empty XDP_PASS {:.1}, parse-only {:.1}, floor {:.1}):\n",
        r.json
            .get("per_packet_ns")
            .and_then(|p| p["empty_pass"].as_f64())
            .unwrap_or(f64::NAN),
        r.json
            .get("per_packet_ns")
            .and_then(|p| p["parse_only"].as_f64())
            .unwrap_or(f64::NAN),
        n("floor_ns")
    );
    let mut head = String::from("| probe |");
    for s in &r.sizes {
        let _ = write!(head, " {} |", human(*s));
    }
    head.push_str(" growth |");
    println!("{head}");
    println!("|---|{}---|", "---|".repeat(r.sizes.len()));
    for ((_, label, _), v) in KINDS.iter().zip(&r.per_packet) {
        let mut row = format!("| {label} |");
        for x in v {
            let _ = write!(row, " {x:.1} |");
        }
        let _ = write!(row, " {:.2} |", v.last().unwrap_or(&f64::NAN) / v[0]);
        println!("{row}");
    }
    let rounds = r.json["veth_rounds"].as_u64().unwrap_or(0);
    println!(
        "\nThroughput on veth (one core generating, one receiving; 64-byte UDP over IPv4, 80-byte over IPv6; \
         median and range of {rounds} interleaved rounds; policy: 1M IPv4 + {} IPv6 /48s, 34 zones):\n",
        human(r.json["v6_flood_prefixes"].as_u64().unwrap_or(0) as usize)
    );
    println!(
        "| flood (veth, 1M IPv4 + {} IPv6 policy) | Mpps | range | vs floor | range |",
        human(r.json["v6_flood_prefixes"].as_u64().unwrap_or(0) as usize)
    );
    println!("|---|---|---|---|---|");
    for f in &r.floods {
        let (lo, hi) = range(&f.samples);
        let vs = match floor_ratio_of(&f.key) {
            Some((ratio, den, _)) => format!(
                "{:.2} ({}) | {:.2}–{:.2}",
                n(ratio),
                den.trim_start_matches("floor_"),
                r.ratio_range(ratio).0,
                r.ratio_range(ratio).1,
            ),
            None if f.key == "floor_drop" => {
                format!("{:.2} × empty | ", n("floor_ratio_vs_empty"))
            }
            None => "– | ".into(),
        };
        let who = match f.group {
            Group::Portcullis => "portcullis: ",
            _ => "",
        };
        println!(
            "| {who}{} | {:.2} | {lo:.2}–{hi:.2} | {vs} |",
            f.label,
            f.median()
        );
    }
    println!("\nControl plane (policy file to enforcing; + 100k IPv6, 32 zones):\n");
    println!("| prefixes | portcullis compile | portcullis write | portcullis total | nft -f |");
    println!("|---|---|---|---|---|");
    for (size, c, w) in &r.loads {
        let nft = r
            .nft_loads
            .iter()
            .find(|(s, _)| s == size)
            .map(|(_, s)| format!("{s:.2} s"))
            .unwrap_or_else(|| "–".into());
        println!(
            "| {} | {c:.3} s | {w:.3} s | {:.3} s | {nft} |",
            human(*size),
            c + w
        );
    }
    // (what, key, target, at least?)
    let issue10: [(&str, &str, f64, bool); 9] = [
        (
            "IPv4 blocklist flood (random listed /32s) / floor",
            "ratio_vs_floor",
            0.5,
            true,
        ),
        (
            "IPv6 blocklist flood (random listed /48s) / IPv6 floor",
            "ratio_vs_floor_v6",
            0.4,
            true,
        ),
        (
            "flood from listed /24s only / floor",
            "ratio_vs_floor_nets",
            0.9,
            true,
        ),
        (
            "flood from 64 listed /32s / floor",
            "ratio_vs_floor_hot",
            0.9,
            true,
        ),
        (
            "portcullis drop / nftables drop",
            "ratio_vs_nftables",
            8.0,
            true,
        ),
        ("ns/packet growth 1M / 1k", "growth_1m_over_1k", 1.3, false),
        (
            "load 1M + 100k IPv6 policy (s)",
            "load_1m_seconds",
            1.0,
            false,
        ),
        (
            "one-line change to the loaded 1M policy (ms)",
            "reload_one_line_ms",
            20.0,
            false,
        ),
        (
            "daemon RSS with the 1M policy (MiB)",
            "rss_mib",
            40.0,
            false,
        ),
    ];
    let issue12 = [
        (
            "rate-limited zone packet / unlimited (BPF_PROG_TEST_RUN)",
            "rate_ratio",
            1.3,
            false,
        ),
        (
            "spoofed flood at a rate-limited zone / the same flood refused unlimited",
            "ratio_spoofed_limited",
            0.8,
            true,
        ),
    ];
    for (issue, rows) in [(10, &issue10[..]), (12, &issue12[..])] {
        println!("\n| target (issue {issue}) | key | figure | |");
        println!("|---|---|---|---|");
        for (what, key, t, at_least) in rows {
            let v = n(key);
            let (cmp, ok) = if *at_least {
                ("≥", v >= *t)
            } else {
                ("≤", v <= *t)
            };
            println!("| {what} {cmp} {t} | `{key}` | {v:.2} | {} |", target(ok));
        }
    }
    println!(
        "\nAlso: one-line change incl. re-reading the 1M-line list {:.0} ms; longest apply while replacing the 1M policy {:.1} ms; \
         nft -f of the 1M sets {:.1} s; ipset restore {:.1} s; daemon ready with 1M {:.2} s, peak RSS {:.1} MiB. Load average {} → {}.",
        n("reload_one_line_with_compile_ms"),
        n("free_stall_ms"),
        n("nft_load_1m_seconds"),
        n("ipset_load_1m_s"),
        n("daemon_start_1m_s"),
        n("rss_peak_mib"),
        r.json["loadavg_at_start"].as_str().unwrap_or(""),
        sys::loadavg(),
    );
}

fn human(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// ns/packet vs prefix count (log x) with the headline figures beside it,
/// then Mpps by flood and each portcullis flood against its floor (medians
/// with min–max whiskers).
fn plot(r: &Results) -> String {
    let (w, h) = (1000.0, 2000.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    // Left panel.
    let (x0, y0, pw, ph) = (60.0, 40.0, 380.0, 300.0);
    let _ = writeln!(s, "<text x=\"{}\" y=\"22\" font-size=\"13\" text-anchor=\"middle\">ns/packet vs IPv4 blocklist prefixes (BPF_PROG_TEST_RUN)</text>", x0 + pw / 2.0);
    let ymax = r
        .per_packet
        .iter()
        .flatten()
        .copied()
        .fold(10.0f64, f64::max)
        * 1.15;
    let ymax = (ymax / 20.0).ceil() * 20.0;
    let _ = writeln!(s, "<rect x=\"{x0}\" y=\"{y0}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>");
    let xs = |i: usize| -> f64 {
        if r.sizes.len() <= 1 {
            return x0 + pw / 2.0;
        }
        let lmin = (r.sizes[0] as f64).log10();
        let lmax = (*r.sizes.last().unwrap() as f64).log10();
        x0 + 20.0 + (pw - 40.0) * ((r.sizes[i] as f64).log10() - lmin) / (lmax - lmin)
    };
    let ys = |v: f64| y0 + ph - ph * v / ymax;
    for k in 0..=4 {
        let v = ymax * k as f64 / 4.0;
        let _ = writeln!(s, "<line x1=\"{x0}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.0}</text>", x0 + pw, x0 - 4.0, ys(v) + 4.0, y = ys(v));
    }
    for (i, size) in r.sizes.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            xs(i),
            y0 + ph + 16.0,
            human(*size)
        );
    }
    // The baselines as dashed lines.
    // Labels at opposite ends: the two are close.
    for (name, key, tx, anchor) in [
        ("empty XDP_PASS", "empty_pass", x0 + pw - 4.0, "end"),
        ("parse-only", "parse_only", x0 + 4.0, "start"),
    ] {
        if let Some(v) = r.json.get("per_packet_ns").and_then(|p| p[key].as_f64()) {
            let _ = writeln!(s, "<line x1=\"{x0}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#555\" stroke-dasharray=\"4 3\"/><text x=\"{tx}\" y=\"{}\" text-anchor=\"{anchor}\" fill=\"#555\">{name} {v:.0}</text>", x0 + pw, ys(v) - 3.0, y = ys(v));
        }
    }
    for (line, ((key, _, _), v)) in KINDS.iter().zip(&r.per_packet).enumerate() {
        let c = COLORS[line % COLORS.len()];
        let pts: Vec<String> = v
            .iter()
            .enumerate()
            .map(|(i, y)| format!("{:.1},{:.1}", xs(i), ys(*y)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        for p in &pts {
            let (px, py) = p.split_once(',').unwrap();
            let _ = writeln!(s, "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{c}\"/>");
        }
        let ly = y0 + ph + 34.0 + 12.0 * (line / 2) as f64;
        let lx = x0 + (line % 2) as f64 * 200.0;
        let _ = writeln!(s, "<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"3\" fill=\"{c}\"/><text x=\"{}\" y=\"{ly}\">{key}</text>", ly - 4.0, lx + 14.0);
    }
    // Right of it: the headline figures.
    let n = |k: &str| r.num(k).unwrap_or(f64::NAN);
    let (tx, mut ty) = (520.0, 40.0);
    let _ = writeln!(s, "<text x=\"{tx}\" y=\"22\" font-size=\"13\">Throughput on veth against the floor (1M IPv4 + {} IPv6 /48s)</text>", human(r.json["v6_flood_prefixes"].as_u64().unwrap_or(0) as usize));
    let mut line = |s: &mut String, text: String, color: &str| {
        let _ = writeln!(
            s,
            "<text x=\"{tx}\" y=\"{ty}\" fill=\"{color}\">{}</text>",
            escape(&text)
        );
        ty += 16.0;
    };
    line(
        &mut s,
        format!(
            "empty XDP_DROP {:.2} Mpps; floor {:.2} Mpps ({:.2} × empty)",
            n("xdp_drop_empty_mpps"),
            n("floor_drop_mpps"),
            n("floor_ratio_vs_empty"),
        ),
        "#333",
    );
    line(
        &mut s,
        format!(
            "IPv6 floor {:.2} Mpps; floor with XDP_PASS {:.2} Mpps, IPv6 {:.2}",
            n("floor_drop_v6_mpps"),
            n("floor_pass_mpps"),
            n("floor_pass_v6_mpps")
        ),
        "#333",
    );
    line(
        &mut s,
        format!(
            "median of {} interleaved rounds; each ratio the median of its per-round ratios",
            r.json["veth_rounds"].as_u64().unwrap_or(0)
        ),
        "#333",
    );
    line(&mut s, String::new(), "#333");
    for (ratio, _, _, t) in RATIOS {
        let v = n(ratio);
        if !v.is_finite() || ratio.starts_with("ratio_vs_empty") {
            continue;
        }
        let (verdict, color) = match t {
            Some(t) if v >= t => (format!("  (target ≥ {t}: met)"), "#2ca02c"),
            Some(t) => (format!("  (target ≥ {t}: MISSED)"), "#d62728"),
            None => (String::new(), "#333"),
        };
        let (lo, hi) = r.ratio_range(ratio);
        line(
            &mut s,
            format!("{ratio} = {v:.2} [{lo:.2}–{hi:.2}]{verdict}"),
            color,
        );
    }

    // Mpps by flood.
    let items: Vec<Bar> = r
        .floods
        .iter()
        .map(|f| {
            let (lo, hi) = range(&f.samples);
            let m = f.median();
            Bar {
                label: match f.group {
                    Group::Portcullis => format!("portcullis: {}", f.label),
                    _ => f.label.clone(),
                },
                value: m,
                lo,
                hi,
                color: match f.group {
                    Group::Portcullis => "#1f77b4",
                    Group::Baseline => "#7f7f7f",
                    Group::Other => "#d62728",
                },
                target: None,
            }
        })
        .collect();
    let y0 = hbars(
        &mut s,
        &items,
        470.0,
        "Mpps on veth, median and min–max of the rounds (higher is better)",
        None,
    );
    // Portcullis against its floor.
    let items: Vec<Bar> = r
        .floods
        .iter()
        .filter_map(|f| {
            let (ratio, den, t) = floor_ratio_of(&f.key)?;
            let v = n(ratio);
            let (lo, hi) = r.ratio_range(ratio);
            Some(Bar {
                label: format!("{} [{}]", f.label, den.trim_start_matches("floor_")),
                value: v,
                lo,
                hi,
                color: match t {
                    Some(t) if v >= t => "#2ca02c",
                    Some(_) => "#d62728",
                    None => "#1f77b4",
                },
                target: t,
            })
        })
        .collect();
    let end = hbars(
        &mut s,
        &items,
        y0 + 50.0,
        "against the floor: [drop] read the source, count, drop; [drop_v6] the same for IPv6; [pass] with XDP_PASS",
        Some(1.0),
    );
    let _ = writeln!(s, "<text x=\"400\" y=\"{}\" fill=\"#555\">black ticks: the issue's targets (green: met, red: missed); whiskers: min–max over the rounds</text>", end + 4.0);
    // The height is known only now: the header was written with a placeholder.
    let mut s = s.replacen(
        &format!("height=\"{h}\" viewBox=\"0 0 {w} {h}\""),
        &format!("height=\"{0}\" viewBox=\"0 0 {w} {0}\"", end + 20.0),
        1,
    );
    s.push_str("</svg>\n");
    s
}

struct Bar {
    label: String,
    value: f64,
    lo: f64,
    hi: f64,
    color: &'static str,
    target: Option<f64>,
}

/// A full-width panel of horizontal bars (labels left of the axis) from `y0`
/// (its title above it); `reference` draws a darker grid line there. Returns
/// where the panel ends.
fn hbars(s: &mut String, items: &[Bar], y0: f64, title: &str, reference: Option<f64>) -> f64 {
    let (x0, pw, bh) = (400.0, 560.0, 20.0);
    let ph = bh * items.len().max(1) as f64;
    let _ = writeln!(
        s,
        "<text x=\"500\" y=\"{}\" font-size=\"13\" text-anchor=\"middle\">{}</text>",
        y0 - 14.0,
        escape(title)
    );
    let max = items
        .iter()
        .map(|b| if b.hi.is_finite() { b.hi } else { b.value })
        .filter(|v| v.is_finite())
        .fold(reference.unwrap_or(0.0) * 1.1, f64::max)
        .max(0.1);
    let step = [0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0]
        .into_iter()
        .find(|st| max / st <= 8.0)
        .unwrap_or(10.0);
    let max = (max / step).ceil() * step;
    let xv = |v: f64| x0 + pw * v.clamp(0.0, max) / max;
    let _ = writeln!(s, "<rect x=\"{x0}\" y=\"{y0}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>");
    let mut k = 0.0;
    while k <= max + 1e-9 {
        let dark = reference.is_some_and(|r| (k - r).abs() < 1e-9);
        let _ = writeln!(s, "<line x1=\"{x}\" x2=\"{x}\" y1=\"{y0}\" y2=\"{}\" stroke=\"{}\"/><text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>", y0 + ph, if dark { "#555" } else { "#eee" }, y0 + ph + 14.0, trim(k), x = xv(k));
        k += step;
    }
    for (i, b) in items.iter().enumerate() {
        let y = y0 + i as f64 * bh;
        if b.value.is_finite() {
            let _ = writeln!(s, "<rect x=\"{x0}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" opacity=\"0.6\"/>", y + 3.0, xv(b.value) - x0, bh - 6.0, b.color);
            whisker(s, xv(b.lo), xv(b.hi), y + bh / 2.0);
        }
        if let Some(t) = b.target {
            let _ = writeln!(s, "<line x1=\"{x}\" x2=\"{x}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#000\" stroke-width=\"2\"/>", y + 1.0, y + bh - 1.0, x = xv(t));
        }
        let right = if b.hi.is_finite() {
            b.hi.max(b.value)
        } else {
            b.value
        };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><text x=\"{:.1}\" y=\"{:.1}\">{:.2}</text>",
            x0 - 6.0,
            y + bh / 2.0 + 4.0,
            escape(&b.label),
            (xv(right) + 5.0).min(x0 + pw - 24.0),
            y + bh / 2.0 + 4.0,
            b.value,
        );
    }
    y0 + ph + 30.0
}

fn trim(v: f64) -> String {
    let t = format!("{v:.2}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A min–max whisker at height `y`.
fn whisker(s: &mut String, x1: f64, x2: f64, y: f64) {
    if x1.is_finite() && x2.is_finite() {
        let _ = writeln!(s, "<line x1=\"{x1:.1}\" x2=\"{x2:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#000\"/><line x1=\"{x1:.1}\" x2=\"{x1:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#000\"/><line x1=\"{x2:.1}\" x2=\"{x2:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#000\"/>", y - 3.0, y + 3.0, y - 3.0, y + 3.0);
    }
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
