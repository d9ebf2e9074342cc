//! The rule-table lookup benchmark of `vnet bench`: uncached (`lookup_into`) and cached
//! (`LookupCache`) lookups per second on one core, with 10 000 rules and a default rule,
//! against a naive scan of the same rules in the same run. Needs no root and no lab.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;
use vnet_core::forward::CACHE_CAPACITY;
use vnet_core::mac::MacAddr;
use vnet_core::rule::{priority, DstMatch, MacMatch};
use vnet_core::table::{Decision, ForwardingTable, LookupCache, PortId, RuleId, RuleStats};

/// Rules of the table besides the default rule.
const RULES: usize = 10_000;
/// Distinct (source, destination) pairs the lookups cycle through.
const FLOWS: usize = 1024;
/// Timed rounds per kind; the fastest counts, so a round slowed by another process on the
/// machine does not.
const ROUNDS: u32 = 5;
/// Lookups per round of the indexed and cached lookups (~0.1 s per kind in all).
const LOOKUPS: u64 = 1_000_000;
/// Lookups per round of the naive scan, which is ~400× slower.
const NAIVE_LOOKUPS: u64 = 1_000;

/// Lookup rates of one run, in million lookups per second on one core.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LookupFigures {
    /// Rules in the table (the default rule included).
    pub rules: usize,
    /// Distinct (source, destination) pairs looked up.
    pub flows: usize,
    /// Entries of the lookup cache (a datapath worker's).
    pub cache_entries: usize,
    /// Timed rounds per kind; each figure is the fastest round.
    pub rounds: u32,
    /// `ForwardingTable::lookup_into`, M lookups/s.
    pub uncached_m_per_s: f64,
    /// `LookupCache::lookup` (every flow fits the cache), M lookups/s.
    pub cached_m_per_s: f64,
    /// Scanning every rule for the best priority, M lookups/s.
    pub naive_m_per_s: f64,
    /// `uncached_m_per_s / naive_m_per_s`.
    pub uncached_x_naive: f64,
    /// Whether this binary was built without optimizations (figures not meaningful).
    pub debug_build: bool,
}

/// The table under test, the same rules as a plain list for the naive scan, and the flows.
struct Bench {
    table: ForwardingTable,
    naive: Vec<(MacMatch, DstMatch, Vec<PortId>)>,
    flows: Vec<(MacAddr, MacAddr)>,
}

fn mac(i: usize) -> MacAddr {
    let b = (i as u32).to_be_bytes();
    MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
}

impl Bench {
    /// What a large overlay holds: a rule per VM destination, fast-path rules for VM pairs
    /// (exact source and destination), a few `not` rules, a default rule.
    fn new() -> Result<Bench> {
        let mut table = ForwardingTable::new();
        let mut naive = Vec::with_capacity(RULES + 1);
        let default_rule = (MacMatch::Any, DstMatch::None, vec![PortId(9)]);
        let rules = (0..RULES)
            .map(|i| {
                let (src, dst) = match i % 10 {
                    _ if i < 10 => (MacMatch::Any, DstMatch::Mac(MacMatch::Not(mac(i)))),
                    0 => (
                        MacMatch::Exact(mac(i + 1)),
                        DstMatch::Mac(MacMatch::Exact(mac(i))),
                    ),
                    _ => (MacMatch::Any, DstMatch::Mac(MacMatch::Exact(mac(i)))),
                };
                (src, dst, vec![PortId((i % 7) as u32 + 1)])
            })
            .chain([default_rule]);
        for (i, (src, dst, out)) in rules.enumerate() {
            table.insert(
                RuleId(i as u64),
                src,
                dst,
                out.clone(),
                Arc::new(RuleStats::default()),
            )?;
            naive.push((src, dst, out));
        }
        let flows = (0..FLOWS)
            .map(|i| (mac((i * 7919) % RULES + 1), mac((i * 104_729) % RULES)))
            .collect();
        Ok(Bench { table, naive, flows })
    }

    /// The naive reference: every rule at the best matching priority fires; their outputs,
    /// deduplicated, in rule order.
    fn naive_outputs(&self, src: MacAddr, dst: MacAddr) -> Vec<PortId> {
        let matching = || {
            self.naive
                .iter()
                .filter(|(s, d, _)| s.matches(src) && d.matches(dst))
        };
        let Some(best) = matching().map(|(s, d, _)| priority(s, d)).max() else {
            return Vec::new();
        };
        let mut outputs = Vec::new();
        for (_, _, out) in matching().filter(|(s, d, _)| priority(s, d) == best) {
            for port in out {
                if !outputs.contains(port) {
                    outputs.push(*port);
                }
            }
        }
        outputs
    }

    /// A rate is only worth printing for lookups that give the right answer: checks the
    /// indexed lookup against the naive scan on every flow.
    fn verify(&self) -> Result<()> {
        let mut d = Decision::default();
        for &(src, dst) in &self.flows {
            self.table.lookup_into(PortId(0), src, dst, &mut d);
            let expected = self.naive_outputs(src, dst);
            if d.outputs != expected {
                bail!(
                    "the rule table answers {:?} for {src} -> {dst}, the naive scan {expected:?}",
                    d.outputs
                );
            }
        }
        Ok(())
    }

    /// The fastest of [`ROUNDS`] rounds of `n` calls of `f` (given the call number), in M
    /// calls per second.
    fn best_rate(n: u64, mut f: impl FnMut(usize)) -> f64 {
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                for i in 0..n {
                    f(i as usize);
                }
                n as f64 / start.elapsed().as_secs_f64() / 1e6
            })
            .fold(0.0, f64::max)
    }

    /// Runs the three timings with `lookups` lookups per round (`naive_lookups` for the
    /// naive scan).
    fn measure(&self, lookups: u64, naive_lookups: u64) -> LookupFigures {
        // The flows are built at run time, so the compiler cannot fold lookups into
        // constants; `black_box` on each result keeps every lookup (and, being a compiler
        // barrier, keeps it from moving across iterations) without taxing the inputs.
        let flow = |i: usize| self.flows[i % FLOWS];
        let mut d = Decision::default();
        let uncached = Bench::best_rate(lookups, |i| {
            let (s, t) = flow(i);
            self.table.lookup_into(PortId(0), s, t, &mut d);
            black_box(&d);
        });
        let mut cache = LookupCache::new(CACHE_CAPACITY);
        let cached = Bench::best_rate(lookups, |i| {
            let (s, t) = flow(i);
            black_box(cache.lookup(&self.table, PortId(0), s, t));
        });
        // Only the priority search, not the output merge: generous to the naive scan.
        let naive = Bench::best_rate(naive_lookups, |i| {
            let (s, t) = flow(i);
            let best = self
                .naive
                .iter()
                .filter(|(src, dst, _)| src.matches(s) && dst.matches(t))
                .map(|(src, dst, _)| priority(src, dst))
                .max();
            black_box(best);
        });
        LookupFigures {
            rules: self.naive.len(),
            flows: FLOWS,
            cache_entries: cache.capacity(),
            rounds: ROUNDS,
            uncached_m_per_s: uncached,
            cached_m_per_s: cached,
            naive_m_per_s: naive,
            uncached_x_naive: uncached / naive,
            debug_build: cfg!(debug_assertions),
        }
    }
}

/// Builds the 10 001-rule table, checks its answers against a naive scan, and times
/// uncached, cached and naive lookups on the calling thread (about half a second in a
/// release build).
pub fn measure() -> Result<LookupFigures> {
    let bench = Bench::new()?;
    bench.verify()?;
    Ok(bench.measure(LOOKUPS, NAIVE_LOOKUPS))
}

/// The figures as the lines `vnet bench` prints.
pub fn render(f: &LookupFigures) -> String {
    let mut s = format!(
        "rule-table lookups: {} rules, {} flows, {}-entry cache, one core, best of {} rounds{}\n",
        f.rules,
        f.flows,
        f.cache_entries,
        f.rounds,
        if f.debug_build {
            " (DEBUG BUILD: not meaningful, use --release)"
        } else {
            ""
        }
    );
    s += &format!(
        "  uncached (lookup_into)  {:8.2} M/s  ({:.0}x the naive scan)\n",
        f.uncached_m_per_s, f.uncached_x_naive
    );
    s += &format!("  cached (LookupCache)    {:8.2} M/s\n", f.cached_m_per_s);
    s += &format!("  naive scan              {:8.4} M/s\n", f.naive_m_per_s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_agrees_with_the_naive_scan() {
        let bench = Bench::new().unwrap();
        assert_eq!(bench.table.len(), RULES + 1);
        bench.verify().unwrap();
        // The flows take both lookup paths: one rule firing, and several whose outputs merge.
        let fired: Vec<usize> = bench
            .flows
            .iter()
            .map(|&(s, d)| bench.table.lookup(PortId(0), s, d).fired.len())
            .collect();
        assert!(fired.contains(&1), "{fired:?}");
        assert!(fired.iter().any(|&n| n > 1), "{fired:?}");
    }

    #[test]
    fn short_run_reports_every_figure() {
        let f = Bench::new().unwrap().measure(2_000, 10);
        assert_eq!((f.rules, f.flows, f.rounds), (RULES + 1, FLOWS, ROUNDS));
        assert_eq!(f.cache_entries, CACHE_CAPACITY);
        for rate in [f.uncached_m_per_s, f.cached_m_per_s, f.naive_m_per_s] {
            assert!(rate.is_finite() && rate > 0.0, "{f:?}");
        }
        assert_eq!(f.uncached_x_naive, f.uncached_m_per_s / f.naive_m_per_s);
        assert!(render(&f).contains("uncached (lookup_into)"));
    }
}
