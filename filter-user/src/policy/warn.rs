//! Warnings: policies that are valid but almost certainly not what the operator
//! wants (a host cut off its LAN, a zone nobody can reach). Each has a stable
//! code (docs/policy.md lists them), a location in the policy and a fix.
//! `check` prints them, `check --strict` fails on them, the daemon logs them at
//! start and reload.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;
use toml_edit::{Item, TableLike};

use super::addr::{self, Addr, Use};
use super::compile::{Action, CompiledPolicy};
use super::diag::LineIndex;

/// A failsafe rule covering more ports than this is warned about (W005).
pub(crate) const FAILSAFE_PORTS_MAX: u32 = 1024;

/// The warning classes, each with its stable code and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WarningKind {
    LockoutNonIp,
    LockoutIcmpv6,
    DefaultDenyWithoutFailsafe,
    FailsafeFromAny,
    FailsafeWidePorts,
    BlocklistShadowsZone,
    ZoneAllowsNobody,
    MetricsWithoutAuth,
    MetricsAuthWithoutTls,
}

impl WarningKind {
    pub const ALL: [WarningKind; 9] = [
        WarningKind::LockoutNonIp,
        WarningKind::LockoutIcmpv6,
        WarningKind::DefaultDenyWithoutFailsafe,
        WarningKind::FailsafeFromAny,
        WarningKind::FailsafeWidePorts,
        WarningKind::BlocklistShadowsZone,
        WarningKind::ZoneAllowsNobody,
        WarningKind::MetricsWithoutAuth,
        WarningKind::MetricsAuthWithoutTls,
    ];

    /// `W001`…: never reused or renumbered.
    pub const fn code(self) -> &'static str {
        match self {
            WarningKind::LockoutNonIp => "W001",
            WarningKind::LockoutIcmpv6 => "W002",
            WarningKind::DefaultDenyWithoutFailsafe => "W003",
            WarningKind::FailsafeFromAny => "W004",
            WarningKind::FailsafeWidePorts => "W005",
            WarningKind::BlocklistShadowsZone => "W006",
            WarningKind::ZoneAllowsNobody => "W007",
            WarningKind::MetricsWithoutAuth => "W008",
            WarningKind::MetricsAuthWithoutTls => "W009",
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            WarningKind::LockoutNonIp => "lockout-non-ip",
            WarningKind::LockoutIcmpv6 => "lockout-icmpv6",
            WarningKind::DefaultDenyWithoutFailsafe => "default-deny-without-failsafe",
            WarningKind::FailsafeFromAny => "failsafe-from-any",
            WarningKind::FailsafeWidePorts => "failsafe-wide-ports",
            WarningKind::BlocklistShadowsZone => "blocklist-shadows-zone",
            WarningKind::ZoneAllowsNobody => "zone-allows-nobody",
            WarningKind::MetricsWithoutAuth => "metrics-without-auth",
            WarningKind::MetricsAuthWithoutTls => "metrics-auth-without-tls",
        }
    }
}

/// One warning about a valid policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    #[serde(skip)]
    pub kind: WarningKind,
    /// `W001`…
    pub code: &'static str,
    /// `lockout-non-ip`…
    pub name: &'static str,
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
    pub help: String,
}

impl Warning {
    /// The warning on one line, for the daemon's log.
    pub fn one_line(&self) -> String {
        format!(
            "{}:{}:{}: warning[{} {}]: {} (help: {})",
            self.path.display(),
            self.line,
            self.column,
            self.code,
            self.name,
            self.message,
            self.help
        )
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning[{} {}]: {}\n  help: {}",
            self.path.display(),
            self.line,
            self.column,
            self.code,
            self.name,
            self.message,
            self.help
        )
    }
}

impl CompiledPolicy {
    /// Logs every warning, one line each (the daemon, at start and reload).
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(code = w.code, "{}", w.one_line());
        }
    }
}

type Span = Option<Range<usize>>;

struct Collector<'a> {
    path: &'a Path,
    index: LineIndex<'a>,
    out: Vec<Warning>,
}

impl Collector<'_> {
    fn push(&mut self, kind: WarningKind, span: Span, message: String, help: impl Into<String>) {
        let (line, column) = self.index.locate(span.map_or(0, |s| s.start));
        self.out.push(Warning {
            kind,
            code: kind.code(),
            name: kind.name(),
            path: self.path.to_path_buf(),
            line,
            column,
            message,
            help: help.into(),
        });
    }
}

/// `t[key]`'s value span, else the key's, else `fallback`.
fn span_of(t: Option<&dyn TableLike>, key: &str, fallback: Span) -> Span {
    let Some(t) = t else { return fallback };
    t.get(key)
        .and_then(Item::span)
        .or_else(|| t.key(key).and_then(|k| k.span()))
        .or(fallback)
}

fn table<'d>(root: &'d dyn TableLike, key: &str) -> Option<&'d dyn TableLike> {
    root.get(key).and_then(Item::as_table_like)
}

/// The i-th `[[key]]` table (or inline-array entry) with its span.
fn nth_table<'d>(
    root: &'d dyn TableLike,
    key: &str,
    i: usize,
) -> (Option<&'d dyn TableLike>, Span) {
    match root.get(key) {
        Some(Item::ArrayOfTables(a)) => a
            .get(i)
            .map_or((None, None), |t| (Some(t as &dyn TableLike), t.span())),
        Some(Item::Value(toml_edit::Value::Array(a))) => a.get(i).map_or((None, None), |v| {
            (v.as_inline_table().map(|t| t as &dyn TableLike), v.span())
        }),
        _ => (None, None),
    }
}

/// Span of the first string entry of `t[key]` for which `pred` holds.
fn entry_span(t: Option<&dyn TableLike>, key: &str, pred: impl Fn(&str) -> bool) -> Span {
    let array = t?.get(key)?.as_array()?;
    array
        .iter()
        .find(|v| v.as_str().is_some_and(|s| pred(s.trim())))
        .and_then(|v| v.span())
}

/// Whether every prefix of `nets` lies inside the merged (sorted, disjoint) `block`.
fn all_inside_v4(nets: &[Ipv4Net], block: &[Ipv4Net]) -> bool {
    nets.iter().all(|n| {
        let i = block.partition_point(|b| b.network() <= n.network());
        i > 0 && block[i - 1].contains(n)
    })
}

fn all_inside_v6(nets: &[Ipv6Net], block: &[Ipv6Net]) -> bool {
    nets.iter().all(|n| {
        let i = block.partition_point(|b| b.network() <= n.network());
        i > 0 && block[i - 1].contains(n)
    })
}

fn is_everything(s: &str) -> bool {
    match addr::parse_addr(s, Use::Allow) {
        Ok(Addr::Any) => true,
        Ok(Addr::V4(n)) => n.prefix_len() == 0,
        Ok(Addr::V6(n)) => n.prefix_len() == 0,
        Err(_) => false,
    }
}

/// The warnings of a compiled policy, located in `text` (the policy's source,
/// parsed as `root`).
pub(crate) fn collect(
    policy: &CompiledPolicy,
    root: &dyn TableLike,
    path: &Path,
    text: &str,
) -> Vec<Warning> {
    let mut c = Collector {
        path,
        index: LineIndex::new(text),
        out: Vec::new(),
    };
    defaults(&mut c, policy, root);
    failsafe(&mut c, policy, root);
    zones(&mut c, policy, root);
    metrics(&mut c, policy, root);
    c.out.sort_by_key(|w| (w.line, w.column, w.kind));
    c.out
}

fn defaults(c: &mut Collector<'_>, p: &CompiledPolicy, root: &dyn TableLike) {
    let t = table(root, "defaults");
    let header = root.key("defaults").and_then(|k| k.span());
    if p.defaults.non_ip == Action::Drop {
        c.push(
            WarningKind::LockoutNonIp,
            span_of(t, "non_ip", header.clone()),
            "`non_ip = \"drop\"` drops ARP: IPv4 neighbours can no longer resolve this \
             host's address, so every IPv4 peer loses it (\"No route to host\"), SSH \
             included; failsafe rules cannot help, they match IP traffic only"
                .into(),
            "set non_ip = \"pass\" (ARP, LLDP and other non-IP frames are not routed \
             beyond the LAN); filter IP traffic with zones instead",
        );
    }
    if p.defaults.other_protocols == Action::Drop {
        c.push(
            WarningKind::LockoutIcmpv6,
            span_of(t, "other_protocols", header.clone()),
            "`other_protocols = \"drop\"` drops ICMPv6, and with it IPv6 neighbour \
             discovery: IPv6 to and from this host stops working; it also drops ICMP \
             (\"fragmentation needed\" breaks path MTU discovery); failsafe rules \
             cannot help, ICMP has no ports"
                .into(),
            "set other_protocols = \"pass\"; to restrict a service, claim its ports in a \
             [[zone]]",
        );
    }
    if p.defaults.unmatched == Action::Drop && p.failsafe.is_empty() {
        c.push(
            WarningKind::DefaultDenyWithoutFailsafe,
            span_of(t, "unmatched", header),
            "`unmatched = \"drop\"` (default-deny) without a [[failsafe]] rule: one \
             missing zone and SSH is cut off"
                .into(),
            "add a failsafe rule for your admin access, e.g. [[failsafe]] ports = \
             [\"22/tcp\"] from = [\"10.0.0.0/8\"] (your admin network)",
        );
    }
}

fn failsafe(c: &mut Collector<'_>, p: &CompiledPolicy, root: &dyn TableLike) {
    for (i, rule) in p.failsafe.iter().enumerate() {
        let (t, tspan) = nth_table(root, "failsafe", i);
        let everyone_v4 = rule.from_v4.iter().any(|n| n.prefix_len() == 0);
        let everyone_v6 = rule.from_v6.iter().any(|n| n.prefix_len() == 0);
        if everyone_v4 || everyone_v6 {
            let family = match (everyone_v4, everyone_v6) {
                (true, true) => "every source",
                (true, false) => "every IPv4 source",
                _ => "every IPv6 source",
            };
            let span =
                entry_span(t, "from", is_everything).or_else(|| span_of(t, "from", tspan.clone()));
            let ports: Vec<String> = rule.ports.iter().map(ToString::to_string).collect();
            c.push(
                WarningKind::FailsafeFromAny,
                span,
                format!(
                    "failsafe rule #{} passes {family} on {}, past the blocklist and every zone",
                    i + 1,
                    ports.join(", ")
                ),
                "list only your admin networks in `from`, e.g. from = [\"10.0.0.0/8\"]; to \
                 open a port to everyone, use a zone with allow = [\"any\"] (the blocklist \
                 still applies)",
            );
        }
        let total: u32 = rule.ports.iter().map(|r| r.len()).sum();
        if total > FAILSAFE_PORTS_MAX {
            c.push(
                WarningKind::FailsafeWidePorts,
                span_of(t, "ports", tspan),
                format!(
                    "failsafe rule #{} covers {total} ports (more than {FAILSAFE_PORTS_MAX}): \
                     its sources bypass the blocklist and the zones on all of them",
                    i + 1
                ),
                "a failsafe rule keeps admin access (e.g. 22/tcp); list only those ports",
            );
        }
    }
}

fn zones(c: &mut Collector<'_>, p: &CompiledPolicy, root: &dyn TableLike) {
    for (i, z) in p.zones.iter().enumerate() {
        let (t, tspan) = nth_table(root, "zone", i);
        let allow = span_of(t, "allow", tspan);
        if z.allow_v4.is_empty() && z.allow_v6.is_empty() {
            let ports: Vec<String> = z.ports.iter().map(ToString::to_string).collect();
            c.push(
                WarningKind::ZoneAllowsNobody,
                allow,
                format!(
                    "zone \"{}\" has allow = []: nobody can reach {} (failsafe sources excepted)",
                    z.name,
                    ports.join(", ")
                ),
                "list the sources that may connect, e.g. allow = [\"10.0.0.0/8\"]; if the \
                 ports are meant to be closed to everyone, this is fine",
            );
            continue;
        }
        let shadowed_v4 = !z.allow_v4.is_empty() && all_inside_v4(&z.allow_v4, &p.blocklist_v4);
        let shadowed_v6 = !z.allow_v6.is_empty() && all_inside_v6(&z.allow_v6, &p.blocklist_v6);
        if shadowed_v4 || shadowed_v6 {
            let family = match (shadowed_v4, shadowed_v6) {
                (true, true) => "IPv4 and IPv6",
                (true, false) => "IPv4",
                _ => "IPv6",
            };
            c.push(
                WarningKind::BlocklistShadowsZone,
                allow,
                format!(
                    "every {family} source zone \"{}\" allows is in the blocklist: the \
                     blocklist is checked first, so none of them can reach the zone",
                    z.name
                ),
                "remove those sources from the blocklist (or its list files), or fix the \
                 zone's `allow`",
            );
        }
    }
}

fn metrics(c: &mut Collector<'_>, p: &CompiledPolicy, root: &dyn TableLike) {
    let m = &p.metrics;
    if m.listen.ip().is_loopback() {
        return;
    }
    let t = table(root, "metrics");
    let header = root.key("metrics").and_then(|k| k.span());
    let listen = span_of(t, "listen", header);
    if m.basic_auth.is_none() {
        c.push(
            WarningKind::MetricsWithoutAuth,
            listen,
            format!(
                "metrics listen on {}, beyond loopback, without basic_auth: anyone who \
                 reaches it reads the zones, counters and policy fingerprint",
                m.listen
            ),
            "add basic_auth = { user = \"prom\", password_hash = \"$argon2id$…\" } and \
             tls = { cert = \"…\", key = \"…\" }, or listen on 127.0.0.1",
        );
    } else if m.tls.is_none() {
        let span = span_of(t, "basic_auth", listen);
        c.push(
            WarningKind::MetricsAuthWithoutTls,
            span,
            format!(
                "metrics basic_auth on {}, beyond loopback, without tls: the password \
                 crosses the network in clear (base64)",
                m.listen
            ),
            "add tls = { cert = \"metrics.crt\", key = \"metrics.key\" }, or listen on \
             loopback",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compile_str;

    const ZONE: &str =
        "[[zone]]\nname = \"admin\"\nports = [\"8889/tcp\"]\nallow = [\"10.20.0.0/16\"]\n";
    const FAILSAFE: &str = "[[failsafe]]\nports = [\"22/tcp\"]\nfrom = [\"10.99.0.0/16\"]\n";

    fn warnings(body: &str) -> Vec<Warning> {
        let text = format!("version = 1\n{body}");
        compile_str(&text, Path::new("p.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
            .warnings
    }

    fn kinds(body: &str) -> Vec<WarningKind> {
        warnings(body).iter().map(|w| w.kind).collect()
    }

    fn only(body: &str, kind: WarningKind) -> Warning {
        let w = warnings(body);
        assert_eq!(w.len(), 1, "{w:#?}");
        assert_eq!(w[0].kind, kind);
        w[0].clone()
    }

    #[test]
    fn codes_and_names_are_unique_and_stable() {
        let codes: Vec<&str> = WarningKind::ALL.iter().map(|k| k.code()).collect();
        let expected: Vec<String> = (1..=WarningKind::ALL.len())
            .map(|i| format!("W{i:03}"))
            .collect();
        assert_eq!(codes, expected);
        let mut names: Vec<&str> = WarningKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), WarningKind::ALL.len());
    }

    #[test]
    fn a_plain_policy_has_no_warnings() {
        assert_eq!(kinds(&format!("{FAILSAFE}{ZONE}")), []);
        assert_eq!(
            kinds(
                "[defaults]\nunmatched = \"pass\"\nnon_ip = \"pass\"\nother_protocols = \"pass\"\n"
            ),
            []
        );
    }

    #[test]
    fn non_ip_drop_warns_lockout_at_the_value() {
        let w = only(
            &format!("[defaults]\nnon_ip = \"drop\"\n{FAILSAFE}"),
            WarningKind::LockoutNonIp,
        );
        assert_eq!((w.code, w.name), ("W001", "lockout-non-ip"));
        assert_eq!((w.line, w.column), (3, 10));
        assert!(w.message.contains("drops ARP"), "{w}");
        assert!(w.help.contains("non_ip = \"pass\""), "{w}");
        assert_eq!(
            w.to_string().lines().next().unwrap(),
            format!("p.toml:3:10: warning[W001 lockout-non-ip]: {}", w.message)
        );
        assert!(!w.one_line().contains('\n'));
    }

    #[test]
    fn other_protocols_drop_warns_that_ipv6_dies() {
        let w = only(
            &format!("[defaults]\nother_protocols = \"drop\"\n{FAILSAFE}"),
            WarningKind::LockoutIcmpv6,
        );
        assert!(w.message.contains("neighbour discovery"), "{w}");
        assert!(w.help.contains("other_protocols = \"pass\""), "{w}");
        assert_eq!(w.line, 3);
    }

    #[test]
    fn default_deny_without_failsafe_warns_and_with_one_does_not() {
        let w = only(
            &format!("[defaults]\nunmatched = \"drop\"\n{ZONE}"),
            WarningKind::DefaultDenyWithoutFailsafe,
        );
        assert_eq!(w.line, 3);
        assert_eq!(
            kinds(&format!(
                "[defaults]\nunmatched = \"drop\"\n{FAILSAFE}{ZONE}"
            )),
            []
        );
    }

    #[test]
    fn failsafe_from_everyone_warns_at_the_entry() {
        for from in [
            "\"any\"",
            "\"0.0.0.0/0\"",
            "\"::/0\"",
            "\"0.0.0.0/1\", \"128.0.0.0/1\"",
        ] {
            let body =
                format!("[[failsafe]]\nports = [\"22/tcp\"]\nfrom = [\"10.0.0.0/8\", {from}]\n");
            let w = only(&body, WarningKind::FailsafeFromAny);
            assert_eq!(w.line, 4, "{from}: {w}");
            assert!(w.message.contains("22/tcp"), "{w}");
        }
        let w = only(
            "[[failsafe]]\nports = [\"22/tcp\"]\nfrom = [\"10.0.0.0/8\", \"any\"]\n",
            WarningKind::FailsafeFromAny,
        );
        assert_eq!(w.column, 23, "{w}");
        assert!(w.message.contains("every source"), "{w}");
    }

    #[test]
    fn failsafe_over_1024_ports_warns() {
        let w = only(
            "[[failsafe]]\nports = [\"1-2000/tcp\"]\nfrom = [\"10.0.0.0/8\"]\n",
            WarningKind::FailsafeWidePorts,
        );
        assert!(w.message.contains("2000 ports"), "{w}");
        assert_eq!((w.line, w.column), (3, 9));
        assert_eq!(
            kinds("[[failsafe]]\nports = [\"1-1024/tcp\", \"22/udp\"]\nfrom = [\"10.0.0.0/8\"]\n")
                .len(),
            1
        );
        assert_eq!(
            kinds(
                "[[failsafe]]\nports = [\"1-1000/tcp\", \"1-24/udp\"]\nfrom = [\"10.0.0.0/8\"]\n"
            ),
            []
        );
    }

    #[test]
    fn blocklist_shadowing_a_zones_allowlist_warns_per_family() {
        let body = format!("[blocklist]\ncidrs = [\"10.20.0.0/17\", \"10.20.128.0/17\"]\n{ZONE}");
        let w = only(&body, WarningKind::BlocklistShadowsZone);
        assert!(
            w.message.contains("every IPv4 source zone \"admin\""),
            "{w}"
        );
        assert_eq!(w.line, 7);
        // Half the allowlist still reaches the zone.
        assert_eq!(
            kinds(&format!("[blocklist]\ncidrs = [\"10.20.0.0/17\"]\n{ZONE}")),
            []
        );
        // The IPv6 half of a dual-stack zone is shadowed.
        let body = "[blocklist]\ncidrs = [\"fd00::/8\"]\n[[zone]]\nname = \"a\"\nports = [\"1/tcp\"]\nallow = [\"10.0.0.0/8\", \"fd20::/48\"]\n";
        let w = only(body, WarningKind::BlocklistShadowsZone);
        assert!(w.message.contains("every IPv6 source"), "{w}");
    }

    #[test]
    fn zone_allowing_nobody_warns() {
        let w = only(
            "[[zone]]\nname = \"closed\"\nports = [\"8889/tcp\"]\nallow = []\n",
            WarningKind::ZoneAllowsNobody,
        );
        assert_eq!((w.line, w.column), (5, 9));
        assert!(w.message.contains("\"closed\""), "{w}");
        assert_eq!(kinds(ZONE), []);
    }

    #[test]
    fn metrics_beyond_loopback_without_auth_warns() {
        let w = only(
            "[metrics]\nlisten = \"0.0.0.0:9469\"\n",
            WarningKind::MetricsWithoutAuth,
        );
        assert_eq!((w.line, w.column), (3, 10));
        assert_eq!(kinds("[metrics]\nlisten = \"[::1]:9469\"\n"), []);
        assert_eq!(kinds("[metrics]\nlisten = \"127.0.0.1:9469\"\n"), []);
    }

    #[test]
    fn metrics_auth_beyond_loopback_without_tls_warns() {
        let auth = "basic_auth = { user = \"prom\", password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$x$y\" }\n";
        let w = only(
            &format!("[metrics]\nlisten = \"192.0.2.1:9469\"\n{auth}"),
            WarningKind::MetricsAuthWithoutTls,
        );
        assert!(w.message.contains("in clear"), "{w}");
        assert_eq!(w.line, 4);
        assert_eq!(
            kinds(&format!("[metrics]\nlisten = \"127.0.0.1:9469\"\n{auth}")),
            []
        );
    }

    #[test]
    fn warnings_come_in_file_order() {
        let body = format!(
            "[defaults]\nunmatched = \"drop\"\nnon_ip = \"drop\"\nother_protocols = \"drop\"\n{ZONE}[metrics]\nlisten = \"0.0.0.0:1\"\n"
        );
        assert_eq!(
            kinds(&body),
            [
                WarningKind::DefaultDenyWithoutFailsafe,
                WarningKind::LockoutNonIp,
                WarningKind::LockoutIcmpv6,
                WarningKind::MetricsWithoutAuth,
            ]
        );
    }

    #[test]
    fn a_blocklist_merging_to_everything_is_an_error() {
        for (cidrs, family) in [
            ("\"0.0.0.0/1\", \"128.0.0.0/1\"", "every IPv4 source"),
            ("\"::/1\", \"8000::/1\"", "every IPv6 source"),
            (
                "\"0.0.0.0/2\", \"64.0.0.0/2\", \"128.*.*.*\", \"128.0.0.0/1\"",
                "every IPv4 source",
            ),
        ] {
            let text = format!("version = 1\n[blocklist]\ncidrs = [{cidrs}]\n");
            let err = compile_str(&text, Path::new("p.toml")).unwrap_err();
            assert_eq!(err.len(), 1, "{err}");
            let d = &err.diagnostics[0];
            assert!(d.message.contains(family), "{cidrs}: {d}");
            assert_eq!((d.line, d.column), (3, 1));
        }
        let text = "version = 1\n[blocklist]\ncidrs = [\"0.0.0.0/1\", \"128.0.0.0/2\", \"::/1\"]\n";
        assert!(compile_str(text, Path::new("p.toml")).is_ok());
    }
}
