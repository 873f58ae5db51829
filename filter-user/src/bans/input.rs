//! What an operator or a detector may ask to ban, checked before anything is
//! changed: an address or prefix (never the whole address space), a TTL, a
//! tag, a reason, and the bulk file.
use std::{io::Read, path::Path};

use ipnet::{IpNet, Ipv4Net};

use super::BanError;

/// Largest bulk file (`ban add --file`).
pub const MAX_BULK_BYTES: u64 = 64 << 20;
/// Most addresses in one bulk file.
pub const MAX_BULK_LINES: usize = 1 << 21;
pub const MAX_TAG: usize = 64;
pub const MAX_REASON: usize = 256;
/// Longest TTL: ten years (beyond that, ban without `--for`).
pub const MAX_TTL_S: u64 = 10 * 366 * 86_400;

/// An address (a /32 or /128) or a prefix. IPv4-mapped IPv6 is banned as
/// the IPv4 address it carries (the datapath judges such sources as IPv4).
pub fn parse_target(s: &str) -> Result<IpNet, BanError> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("any") || t == "*" {
        return Err(BanError::input(
            s,
            "a ban of every address is refused: it would cut off everything but the failsafe \
             rules; ban the prefixes you mean",
        ));
    }
    let net: IpNet = match t.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match t.parse::<std::net::IpAddr>() {
            Ok(a) => IpNet::from(a),
            Err(_) => {
                return Err(BanError::input(
                    s,
                    "not an IPv4/IPv6 address or prefix (e.g. 198.51.100.7, 2001:db8::/48)",
                ))
            }
        },
    };
    if net.prefix_len() == 0 {
        return Err(BanError::input(
            s,
            "a /0 ban would cover every address; ban the prefixes you mean",
        ));
    }
    if net.trunc() != net {
        return Err(BanError::input(
            s,
            format!("has host bits set: did you mean {}?", net.trunc()),
        ));
    }
    if let IpNet::V6(n) = net {
        if let Some(v4) = n.network().to_ipv4_mapped() {
            if n.prefix_len() >= 96 {
                let v4 = Ipv4Net::new(v4, n.prefix_len() - 96).expect("length <= 32");
                if v4.prefix_len() == 0 {
                    return Err(BanError::input(s, "covers every IPv4 address"));
                }
                return Ok(IpNet::V4(v4));
            }
        }
    }
    Ok(net)
}

/// A TTL: `90s`, `15m`, `4h`, `2d`, `1w` or plain seconds; more than 0.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("`{s}`: a ban's duration cannot be negative"));
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 90s, 15m, 4h, 2d)"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (s, m, h, d or w)")),
    };
    let secs = n.saturating_mul(mult);
    if secs == 0 {
        return Err(format!(
            "`{s}`: a ban must last longer than 0 s (leave out --for for no expiry)"
        ));
    }
    if secs > MAX_TTL_S {
        return Err(format!(
            "`{s}`: longer than ten years; leave out --for for a ban without expiry"
        ));
    }
    Ok(secs)
}

/// Tags name who banned (`fail2ban`, `crowdsec:cscli`): label-safe text.
pub fn check_tag(tag: &str) -> Result<(), BanError> {
    if tag.len() > MAX_TAG {
        return Err(BanError::input(
            tag,
            format!("a tag is at most {MAX_TAG} bytes"),
        ));
    }
    if let Some(c) = tag
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.:-/".contains(*c)))
    {
        return Err(BanError::input(
            tag,
            format!("`{c}` in a tag: use letters, digits and _ . : - /"),
        ));
    }
    Ok(())
}

pub fn check_reason(reason: &str) -> Result<(), BanError> {
    if reason.len() > MAX_REASON {
        return Err(BanError::input(
            &reason[..reason.floor_char_boundary(40)],
            format!("a reason is at most {MAX_REASON} bytes"),
        ));
    }
    if reason.chars().any(|c| c.is_control()) {
        return Err(BanError::input(reason, "control characters in the reason"));
    }
    Ok(())
}

/// The bulk file: one address or prefix a line, `#` starts a comment.
/// Every line is checked; the first bad one is the error, with its number.
pub fn read_bulk(path: &Path) -> Result<Vec<IpNet>, BanError> {
    let file = std::fs::File::open(path).map_err(|e| BanError::io(path, e))?;
    let meta = file.metadata().map_err(|e| BanError::io(path, e))?;
    if !meta.is_file() {
        return Err(BanError::input(
            &path.display().to_string(),
            "not a regular file",
        ));
    }
    if meta.len() > MAX_BULK_BYTES {
        return Err(BanError::input(
            &path.display().to_string(),
            format!(
                "{} bytes: a bulk file is at most {MAX_BULK_BYTES}",
                meta.len()
            ),
        ));
    }
    let mut text = String::new();
    file.take(MAX_BULK_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| BanError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        if out.len() >= MAX_BULK_LINES {
            return Err(BanError::input(
                &path.display().to_string(),
                format!("more than {MAX_BULK_LINES} addresses in one request"),
            ));
        }
        let net = parse_target(l).map_err(|e| BanError::Input {
            input: format!("{}:{}", path.display(), i + 1),
            detail: e.to_string(),
        })?;
        out.push(net);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_targets_are_refused_with_a_reason() {
        for (s, want) in [
            ("any", "every address"),
            ("0.0.0.0/0", "/0"),
            ("::/0", "/0"),
            ("198.51.100.300", "not an IPv4/IPv6"),
            ("198.51.100.7/24", "did you mean 198.51.100.0/24"),
            ("::ffff:0.0.0.0/96", "every IPv4"),
            ("", "not an IPv4"),
        ] {
            let e = parse_target(s).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn addresses_become_host_prefixes_and_mapped_ipv6_becomes_ipv4() {
        assert_eq!(
            parse_target("198.51.100.7").unwrap().to_string(),
            "198.51.100.7/32"
        );
        assert_eq!(
            parse_target("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(
            parse_target("::ffff:198.51.100.0/120").unwrap().to_string(),
            "198.51.100.0/24"
        );
    }

    #[test]
    fn ttls_zero_negative_and_huge_are_refused() {
        assert_eq!(parse_ttl("4h"), Ok(14_400));
        assert_eq!(parse_ttl("600"), Ok(600));
        assert!(parse_ttl("0").unwrap_err().contains("longer than 0"));
        assert!(parse_ttl("0s").unwrap_err().contains("longer than 0"));
        assert!(parse_ttl("-5m").unwrap_err().contains("negative"));
        assert!(parse_ttl("5y").unwrap_err().contains("unknown unit"));
        assert!(parse_ttl("99999999999999d")
            .unwrap_err()
            .contains("ten years"));
    }

    #[test]
    fn tags_and_reasons_are_bounded() {
        assert!(check_tag("crowdsec:cscli").is_ok());
        assert!(check_tag("bad tag").is_err());
        assert!(check_tag(&"x".repeat(65)).is_err());
        assert!(check_reason("sshd: 5 failures").is_ok());
        assert!(check_reason("a\nb").is_err());
        assert!(check_reason(&"é".repeat(200)).is_err());
    }
}
