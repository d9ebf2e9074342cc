//! Receive-side coalescing of TCP segments into super-frames (user-space GRO), pure.
//!
//! A UDP link cannot carry TSO super-frames, so the sending daemon cuts them into ordinary
//! frames with complete checksums ([`crate::offload::segment`]). Writing those into a TAP one
//! `write()` each caps the link far below what the VM's stack takes, since a TAP has no
//! multi-packet write. [`Coalescer`] glues consecutive in-order TCP segments of one flow
//! back into one super-frame with a virtio-net header (TSO, partial checksum), as Linux GRO
//! does for a NIC, so the TAP gets one write per up to 64 KiB.
//!
//! Merging follows the rules of Linux's `tcp_gro_receive`, narrowed: Ethernet (optionally
//! one 802.1Q tag), IPv4 without options or fragmentation with consecutive ids, or IPv6
//! with TCP as the next header; identical headers apart from lengths, ids, checksums,
//! sequence numbers and PSH; no SYN, FIN, RST, URG, ECE or CWR; equal-sized segments in
//! sequence, a shorter one or one with PSH ending the super-frame; valid checksums.
//! Anything else passes through unchanged, in order, so a frame the kernel should see
//! (or drop, for a bad checksum) reaches it exactly as it arrived.

use crate::offload::{
    fold, internet_checksum, sum_words, write_u16, VirtioNetHdr, ETHERTYPE_VLAN, ETH_HLEN, GSO_TCPV4,
    GSO_TCPV6, PROTO_TCP, TCP_CWR, TCP_FIN, TCP_PSH, VIRTIO_NET_HDR_F_NEEDS_CSUM,
};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_URG: u8 = 0x20;
const TCP_ECE: u8 = 0x40;
/// A segment with any of these flags passes through: they mark connection events or
/// congestion signals a merge would move or lose.
const TCP_NO_MERGE: u8 = TCP_FIN | TCP_SYN | TCP_RST | TCP_URG | TCP_ECE | TCP_CWR;
/// Offset of the checksum field in the TCP header.
const TCP_CSUM_OFFSET: u16 = 16;
/// The largest frame whose IP length fields can describe it (802.1Q tag, IPv6 header,
/// 65 535 payload bytes): larger buffers would never fill.
const MAX_FRAME: usize = ETH_HLEN + 4 + 40 + 0xffff;

/// What a [`Coalescer`] has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroStats {
    /// Frames offered to [`Coalescer::push`].
    pub frames_in: u64,
    /// Super-frames emitted, each merged from at least two segments.
    pub super_frames: u64,
    /// Segments that went into those super-frames.
    pub merged_segments: u64,
    /// TCP segments passed through unmerged because their IPv4 header checksum or TCP
    /// checksum was wrong (the kernel drops them).
    pub bad_checksum: u64,
}

/// Where a mergeable TCP segment's headers are, and the fields merging compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    /// Offset of the IP header.
    l3: usize,
    /// Offset of the TCP header.
    l4: usize,
    /// Length of all headers, TCP options included.
    hlen: usize,
    ipv6: bool,
    /// IPv4 identification (0 for IPv6).
    ip_id: u16,
    seq: u32,
    flags: u8,
    /// TCP payload bytes (never zero).
    payload: u16,
}

/// Parses `frame` as a TCP segment that may take part in a merge (checksums aside), or
/// `None` for anything else.
fn parse(frame: &[u8]) -> Option<Segment> {
    let be16 = |at: usize| frame.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (l3, ethertype) = match be16(12)? {
        ETHERTYPE_VLAN => (ETH_HLEN + 4, be16(16)?),
        other => (ETH_HLEN, other),
    };
    let ip_len = frame.len().checked_sub(l3)?;
    // The IP length must cover the frame exactly: Ethernet padding or a truncated
    // datagram would otherwise be glued into the byte stream.
    let (ipv6, l4, ip_id) = match ethertype {
        ETHERTYPE_IPV4 => {
            let h = frame.get(l3..l3 + 20)?;
            let unfragmented = u16::from_be_bytes([h[6], h[7]]) & 0x3fff == 0; // MF, offset
            let whole = usize::from(u16::from_be_bytes([h[2], h[3]])) == ip_len;
            if h[0] != 0x45 || h[9] != PROTO_TCP || !unfragmented || !whole {
                return None;
            }
            (false, l3 + 20, u16::from_be_bytes([h[4], h[5]]))
        }
        ETHERTYPE_IPV6 => {
            let h = frame.get(l3..l3 + 40)?;
            let whole = usize::from(u16::from_be_bytes([h[4], h[5]])) + 40 == ip_len;
            if h[0] >> 4 != 6 || h[6] != PROTO_TCP || !whole {
                return None;
            }
            (true, l3 + 40, 0)
        }
        _ => return None,
    };
    let th = frame.get(l4..l4 + 20)?;
    let hlen = l4 + usize::from(th[12] >> 4) * 4;
    let flags = th[13];
    if hlen < l4 + 20 || flags & TCP_NO_MERGE != 0 {
        return None;
    }
    let payload = u16::try_from(frame.len().checked_sub(hlen)?)
        .ok()
        .filter(|&p| p > 0)?;
    Some(Segment {
        l3,
        l4,
        hlen,
        ipv6,
        ip_id,
        seq: u32::from_be_bytes([th[4], th[5], th[6], th[7]]),
        flags,
        payload,
    })
}

/// The (unfolded) TCP pseudo-header sum: addresses, protocol and `tcp_len`.
fn pseudo_sum(frame: &[u8], seg: &Segment, tcp_len: usize) -> u32 {
    let addrs = if seg.ipv6 {
        &frame[seg.l3 + 8..seg.l3 + 40]
    } else {
        &frame[seg.l3 + 12..seg.l3 + 20]
    };
    // tcp_len fits 16 bits (the IP length fields were checked), so nothing overflows.
    sum_words(0, addrs) + u32::from(PROTO_TCP) + tcp_len as u32
}

/// True when the IPv4 header checksum (if any) and the TCP checksum verify.
fn checksums_ok(frame: &[u8], seg: &Segment) -> bool {
    let ip_ok = seg.ipv6 || internet_checksum(&frame[seg.l3..seg.l4]) == 0;
    let tcp_len = frame.len() - seg.l4;
    ip_ok && fold(sum_words(pseudo_sum(frame, seg, tcp_len), &frame[seg.l4..])) == 0xffff
}

/// True when `frame` (parsed as `seg`) belongs to the flow of `first` (the pending
/// super-frame's headers, parsed as `head`): every header byte equal except IP lengths,
/// ids and checksums, the TCP sequence number and checksum, and PSH.
fn same_flow(first: &[u8], head: &Segment, frame: &[u8], seg: &Segment) -> bool {
    if (seg.l3, seg.l4, seg.hlen) != (head.l3, head.l4, head.hlen) {
        return false;
    }
    let (l3, l4) = (seg.l3, seg.l4);
    let equal = |from: usize, to: usize| first[from..to] == frame[from..to];
    let ip = if seg.ipv6 {
        // Ethernet, version/traffic class/flow label | next header, hop limit, addresses
        // and TCP ports.
        equal(0, l3 + 4) && equal(l3 + 6, l4 + 4)
    } else {
        // Ethernet, version/IHL, TOS | DF, TTL, protocol | addresses and TCP ports.
        equal(0, l3 + 2) && equal(l3 + 6, l3 + 10) && equal(l3 + 12, l4 + 4)
    };
    // The pending headers never carry PSH: a segment with PSH ends the super-frame.
    ip && equal(l4 + 8, l4 + 13)
        && first[l4 + 13] == (frame[l4 + 13] & !TCP_PSH)
        && equal(l4 + 14, l4 + 16)
        && equal(l4 + 18, seg.hlen)
}

/// The super-frame being built.
#[derive(Clone, Copy, Debug)]
struct Pending {
    /// The caller's tag of every segment in it.
    tag: u8,
    /// The first segment.
    head: Segment,
    /// Segments merged so far.
    count: usize,
    /// Sequence number the next segment must carry.
    next_seq: u32,
}

/// Coalesces consecutive in-order TCP segments of one flow into super-frames.
///
/// Feed it the frames of one receive batch with [`push`](Coalescer::push), then call
/// [`flush`](Coalescer::flush). Every frame comes out exactly once through `emit`, in
/// arrival order: as part of a super-frame (with a TSO virtio-net header), or unchanged
/// with an all-zero header. One buffer of at most `max_bytes` is reused, so nothing is
/// allocated per frame.
pub struct Coalescer {
    max_bytes: usize,
    max_segments: usize,
    /// The pending super-frame: the first segment, then the payload merged onto it.
    buf: Vec<u8>,
    pending: Option<Pending>,
    stats: GroStats,
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The buffer's bytes would drown everything else.
        f.debug_struct("Coalescer")
            .field("max_bytes", &self.max_bytes)
            .field("max_segments", &self.max_segments)
            .field("pending_bytes", &self.buf.len())
            .field("pending", &self.pending)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Coalescer {
    /// A coalescer building super-frames of at most `max_bytes` (Ethernet header included;
    /// a TAP takes up to 64 KiB, and IP length fields limit it anyway) and at most
    /// `max_segments` segments (below 2, nothing merges).
    pub fn new(max_bytes: usize, max_segments: usize) -> Coalescer {
        let max_bytes = max_bytes.min(MAX_FRAME);
        Coalescer {
            max_bytes,
            max_segments,
            buf: Vec::with_capacity(max_bytes),
            pending: None,
            stats: GroStats::default(),
        }
    }

    /// Counters since creation.
    pub fn stats(&self) -> GroStats {
        self.stats
    }

    /// Offers one ordinary Ethernet frame with an opaque `tag` (frames with different tags
    /// never merge; the data path passes the link hop limit). Calls `emit(tag, header,
    /// frame)` for every frame or super-frame now complete, in arrival order: a frame that
    /// cannot join the pending super-frame flushes it first, then either becomes the new
    /// pending one or is emitted unchanged with an all-zero header.
    pub fn push(&mut self, tag: u8, frame: &[u8], emit: &mut impl FnMut(u8, &VirtioNetHdr, &[u8])) {
        self.stats.frames_in += 1;
        let Some(seg) = parse(frame) else {
            return self.pass(tag, frame, emit);
        };
        if !checksums_ok(frame, &seg) {
            self.stats.bad_checksum += 1;
            return self.pass(tag, frame, emit);
        }
        if let Some(p) = &mut self.pending {
            let len = self.buf.len() + usize::from(seg.payload);
            // The IPv4 total length or IPv6 payload length must still fit 16 bits.
            let ip_len = len - if seg.ipv6 { seg.l4 } else { seg.l3 };
            let fits = len <= self.max_bytes && ip_len <= 0xffff;
            if p.tag == tag
                && seg.seq == p.next_seq
                && seg.payload <= p.head.payload
                && p.count < self.max_segments
                && fits
                && (seg.ipv6 || seg.ip_id == p.head.ip_id.wrapping_add(p.count as u16))
                && same_flow(&self.buf, &p.head, frame, &seg)
            {
                self.buf.extend_from_slice(&frame[seg.hlen..]);
                p.count += 1;
                p.next_seq = seg.seq.wrapping_add(u32::from(seg.payload));
                let psh = seg.flags & TCP_PSH != 0;
                if psh {
                    self.buf[seg.l4 + 13] |= TCP_PSH;
                }
                // A short segment ends the run (re-segmenting at gso_size could not
                // reproduce anything after it), and PSH asks for delivery now.
                if psh || seg.payload < p.head.payload {
                    self.flush(emit);
                }
                return;
            }
        }
        self.flush(emit);
        // A segment with PSH could only ever be a super-frame of one; a frame at the size
        // limit has no room for another.
        if seg.flags & TCP_PSH != 0 || self.max_segments < 2 || frame.len() >= self.max_bytes {
            emit(tag, &VirtioNetHdr::default(), frame);
            return;
        }
        self.buf.clear();
        self.buf.extend_from_slice(frame);
        self.pending = Some(Pending {
            tag,
            head: seg,
            count: 1,
            next_seq: seg.seq.wrapping_add(u32::from(seg.payload)),
        });
    }

    /// Emits the pending super-frame, if any (call it at the end of each receive batch).
    /// A lone segment comes out as it arrived, with an all-zero header.
    pub fn flush(&mut self, emit: &mut impl FnMut(u8, &VirtioNetHdr, &[u8])) {
        let Some(p) = self.pending.take() else {
            return;
        };
        if p.count == 1 {
            emit(p.tag, &VirtioNetHdr::default(), &self.buf);
            return;
        }
        let Segment {
            l3, l4, hlen, ipv6, ..
        } = p.head;
        let len = self.buf.len();
        // The length checks in `push` keep every value below within 16 bits.
        if ipv6 {
            write_u16(&mut self.buf, l3 + 4, (len - l4) as u16);
        } else {
            write_u16(&mut self.buf, l3 + 2, (len - l3) as u16);
            write_u16(&mut self.buf, l3 + 10, 0);
            let csum = internet_checksum(&self.buf[l3..l4]);
            write_u16(&mut self.buf, l3 + 10, csum);
        }
        // CHECKSUM_PARTIAL, as the kernel leaves it on its own super-frames: the field holds
        // the folded, uncomplemented pseudo-header sum over the whole TCP length.
        let pseudo = fold(pseudo_sum(&self.buf, &p.head, len - l4));
        write_u16(&mut self.buf, l4 + usize::from(TCP_CSUM_OFFSET), pseudo);
        self.stats.super_frames += 1;
        self.stats.merged_segments += p.count as u64;
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: if ipv6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: hlen as u16,
            gso_size: p.head.payload,
            csum_start: l4 as u16,
            csum_offset: TCP_CSUM_OFFSET,
        };
        emit(p.tag, &hdr, &self.buf);
    }

    /// Flushes the pending super-frame, then emits `frame` unchanged.
    fn pass(&mut self, tag: u8, frame: &[u8], emit: &mut impl FnMut(u8, &VirtioNetHdr, &[u8])) {
        self.flush(emit);
        emit(tag, &VirtioNetHdr::default(), frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::tests::{hdr_for, super_frame};
    use crate::offload::{complete_checksum, segment};
    use proptest::prelude::*;

    const ACK: u8 = 0x10;
    /// NOP, NOP, timestamps 1 and 2.
    const TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

    type Out = (u8, VirtioNetHdr, Vec<u8>);

    /// A TCP super-frame and its header, with `opts` appended to the TCP header (a
    /// multiple of 4 bytes), source port `sport` and flags ACK plus `psh`.
    fn tcp_super_frame(
        ipv6: bool,
        vlan: bool,
        payload: &[u8],
        mss: u16,
        opts: &[u8],
        sport: u16,
        psh: bool,
    ) -> (Vec<u8>, VirtioNetHdr) {
        let mut f = super_frame(ipv6, false, vlan, payload, ACK | if psh { TCP_PSH } else { 0 });
        let mut h = hdr_for(ipv6, false, vlan, mss);
        let l4 = usize::from(h.csum_start);
        f[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
        f.splice(l4 + 20..l4 + 20, opts.iter().copied());
        f[l4 + 12] = (((20 + opts.len()) / 4) << 4) as u8;
        h.hdr_len += opts.len() as u16;
        fix(&mut f);
        (f, h)
    }

    /// Recomputes IP lengths and the IPv4 header and TCP checksums after an edit.
    fn fix(f: &mut [u8]) {
        let l3 = if f[12..14] == [0x81, 0] { 18 } else { 14 };
        let ipv6 = f[l3] >> 4 == 6;
        let l4 = l3 + if ipv6 { 40 } else { 20 };
        let len = f.len();
        if ipv6 {
            write_u16(f, l3 + 4, (len - l4) as u16);
        } else {
            write_u16(f, l3 + 2, (len - l3) as u16);
            write_u16(f, l3 + 10, 0);
            let c = internet_checksum(&f[l3..l4]);
            write_u16(f, l3 + 10, c);
        }
        let addrs = if ipv6 {
            &f[l3 + 8..l3 + 40]
        } else {
            &f[l3 + 12..l3 + 20]
        };
        let pseudo = sum_words(0, addrs) + 6 + (len - l4) as u32;
        write_u16(f, l4 + 16, 0);
        let c = !fold(sum_words(pseudo, &f[l4..]));
        write_u16(f, l4 + 16, c);
    }

    fn segments(f: &[u8], h: &VirtioNetHdr) -> Vec<Vec<u8>> {
        let mut segs = Vec::new();
        segment(f, h, usize::MAX, &mut Vec::new(), |s| segs.push(s.to_vec())).unwrap();
        segs
    }

    fn run(c: &mut Coalescer, inputs: &[(u8, Vec<u8>)]) -> Vec<Out> {
        let mut out = Vec::new();
        let mut emit = |tag: u8, h: &VirtioNetHdr, f: &[u8]| out.push((tag, *h, f.to_vec()));
        for (tag, f) in inputs {
            c.push(*tag, f, &mut emit);
        }
        c.flush(&mut emit);
        out
    }

    /// Turns outputs back into the frames they stand for (super-frames re-segmented the
    /// way a kernel would), checking each super-frame's header and partial checksum.
    /// Returns the frames and how many each output stood for.
    fn expand(c: &Coalescer, out: &[Out]) -> (Vec<(u8, Vec<u8>)>, Vec<usize>) {
        let mut frames = Vec::new();
        let mut groups = Vec::new();
        for (tag, h, f) in out {
            if *h == VirtioNetHdr::default() {
                frames.push((*tag, f.clone()));
                groups.push(1);
                continue;
            }
            assert!(f.len() <= c.max_bytes, "{} > {}", f.len(), c.max_bytes);
            let seg = parse(f).expect("a super-frame parses as a TCP segment");
            assert_eq!(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
            assert_eq!(h.gso_type, if seg.ipv6 { GSO_TCPV6 } else { GSO_TCPV4 });
            assert_eq!(usize::from(h.csum_start), seg.l4);
            assert_eq!(usize::from(h.hdr_len), seg.hlen);
            assert_eq!(h.csum_offset, 16);
            // Completing the partial checksum the way a device would yields a valid one.
            let mut done = f.clone();
            complete_checksum(&mut done, h).unwrap();
            assert!(
                checksums_ok(&done, &seg),
                "partial checksum is not the pseudo-header sum"
            );
            let segs = segments(f, h);
            assert!(segs.len() >= 2 && segs.len() <= c.max_segments);
            groups.push(segs.len());
            frames.extend(segs.into_iter().map(|s| (*tag, s)));
        }
        (frames, groups)
    }

    #[test]
    fn rules_decide_what_merges() {
        // Four 100-byte segments of one IPv4 flow with timestamps, PSH on the last.
        let (f, h) = tcp_super_frame(false, false, &[7; 400], 100, &TIMESTAMPS, 5000, true);
        let base: Vec<(u8, Vec<u8>)> = segments(&f, &h).into_iter().map(|s| (64, s)).collect();
        let cases: &[(&str, Edit, &[usize])] = &[
            ("one run", |_| {}, &[4]),
            ("gap", |v| drop(v.remove(1)), &[1, 2]),
            ("bad checksum", |v| v[1].1[70] ^= 1, &[1, 1, 2]),
            ("bad IPv4 header checksum", |v| v[1].1[24] ^= 1, &[1, 1, 2]),
            ("other tag", |v| v[2].0 = 63, &[2, 1, 1]),
            ("ECE", |v| edit(&mut v[2].1, |f| f[47] |= TCP_ECE), &[2, 1, 1]),
            ("TTL", |v| edit(&mut v[2].1, |f| f[22] -= 1), &[2, 1, 1]),
            ("TOS", |v| edit(&mut v[2].1, |f| f[15] = 2), &[2, 1, 1]),
            ("window", |v| edit(&mut v[2].1, |f| f[48] ^= 1), &[2, 1, 1]),
            ("ack", |v| edit(&mut v[2].1, |f| f[45] ^= 1), &[2, 1, 1]),
            ("IPv4 id", |v| edit(&mut v[2].1, |f| f[19] ^= 0x80), &[2, 1, 1]),
            (
                "more fragments",
                |v| edit(&mut v[1].1, |f| f[20] |= 0x20),
                &[1, 1, 2],
            ),
            ("destination MAC", |v| edit(&mut v[2].1, |f| f[0] = 4), &[2, 1, 1]),
            ("PSH", |v| edit(&mut v[1].1, |f| f[47] |= TCP_PSH), &[2, 2]),
            ("padding", |v| v[1].1.extend_from_slice(&[0; 4]), &[1, 1, 2]),
            (
                "short segment ends it",
                |v| {
                    edit(&mut v[1].1, |f| f.truncate(f.len() - 50));
                    pull_seq(&mut v[2..], 50);
                },
                &[2, 2],
            ),
            ("ACK flag", |v| edit(&mut v[2].1, |f| f[47] &= !ACK), &[2, 1, 1]),
            (
                "longer than the first",
                |v| {
                    edit(&mut v[0].1, |f| f.truncate(f.len() - 50));
                    pull_seq(&mut v[1..], 50);
                },
                &[1, 3],
            ),
            ("timestamp", |v| edit(&mut v[2].1, |f| f[61] ^= 1), &[2, 1, 1]),
            ("pure ACK", |v| edit(&mut v[1].1, |f| f.truncate(66)), &[1, 1, 2]),
            (
                "other flow between",
                |v| v.insert(2, (64, other_flow())),
                &[2, 1, 2],
            ),
            ("UDP between", |v| v.insert(2, (64, udp_frame())), &[2, 1, 2]),
        ];
        /// Moves the segments' sequence numbers `by` bytes back (after a shortened one).
        fn pull_seq(segs: &mut [(u8, Vec<u8>)], by: u32) {
            for (_, s) in segs {
                edit(s, |f| {
                    let seq = u32::from_be_bytes(f[38..42].try_into().unwrap());
                    f[38..42].copy_from_slice(&seq.wrapping_sub(by).to_be_bytes());
                });
            }
        }
        fn other_flow() -> Vec<u8> {
            let (f, h) = tcp_super_frame(false, false, &[9; 30], 100, &[], 6000, false);
            segments(&f, &h).remove(0)
        }
        fn udp_frame() -> Vec<u8> {
            super_frame(false, true, false, &[1; 50], 0)
        }
        assert_groups(&base, cases);
    }

    #[test]
    fn ipv6_and_vlan_fields_split_flows() {
        // Four 100-byte segments of one IPv6 flow behind an 802.1Q tag: IPv6 at 18, TCP at 58.
        let (f, h) = tcp_super_frame(true, true, &[7; 400], 100, &[], 5000, false);
        let base: Vec<(u8, Vec<u8>)> = segments(&f, &h).into_iter().map(|s| (64, s)).collect();
        let cases: &[(&str, Edit, &[usize])] = &[
            ("one run", |_| {}, &[4]),
            ("VLAN id", |v| edit(&mut v[2].1, |f| f[15] ^= 1), &[2, 1, 1]),
            ("traffic class", |v| edit(&mut v[2].1, |f| f[18] ^= 1), &[2, 1, 1]),
            ("flow label", |v| edit(&mut v[2].1, |f| f[21] ^= 1), &[2, 1, 1]),
            ("hop limit", |v| edit(&mut v[2].1, |f| f[25] -= 1), &[2, 1, 1]),
            (
                "source address",
                |v| edit(&mut v[2].1, |f| f[26] ^= 1),
                &[2, 1, 1],
            ),
            (
                "destination port",
                |v| edit(&mut v[2].1, |f| f[61] ^= 1),
                &[2, 1, 1],
            ),
            (
                "extension header",
                |v| edit(&mut v[2].1, |f| f[24] = 0),
                &[2, 1, 1],
            ),
            ("bad checksum", |v| v[1].1[80] ^= 1, &[1, 1, 2]),
        ];
        assert_groups(&base, cases);
    }

    type Edit = fn(&mut Vec<(u8, Vec<u8>)>);

    /// Applies `change` to a frame and repairs its lengths and checksums.
    fn edit(f: &mut Vec<u8>, change: impl FnOnce(&mut Vec<u8>)) {
        change(f);
        fix(f);
    }

    /// Runs each case's edit of `base` through a coalescer and checks that the frames come
    /// out intact, grouped as expected.
    fn assert_groups(base: &[(u8, Vec<u8>)], cases: &[(&str, Edit, &[usize])]) {
        for (name, change, groups) in cases {
            let mut inputs = base.to_vec();
            change(&mut inputs);
            let mut c = Coalescer::new(65_000, 64);
            let out = run(&mut c, &inputs);
            let (frames, got) = expand(&c, &out);
            assert_eq!(frames, inputs, "{name}: frames lost, changed or reordered");
            assert_eq!(&got, groups, "{name}");
            let stats = c.stats();
            assert_eq!(stats.frames_in, inputs.len() as u64, "{name}");
            assert_eq!(
                stats.super_frames,
                got.iter().filter(|&&g| g > 1).count() as u64,
                "{name}"
            );
            assert_eq!(stats.bad_checksum, u64::from(name.starts_with("bad")), "{name}");
        }
    }

    #[test]
    fn limits_split_runs() {
        let (f, h) = tcp_super_frame(true, true, &[5; 1000], 100, &[], 5000, false);
        let inputs: Vec<(u8, Vec<u8>)> = segments(&f, &h).into_iter().map(|s| (1, s)).collect();
        let mut c = Coalescer::new(65_000, 3);
        let out = run(&mut c, &inputs);
        assert_eq!(expand(&c, &out), (inputs.clone(), vec![3, 3, 3, 1]));
        // Room for the headers and 250 payload bytes: two segments per super-frame.
        let mut c = Coalescer::new(inputs[0].1.len() + 150, 64);
        let out = run(&mut c, &inputs);
        assert_eq!(expand(&c, &out), (inputs.clone(), vec![2, 2, 2, 2, 2]));
        let mut c = Coalescer::new(65_000, 1);
        let out = run(&mut c, &inputs);
        assert_eq!(expand(&c, &out), (inputs, vec![1; 10]));
    }

    #[test]
    fn ipv4_length_stays_within_16_bits() {
        // 60 segments of 1100 bytes: 66 000 payload bytes would overflow the IPv4 length.
        let (f, h) = tcp_super_frame(false, false, &[3; 66_000], 1100, &[], 5000, false);
        let inputs: Vec<(u8, Vec<u8>)> = segments(&f, &h).into_iter().map(|s| (1, s)).collect();
        let mut c = Coalescer::new(usize::MAX, 64);
        let out = run(&mut c, &inputs);
        let (frames, groups) = expand(&c, &out);
        assert_eq!(frames, inputs);
        assert_eq!(groups, vec![59, 1]);
        assert!(out.iter().all(|(_, _, f)| f.len() - 14 <= 0xffff));
    }

    /// The segments of one flow (timestamp option, payload derived from the port).
    fn flow_segments(ipv6: bool, vlan: bool, len: usize, mss: u16, sport: u16, psh: bool) -> Vec<Vec<u8>> {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + usize::from(sport)) as u8).collect();
        let (f, h) = tcp_super_frame(ipv6, vlan, &payload, mss, &TIMESTAMPS, sport, psh);
        segments(&f, &h)
    }

    proptest! {
        #[test]
        fn coalesced_run_round_trips(
            ipv6 in any::<bool>(),
            vlan in any::<bool>(),
            options in any::<bool>(),
            psh in any::<bool>(),
            mss in 1u16..1500,
            count in 2usize..=64,
            last in any::<prop::sample::Index>(),
            seed in any::<u8>(),
        ) {
            let count = count.min(60_000 / usize::from(mss)).max(2);
            let len = (count - 1) * usize::from(mss) + 1 + last.index(usize::from(mss));
            let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed) ^ seed).collect();
            let ts: &[u8] = if options { &TIMESTAMPS } else { &[] };
            let (f, h) = tcp_super_frame(ipv6, vlan, &payload, mss, ts, 5000, psh);
            let segs = segments(&f, &h);
            prop_assert_eq!(segs.len(), count);
            let inputs: Vec<(u8, Vec<u8>)> = segs.into_iter().map(|s| (64, s)).collect();
            let mut c = Coalescer::new(65_535, 64);
            let out = run(&mut c, &inputs);
            prop_assert_eq!(out.len(), 1);
            let (tag, hdr, sf) = &out[0];
            prop_assert_eq!(*tag, 64);
            prop_assert_eq!(hdr.gso_size, mss);
            prop_assert_eq!(&sf[f.len() - len..], &payload[..]);
            let (frames, groups) = expand(&c, &out);
            prop_assert_eq!(frames, inputs);
            prop_assert_eq!(groups, vec![count]);
            let stats = c.stats();
            prop_assert_eq!((stats.super_frames, stats.merged_segments), (1, count as u64));
        }

        #[test]
        fn mixed_streams_never_merge_wrongly(
            flows in proptest::collection::vec(
                (any::<bool>(), any::<bool>(), 1usize..5000, 1u16..1500, any::<bool>(), 0u8..2),
                1..4,
            ),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..200),
            damage in proptest::collection::vec(
                (any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>()),
                0..4,
            ),
            drops in proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
            max_segments in 1usize..70,
            max_bytes in 60usize..70_000,
        ) {
            // Each flow's segments stay in order; flows interleave as `order` picks them.
            let mut queues: Vec<std::collections::VecDeque<(u8, Vec<u8>)>> = flows
                .iter()
                .enumerate()
                .map(|(i, &(ipv6, vlan, len, mss, psh, tag))| {
                    let segs = flow_segments(ipv6, vlan, len, mss, 5000 + i as u16, psh);
                    segs.into_iter().map(|s| (tag, s)).collect()
                })
                .collect();
            let mut inputs = Vec::new();
            for k in 0.. {
                queues.retain(|q| !q.is_empty());
                if queues.is_empty() {
                    break;
                }
                let q = order.get(k).map_or(0, |pick| pick.index(queues.len()));
                inputs.push(queues[q].pop_front().unwrap());
            }
            for d in &drops {
                if !inputs.is_empty() {
                    inputs.remove(d.index(inputs.len()));
                }
            }
            for (frame, at, xor) in &damage {
                if !inputs.is_empty() {
                    let n = inputs.len();
                    let f = &mut inputs[frame.index(n)].1;
                    let at = at.index(f.len());
                    f[at] ^= xor;
                }
            }
            let mut c = Coalescer::new(max_bytes, max_segments);
            let out = run(&mut c, &inputs);
            let (frames, _) = expand(&c, &out);
            prop_assert_eq!(frames, inputs);
        }

        #[test]
        fn arbitrary_bytes_pass_through(
            inputs in proptest::collection::vec(
                (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)),
                0..20,
            ),
        ) {
            let mut c = Coalescer::new(65_535, 64);
            let out = run(&mut c, &inputs);
            let (frames, _) = expand(&c, &out);
            prop_assert_eq!(frames, inputs);
        }
    }
}
