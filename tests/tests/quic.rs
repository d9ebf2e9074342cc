//! QUIC links: the star over QUIC datagrams carries full-size Ethernet frames (which
//! need fragmenting to fit a datagram), TCP super-frames cut to fit, and a transfer whose
//! bytes arrive intact.

use vnet_core::config::LinkProto;
use vnet_e2e::{in_netns, root_or_skip, run, Lab, PortsOf};

/// Full-size frames cross the proxy over QUIC links: a ping whose frames are 1514 bytes
/// (more than one QUIC datagram holds) comes back, and an iperf3 transfer runs.
#[test]
fn quic_star_carries_full_size_frames() {
    if !root_or_skip("quic_star_carries_full_size_frames") {
        return;
    }
    let lab = Lab::up("e2equic", &["--hosts", "3", "--vms", "2", "--link", "quic"]);
    for l in lab.links(0) {
        assert!(
            l.is_up() && l.spec.proto == LinkProto::Quic,
            "proxy link {} not up over QUIC",
            l.spec.name
        );
    }
    // The TAPs' default MTU (1394) keeps frames within one UDP datagram; QUIC links cut
    // larger frames themselves, so let the VMs send 1500-byte packets.
    for j in 0..2 {
        run(in_netns(&lab.vm(j).netns, "ip").args(["link", "set", "eth0", "mtu", "1500"]))
            .unwrap_or_else(|e| panic!("raising vm{j}'s MTU: {e}"));
    }
    let before = lab.stats(0).link_counters("h0-h2");
    // 1472 bytes of ICMP payload make 1514-byte Ethernet frames; -M do forbids IP
    // fragmentation, so only vnet's own fragmentation can carry them.
    let out = run(in_netns(&lab.vm(0).netns, "ping").args([
        "-c",
        "5",
        "-i",
        "0.1",
        "-W",
        "2",
        "-s",
        "1472",
        "-M",
        "do",
        &lab.vm(1).ip.to_string(),
    ]))
    .unwrap_or_else(|e| panic!("full-size ping over QUIC failed: {e}"));
    assert!(out.contains("5 received"), "{out}");
    let after = lab.stats(0).link_counters("h0-h2");
    assert!(
        after.tx_bytes - before.tx_bytes >= 5 * 1514,
        "the proxy did not forward the full-size frames: {before:?} -> {after:?}"
    );

    // TCP super-frames are cut to fit a datagram; the bytes arrive intact.
    lab.transfer_file_verified(0, 1, 8);
    let r = lab.iperf(0, 1, 2);
    eprintln!(
        "quic star vm0 -> vm1: {:.0} Mbit/s ({} retransmits)",
        r.mbps(),
        r.retransmits
    );
    assert!(
        r.mbps() > 20.0,
        "iperf3 over QUIC only reached {:.1} Mbit/s",
        r.mbps()
    );
    let drops = lab.stats(0);
    assert_eq!(drops.drops("bad_message"), 0, "the proxy saw malformed datagrams");
}
