//! Finds the policy lines behind a decision: the `[[zone]]` table and its
//! `allow` entry, the `[[failsafe]]` rule, the blocklist entry or list-file line
//! that lists the source, the `[defaults]` key. The compiled policy keeps no
//! spans, so the text is read again (with toml_edit's spans) and the few
//! address and port forms are matched here; the verdict itself always comes
//! from the kernel, never from this code.
use std::{
    io::Read,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;
use toml_edit::{ImDocument, Item, Table, Value};

use crate::policy::Proto;

/// One line of the policy (or of a list file) that took part in the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyLine {
    pub path: PathBuf,
    pub line: usize,
    /// What this line does for the packet, in a few words.
    pub role: String,
}

/// Largest list file scanned (as the policy reader's cap).
const LIST_MAX_BYTES: u64 = 128 << 20;

/// The policy text, parsed with spans.
pub struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    doc: ImDocument<&'a str>,
    /// Where the feeds' cached copies are (none: feeds are not searched).
    state_dir: Option<std::path::PathBuf>,
}

impl<'a> Source<'a> {
    /// `None` if the text is not TOML any more.
    pub fn parse(path: &'a Path, text: &'a str) -> Option<Source<'a>> {
        let doc = ImDocument::parse(text).ok()?;
        Some(Source {
            path,
            text,
            doc,
            state_dir: None,
        })
    }

    /// Searches the feeds' cached copies under `dir` too.
    pub fn with_state_dir(mut self, dir: &Path) -> Self {
        self.state_dir = Some(dir.to_path_buf());
        self
    }

    fn line_of(&self, span: Option<std::ops::Range<usize>>) -> Option<usize> {
        let start = span?.start.min(self.text.len());
        Some(self.text[..start].matches('\n').count() + 1)
    }

    fn at(&self, span: Option<std::ops::Range<usize>>, role: String) -> Option<PolicyLine> {
        Some(PolicyLine {
            path: self.path.to_path_buf(),
            line: self.line_of(span)?,
            role,
        })
    }

    fn tables(&self, key: &str) -> Vec<&Table> {
        match self.doc.get(key) {
            Some(Item::ArrayOfTables(a)) => a.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// The line of `key` inside `[section]`.
    pub fn key_line(&self, section: &str, key: &str, role: String) -> Option<PolicyLine> {
        let table = self.doc.get(section)?.as_table_like()?;
        let (k, _) = table.get_key_value(key)?;
        self.at(k.span(), role)
    }

    /// The `[[zone]]` named `zone`: its header and, for `src`, the `allow`
    /// entry that admits it, or the `allow` key (and `action`/`audit`) if none.
    pub fn zone(&self, zone: &str, src: IpAddr, proto: Proto, port: u16) -> Vec<PolicyLine> {
        let Some(table) = self
            .tables("zone")
            .into_iter()
            .find(|t| t.get("name").and_then(Item::as_str) == Some(zone))
        else {
            return Vec::new();
        };
        let ports = strings(table.get("ports"));
        let claims = ports
            .iter()
            .find(|(p, _)| port_matches(p, proto, port))
            .map_or_else(|| format!("{port}/{proto}"), |(p, _)| p.clone());
        let mut out: Vec<PolicyLine> = self
            .at(table.span(), format!("[[zone]] {zone} claims {claims}"))
            .into_iter()
            .collect();
        let allow = strings(table.get("allow"));
        match allow.iter().find(|(s, _)| covers(s, src)) {
            Some((entry, span)) => out.extend(self.at(
                span.clone(),
                format!("allow entry \"{entry}\" admits {src}"),
            )),
            None => {
                out.extend(self.key_line_in(table, "allow", format!("allow does not list {src}")));
                out.extend(self.key_line_in(table, "action", "the zone's action".into()));
                out.extend(self.key_line_in(table, "reject_with", "the zone's reply".into()));
                out.extend(self.key_line_in(table, "audit", "the zone's audit switch".into()));
            }
        }
        out
    }

    fn key_line_in(&self, table: &Table, key: &str, role: String) -> Option<PolicyLine> {
        let (k, _) = table.get_key_value(key)?;
        self.at(k.span(), role)
    }

    /// Every `[[failsafe]]` rule with a port for (proto, port) and a `from`
    /// entry for `src`: the header and that entry.
    pub fn failsafe(&self, src: IpAddr, proto: Proto, port: u16) -> Vec<PolicyLine> {
        let mut out = Vec::new();
        for (i, table) in self.tables("failsafe").into_iter().enumerate() {
            let ports = strings(table.get("ports"));
            let Some((p, _)) = ports.iter().find(|(p, _)| port_matches(p, proto, port)) else {
                continue;
            };
            let from = strings(table.get("from"));
            let Some((f, span)) = from.iter().find(|(f, _)| covers(f, src)) else {
                continue;
            };
            out.extend(self.at(
                table.span(),
                format!("[[failsafe]] rule {} covers {p}", i + 1),
            ));
            out.extend(self.at(span.clone(), format!("from entry \"{f}\" lists {src}")));
        }
        out
    }

    /// The blocklist entries that list `src`: inline `cidrs` entries and lines
    /// of the list files (resolved against the policy's directory).
    pub fn blocklist(&self, src: IpAddr) -> Vec<PolicyLine> {
        let Some(table) = self.doc.get("blocklist").and_then(Item::as_table_like) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (entry, span) in strings(table.get("cidrs")) {
            if covers(&entry, src) {
                out.extend(self.at(span, format!("blocklist entry \"{entry}\" lists {src}")));
            }
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        for (name, span) in strings(table.get("files")) {
            let file = dir.join(&name);
            match list_file_line(&file, src) {
                Ok(Some((line, entry))) => {
                    out.extend(self.at(span, format!("list file \"{name}\" lists {src}")));
                    out.push(PolicyLine {
                        path: file,
                        line,
                        role: format!("\"{entry}\" lists {src}"),
                    });
                }
                Ok(None) => {}
                Err(e) => out.extend(self.at(span, format!("list file \"{name}\": {e}"))),
            }
        }
        if let Some(dir) = &self.state_dir {
            out.extend(self.feed_lines(table, dir, src));
        }
        out
    }

    /// The feeds whose cached copy lists `src`, and the copy's line.
    fn feed_lines(
        &self,
        table: &dyn toml_edit::TableLike,
        dir: &Path,
        src: IpAddr,
    ) -> Vec<PolicyLine> {
        let mut out = Vec::new();
        let feeds: Vec<(&dyn toml_edit::TableLike, Option<std::ops::Range<usize>>)> =
            match table.get("feeds") {
                Some(Item::ArrayOfTables(a)) => a
                    .iter()
                    .map(|t| (t as &dyn toml_edit::TableLike, t.span()))
                    .collect(),
                Some(Item::Value(Value::Array(a))) => a
                    .iter()
                    .filter_map(|v| {
                        v.as_inline_table()
                            .map(|t| (t as &dyn toml_edit::TableLike, v.span()))
                    })
                    .collect(),
                _ => Vec::new(),
            };
        for (t, span) in feeds {
            let Some(url) = t.get("url").and_then(Item::as_str) else {
                continue;
            };
            let Ok(url) = url::Url::parse(url.trim()) else {
                continue;
            };
            let file = crate::feeds::cache::body_path(dir, url.as_str());
            if let Ok(Some((line, entry))) = list_file_line(&file, src) {
                let shown = crate::fetch::redacted(&url);
                out.extend(self.at(span, format!("feed {shown} lists {src}")));
                out.push(PolicyLine {
                    path: file,
                    line,
                    role: format!("\"{entry}\" lists {src} (the feed's cached copy)"),
                });
            }
        }
        out
    }
}

/// The string elements of an array value with their spans.
fn strings(item: Option<&Item>) -> Vec<(String, Option<std::ops::Range<usize>>)> {
    let Some(array) = item.and_then(Item::as_array) else {
        return Vec::new();
    };
    array
        .iter()
        .filter_map(|v: &Value| v.as_str().map(|s| (s.to_string(), v.span())))
        .collect()
}

/// The first line of a list file that lists `src`, with its entry.
fn list_file_line(path: &Path, src: IpAddr) -> std::io::Result<Option<(usize, String)>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(LIST_MAX_BYTES)
        .read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start_matches('\u{feff}').trim();
        let entry = if line.starts_with('{') {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) => match v.get("cidr").and_then(|c| c.as_str()) {
                    Some(c) => c.to_string(),
                    None => continue,
                },
                Err(_) => continue,
            }
        } else {
            let end = line.find(['#', ';']).unwrap_or(line.len());
            line[..end].trim().to_string()
        };
        if !entry.is_empty() && entry != "any" && covers(&entry, src) {
            return Ok(Some((i + 1, entry)));
        }
    }
    Ok(None)
}

/// Does the policy's port form `entry` (`22/tcp`, `9000-9010/udp`) hold (proto, port)?
pub fn port_matches(entry: &str, proto: Proto, port: u16) -> bool {
    let Some((ports, p)) = entry.trim().rsplit_once('/') else {
        return false;
    };
    if !p.trim().eq_ignore_ascii_case(proto.as_str()) {
        return false;
    }
    let (first, last) = ports.split_once('-').unwrap_or((ports, ports));
    match (first.trim().parse::<u16>(), last.trim().parse::<u16>()) {
        (Ok(a), Ok(b)) => a <= port && port <= b,
        _ => false,
    }
}

/// Does the policy's address form `entry` hold `src`, judged as the datapath
/// judges it (an IPv4-mapped source by the IPv4 rules only)?
pub fn covers(entry: &str, src: IpAddr) -> bool {
    let entry = entry.trim();
    if entry.eq_ignore_ascii_case("any") {
        return true;
    }
    let Some(net) = entry_net(entry) else {
        return false;
    };
    let src = match src {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(src, IpAddr::V4),
        v4 => v4,
    };
    net.contains(&src)
}

/// The prefix an address form denotes; mapped IPv6 prefixes of length ≥ 96
/// become the IPv4 prefix they carry (docs/policy.md).
fn entry_net(entry: &str) -> Option<IpNet> {
    if entry.contains('*') {
        let octets: Vec<&str> = entry.split('.').collect();
        if octets.len() != 4 {
            return None;
        }
        let fixed = octets.iter().take_while(|o| **o != "*").count();
        if octets[fixed..].iter().any(|o| *o != "*") {
            return None;
        }
        let mut addr = [0u8; 4];
        for (i, o) in octets[..fixed].iter().enumerate() {
            addr[i] = o.parse().ok()?;
        }
        return Ipv4Net::new(Ipv4Addr::from(addr), (fixed * 8) as u8)
            .ok()
            .map(IpNet::V4);
    }
    let net = match entry.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(entry.parse::<IpAddr>().ok()?),
    };
    Some(match net {
        IpNet::V6(v6) => unmap(v6).map_or(net, IpNet::V4),
        v4 => v4,
    })
}

fn unmap(net: Ipv6Net) -> Option<Ipv4Net> {
    let v4 = net.network().to_ipv4_mapped()?;
    (net.prefix_len() >= 96)
        .then(|| Ipv4Net::new(v4, net.prefix_len() - 96).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"version = 1

[defaults]
unmatched = "drop"

[blocklist]
cidrs = ["203.0.113.0/24",
         "198.51.100.*"]
files = ["drop.txt"]

[[failsafe]]
ports = ["22/tcp"]
from  = ["10.99.0.0/16"]

[[zone]]
name  = "api"
ports = ["8880/tcp"]
allow = ["any"]

[[zone]]
name   = "admin"
ports  = ["8889/tcp", "9000-9010/tcp"]
allow  = ["10.20.0.0/16",
          "::ffff:192.0.2.0/120"]
action = "drop"
"#;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lines(v: &[PolicyLine]) -> Vec<usize> {
        v.iter().map(|l| l.line).collect()
    }

    fn source() -> Source<'static> {
        Source::parse(Path::new("/nonexistent/p.toml"), POLICY).unwrap()
    }

    #[test]
    fn zone_lookup_names_the_table_and_the_admitting_entry() {
        let s = source();
        assert_eq!(
            lines(&s.zone("admin", ip("10.20.3.4"), Proto::Tcp, 8889)),
            [20, 23]
        );
        // A mapped allow entry admits the IPv4 source (on its own line).
        assert_eq!(
            lines(&s.zone("admin", ip("192.0.2.9"), Proto::Tcp, 9005)),
            [20, 24]
        );
        assert_eq!(
            lines(&s.zone("api", ip("2001:db8::1"), Proto::Tcp, 8880)),
            [15, 18]
        );
    }

    #[test]
    fn zone_lookup_without_an_entry_names_allow_and_action() {
        let got = source().zone("admin", ip("198.18.0.2"), Proto::Tcp, 9005);
        assert_eq!(lines(&got), [20, 23, 25]);
        assert!(got[0].role.ends_with("claims 9000-9010/tcp"), "{got:?}");
        assert!(got[1].role.contains("does not list 198.18.0.2"), "{got:?}");
    }

    #[test]
    fn failsafe_lookup_needs_port_and_source() {
        let s = source();
        assert_eq!(
            lines(&s.failsafe(ip("10.99.1.1"), Proto::Tcp, 22)),
            [11, 13]
        );
        assert!(s.failsafe(ip("10.99.1.1"), Proto::Udp, 22).is_empty());
        assert!(s.failsafe(ip("10.98.1.1"), Proto::Tcp, 22).is_empty());
    }

    #[test]
    fn blocklist_lookup_finds_wildcards_and_list_file_lines() {
        let dir = std::env::temp_dir().join(format!("pc-explain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("drop.txt"),
            "; feed\n1.2.3.0/24 ; SBL1\n{\"cidr\":\"5.6.0.0/16\",\"sblid\":\"x\"}\n",
        )
        .unwrap();
        let path = dir.join("p.toml");
        let s = Source::parse(&path, POLICY).unwrap();
        assert_eq!(lines(&s.blocklist(ip("198.51.100.7"))), [8]);
        let listed = s.blocklist(ip("5.6.7.8"));
        assert_eq!(lines(&listed), [9, 3]);
        assert_eq!(listed[1].path, dir.join("drop.txt"));
        assert_eq!(lines(&s.blocklist(ip("1.2.3.4"))), [9, 2]);
        assert!(s.blocklist(ip("9.9.9.9")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn defaults_key_line_is_found() {
        let l = source()
            .key_line("defaults", "unmatched", "x".into())
            .unwrap();
        assert_eq!(l.line, 4);
        assert!(source()
            .key_line("defaults", "non_ip", "x".into())
            .is_none());
    }

    #[test]
    fn address_forms_match_as_the_datapath_judges() {
        assert!(covers("10.*.*.*", ip("10.1.2.3")));
        assert!(!covers("10.*.*.*", ip("11.1.2.3")));
        assert!(covers("*.*.*.*", ip("1.1.1.1")));
        assert!(covers("192.0.2.7", ip("192.0.2.7")));
        assert!(covers("any", ip("::1")));
        // ::/0 never admits IPv4-mapped sources; a mapped /104 is an IPv4 /8.
        assert!(!covers("::/0", ip("::ffff:10.0.0.1")));
        assert!(covers("::ffff:10.0.0.0/104", ip("10.9.9.9")));
        assert!(covers("10.0.0.0/8", ip("::ffff:10.0.0.1")));
        assert!(!covers("10.*.1.*", ip("10.0.1.1")));
    }

    #[test]
    fn port_forms_match_protocol_and_range() {
        assert!(port_matches("9000-9010/tcp", Proto::Tcp, 9005));
        assert!(!port_matches("9000-9010/tcp", Proto::Tcp, 9011));
        assert!(port_matches("53/UDP", Proto::Udp, 53));
        assert!(!port_matches("53/udp", Proto::Tcp, 53));
    }
}
