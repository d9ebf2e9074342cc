//! QUIC links (quinn): frames travel as unreliable datagrams (RFC 9221), so a lost frame
//! is lost as on Ethernet and the application's TCP never runs over a second reliable
//! transport.
//!
//! **Authentication.** TLS 1.3 runs with throwaway self-signed certificates that nobody
//! verifies; the link is authenticated by vnet's own handshake (a
//! [`vnet_core::session::LinkSession`] with [`Policy::handshake_only`]) on the connection's
//! first bidirectional stream, with the TLS exporter as channel binding:
//! both ends mix `export_keying_material("vnet/1 quic")` into their proofs, so a man in the
//! middle that terminates TLS on each side sees different exporters and the proofs fail.
//! Confidentiality and integrity of the datagrams come from QUIC itself.
//!
//! **Frames larger than a datagram.** A QUIC datagram holds about 1200–1400 bytes, less
//! than a full Ethernet frame; frames are split into at most
//! [`fragment::MAX_FRAGMENTS`] datagrams ([`vnet_core::fragment`]) and reassembled by the
//! peer; losing one fragment loses that frame only. Each datagram is
//! `hop limit (u8) || fragment header || chunk`. TSO super-frames from a VM are first cut
//! into TCP segments that fit one datagram (`vnet_core::offload`), so they are not fragmented;
//! the receiver glues consecutive segments back into super-frames (`vnet_core::gro`) before
//! its TAP write, which made QUIC links about 2.6× faster in the lab.
//!
//! **Measurement.** QUIC keeps its own round-trip estimate from acknowledgements; every
//! `KEEPALIVE` a session takes it as a sample, with the port counters
//! (`link::meter`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::rustls;
use tokio::task::JoinHandle;

use crate::daemon::{Daemon, LinkInfo};
use crate::datapath::PortTx;
use crate::link::meter::SessionMeter;
use crate::link::stream::{adopt_session, initiate, read_hello, redial, respond, Answered, Inbox, LinkError};
use crate::link::{forward_from, tap_coalescer, update, SOCKET_BUFFER};
use vnet_core::config::LinkProto;
use vnet_core::forward::DropReason;
use vnet_core::fragment::{self, Reassembler};
use vnet_core::handshake::Session;
use vnet_core::name::Name;
use vnet_core::rule::Output;
use vnet_core::session::{Policy, DEAD_AFTER, KEEPALIVE, STREAM_HANDSHAKE_TIMEOUT};

const ALPN: &[u8] = b"vnet/1";
const EXPORTER_LABEL: &[u8] = b"vnet/1 quic";
/// QUIC's own keepalive is the links' ([`KEEPALIVE`]); its idle timeout their dead-peer
/// timeout ([`DEAD_AFTER`]): a dead peer is noticed within it, and a restarted one is
/// re-dialed by the dialer's loop.
const IDLE_TIMEOUT: Duration = DEAD_AFTER;
/// Datagram buffers: a few milliseconds of frames at link speed.
const DATAGRAM_BUFFER: usize = 4 * 1024 * 1024;

/// The daemon's QUIC endpoint and the client configuration it dials with.
#[derive(Debug, Clone)]
pub struct Endpoint {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    accepts: bool,
}

/// The send side of a QUIC link session.
#[derive(Debug)]
pub struct QuicTx {
    conn: quinn::Connection,
    next_id: AtomicU16,
}

impl QuicTx {
    /// Largest frame that fits one datagram whole (larger ones are fragmented).
    pub fn max_frame(&self) -> usize {
        let limit = self.conn.max_datagram_size().unwrap_or(0);
        limit.saturating_sub(1 + fragment::FRAGMENT_HEADER_LEN)
    }

    /// Sends one frame as one or more datagrams.
    pub fn send(&self, frame: &[u8], hops: u8) -> Result<(), DropReason> {
        let limit = self.conn.max_datagram_size().ok_or(DropReason::TooLarge)?;
        let id = self.next_id.fetch_add(1, Relaxed);
        let mut failed = None;
        fragment::split(frame, limit.saturating_sub(1), id, |head, chunk| {
            let mut d = Vec::with_capacity(1 + head.len() + chunk.len());
            d.push(hops);
            d.extend_from_slice(&head);
            d.extend_from_slice(chunk);
            if let Err(e) = self.conn.send_datagram(d.into()) {
                failed = Some(match e {
                    quinn::SendDatagramError::TooLarge => DropReason::TooLarge,
                    quinn::SendDatagramError::ConnectionLost(_) => DropReason::PortDown,
                    _ => DropReason::SendError,
                });
            }
        })
        .map_err(|_| DropReason::TooLarge)?;
        failed.map_or(Ok(()), Err)
    }
}

/// Polls `future` once: its output if it is ready now, else `None` (the future is dropped,
/// so it must be cancel-safe, as quinn's `read_datagram` is).
fn ready_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEPALIVE));
    // 5 s fits quinn's VarInt bound; the conversion cannot fail.
    t.max_idle_timeout(IDLE_TIMEOUT.try_into().ok());
    t.datagram_receive_buffer_size(Some(DATAGRAM_BUFFER));
    t.datagram_send_buffer_size(DATAGRAM_BUFFER);
    Arc::new(t)
}

fn tls_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("QUIC TLS setup: {e}"))
}

impl Endpoint {
    /// Binds the endpoint: a server and client on `listen`, or a client only on an
    /// ephemeral port when `listen` is `None` (links can then dial but not wait).
    pub fn bind(listen: Option<SocketAddr>) -> std::io::Result<Endpoint> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(UnverifiedCertificate(provider.clone())))
            .with_no_client_auth();
        client.alpn_protocols = vec![ALPN.to_vec()];
        let mut client =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client).map_err(tls_error)?));
        client.transport_config(transport());
        let server = match listen {
            Some(_) => {
                let cert = rcgen::generate_simple_self_signed(vec!["vnet".to_string()]).map_err(tls_error)?;
                let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
                let mut server = rustls::ServerConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(tls_error)?
                    .with_no_client_auth()
                    .with_single_cert(vec![cert.cert.der().clone()], key.into())
                    .map_err(tls_error)?;
                server.alpn_protocols = vec![ALPN.to_vec()];
                let mut server = quinn::ServerConfig::with_crypto(Arc::new(
                    QuicServerConfig::try_from(server).map_err(tls_error)?,
                ));
                server.transport_config(transport());
                Some(server)
            }
            None => None,
        };
        let socket = std::net::UdpSocket::bind(listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))))?;
        // The default buffer overflowed about once per 1000 datagrams at link speed.
        if let Err(e) = vnet_sys::grow_socket_buffers(&socket, SOCKET_BUFFER) {
            tracing::warn!("cannot grow the QUIC socket's buffers: {e}");
        }
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            server,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        Ok(Endpoint {
            endpoint,
            client,
            accepts: listen.is_some(),
        })
    }

    /// Whether peers can dial in.
    pub fn accepts(&self) -> bool {
        self.accepts
    }
}

/// Verifies the server's TLS signature with its certificate's key but trusts no
/// certificate: the vnet handshake, bound to the TLS session, authenticates the peer.
#[derive(Debug)]
struct UnverifiedCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for UnverifiedCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn binding(conn: &quinn::Connection) -> Result<[u8; 32], LinkError> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| LinkError::Transport("TLS exporter unavailable".into()))?;
    Ok(out)
}

fn transport_error(e: impl std::fmt::Display) -> LinkError {
    LinkError::Transport(e.to_string())
}

/// Spawns the task that keeps link `name` dialed to `peer` over QUIC.
pub fn spawn_dialer(
    daemon: Arc<Daemon>,
    endpoint: Endpoint,
    name: Name,
    peer: SocketAddr,
    info: Arc<Mutex<LinkInfo>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        redial(&name, peer, &info, || async {
            let connecting = endpoint
                .endpoint
                .connect_with(endpoint.client.clone(), peer, "vnet")
                .map_err(transport_error)?;
            let conn = tokio::time::timeout(STREAM_HANDSHAKE_TIMEOUT, connecting)
                .await
                .map_err(|_| LinkError::Timeout)?
                .map_err(transport_error)?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(transport_error)?;
            let (_, session) = initiate(
                &daemon,
                &name,
                Policy::handshake_only(),
                binding(&conn)?,
                &mut Inbox::default(),
                &mut recv,
                &mut send,
            )
            .await?;
            tracing::info!(link = %name, peer = %peer, node = %session.peer_node, "link up (quic, dialed)");
            Ok(run_session(&daemon, &name, session, conn, &info).await)
        })
        .await
    })
}

/// Accepts QUIC connections for links that wait for their peer, forever.
pub async fn serve(daemon: Arc<Daemon>, endpoint: Endpoint) {
    while let Some(incoming) = endpoint.endpoint.accept().await {
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let from = incoming.remote_address();
            if let Err(e) = accept(daemon, incoming).await {
                tracing::warn!(peer = %from, "incoming quic link refused: {e}");
            }
        });
    }
}

async fn accept(daemon: Arc<Daemon>, incoming: quinn::Incoming) -> Result<(), LinkError> {
    let from = incoming.remote_address();
    let conn = tokio::time::timeout(STREAM_HANDSHAKE_TIMEOUT, incoming)
        .await
        .map_err(|_| LinkError::Timeout)?
        .map_err(transport_error)?;
    let (mut send, mut recv) = tokio::time::timeout(STREAM_HANDSHAKE_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| LinkError::Timeout)?
        .map_err(transport_error)?;
    let mut inbox = Inbox::default();
    let hello = read_hello(&daemon.datapath.drops, &mut inbox, &mut recv).await?;
    let Answered {
        agreed: session,
        info,
        ..
    } = respond(
        &daemon,
        LinkProto::Quic,
        &hello,
        binding(&conn)?,
        &mut inbox,
        &mut recv,
        &mut send,
    )
    .await?;
    tracing::info!(link = %session.link, peer = %from, node = %session.peer_node, "link up (quic, accepted)");
    let (task_daemon, task_info, name) = (daemon.clone(), info.clone(), session.link.clone());
    adopt_session(&daemon, session.link.to_string(), info, async move {
        run_session(&task_daemon, &name, session, conn, &task_info).await
    });
    Ok(())
}

/// Moves frames on an authenticated connection until it fails; returns why it ended.
async fn run_session(
    daemon: &Arc<Daemon>,
    name: &Name,
    session: Session,
    conn: quinn::Connection,
    info: &Arc<Mutex<LinkInfo>>,
) -> LinkError {
    let tx = Arc::new(QuicTx {
        conn: conn.clone(),
        next_id: AtomicU16::new(0),
    });
    let token = daemon.link_up(name, PortTx::Quic(tx));
    update(info, |i| i.session_up(&session.peer_node, conn.remote_address()));
    let (port, stats) = daemon.port(&Output::Link(name.clone()));
    let meter = SessionMeter::new(info.clone(), stats.clone());
    let ticker = tokio::spawn({
        let conn = conn.clone();
        async move {
            let mut tick = tokio::time::interval(KEEPALIVE);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                meter.sample_counters(std::time::Instant::now());
                meter.sample_rtt(conn.rtt());
            }
        }
    });
    let mut worker = daemon.datapath.worker();
    let mut reassembler = Reassembler::default();
    // The peer cut super-frames into datagram-sized segments; gluing back the segments
    // that arrive together saves a TAP write and a pass through the guest's stack each.
    let mut coalescer = tap_coalescer();
    let end = loop {
        let received = match ready_now(conn.read_datagram()) {
            Some(r) => r,
            None => {
                // Nothing more queued: what the coalescer holds goes out before we wait.
                coalescer.flush(&mut forward_from(daemon, &mut worker, port, &stats));
                daemon.datapath.report_cache(&mut worker);
                conn.read_datagram().await
            }
        };
        let datagram = match received {
            Ok(d) => d,
            Err(e) => break transport_error(e),
        };
        let Some((&hops, fragment)) = datagram.split_first() else {
            daemon.datapath.drops.add(DropReason::BadMessage);
            continue;
        };
        match reassembler.push(fragment) {
            Ok(Some(frame)) => {
                coalescer.push(hops, &frame, &mut forward_from(daemon, &mut worker, port, &stats));
            }
            Ok(None) => {}
            Err(_) => daemon.datapath.drops.add(DropReason::BadMessage),
        }
    };
    ticker.abort();
    daemon.link_down(name, token);
    conn.close(0u32.into(), b"session ended");
    end
}
