//! The scale figure: 256 daemons and 1024 VMs (star plus 1024 fast paths) on real link
//! sessions (every link handshakes first and sends keepalives throughout), each VM
//! sending 50 frames a simulated second for 10 simulated seconds, mostly to its fast-path
//! partners and otherwise to anyone, one frame in a thousand a broadcast.
//!
//! `cargo run --release -p vnet-sim --example scale [-- SEED]`
//!
//! Prints simulated seconds per wall-clock second and frames per wall-clock second, and,
//! as the reference measured in the same run, how many forwarding decisions per second
//! the real forwarding core makes on the proxy's table alone: the simulation's frame rate
//! as a share of that says what the rest of the simulation costs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lang::LinkProto;
use rand::seq::SliceRandom;
use rand::Rng;
use vnet_core::forward::Forwarder;
use vnet_core::mac::MacAddr;
use vnet_core::table::{ForwardingTable, PortId, RuleId, RuleStats};
use vnet_sim::faults::FaultSchedule;
use vnet_sim::topology::{self, Routing};
use vnet_sim::trace::TraceMode;
use vnet_sim::vm::{FrameId, VmId};
use vnet_sim::{rng, Sim, Stream};

const HOSTS: usize = 256;
const VMS_PER_HOST: usize = 4;
const FAST_PATHS: usize = 1024;
const FRAMES_PER_SECOND: u64 = 50;
const SECONDS: u64 = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seed: u64 = std::env::args().nth(1).map_or(Ok(1), |s| s.parse())?;
    let setup = Instant::now();
    let mut t = rng(seed, Stream::Topology);
    let layout = topology::layout(&mut t, HOSTS, VMS_PER_HOST..=VMS_PER_HOST, LinkProto::Udp);
    let star = topology::star(&layout)?;
    let macs: Vec<(MacAddr, &str)> = layout
        .vms
        .iter()
        .filter_map(|v| Some((v.mac?, v.machine.as_str())))
        .collect();
    let mut fast = Vec::with_capacity(FAST_PATHS);
    while fast.len() < FAST_PATHS {
        let (&(a, ha), &(b, hb)) = (
            macs.choose(&mut t).ok_or("no VMs")?,
            macs.choose(&mut t).ok_or("no VMs")?,
        );
        if ha != hb && !fast.contains(&(a, b)) && !fast.contains(&(b, a)) {
            fast.push((a, b));
        }
    }
    let routing = Routing {
        fast: fast.clone(),
        relayed: BTreeMap::new(),
        proto: LinkProto::Udp,
    };
    let overlay = routing.apply_to(&star)?;
    let mut sim = Sim::new(seed, &overlay, FaultSchedule::calm(), TraceMode::Tail(64))?;
    // Every link handshakes before the traffic starts.
    sim.await_links(vnet_sim::check::LINK_SETUP)?;
    let start = sim.now();
    let setup = setup.elapsed();

    let vm_of: BTreeMap<MacAddr, VmId> = sim
        .vms()
        .iter()
        .enumerate()
        .map(|(i, v)| (v.mac, VmId(i as u32)))
        .collect();
    let mut partners: BTreeMap<VmId, Vec<MacAddr>> = BTreeMap::new();
    for &(a, b) in &fast {
        partners.entry(vm_of[&a]).or_default().push(b);
        partners.entry(vm_of[&b]).or_default().push(a);
    }
    let all: Vec<MacAddr> = vm_of.keys().copied().collect();
    let mut w = rng(seed, Stream::Workload);
    let gap = Duration::from_secs(1) / FRAMES_PER_SECOND as u32;
    let started = Instant::now();
    let mut sent: Vec<FrameId> = Vec::new();
    for second in 0..SECONDS {
        let from = start + Duration::from_secs(second);
        for (i, &mac) in all.iter().enumerate() {
            let vm = vm_of[&mac];
            for k in 0..FRAMES_PER_SECOND {
                let at = from + gap * k as u32 + gap.mul_f64(w.gen::<f64>());
                let dst = match (w.gen_range(0..1000), partners.get(&vm)) {
                    (0, _) => MacAddr::BROADCAST,
                    (1..=699, Some(p)) => *p.choose(&mut w).unwrap_or(&mac),
                    _ => all[(i + w.gen_range(1..all.len())) % all.len()],
                };
                sent.push(sim.send(vm, dst, at));
            }
        }
        sim.run_until(from + Duration::from_secs(1))?;
    }
    sim.run_until_idle()?;
    let wall = started.elapsed();

    // Every unicast frame reached its VM once, every broadcast every other VM once.
    let mut wrong = 0usize;
    let mut copies = 0usize;
    for &id in &sent {
        let Some(r) = sim.ledger().get(id) else { continue };
        copies += r.deliveries.len();
        let ok = if r.dst == MacAddr::BROADCAST {
            r.deliveries.len() == all.len() - 1 && r.deliveries_to(r.src) == 0
        } else {
            r.deliveries.len() == 1 && r.deliveries[0].vm == vm_of.get(&r.dst).copied()
        };
        wrong += usize::from(!ok);
    }

    let reference = forwarding_reference(&sim);
    let simulated = sim.now().as_secs_f64();
    let frames_per_s = sent.len() as f64 / wall.as_secs_f64();
    println!(
        "{HOSTS} daemons, {} VMs, {} links ({FAST_PATHS} fast paths), seed {seed}",
        all.len(),
        overlay.links.len()
    );
    println!(
        "setup (generate, compile, configure): {:.2} s",
        setup.as_secs_f64()
    );
    println!(
        "{} frames, {} copies delivered, {} events, {wrong} frames not delivered exactly as expected",
        sent.len(),
        copies,
        sim.trace().len()
    );
    println!(
        "{simulated:.2} simulated s in {:.2} wall s: {:.2} simulated s per wall s",
        wall.as_secs_f64(),
        simulated / wall.as_secs_f64()
    );
    println!(
        "{frames_per_s:.0} frames per wall s, {:.0} events per wall s",
        sim.trace().len() as f64 / wall.as_secs_f64()
    );
    println!(
        "reference, same run: the real forwarding core alone makes {reference:.0} decisions per s on the proxy's table; \
         the simulation forwards frames at {:.1}% of that",
        100.0 * frames_per_s / reference
    );
    println!("trace digest {}", sim.trace().digest());
    if wrong > 0 {
        return Err(format!("{wrong} frames were not delivered exactly once").into());
    }
    Ok(())
}

/// Forwarding decisions per wall second of a bare [`Forwarder`] on a table shaped like
/// the proxy's (one exact-destination rule per VM), cycling through every VM pair's
/// addresses so the lookup cache sees the simulation's spread of flows.
fn forwarding_reference(sim: &Sim) -> f64 {
    let macs: Vec<MacAddr> = sim.vms().iter().map(|v| v.mac).collect();
    let mut table = ForwardingTable::new();
    for (i, m) in macs.iter().enumerate() {
        let dst = vnet_core::rule::DstMatch::Mac(vnet_core::rule::MacMatch::Exact(*m));
        let stats = std::sync::Arc::new(RuleStats::default());
        if table
            .insert(
                RuleId(i as u64),
                vnet_core::rule::MacMatch::Any,
                dst,
                vec![PortId(i as u32 % 256)],
                stats,
            )
            .is_err()
        {
            return f64::NAN;
        }
    }
    let frames: Vec<Vec<u8>> = (0..4096)
        .map(|i| {
            vnet_sim::vm::frame(
                macs[i % macs.len()],
                macs[(i * 7 + 1) % macs.len()],
                FrameId(i as u64),
            )
        })
        .collect();
    let mut f = Forwarder::default();
    let rounds = 500;
    let started = Instant::now();
    let mut outputs = 0usize;
    for _ in 0..rounds {
        for frame in &frames {
            outputs += f
                .decide(&table, PortId(999), frame, 16)
                .map_or(0, |d| d.outputs.len());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    std::hint::black_box(outputs);
    (rounds * frames.len()) as f64 / elapsed
}
