//! A rate-capped flood of raw frames from the "internet" namespace into the
//! host's `inet0`: TCP SYNs and UDP from several sources, a third of them
//! blocklisted, over IPv4 and IPv6. Frames go out of an AF_PACKET socket on
//! the internet side of the veth, so they never leave the sandbox. Their
//! destination MAC is not the host's: what the filter passes, the host's stack
//! discards as "other host" (no replies, no backscatter); the filter sees and
//! counts every frame.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{e2e::netns, packet::Frame};

/// What the flood sent.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub sent: u64,
    /// Of which from a blocklisted source (203.0.113.0/24, 2001:db8:bad::/48).
    pub blocklisted: u64,
    pub send_errors: u64,
    pub elapsed: Duration,
}

/// The frames, each with whether its source is on both policies' blocklist.
pub fn frames() -> Vec<(Vec<u8>, bool)> {
    let host4 = Ipv4Addr::new(198, 18, 0, 1);
    let host6: Ipv6Addr = "2001:db8:1::1".parse().expect("literal");
    let mut out = Vec::new();
    for sport in [40000u16, 40001, 51234, 61000] {
        let blocked4 = Ipv4Addr::new(203, 0, 113, 9 + (sport % 7) as u8);
        let blocked6: Ipv6Addr = "2001:db8:bad::99".parse().expect("literal");
        let inet4 = Ipv4Addr::new(198, 18, 0, 77 + (sport % 5) as u8);
        let inet6: Ipv6Addr = "2001:db8:1::79".parse().expect("literal");
        out.push((Frame::ipv4(blocked4, host4).tcp(sport, 8880).build(), true));
        out.push((Frame::ipv6(blocked6, host6).tcp(sport, 8889).build(), true));
        // Zone ports: dropped under one policy, passed under the other.
        out.push((Frame::ipv4(inet4, host4).udp(sport, 7008).build(), false));
        out.push((Frame::ipv4(inet4, host4).tcp(sport, 8889).build(), false));
        out.push((Frame::ipv6(inet6, host6).tcp(sport, 8880).build(), false));
        // No zone: passed by both.
        out.push((Frame::ipv4(inet4, host4).udp(sport, 53).build(), false));
    }
    out
}

/// An AF_PACKET socket bound for sending on `ifname` (in the calling thread's
/// namespace).
struct RawSender {
    fd: std::os::fd::OwnedFd,
    addr: libc::sockaddr_ll,
}

impl RawSender {
    fn open(ifname: &str) -> Result<RawSender> {
        use std::os::fd::FromRawFd;
        let name = std::ffi::CString::new(ifname)?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {ifname}: {}", std::io::Error::last_os_error());
        }
        // Protocol 0: send only, nothing is queued for receiving.
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        Ok(RawSender { fd, addr })
    }

    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: valid buffer and address of the stated lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&self.addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Sends `frames` round-robin out of `ifname` in namespace `ns` at most
/// `pps` per second, until `stop` or `until`. Runs in the calling thread
/// (which it moves into `ns`: give it a thread of its own).
pub fn run(ns: &str, ifname: &str, pps: u64, stop: &AtomicBool, until: Instant) -> Result<Stats> {
    netns::enter(ns)?;
    let tx = RawSender::open(ifname).with_context(|| format!("flood sender in {ns}"))?;
    let frames = frames();
    let started = Instant::now();
    let mut st = Stats::default();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        // Catch up to the cap, at most one millisecond's worth plus a little.
        let due = (started.elapsed().as_secs_f64() * pps as f64) as u64;
        let burst = due.saturating_sub(st.sent).min(pps / 1000 + 16);
        for _ in 0..burst {
            let (f, blocked) = &frames[i % frames.len()];
            i += 1;
            match tx.send(f) {
                Ok(()) => {
                    st.sent += 1;
                    st.blocklisted += u64::from(*blocked);
                }
                Err(_) => {
                    // A full queue (ENOBUFS): back off until the next tick
                    // rather than spin.
                    st.send_errors += 1;
                    break;
                }
            }
        }
        thread::sleep(Duration::from_millis(1));
    }
    st.elapsed = started.elapsed();
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_third_of_the_frames_are_blocklisted_and_all_are_ethernet() {
        let f = frames();
        let blocked = f.iter().filter(|x| x.1).count();
        assert_eq!(blocked * 3, f.len());
        for (bytes, _) in &f {
            let ethertype = u16::from_be_bytes([bytes[12], bytes[13]]);
            assert!(ethertype == 0x0800 || ethertype == 0x86dd, "{ethertype:#x}");
            assert!(bytes.len() >= 42, "{}", bytes.len());
        }
    }
}
