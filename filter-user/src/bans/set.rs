//! The ban list in memory and what the kernel must hold for it: each entry's
//! value (with its *effective* expiry: the latest of every ban covering it, so
//! the datapath's most-specific-entry-decides lookup agrees with "banned while
//! any covering ban is in force"), and the prefilter bits (`BAN_BITS`,
//! reference-counted: a bit is set while some entry marks it). Pure: the
//! changes come out as [`Op`]s for `kernel.rs`, so it is tested without BPF.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use filter_common::{
    ban_h32, ban_h48, ban_v6_top16, BanValue, BAN_BITS_LEN, BAN_HOSTS_MAX, BAN_NETS_MAX, BAN_TAGS,
    BAN_TOP4, BAN_TOP6, BAN_V4_16, BAN_V4_24, BAN_V6_16, BAN_V6_32, BAN_V6_48,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::BanError;

/// A ban entry's place: family, first address (as u128; IPv4 in the low 32
/// bits) and prefix length. Ordered so that a prefix's contents follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub v6: bool,
    pub start: u128,
    pub len: u8,
}

impl Key {
    pub fn of(net: &IpNet) -> Key {
        match net.trunc() {
            IpNet::V4(n) => Key {
                v6: false,
                start: u32::from(n.network()) as u128,
                len: n.prefix_len(),
            },
            IpNet::V6(n) => Key {
                v6: true,
                start: u128::from(n.network()),
                len: n.prefix_len(),
            },
        }
    }

    pub fn net(&self) -> IpNet {
        if self.v6 {
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(self.start), self.len).expect("valid length"))
        } else {
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(self.start as u32), self.len).expect("valid length"),
            )
        }
    }

    fn bits(&self) -> u8 {
        if self.v6 {
            128
        } else {
            32
        }
    }

    /// A single address (a hash entry), not a prefix (an LPM entry).
    pub fn is_host(&self) -> bool {
        self.len == self.bits()
    }

    fn last(&self) -> u128 {
        let host = self.bits() - self.len;
        if host == 0 {
            self.start
        } else {
            self.start | (u128::MAX >> (128 - host as u32))
        }
    }

    /// The key of the length-`len` prefix that contains this one.
    fn ancestor(&self, len: u8) -> Key {
        let host = (self.bits() - len) as u32;
        let start = if host >= 128 {
            0
        } else {
            self.start & !((1u128 << host) - 1)
        };
        Key {
            v6: self.v6,
            start,
            len,
        }
    }

    fn addr(&self) -> IpAddr {
        self.net().network()
    }

    /// The global `BAN_BITS` bit numbers this entry sets (see filter-common).
    pub fn marks(&self) -> Vec<u32> {
        let word_bit = |region: u32, n: u32| region * 64 + n;
        // The bits of a region of `/width` units from unit `first`: one, or
        // every unit a prefix shorter than `/width` touches.
        let spread = |region: u32, first: u32, width: u8, len: u8| -> Vec<u32> {
            let span = 1u32 << (width - len.min(width));
            (first..first + span).map(|n| word_bit(region, n)).collect()
        };
        let top = |region: u32, octet: u32, len: u8| spread(region, octet, 8, len);
        let spread16 = |region: u32, top16: u32, len: u8| spread(region, top16, 16, len);
        if self.v6 {
            let a = match self.addr() {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(_) => unreachable!(),
            };
            let mut bits = top(BAN_TOP6, a[0] as u32, self.len);
            bits.extend(match self.len {
                48.. => vec![word_bit(BAN_V6_48, ban_h48(&a))],
                32..=47 => vec![word_bit(BAN_V6_32, ban_h32(&a))],
                16..=31 => vec![word_bit(BAN_V6_16, ban_v6_top16(&a))],
                len => spread16(BAN_V6_16, ban_v6_top16(&a), len),
            });
            bits
        } else {
            let a = self.start as u32;
            let mut bits = top(BAN_TOP4, a >> 24, self.len);
            bits.extend(match self.len {
                24.. => vec![word_bit(BAN_V4_24, a >> 8)],
                16..=23 => vec![word_bit(BAN_V4_16, a >> 16)],
                len => spread16(BAN_V4_16, a >> 16, len),
            });
            bits
        }
    }
}

/// One ban as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub net: IpNet,
    /// CLOCK_TAI nanoseconds; `BAN_FOREVER` for no expiry.
    pub expires_ns: u64,
    pub tag: String,
    pub reason: String,
}

#[derive(Clone, Debug)]
struct Entry {
    expires_ns: u64,
    tag: u32,
    reason: String,
    /// What the kernel holds: the latest expiry of this and every covering ban.
    eff: u64,
}

/// A change the kernel maps must follow, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put(Key, BanValue),
    Del(Key),
    /// `BAN_BITS[index] = value`.
    Word(u32, u64),
    /// Zero a tag's counters (the id was freed and is reused).
    ZeroTag(u32),
}

/// Room left in the kernel maps, to refuse a request that cannot fit whole.
pub struct Capacity {
    hosts: [u32; 2],
    nets: [u32; 2],
}

impl Capacity {
    pub fn of(s: &BanSet) -> Capacity {
        Capacity {
            hosts: s.hosts,
            nets: s.nets,
        }
    }

    pub fn take(&mut self, net: &IpNet) -> Result<(), BanError> {
        let key = Key::of(net);
        let fam = key.v6 as usize;
        let (count, max, what) = if key.is_host() {
            (&mut self.hosts[fam], BAN_HOSTS_MAX, "single-address")
        } else {
            (&mut self.nets[fam], BAN_NETS_MAX, "prefix")
        };
        if *count >= max {
            return Err(BanError::Full {
                what,
                family: if key.v6 { "IPv6" } else { "IPv4" },
                max,
            });
        }
        *count += 1;
        Ok(())
    }
}

/// Outcome counts of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub added: u64,
    pub updated: u64,
    pub removed: u64,
}

pub struct BanSet {
    entries: BTreeMap<Key, Entry>,
    /// Tag id → name (id 0 is the empty tag) and how many entries use it.
    tags: Vec<Option<(String, u64)>>,
    tag_ids: HashMap<String, u32>,
    marks: HashMap<u32, u32>,
    words: Vec<u64>,
    hosts: [u32; 2],
    nets: [u32; 2],
    /// Words changed since the last `take_ops` (written last, in one pass).
    dirty: BTreeSet<u32>,
    ops: Vec<Op>,
}

impl Default for BanSet {
    fn default() -> Self {
        Self::new()
    }
}

impl BanSet {
    pub fn new() -> BanSet {
        let mut tags = vec![None; BAN_TAGS as usize];
        tags[0] = Some((String::new(), 0));
        let mut tag_ids = HashMap::new();
        tag_ids.insert(String::new(), 0);
        BanSet {
            entries: BTreeMap::new(),
            tags,
            tag_ids,
            marks: HashMap::new(),
            words: vec![0; BAN_BITS_LEN as usize],
            hosts: [0; 2],
            nets: [0; 2],
            dirty: BTreeSet::new(),
            ops: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The prefilter words as they should be (for a full rewrite).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Every entry's kernel value (for a full rewrite).
    pub fn kernel_entries(&self) -> impl Iterator<Item = (Key, BanValue)> + '_ {
        self.entries.iter().map(|(k, e)| (*k, value(e)))
    }

    pub fn contains(&self, net: &IpNet) -> bool {
        self.entries.contains_key(&Key::of(net))
    }

    /// Takes the kernel changes made since the last call: entries first,
    /// then the prefilter words (a bit is set only once its entry is there).
    pub fn take_ops(&mut self) -> Vec<Op> {
        let mut ops = std::mem::take(&mut self.ops);
        for w in std::mem::take(&mut self.dirty) {
            ops.push(Op::Word(w, self.words[w as usize]));
        }
        ops
    }

    fn tag_id(&mut self, tag: &str) -> Result<u32, BanError> {
        if let Some(id) = self.tag_ids.get(tag) {
            return Ok(*id);
        }
        let free = self
            .tags
            .iter()
            .position(|t| t.is_none())
            .ok_or(BanError::TooManyTags(BAN_TAGS - 1))?;
        self.tags[free] = Some((tag.to_string(), 0));
        self.tag_ids.insert(tag.to_string(), free as u32);
        self.ops.push(Op::ZeroTag(free as u32));
        Ok(free as u32)
    }

    fn tag_ref(&mut self, id: u32, delta: i64) {
        let Some((name, n)) = self.tags[id as usize].as_mut() else {
            return;
        };
        *n = n.saturating_add_signed(delta);
        if *n == 0 && id != 0 {
            self.tag_ids.remove(name.as_str());
            self.tags[id as usize] = None;
        }
    }

    pub fn tag_name(&self, id: u32) -> Option<&str> {
        self.tags
            .get(id as usize)?
            .as_ref()
            .map(|(n, _)| n.as_str())
    }

    /// Active entries per tag name (the empty tag included while it has any).
    pub fn per_tag(&self) -> Vec<(u32, String, u64)> {
        self.tags
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|(n, c)| (i as u32, n.clone(), *c)))
            .filter(|(i, _, c)| *i != 0 || *c > 0)
            .collect()
    }

    fn mark(&mut self, key: &Key, on: bool) {
        for bit in key.marks() {
            let n = self.marks.entry(bit).or_insert(0);
            let was = *n;
            if on {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
            }
            let now = *n;
            if now == 0 {
                self.marks.remove(&bit);
            }
            if (was == 0) != (now == 0) {
                let (w, m) = ((bit / 64) as usize, 1u64 << (bit % 64));
                if now == 0 {
                    self.words[w] &= !m;
                } else {
                    self.words[w] |= m;
                }
                self.dirty.insert(w as u32);
            }
        }
    }

    /// Latest own expiry of the bans strictly covering `key`.
    fn cover_max(&self, key: &Key) -> u64 {
        (1..key.len)
            .filter_map(|l| self.entries.get(&key.ancestor(l)))
            .map(|e| e.expires_ns)
            .max()
            .unwrap_or(0)
    }

    /// Recomputes the effective expiry of `key`'s entry and everything it
    /// covers, emitting puts for what changed (or for `key`, always).
    fn refresh_under(&mut self, key: &Key, include_self: bool) {
        let inside: Vec<Key> = self
            .entries
            .range(
                *key..=Key {
                    v6: key.v6,
                    start: key.last(),
                    len: u8::MAX,
                },
            )
            .map(|(k, _)| *k)
            .filter(|k| k.len > key.len || (include_self && k == key))
            .collect();
        for k in inside {
            let cover = self.cover_max(&k);
            let e = self.entries.get_mut(&k).expect("listed above");
            let eff = e.expires_ns.max(cover);
            if eff != e.eff || k == *key {
                e.eff = eff;
                let v = value(e);
                self.ops.push(Op::Put(k, v));
            }
        }
    }

    /// Adds or replaces a ban (a second ban of the same prefix replaces the
    /// first: a detector that bans again sets the new expiry).
    pub fn add(&mut self, ban: &Ban) -> Result<bool, BanError> {
        let key = Key::of(&ban.net);
        let fam = key.v6 as usize;
        let existed = self.entries.contains_key(&key);
        if !existed {
            Capacity::of(self).take(&ban.net)?;
        }
        let tag = self.tag_id(&ban.tag)?;
        let entry = Entry {
            expires_ns: ban.expires_ns,
            tag,
            reason: ban.reason.clone(),
            eff: 0,
        };
        self.tag_ref(tag, 1);
        if let Some(old) = self.entries.insert(key, entry) {
            self.tag_ref(old.tag, -1);
        } else {
            if key.is_host() {
                self.hosts[fam] += 1;
            } else {
                self.nets[fam] += 1;
            }
            self.mark(&key, true);
        }
        self.refresh_under(&key, true);
        Ok(!existed)
    }

    /// The tag of the ban of exactly this prefix.
    pub fn tag_of(&self, net: &IpNet) -> Option<&str> {
        let e = self.entries.get(&Key::of(net))?;
        self.tag_name(e.tag)
    }

    /// The own expiry of the ban of exactly this prefix.
    pub fn expires_of(&self, net: &IpNet) -> Option<u64> {
        self.entries.get(&Key::of(net)).map(|e| e.expires_ns)
    }

    /// The prefixes whose ban has a tag `pred` accepts.
    pub fn nets_tagged(&self, pred: impl Fn(&str) -> bool) -> Vec<IpNet> {
        self.entries
            .iter()
            .filter(|(_, e)| self.tag_name(e.tag).is_some_and(&pred))
            .map(|(k, _)| k.net())
            .collect()
    }

    /// Removes the ban of exactly this prefix; `false` if there was none.
    pub fn remove(&mut self, net: &IpNet) -> bool {
        let key = Key::of(net);
        let Some(old) = self.entries.remove(&key) else {
            return false;
        };
        let fam = key.v6 as usize;
        if key.is_host() {
            self.hosts[fam] -= 1;
        } else {
            self.nets[fam] -= 1;
        }
        self.tag_ref(old.tag, -1);
        self.ops.push(Op::Del(key));
        self.mark(&key, false);
        self.refresh_under(&key, false);
        true
    }

    /// Removes every ban (of `tag`, if given); returns how many.
    pub fn flush(&mut self, tag: Option<&str>) -> u64 {
        let id = match tag {
            Some(t) => match self.tag_ids.get(t) {
                Some(id) => Some(*id),
                None => return 0,
            },
            None => None,
        };
        let gone: Vec<IpNet> = self
            .entries
            .iter()
            .filter(|(_, e)| id.is_none_or(|id| e.tag == id))
            .map(|(k, _)| k.net())
            .collect();
        for net in &gone {
            self.remove(net);
        }
        gone.len() as u64
    }

    /// Removes the bans whose own expiry is at or before `now` (CLOCK_TAI).
    pub fn expire(&mut self, now: u64) -> u64 {
        let gone: Vec<IpNet> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires_ns <= now)
            .map(|(k, _)| k.net())
            .collect();
        for net in &gone {
            self.remove(net);
        }
        gone.len() as u64
    }

    pub fn list(&self, tag: Option<&str>) -> Vec<Ban> {
        self.entries
            .iter()
            .filter(|(_, e)| tag.is_none_or(|t| self.tag_name(e.tag) == Some(t)))
            .map(|(k, e)| Ban {
                net: k.net(),
                expires_ns: e.expires_ns,
                tag: self.tag_name(e.tag).unwrap_or_default().to_string(),
                reason: e.reason.clone(),
            })
            .collect()
    }

    /// Is `addr` banned at `now`, by the datapath's rule (most specific entry,
    /// effective expiry)? The reference for tests.
    pub fn banned_at(&self, addr: IpAddr, now: u64) -> Option<u32> {
        let full = match addr {
            IpAddr::V4(a) => Key {
                v6: false,
                start: u32::from(a) as u128,
                len: 32,
            },
            IpAddr::V6(a) => Key {
                v6: true,
                start: u128::from(a),
                len: 128,
            },
        };
        (1..=full.len)
            .rev()
            .find_map(|l| self.entries.get(&full.ancestor(l)))
            .filter(|e| now < e.eff)
            .map(|e| e.tag)
    }
}

fn value(e: &Entry) -> BanValue {
    BanValue {
        expires_ns: e.eff,
        tag: e.tag,
        _pad: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filter_common::BAN_FOREVER;

    fn ban(net: &str, expires_ns: u64, tag: &str) -> Ban {
        Ban {
            net: net.parse().unwrap(),
            expires_ns,
            tag: tag.into(),
            reason: String::new(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_longer_ban_that_expires_first_does_not_hide_its_covering_prefix() {
        let mut s = BanSet::new();
        s.add(&ban("198.51.100.7/32", 100, "a")).unwrap();
        s.add(&ban("198.51.100.0/24", 500, "b")).unwrap();
        let ops = s.take_ops();
        // The /32's kernel value carries the /24's later expiry.
        assert!(ops.iter().any(|o| matches!(o,
            Op::Put(k, v) if k.len == 32 && v.expires_ns == 500)));
        assert!(s.banned_at(ip("198.51.100.7"), 200).is_some());
        s.remove(&"198.51.100.0/24".parse().unwrap());
        let ops = s.take_ops();
        assert!(ops.iter().any(|o| matches!(o,
            Op::Put(k, v) if k.len == 32 && v.expires_ns == 100)));
        assert!(s.banned_at(ip("198.51.100.7"), 200).is_none());
        assert!(s.banned_at(ip("198.51.100.7"), 99).is_some());
    }

    #[test]
    fn first_octet_bits_cover_every_octet_a_ban_touches() {
        let top = |s: &BanSet, region: u32, octet: u32| {
            s.words()[(region + octet / 64) as usize] & (1u64 << (octet % 64)) != 0
        };
        let mut s = BanSet::new();
        s.add(&ban("10.1.2.3/32", BAN_FOREVER, "")).unwrap();
        s.add(&ban("64.0.0.0/4", BAN_FOREVER, "")).unwrap();
        s.add(&ban("2001:db8::/32", BAN_FOREVER, "")).unwrap();
        s.add(&ban("4000::/2", BAN_FOREVER, "")).unwrap();
        let v4: Vec<u32> = (0..256).filter(|o| top(&s, BAN_TOP4, *o)).collect();
        assert_eq!(v4, [10].into_iter().chain(64..80).collect::<Vec<_>>());
        let v6: Vec<u32> = (0..256).filter(|o| top(&s, BAN_TOP6, *o)).collect();
        assert_eq!(v6, [0x20].into_iter().chain(0x40..0x80).collect::<Vec<_>>());
        for net in ["10.1.2.3/32", "64.0.0.0/4", "2001:db8::/32", "4000::/2"] {
            s.remove(&net.parse().unwrap());
        }
        assert!(s.words().iter().all(|w| *w == 0));
    }

    #[test]
    fn prefilter_bits_are_reference_counted() {
        let mut s = BanSet::new();
        s.add(&ban("192.0.2.1/32", BAN_FOREVER, "")).unwrap();
        s.add(&ban("192.0.2.2/32", BAN_FOREVER, "")).unwrap();
        let w = (BAN_V4_24 + (0xc00002 >> 6)) as usize;
        let bit = 1u64 << (0xc00002 & 63);
        assert_ne!(s.words()[w] & bit, 0);
        s.remove(&"192.0.2.1/32".parse().unwrap());
        assert_ne!(s.words()[w] & bit, 0, "the other /32 still needs it");
        s.remove(&"192.0.2.2/32".parse().unwrap());
        assert_eq!(s.words()[w] & bit, 0);
        assert!(s.words().iter().all(|w| *w == 0));
    }

    #[test]
    fn short_prefixes_mark_every_slash16_they_touch() {
        let mut s = BanSet::new();
        s.add(&ban("10.0.0.0/8", BAN_FOREVER, "")).unwrap();
        let set: u32 = s.words().iter().map(|w| w.count_ones()).sum();
        // 256 /16s and one first octet.
        assert_eq!(set, 256 + 1);
        s.add(&ban("3fff::/20", BAN_FOREVER, "")).unwrap();
        s.add(&ban("2001:db8::/8", BAN_FOREVER, "")).unwrap();
        let set: u32 = s.words().iter().map(|w| w.count_ones()).sum();
        assert_eq!(set, 256 + 1 + (1 + 1) + (256 + 1));
        s.flush(None);
        assert!(s.words().iter().all(|w| *w == 0));
    }

    #[test]
    fn flush_by_tag_keeps_other_tags_and_frees_the_tag_id() {
        let mut s = BanSet::new();
        s.add(&ban("192.0.2.1/32", BAN_FOREVER, "f2b")).unwrap();
        s.add(&ban("2001:db8::1/128", BAN_FOREVER, "f2b")).unwrap();
        s.add(&ban("192.0.2.9/32", BAN_FOREVER, "ops")).unwrap();
        assert_eq!(s.flush(Some("f2b")), 2);
        assert_eq!(s.flush(Some("nope")), 0);
        assert_eq!(s.list(None).len(), 1);
        assert!(s.per_tag().iter().all(|(_, n, _)| n != "f2b"));
        assert!(s.banned_at(ip("192.0.2.9"), 0).is_some());
    }

    #[test]
    fn expire_removes_only_what_is_due() {
        let mut s = BanSet::new();
        s.add(&ban("192.0.2.1/32", 10, "")).unwrap();
        s.add(&ban("192.0.2.2/32", 20, "")).unwrap();
        assert_eq!(s.expire(10), 1);
        assert_eq!(s.list(None).len(), 1);
        assert!(s.banned_at(ip("192.0.2.2"), 15).is_some());
        assert!(s.banned_at(ip("192.0.2.2"), 20).is_none());
    }

    #[test]
    fn a_repeated_ban_replaces_and_counts_once() {
        let mut s = BanSet::new();
        assert!(s.add(&ban("192.0.2.1/32", 10, "a")).unwrap());
        assert!(!s.add(&ban("192.0.2.1/32", 99, "b")).unwrap());
        assert_eq!(s.len(), 1);
        assert_eq!(s.list(None)[0].tag, "b");
        assert!(s.per_tag().iter().all(|(_, n, _)| n != "a"));
    }

    #[test]
    fn ipv4_and_ipv6_hosts_and_prefixes_follow_the_most_specific_rule() {
        let mut s = BanSet::new();
        s.add(&ban("2001:db8:1::/48", 50, "")).unwrap();
        s.add(&ban("2001:db8:1::5/128", 10, "")).unwrap();
        assert!(s.banned_at(ip("2001:db8:1::5"), 20).is_some());
        assert!(s.banned_at(ip("2001:db8:1::6"), 20).is_some());
        assert!(s.banned_at(ip("2001:db8:2::6"), 20).is_none());
        assert!(s.banned_at(ip("2001:db8:1::6"), 50).is_none());
    }
}
