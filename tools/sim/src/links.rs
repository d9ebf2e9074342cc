//! The modelled link layer — **the part to be replaced** by vnet-core's sans-IO link
//! sessions.
//!
//! A link is up exactly when both daemons run, both declare it (one dials the other's
//! address, the other waits), and no partition separates them. It comes up and goes down
//! at once: no handshake, keepalive or dead-peer timeout. Each time it comes up it gets a
//! fresh session id, so frames of an older session still in flight are dropped as
//! `no_session`, as a real new session would drop them. A link whose spec changes on
//! either end gets a new session (the real daemon restarts a changed link). Frames on an
//! up link are still subject to the underlay's loss, duplication, reordering and delay.
//!
//! The simulation asks [`wanted`] for the links that should be up after anything that
//! can change it (a topology, a crash or restart, a partition starting or healing) and
//! tells both daemons of each change ([`crate::SimDaemon::link_up`] /
//! [`crate::SimDaemon::link_down`]). With real sessions, links follow from the datagrams
//! the daemons exchange instead, and "up within a bounded time" becomes a property to
//! check rather than a given.

use std::collections::BTreeMap;
use std::net::IpAddr;

use vnet_core::config::{LinkSpec, Topology};

use crate::HostId;

/// The two ends of a link and the specs each declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEnds {
    /// The end that dials.
    pub dialer: HostId,
    /// The end that waits.
    pub waiter: HostId,
    /// The dialer's spec.
    pub dialer_spec: LinkSpec,
    /// The waiter's spec.
    pub waiter_spec: LinkSpec,
}

/// What one host looks like to the link layer.
#[derive(Clone, Copy, Debug)]
pub struct HostView<'a> {
    /// The running topology, `None` when the daemon does not run.
    pub topology: Option<&'a Topology>,
    /// The host's underlay address.
    pub ip: IpAddr,
}

/// The links that should be up, by name: for every running host's link that dials an
/// address, the running host there declaring the same link as waiting, when `reachable`
/// says the underlay joins them. The first dialer in host order wins a contested name.
pub fn wanted(
    hosts: &[HostView<'_>],
    reachable: impl Fn(HostId, HostId) -> bool,
) -> BTreeMap<String, LinkEnds> {
    let by_ip: BTreeMap<IpAddr, HostId> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.ip, HostId(i as u32)))
        .collect();
    let mut out = BTreeMap::new();
    for (i, h) in hosts.iter().enumerate() {
        let dialer = HostId(i as u32);
        let Some(t) = h.topology else { continue };
        for spec in &t.links {
            let Some(addr) = spec.peer else { continue };
            let Some(&waiter) = by_ip.get(&addr.ip()) else {
                continue;
            };
            if waiter == dialer || out.contains_key(spec.name.as_str()) || !reachable(dialer, waiter) {
                continue;
            }
            let Some(waiter_spec) = hosts[waiter.0 as usize]
                .topology
                .and_then(|w| w.links.iter().find(|l| l.name == spec.name && l.peer.is_none()))
            else {
                continue;
            };
            out.insert(
                spec.name.to_string(),
                LinkEnds {
                    dialer,
                    waiter,
                    dialer_spec: spec.clone(),
                    waiter_spec: waiter_spec.clone(),
                },
            );
        }
    }
    out
}

/// A change the daemons at both ends are told of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkChange {
    /// The session ended.
    Down {
        /// The link.
        name: String,
        /// Its ends.
        ends: LinkEnds,
        /// The session.
        session: u32,
    },
    /// A new session.
    Up {
        /// The link.
        name: String,
        /// Its ends.
        ends: LinkEnds,
        /// The session.
        session: u32,
    },
}

/// The sessions of the links that are up.
#[derive(Debug, Default)]
pub struct LinkOracle {
    up: BTreeMap<String, (LinkEnds, u32)>,
    sessions: u32,
}

impl LinkOracle {
    /// Makes the links up exactly `wanted`; returns the changes, downs first.
    pub fn update(&mut self, wanted: BTreeMap<String, LinkEnds>) -> Vec<LinkChange> {
        let mut changes = Vec::new();
        let gone: Vec<String> = self
            .up
            .iter()
            .filter(|(name, (ends, _))| wanted.get(*name) != Some(ends))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some((ends, session)) = self.up.remove(&name) {
                changes.push(LinkChange::Down { name, ends, session });
            }
        }
        for (name, ends) in wanted {
            if !self.up.contains_key(&name) {
                self.sessions = self.sessions.wrapping_add(1);
                let session = self.sessions;
                self.up.insert(name.clone(), (ends.clone(), session));
                changes.push(LinkChange::Up { name, ends, session });
            }
        }
        changes
    }

    /// The session of link `name`, when it is up.
    pub fn session(&self, name: &str) -> Option<u32> {
        self.up.get(name).map(|(_, s)| *s)
    }

    /// Links up.
    pub fn len(&self) -> usize {
        self.up.len()
    }

    /// Whether no link is up.
    pub fn is_empty(&self) -> bool {
        self.up.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_core::config::LinkProto;

    fn spec(name: &str, peer: Option<&str>) -> LinkSpec {
        LinkSpec {
            name: name.parse().unwrap(),
            proto: LinkProto::Udp,
            peer: peer.map(|p| p.parse().unwrap()),
            encrypt: false,
        }
    }

    #[test]
    fn a_link_is_up_when_both_ends_run_declare_it_and_reach_each_other() {
        let dialer = Topology {
            links: vec![spec("h0-h1", Some("198.18.0.1:7400"))],
            ..Topology::default()
        };
        let waiter = Topology {
            links: vec![spec("h0-h1", None)],
            ..Topology::default()
        };
        fn view<'a>(d: Option<&'a Topology>, w: Option<&'a Topology>) -> Vec<HostView<'a>> {
            let ip = |i: u8| IpAddr::from([198, 18, 0, i]);
            vec![
                HostView {
                    topology: w,
                    ip: ip(1),
                },
                HostView {
                    topology: d,
                    ip: ip(2),
                },
            ]
        }
        let (d, w) = (&dialer, &waiter);
        let mut o = LinkOracle::default();
        let up = wanted(&view(Some(d), Some(w)), |_, _| true);
        assert_eq!(up["h0-h1"].dialer, HostId(1));
        let changes = o.update(up.clone());
        assert!(matches!(&changes[..], [LinkChange::Up { session: 1, .. }]));
        assert!(o.update(up).is_empty(), "nothing changed");
        assert!(wanted(&view(Some(d), None), |_, _| true).is_empty());
        assert!(wanted(&view(Some(d), Some(d)), |_, _| true).is_empty());
        assert!(wanted(&view(Some(d), Some(w)), |_, _| false).is_empty());
        let changes = o.update(BTreeMap::new());
        assert!(matches!(&changes[..], [LinkChange::Down { session: 1, .. }]));
        let changes = o.update(wanted(&view(Some(d), Some(w)), |_, _| true));
        assert!(
            matches!(&changes[..], [LinkChange::Up { session: 2, .. }]),
            "a fresh session"
        );
        assert_eq!((o.session("h0-h1"), o.len()), (Some(2), 1));
    }
}
