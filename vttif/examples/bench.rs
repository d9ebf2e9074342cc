//! Per-frame cost of the VTTIF accumulator: `cargo run --release -p vttif --example bench`.
//!
//! Records frames round-robin over a set of (src, dst) pairs, the way a worker sees an
//! application's flows interleaved, and prints nanoseconds per frame. A reader thread takes
//! snapshots at 20 Hz meanwhile, as a daemon answering the aggregator would.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vnet_core::mac::MacAddr;
use vttif::{accumulator, Direction, DEFAULT_CAPACITY};

const FRAMES: u64 = 50_000_000;

fn mac(i: usize) -> MacAddr {
    MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8])
}

fn main() {
    for pairs in [1usize, 8, 56, 700] {
        let flows: Vec<(MacAddr, MacAddr)> = (0..pairs).map(|i| (mac(i % 64), mac(1000 + i))).collect();
        let (mut rec, reader) = accumulator(DEFAULT_CAPACITY);
        let stop = AtomicBool::new(false);
        let (ns, snapshots) = std::thread::scope(|s| {
            let poller = s.spawn(|| {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    black_box(reader.read());
                    n += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                n
            });
            let start = Instant::now();
            for i in 0..FRAMES as usize {
                let (src, dst) = &flows[i % pairs];
                rec.record(black_box(src), black_box(dst), 1514, Direction::Sent);
            }
            let ns = start.elapsed().as_nanos() as f64 / FRAMES as f64;
            stop.store(true, Ordering::Relaxed);
            (ns, poller.join().unwrap_or(0))
        });
        let total: u64 = reader.read().entries.iter().map(|e| e.sent.frames).sum();
        assert_eq!(total, FRAMES);
        println!(
            "vttif record: {pairs:>4} pairs  {ns:6.2} ns/frame  ({snapshots} snapshots taken meanwhile)"
        );
    }
}
