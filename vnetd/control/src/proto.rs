//! Control messages: postcard-encoded, each prefixed by its length as a big-endian `u32`.
//!
//! A client sends one [`RequestEnvelope`] and reads one [`ResponseEnvelope`], as many times
//! as it likes on one connection. The version travels in every envelope; a daemon answers
//! a request of another version with [`ControlError::Version`] and no other effect.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use vnet_core::config::{IfaceSpec, LinkProto, LinkSpec, Topology};
pub use vnet_core::forward::PortCounters;
use vnet_core::name::Name;
use vnet_core::rule::RuleSpec;
use vnet_core::table::RuleId;

/// Version of the control protocol this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest encoded message either side accepts (a whole configuration with many rules).
pub const MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024;
/// Length of the frame prefix.
pub const LEN_PREFIX: usize = 4;

/// A request with its protocol version and, on TCP, the access token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// The client's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The token TCP control requires; ignored on the Unix socket.
    pub token: Option<String>,
    /// What to do.
    pub request: Request,
}

/// The control primitives (thesis §3.2) and their extensions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Daemon name, version, uptime.
    Status,
    /// List local interfaces.
    IfaceList,
    /// Create a TAP or attach an existing device.
    IfaceAdd(IfaceSpec),
    /// Remove an interface (refused while a rule sends to it).
    IfaceDel {
        /// Interface name.
        name: Name,
    },
    /// List links with their state.
    LinkList,
    /// Add a link (dial it, or wait for the peer).
    LinkAdd(LinkSpec),
    /// Delete a link (refused while a rule sends to it).
    LinkDel {
        /// Link name.
        name: Name,
    },
    /// List forwarding rules with their priority and hit counters.
    RuleList,
    /// Add a rule; the answer carries its id.
    RuleAdd(RuleSpec),
    /// Delete a rule by id.
    RuleDel {
        /// Rule id.
        id: RuleId,
    },
    /// Counters of every interface, link and rule, and drops by reason.
    Stats,
    /// The whole topology (interfaces, links, rules, bound).
    ConfigGet,
    /// Replace the whole topology in one step.
    ConfigReplace(Topology),
    /// Set (or clear) the upper bound on configuration time, in milliseconds.
    SetConfigTimeBound {
        /// The bound; `None` clears it.
        ms: Option<u64>,
    },
    /// The local VTTIF traffic matrix: cumulative bytes and frames per (src, dst) MAC pair
    /// of frames to and from local interfaces, with the daemon's uptime.
    VttifMatrix,
    /// Switch VTTIF accounting on or off (to measure its cost).
    VttifSet {
        /// Count frames when true.
        enabled: bool,
    },
    /// Round-trip time and throughput of every link, as its sessions measure them
    /// (keepalive timestamps, QUIC's estimate, port counters).
    Measure,
    /// Measure the bandwidth available toward another daemon: send filler over one TCP
    /// connection to its link listener, authenticated with the network key, until
    /// `max_bytes` or `max_ms`, and take the rate the receiver saw. Limits are clamped
    /// (`vnet_core::measure::ProbePlan`); one probe at a time per daemon and role.
    Probe {
        /// The other daemon's link listen address (its `Status::listen`).
        to: SocketAddr,
        /// Bytes to send at most (default 8 MiB, clamped to 1 MiB..=256 MiB).
        max_bytes: Option<u64>,
        /// Milliseconds to send for at most (default 1000, clamped to 10..=5000).
        max_ms: Option<u64>,
    },
}

/// A response with the daemon's protocol version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// The daemon's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// The outcome.
    pub result: Result<Response, ControlError>,
}

/// Successful answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The request took effect and has nothing to report.
    Done,
    /// Answer to [`Request::Status`].
    Status(StatusReport),
    /// Answer to [`Request::IfaceList`].
    Ifaces(Vec<IfaceStatus>),
    /// Answer to [`Request::LinkList`].
    Links(Vec<LinkStatus>),
    /// Answer to [`Request::RuleList`].
    Rules(Vec<RuleStatus>),
    /// Answer to [`Request::RuleAdd`].
    RuleAdded(RuleId),
    /// Answer to [`Request::Stats`].
    Stats(StatsReport),
    /// Answer to [`Request::ConfigGet`].
    Config(Topology),
    /// Answer to [`Request::VttifMatrix`].
    VttifMatrix(vttif::Snapshot),
    /// Answer to [`Request::Measure`].
    Measurements(MeasureReport),
    /// Answer to [`Request::Probe`].
    Probe(ProbeResult),
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ControlError {
    /// Client and daemon speak different protocol versions.
    #[error("protocol version mismatch: daemon speaks {daemon}, client {client}")]
    Version {
        /// The daemon's version.
        daemon: u16,
        /// The client's version.
        client: u16,
    },
    /// The TCP control token is missing or wrong.
    #[error("unauthorized: wrong or missing control token")]
    Unauthorized,
    /// The request would make an invalid configuration.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The named object does not exist.
    #[error("no {what} `{name}`")]
    NotFound {
        /// "interface", "link" or "rule".
        what: String,
        /// Its name or id.
        name: String,
    },
    /// An object with that name exists already.
    #[error("{what} `{name}` exists already")]
    Exists {
        /// "interface" or "link".
        what: String,
        /// Its name.
        name: String,
    },
    /// The object is still used (a rule sends to it).
    #[error("{what} `{name}` is used by rule {rule}; delete the rule first")]
    InUse {
        /// "interface" or "link".
        what: String,
        /// Its name.
        name: String,
        /// The first rule using it.
        rule: u64,
    },
    /// The system refused (a TAP could not be created, a device is missing, ...).
    #[error("system error: {0}")]
    System(String),
    /// The request could not be decoded.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A bandwidth probe was refused (here or by the peer) or failed; the reason says
    /// which.
    #[error("probe failed: {0}")]
    Probe(String),
}

/// Answer to [`Request::Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Node name.
    pub node: String,
    /// vnetd version.
    pub version: String,
    /// Milliseconds since start.
    pub uptime_ms: u64,
    /// Link listen address.
    pub listen: String,
    /// Configuration-time bound, if set.
    pub config_time_bound_ms: Option<u64>,
}

/// An interface and its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceStatus {
    /// As configured.
    pub spec: IfaceSpec,
    /// True while the device is open and forwarding.
    pub up: bool,
    /// Why it is not up, if it is not.
    pub error: Option<String>,
    /// Counters.
    pub counters: PortCounters,
}

/// State of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkState {
    /// Dialing, or handshaking.
    Connecting,
    /// Waiting for the peer to dial in.
    Waiting,
    /// Authenticated and forwarding.
    Up,
}

/// A link and its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkStatus {
    /// As configured.
    pub spec: LinkSpec,
    /// Current state.
    pub state: LinkState,
    /// The peer daemon's node name, once authenticated.
    pub peer_node: Option<String>,
    /// The peer's address of the current session.
    pub remote: Option<String>,
    /// Sessions established so far (reconnects show here).
    pub sessions: u64,
    /// Last error (dial, handshake), if any.
    pub last_error: Option<String>,
    /// Counters.
    pub counters: PortCounters,
}

impl LinkStatus {
    /// Whether the link is authenticated and forwarding.
    pub fn is_up(&self) -> bool {
        self.state == LinkState::Up
    }
}

/// A rule with its priority and hits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStatus {
    /// Id.
    pub id: RuleId,
    /// The rule.
    pub spec: RuleSpec,
    /// Priority (see `vnetd::rule`).
    pub priority: i8,
    /// Frames that fired this rule.
    pub frames: u64,
    /// Bytes of those frames.
    pub bytes: u64,
}

/// Answer to [`Request::Stats`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Node name.
    pub node: String,
    /// Per interface: name and counters.
    pub ifaces: Vec<(String, PortCounters)>,
    /// Per link: name and counters.
    pub links: Vec<(String, PortCounters)>,
    /// Per rule: id, frames, bytes.
    pub rules: Vec<(RuleId, u64, u64)>,
    /// Dropped frames and messages by reason (only non-zero reasons).
    pub drops: Vec<(String, u64)>,
    /// Lookup cache hits, summed over workers.
    pub cache_hits: u64,
    /// Lookup cache misses, summed over workers.
    pub cache_misses: u64,
}

impl StatsReport {
    /// Counters of link `name`, if the daemon has that link.
    pub fn link(&self, name: &str) -> Option<PortCounters> {
        find_port(&self.links, name)
    }

    /// Counters of interface `name`, if the daemon has that interface.
    pub fn iface(&self, name: &str) -> Option<PortCounters> {
        find_port(&self.ifaces, name)
    }

    /// Frames and messages dropped for `reason` (`auth_failed`, `too_large`, ...); 0 when
    /// the report leaves it out (only non-zero reasons travel).
    pub fn drops(&self, reason: &str) -> u64 {
        self.drops
            .iter()
            .find(|(r, _)| r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

fn find_port(ports: &[(String, PortCounters)], name: &str) -> Option<PortCounters> {
    ports.iter().find(|(n, _)| n == name).map(|(_, c)| *c)
}

/// Answer to [`Request::Measure`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasureReport {
    /// Node name.
    pub node: String,
    /// Microseconds since the daemon started.
    pub uptime_us: u64,
    /// Every configured link, in configuration order.
    pub links: Vec<LinkMeasurement>,
}

/// What one link's sessions measured. Round-trip figures are of the current (or last)
/// session; `None` until its first sample. Rates are smoothed over about a second and
/// sampled every 400 ms while the link is up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkMeasurement {
    /// Link name.
    pub name: String,
    /// Transport.
    pub proto: LinkProto,
    /// The peer daemon's node name, once a session authenticated it.
    pub peer_node: Option<String>,
    /// The peer's address of the current session.
    pub remote: Option<String>,
    /// Current state.
    pub state: LinkState,
    /// Smoothed round-trip time (RFC 6298), microseconds.
    pub srtt_us: Option<u64>,
    /// Round-trip time variation, microseconds.
    pub rttvar_us: Option<u64>,
    /// Smallest round-trip sample, microseconds: the link's latency without queueing.
    pub min_rtt_us: Option<u64>,
    /// Round-trip samples taken.
    pub rtt_samples: u64,
    /// Frames sent to the link, bits per second (0 until measured).
    pub tx_bps: u64,
    /// Frames received from the link, bits per second (0 until measured).
    pub rx_bps: u64,
    /// Bytes sent to the link in total.
    pub tx_bytes: u64,
    /// Bytes received from the link in total.
    pub rx_bytes: u64,
}

/// Answer to [`Request::Probe`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The probed daemon's node name (authenticated).
    pub peer_node: String,
    /// Bytes the peer received.
    pub bytes: u64,
    /// From the peer's first read to its last, microseconds.
    pub elapsed_us: u64,
    /// The rate the peer received at, Mbit/s.
    pub mbps: f64,
    /// Round-trip time of the handshake (its two round trips halved), microseconds.
    pub rtt_us: u64,
    /// Bytes this daemon sent.
    pub sent: u64,
    /// The byte limit the probe ran with, after clamping.
    pub max_bytes: u64,
    /// The time limit the probe ran with, after clamping, milliseconds.
    pub max_ms: u64,
}

/// Why bytes are not a control message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix announces more than [`MAX_MESSAGE_LEN`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_LEN}-byte limit")]
    TooLong(usize),
    /// The body is not a valid postcard message of the expected type.
    #[error("undecodable message: {0}")]
    Body(String),
}

/// Encodes a message with its length prefix.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![0u8; LEN_PREFIX];
    // postcard into a Vec cannot fail for these plain data types.
    let body = postcard::to_extend(msg, Vec::new()).unwrap_or_default();
    out.extend_from_slice(&body);
    let len = (out.len() - LEN_PREFIX) as u32;
    out[..LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
    out
}

/// Reads a length prefix; errors if it exceeds [`MAX_MESSAGE_LEN`].
pub fn decode_len(prefix: [u8; LEN_PREFIX]) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_MESSAGE_LEN {
        return Err(DecodeError::TooLong(len));
    }
    Ok(len)
}

/// Decodes a message body (without its prefix). Trailing bytes are an error; a text field
/// that does not parse (a name, a rule side or output) is reported with its parser's error.
pub fn decode_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    match vnet_core::text::take_from_bytes::<T>(body) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(DecodeError::Body(format!("{} trailing bytes", rest.len()))),
        Err(e) => Err(DecodeError::Body(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vnet_core::rule::{DstMatch, MacMatch, Output};

    fn name(text: &str) -> Name {
        text.parse().unwrap()
    }

    #[test]
    fn a_request_with_a_bad_name_fails_to_decode_with_the_names_error() {
        let good = encode(&Request::IfaceDel { name: name("vm0") });
        assert_eq!(
            decode_body::<Request>(&good[LEN_PREFIX..]),
            Ok(Request::IfaceDel { name: name("vm0") })
        );
        // The same message from a client that does not check names: variant 3, the text.
        let mut bad = vec![3];
        bad.extend(postcard::to_allocvec("vm 0").unwrap());
        assert_eq!(
            decode_body::<Request>(&bad),
            Err(DecodeError::Body(
                "name \"vm 0\" contains ' '; only A-Z a-z 0-9 . _ - are allowed".into()
            ))
        );
        assert!(
            matches!(decode_body::<Request>(&[3, 5, b'v']), Err(DecodeError::Body(m)) if !m.contains("name"))
        );
    }

    #[test]
    fn requests_round_trip() {
        let reqs = vec![
            Request::Status,
            Request::RuleAdd(RuleSpec {
                src: MacMatch::Any,
                dst: DstMatch::None,
                out: vec![Output::Link(name("h0-h1"))],
            }),
            Request::RuleDel { id: RuleId(7) },
            Request::ConfigReplace(Topology::default()),
            Request::SetConfigTimeBound { ms: Some(900) },
            Request::VttifMatrix,
            Request::VttifSet { enabled: false },
            Request::Measure,
            Request::Probe {
                to: "198.18.0.3:7400".parse().unwrap(),
                max_bytes: Some(1 << 20),
                max_ms: None,
            },
        ];
        for request in reqs {
            let env = RequestEnvelope {
                version: PROTOCOL_VERSION,
                token: None,
                request,
            };
            let bytes = encode(&env);
            let len = decode_len(bytes[..4].try_into().unwrap()).unwrap();
            assert_eq!(len, bytes.len() - 4);
            assert_eq!(decode_body::<RequestEnvelope>(&bytes[4..]).unwrap(), env);
        }
    }

    #[test]
    fn appended_variants_keep_old_encodings() {
        // Adding VTTIF variants at the end left the earlier variants' tags alone.
        let old = postcard::to_allocvec(&Request::SetConfigTimeBound { ms: None }).unwrap();
        assert_eq!(old, vec![13, 0]);
        let snap = vttif::Snapshot {
            node: "h1".into(),
            enabled: true,
            uptime_us: 5,
            matrix: vttif::LocalMatrix::default(),
        };
        let bytes = encode(&ResponseEnvelope {
            version: PROTOCOL_VERSION,
            result: Ok(Response::VttifMatrix(snap.clone())),
        });
        let back: ResponseEnvelope = decode_body(&bytes[4..]).unwrap();
        assert_eq!(back.result, Ok(Response::VttifMatrix(snap)));
        // So did the measurement variants: the VTTIF ones kept their tags.
        assert_eq!(
            postcard::to_allocvec(&Request::VttifSet { enabled: true }).unwrap(),
            vec![15, 1]
        );
        assert_eq!(postcard::to_allocvec(&Request::Measure).unwrap(), vec![16]);
        let ok = |r| postcard::to_allocvec(&Ok::<Response, ControlError>(r)).unwrap()[1];
        assert_eq!(ok(Response::VttifMatrix(vttif::Snapshot::default())), 8);
    }

    #[test]
    fn measurement_answers_round_trip() {
        let answers = [
            Response::Measurements(MeasureReport {
                node: "h1".into(),
                uptime_us: 9,
                links: vec![LinkMeasurement {
                    name: "h0-h1".into(),
                    proto: LinkProto::Udp,
                    peer_node: Some("h0".into()),
                    remote: Some("198.18.0.1:7400".into()),
                    state: LinkState::Up,
                    srtt_us: Some(150),
                    rttvar_us: Some(20),
                    min_rtt_us: Some(90),
                    rtt_samples: 12,
                    tx_bps: 1_000_000,
                    rx_bps: 0,
                    tx_bytes: 123,
                    rx_bytes: 0,
                }],
            }),
            Response::Probe(ProbeResult {
                peer_node: "h2".into(),
                bytes: 5_000_000,
                elapsed_us: 1_000_000,
                mbps: 40.0,
                rtt_us: 300,
                sent: 5_000_000,
                max_bytes: 8 << 20,
                max_ms: 1000,
            }),
        ];
        for r in answers {
            let env = ResponseEnvelope {
                version: PROTOCOL_VERSION,
                result: Ok(r),
            };
            let bytes = encode(&env);
            assert_eq!(decode_body::<ResponseEnvelope>(&bytes[4..]).unwrap(), env);
        }
        let refused = ResponseEnvelope {
            version: PROTOCOL_VERSION,
            result: Err(ControlError::Probe("busy".into())),
        };
        let bytes = encode(&refused);
        assert_eq!(decode_body::<ResponseEnvelope>(&bytes[4..]).unwrap(), refused);
    }

    #[test]
    fn oversized_prefix_and_trailing_bytes_are_refused() {
        assert!(matches!(
            decode_len((MAX_MESSAGE_LEN as u32 + 1).to_be_bytes()),
            Err(DecodeError::TooLong(_))
        ));
        let mut bytes = encode(&RequestEnvelope {
            version: 1,
            token: None,
            request: Request::Stats,
        });
        bytes.push(0);
        assert!(matches!(
            decode_body::<RequestEnvelope>(&bytes[4..]),
            Err(DecodeError::Body(_))
        ));
    }

    #[test]
    fn stats_report_finds_ports_and_drops_by_name() {
        let c = |rx_frames| PortCounters {
            rx_frames,
            ..PortCounters::default()
        };
        let s = StatsReport {
            node: "h1".into(),
            ifaces: vec![("vm0".into(), c(1))],
            links: vec![("h0-h1".into(), c(2)), ("h1-h2".into(), c(3))],
            rules: Vec::new(),
            drops: vec![("too_large".into(), 4)],
            cache_hits: 0,
            cache_misses: 0,
        };
        assert_eq!(s.link("h1-h2"), Some(c(3)));
        assert_eq!(s.iface("vm0"), Some(c(1)));
        // Names are per kind: an interface is not a link.
        assert_eq!(s.link("vm0"), None);
        assert_eq!(s.iface("h0-h1"), None);
        assert_eq!(s.drops("too_large"), 4);
        assert_eq!(s.drops("auth_failed"), 0);
    }

    #[test]
    fn only_an_up_link_is_up() {
        let link = |state| LinkStatus {
            spec: LinkSpec {
                name: name("h0-h1"),
                proto: LinkProto::Tcp,
                peer: None,
                encrypt: false,
            },
            state,
            peer_node: None,
            remote: None,
            sessions: 0,
            last_error: None,
            counters: PortCounters::default(),
        };
        assert!(link(LinkState::Up).is_up());
        assert!(!link(LinkState::Connecting).is_up());
        assert!(!link(LinkState::Waiting).is_up());
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_body::<RequestEnvelope>(&body);
            let _ = decode_body::<ResponseEnvelope>(&body);
        }
    }
}
