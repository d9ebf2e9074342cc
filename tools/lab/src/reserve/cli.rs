//! `vnet lab reserve` and `vnet lab reservations`.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use vadapt::reserve::{CpuReservation, LinkReservation, Reservations};

use super::backend::{apply, read, LabReservations};
use crate::plan::parse_shaping_rate;

/// `--link FROM:TO=RATE`: a link reservation to make (`None`: to release).
#[derive(Clone, Debug, PartialEq)]
pub struct LinkArg {
    /// Sending host.
    pub from: String,
    /// Receiving host.
    pub to: String,
    /// Mbit/s, or None for `=0` (release).
    pub mbps: Option<f64>,
}

impl std::str::FromStr for LinkArg {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<LinkArg> {
        let usage = || format!("`{s}` is not a link reservation: write FROM:TO=RATE, e.g. h1:h3=60mbit");
        let (ends, rate) = s.split_once('=').with_context(usage)?;
        let (from, to) = ends.split_once(':').with_context(usage)?;
        if from.is_empty() || to.is_empty() {
            bail!(usage());
        }
        let mbps = match rate.trim() {
            "0" => None,
            r if r.bytes().all(|b| b.is_ascii_digit() || b == b'.') => {
                bail!("`{s}`: give the rate a unit, e.g. {r}mbit (or 0 to release)")
            }
            r => Some(parse_shaping_rate(r)?.mbit_per_sec()),
        };
        Ok(LinkArg {
            from: from.to_string(),
            to: to.to_string(),
            mbps,
        })
    }
}

/// `--cpu VM=PERIOD_MS:SLICE_MS`: a CPU reservation to make (`None`: to release).
#[derive(Clone, Debug, PartialEq)]
pub struct CpuArg {
    /// The VM.
    pub vm: String,
    /// (period, slice) in ms, or None for `=0` (release).
    pub period_slice_ms: Option<(f64, f64)>,
}

impl std::str::FromStr for CpuArg {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<CpuArg> {
        let usage =
            || format!("`{s}` is not a CPU reservation: write VM=PERIOD_MS:SLICE_MS, e.g. vm0=100:25");
        let (vm, figures) = s.split_once('=').with_context(usage)?;
        if vm.is_empty() {
            bail!(usage());
        }
        let period_slice_ms = if figures.trim() == "0" {
            None
        } else {
            let (p, sl) = figures.split_once(':').with_context(usage)?;
            let num = |t: &str| t.trim().parse::<f64>().ok().filter(|x| x.is_finite());
            Some((num(p).with_context(usage)?, num(sl).with_context(usage)?))
        };
        Ok(CpuArg {
            vm: vm.to_string(),
            period_slice_ms,
        })
    }
}

/// Options of `vnet lab reserve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReserveArgs {
    /// Lab name.
    #[arg(long)]
    pub name: String,
    /// Guarantee RATE to the overlay link from host FROM to host TO, e.g. `h1:h3=60mbit`
    /// (RATE as tc reads it, with a unit; `=0` releases that link). Enforced by HTB on the
    /// shaped uplinks of either end (`vnet lab up --uplink`). Repeatable.
    #[arg(long = "link", value_name = "FROM:TO=RATE")]
    pub links: Vec<LinkArg>,
    /// Give VM SLICE_MS of CPU time in every PERIOD_MS, e.g. `vm0=100:25` (a cgroup CPU
    /// limit; period 1..1000 ms, slice at least 1 ms; `VM=0` releases it). Repeatable.
    #[arg(long = "cpu", value_name = "VM=PERIOD_MS:SLICE_MS")]
    pub cpu: Vec<CpuArg>,
    /// Start from nothing: release every reservation not given here (alone: release
    /// all). Without it, the given ones are added to, or change, those in force.
    #[arg(long)]
    pub clear: bool,
    /// Print the reservations in force afterwards as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `vnet lab reservations`.
#[derive(clap::Args, Debug, Clone)]
pub struct ShowArgs {
    /// Lab name.
    #[arg(long)]
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The whole set `vnet lab reserve` asks for: `current` (unless `clear`) with the
/// arguments' changes.
fn wanted_set(
    current: &Reservations,
    args: &ReserveArgs,
) -> Result<(Vec<LinkReservation>, Vec<CpuReservation>)> {
    if args.links.is_empty() && args.cpu.is_empty() && !args.clear {
        bail!("nothing to do: give --link, --cpu or --clear");
    }
    let mut links: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut cpu: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    if !args.clear {
        links.extend(
            current
                .links
                .iter()
                .map(|l| ((l.from.clone(), l.to.clone()), l.mbps)),
        );
        cpu.extend(
            current
                .cpu
                .iter()
                .map(|c| (c.vm.clone(), (c.period_ms, c.slice_ms))),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for l in &args.links {
        if !seen.insert((l.from.clone(), l.to.clone())) {
            bail!("--link {}:{} is given twice", l.from, l.to);
        }
        let key = (l.from.clone(), l.to.clone());
        match l.mbps {
            Some(m) => links.insert(key, m),
            None => links.remove(&key),
        };
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &args.cpu {
        if !seen.insert(c.vm.clone()) {
            bail!("--cpu {} is given twice", c.vm);
        }
        match c.period_slice_ms {
            Some(ps) => cpu.insert(c.vm.clone(), ps),
            None => cpu.remove(&c.vm),
        };
    }
    Ok((
        links
            .into_iter()
            .map(|((from, to), mbps)| LinkReservation { from, to, mbps })
            .collect(),
        cpu.into_iter()
            .map(|(vm, (period_ms, slice_ms))| CpuReservation {
                vm,
                period_ms,
                slice_ms,
            })
            .collect(),
    ))
}

/// `vnet lab reserve`.
pub fn run_reserve(args: ReserveArgs) -> Result<()> {
    let before = read(&args.name)?;
    let (links, cpu) = wanted_set(&before.reservations(), &args)?;
    apply(&args.name, &links, &cpu).with_context(|| format!("reserving in lab `{}`", args.name))?;
    show(&read(&args.name)?, args.json)
}

/// `vnet lab reservations`.
pub fn run_show(args: ShowArgs) -> Result<()> {
    show(&read(&args.name)?, args.json)
}

fn show(r: &LabReservations, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        print!("{}", render(r));
    }
    Ok(())
}

/// The human form of [`LabReservations`].
fn render(r: &LabReservations) -> String {
    let mut s = format!("lab `{}` reservations\n", r.lab);
    s += "shaped uplinks:\n";
    if r.uplinks.is_empty() {
        s += "  none (bring the lab up with --uplink hI=RATE to reserve bandwidth)\n";
    }
    for u in &r.uplinks {
        s += &format!(
            "  {:<4} {:>8} Mbit/s   reserved: {} out, {} in\n",
            u.host, u.mbps, u.reserved_out_mbps, u.reserved_in_mbps
        );
    }
    s += "links:\n";
    if r.links.is_empty() {
        s += "  none\n";
    }
    for l in &r.links {
        s += &format!(
            "  {} -> {}  {} Mbit/s  (at {})\n",
            l.from,
            l.to,
            l.mbps,
            l.enforced_at.join(", ")
        );
    }
    s += &format!(
        "cpu ({}):\n",
        r.cgroups.as_deref().unwrap_or("no cgroup cpu controller")
    );
    for v in &r.vms {
        let reservation = r
            .cpu
            .iter()
            .find(|c| c.vm == v.vm)
            .map_or("unlimited".to_string(), |c| {
                format!(
                    "{} ms of every {} ms ({:.0} %)",
                    c.slice_ms,
                    c.period_ms,
                    100.0 * c.slice_ms / c.period_ms
                )
            });
        let used = v
            .usage_us
            .map_or(String::new(), |u| format!(", used {:.3} s", u as f64 / 1e6));
        s += &format!("  {:<5} {reservation}{used}\n", v.vm);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reserve::{LinkInForce, UplinkUse, VmCgroup};

    #[test]
    fn reserve_parses_cli_arguments() {
        let l: LinkArg = "h1:h3=60mbit".parse().unwrap();
        assert_eq!(
            l,
            LinkArg {
                from: "h1".into(),
                to: "h3".into(),
                mbps: Some(60.0)
            }
        );
        assert_eq!("h1:h3=0".parse::<LinkArg>().unwrap().mbps, None);
        assert_eq!("h1:h3=1.5gbit".parse::<LinkArg>().unwrap().mbps, Some(1500.0));
        for bad in ["h1:h3", "h1=60mbit", ":h3=1mbit", "h1:h3=60", "h1:h3=fast"] {
            assert!(bad.parse::<LinkArg>().is_err(), "{bad}");
        }
        let e = "h1:h3=60".parse::<LinkArg>().unwrap_err().to_string();
        assert!(e.contains("60mbit"), "{e}");

        let c: CpuArg = "vm0=100:25".parse().unwrap();
        assert_eq!(c.period_slice_ms, Some((100.0, 25.0)));
        assert_eq!("vm0=0".parse::<CpuArg>().unwrap().period_slice_ms, None);
        for bad in ["vm0", "vm0=100", "=100:25", "vm0=a:b", "vm0=100:inf"] {
            assert!(bad.parse::<CpuArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn reserve_subcommands_parse() {
        use clap::Parser;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(subcommand)]
            cmd: crate::LabCommand,
        }
        let cli = Cli::try_parse_from([
            "lab",
            "reserve",
            "--name",
            "t",
            "--link",
            "h1:h3=60mbit",
            "--link",
            "h3:h1=0",
            "--cpu",
            "vm0=100:25",
            "--json",
        ])
        .unwrap();
        let crate::LabCommand::Reserve(a) = cli.cmd else {
            panic!("not reserve")
        };
        assert_eq!((a.name.as_str(), a.links.len(), a.cpu.len()), ("t", 2, 1));
        assert!(a.json && !a.clear);
        assert_eq!(a.links[1].mbps, None);
        let cli = Cli::try_parse_from(["lab", "reservations", "--name", "t"]).unwrap();
        assert!(matches!(
            cli.cmd,
            crate::LabCommand::Reservations(ShowArgs { json: false, .. })
        ));
        for bad in [
            &["lab", "reserve", "--name", "t", "--link", "h1-h3=1mbit"][..],
            &["lab", "reserve", "--name", "t", "--cpu", "vm0=25"],
            &["lab", "reserve", "--link", "h1:h3=1mbit"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reserve_cli_merges_with_what_is_in_force() {
        let current = Reservations {
            links: vec![LinkReservation {
                from: "h1".into(),
                to: "h3".into(),
                mbps: 60.0,
            }],
            cpu: vec![CpuReservation {
                vm: "vm0".into(),
                period_ms: 100.0,
                slice_ms: 25.0,
            }],
        };
        let args = |links: &[&str], cpu: &[&str], clear: bool| ReserveArgs {
            name: "lt".into(),
            links: links.iter().map(|l| l.parse().unwrap()).collect(),
            cpu: cpu.iter().map(|c| c.parse().unwrap()).collect(),
            clear,
            json: false,
        };
        let (l, c) = wanted_set(&current, &args(&["h2:h3=10mbit"], &[], false)).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(c, current.cpu);
        let (l, c) = wanted_set(&current, &args(&["h1:h3=0"], &["vm1=50:5"], false)).unwrap();
        assert!(l.is_empty());
        assert_eq!(c.len(), 2);
        let (l, c) = wanted_set(&current, &args(&[], &["vm1=50:5"], true)).unwrap();
        assert!(l.is_empty());
        assert_eq!(c[0].vm, "vm1");
        let (l, c) = wanted_set(&current, &args(&[], &[], true)).unwrap();
        assert!(l.is_empty() && c.is_empty());
        assert!(wanted_set(&current, &args(&[], &[], false)).is_err());
        let e = wanted_set(&current, &args(&["h1:h2=1mbit", "h1:h2=2mbit"], &[], false)).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn reserve_render_lists_everything() {
        let r = LabReservations {
            lab: "lt".into(),
            links: vec![LinkInForce {
                from: "h1".into(),
                to: "h3".into(),
                mbps: 60.0,
                enforced_at: vec!["sw p3".into()],
            }],
            cpu: vec![CpuReservation {
                vm: "vm0".into(),
                period_ms: 100.0,
                slice_ms: 25.0,
            }],
            uplinks: vec![UplinkUse {
                host: "h3".into(),
                mbps: 100.0,
                reserved_out_mbps: 0.0,
                reserved_in_mbps: 60.0,
            }],
            cgroups: Some("cgroup v1 (cpu: /c, cpuacct: /a)".into()),
            vms: vec![
                VmCgroup {
                    vm: "vm0".into(),
                    dirs: vec![],
                    usage_us: Some(1_500_000),
                },
                VmCgroup {
                    vm: "vm1".into(),
                    dirs: vec![],
                    usage_us: None,
                },
            ],
        };
        let text = render(&r);
        for want in [
            "h1 -> h3  60 Mbit/s  (at sw p3)",
            "reserved: 0 out, 60 in",
            "vm0   25 ms of every 100 ms (25 %), used 1.500 s",
            "vm1   unlimited",
            "cgroup v1",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<LabReservations>(&json).unwrap(), r);
        assert_eq!(r.reservations().links[0].mbps, 60.0);
    }
}
