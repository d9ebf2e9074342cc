//! `vnet lab`: emulated hosts and VMs on one Linux machine.
//!
//! One network namespace per host (`N-h{i}`) and per VM (`N-vm{j}`), a bridge in `N-sw`
//! as the underlay switch, veth uplinks with optional HTB shaping, a vnetd per host whose
//! TAP is the VM's NIC, a cgroup per VM. Addresses come from 198.18.0.0/15 only and no
//! namespace has a route out. [`plan`] derives every name, address and vnetd config from
//! the options (pure, unit-tested); this module builds and tears down; [`sys`] holds the
//! shell-outs; [`reserve`] reserves bandwidth and CPU.
//!
//! The same lab serves the demo, the benchmarks and the end-to-end tests: call [`up`] and
//! [`down`] from this crate, or run `vnet lab up --json` and read [`LabInfo`] from stdout.

pub mod fleet;
pub mod migrate;
pub mod patterns;
pub mod plan;
pub mod reserve;
#[cfg(test)]
mod root_tests;
pub mod sys;

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use migrate::{migrate, migrate_checked, MigrateArgs, MigrationReport, Step, StepReport};
use plan::{check_lab_name, lab_of_netns, LabPlan, LAB_ROOT};
pub use plan::{lab_dir, Uplink, LINK_PORT};

/// The status file of lab `name`'s adaptor (`vadapt run --lab NAME`).
pub fn lab_status_path(name: &str) -> PathBuf {
    lab_dir(name).join("adapt").join("status.json")
}

/// How long `up` waits for each vnetd's control socket and for the TAPs to appear.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `down` gives vnetds to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Poll interval of every wait.
const POLL: Duration = Duration::from_millis(25);

/// `vnet lab ...`.
#[derive(clap::Subcommand, Debug)]
pub enum LabCommand {
    /// Build a lab: namespaces, underlay, a vnetd per host, VMs.
    Up(UpArgs),
    /// Tear a lab down (also after a crash, or when it is half built).
    Down {
        /// Lab name.
        #[arg(long)]
        name: String,
    },
    /// List labs, and namespaces left over from labs without lab.json.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a lab namespace: `vnet lab exec N vm0 -- ping 198.19.0.2`
    /// (in a VM, inside its cgroup, so its CPU reservation applies).
    Exec {
        /// Lab name.
        lab: String,
        /// VM (vm0, vm1, ...), or host (h0, ...), or `sw`.
        vm: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Reserve bandwidth on overlay links (HTB classes on the shaped uplinks) and CPU for
    /// VMs (cgroup limits); prints what is in force afterwards.
    Reserve(reserve::ReserveArgs),
    /// Show the reservations in force, read back from tc and the cgroups.
    Reservations(reserve::ShowArgs),
    /// Live-migrate a VM to another host: its NIC moves to that host's vnetd and the
    /// overlay's rules follow, while its TCP connections stay up (`vnet lab migrate --name N
    /// vm1 h3`). A failed step rolls everything back.
    ///
    /// Steps: nic, rules, addresses, source-rules, info, delete (tools/hooks/README.md).
    /// To test the rollback, VNET_LAB_MIGRATE_FAIL=STEP makes that step fail.
    Migrate(MigrateArgs),
}

/// Link transport between the lab's vnetds.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabLink {
    /// Length-framed TCP.
    #[default]
    Tcp,
    /// One frame per UDP datagram.
    Udp,
    /// QUIC datagrams (each vnetd also listens on port 7401 for QUIC).
    Quic,
}

/// Overlay topology of the lab.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabTopology {
    /// Every host links to the proxy h0 only; all traffic goes through it.
    #[default]
    Star,
    /// The star plus a direct link between every pair of hosts, used for unicast and
    /// broadcast between VMs; the default rule still points at the proxy.
    Full,
}

/// Options of `vnet lab up` (and of [`up`]).
#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Lab name: 1-8 characters of [a-z0-9].
    #[arg(long)]
    pub name: String,
    /// Number of hosts, h0 (the proxy) included; at least 2.
    #[arg(long)]
    pub hosts: usize,
    /// Number of VMs, placed round-robin on h1, h2, ...
    #[arg(long)]
    pub vms: usize,
    /// Transport of the overlay links.
    #[arg(long, value_enum, default_value_t = LabLink::Tcp)]
    pub link: LabLink,
    /// Overlay topology.
    #[arg(long, value_enum, default_value_t = LabTopology::Star)]
    pub topology: LabTopology,
    /// Shape a host's uplink in both directions with HTB, e.g. `--uplink h1=50mbit`
    /// (repeatable; RATE as tc reads it); `vnet lab reserve` reserves parts of it.
    #[arg(long = "uplink", value_name = "hI=RATE")]
    pub uplinks: Vec<Uplink>,
    /// VMs whose NIC is a veth captured by vnetd instead of a TAP, e.g. `--veth-vms 0,2`.
    #[arg(long, value_delimiter = ',', value_name = "J,J..")]
    pub veth_vms: Vec<usize>,
    /// Encrypt every TCP or UDP link with per-session keys.
    #[arg(long)]
    pub encrypt: bool,
    /// MTU of the underlay (the hosts' uplinks and switch), also each vnetd's `link_mtu`:
    /// VM TAPs get it minus the worst link overhead.
    #[arg(long, default_value_t = 1500, value_name = "BYTES")]
    pub underlay_mtu: u32,
    /// Open the VMs' TAPs without offloads (one frame per read, no TSO super-frames).
    #[arg(long)]
    pub no_offload: bool,
    /// VMs whose NIC alone runs without offloads, e.g. `--no-offload-vms 1`: a TAP without
    /// virtio-net header, or a veth captured frame by frame (the VM's TSO and checksum
    /// offload turned off). Mixes VMs that send TSO super-frames with VMs that cannot take
    /// them.
    #[arg(long, value_delimiter = ',', value_name = "J,J..")]
    pub no_offload_vms: Vec<usize>,
    /// The vnetd binary (default: `vnetd` next to this program).
    #[arg(long, env = "VNETD_BIN")]
    pub vnetd: Option<PathBuf>,
    /// Print the lab description as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl UpArgs {
    /// Options for a star lab over TCP, every VM on a TAP.
    pub fn new(name: &str, hosts: usize, vms: usize) -> UpArgs {
        UpArgs {
            name: name.to_string(),
            hosts,
            vms,
            link: LabLink::Tcp,
            topology: LabTopology::Star,
            uplinks: Vec::new(),
            veth_vms: Vec::new(),
            encrypt: false,
            underlay_mtu: 1500,
            no_offload: false,
            no_offload_vms: Vec::new(),
            vnetd: None,
            json: false,
        }
    }
}

/// A lab as built: what `vnet lab up --json` prints and `<dir>/lab.json` holds.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LabInfo {
    /// Lab name.
    pub name: String,
    /// `/run/vnet-lab/NAME`.
    pub dir: PathBuf,
    /// The network key all vnetds share.
    pub key_file: PathBuf,
    /// h0 (the proxy), h1, ...
    pub hosts: Vec<HostInfo>,
    /// vm0, vm1, ...
    pub vms: Vec<VmInfo>,
}

/// An emulated host and its vnetd.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HostInfo {
    /// "h0", "h1", ...
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its underlay address (on `ul0`); vnetd listens on port 7400 there.
    pub underlay: Ipv4Addr,
    /// The vnetd control socket.
    pub control: PathBuf,
    /// The vnetd config file.
    pub config: PathBuf,
    /// The vnetd log (stdout and stderr).
    pub log: PathBuf,
    /// The vnetd PID (0 if it was not started).
    pub pid: u32,
}

/// An emulated VM: a namespace whose `eth0` is on the overlay.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct VmInfo {
    /// "vm0", "vm1", ...
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// MAC of its `eth0`.
    pub mac: String,
    /// IPv4 address of its `eth0` (/16).
    pub ip: Ipv4Addr,
    /// The host whose vnetd serves it.
    pub host: String,
    /// "tap" (vnetd's TAP) or "veth" (captured by vnetd).
    pub nic: String,
    /// The NIC's device name in its namespace: `eth0`, another after `vnet lab migrate`.
    #[serde(default = "default_vm_device")]
    pub device: String,
}

/// The device name of a VM's NIC in a lab.json written before migrations existed.
fn default_vm_device() -> String {
    "eth0".to_string()
}

/// Runs a `vnet lab` subcommand.
pub fn run(cmd: LabCommand) -> Result<()> {
    match cmd {
        LabCommand::Up(args) => {
            let info = up(&args)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", summary(&info));
            }
            Ok(())
        }
        LabCommand::Down { name } => {
            if down_lab(&name)? {
                eprintln!("lab `{name}` is down");
            } else {
                eprintln!("no lab named `{name}` (nothing to tear down)");
            }
            Ok(())
        }
        LabCommand::List { json } => list(json),
        LabCommand::Exec { lab, vm, cmd } => {
            let code = exec(&lab, &vm, &cmd)?;
            std::process::exit(code)
        }
        LabCommand::Reserve(args) => reserve::run_reserve(args),
        LabCommand::Reservations(args) => reserve::run_show(args),
        LabCommand::Migrate(args) => migrate::run(args),
    }
}

/// Builds a lab and returns its description; on failure tears down whatever it built.
pub fn up(opts: &UpArgs) -> Result<LabInfo> {
    let plan = LabPlan::new(opts, Path::new(LAB_ROOT))?;
    let name = &plan.name;
    let leftovers = lab_namespaces(name)?;
    if plan.dir.exists() || !leftovers.is_empty() {
        bail!(
            "a lab named `{name}` already exists ({}); run `vnet lab down --name {name}` first",
            if leftovers.is_empty() {
                format!("{} is there", plan.dir.display())
            } else {
                leftovers.join(" ")
            }
        );
    }
    let vnetd = find_vnetd(opts.vnetd.as_deref())?;

    // The first namespace doubles as the privilege check and as the lock on the name: a
    // concurrent `up` of the same lab fails here.
    sys::ip(&["netns", "add", &plan.sw_ns()]).map_err(|e| {
        let text = format!("{e:#}");
        if text.contains("Operation not permitted") || text.contains("Permission denied") {
            e.context(
                "cannot create network namespaces: `vnet lab` must run as root \
                 (it needs CAP_SYS_ADMIN and CAP_NET_ADMIN)",
            )
        } else {
            e.context(format!("creating lab `{name}`"))
        }
    })?;
    // From here on, whatever fails is torn down.
    let built = fs::create_dir_all(LAB_ROOT)
        .with_context(|| format!("creating {LAB_ROOT}"))
        .and_then(|()| fs::create_dir(&plan.dir).with_context(|| format!("creating {}", plan.dir.display())))
        .and_then(|()| build(&plan, &vnetd));
    match built {
        Ok(info) => Ok(info),
        Err(e) => {
            if let Err(d) = down(name) {
                return Err(e.context(format!(
                    "lab `{name}` failed to come up, and tearing it down failed too: {d:#}"
                )));
            }
            Err(e.context(format!(
                "lab `{name}` failed to come up (what it had built is torn down)"
            )))
        }
    }
}

/// Lab `name` as `vnet lab up` described it (its lab.json).
pub fn info(name: &str) -> Result<LabInfo> {
    let path = lab_dir(name).join("lab.json");
    let text = fs::read_to_string(&path)
        .with_context(|| format!("cannot read {} (is lab `{name}` up?)", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a lab description", path.display()))
}

/// Tears lab `name` down: stops its vnetds, kills what is left in its namespaces, deletes
/// them and its directory. Succeeds when there is no such lab.
pub fn down(name: &str) -> Result<()> {
    down_lab(name).map(drop)
}

fn build(plan: &LabPlan, vnetd: &Path) -> Result<LabInfo> {
    write_key(&plan.key_file())?;
    build_underlay(plan)?;
    build_vms(plan)?;
    reserve::create_cgroups(&plan.name, plan.vms)?;
    for i in 0..plan.hosts {
        let path = plan.config_path(i);
        fs::write(&path, plan.config_toml(i)?).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut pids = vec![0; plan.hosts];
    write_info(&plan.info(&pids))?;

    let mut children = Vec::new();
    for i in 0..plan.hosts {
        let child = start_vnetd(plan, i, vnetd)?;
        pids[i] = child.id();
        fs::write(plan.pid_path(i), format!("{}\n", pids[i])).context("writing the vnetd PID file")?;
        children.push(child);
        write_info(&plan.info(&pids))?;
    }
    wait_for_control(plan, &mut children)?;
    configure_tap_vms(plan, &mut children)?;
    wait_for_links(plan, &mut children)?;
    let info = plan.info(&pids);
    write_info(&info)?;
    Ok(info)
}

fn write_key(path: &Path) -> Result<()> {
    let mut key = [0u8; 32];
    std::io::Read::read_exact(
        &mut fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut key,
    )
    .context("reading /dev/urandom")?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{}", hex::encode(key)).with_context(|| format!("writing {}", path.display()))
}

fn write_info(info: &LabInfo) -> Result<()> {
    let path = info.dir.join("lab.json");
    let tmp = info.dir.join("lab.json.tmp");
    fs::write(&tmp, serde_json::to_string_pretty(info)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// Turns IPv6 off in a namespace so that router solicitations, MLD and DAD do not add
/// background multicast to the overlay's traffic matrix (skipped on kernels without IPv6).
fn quiet_ipv6(ns: &str) -> Result<()> {
    if !Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(());
    }
    sys::ip(&[
        "netns",
        "exec",
        ns,
        "sysctl",
        "-q",
        "-w",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ])
    .map(drop)
}

fn build_underlay(plan: &LabPlan) -> Result<()> {
    let sw = plan.sw_ns();
    sys::ip_in(&sw, &["link", "set", "lo", "up"])?;
    quiet_ipv6(&sw)?;
    sys::ip_in(&sw, &["link", "add", "br0", "type", "bridge"])?;
    sys::ip_in(&sw, &["link", "set", "br0", "up"])?;
    for i in 0..plan.hosts {
        let ns = plan.host_ns(i);
        let port = format!("p{i}");
        let addr = format!("{}/16", LabPlan::host_ip(i));
        sys::ip(&["netns", "add", &ns])?;
        sys::ip_in(&ns, &["link", "set", "lo", "up"])?;
        quiet_ipv6(&ns)?;
        sys::ip_in(
            &sw,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "ul0", "netns", &ns,
            ],
        )?;
        let mtu = plan.underlay_mtu.to_string();
        sys::ip_in(&sw, &["link", "set", &port, "mtu", &mtu])?;
        sys::ip_in(&ns, &["link", "set", "ul0", "mtu", &mtu])?;
        sys::ip_in(&sw, &["link", "set", &port, "master", "br0"])?;
        sys::ip_in(&sw, &["link", "set", &port, "up"])?;
        sys::ip_in(&ns, &["addr", "add", &addr, "dev", "ul0"])?;
        sys::ip_in(&ns, &["link", "set", "ul0", "up"])?;
        if let Some(uplink) = plan.uplinks.get(&i) {
            for (where_, dev) in [(&ns, "ul0"), (&sw, port.as_str())] {
                for args in reserve::shape_commands(dev, uplink.rate.bits_per_sec()) {
                    sys::tc_in(where_, &args)?;
                }
            }
        }
    }
    Ok(())
}

fn build_vms(plan: &LabPlan) -> Result<()> {
    for j in 0..plan.vms {
        let ns = plan.vm_ns(j);
        sys::ip(&["netns", "add", &ns])?;
        sys::ip_in(&ns, &["link", "set", "lo", "up"])?;
        quiet_ipv6(&ns)?;
        if plan.is_veth(j) {
            let host_ns = plan.host_ns(plan.host_of(j));
            let host_end = format!("v{j}");
            sys::ip_in(
                &host_ns,
                &[
                    "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            sys::ip_in(&host_ns, &["link", "set", &host_end, "up"])?;
            // vnetd captures v{j} with a packet socket. With offloads it reads and writes
            // behind virtio-net headers (PACKET_VNET_HDR) and takes the VM's TSO
            // super-frames and partial checksums as from a TAP; without, it must see
            // wire-sized frames with complete checksums.
            if !plan.offload(j) {
                sys::ip(&[
                    "netns", "exec", &ns, "ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off",
                ])?;
                sys::ip(&[
                    "netns", "exec", &host_ns, "ethtool", "-K", &host_end, "gro", "off",
                ])?;
            }
            sys::ip_in(
                &ns,
                &["link", "set", "eth0", "address", &LabPlan::vm_mac(j).to_string()],
            )?;
            vm_address(plan, j)?;
        }
    }
    Ok(())
}

/// Gives VM j's eth0 its address and brings it up.
fn vm_address(plan: &LabPlan, j: usize) -> Result<()> {
    let ns = plan.vm_ns(j);
    sys::ip_in(
        &ns,
        &["addr", "add", &format!("{}/16", LabPlan::vm_ip(j)), "dev", "eth0"],
    )?;
    sys::ip_in(&ns, &["link", "set", "eth0", "up"]).map(drop)
}

/// The vnetd binary: `explicit` (--vnetd or VNETD_BIN), else `vnetd` next to this
/// program (or next to the directory of a test binary in target/*/deps).
fn find_vnetd(explicit: Option<&Path>) -> Result<PathBuf> {
    let explicit = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("VNETD_BIN").map(PathBuf::from));
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!(
                "vnetd binary {} (from --vnetd / VNETD_BIN) does not exist",
                p.display()
            );
        }
        return Ok(p);
    }
    sys::sibling_binary("vnetd").context("no vnetd: point VNETD_BIN at one, or build it")
}

fn start_vnetd(plan: &LabPlan, i: usize, vnetd: &Path) -> Result<Child> {
    let log_path = plan.log_path(i);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let ns = plan.host_ns(i);
    Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(vnetd)
        .arg("--config")
        .arg(plan.config_path(i))
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log file")?)
        .stderr(log)
        // Its own process group: it survives `vnet` exiting and a ^C to the terminal.
        .process_group(0)
        .spawn()
        .with_context(|| {
            format!(
                "ip netns exec {ns} {} --config ...: cannot start",
                vnetd.display()
            )
        })
}

/// Lines of a daemon's log that error messages show.
const LOG_TAIL_LINES: usize = 20;

/// Fails if one of the vnetds has exited, with the end of its log.
fn check_running(plan: &LabPlan, children: &mut [Child]) -> Result<()> {
    for (i, child) in children.iter_mut().enumerate() {
        if let Some(status) = child.try_wait().context("checking on vnetd")? {
            bail!(
                "vnetd of h{i} exited ({status}); {}",
                sys::log_tail(&plan.log_path(i), LOG_TAIL_LINES)
            );
        }
    }
    Ok(())
}

fn wait_for_control(plan: &LabPlan, children: &mut [Child]) -> Result<()> {
    let mut pending: Vec<usize> = (0..plan.hosts).collect();
    let mut failure = None;
    sys::poll_until(START_TIMEOUT, POLL, || {
        if let Err(e) = check_running(plan, children) {
            failure = Some(e);
            return true;
        }
        pending.retain(|&i| UnixStream::connect(plan.control_path(i)).is_err());
        pending.is_empty()
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(&i) = pending.first() {
        bail!(
            "vnetd of h{i} did not open its control socket {} within {}s; {}",
            plan.control_path(i).display(),
            START_TIMEOUT.as_secs(),
            sys::log_tail(&plan.log_path(i), LOG_TAIL_LINES)
        );
    }
    Ok(())
}

/// Waits until every link of every daemon is up, so the lab forwards from the first
/// frame (an ARP sent before the star is up would be lost and retried only after 1 s).
fn wait_for_links(plan: &LabPlan, children: &mut [Child]) -> Result<()> {
    let down_links = |i: usize| -> Vec<String> {
        let links = vnet_client::Client::unix(&plan.control_path(i)).and_then(|mut c| c.link_list());
        match links {
            Ok(l) => l
                .into_iter()
                .filter(|l| !l.is_up())
                .map(|l| format!("h{i}: {} ({})", l.spec.name, l.last_error.unwrap_or_default()))
                .collect(),
            Err(e) => vec![format!("h{i}: {e}")],
        }
    };
    let mut failure = None;
    let mut pending: Vec<String> = Vec::new();
    sys::poll_until(START_TIMEOUT, POLL, || {
        if let Err(e) = check_running(plan, children) {
            failure = Some(e);
            return true;
        }
        pending = (0..plan.hosts).flat_map(down_links).collect();
        pending.is_empty()
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if !pending.is_empty() {
        bail!(
            "links not up within {}s: {}",
            START_TIMEOUT.as_secs(),
            pending.join("; ")
        );
    }
    Ok(())
}

fn configure_tap_vms(plan: &LabPlan, children: &mut [Child]) -> Result<()> {
    let mut pending: Vec<usize> = (0..plan.vms).filter(|&j| !plan.is_veth(j)).collect();
    let mut failure = None;
    sys::poll_until(START_TIMEOUT, POLL, || {
        if let Err(e) = check_running(plan, children) {
            failure = Some(e);
            return true;
        }
        pending.retain(|&j| sys::ip_in(&plan.vm_ns(j), &["link", "show", "dev", "eth0"]).is_err());
        pending.is_empty()
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(&j) = pending.first() {
        let h = plan.host_of(j);
        bail!(
            "vnetd of h{h} did not create the TAP eth0 of vm{j} in {} within {}s; {}",
            plan.vm_ns(j),
            START_TIMEOUT.as_secs(),
            sys::log_tail(&plan.log_path(h), LOG_TAIL_LINES)
        );
    }
    for j in (0..plan.vms).filter(|&j| !plan.is_veth(j)) {
        vm_address(plan, j)?;
    }
    Ok(())
}

/// The namespaces of lab `name` that exist, sorted.
fn lab_namespaces(name: &str) -> Result<Vec<String>> {
    let mut v: Vec<String> = sys::netns_list()?
        .into_iter()
        .filter(|ns| plan::is_lab_netns(name, ns))
        .collect();
    v.sort();
    Ok(v)
}

/// Reads `<dir>/lab.json`, if it is there and whole.
fn read_info(dir: &Path) -> Option<LabInfo> {
    serde_json::from_str(&fs::read_to_string(dir.join("lab.json")).ok()?).ok()
}

/// Tears a lab down; returns whether there was anything to tear down.
fn down_lab(name: &str) -> Result<bool> {
    check_lab_name(name)?;
    let dir = lab_dir(name);
    let namespaces = lab_namespaces(name)?;
    if !dir.exists() && namespaces.is_empty() {
        return Ok(false);
    }
    let mut errors = Vec::new();

    // 1. The vnetds we recorded, from lab.json and the PID files, if the PID still names a
    //    process started with a config file of this lab's directory.
    let mut pids: Vec<u32> = read_info(&dir)
        .map(|i| i.hosts.iter().map(|h| h.pid).collect())
        .unwrap_or_default();
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().ends_with(".pid") {
                pids.extend(
                    fs::read_to_string(e.path())
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok()),
                );
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    let dir_text = format!("{}/", dir.display());
    pids.retain(|&p| p != 0 && sys::alive(p) && sys::cmdline_contains(p, &dir_text));
    let survivors = sys::terminate(&pids, STOP_GRACE);
    if !survivors.is_empty() {
        errors.push(format!("vnetd processes {survivors:?} survived SIGKILL"));
    }

    // 2. Whatever still runs inside the lab's namespaces (we made them, so it is ours),
    //    then the namespaces.
    let mut leftover_pids = Vec::new();
    for ns in &namespaces {
        match sys::netns_pids(ns) {
            Ok(p) => leftover_pids.extend(p),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    // And what runs in the VMs' cgroups outside their namespaces.
    leftover_pids.extend(reserve::cgroup_pids(name));
    let survivors = sys::terminate(&leftover_pids, Duration::from_millis(500));
    if !survivors.is_empty() {
        errors.push(format!(
            "processes {survivors:?} in the lab's namespaces survived SIGKILL"
        ));
    }
    for ns in &namespaces {
        if let Err(e) = sys::ip(&["netns", "del", ns]) {
            errors.push(format!("{e:#}"));
        }
    }

    if let Err(e) = reserve::remove_cgroups(name) {
        errors.push(format!("{e:#}"));
    }

    // 3. The directory.
    if dir.exists() {
        if let Err(e) = fs::remove_dir_all(&dir) {
            errors.push(format!("removing {}: {e}", dir.display()));
        }
    }
    if !errors.is_empty() {
        return Err(anyhow!("tearing down lab `{name}`: {}", errors.join("; ")));
    }
    Ok(true)
}

/// What `vnet lab list --json` prints.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LabList {
    /// Labs with a lab.json.
    pub labs: Vec<LabInfo>,
    /// Labs of which only namespaces (or a directory without a readable lab.json) remain.
    pub leftovers: Vec<Leftover>,
}

/// Remains of a lab without lab.json.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Leftover {
    /// Lab name.
    pub name: String,
    /// Its namespaces that still exist.
    pub netns: Vec<String>,
}

/// Labs on this machine, and leftovers of labs without lab.json.
pub fn list_labs() -> Result<LabList> {
    let mut labs = Vec::new();
    let mut names = std::collections::BTreeMap::<String, Vec<String>>::new();
    if let Ok(entries) = fs::read_dir(LAB_ROOT) {
        for e in entries.flatten() {
            match read_info(&e.path()) {
                Some(info) => labs.push(info),
                None => {
                    names
                        .entry(e.file_name().to_string_lossy().into_owned())
                        .or_default();
                }
            }
        }
    }
    labs.sort_by(|a, b| a.name.cmp(&b.name));
    for ns in sys::netns_list()? {
        if let Some(lab) = lab_of_netns(&ns) {
            if !labs.iter().any(|l| l.name == lab) {
                names.entry(lab.to_string()).or_default().push(ns);
            }
        }
    }
    let leftovers = names
        .into_iter()
        .map(|(name, netns)| Leftover { name, netns })
        .collect();
    Ok(LabList { labs, leftovers })
}

fn list(json: bool) -> Result<()> {
    let list = list_labs()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.labs.is_empty() && list.leftovers.is_empty() {
        println!("no labs");
    }
    for lab in &list.labs {
        let running = lab.hosts.iter().filter(|h| sys::alive(h.pid)).count();
        println!(
            "{}: {} hosts ({running} vnetd running), {} VMs, {}",
            lab.name,
            lab.hosts.len(),
            lab.vms.len(),
            lab.dir.display()
        );
    }
    for l in &list.leftovers {
        println!(
            "{}: leftover without lab.json (namespaces: {}); remove with `vnet lab down --name {}`",
            l.name,
            if l.netns.is_empty() {
                "none".to_string()
            } else {
                l.netns.join(" ")
            },
            l.name
        );
    }
    Ok(())
}

/// Runs `cmd` in namespace `LAB-VM` with inherited stdio; returns its exit code.
fn exec(lab: &str, vm: &str, cmd: &[String]) -> Result<i32> {
    check_lab_name(lab)?;
    let ns = format!("{lab}-{vm}");
    if !plan::is_lab_netns(lab, &ns) {
        bail!("`{vm}` is not a lab machine: use vm0, vm1, ..., h0, h1, ... or sw");
    }
    if !sys::netns_list()?.contains(&ns) {
        bail!("no namespace {ns}: is lab `{lab}` up (`vnet lab list`)?");
    }
    // A VM's command enters its cgroup, so CPU reservations apply to it.
    let status = reserve::machine_command(lab, vm)
        .args(cmd)
        .status()
        .with_context(|| format!("ip netns exec {ns} {}: cannot run", cmd.join(" ")))?;
    // Killed by a signal: exit like a shell would.
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)))
}

/// The human summary of `vnet lab up`.
fn summary(info: &LabInfo) -> String {
    let mut s = format!("lab `{}` is up ({})\n", info.name, info.dir.display());
    s += "hosts:\n";
    for h in &info.hosts {
        let role = if h.name == "h0" { " (proxy)" } else { "" };
        s += &format!(
            "  {:<4} {:<16} netns {:<12} control {}  pid {}{role}\n",
            h.name,
            h.underlay,
            h.netns,
            h.control.display(),
            h.pid
        );
    }
    s += "vms:\n";
    for v in &info.vms {
        s += &format!(
            "  {:<5} {}  {:<14} on {:<4} {:<4} netns {}\n",
            v.name, v.mac, v.ip, v.host, v.nic, v.netns
        );
    }
    s += &format!("try: vnet lab exec {} vm0 -- ping -c1 198.19.0.2\n", info.name);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: LabCommand,
    }

    #[test]
    fn parses_up_flags() {
        let cli = Cli::try_parse_from([
            "lab",
            "up",
            "--name",
            "t1",
            "--hosts",
            "3",
            "--vms",
            "4",
            "--link",
            "udp",
            "--topology",
            "full",
            "--uplink",
            "h1=50mbit",
            "--uplink",
            "h2=1gbit",
            "--veth-vms",
            "0,2",
            "--json",
        ])
        .unwrap();
        let LabCommand::Up(a) = cli.cmd else {
            panic!("not up")
        };
        assert_eq!((a.name.as_str(), a.hosts, a.vms), ("t1", 3, 4));
        assert_eq!(
            (a.link, a.topology, a.json),
            (LabLink::Udp, LabTopology::Full, true)
        );
        assert_eq!(a.uplinks.len(), 2);
        assert_eq!(a.uplinks[1].rate.bits_per_sec(), 1_000_000_000);
        assert_eq!(a.veth_vms, [0, 2]);

        let cli = Cli::try_parse_from(["lab", "up", "--name", "t", "--hosts", "2", "--vms", "1"]).unwrap();
        let LabCommand::Up(a) = cli.cmd else {
            panic!("not up")
        };
        assert_eq!(
            (a.link, a.topology, a.json),
            (LabLink::Tcp, LabTopology::Star, false)
        );
        assert!(Cli::try_parse_from([
            "lab", "up", "--name", "t", "--hosts", "2", "--vms", "1", "--uplink", "x"
        ])
        .is_err());
    }

    #[test]
    fn parses_exec_down_list() {
        let cli =
            Cli::try_parse_from(["lab", "exec", "t", "vm0", "--", "ping", "-c1", "198.19.0.2"]).unwrap();
        let LabCommand::Exec { lab, vm, cmd } = cli.cmd else {
            panic!("not exec")
        };
        assert_eq!((lab.as_str(), vm.as_str()), ("t", "vm0"));
        assert_eq!(cmd, ["ping", "-c1", "198.19.0.2"]);
        assert!(Cli::try_parse_from(["lab", "exec", "t", "vm0"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["lab", "down", "--name", "t"]).unwrap().cmd,
            LabCommand::Down { .. }
        ));
        assert!(matches!(
            Cli::try_parse_from(["lab", "list", "--json"]).unwrap().cmd,
            LabCommand::List { json: true }
        ));
    }

    #[test]
    fn summary_lists_hosts_and_vms() {
        let plan = LabPlan::new(&UpArgs::new("t", 2, 2), Path::new("/run/vnet-lab")).unwrap();
        let s = summary(&plan.info(&[10, 11]));
        assert!(s.contains("h0   198.18.0.1"), "{s}");
        assert!(s.contains("(proxy)"));
        assert!(s.contains("vm1   02:00:00:00:00:02  198.19.0.2"), "{s}");
        assert!(s.contains("/run/vnet-lab/t/h1.sock"));
    }

    #[test]
    fn explicit_vnetd_must_exist() {
        let e = find_vnetd(Some(Path::new("/nonexistent/vnetd")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert_eq!(
            find_vnetd(Some(Path::new("/bin/sh"))).unwrap(),
            Path::new("/bin/sh")
        );
    }
}
