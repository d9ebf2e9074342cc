//! Property tests: the forwarding table and the lookup cache against a naive reference
//! (a plain scan over the rules in insertion order), over random sequences of changes
//! and lookups.
//!
//! Addresses come from a pool of four (three unicast and broadcast) and ports from a pool
//! of five, so rules collide, `not` sides hit their excluded address, and split horizon
//! removes outputs often.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use vnet_core::mac::MacAddr;
use vnet_core::rule::{self, DstMatch, MacMatch};
use vnet_core::table::{Decision, ForwardingTable, LookupCache, PortId, RuleId, RuleStats, TableError};

const POOL: [MacAddr; 4] = [
    MacAddr([2, 0, 0, 0, 0, 1]),
    MacAddr([2, 0, 0, 0, 0, 2]),
    MacAddr([2, 0, 0, 0, 0, 3]),
    MacAddr::BROADCAST,
];

/// A rule as the reference keeps it.
#[derive(Clone, Debug)]
struct RefRule {
    id: RuleId,
    src: MacMatch,
    dst: DstMatch,
    outputs: Vec<PortId>,
}

/// The reference: rules in insertion order, looked up by scanning them all.
#[derive(Default)]
struct Reference {
    rules: Vec<RefRule>,
}

impl Reference {
    fn insert(&mut self, rule: RefRule) -> Result<(), TableError> {
        if self.rules.iter().any(|r| r.id == rule.id) {
            return Err(TableError::DuplicateRule(rule.id));
        }
        if rule.outputs.is_empty() {
            return Err(TableError::NoOutputs(rule.id));
        }
        self.rules.push(rule);
        Ok(())
    }

    fn remove(&mut self, id: RuleId) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != id);
        self.rules.len() != before
    }

    /// (outputs, ids of the rules that fired).
    fn lookup(&self, ingress: PortId, src: MacAddr, dst: MacAddr) -> (Vec<PortId>, BTreeSet<RuleId>) {
        let matching: Vec<&RefRule> = self
            .rules
            .iter()
            .filter(|r| r.src.matches(src) && r.dst.matches(dst))
            .collect();
        let Some(top) = matching.iter().map(|r| rule::priority(&r.src, &r.dst)).max() else {
            return (Vec::new(), BTreeSet::new());
        };
        let fired: Vec<&&RefRule> = matching
            .iter()
            .filter(|r| rule::priority(&r.src, &r.dst) == top)
            .collect();
        let mut outputs = Vec::new();
        for r in &fired {
            for &p in &r.outputs {
                if p != ingress && !outputs.contains(&p) {
                    outputs.push(p);
                }
            }
        }
        (outputs, fired.iter().map(|r| r.id).collect())
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert(RefRule),
    Remove(RuleId),
    Lookup(PortId, MacAddr, MacAddr),
}

fn mac() -> impl Strategy<Value = MacAddr> {
    (0..POOL.len()).prop_map(|i| POOL[i])
}

fn mac_match() -> impl Strategy<Value = MacMatch> {
    prop_oneof![
        Just(MacMatch::Any),
        mac().prop_map(MacMatch::Exact),
        mac().prop_map(MacMatch::Not),
    ]
}

fn dst_match() -> impl Strategy<Value = DstMatch> {
    prop_oneof![
        4 => mac_match().prop_map(DstMatch::Mac),
        1 => Just(DstMatch::None),
    ]
}

fn port() -> impl Strategy<Value = PortId> {
    (0..5u32).prop_map(PortId)
}

fn op() -> impl Strategy<Value = Op> {
    // Ids 0..12 with removals of 0..14: duplicates, re-inserts and removals of missing
    // rules all happen. Outputs may be empty (refused) or repeat a port.
    let rule = (
        0..12u64,
        mac_match(),
        dst_match(),
        prop::collection::vec(port(), 0..4),
    )
        .prop_map(|(id, src, dst, outputs)| RefRule {
            id: RuleId(id),
            src,
            dst,
            outputs,
        });
    prop_oneof![
        3 => rule.prop_map(Op::Insert),
        1 => (0..14u64).prop_map(|id| Op::Remove(RuleId(id))),
        6 => (port(), mac(), mac()).prop_map(|(p, s, d)| Op::Lookup(p, s, d)),
    ]
}

fn fired_ids(table: &ForwardingTable, d: &Decision) -> BTreeSet<RuleId> {
    let ids: BTreeSet<RuleId> = d.fired.iter().map(|&i| table.rule_id(i)).collect();
    assert_eq!(ids.len(), d.fired.len(), "a rule fired twice");
    ids
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn table_and_cache_agree_with_the_reference(ops in prop::collection::vec(op(), 1..80)) {
        let mut table = ForwardingTable::new();
        let mut reference = Reference::default();
        // A tiny cache evicts all the time; a big one keeps everything and relies on
        // generations alone.
        let mut small = LookupCache::new(2);
        let mut big = LookupCache::new(1024);
        for op in ops {
            match op {
                Op::Insert(r) => {
                    let before = table.generation();
                    let want = reference.insert(r.clone());
                    let got = table.insert(r.id, r.src, r.dst, r.outputs, Arc::new(RuleStats::default()));
                    prop_assert_eq!(&got, &want);
                    prop_assert_eq!(table.generation() != before, got.is_ok());
                }
                Op::Remove(id) => {
                    let before = table.generation();
                    let want = reference.remove(id);
                    prop_assert_eq!(table.remove(id), want);
                    prop_assert_eq!(table.generation() != before, want);
                }
                Op::Lookup(ingress, src, dst) => {
                    let (outputs, fired) = reference.lookup(ingress, src, dst);
                    let d = table.lookup(ingress, src, dst);
                    prop_assert_eq!(&d.outputs, &outputs);
                    prop_assert_eq!(&fired_ids(&table, &d), &fired);
                    prop_assert_eq!(small.lookup(&table, ingress, src, dst), &d);
                    prop_assert_eq!(big.lookup(&table, ingress, src, dst), &d);
                    // Twice, so the second one is a hit in the big cache.
                    prop_assert_eq!(big.lookup(&table, ingress, src, dst), &d);
                }
            }
            prop_assert_eq!(table.len(), reference.rules.len());
            prop_assert_eq!(table.is_empty(), reference.rules.is_empty());
        }
        prop_assert!(big.hits() > 0 || big.misses() == 0);
    }

    /// Every (ingress, src, dst) combination over the pool, after a random set of rules:
    /// exhaustive lookups catch what a few random ones might miss.
    #[test]
    fn table_lookups_agree_with_the_reference_exhaustively(ops in prop::collection::vec(op(), 1..40)) {
        let mut table = ForwardingTable::new();
        let mut reference = Reference::default();
        for op in ops {
            match op {
                Op::Insert(r) => {
                    let want = reference.insert(r.clone());
                    let got = table.insert(r.id, r.src, r.dst, r.outputs, Arc::new(RuleStats::default()));
                    prop_assert_eq!(got, want);
                }
                Op::Remove(id) => prop_assert_eq!(table.remove(id), reference.remove(id)),
                Op::Lookup(..) => {}
            }
        }
        let mut cache = LookupCache::new(8);
        for ingress in 0..5 {
            for &src in &POOL {
                for &dst in &POOL {
                    let ingress = PortId(ingress);
                    let (outputs, fired) = reference.lookup(ingress, src, dst);
                    let d = table.lookup(ingress, src, dst);
                    prop_assert_eq!(&d.outputs, &outputs);
                    prop_assert_eq!(&fired_ids(&table, &d), &fired);
                    prop_assert_eq!(cache.lookup(&table, ingress, src, dst), &d);
                }
            }
        }
    }
}
