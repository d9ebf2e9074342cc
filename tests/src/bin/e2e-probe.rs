//! `e2e-probe`: throws bytes at a vnet daemon from inside a lab namespace (the tests run
//! it with `ip netns exec`, since the test process itself has no route into the lab).
//!
//! ```text
//! e2e-probe tcp ADDR               send stdin on one TCP connection, half-close, read
//!                                  until EOF
//! e2e-probe udp ADDR               stdin holds datagrams, each prefixed by its length as
//!                                  a big-endian u16; send each, then count the answers
//! e2e-probe forge ADDR LINK NODE   open LINK over TCP as NODE, answer the Challenge with
//!                                  a made-up Proof (what a peer without the key does)
//! e2e-probe sink ADDR FILE         listen on ADDR (prints `listening`), take one TCP
//!                                  connection, write everything it carries to FILE
//! e2e-probe send ADDR FILE         send FILE on one TCP connection, then half-close
//! ```
//!
//! Each prints one line of `key=value` pairs saying what happened; the tests parse it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vnet_core::wire::Kind;
use vnet_e2e::{random_bytes, wire_header};

const TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["tcp", addr] => parse(addr).and_then(tcp),
        ["udp", addr] => parse(addr).and_then(udp),
        ["forge", addr, link, node] => parse(addr).and_then(|a| forge(a, link, node)),
        ["sink", addr, file] => parse(addr).and_then(|a| sink(a, file)),
        ["send", addr, file] => parse(addr).and_then(|a| send(a, file)),
        _ => Err(
            "usage: e2e-probe tcp ADDR | udp ADDR | forge ADDR LINK NODE | sink ADDR FILE | send ADDR FILE"
                .to_string(),
        ),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("e2e-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sink(addr: SocketAddr, file: &str) -> Result<String, String> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!("listening");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT * 10))
        .map_err(|e| e.to_string())?;
    let mut data = Vec::new();
    s.read_to_end(&mut data)
        .map_err(|e| format!("reading after {} B: {e}", data.len()))?;
    std::fs::write(file, &data).map_err(|e| format!("{file}: {e}"))?;
    Ok(format!("bytes={}", data.len()))
}

fn send(addr: SocketAddr, file: &str) -> Result<String, String> {
    let data = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
    let mut s = connect(addr)?;
    s.set_write_timeout(Some(TIMEOUT * 10))
        .map_err(|e| e.to_string())?;
    s.write_all(&data).map_err(|e| format!("sending: {e}"))?;
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    Ok(format!("bytes={}", data.len()))
}

fn parse(addr: &str) -> Result<SocketAddr, String> {
    addr.parse().map_err(|e| format!("{addr}: {e}"))
}

fn stdin_bytes() -> Result<Vec<u8>, String> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| format!("reading stdin: {e}"))?;
    Ok(input)
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    Ok(s)
}

/// How a read of the peer's answer ended.
fn end_name(e: &std::io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "timeout",
        ErrorKind::ConnectionReset => "reset",
        _ => "error",
    }
}

fn tcp(addr: SocketAddr) -> Result<String, String> {
    let input = stdin_bytes()?;
    let mut s = connect(addr)?;
    // The daemon hangs up on the first bad header, so a long write may fail half way:
    // that is the expected outcome, not an error of the probe.
    let write = match s.write_all(&input) {
        Ok(()) => "ok",
        Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => "closed_by_peer",
        Err(e) => return Err(format!("write: {e}")),
    };
    let _ = s.shutdown(Shutdown::Write);
    let mut received = 0usize;
    let mut buf = [0u8; 4096];
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break "eof",
            Ok(n) => received += n,
            Err(e) => break end_name(&e),
        }
    };
    Ok(format!(
        "sent={} write={write} received={received} end={end}",
        input.len()
    ))
}

fn udp(addr: SocketAddr) -> Result<String, String> {
    let input = stdin_bytes()?;
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
    let mut rest = input.as_slice();
    let mut sent = 0usize;
    while let [a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        let Some((datagram, tail)) = tail.split_at_checked(len) else {
            return Err("stdin ends inside a datagram".to_string());
        };
        s.send_to(datagram, addr).map_err(|e| format!("send: {e}"))?;
        sent += 1;
        rest = tail;
    }
    // Count what comes back (Resets for unknown sessions, Challenges, Refusals) for a
    // moment; the daemon rate-limits its Resets.
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut replies = 0usize;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        match s.recv_from(&mut buf) {
            Ok(_) => replies += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // ICMP port unreachable and the like.
            Err(_) => {}
        }
    }
    Ok(format!("sent={sent} replies={replies}"))
}

fn read_message(s: &mut TcpStream) -> Result<(u8, u32, Vec<u8>), String> {
    let mut head = [0u8; 16];
    s.read_exact(&mut head)
        .map_err(|e| format!("reading a header: {} ({})", e, end_name(&e)))?;
    if &head[..3] != b"VN\x01" {
        return Err(format!("not a vnet header: {head:02x?}"));
    }
    let session = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let len = u32::from_be_bytes([head[12], head[13], head[14], head[15]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)
        .map_err(|e| format!("reading a payload: {e}"))?;
    Ok((head[3], session, payload))
}

fn forge(addr: SocketAddr, link: &str, node: &str) -> Result<String, String> {
    use vnet_core::handshake::{self, Initiator, NetworkKey, Offer, Proof};
    let mut s = connect(addr)?;
    // A well-formed Hello from a daemon holding some other key.
    let random32 = || -> [u8; 32] { random_bytes(32).try_into().unwrap_or([7; 32]) };
    let offer = Offer {
        nonce: random32(),
        ephemeral_secret: random32(),
        caps: 0,
        binding: [0; 32],
    };
    let name = |text: &str| text.parse::<vnet_core::name::Name>().map_err(|e| e.to_string());
    let (_, hello) = Initiator::new(
        NetworkKey::from_bytes(random32()),
        &name(node)?,
        &name(link)?,
        offer,
    );
    let hello = handshake::encode_payload(&hello);
    let mut msg = wire_header(Kind::Hello, 0, hello.len() as u32).to_vec();
    msg.extend_from_slice(&hello);
    s.write_all(&msg).map_err(|e| format!("sending Hello: {e}"))?;

    let (kind, _, payload) = read_message(&mut s)?;
    if kind != Kind::Challenge.to_byte() {
        return Ok(format!("reply_to_hello={kind}"));
    }
    let challenge = handshake::decode_challenge(&payload).map_err(|e| format!("challenge: {e}"))?;
    let session = challenge.session;

    // Proof { proof }: 32 bytes nobody without the key can compute.
    let proof = handshake::encode_payload(&Proof { proof: random32() });
    let mut msg = wire_header(Kind::Proof, session, proof.len() as u32).to_vec();
    msg.extend_from_slice(&proof);
    s.write_all(&msg).map_err(|e| format!("sending Proof: {e}"))?;
    let reply = match read_message(&mut s) {
        Ok((kind, _, _)) => kind.to_string(),
        Err(e) => format!("none({})", e.replace(' ', "_")),
    };
    Ok(format!("challenge_session={session} reply_to_proof={reply}"))
}
