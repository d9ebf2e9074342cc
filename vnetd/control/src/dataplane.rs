//! What the data path counts and the control plane reports, shared between them.
//!
//! The forwarding workers write these counters (atomics, and one VTTIF accumulator per
//! worker that only its worker writes); the control state reads them when it answers
//! `Stats` and `VttifMatrix`. Nothing here blocks a worker: creating a worker registers its
//! accumulator under a lock once, counting never locks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use vnet_core::forward::DropCounters;
use vttif::LocalMatrix;

/// The counters one daemon's data path shares with its control state. Clones share.
#[derive(Debug, Clone, Default)]
pub struct Dataplane {
    /// Drops by reason.
    pub drops: Arc<DropCounters>,
    /// Lookup cache hits and misses, summed over workers.
    pub cache: Arc<CacheTotals>,
    /// VTTIF accounting: every worker's accumulator, and what ended workers counted.
    pub traffic: Arc<TrafficAccounts>,
}

/// Lookup cache hits and misses that workers report now and then.
#[derive(Debug, Default)]
pub struct CacheTotals {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheTotals {
    /// Adds a worker's hits and misses since its last report.
    pub fn add(&self, hits: u64, misses: u64) {
        self.hits.fetch_add(hits, Relaxed);
        self.misses.fetch_add(misses, Relaxed);
    }

    /// (hits, misses) reported so far.
    pub fn get(&self) -> (u64, u64) {
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }
}

/// The daemon's local VTTIF matrix, spread over one accumulator per worker.
#[derive(Debug)]
pub struct TrafficAccounts {
    enabled: AtomicBool,
    accounts: Mutex<Accounts>,
}

#[derive(Debug, Default)]
struct Accounts {
    readers: Vec<vttif::Reader>,
    retired: LocalMatrix,
}

impl Default for TrafficAccounts {
    fn default() -> Self {
        TrafficAccounts {
            enabled: AtomicBool::new(true),
            accounts: Mutex::default(),
        }
    }
}

impl TrafficAccounts {
    fn accounts(&self) -> MutexGuard<'_, Accounts> {
        // The lock guards plain counters; a panicking holder leaves them usable.
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new worker's recorder, whose counts show in [`TrafficAccounts::matrix`].
    pub fn recorder(&self) -> vttif::Recorder {
        let (recorder, reader) = vttif::accumulator(vttif::DEFAULT_CAPACITY);
        self.accounts().readers.push(reader);
        recorder
    }

    /// Switches accounting on or off (on by default).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Relaxed);
    }

    /// Whether workers count.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// The cumulative local matrix: every worker's counters, live and ended. It never
    /// goes backwards while the daemon lives.
    pub fn matrix(&self) -> LocalMatrix {
        let mut acc = self.accounts();
        let Accounts { readers, retired } = &mut *acc;
        // Fold the tables of ended workers into the retired total (they no longer change).
        readers.retain(|r| {
            if r.orphaned() {
                r.read_into(retired);
                retired.normalize();
            }
            !r.orphaned()
        });
        let mut m = retired.clone();
        for r in readers.iter() {
            r.read_into(&mut m);
        }
        m.normalize();
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_workers_counts_stay_in_the_matrix() {
        let traffic = TrafficAccounts::default();
        let (a, b) = (
            vnet_core::mac::MacAddr([2, 0, 0, 0, 0, 1]),
            vnet_core::mac::MacAddr([2, 0, 0, 0, 0, 2]),
        );
        let mut first = traffic.recorder();
        first.record(&a, &b, 100, vttif::Direction::Sent);
        drop(first);
        let mut second = traffic.recorder();
        second.record(&a, &b, 50, vttif::Direction::Sent);
        let m = traffic.matrix();
        assert_eq!(m.entries.len(), 1);
        assert_eq!((m.entries[0].sent.bytes, m.entries[0].sent.frames), (150, 2));
        // Folding the ended worker did not count it twice.
        assert_eq!(traffic.matrix(), m);
    }

    #[test]
    fn cache_totals_add_up() {
        let c = CacheTotals::default();
        c.add(3, 1);
        c.add(2, 0);
        assert_eq!(c.get(), (5, 1));
    }
}
