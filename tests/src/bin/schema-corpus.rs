//! Writes the policies the JSON schema (docs/policy.schema.json) is checked
//! against: `DIR/valid/` every verdict fixture's policy, the e2e suite's
//! policies and random policies of the differential test's generator (all
//! compile); `DIR/invalid/` policies the parser refuses for their shape (a
//! wrong type, an unknown key, a required key missing, a value outside a
//! fixed set), which the schema must refuse too. `cargo xtask test` runs it,
//! then `portcullis check` and jsonschema (Draft 7) over both directories.
use std::{fs, path::PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use portcullis_tests::{e2e::policies, fixtures, fixtures_v6, gen};

#[derive(Parser)]
struct Args {
    /// Output directory (emptied first).
    dir: PathBuf,
    /// Random policies from the generator.
    #[arg(long, default_value_t = 200)]
    random: u64,
}

const BASE: &str = "version = 1\n";

/// Every form of `quota` the parser accepts.
const QUOTA_ZONES: &str = "version = 1\n\
    [[zone]]\nname = \"a\"\nports = [\"8001/tcp\"]\nallow = [\"any\"]\n\
    quota = { bytes = \"10 GB\", period = \"day\" }\n\
    [[zone]]\nname = \"b\"\nports = [\"8002/tcp\"]\nallow = [\"any\"]\n\
    quota = { bytes = \"1.5GiB\", period = \"month\", direction = \"download\", per = [\"/24\", \"/64\"] }\n\
    [[zone]]\nname = \"c\"\nports = [\"8003/udp\"]\nallow = [\"10.0.0.0/8\"]\naudit = true\n\
    [zone.quota]\nbytes = 500000000\nperiod = \"hour\"\ndirection = \"upload\"\nper = \"zone\"\n";

/// (name, policy text): each refused by the parser for its shape.
fn invalid() -> Vec<(&'static str, String)> {
    let zone = "[[zone]]\nname = \"admin\"\nports = [\"8889/tcp\"]\nallow = [\"10.0.0.0/8\"]\n";
    vec![
        ("no-version", "interfaces = [\"eth0\"]\n".into()),
        ("version-2", "version = 2\n".into()),
        ("version-string", "version = \"1\"\n".into()),
        (
            "unknown-top-level-key",
            format!("{BASE}interface = [\"eth0\"]\n"),
        ),
        (
            "interfaces-not-array",
            format!("{BASE}interfaces = \"eth0\"\n"),
        ),
        (
            "interface-name-too-long",
            format!("{BASE}interfaces = [\"abcdefghijklmnop\"]\n"),
        ),
        (
            "defaults-unknown-action",
            format!("{BASE}[defaults]\nunmatched = \"reject\"\n"),
        ),
        (
            "defaults-unknown-key",
            format!("{BASE}[defaults]\nunmatch = \"pass\"\n"),
        ),
        (
            "fragments-unknown-mode",
            format!("{BASE}[defaults]\nfragments = \"pass\"\n"),
        ),
        (
            "blocklist-cidrs-not-array",
            format!("{BASE}[blocklist]\ncidrs = \"10.0.0.0/8\"\n"),
        ),
        (
            "blocklist-cidr-not-string",
            format!("{BASE}[blocklist]\ncidrs = [10]\n"),
        ),
        (
            "failsafe-without-from",
            format!("{BASE}[[failsafe]]\nports = [\"22/tcp\"]\n"),
        ),
        (
            "failsafe-empty-ports",
            format!("{BASE}[[failsafe]]\nports = []\nfrom = [\"10.0.0.0/8\"]\n"),
        ),
        (
            "failsafe-as-table",
            format!("{BASE}[failsafe]\nports = [\"22/tcp\"]\nfrom = [\"10.0.0.0/8\"]\n"),
        ),
        (
            "zone-without-name",
            format!("{BASE}[[zone]]\nports = [\"8889/tcp\"]\nallow = []\n"),
        ),
        (
            "zone-without-allow",
            format!("{BASE}[[zone]]\nname = \"a\"\nports = [\"8889/tcp\"]\n"),
        ),
        (
            "zone-name-not-string",
            format!("{BASE}[[zone]]\nname = 7\nports = [\"8889/tcp\"]\nallow = []\n"),
        ),
        (
            "zone-name-bad-characters",
            format!("{BASE}[[zone]]\nname = \"a b\"\nports = [\"8889/tcp\"]\nallow = []\n"),
        ),
        (
            "zone-action-unknown",
            format!("{BASE}{zone}action = \"deny\"\n"),
        ),
        (
            "zone-audit-not-bool",
            format!("{BASE}{zone}audit = \"yes\"\n"),
        ),
        ("zone-unknown-key", format!("{BASE}{zone}allowed = []\n")),
        (
            "zone-quota-without-period",
            format!("{BASE}{zone}quota = {{ bytes = \"1 GB\" }}\n"),
        ),
        (
            "zone-quota-unknown-period",
            format!("{BASE}{zone}quota = {{ bytes = \"1 GB\", period = \"fortnight\" }}\n"),
        ),
        (
            "zone-quota-unknown-direction",
            format!(
                "{BASE}{zone}quota = {{ bytes = \"1 GB\", period = \"day\", direction = \"sideways\" }}\n"
            ),
        ),
        (
            "zone-quota-unknown-unit",
            format!("{BASE}{zone}quota = {{ bytes = \"10 GX\", period = \"day\" }}\n"),
        ),
        (
            "zone-quota-bytes-float",
            format!("{BASE}{zone}quota = {{ bytes = 2.5, period = \"day\" }}\n"),
        ),
        (
            "zone-quota-unknown-key",
            format!("{BASE}{zone}quota = {{ bytes = \"1 GB\", period = \"day\", limit = 5 }}\n"),
        ),
        (
            "failsafe-quota",
            format!(
                "{BASE}[[failsafe]]\nports = [\"22/tcp\"]\nfrom = [\"10.0.0.0/8\"]\n\
                 quota = {{ bytes = \"1 GB\", period = \"day\" }}\n"
            ),
        ),
        (
            "metrics-listen-not-string",
            format!("{BASE}[metrics]\nlisten = 9469\n"),
        ),
        (
            "metrics-basic-auth-without-hash",
            format!("{BASE}[metrics]\nbasic_auth = {{ user = \"prom\" }}\n"),
        ),
        (
            "metrics-tls-without-key",
            format!("{BASE}[metrics]\ntls = {{ cert = \"c.pem\" }}\n"),
        ),
        (
            "events-unknown-sample",
            format!("{BASE}[events]\nsample = \"drop\"\n"),
        ),
        ("events-rate-zero", format!("{BASE}[events]\nrate = 0\n")),
        (
            "events-rate-not-integer",
            format!("{BASE}[events]\nrate = \"10\"\n"),
        ),
        (
            "events-unknown-key",
            format!("{BASE}[events]\nrates = 10\n"),
        ),
    ]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let _ = fs::remove_dir_all(&args.dir);
    let valid = args.dir.join("valid");
    let bad = args.dir.join("invalid");
    fs::create_dir_all(&valid)?;
    fs::create_dir_all(&bad)?;
    let mut n = 0;
    let mut write = |dir: &PathBuf, name: String, text: String| -> Result<()> {
        n += 1;
        fs::write(dir.join(format!("{name}.toml")), text).context("writing the corpus")
    };
    for c in fixtures::fixtures() {
        write(&valid, format!("fixture-{}", c.name), c.policy.to_toml())?;
    }
    for c in fixtures_v6::fixtures() {
        write(&valid, format!("fixture-v6-{}", c.name), c.policy.to_toml())?;
    }
    for (name, text) in [
        ("e2e-a", policies::policy_a()),
        ("e2e-b", policies::policy_b()),
        (
            "e2e-a-auth",
            policies::policy_a_auth(
                "127.0.0.1:9469",
                "prom",
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            ),
        ),
        ("e2e-blocklist-wins", policies::policy_blocklist_wins()),
        ("e2e-failsafe-wins", policies::policy_failsafe_wins()),
        ("quota-zones", QUOTA_ZONES.to_string()),
    ] {
        write(&valid, name.into(), text)?;
    }
    let mut rng = gen::rng(0x005c_4e3a);
    for i in 0..args.random {
        write(
            &valid,
            format!("random-{i}"),
            gen::random_policy(&mut rng).to_toml(),
        )?;
    }
    for (name, text) in invalid() {
        write(&bad, name.into(), text)?;
    }
    println!("schema-corpus: {n} policies in {}", args.dir.display());
    Ok(())
}
