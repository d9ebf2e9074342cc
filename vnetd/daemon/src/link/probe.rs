//! Active bandwidth probes between two daemons, on request only
//! ([`vnet_control::proto::Request::Probe`]).
//!
//! The prober dials the other daemon's TCP link listener and runs the ordinary link
//! handshake for the reserved link name [`PROBE_LINK`], which no configuration can
//! declare as a TCP link that waits (the responder takes it for a probe first), so both
//! ends prove the network key. After Welcome the connection is no longer a link: the
//! prober streams unframed filler as fast as TCP takes it until its byte or time limit,
//! then half-closes; the responder counts what arrives and when, and answers with a
//! [`ProbeReport`] (24 bytes). The rate is the receiver's: bytes after its first read
//! over the time from first to last read. A probe never carries frames and never
//! creates a link or port.
//!
//! Limits ([`vnet_core::measure`]): the plan is clamped to [`PROBE_MAX_BYTES`] and
//! [`vnet_core::measure::PROBE_MAX_TIME`]; each daemon sends at most one probe at a time,
//! answers at most one at a time, and answers the next one no sooner than
//! [`PROBE_MIN_INTERVAL`] after the last one ended. The responder checks its limits only
//! after the prober has proven the key, so nobody without it can keep probes out.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::daemon::Daemon;
use crate::link::stream::{establish, initiate, Inbox, LinkError};
use crate::link::{credentials, entropy};
use vnet_control::proto::{ControlError, ProbeResult};
use vnet_core::handshake::{HandshakeError, Hello};
use vnet_core::measure::{
    ProbeGate, ProbePlan, ProbeReceiver, ProbeRefusal, ProbeReport, ProbeReportError, PROBE_MAX_BYTES,
    PROBE_MAX_TIME, PROBE_MIN_INTERVAL, PROBE_REPORT_LEN,
};
use vnet_core::name::Name;
use vnet_core::session::{Admission, LinkSession, Lost, Policy};

/// The link name a probe's Hello carries.
pub const PROBE_LINK: &str = ".probe";

/// [`PROBE_LINK`] as the handshake takes it.
fn probe_link() -> Name {
    // A constant that the name rule accepts (the daemon's tests dial probes).
    Name::try_from(PROBE_LINK).unwrap_or_else(|e| unreachable!("{PROBE_LINK}: {e}"))
}
/// How long the connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the prober waits for the report once it stopped sending: what is still in
/// socket buffers and a shaped link's queue has to drain first.
const REPORT_WAIT: Duration = Duration::from_secs(10);
/// The responder stops reading this long after its Welcome, whatever the prober does.
const RECEIVE_LIMIT: Duration = PROBE_MAX_TIME.saturating_add(REPORT_WAIT);
/// Filler written, and data read, per call.
const CHUNK: usize = 256 * 1024;

/// The two roles a daemon plays in probes, each admitted by its own gate.
#[derive(Clone, Copy, Debug)]
enum Role {
    Sending,
    Answering,
}

/// Admission of the probes a daemon sends and answers.
#[derive(Debug)]
pub struct Probes {
    /// The gates' clock starts here.
    epoch: Instant,
    sending: Mutex<ProbeGate>,
    answering: Mutex<ProbeGate>,
}

impl Default for Probes {
    fn default() -> Probes {
        Probes {
            epoch: Instant::now(),
            // A daemon's own probes are spaced by whoever asks for them.
            sending: Mutex::new(ProbeGate::new(Duration::ZERO)),
            answering: Mutex::new(ProbeGate::new(PROBE_MIN_INTERVAL)),
        }
    }
}

impl Probes {
    fn gate(&self, role: Role) -> std::sync::MutexGuard<'_, ProbeGate> {
        let gate = match role {
            Role::Sending => &self.sending,
            Role::Answering => &self.answering,
        };
        // A gate is two plain fields that no panic leaves half-updated.
        gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admit(&self, role: Role) -> Result<Ticket<'_>, ProbeRefusal> {
        self.gate(role).try_start(self.epoch.elapsed())?;
        Ok(Ticket { probes: self, role })
    }
}

/// An admitted probe; ends it at its gate when dropped, however the probe ends.
#[derive(Debug)]
struct Ticket<'a> {
    probes: &'a Probes,
    role: Role,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let now = self.probes.epoch.elapsed();
        self.probes.gate(self.role).finish(now);
    }
}

/// Why a probe this daemon sent failed.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    /// The peer refused it (busy, too soon, or not a vnetd that takes probes).
    #[error("the peer refused the probe: {0}")]
    Refused(String),
    /// The peer does not hold this overlay's network key.
    #[error("authentication failed (different network key?)")]
    Auth,
    /// Connecting, the handshake or the transfer failed.
    #[error("{0}")]
    Link(LinkError),
    /// The report did not come.
    #[error("no report from the peer within {REPORT_WAIT:?} of the end of the data: {0}")]
    NoReport(String),
    /// The report contradicts itself.
    #[error("{0}")]
    BadReport(#[from] ProbeReportError),
    /// All the data arrived at once.
    #[error("the peer got all {0} bytes in one read, too fast to time; probe with more bytes")]
    Untimed(u64),
}

impl From<LinkError> for ProbeError {
    fn from(e: LinkError) -> ProbeError {
        match e {
            LinkError::Session(Lost::PeerRefused(reason)) => ProbeError::Refused(reason),
            LinkError::Session(Lost::Handshake(HandshakeError::BadProof)) => ProbeError::Auth,
            e => ProbeError::Link(e),
        }
    }
}

impl From<std::io::Error> for ProbeError {
    fn from(e: std::io::Error) -> ProbeError {
        ProbeError::Link(LinkError::Io(e))
    }
}

/// Probes the available bandwidth to the daemon whose TCP link listener is `to`,
/// sending at most `max_bytes` (default 8 MiB) for at most `max_ms` (default 1000 ms),
/// both clamped ([`ProbePlan::clamp`]). Refused while another probe from this daemon
/// runs.
pub async fn run(
    daemon: &Daemon,
    to: SocketAddr,
    max_bytes: Option<u64>,
    max_ms: Option<u64>,
) -> Result<ProbeResult, ControlError> {
    if to.ip().is_unspecified() || to.port() == 0 {
        return Err(ControlError::Invalid(format!(
            "cannot probe {to}: give the other daemon's link listen address"
        )));
    }
    let plan = ProbePlan::clamp(max_bytes, max_ms);
    let _ticket = daemon
        .probes
        .admit(Role::Sending)
        .map_err(|e| ControlError::Probe(format!("this daemon: {e}")))?;
    match probe(daemon, to, plan).await {
        Ok(r) => {
            tracing::info!(peer = %to, node = %r.peer_node, bytes = r.bytes, mbps = r.mbps, rtt_us = r.rtt_us, "probe done");
            Ok(r)
        }
        Err(e) => {
            // A failed authentication is counted where the Challenge was checked.
            tracing::warn!(peer = %to, "probe failed: {e}");
            Err(ControlError::Probe(format!("{to}: {e}")))
        }
    }
}

async fn probe(daemon: &Daemon, to: SocketAddr, plan: ProbePlan) -> Result<ProbeResult, ProbeError> {
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to))
        .await
        .map_err(|_| LinkError::Timeout)??;
    // The handshake's small messages must not wait for Nagle: their timing is the RTT.
    stream.set_nodelay(true)?;
    let (mut read, mut write) = stream.split();
    let mut inbox = Inbox::default();
    let started = Instant::now();
    let (_, session) = initiate(
        daemon,
        &probe_link(),
        Policy::handshake_only(),
        [0; 32],
        &mut inbox,
        &mut read,
        &mut write,
    )
    .await?;
    // Two round trips: Hello → Challenge and Proof → Welcome.
    let rtt = started.elapsed() / 2;

    let filler = vec![0u8; CHUNK];
    let mut sent = 0u64;
    let sending = async {
        while sent < plan.max_bytes {
            // At most CHUNK, so the cast cannot truncate.
            let n = (plan.max_bytes - sent).min(CHUNK as u64) as usize;
            // `write` rather than `write_all`: when time runs out mid-chunk, what went out
            // is counted exactly (a cancelled `write` wrote nothing).
            match write.write(&filler[..n]).await? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                w => sent += w as u64,
            }
        }
        Ok::<(), std::io::Error>(())
    };
    // Running out of time is the other way a probe ends, not an error.
    if let Ok(r) = tokio::time::timeout(plan.max_time, sending).await {
        r?;
    }
    // End of data: the responder's read returns 0 and it answers.
    write.shutdown().await?;
    let mut buf = [0u8; PROBE_REPORT_LEN];
    // The report may have come with the handshake's last read.
    let rest = inbox.into_rest();
    let mut read = rest.as_slice().chain(read);
    match tokio::time::timeout(REPORT_WAIT, read.read_exact(&mut buf)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(ProbeError::NoReport(e.to_string())),
        Err(_) => return Err(ProbeError::NoReport("timed out".into())),
    }
    let report = ProbeReport::decode(&buf)?;
    let mbps = report.mbps().ok_or(ProbeError::Untimed(report.bytes))?;
    Ok(ProbeResult {
        peer_node: session.peer_node.into_string(),
        bytes: report.bytes,
        elapsed_us: report.elapsed_us,
        mbps,
        rtt_us: u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX),
        sent,
        max_bytes: plan.max_bytes,
        max_ms: u64::try_from(plan.max_time.as_millis()).unwrap_or(u64::MAX),
    })
}

/// Answers a probe on an accepted TCP connection whose Hello named [`PROBE_LINK`]:
/// proves the key both ways, admits the probe (or refuses it with the reason), counts
/// the data and sends the report. `inbox` holds what was read past the Hello. Returns the
/// report and the prober's node name.
pub(crate) async fn respond<R, W>(
    daemon: &Daemon,
    hello: &Hello,
    mut inbox: Inbox,
    read: &mut R,
    write: &mut W,
) -> Result<(ProbeReport, String), LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Probes carry no frames, so there is nothing to encrypt; admission waits for the
    // proof, so that nobody without the key can keep probes out.
    let mut session = LinkSession::respond(
        &credentials(daemon),
        hello,
        Admission::AcceptAfterApproval(0),
        [0; 32],
        Policy::handshake_only(),
        Instant::now(),
        &mut entropy(),
    );
    let mut ticket = None;
    let admit = |_: &str| {
        ticket = Some(daemon.probes.admit(Role::Answering).map_err(|e| e.to_string())?);
        Ok(())
    };
    let session = establish(
        &mut session,
        &mut inbox,
        read,
        write,
        &daemon.datapath.drops,
        admit,
    )
    .await?;
    let started = Instant::now();
    let mut receiver = ProbeReceiver::default();
    let rest = inbox.into_rest();
    if !rest.is_empty() {
        receiver.on_data(started.elapsed(), rest.len() as u64);
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        let Ok(n) = tokio::time::timeout_at((started + RECEIVE_LIMIT).into(), read.read(&mut buf)).await
        else {
            break;
        };
        let n = n?;
        if n == 0 {
            break;
        }
        receiver.on_data(started.elapsed(), n as u64);
        // A prober keeps to its limits; one that does not gets a report of what it sent.
        if receiver.bytes() > PROBE_MAX_BYTES {
            break;
        }
    }
    let report = receiver.report();
    write.write_all(&report.encode()).await?;
    write.shutdown().await?;
    drop(ticket);
    Ok((report, session.peer_node.into_string()))
}
