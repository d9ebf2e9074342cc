//! `vnet up`: start the daemons a description names that are not running, then apply
//! the description.
//!
//! Where a daemon starts:
//! - `--lab NAME`: inside the host's namespace, with the lab's config file
//!   (`ip netns exec N-hI vnetd --config /run/vnet-lab/N/hI.toml`);
//! - machine `localhost` or a loopback ADDRESS: here, with a config written to `--dir`;
//! - otherwise over SSH: `ssh -o BatchMode=yes USER@MACHINE 'sh script'` with the config
//!   on stdin; the script writes it to `--dir`/MACHINE.toml and starts vnetd there with
//!   nohup (log beside it). The remote needs vnetd on its PATH (or `--vnetd`) and the key
//!   file the HOST line names (KEY, default /etc/vnet/key); tools reach it by its CONTROL
//!   (over SSH, a TCP endpoint with TOKEN).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lang::ast::Control;
use lang::{Host, Overlay};
use vnet_core::config::{DaemonConfig, Topology};

use vnet_lab::fleet::{connect, Daemons};

/// Options of `vnet up`.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// The description.
    pub file: PathBuf,
    /// Start missing daemons inside this lab's namespaces (and take addresses and control
    /// sockets the description leaves out from the lab).
    #[arg(long)]
    pub lab: Option<String>,
    /// The ssh program.
    #[arg(long, env = "VNET_SSH", default_value = "ssh")]
    pub ssh: String,
    /// The vnetd program (default: next to `vnet` locally, `vnetd` on the PATH remotely).
    #[arg(long)]
    pub vnetd: Option<PathBuf>,
    /// Directory for generated config, state and log files (locally and remotely).
    #[arg(long, default_value = "/var/lib/vnet")]
    pub dir: PathBuf,
    /// Seconds to wait for started daemons' control endpoints.
    #[arg(long, default_value_t = 10)]
    pub wait: u64,
}

/// Where a daemon is started.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    Lab,
    Local,
    Ssh,
}

fn place(h: &Host, lab: bool) -> Place {
    if lab {
        Place::Lab
    } else if h.machine == "localhost" || h.listen_ip().is_some_and(|ip| ip.is_loopback()) {
        Place::Local
    } else {
        Place::Ssh
    }
}

/// The config a started daemon runs with: the host's part of the description.
fn daemon_config(h: &Host, topology: Topology, dir: &Path) -> Result<DaemonConfig> {
    let (control, control_tcp, control_token_file) = match &h.control {
        Some(Control::Unix(p)) => (p.clone(), None, None),
        Some(Control::Tcp { addr, token_file }) => (
            dir.join(format!("{}.sock", h.machine)),
            Some(*addr),
            Some(token_file.clone()),
        ),
        None => (dir.join(format!("{}.sock", h.machine)), None, None),
    };
    let ip = h.listen_ip().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    // QUIC peers dial the link port + 1 (see lang::compile); listen there when any link
    // of this host is QUIC.
    let quic = topology
        .links
        .iter()
        .any(|l| l.proto == vnet_core::config::LinkProto::Quic);
    Ok(DaemonConfig {
        // The language checked machine names with the same rule.
        node: h
            .machine
            .parse()
            .with_context(|| format!("machine `{}`", h.machine))?,
        key_file: h.key_file.clone().unwrap_or_else(|| "/etc/vnet/key".into()),
        listen: SocketAddr::new(ip, h.port),
        quic_listen: quic.then(|| SocketAddr::new(ip, h.port + 1)),
        link_mtu: 1500,
        tap_queues: None,
        control,
        control_tcp,
        control_token_file,
        state_file: Some(dir.join(format!("{}.state.json", h.machine))),
        topology,
    })
}

/// `text` as one POSIX shell word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The ssh command line that starts `h`'s daemon; its config goes on stdin.
fn ssh_command(ssh: &str, h: &Host, vnetd: &str, dir: &Path) -> Vec<String> {
    let d = shell_quote(&dir.to_string_lossy());
    let m = shell_quote(&h.machine);
    let script = format!(
        "set -e; mkdir -p {d}; cd {d}; cat > {m}.toml; \
         nohup {} --config {d}/{m}.toml >> {d}/{m}.log 2>&1 < /dev/null &",
        shell_quote(vnetd)
    );
    vec![
        ssh.to_string(),
        "-o".into(),
        "BatchMode=yes".into(),
        format!("{}@{}", h.user, h.machine),
        script,
    ]
}

fn local_vnetd(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().context("finding the vnet binary")?;
    Ok(exe.with_file_name("vnetd"))
}

fn running(h: &Host) -> bool {
    connect(h).and_then(|mut c| Ok(c.status()?)).is_ok()
}

/// Starts `h`'s daemon.
fn start(args: &UpArgs, h: &Host, topology: Topology) -> Result<()> {
    match place(h, args.lab.is_some()) {
        Place::Lab => {
            let lab = args.lab.as_deref().unwrap_or_default();
            let info = vnet_lab::info(lab)?;
            let Some(hi) = info.hosts.iter().find(|x| x.name == h.machine) else {
                bail!("lab `{lab}` has no host `{}`", h.machine);
            };
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&hi.log)?;
            Command::new("ip")
                .args(["netns", "exec", &hi.netns])
                .arg(local_vnetd(args.vnetd.as_deref())?)
                .arg("--config")
                .arg(&hi.config)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .spawn()
                .with_context(|| format!("starting the vnetd of `{}` in {}", h.machine, hi.netns))?;
        }
        Place::Local => {
            std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
            let config = args.dir.join(format!("{}.toml", h.machine));
            let text = toml::to_string(&daemon_config(h, topology, &args.dir)?)?;
            std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(args.dir.join(format!("{}.log", h.machine)))?;
            Command::new(local_vnetd(args.vnetd.as_deref())?)
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .spawn()
                .with_context(|| format!("starting the vnetd of `{}`", h.machine))?;
        }
        Place::Ssh => {
            let vnetd = args
                .vnetd
                .as_deref()
                .map_or("vnetd".into(), |p| p.to_string_lossy());
            let argv = ssh_command(&args.ssh, h, &vnetd, &args.dir);
            let text = toml::to_string(&daemon_config(h, topology, &args.dir)?)?;
            let mut child = Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::piped())
                .spawn()
                .with_context(|| format!("running {}", argv[0]))?;
            child
                .stdin
                .take()
                .context("ssh stdin")?
                .write_all(text.as_bytes())?;
            let status = child.wait()?;
            if !status.success() {
                bail!("{} {}@{}: {status}", argv[0], h.user, h.machine);
            }
        }
    }
    Ok(())
}

/// Runs `vnet up`.
pub fn run(args: &UpArgs) -> Result<()> {
    let daemons = Daemons {
        lab: args.lab.clone(),
        hosts: None,
    };
    let described = vnet_lab::fleet::load(&args.file)?;
    let fleet = daemons.fleet(Some(&described))?;
    let target: Overlay = fleet.complete(&described);
    let mut topologies: BTreeMap<String, Topology> =
        lang::compile(&target).context("the description cannot run on vnetd")?;
    let mut started = Vec::new();
    for h in target.hosts.values() {
        if running(h) {
            eprintln!("{}: running", h.machine);
        } else {
            start(args, h, topologies.remove(&h.machine).unwrap_or_default())?;
            eprintln!("{}: started ({:?})", h.machine, place(h, args.lab.is_some()));
            started.push(h);
        }
    }
    let wait = Duration::from_secs(args.wait);
    let up = vnet_lab::sys::poll_until(wait, Duration::from_millis(25), || {
        started.iter().all(|h| running(h))
    });
    if !up {
        let missing: Vec<&str> = started
            .iter()
            .filter(|h| !running(h))
            .map(|h| h.machine.as_str())
            .collect();
        bail!(
            "started daemons did not answer on their control endpoints within {}s: {}",
            wait.as_secs(),
            missing.join(", ")
        );
    }
    let fleet = Daemons {
        lab: args.lab.clone(),
        hosts: None,
    }
    .fleet(Some(&target))?;
    let report = vnet_lab::fleet::apply(&fleet, &target)?;
    print!("{}", report.summary());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(machine: &str, address: &str) -> Host {
        Host {
            user: "vnet".into(),
            machine: machine.into(),
            port: 7400,
            interface: "eth0".into(),
            address: Some(address.parse().unwrap()),
            control: Some(Control::Tcp {
                addr: format!("{address}:7500").parse().unwrap(),
                token_file: "/etc/vnet/token".into(),
            }),
            key_file: Some("/etc/vnet/key".into()),
        }
    }

    #[test]
    fn places() {
        assert_eq!(place(&host("localhost", "10.0.0.1"), false), Place::Local);
        assert_eq!(place(&host("a", "127.0.0.1"), false), Place::Local);
        assert_eq!(place(&host("a", "10.0.0.1"), false), Place::Ssh);
        assert_eq!(place(&host("a", "10.0.0.1"), true), Place::Lab);
    }

    #[test]
    fn ssh_command_starts_vnetd_with_the_config_from_stdin() {
        let argv = ssh_command(
            "ssh",
            &host("site-b", "10.0.0.2"),
            "vnetd",
            Path::new("/var/lib/vnet it's"),
        );
        assert_eq!(&argv[..4], ["ssh", "-o", "BatchMode=yes", "vnet@site-b"]);
        assert_eq!(
            argv[4],
            "set -e; mkdir -p '/var/lib/vnet it'\\''s'; cd '/var/lib/vnet it'\\''s'; cat > 'site-b'.toml; \
             nohup 'vnetd' --config '/var/lib/vnet it'\\''s'/'site-b'.toml >> '/var/lib/vnet it'\\''s'/'site-b'.log 2>&1 < /dev/null &"
        );
    }

    #[test]
    fn started_daemons_get_their_part_of_the_description() {
        let c = daemon_config(&host("site-b", "10.0.0.2"), Topology::default(), Path::new("/d")).unwrap();
        assert_eq!(c.listen, "10.0.0.2:7400".parse().unwrap());
        assert_eq!(c.control_tcp, Some("10.0.0.2:7500".parse().unwrap()));
        assert_eq!(c.state_file, Some("/d/site-b.state.json".into()));
        c.validate().unwrap();
        DaemonConfig::from_toml(&toml::to_string(&c).unwrap()).unwrap();
    }
}
