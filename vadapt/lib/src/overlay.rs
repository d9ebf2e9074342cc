//! The overlay a plan asks for, in the topology language's model ([`lang::Overlay`]), so
//! the adaptor applies it with the language's diff (add before delete).
//!
//! # What the adaptor owns
//! The running overlay is the administrator's *base* (the resilient star, the VMs'
//! interfaces, their delivery and broadcast rules) plus what the adaptor added. The
//! adaptor owns:
//! - every link whose name is not in the base link set it recorded when it started;
//! - every rule with an exact unicast source and an exact unicast destination (the base
//!   never needs one; the adaptor routes demand by demand, and an exact/exact rule
//!   outranks every base rule for that pair: priority 8 against at most 6).
//!
//! [`target`] keeps the base, drops what the adaptor owns, and adds the plan: a link for
//! every overlay link the plan routes over (reusing any link already joining the two
//! hosts), and for every routed demand an exact/exact rule on each host of its path (over
//! the link to the next host, and into the destination VM's interface at the last). A
//! base rule that pointed over an adaptor link that goes away is sent toward the hub
//! (the proxy) instead, so no rule is left pointing at a missing link.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use lang::ast::natural_cmp;
use lang::{Link, Overlay, Rule, Target};
use vnet_core::mac::MacAddr;
use vnet_core::rule::{DstMatch, MacMatch};

use crate::plan::Plan;

/// Why a plan cannot become an overlay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverlayError {
    /// The plan names a VM whose MAC the adaptor does not know.
    #[error("the plan names VM `{0}`, whose MAC is unknown")]
    UnknownVm(String),
    /// The plan uses a host that is not in the overlay.
    #[error("the plan uses host `{0}`, which is not in the overlay")]
    UnknownHost(String),
    /// No link of the overlay can serve as the template of new links.
    #[error("the overlay has no link to copy the transport of new links from")]
    NoTemplate,
}

/// The overlay [`target`] builds, and the routes it had to leave out.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The overlay to apply.
    pub overlay: Overlay,
    /// Routes left to the base rules, with the reason (the destination VM is not where
    /// the plan places it, e.g. after a failed migration).
    pub skipped: Vec<String>,
}

/// Whether the adaptor owns rule `r` (module docs).
pub fn adaptor_rule(r: &Rule) -> bool {
    let unicast = |m: &MacAddr| m.0[0] & 1 == 0;
    matches!((&r.src, &r.dst), (MacMatch::Exact(s), DstMatch::Mac(MacMatch::Exact(d))) if unicast(s) && unicast(d))
}

/// The link joining machines `a` and `b`, if any.
fn link_between<'a>(o: &'a Overlay, a: &str, b: &str) -> Option<&'a Link> {
    o.links.values().find(|l| l.other_end(a) == Some(b))
}

/// The overlay `plan` asks for on top of `live` (module docs). `base_links` names the
/// links that are not the adaptor's; `hub` is the proxy every host has a base link to;
/// `macs` maps VM names to MACs. New links copy the transport and encryption of the
/// base links (the first one, in name order).
pub fn target(
    live: &Overlay,
    base_links: &BTreeSet<String>,
    hub: &str,
    plan: &Plan,
    macs: &BTreeMap<String, MacAddr>,
) -> Result<Planned, OverlayError> {
    let template = live
        .links
        .values()
        .find(|l| base_links.contains(&l.name()))
        .or_else(|| live.links.values().next())
        .ok_or(OverlayError::NoTemplate)?
        .clone();
    let mac = |vm: &str| {
        macs.get(vm)
            .copied()
            .ok_or_else(|| OverlayError::UnknownVm(vm.to_owned()))
    };
    let known = |h: &str| {
        if live.hosts.contains_key(h) {
            Ok(())
        } else {
            Err(OverlayError::UnknownHost(h.to_owned()))
        }
    };

    let mut o = live.clone();
    o.rules.retain(|r| !adaptor_rule(r));

    // Links the plan routes over, as unordered pairs.
    let wanted: BTreeSet<(String, String)> = plan
        .overlay_links
        .iter()
        .map(|l| match natural_cmp(&l.from, &l.to) {
            Ordering::Greater => (l.to.clone(), l.from.clone()),
            _ => (l.from.clone(), l.to.clone()),
        })
        .collect();
    for (a, b) in &wanted {
        known(a)?;
        known(b)?;
        if link_between(&o, a, b).is_none() {
            // The higher end dials, as in the lab.
            let link = Link {
                owner: b.clone(),
                peer: a.clone(),
                port: None,
                key: None,
                reserve: None,
                ..template.clone()
            };
            o.links.insert(link.name(), link);
        }
    }

    // Adaptor links the plan no longer uses go; base rules over them turn to the hub.
    let gone: Vec<Link> = o
        .links
        .values()
        .filter(|l| {
            let pair = match natural_cmp(&l.owner, &l.peer) {
                Ordering::Greater => (l.peer.clone(), l.owner.clone()),
                _ => (l.owner.clone(), l.peer.clone()),
            };
            !base_links.contains(&l.name()) && !wanted.contains(&pair)
        })
        .cloned()
        .collect();
    for link in &gone {
        o.links.remove(&link.name());
        let over_it = |r: &Rule| matches!(&r.out, Target::Edge(peer) if link.other_end(&r.machine) == Some(peer.as_str()));
        let moved: Vec<Rule> = o.rules.iter().filter(|r| over_it(r)).cloned().collect();
        for r in moved {
            o.rules.remove(&r);
            if r.machine != hub {
                o.rules.insert(Rule {
                    out: Target::Edge(hub.to_owned()),
                    ..r
                });
            }
        }
    }

    let mut skipped = Vec::new();
    for route in &plan.routes {
        if route.path.len() < 2 {
            continue; // a local pair: the base's delivery rule serves it
        }
        let (src, dst) = (mac(&route.src)?, mac(&route.dst)?);
        let last = &route.path[route.path.len() - 1];
        let Some(iface) = o
            .ifaces
            .values()
            .find(|i| &i.machine == last && i.mac == Some(dst))
            .map(|i| i.name.clone())
        else {
            skipped.push(format!(
                "{}->{}: {} is not at {last}",
                route.src, route.dst, route.dst
            ));
            continue;
        };
        let rule = |machine: &str, out: Target| Rule {
            machine: machine.to_owned(),
            src: MacMatch::Exact(src),
            dst: DstMatch::Mac(MacMatch::Exact(dst)),
            out,
        };
        for hop in route.path.windows(2) {
            o.rules.insert(rule(&hop[0], Target::Edge(hop[1].clone())));
        }
        o.rules.insert(rule(last, Target::Iface(iface)));
    }
    Ok(Planned { overlay: o, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{OverlayLink, PlanRoute, PlannedReservations};
    use lang::ast::{Host, Iface, IfaceKind};
    use lang::LinkProto;
    use vnet_core::name::Name;

    fn name(text: &str) -> Name {
        text.parse().unwrap()
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    /// The lab's star: hub h0, hosts h1..h3, vm1 on h1 and vm2 on h2.
    fn star() -> Overlay {
        let mut o = Overlay::default();
        for h in ["h0", "h1", "h2", "h3"] {
            o.hosts.insert(
                h.into(),
                Host {
                    user: "root".into(),
                    machine: h.into(),
                    port: 7400,
                    interface: "ul0".into(),
                    address: None,
                    control: None,
                    key_file: None,
                },
            );
        }
        for h in ["h1", "h2", "h3"] {
            let l = Link {
                owner: h.into(),
                peer: "h0".into(),
                proto: LinkProto::Udp,
                port: None,
                key: None,
                reserve: None,
                encrypt: true,
            };
            o.links.insert(l.name(), l);
        }
        for (h, n) in [("h1", 1), ("h2", 2)] {
            let vm = name(&format!("vm{n}"));
            o.ifaces.insert(
                (h.into(), vm.clone()),
                Iface {
                    machine: h.into(),
                    name: vm.clone(),
                    kind: IfaceKind::Tap,
                    mac: Some(mac(n)),
                    device: Some(name("eth0")),
                    netns: None,
                    mtu: None,
                },
            );
            o.rules.insert(Rule {
                machine: h.into(),
                src: MacMatch::Any,
                dst: DstMatch::Mac(MacMatch::Exact(mac(n))),
                out: Target::Iface(vm),
            });
            o.rules.insert(Rule {
                machine: h.into(),
                src: MacMatch::Any,
                dst: DstMatch::None,
                out: Target::Edge("h0".into()),
            });
        }
        o
    }

    fn plan(links: &[(&str, &str)], routes: &[(&str, &str, &[&str])]) -> Plan {
        Plan {
            placement: BTreeMap::new(),
            routes: routes
                .iter()
                .map(|(s, d, p)| PlanRoute {
                    src: s.to_string(),
                    dst: d.to_string(),
                    path: p.iter().map(|h| h.to_string()).collect(),
                })
                .collect(),
            overlay_links: links
                .iter()
                .map(|(a, b)| OverlayLink {
                    from: a.to_string(),
                    to: b.to_string(),
                })
                .collect(),
            reservations: PlannedReservations::default(),
            migrations: vec![],
            objective: 0.0,
            migration_cost: 0.0,
            feasible: true,
            violations: vec![],
        }
    }

    fn macs() -> BTreeMap<String, MacAddr> {
        [("vm1".to_string(), mac(1)), ("vm2".to_string(), mac(2))].into()
    }

    fn base() -> BTreeSet<String> {
        star().links.keys().cloned().collect()
    }

    #[test]
    fn a_fast_path_gets_a_link_and_a_rule_per_hop() {
        let p = plan(
            &[("h1", "h2"), ("h2", "h1")],
            &[("vm1", "vm2", &["h1", "h2"]), ("vm2", "vm1", &["h2", "h1"])],
        );
        let t = target(&star(), &base(), "h0", &p, &macs()).unwrap();
        assert!(t.skipped.is_empty());
        let link = &t.overlay.links["h1-h2"];
        assert_eq!((link.owner.as_str(), link.peer.as_str()), ("h2", "h1"));
        assert_eq!((link.proto, link.encrypt), (LinkProto::Udp, true));
        let owned: Vec<&Rule> = t.overlay.rules.iter().filter(|r| adaptor_rule(r)).collect();
        assert_eq!(owned.len(), 4);
        assert!(owned.iter().any(|r| r.machine == "h1"
            && r.out == Target::Edge("h2".into())
            && r.src == MacMatch::Exact(mac(1))));
        assert!(owned
            .iter()
            .any(|r| r.machine == "h2" && r.out == Target::Iface(name("vm2"))));
        // The base is untouched.
        for r in star().rules {
            assert!(t.overlay.rules.contains(&r));
        }
    }

    #[test]
    fn a_new_plan_replaces_the_old_one_and_base_rules_fall_back_to_the_hub() {
        let first = plan(&[("h1", "h2"), ("h2", "h1")], &[("vm1", "vm2", &["h1", "h2"])]);
        let mut live = target(&star(), &base(), "h0", &first, &macs()).unwrap().overlay;
        // Someone (a migration) pointed a base rule over the adaptor's link.
        live.rules.insert(Rule {
            machine: "h1".into(),
            src: MacMatch::Any,
            dst: DstMatch::Mac(MacMatch::Exact(mac(2))),
            out: Target::Edge("h2".into()),
        });
        let second = plan(
            &[("h1", "h0"), ("h0", "h2")],
            &[("vm1", "vm2", &["h1", "h0", "h2"])],
        );
        let t = target(&live, &base(), "h0", &second, &macs()).unwrap();
        assert!(
            !t.overlay.links.contains_key("h1-h2"),
            "the unused adaptor link goes"
        );
        assert!(t
            .overlay
            .rules
            .iter()
            .all(|r| r.out != Target::Edge("h2".into()) || r.machine == "h0"));
        assert!(t.overlay.rules.contains(&Rule {
            machine: "h1".into(),
            src: MacMatch::Any,
            dst: DstMatch::Mac(MacMatch::Exact(mac(2))),
            out: Target::Edge("h0".into()),
        }));
        let owned = t.overlay.rules.iter().filter(|r| adaptor_rule(r)).count();
        assert_eq!(owned, 3, "h1 -> h0 -> h2 -> vm2");
        // Applying the same plan again changes nothing.
        let again = target(&t.overlay, &base(), "h0", &second, &macs()).unwrap();
        assert_eq!(again.overlay, t.overlay);
    }

    #[test]
    fn a_vm_that_is_not_where_the_plan_says_keeps_its_base_route() {
        let p = plan(&[("h1", "h3"), ("h3", "h1")], &[("vm1", "vm2", &["h1", "h3"])]);
        let t = target(&star(), &base(), "h0", &p, &macs()).unwrap();
        assert_eq!(t.skipped.len(), 1, "{:?}", t.skipped);
        assert!(t.overlay.rules.iter().all(|r| !adaptor_rule(r)));
    }

    #[test]
    fn bad_plans_are_errors() {
        let p = plan(&[], &[("vm9", "vm2", &["h1", "h2"])]);
        assert_eq!(
            target(&star(), &base(), "h0", &p, &macs()).unwrap_err(),
            OverlayError::UnknownVm("vm9".into())
        );
        let p = plan(&[("h1", "h7")], &[]);
        assert_eq!(
            target(&star(), &base(), "h0", &p, &macs()).unwrap_err(),
            OverlayError::UnknownHost("h7".into())
        );
        assert_eq!(
            target(&Overlay::default(), &base(), "h0", &p, &macs()).unwrap_err(),
            OverlayError::NoTemplate
        );
    }
}
