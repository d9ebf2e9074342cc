//! Data-driven tests (`data/NAME.vnet` beside `NAME.out`: the canonical print of the tree
//! and the rendered diagnostics) and properties of the printer and the diff.

use std::collections::BTreeMap;
use std::path::Path;

use lang::generate::{all_pairs, fast_paths, generate, Layout, Shape};
use lang::{
    analyze, apply, compile, decompile, diff, parse, print, Host, Iface, Item, Link, LinkProto, Overlay,
    Rule, Target,
};
use proptest::prelude::*;
use vnet_core::mac::MacAddr;
use vnet_core::name::Name;
use vnet_core::rule::{DstMatch, MacMatch};

/// What the tools show for a description: its canonical text, then its diagnostics.
fn report(name: &str, src: &str) -> String {
    let a = analyze(src);
    let mut out = print(&a.description);
    for d in &a.diagnostics {
        out += &d.render(name, src);
    }
    out
}

#[test]
fn data_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let bless = std::env::var_os("BLESS").is_some();
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "vnet") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let got = report(&name, &std::fs::read_to_string(&path).unwrap());
        let expected_path = path.with_extension("out");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        assert_eq!(
            got,
            expected,
            "{name}: output differs from {}",
            expected_path.display()
        );
        count += 1;
    }
    assert!(count >= 5, "only {count} data files");
}

fn host(i: usize) -> Host {
    Host {
        user: "root".into(),
        machine: format!("h{i}"),
        port: 7400,
        interface: "ul0".into(),
        address: Some(format!("198.18.0.{}", i + 1).parse().unwrap()),
        control: Some(lang::ast::Control::Unix(format!("/run/h{i}.sock").into())),
        key_file: None,
    }
}

fn name(text: &str) -> Name {
    text.parse().unwrap()
}

fn mac(j: usize) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, j as u8 + 1])
}

fn vm(j: usize, machine: usize) -> Iface {
    Iface {
        machine: format!("h{machine}"),
        name: name(&format!("vm{j}")),
        kind: lang::ast::IfaceKind::Tap,
        mac: Some(mac(j)),
        device: Some(name("eth0")),
        netns: Some(name(&format!("t-vm{j}"))),
        mtu: Some(1500),
    }
}

const HOSTS: usize = 4;

fn side() -> impl Strategy<Value = MacMatch> {
    prop_oneof![
        Just(MacMatch::Any),
        (0..3usize).prop_map(|j| MacMatch::Exact(mac(j))),
        (0..3usize).prop_map(|j| MacMatch::Not(mac(j))),
        Just(MacMatch::Exact(MacAddr::BROADCAST)),
    ]
}

/// Candidate statements over hosts h0..h3; `overlay` keeps those that check.
fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        (0..3usize, 0..HOSTS, any::<bool>()).prop_map(|(j, m, mtu)| Item::Iface(Iface {
            mtu: mtu.then_some(9000),
            ..vm(j, m)
        })),
        (
            0..HOSTS,
            0..HOSTS,
            any::<bool>(),
            proptest::option::of(7401..7403u16),
            any::<bool>()
        )
            .prop_map(|(a, b, udp, port, encrypt)| {
                Item::Link(Link {
                    owner: format!("h{a}"),
                    peer: format!("h{b}"),
                    proto: if udp { LinkProto::Udp } else { LinkProto::Tcp },
                    port,
                    key: None,
                    reserve: None,
                    encrypt,
                })
            }),
        (
            0..HOSTS,
            side(),
            prop_oneof![side().prop_map(DstMatch::Mac), Just(DstMatch::None)],
            0..HOSTS,
            0..3usize,
            any::<bool>()
        )
            .prop_map(|(m, src, dst, peer, j, edge)| Item::Rule(Rule {
                machine: format!("h{m}"),
                src,
                dst,
                out: if edge {
                    Target::Edge(format!("h{peer}"))
                } else {
                    Target::Iface(name(&format!("vm{j}")))
                },
            })),
    ]
}

fn overlay() -> impl Strategy<Value = Overlay> {
    proptest::collection::vec(item(), 0..40).prop_map(|items| {
        let mut o = Overlay::default();
        for i in 0..HOSTS {
            o.add_host(host(i)).unwrap();
        }
        for it in &items {
            let _ = o.add(it);
        }
        o
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn printed_descriptions_parse_back_to_the_same_tree(o in overlay(), cur in overlay()) {
        for d in [o.to_description(), lang::diff::to_description(&o, &diff(&cur, &o))] {
            let text = print(&d);
            let parsed = parse(&text);
            prop_assert!(parsed.diagnostics.is_empty(), "{text}\n{:?}", parsed.diagnostics);
            prop_assert_eq!(&parsed.description, &d);
            prop_assert_eq!(print(&parsed.description), text);
        }
        let a = analyze(&print(&o.to_description()));
        prop_assert!(a.diagnostics.is_empty());
        prop_assert_eq!(a.overlay, o);
    }

    #[test]
    fn applying_the_diff_yields_the_target(current in overlay(), target in overlay()) {
        let d = diff(&current, &target);
        prop_assert_eq!(apply(&current, &d).unwrap(), target.clone());
        prop_assert!(diff(&target, &target).is_empty());
        // The diff's description checks against the current state: every DELETE names
        // something that is there.
        let text = print(&lang::diff::to_description(&current, &d));
        let mut overlay = current.clone();
        for b in &parse(&text).description.blocks {
            for s in &b.items {
                let r = match b.action { lang::Action::Add => overlay.add(&s.decl), lang::Action::Delete => overlay.delete(&s.decl) };
                prop_assert!(r.is_ok(), "{text}: {r:?}");
            }
        }
    }

    #[test]
    fn no_connectivity_is_cut_before_the_last_phase(current in overlay(), target in overlay()) {
        // Every rule both share stays through every intermediate phase.
        let d = diff(&current, &target);
        let mut o = current.clone();
        for phase in lang::phases(&d) {
            o = apply(&o, phase).unwrap();
            for r in current.rules.intersection(&target.rules) {
                let replaced = d.iter().any(|p| matches!(&p.item, Item::Rule(x) if x == r));
                prop_assert!(replaced || o.rules.contains(r));
            }
        }
    }

    #[test]
    fn compile_then_decompile_is_identity(o in overlay()) {
        let hosts: Vec<Host> = o.hosts.values().cloned().collect();
        let topologies = compile(&o).unwrap();
        prop_assert_eq!(decompile(&hosts, &topologies).unwrap(), o);
    }
}

fn layout(hosts: usize, vms: usize) -> Layout {
    Layout {
        hosts: (0..hosts).map(host).collect(),
        vms: (0..vms).map(|j| vm(j, 1 + j % (hosts - 1))).collect(),
        proxy: "h0".into(),
        proto: LinkProto::Tcp,
    }
}

/// Every VM reaches every other by unicast, and a broadcast reaches every other VM once,
/// without loops or black holes.
fn assert_connects(o: &Overlay, vms: usize) {
    for a in 0..vms {
        for b in (0..vms).filter(|&b| b != a) {
            let r = lang::route::trace(o, mac(a), mac(b), None).unwrap();
            assert!(!r.has_problems(), "{}", lang::route::render(&r));
            assert_eq!(r.deliveries(), 1, "{}", lang::route::render(&r));
        }
        let r = lang::route::trace(o, mac(a), MacAddr::BROADCAST, None).unwrap();
        assert!(!r.has_problems(), "{}", lang::route::render(&r));
        assert_eq!(r.deliveries(), vms - 1, "{}", lang::route::render(&r));
    }
}

#[test]
fn generated_shapes_connect_every_vm() {
    for shape in [Shape::Star, Shape::Full, Shape::Ring, Shape::Tree, Shape::Mesh] {
        for hosts in [2, 3, 5, 8] {
            let o = generate(&layout(hosts, 6), shape).unwrap();
            assert!(compile(&o).is_ok());
            let text = print(&o.to_description());
            assert!(analyze(&text).diagnostics.is_empty(), "{shape:?} {hosts}\n{text}");
            assert_connects(&o, 6);
        }
    }
    let links = |shape| generate(&layout(8, 6), shape).unwrap().links.len();
    assert_eq!(
        [
            links(Shape::Star),
            links(Shape::Full),
            links(Shape::Ring),
            links(Shape::Tree),
            links(Shape::Mesh)
        ],
        [7, 28, 8, 7, 10]
    );
}

/// A route through relays (as the adaptor adds them) is added from its end back and
/// deleted from its start on: the proxy relaying to h3 before h3 has its rule would send
/// the frame to h3's default route, back to the proxy, where split horizon drops it (the
/// simulator found this cut: vnet-sim `apply` scenario, seed 7).
#[test]
fn diff_never_cuts_a_relayed_route_on_the_way() {
    let star = generate(&layout(4, 2), Shape::Star).unwrap();
    let (a, b) = (mac(0), mac(1));
    let mut routed = star.clone();
    routed
        .add(&Item::Link(Link {
            owner: "h3".into(),
            peer: "h2".into(),
            proto: LinkProto::Tcp,
            port: None,
            key: None,
            reserve: None,
            encrypt: false,
        }))
        .unwrap();
    let path = ["h1", "h0", "h3", "h2"];
    for (i, m) in path.iter().enumerate() {
        let out = match path.get(i + 1) {
            Some(next) => Target::Edge(next.to_string()),
            None => Target::Iface(name("vm1")),
        };
        let rule = Rule {
            machine: m.to_string(),
            src: MacMatch::Exact(a),
            dst: DstMatch::Mac(MacMatch::Exact(b)),
            out,
        };
        routed.add(&Item::Rule(rule)).unwrap();
    }
    for (from, to) in [(&star, &routed), (&routed, &star)] {
        let d = diff(from, to);
        let mut o = from.clone();
        for p in &d {
            o = apply(&o, std::slice::from_ref(p)).unwrap();
            let r = lang::route::trace(&o, a, b, None).unwrap();
            assert!(
                !r.has_problems() && r.deliveries() == 1,
                "after {p:?}:\n{}",
                lang::route::render(&r)
            );
        }
        assert_eq!(&o, to);
    }
}

/// `vnet apply`'s steps: a rule whose output changes is swapped in one replace (both
/// versions firing at once delivered every frame twice: vnet-sim `apply`, seed 2), and a
/// relayed route's rules reach the daemons one machine at a time from the route's end
/// (replacing a step's daemons in name order cut it: vnet-sim `apply`, seeds 0 and 7).
#[test]
fn apply_steps_swap_rules_at_once_and_follow_routes() {
    let star = generate(&layout(4, 2), Shape::Star).unwrap();
    let (a, b) = (mac(0), mac(1));
    let link = |owner: &str, peer: &str| {
        Item::Link(Link {
            owner: owner.into(),
            peer: peer.into(),
            proto: LinkProto::Tcp,
            port: None,
            key: None,
            reserve: None,
            encrypt: false,
        })
    };
    let route = |o: &mut Overlay, path: &[&str]| {
        for (i, m) in path.iter().enumerate() {
            let out = match path.get(i + 1) {
                Some(next) => Target::Edge(next.to_string()),
                None => Target::Iface(name("vm1")),
            };
            o.add(&Item::Rule(Rule {
                machine: m.to_string(),
                src: MacMatch::Exact(a),
                dst: DstMatch::Mac(MacMatch::Exact(b)),
                out,
            }))
            .unwrap();
        }
    };
    let mut via_proxy = star.clone();
    via_proxy.add(&link("h3", "h2")).unwrap();
    route(&mut via_proxy, &["h1", "h0", "h3", "h2"]);
    let mut direct = star.clone();
    direct.add(&link("h3", "h2")).unwrap();
    direct.add(&link("h2", "h1")).unwrap();
    route(&mut direct, &["h1", "h2"]);
    // Star to relayed: the link first, then the route from its end, a machine a step.
    let steps = lang::steps(&diff(&star, &via_proxy));
    let machines: Vec<Vec<&str>> = steps
        .iter()
        .map(|s| s.machines.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(
        machines,
        [vec!["h3", "h2"], vec!["h2"], vec!["h3"], vec!["h0"], vec!["h1"]]
    );
    // Relayed to direct: h1's rule changes its output, and swaps in one step.
    let d = diff(&via_proxy, &direct);
    let steps = lang::steps(&d);
    let h1 = steps
        .iter()
        .find(|s| s.machines == ["h1"])
        .expect("a step for h1");
    assert_eq!(h1.primitives.len(), 2, "{h1:?}");
    assert_eq!(
        (h1.primitives[0].action, h1.primitives[1].action),
        (lang::Action::Add, lang::Action::Delete)
    );
    // The steps hold every primitive once and give the target.
    let all: Vec<lang::Primitive> = steps.iter().flat_map(|s| s.primitives.clone()).collect();
    assert_eq!(all.len(), d.len());
    assert_eq!(apply(&via_proxy, &all).unwrap(), direct);
    // After every step, a -> b is delivered exactly once.
    let mut o = via_proxy.clone();
    for s in &steps {
        o = apply(&o, &s.primitives).unwrap();
        let r = lang::route::trace(&o, a, b, None).unwrap();
        assert!(
            !r.has_problems() && r.deliveries() == 1,
            "after {s:?}:\n{}",
            lang::route::render(&r)
        );
    }
}

#[test]
fn a_vm_without_a_mac_cannot_be_generated_from() {
    let mut l = layout(3, 2);
    l.vms[1].mac = None;
    let name = l.vms[1].name.clone();
    assert_eq!(
        generate(&l, Shape::Star).unwrap_err(),
        lang::generate::GenerateError::VmWithoutMac(name.to_string())
    );
}

#[test]
fn fast_paths_take_the_direct_link() {
    let star = generate(&layout(8, 28), Shape::Star).unwrap();
    let macs: Vec<MacAddr> = (0..28).map(mac).collect();
    let fast = fast_paths(&star, &all_pairs(&macs), LinkProto::Udp).unwrap();
    assert_eq!(fast.links.len(), 7 + 21);
    assert_connects(&fast, 28);
    // vm0 (h1) -> vm1 (h2) goes straight over h1-h2.
    let r = lang::route::trace(&fast, mac(0), mac(1), None).unwrap();
    let machines: Vec<&str> = r.hops.iter().map(|h| h.machine.as_str()).collect();
    assert_eq!(machines, ["h1", "h2"]);
    let d = diff(&star, &fast);
    assert_eq!(apply(&star, &d).unwrap(), fast);
    assert!(d.iter().all(|p| p.action == lang::Action::Add));
}

#[test]
fn route_reports_loops_and_black_holes() {
    let src = "BEGIN HOST r AT h0 1 e ADDRESS 10.0.0.1 HOST r AT h1 1 e ADDRESS 10.0.0.2 HOST r AT h2 1 e ADDRESS 10.0.0.3
        ADD IFACE TAP h0 vm0 MAC 02:00:00:00:00:01
        LINK TCP h1 h1 h0 LINK TCP h2 h2 h1 LINK TCP h2 h2 h0
        FORWARD EDGE h0 ANY NONE h0 h1
        FORWARD EDGE h0 ANY 02:00:00:00:00:09 h0 h2 FORWARD EDGE h2 ANY 02:00:00:00:00:09 h2 h1
        FORWARD EDGE h1 ANY 02:00:00:00:00:09 h1 h0
        FORWARD EDGE h0 ANY 02:00:00:00:00:0a h0 h2 FORWARD EDGE h2 ANY 02:00:00:00:00:0a h2 h0
        END";
    let a = analyze(src);
    assert!(a.diagnostics.is_empty(), "{:?}", a.diagnostics);
    let ends = |dst: usize| {
        lang::route::trace(&a.overlay, mac(0), mac(dst), None)
            .unwrap()
            .outcomes
    };
    use lang::route::Outcome;
    assert_eq!(
        ends(8),
        [Outcome::Loop {
            machine: "h2".into(),
            link: "h0-h2".into()
        }]
    );
    assert_eq!(ends(5), [Outcome::BlackHole { machine: "h1".into() }]);
    assert_eq!(ends(9), [Outcome::Returned { machine: "h2".into() }]);
    let r = lang::route::trace(&a.overlay, mac(0), mac(9), None).unwrap();
    assert!(r.has_problems());
    assert!(lang::route::render(&r).contains("BLACK HOLE: h2 sends it back where it came from"));
    let e = lang::route::trace(&a.overlay, mac(7), mac(0), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no interface has MAC 02:00:00:00:00:08: say where the frame enters (--from MACHINE)"
    );
}

#[test]
fn compile_refuses_what_vnetd_lacks() {
    for (option, feature) in [
        (" KEY k2", "per-link keys"),
        (" RESERVE 5mbit", "bandwidth reservations"),
    ] {
        let src = format!("BEGIN HOST r AT h0 1 e ADDRESS 10.0.0.1 HOST r AT h1 1 e ADDRESS 10.0.0.2 ADD LINK UDP h1 h1 h0{option} END");
        let a = analyze(&src);
        assert!(a.diagnostics.is_empty());
        let e = compile(&a.overlay).unwrap_err();
        assert!(e.to_string().contains(feature), "{e}");
    }
    let a = analyze("BEGIN HOST r AT h0 1 e HOST r AT h1 1 e ADD LINK TCP h1 h1 h0 END");
    assert_eq!(
        compile(&a.overlay).unwrap_err().to_string(),
        "link `h0-h1` dials `h0`, which has no address: give its HOST line ADDRESS ip"
    );
}

#[test]
fn a_link_whose_name_would_be_too_long_does_not_compile() {
    let (a, b) = ("a".repeat(40), "b".repeat(40));
    let src = format!("BEGIN HOST r AT {a} 1 e ADDRESS 10.0.0.1 HOST r AT {b} 1 e ADDRESS 10.0.0.2 ADD LINK UDP {b} {b} {a} END");
    let analysis = analyze(&src);
    assert!(analysis.diagnostics.is_empty(), "{:?}", analysis.diagnostics);
    assert_eq!(
        compile(&analysis.overlay).unwrap_err().to_string(),
        format!(
            "the link between `{b}` and `{a}` has no valid name: name \"{a}-{}…\" is 81 bytes long (at most 64)",
            &b[..23]
        )
    );
}

#[test]
fn quic_links_dial_the_quic_port_and_decompile_back() {
    let src = "BEGIN HOST r AT h0 7400 e ADDRESS 198.18.0.1 HOST r AT h1 7400 e ADDRESS 198.18.0.2 \
               ADD LINK QUIC h1 h1 h0 END";
    let a = analyze(src);
    assert!(a.diagnostics.is_empty(), "{:?}", a.diagnostics);
    let daemons = compile(&a.overlay).unwrap();
    let dialer = &daemons["h1"].links[0];
    assert_eq!(dialer.proto, vnet_core::config::LinkProto::Quic);
    assert_eq!(
        dialer.peer,
        Some("198.18.0.1:7401".parse().unwrap()),
        "QUIC listens on the link port + 1"
    );
    assert_eq!(daemons["h0"].links[0].peer, None);
    let hosts: Vec<_> = a.overlay.hosts.values().cloned().collect();
    assert_eq!(lang::decompile(&hosts, &daemons).unwrap(), a.overlay);
}

#[test]
fn compile_merges_rules_with_the_same_sides() {
    let a = analyze(
        "BEGIN HOST r AT 10.0.0.1 1 e HOST r AT 10.0.0.2 7 e ADD IFACE TAP 10.0.0.1 vm0 LINK UDP 10.0.0.1 10.0.0.1 10.0.0.2
         FORWARD EDGE 10.0.0.1 ANY ff:ff:ff:ff:ff:ff 10.0.0.1 10.0.0.2
         FORWARD INTERFACE 10.0.0.1 ANY ff:ff:ff:ff:ff:ff vm0 END",
    );
    assert!(a.diagnostics.is_empty(), "{:?}", a.diagnostics);
    let t: BTreeMap<_, _> = compile(&a.overlay).unwrap();
    let h1 = &t["10.0.0.1"];
    assert_eq!(h1.rules.len(), 1);
    assert_eq!(h1.rules[0].out.len(), 2);
    assert_eq!(h1.links[0].peer, Some("10.0.0.2:7".parse().unwrap()));
    assert_eq!(t["10.0.0.2"].links[0].peer, None);
    h1.validate().unwrap();
}
