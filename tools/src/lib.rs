//! The library behind the `vnet` CLI (and the `vadapt` service): control of daemons, the
//! lab, the topology-language tools, VTTIF polling, the Patterns workload, the demo and
//! the benchmarks. Each module is one command family; `main.rs` only dispatches.

pub mod adapt;
pub mod bench;
pub mod control;
pub mod demo;
pub mod lab;
pub mod migrate;
pub mod patterns;
pub mod reserve;
pub mod topo;
pub mod vttif;
