//! The harness of vnet's end-to-end tests.
//!
//! Every test builds its own lab with `vnet lab up --json` (network namespaces, a veth
//! underlay, a vnetd per host, VMs whose NIC is a TAP or a captured veth), drives the
//! daemons through the typed control client on each host's control socket ([`Lab::ask`]),
//! runs `ping` and `iperf3` inside the VMs' namespaces, and tears the lab down with
//! `vnet lab down` when its [`Lab`] is dropped, which happens on failure too. Tests of the
//! CLI itself run `vnet` ([`vnet`], [`Lab::ctl`]).
//!
//! The binaries come from `<workspace>/target/debug/` (or `$CARGO_TARGET_DIR/debug/`):
//! build them first, then run the suite (as root; without root every test prints
//! `SKIPPED: ...` and passes, unless `CI=true`, where it fails):
//!
//! ```text
//! cargo build --workspace --bins
//! cargo test -p vnet-e2e -- --test-threads=1 --nocapture
//! ```
//!
//! `e2e-probe` (this crate's helper binary) runs inside lab namespaces to throw bytes at
//! the daemons' link ports. Tests of one binary take a lock, so they never share the
//! machine with each other and their throughput and timing figures stay meaningful.
//!
//! Nothing here sleeps in place of a condition: [`wait_for`] polls with a deadline.
//!
//! - [`process`]: binaries, commands, signals, [`Proc`], [`wait_until`] / [`wait_for`],
//!   [`root_or_skip`];
//! - [`lab`]: [`Lab`] (build, typed control per host, daemons stopped, restarted, added),
//!   [`PortsOf`] over the daemons' [`StatsReport`](vnet_control::proto::StatsReport);
//! - [`traffic`]: ping, [`PingMonitor`], iperf3, verified file transfers, `e2e-probe`.

pub mod lab;
pub mod process;
pub mod traffic;

pub use lab::{Lab, PortsOf, Rogue, LINK_TIMEOUT, START_TIMEOUT};
pub use process::{
    bin, in_netns, kill, pid_alive, root_or_skip, run, target_dir, vnet, wait_for, wait_until, Proc, POLL,
};
pub use traffic::{random_bytes, wire_header, IperfResult, IperfRun, PingMonitor, IPERF_PORT};
pub use vnet_lab::sys::log_tail;
