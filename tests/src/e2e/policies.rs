//! The policies the scenarios load, written to the run directory.
//!
//! `keep` is deploy/examples/keep.toml itself (with its list files): the
//! sandbox's addresses are chosen so its ranges apply. The others share its
//! zone names and order (keep-api, keep-admin, udp-admin), so counter labels
//! stay the same across reloads between them.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// deploy/examples in this checkout.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

/// Copies `keep.toml` and its `lists/` from `examples` into `dir/keep/`;
/// returns the policy path.
pub fn install_keep(examples: &Path, dir: &Path) -> Result<PathBuf> {
    let to = dir.join("keep");
    fs::create_dir_all(to.join("lists"))?;
    let from = examples.join("keep.toml");
    fs::copy(&from, to.join("keep.toml")).with_context(|| format!("copying {}", from.display()))?;
    for e in fs::read_dir(examples.join("lists"))
        .with_context(|| format!("reading {}/lists", examples.display()))?
        .flatten()
    {
        fs::copy(e.path(), to.join("lists").join(e.file_name()))?;
    }
    Ok(to.join("keep.toml"))
}

const HEADER: &str = r#"version = 1

[defaults]
unmatched = "pass"
non_ip = "pass"
other_protocols = "pass"
fragments = "filter-first"
"#;

const MGMT_NETS: &str = r#""10.20.0.0/16", "fd20:4b45:4550::/48""#;
const INTERNET_NETS: &str = r#""198.18.0.0/24", "2001:db8:1::/64""#;

fn zones(api: &str, admin: &str, udp: &str) -> String {
    format!(
        r#"
[[zone]]
name  = "keep-api"
ports = ["8880/tcp"]
allow = [{api}]

[[zone]]
name  = "keep-admin"
ports = ["8889/tcp", "8890/tcp", "9000-9010/tcp"]
allow = [{admin}]

[[zone]]
name  = "udp-admin"
ports = ["7008/udp"]
allow = [{udp}]
"#
    )
}

fn metrics(listen: &str, auth: Option<(&str, &str)>) -> String {
    let mut s = format!("\n[metrics]\nlisten = \"{listen}\"\n");
    if let Some((user, hash)) = auth {
        s.push_str(&format!(
            "basic_auth = {{ user = \"{user}\", password_hash = \"{hash}\" }}\n"
        ));
    }
    s
}

const BLOCKLIST: &str = r#"
[blocklist]
cidrs = ["203.0.113.0/24", "2001:db8:bad::/48"]

[[failsafe]]
ports = ["22/tcp"]
from  = ["10.99.0.0/16", "fd99:4b45:4550::/48"]
"#;

/// A: 8880 open to all, 8889/8890/9000-9010 and 7008/udp for mgmt only.
pub fn policy_a() -> String {
    format!(
        "{HEADER}{BLOCKLIST}{}{}",
        zones(r#""any""#, MGMT_NETS, MGMT_NETS),
        metrics("127.0.0.1:9469", None)
    )
}

/// B: the mirror image: 8880 for mgmt only, the admin ports open to all,
/// 7008/udp for the internet only.
pub fn policy_b() -> String {
    format!(
        "{HEADER}{BLOCKLIST}{}{}",
        zones(MGMT_NETS, r#""any""#, INTERNET_NETS),
        metrics("127.0.0.1:9469", None)
    )
}

/// A, with the metrics endpoint on `listen` behind basic auth.
pub fn policy_a_auth(listen: &str, user: &str, hash: &str) -> String {
    format!(
        "{HEADER}{BLOCKLIST}{}{}",
        zones(r#""any""#, MGMT_NETS, MGMT_NETS),
        metrics(listen, Some((user, hash)))
    )
}

/// B, with the metrics endpoint on `listen` behind basic auth.
pub fn policy_b_auth(listen: &str, user: &str, hash: &str) -> String {
    format!(
        "{HEADER}{BLOCKLIST}{}{}",
        zones(MGMT_NETS, r#""any""#, INTERNET_NETS),
        metrics(listen, Some((user, hash)))
    )
}

/// The blocklist beats allowlists: 203.0.113.0/24 and 2001:db8:bad::/48 are
/// in keep-admin's `allow` *and* on the blocklist; keep-api allows `any`;
/// a list file adds 198.51.100.0/24.
pub fn policy_blocklist_wins() -> String {
    format!(
        "{HEADER}\n[blocklist]\ncidrs = [\"203.0.113.0/24\", \"2001:db8:bad::/48\"]\nfiles = [\"bl-list.txt\"]\n{}{}",
        zones(
            r#""any""#,
            r#""10.20.0.0/16", "fd20:4b45:4550::/48", "203.0.113.0/24", "2001:db8:bad::/48", "198.51.100.0/24""#,
            MGMT_NETS
        ),
        metrics("127.0.0.1:9469", None)
    )
}

pub const BLOCKLIST_FILE: &str =
    "# list file of policy_blocklist_wins\n198.51.100.0/24 ; TEST-NET-2\n";

/// Failsafe beats the blocklist: SSH (a zone that allows nobody) passes from
/// blocklisted 203.0.113.0/24, 2001:db8:bad::/48 and 10.99.0.0/16 because a
/// failsafe rule names them; their other ports stay blocked.
pub fn policy_failsafe_wins() -> String {
    format!(
        r#"{HEADER}
[blocklist]
cidrs = ["203.0.113.0/24", "2001:db8:bad::/48", "10.99.0.0/16"]

[[failsafe]]
ports = ["22/tcp"]
from  = ["203.0.113.0/24", "2001:db8:bad::/48", "10.99.0.0/16"]

[[zone]]
name  = "ssh"
ports = ["22/tcp"]
allow = []
{}{}"#,
        zones(r#""any""#, MGMT_NETS, MGMT_NETS),
        metrics("127.0.0.1:9469", None)
    )
}

/// Invalid: a prefix with host bits set, and a typo'd key.
pub fn policy_invalid() -> String {
    format!(
        "{HEADER}{BLOCKLIST}{}\n[[zone]]\nname = \"broken\"\nports = [\"7100/tcp\"]\nalow = [\"10.1.2.3/8\"]\n",
        zones(r#""any""#, MGMT_NETS, MGMT_NETS)
    )
}

/// Writes `text` to `dir/name` (and the list file the blocklist policy needs).
pub fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join("bl-list.txt"), BLOCKLIST_FILE)?;
    let p = dir.join(name);
    fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

/// An argon2id PHC string for `password` (the daemon's basic_auth format).
pub fn argon2_hash(password: &str) -> Result<String> {
    use argon2::{
        password_hash::{PasswordHasher, SaltString},
        Argon2,
    };
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_valid_and_invalid_as_intended() {
        let dir = std::env::temp_dir().join(format!("pc-policies-{}", std::process::id()));
        let hash = argon2_hash("secret").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        for (name, text) in [
            ("a.toml", policy_a()),
            ("b.toml", policy_b()),
            ("auth.toml", policy_a_auth("127.0.0.1:9470", "prom", &hash)),
            ("auth-b.toml", policy_b_auth("127.0.0.1:9470", "u", &hash)),
            ("bl.toml", policy_blocklist_wins()),
            ("fs.toml", policy_failsafe_wins()),
        ] {
            let p = write(&dir, name, &text).unwrap();
            if let Err(e) = filter_user::policy::load(&p) {
                panic!("{name} is invalid: {e:?}\n{text}");
            }
        }
        let p = write(&dir, "bad.toml", &policy_invalid()).unwrap();
        assert!(filter_user::policy::load(&p).is_err());
        let keep = install_keep(&examples_dir(), &dir).unwrap();
        assert!(filter_user::policy::load(&keep).is_ok());
        let _ = fs::remove_dir_all(&dir);
    }
}
