//! The references `vnet bench` compares vnet with, set up between the two VMs of a lab
//! that is already up: kernel VXLAN and tinc 1.0 in switch mode. They need only the
//! lab's namespaces and underlay, so any of its labs can host them.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::in_ns;
use vnet_lab::{sys, LabInfo};

/// Gives each VM of a two-VM lab a VXLAN NIC (vx0, 198.19.1.x/24) whose tunnel runs
/// between their hosts' underlay addresses.
pub(super) fn add_vxlan(info: &LabInfo) -> Result<String> {
    let host = |name: &str| info.hosts.iter().find(|h| h.name == name).context("unknown host");
    let (a, b) = (&info.vms[0], &info.vms[1]);
    let (ha, hb) = (host(&a.host)?, host(&b.host)?);
    for (vm, here, there, ip) in [(a, ha, hb, "198.19.1.1/24"), (b, hb, ha, "198.19.1.2/24")] {
        let (local, remote) = (here.underlay.to_string(), there.underlay.to_string());
        sys::run(
            "ip",
            &[
                "-n",
                &here.netns,
                "link",
                "add",
                "vx0",
                "type",
                "vxlan",
                "id",
                "42",
                "local",
                &local,
                "remote",
                &remote,
                "dstport",
                "4789",
                "dev",
                "ul0",
            ],
        )?;
        sys::run(
            "ip",
            &["-n", &here.netns, "link", "set", "vx0", "netns", &vm.netns],
        )?;
        sys::run("ip", &["-n", &vm.netns, "addr", "add", ip, "dev", "vx0"])?;
        sys::run("ip", &["-n", &vm.netns, "link", "set", "vx0", "up"])?;
    }
    Ok("198.19.1.2".to_string())
}

/// A running tinc 1.0 daemon, stopped (by its PID) when dropped.
pub(super) struct Tincd(Child);

impl Drop for Tincd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects the two VMs of a lab with tinc 1.0 in switch mode: a tincd in each VM's
/// host namespace, its TAP `device` moved into the VM with address `subnet`.x/24.
/// `cipher` false sets Cipher and Digest to none. Returns the daemons and vm1's address.
pub(super) fn add_tinc(
    info: &LabInfo,
    device: &str,
    port: u16,
    subnet: &str,
    cipher: bool,
) -> Result<(Vec<Tincd>, String)> {
    let host = |name: &str| info.hosts.iter().find(|h| h.name == name).context("unknown host");
    let (a, b) = (&info.vms[0], &info.vms[1]);
    let ends = [(a, host(&a.host)?), (b, host(&b.host)?)];
    let root = info.dir.join(device);
    for (_, h) in &ends {
        let dir = root.join(&h.name);
        std::fs::create_dir_all(dir.join("hosts")).with_context(|| format!("creating {}", dir.display()))?;
        let connect = if h.name == ends[1].1.name {
            format!("ConnectTo = {}\n", ends[0].1.name)
        } else {
            String::new()
        };
        std::fs::write(
            dir.join("tinc.conf"),
            format!(
                "Name = {}\nMode = switch\nDeviceType = tap\nInterface = {device}\nAddressFamily = ipv4\n\
                 BindToAddress = {} {port}\n{connect}",
                h.name, h.underlay
            ),
        )?;
        let ciphers = if cipher {
            ""
        } else {
            "Cipher = none\nDigest = none\n"
        };
        std::fs::write(
            dir.join("hosts").join(&h.name),
            format!("Address = {} {port}\n{ciphers}", h.underlay),
        )?;
        // Appends the public key to hosts/NAME; with stdin closed it takes the default paths.
        sys::run("tincd", &["-c", &dir.to_string_lossy(), "-K2048"])?;
    }
    // Each node needs the other's host file (address, cipher settings, public key).
    for (_, h) in &ends {
        for (_, other) in &ends {
            if other.name != h.name {
                std::fs::copy(
                    root.join(&other.name).join("hosts").join(&other.name),
                    root.join(&h.name).join("hosts").join(&other.name),
                )?;
            }
        }
    }
    let mut daemons = Vec::new();
    for (vm, h) in &ends {
        let dir = root.join(&h.name);
        let child = Command::new("ip")
            .args(["netns", "exec", &h.netns, "tincd", "-D", "-c"])
            .arg(&dir)
            .arg(format!("--pidfile={}", dir.join("pid").display()))
            .arg(format!("--logfile={}", dir.join("log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start tincd (install it: tools/scripts/install-deps.sh)")?;
        daemons.push(Tincd(child));
        let appeared = sys::poll_until(Duration::from_secs(5), Duration::from_millis(20), || {
            sys::run("ip", &["-n", &h.netns, "link", "show", device]).is_ok()
        });
        if !appeared {
            bail!("tincd in {} did not create {device}", h.netns);
        }
        let ip = format!("{subnet}.{}/24", if vm.name == a.name { 1 } else { 2 });
        sys::run("ip", &["-n", &h.netns, "link", "set", device, "netns", &vm.netns])?;
        sys::run("ip", &["-n", &vm.netns, "addr", "add", &ip, "dev", device])?;
        sys::run("ip", &["-n", &vm.netns, "link", "set", device, "up"])?;
    }
    let to = format!("{subnet}.2");
    let reachable = sys::poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        in_ns(&a.netns, &["ping", "-c", "1", "-W", "1", &to]).is_ok()
    });
    if !reachable {
        bail!(
            "the tinc tunnel {device} does not carry traffic; see {}",
            root.display()
        );
    }
    Ok((daemons, to))
}
