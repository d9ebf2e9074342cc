//! The control plane's pure part: the typed, versioned messages clients and daemons
//! exchange ([`proto`]), the daemon's control state that answers them ([`state`]), and the
//! counters the data path shares with it ([`dataplane`]).

pub mod dataplane;
pub mod proto;
pub mod state;
