//! `portcullis events`, `top`, `sampling` and `log-packets`.
//!
//! `events` and `top` read the daemon's stream on the control socket (see
//! `daemon/events.rs`); `sampling` and `log-packets` write the pinned
//! `EVENTS_CFG` directly, so they work the same with the daemon up or down
//! and the setting outlives a restart.
use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use filter_common::Reason;
use serde::{Deserialize, Serialize};

use super::{EventsMaps, Mode, Record, Sampling, Stats};
use crate::{
    daemon::control::{self, Request, DEFAULT_CONTROL_SOCKET},
    loader::{PinRoot, DEFAULT_PIN_ROOT},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// JSON: one record per line (`events`), one document (`top`, `sampling`).
    Json,
}

impl Format {
    pub fn is_json(self) -> bool {
        self == Format::Json
    }
}

/// A duration: `500ms`, `10s`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 500ms, 10s, 2m)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m or h)")),
    };
    if d.is_zero() {
        return Err("the duration must be longer than 0".into());
    }
    Ok(d)
}

fn parse_reason(s: &str) -> Result<String, String> {
    if Reason::ALL.iter().any(|r| r.as_str() == s) {
        return Ok(s.to_string());
    }
    let all: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    Err(format!("unknown reason `{s}`; one of {}", all.join(", ")))
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events of this reason (repeatable): blocklist, not_allowed, unmatched, …
    #[arg(long, value_name = "R", value_parser = parse_reason)]
    pub reason: Vec<String>,
    /// Only events of this zone (repeatable; `global` for the defaults and the
    /// blocklist, `failsafe`).
    #[arg(long, value_name = "Z")]
    pub zone: Vec<String>,
    /// Only events that arrived on this interface (repeatable).
    #[arg(long, value_name = "IF")]
    pub iface: Vec<String>,
    /// Stop after N events (that pass the filters).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this long (500ms, 10s, 2m); default: run until interrupted.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,
    /// Output: text lines, or one JSON record per line.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// How long to watch (500ms, 10s, 2m).
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration)]
    pub window: Duration,
    /// Rows per table.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub limit: usize,
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,
    /// Output format for stdout.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// What to sample: off, drops, drops+audit, all (omitted: keep; with no
    /// change at all, only show the setting).
    #[arg(value_name = "MODE", value_parser = parse_mode)]
    pub mode: Option<Mode>,
    /// Events per second per CPU (1 to 1000000).
    #[arg(long, value_name = "N")]
    pub rate: Option<u32>,
    /// Events a CPU may send at once after a quiet spell (1 to 1000000).
    #[arg(long, value_name = "N")]
    pub burst: Option<u32>,
    /// Return to the policy's `[events]` (asks a running daemon to reload).
    #[arg(long, conflicts_with_all = ["mode", "rate", "burst"])]
    pub reset: bool,
    /// Where the filter is pinned.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pub pin_root: PathBuf,
    /// The daemon's control socket (for --reset).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,
    /// Output format for stdout.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    Mode::parse(s).ok_or_else(|| format!("`{s}`: one of {}", Mode::NAMES.join(", ")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct LogPacketsArgs {
    /// on: the daemon logs each sampled decision (addresses, interface, zone,
    /// reason; sampling switches to `all` if it was off); off: it stops.
    #[arg(value_enum)]
    pub state: OnOff,
    /// Where the filter is pinned.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pub pin_root: PathBuf,
    /// Output format for stdout.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// The stream's first line.
#[derive(Debug, Deserialize)]
struct Header {
    ok: bool,
    #[serde(default)]
    sampling: Option<Sampling>,
    #[serde(default)]
    error: Option<String>,
}

/// A line after the header.
#[derive(Debug, Deserialize)]
struct Line {
    #[serde(default)]
    event: Option<Record>,
    #[serde(default)]
    lagged: Option<u64>,
}

/// An open stream of events from the daemon.
struct Stream {
    reader: BufReader<UnixStream>,
    deadline: Option<Instant>,
    sampling: Option<Sampling>,
    /// Lines this reader lost by being slow.
    lagged: u64,
}

enum Next {
    Event(Box<Record>),
    /// The deadline passed.
    Done,
    /// The daemon closed the stream.
    Closed,
}

impl Stream {
    fn open(socket: &Path, deadline: Option<Instant>) -> Result<Stream> {
        let mut s =
            UnixStream::connect(socket).map_err(|source| control::ClientError::Connect {
                path: socket.to_path_buf(),
                source,
            })?;
        let mut line = serde_json::to_string(&Request::Events)?;
        line.push('\n');
        s.set_write_timeout(Some(control::REQUEST_TIMEOUT))?;
        s.write_all(line.as_bytes())
            .with_context(|| format!("asking {} for events", socket.display()))?;
        s.set_read_timeout(Some(control::REQUEST_TIMEOUT))?;
        let mut reader = BufReader::new(s);
        let mut first = String::new();
        reader
            .read_line(&mut first)
            .with_context(|| format!("reading the answer on {}", socket.display()))?;
        let header: Header = serde_json::from_str(&first).with_context(|| {
            format!(
                "the daemon on {} does not stream events (answer {:?}); is it older than this CLI?",
                socket.display(),
                first.trim()
            )
        })?;
        if !header.ok {
            bail!(
                "{}",
                header
                    .error
                    .unwrap_or_else(|| "the daemon refused the event stream".into())
            );
        }
        Ok(Stream {
            reader,
            deadline,
            sampling: header.sampling,
            lagged: 0,
        })
    }

    fn next(&mut self) -> Result<Next> {
        loop {
            let wait = match self.deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(w) if !w.is_zero() => Some(w),
                    _ => return Ok(Next::Done),
                },
                None => None,
            };
            self.reader.get_ref().set_read_timeout(wait)?;
            let mut text = String::new();
            match self.reader.read_line(&mut text) {
                Ok(0) => return Ok(Next::Closed),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Next::Done)
                }
                Err(e) => return Err(e).context("reading the event stream"),
            }
            let line: Line = match serde_json::from_str(&text) {
                Ok(l) => l,
                Err(_) => continue,
            };
            if let Some(n) = line.lagged {
                self.lagged += n;
                eprintln!("portcullis: {n} events lost: this reader fell behind the daemon");
            }
            if let Some(r) = line.event {
                return Ok(Next::Event(Box::new(r)));
            }
        }
    }

    /// Tells on stderr what is being sampled (nothing comes while off).
    fn describe(&self, what: &str) {
        match &self.sampling {
            Some(s) if s.sample == Mode::Off => eprintln!(
                "portcullis: sampling is off, so no events will come; switch it on with \
                 `portcullis sampling drops` (or `[events] sample = \"drops\"` in the policy)"
            ),
            Some(s) => eprintln!("portcullis: {what} (sampling: {s})"),
            None => eprintln!("portcullis: {what}"),
        }
    }
}

fn matches(args: &EventsArgs, r: &Record) -> bool {
    (args.reason.is_empty() || args.reason.contains(&r.reason))
        && (args.zone.is_empty() || args.zone.contains(&r.zone))
        && (args.iface.is_empty() || args.iface.contains(&r.iface))
}

/// `println!` that treats a closed pipe (`| head`) as the end.
fn out_line(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).is_ok()
}

pub fn events(args: &EventsArgs) -> Result<ExitCode> {
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let mut stream = Stream::open(&args.control_socket, deadline)?;
    stream.describe("streaming events");
    let mut shown = 0u64;
    while args.count.is_none_or(|n| shown < n) {
        let r = match stream.next()? {
            Next::Event(r) => r,
            Next::Done => break,
            Next::Closed => {
                eprintln!("portcullis: the daemon closed the event stream");
                break;
            }
        };
        if !matches(args, &r) {
            continue;
        }
        let text = if args.output.is_json() {
            serde_json::to_string(&r)?
        } else {
            r.to_string()
        };
        if !out_line(&text) {
            break;
        }
        shown += 1;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct SourceRow {
    src: String,
    events: u64,
    /// The most frequent reason and zone of its events.
    reason: String,
    zone: String,
    iface: String,
}

#[derive(Debug, Serialize)]
struct ZoneRow {
    zone: String,
    events: u64,
}

#[derive(Debug, Serialize)]
struct Top {
    ok: bool,
    window_ms: u128,
    /// Dropped events seen in the window (sampled, not every packet).
    events: u64,
    lagged: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sampling: Option<Sampling>,
    sources: Vec<SourceRow>,
    zones: Vec<ZoneRow>,
}

#[derive(Default)]
struct Tally {
    events: u64,
    reasons: HashMap<String, u64>,
    zones: HashMap<String, u64>,
    iface: String,
}

fn most(m: &HashMap<String, u64>) -> String {
    m.iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(k, _)| k.clone())
        .unwrap_or_default()
}

/// Ranks sources and zones by their dropped events; ties by name.
fn rank(records: &[Record], limit: usize) -> (Vec<SourceRow>, Vec<ZoneRow>) {
    let mut by_src: HashMap<String, Tally> = HashMap::new();
    let mut by_zone: HashMap<String, u64> = HashMap::new();
    for r in records.iter().filter(|r| r.verdict == "drop") {
        let src = r
            .src
            .map_or_else(|| "(no IP)".to_string(), |a| a.to_string());
        let t = by_src.entry(src).or_default();
        t.events += 1;
        *t.reasons.entry(r.reason.clone()).or_default() += 1;
        *t.zones.entry(r.zone.clone()).or_default() += 1;
        t.iface.clone_from(&r.iface);
        *by_zone.entry(r.zone.clone()).or_default() += 1;
    }
    let mut sources: Vec<SourceRow> = by_src
        .into_iter()
        .map(|(src, t)| SourceRow {
            src,
            events: t.events,
            reason: most(&t.reasons),
            zone: most(&t.zones),
            iface: t.iface,
        })
        .collect();
    sources.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.src.cmp(&b.src)));
    sources.truncate(limit);
    let mut zones: Vec<ZoneRow> = by_zone
        .into_iter()
        .map(|(zone, events)| ZoneRow { zone, events })
        .collect();
    zones.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.zone.cmp(&b.zone)));
    zones.truncate(limit);
    (sources, zones)
}

pub fn top(args: &TopArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let mut stream = Stream::open(&args.control_socket, Some(started + args.window))?;
    stream.describe(&format!(
        "watching dropped events for {}",
        humantime(args.window)
    ));
    let mut records = Vec::new();
    // Bounded: the daemon's rate limit, and this cap.
    while records.len() < 1_000_000 {
        match stream.next()? {
            Next::Event(r) => records.push(*r),
            Next::Done | Next::Closed => break,
        }
    }
    let (sources, zones) = rank(&records, args.limit);
    let top = Top {
        ok: true,
        window_ms: args.window.as_millis(),
        events: records.iter().filter(|r| r.verdict == "drop").count() as u64,
        lagged: stream.lagged,
        sampling: stream.sampling,
        sources,
        zones,
    };
    if args.output.is_json() {
        out_line(&serde_json::to_string_pretty(&top)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = format!(
        "{} dropped events in {} (sampled: each is one packet, not all are shown)\n\n",
        top.events,
        humantime(args.window)
    );
    text.push_str(&format!(
        "{:>8}  {:<40} {:<15} {:<16} {}\n",
        "events", "source", "reason", "zone", "iface"
    ));
    for s in &top.sources {
        text.push_str(&format!(
            "{:>8}  {:<40} {:<15} {:<16} {}\n",
            s.events, s.src, s.reason, s.zone, s.iface
        ));
    }
    text.push_str(&format!("\n{:>8}  {}\n", "events", "zone"));
    for z in &top.zones {
        text.push_str(&format!("{:>8}  {}\n", z.events, z.zone));
    }
    out_line(text.trim_end());
    Ok(ExitCode::SUCCESS)
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// `sampling -o json`, `log-packets -o json`.
#[derive(Serialize)]
struct Shown {
    ok: bool,
    sampling: Sampling,
    stats: Stats,
}

fn show(maps: &EventsMaps, output: Format, changed: bool) -> Result<()> {
    let sampling = maps.sampling()?;
    let stats = maps.stats()?;
    if output.is_json() {
        out_line(&serde_json::to_string_pretty(&Shown {
            ok: true,
            sampling,
            stats,
        })?);
    } else {
        let verb = if changed { "now" } else { "is" };
        out_line(&format!(
            "sampling {verb}: {sampling}\nevents emitted {}, suppressed by the rate limit {}, \
             lost (ring full) {}",
            stats.emitted, stats.suppressed, stats.lost
        ));
    }
    Ok(())
}

pub fn sampling(args: &SamplingArgs) -> Result<ExitCode> {
    let root = PinRoot::new(&args.pin_root);
    let mut maps = EventsMaps::open(&root)?;
    let mut s = maps.sampling()?;
    if args.reset {
        s.runtime_override = false;
        s.log = false;
        maps.set(&s)?;
        // The daemon writes the policy's [events] at reload (an unchanged
        // policy is not rewritten, and keeps its generation).
        if control::ping(&args.control_socket) {
            let answer = control::request(
                &args.control_socket,
                &Request::Reload,
                Duration::from_secs(300),
            )?;
            if !answer.ok {
                bail!(
                    "the runtime setting was cleared, but the reload that applies the policy's \
                     [events] was rejected: {}",
                    answer.error.unwrap_or_default()
                );
            }
        } else {
            eprintln!(
                "portcullis: no daemon answers on {}: the policy's [events] applies at its next start",
                args.control_socket.display()
            );
        }
        show(&maps, args.output, true)?;
        return Ok(ExitCode::SUCCESS);
    }
    let change = args.mode.is_some() || args.rate.is_some() || args.burst.is_some();
    if change {
        if let Some(m) = args.mode {
            s.sample = m;
        }
        if let Some(r) = args.rate {
            s.rate = r;
        }
        if let Some(b) = args.burst {
            s.burst = b;
        }
        s.runtime_override = true;
        maps.set(&s)?;
    }
    show(&maps, args.output, change)?;
    Ok(ExitCode::SUCCESS)
}

/// Packet logging switched on (sampling `all` if it was off) or off; a
/// runtime setting either way.
pub fn log_packets_setting(mut s: Sampling, on: bool) -> Sampling {
    s.log = on;
    if on && s.sample == Mode::Off {
        s.sample = Mode::All;
    }
    s.runtime_override = true;
    s
}

pub fn log_packets(args: &LogPacketsArgs) -> Result<ExitCode> {
    let root = PinRoot::new(&args.pin_root);
    let mut maps = EventsMaps::open(&root)?;
    let s = log_packets_setting(maps.sampling()?, args.state == OnOff::On);
    maps.set(&s)?;
    show(&maps, args.output, true)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(src: &str, zone: &str, verdict: &str) -> Record {
        Record {
            time: String::new(),
            unix_ns: 0,
            iface: "inet0".into(),
            verdict: verdict.into(),
            reason: "not_allowed".into(),
            zone: zone.into(),
            family: "ipv4".into(),
            src: Some(src.parse().unwrap()),
            dst: None,
            proto: None,
            sport: None,
            dport: None,
            len: 60,
        }
    }

    #[test]
    fn durations_take_units_and_refuse_zero_and_nonsense() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn top_ranks_the_flooding_source_first_and_counts_only_drops() {
        let mut rs = Vec::new();
        for _ in 0..50 {
            rs.push(rec("198.18.0.2", "keep-admin", "drop"));
        }
        for _ in 0..5 {
            rs.push(rec("203.0.113.7", "global", "drop"));
        }
        for _ in 0..500 {
            rs.push(rec("10.20.0.2", "keep-admin", "pass"));
        }
        let (sources, zones) = rank(&rs, 10);
        assert_eq!(sources.len(), 2);
        assert_eq!(
            (sources[0].src.as_str(), sources[0].events),
            ("198.18.0.2", 50)
        );
        assert_eq!(sources[0].zone, "keep-admin");
        assert_eq!(
            (zones[0].zone.as_str(), zones[0].events),
            ("keep-admin", 50)
        );
        assert_eq!((zones[1].zone.as_str(), zones[1].events), ("global", 5));
        let (one, _) = rank(&rs, 1);
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn log_packets_on_samples_everything_when_sampling_was_off() {
        let off = Sampling::of_config(&Default::default());
        let on = log_packets_setting(off, true);
        assert!(on.log && on.runtime_override);
        assert_eq!(on.sample, Mode::All);
        let drops = Sampling {
            sample: Mode::Drops,
            ..off
        };
        assert_eq!(log_packets_setting(drops, true).sample, Mode::Drops);
        let back = log_packets_setting(on, false);
        assert!(!back.log);
        assert_eq!(back.sample, Mode::All);
    }

    #[test]
    fn filters_combine_reason_zone_and_iface() {
        let args = EventsArgs {
            reason: vec!["not_allowed".into()],
            zone: vec!["keep-admin".into()],
            iface: vec![],
            count: None,
            timeout: None,
            control_socket: PathBuf::new(),
            output: Format::Json,
        };
        assert!(matches(&args, &rec("1.2.3.4", "keep-admin", "drop")));
        assert!(!matches(&args, &rec("1.2.3.4", "global", "drop")));
        assert!(parse_reason("blocklist").is_ok());
        assert!(parse_reason("blocked").is_err());
    }
}
