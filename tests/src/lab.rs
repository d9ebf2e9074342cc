//! The lab a test builds: `vnet lab up --json` (read as [`vnet_lab::LabInfo`], the type
//! that prints it), typed control of each host's daemon over its control socket, daemons
//! stopped, restarted and added (a rogue of another overlay), and teardown on drop.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use vnet_client::{Client, ClientError};
use vnet_control::proto::{LinkStatus, PortCounters, RuleStatus, StatsReport, StatusReport};
use vnet_lab::sys::log_tail;
use vnet_lab::{HostInfo, LabInfo, VmInfo};

use crate::process::{bin, in_netns, kill, pid_alive, vnet, wait_for, Proc};
use crate::traffic::random_bytes;

/// How long a (re)started vnetd may take to open its control socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long links may take to come up after a lab is built.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(10);

/// Labs of one test binary run one at a time, so that throughput and timing figures do
/// not depend on `--test-threads`.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `vnet lab down --name NAME` when dropped.
#[derive(Debug)]
struct Teardown(String);

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Err(e) = vnet(&["lab", "down", "--name", &self.0]) {
            // No panic in a drop (it may run during an unwind): say it loudly instead.
            let _ = writeln!(std::io::stderr(), "e2e: tearing down lab {}: {e}", self.0);
        }
    }
}

/// A vnetd of another overlay started by [`Lab::spawn_rogue`].
#[derive(Debug)]
pub struct Rogue {
    /// Its link listen address.
    pub listen: String,
    /// Its control socket.
    pub control: PathBuf,
    /// Its PID.
    pub pid: u32,
}

impl Rogue {
    /// Runs one control primitive on the rogue daemon; panics when it does not answer.
    pub fn ask<T>(&self, primitive: impl FnOnce(&mut Client) -> Result<T, ClientError>) -> T {
        ask_at(&self.control, primitive).unwrap_or_else(|e| panic!("rogue ({}): {e}", self.control.display()))
    }
}

/// Runs `primitive` on the daemon whose control socket is `control`.
fn ask_at<T>(
    control: &Path,
    primitive: impl FnOnce(&mut Client) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    primitive(&mut Client::unix(control)?)
}

/// A lab built for one test; dropping it (also when the test panics) stops the daemons
/// the test started and tears the lab down.
#[derive(Debug)]
pub struct Lab {
    /// What `vnet lab up --json` printed.
    pub info: LabInfo,
    /// The current vnetd PID of each host (changes when a test restarts one).
    pids: Vec<u32>,
    /// Daemons this test started (restarts, extra daemons). Dropped before `teardown`.
    daemons: Vec<Proc>,
    teardown: Teardown,
    _serial: MutexGuard<'static, ()>,
}

impl Lab {
    /// Builds lab `name` (<= 8 characters of [a-z0-9]) with `vnet lab up --json`
    /// and the extra options `args` (`--hosts 3 --vms 2 ...`), after tearing down any
    /// lab of that name a crashed run left behind; waits until every link is up.
    pub fn up(name: &str, args: &[&str]) -> Lab {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        vnet(&["lab", "down", "--name", name]).unwrap_or_else(|e| panic!("clearing lab {name}: {e}"));
        let mut all = vec!["lab", "up", "--name", name, "--json"];
        all.extend_from_slice(args);
        let out = vnet(&all);
        // Whatever `up` left (it cleans up after itself, but a panic below must not leak).
        let teardown = Teardown(name.to_string());
        let out = out.unwrap_or_else(|e| panic!("vnet lab up: {e}"));
        let info: LabInfo =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("vnet lab up --json: {e}: {out}"));
        let lab = Lab {
            pids: info.hosts.iter().map(|h| h.pid).collect(),
            info,
            daemons: Vec::new(),
            teardown,
            _serial: serial,
        };
        lab.wait_links_up(LINK_TIMEOUT);
        lab
    }

    /// The lab's name.
    pub fn name(&self) -> &str {
        &self.teardown.0
    }

    /// Host `i` (h0 is the proxy).
    pub fn host(&self, i: usize) -> &HostInfo {
        &self.info.hosts[i]
    }

    /// VM `j`.
    pub fn vm(&self, j: usize) -> &VmInfo {
        &self.info.vms[j]
    }

    /// The current vnetd PID of host `i`.
    pub fn pid(&self, i: usize) -> u32 {
        self.pids[i]
    }

    /// `vnet -c <host i's socket> ARGS`.
    pub fn ctl(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let socket = self.host(i).control.to_string_lossy().into_owned();
        let mut all = vec!["-c", socket.as_str()];
        all.extend_from_slice(args);
        vnet(&all)
    }

    /// Like [`Lab::ctl`], panicking on failure.
    pub fn ctl_ok(&self, i: usize, args: &[&str]) -> String {
        self.ctl(i, args).unwrap_or_else(|e| panic!("h{i}: {e}"))
    }

    /// Runs one control primitive on host `i`'s daemon over its control socket
    /// (`Client::stats`, `|c| c.rule_add(spec)`, ...): its answer, or why there is none.
    pub fn try_ask<T>(
        &self,
        i: usize,
        primitive: impl FnOnce(&mut Client) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        ask_at(&self.host(i).control, primitive)
    }

    /// Like [`Lab::try_ask`], panicking when the daemon does not answer or refuses.
    pub fn ask<T>(&self, i: usize, primitive: impl FnOnce(&mut Client) -> Result<T, ClientError>) -> T {
        self.try_ask(i, primitive)
            .unwrap_or_else(|e| panic!("h{i} ({}): {e}", self.host(i).control.display()))
    }

    /// Host `i`'s daemon status, or why it did not answer.
    pub fn status(&self, i: usize) -> Result<StatusReport, ClientError> {
        self.try_ask(i, Client::status)
    }

    /// Host `i`'s links with their state.
    pub fn links(&self, i: usize) -> Vec<LinkStatus> {
        self.ask(i, Client::link_list)
    }

    /// Link `name` of host `i`.
    pub fn link(&self, i: usize, name: &str) -> LinkStatus {
        self.links(i)
            .into_iter()
            .find(|l| l.spec.name == name)
            .unwrap_or_else(|| panic!("h{i} has no link {name}"))
    }

    /// Host `i`'s rules with their priority and hits.
    pub fn rules(&self, i: usize) -> Vec<RuleStatus> {
        self.ask(i, Client::rule_list)
    }

    /// Host `i`'s counters and drops.
    pub fn stats(&self, i: usize) -> StatsReport {
        self.ask(i, Client::stats)
    }

    /// Waits until every link of every host is up.
    pub fn wait_links_up(&self, timeout: Duration) -> Duration {
        wait_for(
            timeout,
            &format!("every link of lab {} to come up", self.name()),
            || (0..self.info.hosts.len()).all(|i| self.links(i).iter().all(LinkStatus::is_up)),
        )
    }

    /// Waits until link `name` of host `i` is up.
    pub fn wait_link_up(&self, i: usize, name: &str, timeout: Duration) -> Duration {
        wait_for(timeout, &format!("link {name} of h{i} to come up"), || {
            self.link(i, name).is_up()
        })
    }

    /// Sends SIGTERM or SIGKILL (`sig`) to host `i`'s vnetd and waits until it is gone.
    pub fn stop_daemon(&mut self, i: usize, sig: &str) -> Duration {
        let pid = self.pids[i];
        kill(pid, sig);
        let took = wait_for(
            Duration::from_secs(5),
            &format!("vnetd of h{i} (PID {pid}) to exit"),
            || !pid_alive(pid),
        );
        // Reap it if this test started it.
        for d in self.daemons.iter_mut().filter(|d| d.pid() == pid) {
            d.exited();
        }
        took
    }

    /// Starts a vnetd in namespace `netns` with `args` (`--config FILE` ...), appending
    /// its output to `log`, and waits until its control socket `control` answers.
    /// The daemon is stopped when the lab is dropped; returns its PID.
    pub fn spawn_vnetd(&mut self, netns: &str, args: &[&OsStr], log: &Path, control: &Path) -> u32 {
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let child = in_netns(netns, bin("vnetd"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf)
            .process_group(0)
            .spawn()
            .expect("starting vnetd");
        let mut proc = Proc(child);
        let pid = proc.pid();
        let mut exited = false;
        wait_for(
            START_TIMEOUT,
            &format!("vnetd in {netns} to open {}", control.display()),
            || {
                exited = proc.exited();
                exited || UnixStream::connect(control).is_ok()
            },
        );
        assert!(!exited, "vnetd in {netns} exited at start; {}", log_tail(log, 20));
        self.daemons.push(proc);
        pid
    }

    /// Starts a vnetd of another overlay: node `rogue` with a random key of its own, on h1's
    /// underlay address at port 7411 (h1's daemon holds 7400 and, in QUIC labs, 7401), with
    /// `extra` appended to its config (`[[link]]` tables, say). Stopped with the lab.
    pub fn spawn_rogue(&mut self, extra: &str) -> Rogue {
        let dir = self.info.dir.clone();
        let (key, config, control, log) = (
            dir.join("rogue.key"),
            dir.join("rogue.toml"),
            dir.join("rogue.sock"),
            dir.join("rogue.log"),
        );
        let hex: String = random_bytes(32).iter().map(|b| format!("{b:02x}")).collect();
        fs::write(&key, hex + "\n").expect("writing the rogue key");
        let listen = format!("{}:7411", self.host(1).underlay);
        fs::write(
            &config,
            format!(
                "node = \"rogue\"\nkey_file = {:?}\nlisten = \"{listen}\"\ncontrol = {:?}\n\n{extra}",
                key.display().to_string(),
                control.display().to_string()
            ),
        )
        .expect("writing the rogue config");
        let netns = self.host(1).netns.clone();
        let pid = self.spawn_vnetd(
            &netns,
            &[OsStr::new("--config"), config.as_os_str()],
            &log,
            &control,
        );
        Rogue { listen, control, pid }
    }

    /// Starts host `i`'s vnetd again from its config file (after [`Lab::stop_daemon`])
    /// and waits until its control socket answers.
    pub fn start_daemon(&mut self, i: usize) -> u32 {
        let h = self.host(i).clone();
        let pid = self.spawn_vnetd(
            &h.netns,
            &[OsStr::new("--config"), h.config.as_os_str()],
            &h.log,
            &h.control,
        );
        self.pids[i] = pid;
        pid
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The daemons' side of the story, before the lab and its logs go away.
            let mut err = std::io::stderr();
            for h in &self.info.hosts {
                let _ = writeln!(err, "--- {}", log_tail(&h.log, 15));
            }
        }
        // Then the fields: `daemons` (killed and reaped), `teardown` (`vnet lab down`),
        // and the serial lock, in that order.
    }
}

/// Counters of a port a test knows is there, out of a [`StatsReport`].
pub trait PortsOf {
    /// Counters of link `name`; panics if there is no such link.
    fn link_counters(&self, name: &str) -> PortCounters;
    /// Counters of interface `name`; panics if there is no such interface.
    fn iface_counters(&self, name: &str) -> PortCounters;
}

impl PortsOf for StatsReport {
    fn link_counters(&self, name: &str) -> PortCounters {
        self.link(name)
            .unwrap_or_else(|| panic!("{} has no link {name}: {:?}", self.node, self.links))
    }

    fn iface_counters(&self, name: &str) -> PortCounters {
        self.iface(name)
            .unwrap_or_else(|| panic!("{} has no interface {name}: {:?}", self.node, self.ifaces))
    }
}
