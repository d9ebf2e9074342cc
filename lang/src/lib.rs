//! The vnet topology description language (seeds/004 §3.3, fig. 5): a lossless lexer, a
//! parser that never panics and reports every error, a canonical printer, semantic
//! checks, the mapping to vnetd's configuration, a diff that never cuts connectivity on
//! the way, route tracing and generators. Pure: no IO, no clock.
//!
//! # Grammar
//!
//! Keywords are case-insensitive; `#` starts a comment that runs to the end of the line;
//! a value with spaces or `#` is written in double quotes (`\"` and `\\` escape).
//!
//! ```text
//! program   = "BEGIN" { host } { block } "END" ;
//! host      = "HOST" user "AT" machine port interface
//!             { "ADDRESS" ip | "CONTROL" ( path | ip ":" port "TOKEN" path ) | "KEY" path } ;
//! block     = ( "ADD" | "DELETE" ) { iface | link | rule } ;
//! iface     = "IFACE" ( "TAP" | "ATTACH" ) machine name
//!             { "MAC" mac | "DEVICE" name | "NETNS" name | "MTU" number } ;
//! link      = "LINK" ( "TCP" | "UDP" | "QUIC" ) machine machine machine
//!             { "PORT" port | "KEY" name | "RESERVE" rate | "ENCRYPT" } ;
//! rule      = "FORWARD" "EDGE" machine source dest machine machine
//!           | "FORWARD" "INTERFACE" machine source dest name ;
//! source    = "ANY" [ mac ] | "NOT" mac | mac ;
//! dest      = source | "NONE" ;
//! rate      = (see vnet_core::rate: 50mbit, 1.5gbit, 640kbit, 10mbps, 1200) ;
//! ```
//!
//! Fig. 5 is a subset: its programs parse as written there. The extensions are the host
//! options, `IFACE`, `QUIC`, the link options, `NONE` (the default rule's destination),
//! `ANY` without an address, and comments. A mac after `ANY` (fig. 5 writes one after
//! every qualifier) is read and ignored. Names (users, machines, interfaces) use
//! `A-Z a-z 0-9 . _ -`; a name spelled like a statement keyword must be quoted.
//!
//! # Meaning
//!
//! - `HOST` declares a machine running a vnetd: its link port, its Ethernet interface,
//!   and optionally its underlay address (default: the machine name, if that is an
//!   address), its control endpoint (for the tools) and its key file (for `vnet up`).
//! - Blocks apply in order to an initially empty overlay; within a block, ADD takes
//!   interfaces, links, then rules, and DELETE the reverse. A DELETE must name something
//!   added before (with the same options).
//! - `LINK type m m p` (fig. 5: the link lives on the first machine, between the other
//!   two) is the link between `m` and `p`; the machine it lives on must be an end, and
//!   dials the other. Both daemons declare it as `m-p` with the ends in natural order
//!   (`h2-h10`), which is how `vnet lab` names its links.
//! - `FORWARD EDGE m src dst m p` sends over the link between `m` and `p`;
//!   `FORWARD INTERFACE m src dst i` to the interface `i` of `m`. Rules of a machine with
//!   the same sides are one vnetd rule with several outputs ([`compile()`]).
//! - Rule priority, matching and split horizon are vnetd's (see `vnet_core::rule`).
//!
//! # Examples
//!
//! Fig. 5 as written:
//!
//! ```vnet
//! BEGIN
//!   HOST alice AT h1 5000 eth0
//!   HOST alice AT proxy 5000 eth0
//! ADD
//!   LINK TCP h1 h1 proxy
//!   FORWARD EDGE h1 02:00:00:00:00:01 NOT 02:00:00:00:00:02 h1 proxy
//! END
//! ```
//!
//! A star of three hosts with a VM on each leaf, and a fast path between the leaves:
//!
//! ```vnet
//! begin  # keywords in any case
//!   HOST root AT h0 7400 ul0 ADDRESS 198.18.0.1 CONTROL /run/vnet-lab/t/h0.sock
//!   HOST root AT h1 7400 ul0 ADDRESS 198.18.0.2 CONTROL /run/vnet-lab/t/h1.sock
//!   HOST root AT h2 7400 ul0 ADDRESS 198.18.0.3 CONTROL /run/vnet-lab/t/h2.sock
//! ADD
//!   IFACE TAP h1 vm0 MAC 02:00:00:00:00:01 DEVICE eth0 NETNS t-vm0 MTU 1500
//!   IFACE TAP h2 vm1 MAC 02:00:00:00:00:02 DEVICE eth0 NETNS t-vm1 MTU 1500
//!   LINK TCP h1 h1 h0
//!   LINK TCP h2 h2 h0
//!   LINK UDP h2 h2 h1            # the fast path, dialed by h2
//!   FORWARD EDGE h0 ANY 02:00:00:00:00:01 h0 h1
//!   FORWARD EDGE h0 ANY 02:00:00:00:00:02 h0 h2
//!   FORWARD INTERFACE h1 ANY 02:00:00:00:00:01 vm0
//!   FORWARD EDGE h1 ANY NONE h1 h0       # default rule: everything else to the proxy
//!   FORWARD EDGE h1 ANY 02:00:00:00:00:02 h1 h2
//!   FORWARD INTERFACE h2 ANY 02:00:00:00:00:02 vm1
//!   FORWARD EDGE h2 ANY NONE h2 h0
//!   FORWARD EDGE h2 ANY 02:00:00:00:00:01 h2 h1
//! END
//! ```
//!
//! Taking the fast path down again (a diff prints like this):
//!
//! ```vnet
//! BEGIN
//!   HOST root AT h1 7400 ul0 ADDRESS 198.18.0.2
//!   HOST root AT h2 7400 ul0 ADDRESS 198.18.0.3
//! ADD
//!   LINK UDP h2 h2 h1 PORT 7401 RESERVE 50mbit
//!   FORWARD EDGE h1 ANY ff:ff:ff:ff:ff:ff h1 h2
//! DELETE
//!   FORWARD EDGE h1 ANY ff:ff:ff:ff:ff:ff h1 h2
//!   LINK UDP h2 h2 h1 PORT 7401 RESERVE 50mbit
//! END
//! ```
//!
//! `lang/tests/data/` holds more, each beside its expected tree or diagnostics.
// A pure crate: no panic on bad input, no clock, threads or sleeps (the list is in
// clippy.toml at the repository root).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

pub mod ast;
pub mod compile;
pub mod diff;
pub mod generate;
pub mod lexer;
pub mod migrate;
pub mod model;
pub mod parser;
pub mod printer;
pub mod route;
pub mod source;

pub use ast::{link_name, Action, Description, Host, Iface, Item, Link, LinkProto, Rule, Target};
pub use compile::{compile, decompile, CompileError};
pub use diff::{apply, diff, phases, steps, Primitive, Step};
pub use model::{analyze, Analysis, ModelError, Overlay};
pub use parser::{parse, Parsed};
pub use printer::print;
pub use source::{Diagnostic, Severity, Span};

#[cfg(test)]
mod doc_examples {
    /// Every ```vnet block of the crate docs parses and checks without a diagnostic.
    #[test]
    fn crate_doc_examples_check() {
        let docs: String = include_str!("lib.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
            .collect();
        let blocks: Vec<&str> = docs
            .split("```vnet\n")
            .skip(1)
            .map(|b| b.split("```").next().unwrap_or_default())
            .collect();
        assert_eq!(blocks.len(), 3);
        for b in blocks {
            let a = crate::analyze(b);
            assert!(a.diagnostics.is_empty(), "{b}\n{:#?}", a.diagnostics);
        }
    }
}
