//! The pin root: where maps and XDP links live so the filter outlasts the daemon.
//!
//! ```text
//! <root>/maps/<MAP>     every map of the object (shared by old and new program)
//! <root>/links/<iface>  one XDP bpf_link per interface
//! ```
//!
//! A new daemon loads its program over the pinned maps (same policy slots,
//! counters, generation) and swaps the program inside each pinned link with
//! `bpf_link_update`: the old program filters until the new one takes over.
use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, Map, MapData, MapInfo, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpMode},
        Xdp,
    },
};
use filter_common::{
    iface_counter_index, Counter, MetaBlob, MAP_ACTIVE, MAP_COUNTERS, MAP_META, NUM_COUNTERS,
};

use super::{meta::Meta, LoaderError};

/// Default pin root.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/portcullis";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Debug, Clone)]
pub struct PinRoot {
    root: PathBuf,
}

/// How an interface ended up filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver (XDP native).
    Native,
    /// In the generic stack path (the driver refused native XDP).
    Generic,
}

impl AttachMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LoaderError + '_ {
    move |source| LoaderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl PinRoot {
    pub fn new(root: impl Into<PathBuf>) -> PinRoot {
        PinRoot { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// Where the enforced filter's maps are pinned.
    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    /// Where a migration pins the new layout's maps until they take over.
    pub fn next_dir(&self) -> PathBuf {
        self.root.join("next")
    }

    /// Where the old layout's maps are moved while a migration completes.
    pub fn retired_dir(&self) -> PathBuf {
        self.root.join("retired")
    }

    pub fn link(&self, iface: &str) -> PathBuf {
        self.root.join("links").join(iface)
    }

    /// True when a previous run left maps here.
    pub fn has_maps(&self) -> bool {
        self.map(MAP_ACTIVE).exists()
    }

    /// Creates `maps/` and `links/` on a bpffs. The default root's bpffs is
    /// mounted if missing; any other root must already be on one.
    pub fn prepare(&self) -> Result<(), LoaderError> {
        let parent = self.root.parent().unwrap_or(Path::new("/"));
        if !is_bpffs(parent) && !is_bpffs(&self.root) {
            if self.root == Path::new(DEFAULT_PIN_ROOT) {
                mount_bpffs(parent)?;
            } else {
                return Err(LoaderError::NotBpffs(self.root.clone()));
            }
        }
        for dir in [self.root.join("maps"), self.root.join("links")] {
            fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(())
    }

    /// Interfaces with a pinned link.
    pub fn pinned_links(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root.join("links"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// Checks every pinned map against the object's definition: a pin from an
    /// incompatible build must not be handed to this program.
    pub fn check_compatible(&self, object: &[u8]) -> Result<(), LoaderError> {
        let obj = aya_obj::Object::parse(object).map_err(|e| LoaderError::Object(e.to_string()))?;
        for (name, def) in &obj.maps {
            let path = self.map(name);
            if !path.exists() {
                continue;
            }
            let info = MapInfo::from_pin(&path).map_err(LoaderError::map_named(name))?;
            let found = (info.key_size(), info.value_size(), info.max_entries());
            let want = (def.key_size(), def.value_size(), def.max_entries());
            if found != want {
                return Err(LoaderError::IncompatiblePin {
                    path,
                    detail: format!(
                        "pinned (key, value, entries) = {found:?}, this build needs {want:?}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Attaches `program` to `iface`: atomically into an existing pinned link,
    /// else as a new link that is pinned: in `force`d mode, or native with
    /// generic if the driver refuses. Returns the mode, or `None` for an
    /// adopted link (mode unchanged).
    pub fn attach(
        &self,
        program: &mut Xdp,
        iface: &str,
        force: Option<AttachMode>,
    ) -> Result<Option<AttachMode>, LoaderError> {
        let path = self.link(iface);
        if path.exists() {
            let pinned = PinnedLink::from_pin(&path).map_err(|e| LoaderError::Link {
                iface: iface.into(),
                detail: e.to_string(),
            })?;
            let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| LoaderError::Link {
                iface: iface.into(),
                detail: e.to_string(),
            })?;
            // bpf_link_update: the old program runs until this returns.
            program.attach_to_link(link)?;
            return Ok(None);
        }
        let (id, mode) = match force {
            Some(AttachMode::Native) => (
                program
                    .attach(iface, XdpMode::Driver)
                    .map_err(|e| LoaderError::Link {
                        iface: iface.into(),
                        detail: format!(
                            "native XDP refused ({e}); without --mode native, generic XDP \
                             would be used"
                        ),
                    })?,
                AttachMode::Native,
            ),
            Some(AttachMode::Generic) => {
                (program.attach(iface, XdpMode::Skb)?, AttachMode::Generic)
            }
            None => match program.attach(iface, XdpMode::Driver) {
                Ok(id) => (id, AttachMode::Native),
                Err(native) => {
                    tracing::warn!(
                        "{iface}: native XDP refused ({native}); using generic XDP, which runs \
                     later in the stack and is slower"
                    );
                    (program.attach(iface, XdpMode::Skb)?, AttachMode::Generic)
                }
            },
        };
        let link = program.take_link(id)?;
        let fd_link = FdLink::try_from(link).map_err(|e| LoaderError::Link {
            iface: iface.into(),
            detail: format!("the kernel attached without a bpf_link, which cannot be pinned: {e}"),
        })?;
        fd_link.pin(&path).map_err(|e| LoaderError::Link {
            iface: iface.into(),
            detail: format!("pinning at {}: {e}", path.display()),
        })?;
        Ok(Some(mode))
    }

    /// Kernel ids of the pinned XDP links (to watch them go away).
    pub fn link_ids(&self) -> Vec<u32> {
        self.pinned_links()
            .iter()
            .filter_map(|iface| PinnedLink::from_pin(self.link(iface)).ok())
            .filter_map(|pinned| FdLink::from(pinned).info().ok().map(|i| i.id()))
            .collect()
    }

    /// Waits until none of `ids` is a live link any more: the kernel releases
    /// an unpinned link shortly after its last handle closes, not at once.
    /// Returns the ids still alive at the deadline.
    pub fn wait_links_released(ids: &[u32], timeout: std::time::Duration) -> Vec<u32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let alive: Vec<u32> = aya::programs::loaded_links()
                .filter_map(Result::ok)
                .map(|l| l.id())
                .filter(|id| ids.contains(id))
                .collect();
            if alive.is_empty() || std::time::Instant::now() >= deadline {
                return alive;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Removes the pinned link of `iface`: the kernel detaches the program once
    /// no process holds the link any more.
    pub fn unpin_link(&self, iface: &str) -> Result<(), LoaderError> {
        super::egress::detach(self, iface)?;
        let path = self.link(iface);
        fs::remove_file(&path).map_err(io(&path))
    }

    /// Removes every pin and the root itself: the filter is gone once the
    /// daemon (if any) lets go of its handles.
    pub fn remove_all(&self) -> Result<(), LoaderError> {
        // The egress filters of 6.1 are not pins: removed by interface.
        for iface in self.pinned_links() {
            super::egress::detach(self, &iface)?;
        }
        for sub in ["links", "egress", "maps", "next", "retired"] {
            let dir = self.root.join(sub);
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    fs::remove_file(e.path()).map_err(io(&e.path()))?;
                }
            }
            if dir.exists() {
                fs::remove_dir(&dir).map_err(io(&dir))?;
            }
        }
        match fs::remove_dir(&self.root) {
            // A root that is itself a bpffs mount point stays, empty.
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other.map_err(io(&self.root)),
        }
    }

    /// Opens the pinned state read-only (for `status` without a daemon).
    pub fn open(&self) -> Result<PinnedState, LoaderError> {
        let open = |name: &'static str| -> Result<Map, LoaderError> {
            let data = MapData::from_pin(self.map(name)).map_err(LoaderError::map(name))?;
            Map::from_map_data(data).map_err(LoaderError::map(name))
        };
        // Pins of an older layout (before an upgrade): their counters are
        // read in that layout's geometry and shown in this one's.
        let older = match super::migrate::pinned_layout(self)? {
            Some(v) if v < filter_common::LAYOUT_VERSION => filter_common::counter_layout(v),
            _ => None,
        };
        Ok(PinnedState {
            older,
            active: Array::try_from(open(MAP_ACTIVE)?).map_err(LoaderError::map(MAP_ACTIVE))?,
            counters: PerCpuArray::try_from(open(MAP_COUNTERS)?)
                .map_err(LoaderError::map(MAP_COUNTERS))?,
            meta: Array::try_from(open(MAP_META)?).map_err(LoaderError::map(MAP_META))?,
        })
    }
}

/// Read-only handles on the pinned maps that describe the running filter.
pub struct PinnedState {
    older: Option<filter_common::CounterLayout>,
    active: Array<MapData, u32>,
    counters: PerCpuArray<MapData, Counter>,
    meta: Array<MapData, MetaBlob>,
}

impl PinnedState {
    /// Replaces the META record (one array write).
    pub fn set_meta(&mut self, meta: &Meta) -> Result<(), LoaderError> {
        self.meta
            .set(0, meta.encode()?, 0)
            .map_err(LoaderError::map(MAP_META))
    }

    pub fn generation(&self) -> Result<u32, LoaderError> {
        self.active.get(&0, 0).map_err(LoaderError::map(MAP_ACTIVE))
    }

    pub fn meta(&self) -> Result<Meta, LoaderError> {
        let blob = self.meta.get(&0, 0).map_err(LoaderError::map(MAP_META))?;
        Meta::decode(&blob)
    }

    /// The scheduled zones of the slot `generation` lives in: (zone id, its
    /// `SCHED` entry). Empty when the pins have no `SCHED` (an older layout).
    pub fn schedules(
        &self,
        root: &PinRoot,
        generation: u32,
    ) -> Result<Vec<(u32, filter_common::Sched)>, LoaderError> {
        zone_entries(
            root,
            generation,
            filter_common::MAP_SCHED,
            filter_common::ZoneInfo::SCHEDULED,
        )
    }

    /// One interface slot's counters, summed over CPUs, by per-interface index.
    pub fn counters(&self, iface_slot: u32) -> Result<Vec<Counter>, LoaderError> {
        let Some(old) = self.older else {
            return read_counters(&self.counters, iface_slot);
        };
        let mut out = vec![Counter::default(); NUM_COUNTERS as usize];
        let per = old.per_iface();
        for i in 0..per {
            let index = iface_slot * per + i;
            if let Some(new) = super::migrate::new_index(&old, index) {
                let c = read_counter(&self.counters, index)?;
                let cell = &mut out[(new % NUM_COUNTERS) as usize];
                cell.packets += c.packets;
                cell.bytes += c.bytes;
            }
        }
        Ok(out)
    }
}

/// All `NUM_COUNTERS` cells of one interface slot, summed over CPUs.
pub(crate) fn read_counters(
    map: &PerCpuArray<MapData, Counter>,
    iface_slot: u32,
) -> Result<Vec<Counter>, LoaderError> {
    (0..NUM_COUNTERS)
        .map(|i| read_counter(map, iface_counter_index(iface_slot, i)))
        .collect()
}

/// One `COUNTERS` cell, summed over CPUs.
pub(crate) fn read_counter(
    map: &PerCpuArray<MapData, Counter>,
    index: u32,
) -> Result<Counter, LoaderError> {
    let per_cpu = map.get(&index, 0).map_err(LoaderError::map(MAP_COUNTERS))?;
    Ok(per_cpu.iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    }))
}

// The field's integer type differs between architectures.
#[allow(clippy::unnecessary_cast)]
fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

fn mount_bpffs(at: &Path) -> Result<(), LoaderError> {
    fs::create_dir_all(at).map_err(io(at))?;
    tracing::info!("mounting bpffs at {}", at.display());
    nix::mount::mount(
        Some("bpf"),
        at,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| LoaderError::Io {
        path: at.to_path_buf(),
        source: e.into(),
    })
}

/// The entries of per-(slot, zone) map `name` for the zones of the slot
/// `generation` lives in whose flags have `flag`: (zone id, entry). Empty
/// when the pins have no such map (an older layout).
pub(crate) fn zone_entries<T: aya::Pod>(
    root: &PinRoot,
    generation: u32,
    name: &'static str,
    flag: u32,
) -> Result<Vec<(u32, T)>, LoaderError> {
    use filter_common::{slot_of, zone_index, ZoneInfo, MAP_ZONES, ZONE_SLOTS};
    if !root.map(name).exists() {
        return Ok(Vec::new());
    }
    let open = |name: &'static str| -> Result<Map, LoaderError> {
        let data = MapData::from_pin(root.map(name)).map_err(LoaderError::map(name))?;
        Map::from_map_data(data).map_err(LoaderError::map(name))
    };
    let zones: Array<MapData, ZoneInfo> =
        Array::try_from(open(MAP_ZONES)?).map_err(LoaderError::map(MAP_ZONES))?;
    let entries: Array<MapData, T> =
        Array::try_from(open(name)?).map_err(LoaderError::map(name))?;
    let slot = slot_of(generation);
    let mut out = Vec::new();
    for z in 1..ZONE_SLOTS {
        let i = zone_index(slot, z);
        let info = zones.get(&i, 0).map_err(LoaderError::map(MAP_ZONES))?;
        if info.flags & flag != 0 {
            out.push((z, entries.get(&i, 0).map_err(LoaderError::map(name))?));
        }
    }
    Ok(out)
}
