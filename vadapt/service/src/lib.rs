//! The adaptor service's reusable parts, shared by the `vadapt` binary, the `vnet` CLI
//! and the end-to-end tests: the migration hook runner ([`hook`]), the reservation script
//! backend ([`script`]), the external-program runner both use ([`process`]) and the status
//! file ([`status_file`]).

pub mod hook;
pub mod process;
pub mod script;
pub mod status_file;
#[cfg(test)]
mod test_dir;
