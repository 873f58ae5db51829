//! Hostile clients on the metrics port: idle connections held open and
//! renewed, slowloris requests whose headers never end, and requests with a
//! wrong user or password. They run from the host namespace (the metrics
//! listener is on its loopback) until stopped; what the server did to them is
//! counted, split by whether a `kill -9` of the daemon came in between.
use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::Live;
use crate::e2e::{http, netns};

/// What the server did to held connections.
#[derive(Debug, Default, Clone)]
pub struct HeldStats {
    pub target: usize,
    pub opened: u64,
    pub connect_failed: u64,
    /// Closed (or answered) by the server while the same daemon ran.
    pub closed_by_server: u64,
    /// Gone because the daemon was killed.
    pub closed_by_restart: u64,
    /// Closed by us to renew them.
    pub renewed: u64,
    /// Longest a connection stayed open within one daemon's life.
    pub longest: Duration,
    /// Shortest life of one the server closed (its idle or header timeout).
    pub shortest_server_close: Option<Duration>,
    pub bytes_sent: u64,
}

struct Held {
    s: TcpStream,
    opened: Instant,
    epoch: u64,
    next_byte: Instant,
    sent: usize,
}

/// Whether the server closed or answered `s` (non-blocking peek-by-read).
fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    match s.read(&mut buf) {
        Ok(_) => true, // EOF, or an answer (408, 400, …) before the close
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// The opening of a request whose headers never end; then one byte of
/// `SLOW_TAIL` every `SLOW_BYTE_EVERY`.
const SLOW_HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Soak: ";
const SLOW_TAIL: &[u8] = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const SLOW_BYTE_EVERY: Duration = Duration::from_millis(500);
/// Held connections are renewed after this long (two per second at most).
pub const RENEW_AFTER: Duration = Duration::from_secs(10);

/// Holds `target` connections to `addr` open (slowloris ones with `slow`),
/// replacing those the server closes and renewing old ones, until stopped.
/// Moves the calling thread into namespace `ns`.
pub fn hold(
    ns: &str,
    addr: SocketAddr,
    target: usize,
    slow: bool,
    live: &Live,
) -> Result<HeldStats> {
    netns::enter(ns)?;
    Ok(hold_here(addr, target, slow, live))
}

/// [`hold`] in the calling thread's namespace.
fn hold_here(addr: SocketAddr, target: usize, slow: bool, live: &Live) -> HeldStats {
    let mut st = HeldStats {
        target,
        ..HeldStats::default()
    };
    let mut conns: Vec<Held> = Vec::new();
    let mut last_renew = Instant::now();
    let end = |c: &Held, st: &mut HeldStats, by_server: bool, live: &Live| {
        let age = c.opened.elapsed();
        if live.epoch() != c.epoch {
            st.closed_by_restart += 1;
        } else {
            st.longest = st.longest.max(age);
            if by_server {
                st.closed_by_server += 1;
                st.shortest_server_close =
                    Some(st.shortest_server_close.map_or(age, |s| s.min(age)));
            } else {
                st.renewed += 1;
            }
        }
    };
    while !live.stopped() {
        let now = Instant::now();
        let mut i = 0;
        while i < conns.len() {
            let c = &mut conns[i];
            let mut gone = closed(&mut c.s);
            if !gone && slow && now >= c.next_byte {
                let b = [SLOW_TAIL[c.sent % SLOW_TAIL.len()]];
                match c.s.write(&b) {
                    Ok(n) => {
                        c.sent += n;
                        st.bytes_sent += n as u64;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => gone = true,
                }
                c.next_byte = now + SLOW_BYTE_EVERY;
            }
            if gone {
                let c = conns.swap_remove(i);
                end(&c, &mut st, true, live);
            } else {
                i += 1;
            }
        }
        // Renew: two of the oldest per second once they are old enough.
        if last_renew.elapsed() >= Duration::from_secs(1) {
            last_renew = Instant::now();
            conns.sort_by_key(|c| c.opened);
            for _ in 0..2 {
                if conns
                    .first()
                    .is_some_and(|c| c.opened.elapsed() >= RENEW_AFTER)
                {
                    let c = conns.remove(0);
                    end(&c, &mut st, false, live);
                }
            }
        }
        // Refill while a daemon is up; one failure waits for the next round.
        while conns.len() < target && live.up() {
            let epoch = live.epoch();
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(mut s) => {
                    st.opened += 1;
                    if slow {
                        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
                        if s.write_all(SLOW_HEAD).is_ok() {
                            st.bytes_sent += SLOW_HEAD.len() as u64;
                        }
                    }
                    let _ = s.set_nonblocking(true);
                    conns.push(Held {
                        s,
                        opened: Instant::now(),
                        epoch,
                        next_byte: Instant::now() + SLOW_BYTE_EVERY,
                        sent: 0,
                    });
                }
                Err(_) => {
                    st.connect_failed += 1;
                    break;
                }
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    for c in &conns {
        if live.epoch() == c.epoch {
            st.longest = st.longest.max(c.opened.elapsed());
        }
    }
    st
}

/// What requests with wrong credentials got.
#[derive(Debug, Default, Clone)]
pub struct WrongStats {
    pub requests: u64,
    pub unauthorized: u64,
    /// 429/503: turned away by a limit on concurrent password checks.
    pub busy: u64,
    /// 200: a wrong credential was accepted (a failure).
    pub admitted: u64,
    pub other_status: Vec<u16>,
    /// Transport errors while the same daemon ran (not across a restart).
    pub errors: u64,
    pub first_error: Option<String>,
    pub wrong_user: Vec<Duration>,
    pub wrong_password: Vec<Duration>,
}

impl WrongStats {
    pub fn merge(&mut self, o: WrongStats) {
        self.requests += o.requests;
        self.unauthorized += o.unauthorized;
        self.busy += o.busy;
        self.admitted += o.admitted;
        self.other_status.extend(o.other_status);
        self.other_status.truncate(20);
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.wrong_user.extend(o.wrong_user);
        self.wrong_password.extend(o.wrong_password);
    }
}

/// GET /metrics with a wrong password (the right user) and with an unknown
/// user, alternately, one request every `pause`, until stopped.
pub fn wrong_credentials(
    ns: &str,
    addr: SocketAddr,
    user: &str,
    pause: Duration,
    live: &Live,
) -> WrongStats {
    let mut st = WrongStats::default();
    let mut n = 0u64;
    while !live.stopped() {
        if !live.up() {
            thread::sleep(Duration::from_millis(50));
            continue;
        }
        n += 1;
        let bad = format!("wrong-{:016x}", rand::random::<u64>());
        let wrong_user = n.is_multiple_of(2);
        let cred = if wrong_user {
            ("nobody", bad.as_str())
        } else {
            (user, bad.as_str())
        };
        let epoch = live.epoch();
        let t = Instant::now();
        let res = http::get(ns, addr, "/metrics", Some(cred));
        let took = t.elapsed();
        st.requests += 1;
        match res {
            Ok((401, _)) => {
                st.unauthorized += 1;
                if wrong_user {
                    st.wrong_user.push(took);
                } else {
                    st.wrong_password.push(took);
                }
            }
            Ok((429 | 503, _)) => st.busy += 1,
            Ok((200, _)) => st.admitted += 1,
            Ok((c, _)) => {
                if st.other_status.len() < 20 {
                    st.other_status.push(c);
                }
            }
            Err(e) => {
                if live.epoch() == epoch && live.up() {
                    st.errors += 1;
                    st.first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        thread::sleep(pause);
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{net::TcpListener, sync::atomic::Ordering};

    #[test]
    fn held_connections_closed_by_the_server_are_counted_and_replaced() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let live = Live::default();
        live.epoch.store(1, Ordering::SeqCst);
        let stats = thread::scope(|s| {
            // The "server" closes every connection 300 ms after accepting it.
            s.spawn(|| {
                l.set_nonblocking(true).unwrap();
                let mut open: Vec<(TcpStream, Instant)> = Vec::new();
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(1500) {
                    if let Ok((c, _)) = l.accept() {
                        open.push((c, Instant::now()));
                    }
                    open.retain(|(_, at)| at.elapsed() < Duration::from_millis(300));
                    thread::sleep(Duration::from_millis(10));
                }
                live.stop.store(true, Ordering::SeqCst);
            });
            s.spawn(|| hold_here(addr, 4, true, &live)).join().unwrap()
        });
        assert!(stats.opened >= 8, "{stats:?}");
        assert!(stats.closed_by_server >= 4, "{stats:?}");
        assert_eq!(stats.closed_by_restart, 0, "{stats:?}");
        assert!(stats.bytes_sent > SLOW_HEAD.len() as u64, "{stats:?}");
        assert!(stats
            .shortest_server_close
            .is_some_and(|d| d >= Duration::from_millis(250)));
    }
}
