//! VTTIF: inference of the application's traffic matrix and topology from the frames vnetd
//! forwards (seeds/004 §4; DESIGN.md "VTTIF").
//!
//! Pure: nothing here touches sockets, threads or the clock; time is always an argument.
//!
//! - [`accumulator`](mod@accumulator): the per-worker local matrix, bytes and frames per
//!   (src MAC, dst MAC), updated in O(1) without allocation; a [`Recorder`] writes, any
//!   number of [`Reader`]s take cumulative snapshots ([`LocalMatrix`]) from other threads.
//! - [`matrix`]: the cumulative local matrix a daemon reports ([`Snapshot`]) and the update
//!   since the previous one ([`LocalMatrix::since`]).
//! - [`aggregator`]: the global matrix smoothed over the smoothing interval, normalized by its
//!   largest entry and pruned below the detection threshold, with change detection, union
//!   damping of oscillation and a settled flag ([`Aggregator`], [`View`], the inferred
//!   [`AppTopology`]).
//! - [`shape`]: the known application topologies ([`KnownShape`]), their edge sets, and the classifier that
//!   names a recovered topology ([`classify`]).
// A pure crate: no panic on bad input, no clock, threads or sleeps (the list is in
// clippy.toml at the repository root).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

pub mod accumulator;
pub mod aggregator;
pub mod matrix;
pub mod shape;

pub use accumulator::{accumulator, Direction, Reader, Recorder, DEFAULT_CAPACITY};
pub use aggregator::{Aggregator, AppTopology, Edge, MatrixEntry, ParamError, Params, View};
pub use matrix::{Counts, LocalMatrix, PairCounts, Snapshot};
pub use shape::{classify, KnownShape, ShapeError};
