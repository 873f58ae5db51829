//! A policy as the tests see it, independent of the daemon's policy compiler. It
//! renders to the policy file format v1 (`to_toml`) so the real compiler can load the
//! same policy the reference model judges by.

use std::fmt::Write as _;

use ipnet::IpNet;

/// `pass` or `drop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Act {
    Pass,
    Drop,
}

impl Act {
    pub fn as_str(self) -> &'static str {
        match self {
            Act::Pass => "pass",
            Act::Drop => "drop",
        }
    }
}

/// `defaults.fragments`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fragments {
    FilterFirst,
    Drop,
}

impl Fragments {
    pub fn as_str(self) -> &'static str {
        match self {
            Fragments::FilterFirst => "filter-first",
            Fragments::Drop => "drop",
        }
    }
}

/// The `[defaults]` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Defaults {
    pub unmatched: Act,
    pub non_ip: Act,
    pub other_protocols: Act,
    pub fragments: Fragments,
}

impl Default for Defaults {
    /// The documented defaults: everything passes, fragments filter-first.
    fn default() -> Self {
        Defaults {
            unmatched: Act::Pass,
            non_ip: Act::Pass,
            other_protocols: Act::Pass,
            fragments: Fragments::FilterFirst,
        }
    }
}

/// A layer-4 protocol with ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Sctp];

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            132 => Some(Proto::Sctp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// `(proto, first, last)`, inclusive; a single port has `first == last`.
pub type PortRange = (Proto, u16, u16);

/// Does any of `ranges` cover (`proto`, `port`)?
pub fn ports_cover(ranges: &[PortRange], proto: Proto, port: u16) -> bool {
    ranges
        .iter()
        .any(|&(p, lo, hi)| p == proto && lo <= port && port <= hi)
}

/// One entry of a zone's `allow` list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Allow {
    /// `"any"`: 0.0.0.0/0 and ::/0.
    Any,
    Net(IpNet),
}

/// A `[[failsafe]]` rule.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RuleSpec {
    pub ports: Vec<PortRange>,
    pub from: Vec<IpNet>,
}

/// `reject_with` (`ByProtocol`: not written).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectWith {
    ByProtocol,
    TcpReset,
    PortUnreachable,
    AdminProhibited,
    HostUnreachable,
}

impl RejectWith {
    pub const ALL: [RejectWith; 5] = [
        RejectWith::ByProtocol,
        RejectWith::TcpReset,
        RejectWith::PortUnreachable,
        RejectWith::AdminProhibited,
        RejectWith::HostUnreachable,
    ];

    /// The policy's value; `None` for `ByProtocol`.
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            RejectWith::ByProtocol => None,
            RejectWith::TcpReset => Some("tcp-reset"),
            RejectWith::PortUnreachable => Some("icmp-port-unreachable"),
            RejectWith::AdminProhibited => Some("icmp-admin-prohibited"),
            RejectWith::HostUnreachable => Some("icmp-host-unreachable"),
        }
    }
}

/// A `[[zone]]`: `action = "drop"`, or `"reject"` with its `reject_with`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneSpec {
    pub name: String,
    pub ports: Vec<PortRange>,
    pub allow: Vec<Allow>,
    pub audit: bool,
    /// `Some`: `action = "reject"`.
    pub reject: Option<RejectWith>,
    /// `schedule` and `timezone`: outside these hours nobody is allowed.
    pub schedule: Option<ScheduleSpec>,
    /// `rate`: at most one packet and one connection limit.
    pub rate: Vec<LimitSpec>,
    /// `quota`: a transfer quota.
    pub quota: Option<QuotaSpec>,
}

/// `quota.period`: UTC-aligned minutes, hours, days, calendar months.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaPeriod {
    Minute,
    Hour,
    Day,
    Month,
}

impl QuotaPeriod {
    pub const ALL: [QuotaPeriod; 4] = [
        QuotaPeriod::Minute,
        QuotaPeriod::Hour,
        QuotaPeriod::Day,
        QuotaPeriod::Month,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QuotaPeriod::Minute => "minute",
            QuotaPeriod::Hour => "hour",
            QuotaPeriod::Day => "day",
            QuotaPeriod::Month => "month",
        }
    }
}

/// `quota.direction`: what is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaDirection {
    /// Frames of sources to the zone's ports (ingress).
    Upload,
    /// Frames the host sends from the zone's ports (egress).
    Download,
    Both,
}

impl QuotaDirection {
    pub const ALL: [QuotaDirection; 3] = [
        QuotaDirection::Upload,
        QuotaDirection::Download,
        QuotaDirection::Both,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QuotaDirection::Upload => "upload",
            QuotaDirection::Download => "download",
            QuotaDirection::Both => "both",
        }
    }

    pub fn upload(self) -> bool {
        self != QuotaDirection::Download
    }

    pub fn download(self) -> bool {
        self != QuotaDirection::Upload
    }
}

/// One `quota` table as the policy writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaSpec {
    /// The limit in bytes (what the model counts against).
    pub bytes: u64,
    /// `bytes` as written (`"2 KiB"`), which must mean `bytes`; `None`:
    /// written as an integer.
    pub written: Option<String>,
    pub period: QuotaPeriod,
    /// `None`: not written (both).
    pub direction: Option<QuotaDirection>,
    /// IPv4 and IPv6 mask lengths (`per = "/24"`); `zone`: `per = "zone"`
    /// (a source's address is masked to nothing).
    pub v4_len: u8,
    pub v6_len: u8,
    pub zone: bool,
}

impl QuotaSpec {
    /// `bytes` per source per `period`, both directions (nothing else written).
    pub fn new(bytes: u64, period: QuotaPeriod) -> Self {
        QuotaSpec {
            bytes,
            written: None,
            period,
            direction: None,
            v4_len: 32,
            v6_len: 128,
            zone: false,
        }
    }

    /// With `direction` written.
    pub fn direction(mut self, d: QuotaDirection) -> Self {
        self.direction = Some(d);
        self
    }

    /// With `bytes` written as `text` (which must mean `self.bytes`).
    pub fn written(mut self, text: &str) -> Self {
        self.written = Some(text.to_string());
        self
    }

    /// With `per` IPv4 and IPv6 lengths (32 / 128 are not written).
    pub fn per(mut self, v4_len: u8, v6_len: u8) -> Self {
        self.v4_len = v4_len;
        self.v6_len = v6_len;
        self
    }

    /// With `per = "zone"`.
    pub fn per_zone(mut self) -> Self {
        self.zone = true;
        self
    }

    /// The direction in force (`both` when not written).
    pub fn counts(&self) -> QuotaDirection {
        self.direction.unwrap_or(QuotaDirection::Both)
    }

    /// The mask lengths a source is cut to (IPv4, IPv6).
    pub fn masks(&self) -> (u8, u8) {
        if self.zone {
            (0, 0)
        } else {
            (self.v4_len, self.v6_len)
        }
    }

    fn to_toml(&self) -> String {
        let bytes = match &self.written {
            Some(w) => quote(w),
            None => self.bytes.to_string(),
        };
        let mut parts = vec![
            format!("bytes = {bytes}"),
            format!("period = \"{}\"", self.period.as_str()),
        ];
        if let Some(d) = self.direction {
            parts.push(format!("direction = \"{}\"", d.as_str()));
        }
        if self.zone {
            parts.push("per = \"zone\"".into());
        } else {
            let mut per = Vec::new();
            if self.v4_len != 32 {
                per.push(format!("\"/{}\"", self.v4_len));
            }
            if self.v6_len != 128 {
                per.push(format!("\"/{}\"", self.v6_len));
            }
            match per.len() {
                0 => {}
                1 => parts.push(format!("per = {}", per[0])),
                _ => parts.push(format!("per = [{}]", per.join(", "))),
            }
        }
        format!("{{ {} }}", parts.join(", "))
    }
}

/// One `rate` table as the policy writes it. Units are `s`, `min`, `h`, `day`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSpec {
    /// `connections` (TCP SYN without ACK) rather than `packets`.
    pub connections: bool,
    pub count: u64,
    pub unit: &'static str,
    /// `None`: not written (one period's worth).
    pub burst: Option<u64>,
    /// IPv4 and IPv6 mask lengths; `zone`: one bucket for the zone.
    pub v4_len: u8,
    pub v6_len: u8,
    pub zone: bool,
    /// `ceiling` (count, unit) and its burst proportion follow the limit's;
    /// `None`: ten times the limit.
    pub ceiling: Option<(u64, &'static str)>,
    /// `new_sources`; `None`: 100/s.
    pub new_sources: Option<(u64, &'static str)>,
    /// `tracked`; `None`: `defaults.rate_tracked` (4096).
    pub tracked: Option<u32>,
}

impl LimitSpec {
    /// `count` per `unit` per source, bursts of `burst`.
    pub fn packets(count: u64, unit: &'static str, burst: u64) -> Self {
        LimitSpec {
            connections: false,
            count,
            unit,
            burst: Some(burst),
            v4_len: 32,
            v6_len: 128,
            zone: false,
            ceiling: None,
            new_sources: None,
            tracked: None,
        }
    }

    pub fn connections(count: u64, unit: &'static str, burst: u64) -> Self {
        LimitSpec {
            connections: true,
            ..Self::packets(count, unit, burst)
        }
    }

    /// The period of `unit`, in ns.
    pub fn period_ns(unit: &str) -> u64 {
        match unit {
            "s" => 1_000_000_000,
            "min" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "day" => 86_400_000_000_000,
            other => panic!("unit {other} is not one LimitSpec writes"),
        }
    }

    fn to_toml(&self) -> String {
        let mut parts = vec![format!(
            "{} = \"{}/{}\"",
            if self.connections {
                "connections"
            } else {
                "packets"
            },
            self.count,
            self.unit
        )];
        if let Some(b) = self.burst {
            parts.push(format!("burst = {b}"));
        }
        if self.zone {
            parts.push("per = \"zone\"".into());
        } else {
            let mut per = Vec::new();
            if self.v4_len != 32 {
                per.push(format!("\"/{}\"", self.v4_len));
            }
            if self.v6_len != 128 {
                per.push(format!("\"/{}\"", self.v6_len));
            }
            if !per.is_empty() {
                parts.push(format!("per = [{}]", per.join(", ")));
            }
            if let Some((c, u)) = self.ceiling {
                parts.push(format!("ceiling = \"{c}/{u}\""));
            }
            if let Some((c, u)) = self.new_sources {
                parts.push(format!("new_sources = \"{c}/{u}\""));
            }
            if let Some(t) = self.tracked {
                parts.push(format!("tracked = {t}"));
            }
        }
        format!("{{ {} }}", parts.join(", "))
    }
}

/// A zone's hours as the policy file writes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// An IANA name; `None` leaves `timezone` out (UTC).
    pub timezone: Option<String>,
    /// (`days`, `hours`) as written: `("mon-fri", "08:00-18:30")`.
    pub windows: Vec<(String, String)>,
}

impl ScheduleSpec {
    pub fn new(timezone: Option<&str>, windows: &[(&str, &str)]) -> Self {
        ScheduleSpec {
            timezone: timezone.map(str::to_string),
            windows: windows
                .iter()
                .map(|(d, h)| (d.to_string(), h.to_string()))
                .collect(),
        }
    }
}

impl ZoneSpec {
    pub fn new(name: impl Into<String>, ports: Vec<PortRange>, allow: Vec<Allow>) -> Self {
        ZoneSpec {
            name: name.into(),
            ports,
            allow,
            audit: false,
            schedule: None,
            reject: None,
            rate: Vec::new(),
            quota: None,
        }
    }

    /// With a transfer `quota`.
    pub fn quota(mut self, quota: QuotaSpec) -> Self {
        self.quota = Some(quota);
        self
    }

    /// With a `rate` limit (two calls: a packet and a connection limit).
    pub fn limited(mut self, limit: LimitSpec) -> Self {
        self.rate.push(limit);
        self
    }

    pub fn scheduled(mut self, schedule: ScheduleSpec) -> Self {
        self.schedule = Some(schedule);
        self
    }

    pub fn audit(mut self) -> Self {
        self.audit = true;
        self
    }

    /// `action = "reject"` with `with`.
    pub fn reject(mut self, with: RejectWith) -> Self {
        self.reject = Some(with);
        self
    }
}

/// A whole policy. Zone ids are 1.. in `zones` order (id = index + 1).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PolicySpec {
    pub defaults: Defaults,
    pub blocklist: Vec<IpNet>,
    pub failsafe: Vec<RuleSpec>,
    pub zones: Vec<ZoneSpec>,
    /// The instant scheduled zones are judged at: the model decides at it,
    /// and the harness compiles the transitions so that the datapath's clock
    /// reads it (shifted by the real now). `None`: the real now.
    pub at: Option<jiff::Timestamp>,
    /// `defaults.reject_rate` and `reject_burst`; `None`: not written (the
    /// compiler's defaults).
    pub reject_budget: Option<(u32, u32)>,
    /// Bans (`portcullis ban`): not part of the policy file; the harness
    /// writes them into the ban maps, with expiries relative to `at`.
    pub bans: Vec<BanSpec>,
}

/// One ban: a prefix, banned until `until` (`None`: no expiry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BanSpec {
    pub net: IpNet,
    pub until: Option<jiff::Timestamp>,
}

/// A reply budget no test run exhausts (a million replies per CPU, and a
/// million per second more), for policies whose replies are compared.
pub const UNLIMITED_REPLIES: (u32, u32) = (1_000_000, 1_000_000);

/// Parse a CIDR or bare address (test helper; panics on a typo).
pub fn net(s: &str) -> IpNet {
    if let Ok(n) = s.parse::<IpNet>() {
        return n;
    }
    match s.parse::<std::net::IpAddr>() {
        Ok(a) => IpNet::from(a),
        Err(_) => panic!("not a prefix: {s:?}"),
    }
}

/// Parse a list of prefixes (test helper).
pub fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| net(s)).collect()
}

/// An allow entry from a prefix string, or `"any"` (test helper).
pub fn allow(s: &str) -> Allow {
    if s == "any" {
        Allow::Any
    } else {
        Allow::Net(net(s))
    }
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn string_array(items: impl IntoIterator<Item = String>) -> String {
    let quoted: Vec<String> = items.into_iter().map(|s| quote(&s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// `N/proto` or `N-M/proto`.
pub fn port_string(&(proto, lo, hi): &PortRange) -> String {
    if lo == hi {
        format!("{lo}/{}", proto.as_str())
    } else {
        format!("{lo}-{hi}/{}", proto.as_str())
    }
}

impl PolicySpec {
    /// Zone id of `zones[index]`.
    pub fn zone_id(index: usize) -> u32 {
        index as u32 + 1
    }

    /// All port ranges mentioned anywhere (zones and failsafe rules).
    pub fn all_ports(&self) -> Vec<PortRange> {
        let mut v: Vec<PortRange> = self.failsafe.iter().flat_map(|r| r.ports.clone()).collect();
        v.extend(self.zones.iter().flat_map(|z| z.ports.clone()));
        v
    }

    /// All prefixes mentioned anywhere (blocklist, failsafe, zone allow lists).
    pub fn all_prefixes(&self) -> Vec<IpNet> {
        let mut v = self.blocklist.clone();
        v.extend(self.failsafe.iter().flat_map(|r| r.from.clone()));
        for z in &self.zones {
            for a in &z.allow {
                if let Allow::Net(n) = a {
                    v.push(*n);
                }
            }
        }
        v
    }

    /// The checks the real compiler makes that matter for generated policies:
    /// host bits clear, no port claimed by two zones, non-empty port lists, valid
    /// ranges. Returns every problem found.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        for p in self.all_prefixes() {
            if p.addr() != p.network() {
                errors.push(format!("{p}: host bits set"));
            }
        }
        for (_, lo, hi) in self.all_ports() {
            if lo > hi {
                errors.push(format!("{lo}-{hi}: empty range"));
            }
        }
        for (i, a) in self.zones.iter().enumerate() {
            if a.ports.is_empty() {
                errors.push(format!("zone {}: no ports", a.name));
            }
            for b in &self.zones[i + 1..] {
                for ra in &a.ports {
                    for rb in &b.ports {
                        if ra.0 == rb.0 && ra.1 <= rb.2 && rb.1 <= ra.2 {
                            errors.push(format!(
                                "zones {} and {} both claim {} / {}",
                                a.name,
                                b.name,
                                port_string(ra),
                                port_string(rb)
                            ));
                        }
                    }
                }
            }
        }
        for (i, r) in self.failsafe.iter().enumerate() {
            if r.ports.is_empty() {
                errors.push(format!("failsafe #{}: no ports", i + 1));
            }
        }
        for z in &self.zones {
            if z.reject == Some(RejectWith::TcpReset) && z.ports.iter().any(|r| r.0 != Proto::Tcp) {
                errors.push(format!("zone {}: tcp-reset on non-TCP ports", z.name));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The policy in policy file format v1.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let d = &self.defaults;
        if let Some(at) = self.at {
            // Not policy: the instant the harness and the model judge at.
            let _ = writeln!(s, "# judged at {at}");
        }
        s.push_str("version = 1\n\n[defaults]\n");
        let _ = writeln!(s, "unmatched = {}", quote(d.unmatched.as_str()));
        let _ = writeln!(s, "non_ip = {}", quote(d.non_ip.as_str()));
        let _ = writeln!(s, "other_protocols = {}", quote(d.other_protocols.as_str()));
        let _ = writeln!(s, "fragments = {}", quote(d.fragments.as_str()));
        if let Some((rate, burst)) = self.reject_budget {
            let _ = writeln!(s, "reject_rate = {rate}\nreject_burst = {burst}");
        }
        s.push_str("\n[blocklist]\n");
        let _ = writeln!(
            s,
            "cidrs = {}",
            string_array(self.blocklist.iter().map(|n| n.to_string()))
        );
        for rule in &self.failsafe {
            s.push_str("\n[[failsafe]]\n");
            let _ = writeln!(
                s,
                "ports = {}",
                string_array(rule.ports.iter().map(port_string))
            );
            let _ = writeln!(
                s,
                "from = {}",
                string_array(rule.from.iter().map(|n| n.to_string()))
            );
        }
        for zone in &self.zones {
            s.push_str("\n[[zone]]\n");
            let _ = writeln!(s, "name = {}", quote(&zone.name));
            let _ = writeln!(
                s,
                "ports = {}",
                string_array(zone.ports.iter().map(port_string))
            );
            let allow = zone.allow.iter().map(|a| match a {
                Allow::Any => "any".to_string(),
                Allow::Net(n) => n.to_string(),
            });
            let _ = writeln!(s, "allow = {}", string_array(allow));
            match zone.reject {
                None => s.push_str("action = \"drop\"\n"),
                Some(with) => {
                    s.push_str("action = \"reject\"\n");
                    if let Some(w) = with.as_str() {
                        let _ = writeln!(s, "reject_with = {}", quote(w));
                    }
                }
            }
            let _ = writeln!(s, "audit = {}", zone.audit);
            if let Some(sched) = &zone.schedule {
                if let Some(tz) = &sched.timezone {
                    let _ = writeln!(s, "timezone = {}", quote(tz));
                }
                let windows: Vec<String> = sched
                    .windows
                    .iter()
                    .map(|(d, h)| format!("{{ days = {}, hours = {} }}", quote(d), quote(h)))
                    .collect();
                let _ = writeln!(s, "schedule = [{}]", windows.join(", "));
            }
            if !zone.rate.is_empty() {
                let limits: Vec<String> = zone.rate.iter().map(LimitSpec::to_toml).collect();
                let _ = writeln!(s, "rate = [{}]", limits.join(", "));
            }
            if let Some(q) = &zone.quota {
                let _ = writeln!(s, "quota = {}", q.to_toml());
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep() -> PolicySpec {
        PolicySpec {
            bans: Vec::new(),
            at: None,
            defaults: Defaults {
                unmatched: Act::Drop,
                fragments: Fragments::Drop,
                ..Defaults::default()
            },
            blocklist: nets(&["203.0.113.0/24", "2001:db8:bad::/48", "198.51.100.7"]),
            failsafe: vec![RuleSpec {
                ports: vec![(Proto::Tcp, 22, 22)],
                from: nets(&["10.0.0.0/8"]),
            }],
            zones: vec![
                ZoneSpec::new("keep-api", vec![(Proto::Tcp, 8880, 8880)], vec![Allow::Any]),
                ZoneSpec::new(
                    "keep-admin",
                    vec![(Proto::Tcp, 8889, 8890), (Proto::Udp, 9000, 9010)],
                    vec![allow("10.20.0.0/16"), allow("fd20::/48")],
                )
                .audit(),
            ],
            reject_budget: None,
        }
    }

    #[test]
    fn to_toml_renders_the_v1_structure() {
        let t = keep().to_toml();
        let expected = r#"version = 1

[defaults]
unmatched = "drop"
non_ip = "pass"
other_protocols = "pass"
fragments = "drop"

[blocklist]
cidrs = ["203.0.113.0/24", "2001:db8:bad::/48", "198.51.100.7/32"]

[[failsafe]]
ports = ["22/tcp"]
from = ["10.0.0.0/8"]

[[zone]]
name = "keep-api"
ports = ["8880/tcp"]
allow = ["any"]
action = "drop"
audit = false

[[zone]]
name = "keep-admin"
ports = ["8889-8890/tcp", "9000-9010/udp"]
allow = ["10.20.0.0/16", "fd20::/48"]
action = "drop"
audit = true
"#;
        assert_eq!(t, expected);
    }

    #[test]
    fn empty_policy_renders_an_empty_blocklist_and_defaults() {
        let t = PolicySpec::default().to_toml();
        assert!(t.starts_with("version = 1\n"));
        assert!(t.contains("fragments = \"filter-first\""));
        assert!(t.contains("cidrs = []"));
        assert!(!t.contains("[[zone]]"));
        assert!(!t.contains("[[failsafe]]"));
        assert!(!t.contains("reject"));
    }

    #[test]
    fn reject_zones_and_the_budget_render() {
        let mut p = PolicySpec {
            reject_budget: Some((5, 6)),
            ..PolicySpec::default()
        };
        p.zones.push(
            ZoneSpec::new("r", vec![(Proto::Udp, 1, 1)], vec![])
                .reject(RejectWith::HostUnreachable),
        );
        p.zones.push(
            ZoneSpec::new("s", vec![(Proto::Tcp, 2, 2)], vec![]).reject(RejectWith::ByProtocol),
        );
        let t = p.to_toml();
        assert!(t.contains("reject_rate = 5\nreject_burst = 6\n"), "{t}");
        assert!(t.contains("action = \"reject\"\nreject_with = \"icmp-host-unreachable\"\n"));
        assert!(
            t.contains("name = \"s\"\nports = [\"2/tcp\"]\nallow = []\naction = \"reject\"\naudit")
        );
        assert!(p.check().is_ok());
        p.zones[0].reject = Some(RejectWith::TcpReset);
        assert_eq!(p.check().unwrap_err().len(), 1);
    }

    #[test]
    fn quotas_render_like_the_policy_writes_them() {
        let mut p = PolicySpec::default();
        p.zones.push(
            ZoneSpec::new("q", vec![(Proto::Tcp, 80, 80)], vec![Allow::Any])
                .quota(QuotaSpec::new(1500, QuotaPeriod::Day)),
        );
        p.zones.push(
            ZoneSpec::new("r", vec![(Proto::Tcp, 81, 81)], vec![Allow::Any]).quota(
                QuotaSpec::new(2048, QuotaPeriod::Month)
                    .written("2 KiB")
                    .direction(QuotaDirection::Download)
                    .per(24, 64),
            ),
        );
        p.zones.push(
            ZoneSpec::new("s", vec![(Proto::Tcp, 82, 82)], vec![Allow::Any]).quota(
                QuotaSpec::new(7, QuotaPeriod::Hour)
                    .direction(QuotaDirection::Upload)
                    .per_zone(),
            ),
        );
        p.zones.push(
            ZoneSpec::new("t", vec![(Proto::Tcp, 83, 83)], vec![Allow::Any])
                .quota(QuotaSpec::new(9, QuotaPeriod::Minute).per(32, 56)),
        );
        let t = p.to_toml();
        assert!(
            t.contains("quota = { bytes = 1500, period = \"day\" }\n"),
            "{t}"
        );
        assert!(t.contains(
            "quota = { bytes = \"2 KiB\", period = \"month\", direction = \"download\", \
             per = [\"/24\", \"/64\"] }\n"
        ));
        assert!(t.contains(
            "quota = { bytes = 7, period = \"hour\", direction = \"upload\", per = \"zone\" }\n"
        ));
        assert!(t.contains("quota = { bytes = 9, period = \"minute\", per = \"/56\" }\n"));
        assert_eq!(
            p.zones[2].quota.as_ref().map(QuotaSpec::masks),
            Some((0, 0))
        );
    }

    #[test]
    fn zone_names_are_escaped() {
        let mut p = PolicySpec::default();
        p.zones.push(ZoneSpec::new(
            "a\"b\\c",
            vec![(Proto::Sctp, 1, 2)],
            vec![Allow::Any],
        ));
        assert!(p.to_toml().contains(r#"name = "a\"b\\c""#));
        assert!(p.to_toml().contains(r#"ports = ["1-2/sctp"]"#));
    }

    #[test]
    fn check_finds_host_bits_and_double_claims() {
        assert!(keep().check().is_ok());
        let mut p = keep();
        p.blocklist.push("10.0.0.1/8".parse().unwrap());
        p.zones[1].ports.push((Proto::Tcp, 8000, 8880));
        let errors = p.check().unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn ports_cover_is_inclusive_and_per_protocol() {
        let r = [(Proto::Tcp, 10, 20)];
        assert!(ports_cover(&r, Proto::Tcp, 10));
        assert!(ports_cover(&r, Proto::Tcp, 20));
        assert!(!ports_cover(&r, Proto::Tcp, 21));
        assert!(!ports_cover(&r, Proto::Udp, 15));
    }
}
