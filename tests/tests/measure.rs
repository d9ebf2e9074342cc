//! Network measurement end to end: every link's round-trip time from keepalive stamps
//! (TCP, UDP) or QUIC's estimate, throughput from the link counters, and bounded active
//! bandwidth probes between daemons (`vnet measure`, `vnet measure --probe`).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use vnet_control::proto::{LinkState, MeasureReport, ProbeResult};
use vnet_e2e::{bin, root_or_skip, wait_for, Lab, Proc};

/// The rate `--uplink h2=RATE` shapes h2 to, Mbit/s.
const SHAPED_MBPS: f64 = 40.0;
/// How long links take to get their first round-trip sample (a keepalive each way).
const RTT_TIMEOUT: Duration = Duration::from_secs(5);

/// `vnet measure --json` of host `i`.
fn measure(lab: &Lab, i: usize) -> MeasureReport {
    let out = lab.ctl_ok(i, &["measure", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("h{i}: measure --json: {e}: {out}"))
}

/// Host `i`'s link listen address.
fn listen(lab: &Lab, i: usize) -> String {
    format!("{}:7400", lab.host(i).underlay)
}

/// `vnet measure --probe ADDR [EXTRA] --json` from host `i`: the result, or the CLI's error.
fn probe(lab: &Lab, i: usize, to: &str, extra: &[&str]) -> Result<ProbeResult, String> {
    let mut args = vec!["measure", "--probe", to, "--json"];
    args.extend_from_slice(extra);
    let out = lab.ctl(i, &args)?;
    Ok(serde_json::from_str(&out).unwrap_or_else(|e| panic!("h{i}: probe --json: {e}: {out}")))
}

/// Like [`probe`], but the peer may still be in its minimum interval after an earlier
/// probe: retried while it says so.
fn probe_ok(lab: &Lab, i: usize, to: &str, extra: &[&str]) -> ProbeResult {
    let mut result = None;
    wait_for(
        Duration::from_secs(5),
        &format!("h{i} to probe {to}"),
        || match probe(lab, i, to, extra) {
            Ok(r) => {
                result = Some(r);
                true
            }
            Err(e) if e.contains("must be") && e.contains("apart") => false,
            Err(e) => panic!("h{i}: probe {to}: {e}"),
        },
    );
    result.expect("probe result")
}

/// Waits until every link of every host is up and has a round-trip sample; checks the
/// figures are plausible for namespaces on one machine.
fn every_link_gets_an_rtt(lab: &Lab, hosts: usize) {
    for i in 0..hosts {
        let mut last = None;
        wait_for(
            RTT_TIMEOUT,
            &format!("every link of h{i} to measure its RTT"),
            || {
                let m = measure(lab, i);
                let done = !m.links.is_empty()
                    && m.links
                        .iter()
                        .all(|l| l.state == LinkState::Up && l.rtt_samples > 0);
                last = Some(m);
                done
            },
        );
        let m = last.expect("measured");
        assert_eq!(m.node, format!("h{i}"));
        for l in &m.links {
            let (srtt, min) = (
                l.srtt_us.expect("srtt after a sample"),
                l.min_rtt_us.expect("min after a sample"),
            );
            eprintln!(
                "h{i} {} ({}) to {:?}: srtt {srtt} us, rttvar {:?} us, min {min} us, {} samples",
                l.name, l.proto, l.peer_node, l.rttvar_us, l.rtt_samples
            );
            assert!(
                srtt > 0 && srtt < 50_000,
                "h{i} {}: srtt {srtt} us is not a same-machine RTT",
                l.name
            );
            assert!(min > 0 && min < 50_000, "h{i} {}: min {min} us", l.name);
            assert!(l.rttvar_us.is_some(), "h{i} {}: no rttvar", l.name);
            assert!(l.peer_node.is_some(), "h{i} {}: no peer node", l.name);
        }
    }
}

/// TCP links (one of them shaped) measure their round-trip time from keepalives at both
/// ends, and their throughput follows the traffic they carry.
#[test]
fn tcp_links_measure_rtt_and_throughput() {
    if !root_or_skip("tcp_links_measure_rtt_and_throughput") {
        return;
    }
    let lab = Lab::up("ms1", &["--hosts", "3", "--vms", "2", "--uplink", "h2=40mbit"]);
    every_link_gets_an_rtt(&lab, 3);

    // vm0 (h1) -> vm1 (h2) crosses the proxy: h0 sends toward h2 at the shaped rate.
    let mut run = lab.iperf_start(0, 1, 4);
    let mut seen = 0;
    wait_for(
        Duration::from_secs(4),
        "the proxy's h0-h2 link to measure the transfer",
        || {
            let m = measure(&lab, 0);
            let l = m.links.iter().find(|l| l.name == "h0-h2").expect("link h0-h2");
            seen = l.tx_bps;
            seen as f64 > 0.5 * SHAPED_MBPS * 1e6
        },
    );
    eprintln!("h0 -> h2 during iperf3: {:.1} Mbit/s", seen as f64 / 1e6);
    // Loose: frames queue ahead of the shaper in bursts, but a unit slip (bytes for
    // bits) would be 8x.
    assert!(
        (seen as f64) < 1.6 * SHAPED_MBPS * 1e6,
        "h0-h2 tx {seen} bit/s is far above the shaped {SHAPED_MBPS} Mbit/s"
    );
    let h1 = measure(&lab, 1);
    let up = h1.links.iter().find(|l| l.name == "h0-h1").expect("link h0-h1");
    assert!(up.tx_bps > 1_000_000, "h1's uplink measured no transfer: {up:?}");
    assert!(run.running(), "iperf3 ended before the measurement");
    let r = run.finish();
    eprintln!("iperf3 vm0 -> vm1: {:.1} Mbit/s", r.mbps());
}

/// UDP links measure from keepalive stamps too, and QUIC links take QUIC's estimate.
#[test]
fn udp_and_quic_links_measure_rtt() {
    if !root_or_skip("udp_and_quic_links_measure_rtt") {
        return;
    }
    for (name, link) in [("ms3", "udp"), ("ms4", "quic")] {
        let lab = Lab::up(name, &["--hosts", "3", "--vms", "1", "--link", link]);
        every_link_gets_an_rtt(&lab, 3);
    }
}

/// Probes: the rate toward a shaped host is the shaped rate and toward an unshaped one
/// far more; limits are clamped; one probe at a time per daemon and role; a daemon with
/// another key is refused; a probe creates no link.
#[test]
fn probes_measure_available_bandwidth_within_limits() {
    if !root_or_skip("probes_measure_available_bandwidth_within_limits") {
        return;
    }
    let mut lab = Lab::up("ms2", &["--hosts", "3", "--vms", "1", "--uplink", "h2=40mbit"]);
    let links_before: Vec<Vec<String>> = (0..3)
        .map(|i| {
            lab.links(i)
                .into_iter()
                .map(|l| l.spec.name.into_string())
                .collect()
        })
        .collect();

    // (b) h1 -> h2 crosses h2's shaped uplink; h1 -> h0 crosses none.
    let shaped = probe_ok(&lab, 1, &listen(&lab, 2), &[]);
    eprintln!("probe h1 -> h2 (shaped {SHAPED_MBPS} Mbit/s): {shaped:?}");
    assert_eq!(shaped.peer_node, "h2");
    assert!(
        (shaped.mbps - SHAPED_MBPS).abs() <= 0.25 * SHAPED_MBPS,
        "probe toward the {SHAPED_MBPS} Mbit/s host measured {:.1} Mbit/s",
        shaped.mbps
    );
    assert!(
        shaped.rtt_us > 0 && shaped.rtt_us < 50_000,
        "rtt {} us",
        shaped.rtt_us
    );
    assert_eq!((shaped.max_bytes, shaped.max_ms), (8 << 20, 1000), "defaults");
    assert!(shaped.bytes <= shaped.sent && shaped.bytes > 1 << 20);
    let open = probe_ok(&lab, 1, &listen(&lab, 0), &[]);
    eprintln!("probe h1 -> h0 (unshaped): {open:?}");
    assert_eq!(open.peer_node, "h0");
    assert!(
        open.mbps >= 3.0 * shaped.mbps,
        "unshaped probe {:.1} Mbit/s is not clearly above the shaped {:.1}",
        open.mbps,
        shaped.mbps
    );

    // (c) Limits over the caps are clamped, and the answer says so.
    let clamped = probe_ok(
        &lab,
        1,
        &listen(&lab, 0),
        &["--bytes", "1000000000000", "--ms", "60000"],
    );
    assert_eq!((clamped.max_bytes, clamped.max_ms), (256 << 20, 5000));
    assert!(clamped.sent <= 256 << 20);

    // (c) While h1 probes h2 for a few seconds, h1 sends no second probe and h2 answers
    // no other prober.
    let socket = lab.host(1).control.clone();
    let h2 = listen(&lab, 2);
    let start_long_probe = || {
        Proc(
            Command::new(bin("vnet"))
                .arg("-c")
                .arg(&socket)
                .args([
                    "measure",
                    "--probe",
                    &h2,
                    "--bytes",
                    "268435456",
                    "--ms",
                    "3000",
                    "--json",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting the long probe"),
        )
    };
    let mut long = start_long_probe();
    let mut refusal = String::new();
    wait_for(Duration::from_secs(3), "h1 to refuse a second probe", || {
        if long.exited() {
            // h2 answered a probe moments ago and refuses the next one for coming
            // sooner than its minimum interval, or the long probe reached h1 while h1 ran
            // one of the short probes below: start it again.
            let mut err = String::new();
            let _ = long.0.stderr.take().map(|mut e| e.read_to_string(&mut err));
            assert!(
                err.contains("probes must be") || err.contains("this daemon: another probe is running"),
                "the long probe failed: {err}"
            );
            long = start_long_probe();
            return false;
        }
        match probe(&lab, 1, &listen(&lab, 0), &[]) {
            // Until the long probe runs, h1's probes reach h0, which then refuses the
            // next one for coming sooner than its minimum interval: not the refusal
            // wanted.
            Err(e) if e.contains("probes must be") => false,
            Err(e) => {
                refusal = e;
                true
            }
            Ok(_) => false,
        }
    });
    let (mut stdout, mut stderr) = (
        long.0.stdout.take().expect("probe stdout"),
        long.0.stderr.take().expect("probe stderr"),
    );
    assert!(
        refusal.contains("this daemon: another probe is running"),
        "unexpected refusal: {refusal}"
    );
    let elsewhere = probe(&lab, 0, &h2, &[]).expect_err("h2 answered two probes at once");
    assert!(
        elsewhere.contains("the peer refused the probe: another probe is running"),
        "unexpected refusal: {elsewhere}"
    );
    // Its output is a few hundred bytes: the pipes hold it until the end.
    wait_for(Duration::from_secs(15), "the long probe to end", || long.exited());
    let (mut out, mut err) = (String::new(), String::new());
    stdout.read_to_string(&mut out).expect("probe stdout");
    stderr.read_to_string(&mut err).expect("probe stderr");
    let status = long.0.wait().expect("the long probe's status");
    assert!(status.success(), "the long probe failed: {err}");
    let long_result: ProbeResult = serde_json::from_str(&out).expect("long probe JSON");
    eprintln!("probe h1 -> h2 for 3 s: {long_result:?}");
    assert_eq!(long_result.max_ms, 3000);
    assert!(
        long_result.elapsed_us >= 2_500_000,
        "a 3 s probe was timed over {} us",
        long_result.elapsed_us
    );
    assert!((long_result.mbps - SHAPED_MBPS).abs() <= 0.25 * SHAPED_MBPS);

    // (d) A daemon with another network key neither answers nor sends probes.
    let rogue = lab.spawn_rogue("");
    let to_rogue = probe(&lab, 1, &rogue.listen, &[]).expect_err("a probe to a stranger succeeded");
    assert!(to_rogue.contains("authentication failed"), "{to_rogue}");
    let from_rogue = vnet_e2e::vnet(&[
        "-c",
        rogue.control.to_str().expect("utf-8 path"),
        "measure",
        "--probe",
        &h2,
    ])
    .expect_err("a stranger probed h2");
    assert!(from_rogue.contains("authentication failed"), "{from_rogue}");

    // A probe leaves no link behind on either end.
    for (i, before) in links_before.iter().enumerate() {
        let after: Vec<String> = lab
            .links(i)
            .into_iter()
            .map(|l| l.spec.name.into_string())
            .collect();
        assert_eq!(&after, before, "h{i}'s links changed");
        assert!(lab.stats(i).links.iter().all(|(n, _)| !n.starts_with('.')));
    }
}
