//! The kernel↔user contract of portcullis: map names, keys, values, reasons,
//! verdicts and the counter layout. This crate is the only place it is written;
//! the XDP program and the daemon both import it.
//!
//! Generations: every policy-bearing map is split into two *slots*. `ACTIVE[0]`
//! holds a monotonically increasing generation number; a packet reads it once and
//! then looks only at slot `generation & 1`. The loader fills the inactive slot and
//! flips `ACTIVE` with one 4-byte write, so no packet ever sees half of two policies.
#![no_std]

mod quota;
mod rate;
pub use quota::*;
pub use rate::*;

/// Version of the map layout this build pins: bumped by every change to a
/// pinned map's name, key, value or size. A build that finds an older layout
/// pinned migrates it (new maps beside the old, state carried over, one
/// `bpf_link_update`); layout 1 is v0.1.0's and has no `LAYOUT` map.
pub const LAYOUT_VERSION: u32 = 8;

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
pub const MAP_BL4_BASE: &str = "BL4_BASE";
pub const MAP_BL4_BITS: &str = "BL4_BITS";
/// The allowlist lanes: the IPv4 blocklist's layout, per (slot, lane), for
/// the largest zone allow sets ("Allowlist lanes" below).
pub const MAP_LANE4_WORDS: &str = "LANE4_WORDS";
pub const MAP_LANE4_BASE: &str = "LANE4_BASE";
pub const MAP_LANE4_BITS: &str = "LANE4_BITS";
pub const MAP_BL6_WORDS: &str = "BL6_WORDS";
pub const MAP_BL6_INFO: &str = "BL6_INFO";
pub const MAP_BL6_TABLE: &str = "BL6_TABLE";
/// The IPv6 allowlist lanes: the IPv6 blocklist's layout, per (slot, lane),
/// for the largest zone IPv6 allow sets ("IPv6 allowlist lanes" below).
pub const MAP_LANE6_WORDS: &str = "LANE6_WORDS";
pub const MAP_LANE6_INFO: &str = "LANE6_INFO";
pub const MAP_LANE6_TABLE: &str = "LANE6_TABLE";
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
/// `SCHED[zone_index(slot, zone)]`: when a scheduled zone opens and closes
/// ([`Sched`]); per slot, rebuilt from the policy (and the clock) by every apply.
pub const MAP_SCHED: &str = "SCHED";
/// Program array (one entry: the reply program), pinned so that rejecting
/// zones keep answering while no daemon runs; each load puts its own reply
/// program in.
pub const MAP_REPLY_PROG: &str = "REPLY_PROG";
/// `REPLY_STATE[0]`, per CPU: the reply budget's token bucket ([`ReplyState`]),
/// global (not per policy slot), so a reload does not refill it.
pub const MAP_REPLY_STATE: &str = "REPLY_STATE";
/// `REPLY_PENDING[0]`, per CPU: what the main program found out about a
/// refusal it hands to the reply program ([`ReplyPending`]). Scratch, but
/// pinned like `REPLY_PROG`: a program of one build may tail-call the reply
/// program of the next (same layout) while a daemon takes over.
pub const MAP_REPLY_PENDING: &str = "REPLY_PENDING";
/// Bans (see "Bans" below): outside the policy slots, written by the daemon's
/// ban store only; a policy reload never touches them.
pub const MAP_BAN_BITS: &str = "BAN_BITS";
pub const MAP_BAN4: &str = "BAN4";
pub const MAP_BAN6: &str = "BAN6";
pub const MAP_BAN4_NETS: &str = "BAN4_NETS";
pub const MAP_BAN6_NETS: &str = "BAN6_NETS";
pub const MAP_BAN_COUNTERS: &str = "BAN_COUNTERS";
/// `CLOCK[0]`, per CPU: the datapath's clock cache ([`ClockCache`]).
/// Scratch of one load: never pinned, nothing to carry.
pub const MAP_CLOCK: &str = "CLOCK";
/// Maps of the object that belong to one load (created fresh, never pinned).
pub const PER_LOAD_MAPS: [&str; 3] = [MAP_EVENTS_PROG, MAP_EVENTS_PENDING, MAP_CLOCK];
/// All policy and state maps, for loaders and tests that check the object.
pub const ALL_MAPS: [&str; 41] = [
    MAP_ACTIVE,
    MAP_CONFIG,
    MAP_COUNTERS,
    MAP_PORTS,
    MAP_ZONES,
    MAP_ALLOW4,
    MAP_ALLOW6,
    MAP_BL4_WORDS,
    MAP_IFACES,
    MAP_META,
    MAP_LAYOUT,
    MAP_BL4_BASE,
    MAP_BL4_BITS,
    MAP_BL6_WORDS,
    MAP_BL6_INFO,
    MAP_BL6_TABLE,
    MAP_EVENTS,
    MAP_EVENTS_CFG,
    MAP_EVENTS_STATE,
    MAP_SCHED,
    MAP_REPLY_PROG,
    MAP_REPLY_STATE,
    MAP_REPLY_PENDING,
    MAP_LANE4_WORDS,
    MAP_LANE4_BASE,
    MAP_LANE4_BITS,
    MAP_RATES,
    MAP_RATE_SLOTS,
    MAP_RATE_ZONE,
    MAP_RATE_REAPED,
    MAP_BAN_BITS,
    MAP_BAN4,
    MAP_BAN6,
    MAP_BAN4_NETS,
    MAP_BAN6_NETS,
    MAP_BAN_COUNTERS,
    MAP_LANE6_WORDS,
    MAP_LANE6_INFO,
    MAP_LANE6_TABLE,
    MAP_QUOTAS,
    MAP_QUOTA_USAGE,
];
/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "portcullis";
/// The XDP program a sampled decision tail-calls (`EVENTS_PROG[0]`).
pub const EVENTS_PROGRAM_NAME: &str = "portcullis_events";
/// The XDP program a rejecting zone tail-calls (`REPLY_PROG[0]`): it rewrites
/// the frame into the reply and returns `XDP_TX`.
pub const REPLY_PROGRAM_NAME: &str = "portcullis_reply";

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
    /// As `NotAllowed` in a rejecting zone: the frame was turned into a TCP
    /// reset or an ICMP unreachable and sent back (`XDP_TX`). Counted as a drop.
    Rejected = 11,
    /// A reply was due but this CPU's reply budget was spent: dropped.
    RejectSuppressed = 12,
    /// Zone port of a scheduled zone outside its hours: the zone's action,
    /// whatever the source (an auditing zone counts `Audit` and passes).
    Closed = 13,
    /// Zone port, source allowed, but over the zone's `rate` limit: the
    /// zone's action (an auditing zone counts `Audit` and passes).
    RateLimited = 14,
    /// Zone port, source allowed, but over its transfer `quota`.
    QuotaExceeded = 15,
    /// Source covered by an unexpired ban (`portcullis ban`): dropped on every
    /// port but failsafe ones.
    Banned = 16,
}

pub const NUM_REASONS: u32 = 17;

impl Reason {
    /// Every reason, in number order.
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
        Reason::Rejected,
        Reason::RejectSuppressed,
        Reason::Closed,
        Reason::RateLimited,
        Reason::QuotaExceeded,
        Reason::Banned,
    ];

    /// The reason numbered `n`, if any.
    pub const fn from_u32(n: u32) -> Option<Reason> {
        let mut i = 0;
        while i < Reason::ALL.len() {
            if Reason::ALL[i] as u32 == n {
                return Some(Reason::ALL[i]);
            }
            i += 1;
        }
        None
    }

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
            Reason::Rejected => "rejected",
            Reason::RejectSuppressed => "reject_suppressed",
            Reason::Closed => "closed",
            Reason::RateLimited => "rate_limited",
            Reason::QuotaExceeded => "quota_exceeded",
            Reason::Banned => "banned",
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
/// `counter_index`. `None` for the cells of unassigned reason numbers.
pub const fn decode_counter_index(index: u32) -> Option<(u32, Reason, Verdict)> {
    let verdict = if index % 2 == 1 {
        Verdict::Drop
    } else {
        Verdict::Pass
    };
    let rest = index / 2;
    match Reason::from_u32(rest % NUM_REASONS) {
        Some(reason) => Some((rest / NUM_REASONS, reason, verdict)),
        None => None,
    }
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
    pub _pad: u32,
    /// The reply budget of rejecting zones, per CPU: nanoseconds of credit
    /// one reply costs (1e9 / `reject_rate`) …
    pub reject_cost_ns: u64,
    /// … and the most credit a CPU saves up (`reject_burst` × cost). The
    /// bucket itself lives in `REPLY_STATE`, outside the slots.
    pub reject_cap_ns: u64,
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
    /// The zone keeps hours: `SCHED` says when it is open.
    pub const SCHEDULED: u32 = 1 << 3;
    /// The zone has a `rate` limit: `RATES` holds it.
    pub const LIMITED: u32 = 1 << 4;
    /// The zone has a transfer `quota`: `QUOTAS` holds it.
    pub const QUOTA: u32 = 1 << 5;
    /// Sources outside `allow` get a reply (`action = "reject"`); which one is
    /// the [`Reply`] in bits `REPLY_SHIFT..`. `AUDIT` wins over it.
    pub const REJECT: u32 = 1 << 2;
    pub const REPLY_SHIFT: u32 = 8;
    pub const REPLY_MASK: u32 = 0xf << Self::REPLY_SHIFT;
    /// The allowlist lane (1..=`ALLOW4_LANES`) holding the zone's IPv4
    /// allow set instead of `ALLOW4`; 0 = the trie.
    pub const LANE_SHIFT: u32 = 12;
    pub const LANE_MASK: u32 = 0x7 << Self::LANE_SHIFT;
    /// The IPv6 allowlist lane (1..=`ALLOW6_LANES`) holding the zone's IPv6
    /// allow set instead of `ALLOW6`; 0 = the trie.
    pub const LANE6_SHIFT: u32 = 15;
    pub const LANE6_MASK: u32 = 0x7 << Self::LANE6_SHIFT;

    /// The zone's IPv4 allowlist lane, 0 = none (the trie).
    #[inline(always)]
    pub const fn lane(&self) -> u32 {
        (self.flags & Self::LANE_MASK) >> Self::LANE_SHIFT
    }

    /// The zone's IPv6 allowlist lane, 0 = none (the trie).
    #[inline(always)]
    pub const fn lane6(&self) -> u32 {
        (self.flags & Self::LANE6_MASK) >> Self::LANE6_SHIFT
    }

    /// Flags of a rejecting zone answering with `reply`.
    #[inline(always)]
    pub const fn reject_flags(reply: Reply) -> u32 {
        Self::REJECT | (reply as u32) << Self::REPLY_SHIFT
    }

    /// The reply this zone's flags ask for (`ByProtocol` if none is set).
    #[inline(always)]
    pub const fn reply(&self) -> Reply {
        Reply::from_bits((self.flags & Self::REPLY_MASK) >> Self::REPLY_SHIFT)
    }
}

/// What a rejecting zone sends back (`reject_with`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Reply {
    #[default]
    /// No `reject_with`: TCP gets a reset, UDP and SCTP a port unreachable.
    ByProtocol = 0,
    /// A TCP RST as RFC 9293 §3.10.7.1 answers a segment in state CLOSED.
    TcpReset = 1,
    /// ICMP type 3 code 3 / ICMPv6 type 1 code 4.
    PortUnreachable = 2,
    /// ICMP type 3 code 13 / ICMPv6 type 1 code 1.
    AdminProhibited = 3,
    /// ICMP type 3 code 1 / ICMPv6 type 1 code 3 (address unreachable).
    HostUnreachable = 4,
}

impl Reply {
    #[inline(always)]
    pub const fn from_bits(bits: u32) -> Reply {
        match bits {
            1 => Reply::TcpReset,
            2 => Reply::PortUnreachable,
            3 => Reply::AdminProhibited,
            4 => Reply::HostUnreachable,
            _ => Reply::ByProtocol,
        }
    }

    /// The reply sent to a packet of IP protocol `proto` (TCP, UDP or SCTP).
    /// `TcpReset` cannot answer UDP or SCTP (the compiler refuses it there);
    /// it stays `TcpReset` and the datapath does not answer.
    #[inline(always)]
    pub const fn for_proto(self, proto: u8) -> Reply {
        match self {
            Reply::ByProtocol if proto == IPPROTO_TCP => Reply::TcpReset,
            Reply::ByProtocol => Reply::PortUnreachable,
            other => other,
        }
    }

    /// (ICMP type, code) for IPv4 and IPv6 of an ICMP reply; `None` for a reset.
    #[inline(always)]
    pub const fn icmp(self, v6: bool) -> Option<(u8, u8)> {
        match (self, v6) {
            (Reply::PortUnreachable, false) => Some((3, 3)),
            (Reply::AdminProhibited, false) => Some((3, 13)),
            (Reply::HostUnreachable, false) => Some((3, 1)),
            (Reply::PortUnreachable, true) => Some((1, 4)),
            (Reply::AdminProhibited, true) => Some((1, 1)),
            (Reply::HostUnreachable, true) => Some((1, 3)),
            _ => None,
        }
    }
}

/// Largest ICMP error over IPv4 (RFC 1812 §4.3.2.3: "SHOULD NOT exceed 576
/// bytes"), counted from the IP header: the quote is the offending datagram
/// (header, options and data) cut to what fits.
pub const REPLY_ICMP4_MAX: usize = 576;
/// Largest ICMPv6 error (RFC 4443 §2.4 (c): the minimum IPv6 MTU, 1280).
pub const REPLY_ICMP6_MAX: usize = 1280;
/// TTL / hop limit of every reply.
pub const REPLY_TTL: u8 = 64;
/// The IPv4 TOS of ICMP errors (precedence "internetwork control", as Linux).
pub const REPLY_ICMP4_TOS: u8 = 0xc0;

/// `REPLY_PENDING[0]`, per CPU: a rejecting zone's refusal as the main
/// program decided it, for the reply program it tail-calls next (so that
/// one looks nothing up again). The main program hands over only values it
/// holds anyway (handing over the parser's header offsets too made it keep
/// them on every parser path, and the 6.1 verifier gave up at 1M
/// instructions); the reply program parses the frame again (a few
/// nanoseconds) and keeps the headers here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyPending {
    /// The zone id (the counter rule).
    pub zone: u32,
    /// The zone's `ZoneInfo::flags` (its `Reply`).
    pub zone_flags: u32,
    /// The policy slot the decision read (its `Config` holds the budget).
    pub slot: u32,
    /// Written and read back by the reply program: its parse of the frame
    /// (offsets of the IP and layer-4 headers, protocol, IPv6, first
    /// fragment, 1 if the frame has ports). Read back from a map, they are
    /// values the verifier does not track, so it walks the reply once, not
    /// once per parser outcome.
    pub l3: u16,
    pub l4: u16,
    pub proto: u8,
    pub v6: u8,
    pub first_fragment: u8,
    pub ports: u8,
}

/// `REPLY_STATE[0]`, one per CPU: the reply budget's bucket
/// ([`lazy_bucket_take`], with `Config::reject_cost_ns`/`cap_ns`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyState {
    pub credit_ns: u64,
    /// `bpf_ktime_get_ns` of the last refill.
    pub last_ns: u64,
}

/// `CLOCK[0]`, one per CPU: the clocks as last read, and the jiffy they were
/// read in. The datapath reads `jiffies` (a load: the verifier inlines
/// `bpf_jiffies64`) and calls a clock helper only when the jiffy has moved,
/// so the time a limited, scheduled or quota zone packet sees is at most a
/// tick (≤ 10 ms, [`RATE_CLOCK_STEP_NS`]) behind the clock, at the price of
/// a per-CPU array read instead of a helper call per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockCache {
    pub mono_jiffies: u64,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) read in `mono_jiffies`.
    pub mono_ns: u64,
    pub tai_jiffies: u64,
    /// `bpf_ktime_get_tai_ns` (CLOCK_TAI) read in `tai_jiffies`.
    pub tai_ns: u64,
}

// ---------------------------------------------------------------------------
// Schedules: `SCHED[zone_index(slot, zone)]`, for zones with
// `ZoneInfo::SCHEDULED`. The daemon turns a zone's weekly windows into the
// instants at which it opens and closes, from "now" forward, in the kernel's
// CLOCK_TAI (`bpf_ktime_get_tai_ns`: UTC instant + the TAI offset the daemon
// read), ascending. The datapath reads the clock and counts the transitions
// that have passed (early exit on the first one ahead): the zone's state
// toggles at each. Past the last stored transition the zone is closed (fails
// closed); the daemon keeps the list topped up far ahead by re-applying the
// policy through the normal slot swap (never in place: a torn read of a
// multi-word value could reorder transitions).
// ---------------------------------------------------------------------------

/// Transitions one zone's entry holds: 31 windows (over a week for up to four
/// windows a day).
pub const SCHED_MAX_TRANSITIONS: usize = 62;

/// The daemon's lists always end with a close (it drops a trailing open), so
/// counting the transitions passed gives "closed" past the last one.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sched {
    /// 1: the zone is open before `t[0]`.
    pub open_first: u32,
    /// Transitions stored in `t` (at most `SCHED_MAX_TRANSITIONS`); for
    /// user space: the datapath stops at the first instant ahead.
    pub count: u32,
    /// CLOCK_TAI nanoseconds, strictly ascending; `t[count..]` are
    /// `u64::MAX` (never reached), so the scan needs no bound but the array.
    pub t: [u64; SCHED_MAX_TRANSITIONS],
}

impl Default for Sched {
    fn default() -> Self {
        Sched {
            open_first: 0,
            count: 0,
            t: [0; SCHED_MAX_TRANSITIONS],
        }
    }
}

/// Is a zone with schedule entry `s` open at kernel TAI time `now`? Every
/// transition at or before `now` toggles the state; the list ends with a
/// close, so past it the zone is closed, and past a full array it is closed
/// too. One compare per transition passed, one exit: the verifier walks the
/// loop once per state reaching it. Shared by the datapath and user space.
#[inline(always)]
pub fn sched_is_open(s: &Sched, now: u64) -> bool {
    let mut open = s.open_first != 0;
    let mut i = 0;
    while i < SCHED_MAX_TRANSITIONS {
        if s.t[i] > now {
            break;
        }
        open = !open;
        i += 1;
    }
    open && i < SCHED_MAX_TRANSITIONS
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
// IPv4 blocklist: a /24 bitmap, and the host bitmaps of partly listed /24s in
// one array, without a hash on the packet path.
//
// `BL4_WORDS[w]`, w = `bl4_word_index(slot, net24)`: the word of the 64 /24s
// of *group* `net24 >> 6`. Bit `net24 & 63` of `full`: the whole /24 is
// blocked; of `part`: some of its hosts are.
// `BL4_BASE[w]` (same index): where the group's *block* starts in `BL4_BITS`,
// an absolute index. Meaningful only while `part != 0` (stale otherwise).
// `BL4_BITS[base + rank]`: the 256-bit host bitmap of the group's partly
// listed /24 of rank `rank = popcount(part & (bit - 1))`: a block holds
// `popcount(part)` bitmaps, contiguous, in /24 order (`bl4_bits_index`).
// `BL4_BITS` is shared by both slots: slot `s` owns the region
// `[s * R, (s + 1) * R)`, R = `bl4_bits_region(max_entries)`; every block of a
// slot lies in its region. The loader places blocks (free lists per block
// size, so changing one group rewrites one block, not the array).
//
// A lookup: one `BL4_WORDS` read; for a partly listed /24 one `BL4_BASE` read
// (2 MiB per slot) and one `BL4_BITS` read. Sizes per slot: 4 MiB words,
// 2 MiB bases (BPF stores a u32 in 8 bytes), 32 B per partly listed /24
// (32 MiB for the default R = 2^20).
// ---------------------------------------------------------------------------

pub const BL4_WORDS_PER_SLOT: u32 = 1 << 18;

/// Index into `BL4_WORDS` and `BL4_BASE` of the group holding `net24`.
#[inline(always)]
pub const fn bl4_word_index(slot: u32, net24: u32) -> u32 {
    slot * BL4_WORDS_PER_SLOT + (net24 >> 6)
}

/// Index into `BL4_BITS` of `net24`'s host bitmap, given its group's word
/// (`part` must have the /24's bit set) and `BL4_BASE` entry.
#[inline(always)]
pub const fn bl4_bits_index(base: u32, part: u64, net24: u32) -> u32 {
    let bit = 1u64 << (net24 & 63);
    base + (part & (bit - 1)).count_ones()
}

/// Entries of `BL4_BITS` each slot owns: half of the map.
#[inline(always)]
pub const fn bl4_bits_region(max_entries: u32) -> u32 {
    max_entries / NUM_SLOTS
}

// ---------------------------------------------------------------------------
// Allowlist lanes: the IPv4 allow sets of the (up to `ALLOW4_LANES`) largest
// zones of a slot, in the blocklist's layout instead of the `ALLOW4` trie, so
// a flood from beside a country-sized list costs one bitmap read (two more
// for a partly covered /24), not a trie walk. The blocklist is lane 0 (the
// `BL4_*` maps); lanes 1..=`ALLOW4_LANES` live in `LANE4_WORDS`,
// `LANE4_BASE` and `LANE4_BITS`, which are `BL4_WORDS`, `BL4_BASE` and
// `BL4_BITS` with one *space* per (slot, lane): `lane4_space`. Space `p`
// owns words `[p * BL4_WORDS_PER_SLOT, (p + 1) * BL4_WORDS_PER_SLOT)` and
// host bitmaps `[p * LANE4_REGION, (p + 1) * LANE4_REGION)`; bases are
// absolute indices into `LANE4_BITS`, as in the blocklist.
//
// A zone uses a lane when bit field `ZoneInfo::LANE_MASK` of its flags says
// so; then its IPv4 prefixes are not in `ALLOW4` (its IPv6 ones stay in
// `ALLOW6`). Only zone sets of at least `LANE_MIN_PREFIXES` prefixes get one
// (and only if their partly covered /24s fit `LANE4_REGION`); failsafe
// groups never do. The loader keeps a zone in its lane across reloads while
// it stays eligible, so a one-line change is a diff of that lane.
// Memory: 6 MiB of words and bases per (slot, lane) plus 32 B per host
// bitmap: 3 lanes × 2 slots = 36 MiB + 6 MiB of host bitmaps.
// ---------------------------------------------------------------------------

/// Allowlist lanes per slot.
pub const ALLOW4_LANES: u32 = 3;
/// Smallest zone IPv4 allow set (prefixes, after merging) that gets a lane:
/// below it the trie is as fast (bench: `ratio_vs_floor_allow_1k_miss`).
pub const LANE_MIN_PREFIXES: usize = 1024;
/// Host bitmaps (partly covered /24s) per (slot, lane).
pub const LANE4_REGION: u32 = 1 << 15;
/// Spaces: one per (slot, lane).
pub const LANE4_SPACES: u32 = NUM_SLOTS * ALLOW4_LANES;
pub const LANE4_BITS_MAX: u32 = LANE4_SPACES * LANE4_REGION;

/// The space of `slot`'s lane `lane` (1..=`ALLOW4_LANES`).
#[inline(always)]
pub const fn lane4_space(slot: u32, lane: u32) -> u32 {
    slot * ALLOW4_LANES + lane - 1
}

/// Index into `LANE4_WORDS` and `LANE4_BASE` of the group holding `net24`.
#[inline(always)]
pub const fn lane4_word_index(slot: u32, lane: u32, net24: u32) -> u32 {
    lane4_space(slot, lane) * BL4_WORDS_PER_SLOT + (net24 >> 6)
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bl4Word {
    pub full: u64,
    pub part: u64,
}

/// One partly listed /24: bit `h & 63` of `bits[h >> 6]` = host `h` is blocked.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bl4Hosts {
    pub bits: [u64; 4],
}

// ---------------------------------------------------------------------------
// IPv6 blocklist (docs/architecture.md, "Blocklist layout"): a bitmap over
// the top 24 bits of the source, then an open-addressing hash table of the
// prefixes longer than /24, probed once per prefix length the slot holds.
// `BL6_WORDS[slot * BL6_WORDS_PER_SLOT + (top24 >> 6)]`: bit (top24 & 63) of
// `full` = the whole /24 is blocked; of `part` = probe `BL6_TABLE`.
// `BL6_INFO[slot]`: the hash seed and the lengths (> 24) to probe, longest
// first. `BL6_TABLE[slot * BL6_REGION + home + d]`, d in 0..=more of the home
// bucket: buckets of up to 3 (masked address, length) entries.
// ---------------------------------------------------------------------------

pub const BL6_WORDS_PER_SLOT: u32 = 1 << 18;
/// Distinct prefix lengths above /24 a slot may hold (more are expanded).
pub const BL6_MAX_LENS: usize = 8;
/// Home buckets per slot: a hash picks one of 2^BL6_BUCKET_BITS.
pub const BL6_BUCKET_BITS: u32 = 19;
pub const BL6_BUCKETS: u32 = 1 << BL6_BUCKET_BITS;
/// Entries per bucket (one 64-byte line).
pub const BL6_BUCKET_ENTRIES: usize = 3;
/// Furthest an entry may sit past its home bucket.
pub const BL6_MAX_DISP: u32 = 8;
/// Buckets per slot: the home buckets plus a tail for the last ones' spill.
pub const BL6_REGION: u32 = BL6_BUCKETS + BL6_MAX_DISP;
/// Entries (prefixes longer than /24, after expansion) the loader puts in one
/// slot's table: 70% of its room, where the longest displacement measured on
/// random sets stays well under `BL6_MAX_DISP`.
pub const BL6_TABLE_MAX: usize = 1_100_000;

#[inline(always)]
pub const fn bl6_word_index(slot: u32, top24: u32) -> u32 {
    slot * BL6_WORDS_PER_SLOT + (top24 >> 6)
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bl6Word {
    pub full: u64,
    pub part: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bl6Info {
    pub seed: u32,
    /// Entries of `lens` in use.
    pub count: u32,
    /// Prefix lengths (25..=128) present in the table, longest first.
    pub lens: [u8; BL6_MAX_LENS],
}

/// One 64-byte bucket. Entry i is (`hi[i]`, `lo[i]`, `lens[i]`): the
/// address masked to `lens[i]` bits, as two big-endian halves; `lens[i]` = 0
/// marks a free entry. `more`: how many buckets after this one hold entries
/// whose home is this bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bl6Bucket {
    pub hi: [u64; BL6_BUCKET_ENTRIES],
    pub lo: [u64; BL6_BUCKET_ENTRIES],
    pub lens: [u8; BL6_BUCKET_ENTRIES],
    pub more: u8,
    pub _pad: [u8; 12],
}

/// `n` leading one bits (n in 0..=64).
#[inline(always)]
pub const fn mask64(n: u32) -> u64 {
    if n == 0 {
        0
    } else {
        u64::MAX << (64 - n)
    }
}

#[inline(always)]
const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Home bucket (0..2^`bits`) of the masked address (`hi`, `lo`) of length
/// `len` under `seed`, in a table of 2^`bits` home buckets. The datapath and
/// the loader both call this.
#[inline(always)]
pub const fn bl6_home_in(bits: u32, seed: u32, hi: u64, lo: u64, len: u32) -> u32 {
    let a = mix64(hi ^ ((seed as u64) << 32 | len as u64));
    let b = mix64(a ^ lo);
    (b >> (64 - bits)) as u32
}

/// [`bl6_home_in`] for the blocklist's table (`BL6_BUCKET_BITS`).
#[inline(always)]
pub const fn bl6_home(seed: u32, hi: u64, lo: u64, len: u32) -> u32 {
    bl6_home_in(BL6_BUCKET_BITS, seed, hi, lo, len)
}

/// The size of one *space* in the IPv6 blocklist's layout: the blocklist
/// (a space per slot) or an IPv6 allowlist lane (a space per slot and lane).
/// Every space has `BL6_WORDS_PER_SLOT` bitmap words, one `Bl6Info` and a
/// region of `region()` buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bl6Geometry {
    /// Home buckets: 2^`bucket_bits`.
    pub bucket_bits: u32,
    /// Entries (after expansion) the loader puts in one space's table.
    pub table_max: usize,
}

impl Bl6Geometry {
    #[inline(always)]
    pub const fn buckets(&self) -> u32 {
        1 << self.bucket_bits
    }

    /// Buckets per space: the home buckets plus a tail for the last ones' spill.
    #[inline(always)]
    pub const fn region(&self) -> u32 {
        self.buckets() + BL6_MAX_DISP
    }

    #[inline(always)]
    pub const fn home(&self, seed: u32, hi: u64, lo: u64, len: u32) -> u32 {
        bl6_home_in(self.bucket_bits, seed, hi, lo, len)
    }
}

/// The blocklist's spaces (one per slot).
pub const BL6_GEOMETRY: Bl6Geometry = Bl6Geometry {
    bucket_bits: BL6_BUCKET_BITS,
    table_max: BL6_TABLE_MAX,
};

// ---------------------------------------------------------------------------
// IPv6 allowlist lanes: the IPv6 allow sets of the (up to `ALLOW6_LANES`)
// largest zones of a slot, in the IPv6 blocklist's layout instead of the
// `ALLOW6` trie (an LPM lookup costs microseconds at country size). Lane
// `l` of `slot` is space `lane6_space(slot, l)` of `LANE6_WORDS`,
// `LANE6_INFO` and `LANE6_TABLE`, which are `BL6_WORDS`, `BL6_INFO` and
// `BL6_TABLE` with `LANE6_GEOMETRY`'s smaller table. A zone uses one when
// `ZoneInfo::LANE6_MASK` of its flags says so; then its IPv6 prefixes are not
// in `ALLOW6`. Only zone sets of at least `LANE_MIN_PREFIXES` prefixes whose
// table entries (after expansion) fit `LANE6_TABLE_MAX` get one; failsafe
// groups never do. Placement is sticky, as for the IPv4 lanes.
// Memory: 4 MiB of words + 4 MiB of table per (slot, lane): 3 lanes × 2
// slots = 48 MiB.
// ---------------------------------------------------------------------------

/// IPv6 allowlist lanes per slot.
pub const ALLOW6_LANES: u32 = 3;
/// Home buckets per lane: 2^16 (4 MiB of 64-byte buckets).
pub const LANE6_BUCKET_BITS: u32 = 16;
/// Entries per lane's table: 70% of its room, as for the blocklist.
pub const LANE6_TABLE_MAX: usize = 137_000;
pub const LANE6_GEOMETRY: Bl6Geometry = Bl6Geometry {
    bucket_bits: LANE6_BUCKET_BITS,
    table_max: LANE6_TABLE_MAX,
};
pub const LANE6_REGION: u32 = LANE6_GEOMETRY.region();
/// Spaces: one per (slot, lane).
pub const LANE6_SPACES: u32 = NUM_SLOTS * ALLOW6_LANES;

/// The space of `slot`'s IPv6 lane `lane` (1..=`ALLOW6_LANES`).
#[inline(always)]
pub const fn lane6_space(slot: u32, lane: u32) -> u32 {
    slot * ALLOW6_LANES + lane - 1
}

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
/// `BL4_BITS` entries, both slots: 2^20 partly listed /24s per slot, 64 MiB.
pub const DEFAULT_BL4_BITS_MAX: u32 = 1 << 21;
pub const DEFAULT_ALLOW_MAX: u32 = 1 << 18;

// ---------------------------------------------------------------------------
// Earlier layouts: what a migration reads from them. Only state that is not
// rebuilt from the policy is carried over (generation, META, counters, from
// layout 2 on the run-time events settings, from layout 5 on the bans and
// the rate limits' buckets); the policy slots are written afresh by the new
// build.
// ---------------------------------------------------------------------------

/// An earlier layout's `COUNTERS` geometry: index = (iface slot ×
/// counters per slot) + (rule × reasons + reason) × 2 + drop. Counters are
/// carried by label, so reasons may be added, removed or reordered.
#[derive(Clone, Copy, Debug)]
pub struct CounterLayout {
    /// Reason labels in that layout's order.
    pub reasons: &'static [&'static str],
    pub num_rules: u32,
    pub max_iface_slots: u32,
}

impl CounterLayout {
    pub const fn per_iface(&self) -> u32 {
        self.num_rules * self.reasons.len() as u32 * 2
    }

    /// Entries of that layout's `COUNTERS` map.
    pub const fn len(&self) -> u32 {
        self.max_iface_slots * self.per_iface()
    }

    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (interface slot, rule, reason label, drop?) of an index.
    pub const fn decode(&self, index: u32) -> (u32, u32, &'static str, bool) {
        let per = self.per_iface();
        let iface = index / per;
        let i = index % per;
        let rest = i / 2;
        let n = self.reasons.len() as u32;
        (
            iface,
            rest / n,
            self.reasons[(rest % n) as usize],
            i % 2 == 1,
        )
    }
}

/// Layout 1: v0.1.0 (commit b7c6d5e) until wave 2. Its maps live in
/// `<root>/maps/` with no `LAYOUT` map. ACTIVE is `Array<u32>`[1], META is
/// `Array<MetaBlob>`[1] (the same 65,536-byte record as today), COUNTERS is a
/// per-CPU `Array<Counter>` laid out as below.
pub mod layout1 {
    use super::CounterLayout;

    pub const COUNTERS: CounterLayout = CounterLayout {
        reasons: &[
            "non_ip",
            "malformed",
            "failsafe",
            "blocklist",
            "fragment",
            "other_protocol",
            "allowed",
            "not_allowed",
            "audit",
            "unmatched",
            "no_policy",
        ],
        num_rules: 66,
        max_iface_slots: 16,
    };
    pub const META_VALUE_SIZE: usize = 65536;
}

/// Layout 2: wave 2's first layout (commit 2aed241; `LAYOUT[0]` = 2).
/// ACTIVE, META and COUNTERS as in layout 1; adds the run-time events
/// settings `EVENTS_CFG` (`Array<EventsConfig>`[1], 32-byte values) and
/// `EVENTS_STATE` (per-CPU `Array<EventsState>`[1], 40-byte values).
pub mod layout2 {
    use super::CounterLayout;

    pub const COUNTERS: CounterLayout = super::layout1::COUNTERS;
    pub const META_VALUE_SIZE: usize = 65536;
    pub const EVENTS_CFG_VALUE_SIZE: usize = 32;
    pub const EVENTS_STATE_VALUE_SIZE: usize = 40;
}

/// Layout 3: reject and opening hours (commit d9a4e08; `LAYOUT[0]` = 3).
/// META, EVENTS_CFG and EVENTS_STATE as in layout 2; COUNTERS gains the
/// reasons `rejected`, `reject_suppressed` and `closed`.
pub mod layout3 {
    use super::CounterLayout;

    pub const COUNTERS: CounterLayout = CounterLayout {
        reasons: &[
            "non_ip",
            "malformed",
            "failsafe",
            "blocklist",
            "fragment",
            "other_protocol",
            "allowed",
            "not_allowed",
            "audit",
            "unmatched",
            "no_policy",
            "rejected",
            "reject_suppressed",
            "closed",
        ],
        num_rules: 66,
        max_iface_slots: 16,
    };
    pub const META_VALUE_SIZE: usize = super::layout2::META_VALUE_SIZE;
    pub const EVENTS_CFG_VALUE_SIZE: usize = super::layout2::EVENTS_CFG_VALUE_SIZE;
    pub const EVENTS_STATE_VALUE_SIZE: usize = super::layout2::EVENTS_STATE_VALUE_SIZE;
}

/// Layout 4: commit 2afea62 (`LAYOUT[0]` = 4). Every map as in layout 3: the
/// number was taken for maps that landed later, as layout 5.
pub mod layout4 {
    use super::CounterLayout;

    pub const COUNTERS: CounterLayout = super::layout3::COUNTERS;
    pub const META_VALUE_SIZE: usize = super::layout3::META_VALUE_SIZE;
    pub const EVENTS_CFG_VALUE_SIZE: usize = super::layout3::EVENTS_CFG_VALUE_SIZE;
    pub const EVENTS_STATE_VALUE_SIZE: usize = super::layout3::EVENTS_STATE_VALUE_SIZE;
}

/// Layout 5: commit fa704d6 (`LAYOUT[0]` = 5): rate limits, bans, the IPv4
/// allowlist lanes. META, EVENTS_CFG and EVENTS_STATE as in layout 4;
/// COUNTERS gains the reasons `rate_limited`, `quota_exceeded` and `banned`.
/// Besides those, a migration from it carries the state no policy rebuilds:
/// the bans (`BAN_*`) and the rate limits' buckets (`RATE_KEYS`,
/// `RATE_ZONE`, `RATE_REAPED`), whose shapes are below.
pub mod layout5 {
    use super::{CounterLayout, MapShape};

    pub const COUNTERS: CounterLayout = CounterLayout {
        reasons: &[
            "non_ip",
            "malformed",
            "failsafe",
            "blocklist",
            "fragment",
            "other_protocol",
            "allowed",
            "not_allowed",
            "audit",
            "unmatched",
            "no_policy",
            "rejected",
            "reject_suppressed",
            "closed",
            "rate_limited",
            "quota_exceeded",
            "banned",
        ],
        num_rules: 66,
        max_iface_slots: 16,
    };
    pub const META_VALUE_SIZE: usize = super::layout4::META_VALUE_SIZE;
    pub const EVENTS_CFG_VALUE_SIZE: usize = super::layout4::EVENTS_CFG_VALUE_SIZE;
    pub const EVENTS_STATE_VALUE_SIZE: usize = super::layout4::EVENTS_STATE_VALUE_SIZE;

    /// `Array<u64>`: the ban prefilter's words.
    pub const BAN_BITS: MapShape = MapShape::new(4, 8, 542_728);
    /// Hashes `[u8; 4]` / `[u8; 16]` → `BanValue` (16 bytes).
    pub const BAN4: MapShape = MapShape::new(4, 16, 1 << 20);
    pub const BAN6: MapShape = MapShape::new(16, 16, 1 << 20);
    /// LPM tries: the kernel's key is the 4-byte prefix length + the address.
    pub const BAN4_NETS: MapShape = MapShape::new(8, 16, 1 << 17);
    pub const BAN6_NETS: MapShape = MapShape::new(20, 16, 1 << 17);
    /// Per-CPU `Array<Counter>`, indexed by tag id.
    pub const BAN_COUNTERS: MapShape = MapShape::new(4, 16, 256);
    /// Hash `RateKey` (20 bytes) → `RateBucket` (8 bytes).
    pub const RATE_KEYS: MapShape = MapShape::new(20, 8, 65_536);
    /// `Array<RateZone>` (24 bytes) and `Array<u64>`, by `rate_zone_index`.
    pub const RATE_ZONE: MapShape = MapShape::new(4, 24, 130);
    pub const RATE_REAPED: MapShape = MapShape::new(4, 8, 130);
}

/// Layout 6: commit ee0cd0f (`LAYOUT[0]` = 6): the IPv6 allowlist lanes
/// (`LANE6_*`), and the blocklists' and lanes' big arrays mmapable. Every map
/// a migration reads is as in layout 5: COUNTERS (the same 17 reasons, 66
/// rules, 16 interface slots), META, EVENTS_CFG, EVENTS_STATE, the bans and
/// the rate limits' state. A later layout that changes one of these defines
/// it here instead of re-exporting layout 5's.
pub mod layout6 {
    pub use super::layout5::{
        BAN4, BAN4_NETS, BAN6, BAN6_NETS, BAN_BITS, BAN_COUNTERS, COUNTERS, EVENTS_CFG_VALUE_SIZE,
        EVENTS_STATE_VALUE_SIZE, META_VALUE_SIZE, RATE_KEYS, RATE_REAPED, RATE_ZONE,
    };
}

/// Layout 7: main from 26540ff to 5758dbe: transfer quotas. Adds `QUOTAS`
/// (per slot × zone, rewritten by every apply: not carried) and
/// `QUOTA_USAGE` (outside the slots: a month's usage per source, which a
/// migration from layout 7 on carries). Every other map a migration reads
/// is as in layout 6 (`RATE_KEYS` included: layout 8 replaced it).
pub mod layout7 {
    use super::MapShape;

    pub use super::layout6::{
        BAN4, BAN4_NETS, BAN6, BAN6_NETS, BAN_BITS, BAN_COUNTERS, COUNTERS, EVENTS_CFG_VALUE_SIZE,
        EVENTS_STATE_VALUE_SIZE, META_VALUE_SIZE, RATE_KEYS, RATE_REAPED, RATE_ZONE,
    };
    /// Preallocated hash `QuotaKey` (24 bytes) → `QuotaUsage` (16 bytes).
    pub const QUOTA_USAGE: MapShape = MapShape::new(24, 16, 65_536);
}

/// Layout 8: this build's: the rate limits' buckets move from the `RATE_KEYS`
/// hash to the `RATE_SLOTS` array (4-way sets; a migration from layouts 5–7
/// re-places every bucket), and the datapath reads its clocks through the
/// per-load `CLOCK` cache. Every other map a migration reads is as in
/// layout 7.
pub mod layout8 {
    use super::MapShape;

    pub use super::layout7::{
        BAN4, BAN4_NETS, BAN6, BAN6_NETS, BAN_BITS, BAN_COUNTERS, COUNTERS, EVENTS_CFG_VALUE_SIZE,
        EVENTS_STATE_VALUE_SIZE, META_VALUE_SIZE, QUOTA_USAGE, RATE_REAPED, RATE_ZONE,
    };
    /// Array `u32` → `RateSlot` (32 bytes), 131,072 slots.
    pub const RATE_SLOTS: MapShape = MapShape::new(4, 32, 131_072);
}

/// A pinned map's (key size, value size, max entries), as an earlier layout
/// created it; checked before a migration reads the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    pub key: u32,
    pub value: u32,
    pub entries: u32,
}

impl MapShape {
    pub const fn new(key: u32, value: u32, entries: u32) -> MapShape {
        MapShape {
            key,
            value,
            entries,
        }
    }

    const fn is(&self, key: usize, value: usize, entries: u32) -> bool {
        self.key as usize == key && self.value as usize == value && self.entries == entries
    }
}

/// The counter geometry of pinned layout `version`, if this build can
/// migrate from it.
pub const fn counter_layout(version: u32) -> Option<CounterLayout> {
    match version {
        1 => Some(layout1::COUNTERS),
        2 => Some(layout2::COUNTERS),
        3 => Some(layout3::COUNTERS),
        4 => Some(layout4::COUNTERS),
        5 => Some(layout5::COUNTERS),
        6 => Some(layout6::COUNTERS),
        7 => Some(layout7::COUNTERS),
        _ => None,
    }
}

// A change to one of these records must come with a reader of the old one.
const _: () = assert!(core::mem::size_of::<MetaBlob>() == layout1::META_VALUE_SIZE);
const _: () = assert!(core::mem::size_of::<MetaBlob>() == layout2::META_VALUE_SIZE);
const _: () = assert!(core::mem::size_of::<EventsConfig>() == layout2::EVENTS_CFG_VALUE_SIZE);
const _: () = assert!(core::mem::size_of::<EventsState>() == layout2::EVENTS_STATE_VALUE_SIZE);
// Layout 5's (and 6's, the same) bans and rate state are carried entry by
// entry into maps of today's types: a change to one of these must add a
// reader of layout 5's and 6's.
const _: () = assert!(layout5::BAN_BITS.is(4, 8, BAN_BITS_LEN));
const _: () = assert!(layout5::BAN4.is(4, core::mem::size_of::<BanValue>(), BAN_HOSTS_MAX));
const _: () = assert!(layout5::BAN6.is(16, core::mem::size_of::<BanValue>(), BAN_HOSTS_MAX));
const _: () = assert!(layout5::BAN4_NETS.is(
    4 + core::mem::size_of::<BanNet4>(),
    core::mem::size_of::<BanValue>(),
    BAN_NETS_MAX
));
const _: () = assert!(layout5::BAN6_NETS.is(
    4 + core::mem::size_of::<BanNet6>(),
    core::mem::size_of::<BanValue>(),
    BAN_NETS_MAX
));
const _: () = assert!(layout5::BAN_COUNTERS.is(4, core::mem::size_of::<Counter>(), BAN_TAGS));
const _: () = assert!(layout5::RATE_KEYS.is(
    core::mem::size_of::<RateKey>(),
    core::mem::size_of::<RateBucket>(),
    RATE_TABLE_MAX
));
const _: () = assert!(layout5::RATE_ZONE.is(4, core::mem::size_of::<RateZone>(), RATE_ZONE_LEN));
const _: () = assert!(layout5::RATE_REAPED.is(4, 8, RATE_ZONE_LEN));
// Layout 6 names layout 5's shapes (its module re-exports them); its
// COUNTERS geometry is today's, so a counter keeps its index.
const _: () = assert!(
    layout6::COUNTERS.reasons.len() as u32 == NUM_REASONS
        && layout6::COUNTERS.num_rules == NUM_RULES
        && layout6::COUNTERS.max_iface_slots == MAX_IFACE_SLOTS
);
// Layout 8 is this build's: its bucket table and usage table are today's.
const _: () = assert!(layout8::RATE_SLOTS.is(4, core::mem::size_of::<RateSlot>(), RATE_SLOTS_LEN));
const _: () = assert!(
    layout7::COUNTERS.reasons.len() as u32 == NUM_REASONS
        && layout7::COUNTERS.num_rules == NUM_RULES
        && layout7::COUNTERS.max_iface_slots == MAX_IFACE_SLOTS
);
const _: () = assert!(layout8::QUOTA_USAGE.is(
    core::mem::size_of::<QuotaKey>(),
    core::mem::size_of::<QuotaUsage>(),
    QUOTA_TABLE_MAX
));
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

/// The reply budget's token bucket: as [`bucket_take`], but the clock is
/// read (`clock`) only when the saved credit does not pay for a token, so
/// a reply within the budget costs no clock read (on the machines measured,
/// a helper call is about as dear as the reset itself). Refilling only
/// then, credit saved before an idle spell is not clipped at the cap while
/// it lasts: in any window of T a CPU gives at most 2 × burst + rate × T
/// tokens (a plain bucket: burst + rate × T), and rate × T in the long run.
/// Credit above `cap_ns` (a new policy's smaller burst) is cut at once.
/// Returns (credit, last refill, taken).
#[inline(always)]
pub fn lazy_bucket_take(
    credit_ns: u64,
    last_ns: u64,
    cost_ns: u64,
    cap_ns: u64,
    clock: impl FnOnce() -> u64,
) -> (u64, u64, bool) {
    let mut credit = if credit_ns > cap_ns {
        cap_ns
    } else {
        credit_ns
    };
    let mut last = last_ns;
    if credit < cost_ns {
        let now = clock();
        let (c, _) = bucket_take(credit, last_ns, now, 0, cap_ns);
        credit = c;
        last = now;
    }
    if credit >= cost_ns {
        (credit - cost_ns, last, true)
    } else {
        (credit, last, false)
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

// ---------------------------------------------------------------------------
// Bans: `portcullis ban`, outside the policy slots.
//
// A ban covers one prefix (a /32 or /128 is a single address) until a CLOCK_TAI
// instant. The datapath first reads a prefilter, `BAN_BITS`, that says "some ban
// may cover this source" (a cached first-octet word, then one word for most IPv4
// sources, so unlisted sources pay about one read, none while no ban shares
// their first octet), and only on a hit the exact maps: `BAN4`/`BAN6` (hashes of
// single addresses), then `BAN4_NETS`/`BAN6_NETS` (LPM tries of shorter
// prefixes). The most specific entry found decides; its value holds the latest
// expiry of every ban that covers it (the daemon keeps that true), so an expired
// address entry never hides a covering prefix that is still in force.
// ---------------------------------------------------------------------------

/// One ban entry's value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanValue {
    /// CLOCK_TAI nanoseconds after which the entry no longer drops;
    /// [`BAN_FOREVER`] for a ban without `--for`.
    pub expires_ns: u64,
    /// Index into `BAN_COUNTERS` (0: untagged).
    pub tag: u32,
    pub _pad: u32,
}

pub const BAN_FOREVER: u64 = u64::MAX;

/// Does the entry drop at CLOCK_TAI `now`?
#[inline(always)]
pub const fn ban_in_force(v: &BanValue, now: u64) -> bool {
    now < v.expires_ns
}

/// Tags (per-tag counters in `BAN_COUNTERS`, indexed by [`BanValue::tag`]).
pub const BAN_TAGS: u32 = 256;
/// Capacity of `BAN4` and `BAN6` (single addresses), each.
pub const BAN_HOSTS_MAX: u32 = 1 << 20;
/// Capacity of `BAN4_NETS` and `BAN6_NETS` (prefixes), each.
pub const BAN_NETS_MAX: u32 = 1 << 17;

/// `BAN_BITS` regions, in 64-bit words. IPv4: one bit per /24 (bans /24 and
/// longer) and one per /16 (bans /1–/23: the /16s they touch). IPv6: one bit
/// per hashed /48 (bans /48 and longer), per hashed /32 (/32–/47), and per /16
/// (/1–/31: the /16s they touch). A hash collision only costs an exact lookup.
/// Read first, per family one bit per first octet (bans /8 and longer set
/// one, shorter ones every octet they touch): 32 bytes that stay cached, so
/// a source no ban shares a first octet with (every source, while there are
/// no bans) pays no read in the large regions.
pub const BAN_TOP4: u32 = 0;
pub const BAN_TOP6: u32 = BAN_TOP4 + 256 / 64;
pub const BAN_V4_24: u32 = BAN_TOP6 + 256 / 64;
pub const BAN_V4_16: u32 = BAN_V4_24 + (1 << 24) / 64;
pub const BAN_V6_48: u32 = BAN_V4_16 + (1 << 16) / 64;
pub const BAN_V6_32: u32 = BAN_V6_48 + (1 << 24) / 64;
pub const BAN_V6_16: u32 = BAN_V6_32 + (1 << 20) / 64;
pub const BAN_BITS_LEN: u32 = BAN_V6_16 + (1 << 16) / 64;

/// Bit number within a region (word = bit / 64, mask = 1 << bit % 64).
#[inline(always)]
pub const fn ban_h48(addr: &[u8; 16]) -> u32 {
    let x = ((addr[0] as u64) << 40)
        | ((addr[1] as u64) << 32)
        | ((addr[2] as u64) << 24)
        | ((addr[3] as u64) << 16)
        | ((addr[4] as u64) << 8)
        | (addr[5] as u64);
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as u32
}

#[inline(always)]
pub const fn ban_h32(addr: &[u8; 16]) -> u32 {
    let x = ((addr[0] as u64) << 24)
        | ((addr[1] as u64) << 16)
        | ((addr[2] as u64) << 8)
        | (addr[3] as u64);
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 44) as u32
}

#[inline(always)]
pub const fn ban_v6_top16(addr: &[u8; 16]) -> u32 {
    ((addr[0] as u32) << 8) | addr[1] as u32
}

/// Key of the LPM tries `BAN4_NETS` / `BAN6_NETS` (prefix length first, as
/// the kernel's `bpf_lpm_trie_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BanNet4 {
    pub addr: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BanNet6 {
    pub addr: [u8; 16],
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
    unsafe impl aya::Pod for Bl4Hosts {}
    unsafe impl aya::Pod for Bl6Word {}
    unsafe impl aya::Pod for Bl6Info {}
    unsafe impl aya::Pod for Bl6Bucket {}
    unsafe impl aya::Pod for MetaBlob {}
    unsafe impl aya::Pod for EventsConfig {}
    unsafe impl aya::Pod for EventsState {}
    unsafe impl aya::Pod for Sched {}
    unsafe impl aya::Pod for ReplyState {}
    unsafe impl aya::Pod for ReplyPending {}
    unsafe impl aya::Pod for ZoneRates {}
    unsafe impl aya::Pod for RateKey {}
    unsafe impl aya::Pod for RateBucket {}
    unsafe impl aya::Pod for RateSlot {}
    unsafe impl aya::Pod for ClockCache {}
    unsafe impl aya::Pod for RateZone {}
    unsafe impl aya::Pod for BanValue {}
    unsafe impl aya::Pod for BanNet4 {}
    unsafe impl aya::Pod for BanNet6 {}
    unsafe impl aya::Pod for ZoneQuota {}
    unsafe impl aya::Pod for QuotaKey {}
    unsafe impl aya::Pod for QuotaUsage {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_indices_are_dense_and_unique() {
        let last_reason = Reason::ALL[NUM_REASONS as usize - 1];
        let last = counter_index(NUM_RULES - 1, last_reason, Verdict::Drop);
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
                    assert_eq!(decode_counter_index(index), Some((rule, reason, verdict)));
                }
            }
        }
    }

    #[test]
    fn interface_blocks_do_not_overlap() {
        let last_reason = Reason::ALL[NUM_REASONS as usize - 1];
        let last = counter_index(NUM_RULES - 1, last_reason, Verdict::Drop);
        assert_eq!(iface_counter_index(1, 0), last + 1);
        assert_eq!(
            iface_counter_index(MAX_IFACE_SLOTS - 1, last),
            COUNTERS_LEN - 1
        );
    }

    #[test]
    fn reason_numbers_round_trip_and_stay_below_num_reasons() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_u32(r as u32), Some(r));
            assert!((r as u32) < NUM_REASONS);
        }
        assert_eq!(Reason::from_u32(NUM_REASONS), None);
        assert_eq!(Reason::Closed as u32, 13);
    }

    #[test]
    fn set_tag_is_big_endian_slot_then_id() {
        assert_eq!(set_tag(1, FAILSAFE_SET_BASE + 3), [0, 1, 0x80, 3]);
        assert_eq!(set_tag(0, 7), [0, 0, 0, 7]);
    }

    #[test]
    fn bl6_bucket_is_one_cache_line() {
        assert_eq!(core::mem::size_of::<Bl6Bucket>(), 64);
        assert_eq!(core::mem::size_of::<Bl6Info>(), 16);
    }

    #[test]
    fn bl6_home_depends_on_every_input() {
        let base = bl6_home(0, 0x2001_0db8_0000_0000, 0, 48);
        assert!(base < BL6_BUCKETS);
        assert_ne!(base, bl6_home(1, 0x2001_0db8_0000_0000, 0, 48));
        assert_ne!(base, bl6_home(0, 0x2001_0db8_0001_0000, 0, 48));
        assert_ne!(base, bl6_home(0, 0x2001_0db8_0000_0000, 1, 48));
        assert_ne!(base, bl6_home(0, 0x2001_0db8_0000_0000, 0, 47));
    }

    #[test]
    fn mask64_keeps_leading_bits() {
        assert_eq!(mask64(0), 0);
        assert_eq!(mask64(1), 1 << 63);
        assert_eq!(mask64(64), u64::MAX);
    }

    #[test]
    fn layout1_decode_reads_v010_counter_order() {
        // Fixed values of v0.1.0's geometry: (rule * 11 + reason) * 2 + drop,
        // 1452 counters per interface slot.
        let l = layout1::COUNTERS;
        assert_eq!(l.per_iface(), 1452);
        assert_eq!(l.decode(0), (0, 0, "non_ip", false));
        assert_eq!(l.decode(7), (0, 0, "blocklist", true));
        assert_eq!(l.decode(2 * 11 * 2 + 14), (0, 2, "not_allowed", false));
        assert_eq!(l.decode(1452 + 21), (1, 0, "no_policy", true));
        assert_eq!(l.decode(l.len() - 1), (15, 65, "no_policy", true));
    }

    #[test]
    fn layout5_decode_reads_fa704d6_counter_order() {
        // Fixed values of layout 5's geometry: (rule * 17 + reason) * 2 +
        // drop, 2244 counters per interface slot.
        let l = layout5::COUNTERS;
        assert_eq!(l.per_iface(), 2244);
        assert_eq!(l.len(), 35_904);
        assert_eq!(l.decode(2 * 14), (0, 0, "rate_limited", false));
        assert_eq!(l.decode(2 * 16 + 1), (0, 0, "banned", true));
        assert_eq!(
            l.decode(2244 + (3 * 17 + 15) * 2),
            (1, 3, "quota_exceeded", false)
        );
        assert_eq!(l.decode(l.len() - 1), (15, 65, "banned", true));
    }

    #[test]
    fn layout6_counters_are_layout5s_and_this_builds() {
        // ee0cd0f counted with layout 5's geometry, which is still this
        // build's: every index decodes to today's reason of the same number.
        let (l5, l6) = (layout5::COUNTERS, layout6::COUNTERS);
        assert_eq!(l6.reasons, l5.reasons);
        assert_eq!((l6.num_rules, l6.max_iface_slots), (66, 16));
        assert_eq!(l6.len(), COUNTERS_LEN);
        assert_eq!(l6.reasons.len(), Reason::ALL.len());
        for (label, r) in l6.reasons.iter().zip(Reason::ALL) {
            assert_eq!(*label, r.as_str());
        }
        assert_eq!(counter_layout(6).map(|l| l.len()), Some(35_904));
        assert!(counter_layout(LAYOUT_VERSION).is_none());
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
    fn the_lazy_bucket_reads_the_clock_only_when_empty() {
        // 10/s, burst 3: cost 100 ms, cap 300 ms. Fresh: one read fills it.
        let (cost, cap) = (100_000_000, 300_000_000);
        let reads = core::cell::Cell::new(0);
        let clock = |t: u64| {
            reads.set(reads.get() + 1);
            t
        };
        let (mut credit, mut last, mut taken) = (0, 0, 0);
        for _ in 0..10 {
            let (c, l, t) = lazy_bucket_take(credit, last, cost, cap, || clock(5_000_000_000));
            (credit, last) = (c, l);
            taken += t as u32;
        }
        assert_eq!(taken, 3);
        // One read to fill, one per refused packet.
        assert_eq!(reads.get(), 1 + 7);
        // Credit from a larger burst is cut to the new cap without a read.
        let (c, _, t) = lazy_bucket_take(10 * cap, last, cost, cap, || panic!("no read"));
        assert!(t);
        assert_eq!(c, cap - cost);
    }

    #[test]
    fn the_lazy_bucket_gives_at_most_two_bursts_and_the_rate_in_a_window() {
        // Burst 3 at 10/s. Take 1 token at t = 0 (the bucket fills), stay
        // idle 10 s, then flood one packet per ms for 1 s: a plain bucket
        // gives 3 + 10; the lazy one at most 2 × 3 + 10, never more.
        let (cost, cap) = (100_000_000u64, 300_000_000u64);
        let (c, l, t) = lazy_bucket_take(0, 0, cost, cap, || 1_000_000_000);
        assert!(t);
        let (mut credit, mut last, mut taken) = (c, l, 0u64);
        let start = 11_000_000_000u64;
        for i in 0..1000u64 {
            let now = start + i * 1_000_000;
            let (c, l, t) = lazy_bucket_take(credit, last, cost, cap, || now);
            (credit, last) = (c, l);
            taken += t as u64;
        }
        assert!((13..=16).contains(&taken), "{taken}");
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

    /// An entry as the daemon writes it: unused instants are `u64::MAX`.
    fn sched(open_first: bool, t: &[u64]) -> Sched {
        let mut s = Sched {
            open_first: open_first as u32,
            count: t.len() as u32,
            t: [u64::MAX; SCHED_MAX_TRANSITIONS],
        };
        s.t[..t.len()].copy_from_slice(t);
        s
    }

    #[test]
    fn a_schedule_toggles_at_each_transition_it_reaches() {
        let s = sched(false, &[100, 200, 300, 400]);
        assert!(!sched_is_open(&s, 99));
        assert!(sched_is_open(&s, 100));
        assert!(sched_is_open(&s, 199));
        assert!(!sched_is_open(&s, 200));
        assert!(sched_is_open(&s, 350));
        let s = sched(true, &[100, 200]);
        assert!(sched_is_open(&s, 0));
        assert!(!sched_is_open(&s, 150));
    }

    #[test]
    fn a_schedule_fails_closed_past_its_last_transition() {
        // Closed before 100, open from 100, closed from 200 (lists end with a
        // close): past 200 nothing more is known, and it stays closed.
        let s = sched(false, &[100, 200]);
        assert!(!sched_is_open(&s, 200));
        assert!(!sched_is_open(&s, u64::MAX - 1));
        // A full array: closed once every instant has passed, whatever the
        // parity (a list the daemon cut short).
        let mut full = sched(true, &[]);
        full.count = SCHED_MAX_TRANSITIONS as u32;
        for (i, t) in full.t.iter_mut().enumerate() {
            *t = 10 * (i as u64 + 1);
        }
        assert!(sched_is_open(&full, 5));
        assert!(!sched_is_open(&full, 15));
        assert!(sched_is_open(&full, 25));
        assert!(!sched_is_open(&full, 10 * SCHED_MAX_TRANSITIONS as u64));
        // An all-zero entry (none written) is closed.
        assert!(!sched_is_open(&Sched::default(), 12345));
    }

    #[test]
    fn reasons_are_numbered_as_all_lists_them() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        assert_eq!(Reason::Rejected as u32, 11);
        assert_eq!(Reason::RejectSuppressed.as_str(), "reject_suppressed");
    }

    #[test]
    fn zone_reply_bits_round_trip_and_resolve_by_protocol() {
        for reply in [
            Reply::ByProtocol,
            Reply::TcpReset,
            Reply::PortUnreachable,
            Reply::AdminProhibited,
            Reply::HostUnreachable,
        ] {
            let z = ZoneInfo {
                flags: ZoneInfo::PRESENT | ZoneInfo::reject_flags(reply),
            };
            assert_eq!(z.reply(), reply);
            assert_ne!(z.flags & ZoneInfo::REJECT, 0);
        }
        assert_eq!(Reply::ByProtocol.for_proto(IPPROTO_TCP), Reply::TcpReset);
        assert_eq!(
            Reply::ByProtocol.for_proto(IPPROTO_UDP),
            Reply::PortUnreachable
        );
        assert_eq!(
            Reply::ByProtocol.for_proto(IPPROTO_SCTP),
            Reply::PortUnreachable
        );
        assert_eq!(
            Reply::AdminProhibited.for_proto(IPPROTO_TCP),
            Reply::AdminProhibited
        );
        assert_eq!(Reply::PortUnreachable.icmp(false), Some((3, 3)));
        assert_eq!(Reply::AdminProhibited.icmp(true), Some((1, 1)));
        assert_eq!(Reply::HostUnreachable.icmp(true), Some((1, 3)));
        assert_eq!(Reply::TcpReset.icmp(false), None);
        assert_eq!(core::mem::size_of::<Config>(), 24);
        assert_eq!(core::mem::size_of::<ReplyPending>(), 20);
    }

    #[test]
    fn lane_spaces_are_disjoint_and_fill_the_maps() {
        assert_eq!(lane4_space(0, 1), 0);
        assert_eq!(lane4_space(1, ALLOW4_LANES), LANE4_SPACES - 1);
        assert_eq!(lane4_word_index(1, 1, 0), ALLOW4_LANES * BL4_WORDS_PER_SLOT);
        assert_eq!(
            lane4_word_index(1, ALLOW4_LANES, 0xff_ffff),
            LANE4_SPACES * BL4_WORDS_PER_SLOT - 1
        );
        // Lane numbers fit the flags' field and leave the reply's bits alone.
        let z = ZoneInfo {
            flags: ALLOW4_LANES << ZoneInfo::LANE_SHIFT | ZoneInfo::REPLY_MASK,
        };
        assert_eq!(z.lane(), ALLOW4_LANES);
        assert_eq!(ZoneInfo::LANE_MASK & ZoneInfo::REPLY_MASK, 0);
    }

    #[test]
    fn bl4_index_splits_slots() {
        assert_eq!(bl4_word_index(1, 0xff_ffff), 2 * BL4_WORDS_PER_SLOT - 1);
    }

    #[test]
    fn bl4_bits_index_is_the_rank_of_the_part_bit() {
        let part = 0b1011_0001u64 | 1 << 63;
        assert_eq!(bl4_bits_index(100, part, 0), 100);
        assert_eq!(bl4_bits_index(100, part, 4), 101);
        assert_eq!(bl4_bits_index(100, part, 5), 102);
        assert_eq!(bl4_bits_index(100, part, 7), 103);
        assert_eq!(bl4_bits_index(100, part, 64 + 63), 104);
        assert_eq!(bl4_bits_region(DEFAULT_BL4_BITS_MAX), 1 << 20);
    }
}
