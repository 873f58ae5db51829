//! Loads the XDP object and writes compiled policies into its maps.
//!
//! A policy is applied by writing its [`SlotImage`] into the inactive slot (only
//! the entries that differ from what that slot holds), then flipping `ACTIVE`
//! with one 4-byte write. Packets read `ACTIVE` once, so each one sees exactly
//! one whole policy.
pub(crate) mod batch;
mod bl4;
mod bl6;
mod compact;
mod detach;
pub mod egress;
mod fault;
mod image;
mod lanes;
mod maps;
mod meta;
mod migrate;
mod pins;
mod quota;
mod rate;

use std::{
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use aya::{
    maps::{MapError, ProgramArray},
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfError, EbpfLoader,
};
pub use bl6::{Bl6Error, Bl6Image};
use compact::Compact;
pub use detach::{detach_iface, IfaceDetached};
use filter_common::{
    counter_index, slot_of, Counter, Reason, Verdict, ALL_MAPS, EGRESS_PROGRAM_NAME,
    EVENTS_PROGRAM_NAME, LAYOUT_VERSION, MAP_EVENTS_PROG, MAP_REPLY_PROG, NUM_SLOTS, PROGRAM_NAME,
    REPLY_PROGRAM_NAME,
};
pub use image::{BitmapImage, ImageOptions, SlotImage};
pub use maps::Maps;
pub use meta::{IfaceMeta, Meta};
pub use migrate::Carried;
pub use pins::{AttachMode, PinRoot, PinnedState, DEFAULT_PIN_ROOT};
pub use quota::{active_quotas, Consumer, QuotaState, ZoneQuotaUse};
pub use rate::{monotonic_ns, LimitUse, RateState, Reaped};

use crate::policy::CompiledPolicy;

/// The eBPF object, embedded at build time (see build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PORTCULLIS_EBPF_OBJECT"));

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("this portcullis was built without its eBPF object; run `cargo xtask build-ebpf` and rebuild")]
    NoObject,
    #[error("loading the eBPF object: {0}")]
    Load(#[from] EbpfError),
    #[error("eBPF program: {0}")]
    Program(#[from] ProgramError),
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("the eBPF object has no map or program named {0}")]
    Missing(&'static str),
    #[error("{0} zones; at most {max} are supported", max = filter_common::MAX_ZONES)]
    TooManyZones(usize),
    #[error("port {port} is claimed by zones {} and {}", zones.0, zones.1)]
    PortClaimedTwice { port: u32, zones: (u16, u16) },
    #[error(
        "failsafe rules overlap in too many different ways (over {} port groups)",
        filter_common::MAX_FAILSAFE_GROUPS
    )]
    TooManyFailsafeGroups,
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not on a bpffs; mount one there first (mount -t bpf bpf DIR)", .0.display())]
    NotBpffs(PathBuf),
    #[error("pinned map {} belongs to an incompatible build ({detail}); run `portcullis detach` to remove the old filter first", path.display())]
    IncompatiblePin { path: PathBuf, detail: String },
    #[error("parsing the eBPF object: {0}")]
    Object(String),
    #[error("interface {iface}: {detail}")]
    Link { iface: String, detail: String },
    #[error("the META record: {0}")]
    Meta(String),
    #[error("no interface named {0}")]
    NoSuchInterface(String),
    #[error("at most {} interfaces can be attached", filter_common::MAX_IFACE_SLOTS - 1)]
    TooManyInterfaces,
    #[error(
        "map {map} would need {need} entries (enforced policy {active} + new policy {new}), \
         it holds {max}; shrink the policy (merge prefixes) or apply a smaller one first"
    )]
    Capacity {
        map: &'static str,
        need: usize,
        active: usize,
        new: usize,
        max: usize,
    },
    #[error("pinned filter: {0}")]
    Layout(String),
    #[error(
        "the pinned filter was created by a newer portcullis (map layout {0}; this build \
         knows layouts up to {max}); run the newer build, or `portcullis detach` first",
        max = filter_common::LAYOUT_VERSION
    )]
    NewerLayout(u32),
    #[error(
        "the IPv4 blocklist has {need} partly listed /24s (a /24 holding a prefix longer \
         than /24); one slot of BL4_BITS holds {max}; merge hosts into whole /24s or \
         shorten the list"
    )]
    Bl4Capacity { need: usize, max: usize },
    #[error("map {0}: injected fault (test hook)")]
    Injected(&'static str),
    #[error(transparent)]
    Bl6(#[from] Bl6Error),
}

impl LoaderError {
    pub(crate) fn map(map: &'static str) -> impl FnOnce(MapError) -> LoaderError {
        move |source| LoaderError::Map { map, source }
    }

    /// For map names only known at run time (from the object).
    pub(crate) fn map_named(name: &str) -> impl FnOnce(MapError) -> LoaderError {
        let map = filter_common::ALL_MAPS
            .into_iter()
            .find(|m| *m == name)
            .unwrap_or("(object map)");
        move |source| LoaderError::Map { map, source }
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// How long after a flip the now-inactive slot is left untouched, so packets
    /// that read the old generation just before the flip finish with it. XDP
    /// runs in microseconds; the default is generous.
    pub quiesce: Duration,
    /// Pin the maps under this root, reusing what a previous run pinned there.
    pub pin_root: Option<PinRoot>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            quiesce: Duration::from_millis(10),
            pin_root: None,
        }
    }
}

/// The loaded program and its maps.
pub struct Filter {
    ebpf: Ebpf,
    maps: Maps,
    /// What each slot holds in the kernel, in compact form; `None` = unknown
    /// (read it back first).
    shadow: [Option<Compact>; NUM_SLOTS as usize],
    generation: u32,
    last_flip: Option<Instant>,
    opts: LoadOptions,
    /// A migration from an older map layout, until the links run this
    /// program (see [`migrate`]).
    migration: Option<migrate::Migration>,
    /// Pinned links switched to this program while migrating.
    links_switched: usize,
}

/// Hands memory freed by compiling and writing a large policy (the list
/// files' text, temporary vectors) back to the kernel, so the daemon's RSS is
/// what it keeps (the two compact shadows), not its peak. glibc keeps freed
/// heap otherwise.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Loads the program sampled decisions tail-call and puts it into
/// `EVENTS_PROG[0]` (a map of this load only: see filter-common).
fn load_events_program(ebpf: &mut Ebpf) -> Result<(), LoaderError> {
    let events: &mut Xdp = ebpf
        .program_mut(EVENTS_PROGRAM_NAME)
        .ok_or(LoaderError::Missing(EVENTS_PROGRAM_NAME))?
        .try_into()?;
    events.load()?;
    let fd = events.fd()?.try_clone().map_err(|e| LoaderError::Io {
        path: PathBuf::from(EVENTS_PROGRAM_NAME),
        source: e,
    })?;
    let map = ebpf
        .map_mut(MAP_EVENTS_PROG)
        .ok_or(LoaderError::Missing(MAP_EVENTS_PROG))?;
    let mut progs = ProgramArray::try_from(map).map_err(LoaderError::map(MAP_EVENTS_PROG))?;
    progs
        .set(0, &fd, 0)
        .map_err(LoaderError::map(MAP_EVENTS_PROG))
}

/// Loads the reply program rejecting zones tail-call and puts it into
/// `REPLY_PROG[0]`. That map is pinned: a daemon that adopts it replaces the
/// previous load's program, and it keeps answering with no daemon running.
fn load_reply_program(ebpf: &mut Ebpf) -> Result<(), LoaderError> {
    let reply: &mut Xdp = ebpf
        .program_mut(REPLY_PROGRAM_NAME)
        .ok_or(LoaderError::Missing(REPLY_PROGRAM_NAME))?
        .try_into()?;
    reply.load()?;
    let fd = reply.fd()?.try_clone().map_err(|e| LoaderError::Io {
        path: PathBuf::from(REPLY_PROGRAM_NAME),
        source: e,
    })?;
    let map = ebpf
        .map_mut(MAP_REPLY_PROG)
        .ok_or(LoaderError::Missing(MAP_REPLY_PROG))?;
    let mut progs = ProgramArray::try_from(map).map_err(LoaderError::map(MAP_REPLY_PROG))?;
    progs
        .set(0, &fd, 0)
        .map_err(LoaderError::map(MAP_REPLY_PROG))
}

/// ARPHRD_ETHER and ARPHRD_LOOPBACK (whose frames carry a zeroed Ethernet
/// header): the only link types whose frames start where the parser expects.
const ETHERNET_LINK_TYPES: [u32; 2] = [1, 772];

/// Refuses devices whose frames have no Ethernet header (GRE, IPIP, SIT,
/// WireGuard, TUN: ARPHRD_NONE and the tunnel types). The program would read
/// their IP header as Ethernet and misjudge every frame, mostly as `non_ip`,
/// which passes by default: a silent fail-open.
fn check_link_type(iface: &str) -> Result<(), LoaderError> {
    let path = format!("/sys/class/net/{iface}/type");
    // Without sysfs (unusual containers) there is nothing to check against.
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    match text.trim().parse::<u32>() {
        Ok(t) if ETHERNET_LINK_TYPES.contains(&t) => Ok(()),
        Ok(t) => Err(LoaderError::Link {
            iface: iface.to_string(),
            detail: format!(
                "link type {t} (see /sys/class/net/{iface}/type) has no Ethernet header; \
                 portcullis parses Ethernet frames only. Attach to the Ethernet device the \
                 tunnel runs over (its traffic is judged by the outer header) instead"
            ),
        }),
        Err(_) => Ok(()),
    }
}

impl Filter {
    /// Loads (verifies) the program; nothing is attached. With a pin root, the
    /// maps a previous run pinned there are adopted (policy slots, generation,
    /// counters) after checking they fit this build; missing ones are created
    /// and pinned.
    pub fn load(opts: LoadOptions) -> Result<Filter, LoaderError> {
        if OBJECT.is_empty() {
            return Err(LoaderError::NoObject);
        }
        let mut loader = EbpfLoader::new();
        let mut adopted = false;
        let mut from_layout = None;
        let pin_paths: Vec<(&str, PathBuf)> = match &opts.pin_root {
            Some(root) => {
                root.prepare()?;
                if let Some(what) = migrate::recover(root)? {
                    tracing::warn!("{}: {what}", root.path().display());
                }
                let dir = match migrate::pinned_layout(root)? {
                    None => root.maps_dir(),
                    Some(v) if v == LAYOUT_VERSION => {
                        root.check_compatible(OBJECT)?;
                        adopted = true;
                        root.maps_dir()
                    }
                    Some(v) if v > LAYOUT_VERSION => return Err(LoaderError::NewerLayout(v)),
                    Some(v) => {
                        tracing::info!(
                            "the pinned filter has map layout {v}; this build's is \
                             {LAYOUT_VERSION}: migrating (new maps beside the old, then one \
                             link update per interface)"
                        );
                        from_layout = Some(v);
                        let next = root.next_dir();
                        std::fs::create_dir_all(&next).map_err(|source| LoaderError::Io {
                            path: next.clone(),
                            source,
                        })?;
                        next
                    }
                };
                ALL_MAPS.iter().map(|m| (*m, dir.join(m))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT)?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(LoaderError::Missing(PROGRAM_NAME))?
            .try_into()?;
        program.load()?;
        load_events_program(&mut ebpf)?;
        load_reply_program(&mut ebpf)?;
        let egress: &mut SchedClassifier = ebpf
            .program_mut(EGRESS_PROGRAM_NAME)
            .ok_or(LoaderError::Missing(EGRESS_PROGRAM_NAME))?
            .try_into()?;
        egress.load()?;
        for name in ALL_MAPS {
            if ebpf.map(name).is_none() {
                return Err(LoaderError::Missing(name));
            }
        }
        let mut maps = Maps::take(&mut ebpf)?;
        if !adopted {
            maps.set_layout(LAYOUT_VERSION)?;
        }
        let migration = match (from_layout, &opts.pin_root) {
            (Some(from), Some(root)) => {
                let (m, carried) = migrate::Migration::start(root, from, &mut maps)?;
                tracing::info!(
                    "carried from layout {from}: generation {}, {} counters ({} packets){}",
                    maps.active_generation()?,
                    carried.cells,
                    carried.packets,
                    if carried.dropped > 0 {
                        format!(
                            ", {} counters with no place in this layout dropped",
                            carried.dropped
                        )
                    } else {
                        String::new()
                    }
                );
                Some(m)
            }
            _ => None,
        };
        let generation = maps.active_generation()?;
        // Fresh maps are empty; adopted slots hold whatever the previous run
        // wrote and are read back before their first write.
        let known = (!adopted).then(Compact::default);
        Ok(Filter {
            ebpf,
            maps,
            shadow: [known.clone(), known],
            generation,
            last_flip: None,
            opts,
            migration,
            links_switched: 0,
        })
    }

    /// The layout being migrated from, until [`Filter::finish_migration`].
    pub fn migrating_from(&self) -> Option<u32> {
        self.migration.as_ref().map(|m| m.from)
    }

    /// Ends a migration once the links run this program: carries what the
    /// old program counted meanwhile and makes this build's maps the pinned
    /// ones (the old ones are removed). A no-op when not migrating.
    pub fn finish_migration(&mut self, root: &PinRoot) -> Result<Option<Carried>, LoaderError> {
        let Some(m) = self.migration.take() else {
            return Ok(None);
        };
        m.finish(root, &mut self.maps).map(Some)
    }

    /// A start that failed: if no pinned link runs this program yet, the old
    /// filter is untouched and only the new maps' pins are removed; if some
    /// do, the migration is completed (both programs enforce a whole policy;
    /// the next start switches the remaining links).
    pub fn settle_failed_migration(&mut self, root: &PinRoot) {
        let Some(m) = self.migration.take() else {
            return;
        };
        let done = if self.links_switched == 0 {
            m.abandon(root)
                .map(|()| "the old filter keeps enforcing, unchanged")
        } else {
            m.finish(root, &mut self.maps)
                .map(|_| "some links already ran the new program: the migration was completed")
        };
        match done {
            Ok(what) => tracing::warn!("start failed while migrating: {what}"),
            Err(e) => tracing::error!("start failed while migrating, and settling it failed: {e}"),
        }
    }

    /// The active generation (0 until the first policy is applied).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Attaches to `iface` (or atomically replaces the program in its pinned
    /// link) and counts its frames in counter slot `slot`. A new link is
    /// attached in `force`d mode if given (see [`PinRoot::attach`]). Returns
    /// the new mode, or `None` when an existing link was adopted.
    pub fn attach(
        &mut self,
        root: &PinRoot,
        iface: &str,
        slot: u32,
        force: Option<AttachMode>,
    ) -> Result<Option<AttachMode>, LoaderError> {
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .map_err(|_| LoaderError::NoSuchInterface(iface.to_string()))?;
        if slot == 0 || slot >= filter_common::MAX_IFACE_SLOTS {
            return Err(LoaderError::TooManyInterfaces);
        }
        check_link_type(iface)?;
        // Register the counter slot first so no attached frame is miscounted.
        self.maps.set_iface_slot(ifindex, slot)?;
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(LoaderError::Missing(PROGRAM_NAME))?
            .try_into()?;
        let mode = root.attach(program, iface, force)?;
        if mode.is_none() && self.migration.is_some() {
            self.links_switched += 1;
        }
        let egress: &mut SchedClassifier = self
            .ebpf
            .program_mut(EGRESS_PROGRAM_NAME)
            .ok_or(LoaderError::Missing(EGRESS_PROGRAM_NAME))?
            .try_into()?;
        // Without it only download counting is lost (a kernel without the
        // clsact qdisc, e.g. sch_ingress not loaded): warn, keep filtering.
        if let Err(e) = egress::attach(egress, root, iface) {
            tracing::warn!(
                "{iface}: {e}; transfer quotas count no downloads on it (upload and \
                 enforcement are unaffected)"
            );
        }
        Ok(mode)
    }

    pub fn meta(&self) -> Result<Meta, LoaderError> {
        self.maps.meta()
    }

    pub fn set_meta(&mut self, meta: &Meta) -> Result<(), LoaderError> {
        self.maps.set_meta(meta)
    }

    /// All counters of one interface slot, by per-interface index.
    pub fn counters(&self, iface_slot: u32) -> Result<Vec<Counter>, LoaderError> {
        self.maps.counters(iface_slot)
    }

    pub fn program(&self) -> Result<&Xdp, LoaderError> {
        Ok(self
            .ebpf
            .program(PROGRAM_NAME)
            .ok_or(LoaderError::Missing(PROGRAM_NAME))?
            .try_into()?)
    }

    /// How many instructions the verifier walked for each program of the
    /// object (`None` where the kernel does not say): a figure for checks.
    pub fn verified_instructions(&self) -> Vec<(&'static str, Option<u32>)> {
        [
            PROGRAM_NAME,
            EVENTS_PROGRAM_NAME,
            REPLY_PROGRAM_NAME,
            EGRESS_PROGRAM_NAME,
        ]
        .into_iter()
        .map(|name| {
            let n = self
                .ebpf
                .program(name)
                .and_then(|p| p.info().ok())
                .and_then(|i| i.verified_instruction_count());
            (name, n)
        })
        .collect()
    }

    /// Writes `policy` into the inactive slot and flips to it, keeping the
    /// META record as it is (but for the generation it describes). On error
    /// the active policy is untouched and keeps enforcing.
    pub fn apply(&mut self, policy: &CompiledPolicy) -> Result<u32, LoaderError> {
        let meta = self.maps.meta()?;
        self.apply_with_meta(policy, &meta)
    }

    /// The whole apply, all-or-nothing: everything that can be checked
    /// (image, capacities, the META record's size) is checked first; the
    /// inactive slot is written, then META (describing the new generation),
    /// then `ACTIVE` is flipped. If the flip fails, META is put back. So
    /// whatever fails, packets see exactly the old policy or exactly the new
    /// one, and META says which.
    pub fn apply_with_meta(
        &mut self,
        policy: &CompiledPolicy,
        meta: &Meta,
    ) -> Result<u32, LoaderError> {
        self.apply_with_options(policy, meta, ImageOptions::default())
    }

    /// [`Filter::apply_with_meta`] with the image built at `opts` (the clock
    /// scheduled zones' transitions start from).
    pub fn apply_with_options(
        &mut self,
        policy: &CompiledPolicy,
        meta: &Meta,
        opts: ImageOptions,
    ) -> Result<u32, LoaderError> {
        self.resync()?;
        let next = self.generation.wrapping_add(1);
        // Lanes stay with their zones: as the enforced slot has them (the
        // target usually holds the same, from `prefill_standby`).
        let target = slot_of(next) as usize;
        let prev = self.shadow[1 - target]
            .as_ref()
            .or(self.shadow[target].as_ref())
            .map(Compact::lanes)
            .unwrap_or_default();
        // (A slot read back from the kernel has no shadow: placement starts
        // afresh, and a lane that changes hands is rewritten, correctly.)
        let image = Compact::build_after(policy, opts, &prev)?;
        self.check_capacity(slot_of(next), &image)?;
        let blob = Meta {
            generation: next,
            ..meta.clone()
        }
        .encode()?;
        let previous = self.maps.meta_blob()?;
        self.write_into(slot_of(next), image)?;
        self.maps.set_meta_blob(blob)?;
        if let Err(e) = self.maps.set_active(next) {
            if let Err(undo) = self.maps.set_meta_blob(previous) {
                tracing::error!(
                    "the flip failed ({e}) and restoring the META record failed too ({undo}); \
                     `status` will report the policy as unknown until the next apply"
                );
            }
            return Err(e);
        }
        self.generation = next;
        self.last_flip = Some(Instant::now());
        Ok(next)
    }

    /// The enforced slot and the new image must fit the shared maps together
    /// (checked only when the enforced slot's content is known; otherwise a
    /// write that overflows fails cleanly part-way, in the inactive slot).
    fn check_capacity(&self, target: u32, image: &Compact) -> Result<(), LoaderError> {
        // Each slot owns half of BL4_BITS: the enforced slot does not count.
        let (need, max) = (
            image.shared_entries().bl4_hosts,
            self.maps.shared_capacity()?.bl4_hosts,
        );
        if need > max {
            return Err(LoaderError::Bl4Capacity { need, max });
        }
        let Some(active) = self.shadow[1 - target as usize].as_ref() else {
            return Ok(());
        };
        let (a, n, max) = (
            active.shared_entries(),
            image.shared_entries(),
            self.maps.shared_capacity()?,
        );
        for (map, active, new, max) in [
            (filter_common::MAP_ALLOW4, a.allow4, n.allow4, max.allow4),
            (filter_common::MAP_ALLOW6, a.allow6, n.allow6, max.allow6),
        ] {
            if active + new > max {
                return Err(LoaderError::Capacity {
                    map,
                    need: active + new,
                    active,
                    new,
                    max,
                });
            }
        }
        Ok(())
    }

    /// Trusts nothing it did not read: if `ACTIVE` is not the generation this
    /// loader last flipped to (another writer, or a flip whose outcome is
    /// unknown), both slot shadows are dropped and read back before use.
    fn resync(&mut self) -> Result<(), LoaderError> {
        let kernel = self.maps.active_generation()?;
        if kernel != self.generation {
            tracing::warn!(
                "ACTIVE is generation {kernel}, this loader expected {}; re-reading both slots",
                self.generation
            );
            self.generation = kernel;
            self.shadow = [None, None];
        }
        Ok(())
    }

    /// The generation `ACTIVE` holds in the kernel now.
    pub fn kernel_generation(&self) -> Result<u32, LoaderError> {
        self.maps.active_generation()
    }

    /// Test hook: fail the map writer's `after`-th write step from now on
    /// (`None` disarms). See [`fault`].
    #[doc(hidden)]
    pub fn inject_fault(&self, after: Option<u64>) {
        self.maps.faults.arm(after);
    }

    /// Test hook: map entries written since load (a batch of n counts n).
    #[doc(hidden)]
    pub fn entries_written(&self) -> u64 {
        self.maps.faults.written()
    }

    /// Test hook: true while an armed fault has not fired yet.
    #[doc(hidden)]
    pub fn fault_pending(&self) -> bool {
        self.maps.faults.pending()
    }

    /// Writes the enforced policy into the standby slot as well (no flip), so
    /// the next apply is a diff against it rather than a full write into an
    /// empty or stale slot. Returns false when there was nothing to do.
    pub fn prefill_standby(&mut self) -> Result<bool, LoaderError> {
        let active = slot_of(self.generation);
        let standby = 1 - active;
        let Some(image) = self.shadow[active as usize].clone() else {
            return Ok(false);
        };
        if self.generation == 0 || self.shadow[standby as usize].as_ref() == Some(&image) {
            return Ok(false);
        }
        self.write_into(standby, image)?;
        Ok(true)
    }

    /// Makes inactive `slot` hold `image`, touching only what differs.
    fn write_into(&mut self, slot: u32, image: Compact) -> Result<(), LoaderError> {
        // The slot was live until the last flip: let packets that read the
        // old generation finish with it first.
        if let Some(at) = self.last_flip {
            let since = at.elapsed();
            if since < self.opts.quiesce {
                thread::sleep(self.opts.quiesce - since);
            }
        }
        // Until the write completes the slot's content is unknown; a failure
        // leaves `None` so the next attempt reads it back instead of trusting
        // a stale shadow.
        match self.shadow[slot as usize].take() {
            Some(old) => self.maps.write_compact(slot, &old, &image)?,
            // Read back from the kernel: possibly inconsistent after a failed
            // write, so diff entry by entry against the expanded image.
            None => {
                let old = self.maps.read_slot(slot)?;
                self.maps.write_slot(slot, &old, &image.expand())?;
            }
        }
        self.shadow[slot as usize] = Some(image);
        release_freed_memory();
        Ok(())
    }

    /// What the kernel holds in `slot`, read entry by entry (slow; for checks
    /// and for recovering after a failed write).
    pub fn read_slot(&self, slot: u32) -> Result<SlotImage, LoaderError> {
        self.maps.read_slot(slot)
    }

    /// Runs one frame through the loaded program (BPF_PROG_TEST_RUN) and
    /// returns the XDP action.
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, LoaderError> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        };
        Ok(self.program()?.test_run(opts)?.return_value)
    }

    /// Runs one frame through the loaded program and returns the XDP action
    /// and the frame as the program left it (a rejecting zone's reply).
    pub fn test_run_output(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), LoaderError> {
        // Room for any frame TEST_RUN takes, grown by a reply's headers.
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        };
        let r = self.program()?.test_run(opts)?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }

    /// Runs one frame through the loaded egress program (BPF_PROG_TEST_RUN)
    /// as if the host sent it: the transfer quotas' download counting.
    pub fn test_run_egress(&self, frame: &[u8]) -> Result<i32, LoaderError> {
        let egress: &SchedClassifier = self
            .ebpf
            .program(EGRESS_PROGRAM_NAME)
            .ok_or(LoaderError::Missing(EGRESS_PROGRAM_NAME))?
            .try_into()?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        };
        Ok(egress.test_run(opts)?.return_value as i32)
    }

    /// Runs `frame` `repeat` times in the kernel; the mean time per run as the
    /// kernel measured it (for benchmarks; counters move by `repeat`).
    pub fn time_run(&self, frame: &[u8], repeat: u32) -> Result<Duration, LoaderError> {
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        };
        Ok(self.program()?.test_run(opts)?.duration)
    }

    /// One counter of interface slot 0 (where BPF_PROG_TEST_RUN frames
    /// count), summed over CPUs.
    pub fn counter(
        &self,
        rule: u32,
        reason: Reason,
        verdict: Verdict,
    ) -> Result<Counter, LoaderError> {
        self.maps.counter(counter_index(rule, reason, verdict))
    }

    /// Takes a map out of the loaded object (tests without pins read
    /// `EVENTS` and set `EVENTS_CFG` through it); `None` if taken before.
    pub fn take_map(&mut self, name: &str) -> Option<aya::maps::Map> {
        self.ebpf.take_map(name)
    }

    /// The transfer quotas' usage of this object (once: it takes the map).
    pub fn take_quota_state(&mut self) -> Result<QuotaState, LoaderError> {
        use filter_common::MAP_QUOTA_USAGE;
        let map = self
            .ebpf
            .take_map(MAP_QUOTA_USAGE)
            .ok_or(LoaderError::Missing(MAP_QUOTA_USAGE))?;
        QuotaState::from_map(map)
    }

    /// The rate limits' state of this object (once: it takes the maps).
    pub fn take_rate_state(&mut self) -> Result<RateState, LoaderError> {
        use filter_common::{MAP_RATE_REAPED, MAP_RATE_SLOTS, MAP_RATE_ZONE};
        let mut take =
            |name: &'static str| self.ebpf.take_map(name).ok_or(LoaderError::Missing(name));
        RateState::from_maps(
            take(MAP_RATE_SLOTS)?,
            take(MAP_RATE_ZONE)?,
            take(MAP_RATE_REAPED)?,
        )
    }
}
