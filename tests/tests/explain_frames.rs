//! `portcullis explain` builds its frame with its own small builder
//! (filter-user cannot depend on this crate): the reference model of
//! docs/parsing-contract.md must read every frame it builds as the packet asked
//! for (source, protocol, destination port, fragment kind, VLAN tag).
use std::net::IpAddr;

use filter_user::explain::{
    frame::{build, Fragment, FrameSpec, SOURCE_PORT},
    parse_to,
};
use filter_user::policy::Proto;
use portcullis_tests::{
    model::{self, Fragment as MFrag, Parsed, Transport},
    spec,
};

fn spec_proto(p: Proto) -> spec::Proto {
    match p {
        Proto::Tcp => spec::Proto::Tcp,
        Proto::Udp => spec::Proto::Udp,
        Proto::Sctp => spec::Proto::Sctp,
    }
}

fn frames() -> Vec<FrameSpec> {
    let pairs: [(&str, &str); 3] = [
        ("198.51.100.7", "192.0.2.1"),
        ("2001:db8:1::7", "2001:db8::1"),
        ("::ffff:10.20.0.2", "2001:db8::1"),
    ];
    let mut out = Vec::new();
    for (src, dst) in pairs {
        for proto in Proto::ALL {
            for vlan in [None, Some(100)] {
                for fragment in [None, Some(Fragment::First), Some(Fragment::Later)] {
                    out.push(FrameSpec {
                        src: src.parse().unwrap(),
                        dst: dst.parse().unwrap(),
                        proto,
                        sport: SOURCE_PORT,
                        dport: 8889,
                        vlan,
                        fragment,
                    });
                }
            }
        }
    }
    out
}

#[test]
fn model_reads_every_explain_frame_as_the_packet_asked_for() {
    for s in frames() {
        let frame = build(&s);
        let Parsed::Ip(ip) = model::parse(&frame) else {
            panic!("{s:?}: the model reads {:?}", model::parse(&frame));
        };
        assert_eq!(ip.src, s.src, "{s:?}");
        let want_frag = match s.fragment {
            None => MFrag::No,
            Some(Fragment::First) => MFrag::First,
            Some(Fragment::Later) => MFrag::NonFirst,
        };
        assert_eq!(ip.fragment, want_frag, "{s:?}");
        match (s.fragment, ip.transport) {
            (Some(Fragment::Later), Transport::NoPorts { protocol }) => {
                assert_eq!(protocol, s.proto.ip_proto(), "{s:?}")
            }
            (Some(Fragment::Later), t) => panic!("{s:?}: a later fragment with ports: {t:?}"),
            (_, Transport::Ports { proto, dport }) => {
                assert_eq!((proto, dport), (spec_proto(s.proto), s.dport), "{s:?}")
            }
            (_, t) => panic!("{s:?}: no ports read: {t:?}"),
        }
    }
}

#[test]
fn vlan_frames_are_four_bytes_longer() {
    let mut s = frames()[0].clone();
    let plain = build(&s).len();
    s.vlan = Some(7);
    assert_eq!(build(&s).len(), plain + 4);
}

#[test]
fn to_argument_round_trips_into_the_frame() {
    let (port, proto) = parse_to("7008/udp").unwrap();
    let s = FrameSpec {
        src: "10.20.0.2".parse::<IpAddr>().unwrap(),
        dst: "10.0.0.1".parse().unwrap(),
        proto,
        sport: SOURCE_PORT,
        dport: port,
        vlan: None,
        fragment: None,
    };
    let Parsed::Ip(ip) = model::parse(&build(&s)) else {
        panic!("not IP");
    };
    assert_eq!(
        ip.transport,
        Transport::Ports {
            proto: spec::Proto::Udp,
            dport: 7008
        }
    );
}
