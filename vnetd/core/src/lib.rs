//! vnet's sans-IO core: everything the daemon decides, with none of what it does.
//!
//! Nothing here touches a socket, a thread, the clock or a random source: time comes in
//! as `now`, randomness (nonces, ephemeral secrets, session ids) as arguments. The
//! daemon (`vnetd`), the control state (`vnet-control`), the language (`lang`), VTTIF and
//! the simulator all build on these modules:
//!
//! - [`mac`]: `MacAddr`; [`rule`]: rule sides, outputs and **the priority table**;
//!   [`table`]: the indexed forwarding table and the lookup cache; [`forward`]: one
//!   forwarding step, drop reasons and counters.
//! - [`wire`]: the link message codec; [`handshake`]: link authentication;
//!   [`crypto`]: session keys and sealing; [`fragment`]: datagram fragmentation.
//! - [`identity`]: the contract between a handshake and the trust store that vouches
//!   for a peer's certificate.
//! - [`session`]: one link path's life (handshake, keepalives, dead peer, reset);
//!   [`endpoint`]: every UDP link's sessions behind one socket.
//! - [`offload`]: virtio-net headers, segmentation, checksums; [`gro`]: coalescing
//!   received segments into super-frames.
//! - [`measure`]: round-trip time, throughput, probe bookkeeping.
//! - [`config`]: the daemon's configuration and the topology the control plane changes.
//! - [`rate`]: data rates and their one grammar (the language's and the lab's).
//! - [`name`]: `Name`, the one rule for node, link and interface names; [`text`]: fields
//!   that travel as text, and postcard decoding that keeps their parsers' errors.
// A pure crate: no panic on bad input, no clock, threads or sleeps (the list is in
// clippy.toml at the repository root).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

pub mod config;
pub mod crypto;
pub mod endpoint;
pub mod forward;
pub mod fragment;
pub mod gro;
pub mod handshake;
pub mod identity;
pub mod mac;
pub mod measure;
pub mod name;
pub mod offload;
pub mod rate;
pub mod rule;
pub mod session;
pub mod table;
pub mod text;
pub mod wire;
