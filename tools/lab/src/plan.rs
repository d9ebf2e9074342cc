//! The pure part of the lab: names, addresses, VM placement, shaping parameters and the
//! vnetd configuration of every host. Nothing here touches the system, so all of it is
//! unit-tested without root.
//!
//! # Layout
//!
//! | thing              | name / address                                        |
//! |--------------------|-------------------------------------------------------|
//! | underlay switch    | namespace `N-sw`, bridge `br0`, ports `p{i}`          |
//! | host `h{i}`        | namespace `N-h{i}`, `ul0` = 198.18.0.{i+1}/16          |
//! | vnetd of `h{i}`    | listens on 198.18.0.{i+1}:7400                        |
//! | VM `vm{j}`         | namespace `N-vm{j}`, `eth0`, 198.19.0.{j+1}/16         |
//! | MAC of `vm{j}`     | 02:00:00:00:00:{j+1:02x}                              |
//! | placement          | `vm{j}` on `h{1 + j mod (H-1)}`; `h0` is the proxy     |
//! | link `h{a}-h{b}`   | a < b; `h{a}` waits, `h{b}` dials 198.18.0.{a+1}:7400 |

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use vnet_core::config::{DaemonConfig, IfaceKind, IfaceSpec, LinkProto, LinkSpec, RuleEntry, Topology};
use vnet_core::mac::MacAddr;
use vnet_core::name::Name;
use vnet_core::rate::Rate;
use vnet_core::rule::{DstMatch, MacMatch, Output};

use crate::{HostInfo, LabInfo, LabLink, LabTopology, UpArgs, VmInfo};

/// Where labs keep their files: `/run/vnet-lab/NAME/`.
pub const LAB_ROOT: &str = "/run/vnet-lab";
/// The port every lab vnetd listens on for links.
pub const LINK_PORT: u16 = 7400;
/// Longest lab name: `N-vm253` and the like must fit a 15-byte Linux name.
pub const MAX_LAB_NAME: usize = 8;
/// Most hosts (and most VMs) a lab can have: one /24's worth of host numbers.
pub const MAX_NODES: usize = 254;

/// A node, link, interface, device or namespace name the lab makes from a lab name
/// ([`check_lab_name`]: a-z 0-9) and indices: always within the name rule.
pub fn lab_name(text: String) -> Name {
    Name::try_from(text).unwrap_or_else(|e| unreachable!("the lab makes only valid names: {e}"))
}

/// Checks that `name` is a lab name: 1-8 characters of [a-z0-9].
pub fn check_lab_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_LAB_NAME
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        bail!(
            "lab name `{name}` is invalid: use 1-{MAX_LAB_NAME} characters from a-z 0-9 \
             (namespace and device names derived from it must fit in 15 bytes)"
        );
    }
    Ok(())
}

/// The lab's directory.
pub fn lab_dir(name: &str) -> PathBuf {
    Path::new(LAB_ROOT).join(name)
}

/// Whether `ns` is a namespace of lab `name`: `N-sw`, `N-h<digits>` or `N-vm<digits>`.
pub fn is_lab_netns(name: &str, ns: &str) -> bool {
    lab_of_netns(ns) == Some(name)
}

/// The lab a namespace belongs to, if its name has the shape of a lab namespace.
pub fn lab_of_netns(ns: &str) -> Option<&str> {
    let (lab, rest) = ns.split_once('-')?;
    check_lab_name(lab).ok()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ok = rest == "sw"
        || rest.strip_prefix("vm").is_some_and(digits)
        || rest.strip_prefix('h').is_some_and(digits);
    ok.then_some(lab)
}

/// Rates the lab shapes: one byte a second to 10 Tbit/s (the lab's bound, far above what
/// its veths carry).
const SHAPING_RATES: std::ops::RangeInclusive<u64> = 8..=10_000_000_000_000;

/// Parses a rate the lab shapes at or reserves ([`vnet_core::rate`]'s grammar: `50mbit`,
/// `1.5gbit`, `10mbps`, `800kibit`, a bare number of bits per second), checked against the
/// lab's range.
pub fn parse_shaping_rate(text: &str) -> Result<Rate> {
    let rate: Rate = text.parse()?;
    if !SHAPING_RATES.contains(&rate.bits_per_sec()) {
        bail!("rate `{text}` is out of range (8bit..10tbit)");
    }
    Ok(rate)
}

/// A shaped uplink: `--uplink hI=RATE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    /// Host number I.
    pub host: usize,
    /// Its rate, both ways.
    pub rate: Rate,
}

impl std::str::FromStr for Uplink {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Uplink> {
        let (host, rate) = s
            .split_once('=')
            .with_context(|| format!("`{s}` is not an uplink: write hI=RATE, e.g. h1=50mbit"))?;
        let host = host
            .strip_prefix('h')
            .and_then(|n| n.parse::<usize>().ok())
            .with_context(|| format!("`{host}` is not a host: write h0, h1, ..."))?;
        Ok(Uplink {
            host,
            rate: parse_shaping_rate(rate)?,
        })
    }
}

/// Everything `up` will build, derived from the options and nothing else.
#[derive(Clone, Debug)]
pub struct LabPlan {
    /// Lab name.
    pub name: String,
    /// Number of hosts, proxy included.
    pub hosts: usize,
    /// Number of VMs.
    pub vms: usize,
    /// Link transport.
    pub proto: LinkProto,
    /// Star or full.
    pub topology: LabTopology,
    /// VMs whose NIC is a veth captured by vnetd instead of a TAP.
    pub veth_vms: BTreeSet<usize>,
    /// Links seal their frames.
    pub encrypt: bool,
    /// MTU of the underlay, and the daemons' `link_mtu`.
    pub underlay_mtu: u32,
    /// VMs whose NIC runs without offloads (no TSO super-frames).
    pub no_offload_vms: BTreeSet<usize>,
    /// Shaped uplinks: host -> rate.
    pub uplinks: BTreeMap<usize, Uplink>,
    /// The lab's directory.
    pub dir: PathBuf,
}

/// Underlay MTUs a lab takes: IPv4's minimum for the links to work at all (vnetd's own
/// floor), and what a veth takes.
const MIN_UNDERLAY_MTU: u32 = 576;
const MAX_UNDERLAY_MTU: u32 = 65_535;

/// The VMs a `flag` names, checked against the lab's `vms`.
fn vm_set(flag: &str, named: &[usize], vms: usize) -> Result<BTreeSet<usize>> {
    match named.iter().find(|&&j| j >= vms) {
        Some(j) => bail!("{flag} names VM {j}, but the lab has only vm0..vm{}", vms - 1),
        None => Ok(named.iter().copied().collect()),
    }
}

impl LabPlan {
    /// Validates the options and derives the plan, with the lab directory under `root`.
    pub fn new(opts: &UpArgs, root: &Path) -> Result<LabPlan> {
        check_lab_name(&opts.name)?;
        if !(2..=MAX_NODES).contains(&opts.hosts) {
            bail!("--hosts must be 2..={MAX_NODES}: h0 is the proxy and VMs live on h1 and up");
        }
        if !(1..=MAX_NODES).contains(&opts.vms) {
            bail!("--vms must be 1..={MAX_NODES}");
        }
        if !(MIN_UNDERLAY_MTU..=MAX_UNDERLAY_MTU).contains(&opts.underlay_mtu) {
            bail!("--underlay-mtu must be {MIN_UNDERLAY_MTU}..={MAX_UNDERLAY_MTU}");
        }
        let veth_vms = vm_set("--veth-vms", &opts.veth_vms, opts.vms)?;
        let mut no_offload_vms = vm_set("--no-offload-vms", &opts.no_offload_vms, opts.vms)?;
        if opts.no_offload {
            no_offload_vms.extend(0..opts.vms);
        }
        let mut uplinks = BTreeMap::new();
        for u in &opts.uplinks {
            if u.host >= opts.hosts {
                bail!(
                    "--uplink names h{}, but the lab has only h0..h{}",
                    u.host,
                    opts.hosts - 1
                );
            }
            if uplinks.insert(u.host, u.clone()).is_some() {
                bail!("--uplink names h{} twice", u.host);
            }
        }
        Ok(LabPlan {
            name: opts.name.clone(),
            hosts: opts.hosts,
            vms: opts.vms,
            proto: match opts.link {
                LabLink::Tcp => LinkProto::Tcp,
                LabLink::Udp => LinkProto::Udp,
                LabLink::Quic => LinkProto::Quic,
            },
            topology: opts.topology,
            veth_vms,
            encrypt: opts.encrypt,
            underlay_mtu: opts.underlay_mtu,
            no_offload_vms,
            uplinks,
            dir: root.join(&opts.name),
        })
    }

    /// The underlay switch's namespace.
    pub fn sw_ns(&self) -> String {
        format!("{}-sw", self.name)
    }

    /// Host i's namespace.
    pub fn host_ns(&self, i: usize) -> String {
        format!("{}-h{i}", self.name)
    }

    /// VM j's namespace.
    pub fn vm_ns(&self, j: usize) -> String {
        format!("{}-vm{j}", self.name)
    }

    /// Every namespace of the lab, switch first.
    #[cfg(test)]
    pub fn all_ns(&self) -> Vec<String> {
        let mut v = vec![self.sw_ns()];
        v.extend((0..self.hosts).map(|i| self.host_ns(i)));
        v.extend((0..self.vms).map(|j| self.vm_ns(j)));
        v
    }

    /// Host i's underlay address.
    pub fn host_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, (i + 1) as u8)
    }

    /// Host i's link listener.
    pub fn host_listen(i: usize) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Self::host_ip(i), LINK_PORT))
    }

    /// Host i's QUIC listen address (the link port + 1), used in `--link quic` labs.
    pub fn host_quic_listen(i: usize) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Self::host_ip(i), LINK_PORT + 1))
    }

    /// VM j's overlay address.
    pub fn vm_ip(j: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, 0, (j + 1) as u8)
    }

    /// VM j's MAC address.
    pub fn vm_mac(j: usize) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, (j + 1) as u8])
    }

    /// The host VM j lives on.
    pub fn host_of(&self, j: usize) -> usize {
        1 + j % (self.hosts - 1)
    }

    /// The VMs living on host i, in order.
    pub fn vms_on(&self, i: usize) -> Vec<usize> {
        (0..self.vms).filter(|&j| self.host_of(j) == i).collect()
    }

    /// Whether VM j's NIC uses offloads (TSO super-frames behind virtio-net headers).
    pub fn offload(&self, j: usize) -> bool {
        !self.no_offload_vms.contains(&j)
    }

    /// Whether VM j's NIC is a captured veth rather than a TAP.
    pub fn is_veth(&self, j: usize) -> bool {
        self.veth_vms.contains(&j)
    }

    /// The name of the link between hosts a and b (either order).
    pub fn link_name(a: usize, b: usize) -> String {
        format!("h{}-h{}", a.min(b), a.max(b))
    }

    /// The path of a file in the lab directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The network key file.
    pub fn key_file(&self) -> PathBuf {
        self.file("key")
    }

    /// Host i's config file.
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.file(&format!("h{i}.toml"))
    }

    /// Host i's control socket.
    pub fn control_path(&self, i: usize) -> PathBuf {
        self.file(&format!("h{i}.sock"))
    }

    /// Host i's log.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.file(&format!("h{i}.log"))
    }

    /// Host i's state file.
    pub fn state_path(&self, i: usize) -> PathBuf {
        self.file(&format!("h{i}.state.json"))
    }

    /// Where host i's vnetd PID is recorded as soon as it starts.
    pub fn pid_path(&self, i: usize) -> PathBuf {
        self.file(&format!("h{i}.pid"))
    }

    fn link(&self, me: usize, other: usize) -> LinkSpec {
        // The lower-numbered end waits; the higher-numbered end dials.
        LinkSpec {
            name: lab_name(Self::link_name(me, other)),
            proto: self.proto,
            peer: (me > other).then(|| self.link_target(other)),
            encrypt: self.encrypt,
        }
    }

    /// Where host i's links are dialed: its link port, or its QUIC port for QUIC.
    fn link_target(&self, i: usize) -> SocketAddr {
        match self.proto {
            LinkProto::Quic => Self::host_quic_listen(i),
            _ => Self::host_listen(i),
        }
    }

    fn iface(&self, j: usize) -> IfaceSpec {
        if self.is_veth(j) {
            IfaceSpec {
                name: lab_name(format!("vm{j}")),
                kind: IfaceKind::Attach,
                device: Some(lab_name(format!("v{j}"))),
                netns: None,
                mac: None,
                mtu: None,
                offload: self.offload(j),
            }
        } else {
            IfaceSpec {
                name: lab_name(format!("vm{j}")),
                kind: IfaceKind::Tap,
                device: Some(lab_name("eth0".to_string())),
                netns: Some(lab_name(self.vm_ns(j))),
                mac: Some(Self::vm_mac(j)),
                // vnetd's default: the underlay MTU minus the worst link's overhead.
                mtu: None,
                offload: self.offload(j),
            }
        }
    }

    /// The links host i keeps.
    fn links_of(&self, i: usize) -> Vec<LinkSpec> {
        if i == 0 {
            return (1..self.hosts).map(|h| self.link(0, h)).collect();
        }
        let mut links = vec![self.link(i, 0)];
        if self.topology == LabTopology::Full {
            links.extend((1..self.hosts).filter(|&h| h != i).map(|h| self.link(i, h)));
        }
        links
    }

    /// The forwarding rules of host i.
    fn rules_of(&self, i: usize) -> Vec<RuleEntry> {
        let rule = |src: MacMatch, dst: DstMatch, out: Vec<Output>| RuleEntry {
            id: None,
            src,
            dst,
            out,
        };
        let exact = |j: usize| DstMatch::Mac(MacMatch::Exact(Self::vm_mac(j)));
        let bcast = DstMatch::Mac(MacMatch::Exact(MacAddr::BROADCAST));
        let link = |a: usize, b: usize| Output::Link(lab_name(Self::link_name(a, b)));
        let vm = |j: usize| Output::Iface(lab_name(format!("vm{j}")));

        if i == 0 {
            // The proxy: unicast toward the VM's host, broadcast to every host (split
            // horizon keeps it off the link it came in on).
            let mut rules: Vec<RuleEntry> = (0..self.vms)
                .map(|j| rule(MacMatch::Any, exact(j), vec![link(0, self.host_of(j))]))
                .collect();
            rules.push(rule(
                MacMatch::Any,
                bcast,
                (1..self.hosts).map(|h| link(0, h)).collect(),
            ));
            return rules;
        }

        let local = self.vms_on(i);
        if local.is_empty() {
            return Vec::new();
        }
        let full = self.topology == LabTopology::Full;
        let local_out: Vec<Output> = local.iter().map(|&j| vm(j)).collect();
        let mut rules: Vec<RuleEntry> = local
            .iter()
            .map(|&j| rule(MacMatch::Any, exact(j), vec![vm(j)]))
            .collect();
        if full {
            // Unicast to a remote VM goes straight over the direct link to its host.
            rules.extend(
                (0..self.vms)
                    .filter(|&j| self.host_of(j) != i)
                    .map(|j| rule(MacMatch::Any, exact(j), vec![link(i, self.host_of(j))])),
            );
        }
        // A local VM's broadcast: to the other hosts (via the proxy in a star, over every
        // direct link when full) and to every local VM (split horizon drops the sender).
        let remote: Vec<Output> = if full {
            (1..self.hosts).filter(|&h| h != i).map(|h| link(i, h)).collect()
        } else {
            vec![link(0, i)]
        };
        for &j in &local {
            let out = remote.iter().chain(&local_out).cloned().collect();
            rules.push(rule(MacMatch::Exact(Self::vm_mac(j)), bcast, out));
        }
        // Broadcasts arriving from the overlay go to local VMs only.
        rules.push(rule(MacMatch::Any, bcast, local_out));
        // Everything else goes to the proxy.
        rules.push(rule(MacMatch::Any, DstMatch::None, vec![link(0, i)]));
        rules
    }

    /// Host i's vnetd configuration.
    pub fn config(&self, i: usize) -> DaemonConfig {
        let ifaces = if i == 0 {
            Vec::new()
        } else {
            self.vms_on(i).into_iter().map(|j| self.iface(j)).collect()
        };
        DaemonConfig {
            node: lab_name(format!("h{i}")),
            key_file: self.key_file(),
            listen: Self::host_listen(i),
            quic_listen: (self.proto == LinkProto::Quic).then(|| Self::host_quic_listen(i)),
            link_mtu: self.underlay_mtu,
            tap_queues: None,
            control: self.control_path(i),
            control_tcp: None,
            control_token_file: None,
            state_file: Some(self.state_path(i)),
            topology: Topology {
                ifaces,
                links: self.links_of(i),
                rules: self.rules_of(i),
                config_time_bound_ms: None,
            },
        }
    }

    /// Host i's config file text.
    pub fn config_toml(&self, i: usize) -> Result<String> {
        let cfg = self.config(i);
        let text = toml::to_string(&cfg).with_context(|| format!("serializing the config of h{i}"))?;
        Ok(format!(
            "# vnetd config of host h{i} in lab `{}`, written by `vnet lab up`.\n{text}",
            self.name
        ))
    }

    /// The lab's description, with vnetd PIDs (0 for a daemon not started).
    pub fn info(&self, pids: &[u32]) -> LabInfo {
        LabInfo {
            name: self.name.clone(),
            dir: self.dir.clone(),
            key_file: self.key_file(),
            hosts: (0..self.hosts)
                .map(|i| HostInfo {
                    name: format!("h{i}"),
                    netns: self.host_ns(i),
                    underlay: Self::host_ip(i),
                    control: self.control_path(i),
                    config: self.config_path(i),
                    log: self.log_path(i),
                    pid: pids.get(i).copied().unwrap_or(0),
                })
                .collect(),
            vms: (0..self.vms)
                .map(|j| VmInfo {
                    name: format!("vm{j}"),
                    netns: self.vm_ns(j),
                    mac: Self::vm_mac(j).to_string(),
                    ip: Self::vm_ip(j),
                    host: format!("h{}", self.host_of(j)),
                    nic: if self.is_veth(j) { "veth" } else { "tap" }.into(),
                    device: "eth0".into(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(name: &str, hosts: usize, vms: usize) -> UpArgs {
        UpArgs::new(name, hosts, vms)
    }

    fn plan(a: &UpArgs) -> LabPlan {
        LabPlan::new(a, Path::new("/tmp/labroot")).unwrap()
    }

    fn rules_text(c: &DaemonConfig) -> Vec<String> {
        c.topology.rules.iter().map(|r| r.spec().to_string()).collect()
    }

    /// Parses the generated TOML back with vnetd's own parser (which validates it).
    fn parse_back(p: &LabPlan, i: usize) -> DaemonConfig {
        let text = p.config_toml(i).unwrap();
        let parsed = DaemonConfig::from_toml(&text).unwrap_or_else(|e| panic!("h{i}: {e}\n{text}"));
        assert_eq!(parsed, p.config(i));
        parsed
    }

    #[test]
    fn lab_names() {
        for ok in ["a", "lt", "lab12345", "0"] {
            check_lab_name(ok).unwrap();
        }
        for bad in ["", "lab123456", "Lab", "l-t", "l_t", "l t", "läb"] {
            assert!(check_lab_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn netns_ownership() {
        assert!(is_lab_netns("lt", "lt-sw"));
        assert!(is_lab_netns("lt", "lt-h0"));
        assert!(is_lab_netns("lt", "lt-vm12"));
        assert!(!is_lab_netns("lt", "lt2-h0"));
        assert!(!is_lab_netns("lt", "lt-h"));
        assert!(!is_lab_netns("lt", "lt-vmx"));
        assert!(!is_lab_netns("lt", "lt-other"));
        assert!(!is_lab_netns("lt", "lt"));
        assert_eq!(lab_of_netns("abc-vm3"), Some("abc"));
        assert_eq!(lab_of_netns("ABC-vm3"), None);
        assert_eq!(lab_of_netns("docker"), None);
    }

    #[test]
    fn names_fit_linux_limits() {
        let p = plan(&args("abcdefgh", MAX_NODES, MAX_NODES));
        for ns in p.all_ns() {
            assert!(ns.len() <= 15, "{ns}");
        }
        assert_eq!(p.vm_ns(253), "abcdefgh-vm253");
        assert_eq!(format!("p{}", MAX_NODES - 1).len(), 4);
    }

    #[test]
    fn validation() {
        let root = Path::new("/x");
        assert!(LabPlan::new(&args("lt", 1, 1), root).is_err());
        assert!(LabPlan::new(&args("lt", 2, 0), root).is_err());
        assert!(LabPlan::new(&args("lt", 2, 255), root).is_err());
        assert!(LabPlan::new(&args("lt", 255, 1), root).is_err());
        assert!(LabPlan::new(&args("Lt", 2, 1), root).is_err());
        let mut a = args("lt", 3, 2);
        a.veth_vms = vec![2];
        assert!(LabPlan::new(&a, root).is_err());
        a.veth_vms = vec![1, 1, 0];
        assert_eq!(LabPlan::new(&a, root).unwrap().veth_vms.len(), 2);
        a.underlay_mtu = 500;
        assert!(LabPlan::new(&a, root).is_err());
        a.underlay_mtu = 1280;
        assert_eq!(LabPlan::new(&a, root).unwrap().config(1).link_mtu, 1280);
        a.underlay_mtu = 1500;
        a.no_offload_vms = vec![2];
        assert!(LabPlan::new(&a, root).is_err());
        a.no_offload_vms = vec![1];
        let p = LabPlan::new(&a, root).unwrap();
        assert!(p.offload(0) && !p.offload(1));
        assert!(
            !p.config(2).topology.ifaces[0].offload,
            "vm1 lives on h2 without offloads"
        );
        a.no_offload_vms.clear();
        a.no_offload = true;
        let p = LabPlan::new(&a, root).unwrap();
        assert!(!p.offload(0) && !p.offload(1));
        a.no_offload = false;
        a.uplinks = vec!["h3=1mbit".parse().unwrap()];
        assert!(LabPlan::new(&a, root).is_err());
        a.uplinks = vec!["h2=1mbit".parse().unwrap(), "h2=2mbit".parse().unwrap()];
        assert!(LabPlan::new(&a, root).is_err());
        a.uplinks = vec!["h0=1mbit".parse().unwrap(), "h2=2mbit".parse().unwrap()];
        let p = LabPlan::new(&a, root).unwrap();
        assert_eq!(p.dir, Path::new("/x/lt"));
        assert_eq!(p.uplinks[&2].rate.bits_per_sec(), 2_000_000);
    }

    #[test]
    fn placement_and_addresses() {
        let p = plan(&args("lt", 3, 5));
        let hosts: Vec<usize> = (0..5).map(|j| p.host_of(j)).collect();
        assert_eq!(hosts, [1, 2, 1, 2, 1]);
        assert_eq!(p.vms_on(0), Vec::<usize>::new());
        assert_eq!(p.vms_on(1), [0, 2, 4]);
        assert_eq!(p.vms_on(2), [1, 3]);
        assert_eq!(LabPlan::vm_mac(0).to_string(), "02:00:00:00:00:01");
        assert_eq!(LabPlan::vm_mac(15).to_string(), "02:00:00:00:00:10");
        assert_eq!(LabPlan::vm_mac(253).to_string(), "02:00:00:00:00:fe");
        assert_eq!(LabPlan::vm_ip(0), Ipv4Addr::new(198, 19, 0, 1));
        assert_eq!(LabPlan::host_ip(2), Ipv4Addr::new(198, 18, 0, 3));
        assert_eq!(LabPlan::host_listen(0).to_string(), "198.18.0.1:7400");
        assert_eq!(LabPlan::link_name(3, 1), "h1-h3");
        assert_eq!(p.sw_ns(), "lt-sw");
        assert_eq!(p.all_ns().len(), 1 + 3 + 5);
    }

    #[test]
    fn rates() {
        let bits = |t: &str| parse_shaping_rate(t).map(Rate::bits_per_sec).ok();
        assert_eq!(bits("50mbit"), Some(50_000_000));
        assert_eq!(bits("1Gbit"), Some(1_000_000_000));
        assert_eq!(bits("1.5gbit"), Some(1_500_000_000));
        assert_eq!(bits("10mbps"), Some(80_000_000));
        assert_eq!(bits("1kibit"), Some(1024));
        assert_eq!(bits("64000"), Some(64_000));
        assert_eq!(bits("800bit"), Some(800));
        assert_eq!(bits("8bit"), Some(8));
        assert_eq!(bits("10tbit"), Some(10_000_000_000_000));
        for bad in [
            "",
            "mbit",
            "50mb",
            "50 furlongs",
            "0bit",
            "7bit",
            "-1mbit",
            "1e3mbit",
            "99tbit",
        ] {
            assert!(parse_shaping_rate(bad).is_err(), "{bad}");
        }
        let e = parse_shaping_rate("0bit").unwrap_err().to_string();
        assert_eq!(e, "rate `0bit` is out of range (8bit..10tbit)");
        let u: Uplink = "h1=50mbit".parse().unwrap();
        assert_eq!(
            u,
            Uplink {
                host: 1,
                rate: Rate::from_bits_per_sec(50_000_000)
            }
        );
        // The HTB tree built from it: lab::reserve's tests.
        assert!("1=50mbit".parse::<Uplink>().is_err());
        assert!("h1".parse::<Uplink>().is_err());
        assert!("hx=1mbit".parse::<Uplink>().is_err());
    }

    #[test]
    fn star_configs() {
        // h1: vm0, vm2 (TAP); h2: vm1 (veth).
        let mut a = args("lt", 3, 3);
        a.veth_vms = vec![1];
        a.link = LabLink::Udp;
        let p = plan(&a);

        let h0 = parse_back(&p, 0);
        assert_eq!(h0.node, "h0");
        assert_eq!(h0.listen.to_string(), "198.18.0.1:7400");
        assert_eq!(h0.control, Path::new("/tmp/labroot/lt/h0.sock"));
        assert_eq!(h0.key_file, Path::new("/tmp/labroot/lt/key"));
        assert_eq!(
            h0.state_file.as_deref(),
            Some(Path::new("/tmp/labroot/lt/h0.state.json"))
        );
        assert!(h0.topology.ifaces.is_empty());
        let links: Vec<_> = h0
            .topology
            .links
            .iter()
            .map(|l| (l.name.as_str(), l.peer, l.proto))
            .collect();
        assert_eq!(
            links,
            [("h0-h1", None, LinkProto::Udp), ("h0-h2", None, LinkProto::Udp)]
        );
        assert_eq!(
            rules_text(&h0),
            [
                "src any dst 02:00:00:00:00:01 -> link:h0-h1",
                "src any dst 02:00:00:00:00:02 -> link:h0-h2",
                "src any dst 02:00:00:00:00:03 -> link:h0-h1",
                "src any dst ff:ff:ff:ff:ff:ff -> link:h0-h1 link:h0-h2",
            ]
        );

        let h1 = parse_back(&p, 1);
        assert_eq!(h1.topology.links.len(), 1);
        assert_eq!(h1.topology.links[0].peer, Some(LabPlan::host_listen(0)));
        let tap = &h1.topology.ifaces[0];
        assert_eq!(
            (tap.name.as_str(), tap.kind, tap.device().as_str()),
            ("vm0", IfaceKind::Tap, "eth0")
        );
        assert_eq!(tap.netns.as_deref(), Some("lt-vm0"));
        assert_eq!(tap.mac, Some(LabPlan::vm_mac(0)));
        // No MTU: vnetd derives it from the underlay's (`config::default_tap_mtu`).
        assert_eq!(tap.mtu, None);
        assert_eq!(
            rules_text(&h1),
            [
                "src any dst 02:00:00:00:00:01 -> iface:vm0",
                "src any dst 02:00:00:00:00:03 -> iface:vm2",
                "src 02:00:00:00:00:01 dst ff:ff:ff:ff:ff:ff -> link:h0-h1 iface:vm0 iface:vm2",
                "src 02:00:00:00:00:03 dst ff:ff:ff:ff:ff:ff -> link:h0-h1 iface:vm0 iface:vm2",
                "src any dst ff:ff:ff:ff:ff:ff -> iface:vm0 iface:vm2",
                "src any dst none -> link:h0-h1",
            ]
        );

        let h2 = parse_back(&p, 2);
        let veth = &h2.topology.ifaces[0];
        assert_eq!(
            (veth.name.as_str(), veth.kind, veth.device().as_str()),
            ("vm1", IfaceKind::Attach, "v1")
        );
        assert_eq!((veth.netns.as_ref(), veth.mac, veth.mtu), (None, None, None));
        assert_eq!(rules_text(&h2).len(), 4);
    }

    #[test]
    fn host_without_vms_gets_only_its_link() {
        let p = plan(&args("lt", 4, 2));
        let h3 = parse_back(&p, 3);
        assert!(h3.topology.ifaces.is_empty());
        assert!(h3.topology.rules.is_empty());
        assert_eq!(h3.topology.links.len(), 1);
        assert_eq!(h3.topology.links[0].name, "h0-h3");
        assert_eq!(h3.topology.links[0].proto, LinkProto::Tcp);
    }

    #[test]
    fn full_configs() {
        // h1: vm0, vm3; h2: vm1; h3: vm2.
        let mut a = args("lt", 4, 4);
        a.topology = LabTopology::Full;
        let p = plan(&a);

        // The proxy is the same as in the star.
        let h0 = parse_back(&p, 0);
        assert_eq!(h0.topology.links.len(), 3);
        assert_eq!(h0.topology.rules.len(), 5);

        let h2 = parse_back(&p, 2);
        let links: Vec<_> = h2
            .topology
            .links
            .iter()
            .map(|l| (l.name.as_str(), l.peer))
            .collect();
        assert_eq!(
            links,
            [
                ("h0-h2", Some(LabPlan::host_listen(0))),
                ("h1-h2", Some(LabPlan::host_listen(1))),
                ("h2-h3", None)
            ]
        );
        assert_eq!(
            rules_text(&h2),
            [
                "src any dst 02:00:00:00:00:02 -> iface:vm1",
                "src any dst 02:00:00:00:00:01 -> link:h1-h2",
                "src any dst 02:00:00:00:00:03 -> link:h2-h3",
                "src any dst 02:00:00:00:00:04 -> link:h1-h2",
                "src 02:00:00:00:00:02 dst ff:ff:ff:ff:ff:ff -> link:h1-h2 link:h2-h3 iface:vm1",
                "src any dst ff:ff:ff:ff:ff:ff -> iface:vm1",
                "src any dst none -> link:h0-h2",
            ]
        );
        for i in [1, 3] {
            parse_back(&p, i);
        }
        // Both ends of every link agree on its name and exactly one end dials.
        for a in 0..4 {
            for b in (a + 1)..4 {
                let name = LabPlan::link_name(a, b);
                let at_a = p
                    .config(a)
                    .topology
                    .links
                    .into_iter()
                    .find(|l| l.name == name)
                    .unwrap();
                let at_b = p
                    .config(b)
                    .topology
                    .links
                    .into_iter()
                    .find(|l| l.name == name)
                    .unwrap();
                assert_eq!(
                    (at_a.peer, at_b.peer),
                    (None, Some(LabPlan::host_listen(a))),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn full_with_one_vm_host() {
        let mut a = args("lt", 2, 2);
        a.topology = LabTopology::Full;
        let p = plan(&a);
        let h1 = parse_back(&p, 1);
        assert_eq!(h1.topology.links.len(), 1);
        assert!(rules_text(&h1)
            .contains(&"src 02:00:00:00:00:01 dst ff:ff:ff:ff:ff:ff -> iface:vm0 iface:vm1".into()));
    }

    #[test]
    fn info_matches_plan() {
        let mut a = args("lt", 3, 3);
        a.veth_vms = vec![2];
        let p = plan(&a);
        let info = p.info(&[11, 12]);
        assert_eq!(info.hosts.len(), 3);
        assert_eq!(info.hosts[1].pid, 12);
        assert_eq!(info.hosts[2].pid, 0);
        assert_eq!(info.hosts[1].netns, "lt-h1");
        assert_eq!(info.hosts[1].underlay, Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(info.vms[2].nic, "veth");
        assert_eq!(info.vms[1].nic, "tap");
        assert_eq!(info.vms[1].host, "h2");
        assert_eq!(info.vms[1].mac, "02:00:00:00:00:02");
        let json = serde_json::to_string(&info).unwrap();
        let back: LabInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(back.vms[2].ip, Ipv4Addr::new(198, 19, 0, 3));
        assert_eq!(back.key_file, Path::new("/tmp/labroot/lt/key"));
    }
}
