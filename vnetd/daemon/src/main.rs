//! `vnetd`: the per-host vnet daemon.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use vnet_control::proto::Request;
use vnet_core::config::{DaemonConfig, Topology};
use vnet_core::handshake::NetworkKey;
use vnetd::daemon::{Daemon, Identity};
use vnetd::link::{quic, tcp, udp};
use vnetd::server;

/// The vnet daemon: bridges local TAP devices and captured interfaces to authenticated
/// TCP and UDP overlay links, forwarding Ethernet frames by a priority-matched MAC rule
/// table, and answers control requests (`vnet -c SOCKET ...`).
///
/// Configuration comes from a TOML file (see `vnetd::config` or ARCHITECTURE.md); the
/// flags below override it. When the state file exists, its interfaces, links and rules
/// replace the config file's: they are the ones the daemon last ran with.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short = 'f')]
    config: PathBuf,
    /// Override: this daemon's node name.
    #[arg(long)]
    node: Option<vnet_core::name::Name>,
    /// Override: address of the TCP and UDP link listeners.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override: Unix control socket path.
    #[arg(long)]
    control: Option<PathBuf>,
    /// Override: network key file (64 hex digits).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Override: state file.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Start with VTTIF traffic accounting off (`vnet vttif --enable` switches it on).
    #[arg(long)]
    no_vttif: bool,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, env = "VNETD_LOG", default_value = "info")]
    log: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&args.log).context("bad --log filter")?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = load_config(&args)?;
    let vttif = !args.no_vttif;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(config, vttif))
}

fn load_config(args: &Args) -> Result<DaemonConfig> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read config file {}", args.config.display()))?;
    let mut config =
        DaemonConfig::from_toml(&text).with_context(|| format!("config file {}", args.config.display()))?;
    if let Some(n) = &args.node {
        config.node = n.clone();
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(c) = &args.control {
        config.control = c.clone();
    }
    if let Some(k) = &args.key_file {
        config.key_file = k.clone();
    }
    if let Some(s) = &args.state_file {
        config.state_file = Some(s.clone());
    }
    if let Some(path) = &config.state_file {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let topology: Topology = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "state file {} is corrupt; move it away to start from the config file",
                        path.display()
                    )
                })?;
                tracing::info!(path = %path.display(), "restoring interfaces, links and rules from the state file");
                config.topology = topology;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read state file {}", path.display())),
        }
    }
    config.validate().context("invalid configuration")?;
    Ok(config)
}

async fn run(config: DaemonConfig, vttif: bool) -> Result<()> {
    let key_text = std::fs::read_to_string(&config.key_file)
        .with_context(|| format!("cannot read key file {}", config.key_file.display()))?;
    let key =
        NetworkKey::from_hex(&key_text).with_context(|| format!("key file {}", config.key_file.display()))?;
    let (udp_handle, udp_commands) = udp::bind(config.listen)
        .await
        .with_context(|| format!("cannot bind UDP link port {}", config.listen))?;
    let tcp_listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot bind TCP link port {}", config.listen))?;
    let control = server::bind_unix(&config.control)
        .with_context(|| format!("cannot bind control socket {}", config.control.display()))?;
    let tcp_control = match (config.control_tcp, &config.control_token_file) {
        (Some(addr), Some(token_file)) => {
            let token = std::fs::read_to_string(token_file)
                .with_context(|| format!("cannot read control token file {}", token_file.display()))?
                .trim()
                .to_string();
            if token.len() < 16 {
                bail!(
                    "control token in {} is shorter than 16 characters",
                    token_file.display()
                );
            }
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind TCP control {addr}"))?;
            Some((l, token))
        }
        _ => None,
    };

    let identity = Identity {
        node: config.node.clone(),
        key,
        listen: config.listen,
        state_file: config.state_file.clone(),
        link_mtu: config.link_mtu,
        tap_queues: config.tap_queue_count(std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    let quic = quic::Endpoint::bind(config.quic_listen).with_context(|| match config.quic_listen {
        Some(addr) => format!("cannot bind QUIC port {addr}"),
        None => "cannot open a QUIC client endpoint".to_string(),
    })?;
    let daemon: Arc<Daemon> = Daemon::new(
        identity,
        udp_handle,
        quic.clone(),
        tokio::runtime::Handle::current(),
    )
    .context("cannot start the control thread")?;
    daemon.datapath.dataplane.traffic.set_enabled(vttif);
    // Runs until the daemon exits (dropping it stops the thread).
    let _udp_links = udp::spawn(daemon.clone(), udp_commands).context("cannot start the UDP link thread")?;
    daemon
        .handle(Request::ConfigReplace(config.topology.clone()))
        .await
        .context("invalid topology")?;
    tokio::spawn(tcp::serve(daemon.clone(), tcp_listener));
    if quic.accepts() {
        tokio::spawn(quic::serve(daemon.clone(), quic));
    }
    tokio::spawn(server::serve_unix(daemon.clone(), control));
    if let Some((l, token)) = tcp_control {
        tokio::spawn(server::serve_tcp(daemon.clone(), l, token));
    }
    tracing::info!(node = %config.node, listen = %config.listen, control = %config.control.display(), "vnetd running");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    // The state file is current after every change; TAP devices persist for the restart.
    let _ = std::fs::remove_file(&config.control);
    Ok(())
}
