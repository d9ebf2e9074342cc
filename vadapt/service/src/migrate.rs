//! Migrations for the adaptor: through the operator's hook (`--hook`), or, for a lab,
//! the lab's own live migration of the VM's NIC.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vadapt::plan::Migration;
use vadapt_service::hook::{Hook, MigrationRequest};
use vnet_core::mac::MacAddr;
use vnet_lab::fleet::Fleet;

use crate::run::RunArgs;

/// Moves `m.vm` from `m.from` to `m.to`. On success the VM runs at `m.to` and the
/// destination daemon serves its MAC; on failure it still runs at `m.from`.
///
/// The hook contract (tools/hooks/README.md) makes the hook move the VM's NIC to the
/// destination daemon and retarget the rules, as the lab's own migration does; the
/// adaptor checks that the destination daemon, and no other, serves the MAC afterwards.
pub fn migrate(
    args: &RunArgs,
    fleet: &Fleet,
    lab: Option<&str>,
    macs: &BTreeMap<String, MacAddr>,
    m: &Migration,
) -> Result<()> {
    let mac = macs
        .get(&m.vm)
        .with_context(|| format!("no MAC known for VM {}", m.vm))?;
    match (&args.hook, lab) {
        (Some(program), _) => {
            let mut env = Vec::new();
            if let Some(lab) = lab {
                env.push(("VNET_LAB".to_string(), lab.to_string()));
            }
            let hook = Hook {
                program: program.clone(),
                timeout: Duration::from_secs(args.hook_timeout_s),
                env,
            };
            hook.run(&MigrationRequest {
                vm: m.vm.clone(),
                mac: mac.to_string(),
                from: m.from.clone(),
                to: m.to.clone(),
            })?;
            let live = fleet.live()?;
            let serving: Vec<&str> = live
                .ifaces
                .values()
                .filter(|i| i.mac == Some(*mac))
                .map(|i| i.machine.as_str())
                .collect();
            if serving != [m.to.as_str()] {
                bail!(
                    "the hook exited 0, but the MAC {mac} is served by {serving:?}, not by {} alone",
                    m.to
                );
            }
            Ok(())
        }
        (None, Some(lab)) => vnet_lab::migrate_checked(lab, &m.vm, &m.to, Some(&m.from)).map(|_| ()),
        (None, None) => {
            bail!("no migration hook: give --hook PROGRAM (see tools/hooks/README.md) or --no-migrate")
        }
    }
}
