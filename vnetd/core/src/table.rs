//! The forwarding table and the per-worker lookup cache (thesis fig. 2).
//!
//! Pure: no IO, no threads, no clock. The daemon resolves output names to [`PortId`]s and
//! inserts rules here; forwarding workers call [`LookupCache::lookup`] (or
//! [`ForwardingTable::lookup`]) for every frame.
//!
//! # Semantics
//!
//! A rule matches a frame when its source side matches the frame's source MAC and its
//! destination side matches the frame's destination MAC. Rules are ranked by
//! [`crate::rule::priority`] (the table is documented in [`crate::rule`]); **every** matching
//! rule at the highest matching priority fires. The frame goes to the union of their
//! outputs, without duplicates, in first-seen order (rules in insertion order, then each
//! rule's outputs in order), minus the port the frame came in on (split horizon).
//!
//! A lookup that matches no rule yields an empty [`Decision`]; one whose rules only pointed
//! back at the ingress port yields no outputs but a non-empty [`Decision::fired`], so the
//! caller can count the two kinds of drop apart.
//!
//! # Index
//!
//! Each of the twelve (destination kind, source kind) pairs has its own priority, so the
//! table keeps one *class* per pair and checks classes from the highest priority down,
//! stopping at the first class with a match: one class never mixes priorities. Inside a
//! class, the exact sides of a rule form a hash key (exact destination, exact source, or
//! both), so a lookup probes one bucket instead of scanning every rule. `not` sides are
//! not indexable (`not X` matches every address but one), so they are checked on each
//! candidate in the bucket; classes with no exact side are a plain vector. Empty classes
//! are skipped through a bit mask.
//!
//! # Generations and the cache
//!
//! Every change gives the table a new [`generation`](ForwardingTable::generation): one
//! more than the last. A [`LookupCache`] tags each entry with the generation it was
//! computed for, so it never serves a stale decision as long as the tables it is used with
//! never share a generation. The owner of a sequence of tables (the daemon's control
//! state publishes a freshly built table on every change) keeps them apart by building
//! each one with [`ForwardingTable::succeeding`] the one before: its generations start
//! above every generation the old table had. The counter is the owner's, not the
//! process's, so the table stays pure and two simulated daemons in one process cannot
//! disturb each other.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;
use crate::rule::{DstMatch, MacMatch};

/// Index of a port (a link or a local interface) in the daemon's port registry. Stable per
/// name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortId(pub u32);

/// Identifier of a rule, assigned by the daemon.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RuleId(pub u64);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {}", self.0)
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}", self.0)
    }
}

/// Index of a rule in one [`ForwardingTable`]'s storage.
///
/// Only meaningful for the table (and generation) whose lookup returned it; the field is
/// private so that indices only come from lookups.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct RuleIndex(u32);

impl RuleIndex {
    fn slot(self) -> usize {
        // u32 -> usize is lossless on every target vnetd supports (32 and 64 bit).
        self.0 as usize
    }
}

/// Per-rule hit counters, shared (`Arc`) so they survive table rebuilds and can be read by
/// the control plane while workers count.
#[derive(Debug, Default)]
pub struct RuleStats {
    frames: AtomicU64,
    bytes: AtomicU64,
}

impl RuleStats {
    /// Counts one frame of `bytes` bytes.
    #[inline]
    pub fn hit(&self, bytes: usize) {
        // Relaxed: the counters are independent statistics; nothing synchronizes on them.
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Frames counted so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Bytes counted so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Why the table refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// A rule with this id is already in the table.
    #[error("{0} is already in the forwarding table")]
    DuplicateRule(RuleId),
    /// The rule has no outputs; it would silently swallow every frame it matches and
    /// shadow every lower-priority rule.
    #[error("{0} has no outputs")]
    NoOutputs(RuleId),
    /// The table already holds as many rules as a [`RuleIndex`] can address (2^32).
    #[error("the forwarding table is full")]
    Full,
}

/// The result of a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Ports to send the frame to: union of the outputs of every matching rule at the
    /// highest matching priority, deduplicated, in a deterministic order (first-seen order
    /// by rule insertion order, then output order), with the ingress port removed (split
    /// horizon).
    pub outputs: Vec<PortId>,
    /// Indices (into the table's rule storage, valid for this table generation) of the
    /// rules that fired, in insertion order, so the caller can count hits through
    /// [`ForwardingTable::stats`].
    pub fired: Vec<RuleIndex>,
}

impl Decision {
    /// Whether the frame goes nowhere: no rule matched (`fired` is empty) or every
    /// matching rule pointed back at the ingress port (`fired` is not).
    #[inline]
    pub fn is_drop(&self) -> bool {
        self.outputs.is_empty()
    }

    fn clear(&mut self) {
        self.outputs.clear();
        self.fired.clear();
    }
}

/// Which parts of a frame's addresses key a class's buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    /// Neither side is exact: one vector holds the whole class.
    None,
    /// Exact destination.
    Dst,
    /// Exact source.
    Src,
    /// Exact destination and exact source.
    DstSrc,
}

/// The kind of one side of a rule, for naming classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Exact,
    Not,
    Any,
    /// Destination only: the default rule.
    None,
}

/// The twelve classes as (destination kind, source kind), in descending priority order
/// (8 down to -3; a unit test checks this against [`crate::rule::priority`]). Lookups walk the
/// classes in this order.
const CLASSES: [(Kind, Kind); 12] = [
    (Kind::Exact, Kind::Exact),
    (Kind::Exact, Kind::Not),
    (Kind::Exact, Kind::Any),
    (Kind::Not, Kind::Exact),
    (Kind::Not, Kind::Not),
    (Kind::Not, Kind::Any),
    (Kind::Any, Kind::Exact),
    (Kind::Any, Kind::Not),
    (Kind::Any, Kind::Any),
    (Kind::None, Kind::Exact),
    (Kind::None, Kind::Not),
    (Kind::None, Kind::Any),
];

const fn key_of(class: usize) -> Key {
    match (
        matches!(CLASSES[class].0, Kind::Exact),
        matches!(CLASSES[class].1, Kind::Exact),
    ) {
        (true, true) => Key::DstSrc,
        (true, false) => Key::Dst,
        (false, true) => Key::Src,
        (false, false) => Key::None,
    }
}

/// [`key_of`] for every class, computed once at compile time.
const KEYS: [Key; 12] = {
    let mut keys = [Key::None; 12];
    let mut i = 0;
    while i < 12 {
        keys[i] = key_of(i);
        i += 1;
    }
    keys
};

/// Position of a side's kind in [`CLASSES`]' order: more specific first.
fn rank(m: &MacMatch) -> usize {
    match m {
        MacMatch::Exact(_) => 0,
        MacMatch::Not(_) => 1,
        MacMatch::Any => 2,
    }
}

/// The class a rule belongs to: the index into [`CLASSES`] of its (destination kind,
/// source kind) pair, which lists destination kinds in rank order, each with the three
/// source kinds in rank order.
fn class_of(src: &MacMatch, dst: &DstMatch) -> usize {
    let dst_rank = match dst {
        DstMatch::Mac(m) => rank(m),
        DstMatch::None => 3,
    };
    3 * dst_rank + rank(src)
}

/// A MAC address as a 48-bit integer, low byte last so that addresses differing in their
/// final byte (the common case) differ in the low bits.
#[inline]
fn mac64(m: MacAddr) -> u64 {
    let b = m.0;
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// Stands for "no `not` constraint" in a [`Cand`]: no 48-bit address equals it.
const NO_NOT: u64 = u64::MAX;

/// The bucket key for a class, from the frame's (or rule's exact) addresses.
#[inline]
fn bucket_key(key: Key, dst: u64, src: u64) -> u128 {
    match key {
        Key::None => 0,
        Key::Dst => u128::from(dst),
        Key::Src => u128::from(src),
        Key::DstSrc => (u128::from(dst) << 64) | u128::from(src),
    }
}

/// A rule as a lookup sees it inside a bucket: what is left to check after the bucket key
/// matched.
#[derive(Clone, Copy, Debug)]
struct Cand {
    /// The frame's destination must differ from this (`not` destination), or [`NO_NOT`].
    not_dst: u64,
    /// The frame's source must differ from this (`not` source), or [`NO_NOT`].
    not_src: u64,
    idx: RuleIndex,
}

impl Cand {
    #[inline]
    fn matches(&self, dst: u64, src: u64) -> bool {
        self.not_dst != dst && self.not_src != src
    }
}

/// Rules of one (destination kind, source kind) pair. Every bucket keeps its rules in
/// insertion order, which is the order their outputs are merged in.
#[derive(Clone, Debug, Default)]
struct Class {
    /// Buckets by exact address(es), for classes with an exact side.
    buckets: HashMap<u128, Vec<Cand>, MacHash>,
    /// The whole class, for classes without an exact side.
    all: Vec<Cand>,
    len: usize,
}

impl Class {
    #[inline]
    fn candidates(&self, key: Key, dst: u64, src: u64) -> &[Cand] {
        if key == Key::None {
            return &self.all;
        }
        match self.buckets.get(&bucket_key(key, dst, src)) {
            Some(v) => v,
            None => &[],
        }
    }

    fn bucket_mut(&mut self, key: Key, dst: u64, src: u64) -> &mut Vec<Cand> {
        if key == Key::None {
            &mut self.all
        } else {
            self.buckets.entry(bucket_key(key, dst, src)).or_default()
        }
    }

    /// Removes `idx` from its bucket, keeping the others in order.
    fn remove(&mut self, key: Key, dst: u64, src: u64, idx: RuleIndex) -> bool {
        let removed = if key == Key::None {
            remove_cand(&mut self.all, idx)
        } else {
            let k = bucket_key(key, dst, src);
            let Some(bucket) = self.buckets.get_mut(&k) else {
                return false;
            };
            let removed = remove_cand(bucket, idx);
            // Drop empty buckets so churn through many addresses does not leave the map
            // growing.
            if bucket.is_empty() {
                self.buckets.remove(&k);
            }
            removed
        };
        if removed {
            self.len -= 1;
        }
        removed
    }
}

fn remove_cand(v: &mut Vec<Cand>, idx: RuleIndex) -> bool {
    match v.iter().position(|c| c.idx == idx) {
        Some(pos) => {
            v.remove(pos);
            true
        }
        None => false,
    }
}

/// One rule's storage. A removed rule's slot keeps its id and stats until it is reused, so
/// [`ForwardingTable::stats`] never has to fail on an index a caller kept a little too
/// long.
#[derive(Clone, Debug)]
struct Slot {
    id: RuleId,
    src: MacMatch,
    dst: DstMatch,
    /// Deduplicated at insert, so a lookup that fires one rule needs no deduplication.
    outputs: Box<[PortId]>,
    stats: Arc<RuleStats>,
}

/// The forwarding table: rules indexed for lookups by (ingress, source MAC, destination
/// MAC). See the module docs for the semantics.
#[derive(Debug, Clone, Default)]
pub struct ForwardingTable {
    slots: Vec<Slot>,
    /// Slots of removed rules, reused by later inserts.
    free: Vec<u32>,
    by_id: HashMap<RuleId, RuleIndex, MacHash>,
    /// Indexed like [`CLASSES`].
    classes: [Class; 12],
    /// Bit `i` is set when `classes[i]` holds a rule, so lookups skip empty classes.
    nonempty: u16,
    generation: u64,
}

impl ForwardingTable {
    /// An empty table (generation 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table whose generations lie above every generation `previous` had: a
    /// cache used with `previous` and then with this table (and with later tables built
    /// the same way) never confuses them.
    pub fn succeeding(previous: &ForwardingTable) -> Self {
        let mut t = Self {
            generation: previous.generation,
            ..Self::default()
        };
        t.bump();
        t
    }

    /// Inserts a rule. `outputs` are PortIds already resolved by the caller; duplicates
    /// among them are dropped (the first occurrence keeps its place).
    pub fn insert(
        &mut self,
        id: RuleId,
        src: MacMatch,
        dst: DstMatch,
        outputs: Vec<PortId>,
        stats: Arc<RuleStats>,
    ) -> Result<(), TableError> {
        if self.by_id.contains_key(&id) {
            return Err(TableError::DuplicateRule(id));
        }
        if outputs.is_empty() {
            return Err(TableError::NoOutputs(id));
        }
        let mut deduped = Vec::with_capacity(outputs.len());
        for p in outputs {
            if !deduped.contains(&p) {
                deduped.push(p);
            }
        }
        let slot = Slot {
            id,
            src,
            dst,
            outputs: deduped.into_boxed_slice(),
            stats,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                let idx = RuleIndex(i);
                self.slots[idx.slot()] = slot;
                idx
            }
            None => {
                let i = u32::try_from(self.slots.len()).map_err(|_| TableError::Full)?;
                self.slots.push(slot);
                RuleIndex(i)
            }
        };
        let (class, key, dst_key, src_key, cand) = Self::place(&src, &dst, idx);
        self.classes[class].bucket_mut(key, dst_key, src_key).push(cand);
        self.classes[class].len += 1;
        self.nonempty |= 1 << class;
        self.by_id.insert(id, idx);
        self.bump();
        Ok(())
    }

    /// Where a rule lives: its class, the class's key kind, the bucket key parts and the
    /// candidate entry.
    fn place(src: &MacMatch, dst: &DstMatch, idx: RuleIndex) -> (usize, Key, u64, u64, Cand) {
        let class = class_of(src, dst);
        let (dst_key, not_dst) = match dst {
            DstMatch::Mac(MacMatch::Exact(m)) => (mac64(*m), NO_NOT),
            DstMatch::Mac(MacMatch::Not(m)) => (0, mac64(*m)),
            DstMatch::Mac(MacMatch::Any) | DstMatch::None => (0, NO_NOT),
        };
        let (src_key, not_src) = match src {
            MacMatch::Exact(m) => (mac64(*m), NO_NOT),
            MacMatch::Not(m) => (0, mac64(*m)),
            MacMatch::Any => (0, NO_NOT),
        };
        let cand = Cand {
            not_dst,
            not_src,
            idx,
        };
        (class, KEYS[class], dst_key, src_key, cand)
    }

    /// Removes the rule with this id; false when there is none.
    pub fn remove(&mut self, id: RuleId) -> bool {
        let Some(idx) = self.by_id.remove(&id) else {
            return false;
        };
        let slot = &mut self.slots[idx.slot()];
        let (class, key, dst_key, src_key, _) = Self::place(&slot.src, &slot.dst, idx);
        // Release the outputs now; id and stats stay until the slot is reused.
        slot.outputs = Box::default();
        let removed = self.classes[class].remove(key, dst_key, src_key, idx);
        debug_assert!(removed, "{id} was in by_id but not in its class");
        if self.classes[class].len == 0 {
            self.nonempty &= !(1 << class);
        }
        self.free.push(idx.0);
        self.bump();
        true
    }

    /// Removes every rule.
    pub fn clear(&mut self) {
        let generation = self.generation;
        *self = Self::default();
        self.generation = generation;
        self.bump();
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the table holds no rule.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether a rule with this id is in the table.
    pub fn contains(&self, id: RuleId) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Grows by one on every successful insert or remove (and on clear); new empty tables
    /// start at 0, [`ForwardingTable::succeeding`] ones above their predecessor.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn bump(&mut self) {
        // 2^64 changes would take centuries at a billion a second; wrapping cannot happen
        // in practice and never panics.
        self.generation = self.generation.wrapping_add(1);
    }

    /// Uncached lookup.
    pub fn lookup(&self, ingress: PortId, src: MacAddr, dst: MacAddr) -> Decision {
        let mut d = Decision::default();
        self.lookup_into(ingress, src, dst, &mut d);
        d
    }

    /// Uncached lookup into `out` (cleared first), reusing its allocations: the hot path
    /// for callers that keep a [`Decision`] around.
    pub fn lookup_into(&self, ingress: PortId, src: MacAddr, dst: MacAddr, out: &mut Decision) {
        out.clear();
        let (dst, src) = (mac64(dst), mac64(src));
        let mut mask = self.nonempty;
        while mask != 0 {
            let class = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let cands = self.classes[class].candidates(KEYS[class], dst, src);
            for cand in cands.iter().filter(|c| c.matches(dst, src)) {
                // Each rule's outputs are already unique, so only a second rule can bring
                // duplicates; the first one skips the search.
                let merge = !out.fired.is_empty();
                out.fired.push(cand.idx);
                for &port in self.slots[cand.idx.slot()].outputs.iter() {
                    if port != ingress && !(merge && out.outputs.contains(&port)) {
                        out.outputs.push(port);
                    }
                }
            }
            // One class is one priority level: the first class with a match is the
            // highest matching priority.
            if !out.fired.is_empty() {
                return;
            }
        }
    }

    /// The counters of a rule that fired.
    ///
    /// # Panics
    ///
    /// When `idx` is out of range, which only happens if it came from another table.
    pub fn stats(&self, idx: RuleIndex) -> &RuleStats {
        &self.slots[idx.slot()].stats
    }

    /// The id of a rule that fired.
    ///
    /// # Panics
    ///
    /// When `idx` is out of range, which only happens if it came from another table.
    pub fn rule_id(&self, idx: RuleIndex) -> RuleId {
        self.slots[idx.slot()].id
    }

    /// Counts one frame of `bytes` bytes on every rule that fired in `decision`. Indices
    /// that do not belong to this table are skipped rather than panicking.
    pub fn count_hits(&self, decision: &Decision, bytes: usize) {
        for idx in &decision.fired {
            if let Some(slot) = self.slots.get(idx.slot()) {
                slot.stats.hit(bytes);
            }
        }
    }
}

/// Lookup cache keyed by (ingress, src MAC, dst MAC). Owned by one forwarding worker (not
/// shared); invalidated as a whole when the table's generation differs from the one it was
/// filled for (a comparison, never a scan).
///
/// Four-way set associative with least-recently-used replacement: a key hashes to one set
/// of four entries, and a miss overwrites a stale entry or else the least recently used
/// one. That keeps the cache bounded, a hit to one hash and at most four comparisons on
/// two cache lines, and a miss free of allocation once the entry's vectors have grown.
/// Associativity matters because flows that hash alike would otherwise evict each other
/// on every frame: at a quarter full, a direct-mapped cache loses about a fifth of its
/// flows that way, two ways about a twentieth, four ways about one in fifty. Size the
/// cache at a few times the number of active flows.
///
/// Each entry carries the generation it was computed for, so a table change invalidates
/// everything without touching the entries.
pub struct LookupCache {
    /// Keys, sets of [`WAYS`] consecutive entries; apart from the decisions so that a
    /// lookup scans a set's keys on as few cache lines as possible.
    tags: Box<[Tag]>,
    /// The decision for `tags[i]` at `decisions[i]`.
    decisions: Box<[Decision]>,
    /// Number of sets minus one; the number of sets is a power of two.
    set_mask: usize,
    hits: u64,
    misses: u64,
}

/// Entries per set.
const WAYS: usize = 4;

/// Generation of an entry that was never filled. Generations come from a 64-bit counter
/// that starts at 1 and is bumped once per table change, so it never gets here.
const EMPTY: u64 = u64::MAX;

#[derive(Debug, Clone, Copy)]
struct Tag {
    /// [`cache_key`] of the lookup.
    key: u128,
    /// Table generation the decision was computed for.
    generation: u64,
    /// Lookup count (hits + misses) when last used, for LRU.
    used: u64,
}

/// The whole cache key in one integer: 32 bits of port and 48 bits per address fill
/// exactly 128 bits, so a hit is one comparison.
#[inline]
fn cache_key(ingress: PortId, src: MacAddr, dst: MacAddr) -> u128 {
    (u128::from(ingress.0) << 96) | (u128::from(mac64(src)) << 48) | u128::from(mac64(dst))
}

impl LookupCache {
    /// A cache of at most `capacity` entries (rounded down to a power of two, at least 4).
    pub fn new(capacity: usize) -> Self {
        let capacity = match capacity {
            0..=WAYS => WAYS,
            c => 1 << (usize::BITS - 1 - c.leading_zeros()),
        };
        let empty = Tag {
            key: 0,
            generation: EMPTY,
            used: 0,
        };
        LookupCache {
            tags: vec![empty; capacity].into_boxed_slice(),
            decisions: vec![Decision::default(); capacity].into_boxed_slice(),
            set_mask: capacity / WAYS - 1,
            hits: 0,
            misses: 0,
        }
    }

    /// The number of entries.
    pub fn capacity(&self) -> usize {
        self.tags.len()
    }

    /// What `table.lookup(ingress, src, dst)` returns, from the cache when it holds the
    /// answer for this table generation.
    #[inline]
    pub fn lookup<'a>(
        &'a mut self,
        table: &ForwardingTable,
        ingress: PortId,
        src: MacAddr,
        dst: MacAddr,
    ) -> &'a Decision {
        let generation = table.generation();
        let key = cache_key(ingress, src, dst);
        let first = (cache_hash(ingress, src, dst) as usize & self.set_mask) * WAYS;
        let now = self.hits + self.misses;
        let set = &mut self.tags[first..first + WAYS];
        if let Some(way) = set
            .iter()
            .position(|t| t.key == key && t.generation == generation)
        {
            self.hits += 1;
            set[way].used = now;
            return &self.decisions[first + way];
        }
        self.misses += 1;
        // A stale entry is never valid again, so it goes before any current one.
        let way = set
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| (t.generation == generation, t.used))
            .map_or(0, |(way, _)| way);
        set[way] = Tag {
            key,
            generation,
            used: now,
        };
        let decision = &mut self.decisions[first + way];
        table.lookup_into(ingress, src, dst, decision);
        decision
    }

    /// Lookups answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Lookups that went to the table.
    pub fn misses(&self) -> u64 {
        self.misses
    }
}

impl fmt::Debug for LookupCache {
    // The entries would drown any log line; the shape and counters are what matter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupCache")
            .field("capacity", &self.tags.len())
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish()
    }
}

// Hashing. Keys are MAC addresses and rule ids, fixed-size integers, so a couple of
// multiplications mix them well enough, far cheaper than SipHash. HashDoS does not apply:
// the maps are only filled from configured rules, and the cache, which frame addresses do
// fill, is a fixed array where colliding keys can at most cause misses.

const K1: u64 = 0x243f_6a88_85a3_08d3;
const K2: u64 = 0x1319_8a2e_0370_7345;

/// Multiplies as 128 bits and folds the halves (as foldhash does). Mixes well when both
/// factors depend on the data; with one constant factor, small input differences barely
/// reach the high half, so single words go through [`fmix64`] instead.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
#[inline]
fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[inline]
fn cache_hash(ingress: PortId, src: MacAddr, dst: MacAddr) -> u64 {
    // Addresses use 48 bits, leaving 16 spare in each word for the port. Both factors
    // carry data in their low bits, so one folded multiply mixes them all.
    let port = u64::from(ingress.0);
    let a = (mac64(src) << 16) | (port & 0xffff);
    let b = mac64(dst) | ((port >> 16) << 48);
    fold_mul(a ^ K1, b ^ K2)
}

/// `BuildHasher` for the table's maps.
type MacHash = BuildHasherDefault<MacHasher>;

/// Hasher for the table's integer keys: words are combined FxHash-style and the result
/// goes through [`fmix64`], because hashbrown takes the bucket from the low bits and a
/// tag from the top 7 bits, and both must change when only an address's last byte does.
#[derive(Debug, Default, Clone, Copy)]
struct MacHasher(u64);

impl MacHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(23) ^ word).wrapping_mul(K1);
    }
}

impl Hasher for MacHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only reached by key types without a fixed-width write; correct for any input.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fmix64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule;

    fn mac(last: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, last])
    }

    const A: u8 = 1;
    const B: u8 = 2;
    const C: u8 = 3;

    fn ex(last: u8) -> MacMatch {
        MacMatch::Exact(mac(last))
    }

    fn not(last: u8) -> MacMatch {
        MacMatch::Not(mac(last))
    }

    fn dst(m: MacMatch) -> DstMatch {
        DstMatch::Mac(m)
    }

    fn stats() -> Arc<RuleStats> {
        Arc::new(RuleStats::default())
    }

    fn ports(ids: &[u32]) -> Vec<PortId> {
        ids.iter().map(|&p| PortId(p)).collect()
    }

    /// Inserts rules `(src, dst, outputs)` with ids 0, 1, ... in order.
    fn table(rules: &[(MacMatch, DstMatch, &[u32])]) -> ForwardingTable {
        let mut t = ForwardingTable::new();
        for (i, (s, d, out)) in rules.iter().enumerate() {
            t.insert(RuleId(i as u64), *s, *d, ports(out), stats()).unwrap();
        }
        t
    }

    fn fired_ids(t: &ForwardingTable, d: &Decision) -> Vec<u64> {
        d.fired.iter().map(|&i| t.rule_id(i).0).collect()
    }

    const INGRESS: PortId = PortId(99);

    #[test]
    fn table_classes_are_in_descending_documented_priority() {
        // A rule of each class, in CLASSES order.
        let side = |k: Kind| match k {
            Kind::Exact => ex(A),
            Kind::Not => not(A),
            Kind::Any | Kind::None => MacMatch::Any,
        };
        let rules = CLASSES.map(|(d, s)| {
            let d = if d == Kind::None {
                DstMatch::None
            } else {
                dst(side(d))
            };
            (side(s), d)
        });
        let prios = rules.map(|(s, d)| rule::priority(&s, &d));
        assert_eq!(prios, [8, 7, 6, 5, 4, 3, 2, 1, 0, -1, -2, -3]);
        for (i, (s, d)) in rules.iter().enumerate() {
            assert_eq!(class_of(s, d), i, "{s} {d}");
        }
    }

    /// Every class, as (src, dst) rules that match a frame from A to B, in descending
    /// priority order.
    fn all_classes_matching_a_to_b() -> Vec<(MacMatch, DstMatch)> {
        vec![
            (ex(A), dst(ex(B))),                 // 8
            (not(C), dst(ex(B))),                // 7
            (MacMatch::Any, dst(ex(B))),         // 6
            (ex(A), dst(not(C))),                // 5
            (not(C), dst(not(C))),               // 4
            (MacMatch::Any, dst(not(C))),        // 3
            (ex(A), dst(MacMatch::Any)),         // 2
            (not(C), dst(MacMatch::Any)),        // 1
            (MacMatch::Any, dst(MacMatch::Any)), // 0
            (ex(A), DstMatch::None),             // -1
            (not(C), DstMatch::None),            // -2
            (MacMatch::Any, DstMatch::None),     // -3
        ]
    }

    #[test]
    fn table_each_class_beats_the_next_lower_one() {
        let classes = all_classes_matching_a_to_b();
        for pair in classes.windows(2) {
            let (hs, hd) = pair[0];
            let (ls, ld) = pair[1];
            assert_eq!(rule::priority(&hs, &hd), rule::priority(&ls, &ld) + 1);
            // Insert the lower one first so insertion order cannot explain the result.
            let t = table(&[(ls, ld, &[10]), (hs, hd, &[20])]);
            let d = t.lookup(INGRESS, mac(A), mac(B));
            assert_eq!(d.outputs, ports(&[20]), "{hs} {hd} should beat {ls} {ld}");
            assert_eq!(fired_ids(&t, &d), [1]);
            // And each alone matches.
            let t = table(&[(ls, ld, &[10])]);
            assert_eq!(t.lookup(INGRESS, mac(A), mac(B)).outputs, ports(&[10]));
        }
    }

    #[test]
    fn table_highest_of_all_classes_wins_and_removal_walks_down() {
        // Rule i (inserted lowest priority first) outputs port i.
        let mut t = ForwardingTable::new();
        for (i, (s, d)) in all_classes_matching_a_to_b().into_iter().rev().enumerate() {
            t.insert(RuleId(i as u64), s, d, ports(&[i as u32]), stats())
                .unwrap();
        }
        for i in (0..12u64).rev() {
            let d = t.lookup(INGRESS, mac(A), mac(B));
            assert_eq!(fired_ids(&t, &d), [i]);
            assert_eq!(d.outputs, [PortId(i as u32)]);
            assert!(t.remove(RuleId(i)));
        }
        let d = t.lookup(INGRESS, mac(A), mac(B));
        assert_eq!(d, Decision::default());
        assert!(t.is_empty());
    }

    #[test]
    fn table_not_matches_all_but_one() {
        let t = table(&[(MacMatch::Any, dst(not(B)), &[1])]);
        for other in [A, C] {
            assert_eq!(t.lookup(INGRESS, mac(A), mac(other)).outputs, ports(&[1]));
        }
        assert_eq!(t.lookup(INGRESS, mac(A), MacAddr::BROADCAST).outputs, ports(&[1]));
        assert_eq!(t.lookup(INGRESS, mac(A), mac(B)), Decision::default());

        let t = table(&[(not(A), dst(MacMatch::Any), &[1])]);
        assert_eq!(t.lookup(INGRESS, mac(B), mac(C)).outputs, ports(&[1]));
        assert!(t.lookup(INGRESS, mac(A), mac(C)).fired.is_empty());
    }

    #[test]
    fn table_not_destination_falls_through_to_lower_classes() {
        // `not B` outranks `any`, but a frame to B is not matched by it and falls to `any`,
        // and a frame from A to B with a `not A` source falls further to the default rule.
        let t = table(&[
            (MacMatch::Any, DstMatch::None, &[1]),
            (not(A), dst(MacMatch::Any), &[2]),
            (MacMatch::Any, dst(not(B)), &[3]),
        ]);
        assert_eq!(t.lookup(INGRESS, mac(A), mac(C)).outputs, ports(&[3]));
        assert_eq!(t.lookup(INGRESS, mac(C), mac(B)).outputs, ports(&[2]));
        assert_eq!(t.lookup(INGRESS, mac(A), mac(B)).outputs, ports(&[1]));
    }

    #[test]
    fn table_all_rules_at_top_priority_fire() {
        let t = table(&[
            (MacMatch::Any, dst(ex(B)), &[7]),
            (MacMatch::Any, dst(MacMatch::Exact(MacAddr::BROADCAST)), &[1, 2]),
            (MacMatch::Any, dst(MacMatch::Any), &[8]),
            (
                MacMatch::Any,
                dst(MacMatch::Exact(MacAddr::BROADCAST)),
                &[3, 2, 4],
            ),
            (
                MacMatch::Any,
                dst(MacMatch::Exact(MacAddr::BROADCAST)),
                &[4, 5, 5],
            ),
        ]);
        let d = t.lookup(INGRESS, mac(A), MacAddr::BROADCAST);
        // Union in rule insertion order then output order, duplicates dropped.
        assert_eq!(d.outputs, ports(&[1, 2, 3, 4, 5]));
        assert_eq!(fired_ids(&t, &d), [1, 3, 4]);
        assert!(!d.is_drop());
    }

    #[test]
    fn table_split_horizon_removes_ingress() {
        let t = table(&[
            (MacMatch::Any, dst(MacMatch::Any), &[1, 2]),
            (MacMatch::Any, dst(MacMatch::Any), &[2, 3]),
        ]);
        let d = t.lookup(PortId(2), mac(A), mac(B));
        assert_eq!(d.outputs, ports(&[1, 3]));
        assert_eq!(fired_ids(&t, &d), [0, 1]);

        // Every output is the ingress: a drop, but one that is told apart from "no rule".
        let t = table(&[
            (MacMatch::Any, dst(ex(B)), &[5]),
            (MacMatch::Any, DstMatch::None, &[6]),
        ]);
        let d = t.lookup(PortId(5), mac(A), mac(B));
        assert!(d.is_drop());
        assert_eq!(fired_ids(&t, &d), [0], "the lower default rule must not fire");
    }

    #[test]
    fn table_default_rule_catches_what_nothing_else_matches() {
        let t = table(&[
            (MacMatch::Any, dst(ex(B)), &[1]),
            (MacMatch::Any, DstMatch::None, &[9]),
        ]);
        assert_eq!(t.lookup(INGRESS, mac(A), mac(B)).outputs, ports(&[1]));
        assert_eq!(t.lookup(INGRESS, mac(A), mac(C)).outputs, ports(&[9]));
        assert_eq!(t.lookup(INGRESS, mac(A), MacAddr::BROADCAST).outputs, ports(&[9]));
        // A default rule with a source only catches that source.
        let t = table(&[(ex(A), DstMatch::None, &[9])]);
        assert_eq!(t.lookup(INGRESS, mac(A), mac(C)).outputs, ports(&[9]));
        assert!(t.lookup(INGRESS, mac(B), mac(C)).fired.is_empty());
    }

    #[test]
    fn table_no_match_is_an_empty_decision() {
        let t = ForwardingTable::new();
        assert_eq!(t.lookup(INGRESS, mac(A), mac(B)), Decision::default());
        let t = table(&[(ex(C), dst(ex(B)), &[1])]);
        let d = t.lookup(INGRESS, mac(A), mac(B));
        assert!(d.is_drop());
        assert!(d.fired.is_empty());
    }

    #[test]
    fn table_remove_and_errors() {
        let mut t = table(&[
            (MacMatch::Any, dst(ex(B)), &[1]),
            (MacMatch::Any, dst(ex(B)), &[2]),
        ]);
        assert_eq!(
            t.insert(RuleId(0), MacMatch::Any, DstMatch::None, ports(&[3]), stats()),
            Err(TableError::DuplicateRule(RuleId(0)))
        );
        assert_eq!(
            t.insert(RuleId(7), MacMatch::Any, DstMatch::None, vec![], stats()),
            Err(TableError::NoOutputs(RuleId(7)))
        );
        assert_eq!(t.len(), 2);
        assert!(t.remove(RuleId(0)));
        assert!(!t.remove(RuleId(0)));
        assert!(t.contains(RuleId(1)) && !t.contains(RuleId(0)));
        assert_eq!(t.lookup(INGRESS, mac(A), mac(B)).outputs, ports(&[2]));
        // The freed slot is reused, and the new rule goes after the old one in its bucket.
        t.insert(RuleId(0), MacMatch::Any, dst(ex(B)), ports(&[3]), stats())
            .unwrap();
        let d = t.lookup(INGRESS, mac(A), mac(B));
        assert_eq!(d.outputs, ports(&[2, 3]));
        assert_eq!(fired_ids(&t, &d), [1, 0]);
        assert!(t.remove(RuleId(1)));
        assert!(t.remove(RuleId(0)));
        assert!(t.is_empty());
        assert_eq!(t.lookup(INGRESS, mac(A), mac(B)), Decision::default());
    }

    #[test]
    fn table_generation_bumps_on_every_change_only() {
        let mut t = ForwardingTable::new();
        assert_eq!(t.generation(), 0);
        let mut last = t.generation();
        let mut changed = |t: &ForwardingTable| {
            let now = t.generation();
            assert!(now > last);
            last = now;
        };
        t.insert(RuleId(1), MacMatch::Any, DstMatch::None, ports(&[1]), stats())
            .unwrap();
        changed(&t);
        t.insert(RuleId(2), MacMatch::Any, DstMatch::None, ports(&[1]), stats())
            .unwrap();
        changed(&t);
        let g = t.generation();
        assert!(t
            .insert(RuleId(2), MacMatch::Any, DstMatch::None, ports(&[1]), stats())
            .is_err());
        assert!(!t.remove(RuleId(3)));
        assert_eq!(t.generation(), g, "failed changes do not bump");
        assert!(t.remove(RuleId(1)));
        changed(&t);
        t.clear();
        changed(&t);
        assert!(t.is_empty());
        // A table built to succeed another starts above it, whatever either holds.
        let mut u = ForwardingTable::new();
        u.insert(RuleId(1), MacMatch::Any, DstMatch::None, ports(&[1]), stats())
            .unwrap();
        let mut v = ForwardingTable::succeeding(&u);
        assert!(v.generation() > u.generation());
        v.insert(RuleId(1), MacMatch::Any, DstMatch::None, ports(&[1]), stats())
            .unwrap();
        assert!(v.generation() > u.generation() + 1);
        // A clone has the same contents, so it keeps the generation until it changes.
        let mut w = u.clone();
        assert_eq!(w.generation(), u.generation());
        w.remove(RuleId(1));
        assert_ne!(w.generation(), u.generation());
    }

    #[test]
    fn table_cache_hits_and_invalidates_on_insert_and_remove() {
        let mut t = table(&[(MacMatch::Any, dst(ex(B)), &[1])]);
        let mut cache = LookupCache::new(64);
        assert_eq!(cache.lookup(&t, INGRESS, mac(A), mac(B)).outputs, ports(&[1]));
        assert_eq!(cache.lookup(&t, INGRESS, mac(A), mac(B)).outputs, ports(&[1]));
        assert_eq!((cache.hits(), cache.misses()), (1, 1));

        t.insert(RuleId(5), ex(A), dst(ex(B)), ports(&[2]), stats())
            .unwrap();
        assert_eq!(cache.lookup(&t, INGRESS, mac(A), mac(B)).outputs, ports(&[2]));
        assert_eq!((cache.hits(), cache.misses()), (1, 2));

        assert!(t.remove(RuleId(5)));
        assert_eq!(cache.lookup(&t, INGRESS, mac(A), mac(B)).outputs, ports(&[1]));
        assert_eq!(cache.lookup(&t, INGRESS, mac(A), mac(B)).outputs, ports(&[1]));
        assert_eq!((cache.hits(), cache.misses()), (2, 3));

        // Ingress is part of the key.
        assert!(cache.lookup(&t, PortId(1), mac(A), mac(B)).is_drop());
        assert_eq!(cache.misses(), 4);
    }

    #[test]
    fn table_cache_is_not_fooled_by_a_rebuilt_table() {
        // Same number of changes, different contents: built from scratch, both would have
        // generation 1 and the cache would answer for the wrong table; built to succeed
        // t1, t2 cannot.
        let t1 = table(&[(MacMatch::Any, DstMatch::None, &[1])]);
        let mut t2 = ForwardingTable::succeeding(&t1);
        t2.insert(RuleId(1), MacMatch::Any, DstMatch::None, ports(&[2]), stats())
            .unwrap();
        let mut cache = LookupCache::new(16);
        assert_eq!(cache.lookup(&t1, INGRESS, mac(A), mac(B)).outputs, ports(&[1]));
        assert_eq!(cache.lookup(&t2, INGRESS, mac(A), mac(B)).outputs, ports(&[2]));
    }

    #[test]
    fn table_cache_is_bounded() {
        assert_eq!(LookupCache::new(0).capacity(), 4);
        assert_eq!(LookupCache::new(7).capacity(), 4);
        assert_eq!(LookupCache::new(1000).capacity(), 512);
        let t = table(&[(MacMatch::Any, DstMatch::None, &[1])]);
        let mut cache = LookupCache::new(4);
        for i in 0..=255u8 {
            assert_eq!(cache.lookup(&t, INGRESS, mac(i), mac(B)).outputs, ports(&[1]));
        }
        assert_eq!(cache.capacity(), 4);
        assert_eq!(cache.misses(), 256);
    }

    #[test]
    fn table_cache_keeps_four_flows_per_set_and_evicts_the_least_recent() {
        // Four entries make one set, so every key lands in it.
        let t = table(&[(MacMatch::Any, DstMatch::None, &[1])]);
        let mut cache = LookupCache::new(4);
        let run = |cache: &mut LookupCache, src: u8| {
            cache.lookup(&t, INGRESS, mac(src), mac(B));
        };
        for src in [1, 2, 3, 4, 1, 3, 4, 2] {
            run(&mut cache, src);
        }
        assert_eq!((cache.hits(), cache.misses()), (4, 4));
        // 1 is the least recently used, so a fifth flow evicts it and nothing else.
        run(&mut cache, 5);
        for src in [2, 3, 4, 5, 1] {
            run(&mut cache, src);
        }
        assert_eq!((cache.hits(), cache.misses()), (8, 6));
    }

    #[test]
    fn table_cache_refills_stale_entries_first() {
        let mut t = table(&[(MacMatch::Any, DstMatch::None, &[1])]);
        let mut cache = LookupCache::new(4);
        for src in 1..=4 {
            cache.lookup(&t, INGRESS, mac(src), mac(B));
        }
        t.insert(RuleId(9), MacMatch::Any, dst(ex(B)), ports(&[2]), stats())
            .unwrap();
        // After the change, flows 1 and 2 go back into the set and must not evict each
        // other even though they were the least recently used before.
        for src in [1, 2, 1, 2] {
            assert_eq!(cache.lookup(&t, INGRESS, mac(src), mac(B)).outputs, ports(&[2]));
        }
        assert_eq!((cache.hits(), cache.misses()), (2, 6));
    }

    #[test]
    fn table_counts_hits_per_fired_rule() {
        let s0 = stats();
        let s1 = stats();
        let mut t = ForwardingTable::new();
        t.insert(
            RuleId(0),
            MacMatch::Any,
            dst(MacMatch::Any),
            ports(&[1]),
            s0.clone(),
        )
        .unwrap();
        t.insert(
            RuleId(1),
            MacMatch::Any,
            dst(MacMatch::Any),
            ports(&[2]),
            s1.clone(),
        )
        .unwrap();
        let d = t.lookup(INGRESS, mac(A), mac(B));
        t.count_hits(&d, 100);
        t.stats(d.fired[0]).hit(10);
        assert_eq!((s0.frames(), s0.bytes()), (2, 110));
        assert_eq!((s1.frames(), s1.bytes()), (1, 100));
    }

    /// Distinct values of `f(i)` for the 256 addresses that differ only in their last byte.
    fn spread(f: impl Fn(MacAddr) -> u64) -> usize {
        (0..=255u8)
            .map(|i| f(mac(i)))
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    #[test]
    fn table_hashes_spread_addresses_differing_in_one_byte() {
        use std::hash::BuildHasher;
        // 256 random keys fall into about 226 of 1024 buckets, or 162 of 256; a weak mix
        // that ignores the last byte falls far below.
        let fixed = mac64(mac(A));
        // (class key, whether the varying address is the destination)
        let cases = [
            (Key::Dst, true),
            (Key::Src, false),
            (Key::DstSrc, true),
            (Key::DstSrc, false),
        ];
        for (key, vary_dst) in cases {
            let hash = |m: MacAddr| {
                let (d, s) = if vary_dst {
                    (mac64(m), fixed)
                } else {
                    (fixed, mac64(m))
                };
                MacHash::default().hash_one(bucket_key(key, d, s))
            };
            let low = spread(|m| hash(m) & 0x3ff);
            assert!(low > 200, "{key:?}: {low} of 1024 buckets");
            let tag = spread(|m| hash(m) >> 57);
            assert!(tag > 100, "{key:?}: {tag} of 128 tags");
        }
        let by_src = spread(|m| cache_hash(INGRESS, m, mac(B)) & 0xff);
        let by_dst = spread(|m| cache_hash(INGRESS, mac(A), m) & 0xff);
        let by_port = (0..256u32)
            .map(|p| cache_hash(PortId(p), mac(A), mac(B)) & 0xff)
            .collect::<std::collections::HashSet<_>>()
            .len();
        for n in [by_src, by_dst, by_port] {
            assert!(n > 140, "cache: {by_src} {by_dst} {by_port} of 256 entries");
        }
    }
}
