//! CPU: the VMs' cgroups, their limits and usage (the layout is in the parent module's
//! docs).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use vadapt::reserve::{CpuReservation, ReserveError};

use crate::sys;

/// The directory under a hierarchy's root that holds every lab's cgroups.
const CGROUP_DIR: &str = "vnet-lab";
/// The file a process's PID is written to, to move it into a cgroup (v1 and v2).
const PROCS: &str = "cgroup.procs";
/// How long removing a cgroup waits for its last processes to finish exiting.
const RMDIR_TIMEOUT: Duration = Duration::from_secs(2);
/// Moves the shell into each cgroup.procs file given before `--`, then runs the rest.
const ENTER_SCRIPT: &str =
    r#"while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@""#;

/// A CPU limit in the kernel's units: `quota_us` of every `period_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuLimit {
    /// Period, µs.
    pub period_us: u64,
    /// Slice (quota), µs.
    pub quota_us: u64,
}

impl CpuLimit {
    /// The limit of a reservation, checked against the kernel's ranges (period 1 ms..1 s,
    /// slice at least 1 ms).
    pub fn from_ms(vm: &str, period_ms: f64, slice_ms: f64) -> Result<CpuLimit, ReserveError> {
        let period_us = (period_ms * 1000.0).round();
        let quota_us = (slice_ms * 1000.0).round();
        if !(1000.0..=1_000_000.0).contains(&period_us) {
            return Err(ReserveError::Invalid(format!(
                "{vm}: period {period_ms} ms is outside the kernel's 1..1000 ms"
            )));
        }
        if quota_us < 1000.0 {
            return Err(ReserveError::Invalid(format!(
                "{vm}: slice {slice_ms} ms is below the kernel's smallest quota, 1 ms"
            )));
        }
        Ok(CpuLimit {
            period_us: period_us as u64,
            quota_us: quota_us as u64,
        })
    }

    /// The reservation this limit enforces.
    pub(super) fn reservation(&self, vm: &str) -> CpuReservation {
        CpuReservation {
            vm: vm.to_string(),
            period_ms: self.period_us as f64 / 1000.0,
            slice_ms: self.quota_us as f64 / 1000.0,
        }
    }
}

/// Where the cpu controller lives, found at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuCgroups {
    /// A cgroup v2 hierarchy with the cpu controller: `cpu.max`, usage in `cpu.stat`.
    V2 {
        /// Its mount point.
        root: PathBuf,
    },
    /// cgroup v1: limits in the `cpu` hierarchy, usage in the `cpuacct` hierarchy (the
    /// same directory when they are co-mounted; `None` when cpuacct is not mounted).
    V1 {
        /// Mount point of the hierarchy with the cpu controller.
        cpu: PathBuf,
        /// Mount point of the hierarchy with the cpuacct controller.
        cpuacct: Option<PathBuf>,
    },
}

impl CpuCgroups {
    /// Finds the cpu controller in this process's mount table: a cgroup2 mount listing
    /// `cpu` in `cgroup.controllers` wins, else a cgroup v1 mount with the `cpu` option;
    /// `None` when there is neither.
    pub fn detect() -> Result<Option<CpuCgroups>> {
        let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
        Ok(Self::from_mounts(&mounts, |root| {
            fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|w| w == "cpu"))
        }))
    }

    /// [`CpuCgroups::detect`] on a mount table's text; `v2_has_cpu` tells whether a cgroup2
    /// mount point offers the cpu controller.
    fn from_mounts(mounts: &str, v2_has_cpu: impl Fn(&Path) -> bool) -> Option<CpuCgroups> {
        let mut cpu = None;
        let mut cpuacct = None;
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, mount, fstype, options, ..] = fields.as_slice() else {
                continue;
            };
            let mount = PathBuf::from(mount);
            match *fstype {
                "cgroup2" if v2_has_cpu(&mount) => return Some(CpuCgroups::V2 { root: mount }),
                "cgroup" => {
                    let opts: Vec<&str> = options.split(',').collect();
                    if opts.contains(&"cpu") && cpu.is_none() {
                        cpu = Some(mount.clone());
                    }
                    if opts.contains(&"cpuacct") && cpuacct.is_none() {
                        cpuacct = Some(mount);
                    }
                }
                _ => {}
            }
        }
        cpu.map(|cpu| CpuCgroups::V1 { cpu, cpuacct })
    }

    /// "cgroup v1 (cpu: ..., cpuacct: ...)" / "cgroup v2 (...)".
    pub fn describe(&self) -> String {
        match self {
            CpuCgroups::V2 { root } => format!("cgroup v2 ({})", root.display()),
            CpuCgroups::V1 { cpu, cpuacct } => format!(
                "cgroup v1 (cpu: {}, cpuacct: {})",
                cpu.display(),
                cpuacct
                    .as_ref()
                    .map_or("not mounted".to_string(), |p| p.display().to_string())
            ),
        }
    }

    /// The hierarchies' mount points, each once.
    fn roots(&self) -> Vec<&Path> {
        match self {
            CpuCgroups::V2 { root } => vec![root],
            CpuCgroups::V1 { cpu, cpuacct } => {
                let mut v = vec![cpu.as_path()];
                v.extend(cpuacct.as_deref().filter(|a| *a != cpu.as_path()));
                v
            }
        }
    }

    /// The lab's cgroup directory in each hierarchy.
    pub fn lab_dirs(&self, lab: &str) -> Vec<PathBuf> {
        self.roots()
            .into_iter()
            .map(|r| r.join(CGROUP_DIR).join(lab))
            .collect()
    }

    /// VM `vm`'s cgroup directory in each hierarchy.
    pub fn vm_dirs(&self, lab: &str, vm: &str) -> Vec<PathBuf> {
        self.lab_dirs(lab).into_iter().map(|d| d.join(vm)).collect()
    }

    /// The directory holding the cpu limit files of VM `vm`.
    fn limit_dir(&self, lab: &str, vm: &str) -> PathBuf {
        let root = match self {
            CpuCgroups::V2 { root } => root,
            CpuCgroups::V1 { cpu, .. } => cpu,
        };
        root.join(CGROUP_DIR).join(lab).join(vm)
    }

    /// Creates VM `vm`'s cgroups (and their parents); on v2 enables the cpu controller
    /// for the children of every directory down the path.
    pub fn create_vm(&self, lab: &str, vm: &str) -> Result<()> {
        for dir in self.vm_dirs(lab, vm) {
            fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        }
        if let CpuCgroups::V2 { root } = self {
            for dir in [
                root.clone(),
                root.join(CGROUP_DIR),
                root.join(CGROUP_DIR).join(lab),
            ] {
                write_file(&dir.join("cgroup.subtree_control"), "+cpu")?;
            }
        }
        Ok(())
    }

    /// Sets (`Some`) or releases (`None`) VM `vm`'s CPU limit. Setting creates the VM's
    /// cgroups if they are missing (a lab brought up before it had cgroups); releasing a
    /// VM without cgroups does nothing.
    pub fn set(&self, lab: &str, vm: &str, limit: Option<CpuLimit>) -> Result<()> {
        let dir = self.limit_dir(lab, vm);
        match limit {
            None if !dir.exists() => Ok(()),
            None => match self {
                CpuCgroups::V2 { .. } => write_file(&dir.join("cpu.max"), "max"),
                CpuCgroups::V1 { .. } => write_file(&dir.join("cpu.cfs_quota_us"), "-1"),
            },
            Some(l) => {
                self.create_vm(lab, vm)?;
                match self {
                    CpuCgroups::V2 { .. } => {
                        write_file(&dir.join("cpu.max"), &format!("{} {}", l.quota_us, l.period_us))
                    }
                    CpuCgroups::V1 { .. } => {
                        // Lift the quota first: the kernel checks each write against the
                        // other value (and the hierarchy) as it stands.
                        write_file(&dir.join("cpu.cfs_quota_us"), "-1")?;
                        write_file(&dir.join("cpu.cfs_period_us"), &l.period_us.to_string())?;
                        write_file(&dir.join("cpu.cfs_quota_us"), &l.quota_us.to_string())
                    }
                }
            }
        }
    }

    /// VM `vm`'s CPU limit as the kernel has it; `None` when unlimited or without cgroup.
    pub fn get(&self, lab: &str, vm: &str) -> Result<Option<CpuLimit>> {
        let dir = self.limit_dir(lab, vm);
        if !dir.exists() {
            return Ok(None);
        }
        let number = |text: &str, file: &Path| -> Result<u64> {
            text.trim()
                .parse()
                .with_context(|| format!("{}: `{}` is not a number", file.display(), text.trim()))
        };
        match self {
            CpuCgroups::V2 { .. } => {
                let file = dir.join("cpu.max");
                let text = read_file(&file)?;
                let mut words = text.split_whitespace();
                let (Some(quota), Some(period)) = (words.next(), words.next()) else {
                    bail!("{}: `{}` is not QUOTA PERIOD", file.display(), text.trim());
                };
                if quota == "max" {
                    return Ok(None);
                }
                Ok(Some(CpuLimit {
                    quota_us: number(quota, &file)?,
                    period_us: number(period, &file)?,
                }))
            }
            CpuCgroups::V1 { .. } => {
                let quota_file = dir.join("cpu.cfs_quota_us");
                let quota = read_file(&quota_file)?;
                if quota.trim() == "-1" {
                    return Ok(None);
                }
                let period_file = dir.join("cpu.cfs_period_us");
                Ok(Some(CpuLimit {
                    quota_us: number(&quota, &quota_file)?,
                    period_us: number(&read_file(&period_file)?, &period_file)?,
                }))
            }
        }
    }

    /// CPU time VM `vm`'s processes have used, in µs; `None` without an accounting
    /// hierarchy or cgroup.
    pub fn usage_us(&self, lab: &str, vm: &str) -> Result<Option<u64>> {
        let (file, scale_ns) = match self {
            CpuCgroups::V2 { root } => (root.join(CGROUP_DIR).join(lab).join(vm).join("cpu.stat"), false),
            CpuCgroups::V1 {
                cpuacct: Some(acct), ..
            } => (
                acct.join(CGROUP_DIR).join(lab).join(vm).join("cpuacct.usage"),
                true,
            ),
            CpuCgroups::V1 { cpuacct: None, .. } => return Ok(None),
        };
        if !file.exists() {
            return Ok(None);
        }
        let text = read_file(&file)?;
        let value = if scale_ns {
            text.trim().parse::<u64>().ok().map(|ns| ns / 1000)
        } else {
            text.lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
        };
        value
            .map(Some)
            .with_context(|| format!("{}: no usage in `{}`", file.display(), text.trim()))
    }

    /// Moves process `pid` into VM `vm`'s cgroups; a process that has exited meanwhile is
    /// not an error.
    pub(super) fn enter(&self, lab: &str, vm: &str, pid: u32) -> Result<()> {
        for dir in self.vm_dirs(lab, vm) {
            let file = dir.join(PROCS);
            match fs::write(&file, pid.to_string()) {
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
                r => r.with_context(|| format!("moving PID {pid} into {}", file.display()))?,
            }
        }
        Ok(())
    }

    /// The processes in any of lab `lab`'s VM cgroups.
    fn lab_pids(&self, lab: &str) -> Vec<u32> {
        let mut pids: Vec<u32> = vm_subdirs(&self.lab_dirs(lab))
            .iter()
            .filter_map(|d| fs::read_to_string(d.join(PROCS)).ok())
            .flat_map(|t| {
                t.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Removes lab `lab`'s cgroups (its processes must be gone), and the common
    /// `vnet-lab` directory when no other lab uses it.
    fn remove_lab(&self, lab: &str) -> Result<()> {
        let lab_dirs = self.lab_dirs(lab);
        for dir in vm_subdirs(&lab_dirs)
            .iter()
            .chain(&lab_dirs)
            .filter(|d| d.exists())
        {
            // A process killed a moment ago may still be leaving the cgroup.
            let mut last = Ok(());
            sys::poll_until(RMDIR_TIMEOUT, Duration::from_millis(20), || {
                last = fs::remove_dir(dir);
                !matches!(&last, Err(e) if e.raw_os_error() == Some(libc::EBUSY))
            });
            match last {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing cgroup {}", dir.display()));
                }
                _ => {}
            }
        }
        for root in self.roots() {
            // Fails while another lab has cgroups there, which is as it should be.
            let _ = fs::remove_dir(root.join(CGROUP_DIR));
        }
        Ok(())
    }
}

/// The subdirectories (VM cgroups) of `dirs`.
fn vm_subdirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    dirs.iter()
        .filter_map(|d| fs::read_dir(d).ok())
        .flat_map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing `{text}` to {}", path.display()))
}

fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Creates the cgroups of the lab's VMs `vm0..vm{vms-1}` (`vnet lab up`). Nothing when no
/// hierarchy has the cpu controller: the lab works, CPU reservations are refused.
pub(crate) fn create_cgroups(lab: &str, vms: usize) -> Result<()> {
    let Some(cgroups) = CpuCgroups::detect()? else {
        return Ok(());
    };
    for j in 0..vms {
        cgroups.create_vm(lab, &format!("vm{j}"))?;
    }
    Ok(())
}

/// The processes in lab `lab`'s VM cgroups (`vnet lab down` stops them with the rest).
pub(crate) fn cgroup_pids(lab: &str) -> Vec<u32> {
    match CpuCgroups::detect() {
        Ok(Some(c)) => c.lab_pids(lab),
        _ => Vec::new(),
    }
}

/// Removes lab `lab`'s cgroups (`vnet lab down`, after its processes are stopped).
pub(crate) fn remove_cgroups(lab: &str) -> Result<()> {
    match CpuCgroups::detect()? {
        Some(c) => c.remove_lab(lab),
        None => Ok(()),
    }
}

/// A command that runs a program on lab machine `machine` (vm0.., h0.., sw) of lab `lab`:
/// `ip netns exec LAB-MACHINE`, to which the caller appends the program and its
/// arguments. For a VM with cgroups the command first moves itself into them (through
/// `sh`, which then execs `ip`), so the program and all it starts count against the VM's
/// CPU reservation; it exits 126 if it cannot.
pub fn machine_command(lab: &str, machine: &str) -> Command {
    let ns = format!("{lab}-{machine}");
    let procs: Vec<PathBuf> = match CpuCgroups::detect() {
        Ok(Some(c)) if machine.starts_with("vm") => c
            .vm_dirs(lab, machine)
            .into_iter()
            .map(|d| d.join(PROCS))
            .filter(|p| p.exists())
            .collect(),
        _ => Vec::new(),
    };
    if procs.is_empty() {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns]);
        return c;
    }
    let mut c = Command::new("sh");
    c.args(["-c", ENTER_SCRIPT, "vnet-cgroup"])
        .args(procs)
        .arg("--")
        .args(["ip", "netns", "exec", &ns]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_cpu_limits_follow_the_kernel_ranges() {
        assert_eq!(
            CpuLimit::from_ms("vm0", 100.0, 25.0).unwrap(),
            CpuLimit {
                period_us: 100_000,
                quota_us: 25_000
            }
        );
        assert_eq!(CpuLimit::from_ms("vm0", 1.0, 1.0).unwrap().quota_us, 1000);
        for (p, s) in [(0.5, 0.5), (1001.0, 10.0), (100.0, 0.5)] {
            assert!(
                matches!(CpuLimit::from_ms("vm0", p, s), Err(ReserveError::Invalid(_))),
                "{p} {s}"
            );
        }
        let r = CpuLimit::from_ms("vm0", 100.0, 12.5).unwrap().reservation("vm0");
        assert_eq!((r.period_ms, r.slice_ms), (100.0, 12.5));
    }

    #[test]
    fn reserve_detects_the_cpu_controller() {
        let hybrid = "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
                      cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            CpuCgroups::from_mounts(hybrid, |_| false),
            Some(CpuCgroups::V1 {
                cpu: "/sys/fs/cgroup/cpu".into(),
                cpuacct: Some("/sys/fs/cgroup/cpuacct".into())
            })
        );
        let comounted = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n";
        let c = CpuCgroups::from_mounts(comounted, |_| false).unwrap();
        assert_eq!(c.roots().len(), 1);
        assert_eq!(c.vm_dirs("lt", "vm0").len(), 1);
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            CpuCgroups::from_mounts(unified, |p| p == Path::new("/sys/fs/cgroup")),
            Some(CpuCgroups::V2 {
                root: "/sys/fs/cgroup".into()
            })
        );
        assert_eq!(CpuCgroups::from_mounts(unified, |_| false), None);
        assert_eq!(
            CpuCgroups::from_mounts("proc /proc proc rw 0 0\n", |_| true),
            None
        );
    }

    fn temp_root(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vnet-cg-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reserve_cgroup_v1_files() {
        let root = temp_root("v1");
        let cg = CpuCgroups::V1 {
            cpu: root.join("cpu"),
            cpuacct: Some(root.join("cpuacct")),
        };
        cg.create_vm("lt", "vm0").unwrap();
        let dir = root.join("cpu/vnet-lab/lt/vm0");
        assert!(dir.is_dir() && root.join("cpuacct/vnet-lab/lt/vm0").is_dir());
        // A real cgroup starts unlimited.
        fs::write(dir.join("cpu.cfs_quota_us"), "-1\n").unwrap();
        fs::write(dir.join("cpu.cfs_period_us"), "100000\n").unwrap();
        assert_eq!(cg.get("lt", "vm0").unwrap(), None);

        let limit = CpuLimit::from_ms("vm0", 50.0, 12.5).unwrap();
        cg.set("lt", "vm0", Some(limit)).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("cpu.cfs_period_us")).unwrap(),
            "50000"
        );
        assert_eq!(fs::read_to_string(dir.join("cpu.cfs_quota_us")).unwrap(), "12500");
        assert_eq!(cg.get("lt", "vm0").unwrap(), Some(limit));
        cg.set("lt", "vm0", None).unwrap();
        assert_eq!(fs::read_to_string(dir.join("cpu.cfs_quota_us")).unwrap(), "-1");
        assert_eq!(cg.get("lt", "vm0").unwrap(), None);
        // Releasing a VM that has no cgroup is nothing; usage comes from cpuacct, in ns.
        cg.set("lt", "vm9", None).unwrap();
        assert!(!root.join("cpu/vnet-lab/lt/vm9").exists());
        assert_eq!(cg.usage_us("lt", "vm0").unwrap(), None);
        fs::write(root.join("cpuacct/vnet-lab/lt/vm0/cpuacct.usage"), "2500000123\n").unwrap();
        assert_eq!(cg.usage_us("lt", "vm0").unwrap(), Some(2_500_000));
        assert_eq!(
            cg.vm_dirs("lt", "vm0"),
            [
                root.join("cpu/vnet-lab/lt/vm0"),
                root.join("cpuacct/vnet-lab/lt/vm0")
            ]
        );
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn reserve_cgroup_v2_files() {
        let root = temp_root("v2");
        let cg = CpuCgroups::V2 { root: root.clone() };
        let limit = CpuLimit::from_ms("vm1", 100.0, 25.0).unwrap();
        // Setting creates the cgroup and enables the controller down the path.
        cg.set("lt", "vm1", Some(limit)).unwrap();
        for dir in ["", "vnet-lab", "vnet-lab/lt"] {
            assert_eq!(
                fs::read_to_string(root.join(dir).join("cgroup.subtree_control")).unwrap(),
                "+cpu",
                "{dir}"
            );
        }
        let max = root.join("vnet-lab/lt/vm1/cpu.max");
        assert_eq!(fs::read_to_string(&max).unwrap(), "25000 100000");
        assert_eq!(cg.get("lt", "vm1").unwrap(), Some(limit));
        cg.set("lt", "vm1", None).unwrap();
        assert_eq!(fs::read_to_string(&max).unwrap(), "max");
        // The kernel keeps the period: "max 100000".
        fs::write(&max, "max 100000\n").unwrap();
        assert_eq!(cg.get("lt", "vm1").unwrap(), None);
        fs::write(&max, "junk\n").unwrap();
        assert!(cg.get("lt", "vm1").is_err());
        fs::write(
            root.join("vnet-lab/lt/vm1/cpu.stat"),
            "usage_usec 1234567\nuser_usec 1000000\n",
        )
        .unwrap();
        assert_eq!(cg.usage_us("lt", "vm1").unwrap(), Some(1_234_567));
        let _ = fs::remove_dir_all(&root);
    }
}
