//! The scenarios over random seeds (each a proptest case: a failure prints the seed and
//! the command that replays it), determinism, and the replay entry point.

use proptest::prelude::*;
use vnet_sim::Scenario;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 100,
        // A smaller seed is not a simpler case: report the seed that failed.
        max_shrink_iters: 0,
        ..ProptestConfig::default()
    }
}

fn holds(scenario: Scenario, seed: u64) -> Result<(), TestCaseError> {
    scenario
        .run(seed)
        .map(drop)
        .map_err(|f| TestCaseError::fail(f.to_string()))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn delivery(seed in any::<u64>()) {
        holds(Scenario::Delivery, seed)?;
    }

    #[test]
    fn faults(seed in any::<u64>()) {
        holds(Scenario::Faults, seed)?;
    }

    #[test]
    fn loops(seed in any::<u64>()) {
        holds(Scenario::Loops, seed)?;
    }

    #[test]
    fn apply(seed in any::<u64>()) {
        holds(Scenario::Apply, seed)?;
    }

    #[test]
    fn handshakes(seed in any::<u64>()) {
        holds(Scenario::Handshakes, seed)?;
    }

    #[test]
    fn restart(seed in any::<u64>()) {
        holds(Scenario::Restart, seed)?;
    }
}

/// Same seed, same trace, byte for byte; another seed, another trace.
#[test]
fn same_seed_same_trace() {
    for scenario in Scenario::ALL {
        let digest = |seed| scenario.run(seed).unwrap_or_else(|f| panic!("{f}")).digest;
        assert_eq!(digest(7), digest(7), "{}", scenario.name());
        assert_ne!(digest(7), digest(8), "{}", scenario.name());
    }
}

/// Runs `VNET_SIM_SCENARIO` (default: every scenario) with `VNET_SIM_SEED` (default 1)
/// and prints what it did: `VNET_SIM_SEED=123 cargo test -p vnet-sim --test props replay
/// -- --nocapture`.
#[test]
fn replay() {
    let seed =
        std::env::var("VNET_SIM_SEED").map_or(1, |s| s.trim().parse().expect("VNET_SIM_SEED is a u64"));
    let scenarios: Vec<Scenario> = match std::env::var("VNET_SIM_SCENARIO") {
        Ok(name) => vec![Scenario::from_name(&name).unwrap_or_else(|| panic!("no scenario `{name}`"))],
        Err(_) => Scenario::ALL.to_vec(),
    };
    for s in scenarios {
        match s.run(seed) {
            Ok(summary) => println!("{summary}"),
            Err(f) => panic!("{f}"),
        }
    }
}

/// The findings (the crate docs, "Findings") replayed by their seeds: the inherent one
/// still shows; the fixed ones stay fixed (seed 7 also replays the cut the diff fix
/// removed).
#[test]
fn known_findings_still_show() {
    // Seed 2 replaces rules: executed one primitive at a time, both versions fire in
    // between (the known class); `vnet apply`'s steps swap them in one replace and are
    // checked strictly in the same run. Seeds 0 and 7 once lost or looped frames between
    // the replaces of a `vnet apply` step taken in machine-name order: now strict too.
    let run = |seed| Scenario::Apply.run(seed).unwrap_or_else(|f| panic!("{f}"));
    let duplicated = run(2);
    assert!(duplicated.known.duplicated_while_replacing > 0, "{duplicated}");
    // 16833019033704442697: a new route through a link being replaced (UDP to TCP) was
    // added before the link was back, so its frames looped through a default route.
    for seed in [0, 7, 16833019033704442697] {
        run(seed);
    }
}

/// Seed 2245490533581263225 (faults): a daemon crashed between its Challenge and the
/// peer's Proof; the restarted daemon ignored the retransmitted Proof, so the dialing end
/// waited out its 3 s handshake deadline and the link stayed down past the recovery
/// bound. Now an unknown Proof earns a Reset and the dialing end starts over at once.
#[test]
fn a_proof_for_a_lost_handshake_is_reset() {
    Scenario::Faults
        .run(2245490533581263225)
        .unwrap_or_else(|f| panic!("{f}"));
}
