//! `vnet bench`: VM-to-VM TCP throughput (iperf3, one and four streams) and RTT (ping) in
//! the lab, over vnet TCP, QUIC, sealed TCP, sealed UDP and UDP links, kernel VXLAN and
//! tinc 1.0 in switch mode
//! (no cipher, and its default cipher) between the same namespaces, in one run, printed
//! as ratios to VXLAN and to tinc.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::lab::{self, sys, LabInfo, LabLink, LabTopology, UpArgs};

/// Options of `vnet bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Lab name used for the runs.
    #[arg(long, default_value = "bench")]
    name: String,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Pings per RTT measurement.
    #[arg(long, default_value_t = 50)]
    pings: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Skip the tinc runs (tinc is installed by tools/scripts/install-deps.sh).
    #[arg(long)]
    no_tinc: bool,
}

/// One measured path.
#[derive(Debug, Serialize)]
pub struct Measurement {
    /// What carried the traffic.
    pub path: String,
    /// iperf3 receiver throughput, one stream, Gbit/s.
    pub gbit_per_s: f64,
    /// iperf3 receiver throughput, four streams, Gbit/s.
    pub gbit_per_s_4: f64,
    /// Mean ping RTT, microseconds.
    pub rtt_us: f64,
}

/// Removes the lab when dropped.
struct Teardown<'a>(&'a str);

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        if let Err(e) = lab::down(self.0) {
            eprintln!("vnet bench: tearing the lab down failed: {e:#}");
        }
    }
}

fn in_ns(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    sys::run("ip", &all)
}

/// Starts a one-shot iperf3 server in `ns` and returns once it listens.
fn iperf_server(ns: &str) -> Result<Child> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "iperf3", "-s", "-1", "--forceflush"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start iperf3 (install it: tools/scripts/install-deps.sh)")?;
    let stdout = child.stdout.take().context("iperf3 stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("listening") => return Ok(child),
            Some(Ok(_)) => continue,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("iperf3 server in {ns} exited before listening");
            }
        }
    }
}

/// iperf3 TCP throughput from `from_ns` to `to_ip`, in Gbit/s.
pub fn iperf(from_ns: &str, to_ns: &str, to_ip: &str, seconds: u32, streams: u32) -> Result<f64> {
    let mut server = iperf_server(to_ns)?;
    let result = in_ns(
        from_ns,
        &[
            "iperf3",
            "-c",
            to_ip,
            "-t",
            &seconds.to_string(),
            "-P",
            &streams.to_string(),
            "-J",
        ],
    );
    let _ = server.kill();
    let _ = server.wait();
    let json: serde_json::Value = serde_json::from_str(&result?).context("iperf3 -J output")?;
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 reported no throughput")?;
    Ok(bps / 1e9)
}

/// Mean RTT of `count` pings, in microseconds.
pub fn ping_rtt(from_ns: &str, to_ip: &str, count: u32) -> Result<f64> {
    let out = in_ns(
        from_ns,
        &["ping", "-q", "-c", &count.to_string(), "-i", "0.02", to_ip],
    )?;
    // rtt min/avg/max/mdev = 0.047/0.061/0.102/0.012 ms
    let stats = out
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .context("ping printed no summary")?;
    let avg = stats
        .split('=')
        .nth(1)
        .and_then(|v| v.trim().split('/').nth(1))
        .context("ping summary format")?;
    Ok(avg.parse::<f64>()? * 1000.0)
}

fn measure(path: &str, info: &LabInfo, to_ip: &str, args: &BenchArgs) -> Result<Measurement> {
    let (a, b) = (&info.vms[0], &info.vms[1]);
    // Warm ARP and the lookup caches before timing.
    ping_rtt(&a.netns, to_ip, 3)?;
    let rtt_us = ping_rtt(&a.netns, to_ip, args.pings)?;
    let gbit_per_s = iperf(&a.netns, &b.netns, to_ip, args.seconds, 1)?;
    let gbit_per_s_4 = iperf(&a.netns, &b.netns, to_ip, args.seconds, 4)?;
    Ok(Measurement {
        path: path.to_string(),
        gbit_per_s,
        gbit_per_s_4,
        rtt_us,
    })
}

/// Gives each VM of a two-VM lab a VXLAN NIC (vx0, 198.19.1.x/24) whose tunnel runs
/// between their hosts' underlay addresses.
fn add_vxlan(info: &LabInfo) -> Result<String> {
    let host = |name: &str| info.hosts.iter().find(|h| h.name == name).context("unknown host");
    let (a, b) = (&info.vms[0], &info.vms[1]);
    let (ha, hb) = (host(&a.host)?, host(&b.host)?);
    for (vm, here, there, ip) in [(a, ha, hb, "198.19.1.1/24"), (b, hb, ha, "198.19.1.2/24")] {
        let (local, remote) = (here.underlay.to_string(), there.underlay.to_string());
        sys::run(
            "ip",
            &[
                "-n",
                &here.netns,
                "link",
                "add",
                "vx0",
                "type",
                "vxlan",
                "id",
                "42",
                "local",
                &local,
                "remote",
                &remote,
                "dstport",
                "4789",
                "dev",
                "ul0",
            ],
        )?;
        sys::run(
            "ip",
            &["-n", &here.netns, "link", "set", "vx0", "netns", &vm.netns],
        )?;
        sys::run("ip", &["-n", &vm.netns, "addr", "add", ip, "dev", "vx0"])?;
        sys::run("ip", &["-n", &vm.netns, "link", "set", "vx0", "up"])?;
    }
    Ok("198.19.1.2".to_string())
}

/// A running tinc 1.0 daemon, stopped (by its PID) when dropped.
struct Tincd(Child);

impl Drop for Tincd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects the two VMs of a lab with tinc 1.0 in switch mode: a tincd in each VM's
/// host namespace, its TAP `device` moved into the VM with address `subnet`.x/24.
/// `cipher` false sets Cipher and Digest to none. Returns the daemons and vm1's address.
fn add_tinc(
    info: &LabInfo,
    device: &str,
    port: u16,
    subnet: &str,
    cipher: bool,
) -> Result<(Vec<Tincd>, String)> {
    let host = |name: &str| info.hosts.iter().find(|h| h.name == name).context("unknown host");
    let (a, b) = (&info.vms[0], &info.vms[1]);
    let ends = [(a, host(&a.host)?), (b, host(&b.host)?)];
    let root = info.dir.join(device);
    for (_, h) in &ends {
        let dir = root.join(&h.name);
        std::fs::create_dir_all(dir.join("hosts")).with_context(|| format!("creating {}", dir.display()))?;
        let connect = if h.name == ends[1].1.name {
            format!("ConnectTo = {}\n", ends[0].1.name)
        } else {
            String::new()
        };
        std::fs::write(
            dir.join("tinc.conf"),
            format!(
                "Name = {}\nMode = switch\nDeviceType = tap\nInterface = {device}\nAddressFamily = ipv4\n\
                 BindToAddress = {} {port}\n{connect}",
                h.name, h.underlay
            ),
        )?;
        let ciphers = if cipher {
            ""
        } else {
            "Cipher = none\nDigest = none\n"
        };
        std::fs::write(
            dir.join("hosts").join(&h.name),
            format!("Address = {} {port}\n{ciphers}", h.underlay),
        )?;
        // Appends the public key to hosts/NAME; with stdin closed it takes the default paths.
        sys::run("tincd", &["-c", &dir.to_string_lossy(), "-K2048"])?;
    }
    // Each node needs the other's host file (address, cipher settings, public key).
    for (_, h) in &ends {
        for (_, other) in &ends {
            if other.name != h.name {
                std::fs::copy(
                    root.join(&other.name).join("hosts").join(&other.name),
                    root.join(&h.name).join("hosts").join(&other.name),
                )?;
            }
        }
    }
    let mut daemons = Vec::new();
    for (vm, h) in &ends {
        let dir = root.join(&h.name);
        let child = Command::new("ip")
            .args(["netns", "exec", &h.netns, "tincd", "-D", "-c"])
            .arg(&dir)
            .arg(format!("--pidfile={}", dir.join("pid").display()))
            .arg(format!("--logfile={}", dir.join("log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start tincd (install it: tools/scripts/install-deps.sh)")?;
        daemons.push(Tincd(child));
        let appeared = sys::poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
            sys::run("ip", &["-n", &h.netns, "link", "show", device]).is_ok()
        });
        if !appeared {
            bail!("tincd in {} did not create {device}", h.netns);
        }
        let ip = format!("{subnet}.{}/24", if vm.name == a.name { 1 } else { 2 });
        sys::run("ip", &["-n", &h.netns, "link", "set", device, "netns", &vm.netns])?;
        sys::run("ip", &["-n", &vm.netns, "addr", "add", &ip, "dev", device])?;
        sys::run("ip", &["-n", &vm.netns, "link", "set", device, "up"])?;
    }
    let to = format!("{subnet}.2");
    let reachable = sys::poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        in_ns(&a.netns, &["ping", "-c", "1", "-W", "1", &to]).is_ok()
    });
    if !reachable {
        bail!(
            "the tinc tunnel {device} does not carry traffic; see {}",
            root.display()
        );
    }
    Ok((daemons, to))
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> Result<()> {
    let mut results = Vec::new();
    let paths = [
        (LabLink::Tcp, false, "vnet tcp link"),
        (LabLink::Quic, false, "vnet quic link"),
        (LabLink::Tcp, true, "vnet tcp sealed"),
        (LabLink::Udp, true, "vnet udp sealed"),
        (LabLink::Udp, false, "vnet udp link"),
    ];
    for (link, encrypt, label) in paths {
        let mut opts = UpArgs::new(&args.name, 3, 2);
        opts.link = link;
        opts.encrypt = encrypt;
        opts.topology = LabTopology::Full;
        let info = lab::up(&opts)?;
        let _teardown = Teardown(&args.name);
        let vm1_ip = info.vms[1].ip.to_string();
        results.push(measure(label, &info, &vm1_ip, &args)?);
        // The last lab (plain UDP) hosts the references.
        if link != LabLink::Udp || encrypt {
            continue;
        }
        let vx_ip = add_vxlan(&info)?;
        results.push(measure("kernel vxlan", &info, &vx_ip, &args)?);
        if !args.no_tinc {
            let tincs = [
                ("tinc (no cipher)", "tnc0", 655, "198.19.2", false),
                ("tinc (default)", "tnc1", 656, "198.19.3", true),
            ];
            for (label, device, port, subnet, cipher) in tincs {
                let (_daemons, ip) = add_tinc(&info, device, port, subnet, cipher)?;
                results.push(measure(label, &info, &ip, &args)?);
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    print_table(&results, &args)
}

fn print_table(results: &[Measurement], args: &BenchArgs) -> Result<()> {
    let find = |path: &str| results.iter().find(|m| m.path == path);
    let vxlan = find("kernel vxlan").context("no VXLAN figure")?;
    let tinc = find("tinc (no cipher)").map(|t| t.gbit_per_s);
    println!(
        "VM -> VM, iperf3 TCP for {} s (1 and 4 streams), {} pings; 3 hosts, direct link",
        args.seconds, args.pings
    );
    println!(
        "{:<17} {:>8} {:>8} {:>8} {:>10} {:>10} {:>8} {:>11}",
        "path", "Gbit/s", "x vxlan", "x tinc", "4s Gbit/s", "4s x vxlan", "RTT us", "RTT - vxlan"
    );
    for m in results {
        let x_tinc = tinc.map_or("-".to_string(), |t| format!("{:.2}", m.gbit_per_s / t));
        println!(
            "{:<17} {:>8.2} {:>8.3} {:>8} {:>10.2} {:>10.3} {:>8.1} {:>+11.1}",
            m.path,
            m.gbit_per_s,
            m.gbit_per_s / vxlan.gbit_per_s,
            x_tinc,
            m.gbit_per_s_4,
            m.gbit_per_s_4 / vxlan.gbit_per_s_4,
            m.rtt_us,
            m.rtt_us - vxlan.rtt_us
        );
    }
    Ok(())
}
