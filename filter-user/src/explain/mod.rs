//! `portcullis explain`: what the filter in force does with one packet, and
//! why. The frame is built here and run through the live program (the one
//! behind the pinned link, by BPF_PROG_TEST_RUN); the program returns only
//! the XDP action, so the reason and the rule are read from the counters as
//! the verdict suite does: every frame moves exactly one counter. Then the
//! policy named by the pinned META record is read again to point at the lines
//! responsible. Only pins are read: it works with the daemon down.
//!
//! BPF_PROG_TEST_RUN frames have no ingress interface and count in counter
//! slot 0, the one `status` and the metrics call interface "other".
pub mod cli;
pub mod frame;
pub mod lines;

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use aya::programs::{
    links::{FdLink, PinnedLink},
    loaded_programs, ProgramInfo, TestRun, TestRunOptions, Xdp,
};
use aya_obj::programs::XdpAttachType;
use filter_common::{decode_counter_index, Counter, Reason, Verdict, RULE_FAILSAFE, RULE_GLOBAL};
use serde::Serialize;

pub use frame::Fragment;
use frame::FrameSpec;
pub use lines::PolicyLine;

use crate::{
    loader::{LoaderError, PinRoot},
    policy::{self, Proto},
};

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("no filter is attached under {} (no pinned link); is portcullis running with this --pin-root?", .0.display())]
    NoFilter(PathBuf),
    #[error("interface {iface} has no pinned link under {root}; attached: {attached}")]
    NotAttached {
        iface: String,
        root: String,
        attached: String,
    },
    #[error("the link of {iface}: {detail}")]
    Link { iface: String, detail: String },
    #[error("program {0} behind the link is not loaded any more (a reload swapped it); try again")]
    ProgramGone(u32),
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error("BPF_PROG_TEST_RUN: {0}")]
    TestRun(#[from] aya::programs::ProgramError),
    #[error(
        "other frames counted under interface \"other\" at the same time in each of {0} tries \
         (traffic from an interface index beyond 65535?); the decision could not be read"
    )]
    Ambiguous(u32),
    #[error("the program returned XDP action {action}, but the counter says {verdict}; the pins and the program disagree")]
    Inconsistent { action: u32, verdict: &'static str },
    #[error("{0}")]
    Query(String),
}

/// The packet to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub from: IpAddr,
    pub proto: Proto,
    pub port: u16,
    /// The interface whose program runs the frame; the first attached if none.
    pub iface: Option<String>,
    pub vlan: Option<u16>,
    pub fragment: Option<Fragment>,
    /// Destination address; a documentation address of the source's family if
    /// none (zones judge destination ports, not addresses).
    pub dst: Option<IpAddr>,
    /// The daemon's state directory (the feeds' cached copies).
    pub state_dir: std::path::PathBuf,
}

/// Parses `--to`: `8889/tcp`, `53/UDP`, `2905/sctp`.
pub fn parse_to(s: &str) -> Result<(u16, Proto), String> {
    let (port, proto) = s.trim().split_once('/').ok_or_else(|| {
        format!(
            "\"{s}\" needs a protocol: write PORT/PROTO, e.g. \"{}/tcp\"",
            s.trim()
        )
    })?;
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "sctp" => Proto::Sctp,
        other => {
            return Err(format!(
                "unknown protocol \"{other}\": use tcp, udp or sctp"
            ))
        }
    };
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("\"{port}\" is not a port (0-65535); one port, not a range"))?;
    Ok((port, proto))
}

/// Parses `--fragment`.
pub fn parse_fragment(s: &str) -> Result<Fragment, String> {
    match s {
        "first" => Ok(Fragment::First),
        "later" => Ok(Fragment::Later),
        _ => Err(format!("\"{s}\": use first or later")),
    }
}

/// Parses `--vlan` (an 802.1Q VLAN id).
pub fn parse_vlan(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(v) if v <= 4094 => Ok(v),
        _ => Err(format!("\"{s}\" is not a VLAN id (0-4094)")),
    }
}

impl Query {
    fn frame(&self) -> Result<FrameSpec, ExplainError> {
        let dst = self.dst.unwrap_or(match self.from {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        });
        if dst.is_ipv4() != self.from.is_ipv4() {
            return Err(ExplainError::Query(format!(
                "--from {} and --dst {dst} are of different address families",
                self.from
            )));
        }
        Ok(FrameSpec {
            src: self.from,
            dst,
            proto: self.proto,
            sport: frame::SOURCE_PORT,
            dport: self.port,
            vlan: self.vlan,
            fragment: self.fragment,
        })
    }
}

/// What the filter did with the packet, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// Always true: a failure is an error (`{"ok": false, "error": …}` with `-o json`).
    pub ok: bool,
    pub verdict: &'static str,
    pub reason: &'static str,
    /// Counter rule: 0 = global, 1..=64 zones, 65 = failsafe.
    pub rule: u32,
    /// `global`, `failsafe`, or the zone's name from the META record.
    pub zone: String,
    pub packet: Packet,
    pub interface: String,
    pub program_id: u32,
    pub link_id: u32,
    pub generation: u32,
    pub policy_path: Option<String>,
    /// The policy file (or a list file) changed since it was applied, or the
    /// META record does not describe the enforced generation: the lines are
    /// those of the file as it is now.
    pub policy_changed: bool,
    pub lines: Vec<PolicyLine>,
    /// Why no lines could be given, or what to beware of.
    pub notes: Vec<String>,
    /// The counter slot the test frame was counted in.
    pub counted_as: &'static str,
    /// Tries needed to see exactly one counter move.
    pub tries: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: &'static str,
    pub sport: u16,
    pub dport: u16,
    pub vlan: Option<u16>,
    pub fragment: Option<Fragment>,
    pub bytes: usize,
}

/// Tries to see exactly one counter move before giving up.
const MAX_TRIES: u32 = 5;

/// Runs the query's frame through the program behind the pinned link.
pub fn explain(pin_root: &Path, query: &Query) -> Result<Explanation, ExplainError> {
    let spec = query.frame()?;
    let root = PinRoot::new(pin_root);
    let attached = root.pinned_links();
    let iface = match &query.iface {
        Some(i) if attached.contains(i) => i.clone(),
        Some(i) => {
            return Err(ExplainError::NotAttached {
                iface: i.clone(),
                root: pin_root.display().to_string(),
                attached: if attached.is_empty() {
                    "none".into()
                } else {
                    attached.join(", ")
                },
            })
        }
        None => attached
            .first()
            .cloned()
            .ok_or_else(|| ExplainError::NoFilter(pin_root.to_path_buf()))?,
    };
    let (program, program_id, link_id) = live_program(&root, &iface)?;
    let state = root.open()?;
    let generation = state.generation()?;
    let meta = state.meta()?;

    let bytes = frame::build(&spec);
    let opts = || TestRunOptions {
        data_in: Some(&bytes),
        repeat: 1,
        ..Default::default()
    };
    let mut decided = None;
    let mut tries = 0;
    while tries < MAX_TRIES && decided.is_none() {
        tries += 1;
        let before = state.counters(0)?;
        let action = program.test_run(opts())?.return_value;
        let after = state.counters(0)?;
        if let Some(d) = one_moved(&before, &after).and_then(|one| decode_counter_index(one as u32))
        {
            decided = Some((d, action));
        }
    }
    let ((rule, reason, verdict), action) = decided.ok_or(ExplainError::Ambiguous(MAX_TRIES))?;
    let expected_action = match (verdict, reason) {
        (Verdict::Pass, _) => 2,
        // A rejecting zone's reply leaves by XDP_TX.
        (Verdict::Drop, Reason::Rejected) => 3,
        (Verdict::Drop, _) => 1,
    };
    if action != expected_action {
        return Err(ExplainError::Inconsistent {
            action,
            verdict: verdict.as_str(),
        });
    }
    let zone = match rule {
        RULE_GLOBAL => "global".to_string(),
        RULE_FAILSAFE => "failsafe".to_string(),
        id => meta
            .zone_name(id)
            .map_or_else(|| format!("zone {id}"), str::to_string),
    };

    let mut notes = Vec::new();
    let mut changed = false;
    let mut found = Vec::new();
    let policy_path = (!meta.policy_path.is_empty()).then(|| meta.policy_path.clone());
    if !meta.describes(generation) {
        changed = true;
        notes.push(format!(
            "the META record describes generation {} but {generation} is enforced (an apply \
             was interrupted): the policy file may not be what runs",
            meta.generation
        ));
    }
    match &policy_path {
        None => notes.push("the META record names no policy file".into()),
        Some(p) => {
            let path = Path::new(p);
            match policy::load_in(path, &query.state_dir) {
                Ok(c) if c.source_hash_hex() == meta.policy_hash => {}
                Ok(_) => {
                    changed = true;
                    notes.push(format!(
                        "{p} (or a list file) changed since it was applied: the lines below are \
                         from the files as they are now and may not be the ones in force; \
                         `portcullis reload` applies the change"
                    ));
                }
                Err(e) => {
                    changed = true;
                    notes.push(format!(
                        "{p} changed since it was applied and does not compile now ({} error{}; \
                         `portcullis check` shows them)",
                        e.len(),
                        if e.len() == 1 { "" } else { "s" }
                    ));
                }
            }
            match std::fs::read_to_string(path) {
                Ok(text) => match lines::Source::parse(path, &text) {
                    Some(src) => {
                        let src = src.with_state_dir(&query.state_dir);
                        found = responsible(&src, reason, &zone, &spec);
                    }
                    None => notes.push(format!("{p} is not TOML any more; no lines shown")),
                },
                Err(e) => notes.push(format!("cannot read {p}: {e}; no lines shown")),
            }
        }
    }
    if found.is_empty() {
        if let Some(n) = default_note(reason) {
            notes.push(n.into());
        }
    }
    Ok(Explanation {
        ok: true,
        verdict: verdict.as_str(),
        reason: reason.as_str(),
        rule,
        zone,
        packet: Packet {
            src: spec.src,
            dst: spec.dst,
            proto: spec.proto.as_str(),
            sport: spec.sport,
            dport: spec.dport,
            vlan: spec.vlan,
            fragment: spec.fragment,
            bytes: bytes.len(),
        },
        interface: iface,
        program_id,
        link_id,
        generation,
        policy_path,
        policy_changed: changed,
        lines: found,
        notes,
        counted_as: "other",
        tries,
    })
}

/// The one counter that moved by exactly one packet, if no other moved: the
/// test frame's. Anything else means other frames were counted meanwhile.
fn one_moved(before: &[Counter], after: &[Counter]) -> Option<usize> {
    let mut moved =
        (0..before.len().min(after.len())).filter(|i| after[*i].packets != before[*i].packets);
    let one = moved.next()?;
    (moved.next().is_none() && after[one].packets == before[one].packets + 1).then_some(one)
}

/// The program behind `iface`'s pinned link: its handle, program id, link id.
fn live_program(root: &PinRoot, iface: &str) -> Result<(Xdp, u32, u32), ExplainError> {
    let link_err = |detail: String| ExplainError::Link {
        iface: iface.into(),
        detail,
    };
    let pinned = PinnedLink::from_pin(root.link(iface)).map_err(|e| link_err(e.to_string()))?;
    let info = FdLink::from(pinned)
        .info()
        .map_err(|e| link_err(e.to_string()))?;
    let id = info.program_id();
    let program: ProgramInfo = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .ok_or(ExplainError::ProgramGone(id))?;
    let xdp = Xdp::from_program_info(
        program,
        filter_common::PROGRAM_NAME.into(),
        XdpAttachType::Interface,
    )?;
    Ok((xdp, id, info.id()))
}

/// The lines behind `reason` for this packet.
fn responsible(
    src: &lines::Source<'_>,
    reason: Reason,
    zone: &str,
    spec: &FrameSpec,
) -> Vec<PolicyLine> {
    let key = |k: &str, role: &str| src.key_line("defaults", k, role.into());
    match reason {
        Reason::Failsafe => src.failsafe(spec.src, spec.proto, spec.dport),
        Reason::Blocklist => src.blocklist(spec.src),
        // Closed: outside the zone's `schedule` (part of the zone's lines).
        Reason::Allowed
        | Reason::NotAllowed
        | Reason::Audit
        | Reason::Closed
        | Reason::RateLimited
        | Reason::QuotaExceeded
        | Reason::Rejected => src.zone(zone, spec.src, spec.proto, spec.dport),
        Reason::RejectSuppressed => {
            let mut lines = src.zone(zone, spec.src, spec.proto, spec.dport);
            lines.extend(key(
                "reject_rate",
                "this CPU's reply budget was spent: defaults.reject_rate",
            ));
            lines.extend(key("reject_burst", "defaults.reject_burst"));
            lines
        }
        Reason::Unmatched => key("unmatched", "no zone claims the port: defaults.unmatched")
            .into_iter()
            .collect(),
        Reason::Fragment => key("fragments", "a fragment: defaults.fragments")
            .into_iter()
            .collect(),
        Reason::NonIp => key("non_ip", "defaults.non_ip").into_iter().collect(),
        Reason::OtherProtocol => key("other_protocols", "defaults.other_protocols")
            .into_iter()
            .collect(),
        // Bans are not policy lines: `portcullis ban list` shows them.
        Reason::Malformed | Reason::NoPolicy | Reason::Banned => Vec::new(),
    }
}

/// What to say when no line is responsible.
fn default_note(reason: Reason) -> Option<&'static str> {
    Some(match reason {
        Reason::Unmatched => "no zone claims the port; defaults.unmatched is not set (pass)",
        Reason::Fragment => "a fragment; defaults.fragments is not set (filter-first)",
        Reason::NonIp => "defaults.non_ip is not set (pass)",
        Reason::OtherProtocol => "defaults.other_protocols is not set (pass)",
        Reason::Malformed => "the frame breaks the parsing contract (docs/parsing-contract.md)",
        Reason::NoPolicy => "the active slot holds no policy (before the first load)",
        Reason::Banned => "the source is banned (`portcullis ban list`), outside the policy",
        Reason::RejectSuppressed => {
            "the zone would reject, but this CPU's reply budget was spent (defaults.reject_rate, \
             reject_burst; explain's own frames take replies from it too)"
        }
        _ => return None,
    })
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.packet;
        let mut what = format!("{} → {} {}/{}", p.src, p.dst, p.dport, p.proto);
        if let Some(v) = p.vlan {
            what.push_str(&format!(", VLAN {v}"));
        }
        if let Some(fr) = p.fragment {
            what.push_str(match fr {
                Fragment::First => ", first fragment",
                Fragment::Later => ", later fragment",
            });
        }
        writeln!(f, "packet      {what}")?;
        writeln!(f, "verdict     {}", self.verdict)?;
        writeln!(f, "reason      {}", self.reason)?;
        writeln!(f, "zone        {} (rule {})", self.zone, self.rule)?;
        writeln!(
            f,
            "program     {} behind link {} of {} (generation {})",
            self.program_id, self.link_id, self.interface, self.generation
        )?;
        if let Some(path) = &self.policy_path {
            let state = if self.policy_changed {
                "changed since applied"
            } else {
                "as applied"
            };
            writeln!(f, "policy      {path} ({state})")?;
        }
        for (i, l) in self.lines.iter().enumerate() {
            let head = if i == 0 { "because" } else { "" };
            writeln!(f, "{head:<11} {}:{}: {}", l.path.display(), l.line, l.role)?;
        }
        for n in &self.notes {
            writeln!(f, "note        {n}")?;
        }
        write!(
            f,
            "counted     under interface \"other\" (test frames have no ingress interface)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_takes_port_and_protocol() {
        assert_eq!(parse_to("8889/tcp"), Ok((8889, Proto::Tcp)));
        assert_eq!(parse_to("53/UDP"), Ok((53, Proto::Udp)));
        assert_eq!(parse_to("2905/sctp"), Ok((2905, Proto::Sctp)));
    }

    #[test]
    fn to_refuses_missing_protocol_ranges_and_big_ports() {
        assert!(parse_to("8889").unwrap_err().contains("\"8889/tcp\""));
        assert!(parse_to("9000-9010/tcp")
            .unwrap_err()
            .contains("not a port"));
        assert!(parse_to("70000/tcp").is_err());
        assert!(parse_to("22/icmp")
            .unwrap_err()
            .contains("unknown protocol"));
    }

    #[test]
    fn fragment_and_vlan_forms() {
        assert_eq!(parse_fragment("first"), Ok(Fragment::First));
        assert_eq!(parse_fragment("later"), Ok(Fragment::Later));
        assert!(parse_fragment("2").is_err());
        assert_eq!(parse_vlan("4094"), Ok(4094));
        assert!(parse_vlan("4095").is_err());
    }

    fn cells(packets: &[u64]) -> Vec<Counter> {
        packets
            .iter()
            .map(|p| Counter {
                packets: *p,
                bytes: 0,
            })
            .collect()
    }

    #[test]
    fn decision_is_read_only_when_exactly_one_counter_moved_by_one() {
        let before = cells(&[5, 0, 7]);
        assert_eq!(one_moved(&before, &cells(&[5, 1, 7])), Some(1));
        // Another frame counted meanwhile (elsewhere, or on the same cell).
        assert_eq!(one_moved(&before, &cells(&[6, 1, 7])), None);
        assert_eq!(one_moved(&before, &cells(&[5, 2, 7])), None);
        assert_eq!(one_moved(&before, &before), None);
    }

    #[test]
    fn destination_must_share_the_source_family() {
        let q = Query {
            from: "198.51.100.7".parse().unwrap(),
            proto: Proto::Tcp,
            port: 22,
            iface: None,
            vlan: None,
            fragment: None,
            dst: Some("2001:db8::1".parse().unwrap()),
            state_dir: "/nonexistent".into(),
        };
        assert!(matches!(q.frame(), Err(ExplainError::Query(_))));
        let v6 = Query {
            from: "2001:db8::7".parse().unwrap(),
            dst: None,
            ..q
        };
        assert!(v6.frame().unwrap().dst.is_ipv6());
    }
}
