//! The sandbox: three namespaces and two veth links, IPv4 and IPv6 on both,
//! and an 802.1Q VLAN (id 100) over the mgmt link (tagged frames cross the
//! host's `mgmt0`, where the daemon's XDP program runs; see `vlan` for how,
//! without the 8021q module).
//!
//! ```text
//!  <p>-internet                      <p>-host                         <p>-mgmt
//!  eth0 ─────────── veth ────────── inet0   mgmt0 ─────── veth ─────── eth0
//!  198.18.0.2/24                   198.18.0.1   10.20.0.1              10.20.0.2/24
//!  2001:db8:1::2/64           2001:db8:1::1   fd20:4b45:4550::1   fd20:4b45:4550::2/64
//!  + /32 and /128 sources:                      vlan100 ── vlan 100 ── vlan100
//!    203.0.113.7  198.51.100.7  192.0.2.7       10.20.100.1            10.20.100.2/24
//!    10.99.0.7  2001:db8:bad::7                 fd20:4b45:4550:100::1  fd20:4b45:4550:100::2/64
//!    2001:db8:dead::7  fd99:4b45:4550::7                               + 198.19.100.2, 2001:db8:100::2
//! ```
//!
//! The addresses are chosen so that deploy/examples/keep.toml applies as it is:
//! 198.18.0.0/24 (benchmarking range) is an ordinary internet source, 10.20/16 and
//! fd20:4b45:4550::/48 are keep-admin's networks, 10.99/16 and fd99:4b45:4550::/48
//! its SSH failsafe networks, and 203.0.113.0/24, 198.51.100.0/24, 192.0.2.0/24,
//! 2001:db8:bad::/48 and 2001:db8:dead::/48 are on its blocklist (inline or in its
//! list files). The daemon attaches to `inet0` and `mgmt0` in the host namespace.
//!
//! Nothing is created in the root namespace: veth pairs are created inside the
//! host namespace with their peer placed directly in the other namespace.
use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
};

use anyhow::{bail, Context, Result};

use super::netns::Netns;
use super::{cmd::ip, netns, vlan};

/// Host-side interface names (where the daemon attaches).
pub const HOST_INET_IF: &str = "inet0";
pub const HOST_MGMT_IF: &str = "mgmt0";
/// The VLAN's "sub-interface" on both sides (a veth, see `vlan`).
pub const VLAN_IF: &str = "vlan100";
pub const VLAN_PEER_IF: &str = "vlan100p";
pub const VLAN_ID: u16 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Internet,
    Mgmt,
}

/// Which host address a source reaches the host on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    Internet,
    Mgmt,
    /// Tagged frames over the mgmt veth.
    Vlan,
}

/// A probe source: an address configured in the internet or mgmt namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    pub label: &'static str,
    pub side: Side,
    pub path: Path,
    pub addr: IpAddr,
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

#[allow(clippy::too_many_arguments)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
}

const fn src(label: &'static str, side: Side, path: Path, addr: IpAddr) -> Source {
    Source {
        label,
        side,
        path,
        addr,
    }
}

use Path as P;
use Side as S;

/// Ordinary internet sources.
pub const INET4: Source = src("internet", S::Internet, P::Internet, v4(198, 18, 0, 2));
pub const INET6: Source = src(
    "internet6",
    S::Internet,
    P::Internet,
    v6(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2),
);
/// Blocklisted in keep.toml inline (`203.0.113.0/24`, `2001:db8:bad::/48`).
pub const BLOCKED4: Source = src("blocked", S::Internet, P::Internet, v4(203, 0, 113, 7));
pub const BLOCKED6: Source = src(
    "blocked6",
    S::Internet,
    P::Internet,
    v6(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 7),
);
/// Blocklisted by keep.toml's list files only (drop.txt, drop-sample.jsonl).
pub const LISTED4: Source = src("listed", S::Internet, P::Internet, v4(198, 51, 100, 7));
pub const LISTED4B: Source = src("listed-b", S::Internet, P::Internet, v4(192, 0, 2, 7));
pub const LISTED6: Source = src(
    "listed6",
    S::Internet,
    P::Internet,
    v6(0x2001, 0xdb8, 0xdead, 0, 0, 0, 0, 7),
);
/// keep.toml's admin VPN (SSH failsafe).
pub const VPN4: Source = src("vpn", S::Internet, P::Internet, v4(10, 99, 0, 7));
pub const VPN6: Source = src(
    "vpn6",
    S::Internet,
    P::Internet,
    v6(0xfd99, 0x4b45, 0x4550, 0, 0, 0, 0, 7),
);
/// The management network.
pub const MGMT4: Source = src("mgmt", S::Mgmt, P::Mgmt, v4(10, 20, 0, 2));
pub const MGMT6: Source = src(
    "mgmt6",
    S::Mgmt,
    P::Mgmt,
    v6(0xfd20, 0x4b45, 0x4550, 0, 0, 0, 0, 2),
);
/// On VLAN 100 over the mgmt link: inside keep-admin's networks …
pub const VLAN4: Source = src("vlan", S::Mgmt, P::Vlan, v4(10, 20, 100, 2));
pub const VLAN6: Source = src(
    "vlan6",
    S::Mgmt,
    P::Vlan,
    v6(0xfd20, 0x4b45, 0x4550, 0x100, 0, 0, 0, 2),
);
/// … and outside them.
pub const VLAN_OUT4: Source = src("vlan-outsider", S::Mgmt, P::Vlan, v4(198, 19, 100, 2));
pub const VLAN_OUT6: Source = src(
    "vlan-outsider6",
    S::Mgmt,
    P::Vlan,
    v6(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2),
);

pub const ALL_SOURCES: [Source; 15] = [
    INET4, INET6, BLOCKED4, BLOCKED6, LISTED4, LISTED4B, LISTED6, VPN4, VPN6, MGMT4, MGMT6, VLAN4,
    VLAN6, VLAN_OUT4, VLAN_OUT6,
];

/// The host's address on a source's path, in the source's family.
pub fn host_addr(s: &Source) -> IpAddr {
    match (s.path, s.addr.is_ipv4()) {
        (P::Internet, true) => v4(198, 18, 0, 1),
        (P::Internet, false) => v6(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1),
        (P::Mgmt, true) => v4(10, 20, 0, 1),
        (P::Mgmt, false) => v6(0xfd20, 0x4b45, 0x4550, 0, 0, 0, 0, 1),
        (P::Vlan, true) => v4(10, 20, 100, 1),
        (P::Vlan, false) => v6(0xfd20, 0x4b45, 0x4550, 0x100, 0, 0, 0, 1),
    }
}

pub fn target(s: &Source, port: u16) -> SocketAddr {
    SocketAddr::new(host_addr(s), port)
}

/// The three namespaces and their links; everything is removed on drop.
pub struct Topology {
    pub prefix: String,
    // Field order = drop order: the namespaces go last.
    pub internet: Netns,
    pub mgmt: Netns,
    pub host: Netns,
    /// Whether the mgmt side writes VLAN tags into the frame (tx-vlan offload
    /// off), so XDP on the host's `mgmt0` sees them, rather than passing them
    /// out of band as veth does by default.
    pub vlan_tags_inband: bool,
    /// Why there is no VLAN path (not asked for, or tcx is missing: Linux < 6.6);
    /// `None` when it was built.
    pub vlan_skipped: Option<String>,
}

impl Topology {
    /// The run prefix `pc<pid>`.
    pub fn default_prefix() -> String {
        format!("pc{}", std::process::id())
    }

    /// Builds the namespaces and links; the VLAN path only when `vlan` is set
    /// and the kernel can attach its tc programs (tcx, Linux ≥ 6.6).
    pub fn build(prefix: &str, vlan: bool) -> Result<Topology> {
        let internet = Netns::create(&format!("{prefix}-internet"))?;
        let mgmt = Netns::create(&format!("{prefix}-mgmt"))?;
        let host = Netns::create(&format!("{prefix}-host"))?;
        let mut topo = Topology {
            prefix: prefix.to_string(),
            internet,
            mgmt,
            host,
            vlan_tags_inband: false,
            vlan_skipped: (!vlan).then(|| "no VLAN path asked for (--no-vlan/--vm-subset)".into()),
        };
        topo.configure().context("building the topology")?;
        Ok(topo)
    }

    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::Internet => self.internet.name(),
            Side::Mgmt => self.mgmt.name(),
        }
    }

    pub fn host_ns(&self) -> &str {
        self.host.name()
    }

    /// Whether probes from `s` can run: its path exists.
    pub fn has_source(&self, s: &Source) -> bool {
        s.path != Path::Vlan || self.vlan_skipped.is_none()
    }

    /// The sources whose path exists.
    pub fn sources(&self) -> Vec<Source> {
        ALL_SOURCES
            .into_iter()
            .filter(|s| self.has_source(s))
            .collect()
    }

    /// The VLAN path (see `vlan`): on each side a veth pair `vlan100` ↔
    /// `vlan100p` bridged to the trunk by two tcx programs. When tcx attach is
    /// refused (Linux < 6.6: EINVAL for the unknown attach type), the pairs are
    /// removed again and the reason returned as `Ok(Some(reason))`.
    fn build_vlan(&mut self, h: &str, m: &str) -> Result<Option<String>> {
        for (ns, trunk) in [(h, HOST_MGMT_IF), (m, "eth0")] {
            ip(&[
                "-n",
                ns,
                "link",
                "add",
                VLAN_IF,
                "type",
                "veth",
                "peer",
                "name",
                VLAN_PEER_IF,
            ])?;
            for dev in [VLAN_IF, VLAN_PEER_IF] {
                ip(&["-n", ns, "link", "set", dev, "up"])?;
            }
            if let Err(e) = netns::run_in(ns, || vlan::bridge_vlan(VLAN_PEER_IF, trunk, VLAN_ID))? {
                let tcx_missing = format!("{e:#}").contains("attaching a tcx");
                for ns in [h, m] {
                    let _ = ip(&["-n", ns, "link", "del", VLAN_IF]);
                }
                if tcx_missing {
                    return Ok(Some(format!("no VLAN path: {e:#} (tcx needs Linux ≥ 6.6)")));
                }
                return Err(e);
            }
        }
        // Tags in the frame on the wire (see `vlan_tags_inband`).
        self.vlan_tags_inband = netns::run_in(m, || set_tx_vlan_offload("eth0", false))??;
        netns::run_in(h, || set_tx_vlan_offload(HOST_MGMT_IF, false))??;
        Ok(None)
    }

    fn configure(&mut self) -> Result<()> {
        let (i, m, h) = (
            self.internet.name().to_string(),
            self.mgmt.name().to_string(),
            self.host.name().to_string(),
        );
        for ns in [&i, &m, &h] {
            // No duplicate address detection: addresses are usable at once.
            netns::run_in(ns, || -> Result<()> {
                for conf in ["all", "default"] {
                    let p = format!("/proc/sys/net/ipv6/conf/{conf}/accept_dad");
                    fs::write(&p, "0").with_context(|| format!("writing {p}"))?;
                }
                Ok(())
            })??;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "-n",
            &h,
            "link",
            "add",
            HOST_INET_IF,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &i,
        ])?;
        ip(&[
            "-n",
            &h,
            "link",
            "add",
            HOST_MGMT_IF,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &m,
        ])?;
        // VLAN 100 over the mgmt link, on both sides (see `vlan`): `vlan100`
        // holds the addresses, its peer `vlan100p` tags into / untags from the trunk.
        if self.vlan_skipped.is_none() {
            self.vlan_skipped = self.build_vlan(&h, &m)?;
        }
        let vlan = self.vlan_skipped.is_none();

        let addrs: &[(&str, &str, &str)] = &[
            (&h, HOST_INET_IF, "198.18.0.1/24"),
            (&h, HOST_INET_IF, "2001:db8:1::1/64"),
            (&h, HOST_MGMT_IF, "10.20.0.1/24"),
            (&h, HOST_MGMT_IF, "fd20:4b45:4550::1/64"),
            (&h, VLAN_IF, "10.20.100.1/24"),
            (&h, VLAN_IF, "fd20:4b45:4550:100::1/64"),
            (&i, "eth0", "198.18.0.2/24"),
            (&i, "eth0", "2001:db8:1::2/64"),
            (&i, "eth0", "203.0.113.7/32"),
            (&i, "eth0", "198.51.100.7/32"),
            (&i, "eth0", "192.0.2.7/32"),
            (&i, "eth0", "10.99.0.7/32"),
            (&i, "eth0", "2001:db8:bad::7/128"),
            (&i, "eth0", "2001:db8:dead::7/128"),
            (&i, "eth0", "fd99:4b45:4550::7/128"),
            (&m, "eth0", "10.20.0.2/24"),
            (&m, "eth0", "fd20:4b45:4550::2/64"),
            (&m, VLAN_IF, "10.20.100.2/24"),
            (&m, VLAN_IF, "fd20:4b45:4550:100::2/64"),
            (&m, VLAN_IF, "198.19.100.2/32"),
            (&m, VLAN_IF, "2001:db8:100::2/128"),
        ];
        for (ns, dev, a) in addrs {
            if *dev == VLAN_IF && !vlan {
                continue;
            }
            let mut args = vec!["-n", ns, "addr", "add", a, "dev", dev];
            if a.contains(':') {
                args.push("nodad");
            }
            ip(&args)?;
        }
        for (ns, dev) in [
            (&h, HOST_INET_IF),
            (&h, HOST_MGMT_IF),
            (&i, "eth0"),
            (&m, "eth0"),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        let routes: &[(&str, &str, &str, &str)] = &[
            (&i, "default", "198.18.0.1", "eth0"),
            (&i, "default", "2001:db8:1::1", "eth0"),
            (&m, "default", "10.20.0.1", "eth0"),
            (&m, "default", "fd20:4b45:4550::1", "eth0"),
            (&h, "203.0.113.0/24", "198.18.0.2", HOST_INET_IF),
            (&h, "198.51.100.0/24", "198.18.0.2", HOST_INET_IF),
            (&h, "192.0.2.0/24", "198.18.0.2", HOST_INET_IF),
            (&h, "10.99.0.0/16", "198.18.0.2", HOST_INET_IF),
            (&h, "2001:db8:bad::/48", "2001:db8:1::2", HOST_INET_IF),
            (&h, "2001:db8:dead::/48", "2001:db8:1::2", HOST_INET_IF),
            (&h, "fd99:4b45:4550::/48", "2001:db8:1::2", HOST_INET_IF),
            (&h, "198.19.100.2/32", "10.20.100.2", VLAN_IF),
            (&h, "2001:db8:100::2/128", "fd20:4b45:4550:100::2", VLAN_IF),
        ];
        for (ns, dst, via, dev) in routes {
            if *dev == VLAN_IF && !vlan {
                continue;
            }
            let fam = if via.contains(':') { "-6" } else { "-4" };
            ip(&["-n", ns, fam, "route", "add", dst, "via", via, "dev", dev])?;
        }
        Ok(())
    }
}

/// Turns tx-vlan-hw-insert on or off for `dev` in the calling thread's
/// namespace (the legacy ETHTOOL_GFLAGS/SFLAGS ioctl, so no `ethtool` binary is
/// needed). Returns whether the offload is now off.
pub fn set_tx_vlan_offload(dev: &str, on: bool) -> Result<bool> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GFLAGS: u32 = 0x25;
    const ETHTOOL_SFLAGS: u32 = 0x26;
    const ETH_FLAG_TXVLAN: u32 = 1 << 7;

    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct Ifreq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }

    if dev.len() >= libc::IFNAMSIZ {
        bail!("interface name {dev} too long");
    }
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .context("socket for ethtool ioctl")?;
    let mut val = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    let mut ifr = Ifreq {
        name: [0; libc::IFNAMSIZ],
        data: &mut val,
        _pad: [0; 16],
    };
    ifr.name[..dev.len()].copy_from_slice(dev.as_bytes());
    let mut call = |cmd: u32, data: u32| -> Result<u32> {
        val.cmd = cmd;
        val.data = data;
        ifr.data = &mut val;
        // SAFETY: `ifr` points at a live, correctly laid out ethtool_value.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut ifr) };
        if rc != 0 {
            bail!(
                "SIOCETHTOOL {cmd:#x} on {dev}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(val.data)
    };
    let flags = call(ETHTOOL_GFLAGS, 0)?;
    let want = if on {
        flags | ETH_FLAG_TXVLAN
    } else {
        flags & !ETH_FLAG_TXVLAN
    };
    if want != flags {
        call(ETHTOOL_SFLAGS, want)?;
    }
    let now = call(ETHTOOL_GFLAGS, 0)?;
    Ok(now & ETH_FLAG_TXVLAN == 0)
}
