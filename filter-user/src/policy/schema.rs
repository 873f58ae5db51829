//! The JSON schema (Draft 7) of the policy file, for editors (Taplo / Even
//! Better TOML: `#:schema` directive, docs/policy.md#editor-schema).
//!
//! The parser is hand-written (parse.rs), so the schema is written here as one
//! line per key, table by table. A test checks that every table lists exactly
//! the keys parse.rs accepts (its `*_KEYS`), so a key added to the parser
//! without a line here fails; another test keeps docs/policy.schema.json equal
//! to [`schema`] (`cargo xtask gen` rewrites it). The schema checks shape
//! (types, required keys, unknown keys, fixed values); the parser checks the
//! rest (addresses, port ranges, overlaps) and says where.
use serde_json::{json, Map, Value};

/// Where the schema is checked in, relative to the repository.
pub const SCHEMA_PATH: &str = "docs/policy.schema.json";

/// One key of a table: its name, its schema, whether it is required.
struct Key(&'static str, Value, bool);

fn table(description: &str, keys: Vec<Key>) -> Value {
    let required: Vec<&str> = keys.iter().filter(|k| k.2).map(|k| k.0).collect();
    let properties: Map<String, Value> = keys.into_iter().map(|k| (k.0.into(), k.1)).collect();
    let mut t = json!({
        "type": "object",
        "description": description,
        "properties": properties,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        t["required"] = json!(required);
    }
    t
}

fn string(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

fn strings(description: &str) -> Value {
    json!({ "type": "array", "description": description, "items": { "type": "string" } })
}

fn non_empty_strings(description: &str) -> Value {
    json!({ "type": "array", "description": description, "items": { "type": "string" }, "minItems": 1 })
}

fn one_of(values: &[&str], default: &str, description: &str) -> Value {
    json!({ "type": "string", "enum": values, "default": default, "description": description })
}

fn boolean(default: bool, description: &str) -> Value {
    json!({ "type": "boolean", "default": default, "description": description })
}

fn integer(min: i64, max: i64, default: i64, description: &str) -> Value {
    json!({ "type": "integer", "minimum": min, "maximum": max, "default": default, "description": description })
}

fn defaults() -> Value {
    let pd = ["pass", "drop"];
    table(
        "What happens to traffic no zone or rule decides.",
        vec![
            Key("unmatched", one_of(&pd, "pass", "TCP/UDP/SCTP ports no zone claims."), false),
            Key("non_ip", one_of(&pd, "pass", "ARP, LLDP and other non-IP frames (drop: warning W001)."), false),
            Key("other_protocols", one_of(&pd, "pass", "ICMP, ICMPv6, GRE, ESP, ...: protocols without ports."), false),
            Key("fragments", one_of(&["filter-first", "drop"], "filter-first", "filter-first: the first fragment is judged by its ports, later ones pass; drop: every fragment is dropped."), false),
            Key("reject_rate", integer(1, super::MAX_REJECT_RATE.into(), super::DEFAULT_REJECT_RATE.into(), "Replies per second, per CPU, of rejecting zones (over it: dropped, reject_suppressed)."), false),
            Key("reject_burst", integer(1, super::MAX_REJECT_BURST.into(), super::DEFAULT_REJECT_BURST.into(), "Replies a CPU may send at once."), false),
            Key("rate_tracked", integer(1, filter_common::RATE_TABLE_MAX.into(), super::rate::DEFAULT_TRACKED.into(), "Sources each zone rate limit keeps a bucket for, unless it says tracked."), false),
        ],
    )
}

fn blocklist() -> Value {
    table(
        "Sources always dropped (failsafe rules still win).",
        vec![
            Key("cidrs", strings("Addresses or prefixes: 10.0.0.0/8, 2001:db8::/32, 192.0.2.7, 10.1.*.*."), false),
            Key("files", strings("List files (one prefix per line; FireHOL, Spamhaus DROP text or JSON lines), relative to the policy file."), false),
            Key("feeds", json!({ "type": "array", "description": "Lists the daemon downloads on a schedule and caches under its state directory; read like list files.", "maxItems": super::feeds::MAX_FEEDS, "items": feed() }), false),
        ],
    )
}

fn feed() -> Value {
    table(
        "One list feed: { url = \"https://...\", refresh = \"6h\" }.",
        vec![
            Key("url", json!({ "type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://", "description": "http:// or https:// URL of the list; each feed once." }), true),
            Key("refresh", json!({ "type": "string", "default": "6h", "pattern": "^\\s*[0-9]+\\s*(s|sec|m|min|h|d|day|days)\\s*$", "description": "How often it is fetched: 1m to 30d (s, m, h, d)." }), false),
            Key("format", one_of(&["auto"], "auto", "auto: plain lists, FireHOL netsets, Spamhaus DROP text and JSON lines, recognised per line."), false),
            Key("max_bytes", integer(super::feeds::MIN_MAX_BYTES as i64, super::files::LIST_MAX_BYTES as i64, super::feeds::DEFAULT_MAX_BYTES as i64, "The largest answer accepted (bytes); a larger one is refused and the last good copy kept."), false),
            Key("name", json!({ "type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._/:-]{0,63}$", "description": "Labels the feed's metrics and status line (default: host and path of the URL)." }), false),
        ],
    )
}

fn failsafe() -> Value {
    table(
        "Anti-lockout: these sources always pass on these ports.",
        vec![
            Key(
                "ports",
                non_empty_strings("Ports: 22/tcp, 9000-9010/udp."),
                true,
            ),
            Key("from", non_empty_strings("Sources that always pass."), true),
        ],
    )
}

fn zone() -> Value {
    table(
        "Ports reachable only from the sources in allow.",
        vec![
            Key(
                "name",
                json!({ "type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", "description": "Unique; labels the zone's metrics (not global or failsafe)." }),
                true,
            ),
            Key(
                "ports",
                non_empty_strings(
                    "Ports this zone claims: 8889/tcp, 9000-9010/tcp; each in one zone at most.",
                ),
                true,
            ),
            Key(
                "allow",
                strings("Sources that may connect ([] allows nobody; any = every address)."),
                true,
            ),
            Key(
                "action",
                one_of(
                    &["drop", "reject"],
                    "drop",
                    "What sources outside allow get: dropped, or an answer (reject_with).",
                ),
                false,
            ),
            Key(
                "reject_with",
                json!({ "enum": ["tcp-reset", "icmp-port-unreachable", "icmp-admin-prohibited", "icmp-host-unreachable"], "description": "With action = reject: the answer (default: tcp-reset for TCP, icmp-port-unreachable for UDP and SCTP)." }),
                false,
            ),
            Key(
                "schedule",
                json!({
                    "type": "array",
                    "minItems": 1,
                    "description": "Opening hours: outside every window nobody is allowed.",
                    "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["days", "hours"],
                        "properties": {
                            "days": { "type": "string", "description": "mon-fri, sat,sun, daily or *." },
                            "hours": { "type": "string", "description": "HH:MM[:SS]-HH:MM[:SS], may cross midnight." }
                        }
                    }
                }),
                false,
            ),
            Key(
                "timezone",
                string("IANA time zone of the schedule (default UTC): Europe/Berlin."),
                false,
            ),
            Key("rate", rate(), false),
            Key("quota", quota(), false),
            Key(
                "audit",
                boolean(
                    false,
                    "true: sources outside allow are counted (reason audit) and passed.",
                ),
                false,
            ),
        ],
    )
}

/// One `rate` table, or an array of up to two (a packet and a connection
/// limit).
fn rate() -> Value {
    let rate_string = |d: &str| json!({ "type": "string", "pattern": "^[0-9]+/(s|sec|second|m|min|minute|h|hour|d|day)$", "description": d });
    let one = table(
        "A rate limit of allowed sources: packets or connections (TCP SYN without ACK).",
        vec![
            Key(
                "packets",
                rate_string("Packets per period: 200/s, 3000/min, 10/h, 100/day."),
                false,
            ),
            Key(
                "connections",
                rate_string("New TCP connections per period: 20/s."),
                false,
            ),
            Key(
                "burst",
                integer(
                    1,
                    super::rate::MAX_BURST as i64,
                    1,
                    "Admitted at once (default: one period's worth).",
                ),
                false,
            ),
            Key(
                "per",
                json!({ "description": "source (default), zone, an IPv4 length /8../32, an IPv6 length /48../128, or one of each: [\"/24\", \"/64\"].", "anyOf": [ { "type": "string" }, { "type": "array", "items": { "type": "string" }, "minItems": 1, "maxItems": 2 } ] }),
                false,
            ),
            Key(
                "ceiling",
                rate_string(
                    "The zone's aggregate for untracked sources (default: ten times the limit).",
                ),
                false,
            ),
            Key(
                "new_sources",
                rate_string("Sources newly tracked per period (default 100/s)."),
                false,
            ),
            Key(
                "tracked",
                integer(
                    1,
                    filter_common::RATE_TABLE_MAX.into(),
                    super::rate::DEFAULT_TRACKED.into(),
                    "Sources (or prefixes) this limit keeps a bucket for.",
                ),
                false,
            ),
        ],
    );
    json!({
        "description": "Rate limits: { packets = \"200/s\", burst = 400 } or [{ packets = ... }, { connections = ... }].",
        "anyOf": [ one, { "type": "array", "items": one, "minItems": 1, "maxItems": 2 } ]
    })
}

/// A zone's transfer quota.
fn quota() -> Value {
    let units: Vec<&str> = super::quota::UNITS.iter().map(|(n, _)| *n).collect();
    let bytes_pattern = format!("^\\s*[0-9]+(\\.[0-9]+)?\\s*({})\\s*$", units.join("|"));
    table(
        "A transfer quota of allowed sources: bytes per UTC-aligned period; over it, the zone's action (reason quota_exceeded).",
        vec![
            Key(
                "bytes",
                json!({ "description": "The quota per period: \"10 GB\", \"1.5 GiB\" (B, kB/KB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: powers of 1024), or an integer of bytes; at least 1 byte, at most 1 EB.", "anyOf": [ { "type": "string", "pattern": bytes_pattern }, { "type": "integer", "minimum": 1, "maximum": super::quota::MAX_QUOTA_BYTES } ] }),
                true,
            ),
            Key(
                "period",
                json!({ "enum": ["minute", "hour", "day", "month"], "description": "UTC minute, hour or day, or calendar month (UTC)." }),
                true,
            ),
            Key(
                "direction",
                one_of(
                    &["upload", "download", "both"],
                    "both",
                    "What is counted: frames from the source to the zone's ports, from the zone's ports to the source, or both.",
                ),
                false,
            ),
            Key(
                "per",
                json!({ "description": "source (default), zone (one counter for all), an IPv4 length /8../32, an IPv6 length /48../128, or one of each: [\"/24\", \"/64\"].", "anyOf": [ { "type": "string" }, { "type": "array", "items": { "type": "string" }, "minItems": 1, "maxItems": 2 } ] }),
                false,
            ),
        ],
    )
}

fn metrics() -> Value {
    let basic_auth = table(
        "HTTP basic auth for the endpoint.",
        vec![
            Key("user", string("The user name (no `:`)."), true),
            Key(
                "password_hash",
                string("An argon2id PHC string: `portcullis hash-password`."),
                true,
            ),
        ],
    );
    let tls = table(
        "Serve HTTPS; PEM files relative to the policy file.",
        vec![
            Key("cert", string("Certificate chain, leaf first."), true),
            Key("key", string("Private key (PKCS#8, PKCS#1 or SEC1)."), true),
        ],
    );
    table(
        "The Prometheus endpoint.",
        vec![
            Key(
                "listen",
                json!({ "type": "string", "default": "127.0.0.1:9469", "description": "IP:port ([::1]:9469 for IPv6); host names are not resolved." }),
                false,
            ),
            Key("basic_auth", basic_auth, false),
            Key("tls", tls, false),
        ],
    )
}

fn events() -> Value {
    table(
        "Sampled decisions for `portcullis events` and `top`.",
        vec![
            Key(
                "sample",
                one_of(
                    &["off", "drops", "drops+audit", "all"],
                    "off",
                    "Which decisions are sampled.",
                ),
                false,
            ),
            Key(
                "rate",
                integer(1, 1_000_000, 10, "Events per second, per CPU."),
                false,
            ),
            Key(
                "burst",
                integer(
                    1,
                    1_000_000,
                    20,
                    "Events a CPU may send at once after a quiet spell.",
                ),
                false,
            ),
        ],
    )
}

fn crowdsec() -> Value {
    table(
        "Bouncer mode: CrowdSec decisions (ip, range) become bans (docs/operations.md#crowdsec).",
        vec![
            Key("lapi_url", string("The LAPI's base URL, e.g. http://127.0.0.1:8080."), true),
            Key(
                "api_key_file",
                string("A file holding the bouncer key (`cscli bouncers add portcullis -o raw`); relative to the policy file."),
                true,
            ),
            Key(
                "poll",
                json!({ "type": "string", "default": "10s", "description": "How often the decision stream is pulled (1s to 1h)." }),
                false,
            ),
            Key(
                "scopes",
                json!({ "type": "array", "items": { "enum": ["ip", "range", "Ip", "Range"] }, "minItems": 1, "description": "Decision scopes honoured (default both)." }),
                false,
            ),
            Key("origins", strings("Decision origins honoured (crowdsec, cscli, CAPI, lists); empty or absent: all."), false),
            Key("ca", string("Extra CA (PEM) for an https LAPI; relative to the policy file."), false),
        ],
    )
}

/// The schema of a policy file, version 1.
pub fn schema() -> Value {
    let mut root = table(
        "portcullis policy, version 1 (docs/policy.md).",
        vec![
            Key(
                "version",
                json!({ "const": super::POLICY_VERSION, "description": "The policy format version: 1." }),
                true,
            ),
            Key(
                "interfaces",
                json!({ "type": "array", "items": { "type": "string", "minLength": 1, "maxLength": 15 }, "uniqueItems": true, "description": "Interfaces to attach to (`portcullis run --iface` overrides)." }),
                false,
            ),
            Key("defaults", defaults(), false),
            Key("blocklist", blocklist(), false),
            Key(
                "failsafe",
                json!({ "type": "array", "items": failsafe() }),
                false,
            ),
            Key(
                "zone",
                json!({ "type": "array", "items": zone(), "maxItems": 64 }),
                false,
            ),
            Key("metrics", metrics(), false),
            Key("events", events(), false),
            Key("crowdsec", crowdsec(), false),
        ],
    );
    let obj = root.as_object_mut().expect("a table is an object");
    obj.insert(
        "$schema".into(),
        json!("http://json-schema.org/draft-07/schema#"),
    );
    obj.insert("title".into(), json!("portcullis policy"));
    root
}

/// The checked-in text: pretty JSON and a final newline.
pub fn render() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).expect("a JSON value renders");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    fn keys(t: &Value) -> Vec<String> {
        let mut k: Vec<String> = t["properties"]
            .as_object()
            .expect("a table")
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    }

    fn sorted(k: &[&str]) -> Vec<String> {
        let mut k: Vec<String> = k.iter().map(|s| s.to_string()).collect();
        k.sort();
        k
    }

    /// A key the parser accepts but the schema lacks (or the other way round)
    /// fails here: add its line in this file.
    #[test]
    fn every_table_has_exactly_the_keys_the_parser_accepts() {
        let s = schema();
        let p = &s["properties"];
        let m = &p["metrics"]["properties"];
        for (what, table, known) in [
            ("top level", &s, parse::ROOT_KEYS),
            ("[defaults]", &p["defaults"], parse::DEFAULTS_KEYS),
            ("[blocklist]", &p["blocklist"], parse::BLOCKLIST_KEYS),
            (
                "[blocklist] feeds",
                &p["blocklist"]["properties"]["feeds"]["items"],
                super::super::feeds::FEED_KEYS,
            ),
            (
                "[[failsafe]]",
                &p["failsafe"]["items"],
                parse::FAILSAFE_KEYS,
            ),
            ("[[zone]]", &p["zone"]["items"], parse::ZONE_KEYS),
            (
                "[[zone]] quota",
                &p["zone"]["items"]["properties"]["quota"],
                super::super::quota::QUOTA_KEYS,
            ),
            ("[metrics]", &p["metrics"], parse::METRICS_KEYS),
            (
                "[metrics] basic_auth",
                &m["basic_auth"],
                parse::BASIC_AUTH_KEYS,
            ),
            ("[metrics] tls", &m["tls"], parse::TLS_KEYS),
            ("[events]", &p["events"], parse::EVENTS_KEYS),
            (
                "[crowdsec]",
                &p["crowdsec"],
                super::super::crowdsec::CROWDSEC_KEYS,
            ),
        ] {
            assert_eq!(keys(table), sorted(known), "{what}: schema vs parser");
            assert_eq!(table["additionalProperties"], false, "{what}");
        }
    }

    #[test]
    fn the_checked_in_schema_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(SCHEMA_PATH);
        let text = render();
        if std::env::var_os("PORTCULLIS_REGENERATE").is_some() {
            std::fs::write(&path, &text).expect("writing the schema");
            return;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{SCHEMA_PATH} differs from policy::schema::schema(); run `cargo xtask gen`"
        );
    }
}
