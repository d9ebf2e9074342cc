//! The data plane end to end: the resilient star through the proxy, VMs on one host,
//! a VM on a captured veth, uplink shaping, and a fast-path link that takes traffic off
//! the proxy while a transfer runs.

use std::time::Duration;

use vnet_control::proto::PortCounters;
use vnet_e2e::{root_or_skip, wait_for, Lab, PortsOf};

/// Sum of the frames a daemon's links received (what it forwarded in the star).
fn link_rx_frames(lab: &Lab, host: usize) -> u64 {
    lab.stats(host).links.iter().map(|(_, c)| c.rx_frames).sum()
}

/// ARP resolves, ping and an iperf3 transfer go VM to VM across hosts, and every byte of
/// them crosses the proxy.
#[test]
fn arp_ping_and_iperf_cross_the_proxy() {
    if !root_or_skip("arp_ping_and_iperf_cross_the_proxy") {
        return;
    }
    let lab = Lab::up("e2estar", &["--hosts", "3", "--vms", "2"]);
    assert_eq!((lab.vm(0).host.as_str(), lab.vm(1).host.as_str()), ("h1", "h2"));
    assert_eq!(
        lab.neighbour_mac(0, 1),
        None,
        "vm0 knows vm1's MAC before any traffic"
    );
    let before = lab.stats(0);

    let (sent, received) = lab.ping(0, 1, 5, Duration::from_millis(100));
    assert_eq!((sent, received), (5, 5), "ping vm0 -> vm1");
    // ARP went through the overlay both ways: each VM learnt the other's MAC.
    assert_eq!(lab.neighbour_mac(0, 1).as_deref(), Some(lab.vm(1).mac.as_str()));
    assert_eq!(lab.neighbour_mac(1, 0).as_deref(), Some(lab.vm(0).mac.as_str()));
    let after = lab.stats(0);
    for (link, dir) in [("h0-h1", "from"), ("h0-h2", "to")] {
        let (b, a) = (before.link_counters(link), after.link_counters(link));
        assert!(
            a.rx_frames >= b.rx_frames + 5 && a.tx_frames >= b.tx_frames + 5,
            "the proxy did not carry the pings {dir} {link}: {b:?} -> {a:?}"
        );
    }

    let before = lab.stats(0).link_counters("h0-h2");
    let r = lab.iperf(0, 1, 3);
    let after = lab.stats(0).link_counters("h0-h2");
    eprintln!(
        "star vm0 -> vm1 through the proxy: {:.0} Mbit/s ({} retransmits)",
        r.mbps(),
        r.retransmits
    );
    assert!(
        r.mbps() > 100.0,
        "iperf3 vm0 -> vm1 only reached {:.1} Mbit/s",
        r.mbps()
    );
    // Everything the receiver got (TCP payload) came out of the proxy (frames, larger).
    assert!(
        after.tx_bytes - before.tx_bytes >= r.bytes,
        "the proxy sent {} B toward h2, less than the {} B iperf3 received",
        after.tx_bytes - before.tx_bytes,
        r.bytes
    );
}

/// Two VMs on the same host reach each other without a frame leaving the host.
#[test]
fn same_host_vms_stay_on_their_host() {
    if !root_or_skip("same_host_vms_stay_on_their_host") {
        return;
    }
    let lab = Lab::up("e2elocal", &["--hosts", "2", "--vms", "2"]);
    assert_eq!((lab.vm(0).host.as_str(), lab.vm(1).host.as_str()), ("h1", "h1"));
    // Warm-up: the ARP broadcast goes to the proxy too (it floods to every host).
    lab.wait_ping(0, 1, Duration::from_secs(5));

    let uplink_before = lab.stats(1).link_counters("h0-h1");
    let vm1_before = lab.stats(1).iface_counters("vm1");
    let (sent, received) = lab.ping(0, 1, 20, Duration::from_millis(50));
    let uplink_after = lab.stats(1).link_counters("h0-h1");
    let vm1_after = lab.stats(1).iface_counters("vm1");

    assert_eq!((sent, received), (20, 20), "ping vm0 -> vm1 on the same host");
    assert_eq!(
        uplink_after.tx_frames, uplink_before.tx_frames,
        "frames between two VMs of h1 left h1 for the proxy"
    );
    assert!(
        vm1_after.tx_frames >= vm1_before.tx_frames + 20,
        "h1's vnetd did not carry the echo requests into vm1: {vm1_before:?} -> {vm1_after:?}"
    );
}

/// A VM whose NIC is a veth, captured by vnetd in promiscuous mode frame by frame (no
/// offloads), reaches a VM on its own host and one across the proxy, both ways, and
/// carries a bulk transfer.
#[test]
fn veth_vm_reaches_the_others() {
    if !root_or_skip("veth_vm_reaches_the_others") {
        return;
    }
    // vm0 (TAP) and vm2 (veth, no offloads) on h1, vm1 (TAP) on h2.
    let lab = Lab::up(
        "e2eveth",
        &[
            "--hosts",
            "3",
            "--vms",
            "3",
            "--veth-vms",
            "2",
            "--no-offload-vms",
            "2",
        ],
    );
    assert_eq!((lab.vm(2).nic.as_str(), lab.vm(2).host.as_str()), ("veth", "h1"));
    let before = lab.stats(1).iface_counters("vm2");

    for (from, to) in [(2, 1), (1, 2), (2, 0), (0, 2)] {
        let (sent, received) = lab.ping(from, to, 3, Duration::from_millis(100));
        assert_eq!((sent, received), (3, 3), "ping vm{from} -> vm{to}");
    }
    assert_eq!(lab.neighbour_mac(2, 1).as_deref(), Some(lab.vm(1).mac.as_str()));
    let after = lab.stats(1).iface_counters("vm2");
    // 4 pings of 3 each way, plus ARP.
    assert!(
        after.rx_frames >= before.rx_frames + 12 && after.tx_frames >= before.tx_frames + 12,
        "h1's capture of vm2's veth did not carry the pings: {before:?} -> {after:?}"
    );

    let r = lab.iperf(2, 1, 2);
    eprintln!(
        "veth vm2 -> vm1 through the proxy: {:.0} Mbit/s ({} retransmits)",
        r.mbps(),
        r.retransmits
    );
    assert!(
        r.mbps() > 100.0,
        "iperf3 vm2 -> vm1 only reached {:.1} Mbit/s",
        r.mbps()
    );
    // The other way, vm1's TAP hands vnetd TSO super-frames that the captured veth cannot
    // take: vnetd segments them (lengths, sequence numbers, checksums) and every byte
    // arrives intact.
    lab.transfer_file_verified(1, 2, 8);
    assert_eq!(
        lab.stats(1).drops("offload"),
        0,
        "h1 could not segment super-frames"
    );
}

/// With offloads, a captured veth is read and written behind virtio-net headers
/// (PACKET_VNET_HDR): the VM's TSO super-frames cross whole, and so do the TAP VM's in the
/// other direction; every byte arrives intact both ways.
#[test]
fn offloaded_veth_capture_carries_super_frames() {
    if !root_or_skip("offloaded_veth_capture_carries_super_frames") {
        return;
    }
    // vm0 (veth, offloads) on h1, vm1 (TAP) on h2.
    let lab = Lab::up("e2evethg", &["--hosts", "3", "--vms", "2", "--veth-vms", "0"]);
    assert_eq!(lab.vm(0).nic.as_str(), "veth");
    let before = lab.stats(1).iface_counters("vm0");
    lab.transfer_file_verified(0, 1, 16);
    lab.transfer_file_verified(1, 0, 16);
    let after = lab.stats(1).iface_counters("vm0");
    let (frames, bytes) = (
        after.rx_frames - before.rx_frames,
        after.rx_bytes - before.rx_bytes,
    );
    eprintln!("h1 read vm0's veth: {frames} frames, {bytes} bytes");
    // 16 MiB in 1514-byte frames would be over 11 000 reads; super-frames take far fewer.
    assert!(
        frames > 0 && bytes / frames > 3000,
        "h1 read no super-frames from the veth: {frames} frames for {bytes} bytes"
    );
    assert_eq!(
        lab.stats(1).drops("offload"),
        0,
        "h1 dropped frames it could not segment"
    );
    let r = lab.iperf(0, 1, 2);
    eprintln!("offloaded veth vm0 -> vm1: {:.0} Mbit/s", r.mbps());
    assert!(
        r.mbps() > 100.0,
        "iperf3 vm0 -> vm1 only reached {:.1} Mbit/s",
        r.mbps()
    );
}

/// `--uplink h2=50mbit` holds a transfer into h2 to the rate asked, while the same path
/// into an unshaped host runs far faster.
#[test]
fn uplink_shaping_limits_the_rate() {
    if !root_or_skip("uplink_shaping_limits_the_rate") {
        return;
    }
    const RATE_MBPS: f64 = 50.0;
    // vm0 on h1, vm1 on h2 (shaped), vm2 on h3 (the control): both transfers take
    // h1 -> proxy -> hX.
    let lab = Lab::up(
        "e2euplk",
        &["--hosts", "4", "--vms", "3", "--uplink", "h2=50mbit"],
    );
    assert_eq!((lab.vm(1).host.as_str(), lab.vm(2).host.as_str()), ("h2", "h3"));

    let shaped = lab.iperf(0, 1, 3);
    let control = lab.iperf(0, 2, 3);
    eprintln!(
        "uplink h2=50mbit: vm0 -> vm1 {:.1} Mbit/s; unshaped vm0 -> vm2 {:.0} Mbit/s",
        shaped.mbps(),
        control.mbps()
    );
    assert!(
        shaped.mbps() <= 1.15 * RATE_MBPS,
        "shaped transfer ran at {:.1} Mbit/s, above 1.15 x {RATE_MBPS}",
        shaped.mbps()
    );
    assert!(
        shaped.mbps() >= 0.5 * RATE_MBPS,
        "shaped transfer ran at {:.1} Mbit/s, below half of {RATE_MBPS}",
        shaped.mbps()
    );
    assert!(
        control.mbps() > 200.0,
        "unshaped control only reached {:.1} Mbit/s",
        control.mbps()
    );
}

/// A fast-path link with rules, added while a transfer runs through the proxy, takes the
/// traffic off the proxy: its counters stop rising while the transfer goes on.
#[test]
fn fast_path_link_takes_traffic_off_the_proxy() {
    if !root_or_skip("fast_path_link_takes_traffic_off_the_proxy") {
        return;
    }
    let lab = Lab::up("e2efast", &["--hosts", "3", "--vms", "2"]);
    lab.wait_ping(0, 1, Duration::from_secs(5));
    let mut transfer = lab.iperf_start(0, 1, 6);

    let start = link_rx_frames(&lab, 0);
    wait_for(
        Duration::from_secs(3),
        "the transfer to flow through the proxy",
        || link_rx_frames(&lab, 0) > start + 1000,
    );

    // h1 (lower) waits, h2 dials it; then each sends the other's VM over the new link.
    let h1_addr = format!("{}:7400", lab.host(1).underlay);
    lab.ctl_ok(1, &["link", "add", "h1-h2", "--proto", "tcp"]);
    lab.ctl_ok(2, &["link", "add", "h1-h2", "--proto", "tcp", "--peer", &h1_addr]);
    lab.wait_link_up(1, "h1-h2", Duration::from_secs(5));
    lab.wait_link_up(2, "h1-h2", Duration::from_secs(5));
    lab.ctl_ok(
        1,
        &[
            "rule",
            "add",
            "--src",
            "any",
            "--dst",
            &lab.vm(1).mac,
            "--out",
            "link:h1-h2",
        ],
    );
    lab.ctl_ok(
        2,
        &[
            "rule",
            "add",
            "--src",
            "any",
            "--dst",
            &lab.vm(0).mac,
            "--out",
            "link:h1-h2",
        ],
    );
    let fast = |lab: &Lab| lab.stats(1).link_counters("h1-h2");
    wait_for(
        Duration::from_secs(2),
        "the fast link to carry the transfer",
        || fast(&lab).tx_frames > 1000,
    );

    let (proxy_before, fast_before) = (link_rx_frames(&lab, 0), fast(&lab));
    // The measurement window: counters over the next second while iperf3 runs.
    std::thread::sleep(Duration::from_secs(1));
    let (proxy_after, fast_after): (u64, PortCounters) = (link_rx_frames(&lab, 0), fast(&lab));
    assert!(
        transfer.running(),
        "the transfer ended inside the window; the sample proves nothing"
    );

    eprintln!(
        "fast path: in 1 s the proxy forwarded {} frames, the h1-h2 link sent {} and received {}",
        proxy_after - proxy_before,
        fast_after.tx_frames - fast_before.tx_frames,
        fast_after.rx_frames - fast_before.rx_frames
    );
    assert!(
        proxy_after - proxy_before < 50,
        "the proxy still forwarded {} frames in a second",
        proxy_after - proxy_before
    );
    assert!(
        fast_after.tx_frames - fast_before.tx_frames > 1000 && fast_after.rx_frames > fast_before.rx_frames,
        "the fast link did not carry the transfer: {fast_before:?} -> {fast_after:?}"
    );
    let r = transfer.finish();
    eprintln!("fast path: transfer averaged {:.0} Mbit/s over 6 s", r.mbps());
    assert!(
        r.mbps() > 100.0,
        "the transfer only averaged {:.1} Mbit/s",
        r.mbps()
    );
}
