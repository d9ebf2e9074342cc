//! Library errors. Bad input is reported as one of these, never as a panic.

use thiserror::Error;

/// Why an instance or a plan could not be read or checked.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ModelError {
    /// The JSON text is malformed or does not have the documented shape.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// Two hosts share a name.
    #[error("duplicate host {0:?}")]
    DuplicateHost(String),
    /// Two VMs share a name.
    #[error("duplicate VM {0:?}")]
    DuplicateVm(String),
    /// A link, pin or VM names a host that is not in `hosts`.
    #[error("unknown host {name:?} (in {context})")]
    UnknownHost {
        /// The name that was not found.
        name: String,
        /// Where it was used, e.g. `link h1->h9`.
        context: String,
    },
    /// A demand, pin or plan names a VM that is not in `vms`.
    #[error("unknown VM {name:?} (in {context})")]
    UnknownVm {
        /// The name that was not found.
        name: String,
        /// Where it was used.
        context: String,
    },
    /// A capacity, demand, latency or cost is negative or not a finite number.
    #[error("{field} of {owner} must be a finite number >= 0, got {value}")]
    BadNumber {
        /// The field, e.g. `bw`.
        field: &'static str,
        /// The entity it belongs to, e.g. `link h1->h2`.
        owner: String,
        /// The offending value.
        value: f64,
    },
    /// The same directed link is listed twice.
    #[error("duplicate link {from}->{to}")]
    DuplicateLink {
        /// Source host.
        from: String,
        /// Destination host.
        to: String,
    },
    /// A link goes from a host to itself; same-host traffic never uses the network.
    #[error("link {0}->{0} is a self-loop")]
    SelfLink(String),
    /// The same (src, dst) demand is listed twice; routes are keyed by that pair.
    #[error("duplicate demand {src}->{dst}")]
    DuplicateDemand {
        /// Source VM.
        src: String,
        /// Destination VM.
        dst: String,
    },
    /// A demand from a VM to itself.
    #[error("demand {0}->{0} is a self-loop")]
    SelfDemand(String),
    /// One VM is pinned to two different hosts.
    #[error("VM {0:?} is pinned twice")]
    ConflictingPin(String),
    /// A plan does not place every VM.
    #[error("plan places no host for VM {0:?}")]
    UnplacedVm(String),
    /// A plan route uses a hop between two hosts that have no possible link.
    #[error("route {src}->{dst} uses {from}->{to}, which is not a possible link")]
    NoSuchLink {
        /// Demand source VM.
        src: String,
        /// Demand destination VM.
        dst: String,
        /// Hop source host.
        from: String,
        /// Hop destination host.
        to: String,
    },
    /// A plan route does not start at its source VM's host or end at its destination's.
    #[error("route {src}->{dst} does not join the hosts the plan places them on")]
    RouteEndpoints {
        /// Source VM.
        src: String,
        /// Destination VM.
        dst: String,
    },
    /// A plan route is for a VM pair that has no demand.
    #[error("route {src}->{dst} matches no demand")]
    UnknownRoute {
        /// Source VM.
        src: String,
        /// Destination VM.
        dst: String,
    },
    /// A plan route has an empty path; a local pair is written `[host]`.
    #[error("route {src}->{dst} has an empty path")]
    EmptyPath {
        /// Source VM.
        src: String,
        /// Destination VM.
        dst: String,
    },
}

/// Why a solver gave up.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SolveError {
    /// The exact solver hit its search-node limit before proving optimality; the instance is
    /// too large to be used as an oracle with that limit.
    #[error("exact search stopped after {nodes} nodes without proving optimality")]
    SearchLimit {
        /// Nodes explored when the limit was hit.
        nodes: u64,
    },
}
