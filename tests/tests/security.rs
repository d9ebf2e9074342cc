//! Hostile peers: a daemon with the wrong network key, a forged handshake, and random
//! bytes thrown at link ports and control sockets.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vnet_client::Client;
use vnet_control::proto::{LinkState, LinkStatus};
use vnet_core::wire::Kind;
use vnet_e2e::{kill, pid_alive, random_bytes, root_or_skip, wait_for, wire_header, Lab};

/// A daemon with the wrong key dialing the proxy over TCP never brings its link up and
/// never disturbs the real host's session; a peer that answers the proxy's challenge
/// without the key is refused and counted.
#[test]
fn wrong_key_daemon_cannot_join() {
    if !root_or_skip("wrong_key_daemon_cannot_join") {
        return;
    }
    let mut lab = Lab::up("e2ekey", &["--hosts", "3", "--vms", "2"]);
    rogue_cannot_join(&mut lab, "tcp", 7400);
}

/// The same over QUIC: TLS comes up (certificates are not trusted), but the vnet
/// handshake bound to the TLS session refuses the wrong key.
#[test]
fn wrong_key_daemon_cannot_join_over_quic() {
    if !root_or_skip("wrong_key_daemon_cannot_join_over_quic") {
        return;
    }
    let mut lab = Lab::up("e2ekeyq", &["--hosts", "3", "--vms", "2", "--link", "quic"]);
    rogue_cannot_join(&mut lab, "quic", 7401);
}

fn rogue_cannot_join(lab: &mut Lab, proto: &str, proxy_port: u16) {
    let proxy = format!("{}:{proxy_port}", lab.host(0).underlay);
    let before = lab.link(0, "h0-h1");
    assert_eq!(
        (before.state, before.peer_node.as_deref()),
        (LinkState::Up, Some("h1"))
    );
    let proxy_auth_failed = lab.stats(0).drops("auth_failed");

    // The rogue lives on h1's underlay address (another port), claims the proxy's link
    // h0-h1, and holds a key of its own.
    let rogue = lab.spawn_rogue(&format!(
        "[[link]]\nname = \"h0-h1\"\nproto = \"{proto}\"\npeer = \"{proxy}\"\n"
    ));
    let netns = lab.host(1).netns.clone();
    let rogue_link_up = || rogue.ask(Client::link_list).iter().any(LinkStatus::is_up);
    let rogue_auth_failed = || rogue.ask(Client::stats).drops("auth_failed");

    // It keeps dialing, and every attempt fails authentication: the proxy's Challenge
    // proves a key the rogue does not hold, so the rogue (the initiator) is the one that
    // sees the failure. Its link must never be up meanwhile.
    let mut ever_up = false;
    wait_for(
        Duration::from_secs(10),
        "the rogue to fail authentication three times",
        || {
            ever_up |= rogue_link_up();
            rogue_auth_failed() >= 3
        },
    );
    assert!(!ever_up && !rogue_link_up(), "the rogue's link came up");

    // A peer that goes further and answers the Challenge with a made-up Proof is refused,
    // and the proxy counts it (the probe speaks TCP).
    if proto == "tcp" {
        let report = lab.probe(&netns, &["forge", &proxy, "h0-h1", "rogue"], &[]);
        assert!(
            report.contains(&format!("reply_to_proof={}", Kind::Refused.to_byte())),
            "the proxy did not refuse a forged proof: {report}"
        );
        wait_for(
            Duration::from_secs(2),
            "the proxy to count the failed authentication",
            || lab.stats(0).drops("auth_failed") > proxy_auth_failed,
        );
    }

    // The real h1 kept its session throughout, and VMs still talk.
    let after = lab.link(0, "h0-h1");
    assert_eq!(
        (after.state, after.peer_node.as_deref()),
        (LinkState::Up, Some("h1"))
    );
    assert_eq!(
        after.sessions, before.sessions,
        "the proxy's h0-h1 session was replaced"
    );
    let (sent, received) = lab.ping(0, 1, 3, Duration::from_millis(100));
    assert_eq!((sent, received), (3, 3), "ping vm0 -> vm1 with the rogue around");

    kill(rogue.pid, "TERM");
    wait_for(Duration::from_secs(5), "the rogue to exit", || {
        !pid_alive(rogue.pid)
    });
}

/// Bytes a TCP link port gets: random junk, headers announcing absurd or unmet lengths,
/// and a Hello whose payload is junk.
fn tcp_garbage() -> Vec<(&'static str, Vec<u8>)> {
    let mut junk = random_bytes(64 * 1024);
    junk[0] = 0; // not the magic, whatever the dice say
    let huge = [
        wire_header(Kind::Frame, 0, u32::MAX).as_slice(),
        &random_bytes(1024),
    ]
    .concat();
    let short = [wire_header(Kind::Hello, 0, 1000).as_slice(), &random_bytes(10)].concat();
    // 0xff... is a name length no Hello can have.
    let bad_hello = [wire_header(Kind::Hello, 0, 100).as_slice(), &[0xff; 100]].concat();
    vec![
        ("random bytes", junk),
        ("a header announcing 4 GiB", huge),
        ("a header whose payload never comes", short),
        ("a Hello whose payload is junk", bad_hello),
    ]
}

/// Datagrams a UDP link port gets, each prefixed by its length (the probe's input):
/// junk, frames and keepalives of sessions that do not exist, headers whose length lies,
/// and every handshake kind with a junk payload.
fn udp_garbage() -> Vec<u8> {
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    for i in 0..100 {
        let len = 1 + usize::from(random_bytes(2)[0]) * 5 + i;
        let mut d = random_bytes(len);
        d[0] = 0;
        datagrams.push(d);
    }
    let session = |i: u32| u32::from_be_bytes(random_bytes(4).try_into().expect("4 bytes")) | 1 | i;
    for i in 0..50 {
        let payload = random_bytes(60 + i as usize * 20);
        datagrams.push(
            [
                wire_header(Kind::Frame, session(i), payload.len() as u32).as_slice(),
                &payload,
            ]
            .concat(),
        );
        datagrams.push(wire_header(Kind::Keepalive, session(i), 0).to_vec());
    }
    for _ in 0..20 {
        datagrams.push(
            [
                wire_header(Kind::Frame, 7, u32::MAX).as_slice(),
                &random_bytes(100),
            ]
            .concat(),
        );
        datagrams.push([wire_header(Kind::Frame, 7, 50).as_slice(), &random_bytes(100)].concat());
        for kind in Kind::ALL.into_iter().filter(|k| *k != Kind::Frame) {
            let payload = random_bytes(40);
            datagrams.push(
                [
                    wire_header(kind, session(0), payload.len() as u32).as_slice(),
                    &payload,
                ]
                .concat(),
            );
        }
    }
    let mut input = Vec::new();
    for d in datagrams {
        input.extend_from_slice(&(d.len() as u16).to_be_bytes());
        input.extend_from_slice(&d);
    }
    input
}

/// Sends `bytes` on a fresh connection to control socket `path`, half-closes, and reads
/// until the daemon hangs up; returns how many bytes it answered. Panics if it keeps the
/// connection open past a deadline.
fn throw_at_control(path: &Path, bytes: &[u8]) -> usize {
    let mut s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connecting to {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    // The daemon may hang up before taking everything in.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "{}: the daemon held a garbage connection open: {e}",
            path.display()
        ),
    }
    answer.len()
}

/// Random bytes thrown at every daemon's TCP and UDP link port and control socket leave
/// every daemon running, its sessions intact, and VM traffic flowing; the drops are
/// counted.
#[test]
fn garbage_leaves_every_daemon_running_and_forwarding() {
    if !root_or_skip("garbage_leaves_every_daemon_running_and_forwarding") {
        return;
    }
    // UDP links, so that garbage datagrams meet live UDP sessions.
    let lab = Lab::up("e2ejunk", &["--hosts", "3", "--vms", "2", "--link", "udp"]);
    lab.wait_ping(0, 1, Duration::from_secs(5));
    let hosts = lab.info.hosts.len();
    let sessions: Vec<Vec<u64>> = (0..hosts)
        .map(|i| lab.links(i).iter().map(|l| l.sessions).collect())
        .collect();
    let drops_before = lab.stats(0);
    let started = Instant::now();

    // From h1's namespace (the only way into the underlay), at every daemon.
    let ns = lab.host(1).netns.clone();
    for i in 0..hosts {
        let addr = format!("{}:7400", lab.host(i).underlay);
        for (what, bytes) in tcp_garbage() {
            let counted = lab.stats(i).drops("bad_message");
            let report = lab.probe(&ns, &["tcp", &addr], &bytes);
            assert!(
                !report.contains("end=timeout"),
                "h{i} held a TCP connection with {what} open: {report}"
            );
            wait_for(
                Duration::from_secs(2),
                &format!("h{i} to count {what} on its TCP link port as a bad message"),
                || lab.stats(i).drops("bad_message") > counted,
            );
        }
        // Frames of unknown sessions earn a (rate-limited) Reset: the daemon read them.
        let report = lab.probe(&ns, &["udp", &addr], &udp_garbage());
        assert!(
            report.starts_with("sent=") && !report.ends_with("replies=0"),
            "h{i} answered none of the garbage datagrams: {report}"
        );
    }
    for i in 0..hosts {
        let control = lab.host(i).control.clone();
        let mut junk = random_bytes(4096);
        junk[0] = 0xff; // a length prefix far over the limit
        let mut body = random_bytes(16);
        body[0] = 2; // were it to decode, a request of protocol version 2: refused
        let answered = [
            throw_at_control(&control, &junk),
            throw_at_control(&control, &u32::MAX.to_be_bytes()),
            throw_at_control(&control, &[&16u32.to_be_bytes()[..], &body].concat()),
        ];
        assert!(
            answered.iter().all(|&n| n > 4),
            "h{i} did not answer every malformed control request with an error: {answered:?}"
        );
        // A prefix at the limit, then nothing: the daemon waits for the body, sees EOF.
        throw_at_control(&control, &(16u32 << 20).to_be_bytes());
    }
    eprintln!(
        "garbage: thrown at {hosts} daemons in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    for (i, sessions) in sessions.iter().enumerate() {
        assert!(
            pid_alive(lab.pid(i)),
            "h{i}'s vnetd died; {}",
            vnet_e2e::log_tail(&lab.host(i).log, 20)
        );
        let status = lab
            .status(i)
            .unwrap_or_else(|e| panic!("h{i} does not answer: {e}"));
        assert_eq!(status.node, lab.host(i).name);
        let now: Vec<u64> = lab.links(i).iter().map(|l| l.sessions).collect();
        assert_eq!(&now, sessions, "h{i}'s link sessions changed under garbage");
    }
    lab.wait_links_up(Duration::from_secs(2));
    let (sent, received) = lab.ping(0, 1, 5, Duration::from_millis(50));
    assert_eq!((sent, received), (5, 5), "ping vm0 -> vm1 after the garbage");

    let drops_after = lab.stats(0);
    eprintln!(
        "garbage: proxy drops {:?} -> {:?}",
        drops_before.drops, drops_after.drops
    );
    for reason in ["bad_message", "no_session"] {
        assert!(
            drops_after.drops(reason) > drops_before.drops(reason),
            "the proxy did not count {reason} drops: {:?}",
            drops_after.drops
        );
    }
}
