//! The host graph for the adaptor: every ordered host pair's available bandwidth and
//! latency, from the daemons' bounded active probes (`Request::Probe`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vadapt::status::MeasuredLink;
use vnet_lab::fleet::Fleet;

/// Attempts per pair: a daemon refuses a probe that comes too soon after another.
const ATTEMPTS: u32 = 4;
/// Byte cap of a probe: high enough that the time cap ends probes of fast paths (a few
/// MiB only fill socket buffers there), within the daemons' 256 MiB limit.
const PROBE_BYTES: u64 = 256 << 20;
/// Wait between attempts (more than the daemons' minimum interval between probes).
const RETRY: Duration = Duration::from_millis(300);

/// Probes every ordered pair of the fleet's hosts for `probe` each. A pair whose probe
/// fails after retries is left out of the graph (it cannot be linked) with a warning.
pub fn host_graph(fleet: &Fleet, probe: Duration, stop: &AtomicBool) -> Result<Vec<MeasuredLink>> {
    let mut graph = Vec::new();
    for a in &fleet.hosts {
        for b in fleet.hosts.iter().filter(|b| b.machine != a.machine) {
            if stop.load(Ordering::Relaxed) {
                bail!("stopped while measuring");
            }
            let ip = b
                .listen_ip()
                .with_context(|| format!("no underlay address known for {}", b.machine))?;
            let to = SocketAddr::new(ip, b.port);
            let mut last = None;
            for _ in 0..ATTEMPTS {
                let max_ms = Some(probe.as_millis() as u64);
                match fleet.ask(&a.machine, |c| c.probe(to, Some(PROBE_BYTES), max_ms)) {
                    Ok(r) => {
                        graph.push(MeasuredLink {
                            from: a.machine.clone(),
                            to: b.machine.clone(),
                            mbps: r.mbps,
                            rtt_ms: r.rtt_us as f64 / 1e3,
                        });
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(format!("{e:#}")),
                }
                std::thread::sleep(RETRY);
            }
            if let Some(e) = last {
                eprintln!("vadapt: cannot probe {} -> {}: {e}", a.machine, b.machine);
            }
        }
    }
    Ok(graph)
}
