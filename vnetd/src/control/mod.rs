//! The control plane: typed, versioned request/response messages ([`proto`]), the server
//! that answers them ([`server`]) and a small blocking client ([`client`]) for the CLI.

pub mod client;
pub mod proto;
pub mod server;
