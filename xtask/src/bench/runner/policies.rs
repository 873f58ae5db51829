//! The synthetic policies: N IPv4 blocklist prefixes (90% /32 hosts spread over
//! the whole address space, 10% /24 networks; none merge, so the compiled
//! policy holds exactly N), 100k IPv6 /48s, 32 zones (a TCP and a UDP port
//! each, allowlists of a /16 + 4 /24s and an IPv6 /32) and one failsafe rule.
//! Every size takes the first N of the same sequences, so the probe sources
//! are listed at every size.
use std::{
    collections::HashSet,
    fmt::Write as _,
    io::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use ipnet::{Ipv4Net, Ipv6Net};
use rand::{rngs::SmallRng, Rng, SeedableRng};

use crate::Plan;

pub struct Zone {
    pub id: u32,
    pub tcp: u16,
    pub udp: u16,
    pub allow4: Vec<Ipv4Net>,
    pub allow6: Vec<Ipv6Net>,
}

pub struct PolicySet {
    pub dir: PathBuf,
    /// Even /32 hosts (outside 10/8, 40/6, 100/8, 127/8, 172/8, 192/8, 224/3).
    pub hosts: Vec<u32>,
    /// /24 networks: every other /24 from 40.0.0.0.
    pub nets: Vec<u32>,
    pub v6: Vec<Ipv6Net>,
    pub zones: Vec<Zone>,
    pub failsafe_from: Ipv4Net,
}

const NETS_BASE: u32 = 40 << 24;

fn excluded(top: u32) -> bool {
    matches!(top, 0 | 10 | 40..=43 | 100 | 127 | 172 | 192 | 198) || top >= 224
}

impl PolicySet {
    pub fn generate(plan: &Plan, dir: &Path) -> Result<PolicySet> {
        let max = plan.sizes.iter().copied().max().unwrap_or(0);
        let mut rng = SmallRng::seed_from_u64(0xbe9c4);
        let n_hosts = max - max / 10;
        let mut seen = HashSet::with_capacity(n_hosts);
        let mut hosts = Vec::with_capacity(n_hosts);
        while hosts.len() < n_hosts {
            let a = rng.gen::<u32>() & !1;
            if !excluded(a >> 24) && seen.insert(a) {
                hosts.push(a);
            }
        }
        let nets = (0..(max / 10) as u32)
            .map(|i| NETS_BASE + (i << 9))
            .collect();
        let v6 = (0..plan.v6_prefixes as u128)
            .map(|i| {
                let addr = Ipv6Addr::from((0x2001_0db8_0000u128 + 2 * i) << 80);
                Ipv6Net::new(addr, 48).expect("valid /48")
            })
            .collect();
        let zones = (1..=plan.zones)
            .map(|id| {
                let mut allow4 = vec![Ipv4Net::new(Ipv4Addr::new(10, id as u8, 0, 0), 16).unwrap()];
                for k in 0..4u32 {
                    let n = id * 4 + k;
                    let a = Ipv4Addr::new(172, 16 + (n >> 8) as u8, n as u8, 0);
                    allow4.push(Ipv4Net::new(a, 24).unwrap());
                }
                let a6 = Ipv6Addr::new(0xfd00, id as u16, 0, 0, 0, 0, 0, 0);
                Zone {
                    id,
                    tcp: 10_000 + id as u16,
                    udp: 20_000 + id as u16,
                    allow4,
                    allow6: vec![Ipv6Net::new(a6, 32).unwrap()],
                }
            })
            .collect();
        let set = PolicySet {
            dir: dir.to_path_buf(),
            hosts,
            nets,
            v6,
            zones,
            failsafe_from: "10.250.0.0/16".parse().unwrap(),
        };
        for &n in &plan.sizes {
            set.write(n, None)?;
        }
        set.write(max, Some(one_line_extra()))?;
        Ok(set)
    }

    /// The IPv4 blocklist of size `n`.
    pub fn v4(&self, n: usize) -> Vec<Ipv4Net> {
        let nets = n / 10;
        self.hosts[..n - nets]
            .iter()
            .map(|a| Ipv4Net::new(Ipv4Addr::from(*a), 32).unwrap())
            .chain(
                self.nets[..nets]
                    .iter()
                    .map(|a| Ipv4Net::new(Ipv4Addr::from(*a), 24).unwrap()),
            )
            .collect()
    }

    pub fn policy_path(&self, n: usize) -> PathBuf {
        self.dir.join(format!("policy-{n}.toml"))
    }

    /// The `n` policy with one more line in its list file.
    pub fn changed_policy_path(&self, n: usize) -> PathBuf {
        self.dir.join(format!("policy-{n}-changed.toml"))
    }

    fn write(&self, n: usize, extra: Option<Ipv4Net>) -> Result<()> {
        let tag = if extra.is_some() {
            format!("{n}-changed")
        } else {
            n.to_string()
        };
        let list = self.dir.join(format!("list-{tag}.netset"));
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&list).with_context(|| list.display().to_string())?,
        );
        writeln!(
            out,
            "# synthetic blocklist: {n} IPv4 + {} IPv6",
            self.v6.len()
        )?;
        for net in self.v4(n) {
            writeln!(out, "{net}")?;
        }
        for net in &self.v6 {
            writeln!(out, "{net}")?;
        }
        if let Some(e) = extra {
            writeln!(out, "{e}")?;
        }
        out.flush()?;
        let mut toml = String::from(
            "version = 1\n\n[defaults]\nunmatched = \"pass\"\n\n[metrics]\nlisten = \"127.0.0.1:19190\"\n\n",
        );
        let _ = writeln!(
            toml,
            "[blocklist]\nfiles = [\"list-{tag}.netset\"]\n\n[[failsafe]]\nports = [\"22/tcp\"]\nfrom = [\"{}\"]\n",
            self.failsafe_from
        );
        for z in &self.zones {
            let allow: Vec<String> = z
                .allow4
                .iter()
                .map(|n| format!("\"{n}\""))
                .chain(z.allow6.iter().map(|n| format!("\"{n}\"")))
                .collect();
            let _ = writeln!(
                toml,
                "[[zone]]\nname = \"z{}\"\nports = [\"{}/tcp\", \"{}/udp\"]\nallow = [{}]\n",
                z.id,
                z.tcp,
                z.udp,
                allow.join(", ")
            );
        }
        let path = if extra.is_some() {
            self.changed_policy_path(n)
        } else {
            self.policy_path(n)
        };
        std::fs::write(&path, toml).with_context(|| path.display().to_string())
    }
}

/// The line the "one-line change" adds: a /32 no list contains (odd, in a
/// range the hosts avoid).
pub fn one_line_extra() -> Ipv4Net {
    "198.51.100.7/32".parse().unwrap()
}
