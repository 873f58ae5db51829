//! The compiled policy: what the loader writes into the maps. Every prefix list is
//! normalised (no host bits), merged and sorted; every port list is merged per
//! protocol. Nothing in here refers back to the policy text.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::{Ipv4Net, Ipv6Net};

/// What `defaults.unmatched`, `defaults.non_ip` and `defaults.other_protocols` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Pass,
    Drop,
}

impl Action {
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `defaults.fragments`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FragmentMode {
    /// Judge the first fragment by its ports, pass later fragments (they carry none).
    FilterFirst,
    /// Drop every fragment (failsafe traffic excepted).
    Drop,
}

impl FragmentMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            FragmentMode::FilterFirst => "filter-first",
            FragmentMode::Drop => "drop",
        }
    }
}

impl fmt::Display for FragmentMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a zone does with sources outside its `allow` (`action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZoneAction {
    /// Dropped silently.
    Drop,
    /// Answered with a TCP reset or an ICMP unreachable (`reject_with`).
    Reject(RejectWith),
}

impl ZoneAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            ZoneAction::Drop => "drop",
            ZoneAction::Reject(_) => "reject",
        }
    }
}

/// `reject_with`: the reply of a rejecting zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectWith {
    /// Not set: a TCP reset for TCP, an ICMP port unreachable for UDP and SCTP.
    ByProtocol,
    TcpReset,
    IcmpPortUnreachable,
    IcmpAdminProhibited,
    IcmpHostUnreachable,
}

impl RejectWith {
    /// The values `reject_with` takes, as written.
    pub const NAMES: [(&'static str, RejectWith); 4] = [
        ("tcp-reset", RejectWith::TcpReset),
        ("icmp-port-unreachable", RejectWith::IcmpPortUnreachable),
        ("icmp-admin-prohibited", RejectWith::IcmpAdminProhibited),
        ("icmp-host-unreachable", RejectWith::IcmpHostUnreachable),
    ];

    /// The policy's spelling (`by-protocol` when not set).
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectWith::ByProtocol => "by-protocol",
            RejectWith::TcpReset => "tcp-reset",
            RejectWith::IcmpPortUnreachable => "icmp-port-unreachable",
            RejectWith::IcmpAdminProhibited => "icmp-admin-prohibited",
            RejectWith::IcmpHostUnreachable => "icmp-host-unreachable",
        }
    }

    /// The reply a packet of `proto` gets.
    pub const fn for_proto(self, proto: Proto) -> RejectWith {
        match (self, proto) {
            (RejectWith::ByProtocol, Proto::Tcp) => RejectWith::TcpReset,
            (RejectWith::ByProtocol, _) => RejectWith::IcmpPortUnreachable,
            (other, _) => other,
        }
    }

    /// The datapath's encoding (filter-common `Reply`).
    pub const fn reply(self) -> filter_common::Reply {
        use filter_common::Reply;
        match self {
            RejectWith::ByProtocol => Reply::ByProtocol,
            RejectWith::TcpReset => Reply::TcpReset,
            RejectWith::IcmpPortUnreachable => Reply::PortUnreachable,
            RejectWith::IcmpAdminProhibited => Reply::AdminProhibited,
            RejectWith::IcmpHostUnreachable => Reply::HostUnreachable,
        }
    }
}

impl fmt::Display for RejectWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A layer-4 protocol with ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

    pub const fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    /// Index of this protocol in the `PORTS` map (see `filter_common`).
    pub const fn port_index(self) -> u32 {
        match self {
            Proto::Tcp => filter_common::PROTO_INDEX_TCP,
            Proto::Udp => filter_common::PROTO_INDEX_UDP,
            Proto::Sctp => filter_common::PROTO_INDEX_SCTP,
        }
    }

    /// IP protocol number.
    pub const fn ip_proto(self) -> u8 {
        match self {
            Proto::Tcp => filter_common::IPPROTO_TCP,
            Proto::Udp => filter_common::IPPROTO_UDP,
            Proto::Sctp => filter_common::IPPROTO_SCTP,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive range of destination ports of one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub proto: Proto,
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const fn single(proto: Proto, port: u16) -> Self {
        PortRange {
            proto,
            first: port,
            last: port,
        }
    }

    pub fn contains(&self, proto: Proto, port: u16) -> bool {
        self.proto == proto && self.first <= port && port <= self.last
    }

    /// The ports both ranges cover, if any.
    pub fn intersection(&self, other: &PortRange) -> Option<PortRange> {
        if self.proto != other.proto {
            return None;
        }
        let first = self.first.max(other.first);
        let last = self.last.min(other.last);
        (first <= last).then_some(PortRange {
            proto: self.proto,
            first,
            last,
        })
    }

    /// Number of ports in the range.
    pub const fn len(&self) -> u32 {
        self.last as u32 - self.first as u32 + 1
    }

    /// Never true (a range holds at least one port); here for clippy's `len` rule.
    pub const fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for PortRange {
    /// The policy's own form: `22/tcp`, `9000-9010/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}/{}", self.first, self.proto)
        } else {
            write!(f, "{}-{}/{}", self.first, self.last, self.proto)
        }
    }
}

/// `[defaults]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Defaults {
    pub unmatched: Action,
    pub non_ip: Action,
    pub other_protocols: Action,
    pub fragments: FragmentMode,
    /// Replies of rejecting zones per second, per CPU …
    pub reject_rate: u32,
    /// … and how many a CPU may send at once after a quiet spell.
    pub reject_burst: u32,
    /// Sources each rate limit tracks unless it says `tracked`.
    pub rate_tracked: u32,
}

/// Default reply budget of rejecting zones (per CPU): modest, so the host
/// is no use as a reflector.
pub const DEFAULT_REJECT_RATE: u32 = 100;
pub const DEFAULT_REJECT_BURST: u32 = 200;
/// The most `reject_rate` and `reject_burst` accept.
pub const MAX_REJECT_RATE: u32 = 1_000_000;
pub const MAX_REJECT_BURST: u32 = 1_000_000;

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            unmatched: Action::Pass,
            non_ip: Action::Pass,
            other_protocols: Action::Pass,
            fragments: FragmentMode::FilterFirst,
            reject_rate: DEFAULT_REJECT_RATE,
            reject_burst: DEFAULT_REJECT_BURST,
            rate_tracked: super::rate::DEFAULT_TRACKED,
        }
    }
}

/// One `[[failsafe]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFailsafe {
    pub ports: Vec<PortRange>,
    pub from_v4: Vec<Ipv4Net>,
    pub from_v6: Vec<Ipv6Net>,
}

/// One `[[zone]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledZone {
    /// 1-based, in policy order (1..=`filter_common::MAX_ZONES`).
    pub id: u16,
    pub name: String,
    pub ports: Vec<PortRange>,
    pub allow_v4: Vec<Ipv4Net>,
    pub allow_v6: Vec<Ipv6Net>,
    /// Sources outside `allow` are counted as `audit` and passed.
    pub audit: bool,
    /// `schedule`: outside these hours nobody is allowed.
    pub schedule: Option<super::schedule::ZoneSchedule>,
    /// What sources outside `allow` get (when not auditing).
    pub action: ZoneAction,
    /// `rate`: packet and connection limits of allowed sources.
    pub limits: Option<super::rate::ZoneLimits>,
    /// `quota`: a transfer quota of allowed sources.
    pub quota: Option<super::quota::QuotaSpec>,
}

/// `[metrics] basic_auth`.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub user: String,
    /// An argon2 PHC string (`$argon2id$…`).
    pub password_hash: String,
}

impl fmt::Debug for BasicAuth {
    // The hash is not a secret in the strict sense, but it has no business in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

/// `[metrics] tls`: PEM files, resolved against the policy file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
    pub basic_auth: Option<BasicAuth>,
    /// Serve HTTPS with these files instead of plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// Default metrics listener: loopback only.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9469);

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: DEFAULT_METRICS_LISTEN,
            basic_auth: None,
            tls: None,
        }
    }
}

/// A blocklist file that was read, for summaries and status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFileInfo {
    /// As written in the policy (`blocklist.files`).
    pub name: String,
    /// Resolved against the policy file's directory.
    pub path: PathBuf,
    /// Entries (prefixes) read, before merging.
    pub entries: usize,
    pub bytes: u64,
}

/// A validated, compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// Empty when the policy names none (the CLI's `--iface` then decides).
    pub interfaces: Vec<String>,
    pub defaults: Defaults,
    /// Inline `blocklist.cidrs` and all list files, merged.
    pub blocklist_v4: Vec<Ipv4Net>,
    pub blocklist_v6: Vec<Ipv6Net>,
    pub failsafe: Vec<CompiledFailsafe>,
    /// In policy order; `zones[i].id == i + 1`.
    pub zones: Vec<CompiledZone>,
    pub metrics: MetricsConfig,
    /// `[events]`: the sampling the daemon sets at start and reload.
    pub events: crate::events::EventsPolicy,
    /// `[crowdsec]`: the LAPI whose decisions the daemon turns into bans.
    pub crowdsec: Option<super::crowdsec::CrowdsecConfig>,
    /// The list files read, in policy order.
    pub list_files: Vec<ListFileInfo>,
    /// `blocklist.feeds`, in policy order, with what their cached copies gave.
    pub feeds: Vec<super::feeds::FeedInfo>,
    /// SHA-256 over the policy text and every list file's contents.
    pub source_hash: [u8; 32],
    /// What `check` warns about (see docs/policy.md#warnings); not loaded.
    pub warnings: Vec<super::warn::Warning>,
}

impl CompiledPolicy {
    /// `source_hash` as lowercase hex.
    pub fn source_hash_hex(&self) -> String {
        use fmt::Write;
        let mut s = String::with_capacity(64);
        for b in self.source_hash {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// The zone claiming (proto, port), if any.
    pub fn zone_for(&self, proto: Proto, port: u16) -> Option<&CompiledZone> {
        self.zones
            .iter()
            .find(|z| z.ports.iter().any(|r| r.contains(proto, port)))
    }
}

/// Merges overlapping and adjacent ranges per protocol; the result is sorted by
/// (proto, first).
pub fn merge_ports(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        if let Some(prev) = out.last_mut() {
            if prev.proto == r.proto && u32::from(r.first) <= u32::from(prev.last) + 1 {
                prev.last = prev.last.max(r.last);
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// Merges IPv4 prefixes into the smallest sorted set covering the same addresses.
pub fn merge_v4(nets: Vec<Ipv4Net>) -> Vec<Ipv4Net> {
    Ipv4Net::aggregate(&nets)
}

/// Merges IPv6 prefixes into the smallest sorted set covering the same addresses.
pub fn merge_v6(nets: Vec<Ipv6Net>) -> Vec<Ipv6Net> {
    Ipv6Net::aggregate(&nets)
}
