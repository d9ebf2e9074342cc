//! The control API end to end inside one process, on loopback: a daemon with no
//! interfaces answers every primitive over its Unix socket and over TCP with a token.

use std::net::SocketAddr;
use std::sync::Arc;
use vnet_core::name::Name;

use vnet_client::{Client, ClientError};
use vnet_control::proto::{ControlError, LinkState};
use vnet_core::config::{LinkProto, LinkSpec, Topology};
use vnet_core::handshake::NetworkKey;
use vnet_core::rule::{DstMatch, MacMatch, Output, RuleSpec};
use vnetd::daemon::{Daemon, Identity};
use vnetd::link::udp;
use vnetd::server;

const TOKEN: &str = "0123456789abcdef-control-token";

struct Running {
    /// The UDP link thread (stopped when dropped).
    _udp: vnetd::threads::DataThread,
    _rt: tokio::runtime::Runtime,
    unix: std::path::PathBuf,
    tcp: SocketAddr,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn name(text: &str) -> Name {
    text.parse().unwrap()
}

fn start(test: &str) -> Running {
    let dir = std::env::temp_dir().join(format!("vnetd-control-test-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let unix = dir.join("ctl.sock");
    let state = dir.join("state.json");
    let tcp = rt.block_on(async {
        let (udp, commands) = udp::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let identity = Identity {
            node: name("t0"),
            key: NetworkKey::from_bytes([9; 32]),
            listen: udp.socket.local_addr().unwrap(),
            state_file: Some(state),
            link_mtu: 1500,
            tap_queues: 1,
        };
        let quic = vnetd::link::quic::Endpoint::bind(None).unwrap();
        let daemon: Arc<Daemon> =
            Daemon::new(identity, udp, quic, tokio::runtime::Handle::current()).unwrap();
        let udp_thread = udp::spawn(daemon.clone(), commands).unwrap();
        let unix_listener = server::bind_unix(&unix).unwrap();
        let tcp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp_listener.local_addr().unwrap();
        tokio::spawn(server::serve_unix(daemon.clone(), unix_listener));
        tokio::spawn(server::serve_tcp(daemon, tcp_listener, TOKEN.to_string()));
        (addr, udp_thread)
    });
    let (tcp, udp_thread) = tcp;
    Running {
        _rt: rt,
        _udp: udp_thread,
        unix,
        tcp,
        _dir: TempDir(dir),
    }
}

fn link(name: &str) -> LinkSpec {
    LinkSpec {
        name: name.parse().unwrap(),
        proto: LinkProto::Udp,
        peer: None,
        encrypt: false,
    }
}

#[test]
fn primitives_work_over_the_unix_socket_and_keep_state() {
    let d = start("unix");
    let mut c = Client::unix(&d.unix).unwrap();
    c.link_add(link("l1")).unwrap();
    match c.link_add(link("l1")) {
        Err(ClientError::Refused(ControlError::Exists { .. })) => {}
        other => panic!("duplicate link accepted: {other:?}"),
    }
    let rule = RuleSpec {
        src: MacMatch::Any,
        dst: DstMatch::None,
        out: vec![Output::Link(name("l1"))],
    };
    let id = c.rule_add(rule.clone()).unwrap();
    let bad = RuleSpec {
        out: vec![Output::Link(name("nowhere"))],
        ..rule
    };
    assert!(matches!(
        c.rule_add(bad),
        Err(ClientError::Refused(ControlError::Invalid(_)))
    ));
    // A link in use by a rule cannot go.
    assert!(matches!(
        c.link_del(&name("l1")),
        Err(ClientError::Refused(ControlError::InUse { .. }))
    ));
    let l = c.link_list().unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].state, LinkState::Waiting);
    let r = c.rule_list().unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].id, r[0].priority), (id, -3));
    c.set_config_time_bound(Some(940)).unwrap();
    let topology = c.config_get().unwrap();
    assert_eq!(topology.config_time_bound_ms, Some(940));
    // The state file holds exactly what config get shows.
    let state: Topology =
        serde_json::from_str(&std::fs::read_to_string(d._dir.0.join("state.json")).unwrap()).unwrap();
    assert_eq!(state, topology);
    // Replace with an empty topology in one step, then nothing is left.
    c.config_replace(Topology::default()).unwrap();
    assert_eq!(c.config_get().unwrap(), Topology::default());
    assert!(matches!(
        c.rule_del(id),
        Err(ClientError::Refused(ControlError::NotFound { .. }))
    ));
}

#[test]
fn tcp_control_requires_the_token() {
    let d = start("tcp");
    let mut good = Client::tcp(d.tcp, TOKEN.to_string()).unwrap();
    assert_eq!(good.status().unwrap().node, "t0");
    let mut bad = Client::tcp(d.tcp, "not-the-token-at-all".to_string()).unwrap();
    assert!(matches!(
        bad.status(),
        Err(ClientError::Refused(ControlError::Unauthorized))
    ));
    // An unauthorized request changes nothing.
    assert!(matches!(
        bad.link_add(link("sneaky")),
        Err(ClientError::Refused(ControlError::Unauthorized))
    ));
    assert!(good.link_list().unwrap().is_empty());
}
