//! vnetd: the per-host vnet daemon's drivers.
//!
//! Everything the daemon decides lives in pure crates: `vnet-core` (rules, the forwarding
//! table, the wire codec, handshake, link sessions and the UDP endpoint, crypto, offloads,
//! measurement, configuration) and `vnet-control` (control messages). This crate only does: [`threads`] (the data-path
//! threads that run frames to completion), [`datapath`] (the published table and port
//! map, sending a frame to each output), TAP and packet-socket interfaces ([`iface`]),
//! TCP/UDP/QUIC links ([`link`]), the control [`server`] and the [`daemon`] that wires them
//! together. Every `unsafe` call is in `vnet-sys`. See ARCHITECTURE.md at the repository
//! root.

pub mod daemon;
pub mod datapath;
pub mod iface;
pub mod link;
pub mod server;
pub mod threads;
