//! `vnet bench`, the benchmark of issue #6 in one run: VM-to-VM TCP throughput (iperf3,
//! one and four streams) and ping RTT in the lab over the selected vnet paths (TCP, QUIC,
//! sealed TCP, sealed UDP, UDP links; one lab each), and over kernel VXLAN and tinc 1.0 in
//! switch mode (no cipher, and its default cipher) between the same namespaces of the last
//! lab; then the rule-table lookup benchmark (`lookup`). Prints each path as ratios to
//! VXLAN and to tinc, and every target of the issue with PASS or MISS (`report`); a missed
//! target is a result, not a failure.

pub mod lookup;
mod reference;
pub mod report;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;

use report::{Measurement, PathKind, Report, Rtt, Setup};
use vnet_lab::{self as lab, sys, LabInfo, LabLink, LabTopology, UpArgs};

/// Interval between pings, ms: fixed, so RTT figures of different runs compare.
pub const PING_INTERVAL_MS: u32 = 20;

/// Options of `vnet bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Lab name used for the runs (one lab per vnet path, one after the other).
    #[arg(long, default_value = "bench")]
    name: String,
    /// The vnet paths to measure, in this order whatever the order given; kernel VXLAN and
    /// tinc are always measured too, in the last path's lab.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "PATH,PATH..")]
    paths: Vec<VnetPath>,
    /// Seconds per iperf3 run (each path runs one stream, then four).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    seconds: u32,
    /// Pings per RTT figure, sent 20 ms apart (after 3 warm-up pings); RTT is reported as
    /// mean and median.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pings: u32,
    /// Print one JSON object (setup, paths with ratios, lookup figures, targets with pass
    /// flags) instead of tables.
    #[arg(long)]
    json: bool,
    /// Skip the tinc runs and the targets relative to tinc (tinc is installed by
    /// tools/scripts/install-deps.sh).
    #[arg(long)]
    no_tinc: bool,
    /// Run only the rule-table lookup benchmark (10 001 rules, one core; no lab, no root).
    #[arg(long, conflicts_with_all = ["name", "paths", "seconds", "pings", "no_tinc"])]
    lookup_only: bool,
}

/// A vnet path `vnet bench` can measure: a lab of three hosts whose VMs talk over a direct
/// link of this kind.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VnetPath {
    /// TCP link (TSO super-frames whole).
    Tcp,
    /// QUIC link (datagrams; always encrypted by QUIC's TLS 1.3).
    Quic,
    /// TCP link, encrypted.
    TcpSealed,
    /// UDP link, encrypted.
    UdpSealed,
    /// UDP link.
    Udp,
}

impl VnetPath {
    fn link(self) -> LabLink {
        match self {
            VnetPath::Tcp | VnetPath::TcpSealed => LabLink::Tcp,
            VnetPath::Quic => LabLink::Quic,
            VnetPath::Udp | VnetPath::UdpSealed => LabLink::Udp,
        }
    }

    /// Whether the lab seals its links (vnet's own AEAD on TCP and UDP links).
    fn sealed(self) -> bool {
        matches!(self, VnetPath::TcpSealed | VnetPath::UdpSealed)
    }

    /// Whether its traffic is encrypted: sealed links, and QUIC links (TLS 1.3, always).
    fn encrypted(self) -> bool {
        self.sealed() || self == VnetPath::Quic
    }

    /// The name of its row.
    fn label(self) -> &'static str {
        match self {
            VnetPath::Tcp => "vnet tcp link",
            VnetPath::Quic => "vnet quic link",
            VnetPath::TcpSealed => "vnet tcp sealed",
            VnetPath::UdpSealed => "vnet udp sealed",
            VnetPath::Udp => "vnet udp link",
        }
    }

    /// Its `--paths` name.
    fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self).map_or_else(String::new, |v| v.get_name().to_string())
    }
}

/// The paths to run, in the fixed order (plain UDP last, so it hosts the references when
/// selected, as it always did), each once; all of them when none is given.
fn selected(paths: &[VnetPath]) -> Vec<VnetPath> {
    let mut paths = if paths.is_empty() {
        <VnetPath as clap::ValueEnum>::value_variants().to_vec()
    } else {
        paths.to_vec()
    };
    paths.sort();
    paths.dedup();
    paths
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

/// iperf3 TCP throughput from `from_ns` to `to_ip` (in `to_ns`), in Gbit/s.
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

/// RTT of `count` pings from `from_ns` to `to_ip`, [`PING_INTERVAL_MS`] apart.
pub fn ping_rtt(from_ns: &str, to_ip: &str, count: u32) -> Result<Rtt> {
    let interval = format!("{}", f64::from(PING_INTERVAL_MS) / 1000.0);
    let out = in_ns(
        from_ns,
        &["ping", "-n", "-c", &count.to_string(), "-i", &interval, to_ip],
    )?;
    parse_ping(&out).with_context(|| format!("ping {to_ip} printed:\n{out}"))
}

/// Mean and minimum from ping's summary, median from its replies.
fn parse_ping(out: &str) -> Result<Rtt> {
    // rtt min/avg/max/mdev = 0.047/0.061/0.102/0.012 ms
    let summary = out
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .context("ping printed no summary")?;
    let figures: Vec<f64> = summary
        .split('=')
        .nth(1)
        .context("ping summary format")?
        .trim()
        .trim_end_matches("ms")
        .trim()
        .split('/')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("ping summary format")?;
    let (min, mean) = match figures[..] {
        [min, mean, ..] => (min, mean),
        _ => bail!("ping summary format"),
    };
    // 64 bytes from 198.19.1.2: icmp_seq=1 ttl=64 time=0.061 ms
    let mut replies: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("time=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    replies.sort_by(f64::total_cmp);
    let median = match replies.len() {
        0 => bail!("ping printed no replies"),
        n if n % 2 == 1 => replies[n / 2],
        n => (replies[n / 2 - 1] + replies[n / 2]) / 2.0,
    };
    Ok(Rtt {
        mean_us: mean * 1000.0,
        median_us: median * 1000.0,
        min_us: min * 1000.0,
    })
}

/// Measures one path between the lab's two VMs, reaching vm1 at `to_ip`.
fn measure(
    path: &str,
    kind: PathKind,
    encrypted: bool,
    info: &LabInfo,
    to_ip: &str,
    args: &BenchArgs,
) -> Result<Measurement> {
    eprintln!("vnet bench: measuring {path}");
    let (a, b) = (&info.vms[0], &info.vms[1]);
    // Warm ARP and the lookup caches before timing.
    ping_rtt(&a.netns, to_ip, 3)?;
    let rtt = ping_rtt(&a.netns, to_ip, args.pings)?;
    let gbit_per_s = iperf(&a.netns, &b.netns, to_ip, args.seconds, 1)?;
    let gbit_per_s_4 = iperf(&a.netns, &b.netns, to_ip, args.seconds, 4)?;
    Ok(Measurement {
        path: path.to_string(),
        kind,
        encrypted,
        gbit_per_s,
        gbit_per_s_4,
        rtt,
    })
}

/// Kernel VXLAN, then (unless `--no-tinc`) tinc without and with its cipher, between the
/// VMs of a lab that is up.
fn measure_references(info: &LabInfo, args: &BenchArgs) -> Result<Vec<Measurement>> {
    let vx_ip = reference::add_vxlan(info).context("setting up kernel VXLAN")?;
    let mut out = vec![measure(
        "kernel vxlan",
        PathKind::Vxlan,
        false,
        info,
        &vx_ip,
        args,
    )?];
    if !args.no_tinc {
        let tincs = [
            (
                "tinc (no cipher)",
                PathKind::TincPlain,
                "tnc0",
                655,
                "198.19.2",
                false,
            ),
            (
                "tinc (default)",
                PathKind::TincCipher,
                "tnc1",
                656,
                "198.19.3",
                true,
            ),
        ];
        for (label, kind, device, port, subnet, cipher) in tincs {
            let (_daemons, ip) = reference::add_tinc(info, device, port, subnet, cipher)
                .with_context(|| format!("setting up {label}"))?;
            out.push(measure(label, kind, cipher, info, &ip, args)?);
        }
    }
    Ok(out)
}

/// One lab per selected path (3 hosts, full topology, vm0 on h1 and vm1 on h2), the
/// references in the last.
fn measure_paths(args: &BenchArgs, paths: &[VnetPath]) -> Result<Vec<Measurement>> {
    let mut results = Vec::new();
    for (i, &path) in paths.iter().enumerate() {
        let mut opts = UpArgs::new(&args.name, 3, 2);
        opts.link = path.link();
        opts.encrypt = path.sealed();
        opts.topology = LabTopology::Full;
        let info = lab::up(&opts).with_context(|| format!("lab for {}", path.label()))?;
        let _teardown = Teardown(&args.name);
        let vm1_ip = info.vms[1].ip.to_string();
        results.push(measure(
            path.label(),
            PathKind::Vnet,
            path.encrypted(),
            &info,
            &vm1_ip,
            args,
        )?);
        if i + 1 == paths.len() {
            results.extend(measure_references(&info, args)?);
        }
    }
    Ok(results)
}

/// Runs the benchmark: the lookup benchmark first (on a quiet machine), then, unless
/// `--lookup-only`, the paths; prints the report. Missed targets do not make it fail.
pub fn run(args: BenchArgs) -> Result<()> {
    let lookup = lookup::measure().context("rule-table lookup benchmark")?;
    let (setup, measurements) = if args.lookup_only {
        (None, Vec::new())
    } else {
        let paths = selected(&args.paths);
        let last = paths.last().context("no vnet path selected")?;
        let setup = Setup {
            seconds: args.seconds,
            pings: args.pings,
            ping_interval_ms: PING_INTERVAL_MS,
            selected: paths.iter().map(|p| p.name()).collect(),
            references_in: last.name(),
            tinc: !args.no_tinc,
        };
        (Some(setup), measure_paths(&args, &paths)?)
    };
    let report = Report::new(setup, measurements, lookup)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report::render(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn paths_run_in_fixed_order_each_once_plain_udp_last() {
        let a = parse(&["--paths", "udp,tcp-sealed,tcp,udp"]).unwrap();
        assert_eq!(
            selected(&a.paths),
            [VnetPath::Tcp, VnetPath::TcpSealed, VnetPath::Udp]
        );
        let all = selected(&parse(&[]).unwrap().paths);
        assert_eq!(all.len(), 5);
        assert_eq!(all.last(), Some(&VnetPath::Udp));
        let names: Vec<String> = all.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["tcp", "quic", "tcp-sealed", "udp-sealed", "udp"]);
        // Without plain UDP the last selected lab hosts the references.
        let a = parse(&["--paths", "quic,tcp"]).unwrap();
        assert_eq!(selected(&a.paths).last(), Some(&VnetPath::Quic));
    }

    #[test]
    fn quic_counts_as_encrypted_without_sealing_the_lab() {
        let encrypted: Vec<VnetPath> = selected(&[]).into_iter().filter(|p| p.encrypted()).collect();
        assert_eq!(
            encrypted,
            [VnetPath::Quic, VnetPath::TcpSealed, VnetPath::UdpSealed]
        );
        assert!(!VnetPath::Quic.sealed() && VnetPath::UdpSealed.sealed());
    }

    #[test]
    fn bad_arguments_are_refused_clearly() {
        let e = parse(&["--paths", "tcp,sctp"]).unwrap_err().to_string();
        assert!(e.contains("sctp") && e.contains("tcp-sealed"), "{e}");
        assert!(parse(&["--pings", "0"]).is_err(), "ping -c 0 would never end");
        assert!(parse(&["--seconds", "0"]).is_err());
        let e = parse(&["--lookup-only", "--paths", "tcp"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--paths"), "{e}");
        assert!(parse(&["--lookup-only", "--json"]).unwrap().lookup_only);
    }

    #[test]
    fn ping_output_gives_mean_median_min() {
        let out = "PING 198.19.1.2 (198.19.1.2) 56(84) bytes of data.\n\
                   64 bytes from 198.19.1.2: icmp_seq=1 ttl=64 time=0.100 ms\n\
                   64 bytes from 198.19.1.2: icmp_seq=2 ttl=64 time=0.040 ms\n\
                   64 bytes from 198.19.1.2: icmp_seq=3 ttl=64 time=0.060 ms\n\
                   64 bytes from 198.19.1.2: icmp_seq=4 ttl=64 time=0.050 ms\n\n\
                   --- 198.19.1.2 ping statistics ---\n\
                   4 packets transmitted, 4 received, 0% packet loss, time 61ms\n\
                   rtt min/avg/max/mdev = 0.040/0.062/0.100/0.023 ms\n";
        let rtt = parse_ping(out).unwrap();
        assert!((rtt.mean_us - 62.0).abs() < 1e-9, "{rtt:?}");
        assert!((rtt.median_us - 55.0).abs() < 1e-9, "{rtt:?}");
        assert!((rtt.min_us - 40.0).abs() < 1e-9, "{rtt:?}");
        assert!(parse_ping("PING x\n").is_err());
        assert!(parse_ping("rtt min/avg/max/mdev = a/b/c/d ms\n").is_err());
    }
}
