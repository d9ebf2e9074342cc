//! Encrypted links: frames sealed with per-session keys carry a verified file transfer
//! over TCP and UDP links, and two ends that disagree about encryption never link.

use std::time::Duration;

use vnet_e2e::{root_or_skip, wait_for, Lab};

/// An encrypted lab over `proto`: full-size pings, then a file whose bytes arrive intact,
/// with no frame failing authentication.
fn encrypted_transfer(name: &str, proto: &str) {
    let lab = Lab::up(
        name,
        &["--hosts", "3", "--vms", "2", "--link", proto, "--encrypt"],
    );
    for l in lab.links(0) {
        assert!(l.up(), "proxy link {} is not up", l.spec.name);
    }
    let (sent, received) = lab.ping(0, 1, 3, Duration::from_millis(100));
    assert_eq!(
        (sent, received),
        (3, 3),
        "ping vm0 -> vm1 over encrypted {proto} links"
    );
    let before = lab.stats(0).link("h0-h2");
    lab.transfer_file_verified(0, 1, 16);
    let after = lab.stats(0).link("h0-h2");
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
        encrypted_transfer("e2eenct", "tcp");
    }
}

/// UDP links that seal their frames carry a 16 MiB transfer byte for byte.
#[test]
fn encrypted_udp_links_carry_a_verified_transfer() {
    if root_or_skip("encrypted_udp_links_carry_a_verified_transfer") {
        encrypted_transfer("e2eencu", "udp");
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
            !lab.link(1, name).up() && !lab.link(2, name).up(),
            "{proto} link came up"
        );
    }
}
