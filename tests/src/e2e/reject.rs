//! Rejecting zones on the wire: the XDP program's replies reach real
//! sockets. The host namespace listens on every port used here (TCP 8889
//! and 9000, the UDP echo on 7007), so a refusal can only come from the
//! filter, never from the host's own stack.
//!
//! veth hands a frame sent with `XDP_TX` only to a peer that runs XDP
//! itself (see TOOLCHAIN.md), so the internet side's `eth0` gets a
//! pass-all XDP program for the scenario ([`XdpPass`]).
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::{FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

use super::{
    netns,
    probe::{tcp_connect, udp_echo, Outcome},
    scenarios::Ctx,
    topology::{host_addr, HOST_INET_IF, INET4, INET6, MGMT4, MGMT6},
    vlan,
};

/// Zone ports (all with listeners in the host namespace).
const TCP_RESET: u16 = 8889;
const TCP_ADMIN: u16 = 9000;
const UDP_PORT: u16 = 7007;

/// Three rejecting zones that admit the mgmt networks: 8889/tcp (reset),
/// 9000/tcp (ICMP admin prohibited), 7007/udp (ICMP port unreachable); the
/// reply budget as given.
fn policy(rate: u32, burst: u32) -> String {
    format!(
        r#"version = 1

[defaults]
reject_rate  = {rate}
reject_burst = {burst}

[[zone]]
name   = "reject-tcp"
ports  = ["{TCP_RESET}/tcp"]
allow  = ["10.20.0.0/16", "fd20:4b45:4550::/48"]
action = "reject"

[[zone]]
name        = "admin-only"
ports       = ["{TCP_ADMIN}/tcp"]
allow       = ["10.20.0.0/16", "fd20:4b45:4550::/48"]
action      = "reject"
reject_with = "icmp-admin-prohibited"

[[zone]]
name   = "reject-udp"
ports  = ["{UDP_PORT}/udp"]
allow  = ["10.20.0.0/16", "fd20:4b45:4550::/48"]
action = "reject"
"#
    )
}

const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_LINK_CREATE: libc::c_long = 28;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 6],
}

/// A native XDP program returning `XDP_PASS` on a device, as long as this
/// lives (a `bpf_link` held by its fd).
pub struct XdpPass {
    _link: OwnedFd,
}

impl XdpPass {
    /// On `dev` of namespace `ns`.
    pub fn attach(ns: &str, dev: &str) -> Result<XdpPass> {
        let dev = dev.to_string();
        netns::run_in(ns, move || -> Result<XdpPass> {
            let insns = [vlan::mov_imm(0, 2), vlan::exit()]; // XDP_PASS
            let prog = vlan::load_prog(BPF_PROG_TYPE_XDP, BPF_XDP, "pc_xdp_pass", &insns)?;
            // SAFETY: a fresh fd of ours.
            let prog = unsafe { OwnedFd::from_raw_fd(prog) };
            let attr = LinkCreateAttr {
                prog_fd: std::os::fd::AsRawFd::as_raw_fd(&prog) as u32,
                target_ifindex: vlan::ifindex(&dev)?,
                attach_type: BPF_XDP,
                flags: XDP_FLAGS_DRV_MODE,
                _rest: [0; 6],
            };
            // SAFETY: attr outlives the call.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_LINK_CREATE,
                    &attr as *const LinkCreateAttr,
                    std::mem::size_of::<LinkCreateAttr>(),
                )
            };
            if fd < 0 {
                bail!(
                    "attaching a pass-all XDP program to {dev}: {}",
                    std::io::Error::last_os_error()
                );
            }
            // SAFETY: a fresh fd of ours (the link holds the program).
            Ok(XdpPass {
                _link: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            })
        })?
    }
}

/// A TCP connect to a rejecting zone fails at once with ECONNREFUSED (a
/// reset), over IPv4 one to an `icmp-admin-prohibited` zone with
/// EHOSTUNREACH (over IPv6 the ICMPv6 error arrives); a connected UDP
/// socket sees ECONNREFUSED (ICMP port unreachable); over IPv4 and IPv6.
/// The mgmt networks still connect. A dropped SYN would be retransmitted
/// after 1 s: the probes wait 1 s, and the times are noted.
pub fn answers_at_once(cx: &mut Ctx) -> Result<()> {
    let _pass = XdpPass::attach(cx.sb.topo.ns(INET4.side), "eth0")?;
    let policy = cx.policy("reject.toml", &policy(100, 200))?;
    let mut d = cx.start(&policy, &[])?;
    let wait = super::patience(Duration::from_secs(1));
    let rows: Vec<(&str, IpAddr, SocketAddr, bool)> = vec![
        ("tcp", INET4.addr, target(INET4.addr, TCP_RESET), true),
        ("tcp", INET6.addr, target(INET6.addr, TCP_RESET), true),
        ("tcp-admin", INET4.addr, target(INET4.addr, TCP_ADMIN), true),
        ("tcp-admin", INET6.addr, target(INET6.addr, TCP_ADMIN), true),
        ("udp", INET4.addr, target(INET4.addr, UDP_PORT), false),
        ("udp", INET6.addr, target(INET6.addr, UDP_PORT), false),
    ];
    // What ICMPv6 arrives (a raw ICMPv6 socket gets only messages whose
    // checksum the kernel verified).
    let icmp6 = netns::run_in(cx.sb.topo.ns(INET4.side), || -> Result<Socket> {
        let s = Socket::new(
            Domain::IPV6,
            Type::from(libc::SOCK_RAW),
            Some(Protocol::ICMPV6),
        )
        .context("raw ICMPv6 socket")?;
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(s)
    })??;
    let results = netns::run_in(cx.sb.topo.ns(INET4.side), || {
        rows.iter()
            .map(|&(kind, src, dst, tcp)| {
                let started = Instant::now();
                let o = if tcp {
                    tcp_connect(src, dst, wait)
                } else {
                    udp_echo(src, dst, wait)
                };
                (kind, src, dst, o, started.elapsed())
            })
            .collect::<Vec<_>>()
    })?;
    let mut icmp6_seen = Vec::new();
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    while let Ok(n) = icmp6.recv(&mut buf) {
        if n >= 2 {
            // SAFETY: recv initialised the first n bytes.
            icmp6_seen.push(unsafe { (buf[0].assume_init(), buf[1].assume_init()) });
        }
    }
    let mut bad = Vec::new();
    for (kind, src, dst, o, took) in &results {
        let ok = match (*kind, o) {
            ("tcp" | "udp", Outcome::Refused) => *took < wait,
            // ICMP 3/13 to a SYN: EHOSTUNREACH, at once.
            ("tcp-admin", Outcome::Error(e)) if src.is_ipv4() => e.contains("os error 113"),
            // ICMPv6 1/1: Linux 6.18 takes "administratively prohibited"
            // in SYN-SENT as a soft error and sends the SYN again; what
            // counts is that the reply arrived.
            ("tcp-admin", _) if src.is_ipv6() => icmp6_seen.contains(&(1, 1)),
            _ => false,
        };
        let ms = took.as_secs_f64() * 1e3;
        cx.note(format!("{src} -> {dst} ({kind}): {o} after {ms:.1} ms"));
        if !ok {
            bad.push(format!("{src} -> {dst} ({kind}): {o} after {ms:.1} ms"));
        }
    }
    cx.note(format!("ICMPv6 (type, code) received: {icmp6_seen:?}"));
    if !icmp6_seen.contains(&(1, 4)) {
        bad.push(format!(
            "no ICMPv6 port unreachable (1, 4) among {icmp6_seen:?}"
        ));
    }
    for (src, port, tcp) in [
        (MGMT4, TCP_RESET, true),
        (MGMT6, TCP_RESET, true),
        (MGMT4, UDP_PORT, false),
    ] {
        let dst = SocketAddr::new(host_addr(&src), port);
        let o = netns::run_in(cx.sb.topo.ns(src.side), || {
            if tcp {
                tcp_connect(src.addr, dst, wait)
            } else {
                udp_echo(src.addr, dst, wait)
            }
        })?;
        if o != Outcome::Open {
            bad.push(format!("{} -> {dst} (allowed): {o}", src.addr));
        }
    }
    let s = cx.sb.status()?;
    let rejected = |zone: &str| s.packets(HOST_INET_IF, zone, "rejected", "drop");
    cx.note(format!(
        "counted rejected on {HOST_INET_IF}: reject-tcp {}, admin-only {}, reject-udp {}",
        rejected("reject-tcp"),
        rejected("admin-only"),
        rejected("reject-udp")
    ));
    if !bad.is_empty() {
        bail!("{}", bad.join("\n"));
    }
    // At least one per probe (the kernel may retry a connected UDP send).
    for (zone, at_least) in [("reject-tcp", 2), ("admin-only", 2), ("reject-udp", 2)] {
        ensure!(
            rejected(zone) >= at_least,
            "{zone}: {} counted rejected on {HOST_INET_IF}, want at least {at_least}",
            rejected(zone)
        );
    }
    // The reply program sits in a pinned program array: with the daemon
    // gone (kill -9), the zone keeps answering.
    d.kill9();
    let dst = target(INET4.addr, TCP_RESET);
    let o = netns::run_in(cx.sb.topo.ns(INET4.side), || {
        tcp_connect(INET4.addr, dst, wait)
    })?;
    ensure!(
        o == Outcome::Refused,
        "with the daemon killed, {dst} from {}: {o} (want refused)",
        INET4.addr
    );
    cx.note("daemon killed (-9): the reset still comes");
    Ok(())
}

fn target(src: IpAddr, port: u16) -> SocketAddr {
    let host = if src.is_ipv4() { INET4 } else { INET6 };
    SocketAddr::new(host_addr(&host), port)
}

/// A UDP flood at a rejecting port gets ICMP errors only up to the budget
/// (`reject_rate` 20/s, `reject_burst` 20, per CPU), counted where they
/// arrive: a raw ICMP socket in the internet namespace. The rest is
/// counted `reject_suppressed`.
pub fn budget_bounds_a_flood(cx: &mut Ctx) -> Result<()> {
    const RATE: u32 = 20;
    const BURST: u32 = 20;
    const DATAGRAMS: usize = 2000;
    let ns = cx.sb.topo.ns(INET4.side).to_string();
    let _pass = XdpPass::attach(&ns, "eth0")?;
    let policy = cx.policy("reject-budget.toml", &policy(RATE, BURST))?;
    let mut d = cx.start(&policy, &[])?;
    let host = match host_addr(&INET4) {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => bail!("INET4's host address is IPv6"),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let stop = stop.clone();
        let sock = netns::run_in(&ns, icmp_socket)??;
        thread::spawn(move || count_port_unreachables(&sock, host, &stop))
    };
    let (sent, took) = netns::run_in(&ns, move || -> Result<(usize, Duration)> {
        let s = UdpSocket::bind(SocketAddr::new(INET4.addr, 0))?;
        let dst = SocketAddr::new(IpAddr::V4(host), UDP_PORT);
        let started = Instant::now();
        let mut sent = 0;
        for i in 0..DATAGRAMS {
            // A send may fail on an ICMP error queued for the socket.
            if s.send_to(&(i as u32).to_be_bytes(), dst).is_ok() {
                sent += 1;
            }
        }
        Ok((sent, started.elapsed()))
    })??;
    // Stragglers: the replies are sent as the datagrams arrive.
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let replies = counter
        .join()
        .map_err(|_| anyhow::anyhow!("the ICMP counter panicked"))??;
    let cpus = thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let window = took.as_secs_f64() + 0.3;
    // Each CPU: at most two bursts (the bucket refills lazily, see
    // filter-common's `lazy_bucket_take`) plus what refills meanwhile.
    let bound = cpus * (2 * u64::from(BURST) + (f64::from(RATE) * window).ceil() as u64 + 1);
    let s = cx.sb.status()?;
    let rejected = s.packets(HOST_INET_IF, "reject-udp", "rejected", "drop");
    let suppressed = s.packets(HOST_INET_IF, "reject-udp", "reject_suppressed", "drop");
    cx.note(format!(
        "{sent} datagrams in {:.0} ms: {replies} ICMP port unreachable received; counted \
         rejected {rejected}, reject_suppressed {suppressed}; bound {bound} ({cpus} CPUs × \
         (2 × burst {BURST} + {RATE}/s × {window:.2} s + 1))",
        took.as_secs_f64() * 1e3
    ));
    ensure!(
        replies >= u64::from(BURST),
        "only {replies} replies: less than one CPU's burst of {BURST}"
    );
    ensure!(
        replies <= bound && rejected <= bound,
        "{replies} replies received, {rejected} counted rejected: more than the budget allows ({bound})"
    );
    ensure!(
        replies <= rejected,
        "{replies} replies received but only {rejected} counted rejected"
    );
    ensure!(
        suppressed > 0 && rejected + suppressed <= sent as u64,
        "rejected {rejected} + reject_suppressed {suppressed} for {sent} datagrams sent"
    );
    d.terminate()?;
    Ok(())
}

/// A raw ICMP socket (it sees a copy of every ICMP packet the namespace
/// receives) with a buffer large enough for a flood of replies.
fn icmp_socket() -> Result<Socket> {
    let s = Socket::new(
        Domain::IPV4,
        Type::from(libc::SOCK_RAW),
        Some(Protocol::ICMPV4),
    )
    .context("raw ICMP socket")?;
    s.set_recv_buffer_size(8 << 20)?;
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(s)
}

/// ICMP 3/3 from `host` quoting a UDP datagram to `UDP_PORT`, until `stop`.
fn count_port_unreachables(s: &Socket, host: Ipv4Addr, stop: &AtomicBool) -> Result<u64> {
    let mut n = 0u64;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 2048];
    loop {
        match s.recv(&mut buf) {
            Ok(len) => {
                // SAFETY: recv initialised the first `len` bytes.
                let b: Vec<u8> = buf[..len]
                    .iter()
                    .map(|x| unsafe { x.assume_init() })
                    .collect();
                if is_port_unreachable(&b, host) {
                    n += 1;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return Ok(n);
                }
            }
            Err(e) => return Err(e).context("reading the raw ICMP socket"),
        }
    }
}

/// An IPv4 packet (as a raw socket returns it) carrying ICMP 3/3 from
/// `host` that quotes UDP to `UDP_PORT`.
fn is_port_unreachable(b: &[u8], host: Ipv4Addr) -> bool {
    if b.len() < 20 || b[12..16] != host.octets() {
        return false;
    }
    let icmp = &b[usize::from(b[0] & 0x0f) * 4..];
    if icmp.len() < 8 + 20 || icmp[0] != 3 || icmp[1] != 3 {
        return false;
    }
    let quote = &icmp[8..];
    let udp = usize::from(quote[0] & 0x0f) * 4;
    quote[9] == 17
        && quote.len() >= udp + 4
        && u16::from_be_bytes([quote[udp + 2], quote[udp + 3]]) == UDP_PORT
}
