//! Restarts: the proxy's vnetd dies and comes back (over TCP and over UDP links), and a
//! host's vnetd restarts from its state file.

use std::time::{Duration, Instant};
use vnet_core::name::Name;

use vnet_client::Client;
use vnet_core::rule::{DstMatch, MacMatch, Output, RuleSpec};
use vnet_e2e::{kill, root_or_skip, wait_for, Lab};

/// How long connectivity may take to return after the proxy is back. The target is
/// within a second; this bound is generous so a loaded machine does not flake.
const RECOVERY_BOUND: Duration = Duration::from_secs(3);

/// Kills the proxy's vnetd under a running ping, starts it again, and measures how long
/// VM to VM connectivity takes to return by itself.
fn name(text: &str) -> Name {
    text.parse().unwrap()
}

fn proxy_restart(name: &str, proto: &str) {
    let mut lab = Lab::up(name, &["--hosts", "3", "--vms", "2", "--link", proto]);
    lab.wait_ping(0, 1, Duration::from_secs(5));
    let h1_sessions = lab.link(1, "h0-h1").sessions;
    let h2_sessions = lab.link(2, "h0-h2").sessions;

    let ping = lab.ping_monitor(0, 1, Duration::from_millis(20));
    assert!(
        ping.reply_after(Instant::now(), Duration::from_secs(2)).is_some(),
        "no ping replies before the proxy was killed"
    );
    lab.stop_daemon(0, "KILL");
    let dead = Instant::now();
    // The proxy carries every frame between the hosts: with it gone the replies stop.
    // Stay down a while (as after a crash), so the hosts notice and start redialing.
    ping.wait_silence(Duration::from_millis(200), Duration::from_secs(2));
    let restart = Instant::now();
    lab.start_daemon(0);
    let ready = Instant::now();
    let back = ping
        .reply_after(restart, RECOVERY_BOUND + Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{proto}: no ping reply within {RECOVERY_BOUND:?} of the proxy's restart"));
    let recovery = back - restart;
    eprintln!(
        "proxy restart over {proto}: connectivity back {:.0} ms after the restart began \
         ({:.0} ms after its control socket answered; proxy down {:.0} ms before)",
        recovery.as_secs_f64() * 1e3,
        back.saturating_duration_since(ready).as_secs_f64() * 1e3,
        (restart - dead).as_secs_f64() * 1e3,
    );
    assert!(
        recovery <= RECOVERY_BOUND,
        "{proto}: connectivity took {recovery:?} to return"
    );

    // The hosts came back on new sessions, to the new proxy.
    lab.wait_links_up(Duration::from_secs(5));
    let (l1, l2) = (lab.link(1, "h0-h1"), lab.link(2, "h0-h2"));
    assert!(
        l1.sessions > h1_sessions && l2.sessions > h2_sessions,
        "hosts kept their old sessions: h1 {h1_sessions} -> {}, h2 {h2_sessions} -> {}",
        l1.sessions,
        l2.sessions
    );
    let (sent, received) = lab.ping(1, 0, 5, Duration::from_millis(50));
    assert_eq!(
        (sent, received),
        (5, 5),
        "{proto}: ping vm1 -> vm0 after the proxy's restart"
    );
}

/// The proxy's vnetd is killed and restarted; TCP links re-establish and VM to VM
/// connectivity returns by itself.
#[test]
fn proxy_restart_over_tcp_recovers_by_itself() {
    if !root_or_skip("proxy_restart_over_tcp_recovers_by_itself") {
        return;
    }
    proxy_restart("e2ertcp", "tcp");
}

/// The proxy's vnetd is killed and restarted; UDP links re-handshake and VM to VM
/// connectivity returns by itself.
#[test]
fn proxy_restart_over_udp_recovers_by_itself() {
    if !root_or_skip("proxy_restart_over_udp_recovers_by_itself") {
        return;
    }
    proxy_restart("e2erudp", "udp");
}

/// A host's vnetd restarted with SIGTERM comes back with the configuration it had,
/// including a rule added at run time (from its state file, not its config file), and
/// its VM is reachable again.
#[test]
fn host_restart_restores_its_configuration() {
    if !root_or_skip("host_restart_restores_its_configuration") {
        return;
    }
    const SPARE: &str = "02:00:00:00:00:99";
    let mut lab = Lab::up("e2ehost", &["--hosts", "3", "--vms", "2"]);
    lab.wait_ping(0, 1, Duration::from_secs(5));
    let spare = RuleSpec {
        src: MacMatch::Any,
        dst: SPARE.parse::<DstMatch>().expect("a MAC"),
        out: vec![Output::Link(name("h0-h1"))],
    };
    let id = lab.ask(1, |c| c.rule_add(spare.clone()));
    let config_before = lab.ask(1, Client::config_get);
    let proxy_sessions = lab.link(0, "h0-h1").sessions;
    let config_file = std::fs::read_to_string(&lab.host(1).config).expect("reading h1's config file");
    assert!(
        !config_file.contains(SPARE),
        "the rule is in the config file; the test would prove nothing"
    );

    let old_pid = lab.pid(1);
    lab.stop_daemon(1, "TERM");
    assert!(
        !lab.ping_once(0, 1, Duration::from_millis(300)),
        "vm0 reached vm1 while vm0's vnetd was stopped"
    );
    let new_pid = lab.start_daemon(1);
    assert_ne!(old_pid, new_pid);

    let rule = lab.rules(1).into_iter().find(|r| r.id == id);
    let rule = rule.unwrap_or_else(|| panic!("rule {id} is gone after the restart"));
    assert_eq!(rule.spec, spare);
    assert_eq!(
        lab.ask(1, Client::config_get),
        config_before,
        "h1's topology differs after the restart"
    );
    lab.wait_link_up(1, "h0-h1", Duration::from_secs(5));
    lab.wait_ping(0, 1, Duration::from_secs(5));
    assert!(
        lab.link(0, "h0-h1").sessions > proxy_sessions,
        "the proxy saw no new session from the restarted h1"
    );
}

/// A TCP link whose peer falls silent without closing the connection (a frozen or vanished
/// host) is declared down once keepalives stop, and comes back when the peer does.
#[test]
fn a_silent_tcp_peer_is_declared_dead() {
    if !root_or_skip("a_silent_tcp_peer_is_declared_dead") {
        return;
    }
    let lab = Lab::up("e2esil", &["--hosts", "3", "--vms", "2"]);
    let proxy = lab.pid(0);
    kill(proxy, "STOP");
    // Resume the proxy even if an assertion fails, so the lab can be torn down.
    struct Resume(u32);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &self.0.to_string()])
                .status();
        }
    }
    let resume = Resume(proxy);
    let down = wait_for(
        Duration::from_secs(10),
        "h1 to declare the frozen proxy's link down",
        || !lab.link(1, "h0-h1").is_up(),
    );
    assert!(
        down >= Duration::from_secs(3),
        "declared down after {down:?}, before any timeout"
    );
    drop(resume);
    lab.wait_link_up(1, "h0-h1", Duration::from_secs(10));
    lab.wait_ping(0, 1, Duration::from_secs(5));
}
