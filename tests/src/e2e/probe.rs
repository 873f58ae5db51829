//! Probes (TCP connect, UDP echo) from a source address in a namespace, and the
//! listeners they talk to in the host namespace.
use std::{
    fmt,
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{
    netns,
    topology::{self, Source, Topology},
};

/// How long a probe waits for an answer. A dropped SYN is retransmitted after
/// 1 s, so within this limit a TCP probe sends exactly one SYN.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// TCP ports with a listener in the host namespace.
pub const TCP_PORTS: [u16; 6] = [22, 8880, 8889, 8890, 9000, 9005];
/// A TCP port with nothing listening (a passed SYN is answered by RST).
pub const CLOSED_TCP_PORT: u16 = 8899;
/// UDP echo ports.
pub const UDP_PORTS: [u16; 2] = [7007, 7008];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// TCP handshake completed / UDP echo came back.
    Open,
    /// Reached the host, nobody listening (TCP RST, ICMP port unreachable).
    Refused,
    /// No answer within the timeout: dropped (by the filter).
    Timeout,
    /// Anything else (the probe itself failed: bind, route, …).
    Error(String),
}

impl Outcome {
    /// The packet reached the host's stack.
    pub fn reached(&self) -> bool {
        matches!(self, Outcome::Open | Outcome::Refused)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Open => f.write_str("open"),
            Outcome::Refused => f.write_str("refused"),
            Outcome::Timeout => f.write_str("timeout"),
            Outcome::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// One probe: from a source, to a port of the host on the source's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probe {
    pub from: Source,
    pub proto: Proto,
    pub port: u16,
}

impl Probe {
    pub fn tcp(from: Source, port: u16) -> Probe {
        Probe {
            from,
            proto: Proto::Tcp,
            port,
        }
    }
    pub fn udp(from: Source, port: u16) -> Probe {
        Probe {
            from,
            proto: Proto::Udp,
            port,
        }
    }
    pub fn target(&self) -> SocketAddr {
        topology::target(&self.from, self.port)
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(
            f,
            "{} {} -> {}/{p}",
            self.from.label,
            self.from.addr,
            self.target()
        )
    }
}

fn domain(a: &IpAddr) -> Domain {
    if a.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

/// TCP connect from `src` to `dst`, in the calling thread's namespace.
pub fn tcp_connect(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Outcome {
    let run = || -> std::io::Result<Socket> {
        let s = Socket::new(domain(&src), Type::STREAM, Some(Protocol::TCP))?;
        s.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
        s.connect_timeout(&SockAddr::from(dst), timeout)?;
        Ok(s)
    };
    match run() {
        // The handshake completed and the listener closed it before connect
        // returned: open.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Outcome::Open,
        Ok(s) => {
            // Close with RST: no TIME_WAIT, so probe loops never run out of ports.
            let _ = s.set_linger(Some(Duration::ZERO));
            Outcome::Open
        }
        Err(e) => match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Outcome::Timeout,
            _ => Outcome::Error(e.to_string()),
        },
    }
}

/// One UDP datagram from `src` to `dst`, waiting for its echo.
pub fn udp_echo(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Outcome {
    let run = || -> std::io::Result<bool> {
        let s = UdpSocket::bind(SocketAddr::new(src, 0))?;
        s.connect(dst)?;
        s.set_read_timeout(Some(timeout))?;
        let token: [u8; 8] = rand::random();
        s.send(&token)?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 64];
        // Bounded: stray datagrams cannot keep us past the deadline.
        while Instant::now() < deadline {
            let n = s.recv(&mut buf)?;
            if buf[..n] == token {
                return Ok(true);
            }
        }
        Ok(false)
    };
    match run() {
        Ok(true) => Outcome::Open,
        Ok(false) => Outcome::Timeout,
        Err(e) => match e.kind() {
            std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Outcome::Timeout,
            _ => Outcome::Error(e.to_string()),
        },
    }
}

/// Runs one probe in the calling thread (which must be in the source's namespace).
pub fn probe_here(p: &Probe, timeout: Duration) -> Outcome {
    match p.proto {
        Proto::Tcp => tcp_connect(p.from.addr, p.target(), timeout),
        Proto::Udp => udp_echo(p.from.addr, p.target(), timeout),
    }
}

/// Runs `probes` in parallel (one thread each, in its source's namespace);
/// results in the same order.
pub fn run_batch(topo: &Topology, probes: &[Probe]) -> Vec<Outcome> {
    thread::scope(|s| {
        let handles: Vec<_> = probes
            .iter()
            .map(|p| {
                let ns = topo.ns(p.from.side);
                s.spawn(move || match netns::enter(ns) {
                    Ok(()) => probe_here(p, PROBE_TIMEOUT),
                    Err(e) => Outcome::Error(format!("{e:#}")),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Outcome::Error("probe thread panicked".into()))
            })
            .collect()
    })
}

/// Waits until a TCP connection from every source reaches the host (before
/// any filter is attached), each try with a generous timeout, for at most
/// `limit` in all. A fresh topology's first packets wait for neighbour
/// discovery, which under QEMU TCG took longer than [`PROBE_TIMEOUT`]: the
/// scenarios' probes must judge the filter, not a cold neighbour cache.
pub fn warm_up(topo: &Topology, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut cold: Vec<Probe> = topo
        .sources()
        .into_iter()
        .map(|s| Probe::tcp(s, TCP_PORTS[2]))
        .collect();
    while !cold.is_empty() {
        let outcomes = thread::scope(|s| {
            let handles: Vec<_> = cold
                .iter()
                .map(|p| {
                    let ns = topo.ns(p.from.side);
                    s.spawn(move || match netns::enter(ns) {
                        Ok(()) => probe_here(p, Duration::from_secs(1)),
                        Err(e) => Outcome::Error(format!("{e:#}")),
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Outcome::Timeout))
                .collect::<Vec<_>>()
        });
        cold = cold
            .into_iter()
            .zip(outcomes)
            .filter(|(_, o)| *o != Outcome::Open)
            .map(|(p, _)| p)
            .collect();
        if !cold.is_empty() && Instant::now() >= deadline {
            let names: Vec<String> = cold.iter().map(|p| p.from.label.to_string()).collect();
            anyhow::bail!(
                "the sandbox's paths from {} never opened within {limit:?}",
                names.join(", ")
            );
        }
    }
    Ok(())
}

/// TCP listeners and UDP echo servers on `[::]` (dual stack) in the host
/// namespace; stopped and joined on drop.
pub struct Listeners {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<Result<Result<()>>>>,
}

impl Listeners {
    pub fn start(host_ns: &str) -> Result<Listeners> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        for port in TCP_PORTS {
            let stop = stop.clone();
            let ready = ready_tx.clone();
            threads.push(netns::spawn_in(host_ns, move || -> Result<()> {
                let l = match bind_tcp(port) {
                    Ok(l) => {
                        let _ = ready.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = ready.send(Err(anyhow::anyhow!("{e:#}")));
                        return Err(e);
                    }
                };
                tcp_accept_loop(l, &stop);
                Ok(())
            }));
        }
        for port in UDP_PORTS {
            let stop = stop.clone();
            let ready = ready_tx.clone();
            threads.push(netns::spawn_in(host_ns, move || -> Result<()> {
                let s = match UdpSocket::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)) {
                    Ok(s) => {
                        let _ = ready.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let e = anyhow::anyhow!("binding udp port {port}: {e}");
                        let _ = ready.send(Err(anyhow::anyhow!("{e:#}")));
                        return Err(e);
                    }
                };
                udp_echo_loop(s, &stop);
                Ok(())
            }));
        }
        drop(ready_tx);
        let me = Listeners { stop, threads };
        for _ in 0..(TCP_PORTS.len() + UDP_PORTS.len()) {
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .context("waiting for the listeners")??;
        }
        Ok(me)
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn bind_tcp(port: u16) -> Result<TcpListener> {
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    s.set_only_v6(false)?;
    s.set_reuse_address(true)?;
    s.bind(&SockAddr::from(SocketAddr::new(
        Ipv6Addr::UNSPECIFIED.into(),
        port,
    )))
    .with_context(|| format!("binding tcp port {port}"))?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Accepts and closes connections until `stop`; polls every 50 ms.
fn tcp_accept_loop(l: TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 50) };
        if n > 0 {
            // Closed at once; the prober closes with RST, so neither side
            // keeps a TIME_WAIT.
            let _ = l.accept();
        }
    }
}

fn udp_echo_loop(s: UdpSocket, stop: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    }
}

/// Probes on a loop from their own threads until stopped: for traffic across a
/// daemon restart or reloads. Each result is timestamped.
pub struct ProbeLoop {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<Vec<Sample>>>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub probe: Probe,
    /// When the probe started, since the loop started.
    pub at: Duration,
    pub outcome: Outcome,
}

/// Hard limits of a probe loop (count and time), whatever the caller does.
pub const LOOP_MAX_PROBES: usize = 200_000;
pub const LOOP_MAX_TIME: Duration = Duration::from_secs(180);

impl ProbeLoop {
    /// One thread per probe, each probing again `pause` after the previous
    /// answer, until [`ProbeLoop::finish`] (or the hard limits).
    pub fn start(topo: &Topology, probes: &[Probe], pause: Duration) -> ProbeLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let threads = probes
            .iter()
            .map(|p| {
                let (p, stop) = (*p, stop.clone());
                let ns = topo.ns(p.from.side).to_string();
                thread::spawn(move || {
                    let mut out = Vec::new();
                    if let Err(e) = netns::enter(&ns) {
                        out.push(Sample {
                            probe: p,
                            at: started.elapsed(),
                            outcome: Outcome::Error(format!("{e:#}")),
                        });
                        return out;
                    }
                    while !stop.load(Ordering::SeqCst)
                        && out.len() < LOOP_MAX_PROBES
                        && started.elapsed() < LOOP_MAX_TIME
                    {
                        let at = started.elapsed();
                        let outcome = probe_here(&p, PROBE_TIMEOUT);
                        out.push(Sample {
                            probe: p,
                            at,
                            outcome,
                        });
                        thread::sleep(pause);
                    }
                    out
                })
            })
            .collect();
        ProbeLoop { stop, threads }
    }

    /// Stops the loop and returns every sample, per probe in time order.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .drain(..)
            .flat_map(|t| t.join().unwrap_or_default())
            .collect()
    }
}

impl Drop for ProbeLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
