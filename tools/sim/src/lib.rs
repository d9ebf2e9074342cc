//! A deterministic simulator of the overlay (docs to be written with the checks).

pub mod apply;
pub mod check;
pub mod daemon;
pub mod faults;
pub mod ledger;
pub mod links;
pub mod queue;
pub mod reference;
pub mod scenario;
pub mod sim;
pub mod time;
pub mod topology;
pub mod trace;
pub mod underlay;
pub mod vm;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use daemon::{DaemonOutput, SimDaemon};
pub use check::Failure;
pub use scenario::{Scenario, Summary};
pub use sim::{Sim, SimError};

/// A host's index in the simulation: the position of its machine name in natural order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub u32);

/// What a random stream is for: each purpose draws from its own ChaCha stream of the
/// seed, so changing the workload does not change the topology, and so on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// Hosts, VMs, fast paths, routes, cycles.
    Topology = 1,
    /// When VMs send and to whom.
    Workload = 2,
    /// The fault schedule.
    Faults = 3,
    /// The underlay's per-path parameters and per-datagram draws.
    Underlay = 4,
    /// Targets for `vnet apply`.
    Apply = 5,
}

/// The RNG of `stream` for `seed`.
pub fn rng(seed: u64, stream: Stream) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream as u64);
    r
}
