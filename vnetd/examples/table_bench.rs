//! Rule-table lookup speed: uncached (`lookup_into`) and cached (`LookupCache`) lookups
//! per second on one core, with 10 000 rules, against a naive scan of the same rules in
//! the same run.
//!
//! `cargo run --release -p vnetd --example table_bench`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use vnetd::mac::MacAddr;
use vnetd::rule::{priority, DstMatch, MacMatch};
use vnetd::table::{Decision, ForwardingTable, LookupCache, PortId, RuleId, RuleStats};

const RULES: usize = 10_000;
const FLOWS: usize = 1024;
const LOOKUPS: usize = 5_000_000;

fn mac(i: usize) -> MacAddr {
    let b = (i as u32).to_be_bytes();
    MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
}

fn main() {
    // What a large overlay holds: a rule per VM destination, fast-path rules for VM
    // pairs (exact source and destination), a few `not` rules, a default rule.
    let mut table = ForwardingTable::new();
    let mut naive = Vec::new();
    for i in 0..RULES {
        let (src, dst) = match i % 10 {
            _ if i < 10 => (MacMatch::Any, DstMatch::Mac(MacMatch::Not(mac(i)))),
            0 => (
                MacMatch::Exact(mac(i + 1)),
                DstMatch::Mac(MacMatch::Exact(mac(i))),
            ),
            _ => (MacMatch::Any, DstMatch::Mac(MacMatch::Exact(mac(i)))),
        };
        let out = vec![PortId((i % 7) as u32 + 1)];
        table
            .insert(
                RuleId(i as u64),
                src,
                dst,
                out.clone(),
                Arc::new(RuleStats::default()),
            )
            .expect("insert");
        naive.push((src, dst, out));
    }
    table
        .insert(
            RuleId(RULES as u64),
            MacMatch::Any,
            DstMatch::None,
            vec![PortId(9)],
            Arc::default(),
        )
        .expect("insert");
    let flows: Vec<(MacAddr, MacAddr)> = (0..FLOWS)
        .map(|i| (mac((i * 7919) % RULES + 1), mac((i * 104_729) % RULES)))
        .collect();

    let rate = |f: &mut dyn FnMut(usize)| {
        let start = Instant::now();
        for i in 0..LOOKUPS {
            f(i);
        }
        LOOKUPS as f64 / start.elapsed().as_secs_f64() / 1e6
    };

    let mut d = Decision::default();
    let uncached = rate(&mut |i| {
        let (s, t) = flows[i % FLOWS];
        table.lookup_into(PortId(0), s, t, &mut d);
        black_box(&d);
    });
    let mut cache = LookupCache::new(4096);
    let cached = rate(&mut |i| {
        let (s, t) = flows[i % FLOWS];
        black_box(cache.lookup(&table, PortId(0), s, t));
    });
    // The naive reference: scan every rule, keep the best priority.
    let naive_rate = {
        let n = LOOKUPS / 1000;
        let start = Instant::now();
        for i in 0..n {
            let (s, t) = flows[i % FLOWS];
            let best = naive
                .iter()
                .filter(|(src, dst, _)| src.matches(s) && dst.matches(t))
                .map(|(src, dst, _)| priority(src, dst))
                .max();
            black_box(best);
        }
        n as f64 / start.elapsed().as_secs_f64() / 1e6
    };
    println!("{} rules, {FLOWS} flows, one core", RULES + 1);
    println!(
        "uncached lookup_into: {uncached:8.2} M lookups/s ({:.0}x the naive scan)",
        uncached / naive_rate
    );
    println!("cached (LookupCache): {cached:8.2} M lookups/s");
    println!("naive scan:           {naive_rate:8.4} M lookups/s");
}
