//! The control plane's pure part: the typed, versioned messages clients and daemons
//! exchange ([`proto`]), the daemon's control state that answers them ([`state`]), and the
//! counters the data path shares with it ([`dataplane`]).
// A pure crate: no panic on bad input, no clock, threads or sleeps (the list is in
// clippy.toml at the repository root).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

pub mod dataplane;
pub mod proto;
pub mod state;
