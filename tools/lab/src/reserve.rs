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
//! guaranteed anything and is refused ([`ReserveError::Unshaped`]).
//!
//! Every class may borrow up to the uplink when the others leave capacity unused. The
//! reservations on one uplink end may add up to 99 % of it: 1 % stays guaranteed to
//! unreserved traffic (ARP, the other links' keepalives and handshakes), so a fully
//! reserved uplink cannot starve the overlay's control traffic; more is refused
//! ([`ReserveError::OverSubscribed`]). Rates are set in whole kbit/s (reservations under
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

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::plan::{check_lab_name, parse_shaping_rate, LabPlan, LINK_PORT};
use crate::sys;
use vadapt::reserve::{
    validate, CpuReservation, LinkReservation, ReservationBackend, Reservations, ReserveError,
};

/// A system failure (a tc command, a cgroup file) as a reservation error, with its context
/// chain.
fn system_error(e: anyhow::Error) -> ReserveError {
    ReserveError::System(format!("{e:#}"))
}

// ---------------------------------------------------------------------------------------
// HTB: tc arguments.

/// Minor of the default class (unreserved traffic), as in `htb default 2`.
const DEFAULT_MINOR: u16 = 2;
/// Minor of the reservation with host K: 0x100 + K (also its filters' preference and its
/// leaf qdisc's major).
const RESERVED_BASE: u16 = 0x100;
/// How long a leaf queue may hold packets at the uplink rate.
const QUEUE_MS: u64 = 50;
/// Smallest leaf queue: two 64 KiB GSO super-packets.
const MIN_QUEUE_BYTES: u64 = 128 * 1024;
/// Smallest class burst, so that a few full-size frames pass back to back at low rates.
const MIN_BURST_BYTES: u64 = 16 * 1024;
/// HTB's DRR quantum: one full-size frame, so classes borrowing spare capacity share it
/// frame by frame (and the kernel does not warn about quanta derived from large rates).
const QUANTUM_BYTES: u64 = 1514;
/// One part in this many of a shaped uplink stays guaranteed to unreserved traffic.
const KEEP_UNRESERVED_DIV: u64 = 100;
/// The smallest rate set on a class, bits/s.
const KBIT: u64 = 1000;

// One u32 mask (0xfffe) matches both the link port and the QUIC port just above it.
const _: () = assert!(
    LINK_PORT % 2 == 0,
    "the filters' port mask needs an even LINK_PORT"
);

/// `tc` command lines, each as its arguments.
type Commands = Vec<Vec<String>>;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A class's burst at `bps`: 4 ms worth, at least [`MIN_BURST_BYTES`].
fn burst(bps: u64) -> u64 {
    (bps / 8 / 250).max(MIN_BURST_BYTES)
}

/// A leaf queue's limit in bytes for a class that may send at `ceil_bps`.
fn queue_limit(ceil_bps: u64) -> u64 {
    (ceil_bps / 8 * QUEUE_MS / 1000).max(MIN_QUEUE_BYTES)
}

fn class_args(dev: &str, parent: &str, minor: u16, rate: u64, ceil: u64) -> Vec<String> {
    strings(&[
        "class",
        "replace",
        "dev",
        dev,
        "parent",
        parent,
        "classid",
        &format!("1:{minor:x}"),
        "htb",
        "rate",
        &format!("{rate}bit"),
        "ceil",
        &format!("{ceil}bit"),
        "burst",
        &burst(rate).to_string(),
        "cburst",
        &burst(ceil).to_string(),
        "quantum",
        &QUANTUM_BYTES.to_string(),
    ])
}

fn leaf_args(dev: &str, minor: u16, ceil: u64) -> Vec<String> {
    strings(&[
        "qdisc",
        "replace",
        "dev",
        dev,
        "parent",
        &format!("1:{minor:x}"),
        "handle",
        &format!("{minor:x}:"),
        "bfifo",
        "limit",
        &queue_limit(ceil).to_string(),
    ])
}

/// The `tc` commands that shape uplink end `dev` at `uplink_bps` with nothing reserved:
/// the HTB root, its root class, the default class and its queue.
pub(super) fn shape_commands(dev: &str, uplink_bps: u64) -> Commands {
    vec![
        strings(&[
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "handle",
            "1:",
            "htb",
            "default",
            &format!("{DEFAULT_MINOR:x}"),
        ]),
        class_args(dev, "1:", 1, uplink_bps, uplink_bps),
        class_args(dev, "1:1", DEFAULT_MINOR, uplink_bps, uplink_bps),
        leaf_args(dev, DEFAULT_MINOR, uplink_bps),
    ]
}

/// The u32 filters that send the underlay packets of the link from `src` to `dst` into
/// class `minor`, tried in this order (u32 keeps a preference's filters in the order
/// they were added):
///
/// 1. and 2. the link port (or the QUIC port) as source or destination port: whole
///    datagrams and segments, and first fragments;
/// 3. any other packet that is not a later fragment (fragment offset 0) goes to the
///    default class: it is not the link's (a ping between the hosts);
/// 4. what is left is a later fragment, which carries no ports: the link's, since UDP
///    links send datagrams above the underlay MTU that IP fragments. Leaving them to the
///    default class would queue a datagram's pieces in two classes, which reorders and
///    loses the link's traffic.
fn filter_args(dev: &str, minor: u16, src: Ipv4Addr, dst: Ipv4Addr) -> [Vec<String>; 4] {
    let filter = |matches: &[&str], class: u16| {
        let mut args = strings(&[
            "filter",
            "add",
            "dev",
            dev,
            "parent",
            "1:",
            "protocol",
            "ip",
            "prio",
            &minor.to_string(),
            "u32",
            "match",
            "ip",
            "src",
            &format!("{src}/32"),
            "match",
            "ip",
            "dst",
            &format!("{dst}/32"),
        ]);
        args.extend(strings(matches));
        args.extend(strings(&["flowid", &format!("1:{class:x}")]));
        args
    };
    let port = LINK_PORT.to_string();
    [
        filter(&["match", "ip", "sport", &port, "0xfffe"], minor),
        filter(&["match", "ip", "dport", &port, "0xfffe"], minor),
        // The fragment offset: the low 13 bits of the 16-bit word at byte 6.
        filter(&["match", "u16", "0", "0x1fff", "at", "6"], DEFAULT_MINOR),
        filter(&[], minor),
    ]
}

/// Which end of host `host`'s uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    /// The host's `ul0`: what the host sends.
    Out,
    /// The switch's port toward the host: what the host receives.
    In,
}

/// One end of a host's uplink: where a shaper sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct End {
    host: usize,
    side: Side,
}

impl End {
    fn ns(&self, lab: &str) -> String {
        match self.side {
            Side::Out => format!("{lab}-h{}", self.host),
            Side::In => format!("{lab}-sw"),
        }
    }

    fn dev(&self) -> String {
        match self.side {
            Side::Out => "ul0".into(),
            Side::In => format!("p{}", self.host),
        }
    }

    /// "h1 ul0" / "sw p3".
    fn place(&self) -> String {
        match self.side {
            Side::Out => format!("h{} ul0", self.host),
            Side::In => format!("sw p{}", self.host),
        }
    }

    /// "the uplink toward h3 (sw p3)".
    fn describe(&self) -> String {
        match self.side {
            Side::Out => format!("the uplink from h{} ({})", self.host, self.place()),
            Side::In => format!("the uplink toward h{} ({})", self.host, self.place()),
        }
    }

    /// The name of the link with `peer` in the direction this end carries: "h1 -> h3".
    fn link_to(&self, peer: usize) -> String {
        match self.side {
            Side::Out => format!("h{} -> h{peer}", self.host),
            Side::In => format!("h{peer} -> h{}", self.host),
        }
    }

    /// The underlay (source, destination) of a reserved link between this end's host and
    /// `peer`, in the direction this end carries.
    fn addresses(&self, peer: usize) -> (Ipv4Addr, Ipv4Addr) {
        let (me, them) = (LabPlan::host_ip(self.host), LabPlan::host_ip(peer));
        match self.side {
            Side::Out => (me, them),
            Side::In => (them, me),
        }
    }
}

/// An uplink end's HTB tree as `tc class show` prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct HtbState {
    /// The root class's rate.
    uplink_bps: u64,
    /// The default class's rate.
    default_bps: u64,
    /// Reservations by peer host.
    reserved: BTreeMap<usize, u64>,
}

impl HtbState {
    /// What the reservations on this end may add up to.
    fn reservable_bps(&self) -> u64 {
        self.uplink_bps - self.uplink_bps / KEEP_UNRESERVED_DIV
    }
}

/// Parses `tc class show dev D`; `None` when the device has no lab HTB tree (unshaped).
fn parse_classes(text: &str) -> Result<Option<HtbState>> {
    let mut state = HtbState::default();
    let mut has_root = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let ["class", "htb", id, rest @ ..] = words.as_slice() else {
            continue;
        };
        let minor = id
            .strip_prefix("1:")
            .and_then(|m| u16::from_str_radix(m, 16).ok())
            .with_context(|| format!("unexpected HTB class id in `{line}`"))?;
        let rate = rest
            .iter()
            .position(|w| *w == "rate")
            .and_then(|i| rest.get(i + 1))
            .with_context(|| format!("no rate in `{line}`"))?;
        let bps = parse_shaping_rate(rate)?.bits_per_sec();
        match minor {
            1 => {
                has_root = true;
                state.uplink_bps = bps;
            }
            DEFAULT_MINOR => state.default_bps = bps,
            m if m >= RESERVED_BASE => {
                state.reserved.insert(usize::from(m - RESERVED_BASE), bps);
            }
            _ => {}
        }
    }
    Ok(has_root.then_some(state))
}

/// The `tc` commands that bring end `end` from `state` to the reservations `wanted`
/// (peer host -> bits/s); nothing when they are already in force.
fn end_commands(end: End, state: &HtbState, wanted: &BTreeMap<usize, u64>) -> Commands {
    let dev = end.dev();
    let mut cmds = Vec::new();
    for &peer in state.reserved.keys().filter(|p| !wanted.contains_key(p)) {
        let minor = RESERVED_BASE + peer as u16;
        cmds.push(strings(&[
            "filter",
            "del",
            "dev",
            &dev,
            "parent",
            "1:",
            "prio",
            &minor.to_string(),
        ]));
        // Deleting the class deletes its leaf queue.
        cmds.push(strings(&[
            "class",
            "del",
            "dev",
            &dev,
            "classid",
            &format!("1:{minor:x}"),
        ]));
    }
    for (&peer, &bps) in wanted {
        let minor = RESERVED_BASE + peer as u16;
        match state.reserved.get(&peer) {
            Some(&now) if now == bps => {}
            Some(_) => cmds.push(class_args(&dev, "1:1", minor, bps, state.uplink_bps)),
            None => {
                cmds.push(class_args(&dev, "1:1", minor, bps, state.uplink_bps));
                cmds.push(leaf_args(&dev, minor, state.uplink_bps));
                let (src, dst) = end.addresses(peer);
                cmds.extend(filter_args(&dev, minor, src, dst));
            }
        }
    }
    let default_bps = (state.uplink_bps - wanted.values().sum::<u64>()).max(KBIT);
    if default_bps != state.default_bps {
        cmds.push(class_args(
            &dev,
            "1:1",
            DEFAULT_MINOR,
            default_bps,
            state.uplink_bps,
        ));
    }
    cmds
}

/// Plans the link reservations `wanted` ((from, to) host numbers -> bits/s) against the
/// shaped ends `states`: checks that each has a shaped end and that no end is
/// over-subscribed, then returns the commands per end (every shaped end, so that what is
/// no longer wanted is released).
fn plan_links(
    states: &BTreeMap<End, HtbState>,
    wanted: &BTreeMap<(usize, usize), u64>,
) -> Result<Vec<(End, Commands)>, ReserveError> {
    let mut per_end: BTreeMap<End, BTreeMap<usize, u64>> = BTreeMap::new();
    for (&(from, to), &bps) in wanted {
        let ends = [
            (
                End {
                    host: from,
                    side: Side::Out,
                },
                to,
            ),
            (
                End {
                    host: to,
                    side: Side::In,
                },
                from,
            ),
        ];
        let mut enforced = false;
        for (end, peer) in ends {
            if states.contains_key(&end) {
                per_end.entry(end).or_default().insert(peer, bps);
                enforced = true;
            }
        }
        if !enforced {
            return Err(ReserveError::Unshaped {
                from: format!("h{from}"),
                to: format!("h{to}"),
            });
        }
    }
    let mut plans = Vec::new();
    let empty = BTreeMap::new();
    for (&end, state) in states {
        let want = per_end.get(&end).unwrap_or(&empty);
        let sum: u64 = want.values().sum();
        if sum > state.reservable_bps() {
            return Err(ReserveError::OverSubscribed {
                place: format!(
                    "{}, uplink {} Mbit/s ({})",
                    end.describe(),
                    mbps(state.uplink_bps),
                    want.iter()
                        .map(|(&p, &b)| format!("{} {} Mbit/s", end.link_to(p), mbps(b)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                asked_mbps: mbps(sum),
                available_mbps: mbps(state.reservable_bps()),
            });
        }
        plans.push((end, end_commands(end, state, want)));
    }
    Ok(plans)
}

fn mbps(bps: u64) -> f64 {
    bps as f64 / 1e6
}

/// Mbit/s to whole kbit/s, in bits/s.
fn bps_of_mbps(what: &str, mbps: f64) -> Result<u64, ReserveError> {
    let kbit = (mbps * 1000.0).round();
    if kbit < 1.0 {
        return Err(ReserveError::Invalid(format!(
            "{what}: {mbps} Mbit/s is below the smallest reservation, 1 kbit/s"
        )));
    }
    Ok(kbit as u64 * KBIT)
}

/// `tc -n NS args...`, returning stdout.
fn tc(ns: &str, args: &[String]) -> Result<String> {
    let mut all = vec!["-n".to_string(), ns.to_string()];
    all.extend_from_slice(args);
    sys::run("tc", &all)
}

/// Every shaped uplink end of a lab with `hosts` hosts, read back from `tc`.
fn read_ends(lab: &str, hosts: usize) -> Result<BTreeMap<End, HtbState>> {
    let mut states = BTreeMap::new();
    for host in 0..hosts {
        for side in [Side::Out, Side::In] {
            let end = End { host, side };
            let text = tc(&end.ns(lab), &strings(&["class", "show", "dev", &end.dev()]))?;
            if let Some(state) = parse_classes(&text).with_context(|| format!("reading {}", end.place()))? {
                states.insert(end, state);
            }
        }
    }
    Ok(states)
}

// ---------------------------------------------------------------------------------------
// CPU: cgroups.

/// The directory under a hierarchy's root that holds every lab's cgroups.
const CGROUP_DIR: &str = "vnet-lab";
/// The file a process's PID is written to, to move it into a cgroup (v1 and v2).
const PROCS: &str = "cgroup.procs";
/// How long removing a cgroup waits for its last processes to finish exiting.
const RMDIR_TIMEOUT: Duration = Duration::from_secs(2);
/// Moves the shell into each cgroup.procs file given before `--`, then runs the rest.
const ENTER_SCRIPT: &str =
    r#"while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@""#;

/// A CPU limit in the kernel's units: `quota_us` of every `period_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuLimit {
    /// Period, µs.
    pub period_us: u64,
    /// Slice (quota), µs.
    pub quota_us: u64,
}

impl CpuLimit {
    /// The limit of a reservation, checked against the kernel's ranges (period 1 ms..1 s,
    /// slice at least 1 ms).
    pub fn from_ms(vm: &str, period_ms: f64, slice_ms: f64) -> Result<CpuLimit, ReserveError> {
        let period_us = (period_ms * 1000.0).round();
        let quota_us = (slice_ms * 1000.0).round();
        if !(1000.0..=1_000_000.0).contains(&period_us) {
            return Err(ReserveError::Invalid(format!(
                "{vm}: period {period_ms} ms is outside the kernel's 1..1000 ms"
            )));
        }
        if quota_us < 1000.0 {
            return Err(ReserveError::Invalid(format!(
                "{vm}: slice {slice_ms} ms is below the kernel's smallest quota, 1 ms"
            )));
        }
        Ok(CpuLimit {
            period_us: period_us as u64,
            quota_us: quota_us as u64,
        })
    }

    /// The reservation this limit enforces.
    fn reservation(&self, vm: &str) -> CpuReservation {
        CpuReservation {
            vm: vm.to_string(),
            period_ms: self.period_us as f64 / 1000.0,
            slice_ms: self.quota_us as f64 / 1000.0,
        }
    }
}

/// Where the cpu controller lives, found at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuCgroups {
    /// A cgroup v2 hierarchy with the cpu controller: `cpu.max`, usage in `cpu.stat`.
    V2 {
        /// Its mount point.
        root: PathBuf,
    },
    /// cgroup v1: limits in the `cpu` hierarchy, usage in the `cpuacct` hierarchy (the
    /// same directory when they are co-mounted; `None` when cpuacct is not mounted).
    V1 {
        /// Mount point of the hierarchy with the cpu controller.
        cpu: PathBuf,
        /// Mount point of the hierarchy with the cpuacct controller.
        cpuacct: Option<PathBuf>,
    },
}

impl CpuCgroups {
    /// Finds the cpu controller in this process's mount table: a cgroup2 mount listing
    /// `cpu` in `cgroup.controllers` wins, else a cgroup v1 mount with the `cpu` option;
    /// `None` when there is neither.
    pub fn detect() -> Result<Option<CpuCgroups>> {
        let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
        Ok(Self::from_mounts(&mounts, |root| {
            fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|w| w == "cpu"))
        }))
    }

    /// [`CpuCgroups::detect`] on a mount table's text; `v2_has_cpu` tells whether a cgroup2
    /// mount point offers the cpu controller.
    fn from_mounts(mounts: &str, v2_has_cpu: impl Fn(&Path) -> bool) -> Option<CpuCgroups> {
        let mut cpu = None;
        let mut cpuacct = None;
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, mount, fstype, options, ..] = fields.as_slice() else {
                continue;
            };
            let mount = PathBuf::from(mount);
            match *fstype {
                "cgroup2" if v2_has_cpu(&mount) => return Some(CpuCgroups::V2 { root: mount }),
                "cgroup" => {
                    let opts: Vec<&str> = options.split(',').collect();
                    if opts.contains(&"cpu") && cpu.is_none() {
                        cpu = Some(mount.clone());
                    }
                    if opts.contains(&"cpuacct") && cpuacct.is_none() {
                        cpuacct = Some(mount);
                    }
                }
                _ => {}
            }
        }
        cpu.map(|cpu| CpuCgroups::V1 { cpu, cpuacct })
    }

    /// "cgroup v1 (cpu: ..., cpuacct: ...)" / "cgroup v2 (...)".
    pub fn describe(&self) -> String {
        match self {
            CpuCgroups::V2 { root } => format!("cgroup v2 ({})", root.display()),
            CpuCgroups::V1 { cpu, cpuacct } => format!(
                "cgroup v1 (cpu: {}, cpuacct: {})",
                cpu.display(),
                cpuacct
                    .as_ref()
                    .map_or("not mounted".to_string(), |p| p.display().to_string())
            ),
        }
    }

    /// The hierarchies' mount points, each once.
    fn roots(&self) -> Vec<&Path> {
        match self {
            CpuCgroups::V2 { root } => vec![root],
            CpuCgroups::V1 { cpu, cpuacct } => {
                let mut v = vec![cpu.as_path()];
                v.extend(cpuacct.as_deref().filter(|a| *a != cpu.as_path()));
                v
            }
        }
    }

    /// The lab's cgroup directory in each hierarchy.
    pub fn lab_dirs(&self, lab: &str) -> Vec<PathBuf> {
        self.roots()
            .into_iter()
            .map(|r| r.join(CGROUP_DIR).join(lab))
            .collect()
    }

    /// VM `vm`'s cgroup directory in each hierarchy.
    pub fn vm_dirs(&self, lab: &str, vm: &str) -> Vec<PathBuf> {
        self.lab_dirs(lab).into_iter().map(|d| d.join(vm)).collect()
    }

    /// The directory holding the cpu limit files of VM `vm`.
    fn limit_dir(&self, lab: &str, vm: &str) -> PathBuf {
        let root = match self {
            CpuCgroups::V2 { root } => root,
            CpuCgroups::V1 { cpu, .. } => cpu,
        };
        root.join(CGROUP_DIR).join(lab).join(vm)
    }

    /// Creates VM `vm`'s cgroups (and their parents); on v2 enables the cpu controller
    /// for the children of every directory down the path.
    pub fn create_vm(&self, lab: &str, vm: &str) -> Result<()> {
        for dir in self.vm_dirs(lab, vm) {
            fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        }
        if let CpuCgroups::V2 { root } = self {
            for dir in [
                root.clone(),
                root.join(CGROUP_DIR),
                root.join(CGROUP_DIR).join(lab),
            ] {
                write_file(&dir.join("cgroup.subtree_control"), "+cpu")?;
            }
        }
        Ok(())
    }

    /// Sets (`Some`) or releases (`None`) VM `vm`'s CPU limit. Setting creates the VM's
    /// cgroups if they are missing (a lab brought up before it had cgroups); releasing a
    /// VM without cgroups does nothing.
    pub fn set(&self, lab: &str, vm: &str, limit: Option<CpuLimit>) -> Result<()> {
        let dir = self.limit_dir(lab, vm);
        match limit {
            None if !dir.exists() => Ok(()),
            None => match self {
                CpuCgroups::V2 { .. } => write_file(&dir.join("cpu.max"), "max"),
                CpuCgroups::V1 { .. } => write_file(&dir.join("cpu.cfs_quota_us"), "-1"),
            },
            Some(l) => {
                self.create_vm(lab, vm)?;
                match self {
                    CpuCgroups::V2 { .. } => {
                        write_file(&dir.join("cpu.max"), &format!("{} {}", l.quota_us, l.period_us))
                    }
                    CpuCgroups::V1 { .. } => {
                        // Lift the quota first: the kernel checks each write against the
                        // other value (and the hierarchy) as it stands.
                        write_file(&dir.join("cpu.cfs_quota_us"), "-1")?;
                        write_file(&dir.join("cpu.cfs_period_us"), &l.period_us.to_string())?;
                        write_file(&dir.join("cpu.cfs_quota_us"), &l.quota_us.to_string())
                    }
                }
            }
        }
    }

    /// VM `vm`'s CPU limit as the kernel has it; `None` when unlimited or without cgroup.
    pub fn get(&self, lab: &str, vm: &str) -> Result<Option<CpuLimit>> {
        let dir = self.limit_dir(lab, vm);
        if !dir.exists() {
            return Ok(None);
        }
        let number = |text: &str, file: &Path| -> Result<u64> {
            text.trim()
                .parse()
                .with_context(|| format!("{}: `{}` is not a number", file.display(), text.trim()))
        };
        match self {
            CpuCgroups::V2 { .. } => {
                let file = dir.join("cpu.max");
                let text = read_file(&file)?;
                let mut words = text.split_whitespace();
                let (Some(quota), Some(period)) = (words.next(), words.next()) else {
                    bail!("{}: `{}` is not QUOTA PERIOD", file.display(), text.trim());
                };
                if quota == "max" {
                    return Ok(None);
                }
                Ok(Some(CpuLimit {
                    quota_us: number(quota, &file)?,
                    period_us: number(period, &file)?,
                }))
            }
            CpuCgroups::V1 { .. } => {
                let quota_file = dir.join("cpu.cfs_quota_us");
                let quota = read_file(&quota_file)?;
                if quota.trim() == "-1" {
                    return Ok(None);
                }
                let period_file = dir.join("cpu.cfs_period_us");
                Ok(Some(CpuLimit {
                    quota_us: number(&quota, &quota_file)?,
                    period_us: number(&read_file(&period_file)?, &period_file)?,
                }))
            }
        }
    }

    /// CPU time VM `vm`'s processes have used, in µs; `None` without an accounting
    /// hierarchy or cgroup.
    pub fn usage_us(&self, lab: &str, vm: &str) -> Result<Option<u64>> {
        let (file, scale_ns) = match self {
            CpuCgroups::V2 { root } => (root.join(CGROUP_DIR).join(lab).join(vm).join("cpu.stat"), false),
            CpuCgroups::V1 {
                cpuacct: Some(acct), ..
            } => (
                acct.join(CGROUP_DIR).join(lab).join(vm).join("cpuacct.usage"),
                true,
            ),
            CpuCgroups::V1 { cpuacct: None, .. } => return Ok(None),
        };
        if !file.exists() {
            return Ok(None);
        }
        let text = read_file(&file)?;
        let value = if scale_ns {
            text.trim().parse::<u64>().ok().map(|ns| ns / 1000)
        } else {
            text.lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
        };
        value
            .map(Some)
            .with_context(|| format!("{}: no usage in `{}`", file.display(), text.trim()))
    }

    /// Moves process `pid` into VM `vm`'s cgroups; a process that has exited meanwhile is
    /// not an error.
    fn enter(&self, lab: &str, vm: &str, pid: u32) -> Result<()> {
        for dir in self.vm_dirs(lab, vm) {
            let file = dir.join(PROCS);
            match fs::write(&file, pid.to_string()) {
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
                r => r.with_context(|| format!("moving PID {pid} into {}", file.display()))?,
            }
        }
        Ok(())
    }

    /// The processes in any of lab `lab`'s VM cgroups.
    fn lab_pids(&self, lab: &str) -> Vec<u32> {
        let mut pids: Vec<u32> = vm_subdirs(&self.lab_dirs(lab))
            .iter()
            .filter_map(|d| fs::read_to_string(d.join(PROCS)).ok())
            .flat_map(|t| {
                t.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Removes lab `lab`'s cgroups (its processes must be gone), and the common
    /// `vnet-lab` directory when no other lab uses it.
    fn remove_lab(&self, lab: &str) -> Result<()> {
        let lab_dirs = self.lab_dirs(lab);
        for dir in vm_subdirs(&lab_dirs)
            .iter()
            .chain(&lab_dirs)
            .filter(|d| d.exists())
        {
            // A process killed a moment ago may still be leaving the cgroup.
            let mut last = Ok(());
            sys::poll_until(RMDIR_TIMEOUT, Duration::from_millis(20), || {
                last = fs::remove_dir(dir);
                !matches!(&last, Err(e) if e.raw_os_error() == Some(libc::EBUSY))
            });
            match last {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing cgroup {}", dir.display()));
                }
                _ => {}
            }
        }
        for root in self.roots() {
            // Fails while another lab has cgroups there, which is as it should be.
            let _ = fs::remove_dir(root.join(CGROUP_DIR));
        }
        Ok(())
    }
}

/// The subdirectories (VM cgroups) of `dirs`.
fn vm_subdirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .filter_map(|d| fs::read_dir(d).ok())
        .flat_map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing `{text}` to {}", path.display()))
}

fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Creates the cgroups of the lab's VMs `vm0..vm{vms-1}` (`vnet lab up`). Nothing when no
/// hierarchy has the cpu controller: the lab works, CPU reservations are refused.
pub(super) fn create_cgroups(lab: &str, vms: usize) -> Result<()> {
    let Some(cgroups) = CpuCgroups::detect()? else {
        return Ok(());
    };
    for j in 0..vms {
        cgroups.create_vm(lab, &format!("vm{j}"))?;
    }
    Ok(())
}

/// The processes in lab `lab`'s VM cgroups (`vnet lab down` stops them with the rest).
pub(super) fn cgroup_pids(lab: &str) -> Vec<u32> {
    match CpuCgroups::detect() {
        Ok(Some(c)) => c.lab_pids(lab),
        _ => Vec::new(),
    }
}

/// Removes lab `lab`'s cgroups (`vnet lab down`, after its processes are stopped).
pub(super) fn remove_cgroups(lab: &str) -> Result<()> {
    match CpuCgroups::detect()? {
        Some(c) => c.remove_lab(lab),
        None => Ok(()),
    }
}

/// A command that runs a program on lab machine `machine` (vm0.., h0.., sw) of lab `lab`:
/// `ip netns exec LAB-MACHINE`, to which the caller appends the program and its
/// arguments. For a VM with cgroups the command first moves itself into them (through
/// `sh`, which then execs `ip`), so the program and all it starts count against the VM's
/// CPU reservation; it exits 126 if it cannot.
pub fn machine_command(lab: &str, machine: &str) -> Command {
    let ns = format!("{lab}-{machine}");
    let procs: Vec<PathBuf> = match CpuCgroups::detect() {
        Ok(Some(c)) if machine.starts_with("vm") => c
            .vm_dirs(lab, machine)
            .into_iter()
            .map(|d| d.join(PROCS))
            .filter(|p| p.exists())
            .collect(),
        _ => Vec::new(),
    };
    if procs.is_empty() {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns]);
        return c;
    }
    let mut c = Command::new("sh");
    c.args(["-c", ENTER_SCRIPT, "vnet-cgroup"])
        .args(procs)
        .arg("--")
        .args(["ip", "netns", "exec", &ns]);
    c
}

// ---------------------------------------------------------------------------------------
// Applying and reading back.

/// A link reservation in force and where it is enforced.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LinkInForce {
    /// Sending host.
    pub from: String,
    /// Receiving host.
    pub to: String,
    /// Guaranteed Mbit/s (the smaller of its ends' classes, should they differ).
    pub mbps: f64,
    /// The shapers holding it: "h1 ul0" (the sender's uplink), "sw p3" (the switch port
    /// toward the receiver).
    pub enforced_at: Vec<String>,
}

/// A shaped uplink and what is reserved on it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct UplinkUse {
    /// The host.
    pub host: String,
    /// Its rate, Mbit/s.
    pub mbps: f64,
    /// Reserved on what the host sends, Mbit/s.
    pub reserved_out_mbps: f64,
    /// Reserved on what the host receives, Mbit/s.
    pub reserved_in_mbps: f64,
}

/// A VM's cgroups and CPU use.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VmCgroup {
    /// The VM.
    pub vm: String,
    /// Its cgroup directory in each hierarchy (that exists).
    pub dirs: Vec<PathBuf>,
    /// CPU time its processes used so far, µs (None without accounting).
    pub usage_us: Option<u64>,
}

/// What `vnet lab reservations --json` prints: the reservations in force, read back from
/// tc and the cgroups.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LabReservations {
    /// Lab name.
    pub lab: String,
    /// Link reservations, by (from, to).
    pub links: Vec<LinkInForce>,
    /// CPU reservations, by VM.
    pub cpu: Vec<CpuReservation>,
    /// Shaped uplinks, by host.
    pub uplinks: Vec<UplinkUse>,
    /// Where the cpu controller is ("cgroup v1 (...)"), None when there is none.
    pub cgroups: Option<String>,
    /// Every VM's cgroups and usage.
    pub vms: Vec<VmCgroup>,
}

impl LabReservations {
    /// The reservations alone.
    pub fn reservations(&self) -> Reservations {
        Reservations {
            links: self
                .links
                .iter()
                .map(|l| LinkReservation {
                    from: l.from.clone(),
                    to: l.to.clone(),
                    mbps: l.mbps,
                })
                .collect(),
            cpu: self.cpu.clone(),
        }
    }
}

/// Reads back lab `lab`'s reservations.
pub fn read(lab: &str) -> Result<LabReservations> {
    check_lab_name(lab)?;
    let info = crate::info(lab)?;
    let states = read_ends(lab, info.hosts.len())?;
    let mut links: BTreeMap<(usize, usize), LinkInForce> = BTreeMap::new();
    for (end, state) in &states {
        for (&peer, &bps) in &state.reserved {
            let key = match end.side {
                Side::Out => (end.host, peer),
                Side::In => (peer, end.host),
            };
            let l = links.entry(key).or_insert_with(|| LinkInForce {
                from: format!("h{}", key.0),
                to: format!("h{}", key.1),
                mbps: mbps(bps),
                enforced_at: Vec::new(),
            });
            l.mbps = l.mbps.min(mbps(bps));
            l.enforced_at.push(end.place());
        }
    }
    let mut uplinks: BTreeMap<usize, UplinkUse> = BTreeMap::new();
    for (end, state) in &states {
        let u = uplinks.entry(end.host).or_insert_with(|| UplinkUse {
            host: format!("h{}", end.host),
            mbps: mbps(state.uplink_bps),
            reserved_out_mbps: 0.0,
            reserved_in_mbps: 0.0,
        });
        let sum = mbps(state.reserved.values().sum());
        match end.side {
            Side::Out => u.reserved_out_mbps = sum,
            Side::In => u.reserved_in_mbps = sum,
        }
    }
    let cgroups = CpuCgroups::detect()?;
    let mut cpu = Vec::new();
    let mut vms = Vec::new();
    for vm in &info.vms {
        let Some(cg) = &cgroups else {
            vms.push(VmCgroup {
                vm: vm.name.clone(),
                dirs: Vec::new(),
                usage_us: None,
            });
            continue;
        };
        if let Some(limit) = cg.get(lab, &vm.name)? {
            cpu.push(limit.reservation(&vm.name));
        }
        vms.push(VmCgroup {
            vm: vm.name.clone(),
            dirs: cg
                .vm_dirs(lab, &vm.name)
                .into_iter()
                .filter(|d| d.exists())
                .collect(),
            usage_us: cg.usage_us(lab, &vm.name)?,
        });
    }
    Ok(LabReservations {
        lab: lab.to_string(),
        links: links.into_values().collect(),
        cpu,
        uplinks: uplinks.into_values().collect(),
        cgroups: cgroups.map(|c| c.describe()),
        vms,
    })
}

/// Makes `links` and `cpu` the reservations in force in lab `lab` (the contract of
/// [`ReservationBackend::apply`]).
pub fn apply(lab: &str, links: &[LinkReservation], cpu: &[CpuReservation]) -> Result<(), ReserveError> {
    let (want_links, want_cpu) = validate(links, cpu)?;
    check_lab_name(lab).map_err(system_error)?;
    let info = crate::info(lab).map_err(|e| ReserveError::Unknown(format!("{e:#}")))?;
    let hosts = info.hosts.len();
    let host = |name: &str| -> Result<usize, ReserveError> {
        name.strip_prefix('h')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&i| i < hosts && name == format!("h{i}"))
            .ok_or_else(|| {
                ReserveError::Unknown(format!(
                    "lab `{lab}` has no host `{name}` (its hosts are h0..h{})",
                    hosts - 1
                ))
            })
    };
    let mut wanted = BTreeMap::new();
    for ((from, to), rate) in &want_links {
        let bps = bps_of_mbps(&format!("link {from} -> {to}"), *rate)?;
        wanted.insert((host(from)?, host(to)?), bps);
    }
    let mut limits = BTreeMap::new();
    for (vm, &(period_ms, slice_ms)) in &want_cpu {
        if !info.vms.iter().any(|v| &v.name == vm) {
            return Err(ReserveError::Unknown(format!(
                "lab `{lab}` has no VM `{vm}` (its VMs are vm0..vm{})",
                info.vms.len().saturating_sub(1)
            )));
        }
        limits.insert(vm.clone(), CpuLimit::from_ms(vm, period_ms, slice_ms)?);
    }
    let cgroups = CpuCgroups::detect().map_err(system_error)?;
    if cgroups.is_none() && !limits.is_empty() {
        return Err(ReserveError::NoCpuController);
    }
    let states = read_ends(lab, hosts).map_err(system_error)?;
    let plans = plan_links(&states, &wanted)?;

    // Everything is checked: change things.
    for (end, commands) in plans {
        for args in commands {
            tc(&end.ns(lab), &args).map_err(system_error)?;
        }
    }
    if let Some(cg) = cgroups {
        for vm in &info.vms {
            let limit = limits.get(&vm.name).copied();
            // An unchanged limit is left alone: rewriting it lifts the cap for a moment.
            if cg.get(lab, &vm.name).map_err(system_error)? != limit {
                cg.set(lab, &vm.name, limit).map_err(system_error)?;
            }
            if limit.is_some() {
                // Programs started in the VM without entering its cgroup.
                for pid in sys::netns_pids(&vm.netns).map_err(system_error)? {
                    cg.enter(lab, &vm.name, pid).map_err(system_error)?;
                }
            }
        }
    }
    Ok(())
}

/// The reservations of a `vnet lab` lab (module docs: how they are enforced).
#[derive(Debug)]
pub struct LabBackend {
    lab: String,
}

impl LabBackend {
    /// The backend of lab `lab`, which must be up.
    pub fn new(lab: &str) -> Result<LabBackend, ReserveError> {
        check_lab_name(lab).map_err(|e| ReserveError::Unknown(format!("{e:#}")))?;
        crate::info(lab).map_err(|e| ReserveError::Unknown(format!("{e:#}")))?;
        Ok(LabBackend { lab: lab.to_string() })
    }

    /// Everything read back, with uplinks, cgroups and CPU usage.
    pub fn details(&self) -> Result<LabReservations, ReserveError> {
        read(&self.lab).map_err(system_error)
    }
}

impl ReservationBackend for LabBackend {
    fn apply(&mut self, links: &[LinkReservation], cpu: &[CpuReservation]) -> Result<(), ReserveError> {
        apply(&self.lab, links, cpu)
    }

    fn current(&mut self) -> Result<Reservations, ReserveError> {
        Ok(self.details()?.reservations())
    }
}

// ---------------------------------------------------------------------------------------
// CLI.

/// `--link FROM:TO=RATE`: a link reservation to make (`None`: to release).
#[derive(Clone, Debug, PartialEq)]
pub struct LinkArg {
    /// Sending host.
    pub from: String,
    /// Receiving host.
    pub to: String,
    /// Mbit/s, or None for `=0` (release).
    pub mbps: Option<f64>,
}

impl std::str::FromStr for LinkArg {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<LinkArg> {
        let usage = || format!("`{s}` is not a link reservation: write FROM:TO=RATE, e.g. h1:h3=60mbit");
        let (ends, rate) = s.split_once('=').with_context(usage)?;
        let (from, to) = ends.split_once(':').with_context(usage)?;
        if from.is_empty() || to.is_empty() {
            bail!(usage());
        }
        let mbps = match rate.trim() {
            "0" => None,
            r if r.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
                bail!("`{s}`: give the rate a unit, e.g. {r}mbit (or 0 to release)")
            }
            r => Some(parse_shaping_rate(r)?.mbit_per_sec()),
        };
        Ok(LinkArg {
            from: from.to_string(),
            to: to.to_string(),
            mbps,
        })
    }
}

/// `--cpu VM=PERIOD_MS:SLICE_MS`: a CPU reservation to make (`None`: to release).
#[derive(Clone, Debug, PartialEq)]
pub struct CpuArg {
    /// The VM.
    pub vm: String,
    /// (period, slice) in ms, or None for `=0` (release).
    pub period_slice_ms: Option<(f64, f64)>,
}

impl std::str::FromStr for CpuArg {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<CpuArg> {
        let usage =
            || format!("`{s}` is not a CPU reservation: write VM=PERIOD_MS:SLICE_MS, e.g. vm0=100:25");
        let (vm, figures) = s.split_once('=').with_context(usage)?;
        if vm.is_empty() {
            bail!(usage());
        }
        let period_slice_ms = if figures.trim() == "0" {
            None
        } else {
            let (p, sl) = figures.split_once(':').with_context(usage)?;
            let num = |t: &str| t.trim().parse::<f64>().ok().filter(|x| x.is_finite());
            Some((num(p).with_context(usage)?, num(sl).with_context(usage)?))
        };
        Ok(CpuArg {
            vm: vm.to_string(),
            period_slice_ms,
        })
    }
}

/// Options of `vnet lab reserve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReserveArgs {
    /// Lab name.
    #[arg(long)]
    pub name: String,
    /// Guarantee RATE to the overlay link from host FROM to host TO, e.g. `h1:h3=60mbit`
    /// (RATE as tc reads it, with a unit; `=0` releases that link). Enforced by HTB on the
    /// shaped uplinks of either end (`vnet lab up --uplink`). Repeatable.
    #[arg(long = "link", value_name = "FROM:TO=RATE")]
    pub links: Vec<LinkArg>,
    /// Give VM SLICE_MS of CPU time in every PERIOD_MS, e.g. `vm0=100:25` (a cgroup CPU
    /// limit; period 1..1000 ms, slice at least 1 ms; `VM=0` releases it). Repeatable.
    #[arg(long = "cpu", value_name = "VM=PERIOD_MS:SLICE_MS")]
    pub cpu: Vec<CpuArg>,
    /// Start from nothing: release every reservation not given here (alone: release
    /// all). Without it, the given ones are added to, or change, those in force.
    #[arg(long)]
    pub clear: bool,
    /// Print the reservations in force afterwards as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `vnet lab reservations`.
#[derive(clap::Args, Debug, Clone)]
pub struct ShowArgs {
    /// Lab name.
    #[arg(long)]
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The whole set `vnet lab reserve` asks for: `current` (unless `clear`) with the
/// arguments' changes.
fn wanted_set(
    current: &Reservations,
    args: &ReserveArgs,
) -> Result<(Vec<LinkReservation>, Vec<CpuReservation>)> {
    if args.links.is_empty() && args.cpu.is_empty() && !args.clear {
        bail!("nothing to do: give --link, --cpu or --clear");
    }
    let mut links: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut cpu: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    if !args.clear {
        links.extend(
            current
                .links
                .iter()
                .map(|l| ((l.from.clone(), l.to.clone()), l.mbps)),
        );
        cpu.extend(
            current
                .cpu
                .iter()
                .map(|c| (c.vm.clone(), (c.period_ms, c.slice_ms))),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for l in &args.links {
        if !seen.insert((l.from.clone(), l.to.clone())) {
            bail!("--link {}:{} is given twice", l.from, l.to);
        }
        let key = (l.from.clone(), l.to.clone());
        match l.mbps {
            Some(m) => links.insert(key, m),
            None => links.remove(&key),
        };
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &args.cpu {
        if !seen.insert(c.vm.clone()) {
            bail!("--cpu {} is given twice", c.vm);
        }
        match c.period_slice_ms {
            Some(ps) => cpu.insert(c.vm.clone(), ps),
            None => cpu.remove(&c.vm),
        };
    }
    Ok((
        links
            .into_iter()
            .map(|((from, to), mbps)| LinkReservation { from, to, mbps })
            .collect(),
        cpu.into_iter()
            .map(|(vm, (period_ms, slice_ms))| CpuReservation {
                vm,
                period_ms,
                slice_ms,
            })
            .collect(),
    ))
}

/// `vnet lab reserve`.
pub fn run_reserve(args: ReserveArgs) -> Result<()> {
    let before = read(&args.name)?;
    let (links, cpu) = wanted_set(&before.reservations(), &args)?;
    apply(&args.name, &links, &cpu).with_context(|| format!("reserving in lab `{}`", args.name))?;
    show(&read(&args.name)?, args.json)
}

/// `vnet lab reservations`.
pub fn run_show(args: ShowArgs) -> Result<()> {
    show(&read(&args.name)?, args.json)
}

fn show(r: &LabReservations, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        print!("{}", render(r));
    }
    Ok(())
}

/// The human form of [`LabReservations`].
fn render(r: &LabReservations) -> String {
    let mut s = format!("lab `{}` reservations\n", r.lab);
    s += "shaped uplinks:\n";
    if r.uplinks.is_empty() {
        s += "  none (bring the lab up with --uplink hI=RATE to reserve bandwidth)\n";
    }
    for u in &r.uplinks {
        s += &format!(
            "  {:<4} {:>8} Mbit/s   reserved: {} out, {} in\n",
            u.host, u.mbps, u.reserved_out_mbps, u.reserved_in_mbps
        );
    }
    s += "links:\n";
    if r.links.is_empty() {
        s += "  none\n";
    }
    for l in &r.links {
        s += &format!(
            "  {} -> {}  {} Mbit/s  (at {})\n",
            l.from,
            l.to,
            l.mbps,
            l.enforced_at.join(", ")
        );
    }
    s += &format!(
        "cpu ({}):\n",
        r.cgroups.as_deref().unwrap_or("no cgroup cpu controller")
    );
    for v in &r.vms {
        let reservation = r
            .cpu
            .iter()
            .find(|c| c.vm == v.vm)
            .map_or("unlimited".to_string(), |c| {
                format!(
                    "{} ms of every {} ms ({:.0} %)",
                    c.slice_ms,
                    c.period_ms,
                    100.0 * c.slice_ms / c.period_ms
                )
            });
        let used = v
            .usage_us
            .map_or(String::new(), |u| format!(", used {:.3} s", u as f64 / 1e6));
        s += &format!("  {:<5} {reservation}{used}\n", v.vm);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd_text(cmds: &[Vec<String>]) -> Vec<String> {
        cmds.iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn reserve_shape_commands_build_the_htb_tree() {
        assert_eq!(
            cmd_text(&shape_commands("ul0", 100_000_000)),
            [
                "qdisc replace dev ul0 root handle 1: htb default 2",
                "class replace dev ul0 parent 1: classid 1:1 htb rate 100000000bit ceil 100000000bit \
                 burst 50000 cburst 50000 quantum 1514",
                "class replace dev ul0 parent 1:1 classid 1:2 htb rate 100000000bit ceil 100000000bit \
                 burst 50000 cburst 50000 quantum 1514",
                "qdisc replace dev ul0 parent 1:2 handle 2: bfifo limit 625000",
            ]
        );
        // Slow uplinks keep the smallest burst and queue.
        let slow = cmd_text(&shape_commands("p1", 1_000_000));
        assert!(slow[1].contains("burst 16384 cburst 16384"), "{}", slow[1]);
        assert!(slow[3].ends_with("limit 131072"), "{}", slow[3]);
    }

    fn shaped(uplink_mbps: u64, reserved: &[(usize, u64)]) -> HtbState {
        let reserved: BTreeMap<usize, u64> = reserved.iter().map(|&(p, m)| (p, m * 1_000_000)).collect();
        HtbState {
            uplink_bps: uplink_mbps * 1_000_000,
            default_bps: uplink_mbps * 1_000_000 - reserved.values().sum::<u64>(),
            reserved,
        }
    }

    fn end(host: usize, side: Side) -> End {
        End { host, side }
    }

    #[test]
    fn reserve_plan_installs_on_the_shaped_ends() {
        // h3 shaped at 100 Mbit/s both ways; h1 unshaped.
        let states = BTreeMap::from([
            (end(3, Side::Out), shaped(100, &[])),
            (end(3, Side::In), shaped(100, &[])),
        ]);
        let wanted = BTreeMap::from([((1, 3), 60_000_000)]);
        let plans = plan_links(&states, &wanted).unwrap();
        let (at, cmds) = &plans[1];
        assert_eq!(*at, end(3, Side::In));
        assert_eq!(
            cmd_text(cmds),
            [
                "class replace dev p3 parent 1:1 classid 1:101 htb rate 60000000bit ceil 100000000bit \
                 burst 30000 cburst 50000 quantum 1514",
                "qdisc replace dev p3 parent 1:101 handle 101: bfifo limit 625000",
                "filter add dev p3 parent 1: protocol ip prio 257 u32 match ip src 198.18.0.2/32 \
                 match ip dst 198.18.0.4/32 match ip sport 7400 0xfffe flowid 1:101",
                "filter add dev p3 parent 1: protocol ip prio 257 u32 match ip src 198.18.0.2/32 \
                 match ip dst 198.18.0.4/32 match ip dport 7400 0xfffe flowid 1:101",
                "filter add dev p3 parent 1: protocol ip prio 257 u32 match ip src 198.18.0.2/32 \
                 match ip dst 198.18.0.4/32 match u16 0 0x1fff at 6 flowid 1:2",
                "filter add dev p3 parent 1: protocol ip prio 257 u32 match ip src 198.18.0.2/32 \
                 match ip dst 198.18.0.4/32 flowid 1:101",
                // The default class keeps the rest guaranteed.
                "class replace dev p3 parent 1:1 classid 1:2 htb rate 40000000bit ceil 100000000bit \
                 burst 20000 cburst 50000 quantum 1514",
            ]
        );
        // h3's own uplink (what it sends) carries nothing of h1 -> h3.
        assert_eq!(plans[0], (end(3, Side::Out), Vec::new()));

        // The reverse direction sits on h3's ul0, with its addresses swapped.
        let plans = plan_links(&states, &BTreeMap::from([((3, 1), 1_000)])).unwrap();
        let out = cmd_text(&plans[0].1);
        assert!(
            out[2].contains("src 198.18.0.4/32 match ip dst 198.18.0.2/32"),
            "{out:?}"
        );
        assert!(out[0].contains("dev ul0") && out[0].contains("rate 1000bit"));
    }

    #[test]
    fn reserve_plan_changes_only_what_differs() {
        let states = BTreeMap::from([(end(2, Side::In), shaped(100, &[(1, 60), (3, 10)]))]);
        // The same set: nothing to do.
        let same = BTreeMap::from([((1, 2), 60_000_000), ((3, 2), 10_000_000)]);
        assert_eq!(
            plan_links(&states, &same).unwrap()[0].1,
            Vec::<Vec<String>>::new()
        );
        // h1's changes rate, h3's goes away.
        let plans = plan_links(&states, &BTreeMap::from([((1, 2), 30_000_000)])).unwrap();
        assert_eq!(
            cmd_text(&plans[0].1),
            [
                "filter del dev p2 parent 1: prio 259",
                "class del dev p2 classid 1:103",
                "class replace dev p2 parent 1:1 classid 1:101 htb rate 30000000bit ceil 100000000bit \
                 burst 16384 cburst 50000 quantum 1514",
                "class replace dev p2 parent 1:1 classid 1:2 htb rate 70000000bit ceil 100000000bit \
                 burst 35000 cburst 50000 quantum 1514",
            ]
        );
        // Releasing everything gives the default class the whole uplink again.
        let plans = plan_links(&states, &BTreeMap::new()).unwrap();
        let last = cmd_text(&plans[0].1).pop().unwrap();
        assert!(last.contains("classid 1:2 htb rate 100000000bit"), "{last}");
    }

    #[test]
    fn reserve_refuses_over_subscription_and_unshaped_links() {
        let states = BTreeMap::from([
            (end(3, Side::In), shaped(100, &[])),
            (end(1, Side::Out), shaped(50, &[])),
        ]);
        // 99 % of 100 Mbit/s may be reserved, not more.
        assert!(plan_links(&states, &BTreeMap::from([((2, 3), 99_000_000)])).is_ok());
        let e = plan_links(
            &states,
            &BTreeMap::from([((2, 3), 60_000_000), ((4, 3), 40_000_000)]),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ReserveError::OverSubscribed {
                    asked_mbps: 100.0,
                    available_mbps: 99.0,
                    ..
                }
            ),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.starts_with(
                "the uplink toward h3 (sw p3), uplink 100 Mbit/s (h2 -> h3 60 Mbit/s, h4 -> h3 40"
            ) && text.ends_with("add up to 100 Mbit/s, more than the 99 Mbit/s that can be reserved there"),
            "{text}"
        );
        // The sender's end counts too: h1 sends 60 of its 50 Mbit/s.
        let e = plan_links(&states, &BTreeMap::from([((1, 3), 60_000_000)])).unwrap_err();
        assert!(e.to_string().contains("from h1"), "{e}");
        // Neither end shaped.
        let e = plan_links(&states, &BTreeMap::from([((2, 4), 1_000)])).unwrap_err();
        assert!(matches!(e, ReserveError::Unshaped { .. }), "{e}");
        assert!(e.to_string().contains("--uplink h2=RATE"), "{e}");
    }

    #[test]
    fn reserve_rates_are_whole_kbit() {
        assert_eq!(bps_of_mbps("x", 60.0).unwrap(), 60_000_000);
        assert_eq!(bps_of_mbps("x", 12.3456).unwrap(), 12_346_000);
        assert_eq!(bps_of_mbps("x", 0.001).unwrap(), 1_000);
        assert!(matches!(bps_of_mbps("x", 0.0004), Err(ReserveError::Invalid(_))));
    }

    #[test]
    fn reserve_reads_classes_back() {
        let text = "class htb 1:101 parent 1:1 leaf 101: prio 0 rate 60Mbit ceil 100Mbit burst 30000b cburst 50000b \n\
                    class htb 1:1 root rate 100Mbit ceil 100Mbit burst 50000b cburst 50000b \n\
                    class htb 1:2 parent 1:1 leaf 2: prio 0 rate 39500Kbit ceil 100Mbit burst 20000b cburst 50000b \n\
                    class htb 1:103 parent 1:1 leaf 103: prio 0 rate 500Kbit ceil 100Mbit burst 16Kb cburst 50000b \n";
        let state = parse_classes(text).unwrap().unwrap();
        assert_eq!(state.uplink_bps, 100_000_000);
        assert_eq!(state.default_bps, 39_500_000);
        assert_eq!(state.reserved, BTreeMap::from([(1, 60_000_000), (3, 500_000)]));
        assert_eq!(state.reservable_bps(), 99_000_000);
        // No HTB (a veth's noqueue, or another qdisc): unshaped.
        assert_eq!(parse_classes("").unwrap(), None);
        assert_eq!(parse_classes("class tbf 1:1 parent 1: \n").unwrap(), None);
        assert!(parse_classes("class htb 1:zz root rate 1Mbit\n").is_err());
    }

    #[test]
    fn reserve_cpu_limits_follow_the_kernel_ranges() {
        assert_eq!(
            CpuLimit::from_ms("vm0", 100.0, 25.0).unwrap(),
            CpuLimit {
                period_us: 100_000,
                quota_us: 25_000
            }
        );
        assert_eq!(CpuLimit::from_ms("vm0", 1.0, 1.0).unwrap().quota_us, 1000);
        for (p, s) in [(0.5, 0.5), (1001.0, 10.0), (100.0, 0.5)] {
            assert!(
                matches!(CpuLimit::from_ms("vm0", p, s), Err(ReserveError::Invalid(_))),
                "{p} {s}"
            );
        }
        let r = CpuLimit::from_ms("vm0", 100.0, 12.5).unwrap().reservation("vm0");
        assert_eq!((r.period_ms, r.slice_ms), (100.0, 12.5));
    }

    #[test]
    fn reserve_detects_the_cpu_controller() {
        let hybrid = "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
                      cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            CpuCgroups::from_mounts(hybrid, |_| false),
            Some(CpuCgroups::V1 {
                cpu: "/sys/fs/cgroup/cpu".into(),
                cpuacct: Some("/sys/fs/cgroup/cpuacct".into())
            })
        );
        let comounted = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n";
        let c = CpuCgroups::from_mounts(comounted, |_| false).unwrap();
        assert_eq!(c.roots().len(), 1);
        assert_eq!(c.vm_dirs("lt", "vm0").len(), 1);
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            CpuCgroups::from_mounts(unified, |p| p == Path::new("/sys/fs/cgroup")),
            Some(CpuCgroups::V2 {
                root: "/sys/fs/cgroup".into()
            })
        );
        assert_eq!(CpuCgroups::from_mounts(unified, |_| false), None);
        assert_eq!(
            CpuCgroups::from_mounts("proc /proc proc rw 0 0\n", |_| true),
            None
        );
    }

    fn temp_root(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vnet-cg-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reserve_cgroup_v1_files() {
        let root = temp_root("v1");
        let cg = CpuCgroups::V1 {
            cpu: root.join("cpu"),
            cpuacct: Some(root.join("cpuacct")),
        };
        cg.create_vm("lt", "vm0").unwrap();
        let dir = root.join("cpu/vnet-lab/lt/vm0");
        assert!(dir.is_dir() && root.join("cpuacct/vnet-lab/lt/vm0").is_dir());
        // A real cgroup starts unlimited.
        fs::write(dir.join("cpu.cfs_quota_us"), "-1\n").unwrap();
        fs::write(dir.join("cpu.cfs_period_us"), "100000\n").unwrap();
        assert_eq!(cg.get("lt", "vm0").unwrap(), None);

        let limit = CpuLimit::from_ms("vm0", 50.0, 12.5).unwrap();
        cg.set("lt", "vm0", Some(limit)).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("cpu.cfs_period_us")).unwrap(),
            "50000"
        );
        assert_eq!(fs::read_to_string(dir.join("cpu.cfs_quota_us")).unwrap(), "12500");
        assert_eq!(cg.get("lt", "vm0").unwrap(), Some(limit));
        cg.set("lt", "vm0", None).unwrap();
        assert_eq!(fs::read_to_string(dir.join("cpu.cfs_quota_us")).unwrap(), "-1");
        assert_eq!(cg.get("lt", "vm0").unwrap(), None);
        // Releasing a VM that has no cgroup is nothing; usage comes from cpuacct, in ns.
        cg.set("lt", "vm9", None).unwrap();
        assert!(!root.join("cpu/vnet-lab/lt/vm9").exists());
        assert_eq!(cg.usage_us("lt", "vm0").unwrap(), None);
        fs::write(root.join("cpuacct/vnet-lab/lt/vm0/cpuacct.usage"), "2500000123\n").unwrap();
        assert_eq!(cg.usage_us("lt", "vm0").unwrap(), Some(2_500_000));
        assert_eq!(
            cg.vm_dirs("lt", "vm0"),
            [
                root.join("cpu/vnet-lab/lt/vm0"),
                root.join("cpuacct/vnet-lab/lt/vm0")
            ]
        );
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn reserve_cgroup_v2_files() {
        let root = temp_root("v2");
        let cg = CpuCgroups::V2 { root: root.clone() };
        let limit = CpuLimit::from_ms("vm1", 100.0, 25.0).unwrap();
        // Setting creates the cgroup and enables the controller down the path.
        cg.set("lt", "vm1", Some(limit)).unwrap();
        for dir in ["", "vnet-lab", "vnet-lab/lt"] {
            assert_eq!(
                fs::read_to_string(root.join(dir).join("cgroup.subtree_control")).unwrap(),
                "+cpu",
                "{dir}"
            );
        }
        let max = root.join("vnet-lab/lt/vm1/cpu.max");
        assert_eq!(fs::read_to_string(&max).unwrap(), "25000 100000");
        assert_eq!(cg.get("lt", "vm1").unwrap(), Some(limit));
        cg.set("lt", "vm1", None).unwrap();
        assert_eq!(fs::read_to_string(&max).unwrap(), "max");
        // The kernel keeps the period: "max 100000".
        fs::write(&max, "max 100000\n").unwrap();
        assert_eq!(cg.get("lt", "vm1").unwrap(), None);
        fs::write(&max, "junk\n").unwrap();
        assert!(cg.get("lt", "vm1").is_err());
        fs::write(
            root.join("vnet-lab/lt/vm1/cpu.stat"),
            "usage_usec 1234567\nuser_usec 1000000\n",
        )
        .unwrap();
        assert_eq!(cg.usage_us("lt", "vm1").unwrap(), Some(1_234_567));
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn reserve_parses_cli_arguments() {
        let l: LinkArg = "h1:h3=60mbit".parse().unwrap();
        assert_eq!(
            l,
            LinkArg {
                from: "h1".into(),
                to: "h3".into(),
                mbps: Some(60.0)
            }
        );
        assert_eq!("h1:h3=0".parse::<LinkArg>().unwrap().mbps, None);
        assert_eq!("h1:h3=1.5gbit".parse::<LinkArg>().unwrap().mbps, Some(1500.0));
        for bad in ["h1:h3", "h1=60mbit", ":h3=1mbit", "h1:h3=60", "h1:h3=fast"] {
            assert!(bad.parse::<LinkArg>().is_err(), "{bad}");
        }
        let e = "h1:h3=60".parse::<LinkArg>().unwrap_err().to_string();
        assert!(e.contains("60mbit"), "{e}");

        let c: CpuArg = "vm0=100:25".parse().unwrap();
        assert_eq!(c.period_slice_ms, Some((100.0, 25.0)));
        assert_eq!("vm0=0".parse::<CpuArg>().unwrap().period_slice_ms, None);
        for bad in ["vm0", "vm0=100", "=100:25", "vm0=a:b", "vm0=100:inf"] {
            assert!(bad.parse::<CpuArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn reserve_subcommands_parse() {
        use clap::Parser;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(subcommand)]
            cmd: crate::LabCommand,
        }
        let cli = Cli::try_parse_from([
            "lab",
            "reserve",
            "--name",
            "t",
            "--link",
            "h1:h3=60mbit",
            "--link",
            "h3:h1=0",
            "--cpu",
            "vm0=100:25",
            "--json",
        ])
        .unwrap();
        let crate::LabCommand::Reserve(a) = cli.cmd else {
            panic!("not reserve")
        };
        assert_eq!((a.name.as_str(), a.links.len(), a.cpu.len()), ("t", 2, 1));
        assert!(a.json && !a.clear);
        assert_eq!(a.links[1].mbps, None);
        let cli = Cli::try_parse_from(["lab", "reservations", "--name", "t"]).unwrap();
        assert!(matches!(
            cli.cmd,
            crate::LabCommand::Reservations(ShowArgs { json: false, .. })
        ));
        for bad in [
            &["lab", "reserve", "--name", "t", "--link", "h1-h3=1mbit"][..],
            &["lab", "reserve", "--name", "t", "--cpu", "vm0=25"],
            &["lab", "reserve", "--link", "h1:h3=1mbit"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reserve_cli_merges_with_what_is_in_force() {
        let current = Reservations {
            links: vec![LinkReservation {
                from: "h1".into(),
                to: "h3".into(),
                mbps: 60.0,
            }],
            cpu: vec![CpuReservation {
                vm: "vm0".into(),
                period_ms: 100.0,
                slice_ms: 25.0,
            }],
        };
        let args = |links: &[&str], cpu: &[&str], clear: bool| ReserveArgs {
            name: "lt".into(),
            links: links.iter().map(|l| l.parse().unwrap()).collect(),
            cpu: cpu.iter().map(|c| c.parse().unwrap()).collect(),
            clear,
            json: false,
        };
        let (l, c) = wanted_set(&current, &args(&["h2:h3=10mbit"], &[], false)).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(c, current.cpu);
        let (l, c) = wanted_set(&current, &args(&["h1:h3=0"], &["vm1=50:5"], false)).unwrap();
        assert!(l.is_empty());
        assert_eq!(c.len(), 2);
        let (l, c) = wanted_set(&current, &args(&[], &["vm1=50:5"], true)).unwrap();
        assert!(l.is_empty());
        assert_eq!(c[0].vm, "vm1");
        let (l, c) = wanted_set(&current, &args(&[], &[], true)).unwrap();
        assert!(l.is_empty() && c.is_empty());
        assert!(wanted_set(&current, &args(&[], &[], false)).is_err());
        let e = wanted_set(&current, &args(&["h1:h2=1mbit", "h1:h2=2mbit"], &[], false)).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn reserve_render_lists_everything() {
        let r = LabReservations {
            lab: "lt".into(),
            links: vec![LinkInForce {
                from: "h1".into(),
                to: "h3".into(),
                mbps: 60.0,
                enforced_at: vec!["sw p3".into()],
            }],
            cpu: vec![CpuReservation {
                vm: "vm0".into(),
                period_ms: 100.0,
                slice_ms: 25.0,
            }],
            uplinks: vec![UplinkUse {
                host: "h3".into(),
                mbps: 100.0,
                reserved_out_mbps: 0.0,
                reserved_in_mbps: 60.0,
            }],
            cgroups: Some("cgroup v1 (cpu: /c, cpuacct: /a)".into()),
            vms: vec![
                VmCgroup {
                    vm: "vm0".into(),
                    dirs: vec![],
                    usage_us: Some(1_500_000),
                },
                VmCgroup {
                    vm: "vm1".into(),
                    dirs: vec![],
                    usage_us: None,
                },
            ],
        };
        let text = render(&r);
        for want in [
            "h1 -> h3  60 Mbit/s  (at sw p3)",
            "reserved: 0 out, 60 in",
            "vm0   25 ms of every 100 ms (25 %), used 1.500 s",
            "vm1   unlimited",
            "cgroup v1",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<LabReservations>(&json).unwrap(), r);
        assert_eq!(r.reservations().links[0].mbps, 60.0);
    }
}
