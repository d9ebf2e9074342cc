//! MTU on the overlay: a VM's TAP gets the underlay MTU minus the worst link's overhead,
//! so its full-size packets cross a UDP link without IP fragmentation; a frame too large
//! for a UDP link is dropped and counted as `too_large`, never sent as IP fragments.

use std::process::Command;
use std::time::Duration;

use vnet_e2e::{root_or_skip, run, Lab};

/// The MTU of VM `j`'s NIC.
fn vm_mtu(lab: &Lab, j: usize) -> u32 {
    let out = run(Command::new("ip").args(["-n", &lab.vm(j).netns, "-o", "link", "show", "eth0"]))
        .expect("ip link show");
    let mut words = out.split_whitespace();
    words.find(|w| *w == "mtu");
    words
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no mtu in {out}"))
}

/// Pings VM `to` from VM `from` once with `size` bytes of payload and fragmentation
/// forbidden; true if the reply came.
fn ping_df(lab: &Lab, from: usize, to: usize, size: usize) -> bool {
    lab.in_vm(from, "ping")
        .args(["-c", "1", "-W", "1", "-M", "do", "-s", &size.to_string()])
        .arg(lab.vm(to).ip.to_string())
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn full_size_packets_cross_udp_links_and_oversized_frames_are_counted() {
    if !root_or_skip("full_size_packets_cross_udp_links_and_oversized_frames_are_counted") {
        return;
    }
    let lab = Lab::up("e2emtu", &["--hosts", "3", "--vms", "2", "--link", "udp"]);
    // 1500 − IPv6 40 − UDP 8 − link header 16 − seal 24 − Ethernet + VLAN 18.
    assert_eq!(vm_mtu(&lab, 0), 1394);
    lab.wait_ping(0, 1, Duration::from_secs(5));
    // A full-size packet (1394 − 28 bytes of IP and ICMP headers) crosses the star.
    assert!(ping_df(&lab, 0, 1, 1366), "a full-size packet did not cross");

    // A VM that raises its MTU past the link's sends frames the link cannot carry whole.
    run(Command::new("ip").args(["-n", &lab.vm(0).netns, "link", "set", "eth0", "mtu", "1500"]))
        .expect("raising vm0's MTU");
    let before = lab.stats(1).drops("too_large");
    assert!(
        !ping_df(&lab, 0, 1, 1472),
        "a 1514-byte frame crossed a 1500-byte UDP underlay"
    );
    let after = lab.stats(1).drops("too_large");
    assert!(
        after > before,
        "the oversized frame was not counted: {before} -> {after}"
    );
    let log = std::fs::read_to_string(&lab.host(1).log).expect("h1's log");
    assert!(
        log.contains("frame too large"),
        "no log line for the oversized frame"
    );
    // What fits still crosses.
    assert!(ping_df(&lab, 0, 1, 1366));
}

/// IP fragments the hosts created so far (`FragCreates` of `/proc/net/snmp` in each host's
/// namespace).
fn fragments_created(lab: &Lab) -> u64 {
    (0..lab.info.hosts.len())
        .map(|i| {
            let snmp =
                run(Command::new("ip").args(["netns", "exec", &lab.host(i).netns, "cat", "/proc/net/snmp"]))
                    .expect("reading /proc/net/snmp");
            let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
            let (names, values) = (ip.next().unwrap_or_default(), ip.next().unwrap_or_default());
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(n, _)| *n == "FragCreates")
                .and_then(|(_, v)| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no FragCreates in {snmp}"))
        })
        .sum()
}

/// On a small-MTU underlay (1280 bytes) the VMs get a matching MTU, and their TSO traffic
/// over UDP links is cut to fit the underlay: verified transfers both ways, and no host
/// creates a single IP fragment.
#[test]
fn small_mtu_underlay_carries_tso_traffic_unfragmented() {
    if !root_or_skip("small_mtu_underlay_carries_tso_traffic_unfragmented") {
        return;
    }
    let lab = Lab::up(
        "e2emtus",
        &[
            "--hosts",
            "3",
            "--vms",
            "2",
            "--link",
            "udp",
            "--underlay-mtu",
            "1280",
        ],
    );
    assert_eq!(vm_mtu(&lab, 0), 1280 - 106);
    lab.wait_ping(0, 1, Duration::from_secs(5));
    assert!(ping_df(&lab, 0, 1, 1174 - 28), "a full-size packet did not cross");
    let before = fragments_created(&lab);
    lab.transfer_file_verified(0, 1, 8);
    lab.transfer_file_verified(1, 0, 8);
    assert_eq!(
        fragments_created(&lab),
        before,
        "the underlay carried IP fragments"
    );
    for i in 0..3 {
        assert_eq!(
            lab.stats(i).drops("too_large"),
            0,
            "h{i} dropped frames as too large"
        );
    }
}
