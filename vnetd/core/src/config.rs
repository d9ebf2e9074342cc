//! The daemon's configuration: what the config file says, what the state file keeps, and
//! what `config get|replace` moves in one round trip.
//!
//! A config file is TOML:
//!
//! ```toml
//! node = "h1"                        # this daemon's name in the overlay
//! key_file = "/etc/vnet/key"         # 64 hex digits, shared by every daemon of the overlay
//! listen = "198.18.0.2:7400"         # TCP and UDP link port (same number for both)
//! control = "/run/vnet/h1.sock"      # control socket
//! state_file = "/var/lib/vnet/h1.state.json"
//! link_mtu = 1500                    # underlay MTU (default 1500)
//! tap_queues = 2                     # queues (reader threads) per TAP (default: CPUs, at most 4)
//!
//! [[iface]]
//! name = "vm0"                       # name rules use (iface:vm0)
//! kind = "tap"                       # "tap" (created) or "attach" (existing device, promiscuous)
//! device = "eth0"                    # kernel device name (defaults to name)
//! netns = "lab-vm0"                  # create the TAP inside this named network namespace
//! mac = "02:00:00:00:00:01"
//! mtu = 1500
//!
//! [[link]]
//! name = "h0-h1"                     # the same name on both ends
//! proto = "tcp"                      # "tcp" or "udp"
//! peer = "198.18.0.1:7400"           # dial this address; omit to wait for the peer to dial
//!
//! [[rule]]
//! src = "any"
//! dst = "none"                       # default rule
//! out = ["link:h0-h1"]
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;
use crate::name::{Name, MAX_DEVICE_NAME_LEN};
use crate::rule::{Output, RuleSpec};
use crate::table::RuleId;

/// Default TCP/UDP port for links.
pub const DEFAULT_LINK_PORT: u16 = 7400;
/// What a link adds around a TAP's IP packet in the worst case, so that a frame from a TAP
/// at [`default_tap_mtu`] fits one underlay packet on every link type: IPv6 (40) and UDP
/// (8) headers, the link header, the seal (counter and tag), and the frame's Ethernet
/// header with a VLAN tag (18).
pub const TAP_MTU_OVERHEAD: u32 =
    40 + 8 + crate::wire::HEADER_LEN as u32 + crate::crypto::SEAL_OVERHEAD as u32 + 18;

/// Smallest MTU a TAP gets by default (IPv4's minimum datagram size), however small the
/// underlay.
pub const MIN_TAP_MTU: u32 = 576;

/// The MTU a TAP gets when its spec names none: the underlay MTU (`link_mtu`) minus
/// [`TAP_MTU_OVERHEAD`], so the VM's full-size packets cross UDP links without IP
/// fragmentation (TCP super-frames are cut to fit anyway; QUIC fragments in user space).
pub fn default_tap_mtu(link_mtu: u32) -> u32 {
    link_mtu.saturating_sub(TAP_MTU_OVERHEAD).max(MIN_TAP_MTU)
}
/// Everything the daemon is started with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// This daemon's name in the overlay (shown to peers in the handshake).
    pub node: Name,
    /// File holding the overlay's network key (64 hex digits).
    pub key_file: PathBuf,
    /// Address the TCP and UDP link listeners bind.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Unix control socket path.
    #[serde(default = "default_control")]
    pub control: PathBuf,
    /// MTU of the underlay between daemons (default 1500): UDP links cut TCP traffic into
    /// frames that fit one underlay packet.
    #[serde(default = "default_link_mtu")]
    pub link_mtu: u32,
    /// Queues of each TAP device, each read by a thread of its own (the kernel spreads
    /// flows over them). Default: the number of CPUs, at most 4; 1 opens single-queue
    /// TAPs.
    #[serde(default)]
    pub tap_queues: Option<u16>,
    /// Address the QUIC listener binds (a UDP port other than `listen`'s); without it,
    /// QUIC links can dial out but not wait for peers.
    #[serde(default)]
    pub quic_listen: Option<SocketAddr>,
    /// Optional TCP control listener; requires `control_token_file`.
    #[serde(default)]
    pub control_tcp: Option<SocketAddr>,
    /// File holding the token TCP control clients must present.
    #[serde(default)]
    pub control_token_file: Option<PathBuf>,
    /// Where the daemon keeps its interfaces, links and rules across restarts.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// The topology: interfaces, links, rules.
    #[serde(flatten)]
    pub topology: Topology,
}

/// The part of the configuration that the control primitives change at run time, and
/// that the state file and `config get|replace` carry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Local interfaces.
    #[serde(default, rename = "iface")]
    pub ifaces: Vec<IfaceSpec>,
    /// Overlay links this daemon dials or expects.
    #[serde(default, rename = "link")]
    pub links: Vec<LinkSpec>,
    /// Forwarding rules, in insertion order.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleEntry>,
    /// Upper bound on configuration time in milliseconds (thesis §3.2), passed on to VTTIF.
    #[serde(default)]
    pub config_time_bound_ms: Option<u64>,
}

/// Kind of a local interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IfaceKind {
    /// A TAP device vnetd creates (persistent, so a VM keeps its NIC across restarts).
    Tap,
    /// An existing device captured in promiscuous mode, with injection (AF_PACKET).
    Attach,
}

/// A local interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IfaceSpec {
    /// Name used in rules (`iface:NAME`).
    pub name: Name,
    /// TAP or captured device.
    pub kind: IfaceKind,
    /// Kernel device name (at most [`MAX_DEVICE_NAME_LEN`] bytes); defaults to `name`.
    pub device: Option<Name>,
    /// Named network namespace (`ip netns`) the device lives in; default: the daemon's.
    pub netns: Option<Name>,
    /// MAC address to give a TAP (default: the kernel's random one).
    pub mac: Option<MacAddr>,
    /// MTU to give a TAP (default: `link_mtu` minus the worst link's overhead).
    pub mtu: Option<u32>,
    /// Offloads (virtio-net header, checksum and TSO; on an attached interface,
    /// PACKET_VNET_HDR): on by default; the kernel then hands vnetd 64 KiB TCP
    /// super-frames, which links to capable peers carry whole.
    #[serde(default = "default_offload")]
    pub offload: bool,
}

impl IfaceSpec {
    /// The kernel device name.
    pub fn device(&self) -> &Name {
        self.device.as_ref().unwrap_or(&self.name)
    }
}

/// Transport of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkProto {
    /// Length-framed frames on a TCP connection.
    Tcp,
    /// One frame per UDP datagram.
    Udp,
    /// QUIC datagrams (frames fragmented to fit), TLS-encrypted.
    Quic,
}

impl std::fmt::Display for LinkProto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkProto::Tcp => "tcp",
            LinkProto::Udp => "udp",
            LinkProto::Quic => "quic",
        })
    }
}

/// An overlay link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Name used in rules (`link:NAME`); both ends use the same name.
    pub name: Name,
    /// Transport.
    pub proto: LinkProto,
    /// Address to dial; `None` waits for the peer to dial in.
    pub peer: Option<SocketAddr>,
    /// Seal every frame with per-session keys (ChaCha20-Poly1305; TCP and UDP links).
    /// Both ends must agree. QUIC links are always encrypted by QUIC itself.
    #[serde(default)]
    pub encrypt: bool,
}

/// A rule with its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEntry {
    /// Identifier (assigned by the daemon when absent in a file).
    pub id: Option<RuleId>,
    /// Source side.
    pub src: crate::rule::MacMatch,
    /// Destination side.
    pub dst: crate::rule::DstMatch,
    /// Outputs.
    pub out: Vec<Output>,
}

impl RuleEntry {
    /// The rule without its id.
    pub fn spec(&self) -> RuleSpec {
        RuleSpec {
            src: self.src,
            dst: self.dst,
            out: self.out.clone(),
        }
    }
}

/// What is wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The TOML text does not parse or has unknown/missing fields.
    #[error("{0}")]
    Syntax(String),
    /// An interface's device name (its own, or the interface name it defaults to) is
    /// longer than Linux allows.
    #[error("interface `{iface}`: device name `{device}` is {} bytes long; Linux allows at most {MAX_DEVICE_NAME_LEN}", device.len())]
    DeviceNameTooLong {
        /// The interface.
        iface: Name,
        /// Its device name.
        device: Name,
    },
    /// Two interfaces or two links share a name.
    #[error("duplicate {what} `{name}`")]
    Duplicate {
        /// "link", "interface" or "rule id".
        what: &'static str,
        /// The name or id.
        name: String,
    },
    /// A rule has no outputs.
    #[error("rule {0} has no outputs")]
    NoOutputs(String),
    /// A rule names an interface that is not configured.
    #[error("rule {rule} sends to interface `{iface}`, which is not configured")]
    UnknownIface {
        /// The rule, as text.
        rule: String,
        /// The missing interface.
        iface: Name,
    },
    /// A rule names a link that is not configured (links the peer dials in must still be
    /// declared, without `peer`).
    #[error("rule {rule} sends to link `{link}`, which is not configured (declare it, without `peer` if the other end dials)")]
    UnknownLink {
        /// The rule, as text.
        rule: String,
        /// The missing link.
        link: Name,
    },
    /// An MTU outside what Ethernet over the overlay can carry.
    #[error("interface `{0}`: MTU {1} is outside 68..=65000")]
    BadMtu(Name, u32),
    /// The underlay MTU is outside what IP allows.
    #[error("link_mtu {0} is outside 576..=65535")]
    BadLinkMtu(u32),
    /// A TAP queue count vnetd does not open.
    #[error("tap_queues {0} is outside 1..=16")]
    BadTapQueues(u16),
    /// A QUIC link waits for its peer but the daemon has no QUIC listener.
    #[error("link `{0}` waits for a QUIC peer, but quic_listen is not set")]
    QuicWithoutListen(Name),
    /// The QUIC listener would share the UDP link socket's address.
    #[error("quic_listen must differ from listen: the UDP link socket holds that port")]
    QuicListenClash,
    /// Link names starting with a dot are the daemon's own (`.probe`, bandwidth probes).
    #[error("link name `{0}` is reserved: names starting with `.` are the daemon's own")]
    ReservedLinkName(Name),
    /// A rule id of `u64::MAX`: ids stop one short, so that a daemon can always number
    /// the rules added after the largest one.
    #[error("rule id {0} is too large: the largest rule id is {max}", max = u64::MAX - 1)]
    RuleIdTooLarge(u64),
    /// Every rule id below `u64::MAX` has been given out.
    #[error("no rule ids are left to number new rules")]
    RuleIdsExhausted,
    /// TCP control was asked for without a token.
    #[error("control_tcp needs control_token_file: remote control never listens unauthenticated")]
    TcpControlWithoutToken,
}

impl Topology {
    /// Checks device name lengths, reserved link names, duplicates, MTUs and that every
    /// rule output exists (names themselves are valid once parsed).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut ifaces = HashSet::new();
        for i in &self.ifaces {
            if i.device().len() > MAX_DEVICE_NAME_LEN {
                return Err(ConfigError::DeviceNameTooLong {
                    iface: i.name.clone(),
                    device: i.device().clone(),
                });
            }
            if let Some(mtu) = i.mtu {
                if !(68..=65000).contains(&mtu) {
                    return Err(ConfigError::BadMtu(i.name.clone(), mtu));
                }
            }
            if !ifaces.insert(i.name.as_str()) {
                return Err(ConfigError::Duplicate {
                    what: "interface",
                    name: i.name.to_string(),
                });
            }
        }
        let mut links = HashSet::new();
        for l in &self.links {
            if l.name.is_reserved() {
                return Err(ConfigError::ReservedLinkName(l.name.clone()));
            }
            if !links.insert(l.name.as_str()) {
                return Err(ConfigError::Duplicate {
                    what: "link",
                    name: l.name.to_string(),
                });
            }
        }
        let mut ids = HashSet::new();
        for r in &self.rules {
            if let Some(id) = r.id {
                if id.0 == u64::MAX {
                    return Err(ConfigError::RuleIdTooLarge(id.0));
                }
                if !ids.insert(id) {
                    return Err(ConfigError::Duplicate {
                        what: "rule id",
                        name: id.0.to_string(),
                    });
                }
            }
            self.check_rule(&r.spec())?;
        }
        Ok(())
    }

    /// Checks that a rule has outputs and that each one exists here.
    pub fn check_rule(&self, rule: &RuleSpec) -> Result<(), ConfigError> {
        if rule.out.is_empty() {
            return Err(ConfigError::NoOutputs(rule.to_string()));
        }
        for o in &rule.out {
            match o {
                Output::Iface(n) if !self.ifaces.iter().any(|i| &i.name == n) => {
                    return Err(ConfigError::UnknownIface {
                        rule: rule.to_string(),
                        iface: n.clone(),
                    })
                }
                Output::Link(n) if !self.links.iter().any(|l| &l.name == n) => {
                    return Err(ConfigError::UnknownLink {
                        rule: rule.to_string(),
                        link: n.clone(),
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Parses a topology alone (the format of `vnet config replace FILE` and of the
    /// state file's TOML form).
    pub fn from_toml(text: &str) -> Result<Topology, ConfigError> {
        let t: Topology = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        t.validate()?;
        Ok(t)
    }

    /// Prints the topology as TOML.
    pub fn to_toml(&self) -> String {
        // Serializing plain data structures to TOML cannot fail.
        toml::to_string(self).unwrap_or_default()
    }
}

impl DaemonConfig {
    /// Queues per TAP: `tap_queues`, else one per CPU of the `cpus` the daemon may use, at
    /// most 4 (more threads than cores only contend).
    pub fn tap_queue_count(&self, cpus: usize) -> usize {
        match self.tap_queues {
            Some(q) => usize::from(q),
            None => cpus.clamp(1, 4),
        }
    }

    /// Parses and validates a config file's text.
    pub fn from_toml(text: &str) -> Result<DaemonConfig, ConfigError> {
        let c: DaemonConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Validates the settings and the topology.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.control_tcp.is_some() && self.control_token_file.is_none() {
            return Err(ConfigError::TcpControlWithoutToken);
        }
        if !(576..=65535).contains(&self.link_mtu) {
            return Err(ConfigError::BadLinkMtu(self.link_mtu));
        }
        if let Some(q) = self.tap_queues.filter(|q| !(1..=MAX_TAP_QUEUES).contains(q)) {
            return Err(ConfigError::BadTapQueues(q));
        }
        if self.quic_listen.is_none() {
            if let Some(l) = self
                .topology
                .links
                .iter()
                .find(|l| l.proto == LinkProto::Quic && l.peer.is_none())
            {
                return Err(ConfigError::QuicWithoutListen(l.name.clone()));
            }
        }
        if self
            .quic_listen
            .is_some_and(|q| q.port() == self.listen.port() && q.ip() == self.listen.ip())
        {
            return Err(ConfigError::QuicListenClash);
        }
        self.topology.validate()
    }
}

/// Most queues a TAP gets.
pub const MAX_TAP_QUEUES: u16 = 16;

fn default_link_mtu() -> u32 {
    1500
}

fn default_offload() -> bool {
    true
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_LINK_PORT))
}

fn default_control() -> PathBuf {
    PathBuf::from("/run/vnet/vnetd.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
node = "h1"
key_file = "/etc/vnet/key"
listen = "198.18.0.2:7400"

[[iface]]
name = "vm0"
kind = "tap"
device = "eth0"
netns = "lab-vm0"
mac = "02:00:00:00:00:01"
mtu = 1500

[[link]]
name = "h0-h1"
proto = "tcp"
peer = "198.18.0.1:7400"

[[rule]]
src = "any"
dst = "02:00:00:00:00:01"
out = ["iface:vm0"]

[[rule]]
src = "any"
dst = "none"
out = ["link:h0-h1"]
"#;

    #[test]
    fn default_tap_mtu_leaves_room_for_the_worst_link() {
        // 1500 − 40 − 8 − 16 − 24 − 18: a 1394-byte packet, 1412-byte frame, sealed in a
        // 1452-byte UDP payload, is a 1500-byte IPv6 packet.
        assert_eq!(default_tap_mtu(1500), 1394);
        assert_eq!(default_tap_mtu(9000), 8894);
        assert_eq!(default_tap_mtu(600), MIN_TAP_MTU);
    }

    #[test]
    fn tap_queues_default_to_the_cpus_and_are_bounded() {
        let c = DaemonConfig::from_toml(EXAMPLE).unwrap();
        assert_eq!(
            (c.tap_queue_count(0), c.tap_queue_count(2), c.tap_queue_count(64)),
            (1, 2, 4)
        );
        let two = EXAMPLE.replace("listen =", "tap_queues = 2\nlisten =");
        assert_eq!(DaemonConfig::from_toml(&two).unwrap().tap_queue_count(64), 2);
        for bad in ["0", "17"] {
            let text = EXAMPLE.replace("listen =", &format!("tap_queues = {bad}\nlisten ="));
            assert!(matches!(
                DaemonConfig::from_toml(&text),
                Err(ConfigError::BadTapQueues(_))
            ));
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let c = DaemonConfig::from_toml(EXAMPLE).unwrap();
        assert_eq!(c.node, "h1");
        assert_eq!(c.topology.ifaces[0].device(), "eth0");
        assert_eq!(c.topology.links[0].proto, LinkProto::Tcp);
        assert_eq!(c.topology.rules.len(), 2);
        assert_eq!(c.control, PathBuf::from("/run/vnet/vnetd.sock"));
    }

    #[test]
    fn topology_round_trips_through_toml() {
        let c = DaemonConfig::from_toml(EXAMPLE).unwrap();
        let text = c.topology.to_toml();
        assert_eq!(Topology::from_toml(&text).unwrap(), c.topology);
    }

    #[test]
    fn rejects_rules_to_missing_ports_and_bad_names() {
        let bad = EXAMPLE.replace("out = [\"link:h0-h1\"]", "out = [\"link:nowhere\"]");
        assert!(matches!(
            DaemonConfig::from_toml(&bad),
            Err(ConfigError::UnknownLink { .. })
        ));
        let bad = EXAMPLE.replace("out = [\"iface:vm0\"]", "out = [\"iface:vm9\"]");
        assert!(matches!(
            DaemonConfig::from_toml(&bad),
            Err(ConfigError::UnknownIface { .. })
        ));
        // A bad name fails to parse, with the name's error and where it is.
        let bad = EXAMPLE.replace("node = \"h1\"", "node = \"h 1\"");
        assert!(matches!(
            DaemonConfig::from_toml(&bad),
            Err(ConfigError::Syntax(m)) if m.contains("name \"h 1\" contains ' '") && m.contains("line 2")
        ));
        let bad = EXAMPLE.replace("name = \"h0-h1\"", "name = \"h0/h1\"");
        assert!(matches!(
            DaemonConfig::from_toml(&bad),
            Err(ConfigError::Syntax(m)) if m.contains("name \"h0/h1\" contains '/'")
        ));
        let bad = EXAMPLE.replace("link:h0-h1", "link:h0 h1");
        assert!(matches!(
            DaemonConfig::from_toml(&bad),
            Err(ConfigError::Syntax(m)) if m.contains("name \"h0 h1\" contains ' '")
        ));
        // Device names have Linux's limit on top, also when they default to the name.
        let bad = EXAMPLE.replace("device = \"eth0\"", "device = \"a-sixteen-bytes0\"");
        assert!(matches!(
            DaemonConfig::from_toml(&bad),
            Err(ConfigError::DeviceNameTooLong { iface, device }) if iface == "vm0" && device.len() == 16
        ));
        let bad = EXAMPLE
            .replace("device = \"eth0\"\n", "")
            .replace("vm0", "a-sixteen-bytes0");
        assert_eq!(
            DaemonConfig::from_toml(&bad).map_err(|e| e.to_string()),
            Err(
                "interface `a-sixteen-bytes0`: device name `a-sixteen-bytes0` is 16 bytes long; \
                 Linux allows at most 15"
                    .to_string()
            )
        );
        let bad = EXAMPLE.replace("mtu = 1500", "mtu = 20");
        assert!(matches!(
            DaemonConfig::from_toml(&bad),
            Err(ConfigError::BadMtu(..))
        ));
        let bad = EXAMPLE.replace("proto = \"tcp\"", "proto = \"sctp\"");
        assert!(matches!(
            DaemonConfig::from_toml(&bad),
            Err(ConfigError::Syntax(_))
        ));
        let bad = format!("{EXAMPLE}\n[[link]]\nname = \".probe\"\nproto = \"tcp\"\n");
        assert!(matches!(
            DaemonConfig::from_toml(&bad),
            Err(ConfigError::ReservedLinkName(n)) if n == ".probe"
        ));
        let bad = format!("{EXAMPLE}\n[[link]]\nname = \"h0-h1\"\nproto = \"udp\"\n");
        assert!(matches!(
            DaemonConfig::from_toml(&bad),
            Err(ConfigError::Duplicate { .. })
        ));
    }
}
