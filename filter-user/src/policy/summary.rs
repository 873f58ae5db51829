//! A readable view of a compiled policy, as text (for `portcullis check`) and JSON.

use std::fmt;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Serialize;

use super::compile::{CompiledPolicy, Proto, ZoneAction};

/// How many prefixes the text view shows per list before abbreviating.
const SHOW_PREFIXES: usize = 6;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicySummary {
    pub source_hash: String,
    pub interfaces: Vec<String>,
    pub defaults: DefaultsSummary,
    pub failsafe: Vec<FailsafeSummary>,
    pub zones: Vec<ZoneSummary>,
    pub blocklist: BlocklistSummary,
    pub metrics: MetricsSummary,
    /// `[crowdsec]` in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crowdsec: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DefaultsSummary {
    pub unmatched: &'static str,
    pub non_ip: &'static str,
    pub other_protocols: &'static str,
    pub fragments: &'static str,
    /// The reply budget of rejecting zones, per CPU.
    pub reject_rate: u32,
    pub reject_burst: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailsafeSummary {
    pub ports: Vec<String>,
    pub from_v4: Vec<String>,
    pub from_v6: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneSummary {
    pub id: u16,
    pub name: String,
    pub ports: Vec<String>,
    pub audit: bool,
    /// `drop` or `reject`.
    pub action: &'static str,
    /// A rejecting zone's reply per protocol it has ports of; empty for a
    /// dropping zone.
    pub replies: Vec<ReplySummary>,
    pub allow_v4: Vec<String>,
    pub allow_v6: Vec<String>,
    /// The zone's hours and where it stands when the summary was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSummary>,
    /// Each `rate` limit in words ("at most 200 packets/s per source, …").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<String>,
    /// The transfer `quota` in words ("at most 10 GB (10,000,000,000
    /// bytes) per source per UTC day, …").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleSummary {
    pub timezone: String,
    /// As the policy writes them: `mon-fri 08:00-18:30`.
    pub windows: Vec<String>,
    pub open_now: bool,
    pub next_open: Option<InstantSummary>,
    pub next_close: Option<InstantSummary>,
}

/// One instant, in the zone's time zone and in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstantSummary {
    /// `Thu 2026-12-03 08:00:00 CET`.
    pub local: String,
    /// RFC 3339 in UTC: `2026-12-03T07:00:00Z`.
    pub utc: String,
}

impl InstantSummary {
    pub fn new(t: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> Self {
        InstantSummary {
            local: t
                .to_zoned(tz.clone())
                .strftime("%a %Y-%m-%d %H:%M:%S %Z")
                .to_string(),
            utc: t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }
    }
}

impl ScheduleSummary {
    pub fn new(s: &super::schedule::ZoneSchedule, now: jiff::Timestamp) -> Self {
        let o = s.outlook(now);
        ScheduleSummary {
            timezone: s.timezone.clone(),
            windows: s.windows.iter().map(ToString::to_string).collect(),
            open_now: o.open,
            next_open: o.next_open.map(|t| InstantSummary::new(t, &s.tz)),
            next_close: o.next_close.map(|t| InstantSummary::new(t, &s.tz)),
        }
    }
}

impl fmt::Display for ScheduleSummary {
    /// Two lines: the hours, then now and the next open and close.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "hours {} ({})", self.windows.join("; "), self.timezone)?;
        let when = |i: &Option<InstantSummary>| match i {
            Some(i) => format!("{} ({})", i.local, i.utc),
            None => "never".into(),
        };
        let (first, second) = if self.open_now {
            (
                format!("closes {}", when(&self.next_close)),
                format!("opens {}", when(&self.next_open)),
            )
        } else {
            (
                format!("opens {}", when(&self.next_open)),
                format!("closes {}", when(&self.next_close)),
            )
        };
        let state = if self.open_now { "open" } else { "closed" };
        write!(f, "now {state}; {first}, then {second}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplySummary {
    /// `tcp`, `udp` or `sctp`.
    pub proto: &'static str,
    /// `tcp-reset`, `icmp-port-unreachable`, …
    pub reply: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlocklistSummary {
    /// Prefixes after merging.
    pub prefixes_v4: usize,
    pub prefixes_v6: usize,
    /// IPv4 addresses covered (an IPv6 count would not be meaningful).
    pub addresses_v4: u64,
    pub files: Vec<ListFileSummary>,
    /// `feeds`: what each one's cached copy gave (it may have none yet).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub feeds: Vec<FeedSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedSummary {
    pub name: String,
    /// Redacted (no credentials, no query).
    pub url: String,
    pub refresh_s: u64,
    /// The cached copy read.
    pub path: String,
    /// False: not fetched yet (or not readable here), it contributes nothing.
    pub cached: bool,
    /// Why the cached copy could not be read (`check` without permission).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
    pub entries: usize,
    pub bytes: u64,
    /// Seconds since the server last confirmed the copy (None: unknown).
    pub age_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListFileSummary {
    pub name: String,
    pub path: String,
    pub entries: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsSummary {
    pub listen: String,
    pub basic_auth_user: Option<String>,
}

fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

impl CompiledPolicy {
    /// What `check` shows, scheduled zones as of now.
    pub fn summary(&self) -> PolicySummary {
        self.summary_at(jiff::Timestamp::now())
    }

    pub fn summary_at(&self, now: jiff::Timestamp) -> PolicySummary {
        let d = &self.defaults;
        PolicySummary {
            source_hash: self.source_hash_hex(),
            interfaces: self.interfaces.clone(),
            defaults: DefaultsSummary {
                unmatched: d.unmatched.as_str(),
                non_ip: d.non_ip.as_str(),
                other_protocols: d.other_protocols.as_str(),
                fragments: d.fragments.as_str(),
                reject_rate: d.reject_rate,
                reject_burst: d.reject_burst,
            },
            failsafe: self
                .failsafe
                .iter()
                .map(|f| FailsafeSummary {
                    ports: strings(&f.ports),
                    from_v4: strings(&f.from_v4),
                    from_v6: strings(&f.from_v6),
                })
                .collect(),
            zones: self
                .zones
                .iter()
                .map(|z| ZoneSummary {
                    id: z.id,
                    name: z.name.clone(),
                    ports: strings(&z.ports),
                    audit: z.audit,
                    action: z.action.as_str(),
                    replies: match z.action {
                        ZoneAction::Drop => Vec::new(),
                        ZoneAction::Reject(with) => Proto::ALL
                            .into_iter()
                            .filter(|p| z.ports.iter().any(|r| r.proto == *p))
                            .map(|p| ReplySummary {
                                proto: p.as_str(),
                                reply: with.for_proto(p).as_str(),
                            })
                            .collect(),
                    },
                    allow_v4: strings(&z.allow_v4),
                    allow_v6: strings(&z.allow_v6),
                    schedule: z.schedule.as_ref().map(|s| ScheduleSummary::new(s, now)),
                    limits: z
                        .limits
                        .iter()
                        .flat_map(|l| l.specs().map(|s| s.explain()))
                        .collect(),
                    quota: z.quota.as_ref().map(|q| q.explain(z.action, z.audit)),
                })
                .collect(),
            blocklist: BlocklistSummary {
                prefixes_v4: self.blocklist_v4.len(),
                prefixes_v6: self.blocklist_v6.len(),
                addresses_v4: count_v4(&self.blocklist_v4),
                files: self
                    .list_files
                    .iter()
                    .map(|f| ListFileSummary {
                        name: f.name.clone(),
                        path: f.path.display().to_string(),
                        entries: f.entries,
                        bytes: f.bytes,
                    })
                    .collect(),
                feeds: self
                    .feeds
                    .iter()
                    .map(|f| {
                        let c = f.cached.as_ref();
                        FeedSummary {
                            name: f.spec.name.clone(),
                            url: crate::fetch::redacted(&f.spec.url),
                            refresh_s: f.spec.refresh.as_secs(),
                            path: f.path.display().to_string(),
                            cached: c.is_some(),
                            unreadable: f.unreadable.clone(),
                            entries: c.map_or(0, |c| c.entries),
                            bytes: c.map_or(0, |c| c.bytes),
                            age_s: c
                                .and_then(|c| c.checked_at)
                                .map(|t| crate::feeds::unix_now().saturating_sub(t)),
                        }
                    })
                    .collect(),
            },
            metrics: MetricsSummary {
                listen: self.metrics.listen.to_string(),
                basic_auth_user: self.metrics.basic_auth.as_ref().map(|a| a.user.clone()),
            },
            crowdsec: self.crowdsec.as_ref().map(crowdsec_words),
        }
    }
}

fn crowdsec_words(c: &super::crowdsec::CrowdsecConfig) -> String {
    let scopes: Vec<&str> = c.scopes.iter().map(|s| s.query_name()).collect();
    let origins = if c.origins.is_empty() {
        "every origin".to_string()
    } else {
        format!("origins {}", c.origins.join(", "))
    };
    format!(
        "bans from {} decisions ({origins}) of {}, pulled every {} s with the key in {}",
        scopes.join(" and "),
        crate::fetch::redacted(&c.lapi_url),
        c.poll.as_secs(),
        c.api_key_file.display()
    )
}

/// Addresses covered by merged (disjoint) IPv4 prefixes.
fn count_v4(nets: &[Ipv4Net]) -> u64 {
    nets.iter()
        .map(|n| 1u64 << (32 - u32::from(n.prefix_len())))
        .sum()
}

/// "a, b, c (+4 more)" or "none".
fn abbreviated(items: &[String]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    let shown = items
        .iter()
        .take(SHOW_PREFIXES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOW_PREFIXES {
        format!("{shown} (+{} more)", items.len() - SHOW_PREFIXES)
    } else {
        shown
    }
}

fn sources(v4: &[String], v6: &[String]) -> String {
    let any4 = v4.len() == 1 && v4[0] == Ipv4Net::default().to_string();
    let any6 = v6.len() == 1 && v6[0] == Ipv6Net::default().to_string();
    if any4 && any6 {
        return "any".into();
    }
    format!("IPv4 {} | IPv6 {}", abbreviated(v4), abbreviated(v6))
}

impl fmt::Display for PolicySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sha256      {}", self.source_hash)?;
        let ifaces = if self.interfaces.is_empty() {
            "(none; pass --iface)".to_string()
        } else {
            self.interfaces.join(", ")
        };
        writeln!(f, "interfaces  {ifaces}")?;
        let d = &self.defaults;
        writeln!(
            f,
            "defaults    unmatched={} non_ip={} other_protocols={} fragments={}",
            d.unmatched, d.non_ip, d.other_protocols, d.fragments
        )?;
        writeln!(f, "failsafe    {} rule(s)", self.failsafe.len())?;
        for (i, r) in self.failsafe.iter().enumerate() {
            writeln!(
                f,
                "  #{:<3} {}  from {}",
                i + 1,
                r.ports.join(", "),
                sources(&r.from_v4, &r.from_v6)
            )?;
        }
        writeln!(f, "zones       {}", self.zones.len())?;
        for z in &self.zones {
            let audit = if z.audit {
                "  [audit: not enforced]"
            } else {
                ""
            };
            writeln!(
                f,
                "  {:<3} {}  ports {}{audit}",
                z.id,
                z.name,
                z.ports.join(", ")
            )?;
            writeln!(
                f,
                "      allow {} ({} IPv4, {} IPv6 prefixes)",
                sources(&z.allow_v4, &z.allow_v6),
                z.allow_v4.len(),
                z.allow_v6.len()
            )?;
            if let Some(s) = &z.schedule {
                for line in s.to_string().lines() {
                    writeln!(f, "      {line}")?;
                }
            }
            for l in &z.limits {
                writeln!(f, "      rate  {l}")?;
            }
            if let Some(q) = &z.quota {
                writeln!(f, "      quota {q}")?;
            }
            if !z.replies.is_empty() {
                let replies: Vec<String> = z
                    .replies
                    .iter()
                    .map(|r| format!("{} → {}", r.proto, r.reply))
                    .collect();
                let budget = format!(
                    "at most {}/s, bursts of {}, per CPU",
                    self.defaults.reject_rate, self.defaults.reject_burst
                );
                writeln!(f, "      reject {} ({budget})", replies.join(", "))?;
            }
        }
        let b = &self.blocklist;
        writeln!(
            f,
            "blocklist   {} IPv4 prefixes ({} addresses), {} IPv6 prefixes, after merging",
            b.prefixes_v4, b.addresses_v4, b.prefixes_v6
        )?;
        for l in &b.files {
            writeln!(f, "  {}  {} entries, {} bytes", l.path, l.entries, l.bytes)?;
        }
        for feed in &b.feeds {
            let every = crate::feeds::ago(feed.refresh_s);
            let copy = match (feed.cached, feed.age_s) {
                (false, _) if feed.unreadable.is_some() => format!(
                    "the cached copy cannot be read here ({}: {}); not counted in this check",
                    feed.path,
                    feed.unreadable.as_deref().unwrap_or_default()
                ),
                (false, _) => {
                    "not fetched yet: contributes nothing until the daemon fetches it".to_string()
                }
                (true, Some(age)) => format!(
                    "{} entries, {} bytes, confirmed {} ago ({})",
                    feed.entries,
                    feed.bytes,
                    crate::feeds::ago(age),
                    feed.path
                ),
                (true, None) => format!(
                    "{} entries, {} bytes, age unknown ({})",
                    feed.entries, feed.bytes, feed.path
                ),
            };
            writeln!(
                f,
                "  feed {} ({}, every {every}): {copy}",
                feed.name, feed.url
            )?;
        }
        let auth = match &self.metrics.basic_auth_user {
            Some(u) => format!("basic auth as \"{u}\""),
            None => "no auth".to_string(),
        };
        write!(f, "metrics     {} ({auth})", self.metrics.listen)?;
        if let Some(c) = &self.crowdsec {
            write!(f, "\ncrowdsec    {c}")?;
        }
        Ok(())
    }
}
