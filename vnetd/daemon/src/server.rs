//! The control server: answers [`proto`] requests on a Unix socket and,
//! when configured, on TCP with a token.

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

use crate::daemon::Daemon;
use vnet_control::proto::{
    self, ControlError, RequestEnvelope, ResponseEnvelope, LEN_PREFIX, PROTOCOL_VERSION,
};

/// Control connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// How long the body of a request may take to arrive after its length prefix.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds the Unix control socket, replacing a stale socket file from an earlier run.
pub fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // Control is root's business: nobody else may connect.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the Unix socket forever.
pub async fn serve_unix(daemon: Arc<Daemon>, listener: UnixListener) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => spawn_connection(daemon.clone(), stream, None, limit.clone()),
            Err(e) => {
                tracing::error!("control accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves TCP control forever; every request must carry `token`.
pub async fn serve_tcp(daemon: Arc<Daemon>, listener: TcpListener, token: String) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let token: Arc<str> = Arc::from(token);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => spawn_connection(daemon.clone(), stream, Some(token.clone()), limit.clone()),
            Err(e) => {
                tracing::error!("control accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

fn spawn_connection<S>(daemon: Arc<Daemon>, stream: S, token: Option<Arc<str>>, limit: Arc<Semaphore>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let Ok(_permit) = limit.acquire_owned().await else {
            return;
        };
        if let Err(e) = connection(&daemon, stream, token.as_deref()).await {
            tracing::debug!("control connection closed: {e}");
        }
    });
}

async fn connection<S>(daemon: &Arc<Daemon>, mut stream: S, token: Option<&str>) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut body = Vec::new();
    loop {
        let mut prefix = [0u8; LEN_PREFIX];
        match stream.read_exact(&mut prefix).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = match proto::decode_len(prefix) {
            Ok(len) => len,
            Err(e) => {
                // The stream is out of step: answer once and hang up.
                return reply(&mut stream, Err(ControlError::Malformed(e.to_string()))).await;
            }
        };
        // A client that announces a body must deliver it promptly: a stalled one would
        // otherwise hold its buffer and a connection slot forever.
        body.resize(len, 0);
        match tokio::time::timeout(BODY_TIMEOUT, stream.read_exact(&mut body)).await {
            Ok(r) => r?,
            Err(_) => {
                return reply(
                    &mut stream,
                    Err(ControlError::Malformed("message body timed out".into())),
                )
                .await
            }
        };
        let envelope: RequestEnvelope = match proto::decode_body(&body) {
            Ok(env) => env,
            Err(e) => return reply(&mut stream, Err(ControlError::Malformed(e.to_string()))).await,
        };
        let result = if envelope.version != PROTOCOL_VERSION {
            Err(ControlError::Version {
                daemon: PROTOCOL_VERSION,
                client: envelope.version,
            })
        } else if !token_ok(token, envelope.token.as_deref()) {
            Err(ControlError::Unauthorized)
        } else {
            daemon.handle(envelope.request).await
        };
        reply(&mut stream, result).await?;
    }
}

fn token_ok(expected: Option<&str>, given: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    match expected {
        None => true,
        Some(expected) => given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes()))),
    }
}

async fn reply<S: AsyncWrite + Unpin>(
    stream: &mut S,
    result: Result<proto::Response, ControlError>,
) -> std::io::Result<()> {
    let bytes = proto::encode(&ResponseEnvelope {
        version: PROTOCOL_VERSION,
        result,
    });
    stream.write_all(&bytes).await
}

#[cfg(test)]
mod tests {
    use super::token_ok;

    #[test]
    fn tokens_are_required_only_on_tcp_and_must_match() {
        assert!(token_ok(None, None));
        assert!(token_ok(Some("s3cret"), Some("s3cret")));
        assert!(!token_ok(Some("s3cret"), Some("s3cre")));
        assert!(!token_ok(Some("s3cret"), None));
    }
}
