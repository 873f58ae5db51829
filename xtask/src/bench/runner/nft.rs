//! The same policy for nftables (netdev ingress, interval sets, ports in a
//! verdict map) and for iptables + ipset (raw PREROUTING).
use std::{fmt::Write as _, process::Command, time::Instant};

use anyhow::Result;

use crate::{policies::PolicySet, sys};

pub const TABLE: &str = "pcbench";

fn elements<T: std::fmt::Display>(it: impl Iterator<Item = T>) -> String {
    let mut s = String::new();
    for (i, e) in it.enumerate() {
        if i > 0 {
            s.push_str(",\n");
        }
        let _ = write!(s, "{e}");
    }
    s
}

/// The nftables ruleset of the size-`n` policy. With `dev`, the ingress chain
/// is hooked to it; without, only sets and zone chains are loaded (the load
/// time is the sets').
pub fn ruleset(set: &PolicySet, n: usize, dev: Option<&str>) -> String {
    let mut s = format!("table netdev {TABLE} {{\n");
    let _ = writeln!(
        s,
        "  set bl4 {{ type ipv4_addr; flags interval; elements = {{ {} }} }}",
        elements(set.v4(n).iter())
    );
    let _ = writeln!(
        s,
        "  set bl6 {{ type ipv6_addr; flags interval; elements = {{ {} }} }}",
        elements(set.v6.iter())
    );
    for z in &set.zones {
        let _ = writeln!(
            s,
            "  set z{}_a4 {{ type ipv4_addr; flags interval; elements = {{ {} }} }}",
            z.id,
            elements(z.allow4.iter())
        );
        let _ = writeln!(
            s,
            "  set z{}_a6 {{ type ipv6_addr; flags interval; elements = {{ {} }} }}",
            z.id,
            elements(z.allow6.iter())
        );
        let _ = writeln!(
            s,
            "  chain z{id} {{\n    ip saddr @z{id}_a4 accept\n    ip6 saddr @z{id}_a6 accept\n    counter drop\n  }}",
            id = z.id
        );
    }
    let _ = writeln!(
        s,
        "  map zports {{ type inet_proto . inet_service : verdict; elements = {{ {} }} }}",
        elements(set.zones.iter().flat_map(|z| {
            [
                format!("tcp . {} : jump z{}", z.tcp, z.id),
                format!("udp . {} : jump z{}", z.udp, z.id),
            ]
        }))
    );
    if let Some(dev) = dev {
        let _ = writeln!(
            s,
            "  chain ingress {{\n    type filter hook ingress device \"{dev}\" priority 0; policy accept;\n    \
             ip saddr {fs} tcp dport 22 accept\n    \
             ip saddr @bl4 counter drop\n    ip6 saddr @bl6 counter drop\n    \
             meta l4proto . th dport vmap @zports\n  }}",
            fs = set.failsafe_from
        );
    }
    s.push_str("}\n");
    s
}

/// `nft -f` of `script` in `netns`; seconds.
pub fn load_timed(netns: &str, script: &str) -> Result<f64> {
    let t = Instant::now();
    sys::run_with_input(
        Command::new("ip").args(["netns", "exec", netns, "nft", "-f", "-"]),
        script.as_bytes(),
    )?;
    Ok(t.elapsed().as_secs_f64())
}

pub fn delete(netns: &str) -> Result<()> {
    sys::sh(
        Some(netns),
        &format!("nft delete table netdev {TABLE} 2>/dev/null || true"),
    )?;
    Ok(())
}

/// `ipset restore` input: the blocklist and one allow set + port set per zone.
pub fn ipset_script(set: &PolicySet, n: usize) -> String {
    let v4 = set.v4(n);
    let mut s = format!(
        "create pcb_bl4 hash:net family inet hashsize {} maxelem {}\n",
        (v4.len() / 2).next_power_of_two().max(1024),
        v4.len().max(65536) * 2
    );
    s.push_str("create pcb_bl6 hash:net family inet6 maxelem 262144\n");
    for net in &v4 {
        let _ = writeln!(s, "add pcb_bl4 {net}");
    }
    for net in &set.v6 {
        let _ = writeln!(s, "add pcb_bl6 {net}");
    }
    for z in &set.zones {
        let _ = writeln!(s, "create pcb_z{}_a4 hash:net family inet", z.id);
        for net in &z.allow4 {
            let _ = writeln!(s, "add pcb_z{}_a4 {net}", z.id);
        }
        let _ = writeln!(s, "create pcb_z{}_a6 hash:net family inet6", z.id);
        for net in &z.allow6 {
            let _ = writeln!(s, "add pcb_z{}_a6 {net}", z.id);
        }
    }
    s
}

/// iptables-restore / ip6tables-restore input for the raw table.
pub fn iptables_rules(set: &PolicySet, v6: bool) -> String {
    let (bl, fam, fs) = if v6 {
        ("pcb_bl6", "a6", None)
    } else {
        ("pcb_bl4", "a4", Some(set.failsafe_from.to_string()))
    };
    let mut s = String::from("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    if let Some(fs) = fs {
        let _ = writeln!(s, "-A PREROUTING -s {fs} -p tcp --dport 22 -j ACCEPT");
    }
    let _ = writeln!(s, "-A PREROUTING -m set --match-set {bl} src -j DROP");
    for z in &set.zones {
        for (proto, port) in [("tcp", z.tcp), ("udp", z.udp)] {
            let _ = writeln!(
                s,
                "-A PREROUTING -p {proto} --dport {port} -m set ! --match-set pcb_z{}_{fam} src -j DROP",
                z.id
            );
        }
    }
    s.push_str("COMMIT\n");
    s
}
