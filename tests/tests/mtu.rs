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
