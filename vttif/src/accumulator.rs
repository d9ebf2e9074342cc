//! The local accumulator: bytes and frames per (src MAC, dst MAC), one per forwarding
//! worker.
//!
//! A fixed-capacity open-addressing table allocated once. The worker's [`Recorder`] is its
//! only writer, so a counter update is a plain load and store (no locked instruction, no
//! lock, no allocation); [`Reader`]s on other threads read the same cells with atomic loads
//! and see cumulative counters that only grow. A slot, once claimed by a pair, keeps it for
//! the table's life, so a reader never sees a key change under it. When the table is full
//! (more than 3/4 of its slots used), frames of new pairs are counted as overflow.

use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;

use vnet_core::mac::MacAddr;

use crate::matrix::{Counts, LocalMatrix, PairCounts};

/// Slots of a worker's table by default (768 pairs before overflow; 48 KiB).
pub const DEFAULT_CAPACITY: usize = 1024;

/// Marks a claimed slot in the packed source key (a packed MAC uses 48 bits).
const USED: u64 = 1 << 63;

/// Which way a frame crossed the daemon's boundary to its local VMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The frame came from a local interface (counted once, where it enters the overlay).
    Sent,
    /// The frame arrived from a link and went to a local interface.
    Delivered,
}

#[derive(Debug, Default)]
struct Slot {
    src: AtomicU64,
    dst: AtomicU64,
    sent_bytes: AtomicU64,
    sent_frames: AtomicU64,
    delivered_bytes: AtomicU64,
    delivered_frames: AtomicU64,
}

#[derive(Debug)]
struct Table {
    slots: Box<[Slot]>,
    overflow_bytes: AtomicU64,
    overflow_frames: AtomicU64,
}

/// The writing half: owned by one worker, not `Clone`, so each table has one writer.
#[derive(Debug)]
pub struct Recorder {
    table: Arc<Table>,
    mask: usize,
    used: usize,
    limit: usize,
}

/// The reading half: cheap to clone, readable from any thread at any time.
#[derive(Debug, Clone)]
pub struct Reader {
    table: Arc<Table>,
}

/// A new accumulator with `capacity` slots (rounded up to a power of two, at least 16).
pub fn accumulator(capacity: usize) -> (Recorder, Reader) {
    let size = capacity.max(16).next_power_of_two();
    let table = Arc::new(Table {
        slots: (0..size).map(|_| Slot::default()).collect(),
        overflow_bytes: AtomicU64::new(0),
        overflow_frames: AtomicU64::new(0),
    });
    let recorder = Recorder {
        table: table.clone(),
        mask: size - 1,
        used: 0,
        limit: size / 4 * 3,
    };
    (recorder, Reader { table })
}

fn pack(mac: &MacAddr) -> u64 {
    mac.0.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

fn unpack(v: u64) -> MacAddr {
    let b = v.to_be_bytes();
    MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Adds `n` to a counter this thread alone writes: a plain load and store.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Recorder {
    /// Counts one frame of `bytes` bytes from `src` to `dst`.
    #[inline]
    pub fn record(&mut self, src: &MacAddr, dst: &MacAddr, bytes: usize, dir: Direction) {
        let (s, d) = (pack(src) | USED, pack(dst));
        let hash = (s ^ d.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut i = (hash >> 40) as usize & self.mask;
        let slot = loop {
            let slot = &self.table.slots[i];
            let key = slot.src.load(Relaxed);
            if key == s && slot.dst.load(Relaxed) == d {
                break slot;
            }
            if key == 0 {
                if self.used >= self.limit {
                    bump(&self.table.overflow_bytes, bytes as u64);
                    bump(&self.table.overflow_frames, 1);
                    return;
                }
                // Publish the destination before the source that marks the slot used.
                slot.dst.store(d, Relaxed);
                slot.src.store(s, Release);
                self.used += 1;
                break slot;
            }
            i = (i + 1) & self.mask;
        };
        let (b, f) = match dir {
            Direction::Sent => (&slot.sent_bytes, &slot.sent_frames),
            Direction::Delivered => (&slot.delivered_bytes, &slot.delivered_frames),
        };
        bump(b, bytes as u64);
        bump(f, 1);
    }

    /// Pairs recorded so far.
    pub fn pairs(&self) -> usize {
        self.used
    }
}

impl Reader {
    /// The cumulative counters so far, entries sorted by (src, dst).
    pub fn read(&self) -> LocalMatrix {
        let mut m = LocalMatrix::default();
        self.read_into(&mut m);
        m.normalize();
        m
    }

    /// Appends the cumulative counters to `m` (unsorted; call [`LocalMatrix::normalize`]).
    pub fn read_into(&self, m: &mut LocalMatrix) {
        for slot in self.table.slots.iter() {
            let key = slot.src.load(Acquire);
            if key & USED == 0 {
                continue;
            }
            m.entries.push(PairCounts {
                src: unpack(key & !USED),
                dst: unpack(slot.dst.load(Relaxed)),
                sent: Counts {
                    bytes: slot.sent_bytes.load(Relaxed),
                    frames: slot.sent_frames.load(Relaxed),
                },
                delivered: Counts {
                    bytes: slot.delivered_bytes.load(Relaxed),
                    frames: slot.delivered_frames.load(Relaxed),
                },
            });
        }
        m.overflow.bytes += self.table.overflow_bytes.load(Relaxed);
        m.overflow.frames += self.table.overflow_frames.load(Relaxed);
    }

    /// True when the recorder is gone: nothing will change any more.
    pub fn orphaned(&self) -> bool {
        Arc::strong_count(&self.table) == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn mac(i: u16) -> MacAddr {
        MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8])
    }

    #[test]
    fn counts_per_pair_and_direction() {
        let (mut w, r) = accumulator(16);
        w.record(&mac(1), &mac(2), 100, Direction::Sent);
        w.record(&mac(1), &mac(2), 50, Direction::Sent);
        w.record(&mac(2), &mac(1), 60, Direction::Delivered);
        let m = r.read();
        assert_eq!(m.entries.len(), 2);
        let e = &m.entries[0];
        assert_eq!((e.src, e.dst), (mac(1), mac(2)));
        assert_eq!(
            e.sent,
            Counts {
                bytes: 150,
                frames: 2
            }
        );
        assert_eq!(e.delivered, Counts::default());
        assert_eq!(m.entries[1].delivered, Counts { bytes: 60, frames: 1 });
        assert_eq!(w.pairs(), 2);
    }

    #[test]
    fn a_full_table_counts_overflow_and_keeps_known_pairs() {
        let (mut w, r) = accumulator(16);
        for i in 0..20 {
            w.record(&mac(i), &mac(999), 10, Direction::Sent);
        }
        // Known pairs still count after the table is full.
        w.record(&mac(0), &mac(999), 10, Direction::Sent);
        let m = r.read();
        assert_eq!(m.entries.len(), 12, "3/4 of 16 slots");
        assert_eq!(m.overflow, Counts { bytes: 80, frames: 8 });
        assert_eq!(m.entries[0].sent.frames, 2);
    }

    #[test]
    fn reader_sees_orphaned_table() {
        let (w, r) = accumulator(16);
        assert!(!r.orphaned());
        drop(w);
        assert!(r.orphaned());
    }

    proptest! {
        #[test]
        fn totals_match_a_reference_map(
            frames in proptest::collection::vec((0u16..40, 0u16..40, 1usize..2000, any::<bool>()), 0..400)
        ) {
            let (mut w, r) = accumulator(64);
            let mut want: BTreeMap<(MacAddr, MacAddr), (Counts, Counts)> = BTreeMap::new();
            for (s, d, n, sent) in &frames {
                let dir = if *sent { Direction::Sent } else { Direction::Delivered };
                w.record(&mac(*s), &mac(*d), *n, dir);
                let e = want.entry((mac(*s), mac(*d))).or_default();
                let c = if *sent { &mut e.0 } else { &mut e.1 };
                c.bytes += *n as u64;
                c.frames += 1;
            }
            let m = r.read();
            let got: BTreeMap<_, _> = m.entries.iter().map(|e| ((e.src, e.dst), (e.sent, e.delivered))).collect();
            let total = |m: &BTreeMap<(MacAddr, MacAddr), (Counts, Counts)>| m.values().map(|(a, b)| a.frames + b.frames).sum::<u64>();
            prop_assert_eq!(total(&got) + m.overflow.frames, frames.len() as u64);
            for (k, v) in &got {
                prop_assert_eq!(want.get(k), Some(v));
            }
            if m.overflow.frames == 0 {
                prop_assert_eq!(got, want);
            }
        }
    }
}
