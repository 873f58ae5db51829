//! Bans: "drop this source until then", separate from the policy
//! (`portcullis ban`, fail2ban, CrowdSec). The daemon owns them: the set in
//! memory ([`set`]), the kernel maps ([`kernel`]), the state on disk
//! ([`store`]). The datapath enforces the expiry itself (filter-ebpf
//! bans.rs); the daemon only removes expired entries.
pub mod cli;
pub mod input;
pub mod kernel;
pub mod set;
pub mod store;

use std::path::{Path, PathBuf};

use filter_common::{Counter, BAN_FOREVER};
use serde::{Deserialize, Serialize};

pub use input::{parse_target, parse_ttl};
pub use set::{Ban, BanSet, Tally};
pub use store::DEFAULT_STATE_DIR;

use crate::policy::schedule::{kernel_tai_now_ns, tai_offset_s};
use kernel::BanMaps;
use store::{Rec, Store};

#[derive(Debug, thiserror::Error)]
pub enum BanError {
    #[error("`{input}`: {detail}")]
    Input { input: String, detail: String },
    #[error(
        "the ban list is full: {max} {family} {what} bans are the most the kernel map holds; \
         nothing was added (remove or flush some, or ban a covering prefix)"
    )]
    Full {
        what: &'static str,
        family: &'static str,
        max: u32,
    },
    #[error("more than {0} tags in use: nothing was added (flush an unused tag)")]
    TooManyTags(u32),
    #[error("{path}:{line}: corrupt ban state ({detail}); nothing was changed: the kernel keeps enforcing the bans it holds. Fix it, or move it aside to start from the bans the kernel holds")]
    Corrupt {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the ban map {0} is missing from the loaded program")]
    NoMap(&'static str),
    #[error("ban map {0}: {1}")]
    Map(&'static str, String),
}

impl BanError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> BanError {
        BanError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn input(input: &str, detail: impl Into<String>) -> BanError {
        BanError::Input {
            input: input.to_string(),
            detail: detail.into(),
        }
    }
}

/// What `ban add` asks for.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AddRequest {
    /// Addresses or prefixes (at most what fits in one request line).
    #[serde(default)]
    pub targets: Vec<String>,
    /// The bulk path: a file of addresses/prefixes, one a line (`#` comments),
    /// read by the daemon (bounded: [`input::MAX_BULK_BYTES`], [`input::MAX_BULK_LINES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Seconds; none: until removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_s: Option<u64>,
    #[serde(default)]
    pub tag: String,
    #[serde(default)]
    pub reason: String,
}

/// One ban as `ban list` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BanView {
    pub prefix: String,
    /// Seconds left; none: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_s: Option<u64>,
    /// RFC 3339 (UTC) expiry; none: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    pub tag: String,
    pub reason: String,
}

/// Totals for metrics and status.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BanStats {
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
    pub expired: u64,
    /// (tag, active bans, dropped packets, dropped bytes).
    pub tags: Vec<(String, u64, u64, u64)>,
}

/// A re-stated ban whose expiry moved less than this is left alone: CrowdSec
/// states durations relative to its answer, so each resync computes an
/// expiry a few milliseconds off the last.
const RESTATE_SLACK_NS: u64 = 2_000_000_000;

/// What [`Bans::sync`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncTally {
    pub tally: Tally,
    /// Bans skipped because the kernel map is full.
    pub full: u64,
    /// Bans skipped because another tag's ban of the prefix stands.
    pub held: u64,
}

/// The tag of bans adopted from the kernel without their state.
pub const ADOPTED_TAG: &str = "adopted";

/// The daemon's bans: set, kernel maps and state, kept in step.
pub struct Bans {
    set: BanSet,
    maps: BanMaps,
    store: Store,
    stats: BanStats,
}

impl Bans {
    /// Reads the state back, drops what expired meanwhile, and makes the
    /// kernel hold exactly that. A corrupt state is an error before any map
    /// is written.
    pub fn start(state_dir: &Path, mut maps: BanMaps) -> Result<Bans, BanError> {
        let offset = tai_offset_s();
        let (store, loaded) = Store::open(state_dir, offset)?;
        let now = kernel_tai_now_ns();
        let mut set = BanSet::new();
        let mut skipped = 0u64;
        let mut bans = loaded.bans;
        if !loaded.found {
            // No state here (first start, or the state directory was lost or
            // moved aside): keep what the kernel enforces; its tags' names and
            // the reasons are only on disk.
            bans = maps
                .kernel_bans()?
                .into_iter()
                .map(|(net, v)| Ban {
                    net,
                    expires_ns: v.expires_ns,
                    tag: if v.tag == 0 {
                        String::new()
                    } else {
                        ADOPTED_TAG.into()
                    },
                    reason: String::new(),
                })
                .collect();
            if !bans.is_empty() {
                tracing::warn!(
                    "no ban state in {}: adopted the {} bans the kernel holds (tagged \"{ADOPTED_TAG}\" \
                     where they had a tag; reasons are lost)",
                    state_dir.display(),
                    bans.len()
                );
            }
        }
        for b in &bans {
            if b.expires_ns <= now {
                skipped += 1;
                continue;
            }
            set.add(b)?;
        }
        set.take_ops();
        maps.rewrite(&set)?;
        if loaded.found {
            tracing::info!(
                "restored {} bans from {} ({skipped} expired while the daemon was away)",
                set.len(),
                state_dir.display()
            );
        }
        let mut bans = Bans {
            set,
            maps,
            store,
            stats: BanStats::default(),
        };
        bans.compact()?;
        Ok(bans)
    }

    fn compact(&mut self) -> Result<(), BanError> {
        let all = self.set.list(None);
        self.store.compact(&all, tai_offset_s())
    }

    fn after(&mut self, recs: &[Rec]) -> Result<(), BanError> {
        let ops = self.set.take_ops();
        self.maps.apply(ops)?;
        self.store.append(recs, tai_offset_s())?;
        if self.store.wants_compaction(self.set.len()) {
            self.compact()?;
        }
        Ok(())
    }

    /// `ban add`: every target is checked before any is added.
    pub fn add(&mut self, req: &AddRequest) -> Result<Tally, BanError> {
        let mut targets = Vec::new();
        for t in &req.targets {
            targets.push(parse_target(t)?);
        }
        if let Some(path) = &req.file {
            targets.extend(input::read_bulk(path)?);
        }
        if targets.is_empty() {
            return Err(BanError::input("", "no address or prefix to ban"));
        }
        input::check_tag(&req.tag)?;
        input::check_reason(&req.reason)?;
        let expires_ns = match req.for_s {
            None => BAN_FOREVER,
            Some(0) => return Err(BanError::input("0", "a ban must last longer than 0 s")),
            Some(s) => kernel_tai_now_ns().saturating_add(s.saturating_mul(1_000_000_000)),
        };
        self.check_room(&targets)?;
        let mut tally = Tally::default();
        let mut recs = Vec::with_capacity(targets.len());
        for net in targets {
            let ban = Ban {
                net,
                expires_ns,
                tag: req.tag.clone(),
                reason: req.reason.clone(),
            };
            if self.set.add(&ban)? {
                tally.added += 1;
            } else {
                tally.updated += 1;
            }
            recs.push(Rec::Add(ban));
        }
        self.after(&recs)?;
        self.stats.added += tally.added;
        self.stats.updated += tally.updated;
        Ok(tally)
    }

    /// Refuses a request that cannot fit whole (so that a full map leaves
    /// the list as it was).
    fn check_room(&self, targets: &[ipnet::IpNet]) -> Result<(), BanError> {
        let mut probe = set::Capacity::of(&self.set);
        for net in targets {
            if !self.set.contains(net) {
                probe.take(net)?;
            }
        }
        Ok(())
    }

    pub fn del(&mut self, targets: &[String]) -> Result<Tally, BanError> {
        let mut nets = Vec::new();
        for t in targets {
            nets.push(parse_target(t)?);
        }
        let mut tally = Tally::default();
        let mut recs = Vec::new();
        for net in nets {
            if self.set.remove(&net) {
                tally.removed += 1;
                recs.push(Rec::Del(net));
            }
        }
        self.after(&recs)?;
        self.stats.removed += tally.removed;
        Ok(tally)
    }

    pub fn flush(&mut self, tag: Option<&str>) -> Result<Tally, BanError> {
        let removed = self.set.flush(tag);
        self.after(&[Rec::Flush(tag.map(str::to_string))])?;
        self.stats.removed += removed;
        Ok(Tally {
            removed,
            ..Tally::default()
        })
    }

    /// A detector's batch (CrowdSec's decision stream): bans each with its
    /// own expiry, and removals; both touch only bans whose tag `owns`
    /// accepts (a detector must neither replace nor lift an operator's own
    /// ban of the same prefix). With `reconcile`, every owned ban not in `adds` is
    /// removed too (a full resync). A ban that does not fit is skipped and
    /// counted in `full`; the rest still apply, in one kernel update and one
    /// state append.
    pub fn sync(
        &mut self,
        adds: &[Ban],
        removes: &[ipnet::IpNet],
        owns: impl Fn(&str) -> bool,
        reconcile: bool,
    ) -> Result<SyncTally, BanError> {
        let mut t = SyncTally::default();
        let mut recs = Vec::with_capacity(adds.len() + removes.len());
        let mut gone: Vec<ipnet::IpNet> = removes
            .iter()
            .filter(|n| self.set.tag_of(n).is_some_and(&owns))
            .copied()
            .collect();
        if reconcile {
            let wanted: std::collections::HashSet<ipnet::IpNet> =
                adds.iter().map(|b| b.net).collect();
            gone.extend(
                self.set
                    .nets_tagged(&owns)
                    .into_iter()
                    .filter(|n| !wanted.contains(n)),
            );
        }
        for net in gone {
            if self.set.remove(&net) {
                t.tally.removed += 1;
                recs.push(Rec::Del(net));
            }
        }
        for ban in adds {
            input::check_tag(&ban.tag)?;
            // Someone else's ban of this prefix (an operator's, fail2ban's)
            // stands as it is: replacing it would let this detector's
            // delete lift it.
            if self.set.tag_of(&ban.net).is_some_and(|t| !owns(t)) {
                t.held += 1;
                continue;
            }
            // Re-stating the same ban (a resync) changes nothing.
            if self.set.tag_of(&ban.net) == Some(ban.tag.as_str())
                && self
                    .set
                    .expires_of(&ban.net)
                    .is_some_and(|e| e.abs_diff(ban.expires_ns) < RESTATE_SLACK_NS)
            {
                continue;
            }
            match self.set.add(ban) {
                Ok(true) => t.tally.added += 1,
                Ok(false) => t.tally.updated += 1,
                Err(BanError::Full { .. }) => {
                    t.full += 1;
                    continue;
                }
                Err(e) => return Err(e),
            }
            recs.push(Rec::Add(ban.clone()));
        }
        if !recs.is_empty() {
            self.after(&recs)?;
        }
        self.stats.added += t.tally.added;
        self.stats.updated += t.tally.updated;
        self.stats.removed += t.tally.removed;
        Ok(t)
    }

    /// Removes what expired (the datapath already stopped dropping it).
    pub fn prune(&mut self) -> Result<u64, BanError> {
        let n = self.set.expire(kernel_tai_now_ns());
        if n > 0 {
            let ops = self.set.take_ops();
            self.maps.apply(ops)?;
            self.stats.expired += n;
        }
        Ok(n)
    }

    pub fn list(&self, tag: Option<&str>) -> Vec<BanView> {
        let now = kernel_tai_now_ns();
        let offset = tai_offset_s();
        self.set
            .list(tag)
            .into_iter()
            .map(|b| view(&b, now, offset))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub fn stats(&self) -> BanStats {
        let counters = self.maps.tag_counters();
        let mut s = self.stats.clone();
        s.tags = self
            .set
            .per_tag()
            .into_iter()
            .map(|(id, name, n)| {
                let c = counters
                    .get(id as usize)
                    .copied()
                    .unwrap_or(Counter::default());
                (name, n, c.packets, c.bytes)
            })
            .collect();
        s
    }
}

fn view(b: &Ban, now: u64, tai_offset_s: i64) -> BanView {
    let (remaining_s, expires) = if b.expires_ns == BAN_FOREVER {
        (None, None)
    } else {
        let unix_ns = b.expires_ns as i128 - tai_offset_s as i128 * 1_000_000_000;
        let at = jiff::Timestamp::from_nanosecond(unix_ns)
            .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
            .ok();
        (Some(b.expires_ns.saturating_sub(now) / 1_000_000_000), at)
    };
    BanView {
        prefix: b.net.to_string(),
        remaining_s,
        expires,
        tag: b.tag.clone(),
        reason: b.reason.clone(),
    }
}
