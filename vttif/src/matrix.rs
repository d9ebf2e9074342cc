//! The local traffic matrix a daemon reports: cumulative counters per (src, dst) pair, and
//! the update (the matrix since the previous report) an aggregator derives from two of them.

use serde::{Deserialize, Serialize};
use vnet_core::mac::MacAddr;

/// A MAC as its six octets in every serde format (JSON `[2,0,0,0,0,1]`, postcard six
/// bytes): the encoding of [`PairCounts`] predates [`MacAddr`], whose human-readable form is
/// its text, and the control protocol and the tools' JSON keep it.
mod mac_octets {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use vnet_core::mac::MacAddr;

    pub fn serialize<S: Serializer>(mac: &MacAddr, s: S) -> Result<S::Ok, S::Error> {
        mac.0.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        <[u8; 6]>::deserialize(d).map(MacAddr)
    }
}

/// Bytes and frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Bytes (whole Ethernet frames, without link headers).
    pub bytes: u64,
    /// Frames.
    pub frames: u64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.bytes += o.bytes;
        self.frames += o.frames;
    }

    fn checked_sub(self, o: Counts) -> Option<Counts> {
        Some(Counts {
            bytes: self.bytes.checked_sub(o.bytes)?,
            frames: self.frames.checked_sub(o.frames)?,
        })
    }

    /// True when both counters are zero.
    pub fn is_zero(&self) -> bool {
        self.bytes == 0 && self.frames == 0
    }
}

/// Counters of one (src, dst) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairCounts {
    /// Source MAC.
    #[serde(with = "mac_octets")]
    pub src: MacAddr,
    /// Destination MAC.
    #[serde(with = "mac_octets")]
    pub dst: MacAddr,
    /// Frames that came from a local interface.
    pub sent: Counts,
    /// Frames that came from a link and went to a local interface.
    pub delivered: Counts,
}

/// Cumulative counters per pair, sorted by (src, dst), each pair once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalMatrix {
    /// One entry per pair.
    pub entries: Vec<PairCounts>,
    /// Frames not attributed to a pair because a worker's table was full.
    pub overflow: Counts,
}

impl LocalMatrix {
    /// Sorts the entries and merges entries of the same pair (several workers' tables).
    pub fn normalize(&mut self) {
        self.entries.sort_by_key(|e| (e.src, e.dst));
        self.entries.dedup_by(|later, kept| {
            let same = (later.src, later.dst) == (kept.src, kept.dst);
            if same {
                kept.sent.add(later.sent);
                kept.delivered.add(later.delivered);
            }
            same
        });
    }

    /// Adds `other`'s counters to this matrix.
    pub fn merge(&mut self, other: &LocalMatrix) {
        self.entries.extend_from_slice(&other.entries);
        self.overflow.add(other.overflow);
        self.normalize();
    }

    /// The update from `prev` to this matrix: the counters accumulated in between, pairs
    /// without traffic left out. `None` when a counter went backwards (the daemon
    /// restarted), so the caller starts over from this matrix. Both must be normalized.
    pub fn since(&self, prev: &LocalMatrix) -> Option<Vec<PairCounts>> {
        let mut out = Vec::new();
        let mut old = prev.entries.iter().peekable();
        for e in &self.entries {
            if old.next_if(|o| (o.src, o.dst) < (e.src, e.dst)).is_some() {
                // A pair that disappeared: counters were reset.
                return None;
            }
            let (sent, delivered) = match old.next_if(|o| (o.src, o.dst) == (e.src, e.dst)) {
                Some(o) => (e.sent.checked_sub(o.sent)?, e.delivered.checked_sub(o.delivered)?),
                None => (e.sent, e.delivered),
            };
            if !(sent.is_zero() && delivered.is_zero()) {
                out.push(PairCounts {
                    src: e.src,
                    dst: e.dst,
                    sent,
                    delivered,
                });
            }
        }
        if old.next().is_some() {
            return None;
        }
        Some(out)
    }
}

/// What a daemon answers when asked for its matrix.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The daemon's node name.
    pub node: String,
    /// Whether the daemon is counting (accounting can be switched off).
    pub enabled: bool,
    /// Microseconds since the daemon started, when the snapshot was taken.
    pub uptime_us: u64,
    /// Cumulative counters since the daemon started.
    pub matrix: LocalMatrix,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc(s: u8, d: u8, sent: u64, delivered: u64) -> PairCounts {
        PairCounts {
            src: MacAddr([2, 0, 0, 0, 0, s]),
            dst: MacAddr([2, 0, 0, 0, 0, d]),
            sent: Counts {
                bytes: sent * 100,
                frames: sent,
            },
            delivered: Counts {
                bytes: delivered * 100,
                frames: delivered,
            },
        }
    }

    fn m(entries: Vec<PairCounts>) -> LocalMatrix {
        let mut m = LocalMatrix {
            entries,
            overflow: Counts::default(),
        };
        m.normalize();
        m
    }

    #[test]
    fn normalize_merges_pairs_from_several_workers() {
        let x = m(vec![pc(2, 1, 1, 0), pc(1, 2, 1, 0), pc(1, 2, 0, 3)]);
        assert_eq!(x.entries, vec![pc(1, 2, 1, 3), pc(2, 1, 1, 0)]);
    }

    #[test]
    fn since_gives_deltas_and_detects_resets() {
        let a = m(vec![pc(1, 2, 5, 0)]);
        let b = m(vec![pc(1, 2, 7, 0), pc(1, 3, 0, 2), pc(2, 1, 0, 0)]);
        assert_eq!(b.since(&a), Some(vec![pc(1, 2, 2, 0), pc(1, 3, 0, 2)]));
        assert_eq!(b.since(&b), Some(vec![]));
        assert_eq!(a.since(&b), None, "pairs vanished");
        assert_eq!(m(vec![pc(1, 2, 4, 0)]).since(&a), None, "counter went backwards");
    }

    /// [`PairCounts`] as it was when its MACs were `[u8; 6]`.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OctetPairCounts {
        src: [u8; 6],
        dst: [u8; 6],
        sent: Counts,
        delivered: Counts,
    }

    #[test]
    fn pair_counts_keep_the_octet_encoding() {
        let new = pc(1, 0xab, 3, 4);
        let old = OctetPairCounts {
            src: [2, 0, 0, 0, 0, 1],
            dst: [2, 0, 0, 0, 0, 0xab],
            sent: new.sent,
            delivered: new.delivered,
        };
        let json = serde_json::to_string(&new).unwrap();
        assert_eq!(json, serde_json::to_string(&old).unwrap());
        assert!(
            json.starts_with(r#"{"src":[2,0,0,0,0,1],"dst":[2,0,0,0,0,171],"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<PairCounts>(&json).unwrap(), new);
        let bytes = postcard::to_allocvec(&new).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&old).unwrap());
        assert_eq!(postcard::from_bytes::<PairCounts>(&bytes).unwrap(), new);
        // A MAC's text form is not what a matrix carries.
        assert!(
            serde_json::from_str::<PairCounts>(&json.replace("[2,0,0,0,0,1]", "\"02:00:00:00:00:01\""))
                .is_err()
        );
    }
}
