//! Bandwidth: the HTB trees on the shaped uplinks, their `tc` commands, and reading
//! them back (the layout is in the parent module's docs).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use vadapt::reserve::ReserveError;

use crate::plan::{parse_shaping_rate, LabPlan, LINK_PORT};
use crate::sys;

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
pub(crate) fn shape_commands(dev: &str, uplink_bps: u64) -> Commands {
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
pub(super) enum Side {
    /// The host's `ul0`: what the host sends.
    Out,
    /// The switch's port toward the host: what the host receives.
    In,
}

/// One end of a host's uplink: where a shaper sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct End {
    pub(super) host: usize,
    pub(super) side: Side,
}

impl End {
    pub(super) fn ns(&self, lab: &str) -> String {
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
    pub(super) fn place(&self) -> String {
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
pub(super) struct HtbState {
    /// The root class's rate.
    pub(super) uplink_bps: u64,
    /// The default class's rate.
    default_bps: u64,
    /// Reservations by peer host.
    pub(super) reserved: BTreeMap<usize, u64>,
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
pub(super) fn plan_links(
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

pub(super) fn mbps(bps: u64) -> f64 {
    bps as f64 / 1e6
}

/// Mbit/s to whole kbit/s, in bits/s.
pub(super) fn bps_of_mbps(what: &str, mbps: f64) -> Result<u64, ReserveError> {
    let kbit = (mbps * 1000.0).round();
    if kbit < 1.0 {
        return Err(ReserveError::Invalid(format!(
            "{what}: {mbps} Mbit/s is below the smallest reservation, 1 kbit/s"
        )));
    }
    Ok(kbit as u64 * KBIT)
}

/// `tc -n NS args...`, returning stdout.
pub(super) fn tc(ns: &str, args: &[String]) -> Result<String> {
    let mut all = vec!["-n".to_string(), ns.to_string()];
    all.extend_from_slice(args);
    sys::run("tc", &all)
}

/// Every shaped uplink end of a lab with `hosts` hosts, read back from `tc`.
pub(super) fn read_ends(lab: &str, hosts: usize) -> Result<BTreeMap<End, HtbState>> {
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
}
