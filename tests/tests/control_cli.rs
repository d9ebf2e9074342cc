//! The control CLI against a live daemon: every `--json` answer is the control protocol's
//! own type as JSON, agreeing with what the typed client gets; `rule add` prints the id
//! the daemon gave, `rule del` takes it away, and a refusal reads as the daemon's reason.

use serde::de::DeserializeOwned;
use vnet_client::Client;
use vnet_control::proto::{IfaceStatus, LinkStatus, RuleStatus, StatsReport, StatusReport};
use vnet_core::config::Topology;
use vnet_core::name::Name;
use vnet_core::rule::{DstMatch, MacMatch, Output, RuleSpec};
use vnet_core::table::RuleId;
use vnet_e2e::{root_or_skip, Lab};

/// `vnet -c <h i> ARGS` (ending in `--json`), read as `T`.
fn name(text: &str) -> Name {
    text.parse().unwrap()
}

fn json<T: DeserializeOwned>(lab: &Lab, i: usize, args: &[&str]) -> T {
    let out = lab.ctl_ok(i, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("h{i}: vnet {args:?}: {e}: {out}"))
}

#[test]
fn json_answers_are_the_control_types() {
    if !root_or_skip("json_answers_are_the_control_types") {
        return;
    }
    let lab = Lab::up("e2ecli", &["--hosts", "2", "--vms", "1"]);
    let h1 = 1;

    // What does not move while no traffic flows: names, specs, states, peers, rules.
    let status: StatusReport = json(&lab, h1, &["status", "--json"]);
    let typed = lab.ask(h1, Client::status);
    assert_eq!(
        (&status.node, &status.version, &status.listen),
        (&typed.node, &typed.version, &typed.listen)
    );
    let links: Vec<LinkStatus> = json(&lab, h1, &["link", "list", "--json"]);
    let link_view = |l: &[LinkStatus]| -> Vec<_> {
        l.iter()
            .map(|l| (l.spec.clone(), l.state, l.peer_node.clone(), l.sessions))
            .collect()
    };
    assert_eq!(link_view(&links), link_view(&lab.links(h1)));
    assert!(
        !links.is_empty() && links.iter().all(LinkStatus::is_up),
        "{links:?}"
    );
    let ifaces: Vec<IfaceStatus> = json(&lab, h1, &["iface", "list", "--json"]);
    let iface_view = |l: &[IfaceStatus]| -> Vec<_> { l.iter().map(|i| (i.spec.clone(), i.up)).collect() };
    assert_eq!(iface_view(&ifaces), iface_view(&lab.ask(h1, Client::iface_list)));
    let rules: Vec<RuleStatus> = json(&lab, h1, &["rule", "list", "--json"]);
    let rule_view =
        |l: &[RuleStatus]| -> Vec<_> { l.iter().map(|r| (r.id, r.spec.clone(), r.priority)).collect() };
    assert_eq!(rule_view(&rules), rule_view(&lab.rules(h1)));
    let topology: Topology = json(&lab, h1, &["config", "get", "--json"]);
    assert_eq!(topology, lab.ask(h1, Client::config_get));
    let stats: StatsReport = json(&lab, h1, &["stats", "--json"]);
    let names = |ports: &[(String, vnet_control::proto::PortCounters)]| -> Vec<String> {
        ports.iter().map(|(n, _)| n.clone()).collect()
    };
    let typed = lab.stats(h1);
    assert_eq!(stats.node, typed.node);
    assert_eq!(names(&stats.ifaces), names(&typed.ifaces));
    assert_eq!(names(&stats.links), names(&typed.links));

    // `rule add` prints the new rule's id; `rule del` removes that rule.
    const SPARE: &str = "02:00:00:00:00:99";
    let out = lab.ctl_ok(h1, &["rule", "add", "--dst", SPARE, "--out", "link:h0-h1"]);
    let id = RuleId(
        out.trim()
            .parse()
            .unwrap_or_else(|e| panic!("rule add printed {out:?}: {e}")),
    );
    let added = lab.rules(h1).into_iter().find(|r| r.id == id);
    let added = added.unwrap_or_else(|| panic!("no rule {} after rule add", id.0));
    assert_eq!(
        added.spec,
        RuleSpec {
            src: MacMatch::Any,
            dst: SPARE.parse::<DstMatch>().expect("a MAC"),
            out: vec![Output::Link(name("h0-h1"))],
        }
    );
    lab.ctl_ok(h1, &["rule", "del", &id.0.to_string()]);
    assert!(
        lab.rules(h1).iter().all(|r| r.id != id),
        "rule {} survived rule del",
        id.0
    );

    // The daemon's refusal comes through with its reason.
    let err = lab
        .ctl(h1, &["link", "del", "h0-h1"])
        .expect_err("deleted the uplink its rules send to");
    assert!(err.contains("`h0-h1` is used by rule"), "{err}");
}
