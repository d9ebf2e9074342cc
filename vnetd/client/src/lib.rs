//! A blocking control client, for the `vnet` CLI, the lab and tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vnet_control::proto::{
    self, ControlError, Request, RequestEnvelope, Response, ResponseEnvelope, LEN_PREFIX, PROTOCOL_VERSION,
};

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

    /// Sends a request and waits for its answer.
    pub fn request(&mut self, request: Request) -> Result<Response, ClientError> {
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

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}
