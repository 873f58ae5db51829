//! The daemon's side of sampled events: reads the pinned `EVENTS` ring,
//! names each record (interface, zone, reason), writes it to the log when
//! packet logging is on, and fans it out to the `portcullis events`
//! subscribers of the control socket.
//!
//! A subscriber cannot make the daemon grow: at most [`MAX_SUBSCRIBERS`]
//! stream at once (more are refused), each line is formatted once and shared,
//! a subscriber that falls [`BACKLOG`] lines behind loses the oldest (it is
//! told how many, and they are counted), and one that takes no line for
//! [`WRITE_TIMEOUT`] is disconnected.
use std::{
    io,
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use aya::maps::{Map, MapData, RingBuf};
use filter_common::{EventsConfig, MAP_EVENTS};
use serde::Serialize;
use tokio::{
    io::{unix::AsyncFd, AsyncReadExt, AsyncWriteExt},
    net::unix::{OwnedReadHalf, OwnedWriteHalf},
    sync::{broadcast, Semaphore},
};

use super::Shared;
use crate::{
    events::{
        record::{decode, Clock},
        EventsMaps, Names, Record, Sampling, Stats,
    },
    loader::PinRoot,
};

/// `portcullis events` streams served at once.
pub const MAX_SUBSCRIBERS: usize = 8;
/// Lines a subscriber may fall behind before it loses the oldest.
pub const BACKLOG: usize = 1024;
/// A subscriber that takes no line for this long is disconnected.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the reader re-reads the setting (packet logging), the names
/// (after a reload) and the clock offset, and drains the ring regardless of
/// wake-ups.
const REFRESH: Duration = Duration::from_millis(500);
/// Records handled per wake-up before yielding to the rest of the daemon.
const BATCH: usize = 4096;

/// Shared by the ring reader and the subscribers.
pub(crate) struct Hub {
    tx: broadcast::Sender<Arc<str>>,
    slots: Arc<Semaphore>,
    write_timeout: Duration,
    /// Records read from the ring.
    pub(crate) read: AtomicU64,
    /// Lines subscribers lost by falling behind.
    pub(crate) subscriber_drops: AtomicU64,
    /// Subscribers disconnected for taking nothing within WRITE_TIMEOUT.
    pub(crate) subscriber_stuck: AtomicU64,
}

impl Hub {
    pub(crate) fn new() -> Hub {
        Hub {
            tx: broadcast::channel(BACKLOG).0,
            slots: Arc::new(Semaphore::new(MAX_SUBSCRIBERS)),
            write_timeout: WRITE_TIMEOUT,
            read: AtomicU64::new(0),
            subscriber_drops: AtomicU64::new(0),
            subscriber_stuck: AtomicU64::new(0),
        }
    }

    pub(crate) fn subscribers(&self) -> usize {
        MAX_SUBSCRIBERS - self.slots.available_permits()
    }
}

/// A line of the stream after the header.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Line<'a> {
    Event(&'a Record),
}

/// The stream's first line.
#[derive(Serialize)]
struct Header {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    sampling: Option<Sampling>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<Stats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn open_ring(root: &PinRoot) -> Result<RingBuf<MapData>, String> {
    let data = MapData::from_pin(root.map(MAP_EVENTS)).map_err(|e| e.to_string())?;
    let map = Map::from_map_data(data).map_err(|e| e.to_string())?;
    RingBuf::try_from(map).map_err(|e| e.to_string())
}

/// What the reader knows between records.
struct Reader {
    shared: Arc<Shared>,
    names: Names,
    generation: Option<u32>,
    log: bool,
    clock: Clock,
    maps: Option<EventsMaps>,
}

impl Reader {
    /// Packet logging on? Read before each batch (one lookup), so a switch
    /// applies to the very next event.
    fn refresh_log(&mut self) {
        if self.maps.is_none() {
            self.maps = EventsMaps::open(&self.shared.root).ok();
        }
        self.log = self
            .maps
            .as_ref()
            .and_then(|m| m.config().ok())
            .is_some_and(|c| c.flags & EventsConfig::LOG != 0);
    }

    fn refresh(&mut self) {
        self.clock = Clock::now();
        self.refresh_log();
        let Ok(pins) = self.shared.root.open() else {
            return;
        };
        let generation = pins.generation().ok();
        if generation != self.generation {
            if let Ok(meta) = pins.meta() {
                self.names = Names::new(meta);
                self.generation = generation;
            }
        }
    }

    /// Handles up to BATCH records; true when the ring is empty.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> bool {
        self.refresh_log();
        let hub = &self.shared.events;
        for _ in 0..BATCH {
            let Some(item) = ring.next() else {
                return true;
            };
            let Some(event) = decode(&item) else {
                continue;
            };
            drop(item);
            hub.read.fetch_add(1, Relaxed);
            let listening = hub.tx.receiver_count() > 0;
            if !self.log && !listening {
                continue;
            }
            let record = Record::new(&event, &self.names, &self.clock);
            if self.log {
                tracing::info!(target: "portcullis::packet", "{record}");
            }
            if listening {
                if let Ok(mut line) = serde_json::to_string(&Line::Event(&record)) {
                    line.push('\n');
                    let _ = hub.tx.send(Arc::from(line));
                }
            }
        }
        false
    }
}

/// Reads the ring for the daemon's life.
pub(super) async fn read_ring(shared: Arc<Shared>) {
    let ring = match open_ring(&shared.root) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("events: the EVENTS ring cannot be read ({e}); no events or packet log");
            return;
        }
    };
    let fd = ring.as_raw_fd();
    // SAFETY: the RingBuf owns its map's descriptor, keeps it open for as
    // long as it lives (inside the AsyncFd) and always returns that one.
    let registered =
        unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
    let mut ring = match registered {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(
                "events: polling the EVENTS ring (fd {fd}): {e}; no events or packet log"
            );
            return;
        }
    };
    let mut reader = Reader {
        shared,
        names: Names::default(),
        generation: None,
        log: false,
        clock: Clock::now(),
        maps: None,
    };
    reader.refresh();
    let mut tick = tokio::time::interval(REFRESH);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let Ok(mut guard) = guard else {
                    tracing::warn!("events: polling the EVENTS ring failed; no more events");
                    return;
                };
                // The kernel wakes the reader only once it has caught up:
                // readiness is cleared only when the ring is empty.
                if reader.drain(guard.get_inner_mut()) {
                    guard.clear_ready();
                } else {
                    drop(guard);
                    tokio::task::yield_now().await;
                }
            }
            _ = tick.tick() => {
                reader.refresh();
                reader.drain(ring.get_mut());
            }
        }
    }
}

async fn write_line(write: &mut OwnedWriteHalf, line: &[u8], limit: Duration) -> io::Result<()> {
    match tokio::time::timeout(limit, write.write_all(line)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the subscriber took no line within the write timeout",
        )),
    }
}

fn json_line<T: Serialize>(v: &T) -> Vec<u8> {
    let mut s = serde_json::to_vec(v).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    s.push(b'\n');
    s
}

/// Serves one `{"cmd":"events"}` request: a header line, then one JSON
/// line per event (`{"event":{…}}`) and `{"lagged":N}` when this subscriber
/// lost N lines, until the client goes away.
pub(super) async fn stream(
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    shared: Arc<Shared>,
) -> io::Result<()> {
    let maps = EventsMaps::open(&shared.root).ok();
    let header = Header {
        ok: true,
        sampling: maps.as_ref().and_then(|m| m.sampling().ok()),
        stats: maps.as_ref().and_then(|m| m.stats().ok()),
        error: None,
    };
    serve_stream(read, write, &shared.events, header).await
}

async fn serve_stream(
    mut read: OwnedReadHalf,
    mut write: OwnedWriteHalf,
    hub: &Hub,
    header: Header,
) -> io::Result<()> {
    let limit = hub.write_timeout;
    let Ok(_slot) = hub.slots.clone().try_acquire_owned() else {
        let refused = Header {
            ok: false,
            sampling: None,
            stats: None,
            error: Some(format!(
                "{MAX_SUBSCRIBERS} event streams are open already (the most the daemon \
                 serves); close one and retry"
            )),
        };
        return write_line(&mut write, &json_line(&refused), limit).await;
    };
    let mut rx = hub.tx.subscribe();
    write_line(&mut write, &json_line(&header), limit).await?;
    let mut sink = [0u8; 256];
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Ok(line) => {
                    if let Err(e) = write_line(&mut write, line.as_bytes(), limit).await {
                        if e.kind() == io::ErrorKind::TimedOut {
                            hub.subscriber_stuck.fetch_add(1, Relaxed);
                            tracing::info!("events: a subscriber took nothing for {limit:?}; disconnected");
                        }
                        return Err(e);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    hub.subscriber_drops.fetch_add(n, Relaxed);
                    write_line(&mut write, format!("{{\"lagged\":{n}}}\n").as_bytes(), limit).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            // The client sends nothing more; EOF (or an error) means it left.
            n = read.read(&mut sink) => match n {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncBufReadExt, BufReader},
        net::UnixStream,
    };

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn header() -> Header {
        Header {
            ok: true,
            sampling: None,
            stats: None,
            error: None,
        }
    }

    fn hub(write_timeout: Duration) -> Arc<Hub> {
        Arc::new(Hub {
            write_timeout,
            ..Hub::new()
        })
    }

    /// A subscriber served by a task; returns the client's end.
    fn subscribe(hub: &Arc<Hub>) -> UnixStream {
        let (server, client) = UnixStream::pair().unwrap();
        let hub = hub.clone();
        tokio::spawn(async move {
            let (r, w) = server.into_split();
            let _ = serve_stream(r, w, &hub, header()).await;
        });
        client
    }

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let started = std::time::Instant::now();
        while !cond() {
            assert!(started.elapsed() < Duration::from_secs(5), "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn line(i: usize) -> Arc<str> {
        Arc::from(format!(
            "{{\"event\":{{\"n\":{i},\"pad\":\"{}\"}}}}\n",
            "x".repeat(80)
        ))
    }

    #[test]
    fn subscribers_beyond_the_limit_are_refused_with_a_reason() {
        runtime().block_on(async {
            let hub = hub(WRITE_TIMEOUT);
            let mut open = Vec::new();
            for _ in 0..MAX_SUBSCRIBERS {
                let mut c = BufReader::new(subscribe(&hub));
                let mut first = String::new();
                c.read_line(&mut first).await.unwrap();
                assert!(first.starts_with("{\"ok\":true"), "{first}");
                open.push(c);
            }
            assert_eq!(hub.subscribers(), MAX_SUBSCRIBERS);
            let mut extra = BufReader::new(subscribe(&hub));
            let mut first = String::new();
            extra.read_line(&mut first).await.unwrap();
            assert!(
                first.contains("\"ok\":false") && first.contains("streams are open"),
                "{first}"
            );
            drop(open);
            wait_for("closed streams free their slots", || hub.subscribers() == 0).await;
        });
    }

    #[test]
    fn a_slow_subscriber_loses_the_oldest_lines_and_is_told_how_many() {
        runtime().block_on(async {
            let hub = hub(Duration::from_secs(3));
            let mut c = BufReader::new(subscribe(&hub));
            let mut first = String::new();
            c.read_line(&mut first).await.unwrap();
            wait_for("subscribed", || hub.tx.receiver_count() == 1).await;
            // Far more than the socket buffer and the backlog hold.
            let n = 20_000;
            for i in 0..n {
                let _ = hub.tx.send(line(i));
            }
            let (mut events, mut lagged) = (0u64, 0u64);
            while events + lagged < n as u64 {
                let mut l = String::new();
                let got = tokio::time::timeout(Duration::from_secs(5), c.read_line(&mut l))
                    .await
                    .expect("lines keep coming")
                    .unwrap();
                assert!(
                    got > 0,
                    "the stream ended after {events} events, {lagged} lagged"
                );
                if let Some(rest) = l.strip_prefix("{\"lagged\":") {
                    lagged += rest.trim().trim_end_matches('}').parse::<u64>().unwrap();
                } else {
                    events += 1;
                }
            }
            assert!(lagged > 0, "nothing was dropped");
            assert!(events <= n as u64 - lagged);
            assert_eq!(hub.subscriber_drops.load(Relaxed), lagged);
        });
    }

    #[test]
    fn a_stuck_subscriber_is_disconnected_after_the_write_timeout() {
        runtime().block_on(async {
            let hub = hub(Duration::from_millis(300));
            let mut c = subscribe(&hub);
            wait_for("subscribed", || hub.tx.receiver_count() == 1).await;
            // Keep the stream coming (as a flood would) until the writer has
            // filled the socket and waited out its timeout: a burst sent all at
            // once can shrink to the channel's last 1,024 lines, which fit in
            // the socket buffer, when the writer runs only after it (a loaded
            // machine), and nothing would ever block.
            let started = std::time::Instant::now();
            let mut i = 0;
            while hub.subscriber_stuck.load(Relaxed) == 0 {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the stuck subscriber is let go"
                );
                for _ in 0..500 {
                    let _ = hub.tx.send(line(i));
                    i += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            wait_for("its slot is free", || hub.subscribers() == 0).await;
            // What it can still read is bounded by the socket buffer.
            let mut all = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut all)).await;
            assert!(all.len() < i * 90, "{} bytes of {i} lines", all.len());
        });
    }
}
