//! Address forms: CIDR, bare address, trailing IPv4 wildcards, `any`.
//! All prefix math goes through `ipnet`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::diag::{excerpt, Problem};

/// One parsed address entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Addr {
    V4(Ipv4Net),
    V6(Ipv6Net),
    /// `any`: 0.0.0.0/0 and ::/0.
    Any,
}

/// Where an address is written; decides which forms make sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// `allow`, `from`: everything.
    Allow,
    /// Blocklists: `any` and /0 would drop every source, which is never intended.
    Block,
}

const FORMS: &str = "write an address (10.1.2.3, 2001:db8::1), a prefix (10.0.0.0/8, \
                     2001:db8::/32), a trailing wildcard (10.1.*.*) or `any`";

/// `::ffff:0:0/96`, the IPv4-mapped IPv6 range.
// Evaluated at compile time, so `new_assert` cannot panic at run time.
const MAPPED: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96);

/// Parses one address entry. `s` must already be trimmed.
pub(crate) fn parse_addr(s: &str, usage: Use) -> Result<Addr, Problem> {
    let addr = parse_form(s)?;
    if usage == Use::Block {
        let everything = match addr {
            Addr::Any => true,
            Addr::V4(n) => n.prefix_len() == 0,
            Addr::V6(n) => n.prefix_len() == 0,
        };
        if everything {
            return Err(Problem::new(
                format!("`{}` in a blocklist would drop every source", excerpt(s)),
                "remove it; to drop traffic no zone claims, set defaults.unmatched = \"drop\"",
            )
            .blind(
                "`any` or a /0 in a blocklist would drop every source",
                "remove the line; a blocklist names the sources to drop",
            ));
        }
    }
    Ok(addr)
}

fn parse_form(s: &str) -> Result<Addr, Problem> {
    if s.is_empty() {
        return Err(Problem::new("empty address", FORMS).blind("empty address", FORMS));
    }
    if s.contains(char::is_whitespace) {
        let joined: String = s.split_whitespace().collect();
        return Err(Problem::new(
            format!("`{}` contains whitespace", excerpt(s)),
            format!("write the entry without spaces: {}", excerpt(&joined)),
        )
        .blind(
            "entry contains whitespace",
            "write the entry without spaces, e.g. 10.0.0.0/8",
        ));
    }
    if let Some((_, zone)) = s.split_once('%') {
        let zone = zone.split('/').next().unwrap_or_default();
        return Err(Problem::new(
            format!("`{}`: IPv6 zone ids are not supported", excerpt(s)),
            format!(
                "drop the `%{}`: the filter judges the source address alone, on every \
                 interface it is attached to",
                excerpt(zone)
            ),
        )
        .blind(
            "IPv6 zone ids (`%…`) are not supported",
            "drop the `%` and what follows: write fe80::1, not fe80::1%eth0",
        ));
    }
    if let Some(fixed) = without_leading_zeros(s) {
        return Err(Problem::new(
            format!("`{}`: an IPv4 octet has a leading zero", excerpt(s)),
            format!(
                "octets are plain decimal (a leading zero is refused rather than guessed \
                 as octal): did you mean {}?",
                excerpt(&fixed)
            ),
        )
        .blind(
            "an IPv4 octet has a leading zero",
            "octets are plain decimal: write 10.0.0.0/8, not 010.0.0.0/8",
        ));
    }
    if s.eq_ignore_ascii_case("any") {
        return Ok(Addr::Any);
    }
    if s.contains('*') {
        return parse_wildcard(s).map(Addr::V4);
    }
    if s.contains('/') {
        return parse_cidr(s);
    }
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Ok(Addr::V4(Ipv4Net::from(a))),
        Ok(IpAddr::V6(a)) => Ok(from_v6(Ipv6Net::from(a))),
        Err(_) => Err(Problem::new(
            format!("`{}` is not an address or prefix", excerpt(s)),
            FORMS,
        )
        .blind("not an address or prefix", FORMS)),
    }
}

fn parse_cidr(s: &str) -> Result<Addr, Problem> {
    match s.parse::<IpNet>() {
        Ok(net) => {
            let clean = net.trunc();
            if clean != net {
                let host = IpNet::from(net.addr());
                return Err(Problem::new(
                    format!("`{}` has host bits set", excerpt(s)),
                    format!("did you mean {clean}? (or {host} for the single host)"),
                )
                .blind(
                    "prefix has host bits set",
                    "a prefix starts at its network address: 192.0.2.0/24, not 192.0.2.7/24",
                ));
            }
            Ok(match net {
                IpNet::V4(n) => Addr::V4(n),
                IpNet::V6(n) => from_v6(n),
            })
        }
        Err(_) => Err(diagnose_cidr(s)),
    }
}

/// Explains why `ipnet` refused a prefix (its own error says only "invalid").
fn diagnose_cidr(s: &str) -> Problem {
    let Some((addr, len)) = s.split_once('/') else {
        return Problem::new(format!("`{}` is not a prefix", excerpt(s)), FORMS)
            .blind("not a prefix", FORMS);
    };
    let max = match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => 32,
        Ok(IpAddr::V6(_)) => 128,
        Err(_) => {
            return Problem::new(
                format!(
                    "`{}` in `{}` is not an IPv4 or IPv6 address",
                    excerpt(addr),
                    excerpt(s)
                ),
                "write the network address in dotted decimal (10.0.0.0/8) or IPv6 notation \
                 (2001:db8::/32)",
            )
            .blind(
                "the address before `/` is not an IPv4 or IPv6 address",
                "write the network address in dotted decimal (10.0.0.0/8) or IPv6 notation \
                 (2001:db8::/32)",
            )
        }
    };
    let family = if max == 32 { "IPv4" } else { "IPv6" };
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Problem::new(
            format!(
                "prefix length `{}` in `{}` is not a number",
                excerpt(len),
                excerpt(s)
            ),
            format!("write a prefix length from 0 to {max} after the `/`, e.g. {addr}/{max}"),
        )
        .blind(
            "prefix length is not a number",
            "write a prefix length after the `/`: 0-32 for IPv4, 0-128 for IPv6",
        );
    }
    // Any digit string that ipnet refused is out of range (or absurdly long).
    Problem::new(
        format!(
            "prefix length /{} is out of range for {family} (0-{max})",
            excerpt(len)
        ),
        format!("{family} prefixes are /0 to /{max}; a single host is {addr}/{max}"),
    )
    .blind(
        "prefix length is out of range",
        "IPv4 prefixes are /0 to /32, IPv6 prefixes /0 to /128",
    )
}

/// `10.1.*.*` → 10.1.0.0/16. Only trailing octets may be wildcards.
fn parse_wildcard(s: &str) -> Result<Ipv4Net, Problem> {
    if s.contains('/') {
        return Err(Problem::new(
            format!("`{}` mixes a wildcard and a prefix length", excerpt(s)),
            "use one or the other: 10.1.*.* or 10.1.0.0/16",
        )
        .blind(
            "wildcard mixed with a prefix length",
            "use one or the other: 10.1.*.* or 10.1.0.0/16",
        ));
    }
    let mut octets = [0u8; 4];
    let mut fixed = 0u8;
    let mut seen_star = false;
    let mut count = 0usize;
    for part in s.split('.') {
        count += 1;
        if count > 4 {
            break;
        }
        if part == "*" {
            seen_star = true;
            continue;
        }
        if seen_star {
            return Err(Problem::new(
                format!("`{}`: only trailing octets may be wildcards", excerpt(s)),
                "`*` may replace the last octets only (10.1.*.*); list the other networks one by one",
            )
            .blind(
                "only trailing octets may be wildcards",
                "`*` may replace the last octets only (10.1.*.*)",
            ));
        }
        let octet = parse_octet(part).ok_or_else(|| {
            Problem::new(
                format!(
                    "`{}` in `{}` is not an octet (0-255) or `*`",
                    excerpt(part),
                    excerpt(s)
                ),
                "write four dot-separated octets, e.g. 10.1.*.*",
            )
            .blind(
                "wildcard octet is not 0-255 or `*`",
                "write four dot-separated octets, e.g. 10.1.*.*",
            )
        })?;
        octets[usize::from(fixed)] = octet;
        fixed += 1;
    }
    if count != 4 {
        let hint = if count < 4 {
            let mut padded = s.to_string();
            for _ in count..4 {
                padded.push_str(".*");
            }
            format!("write all four octets: {padded}")
        } else {
            "an IPv4 wildcard has exactly four octets, e.g. 10.1.*.*".to_string()
        };
        return Err(
            Problem::new(format!("`{}` does not have four octets", excerpt(s)), hint).blind(
                "wildcard does not have four octets",
                "an IPv4 wildcard has four octets, e.g. 10.1.*.*",
            ),
        );
    }
    Ipv4Net::new(Ipv4Addr::from(octets), fixed * 8).map_err(|_| {
        Problem::new(format!("`{}` is not a valid wildcard", excerpt(s)), FORMS)
            .blind("not a valid wildcard", FORMS)
    })
}

/// `s` with the leading zeros of its IPv4 octets removed, if it has any
/// (`010.0.0.0/8` → `10.0.0.0/8`, `::ffff:010.1.2.3`). `ipnet` would read them
/// as decimal; operators may mean octal.
fn without_leading_zeros(s: &str) -> Option<String> {
    let (address, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let (head, dotted) = match address.rfind(':') {
        Some(i) => address.split_at(i + 1),
        None => ("", address),
    };
    if !dotted.contains('.') {
        return None;
    }
    let padded =
        |p: &str| p.len() > 1 && p.starts_with('0') && p.bytes().all(|b| b.is_ascii_digit());
    if !dotted.split('.').any(padded) {
        return None;
    }
    let octets: Vec<&str> = dotted
        .split('.')
        .map(|p| {
            if padded(p) {
                let t = p.trim_start_matches('0');
                if t.is_empty() {
                    "0"
                } else {
                    t
                }
            } else {
                p
            }
        })
        .collect();
    let mut fixed = format!("{head}{}", octets.join("."));
    if let Some(len) = len {
        fixed.push('/');
        fixed.push_str(len);
    }
    Some(fixed)
}

/// A decimal octet without sign or leading zeros (as `Ipv4Addr` parses them).
fn parse_octet(part: &str) -> Option<u8> {
    let digits_only = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (part.len() > 1 && part.starts_with('0')) {
        return None;
    }
    part.parse().ok()
}

/// IPv6 prefixes inside `::ffff:0:0/96` become the IPv4 prefix they denote: the
/// datapath judges IPv4-mapped sources by the IPv4 rules only.
pub(crate) fn from_v6(net: Ipv6Net) -> Addr {
    if MAPPED.contains(&net) {
        if let Some(v4) = net.addr().to_ipv4_mapped() {
            if let Ok(n) = Ipv4Net::new(v4, net.prefix_len() - 96) {
                return Addr::V4(n);
            }
        }
    }
    Addr::V6(net)
}

/// Appends a parsed address to per-family lists.
pub(crate) fn push(addr: Addr, v4: &mut Vec<Ipv4Net>, v6: &mut Vec<Ipv6Net>) {
    match addr {
        Addr::V4(n) => v4.push(n),
        Addr::V6(n) => v6.push(n),
        Addr::Any => {
            v4.push(Ipv4Net::default());
            v6.push(Ipv6Net::default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Addr {
        Addr::V4(s.parse().unwrap())
    }

    fn v6(s: &str) -> Addr {
        Addr::V6(s.parse().unwrap())
    }

    fn err(s: &str) -> Problem {
        parse_addr(s, Use::Allow).unwrap_err()
    }

    #[test]
    fn wildcard_10_1_star_star_is_slash_16() {
        assert_eq!(parse_addr("10.1.*.*", Use::Allow), Ok(v4("10.1.0.0/16")));
    }

    #[test]
    fn wildcards_cover_8_24_and_0() {
        assert_eq!(parse_addr("10.*.*.*", Use::Allow), Ok(v4("10.0.0.0/8")));
        assert_eq!(
            parse_addr("198.51.100.*", Use::Allow),
            Ok(v4("198.51.100.0/24"))
        );
        assert_eq!(parse_addr("*.*.*.*", Use::Allow), Ok(v4("0.0.0.0/0")));
    }

    #[test]
    fn non_trailing_wildcard_is_an_error() {
        assert!(err("10.*.1.*").message.contains("only trailing octets"));
        assert!(err("*.1.1.1").message.contains("only trailing octets"));
    }

    #[test]
    fn short_wildcard_suggests_four_octets() {
        let p = err("10.1.*");
        assert!(p.help.contains("10.1.*.*"), "{p:?}");
        assert!(err("10.1.*.*.*").message.contains("four octets"));
        assert!(err("10.1.*.*/16").message.contains("wildcard and a prefix"));
        assert!(err("10.300.*.*").message.contains("`300`"));
        let p = err("10.01.*.*");
        assert!(p.message.contains("leading zero"), "{p:?}");
        assert!(p.help.contains("did you mean 10.1.*.*?"), "{p:?}");
    }

    #[test]
    fn bare_addresses_are_host_prefixes() {
        assert_eq!(parse_addr("10.1.2.3", Use::Allow), Ok(v4("10.1.2.3/32")));
        assert_eq!(
            parse_addr("2001:db8::1", Use::Allow),
            Ok(v6("2001:db8::1/128"))
        );
    }

    #[test]
    fn any_is_any_in_any_case() {
        assert_eq!(parse_addr("any", Use::Allow), Ok(Addr::Any));
        assert_eq!(parse_addr("ANY", Use::Allow), Ok(Addr::Any));
    }

    #[test]
    fn host_bits_suggest_the_network() {
        let p = err("10.1.2.3/8");
        assert!(p.message.contains("host bits"));
        assert!(p.help.contains("did you mean 10.0.0.0/8?"), "{p:?}");
        assert!(p.help.contains("10.1.2.3/32"));
        let p = err("2001:db8::1/32");
        assert!(p.help.contains("did you mean 2001:db8::/32?"), "{p:?}");
    }

    #[test]
    fn prefix_length_out_of_range() {
        assert!(err("10.0.0.0/33")
            .message
            .contains("/33 is out of range for IPv4 (0-32)"));
        assert!(err("2001:db8::/129")
            .message
            .contains("/129 is out of range for IPv6 (0-128)"));
        assert!(err("10.0.0.0/x").message.contains("not a number"));
        assert!(err("10.0.0.0/").message.contains("not a number"));
        assert!(err("10.0.0/8")
            .message
            .contains("not an IPv4 or IPv6 address"));
        assert!(err("hello").message.contains("not an address"));
        assert!(err("").message.contains("empty"));
    }

    #[test]
    fn ipv4_mapped_ipv6_prefix_becomes_ipv4() {
        assert_eq!(
            parse_addr("::ffff:10.0.0.0/104", Use::Allow),
            Ok(v4("10.0.0.0/8"))
        );
        assert_eq!(
            parse_addr("::ffff:192.0.2.7", Use::Allow),
            Ok(v4("192.0.2.7/32"))
        );
        assert_eq!(parse_addr("::ffff:0:0/96", Use::Allow), Ok(v4("0.0.0.0/0")));
        // Shorter than /96: stays IPv6 (and never matches mapped sources).
        assert_eq!(parse_addr("::/80", Use::Allow), Ok(v6("::/80")));
    }

    #[test]
    fn leading_zeros_are_refused_with_the_decimal_form() {
        for (s, fixed) in [
            ("010.0.0.0/8", "10.0.0.0/8"),
            ("192.168.001.0/24", "192.168.1.0/24"),
            ("10.0.0.01", "10.0.0.1"),
            ("::ffff:010.1.2.3", "::ffff:10.1.2.3"),
            ("10.00.0.0/16", "10.0.0.0/16"),
        ] {
            let p = err(s);
            assert!(p.message.contains("leading zero"), "{s}: {p:?}");
            assert!(
                p.help.contains(&format!("did you mean {fixed}?")),
                "{s}: {p:?}"
            );
            assert_eq!(p.blind.0, "an IPv4 octet has a leading zero");
        }
        // Zero itself and IPv6 groups with leading zeros are fine.
        assert_eq!(parse_addr("10.0.0.0/8", Use::Allow), Ok(v4("10.0.0.0/8")));
        assert_eq!(
            parse_addr("2001:0db8::/32", Use::Allow),
            Ok(v6("2001:db8::/32"))
        );
    }

    #[test]
    fn whitespace_inside_an_entry_is_an_error() {
        let p = err("10.0.0.0 /8");
        assert!(p.message.contains("contains whitespace"), "{p:?}");
        assert!(p.help.contains("10.0.0.0/8"), "{p:?}");
        assert!(err("10. 0.0.0").message.contains("whitespace"));
    }

    #[test]
    fn ipv6_zone_ids_are_refused_by_name() {
        let p = err("fe80::1%eth0");
        assert!(
            p.message.contains("IPv6 zone ids are not supported"),
            "{p:?}"
        );
        assert!(p.help.contains("`%eth0`"), "{p:?}");
        assert!(err("fe80::%2/64").message.contains("zone ids"));
        assert_eq!(p.blind.0, "IPv6 zone ids (`%…`) are not supported");
    }

    #[test]
    fn blocklist_refuses_everything_prefixes() {
        for s in ["any", "0.0.0.0/0", "::/0", "*.*.*.*"] {
            let p = parse_addr(s, Use::Block).unwrap_err();
            assert!(p.message.contains("drop every source"), "{s}: {p:?}");
        }
        assert!(parse_addr("10.0.0.0/8", Use::Block).is_ok());
    }
}
