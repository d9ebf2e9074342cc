//! vnetd: the per-host vnet daemon.
//!
//! The crate has a sans-IO core that never touches sockets, threads or the clock:
//! [`mac`], [`rule`], [`table`] (forwarding table and lookup cache), [`wire`] (link frame
//! codec), [`handshake`] (link authentication state machine), [`control::proto`]
//! (control messages), [`measure`] (round-trip time, throughput, probe bookkeeping),
//! [`gro`] (coalescing received TCP segments into super-frames) and [`config`]. Around it
//! sit thin drivers: [`sys`] (every `unsafe` call), [`threads`] (the data-path threads
//! that run frames to completion), TAP and packet-socket interfaces, TCP/UDP/QUIC links,
//! the control server and the daemon that wires them together. See ARCHITECTURE.md at the
//! repository root.

pub mod config;
pub mod control;
pub mod crypto;
pub mod daemon;
pub mod datapath;
pub mod forward;
pub mod fragment;
pub mod gro;
pub mod handshake;
pub mod iface;
pub mod link;
pub mod mac;
pub mod measure;
pub mod offload;
pub mod rule;
pub mod sys;
pub mod table;
pub mod threads;
pub mod wire;
