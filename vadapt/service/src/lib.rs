//! The adaptor service's reusable parts, shared by the `vadapt` binary, the `vnet` CLI
//! and the end-to-end tests: the migration hook runner ([`hook`]), the reservation script
//! backend ([`script`]) and the status file ([`status_file`]).

pub mod hook;
pub mod script;
pub mod status_file;
