//! Tests that build real namespaces, with a fake vnetd (a Python script that only opens
//! its control socket). They need root: without it they print SKIPPED, and under
//! CI=true they fail instead.

use std::path::PathBuf;

use super::*;

/// Opens the control socket named in the config, answers nothing, runs until killed.
/// To every request it answers with REPLY_HEX: "no links", so the lab sees every link up.
/// When its file name contains "crash", it prints a message and exits 3 instead.
const FAKE_VNETD: &str = r#"#!/usr/bin/python3
import re, socket, sys
cfg = open(sys.argv[sys.argv.index("--config") + 1]).read()
if "crash" in sys.argv[0]:
    print("fake vnetd: cannot start (on purpose)", flush=True)
    sys.exit(3)
path = re.search(r'^control = "(.*)"', cfg, re.M).group(1)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(16)
print("fake vnetd listening on", path, flush=True)
reply = bytes.fromhex("REPLY_HEX")
while True:
    c, _ = s.accept()
    head = c.recv(4)
    if len(head) == 4:
        body = b""
        want = int.from_bytes(head, "big")
        while len(body) < want:
            chunk = c.recv(want - len(body))
            if not chunk:
                break
            body += chunk
        c.sendall(reply)
    c.close()
"#;

fn fake_vnetd(kind: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    // Tests run in parallel threads of one process and each deletes its script when done:
    // every call needs its own file.
    static SCRIPTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SCRIPTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "vnet-lab-fake-vnetd-{kind}-{}-{n}.py",
        std::process::id()
    ));
    let reply = vnet_control::proto::encode(&vnet_control::proto::ResponseEnvelope {
        version: vnet_control::proto::PROTOCOL_VERSION,
        result: Ok(vnet_control::proto::Response::Links(Vec::new())),
    });
    fs::write(&path, FAKE_VNETD.replace("REPLY_HEX", &hex::encode(reply))).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// True when this process may build network namespaces. Otherwise prints a loud
/// SKIPPED line, or panics under CI=true, where skipping would hide a broken setup.
fn can_build_namespaces(test: &str) -> bool {
    // Tests run in parallel threads of one process: the probe name must differ per call.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("ltprobe{}-{n}", std::process::id());
    if sys::ip(&["netns", "add", &probe]).is_ok() {
        let _ = sys::ip(&["netns", "del", &probe]);
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root / CAP_NET_ADMIN, and CI=true does not allow skipping");
    }
    eprintln!("SKIPPED: {test}: needs root / CAP_NET_ADMIN to build network namespaces");
    false
}

/// Tears the lab down even when an assertion fails.
struct Guard(&'static str);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = down(self.0);
    }
}

fn assert_gone(name: &str, info: Option<&LabInfo>) {
    assert_eq!(lab_namespaces(name).unwrap(), Vec::<String>::new());
    assert!(!lab_dir(name).exists());
    for h in info.map(|i| i.hosts.as_slice()).unwrap_or_default() {
        assert!(!sys::alive(h.pid), "vnetd {} still runs", h.pid);
    }
}

#[test]
fn up_ping_down_with_fake_vnetd() {
    if !can_build_namespaces("up_ping_down_with_fake_vnetd") {
        return;
    }
    const NAME: &str = "ltfake";
    let _guard = Guard(NAME);
    let _ = down(NAME);
    let mut args = UpArgs::new(NAME, 3, 3);
    args.veth_vms = vec![0, 1, 2];
    args.uplinks = vec!["h1=50mbit".parse().unwrap()];
    args.topology = LabTopology::Full;
    args.vnetd = Some(fake_vnetd("ok"));
    let info = up(&args).unwrap();

    assert_eq!(read_info(&info.dir).as_ref(), Some(&info));
    assert_eq!(info.hosts.len(), 3);
    for h in &info.hosts {
        assert!(sys::alive(h.pid));
        assert!(UnixStream::connect(&h.control).is_ok());
        let cfg =
            vnet_core::config::DaemonConfig::from_toml(&fs::read_to_string(&h.config).unwrap()).unwrap();
        assert_eq!(cfg.node, h.name);
    }
    let key = fs::read_to_string(&info.key_file).unwrap();
    assert_eq!(key.trim().len(), 64);
    assert!(hex::decode(key.trim()).is_ok());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&info.key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The underlay works, in both directions and between non-proxy hosts.
    for (ns, dst) in [
        ("ltfake-h1", "198.18.0.1"),
        ("ltfake-h0", "198.18.0.3"),
        ("ltfake-h2", "198.18.0.2"),
    ] {
        sys::ip(&["netns", "exec", ns, "ping", "-c1", "-W2", dst]).unwrap();
    }
    // No route out of any namespace.
    for ns in lab_namespaces(NAME).unwrap() {
        let routes = sys::ip_in(&ns, &["route", "show", "default"]).unwrap();
        assert_eq!(routes.trim(), "", "{ns} has a default route");
    }
    // Shaping (an HTB tree at the uplink rate) on both ends of h1's uplink only.
    for (ns, dev) in [("ltfake-h1", "ul0"), ("ltfake-sw", "p1")] {
        let htb = sys::ip(&["netns", "exec", ns, "tc", "class", "show", "dev", dev]).unwrap();
        assert!(
            htb.contains("class htb 1:1 root rate 50Mbit"),
            "{ns} {dev}: {htb}"
        );
    }
    let plain = sys::ip(&["netns", "exec", "ltfake-h2", "tc", "qdisc", "show", "dev", "ul0"]).unwrap();
    assert!(!plain.contains("htb"), "{plain}");
    // A cgroup per VM, which `vnet lab exec` enters.
    let cgroups = reserve::CpuCgroups::detect().unwrap();
    if let Some(cg) = &cgroups {
        for vm in &info.vms {
            for dir in cg.vm_dirs(NAME, &vm.name) {
                assert!(dir.is_dir(), "{}", dir.display());
            }
        }
        let out = reserve::machine_command(NAME, "vm1")
            .args(["cat", "/proc/self/cgroup"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("/vnet-lab/ltfake/vm1"), "{text}");
    }
    // VMs: eth0 with MAC and IP, the host end of the veth up in the host namespace.
    for vm in &info.vms {
        let eth0 = sys::ip_in(&vm.netns, &["addr", "show", "dev", "eth0"]).unwrap();
        assert!(
            eth0.contains(&vm.mac) && eth0.contains(&format!("{}/16", vm.ip)),
            "{eth0}"
        );
        let host_ns = format!("{NAME}-{}", vm.host);
        let v = sys::ip_in(&host_ns, &["link", "show", "dev", &format!("v{}", &vm.name[2..])]).unwrap();
        assert!(v.contains("UP"), "{v}");
    }
    // A second lab of the same name is refused.
    let again = up(&args).unwrap_err().to_string();
    assert!(again.contains("vnet lab down --name ltfake"), "{again}");
    assert!(list_labs().unwrap().labs.iter().any(|l| l == &info));

    down(NAME).unwrap();
    assert_gone(NAME, Some(&info));
    for dir in cgroups.iter().flat_map(|cg| cg.lab_dirs(NAME)) {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    // Idempotent.
    assert!(!down_lab(NAME).unwrap());
    let _ = fs::remove_file(args.vnetd.unwrap());
}

#[test]
fn down_cleans_up_a_lab_without_lab_json() {
    if !can_build_namespaces("down_cleans_up_a_lab_without_lab_json") {
        return;
    }
    const NAME: &str = "ltcrash";
    let _guard = Guard(NAME);
    let _ = down(NAME);
    let mut args = UpArgs::new(NAME, 2, 1);
    args.veth_vms = vec![0];
    args.vnetd = Some(fake_vnetd("ok"));
    let info = up(&args).unwrap();
    // A crash: lab.json and the PID files are gone, a stray process runs in a VM.
    fs::remove_file(info.dir.join("lab.json")).unwrap();
    fs::remove_file(info.dir.join("h0.pid")).unwrap();
    let mut stray = Command::new("ip")
        .args(["netns", "exec", "ltcrash-vm0", "sleep", "60"])
        .spawn()
        .unwrap();
    sys::poll_until(Duration::from_secs(5), POLL, || {
        sys::netns_pids("ltcrash-vm0").unwrap().contains(&stray.id())
    });
    let list = list_labs().unwrap();
    assert!(list.leftovers.iter().any(|l| l.name == NAME), "{list:?}");

    down(NAME).unwrap();
    assert_gone(NAME, Some(&info));
    assert!(!sys::alive(stray.id()));
    let _ = stray.wait();
    let _ = fs::remove_file(args.vnetd.unwrap());
}

#[test]
fn failed_up_leaves_nothing_behind() {
    if !can_build_namespaces("failed_up_leaves_nothing_behind") {
        return;
    }
    const NAME: &str = "ltfail";
    let _guard = Guard(NAME);
    let _ = down(NAME);
    let mut args = UpArgs::new(NAME, 2, 1);
    args.veth_vms = vec![0];
    args.vnetd = Some(fake_vnetd("crash"));
    let err = format!("{:#}", up(&args).unwrap_err());
    assert!(
        err.contains("exited") && err.contains("cannot start (on purpose)"),
        "{err}"
    );
    assert_gone(NAME, None);
    let _ = fs::remove_file(args.vnetd.unwrap());

    // A TAP VM with a vnetd that never creates the TAP: times out, then cleans up.
    let mut args = UpArgs::new(NAME, 2, 1);
    args.vnetd = Some(fake_vnetd("ok"));
    let err = format!("{:#}", up(&args).unwrap_err());
    assert!(err.contains("did not create the TAP eth0 of vm0"), "{err}");
    assert_gone(NAME, None);
    let _ = fs::remove_file(args.vnetd.unwrap());
}
