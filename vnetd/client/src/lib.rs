//! A blocking control client, for the `vnet` CLI, the lab and tests: one method per
//! control primitive, each returning the answer that primitive has.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vnet_control::proto::{
    self, ControlError, IfaceStatus, LinkStatus, MeasureReport, ProbeResult, Request, RequestEnvelope,
    Response, ResponseEnvelope, RuleStatus, StatsReport, StatusReport, LEN_PREFIX, PROTOCOL_VERSION,
};
use vnet_core::config::{IfaceSpec, LinkSpec, Topology};
use vnet_core::name::Name;
use vnet_core::rule::RuleSpec;
use vnet_core::table::RuleId;

/// How long the client waits for an answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a control request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon could not be reached or the connection broke.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The daemon's answer does not decode.
    #[error("bad answer from the daemon: {0}")]
    Decode(#[from] proto::DecodeError),
    /// The daemon refused the request.
    #[error("{0}")]
    Refused(#[from] ControlError),
    /// The daemon answered with a response that belongs to another request.
    #[error("unexpected answer from vnetd: {answer} to {request}")]
    UnexpectedAnswer {
        /// The request's variant name (`LinkList`, ...).
        request: &'static str,
        /// The answer's variant name (`Done`, ...).
        answer: &'static str,
    },
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// A connection to one daemon's control socket.
pub struct Client {
    stream: Stream,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client")
    }
}

/// The answer of variant `$variant` with its payload, or nothing.
macro_rules! payload {
    ($variant:ident) => {
        |r| match r {
            Response::$variant(v) => Some(v),
            _ => None,
        }
    };
}

/// `Done`, or nothing.
fn done(r: Response) -> Option<()> {
    matches!(r, Response::Done).then_some(())
}

impl Client {
    /// Connects to a Unix control socket.
    pub fn unix(path: &Path) -> Result<Client, ClientError> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Client {
            stream: Stream::Unix(s),
            token: None,
        })
    }

    /// Connects to a TCP control listener with its token.
    pub fn tcp(addr: SocketAddr, token: String) -> Result<Client, ClientError> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Client {
            stream: Stream::Tcp(s),
            token: Some(token),
        })
    }

    /// Daemon name, version, uptime.
    pub fn status(&mut self) -> Result<StatusReport, ClientError> {
        self.call(Request::Status, payload!(Status))
    }

    /// The local interfaces with their state.
    pub fn iface_list(&mut self) -> Result<Vec<IfaceStatus>, ClientError> {
        self.call(Request::IfaceList, payload!(Ifaces))
    }

    /// Creates a TAP or attaches an existing device.
    pub fn iface_add(&mut self, spec: IfaceSpec) -> Result<(), ClientError> {
        self.call(Request::IfaceAdd(spec), done)
    }

    /// Removes interface `name` (refused while a rule sends to it).
    pub fn iface_del(&mut self, name: &Name) -> Result<(), ClientError> {
        self.call(Request::IfaceDel { name: name.clone() }, done)
    }

    /// The links with their state.
    pub fn link_list(&mut self) -> Result<Vec<LinkStatus>, ClientError> {
        self.call(Request::LinkList, payload!(Links))
    }

    /// Adds a link (the daemon dials it, or waits for the peer).
    pub fn link_add(&mut self, spec: LinkSpec) -> Result<(), ClientError> {
        self.call(Request::LinkAdd(spec), done)
    }

    /// Deletes link `name` (refused while a rule sends to it).
    pub fn link_del(&mut self, name: &Name) -> Result<(), ClientError> {
        self.call(Request::LinkDel { name: name.clone() }, done)
    }

    /// The forwarding rules with their priority and hits.
    pub fn rule_list(&mut self) -> Result<Vec<RuleStatus>, ClientError> {
        self.call(Request::RuleList, payload!(Rules))
    }

    /// Adds a rule; the id the daemon gave it.
    pub fn rule_add(&mut self, spec: RuleSpec) -> Result<RuleId, ClientError> {
        self.call(Request::RuleAdd(spec), payload!(RuleAdded))
    }

    /// Deletes rule `id`.
    pub fn rule_del(&mut self, id: RuleId) -> Result<(), ClientError> {
        self.call(Request::RuleDel { id }, done)
    }

    /// Counters of every interface, link and rule, and drops by reason.
    pub fn stats(&mut self) -> Result<StatsReport, ClientError> {
        self.call(Request::Stats, payload!(Stats))
    }

    /// The whole topology (interfaces, links, rules, bound).
    pub fn config_get(&mut self) -> Result<Topology, ClientError> {
        self.call(Request::ConfigGet, payload!(Config))
    }

    /// Replaces the whole topology in one step.
    pub fn config_replace(&mut self, topology: Topology) -> Result<(), ClientError> {
        self.call(Request::ConfigReplace(topology), done)
    }

    /// Sets (or, with `None`, clears) the upper bound on configuration time, in
    /// milliseconds.
    pub fn set_config_time_bound(&mut self, ms: Option<u64>) -> Result<(), ClientError> {
        self.call(Request::SetConfigTimeBound { ms }, done)
    }

    /// The daemon's local VTTIF traffic matrix.
    pub fn vttif_matrix(&mut self) -> Result<vttif::Snapshot, ClientError> {
        self.call(Request::VttifMatrix, payload!(VttifMatrix))
    }

    /// Switches VTTIF accounting on or off.
    pub fn vttif_set(&mut self, enabled: bool) -> Result<(), ClientError> {
        self.call(Request::VttifSet { enabled }, done)
    }

    /// Round-trip time and throughput of every link.
    pub fn measure(&mut self) -> Result<MeasureReport, ClientError> {
        self.call(Request::Measure, payload!(Measurements))
    }

    /// Measures the bandwidth available toward the daemon whose link listener is `to`,
    /// sending at most `max_bytes` for at most `max_ms` (the daemon clamps both; `None`
    /// takes its default).
    pub fn probe(
        &mut self,
        to: SocketAddr,
        max_bytes: Option<u64>,
        max_ms: Option<u64>,
    ) -> Result<ProbeResult, ClientError> {
        self.call(
            Request::Probe {
                to,
                max_bytes,
                max_ms,
            },
            payload!(Probe),
        )
    }

    /// Sends `request` and takes from its answer what `pick` finds there; an answer
    /// `pick` does not take is [`ClientError::UnexpectedAnswer`].
    fn call<T>(&mut self, request: Request, pick: fn(Response) -> Option<T>) -> Result<T, ClientError> {
        let asked = request_name(&request);
        let answer = self.exchange(request)?;
        let answered = answer_name(&answer);
        pick(answer).ok_or(ClientError::UnexpectedAnswer {
            request: asked,
            answer: answered,
        })
    }

    /// Sends a request and waits for its answer.
    fn exchange(&mut self, request: Request) -> Result<Response, ClientError> {
        let bytes = proto::encode(&RequestEnvelope {
            version: PROTOCOL_VERSION,
            token: self.token.clone(),
            request,
        });
        let stream: &mut dyn ReadWrite = match &mut self.stream {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        };
        stream.write_all(&bytes)?;
        let mut prefix = [0u8; LEN_PREFIX];
        stream.read_exact(&mut prefix)?;
        let mut body = vec![0u8; proto::decode_len(prefix)?];
        stream.read_exact(&mut body)?;
        let envelope: ResponseEnvelope = proto::decode_body(&body)?;
        Ok(envelope.result?)
    }
}

/// A request's variant name, for errors.
fn request_name(r: &Request) -> &'static str {
    match r {
        Request::Status => "Status",
        Request::IfaceList => "IfaceList",
        Request::IfaceAdd(_) => "IfaceAdd",
        Request::IfaceDel { .. } => "IfaceDel",
        Request::LinkList => "LinkList",
        Request::LinkAdd(_) => "LinkAdd",
        Request::LinkDel { .. } => "LinkDel",
        Request::RuleList => "RuleList",
        Request::RuleAdd(_) => "RuleAdd",
        Request::RuleDel { .. } => "RuleDel",
        Request::Stats => "Stats",
        Request::ConfigGet => "ConfigGet",
        Request::ConfigReplace(_) => "ConfigReplace",
        Request::SetConfigTimeBound { .. } => "SetConfigTimeBound",
        Request::VttifMatrix => "VttifMatrix",
        Request::VttifSet { .. } => "VttifSet",
        Request::Measure => "Measure",
        Request::Probe { .. } => "Probe",
    }
}

/// An answer's variant name, for errors (its payload may be a whole topology).
fn answer_name(r: &Response) -> &'static str {
    match r {
        Response::Done => "Done",
        Response::Status(_) => "Status",
        Response::Ifaces(_) => "Ifaces",
        Response::Links(_) => "Links",
        Response::Rules(_) => "Rules",
        Response::RuleAdded(_) => "RuleAdded",
        Response::Stats(_) => "Stats",
        Response::Config(_) => "Config",
        Response::VttifMatrix(_) => "VttifMatrix",
        Response::Measurements(_) => "Measurements",
        Response::Probe(_) => "Probe",
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread::JoinHandle;

    fn name(text: &str) -> Name {
        text.parse().unwrap()
    }

    /// A fake daemon on the other end of a socket pair: for each `(expected request,
    /// answer)` it reads one request, checks it, and sends the answer. Joining it yields
    /// the requests it saw.
    fn fake_daemon(
        script: Vec<(Request, Result<Response, ControlError>)>,
    ) -> (Client, JoinHandle<Vec<RequestEnvelope>>) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let daemon = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (expected, result) in script {
                let mut prefix = [0u8; LEN_PREFIX];
                theirs.read_exact(&mut prefix).unwrap();
                let mut body = vec![0u8; proto::decode_len(prefix).unwrap()];
                theirs.read_exact(&mut body).unwrap();
                let envelope: RequestEnvelope = proto::decode_body(&body).unwrap();
                assert_eq!(envelope.request, expected);
                seen.push(envelope);
                let reply = ResponseEnvelope {
                    version: PROTOCOL_VERSION,
                    result,
                };
                theirs.write_all(&proto::encode(&reply)).unwrap();
            }
            seen
        });
        let client = Client {
            stream: Stream::Unix(ours),
            token: None,
        };
        (client, daemon)
    }

    fn status_report() -> StatusReport {
        StatusReport {
            node: "h1".into(),
            version: "0.1.0".into(),
            uptime_ms: 5,
            listen: "198.18.0.2:7400".into(),
            config_time_bound_ms: None,
        }
    }

    #[test]
    fn each_primitive_sends_its_request_and_returns_its_answer() {
        let rule = RuleSpec {
            src: vnet_core::rule::MacMatch::Any,
            dst: vnet_core::rule::DstMatch::None,
            out: vec![vnet_core::rule::Output::Link(name("h0-h1"))],
        };
        let to: SocketAddr = "198.18.0.3:7400".parse().unwrap();
        let probe = ProbeResult {
            peer_node: "h2".into(),
            bytes: 1 << 20,
            elapsed_us: 1000,
            mbps: 8.0,
            rtt_us: 100,
            sent: 1 << 20,
            max_bytes: 1 << 20,
            max_ms: 10,
        };
        let (mut c, daemon) = fake_daemon(vec![
            (Request::Status, Ok(Response::Status(status_report()))),
            (Request::RuleAdd(rule.clone()), Ok(Response::RuleAdded(RuleId(7)))),
            (Request::RuleDel { id: RuleId(7) }, Ok(Response::Done)),
            (Request::LinkDel { name: name("l1") }, Ok(Response::Done)),
            (Request::ConfigGet, Ok(Response::Config(Topology::default()))),
            (Request::SetConfigTimeBound { ms: Some(900) }, Ok(Response::Done)),
            (
                Request::Probe {
                    to,
                    max_bytes: Some(1 << 20),
                    max_ms: None,
                },
                Ok(Response::Probe(probe.clone())),
            ),
            (Request::VttifSet { enabled: false }, Ok(Response::Done)),
        ]);
        // Every request on one connection, in order.
        assert_eq!(c.status().unwrap(), status_report());
        assert_eq!(c.rule_add(rule).unwrap(), RuleId(7));
        c.rule_del(RuleId(7)).unwrap();
        c.link_del(&name("l1")).unwrap();
        assert_eq!(c.config_get().unwrap(), Topology::default());
        c.set_config_time_bound(Some(900)).unwrap();
        assert_eq!(c.probe(to, Some(1 << 20), None).unwrap(), probe);
        c.vttif_set(false).unwrap();
        let seen = daemon.join().unwrap();
        assert_eq!(seen.len(), 8);
        assert!(seen
            .iter()
            .all(|e| e.version == PROTOCOL_VERSION && e.token.is_none()));
    }

    #[test]
    fn a_wrong_variant_is_an_unexpected_answer_naming_both() {
        let (mut c, daemon) = fake_daemon(vec![
            (Request::LinkList, Ok(Response::Done)),
            (
                Request::IfaceDel { name: name("vm0") },
                Ok(Response::Status(status_report())),
            ),
        ]);
        let e = c.link_list().unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::UnexpectedAnswer {
                    request: "LinkList",
                    answer: "Done"
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().ends_with(": Done to LinkList"), "{e}");
        // A `Done` is all a deletion takes: anything else is refused too.
        let e = c.iface_del(&name("vm0")).unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::UnexpectedAnswer {
                    request: "IfaceDel",
                    answer: "Status"
                }
            ),
            "{e:?}"
        );
        daemon.join().unwrap();
    }

    #[test]
    fn a_daemon_refusal_passes_through() {
        let not_found = ControlError::NotFound {
            what: "rule".into(),
            name: "9".into(),
        };
        let (mut c, daemon) = fake_daemon(vec![(Request::RuleDel { id: RuleId(9) }, Err(not_found.clone()))]);
        match c.rule_del(RuleId(9)) {
            Err(ClientError::Refused(e)) => assert_eq!(e, not_found),
            other => panic!("{other:?}"),
        }
        daemon.join().unwrap();
    }

    #[test]
    fn a_hung_up_daemon_is_an_io_error() {
        let (mut c, daemon) = fake_daemon(Vec::new());
        daemon.join().unwrap();
        assert!(matches!(c.stats(), Err(ClientError::Io(_))));
    }
}
