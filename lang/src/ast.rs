//! The tree: hosts, then blocks of ADD or DELETE statements, each statement one
//! interface, link or rule. The same declaration types make up the [`crate::Overlay`]
//! model, so a description and the state it builds speak one vocabulary.

use std::cmp::Ordering;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use vnet_core::mac::MacAddr;
use vnet_core::name::Name;
use vnet_core::rate::Rate;
use vnet_core::rule::{DstMatch, MacMatch};

use crate::source::Span;

/// A whole description: `BEGIN hosts blocks END`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Description {
    /// `HOST` lines, in order.
    pub hosts: Vec<Statement<Host>>,
    /// `ADD` / `DELETE` blocks, in order.
    pub blocks: Vec<Block>,
}

/// One statement with where it came from. Statements compare by what they declare.
#[derive(Clone, Debug)]
pub struct Statement<T> {
    /// What it declares.
    pub decl: T,
    /// The whole statement.
    pub span: Span,
    /// Each word of the statement with its span, for diagnostics that point at one name.
    pub words: Vec<(String, Span)>,
}

impl<T: PartialEq> PartialEq for Statement<T> {
    fn eq(&self, other: &Statement<T>) -> bool {
        self.decl == other.decl
    }
}

impl<T: Eq> Eq for Statement<T> {}

impl<T> Statement<T> {
    /// A statement made by a program rather than parsed (no source positions).
    pub fn synthetic(decl: T) -> Statement<T> {
        Statement {
            decl,
            span: Span::default(),
            words: Vec::new(),
        }
    }

    /// The span of the first word (after the leading keyword) equal to `word`, or the whole
    /// statement's.
    pub fn span_of(&self, word: &str) -> Span {
        self.words
            .iter()
            .skip(1)
            .find(|(w, _)| w == word)
            .map_or(self.span, |(_, s)| *s)
    }
}

/// `ADD` or `DELETE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Action {
    /// The block's statements are added.
    Add,
    /// The block's statements are removed.
    Delete,
}

/// `ADD|DELETE` and the statements it applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// What to do.
    pub action: Action,
    /// Interfaces, links and rules, in source order.
    pub items: Vec<Statement<Item>>,
}

/// One statement of a block.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Item {
    /// `IFACE ...`
    Iface(Iface),
    /// `LINK ...`
    Link(Link),
    /// `FORWARD ...`
    Rule(Rule),
}

/// `HOST user AT machine port interface [ADDRESS ip] [CONTROL endpoint [TOKEN file]] [KEY file]`:
/// a machine running a vnetd.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Host {
    /// User account the daemon runs as (and `vnet up` logs in as over SSH).
    pub user: String,
    /// Machine name, used by links and rules.
    pub machine: String,
    /// Port of the daemon's TCP and UDP link listeners.
    pub port: u16,
    /// The machine's Ethernet interface (the proxy's LAN interface in the thesis).
    pub interface: String,
    /// Underlay address the daemon listens on; defaults to `machine` when that is an
    /// address.
    pub address: Option<IpAddr>,
    /// Where tools reach the daemon's control API.
    pub control: Option<Control>,
    /// The network key file on that machine (for `vnet up`).
    pub key_file: Option<PathBuf>,
}

impl Host {
    /// The address the daemon listens on for links, if known.
    pub fn listen_ip(&self) -> Option<IpAddr> {
        self.address.or_else(|| self.machine.parse().ok())
    }
}

/// A daemon's control endpoint.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Control {
    /// A Unix socket path (`CONTROL /run/vnet/h1.sock`).
    Unix(PathBuf),
    /// A TCP listener and the file holding its token (`CONTROL 10.0.0.1:7500 TOKEN /etc/vnet/token`).
    Tcp {
        /// Listener address.
        addr: SocketAddr,
        /// File holding the token.
        token_file: PathBuf,
    },
}

/// Kind of a local interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum IfaceKind {
    /// A TAP device the daemon creates (a VM's NIC).
    Tap,
    /// An existing device the daemon captures.
    Attach,
}

/// `IFACE TAP|ATTACH machine name [MAC mac] [DEVICE dev] [NETNS ns] [MTU n]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Iface {
    /// The machine whose daemon owns it.
    pub machine: String,
    /// Name rules use.
    pub name: Name,
    /// TAP or captured device.
    pub kind: IfaceKind,
    /// The MAC of the VM behind it (a TAP gets it).
    pub mac: Option<MacAddr>,
    /// Kernel device name, when it differs from `name`.
    pub device: Option<Name>,
    /// Named network namespace of the device.
    pub netns: Option<Name>,
    /// MTU of a TAP.
    pub mtu: Option<u32>,
}

/// Transport of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum LinkProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// QUIC (parses; vnetd does not support it yet, so compiling refuses it).
    Quic,
}

/// `LINK TCP|UDP|QUIC owner owner peer [PORT n] [KEY name] [RESERVE rate] [ENCRYPT]`
/// (fig. 5: `LINK type machine machine machine`, the link living on the first machine,
/// between the other two). The owner is one end and dials the other; both ends'
/// daemons declare the link under [`link_name`] of its ends.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Link {
    /// The end that dials.
    pub owner: String,
    /// The end that waits.
    pub peer: String,
    /// Transport.
    pub proto: LinkProto,
    /// Port to dial on the peer when it is not the peer host's port.
    pub port: Option<u16>,
    /// Name of the key the link authenticates with (vnetd has one key per overlay, so
    /// compiling refuses it for now).
    pub key: Option<String>,
    /// Bandwidth reservation (no backend yet, so compiling refuses it).
    pub reserve: Option<Rate>,
    /// Seal frames with per-session keys (TCP and UDP; QUIC always encrypts).
    pub encrypt: bool,
}

impl Link {
    /// The name both daemons know the link by.
    pub fn name(&self) -> String {
        link_name(&self.owner, &self.peer)
    }

    /// The end that is not `machine`, if `machine` is an end.
    pub fn other_end(&self, machine: &str) -> Option<&str> {
        if self.owner == machine {
            Some(&self.peer)
        } else if self.peer == machine {
            Some(&self.owner)
        } else {
            None
        }
    }
}

/// Orders machine names naturally: `h2` before `h10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let split = |s: &str| {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (stem, num) = s.split_at(s.len() - digits);
        (stem.to_string(), num.parse::<u128>().ok())
    };
    split(a).cmp(&split(b)).then_with(|| a.cmp(b))
}

/// The name of the link between machines `a` and `b`: `lower-higher` in natural order,
/// as the lab names its links (`h0-h1`, `h2-h10`).
pub fn link_name(a: &str, b: &str) -> String {
    if natural_cmp(a, b) == Ordering::Greater {
        format!("{b}-{a}")
    } else {
        format!("{a}-{b}")
    }
}

/// Where a rule sends a frame.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Target {
    /// Over the link from the rule's machine to this machine (`EDGE ... m peer`).
    Edge(String),
    /// To a local interface (`INTERFACE ... name`).
    Iface(Name),
}

/// `FORWARD EDGE machine src dst machine peer` or `FORWARD INTERFACE machine src dst iface`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Rule {
    /// The daemon that holds the rule.
    pub machine: String,
    /// Source side.
    #[serde(serialize_with = "display")]
    pub src: MacMatch,
    /// Destination side.
    #[serde(serialize_with = "display")]
    pub dst: DstMatch,
    /// Output.
    pub out: Target,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

type SideKey = (u8, [u8; 6]);

fn mac_key(m: &MacMatch) -> SideKey {
    match m {
        MacMatch::Exact(a) => (0, a.0),
        MacMatch::Not(a) => (1, a.0),
        MacMatch::Any => (2, [0; 6]),
    }
}

fn dst_key(d: &DstMatch) -> SideKey {
    match d {
        DstMatch::Mac(m) => mac_key(m),
        DstMatch::None => (3, [0; 6]),
    }
}

impl Rule {
    fn key(&self) -> (&str, SideKey, SideKey, &Target) {
        (&self.machine, dst_key(&self.dst), mac_key(&self.src), &self.out)
    }
}

impl PartialOrd for Rule {
    fn partial_cmp(&self, other: &Rule) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Rule {
    /// By machine (natural order), destination, source, output.
    fn cmp(&self, other: &Rule) -> Ordering {
        natural_cmp(&self.machine, &other.machine).then_with(|| self.key().cmp(&other.key()))
    }
}
