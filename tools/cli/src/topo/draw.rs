//! `vnet show` output: the description, or a picture of hosts, links (type, state,
//! counters) and VMs as graphviz DOT, a self-contained SVG, or JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::Result;
use lang::{LinkProto, Overlay};
use vnet_control::proto::LinkStatus;

/// How `vnet show` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A description in the language.
    Text,
    /// A graphviz graph.
    Dot,
    /// An SVG picture (no graphviz needed).
    Svg,
    /// JSON: hosts, links with state and counters, VMs.
    Json,
}

/// One link as drawn: its ends, type, state and counters seen from the dialing end.
#[derive(serde::Serialize, Debug)]
struct LinkView {
    name: String,
    owner: String,
    peer: String,
    proto: LinkProto,
    state: String,
    tx_bytes: u64,
    rx_bytes: u64,
    tx_frames: u64,
    rx_frames: u64,
}

/// A VM: an interface with a MAC.
#[derive(serde::Serialize, Debug)]
struct VmView {
    host: String,
    iface: String,
    mac: String,
}

#[derive(serde::Serialize, Debug)]
struct Picture {
    hosts: Vec<lang::Host>,
    links: Vec<LinkView>,
    vms: Vec<VmView>,
    rules: BTreeMap<String, usize>,
}

fn picture(o: &Overlay, status: &BTreeMap<String, Vec<LinkStatus>>) -> Picture {
    let links = o
        .links
        .values()
        .map(|l| {
            let s = status
                .get(&l.owner)
                .and_then(|list| list.iter().find(|s| s.spec.name == l.name()));
            LinkView {
                name: l.name(),
                owner: l.owner.clone(),
                peer: l.peer.clone(),
                proto: l.proto,
                state: s.map_or("unknown".into(), |s| format!("{:?}", s.state).to_lowercase()),
                tx_bytes: s.map_or(0, |s| s.counters.tx_bytes),
                rx_bytes: s.map_or(0, |s| s.counters.rx_bytes),
                tx_frames: s.map_or(0, |s| s.counters.tx_frames),
                rx_frames: s.map_or(0, |s| s.counters.rx_frames),
            }
        })
        .collect();
    let mut rules = BTreeMap::new();
    for r in &o.rules {
        *rules.entry(r.machine.clone()).or_insert(0) += 1;
    }
    Picture {
        hosts: o.hosts.values().cloned().collect(),
        links,
        vms: o
            .ifaces
            .values()
            .filter_map(|i| {
                i.mac.map(|m| VmView {
                    host: i.machine.clone(),
                    iface: i.name.to_string(),
                    mac: m.to_string(),
                })
            })
            .collect(),
        rules,
    }
}

fn link_label(l: &LinkView) -> String {
    format!(
        "{} {:?} {} ({} B / {} B)",
        l.name, l.proto, l.state, l.tx_bytes, l.rx_bytes
    )
}

/// Renders the overlay in `format`.
pub fn render(format: Format, o: &Overlay, status: &BTreeMap<String, Vec<LinkStatus>>) -> Result<String> {
    let p = picture(o, status);
    Ok(match format {
        Format::Text => lang::print(&o.to_description()),
        Format::Json => serde_json::to_string_pretty(&p)? + "\n",
        Format::Dot => {
            let mut s = String::from("graph vnet {\n  node [shape=box];\n");
            for h in &p.hosts {
                let rules = p.rules.get(&h.machine).copied().unwrap_or(0);
                let _ = writeln!(s, "  \"{0}\" [label=\"{0}\\n{rules} rules\"];", h.machine);
            }
            for v in &p.vms {
                let _ = writeln!(
                    s,
                    "  \"{0}/{1}\" [shape=ellipse, label=\"{1}\\n{2}\"];\n  \"{0}\" -- \"{0}/{1}\" [style=dotted];",
                    v.host, v.iface, v.mac
                );
            }
            for l in &p.links {
                let style = if l.proto == LinkProto::Udp {
                    "dashed"
                } else {
                    "solid"
                };
                let _ = writeln!(
                    s,
                    "  \"{}\" -- \"{}\" [label=\"{}\", style={style}];",
                    l.owner,
                    l.peer,
                    link_label(l)
                );
            }
            s + "}\n"
        }
        Format::Svg => svg(&p),
    })
}

/// Hosts on a circle, each host's VMs on a smaller circle around it, links as lines
/// (dashed for UDP) labelled with type, state and counters.
fn svg(p: &Picture) -> String {
    const SIZE: f64 = 800.0;
    let c = SIZE / 2.0;
    let n = p.hosts.len().max(1) as f64;
    let pos: BTreeMap<&str, (f64, f64)> = p
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let a = std::f64::consts::TAU * i as f64 / n;
            (h.machine.as_str(), (c + 260.0 * a.cos(), c + 260.0 * a.sin()))
        })
        .collect();
    let esc = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{SIZE}\" height=\"{SIZE}\" font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    for l in &p.links {
        let ((x1, y1), (x2, y2)) = (pos[l.owner.as_str()], pos[l.peer.as_str()]);
        let dash = if l.proto == LinkProto::Udp {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "<line x1=\"{x1:.0}\" y1=\"{y1:.0}\" x2=\"{x2:.0}\" y2=\"{y2:.0}\" stroke=\"#357\"{dash}/>\n<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\">{}</text>",
            (x1 + x2) / 2.0,
            (y1 + y2) / 2.0 - 4.0,
            esc(&link_label(l))
        );
    }
    for (machine, (x, y)) in &pos {
        let vms: Vec<&VmView> = p.vms.iter().filter(|v| v.host == *machine).collect();
        for (k, v) in vms.iter().enumerate() {
            let a = std::f64::consts::TAU * k as f64 / vms.len() as f64;
            let (vx, vy) = (x + 70.0 * a.cos(), y + 70.0 * a.sin());
            let _ = writeln!(
                s,
                "<line x1=\"{x:.0}\" y1=\"{y:.0}\" x2=\"{vx:.0}\" y2=\"{vy:.0}\" stroke=\"#aaa\"/>\n<ellipse cx=\"{vx:.0}\" cy=\"{vy:.0}\" rx=\"34\" ry=\"14\" fill=\"#efe\" stroke=\"#585\"/>\n<text x=\"{vx:.0}\" y=\"{:.0}\" text-anchor=\"middle\">{}</text>",
                vy + 4.0,
                esc(&v.iface)
            );
        }
        let rules = p.rules.get(*machine).copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "<rect x=\"{:.0}\" y=\"{:.0}\" width=\"60\" height=\"32\" fill=\"#eef\" stroke=\"#357\"/>\n<text x=\"{x:.0}\" y=\"{:.0}\" text-anchor=\"middle\">{}</text>\n<text x=\"{x:.0}\" y=\"{:.0}\" text-anchor=\"middle\">{rules} rules</text>",
            x - 30.0,
            y - 16.0,
            y - 2.0,
            esc(machine),
            y + 11.0
        );
    }
    s + "</svg>\n"
}
