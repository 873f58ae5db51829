//! The program's maps (layout and meaning: `filter-common`) and the only `unsafe`
//! map accessors of the program.
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray, ProgramArray, RingBuf},
};
use filter_common::{
    BanNet4, BanNet6, BanValue, Bl4Hosts, Bl4Word, Bl6Bucket, Bl6Info, Bl6Word, ClockCache, Config,
    Counter, EventsConfig, EventsPending, EventsState, MetaBlob, PortEntry, QuotaKey, QuotaUsage,
    RateSlot, RateZone, ReplyPending, ReplyState, Sched, Tagged4, Tagged6, ZoneInfo, ZoneQuota,
    ZoneRates, BAN_BITS_LEN, BAN_HOSTS_MAX, BAN_NETS_MAX, BAN_TAGS, BL4_WORDS_PER_SLOT, BL6_REGION,
    BL6_WORDS_PER_SLOT, COUNTERS_LEN, DEFAULT_ALLOW_MAX, DEFAULT_BL4_BITS_MAX, EVENTS_RING_BYTES,
    IFACES_LEN, LANE4_BITS_MAX, LANE4_SPACES, LANE6_REGION, LANE6_SPACES, NUM_SLOTS,
    PORTS_PER_SLOT, QUOTA_TABLE_MAX, RATE_SLOTS_LEN, RATE_ZONE_LEN, ZONE_SLOTS,
};

#[map]
pub static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
/// `LAYOUT_VERSION` of the build that created the maps; the datapath never
/// reads it.
#[map]
pub static LAYOUT: Array<u32> = Array::with_max_entries(1, 0);
#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(NUM_SLOTS, 0);
#[map]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);
#[map]
pub static IFACES: Array<u32> = Array::with_max_entries(IFACES_LEN, 0);
/// Written and read by the daemon only; declared here so it lives (and is
/// pinned) with the program's other maps.
#[map]
pub static META: Array<MetaBlob> = Array::with_max_entries(1, 0);
#[map]
pub static PORTS: Array<PortEntry> = Array::with_max_entries(NUM_SLOTS * PORTS_PER_SLOT, 0);
#[map]
pub static ZONES: Array<ZoneInfo> = Array::with_max_entries(NUM_SLOTS * ZONE_SLOTS, 0);
#[map]
pub static ALLOW4: LpmTrie<Tagged4, u8> = LpmTrie::with_max_entries(DEFAULT_ALLOW_MAX, 0);
#[map]
pub static ALLOW6: LpmTrie<Tagged6, u8> = LpmTrie::with_max_entries(DEFAULT_ALLOW_MAX, 0);
#[map]
pub static BL4_WORDS: Array<Bl4Word> =
    Array::with_max_entries(NUM_SLOTS * BL4_WORDS_PER_SLOT, BPF_F_MMAPABLE);
#[map]
pub static BL4_BASE: Array<u32> =
    Array::with_max_entries(NUM_SLOTS * BL4_WORDS_PER_SLOT, BPF_F_MMAPABLE);
#[map]
pub static BL4_BITS: Array<Bl4Hosts> =
    Array::with_max_entries(DEFAULT_BL4_BITS_MAX, BPF_F_MMAPABLE);
/// The allowlist lanes: `BL4_*`'s layout, one space per (slot, lane).
#[map]
pub static LANE4_WORDS: Array<Bl4Word> =
    Array::with_max_entries(LANE4_SPACES * BL4_WORDS_PER_SLOT, BPF_F_MMAPABLE);
#[map]
pub static LANE4_BASE: Array<u32> =
    Array::with_max_entries(LANE4_SPACES * BL4_WORDS_PER_SLOT, BPF_F_MMAPABLE);
#[map]
pub static LANE4_BITS: Array<Bl4Hosts> = Array::with_max_entries(LANE4_BITS_MAX, BPF_F_MMAPABLE);
#[map]
pub static BL6_WORDS: Array<Bl6Word> =
    Array::with_max_entries(NUM_SLOTS * BL6_WORDS_PER_SLOT, BPF_F_MMAPABLE);
#[map]
pub static BL6_INFO: Array<Bl6Info> = Array::with_max_entries(NUM_SLOTS, 0);
/// Mmapable for its layout: the kernel then page-aligns the values, so each
/// 64-byte bucket is exactly one cache line. (The other big arrays are
/// mmapable so the loader reads them back through a mapping.)
#[map]
pub static BL6_TABLE: Array<Bl6Bucket> =
    Array::with_max_entries(NUM_SLOTS * BL6_REGION, BPF_F_MMAPABLE);
/// The IPv6 allowlist lanes: `BL6_*`'s layout, one space per (slot, lane),
/// with a smaller table (`LANE6_GEOMETRY`).
#[map]
pub static LANE6_WORDS: Array<Bl6Word> =
    Array::with_max_entries(LANE6_SPACES * BL6_WORDS_PER_SLOT, BPF_F_MMAPABLE);
#[map]
pub static LANE6_INFO: Array<Bl6Info> = Array::with_max_entries(LANE6_SPACES, 0);
#[map]
pub static LANE6_TABLE: Array<Bl6Bucket> =
    Array::with_max_entries(LANE6_SPACES * LANE6_REGION, BPF_F_MMAPABLE);
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);
#[map]
pub static EVENTS_CFG: Array<EventsConfig> = Array::with_max_entries(1, 0);
#[map]
pub static EVENTS_STATE: PerCpuArray<EventsState> = PerCpuArray::with_max_entries(1, 0);
/// Per load, not pinned: `[0]` is the events program.
#[map]
pub static EVENTS_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map]
pub static EVENTS_PENDING: PerCpuArray<EventsPending> = PerCpuArray::with_max_entries(1, 0);
/// Per slot and zone: when a scheduled zone opens and closes (schedule.rs).
#[map]
pub static SCHED: Array<Sched> = Array::with_max_entries(NUM_SLOTS * ZONE_SLOTS, 0);
/// Pinned (a pinned program array keeps its entries): `[0]` is the reply
/// program of the last load, so rejecting zones answer with no daemon running.
#[map]
pub static REPLY_PROG: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map]
pub static REPLY_STATE: PerCpuArray<ReplyState> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static REPLY_PENDING: PerCpuArray<ReplyPending> = PerCpuArray::with_max_entries(1, 0);

/// Per slot and zone: its rate limits (rate.rs).
#[map]
pub static RATES: Array<ZoneRates> = Array::with_max_entries(NUM_SLOTS * ZONE_SLOTS, 0);
/// The buckets of tracked sources: 4-way sets (rate.rs); mapped, so the
/// daemon reads the 4 MiB in one copy.
#[map]
pub static RATE_SLOTS: Array<RateSlot> = Array::with_max_entries(RATE_SLOTS_LEN, BPF_F_MMAPABLE);
/// Per CPU: the clock cache (clock.rs). Scratch of this load, not pinned.
#[map]
pub static CLOCK: PerCpuArray<ClockCache> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static RATE_ZONE: Array<RateZone> = Array::with_max_entries(RATE_ZONE_LEN, 0);
#[map]
pub static RATE_REAPED: Array<u64> = Array::with_max_entries(RATE_ZONE_LEN, 0);
/// Per slot and zone: its transfer quota (quota.rs).
#[map]
pub static QUOTAS: Array<ZoneQuota> = Array::with_max_entries(NUM_SLOTS * ZONE_SLOTS, 0);
/// Bytes per (zone name, masked source); preallocated (flags 0), not LRU.
/// Written by the XDP program (upload) and the egress program (download).
#[map]
pub static QUOTA_USAGE: HashMap<QuotaKey, QuotaUsage> =
    HashMap::with_max_entries(QUOTA_TABLE_MAX, 0);
/// Bans (bans.rs; layout: `filter-common`, "Bans"). Outside the slots: only
/// the daemon's ban store writes them. The hashes allocate per entry, so an
/// empty ban list costs no memory.
#[map]
pub static BAN_BITS: Array<u64> = Array::with_max_entries(BAN_BITS_LEN, 0);
#[map]
pub static BAN4: HashMap<[u8; 4], BanValue> =
    HashMap::with_max_entries(BAN_HOSTS_MAX, BPF_F_NO_PREALLOC);
#[map]
pub static BAN6: HashMap<[u8; 16], BanValue> =
    HashMap::with_max_entries(BAN_HOSTS_MAX, BPF_F_NO_PREALLOC);
#[map]
pub static BAN4_NETS: LpmTrie<BanNet4, BanValue> = LpmTrie::with_max_entries(BAN_NETS_MAX, 0);
#[map]
pub static BAN6_NETS: LpmTrie<BanNet6, BanValue> = LpmTrie::with_max_entries(BAN_NETS_MAX, 0);
#[map]
pub static BAN_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(BAN_TAGS, 0);

#[inline(always)]
pub fn lpm4_contains(map: &LpmTrie<Tagged4, u8>, tag: [u8; 4], addr: [u8; 4]) -> bool {
    map.get(Key::new(64, Tagged4 { tag, addr })).is_some()
}

#[inline(always)]
pub fn lpm6_contains(map: &LpmTrie<Tagged6, u8>, tag: [u8; 4], addr: [u8; 16]) -> bool {
    map.get(Key::new(160, Tagged6 { tag, addr })).is_some()
}

/// Adds one packet of `bytes` to counter `index` of this CPU.
#[inline(always)]
pub fn count(index: u32, bytes: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; XDP does not preempt itself on one CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
