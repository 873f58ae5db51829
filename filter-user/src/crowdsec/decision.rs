//! The LAPI's decision stream (`GET /v1/decisions/stream`), decoded and
//! turned into bans. Everything here is pure: the clock is an argument.
use std::collections::HashMap;

use ipnet::IpNet;
use serde::Deserialize;

use crate::bans::{input::MAX_REASON, input::MAX_TAG, parse_target, Ban};
use crate::policy::crowdsec::{CrowdsecConfig, Scope};

/// `{"new": [...], "deleted": [...]}`; either may be `null`.
#[derive(Debug, Deserialize)]
pub struct Stream {
    #[serde(default)]
    pub new: Option<Vec<Decision>>,
    #[serde(default)]
    pub deleted: Option<Vec<Decision>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Decision {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub duration: String,
    #[serde(default)]
    pub origin: String,
    #[serde(default)]
    pub scenario: String,
    #[serde(default)]
    pub scope: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub value: String,
}

/// Why a decision was not turned into a ban (a metric label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// Not an address or a prefix (country, AS, user), or not one the policy honours.
    Scope,
    /// Not `ban` (captcha, throttle: nothing an XDP filter can do).
    Type,
    /// An origin the policy does not honour.
    Origin,
    /// The value is not an address/prefix, or is `/0`.
    Value,
    /// Unreadable or already over.
    Duration,
}

impl Skip {
    pub fn label(self) -> &'static str {
        match self {
            Skip::Scope => "scope",
            Skip::Type => "type",
            Skip::Origin => "origin",
            Skip::Value => "value",
            Skip::Duration => "duration",
        }
    }
}

/// Go's `time.Duration` text (`3h59m58.5s`, `-69.005102ms`, `1m0s`) in
/// nanoseconds, sign kept; `None` if it is not one.
pub fn go_duration_ns(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_end);
        if num.is_empty() || num.len() > 40 {
            return None;
        }
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale: i128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" | "μs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let int: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut part = int.checked_mul(scale)?;
        // Fractions below a nanosecond are dropped, as Go does.
        let mut f_scale = scale;
        for d in frac.bytes() {
            if !d.is_ascii_digit() {
                return None;
            }
            f_scale /= 10;
            part += (d - b'0') as i128 * f_scale;
        }
        total = total.checked_add(part)?;
        rest = next;
    }
    Some(if neg { -total } else { total })
}

/// The tag a decision's bans carry: `crowdsec:<origin>`, label-safe.
pub fn tag_of(origin: &str) -> String {
    let clean: String = origin
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(MAX_TAG - TAG_PREFIX.len())
        .collect();
    let clean = if clean.is_empty() {
        "unknown".to_string()
    } else {
        clean
    };
    format!("{TAG_PREFIX}{clean}")
}

pub const TAG_PREFIX: &str = "crowdsec:";

/// Is this a tag the bouncer owns (may remove)?
pub fn owned(tag: &str) -> bool {
    tag.starts_with(TAG_PREFIX)
}

fn scope_of(d: &Decision) -> Option<Scope> {
    match d.scope.to_ascii_lowercase().as_str() {
        "ip" => Some(Scope::Ip),
        "range" => Some(Scope::Range),
        _ => None,
    }
}

/// The prefix a decision is about, if the policy honours its scope and origin.
pub fn net_of(d: &Decision, cfg: &CrowdsecConfig) -> Result<IpNet, Skip> {
    let scope = scope_of(d).ok_or(Skip::Scope)?;
    if !cfg.scopes.contains(&scope) {
        return Err(Skip::Scope);
    }
    if !cfg.origins.is_empty()
        && !cfg
            .origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(&d.origin))
    {
        return Err(Skip::Origin);
    }
    let net = parse_target(&d.value).map_err(|_| Skip::Value)?;
    // An `Ip` decision names one address; a prefix there is not what it says.
    if scope == Scope::Ip && net.prefix_len() != net.max_prefix_len() {
        return Err(Skip::Value);
    }
    Ok(net)
}

/// A `new` decision as a ban expiring `now_tai_ns` + its duration.
pub fn ban_of(d: &Decision, cfg: &CrowdsecConfig, now_tai_ns: u64) -> Result<Ban, Skip> {
    let net = net_of(d, cfg)?;
    if !d.kind.eq_ignore_ascii_case("ban") {
        return Err(Skip::Type);
    }
    let ns = go_duration_ns(&d.duration).ok_or(Skip::Duration)?;
    if ns <= 0 {
        return Err(Skip::Duration);
    }
    let expires_ns = (now_tai_ns as i128)
        .saturating_add(ns)
        .min(crate::bans::input::MAX_TTL_S as i128 * 1_000_000_000 + now_tai_ns as i128)
        as u64;
    let reason: String = d
        .scenario
        .chars()
        .filter(|c| !c.is_control())
        .scan(0usize, |len, c| {
            *len += c.len_utf8();
            (*len <= MAX_REASON).then_some(c)
        })
        .collect();
    Ok(Ban {
        net,
        expires_ns,
        tag: tag_of(&d.origin),
        reason,
    })
}

/// The decisions in force per prefix, by decision id: CrowdSec may hold
/// several for one address (a scenario's ban and an operator's), and deleting
/// one must leave the ban of the others.
#[derive(Default)]
pub struct Tracker {
    by_net: HashMap<IpNet, Vec<(Option<i64>, Ban)>>,
}

/// What a batch of decisions means for the bans.
#[derive(Default, Debug)]
pub struct Changes {
    pub adds: Vec<Ban>,
    pub removes: Vec<IpNet>,
    pub skipped: Vec<Skip>,
}

impl Tracker {
    pub fn clear(&mut self) {
        self.by_net.clear();
    }

    pub fn len(&self) -> usize {
        self.by_net.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_net.is_empty()
    }

    /// Folds one stream answer in: each touched prefix ends with one ban,
    /// the longest of its remaining decisions, or none.
    pub fn apply(&mut self, s: &Stream, cfg: &CrowdsecConfig, now_tai_ns: u64) -> Changes {
        let mut out = Changes::default();
        let mut touched: Vec<IpNet> = Vec::new();
        for d in s.deleted.iter().flatten() {
            // A delete of something never honoured has nothing to undo.
            if let Ok(net) = net_of(d, cfg) {
                if let Some(list) = self.by_net.get_mut(&net) {
                    match d.id {
                        Some(id) => list.retain(|(i, _)| *i != Some(id)),
                        None => list.clear(),
                    }
                }
                touched.push(net);
            }
        }
        for d in s.new.iter().flatten() {
            match ban_of(d, cfg, now_tai_ns) {
                Ok(ban) => {
                    let net = ban.net;
                    let list = self.by_net.entry(net).or_default();
                    list.retain(|(i, _)| d.id.is_none() || *i != d.id);
                    list.push((d.id, ban));
                    touched.push(net);
                }
                Err(skip) => out.skipped.push(skip),
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for net in touched {
            let list = self.by_net.entry(net).or_default();
            list.retain(|(_, b)| b.expires_ns > now_tai_ns);
            match list.iter().max_by_key(|(_, b)| b.expires_ns) {
                Some((_, b)) => out.adds.push(b.clone()),
                None => {
                    self.by_net.remove(&net);
                    out.removes.push(net);
                }
            }
        }
        out
    }

    /// Forgets decisions whose time is up (the datapath already stopped
    /// dropping for them; the ban prune removes the bans).
    pub fn expire(&mut self, now_tai_ns: u64) {
        self.by_net.retain(|_, list| {
            list.retain(|(_, b)| b.expires_ns > now_tai_ns);
            !list.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CrowdsecConfig {
        CrowdsecConfig {
            lapi_url: url::Url::parse("http://127.0.0.1:8080").unwrap(),
            api_key_file: "/k".into(),
            poll: std::time::Duration::from_secs(10),
            scopes: vec![Scope::Ip, Scope::Range],
            origins: Vec::new(),
            ca: None,
        }
    }

    fn d(id: i64, scope: &str, value: &str, duration: &str) -> Decision {
        Decision {
            id: Some(id),
            duration: duration.into(),
            origin: "cscli".into(),
            scenario: "manual 'ban' from 'local'".into(),
            scope: scope.into(),
            kind: "ban".into(),
            value: value.into(),
        }
    }

    const S: i128 = 1_000_000_000;

    #[test]
    fn go_durations_as_the_lapi_writes_them() {
        assert_eq!(
            go_duration_ns("1m58.569402894s"),
            Some(118 * S + 569_402_894)
        );
        assert_eq!(
            go_duration_ns("3h59m59s"),
            Some((3 * 3600 + 59 * 60 + 59) * S)
        );
        assert_eq!(go_duration_ns("-69.005102ms"), Some(-69_005_102));
        assert_eq!(go_duration_ns("168h0m0s"), Some(168 * 3600 * S));
        assert_eq!(go_duration_ns("1.5h"), Some(5400 * S));
        assert_eq!(go_duration_ns("250µs"), Some(250_000));
        assert_eq!(go_duration_ns("0"), Some(0));
        for bad in [
            "",
            "4",
            "h",
            "4x",
            "1h-2m",
            "..s",
            "99999999999999999999999999999999h",
        ] {
            assert_eq!(go_duration_ns(bad), None, "{bad}");
        }
    }

    #[test]
    fn decisions_become_bans_tagged_by_origin_with_their_duration() {
        let b = ban_of(&d(1, "Ip", "198.51.100.7", "4h0m0s"), &cfg(), 1000).unwrap();
        assert_eq!(b.net.to_string(), "198.51.100.7/32");
        assert_eq!(b.expires_ns, 1000 + 4 * 3600 * 1_000_000_000);
        assert_eq!(b.tag, "crowdsec:cscli");
        let r = ban_of(&d(2, "Range", "2001:db8::/48", "1m"), &cfg(), 0).unwrap();
        assert_eq!(r.net.to_string(), "2001:db8::/48");
    }

    #[test]
    fn decisions_the_datapath_cannot_enforce_are_skipped_with_a_reason() {
        let c = cfg();
        let mut captcha = d(1, "Ip", "198.51.100.7", "4h");
        captcha.kind = "captcha".into();
        let cases = [
            (d(1, "Country", "FR", "4h"), Skip::Scope),
            (d(1, "AS", "64496", "4h"), Skip::Scope),
            (captcha, Skip::Type),
            (d(1, "Ip", "not-an-ip", "4h"), Skip::Value),
            (d(1, "Range", "0.0.0.0/0", "4h"), Skip::Value),
            (d(1, "Ip", "10.0.0.0/8", "4h"), Skip::Value),
            (d(1, "Ip", "198.51.100.7", "-3s"), Skip::Duration),
            (d(1, "Ip", "198.51.100.7", "soon"), Skip::Duration),
        ];
        for (dec, want) in cases {
            assert_eq!(ban_of(&dec, &c, 0).err(), Some(want), "{dec:?}");
        }
        let mut only_ip = cfg();
        only_ip.scopes = vec![Scope::Ip];
        assert_eq!(
            ban_of(&d(1, "Range", "10.0.0.0/8", "4h"), &only_ip, 0).err(),
            Some(Skip::Scope)
        );
        let mut only_crowdsec = cfg();
        only_crowdsec.origins = vec!["crowdsec".into()];
        assert_eq!(
            ban_of(&d(1, "Ip", "10.0.0.1", "4h"), &only_crowdsec, 0).err(),
            Some(Skip::Origin)
        );
    }

    #[test]
    fn tags_are_label_safe_and_bounded() {
        assert_eq!(tag_of("CAPI"), "crowdsec:CAPI");
        assert_eq!(tag_of("lists:firehol cins"), "crowdsec:lists_firehol_cins");
        assert_eq!(tag_of(""), "crowdsec:unknown");
        assert!(tag_of(&"x".repeat(500)).len() <= MAX_TAG);
        crate::bans::input::check_tag(&tag_of("weird\"<origin>\n")).unwrap();
    }

    #[test]
    fn deleting_one_of_two_decisions_keeps_the_ban_of_the_other() {
        let c = cfg();
        let mut t = Tracker::default();
        let s = Stream {
            new: Some(vec![
                d(1, "Ip", "198.51.100.7", "1h"),
                d(2, "Ip", "198.51.100.7", "4h"),
            ]),
            deleted: None,
        };
        let ch = t.apply(&s, &c, 0);
        assert_eq!(ch.adds.len(), 1);
        assert_eq!(ch.adds[0].expires_ns, 4 * 3600 * 1_000_000_000);
        // The 4 h decision goes: the 1 h one still bans.
        let del = Stream {
            new: None,
            deleted: Some(vec![d(2, "Ip", "198.51.100.7", "-1s")]),
        };
        let ch = t.apply(&del, &c, 0);
        assert!(ch.removes.is_empty(), "{ch:?}");
        assert_eq!(ch.adds[0].expires_ns, 3600 * 1_000_000_000);
        let del = Stream {
            new: None,
            deleted: Some(vec![d(1, "Ip", "198.51.100.7", "-1s")]),
        };
        let ch = t.apply(&del, &c, 0);
        assert!(ch.adds.is_empty());
        assert_eq!(ch.removes.len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn a_null_stream_changes_nothing() {
        let s: Stream = serde_json::from_str(r#"{"deleted":null,"new":null}"#).unwrap();
        let ch = Tracker::default().apply(&s, &cfg(), 0);
        assert!(ch.adds.is_empty() && ch.removes.is_empty() && ch.skipped.is_empty());
    }
}
