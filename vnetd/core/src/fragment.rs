//! Frames larger than a transport's datagram limit, pure: split into numbered fragments
//! and put back together, with bounded memory.
//!
//! QUIC datagrams (RFC 9221) hold about 1200–1400 bytes, less than a 1514-byte Ethernet
//! frame. Each fragment carries a 4-byte header, `id (u16, big endian) | index | count`;
//! every fragment but the last has the same length. A frame is delivered once all its
//! fragments arrived; a lost fragment loses the frame (as a lost Ethernet frame would be
//! lost), and its partial state is evicted when newer frames need the room.

/// Bytes of the fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 4;
/// Most fragments one frame may be split into.
pub const MAX_FRAGMENTS: usize = 64;
/// Frames being reassembled at once; older partial frames are evicted.
const SLOTS: usize = 8;

/// Why a frame cannot be split or a fragment not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// The datagram limit leaves no room for data after the header.
    #[error("datagram limit of {0} bytes is too small to carry fragments")]
    LimitTooSmall(usize),
    /// The frame would need more than [`MAX_FRAGMENTS`] fragments.
    #[error("frame of {0} bytes needs more than {MAX_FRAGMENTS} fragments")]
    TooLarge(usize),
    /// A fragment's header is malformed (short, zero count, index past count, or
    /// inconsistent with the other fragments of its frame).
    #[error("malformed fragment")]
    Malformed,
}

/// Calls `emit(header, chunk)` for each fragment of `frame`, numbered `id`, so that
/// header + chunk fit in `limit` bytes. Returns the number of fragments. Callers number
/// frames with a wrapping counter; ids only need to differ among frames in flight.
pub fn split(
    frame: &[u8],
    limit: usize,
    id: u16,
    mut emit: impl FnMut([u8; FRAGMENT_HEADER_LEN], &[u8]),
) -> Result<usize, FragmentError> {
    let room = limit.checked_sub(FRAGMENT_HEADER_LEN).filter(|r| *r > 0);
    let room = room.ok_or(FragmentError::LimitTooSmall(limit))?;
    let count = frame.len().div_ceil(room).max(1);
    if count > MAX_FRAGMENTS {
        return Err(FragmentError::TooLarge(frame.len()));
    }
    let mut chunks = frame.chunks(room);
    let [a, b] = id.to_be_bytes();
    for index in 0..count {
        emit(
            [a, b, index as u8, count as u8],
            chunks.next().unwrap_or_default(),
        );
    }
    Ok(count)
}

#[derive(Debug, Default)]
struct Slot {
    id: u16,
    count: u8,
    /// Bit i set: fragment i arrived.
    have: u64,
    /// Length of every fragment but the last, once known.
    stride: usize,
    /// Each fragment's data, by index.
    parts: Vec<Option<Vec<u8>>>,
    /// Age stamp for eviction (larger is newer).
    stamp: u64,
    busy: bool,
}

/// Reassembles fragments of one sender's frames.
#[derive(Debug, Default)]
pub struct Reassembler {
    slots: [Slot; SLOTS],
    clock: u64,
    evicted: u64,
}

impl Reassembler {
    /// Takes one fragment (header included). Returns `Ok(Some(frame))` when it completes
    /// a frame, `Ok(None)` while more are missing.
    pub fn push(&mut self, datagram: &[u8]) -> Result<Option<Vec<u8>>, FragmentError> {
        let (head, data) = datagram
            .split_at_checked(FRAGMENT_HEADER_LEN)
            .ok_or(FragmentError::Malformed)?;
        let id = u16::from_be_bytes([head[0], head[1]]);
        let (index, count) = (head[2], head[3]);
        if count == 0 || index >= count || usize::from(count) > MAX_FRAGMENTS {
            return Err(FragmentError::Malformed);
        }
        if count == 1 {
            return Ok(Some(data.to_vec()));
        }
        self.clock += 1;
        let stamp = self.clock;
        let slot = match self.slots.iter().position(|s| s.busy && s.id == id) {
            Some(i) => &mut self.slots[i],
            None => {
                // Reuse a free slot, else evict the oldest partial frame.
                let i = (0..SLOTS)
                    .min_by_key(|&i| (self.slots[i].busy, self.slots[i].stamp))
                    .unwrap_or_default();
                if self.slots[i].busy {
                    self.evicted += 1;
                }
                self.slots[i] = Slot {
                    id,
                    count,
                    parts: vec![None; usize::from(count)],
                    busy: true,
                    ..Slot::default()
                };
                &mut self.slots[i]
            }
        };
        slot.stamp = stamp;
        if slot.count != count {
            *slot = Slot::default();
            return Err(FragmentError::Malformed);
        }
        let last = index + 1 == count;
        if !last {
            if slot.stride != 0 && slot.stride != data.len() {
                *slot = Slot::default();
                return Err(FragmentError::Malformed);
            }
            slot.stride = data.len();
        }
        slot.have |= 1 << index;
        slot.parts[usize::from(index)] = Some(data.to_vec());
        if slot.have.count_ones() < u32::from(count) {
            return Ok(None);
        }
        let parts = std::mem::take(&mut slot.parts);
        *slot = Slot::default();
        let mut frame = Vec::with_capacity(parts.iter().flatten().map(Vec::len).sum());
        for p in parts.into_iter().flatten() {
            frame.extend_from_slice(&p);
        }
        Ok(Some(frame))
    }

    /// Partial frames dropped to make room for newer ones so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Splits with a counter standing in for the sender's.
    struct Fragmenter(u16);

    fn split(f: &mut Fragmenter, frame: &[u8], limit: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        super::split(frame, limit, f.0, |h, c| out.push([&h[..], c].concat())).unwrap();
        f.0 = f.0.wrapping_add(1);
        out
    }

    #[test]
    fn small_frames_travel_whole() {
        let mut f = Fragmenter(0);
        let frags = split(&mut f, b"tiny", 100);
        assert_eq!(frags.len(), 1);
        assert_eq!(
            Reassembler::default().push(&frags[0]).unwrap(),
            Some(b"tiny".to_vec())
        );
    }

    #[test]
    fn refuses_impossible_splits_and_bad_headers() {
        assert_eq!(
            super::split(b"x", 4, 0, |_, _| {}),
            Err(FragmentError::LimitTooSmall(4))
        );
        assert_eq!(
            super::split(&[0; 1000], 14, 0, |_, _| {}),
            Err(FragmentError::TooLarge(1000))
        );
        let mut r = Reassembler::default();
        for bad in [&[0u8, 1, 0][..], &[0, 1, 0, 0], &[0, 1, 2, 2], &[0, 1, 0, 65]] {
            assert_eq!(r.push(bad), Err(FragmentError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn a_lost_fragment_loses_only_its_frame() {
        let mut f = Fragmenter(0);
        let a = split(&mut f, &[1; 3000], 1200);
        let b = split(&mut f, &[2; 3000], 1200);
        let mut r = Reassembler::default();
        assert_eq!(r.push(&a[0]).unwrap(), None);
        for frag in &b {
            let out = r.push(frag).unwrap();
            if frag == b.last().unwrap() {
                assert_eq!(out, Some(vec![2; 3000]));
            }
        }
    }

    #[test]
    fn partial_frames_are_evicted_oldest_first() {
        let mut f = Fragmenter(0);
        let mut r = Reassembler::default();
        let frames: Vec<_> = (0..SLOTS + 1)
            .map(|i| split(&mut f, &[i as u8; 2000], 1200))
            .collect();
        for frags in &frames {
            assert_eq!(r.push(&frags[0]).unwrap(), None);
        }
        assert_eq!(r.evicted(), 1);
        // The oldest is gone: its second half alone starts a new partial frame.
        assert_eq!(r.push(&frames[0][1]).unwrap(), None);
        // The newest is still there.
        assert_eq!(r.push(&frames[SLOTS][1]).unwrap(), Some(vec![SLOTS as u8; 2000]));
    }

    proptest! {
        #[test]
        fn any_order_reassembles(
            frame in proptest::collection::vec(any::<u8>(), 0..9000),
            limit in 200usize..1500,
            seed in any::<u64>(),
        ) {
            let mut f = Fragmenter(0);
            let mut frags = split(&mut f, &frame, limit);
            prop_assume!(frags.len() <= MAX_FRAGMENTS);
            // A deterministic shuffle from the seed.
            let n = frags.len();
            for i in (1..n).rev() {
                let j = (seed.wrapping_mul(i as u64 + 7) % (i as u64 + 1)) as usize;
                frags.swap(i, j);
            }
            let mut r = Reassembler::default();
            let mut done = None;
            for (k, frag) in frags.iter().enumerate() {
                prop_assert!(frag.len() <= limit);
                let out = r.push(frag).unwrap();
                if k + 1 < n {
                    prop_assert_eq!(&out, &None);
                } else {
                    done = out;
                }
            }
            prop_assert_eq!(done, Some(frame));
        }

        #[test]
        fn garbage_never_panics(d in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reassembler::default();
            let _ = r.push(&d);
            let _ = r.push(&d);
        }
    }
}
