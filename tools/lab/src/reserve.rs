//! Reservations in a `vnet lab` lab ([`LabBackend`]): guaranteed bandwidth with tc HTB on
//! the emulated uplinks, CPU with cgroups, and `vnet lab reserve` / `vnet lab reservations`.
//!
//! # Bandwidth: HTB on the shaped uplinks
//!
//! A host `hI` started with `--uplink hI=RATE` has the same HTB tree on both ends of its
//! uplink: on its `ul0` (what hI sends) and on the switch's port `pI` (what hI receives).
//!
//! ```text
//! 1:       htb qdisc; unclassified traffic goes to 1:2
//! 1:1      root class: rate = ceil = the uplink
//! 1:2      default class: rate = uplink - sum of reservations, ceil = uplink   (bfifo leaf)
//! 1:1KK    reservation with host hK (KK = 0x100 + K): rate = reserved, ceil = uplink (bfifo leaf)
//!          u32 filters at preference 0x100 + K pick the reserved link's underlay packets
//! ```
//!
//! The filters match IPv4 packets between the two hosts' underlay addresses (source and
//! destination in the reservation's direction) whose source or destination port is the
//! lab's link port: 7400 (TCP and UDP links) or 7401 (QUIC), one mask covering both; and
//! the later fragments of IP-fragmented datagrams between them, which carry no ports (see
//! `filter_args`). So a reservation covers the overlay link between the two hosts,
//! whichever end dials and whatever its transport, and not traffic relayed between them
//! through the proxy (that travels on other underlay address pairs).
//!
//! A reservation from hA to hB is enforced on hA's `ul0` when hA is shaped and on `pB` when
//! hB is shaped. An unshaped uplink is the lab's fast veth with no capacity of its own to
//! share, so nothing is installed there; a reservation with *neither* end shaped cannot be
//! guaranteed anything and is refused ([`ReserveError::Unshaped`](vadapt::reserve::ReserveError::Unshaped)).
//!
//! Every class may borrow up to the uplink when the others leave capacity unused. The
//! reservations on one uplink end may add up to 99 % of it: 1 % stays guaranteed to
//! unreserved traffic (ARP, the other links' keepalives and handshakes), so a fully
//! reserved uplink cannot starve the overlay's control traffic; more is refused
//! ([`ReserveError::OverSubscribed`](vadapt::reserve::ReserveError::OverSubscribed)). Rates are set in whole kbit/s (reservations under
//! 1 kbit/s are refused), which `tc` prints back exactly. Leaf queues hold 50 ms at the
//! uplink rate (at least 128 KiB, two GSO super-packets), like the tbf shaper the lab
//! used before. `vnet lab reservations` reads the classes back from `tc`.
//!
//! # CPU: cgroups
//!
//! `vnet lab up` gives every VM a cgroup `<cpu root>/vnet-lab/<lab>/<vm>` (removed by `vnet
//! lab down`), and whatever the lab runs in a VM enters it: `vnet lab exec`, `vnet patterns`
//! ranks ([`machine_command`]). Applying a CPU reservation also moves every process
//! already in the VM's network namespace into its cgroup, for programs started there by
//! other means (children follow their parent's cgroup).
//!
//! The cpu controller is found at run time ([`CpuCgroups::detect`]):
//!
//! - cgroup v2, when a unified hierarchy has `cpu` in `cgroup.controllers`: `+cpu` is
//!   enabled in `cgroup.subtree_control` down the path, the reservation is `cpu.max` =
//!   "SLICE_US PERIOD_US" ("max" when released), usage is `usage_usec` in `cpu.stat`;
//! - cgroup v1 (e.g. a hybrid layout whose cgroup2 mount lacks `cpu`): the directory in the
//!   `cpu` hierarchy gets `cpu.cfs_period_us` and `cpu.cfs_quota_us` (-1 when released),
//!   and a twin directory in the `cpuacct` hierarchy (the same one when co-mounted)
//!   counts usage in `cpuacct.usage`.
//!
//! The kernel enforces the slice as a cap (CFS bandwidth control): the VM runs at most
//! SLICE of every PERIOD. As long as the slices of a machine's VMs add up to no more than
//! its cores, that equals the periodic reservation's share; the lab does not check that
//! sum (the lab's hosts share one machine). The kernel takes periods of 1 ms to 1 s and
//! slices of at least 1 ms; other values are refused.
//!
//! # Modules
//!
//! `htb` plans and reads the HTB trees, `cgroup` the VMs' cgroups, `backend` applies and
//! reads back both ([`LabBackend`], [`read`], [`apply`]), `cli` is `vnet lab reserve` and
//! `vnet lab reservations`.

mod backend;
mod cgroup;
mod cli;
mod htb;

pub use backend::{apply, read, LabBackend, LabReservations, LinkInForce, UplinkUse, VmCgroup};
pub(crate) use cgroup::{cgroup_pids, create_cgroups, remove_cgroups};
pub use cgroup::{machine_command, CpuCgroups, CpuLimit};
pub use cli::{run_reserve, run_show, CpuArg, LinkArg, ReserveArgs, ShowArgs};
pub(crate) use htb::shape_commands;
