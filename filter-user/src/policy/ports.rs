//! Port forms: `N/proto`, `N-M/proto`, proto ∈ tcp, udp, sctp.

use super::compile::{PortRange, Proto};
use super::diag::{excerpt, Problem};

const FORMS: &str = "write a port or an inclusive range with its protocol: \"22/tcp\", \
                     \"9000-9010/udp\" (protocols: tcp, udp, sctp)";

/// Parses one port entry. `s` must already be trimmed.
pub(crate) fn parse_port(s: &str) -> Result<PortRange, Problem> {
    if s.contains(char::is_whitespace) {
        let joined: String = s.split_whitespace().collect();
        return Err(Problem::new(
            format!("port `{}` contains whitespace", excerpt(s)),
            format!("write it without spaces: \"{}\"", excerpt(&joined)),
        ));
    }
    let Some((ports, proto)) = s.rsplit_once('/') else {
        let example = if let Some(range) = colon_range(s) {
            format!("write the range with `-` and the protocol, e.g. \"{range}/tcp\"")
        } else if s.bytes().all(|b| b.is_ascii_digit() || b == b'-') && !s.is_empty() {
            format!("write the protocol too, e.g. \"{}/tcp\"", excerpt(s))
        } else {
            FORMS.to_string()
        };
        return Err(Problem::new(
            format!("port `{}` has no protocol", excerpt(s)),
            example,
        ));
    };
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "sctp" => Proto::Sctp,
        _ if is_proto(ports)
            && !proto.is_empty()
            && proto.bytes().all(|b| b.is_ascii_digit() || b == b'-') =>
        {
            return Err(Problem::new(
                format!("port `{}` has the protocol first", excerpt(s)),
                format!(
                    "did you mean `{}/{}`?",
                    excerpt(proto),
                    ports.to_ascii_lowercase()
                ),
            ))
        }
        _ => {
            return Err(Problem::new(
                format!("unknown protocol `{}` in `{}`", excerpt(proto), excerpt(s)),
                "ports exist for tcp, udp and sctp only; ICMP and other port-less protocols \
                 follow defaults.other_protocols",
            ))
        }
    };
    if let Some(range) = colon_range(ports) {
        return Err(Problem::new(
            format!("port range `{}` uses `:`", excerpt(s)),
            format!("did you mean `{range}/{proto}`? (a range is written with `-`)"),
        ));
    }
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (parse_number(a, s)?, parse_number(b, s)?),
        None => {
            let p = parse_number(ports, s)?;
            (p, p)
        }
    };
    if first > last {
        return Err(Problem::new(
            format!(
                "port range `{}` is backwards ({first} > {last})",
                excerpt(s)
            ),
            format!("did you mean \"{last}-{first}/{proto}\"?"),
        ));
    }
    Ok(PortRange { proto, first, last })
}

fn is_proto(s: &str) -> bool {
    ["tcp", "udp", "sctp"]
        .iter()
        .any(|p| s.eq_ignore_ascii_case(p))
}

/// `22:30` (iptables' range syntax) → `22-30`.
fn colon_range(s: &str) -> Option<String> {
    let (a, b) = s.split_once(':')?;
    let digits = |x: &str| !x.is_empty() && x.len() <= 5 && x.bytes().all(|c| c.is_ascii_digit());
    (digits(a) && digits(b)).then(|| format!("{a}-{b}"))
}

fn parse_number(n: &str, whole: &str) -> Result<u16, Problem> {
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::new(
            format!(
                "`{}` in `{}` is not a port number",
                excerpt(n),
                excerpt(whole)
            ),
            FORMS,
        ));
    }
    // Digits only, so a parse failure means "too large".
    n.parse::<u16>().map_err(|_| {
        Problem::new(
            format!(
                "port {} in `{}` is out of range (0-65535)",
                excerpt(n),
                excerpt(whole)
            ),
            "ports are 0 to 65535",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ports_and_ranges_parse() {
        assert_eq!(parse_port("22/tcp"), Ok(PortRange::single(Proto::Tcp, 22)));
        assert_eq!(
            parse_port("9000-9010/udp"),
            Ok(PortRange {
                proto: Proto::Udp,
                first: 9000,
                last: 9010
            })
        );
        assert_eq!(parse_port("0/sctp"), Ok(PortRange::single(Proto::Sctp, 0)));
        assert_eq!(
            parse_port("65535/TCP"),
            Ok(PortRange::single(Proto::Tcp, 65535))
        );
    }

    #[test]
    fn port_out_of_range_is_an_error() {
        let p = parse_port("65536/tcp").unwrap_err();
        assert!(p.message.contains("out of range (0-65535)"), "{p:?}");
        assert!(parse_port("1-99999/udp")
            .unwrap_err()
            .message
            .contains("out of range"));
    }

    #[test]
    fn backwards_range_suggests_the_swap() {
        let p = parse_port("9010-9000/tcp").unwrap_err();
        assert!(p.message.contains("backwards"));
        assert_eq!(p.help, "did you mean \"9000-9010/tcp\"?");
    }

    #[test]
    fn protocol_first_suggests_port_first() {
        let p = parse_port("tcp/22").unwrap_err();
        assert!(p.message.contains("protocol first"), "{p:?}");
        assert_eq!(p.help, "did you mean `22/tcp`?");
        assert_eq!(
            parse_port("UDP/9000-9010").unwrap_err().help,
            "did you mean `9000-9010/udp`?"
        );
    }

    #[test]
    fn colon_range_suggests_dash() {
        let p = parse_port("22:30/tcp").unwrap_err();
        assert!(p.message.contains("uses `:`"), "{p:?}");
        assert!(p.help.starts_with("did you mean `22-30/tcp`?"), "{p:?}");
        let p = parse_port("22:30").unwrap_err();
        assert!(p.help.contains("\"22-30/tcp\""), "{p:?}");
    }

    #[test]
    fn whitespace_inside_a_port_is_an_error() {
        let p = parse_port("22 /tcp").unwrap_err();
        assert!(p.message.contains("contains whitespace"), "{p:?}");
        assert!(p.help.contains("\"22/tcp\""), "{p:?}");
        assert!(parse_port("22 - 30/tcp").is_err());
    }

    #[test]
    fn unknown_proto_and_missing_proto_are_errors() {
        assert!(parse_port("22/icmp")
            .unwrap_err()
            .message
            .contains("unknown protocol `icmp`"));
        let p = parse_port("22").unwrap_err();
        assert!(p.message.contains("no protocol"));
        assert!(p.help.contains("\"22/tcp\""));
        assert!(parse_port("ssh/tcp")
            .unwrap_err()
            .message
            .contains("not a port number"));
        assert!(parse_port("-5/tcp")
            .unwrap_err()
            .message
            .contains("not a port number"));
        assert!(parse_port("+5/tcp")
            .unwrap_err()
            .message
            .contains("not a port number"));
    }
}
