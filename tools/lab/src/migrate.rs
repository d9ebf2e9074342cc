//! `vnet lab migrate`: a live migration of a lab VM, as far as the network sees it.
//!
//! A lab VM is a namespace whose NIC is a TAP that its host's vnetd created in it.
//! Migrating it to another host moves that NIC to the other host's vnetd while the VM's
//! sockets stay open, in six steps ([`Step`]):
//!
//! 1. `nic`: the destination's vnetd creates a second TAP in the VM's namespace, with the
//!    VM's MAC and MTU, under a free device name (`m1`, ...; `eth0` again once free);
//! 2. `rules`: the overlay's rules move with the VM ([`lang::migrate::move_vm`] on the
//!    daemons' live overlay), one atomic rule replace per daemon that changes: the
//!    destination first, then the others, all but the old host;
//! 3. `addresses`: in the VM, one `ip -batch` gives the new NIC the old one's addresses,
//!    routes and neighbour entries, then takes the addresses off the old NIC;
//! 4. `source-rules`: the old host's rules change too;
//! 5. `info`: lab.json records the VM's new host and NIC device;
//! 6. `delete`: the old host's vnetd deletes the old TAP.
//!
//! From step 2 on, frames for the VM arrive on the new NIC (and, from the old host's own
//! VMs, on the old one): the VM's kernel takes them on both (same MAC, and the address
//! belongs to the namespace, not to a NIC). Until step 3 the VM still sends through the
//! old NIC, and the old host, whose rules have not changed yet, forwards what it sends;
//! from step 3 on it sends through the new one. So no frame is black-holed in between,
//! and the only step that destroys anything comes last. A step that fails undoes itself
//! and every step before it, in reverse.
//!
//! For tests of that rollback, `VNET_LAB_MIGRATE_FAIL=STEP` in the environment makes
//! step STEP fail before it starts.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use vnet_client::Client;
use vnet_core::config::{IfaceKind, IfaceSpec, RuleEntry, Topology};
use vnet_core::mac::MacAddr;

use crate::fleet::{Daemons, Fleet};
use crate::{plan, sys, LabInfo};

/// The machine lab hosts forward to when they have no direct link: the proxy.
const PROXY: &str = "h0";
/// The environment variable that makes a step fail, for tests of the rollback.
pub const FAIL_ENV: &str = "VNET_LAB_MIGRATE_FAIL";

/// `vnet lab migrate`.
#[derive(clap::Args, Debug, Clone)]
pub struct MigrateArgs {
    /// Lab name.
    #[arg(long)]
    pub name: String,
    /// The VM to move: vm0, vm1, ...
    pub vm: String,
    /// The host it moves to: h1, h2, ... (h0 is the proxy, which keeps no VMs).
    pub host: String,
    /// Refuse unless the VM is on this host now (for callers whose view may be stale,
    /// such as the adaptor's hook).
    #[arg(long, value_name = "HOST")]
    pub from: Option<String>,
    /// Print the report (steps and their durations) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The steps of a migration, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The destination's vnetd creates the new TAP in the VM's namespace.
    Nic,
    /// The rules of every daemon but the old host's follow the VM.
    Rules,
    /// The VM's addresses, routes and neighbours move to the new NIC.
    Addresses,
    /// The old host's rules follow the VM.
    SourceRules,
    /// lab.json records the new host.
    Info,
    /// The old host's vnetd deletes the old TAP.
    Delete,
}

impl Step {
    const ALL: [Step; 6] = [
        Step::Nic,
        Step::Rules,
        Step::Addresses,
        Step::SourceRules,
        Step::Info,
        Step::Delete,
    ];

    /// Its name (as in `VNET_LAB_MIGRATE_FAIL`).
    pub fn name(self) -> &'static str {
        match self {
            Step::Nic => "nic",
            Step::Rules => "rules",
            Step::Addresses => "addresses",
            Step::SourceRules => "source-rules",
            Step::Info => "info",
            Step::Delete => "delete",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Step::Nic => "create the new NIC on the destination",
            Step::Rules => "retarget the rules of the new host and the others",
            Step::Addresses => "move the VM's addresses to the new NIC",
            Step::SourceRules => "retarget the old host's rules",
            Step::Info => "record the new host in lab.json",
            Step::Delete => "delete the old NIC on the old host",
        }
    }
}

/// One step as it ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Which.
    pub step: Step,
    /// Its wall time, in milliseconds.
    pub ms: f64,
}

/// What a migration did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// The VM.
    pub vm: String,
    /// Its MAC.
    pub mac: String,
    /// The host it left.
    pub from: String,
    /// The host it is on now.
    pub to: String,
    /// Its NIC's device name now.
    pub device: String,
    /// The daemons whose rules changed, in the order they changed.
    pub rules_changed: Vec<String>,
    /// The steps, in order.
    pub steps: Vec<StepReport>,
    /// Wall time of the whole migration (steps and planning), in milliseconds.
    pub total_ms: f64,
}

/// Runs `vnet lab migrate`.
pub fn run(args: MigrateArgs) -> Result<()> {
    let report = migrate_checked(&args.name, &args.vm, &args.host, args.from.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let steps: Vec<String> = report
            .steps
            .iter()
            .map(|s| format!("{} {:.1} ms", s.step.name(), s.ms))
            .collect();
        println!(
            "{} moved from {} to {} (NIC {}) in {:.1} ms: {}",
            report.vm,
            report.from,
            report.to,
            report.device,
            report.total_ms,
            steps.join(", ")
        );
    }
    Ok(())
}

/// Migrates VM `vm` of lab `lab` to host `host` (see the module documentation). On
/// failure the VM is still served by its old host, and the error names the failed step.
pub fn migrate(lab: &str, vm: &str, host: &str) -> Result<MigrationReport> {
    migrate_checked(lab, vm, host, None)
}

/// [`migrate`], refusing unless the VM is on `expected_from` (when given).
pub fn migrate_checked(
    lab: &str,
    vm: &str,
    host: &str,
    expected_from: Option<&str>,
) -> Result<MigrationReport> {
    plan::check_lab_name(lab)?;
    let started = Instant::now();
    let _lock = Lock::take(lab)?;
    let mut m = Migration::plan(lab, vm, host, expected_from)
        .with_context(|| format!("cannot migrate {vm} of lab `{lab}` to {host}"))?;
    let fail_at = injected_failure()?;
    let mut done = Vec::new();
    let mut steps = Vec::new();
    for step in Step::ALL {
        let t = Instant::now();
        let result = if fail_at == Some(step) {
            Err(anyhow!("failing on purpose ({FAIL_ENV}={})", step.name()))
        } else {
            m.run(step)
        };
        match result {
            Ok(()) => {
                done.push(step);
                steps.push(StepReport {
                    step,
                    ms: t.elapsed().as_secs_f64() * 1e3,
                });
            }
            Err(e) => {
                // The failed step may have half happened: undo it too.
                done.push(step);
                let failed = format!(
                    "migrating {vm} from {} to {host}: step `{}` ({}) failed: {e:#}",
                    m.from,
                    step.name(),
                    step.what()
                );
                let undo_errors: Vec<String> = done
                    .iter()
                    .rev()
                    .filter_map(|&s| m.undo(s).err().map(|e| format!("undoing `{}`: {e:#}", s.name())))
                    .collect();
                if undo_errors.is_empty() {
                    bail!("{failed}; rolled back: {vm} stays on {}", m.from);
                }
                bail!(
                    "{failed}; rolling back failed too, the lab may be inconsistent: {}",
                    undo_errors.join("; ")
                );
            }
        }
    }
    Ok(MigrationReport {
        vm: vm.to_string(),
        mac: m.mac.to_string(),
        from: m.from.clone(),
        to: m.to.clone(),
        device: m.new_spec.device().to_string(),
        rules_changed: m.rules.iter().map(|(machine, _, _)| machine.clone()).collect(),
        steps,
        total_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

fn injected_failure() -> Result<Option<Step>> {
    match std::env::var(FAIL_ENV) {
        Ok(name) if !name.is_empty() => Step::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .map(Some)
            .ok_or_else(|| {
                let names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
                anyhow!("{FAIL_ENV}={name} names no step (steps: {})", names.join(", "))
            }),
        _ => Ok(None),
    }
}

/// Everything a migration needs, gathered before it changes anything.
struct Migration {
    fleet: Fleet,
    info: LabInfo,
    vm_index: usize,
    netns: String,
    mac: MacAddr,
    from: String,
    to: String,
    old_spec: IfaceSpec,
    new_spec: IfaceSpec,
    /// For each daemon whose rules change, in the order they change: its rules before
    /// and after.
    rules: Vec<(String, Vec<RuleEntry>, Vec<RuleEntry>)>,
    /// The old NIC's addresses, routes and neighbours (read at `addresses`).
    nic_state: Option<NicState>,
}

impl Migration {
    fn plan(lab: &str, vm: &str, to: &str, expected_from: Option<&str>) -> Result<Migration> {
        let info = crate::info(lab)?;
        let vm_index = info.vms.iter().position(|v| v.name == vm).ok_or_else(|| {
            anyhow!(
                "lab `{lab}` has no VM `{vm}` (it has vm0..vm{})",
                info.vms.len().saturating_sub(1)
            )
        })?;
        let v = &info.vms[vm_index];
        if v.nic != "tap" {
            bail!(
                "{vm}'s NIC is a {} captured by {}'s vnetd, which cannot move: only TAP NICs migrate \
                 (build the lab without --veth-vms for {vm})",
                v.nic,
                v.host
            );
        }
        if !info.hosts.iter().any(|h| h.name == to) {
            bail!(
                "lab `{lab}` has no host `{to}` (it has h0..h{})",
                info.hosts.len().saturating_sub(1)
            );
        }
        if to == PROXY {
            bail!(
                "{PROXY} is the proxy, which keeps no VMs: move {vm} to h1..h{}",
                info.hosts.len() - 1
            );
        }
        let from = v.host.clone();
        if let Some(expected) = expected_from {
            if expected != from {
                bail!("{vm} is on {from}, not on {expected}");
            }
        }
        if from == to {
            bail!("{vm} is already on {to}");
        }
        let mac: MacAddr = v.mac.parse().with_context(|| format!("lab.json: MAC of {vm}"))?;
        let netns = v.netns.clone();

        let fleet = Daemons {
            lab: Some(lab.to_string()),
            hosts: None,
        }
        .fleet(None)?;
        let mut topologies = BTreeMap::new();
        for h in &fleet.hosts {
            topologies.insert(h.machine.clone(), fleet.ask(&h.machine, Client::config_get)?);
        }
        let live = lang::decompile(&fleet.hosts, &topologies)
            .context("reading the daemons' configuration as a description")?;

        let old_spec = topologies[&from]
            .ifaces
            .iter()
            .find(|i| i.mac == Some(mac) && i.kind == IfaceKind::Tap)
            .cloned()
            .ok_or_else(|| anyhow!("{from}'s vnetd has no TAP with {vm}'s MAC {mac} (is lab.json stale?)"))?;
        let new_spec = IfaceSpec {
            device: Some(crate::plan::lab_name(free_device(&netns)?)),
            ..old_spec.clone()
        };
        let new_iface = lang::Iface {
            machine: to.to_string(),
            device: new_spec.device.clone(),
            ..live.ifaces[&(from.clone(), old_spec.name.clone())].clone()
        };
        let target = lang::migrate::move_vm(
            &live,
            &lang::migrate::Move {
                mac,
                from: &from,
                iface: &new_iface,
                proxy: PROXY,
            },
        )?;
        let mut compiled = lang::compile(&target).context("the moved overlay cannot run on vnetd")?;
        // The destination first (it must deliver before anyone sends to it), the old host
        // last, in a step of its own: it forwards what the VM sends until the VM's
        // addresses have left its NIC.
        let mut order = vec![to.to_string()];
        order.extend(
            fleet
                .hosts
                .iter()
                .map(|h| h.machine.clone())
                .filter(|m| *m != from && m != to),
        );
        order.push(from.clone());
        let mut rules = Vec::new();
        for machine in order {
            let before = topologies[&machine].rules.clone();
            let after = keep_ids(&before, &compiled.remove(&machine).unwrap_or_default().rules);
            if !same_rules(&before, &after) {
                rules.push((machine, before, after));
            }
        }
        Ok(Migration {
            fleet,
            info,
            vm_index,
            netns,
            mac,
            from,
            to: to.to_string(),
            old_spec,
            new_spec,
            rules,
            nic_state: None,
        })
    }

    fn run(&mut self, step: Step) -> Result<()> {
        match step {
            Step::Nic => self.fleet.ask(&self.to, |c| c.iface_add(self.new_spec.clone())),
            Step::Rules | Step::SourceRules => {
                for (machine, _, after) in self.rule_changes(step) {
                    self.replace_rules(machine, after)?;
                }
                Ok(())
            }
            Step::Addresses => {
                let state = NicState::read(&self.netns, self.old_spec.device())?;
                let batch = state.move_to(self.old_spec.device(), self.new_spec.device(), &state.addresses);
                self.nic_state = Some(state);
                self.ip_batch(&batch)
            }
            Step::Info => {
                let mut info = self.info.clone();
                let v = &mut info.vms[self.vm_index];
                v.host = self.to.clone();
                v.device = self.new_spec.device().to_string();
                crate::write_info(&info)
            }
            Step::Delete => self.fleet.ask(&self.from, |c| c.iface_del(&self.old_spec.name)),
        }
    }

    /// Undoes `step`, which ran in full or in part.
    fn undo(&self, step: Step) -> Result<()> {
        match step {
            Step::Nic => {
                let present = self
                    .fleet
                    .ask(&self.to, Client::config_get)?
                    .ifaces
                    .iter()
                    .any(|i| i.name == self.new_spec.name);
                let device = self.new_spec.device();
                if present {
                    self.fleet.ask(&self.to, |c| c.iface_del(&self.new_spec.name))
                } else if sys::ip_in(&self.netns, &["link", "show", "dev", device]).is_ok() {
                    // A creation that failed half way can leave the (persistent) device.
                    sys::ip_in(&self.netns, &["link", "del", "dev", device]).map(drop)
                } else {
                    Ok(())
                }
            }
            Step::Rules | Step::SourceRules => {
                // Every daemon of the step, even those a failed step did not reach:
                // replacing rules with the ones they have is harmless.
                let changes: Vec<_> = self.rule_changes(step).collect();
                for (machine, before, _) in changes.into_iter().rev() {
                    self.replace_rules(machine, before)?;
                }
                Ok(())
            }
            Step::Addresses => {
                // Nothing moved if the old NIC's state could not even be read.
                let Some(state) = &self.nic_state else {
                    return Ok(());
                };
                let on_new = NicState::read(&self.netns, self.new_spec.device())?;
                let leave: Vec<String> = on_new
                    .addresses
                    .iter()
                    .filter(|a| state.addresses.contains(a))
                    .cloned()
                    .collect();
                self.ip_batch(&state.move_to(self.new_spec.device(), self.old_spec.device(), &leave))
            }
            Step::Info => crate::write_info(&self.info),
            // The last step: nothing after it can fail, and it fails as a whole.
            Step::Delete => Ok(()),
        }
    }

    /// The rule changes `step` (`rules` or `source-rules`) makes, in order.
    fn rule_changes(&self, step: Step) -> impl Iterator<Item = &(String, Vec<RuleEntry>, Vec<RuleEntry>)> {
        let source = step == Step::SourceRules;
        self.rules
            .iter()
            .filter(move |(machine, _, _)| (*machine == self.from) == source)
    }

    /// Replaces `machine`'s rules, keeping everything else it runs.
    fn replace_rules(&self, machine: &str, rules: &[RuleEntry]) -> Result<()> {
        let current = self.fleet.ask(machine, Client::config_get)?;
        self.fleet.ask(machine, |c| {
            c.config_replace(Topology {
                rules: rules.to_vec(),
                ..current
            })
        })
    }

    /// Runs `ip -batch` in the VM's namespace.
    fn ip_batch(&self, lines: &[String]) -> Result<()> {
        let path: PathBuf = self
            .info
            .dir
            .join(format!("migrate-{}.ip", self.info.vms[self.vm_index].name));
        fs::write(&path, lines.join("\n") + "\n").with_context(|| format!("writing {}", path.display()))?;
        let result = sys::ip_in(&self.netns, &["-batch", &path.to_string_lossy()]);
        let _ = fs::remove_file(&path);
        result.map(drop)
    }
}

/// `after` with the ids of the rules of `before` that are the same rule (sides and
/// outputs), so their counters survive the replace.
fn keep_ids(before: &[RuleEntry], after: &[RuleEntry]) -> Vec<RuleEntry> {
    let mut used = vec![false; before.len()];
    after
        .iter()
        .map(|a| {
            let same = before
                .iter()
                .enumerate()
                .position(|(i, b)| !used[i] && same_rule(a, b));
            let id = same.and_then(|i| {
                used[i] = true;
                before[i].id
            });
            RuleEntry { id, ..a.clone() }
        })
        .collect()
}

fn same_rule(a: &RuleEntry, b: &RuleEntry) -> bool {
    a.src == b.src && a.dst == b.dst && a.out.len() == b.out.len() && a.out.iter().all(|o| b.out.contains(o))
}

/// Whether two rule lists hold the same rules, whatever their order and ids.
fn same_rules(a: &[RuleEntry], b: &[RuleEntry]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| same_rule(x, y)))
}

/// A device name that is free in namespace `ns`: `eth0`, else `m1`, `m2`, ...
fn free_device(ns: &str) -> Result<String> {
    let out = sys::ip_in(ns, &["-j", "link", "show"])?;
    let links: Vec<serde_json::Value> = serde_json::from_str(&out).context("reading `ip -j link show`")?;
    let taken: Vec<&str> = links.iter().filter_map(|l| l["ifname"].as_str()).collect();
    Ok(std::iter::once("eth0".to_string())
        .chain((1..).map(|k| format!("m{k}")))
        .find(|name| !taken.contains(&name.as_str()))
        .expect("an unbounded sequence of names has a free one"))
}

/// What a VM's NIC carries at the IP level: addresses (`ADDR/LEN`), routes (`ip route`
/// arguments without the device) and neighbour entries (`ip neigh` arguments without the
/// device). IPv4 only: the lab turns IPv6 off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NicState {
    addresses: Vec<String>,
    routes: Vec<String>,
    neighbours: Vec<String>,
}

impl NicState {
    fn read(ns: &str, device: &str) -> Result<NicState> {
        let json = |args: &[&str]| -> Result<Vec<serde_json::Value>> {
            let mut all = vec!["-j"];
            all.extend_from_slice(args);
            let out = sys::ip_in(ns, &all)?;
            serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })
                .with_context(|| format!("reading `ip -j {}`", args.join(" ")))
        };
        let mut state = NicState::default();
        for link in json(&["-4", "addr", "show", "dev", device])? {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                if let (Some(local), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64()) {
                    state.addresses.push(format!("{local}/{len}"));
                }
            }
        }
        for r in json(&["-4", "route", "show", "table", "all", "dev", device])? {
            // The kernel's own routes (the prefix, local and broadcast ones) come and go
            // with the addresses.
            if r["protocol"].as_str() == Some("kernel") {
                continue;
            }
            let mut words = Vec::new();
            if let Some(t) = r["type"].as_str() {
                words.push(t.to_string());
            }
            words.push(r["dst"].as_str().unwrap_or("default").to_string());
            for (key, word) in [
                ("gateway", "via"),
                ("table", "table"),
                ("protocol", "proto"),
                ("scope", "scope"),
                ("metric", "metric"),
                ("prefsrc", "src"),
            ] {
                match &r[key] {
                    serde_json::Value::String(s) => words.extend([word.to_string(), s.clone()]),
                    serde_json::Value::Number(n) => words.extend([word.to_string(), n.to_string()]),
                    _ => {}
                }
            }
            state.routes.push(words.join(" "));
        }
        for n in json(&["-4", "neigh", "show", "dev", device])? {
            let states: Vec<&str> = n["state"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .collect();
            if let (Some(dst), Some(lladdr)) = (n["dst"].as_str(), n["lladdr"].as_str()) {
                // Usable entries only; stale ones are confirmed by a unicast probe, so the
                // VM need not broadcast an ARP request from its new NIC.
                let nud = if states.contains(&"PERMANENT") {
                    "permanent"
                } else {
                    "stale"
                };
                if !states.iter().any(|s| matches!(*s, "FAILED" | "INCOMPLETE")) {
                    state.neighbours.push(format!("{dst} lladdr {lladdr} nud {nud}"));
                }
            }
        }
        Ok(state)
    }

    /// `ip -batch` lines putting this state on device `to`, then deleting the addresses
    /// `remove` from device `from`: the new device has the addresses before the old one
    /// loses them, so the VM's sockets never lose theirs.
    fn move_to(&self, from: &str, to: &str, remove: &[String]) -> Vec<String> {
        let mut lines: Vec<String> = self
            .addresses
            .iter()
            .map(|a| format!("address replace {a} dev {to}"))
            .collect();
        lines.extend(self.routes.iter().map(|r| format!("route replace {r} dev {to}")));
        lines.extend(
            self.neighbours
                .iter()
                .map(|n| format!("neigh replace {n} dev {to}")),
        );
        lines.extend(remove.iter().map(|a| format!("address del {a} dev {from}")));
        lines
    }
}

/// The lab's migration lock: one migration at a time per lab (each reads the daemons'
/// rules and replaces them). A lock left by a process that died is taken over.
struct Lock(PathBuf);

impl Lock {
    fn take(lab: &str) -> Result<Lock> {
        let dir = plan::lab_dir(lab);
        if !dir.is_dir() {
            bail!("no lab `{lab}` ({} is missing; is it up?)", dir.display());
        }
        let path = dir.join("migrate.lock");
        for _ in 0..2 {
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    std::io::Write::write_all(&mut f, format!("{}\n", std::process::id()).as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                    return Ok(Lock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    match holder {
                        Some(pid) if sys::alive(pid) => {
                            bail!("another migration (PID {pid}) is under way in lab `{lab}`")
                        }
                        _ => {
                            let _ = fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        bail!("cannot take the migration lock {}", path.display())
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vnet_core::rule::{DstMatch, MacMatch, Output};

    fn rule(id: u64, dst: &str, out: &[&str]) -> RuleEntry {
        RuleEntry {
            id: Some(vnet_core::table::RuleId(id)),
            src: MacMatch::Any,
            dst: DstMatch::Mac(MacMatch::Exact(dst.parse().unwrap())),
            out: out.iter().map(|o| Output::Link(o.parse().unwrap())).collect(),
        }
    }

    #[test]
    fn unchanged_rules_keep_their_ids() {
        let before = [
            rule(4, "02:00:00:00:00:01", &["a", "b"]),
            rule(7, "02:00:00:00:00:02", &["a"]),
        ];
        let mut after = vec![
            RuleEntry {
                id: None,
                ..rule(0, "02:00:00:00:00:02", &["c"])
            },
            RuleEntry {
                id: None,
                ..rule(0, "02:00:00:00:00:01", &["b", "a"])
            },
        ];
        after = keep_ids(&before, &after);
        assert_eq!(after[0].id, None);
        assert_eq!(after[1].id, Some(vnet_core::table::RuleId(4)));
        assert!(!same_rules(&before, &after));
        assert!(same_rules(&before, &keep_ids(&before, &before)));
    }

    #[test]
    fn steps_have_names_for_the_failure_switch() {
        let names: Vec<&str> = Step::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            ["nic", "rules", "addresses", "source-rules", "info", "delete"]
        );
        for s in Step::ALL {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.name()));
        }
    }

    #[test]
    fn nic_state_moves_in_one_batch() {
        let s = NicState {
            addresses: vec!["198.19.0.2/16".into()],
            routes: vec!["198.18.5.0/24 via 198.19.0.9".into()],
            neighbours: vec!["198.19.0.1 lladdr 02:00:00:00:00:01 nud stale".into()],
        };
        assert_eq!(
            s.move_to("eth0", "m1", &s.addresses),
            [
                "address replace 198.19.0.2/16 dev m1",
                "route replace 198.18.5.0/24 via 198.19.0.9 dev m1",
                "neigh replace 198.19.0.1 lladdr 02:00:00:00:00:01 nud stale dev m1",
                "address del 198.19.0.2/16 dev eth0",
            ]
        );
    }
}
