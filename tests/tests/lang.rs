//! The language tools end to end: `vnet up` a description in a lab, `vnet show` returns
//! it, `vnet apply` a second one, traffic follows the new routes (`vnet route` and the
//! counters agree), `vnet diff` is then empty; and `vnet up` over (a fake) SSH.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use vnet_e2e::{root_or_skip, vnet, Lab, PortsOf};

/// A file in the lab's directory (removed with the lab).
fn lab_file(lab: &Lab, name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(format!("/run/vnet-lab/{}/{name}", lab.name()));
    fs::write(&path, text).unwrap();
    path
}

fn link_rx_frames(lab: &Lab, host: usize) -> u64 {
    lab.stats(host).links.iter().map(|(_, c)| c.rx_frames).sum()
}

#[test]
fn up_show_apply_route_diff() {
    if !root_or_skip("up_show_apply_route_diff") {
        return;
    }
    let mut lab = Lab::up("e2elang", &["--hosts", "3", "--vms", "2"]);
    let name = lab.name().to_string();
    let l = ["--lab", name.as_str()];
    let star_text = vnet(&[&["generate", "star"][..], &l].concat()).unwrap();
    let star = lab_file(&lab, "star.vnet", &star_text);
    let star = star.to_str().unwrap();
    assert_eq!(
        vnet(&["fmt", star]).unwrap(),
        star_text,
        "generated text is canonical"
    );

    // h1's daemon is down: `vnet up` starts it in its namespace and applies the star.
    lab.stop_daemon(1, "TERM");
    let out = vnet(&[&["up", star][..], &l].concat()).unwrap();
    assert!(out.starts_with("applied "), "{out}");
    assert_eq!(vnet(&[&["show"][..], &l].concat()).unwrap(), star_text);
    assert_eq!(vnet(&[&["diff", star][..], &l].concat()).unwrap(), "");
    lab.wait_ping(0, 1, Duration::from_secs(10));
    let route = vnet(&[&["route", "02:00:00:00:00:01", "02:00:00:00:00:02"][..], &l].concat()).unwrap();
    assert!(
        route.contains("h1 (from iface vm0): priority -3: link h0-h1 to h0"),
        "{route}"
    );

    // Fast paths between every pair of VMs.
    let fast_text = vnet(&[&["generate", "star", "--fast-paths", "all"][..], &l].concat()).unwrap();
    let fast = lab_file(&lab, "fast.vnet", &fast_text);
    let fast = fast.to_str().unwrap();
    let diff = vnet(&[&["diff", fast][..], &l].concat()).unwrap();
    assert!(diff.contains("ADD\n  LINK TCP h2 h2 h1\n"), "{diff}");
    assert!(!diff.contains("DELETE"), "fast paths only add: {diff}");
    let out = vnet(&[&["apply", fast][..], &l].concat()).unwrap();
    assert!(
        out.starts_with("applied 3 primitives (3 additions, 0 removals)"),
        "{out}"
    );
    assert_eq!(vnet(&[&["diff", fast][..], &l].concat()).unwrap(), "");

    let route = vnet(&[&["route", "02:00:00:00:00:01", "02:00:00:00:00:02"][..], &l].concat()).unwrap();
    assert_eq!(
        route,
        "route 02:00:00:00:00:01 -> 02:00:00:00:00:02\n  \
         h1 (from iface vm0): priority 8: link h1-h2 to h2\n  \
         h2 (from link h1-h2): priority 6: iface vm1\n  \
         delivered: h2 iface vm1 (02:00:00:00:00:02)\n"
    );
    // The counters agree: the pings cross h1-h2, not the proxy.
    lab.wait_ping(0, 1, Duration::from_secs(10));
    let (h12, proxy) = (
        lab.stats(1).link_counters("h1-h2").tx_frames,
        link_rx_frames(&lab, 0),
    );
    let (sent, received) = lab.ping(0, 1, 5, Duration::from_millis(50));
    assert_eq!((sent, received), (5, 5));
    assert!(lab.stats(1).link_counters("h1-h2").tx_frames >= h12 + 5);
    assert!(link_rx_frames(&lab, 0) < proxy + 5, "pings still cross the proxy");

    // Back to the star: only removals, and the proxy carries the pings again.
    let out = vnet(&[&["apply", star][..], &l].concat()).unwrap();
    assert!(
        out.starts_with("applied 3 primitives (0 additions, 3 removals)"),
        "{out}"
    );
    assert_eq!(vnet(&[&["diff", star][..], &l].concat()).unwrap(), "");
    let proxy = link_rx_frames(&lab, 0);
    assert_eq!(lab.ping(0, 1, 3, Duration::from_millis(50)), (3, 3));
    assert!(link_rx_frames(&lab, 0) >= proxy + 3);

    let svg = vnet(&[&["show", "--format", "svg"][..], &l].concat()).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("h0-h2 Tcp up"), "{svg}");
}

/// `vnet up` starts a remote daemon with `ssh USER@MACHINE SCRIPT` and the config on
/// stdin, then waits for its control endpoint (which a fake ssh never opens).
#[test]
fn up_over_ssh_sends_the_config() {
    let dir = std::env::temp_dir().join(format!("vnet-e2e-ssh-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let ssh = dir.join("ssh");
    fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {0}/args\ncat > {0}/stdin\n",
            dir.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755)).unwrap();
    let desc = dir.join("remote.vnet");
    fs::write(
        &desc,
        format!(
            "BEGIN HOST vnet AT site-b 7400 eth0 ADDRESS 192.0.2.7 CONTROL {}/none.sock KEY /etc/vnet/key END",
            dir.display()
        ),
    )
    .unwrap();
    let err = vnet(&[
        "up",
        "--ssh",
        ssh.to_str().unwrap(),
        "--wait",
        "1",
        "--dir",
        "/srv/vnet",
        desc.to_str().unwrap(),
    ])
    .unwrap_err();
    assert!(
        err.contains("did not answer on their control endpoints within 1s: site-b"),
        "{err}"
    );
    let args = fs::read_to_string(dir.join("args")).unwrap();
    assert_eq!(
        args,
        "-o\nBatchMode=yes\nvnet@site-b\nset -e; mkdir -p '/srv/vnet'; cd '/srv/vnet'; cat > 'site-b'.toml; \
         nohup 'vnetd' --config '/srv/vnet'/'site-b'.toml >> '/srv/vnet'/'site-b'.log 2>&1 < /dev/null &\n"
    );
    let config = fs::read_to_string(dir.join("stdin")).unwrap();
    assert!(
        config.contains("node = \"site-b\"") && config.contains("listen = \"192.0.2.7:7400\""),
        "{config}"
    );
    fs::remove_dir_all(&dir).unwrap();
}
