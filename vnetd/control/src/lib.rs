//! The control plane's pure part: the typed, versioned messages clients and daemons
//! exchange ([`proto`]).

pub mod proto;
