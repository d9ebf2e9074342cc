//! Verified transfers: frames sealed with per-session keys (TCP and UDP links) and plain
//! UDP links carry a file byte for byte, so do links between a VM that sends TSO
//! super-frames and one that takes none, and two ends that disagree about encryption
//! never link.

use std::time::Duration;

use vnet_e2e::{root_or_skip, wait_for, Lab, PortsOf};

/// A lab over `proto` (sealed or not): full-size pings, then a file whose bytes arrive
/// intact, with no frame failing authentication.
fn verified_transfer(name: &str, proto: &str, encrypt: bool) {
    let mut args = vec!["--hosts", "3", "--vms", "2", "--link", proto];
    if encrypt {
        args.push("--encrypt");
    }
    let lab = Lab::up(name, &args);
    for l in lab.links(0) {
        assert!(l.is_up(), "proxy link {} is not up", l.spec.name);
    }
    let (sent, received) = lab.ping(0, 1, 3, Duration::from_millis(100));
    assert_eq!((sent, received), (3, 3), "ping vm0 -> vm1 over {proto} links");
    let before = lab.stats(0).link_counters("h0-h2");
    lab.transfer_file_verified(0, 1, 16);
    let after = lab.stats(0).link_counters("h0-h2");
    assert!(
        after.tx_bytes - before.tx_bytes >= 16 << 20,
        "the 16 MiB did not cross the proxy: {before:?} -> {after:?}"
    );
    for i in 0..3 {
        assert_eq!(lab.stats(i).drops("auth_failed"), 0, "h{i} refused sealed frames");
    }
}

/// TCP links that seal their frames carry a 16 MiB transfer byte for byte.
#[test]
fn encrypted_tcp_links_carry_a_verified_transfer() {
    if root_or_skip("encrypted_tcp_links_carry_a_verified_transfer") {
        verified_transfer("e2eenct", "tcp", true);
    }
}

/// UDP links that seal their frames carry a 16 MiB transfer byte for byte.
#[test]
fn encrypted_udp_links_carry_a_verified_transfer() {
    if root_or_skip("encrypted_udp_links_carry_a_verified_transfer") {
        verified_transfer("e2eencu", "udp", true);
    }
}

/// Plain UDP links carry a 16 MiB transfer byte for byte: TCP super-frames cut to fit
/// the underlay MTU and sent in UDP_SEGMENT batches.
#[test]
fn plain_udp_links_carry_a_verified_transfer() {
    if root_or_skip("plain_udp_links_carry_a_verified_transfer") {
        verified_transfer("e2eudp", "udp", false);
    }
}

/// vm0's TAP hands its daemon TSO super-frames; vm1's TAP has no offloads, so what reaches
/// it is cut into ordinary frames with complete checksums (after crossing whole over TCP
/// links, or cut and re-coalesced over UDP and QUIC links). Files cross both ways byte for byte,
/// and no daemon fails to segment a frame.
fn tso_to_plain_transfer(name: &str, proto: &str) {
    let lab = Lab::up(
        name,
        &[
            "--hosts",
            "3",
            "--vms",
            "2",
            "--link",
            proto,
            "--no-offload-vms",
            "1",
        ],
    );
    lab.wait_ping(0, 1, Duration::from_secs(5));
    // vm1's TAP takes no virtio-net header: a super-frame written whole would fail, so
    // intact files and no send errors mean every super-frame was cut for it.
    lab.transfer_file_verified(0, 1, 16);
    lab.transfer_file_verified(1, 0, 16);
    for i in 0..3 {
        let stats = lab.stats(i);
        for reason in ["offload", "send_error", "too_large"] {
            assert_eq!(stats.drops(reason), 0, "h{i} dropped frames as {reason}");
        }
    }
}

/// A TSO VM and a VM without offloads exchange files over TCP links.
#[test]
fn tso_and_plain_vms_exchange_files_over_tcp_links() {
    if root_or_skip("tso_and_plain_vms_exchange_files_over_tcp_links") {
        tso_to_plain_transfer("e2emixt", "tcp");
    }
}

/// A TSO VM and a VM without offloads exchange files over UDP links.
#[test]
fn tso_and_plain_vms_exchange_files_over_udp_links() {
    if root_or_skip("tso_and_plain_vms_exchange_files_over_udp_links") {
        tso_to_plain_transfer("e2emixu", "udp");
    }
}

/// A TSO VM and a VM without offloads exchange files over QUIC links (segments cut to a
/// datagram, glued back into super-frames on receipt, cut again for vm1).
#[test]
fn tso_and_plain_vms_exchange_files_over_quic_links() {
    if root_or_skip("tso_and_plain_vms_exchange_files_over_quic_links") {
        tso_to_plain_transfer("e2emixq", "quic");
    }
}

/// A link that encrypts at one end only is refused with a reason naming the mismatch,
/// for both transports, and never comes up.
#[test]
fn encryption_mismatch_is_refused() {
    if !root_or_skip("encryption_mismatch_is_refused") {
        return;
    }
    let lab = Lab::up("e2eencm", &["--hosts", "3", "--vms", "2"]);
    let h1 = lab.host(1).underlay.to_string();
    for (name, proto) in [("h1-h2", "tcp"), ("h1-h2u", "udp")] {
        lab.ctl_ok(1, &["link", "add", name, "--proto", proto, "--encrypt"]);
        lab.ctl_ok(
            2,
            &[
                "link",
                "add",
                name,
                "--proto",
                proto,
                "--peer",
                &format!("{h1}:7400"),
            ],
        );
        wait_for(
            Duration::from_secs(5),
            "the dialing end to report the refusal",
            || {
                lab.link(2, name)
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("encrypt"))
            },
        );
        assert!(
            !lab.link(1, name).is_up() && !lab.link(2, name).is_up(),
            "{proto} link came up"
        );
    }
}
