//! `cargo xtask demo`: the sandbox with deploy/examples/keep.toml enforced on
//! the host's veths, a table of which probes are admitted and dropped, the
//! counters that moved, then everything removed again. No real NIC is touched.
use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    daemon::{Sandbox, Status},
    probe::{self, Probe, CLOSED_TCP_PORT},
    scenarios::Exp,
    topology::*,
};

const HEAD: [&str; 5] = ["from", "source", "to", "keep.toml says", "result"];
const CHEAD: [&str; 6] = ["interface", "zone", "reason", "verdict", "packets", "bytes"];

struct Row {
    probe: Probe,
    why: &'static str,
    exp: Exp,
}

fn rows() -> Vec<Row> {
    use Exp::{Blocked as B, Open as O, Refused as R};
    let r = |probe, why, exp| Row { probe, why, exp };
    let t = Probe::tcp;
    let u = Probe::udp;
    vec![
        r(t(INET4, 8880), "keep-api allows any", O),
        r(t(INET6, 8880), "keep-api allows any", O),
        r(t(INET4, 8889), "keep-admin: not in 10.20.0.0/16", B),
        r(t(INET4, 8890), "keep-admin: not in 10.20.0.0/16", B),
        r(t(INET6, 8889), "keep-admin: not in fd20:4b45:4550::/48", B),
        r(t(MGMT4, 8889), "keep-admin allows 10.20.0.0/16", O),
        r(t(MGMT4, 8890), "keep-admin allows 10.20.0.0/16", O),
        r(t(MGMT6, 8890), "keep-admin allows fd20:4b45:4550::/48", O),
        r(t(VLAN4, 8889), "VLAN 100 (tagged), in 10.20.0.0/16", O),
        r(
            t(VLAN_OUT4, 8889),
            "VLAN 100 (tagged), not in keep-admin",
            B,
        ),
        r(t(VLAN_OUT6, 8880), "VLAN 100 (tagged), keep-api", O),
        r(t(VPN4, 22), "failsafe: SSH from 10.99.0.0/16", O),
        r(t(VPN6, 22), "failsafe: SSH from fd99:4b45:4550::/48", O),
        r(t(VPN4, 8889), "VPN is not in keep-admin", B),
        r(t(BLOCKED4, 8880), "blocklist (inline 203.0.113.0/24)", B),
        r(t(BLOCKED4, 22), "blocklist; not a failsafe source", B),
        r(t(BLOCKED6, 8880), "blocklist (inline 2001:db8:bad::/48)", B),
        r(t(LISTED4, 8880), "blocklist (lists/drop.txt)", B),
        r(
            t(LISTED4B, 8880),
            "blocklist (drop.txt, drop-sample.jsonl)",
            B,
        ),
        r(t(LISTED6, 8880), "blocklist (lists/drop.txt)", B),
        r(t(INET4, 22), "zone ssh: admin VPN only", B),
        r(t(MGMT4, 22), "zone ssh: admin VPN only", B),
        r(t(INET4, CLOSED_TCP_PORT), "no zone, nothing listening", R),
        r(u(INET4, 7007), "no zone: unmatched = pass", O),
        r(u(BLOCKED4, 7007), "blocklist (every port)", B),
    ]
}

fn verdict(o: &probe::Outcome) -> &'static str {
    match o {
        probe::Outcome::Open => "ADMITTED (connected)",
        probe::Outcome::Refused => "ADMITTED (port closed)",
        probe::Outcome::Timeout => "DROPPED",
        probe::Outcome::Error(_) => "ERROR",
    }
}

/// Runs the demo; false if a probe disagreed with the policy.
pub fn run(bin: &Path, policy: &Path, verbose: bool) -> Result<bool> {
    let started = Instant::now();
    let lockout = policy.with_file_name("lockout.toml");
    let mut ok = true;
    if lockout.is_file() {
        ok &= show_lockout_check(bin, &lockout)?;
    }
    let sb = Sandbox::new(bin, verbose, true)?;
    println!(
        "sandbox {}: namespaces {}, {}, {} (built in {} ms)",
        sb.topo.prefix,
        sb.topo.internet.name(),
        sb.topo.mgmt.name(),
        sb.topo.host.name(),
        started.elapsed().as_millis()
    );
    println!(
        "  internet ──veth── host:{HOST_INET_IF}   198.18.0.0/24, 2001:db8:1::/64 (+ blocklisted and VPN sources)"
    );
    println!("  mgmt     ──veth── host:{HOST_MGMT_IF}   10.20.0.0/24, fd20:4b45:4550::/64, and VLAN 100 tagged on the same link");
    println!(
        "policy: {} (its own interfaces replaced by --iface {HOST_INET_IF} --iface {HOST_MGMT_IF})\n",
        policy.display()
    );
    let mut d = sb.start_daemon(policy, &[])?;
    println!(
        "portcullis run: READY after {} ms\n",
        d.ready_after.as_millis()
    );
    let before = sb.status()?;

    let rows = rows();
    let probes: Vec<Probe> = rows.iter().map(|r| r.probe).collect();
    let got = probe::run_batch(&sb.topo, &probes);
    println!(
        "{:<15} {:<18} {:<33} {:<40} {}",
        HEAD[0], HEAD[1], HEAD[2], HEAD[3], HEAD[4]
    );
    println!("{}", "-".repeat(134));
    for (r, o) in rows.iter().zip(&got) {
        let good = r.exp.matches(o);
        ok &= good;
        let to = format!(
            "{}/{}",
            r.probe.target(),
            match r.probe.proto {
                probe::Proto::Tcp => "tcp",
                probe::Proto::Udp => "udp",
            }
        );
        println!(
            "{:<15} {:<18} {:<33} {:<40} {:<22} {}",
            r.probe.from.label,
            r.probe.from.addr.to_string(),
            to,
            r.why,
            verdict(o),
            if good {
                "ok".to_string()
            } else {
                format!("EXPECTED {}", r.exp)
            }
        );
    }
    // Counters are read a moment later so the last probes are in.
    std::thread::sleep(Duration::from_millis(50));
    let after = sb.status()?;
    println!("\ncounters that moved (portcullis status --output json, after − before):");
    print_moved(&before, &after);

    let out = sb.cli(&["status"])?;
    println!("\n$ portcullis status");
    print!("{}", String::from_utf8_lossy(&out.stdout));

    d.terminate().context("stopping the daemon")?;
    sb.detach().context("portcullis detach")?;
    drop(sb);
    println!(
        "\ndemo done in {:.1} s; sandbox removed ({})",
        started.elapsed().as_secs_f64(),
        if ok {
            "every probe as the policy says"
        } else {
            "SOME PROBES DISAGREE WITH THE POLICY"
        }
    );
    Ok(ok)
}

/// `portcullis check --strict` on a policy that would cut the host off (ARP
/// dropped): it must warn W001 and refuse. Nothing is loaded.
fn show_lockout_check(bin: &Path, lockout: &Path) -> Result<bool> {
    let out = std::process::Command::new(bin)
        .args(["check", "--strict", "-q"])
        .arg(lockout)
        .output()
        .with_context(|| format!("running {} check", bin.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "$ portcullis check --strict {}   # non_ip = \"drop\", failsafe 22/tcp",
        lockout.display()
    );
    print!("{stderr}");
    let good = out.status.code() == Some(1) && stderr.contains("warning[W001 lockout-non-ip]");
    println!(
        "exit status {}: {}\n",
        out.status.code().unwrap_or(-1),
        if good {
            "refused before it could lock anyone out"
        } else {
            "EXPECTED warning W001 and exit status 1"
        }
    );
    Ok(good)
}

fn print_moved(before: &Status, after: &Status) {
    let b: BTreeMap<String, (u64, u64)> = before
        .counters
        .iter()
        .map(|c| (c.key(), (c.packets, c.bytes)))
        .collect();
    println!(
        "  {:<10} {:<12} {:<15} {:<8} {:>8} {:>9}",
        CHEAD[0], CHEAD[1], CHEAD[2], CHEAD[3], CHEAD[4], CHEAD[5]
    );
    for c in &after.counters {
        let (p0, b0) = b.get(&c.key()).copied().unwrap_or((0, 0));
        if c.packets > p0 {
            println!(
                "  {:<10} {:<12} {:<15} {:<8} {:>8} {:>9}",
                c.interface,
                c.zone,
                c.reason,
                c.verdict,
                c.packets - p0,
                c.bytes - b0
            );
        }
    }
}
