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
    /// (key, label, Mpps, generator Mpps)
    floods: Vec<(String, String, f64, f64)>,
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

    pub fn push_mpps(&mut self, key: &str, label: &str, mpps: f64, gen: f64, trials: &[f64]) {
        self.floods.push((key.into(), label.into(), mpps, gen));
        self.json.insert(
            format!("{key}_trials_mpps"),
            json!(trials.iter().map(|x| round(*x)).collect::<Vec<_>>()),
        );
        self.set_num(&format!("{key}_mpps"), mpps);
        self.set_num(&format!("{key}_generator_mpps"), gen);
        let get = |k: &str| self.num(&format!("{k}_mpps"));
        let (p, e, nf, ip) = (
            get("portcullis_drop"),
            get("xdp_drop_empty"),
            get("nftables_drop"),
            get("iptables_drop"),
        );
        for (key, part) in [
            ("ratio_vs_empty_nets_only", get("portcullis_drop_nets")),
            ("ratio_vs_empty_cache_resident", get("portcullis_drop_hot")),
        ] {
            if let (Some(x), Some(e)) = (part, e) {
                self.set_num(key, x / e);
            }
        }
        for (key, other) in [
            ("ratio_vs_empty", e),
            ("ratio_vs_nftables", nf),
            ("ratio_vs_iptables", ip),
        ] {
            if let (Some(p), Some(o)) = (p, other) {
                self.set_num(key, p / o);
            }
        }
    }
}

fn round(v: f64) -> f64 {
    if v.is_finite() {
        (v * 1000.0).round() / 1000.0
    } else {
        -1.0
    }
}

/// Keys every run must write.
pub const REQUIRED: [&str; 9] = [
    "xdp_drop_empty_mpps",
    "portcullis_drop_mpps",
    "nftables_drop_mpps",
    "ratio_vs_empty",
    "ratio_vs_nftables",
    "growth_1m_over_1k",
    "load_1m_seconds",
    "reload_one_line_ms",
    "rss_mib",
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
        "Per-packet cost, BPF_PROG_TEST_RUN (ns/packet; empty XDP_PASS {:.1}, parse-only {:.1}):\n",
        r.json["per_packet_ns"]["empty_pass"]
            .as_f64()
            .unwrap_or(f64::NAN),
        r.json["per_packet_ns"]["parse_only"]
            .as_f64()
            .unwrap_or(f64::NAN)
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
    println!("\nThroughput on veth (one core generating, one core receiving; 64-byte UDP, random sources):\n");
    println!("| system | Mpps | vs empty XDP_DROP |");
    println!("|---|---|---|");
    let empty = n("xdp_drop_empty_mpps");
    for (_, label, mpps, _) in &r.floods {
        println!("| {label} | {mpps:.2} | {:.2} |", mpps / empty);
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
    println!("\n| figure | value | target | |");
    println!("|---|---|---|---|");
    let rows: [(&str, &str, f64, &str, bool); 6] = [
        (
            "ratio_vs_empty",
            "portcullis drop / empty XDP_DROP",
            n("ratio_vs_empty"),
            "≥ 0.90",
            n("ratio_vs_empty") >= 0.9,
        ),
        (
            "ratio_vs_nftables",
            "portcullis drop / nftables drop",
            n("ratio_vs_nftables"),
            "≥ 3.0",
            n("ratio_vs_nftables") >= 3.0,
        ),
        (
            "growth_1m_over_1k",
            "ns/packet growth 1M / 1k (worst IPv4 probe)",
            n("growth_1m_over_1k"),
            "≤ 1.3",
            n("growth_1m_over_1k") <= 1.3,
        ),
        (
            "load_1m_seconds",
            "load 1M + 100k policy (s)",
            n("load_1m_seconds"),
            "≤ 1.0",
            n("load_1m_seconds") <= 1.0,
        ),
        (
            "reload_one_line_ms",
            "one-line change to the 1M policy (ms)",
            n("reload_one_line_ms"),
            "≤ 20",
            n("reload_one_line_ms") <= 20.0,
        ),
        (
            "rss_mib",
            "daemon RSS with the 1M policy (MiB)",
            n("rss_mib"),
            "≤ 40",
            n("rss_mib") <= 40.0,
        ),
    ];
    for (_, label, v, t, ok) in rows {
        println!("| {label} | {v:.2} | {t} | {} |", target(ok));
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

/// Two panels: ns/packet vs prefix count (log x), and Mpps by system.
fn plot(r: &Results) -> String {
    let (w, h) = (1000.0, 420.0);
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
    // Right panel.
    let (x0, pw) = (560.0, 400.0);
    let _ = writeln!(s, "<text x=\"{}\" y=\"22\" font-size=\"13\" text-anchor=\"middle\">Mpps on veth, 1M-prefix policy (higher is better)</text>", x0 + pw / 2.0);
    let mmax = r.floods.iter().map(|f| f.2).fold(1.0f64, f64::max) * 1.1;
    let bh = (ph / r.floods.len().max(1) as f64).min(34.0);
    for (i, (_, label, mpps, _)) in r.floods.iter().enumerate() {
        let y = y0 + i as f64 * bh;
        let bw = (pw - 10.0) * mpps / mmax;
        let c = if label.starts_with("portcullis") {
            "#1f77b4"
        } else if label.starts_with("empty") {
            "#7f7f7f"
        } else {
            "#d62728"
        };
        let _ = writeln!(s, "<rect x=\"{x0}\" y=\"{}\" width=\"{bw:.1}\" height=\"{}\" fill=\"{c}\" opacity=\"0.8\"/>", y + 3.0, bh - 6.0);
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\">{} — {mpps:.2}</text>",
            x0 + 4.0,
            y + bh / 2.0 + 4.0,
            escape(label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
