//! The kernel↔user contract of portcullis: map names, keys, values, reasons,
//! verdicts and the counter layout. This crate is the only place it is written;
//! the XDP program and the daemon both import it.
//!
//! Generations: every policy-bearing map is split into two *slots*. `ACTIVE[0]`
//! holds a monotonically increasing generation number; a packet reads it once and
//! then looks only at slot `generation & 1`. The loader fills the inactive slot and
//! flips `ACTIVE` with one 4-byte write, so no packet ever sees half of two policies.
#![no_std]

/// Version of the map layout this build pins: bumped by every change to a
/// pinned map's name, key, value or size. A build that finds an older layout
/// pinned migrates it (new maps beside the old, state carried over, one
/// `bpf_link_update`); layout 1 is v0.1.0's and has no `LAYOUT` map.
pub const LAYOUT_VERSION: u32 = 2;

/// Number of policy slots (double buffering).
pub const NUM_SLOTS: u32 = 2;

/// Slot a generation lives in.
#[inline(always)]
pub const fn slot_of(generation: u32) -> u32 {
    generation & 1
}

// ---------------------------------------------------------------------------
// Map names (the symbol names of the maps in the eBPF object).
// ---------------------------------------------------------------------------
pub const MAP_ACTIVE: &str = "ACTIVE";
pub const MAP_CONFIG: &str = "CONFIG";
pub const MAP_COUNTERS: &str = "COUNTERS";
pub const MAP_PORTS: &str = "PORTS";
pub const MAP_ZONES: &str = "ZONES";
pub const MAP_ALLOW4: &str = "ALLOW4";
pub const MAP_ALLOW6: &str = "ALLOW6";
pub const MAP_BL4_WORDS: &str = "BL4_WORDS";
pub const MAP_BL4_HOSTS: &str = "BL4_HOSTS";
pub const MAP_BL6: &str = "BL6";
pub const MAP_IFACES: &str = "IFACES";
pub const MAP_META: &str = "META";
/// `LAYOUT[0]`: the `LAYOUT_VERSION` of the build that created the maps.
pub const MAP_LAYOUT: &str = "LAYOUT";
/// Ring buffer of sampled decisions ([`Event`] records).
pub const MAP_EVENTS: &str = "EVENTS";
/// `EVENTS_CFG[0]`: what is sampled and how fast ([`EventsConfig`]); global,
/// not per policy slot: switching it is one write, never a policy write.
pub const MAP_EVENTS_CFG: &str = "EVENTS_CFG";
/// `EVENTS_STATE[0]`, per CPU: the token bucket and its counters ([`EventsState`]).
pub const MAP_EVENTS_STATE: &str = "EVENTS_STATE";
/// Program array (one entry: the events program), filled by each load and not
/// pinned: the sampling path runs as a tail call, verified on its own.
pub const MAP_EVENTS_PROG: &str = "EVENTS_PROG";
/// Per-CPU scratch (`EventsPending`): the decision handed to the events program.
pub const MAP_EVENTS_PENDING: &str = "EVENTS_PENDING";
/// Maps of the object that belong to one load (created fresh, never pinned).
pub const PER_LOAD_MAPS: [&str; 2] = [MAP_EVENTS_PROG, MAP_EVENTS_PENDING];
/// All policy and state maps, for loaders and tests that check the object.
pub const ALL_MAPS: [&str; 15] = [
    MAP_ACTIVE,
    MAP_CONFIG,
    MAP_COUNTERS,
    MAP_PORTS,
    MAP_ZONES,
    MAP_ALLOW4,
    MAP_ALLOW6,
    MAP_BL4_WORDS,
    MAP_BL4_HOSTS,
    MAP_BL6,
    MAP_IFACES,
    MAP_META,
    MAP_EVENTS,
    MAP_EVENTS_CFG,
    MAP_EVENTS_STATE,
];
/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "portcullis";
/// The XDP program a sampled decision tail-calls (`EVENTS_PROG[0]`).
pub const EVENTS_PROGRAM_NAME: &str = "portcullis_events";

// ---------------------------------------------------------------------------
// Reasons, verdicts, rules and counters.
// ---------------------------------------------------------------------------

/// Why a packet got its verdict. One counter per (rule, reason, verdict).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not IPv4/IPv6: `defaults.non_ip`.
    NonIp = 0,
    /// Violates the parsing contract: always dropped.
    Malformed = 1,
    /// Source and port matched a failsafe rule: always passed.
    Failsafe = 2,
    /// Source is in the global blocklist: always dropped.
    Blocklist = 3,
    /// A fragment judged by `defaults.fragments`.
    Fragment = 4,
    /// An IP protocol without ports (ICMP, GRE, ESP, …): `defaults.other_protocols`.
    OtherProtocol = 5,
    /// Zone port, source in the zone's allowlist.
    Allowed = 6,
    /// Zone port, source outside the allowlist: the zone's action.
    NotAllowed = 7,
    /// As `NotAllowed`, but the zone audits: counted and passed.
    Audit = 8,
    /// No zone claims the port: `defaults.unmatched`.
    Unmatched = 9,
    /// The active slot holds no policy (only before the first load): passed.
    NoPolicy = 10,
}

pub const NUM_REASONS: u32 = 11;

impl Reason {
    pub const ALL: [Reason; NUM_REASONS as usize] = [
        Reason::NonIp,
        Reason::Malformed,
        Reason::Failsafe,
        Reason::Blocklist,
        Reason::Fragment,
        Reason::OtherProtocol,
        Reason::Allowed,
        Reason::NotAllowed,
        Reason::Audit,
        Reason::Unmatched,
        Reason::NoPolicy,
    ];

    /// The label used in metrics, docs and test fixtures.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::NonIp => "non_ip",
            Reason::Malformed => "malformed",
            Reason::Failsafe => "failsafe",
            Reason::Blocklist => "blocklist",
            Reason::Fragment => "fragment",
            Reason::OtherProtocol => "other_protocol",
            Reason::Allowed => "allowed",
            Reason::NotAllowed => "not_allowed",
            Reason::Audit => "audit",
            Reason::Unmatched => "unmatched",
            Reason::NoPolicy => "no_policy",
        }
    }
}

/// What happens to the packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Pass = 0,
    Drop = 1,
}

impl Verdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
        }
    }
}

/// Largest zone id; zone ids are 1..=MAX_ZONES. (A zone holds any number of
/// ports and prefixes; the cap keeps the per-CPU counter array small.)
pub const MAX_ZONES: u32 = 64;
/// Counter rule for verdicts that belong to no zone (defaults, blocklist, …).
pub const RULE_GLOBAL: u32 = 0;
/// Counter rule for failsafe passes.
pub const RULE_FAILSAFE: u32 = MAX_ZONES + 1;
pub const NUM_RULES: u32 = MAX_ZONES + 2;
/// Counters per interface slot.
pub const NUM_COUNTERS: u32 = NUM_RULES * NUM_REASONS * 2;

/// Index of (rule, reason, verdict) within one interface's counters.
#[inline(always)]
pub const fn counter_index(rule: u32, reason: Reason, verdict: Verdict) -> u32 {
    (rule * NUM_REASONS + reason as u32) * 2 + verdict as u32
}

/// (rule, reason, verdict) of a per-interface counter index; the inverse of
/// `counter_index`.
pub const fn decode_counter_index(index: u32) -> (u32, Reason, Verdict) {
    let verdict = if index % 2 == 1 {
        Verdict::Drop
    } else {
        Verdict::Pass
    };
    let rest = index / 2;
    (
        rest / NUM_REASONS,
        Reason::ALL[(rest % NUM_REASONS) as usize],
        verdict,
    )
}

/// Interface slots for counters: `IFACES[ifindex]` gives the slot of an
/// attached interface; slot 0 counts frames of interfaces not registered there
/// (and BPF_PROG_TEST_RUN frames).
pub const MAX_IFACE_SLOTS: u32 = 16;
/// `IFACES` is indexed by ifindex; larger ifindexes count in slot 0.
pub const IFACES_LEN: u32 = 1 << 16;
/// Length of `COUNTERS`: one block of `NUM_COUNTERS` per interface slot.
pub const COUNTERS_LEN: u32 = MAX_IFACE_SLOTS * NUM_COUNTERS;

/// Index into `COUNTERS` of a per-interface counter index.
#[inline(always)]
pub const fn iface_counter_index(iface_slot: u32, index: u32) -> u32 {
    iface_slot * NUM_COUNTERS + index
}

/// One per-CPU counter cell.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

// ---------------------------------------------------------------------------
// Per-slot configuration: `CONFIG[slot]`.
// ---------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub flags: u32,
}

impl Config {
    /// The slot holds a complete policy.
    pub const VALID: u32 = 1 << 0;
    pub const NON_IP_DROP: u32 = 1 << 1;
    pub const UNMATCHED_DROP: u32 = 1 << 2;
    pub const OTHER_DROP: u32 = 1 << 3;
    /// `fragments = "drop"`; otherwise filter-first.
    pub const FRAGMENTS_DROP: u32 = 1 << 4;
    // Bit 5 was LOG_PACKETS (layout 1); packet logging is `EVENTS_CFG` now.
    /// The IPv4 blocklist holds at least one prefix (skip lookups when empty).
    pub const HAS_BL4: u32 = 1 << 6;
    /// The IPv6 blocklist holds at least one prefix.
    pub const HAS_BL6: u32 = 1 << 7;
    /// At least one failsafe rule exists.
    pub const HAS_FAILSAFE: u32 = 1 << 8;

    #[inline(always)]
    pub const fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

// ---------------------------------------------------------------------------
// Ports: `PORTS[slot * PORTS_PER_SLOT + proto_index * 65536 + port]`.
// ---------------------------------------------------------------------------

/// L4 protocols with ports, as indexed in `PORTS`.
pub const PROTO_INDEX_TCP: u32 = 0;
pub const PROTO_INDEX_UDP: u32 = 1;
pub const PROTO_INDEX_SCTP: u32 = 2;
pub const NUM_PORT_PROTOS: u32 = 3;
pub const PORTS_PER_SLOT: u32 = NUM_PORT_PROTOS * 65536;

/// IP protocol numbers the datapath knows.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

/// Index of an IP protocol with ports in `PORTS`, or `None` if it has none.
#[inline(always)]
pub const fn proto_index(ip_proto: u8) -> Option<u32> {
    match ip_proto {
        IPPROTO_TCP => Some(PROTO_INDEX_TCP),
        IPPROTO_UDP => Some(PROTO_INDEX_UDP),
        IPPROTO_SCTP => Some(PROTO_INDEX_SCTP),
        _ => None,
    }
}

#[inline(always)]
pub const fn port_index(slot: u32, proto_index: u32, port: u16) -> u32 {
    slot * PORTS_PER_SLOT + proto_index * 65536 + port as u32
}

/// What a (proto, port) belongs to. 0 means "none" in both fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortEntry {
    /// Zone id (1..=MAX_ZONES) claiming the port.
    pub zone: u16,
    /// Failsafe group (1..=MAX_FAILSAFE_GROUPS): the set of failsafe rules covering
    /// this port; its sources are allow set `FAILSAFE_SET_BASE + group`.
    pub failsafe: u16,
}

pub const MAX_FAILSAFE_GROUPS: u32 = 1024;

// ---------------------------------------------------------------------------
// Zones: `ZONES[slot * ZONE_SLOTS + zone_id]`.
// ---------------------------------------------------------------------------

pub const ZONE_SLOTS: u32 = MAX_ZONES + 1;

#[inline(always)]
pub const fn zone_index(slot: u32, zone: u32) -> u32 {
    slot * ZONE_SLOTS + zone
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneInfo {
    pub flags: u32,
}

impl ZoneInfo {
    /// The zone exists in this slot.
    pub const PRESENT: u32 = 1 << 0;
    /// Sources outside `allow` are counted as `audit` and passed.
    pub const AUDIT: u32 = 1 << 1;
}

// ---------------------------------------------------------------------------
// Allow sets (zones and failsafe groups): LPM tries `ALLOW4`, `ALLOW6`.
// Key data = set tag (4 bytes, big endian: slot << 16 | set id) ++ address;
// prefix length = 32 + address prefix length. The value is unused (one byte).
// ---------------------------------------------------------------------------

/// Allow set id of failsafe group `g` (zones use their zone id).
pub const FAILSAFE_SET_BASE: u32 = 0x8000;

#[inline(always)]
pub const fn set_tag(slot: u32, set_id: u32) -> [u8; 4] {
    ((slot << 16) | set_id).to_be_bytes()
}

/// Bits of the set tag in an LPM key's prefix length.
pub const SET_TAG_BITS: u32 = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tagged4 {
    pub tag: [u8; 4],
    pub addr: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tagged6 {
    pub tag: [u8; 4],
    pub addr: [u8; 16],
}

// ---------------------------------------------------------------------------
// IPv4 blocklist: a /24 bitmap plus per-/24 host bitmaps.
// `BL4_WORDS[slot * BL4_WORDS_PER_SLOT + (net24 >> 6)]`: bit (net24 & 63) of
// `full` = the whole /24 is blocked; of `part` = look up `BL4_HOSTS`.
// `BL4_HOSTS[{slot, net24}]` = 256-bit bitmap of blocked hosts in that /24.
// Every IPv4 lookup is one array read, plus one hash read for partial /24s.
// ---------------------------------------------------------------------------

pub const BL4_WORDS_PER_SLOT: u32 = 1 << 18;

#[inline(always)]
pub const fn bl4_word_index(slot: u32, net24: u32) -> u32 {
    slot * BL4_WORDS_PER_SLOT + (net24 >> 6)
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bl4Word {
    pub full: u64,
    pub part: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bl4HostKey {
    pub slot: u32,
    pub net24: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bl4Hosts {
    pub bits: [u64; 4],
}

// IPv6 blocklist: LPM trie `BL6` keyed by `Tagged6` with set id 0.

// ---------------------------------------------------------------------------
// `META[0]`: the daemon's record of what it loaded (policy hash, zone names,
// interfaces), kept in a pinned map so `status` works from the pins alone. The
// datapath never reads it. `len` bytes of `data` hold JSON.
// ---------------------------------------------------------------------------

pub const META_CAPACITY: usize = 65528;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct MetaBlob {
    pub len: u32,
    pub _pad: u32,
    pub data: [u8; META_CAPACITY],
}

/// Default capacities (the loader may raise them with `set_max_entries`).
pub const DEFAULT_BL4_HOSTS_MAX: u32 = 1 << 21;
pub const DEFAULT_BL6_MAX: u32 = 1 << 19;
pub const DEFAULT_ALLOW_MAX: u32 = 1 << 18;

// ---------------------------------------------------------------------------
// Sampled decisions: `EVENTS` (ring buffer), `EVENTS_CFG[0]`, `EVENTS_STATE[0]`.
// A decision whose class (drop, audit pass, other pass) is selected in
// `EVENTS_CFG.flags` is handed (`EVENTS_PENDING`) to the events program by a
// tail call (`EVENTS_PROG`), which asks this CPU's token bucket for a token;
// with one, an `Event` goes into the ring (or, if it is full, counts as
// lost); without, it counts as suppressed; it returns the decision's action.
// Nothing is selected: one array read and a branch.
// ---------------------------------------------------------------------------

/// Bytes of the `EVENTS` ring buffer (a power of two, a multiple of the page
/// size): about 3,600 records of 64 bytes plus the kernel's 8-byte headers.
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;

/// `EVENTS_CFG[0]`. All zero = off (a fresh map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventsConfig {
    pub flags: u32,
    /// Tokens per second per CPU, as set (for display; the datapath reads
    /// `cost_ns`).
    pub rate: u32,
    /// Nanoseconds of credit one event costs: 1e9 / rate.
    pub cost_ns: u64,
    /// Most credit a CPU can save up: burst × cost_ns.
    pub cap_ns: u64,
    /// Bucket size in tokens, as set (for display).
    pub burst: u32,
    pub _pad: u32,
}

impl EventsConfig {
    /// Sample dropped packets.
    pub const DROPS: u32 = 1 << 0;
    /// Sample passes of auditing zones (`audit`).
    pub const AUDIT: u32 = 1 << 1;
    /// Sample every other pass (with DROPS and AUDIT: every decision).
    pub const PASSES: u32 = 1 << 2;
    /// The classes the datapath looks at.
    pub const CLASSES: u32 = Self::DROPS | Self::AUDIT | Self::PASSES;
    /// The daemon writes each event it reads to its log (user space only).
    pub const LOG: u32 = 1 << 8;
    /// Set at run time (`portcullis sampling`, `log-packets`): the daemon
    /// keeps it over the policy's `[events]` at start and reload (user space only).
    pub const OVERRIDE: u32 = 1 << 9;

    /// The class bit of a decision: drops, audit passes, other passes.
    #[inline(always)]
    pub const fn class(verdict: Verdict, reason: Reason) -> u32 {
        match (verdict, reason) {
            (Verdict::Drop, _) => Self::DROPS,
            (Verdict::Pass, Reason::Audit) => Self::AUDIT,
            (Verdict::Pass, _) => Self::PASSES,
        }
    }
}

/// `EVENTS_PENDING[0]`, per CPU: the decision the main program hands to the
/// events program before the tail call (which returns its verdict).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventsPending {
    pub rule: u32,
    /// `Reason as u8`.
    pub reason: u8,
    /// `Verdict as u8`.
    pub verdict: u8,
    pub _pad: [u8; 2],
}

/// `EVENTS_STATE[0]`, one per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventsState {
    /// Saved credit in nanoseconds (at most `cap_ns`).
    pub credit_ns: u64,
    /// `bpf_ktime_get_ns` of the last refill.
    pub last_ns: u64,
    /// Events written into the ring.
    pub emitted: u64,
    /// Selected decisions refused by the bucket.
    pub suppressed: u64,
    /// Events the bucket allowed but the full ring did not take.
    pub lost: u64,
}

/// One token-bucket step at time `now_ns`: refills the credit by the time
/// since `last_ns` (capped at `cap_ns`) and takes `cost_ns` of it if there
/// is that much. Returns (new credit, taken). No division: the daemon
/// turns rate and burst into `cost_ns` and `cap_ns`. A clock that went back
/// (`now < last`) refills nothing.
#[inline(always)]
pub const fn bucket_take(
    credit_ns: u64,
    last_ns: u64,
    now_ns: u64,
    cost_ns: u64,
    cap_ns: u64,
) -> (u64, bool) {
    let elapsed = now_ns.saturating_sub(last_ns);
    let mut credit = credit_ns.saturating_add(elapsed);
    if credit > cap_ns {
        credit = cap_ns;
    }
    if credit >= cost_ns {
        (credit - cost_ns, true)
    } else {
        (credit, false)
    }
}

/// `Event.family`.
pub const EVENT_NO_IP: u8 = 0;
pub const EVENT_IPV4: u8 = 4;
pub const EVENT_IPV6: u8 = 6;

/// One sampled decision, as the datapath writes it into `EVENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the packet was judged.
    pub ts_ns: u64,
    pub ifindex: u32,
    /// Counter rule: a zone id, `RULE_GLOBAL` or `RULE_FAILSAFE`.
    pub rule: u32,
    /// Frame length in bytes.
    pub len: u32,
    /// `Reason as u8`.
    pub reason: u8,
    /// `Verdict as u8`.
    pub verdict: u8,
    /// `EVENT_IPV4`, `EVENT_IPV6` (of the IP header) or `EVENT_NO_IP`
    /// (non-IP and malformed frames: no addresses).
    pub family: u8,
    /// IP protocol number (the last next header for IPv6); 0 if unknown.
    pub proto: u8,
    /// Ports of TCP, UDP and SCTP (first fragments and whole packets); else 0.
    pub sport: u16,
    pub dport: u16,
    /// IPv4 addresses in the first 4 bytes; network byte order.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub _pad: [u8; 4],
}

/// Size of an `Event` in the ring.
pub const EVENT_SIZE: usize = core::mem::size_of::<Event>();

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are repr(C) plain integers without padding.
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for PortEntry {}
    unsafe impl aya::Pod for ZoneInfo {}
    unsafe impl aya::Pod for Tagged4 {}
    unsafe impl aya::Pod for Tagged6 {}
    unsafe impl aya::Pod for Bl4Word {}
    unsafe impl aya::Pod for Bl4HostKey {}
    unsafe impl aya::Pod for Bl4Hosts {}
    unsafe impl aya::Pod for MetaBlob {}
    unsafe impl aya::Pod for EventsConfig {}
    unsafe impl aya::Pod for EventsState {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_indices_are_dense_and_unique() {
        let last = counter_index(NUM_RULES - 1, Reason::NoPolicy, Verdict::Drop);
        assert_eq!(last, NUM_COUNTERS - 1);
        assert_eq!(counter_index(0, Reason::NonIp, Verdict::Pass), 0);
        assert_eq!(counter_index(0, Reason::NonIp, Verdict::Drop), 1);
        assert_eq!(
            counter_index(1, Reason::NonIp, Verdict::Pass),
            2 * NUM_REASONS
        );
    }

    #[test]
    fn decode_inverts_counter_index() {
        for rule in [0, 1, 17, RULE_FAILSAFE] {
            for reason in Reason::ALL {
                for verdict in [Verdict::Pass, Verdict::Drop] {
                    let index = counter_index(rule, reason, verdict);
                    assert_eq!(decode_counter_index(index), (rule, reason, verdict));
                }
            }
        }
    }

    #[test]
    fn interface_blocks_do_not_overlap() {
        let last = counter_index(NUM_RULES - 1, Reason::NoPolicy, Verdict::Drop);
        assert_eq!(iface_counter_index(1, 0), last + 1);
        assert_eq!(
            iface_counter_index(MAX_IFACE_SLOTS - 1, last),
            COUNTERS_LEN - 1
        );
    }

    #[test]
    fn set_tag_is_big_endian_slot_then_id() {
        assert_eq!(set_tag(1, FAILSAFE_SET_BASE + 3), [0, 1, 0x80, 3]);
        assert_eq!(set_tag(0, 7), [0, 0, 0, 7]);
    }

    #[test]
    fn event_record_is_64_bytes_without_implicit_padding() {
        assert_eq!(EVENT_SIZE, 64);
        assert_eq!(core::mem::size_of::<EventsConfig>(), 32);
        assert_eq!(core::mem::size_of::<EventsState>(), 40);
    }

    #[test]
    fn a_full_bucket_gives_burst_tokens_at_once_then_none() {
        // 10/s, burst 3: cost 100 ms, cap 300 ms; the first use starts full
        // (last_ns = 0, a long time ago).
        let (cost, cap) = (100_000_000, 300_000_000);
        let now = 5_000_000_000;
        let (mut credit, mut last, mut taken) = (0, 0, 0);
        for _ in 0..10 {
            let (c, t) = bucket_take(credit, last, now, cost, cap);
            credit = c;
            last = now;
            taken += t as u32;
        }
        assert_eq!(taken, 3);
        assert_eq!(credit, 0);
    }

    #[test]
    fn the_bucket_refills_at_the_rate_and_never_beyond_the_cap() {
        let (cost, cap) = (100_000_000, 300_000_000);
        // Empty at t = 1 s; 250 ms later there are 2 tokens, not 3.
        let (c, t) = bucket_take(0, 1_000_000_000, 1_250_000_000, cost, cap);
        assert!(t);
        assert_eq!(c, 150_000_000);
        let (c, t) = bucket_take(c, 1_250_000_000, 1_250_000_000, cost, cap);
        assert!(t);
        assert_eq!(c, 50_000_000);
        let (_, t) = bucket_take(c, 1_250_000_000, 1_250_000_000, cost, cap);
        assert!(!t);
        // An hour idle: still only `cap` of credit.
        let (c, _) = bucket_take(0, 0, 3_600_000_000_000, cost, cap);
        assert_eq!(c, cap - cost);
        // Over a long flood the tokens are rate × time + burst.
        let (mut credit, mut last, mut taken) = (0u64, 0u64, 0u64);
        let start = 10_000_000_000u64;
        for i in 0..100_000u64 {
            // One packet every 100 µs for 10 s.
            let now = start + i * 100_000;
            let (c, t) = bucket_take(credit, last, now, cost, cap);
            credit = c;
            last = now;
            taken += t as u64;
        }
        assert_eq!(taken, 3 + 100 - 1);
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let (c, t) = bucket_take(0, 2_000, 1_000, 10, 100);
        assert_eq!((c, t), (0, false));
    }

    #[test]
    fn decisions_fall_in_one_class_each() {
        assert_eq!(
            EventsConfig::class(Verdict::Drop, Reason::Blocklist),
            EventsConfig::DROPS
        );
        assert_eq!(
            EventsConfig::class(Verdict::Pass, Reason::Audit),
            EventsConfig::AUDIT
        );
        assert_eq!(
            EventsConfig::class(Verdict::Pass, Reason::Allowed),
            EventsConfig::PASSES
        );
        assert_eq!(EventsConfig::CLASSES & EventsConfig::LOG, 0);
        assert_eq!(EventsConfig::CLASSES & EventsConfig::OVERRIDE, 0);
    }

    #[test]
    fn bl4_index_splits_slots() {
        assert_eq!(bl4_word_index(1, 0xff_ffff), 2 * BL4_WORDS_PER_SLOT - 1);
    }
}
