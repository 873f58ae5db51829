//! Behaviour of the policy compiler as a whole: parse → validate → compile.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ipnet::{Ipv4Net, Ipv6Net};

use super::*;

const P: &str = "policy.toml";

fn compile(text: &str) -> Result<CompiledPolicy, PolicyError> {
    compile_str(text, Path::new(P))
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match compile(text) {
        Ok(p) => panic!("expected errors, policy compiled: {p:?}"),
        Err(e) => e.diagnostics,
    }
}

/// The single diagnostic whose message contains `needle`.
fn find<'d>(diags: &'d [Diagnostic], needle: &str) -> &'d Diagnostic {
    let hits: Vec<_> = diags
        .iter()
        .filter(|d| d.message.contains(needle))
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "want one diagnostic with {needle:?} in {diags:#?}"
    );
    hits[0]
}

fn v4(s: &[&str]) -> Vec<Ipv4Net> {
    s.iter().map(|n| n.parse().unwrap()).collect()
}

fn v6(s: &[&str]) -> Vec<Ipv6Net> {
    s.iter().map(|n| n.parse().unwrap()).collect()
}

fn tcp(first: u16, last: u16) -> PortRange {
    PortRange {
        proto: Proto::Tcp,
        first,
        last,
    }
}

/// A fresh directory for tests that need list files.
fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "portcullis-policy-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

#[test]
fn minimal_policy_gets_design_defaults() {
    let p = compile("version = 1\n").unwrap();
    assert_eq!(p.defaults, Defaults::default());
    assert_eq!(p.defaults.unmatched, Action::Pass);
    assert_eq!(p.defaults.fragments, FragmentMode::FilterFirst);
    assert_eq!(p.metrics.listen.to_string(), "127.0.0.1:9469");
    assert_eq!(p.metrics.basic_auth, None);
    assert!(p.interfaces.is_empty() && p.zones.is_empty() && p.failsafe.is_empty());
    assert!(p.blocklist_v4.is_empty() && p.blocklist_v6.is_empty());
}

#[test]
fn missing_version_is_an_error() {
    let d = errors("interfaces = [\"eth0\"]\n");
    let e = find(&d, "no `version`");
    assert_eq!((e.line, e.column), (1, 1));
    assert!(e.help.as_deref().unwrap().contains("version = 1"));
}

#[test]
fn unsupported_version_is_an_error() {
    let d = errors("\nversion = 2\n");
    let e = find(&d, "unsupported policy version 2");
    assert_eq!((e.line, e.column), (2, 11));
    let d = errors("version = \"1\"\n");
    find(&d, "`version` must be an integer, found a string");
}

#[test]
fn slash_33_is_an_error_with_location() {
    let d = errors(
        "version = 1\n\
         [[zone]]\n\
         name = \"a\"\n\
         ports = [\"22/tcp\"]\n\
         allow = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
    );
    assert_eq!(d.len(), 1, "{d:#?}");
    let e = &d[0];
    assert_eq!(e.path, Path::new(P));
    assert_eq!((e.line, e.column), (5, 24));
    assert!(
        e.message.contains("/33 is out of range for IPv4 (0-32)"),
        "{e}"
    );
    assert!(
        e.to_string().starts_with("policy.toml:5:24: error: "),
        "{e}"
    );
}

#[test]
fn slash_129_is_an_error() {
    let d = errors("version = 1\n[blocklist]\ncidrs = [\"2001:db8::/129\"]\n");
    let e = find(&d, "/129 is out of range for IPv6 (0-128)");
    assert_eq!((e.line, e.column), (3, 10));
}

#[test]
fn host_bits_in_policy_suggest_the_network() {
    let d = errors("version = 1\n[blocklist]\ncidrs = [\"10.1.2.3/8\"]\n");
    let e = find(&d, "host bits set");
    assert_eq!((e.line, e.column), (3, 10));
    assert!(e
        .help
        .as_deref()
        .unwrap()
        .starts_with("did you mean 10.0.0.0/8?"));
}

#[test]
fn port_claimed_by_two_zones_names_both() {
    let d = errors(
        "version = 1\n\
         [[zone]]\n\
         name = \"admin\"\n\
         ports = [\"8889/tcp\", \"8890/tcp\"]\n\
         allow = [\"10.20.0.0/16\"]\n\
         [[zone]]\n\
         name = \"other\"\n\
         ports = [\"443/tcp\", \"8889/tcp\"]\n\
         allow = [\"any\"]\n",
    );
    assert_eq!(d.len(), 1, "{d:#?}");
    let e = &d[0];
    // Points at the second claim.
    assert_eq!((e.line, e.column), (8, 21));
    assert!(
        e.message.contains("\"admin\"") && e.message.contains("\"other\""),
        "{e}"
    );
    assert!(e.message.contains("8889/tcp"), "{e}");
    assert!(e.message.contains("line 4"), "{e}");
}

#[test]
fn overlapping_port_ranges_report_the_overlap() {
    let d = errors(
        "version = 1\n\
         [[zone]]\nname = \"a\"\nports = [\"9005/tcp\"]\nallow = []\n\
         [[zone]]\nname = \"b\"\nports = [\"9000-9010/tcp\", \"9020-9030/tcp\"]\nallow = []\n\
         [[zone]]\nname = \"c\"\nports = [\"9025-9040/tcp\"]\nallow = []\n",
    );
    assert_eq!(d.len(), 2, "{d:#?}");
    assert!(
        d[0].message
            .starts_with("port 9005/tcp of zone \"b\" already claimed by zone \"a\""),
        "{}",
        d[0]
    );
    assert_eq!(d[0].line, 8);
    assert!(
        d[1].message
            .starts_with("ports 9025-9030/tcp of zone \"c\" already claimed by zone \"b\""),
        "{}",
        d[1]
    );
    assert_eq!(d[1].line, 12);
}

#[test]
fn same_port_number_on_other_protocol_or_same_zone_is_fine() {
    let p = compile(
        "version = 1\n\
         [[zone]]\nname = \"dns-tcp\"\nports = [\"53/tcp\", \"53/tcp\", \"50-60/tcp\"]\nallow = [\"any\"]\n\
         [[zone]]\nname = \"dns-udp\"\nports = [\"53/udp\"]\nallow = [\"any\"]\n",
    )
    .unwrap();
    assert_eq!(p.zones[0].ports, vec![tcp(50, 60)]);
    assert_eq!(p.zones[1].ports, vec![PortRange::single(Proto::Udp, 53)]);
    assert_eq!(p.zone_for(Proto::Udp, 53).map(|z| z.id), Some(2));
    assert_eq!(p.zone_for(Proto::Tcp, 55).map(|z| z.id), Some(1));
    assert!(p.zone_for(Proto::Sctp, 53).is_none());
}

#[test]
fn one_run_reports_bad_prefix_duplicate_port_and_unknown_key() {
    let text = "version = 1\n\
                [[zone]]\n\
                name = \"api\"\n\
                ports = [\"8880/tcp\"]\n\
                allow = [\"10.0.0.0/33\"]\n\
                \n\
                [[zone]]\n\
                name = \"admin\"\n\
                ports = [\"8880/tcp\"]\n\
                alow = [\"10.20.0.0/16\"]\n\
                allow = []\n";
    let d = errors(text);
    assert_eq!(d.len(), 3, "{d:#?}");
    // Sorted by position.
    assert!(d[0].message.contains("/33"));
    assert_eq!((d[0].line, d[0].column), (5, 10));
    assert!(d[1].message.contains("8880/tcp") && d[1].message.contains("\"api\""));
    assert_eq!((d[1].line, d[1].column), (9, 10));
    assert_eq!(d[2].message, "unknown key `alow` in [[zone]]");
    assert_eq!((d[2].line, d[2].column), (10, 1));
    assert_eq!(d[2].help.as_deref(), Some("did you mean `allow`?"));
}

#[test]
fn unknown_key_without_near_match_lists_valid_keys() {
    let d = errors("version = 1\n[defaults]\ncolour = \"blue\"\n");
    let e = find(&d, "unknown key `colour` in [defaults]");
    assert_eq!((e.line, e.column), (3, 1));
    assert_eq!(
        e.help.as_deref(),
        Some("valid keys in [defaults]: unmatched, non_ip, other_protocols, fragments, reject_rate, reject_burst, rate_tracked")
    );
    let d = errors("version = 1\n[[zones]]\nname = \"x\"\n");
    let e = find(&d, "unknown key `zones` at the top level");
    assert_eq!(e.help.as_deref(), Some("did you mean `zone`?"));
}

#[test]
fn wrong_types_are_reported_with_examples() {
    let d = errors(
        "version = 1\n\
         interfaces = \"eth0\"\n\
         [defaults]\nunmatched = true\n\
         [[zone]]\nname = 7\nports = [22]\nallow = \"any\"\naudit = \"yes\"\n",
    );
    find(
        &d,
        "`interfaces` must be an array of strings, found a string",
    );
    find(&d, "`defaults.unmatched` must be a string, found a boolean");
    find(&d, "`zone.name` must be a string, found an integer");
    let e = find(&d, "`zone.ports` entries must be strings, found an integer");
    assert_eq!((e.line, e.column), (7, 10));
    find(
        &d,
        "`zone.allow` must be an array of strings, found a string",
    );
    find(&d, "`zone.audit` must be true or false, found a string");
    assert_eq!(d.len(), 6, "{d:#?}");
}

#[test]
fn bad_default_value_suggests_the_nearest() {
    let d = errors("version = 1\n[defaults]\nunmatched = \"dorp\"\nfragments = \"filter_first\"\n");
    let e = find(
        &d,
        "`defaults.unmatched` must be \"pass\" or \"drop\", found \"dorp\"",
    );
    assert_eq!(e.help.as_deref(), Some("did you mean \"drop\"?"));
    let e = find(&d, "defaults.fragments");
    assert_eq!(e.help.as_deref(), Some("did you mean \"filter-first\"?"));
}

#[test]
fn defaults_are_read() {
    let p = compile(
        "version = 1\n[defaults]\nunmatched = \"drop\"\nnon_ip = \"drop\"\n\
         other_protocols = \"drop\"\nfragments = \"drop\"\n",
    )
    .unwrap();
    assert_eq!(
        p.defaults,
        Defaults {
            unmatched: Action::Drop,
            non_ip: Action::Drop,
            other_protocols: Action::Drop,
            fragments: FragmentMode::Drop,
            ..Defaults::default()
        }
    );
}

fn zone(extra: &str) -> String {
    format!(
        "version = 1\n[[zone]]\nname = \"a\"\nports = [\"22/tcp\", \"53/udp\"]\nallow = []\n{extra}"
    )
}

#[test]
fn reject_without_reject_with_answers_by_protocol() {
    let p = compile(&zone("action = \"reject\"\n")).unwrap();
    assert_eq!(
        p.zones[0].action,
        ZoneAction::Reject(RejectWith::ByProtocol)
    );
    let s = p.summary();
    assert_eq!(s.zones[0].action, "reject");
    let replies: Vec<_> = s.zones[0]
        .replies
        .iter()
        .map(|r| (r.proto, r.reply))
        .collect();
    assert_eq!(
        replies,
        [("tcp", "tcp-reset"), ("udp", "icmp-port-unreachable")]
    );
    let text = s.to_string();
    assert!(
        text.contains("reject tcp → tcp-reset, udp → icmp-port-unreachable (at most 100/s, bursts of 200, per CPU)"),
        "{text}"
    );
    let drop = compile(&zone("")).unwrap();
    assert_eq!(drop.zones[0].action, ZoneAction::Drop);
    assert!(drop.summary().zones[0].replies.is_empty());
    assert!(!drop.summary().to_string().contains("reject"));
}

#[test]
fn reject_with_picks_the_reply_for_every_protocol() {
    let p = compile(&zone(
        "action = \"reject\"\nreject_with = \"icmp-admin-prohibited\"\n",
    ))
    .unwrap();
    assert_eq!(
        p.zones[0].action,
        ZoneAction::Reject(RejectWith::IcmpAdminProhibited)
    );
    let s = p.summary();
    assert!(s.zones[0]
        .replies
        .iter()
        .all(|r| r.reply == "icmp-admin-prohibited"));
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["zones"][0]["action"], "reject");
    assert_eq!(json["zones"][0]["replies"][0]["proto"], "tcp");
    assert_eq!(
        json["zones"][0]["replies"][1]["reply"],
        "icmp-admin-prohibited"
    );
}

#[test]
fn unknown_reject_with_names_the_valid_replies() {
    let d = errors(&zone("action = \"reject\"\nreject_with = \"tcp-rst\"\n"));
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(d[0].message.contains("`zone.reject_with` must be \"tcp-reset\" or \"icmp-port-unreachable\" or \"icmp-admin-prohibited\" or \"icmp-host-unreachable\", found \"tcp-rst\""), "{}", d[0].message);
    assert_eq!((d[0].line, d[0].column), (7, 15));
    assert_eq!(d[0].help.as_deref(), Some("did you mean \"tcp-reset\"?"));
    let d = errors(&zone("action = \"reject\"\nreject_with = \"rst\"\n"));
    assert!(d[0].help.as_deref().unwrap().contains("valid values"));
}

#[test]
fn tcp_reset_on_a_zone_with_udp_ports_is_an_error() {
    let d = errors(&zone("action = \"reject\"\nreject_with = \"tcp-reset\"\n"));
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        d[0].message,
        "reject_with = \"tcp-reset\" cannot answer 53/udp of zone \"a\": a TCP reset answers TCP only"
    );
    assert_eq!((d[0].line, d[0].column), (7, 15));
    assert!(d[0]
        .help
        .as_deref()
        .unwrap()
        .contains("leave reject_with out"));
    // On a TCP-only zone it is fine.
    let p = compile(
        "version = 1\n[[zone]]\nname = \"a\"\nports = [\"22/tcp\"]\nallow = []\n\
         action = \"reject\"\nreject_with = \"tcp-reset\"\n",
    )
    .unwrap();
    assert_eq!(p.zones[0].action, ZoneAction::Reject(RejectWith::TcpReset));
}

#[test]
fn reject_with_without_action_reject_is_an_error() {
    for extra in [
        "reject_with = \"icmp-port-unreachable\"\n",
        "action = \"drop\"\nreject_with = \"icmp-port-unreachable\"\n",
    ] {
        let d = errors(&zone(extra));
        let e = find(&d, "without action = \"reject\"");
        assert_eq!(e.column, 15);
        assert!(e
            .help
            .as_deref()
            .unwrap()
            .contains("add action = \"reject\""));
    }
}

#[test]
fn unknown_zone_action_suggests_drop_or_reject() {
    let d = errors(&zone("action = \"rejct\"\n"));
    let e = find(&d, "unknown zone action \"rejct\"");
    assert_eq!((e.line, e.column), (6, 10));
    assert_eq!(e.help.as_deref(), Some("did you mean \"reject\"?"));
    let d = errors(&zone("action = \"pass\"\n"));
    let e = find(&d, "unknown zone action \"pass\"");
    assert!(e.help.as_deref().unwrap().contains("audit = true"));
}

#[test]
fn reject_budget_is_read_and_range_checked() {
    let p = compile("version = 1\n[defaults]\nreject_rate = 5\nreject_burst = 7\n").unwrap();
    assert_eq!((p.defaults.reject_rate, p.defaults.reject_burst), (5, 7));
    let p = compile("version = 1\n").unwrap();
    assert_eq!(
        (p.defaults.reject_rate, p.defaults.reject_burst),
        (DEFAULT_REJECT_RATE, DEFAULT_REJECT_BURST)
    );
    let d = errors("version = 1\n[defaults]\nreject_rate = 0\nreject_burst = \"lots\"\n");
    let e = find(
        &d,
        "`defaults.reject_rate` 0 is out of range (1 to 1000000)",
    );
    assert_eq!((e.line, e.column), (3, 15));
    find(&d, "`defaults.reject_burst` must be an integer");
}

#[test]
fn zone_names_must_be_present_unique_and_non_empty() {
    let d = errors(
        "version = 1\n\
         [[zone]]\nname = \"a\"\nports = [\"1/tcp\"]\nallow = []\n\
         [[zone]]\nname = \"a\"\nports = [\"2/tcp\"]\nallow = []\n\
         [[zone]]\nname = \"  \"\nports = [\"3/tcp\"]\nallow = []\n\
         [[zone]]\nports = [\"4/tcp\"]\n",
    );
    let e = find(&d, "duplicate zone name \"a\" (first used on line 3)");
    assert_eq!((e.line, e.column), (7, 8));
    find(&d, "zone name is empty");
    let e = find(&d, "[[zone]] has no `name`");
    assert_eq!((e.line, e.column), (14, 1));
    find(&d, "[[zone]] has no `allow`");
    assert_eq!(d.len(), 4, "{d:#?}");
}

#[test]
fn zone_with_no_ports_is_an_error() {
    let d = errors("version = 1\n[[zone]]\nname = \"a\"\nports = []\nallow = []\n");
    let e = find(&d, "`ports` is empty");
    assert_eq!((e.line, e.column), (4, 9));
}

#[test]
fn too_many_zones_is_an_error() {
    let max = filter_common::MAX_ZONES as usize;
    let mut text = String::from("version = 1\n");
    for i in 0..=max {
        text.push_str(&format!(
            "[[zone]]\nname = \"z{i}\"\nports = [\"{}/tcp\"]\nallow = []\n",
            1000 + i
        ));
    }
    let d = errors(&text);
    let e = find(&d, &format!("too many zones: {} (at most {max})", max + 1));
    assert_eq!(e.line, 2 + max * 4);
    assert_eq!(d.len(), 1);

    // MAX_ZONES is fine, and ids are 1-based in policy order.
    let cut = text.rfind("[[zone]]").unwrap();
    let p = compile(&text[..cut]).unwrap();
    assert_eq!(p.zones.len(), max);
    assert_eq!(p.zones[0].id, 1);
    assert_eq!(p.zones[max - 1].id as usize, max);
    assert_eq!(p.zones[max - 1].name, format!("z{}", max - 1));
}

#[test]
fn zones_compile_merged_and_sorted() {
    let p = compile(
        "version = 1\n\
         [[zone]]\nname = \"admin\"\n\
         ports = [\"8890/tcp\", \"8889/tcp\", \"9000-9010/tcp\", \"9011/tcp\", \"161/udp\"]\n\
         allow = [\"10.20.1.0/24\", \"10.20.0.0/24\", \"fd20::/48\", \"10.30.*.*\", \"10.20.0.5\"]\n\
         audit = true\n",
    )
    .unwrap();
    let z = &p.zones[0];
    assert_eq!((z.id, z.name.as_str(), z.audit), (1, "admin", true));
    assert_eq!(
        z.ports,
        vec![
            tcp(8889, 8890),
            tcp(9000, 9011),
            PortRange::single(Proto::Udp, 161)
        ]
    );
    assert_eq!(z.allow_v4, v4(&["10.20.0.0/23", "10.30.0.0/16"]));
    assert_eq!(z.allow_v6, v6(&["fd20::/48"]));
}

#[test]
fn allow_any_gives_both_families() {
    let p = compile(
        "version = 1\n[[zone]]\nname = \"api\"\nports = [\"8880/tcp\"]\nallow = [\"any\", \"10.0.0.0/8\"]\n",
    )
    .unwrap();
    assert_eq!(p.zones[0].allow_v4, v4(&["0.0.0.0/0"]));
    assert_eq!(p.zones[0].allow_v6, v6(&["::/0"]));
}

#[test]
fn ipv4_mapped_ipv6_prefix_becomes_ipv4() {
    let p = compile(
        "version = 1\n\
         [blocklist]\ncidrs = [\"::ffff:198.51.100.0/120\"]\n\
         [[zone]]\nname = \"a\"\nports = [\"22/tcp\"]\nallow = [\"::ffff:10.0.0.0/104\", \"::/64\"]\n",
    )
    .unwrap();
    assert_eq!(p.blocklist_v4, v4(&["198.51.100.0/24"]));
    assert!(p.blocklist_v6.is_empty());
    assert_eq!(p.zones[0].allow_v4, v4(&["10.0.0.0/8"]));
    assert_eq!(p.zones[0].allow_v6, v6(&["::/64"]));
}

#[test]
fn failsafe_rules_compile() {
    let p = compile(
        "version = 1\n\
         [[failsafe]]\nports = [\"22/tcp\", \"2222/tcp\", \"2223/tcp\"]\nfrom = [\"10.99.0.0/16\", \"fd99::/48\"]\n\
         [[failsafe]]\nports = [\"22/tcp\"]\nfrom = [\"192.0.2.10\"]\n",
    )
    .unwrap();
    assert_eq!(p.failsafe.len(), 2);
    assert_eq!(p.failsafe[0].ports, vec![tcp(22, 22), tcp(2222, 2223)]);
    assert_eq!(p.failsafe[0].from_v4, v4(&["10.99.0.0/16"]));
    assert_eq!(p.failsafe[0].from_v6, v6(&["fd99::/48"]));
    assert_eq!(p.failsafe[1].from_v4, v4(&["192.0.2.10/32"]));
}

#[test]
fn failsafe_needs_ports_and_sources() {
    let d = errors("version = 1\n[[failsafe]]\nports = []\nfrom = []\n[[failsafe]]\n");
    find(&d, "`ports` is empty");
    find(&d, "`from` is empty");
    find(&d, "[[failsafe]] has no `ports`");
    find(&d, "[[failsafe]] has no `from`");
    assert_eq!(d.len(), 4);
}

#[test]
fn blocklist_refuses_any() {
    let d = errors("version = 1\n[blocklist]\ncidrs = [\"any\"]\n");
    find(&d, "would drop every source");
}

#[test]
fn zone_as_single_table_explains_double_brackets() {
    let d = errors("version = 1\n[zone]\nname = \"a\"\n");
    let e = find(&d, "`zone` must be an array of tables, found a table");
    assert!(e.help.as_deref().unwrap().contains("[[zone]]"));
}

#[test]
fn inline_array_of_zone_tables_is_accepted() {
    let p =
        compile("version = 1\nzone = [{ name = \"a\", ports = [\"1/tcp\"], allow = [\"any\"] }]\n")
            .unwrap();
    assert_eq!(p.zones[0].name, "a");
}

#[test]
fn interfaces_are_validated() {
    let p = compile("version = 1\ninterfaces = [\"eth0\", \"enp1s0f1\"]\n").unwrap();
    assert_eq!(p.interfaces, ["eth0", "enp1s0f1"]);
    let d = errors("version = 1\ninterfaces = [\"eth0\", \"eth0\", \"\", \"averyveryverylongname\", \"a b\"]\n");
    find(&d, "listed twice");
    find(&d, "interface name is empty");
    find(&d, "longer than 15 bytes");
    find(&d, "not a valid interface name");
}

#[test]
fn metrics_are_read_and_validated() {
    let p = compile(
        "version = 1\n[metrics]\nlisten = \"[::1]:9100\"\n\
         basic_auth = { user = \"prom\", password_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA\" }\n",
    )
    .unwrap();
    assert_eq!(p.metrics.listen.to_string(), "[::1]:9100");
    assert_eq!(
        p.metrics.basic_auth.as_ref().map(|a| a.user.as_str()),
        Some("prom")
    );
    assert!(
        !format!("{:?}", p.metrics).contains("argon2"),
        "hash must not be logged"
    );

    let d = errors(
        "version = 1\n[metrics]\nlisten = \"localhost:9469\"\n\
         [metrics.basic_auth]\nuser = \"a:b\"\npassword_hash = \"hunter2\"\nrealm = \"x\"\n",
    );
    find(&d, "is not an IP address and port");
    find(&d, "contain no `:`");
    find(&d, "not an argon2 hash");
    find(&d, "unknown key `realm` in metrics.basic_auth");
    assert_eq!(d.len(), 4);
}

#[test]
fn toml_syntax_error_is_located() {
    let d = errors("version = 1\n[[zone]]\nname = \"a\nports = []\n");
    assert_eq!(d.len(), 1);
    assert!(d[0].message.starts_with("invalid TOML"), "{}", d[0]);
    assert_eq!(d[0].line, 3);
    let d = errors("version = 1\nversion = 1\n");
    assert!(d[0].message.contains("duplicate key"), "{}", d[0]);
    assert_eq!(d[0].line, 2);
}

#[test]
fn policy_error_displays_one_diagnostic_per_line_with_help() {
    let err = compile("version = 1\n[blocklist]\ncidrs = [\"10.0.0.1/8\", \"1.2.3.4/40\"]\n")
        .unwrap_err();
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("policy.toml:3:10: error: `10.0.0.1/8` has host bits set"));
    assert!(lines[1].starts_with("  help: did you mean 10.0.0.0/8?"));
    assert!(lines[2].starts_with("policy.toml:3:24: error: prefix length /40"));
    assert!(lines[3].starts_with("  help: "));
}

#[test]
fn blocklist_merges_inline_cidrs_and_list_files() {
    let dir = temp_dir("merge");
    std::fs::create_dir_all(dir.join("lists")).unwrap();
    std::fs::write(
        dir.join("lists/drop.txt"),
        "; Spamhaus DROP\n198.51.100.0/25 ; SBL1\n198.51.100.128/25 ; SBL2\n203.0.113.7\n2001:db8:bad:1::/64\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("more.netset"),
        "# FireHOL\n192.0.2.0/24\n192.0.3.0/24\n",
    )
    .unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "version = 1\n[blocklist]\n\
         cidrs = [\"203.0.113.0/24\", \"2001:db8:bad::/48\", \"198.51.100.*\"]\n\
         files = [\"lists/drop.txt\", \"more.netset\"]\n",
    )
    .unwrap();
    let p = load(&policy).unwrap();
    assert_eq!(
        p.blocklist_v4,
        v4(&["192.0.2.0/23", "198.51.100.0/24", "203.0.113.0/24"])
    );
    assert_eq!(p.blocklist_v6, v6(&["2001:db8:bad::/48"]));
    assert_eq!(p.list_files.len(), 2);
    assert_eq!(p.list_files[0].name, "lists/drop.txt");
    assert_eq!(p.list_files[0].entries, 4);
    assert_eq!(p.list_files[1].entries, 2);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn list_file_bad_line_located_in_list_file() {
    let dir = temp_dir("badline");
    std::fs::write(
        dir.join("drop.txt"),
        "10.0.0.0/8\n# ok\n  10.1.2.3/16 ; SBL9\n",
    )
    .unwrap();
    let policy = dir.join("p.toml");
    std::fs::write(
        &policy,
        "version = 1\n[blocklist]\nfiles = [\"drop.txt\"]\ncidrs = [\"bogus\"]\n",
    )
    .unwrap();
    let d = load(&policy).unwrap_err().diagnostics;
    assert_eq!(d.len(), 2, "{d:#?}");
    // Policy file first, then list files.
    assert_eq!(d[0].path, policy);
    assert_eq!((d[0].line, d[0].column), (4, 10));
    assert_eq!(d[1].path, dir.join("drop.txt"));
    assert_eq!((d[1].line, d[1].column), (3, 3));
    // List-file diagnostics say what is wrong, never what the line holds.
    assert_eq!(d[1].message, "prefix has host bits set");
    assert!(!d[1].to_string().contains("10.1.2.3"), "{}", d[1]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unreadable_list_file_reports_os_error_at_its_name() {
    let dir = temp_dir("missing");
    let policy = dir.join("p.toml");
    std::fs::write(
        &policy,
        "version = 1\n[blocklist]\nfiles = [\"nope.txt\"]\n",
    )
    .unwrap();
    let d = load(&policy).unwrap_err().diagnostics;
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].line, d[0].column), (3, 10));
    assert!(d[0].message.contains("cannot read list file"), "{}", d[0]);
    assert!(d[0].message.contains("nope.txt"));
    assert!(d[0].message.contains("os error 2"), "{}", d[0]);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unreadable_policy_file_is_a_diagnostic() {
    let err = load(Path::new("/nonexistent/portcullis.toml")).unwrap_err();
    assert_eq!(err.len(), 1);
    assert!(err.diagnostics[0]
        .message
        .contains("cannot read policy file"));
}

#[test]
fn source_hash_covers_policy_and_list_contents() {
    let dir = temp_dir("hash");
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "version = 1\n[blocklist]\nfiles = [\"l.txt\"]\n").unwrap();
    std::fs::write(dir.join("l.txt"), "192.0.2.0/24\n").unwrap();
    let a = load(&policy).unwrap();
    let again = load(&policy).unwrap();
    assert_eq!(a.source_hash, again.source_hash);
    assert_eq!(a.source_hash_hex().len(), 64);
    std::fs::write(dir.join("l.txt"), "192.0.2.0/24\n# changed\n").unwrap();
    let b = load(&policy).unwrap();
    assert_ne!(a.source_hash, b.source_hash);
    assert_eq!(a.blocklist_v4, b.blocklist_v4);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn large_generated_list_file_compiles() {
    let dir = temp_dir("large");
    let mut text = String::with_capacity(200_000 * 20);
    text.push_str("# generated\n");
    // 200k distinct /32s spread over 100.64.0.0/10 plus comments every 1000 lines.
    for i in 0u32..200_000 {
        let a = 0x6440_0000u32 + i * 7;
        let b = a.to_be_bytes();
        text.push_str(&format!("{}.{}.{}.{}\n", b[0], b[1], b[2], b[3]));
        if i % 1000 == 0 {
            text.push_str("; comment\n");
        }
    }
    std::fs::write(dir.join("big.txt"), &text).unwrap();
    let policy = dir.join("p.toml");
    std::fs::write(&policy, "version = 1\n[blocklist]\nfiles = [\"big.txt\"]\n").unwrap();
    let start = std::time::Instant::now();
    let p = load(&policy).unwrap();
    let took = start.elapsed();
    assert_eq!(p.list_files[0].entries, 200_000);
    assert_eq!(p.blocklist_v4.len(), 200_000);
    // Generous: debug builds on a loaded CI machine.
    assert!(took.as_secs() < 20, "took {took:?}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn keep_example_compiles() {
    let p = load(&examples().join("keep.toml")).unwrap_or_else(|e| panic!("{e}"));
    let api = p.zone_for(Proto::Tcp, 8880).expect("8880/tcp has a zone");
    assert_eq!(api.allow_v4, v4(&["0.0.0.0/0"]));
    assert_eq!(api.allow_v6, v6(&["::/0"]));
    for port in [8889, 8890] {
        let z = p
            .zone_for(Proto::Tcp, port)
            .expect("management port has a zone");
        assert_eq!(z.allow_v4, v4(&["10.20.0.0/16"]));
        assert!(!z.allow_v6.is_empty());
        assert!(!z.audit);
    }
    assert_eq!(p.failsafe.len(), 1);
    assert_eq!(p.failsafe[0].ports, vec![tcp(22, 22)]);
    assert!(p.blocklist_v4.contains(&"203.0.113.0/24".parse().unwrap()));
    assert!(p
        .blocklist_v6
        .contains(&"2001:db8:bad::/48".parse().unwrap()));
    assert!(!p.list_files.is_empty());
}

#[test]
fn keycloak_example_compiles() {
    let p = load(&examples().join("keycloak.toml")).unwrap_or_else(|e| panic!("{e}"));
    for port in [8080, 8443] {
        let z = p
            .zone_for(Proto::Tcp, port)
            .expect("public port has a zone");
        assert_eq!(z.allow_v4, v4(&["0.0.0.0/0"]));
    }
    let mgmt = p.zone_for(Proto::Tcp, 9000).expect("9000/tcp has a zone");
    assert_eq!(
        mgmt.allow_v4,
        v4(&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"])
    );
    assert_eq!(mgmt.allow_v6, v6(&["fd00::/8"]));
}

#[test]
fn merge_ports_joins_adjacent_and_keeps_protocols_apart() {
    let merged = merge_ports(vec![
        PortRange::single(Proto::Udp, 5),
        tcp(10, 20),
        tcp(21, 21),
        tcp(15, 30),
        tcp(40, 40),
        PortRange::single(Proto::Udp, 6),
        tcp(0, 0),
        tcp(65535, 65535),
        tcp(65534, 65535),
    ]);
    assert_eq!(
        merged,
        vec![
            tcp(0, 0),
            tcp(10, 30),
            tcp(40, 40),
            tcp(65534, 65535),
            PortRange {
                proto: Proto::Udp,
                first: 5,
                last: 6
            },
        ]
    );
}

#[test]
fn merge_prefixes_removes_contained_and_joins_siblings() {
    assert_eq!(
        merge_v4(v4(&[
            "10.0.1.0/24",
            "10.0.0.0/24",
            "10.0.0.128/25",
            "10.0.0.1/32",
            "9.0.0.0/8"
        ])),
        v4(&["9.0.0.0/8", "10.0.0.0/23"])
    );
    assert_eq!(
        merge_v6(v6(&["2001:db8:1::/48", "2001:db8::/48", "2001:db8::1/128"])),
        v6(&["2001:db8::/47"])
    );
}

#[test]
fn summary_lists_zones_and_counts() {
    let p = compile(
        "version = 1\ninterfaces = [\"eth0\"]\n\
         [blocklist]\ncidrs = [\"203.0.113.0/24\"]\n\
         [[zone]]\nname = \"api\"\nports = [\"8880/tcp\"]\nallow = [\"any\"]\n",
    )
    .unwrap();
    let s = p.summary();
    assert_eq!(s.blocklist.prefixes_v4, 1);
    assert_eq!(s.blocklist.addresses_v4, 256);
    assert_eq!(s.zones[0].ports, ["8880/tcp"]);
    let text = s.to_string();
    assert!(text.contains("api  ports 8880/tcp"), "{text}");
    assert!(text.contains("allow any"), "{text}");
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["zones"][0]["allow_v4"][0], "0.0.0.0/0");
    assert_eq!(json["defaults"]["fragments"], "filter-first");
}

/// Seeded edits of the shipped examples (insert, delete and replace characters,
/// duplicate or drop lines): the compiler never panics, and every diagnostic
/// about the policy file points at a line and column that exist in it.
#[test]
fn mutated_examples_never_panic_and_errors_stay_in_bounds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let alphabet: Vec<char> = "[]{}=\"',.:/*-#;\n 0123456789abcdefxyz_".chars().collect();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut rejected = 0;
    for example in ["keep.toml", "keycloak.toml"] {
        let path = dir.join(example);
        let original = std::fs::read_to_string(&path).unwrap();
        for _ in 0..1500 {
            let mut chars: Vec<char> = original.chars().collect();
            for _ in 0..1 + next(4) {
                if chars.is_empty() {
                    break;
                }
                let at = next(chars.len());
                match next(5) {
                    0 => {
                        let i = at.min(chars.len() - 1);
                        chars.remove(i);
                    }
                    1 => chars.insert(at, alphabet[next(alphabet.len())]),
                    2 => {
                        let i = at.min(chars.len() - 1);
                        chars[i] = alphabet[next(alphabet.len())];
                    }
                    3 => {
                        let text: String = chars.iter().collect();
                        let lines: Vec<&str> = text.lines().collect();
                        let i = next(lines.len());
                        let mut out = lines.clone();
                        out.insert(i, lines[i]);
                        chars = out.join("\n").chars().collect();
                    }
                    _ => chars.truncate(at),
                }
            }
            let text: String = chars.iter().collect();
            if let Err(e) = compile_str(&text, &path) {
                rejected += 1;
                let lines = text.lines().count().max(1);
                for d in e.diagnostics.iter().filter(|d| d.path == path) {
                    assert!(
                        d.line >= 1 && d.line <= lines + 1 && d.column >= 1,
                        "diagnostic {d:?} outside the {lines}-line text:\n{text}"
                    );
                }
            }
        }
    }
    // The edits must actually break most policies, or this test tests nothing.
    assert!(
        rejected > 1500,
        "only {rejected} of 3000 mutated policies rejected"
    );
}

#[test]
fn metrics_tls_files_resolve_against_the_policy_directory() {
    let p = compile_str(
        "version = 1\n[metrics]\ntls = { cert = \"tls/m.crt\", key = \"/etc/k.pem\" }\n",
        Path::new("/etc/portcullis/policy.toml"),
    )
    .unwrap();
    assert_eq!(
        p.metrics.tls,
        Some(TlsFiles {
            cert: PathBuf::from("/etc/portcullis/tls/m.crt"),
            key: PathBuf::from("/etc/k.pem"),
        })
    );
    assert_eq!(compile("version = 1\n").unwrap().metrics.tls, None);

    let d = errors("version = 1\n[metrics]\ntls = { cert = \"\", chain = \"x\" }\n");
    find(&d, "empty `metrics.tls.cert`");
    find(&d, "metrics.tls has no `key`");
    find(&d, "unknown key `chain` in metrics.tls");
    let d = errors("version = 1\n[metrics]\ntls = \"m.pem\"\n");
    find(&d, "`metrics.tls` must be a table");
}

#[test]
fn events_section_defaults_to_off_at_a_low_rate() {
    let p = compile("version = 1\n").unwrap();
    assert_eq!(p.events, crate::events::EventsPolicy::default());
    assert_eq!(p.events.sample, crate::events::Mode::Off);
    assert_eq!((p.events.rate, p.events.burst), (10, 20));
    let p =
        compile("version = 1\n[events]\nsample = \"drops+audit\"\nrate = 50\nburst = 5\n").unwrap();
    assert_eq!(p.events.sample, crate::events::Mode::DropsAudit);
    assert_eq!((p.events.rate, p.events.burst), (50, 5));
}

#[test]
fn events_section_refuses_bad_modes_rates_and_keys_with_locations() {
    let d =
        errors("version = 1\n[events]\nsample = \"drop\"\nrate = 0\nburst = \"many\"\nrat = 3\n");
    let mode = find(&d, "`events.sample` must be");
    assert_eq!(
        (mode.line, mode.help.as_deref()),
        (3, Some("did you mean \"drops\"?"))
    );
    assert_eq!(find(&d, "`events.rate` 0 is out of range").line, 4);
    assert_eq!(find(&d, "`events.burst` must be an integer").line, 5);
    assert_eq!(find(&d, "unknown key `rat` in [events]").line, 6);
    let d = errors("version = 1\n[events]\nrate = 1000001\n");
    find(&d, "out of range (1 to 1000000)");
}
