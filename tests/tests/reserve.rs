//! Reservations in the lab (`vnet lab reserve`): an overlay link's bandwidth guarantee
//! holds against a flood competing for the same shaped uplink, and a VM's CPU
//! reservation caps a busy loop at its share. Each test also measures the same without
//! the reservation, to show it is the reservation that makes the difference.

use std::fs;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use vnet_e2e::{root_or_skip, vnet, wait_for, Lab, PortsOf, Proc, IPERF_PORT};

/// `vnet lab reservations --json`, the parts the tests read.
#[derive(Debug, Deserialize)]
struct Reservations {
    links: Vec<LinkInForce>,
    cpu: Vec<Cpu>,
    cgroups: Option<String>,
    vms: Vec<VmCgroup>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct LinkInForce {
    from: String,
    to: String,
    mbps: f64,
    enforced_at: Vec<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Cpu {
    vm: String,
    period_ms: f64,
    slice_ms: f64,
}

#[derive(Debug, Deserialize)]
struct VmCgroup {
    dirs: Vec<PathBuf>,
}

/// `vnet lab reserve --name LAB ARGS --json`: what is in force afterwards.
fn reserve(lab: &str, args: &[&str]) -> Result<Reservations, String> {
    let mut all = vec!["lab", "reserve", "--name", lab, "--json"];
    all.extend_from_slice(args);
    let out = vnet(&all)?;
    Ok(serde_json::from_str(&out).unwrap_or_else(|e| panic!("vnet lab reserve --json: {e}: {out}")))
}

fn reservations(lab: &str) -> Reservations {
    let out = vnet(&["lab", "reservations", "--name", lab, "--json"]).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("vnet lab reservations --json: {e}: {out}"))
}

/// Bytes a frame of a UDP link takes on the underlay besides itself: the link header
/// (16), UDP (8), IPv4 (20) and Ethernet (14), which the shaper counts.
const UDP_LINK_OVERHEAD: u64 = 16 + 8 + 20 + 14;

/// What one contention run measured, Mbit/s.
#[derive(Debug)]
struct Contention {
    /// vm0's flow on the underlay, over the overlay link h1 -> h3, during a window while
    /// both transfers ran: what the reservation guarantees.
    underlay: f64,
    /// The same in overlay frames.
    frames: f64,
    /// vm0's flow as iperf3 saw it (TCP payload, whole run).
    goodput: f64,
    /// The bulk transfer as received (whole run).
    bulk: f64,
}

/// Runs a bulk transfer vm1 -> vm2 (4 UDP streams of 40 Mbit/s over link h2-h3, which
/// do not back off) and, once it flows, a TCP transfer vm0 -> vm2 (link h1-h3): both
/// cross the switch port toward h3, shaped at 100 Mbit/s.
fn contend(lab: &Lab) -> Contention {
    let into_h3 = |link: &str| lab.stats(3).link_counters(link);
    let bulk_args = ["-u", "-b", "40M", "-P", "4", "-l", "1300"];
    let mut bulk = lab.iperf_start_with(1, 2, 9, IPERF_PORT + 1, &bulk_args);
    let start = into_h3("h2-h3").rx_bytes;
    wait_for(Duration::from_secs(5), "the bulk transfer to flow", || {
        into_h3("h2-h3").rx_bytes > start + 2_000_000
    });
    let mut flow = lab.iperf_start_with(0, 2, 6, IPERF_PORT, &[]);
    let start = into_h3("h1-h3").rx_bytes;
    wait_for(Duration::from_secs(5), "vm0's transfer to flow", || {
        into_h3("h1-h3").rx_bytes > start + 200_000
    });
    // The measurement window: the link's counters over the next 3 s, both transfers on.
    let (t0, c0) = (Instant::now(), into_h3("h1-h3"));
    std::thread::sleep(Duration::from_secs(3));
    let (c1, t1) = (into_h3("h1-h3"), Instant::now());
    assert!(
        flow.running() && bulk.running(),
        "a transfer ended inside the window; the sample proves nothing"
    );
    let mbps = |bytes: u64| bytes as f64 * 8.0 / (t1 - t0).as_secs_f64() / 1e6;
    let (bytes, frames) = (c1.rx_bytes - c0.rx_bytes, c1.rx_frames - c0.rx_frames);
    Contention {
        underlay: mbps(bytes + frames * UDP_LINK_OVERHEAD),
        frames: mbps(bytes),
        goodput: flow.finish().mbps(),
        bulk: bulk.finish().mbps(),
    }
}

/// A 60 Mbit/s reservation on the overlay link h1 -> h3 keeps that link's flow at 60
/// Mbit/s while a UDP flood from h2 competes for h3's 100 Mbit/s uplink; without it the
/// flow gets a far smaller share. Over-subscription and links between unshaped hosts are
/// refused, leaving the reservations in force as they were.
#[test]
fn link_reservation_holds_against_competing_bulk_traffic() {
    if !root_or_skip("link_reservation_holds_against_competing_bulk_traffic") {
        return;
    }
    const RESERVED_MBPS: f64 = 60.0;
    // vm0 on h1, vm1 on h2, vm2 on h3 (shaped); direct UDP links between every pair, so
    // the transfers, not the links' own congestion control, compete at the shaper.
    let lab = Lab::up(
        "rs1",
        &[
            "--hosts",
            "4",
            "--vms",
            "3",
            "--link",
            "udp",
            "--topology",
            "full",
            "--uplink",
            "h3=100mbit",
        ],
    );
    assert_eq!(
        (
            lab.vm(0).host.as_str(),
            lab.vm(1).host.as_str(),
            lab.vm(2).host.as_str()
        ),
        ("h1", "h2", "h3")
    );
    // The VMs' NICs have vnetd's default MTU (underlay minus link overhead), so UDP links
    // carry every frame in one unfragmented datagram: a shaper dropping one fragment of a
    // pair would leave the other in h3's reassembly buffer, which a flood fills until it
    // drops every fragmented datagram, reserved or not.
    lab.wait_ping(0, 2, Duration::from_secs(5));
    lab.wait_ping(1, 2, Duration::from_secs(5));
    assert!(reservations("rs1").links.is_empty());

    let unreserved = contend(&lab);

    let r = reserve("rs1", &["--link", "h1:h3=60mbit"]).unwrap();
    assert_eq!(
        r.links,
        [LinkInForce {
            from: "h1".into(),
            to: "h3".into(),
            mbps: RESERVED_MBPS,
            // h1 is not shaped: the switch port toward h3 holds the guarantee.
            enforced_at: vec!["sw p3".into()],
        }]
    );
    // More than h3's uplink can guarantee, and a link with no shaped end: refused, and
    // what is in force stays.
    let e = reserve("rs1", &["--link", "h2:h3=50mbit"]).unwrap_err();
    assert!(e.contains("more than the 99 Mbit/s"), "{e}");
    let e = reserve("rs1", &["--link", "h1:h2=1mbit"]).unwrap_err();
    assert!(e.contains("neither h1 nor h2 has a shaped uplink"), "{e}");
    assert_eq!(reservations("rs1").links, r.links);

    let reserved = contend(&lab);
    for (what, c) in [("unreserved", &unreserved), ("reserved 60 Mbit/s", &reserved)] {
        eprintln!(
            "h1 -> h3 against a 160 Mbit/s UDP flood h2 -> h3 into a 100 Mbit/s uplink, {what}: \
             {:.1} Mbit/s on the underlay ({:.1} in frames, {:.1} TCP goodput), flood received {:.1}",
            c.underlay, c.frames, c.goodput, c.bulk
        );
    }
    assert!(
        reserved.underlay >= 0.9 * RESERVED_MBPS,
        "the reserved link carried {:.1} Mbit/s, below 90 % of {RESERVED_MBPS}",
        reserved.underlay
    );
    assert!(
        unreserved.underlay < 0.5 * reserved.underlay,
        "without the reservation the link still carried {:.1} Mbit/s (reserved: {:.1}): \
         the test does not show the reservation's effect",
        unreserved.underlay,
        reserved.underlay
    );

    let r = reserve("rs1", &["--clear"]).unwrap();
    assert!(r.links.is_empty() && r.cpu.is_empty(), "{r:?}");
}

/// CPU time VM processes used, µs, from the cgroup accounting files in `dirs`
/// (`cpuacct.usage` in ns on cgroup v1, `usage_usec` in `cpu.stat` on v2).
fn usage_us(dirs: &[PathBuf]) -> u64 {
    for dir in dirs {
        if let Ok(ns) = fs::read_to_string(dir.join("cpuacct.usage")) {
            return ns.trim().parse::<u64>().expect("cpuacct.usage") / 1000;
        }
        if let Ok(stat) = fs::read_to_string(dir.join("cpu.stat")) {
            if let Some(us) = stat.lines().find_map(|l| l.strip_prefix("usage_usec ")) {
                return us.trim().parse().expect("usage_usec");
            }
        }
    }
    panic!("no CPU accounting file in {dirs:?}");
}

/// The share of one core the VM's processes used over about a second.
fn cpu_share(dirs: &[PathBuf]) -> f64 {
    let (t0, u0) = (Instant::now(), usage_us(dirs));
    let mut last = (t0, u0);
    wait_for(Duration::from_secs(5), "a second of CPU accounting", || {
        last = (Instant::now(), usage_us(dirs));
        last.0 - t0 >= Duration::from_secs(1)
    });
    (last.1 - u0) as f64 / (last.0 - t0).as_micros() as f64
}

/// `vnet lab exec` runs in the VM's cgroup; a CPU reservation of 25 ms every 100 ms
/// holds a busy loop (started without the cgroup, moved in by the reservation) to a
/// quarter of a core, and releasing it lets the loop run free.
#[test]
fn cpu_reservation_caps_a_busy_vm() {
    if !root_or_skip("cpu_reservation_caps_a_busy_vm") {
        return;
    }
    let lab = Lab::up("rs2", &["--hosts", "2", "--vms", "1"]);
    let r = reservations("rs2");
    assert!(
        r.cgroups.is_some(),
        "no cgroup cpu controller on this machine: {r:?}"
    );
    let dirs = r.vms[0].dirs.clone();
    assert!(
        dirs.iter().any(|d| d.ends_with("vnet-lab/rs2/vm0")),
        "vm0 has no cgroup: {dirs:?}"
    );
    let own = vnet(&["lab", "exec", "rs2", "vm0", "--", "cat", "/proc/self/cgroup"]).unwrap();
    assert!(
        own.contains("/vnet-lab/rs2/vm0"),
        "vnet lab exec ran outside vm0's cgroup: {own}"
    );

    let busy = Proc(
        lab.in_vm(0, "sh")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .expect("starting a busy loop"),
    );
    let r = reserve("rs2", &["--cpu", "vm0=100:25"]).unwrap();
    assert_eq!(
        r.cpu,
        [Cpu {
            vm: "vm0".into(),
            period_ms: 100.0,
            slice_ms: 25.0
        }]
    );
    let cgroup = fs::read_to_string(format!("/proc/{}/cgroup", busy.pid())).unwrap();
    assert!(
        cgroup.contains("/vnet-lab/rs2/vm0"),
        "the reservation did not move the busy loop into vm0's cgroup: {cgroup}"
    );
    let capped = cpu_share(&dirs);

    let r = reserve("rs2", &["--cpu", "vm0=0"]).unwrap();
    assert!(r.cpu.is_empty(), "{r:?}");
    let free = cpu_share(&dirs);
    eprintln!(
        "busy loop in vm0: {:.0} % of a core with 25 ms / 100 ms reserved, {:.0} % without",
        capped * 100.0,
        free * 100.0
    );
    assert!(
        (0.15..=0.35).contains(&capped),
        "with 25 ms of every 100 ms the loop used {:.0} % of a core",
        capped * 100.0
    );
    assert!(
        free >= capped + 0.15,
        "without the reservation the loop used only {:.0} % of a core (with: {:.0} %)",
        free * 100.0,
        capped * 100.0
    );
}
