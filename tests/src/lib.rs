//! The harness of vnet's end-to-end tests.
//!
//! Every test builds its own lab with `vnet lab up --json` (network namespaces, a veth
//! underlay, a vnetd per host, VMs whose NIC is a TAP or a captured veth), drives the
//! daemons with `vnet -c SOCKET ... --json`, runs `ping` and `iperf3` inside the VMs'
//! namespaces, and tears the lab down with `vnet lab down` when its [`Lab`] is dropped,
//! which happens on failure too.
//!
//! The binaries come from `<workspace>/target/debug/` (or `$CARGO_TARGET_DIR/debug/`):
//! build them first, then run the suite (as root; without root every test prints
//! `SKIPPED: ...` and passes, unless `CI=true`, where it fails):
//!
//! ```text
//! cargo build --workspace --bins
//! cargo test -p vnet-e2e -- --test-threads=1 --nocapture
//! ```
//!
//! `e2e-probe` (this crate's helper binary) runs inside lab namespaces to throw bytes at
//! the daemons' link ports. Tests of one binary take a lock, so they never share the
//! machine with each other and their throughput and timing figures stay meaningful.
//!
//! Nothing here sleeps in place of a condition: [`wait_for`] polls with a deadline.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Poll interval of every wait.
pub const POLL: Duration = Duration::from_millis(25);
/// How long a (re)started vnetd may take to open its control socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long links may take to come up after a lab is built.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(10);

/// A well-formed 16-byte link header (vnetd's own encoding) announcing `len` payload
/// bytes, whether or not they follow: hand-made messages for hostile-peer tests.
pub fn wire_header(kind: vnet_core::wire::Kind, session: u32, len: u32) -> [u8; 16] {
    vnet_core::wire::Header {
        kind,
        hop_limit: 0,
        flags: 0,
        session,
        len,
    }
    .encode()
}

/// `n` bytes from the kernel's CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .expect("reading /dev/urandom");
    buf
}

/// The cargo target directory: `$CARGO_TARGET_DIR`, else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        // A relative CARGO_TARGET_DIR is taken from where cargo ran: the workspace, here.
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

/// A binary of the workspace's debug build; panics if it is not built.
pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join("debug").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Whether this process may build labs. If not, prints a loud SKIPPED line and returns
/// false, so the test returns early; under `CI=true` it panics instead, so a CI run
/// never passes by skipping.
pub fn root_or_skip(test: &str) -> bool {
    static CAN: OnceLock<bool> = OnceLock::new();
    let can = *CAN.get_or_init(|| {
        // A namespace name no lab uses (lab namespaces look like `NAME-h1`).
        let ns = format!("e2eprobe{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
        ok
    });
    if !can {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: needs root / CAP_NET_ADMIN (cannot create a network namespace), and CI=true forbids skipping");
        }
        // Straight to stderr, past the test harness's output capture.
        let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: needs root / CAP_NET_ADMIN");
    }
    can
}

/// Polls `cond` every [`POLL`] until it holds (returns how long that took) or `timeout`
/// passes (returns `None`).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Like [`wait_until`], but panics naming `what` when the deadline passes.
pub fn wait_for(timeout: Duration, what: &str, cond: impl FnMut() -> bool) -> Duration {
    wait_until(timeout, cond).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Whether process `pid` exists and is not a zombie (a daemon that exited but that
/// nobody has reaped yet counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Sends signal `sig` (`TERM`, `KILL`) to `pid` with the `kill` command.
pub fn kill(pid: u32, sig: &str) {
    assert!(pid > 1, "refusing to signal PID {pid}");
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// Runs a command; its stdout, or an error with the command line, status and stderr.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the `vnet` CLI.
pub fn vnet(args: &[&str]) -> Result<String, String> {
    run(Command::new(bin("vnet")).args(args))
}

/// A command to run inside network namespace `ns`.
pub fn in_netns(ns: &str, prog: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(prog);
    c
}

/// A child process that is killed (SIGKILL to its own PID) and reaped when dropped.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Proc {
    /// The PID.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether it has exited (and reaps it if so).
    pub fn exited(&mut self) -> bool {
        !matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------
// What `vnet ... --json` prints.

/// `vnet lab up --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct LabInfo {
    /// Lab name.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// The network key every daemon of the lab shares.
    pub key_file: PathBuf,
    /// h0 (the proxy), h1, ...
    pub hosts: Vec<HostInfo>,
    /// vm0, vm1, ...
    pub vms: Vec<VmInfo>,
}

/// A lab host and its vnetd.
#[derive(Debug, Clone, Deserialize)]
pub struct HostInfo {
    /// h0, h1, ...
    pub name: String,
    /// Its namespace.
    pub netns: String,
    /// Its underlay address; the daemon's links listen on port 7400 there.
    pub underlay: Ipv4Addr,
    /// Control socket.
    pub control: PathBuf,
    /// Config file.
    pub config: PathBuf,
    /// Log file.
    pub log: PathBuf,
    /// vnetd PID as the lab started it.
    pub pid: u32,
}

/// A lab VM.
#[derive(Debug, Clone, Deserialize)]
pub struct VmInfo {
    /// vm0, vm1, ...
    pub name: String,
    /// Its namespace.
    pub netns: String,
    /// MAC of its eth0.
    pub mac: String,
    /// IPv4 address of its eth0.
    pub ip: Ipv4Addr,
    /// The host serving it.
    pub host: String,
    /// "tap" or "veth".
    pub nic: String,
}

/// Frame and byte counters of a port.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Frames received from the port.
    pub rx_frames: u64,
    /// Bytes received from the port.
    pub rx_bytes: u64,
    /// Frames sent to the port.
    pub tx_frames: u64,
    /// Bytes sent to the port.
    pub tx_bytes: u64,
    /// Frames that could not be sent.
    pub tx_drops: u64,
}

/// A link as configured.
#[derive(Debug, Clone, Deserialize)]
pub struct LinkSpec {
    /// Name.
    pub name: String,
    /// "tcp" or "udp".
    pub proto: String,
    /// Address it dials, if it dials.
    pub peer: Option<String>,
}

/// `vnet link list --json`, one entry.
#[derive(Debug, Clone, Deserialize)]
pub struct LinkStatus {
    /// As configured.
    pub spec: LinkSpec,
    /// "Up", "Connecting" or "Waiting".
    pub state: String,
    /// The peer's node name, once authenticated.
    pub peer_node: Option<String>,
    /// The peer's address of the session.
    pub remote: Option<String>,
    /// Sessions established so far.
    pub sessions: u64,
    /// Last error.
    pub last_error: Option<String>,
    /// Counters.
    pub counters: Counters,
}

impl LinkStatus {
    /// Whether the link is up.
    pub fn up(&self) -> bool {
        self.state == "Up"
    }
}

/// A rule as configured.
#[derive(Debug, Clone, Deserialize)]
pub struct RuleSpec {
    /// Source match.
    pub src: String,
    /// Destination match.
    pub dst: String,
    /// Outputs (`link:NAME`, `iface:NAME`).
    pub out: Vec<String>,
}

/// `vnet rule list --json`, one entry.
#[derive(Debug, Clone, Deserialize)]
pub struct RuleStatus {
    /// Id.
    pub id: u64,
    /// The rule.
    pub spec: RuleSpec,
    /// Priority.
    pub priority: i64,
    /// Frames that fired it.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// `vnet stats --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Stats {
    /// Node name.
    pub node: String,
    /// Interfaces and their counters.
    pub ifaces: Vec<(String, Counters)>,
    /// Links and their counters.
    pub links: Vec<(String, Counters)>,
    /// Drops by reason (non-zero ones).
    pub drops: Vec<(String, u64)>,
}

impl Stats {
    /// Counters of link `name`; panics if there is no such link.
    pub fn link(&self, name: &str) -> Counters {
        self.links
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| *c)
            .unwrap_or_else(|| panic!("{} has no link {name}: {:?}", self.node, self.links))
    }

    /// Counters of interface `name`; panics if there is no such interface.
    pub fn iface(&self, name: &str) -> Counters {
        self.ifaces
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| *c)
            .unwrap_or_else(|| panic!("{} has no interface {name}: {:?}", self.node, self.ifaces))
    }

    /// The drop counter of `reason` (`auth_failed`, `bad_message`, ...), 0 if absent.
    pub fn drops(&self, reason: &str) -> u64 {
        self.drops
            .iter()
            .find(|(r, _)| r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

/// `vnet status --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    /// Node name.
    pub node: String,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
}

/// An iperf3 transfer's outcome.
#[derive(Debug, Clone, Copy)]
pub struct IperfResult {
    /// Receiver's average throughput, bits per second.
    pub bits_per_second: f64,
    /// Bytes the receiver got.
    pub bytes: u64,
    /// TCP retransmissions on the sender.
    pub retransmits: u64,
}

impl IperfResult {
    /// Throughput in Mbit/s.
    pub fn mbps(&self) -> f64 {
        self.bits_per_second / 1e6
    }
}

/// An iperf3 transfer under way: the server (`iperf3 -s -1`) and the client.
#[derive(Debug)]
pub struct IperfRun {
    client: Option<Child>,
    server: Proc,
    what: String,
}

impl IperfRun {
    /// Whether the client is still transferring.
    pub fn running(&mut self) -> bool {
        self.client
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the transfer to end; its figures (panics if iperf3 failed).
    pub fn finish(mut self) -> IperfResult {
        let client = self.client.take().expect("iperf client");
        let out = client.wait_with_output().expect("waiting for iperf3");
        let text = String::from_utf8_lossy(&out.stdout);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "{}: iperf3 printed no JSON ({e}; {}): {text}{}",
                self.what,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        if let Some(err) = json.get("error") {
            panic!("{}: iperf3 failed: {err}", self.what);
        }
        let received = &json["end"]["sum_received"];
        let bits_per_second = received["bits_per_second"]
            .as_f64()
            .unwrap_or_else(|| panic!("{}: no end.sum_received.bits_per_second in {json}", self.what));
        // The server exits after its one test (-1); Proc's drop reaps it.
        IperfResult {
            bits_per_second,
            bytes: received["bytes"].as_u64().unwrap_or(0),
            retransmits: json["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        }
    }
}

impl Drop for IperfRun {
    fn drop(&mut self) {
        if let Some(mut c) = self.client.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.server.exited();
    }
}

/// A background ping (see [`Lab::ping_monitor`]); stopped when dropped.
#[derive(Debug)]
pub struct PingMonitor {
    _ping: Proc,
    replies: mpsc::Receiver<(String, Instant)>,
}

impl PingMonitor {
    /// The arrival times of the replies received since the last call.
    pub fn drain(&self) -> Vec<Instant> {
        self.replies.try_iter().map(|(_, t)| t).collect()
    }

    /// Waits up to `timeout` for a reply that arrives after `after`; its arrival time.
    /// Earlier replies are consumed.
    pub fn reply_after(&self, after: Instant, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.replies.recv_timeout(left) {
                Ok((_, t)) if t > after => return Some(t),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Waits until no reply has arrived for `quiet` (connectivity is gone); panics after
    /// `timeout`.
    pub fn wait_silence(&self, quiet: Duration, timeout: Duration) -> Duration {
        let mut last = Instant::now();
        wait_for(timeout, &format!("ping replies to stop for {quiet:?}"), || {
            if let Some(t) = self.drain().into_iter().max() {
                last = t;
            }
            last.elapsed() >= quiet
        })
    }
}

// ---------------------------------------------------------------------------------------
// The lab.

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

    fn ctl_json<T: serde::de::DeserializeOwned>(&self, i: usize, args: &[&str]) -> T {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.ctl_ok(i, &all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("h{i}: {args:?} --json: {e}: {out}"))
    }

    /// `vnet status --json` of host `i`, or why it did not answer.
    pub fn status(&self, i: usize) -> Result<Status, String> {
        let out = self.ctl(i, &["status", "--json"])?;
        serde_json::from_str(&out).map_err(|e| format!("status --json: {e}: {out}"))
    }

    /// `vnet link list --json` of host `i`.
    pub fn links(&self, i: usize) -> Vec<LinkStatus> {
        self.ctl_json(i, &["link", "list"])
    }

    /// Link `name` of host `i`.
    pub fn link(&self, i: usize, name: &str) -> LinkStatus {
        self.links(i)
            .into_iter()
            .find(|l| l.spec.name == name)
            .unwrap_or_else(|| panic!("h{i} has no link {name}"))
    }

    /// `vnet rule list --json` of host `i`.
    pub fn rules(&self, i: usize) -> Vec<RuleStatus> {
        self.ctl_json(i, &["rule", "list"])
    }

    /// `vnet stats --json` of host `i`.
    pub fn stats(&self, i: usize) -> Stats {
        self.ctl_json(i, &["stats"])
    }

    /// Waits until every link of every host is up.
    pub fn wait_links_up(&self, timeout: Duration) -> Duration {
        wait_for(
            timeout,
            &format!("every link of lab {} to come up", self.name()),
            || (0..self.info.hosts.len()).all(|i| self.links(i).iter().all(LinkStatus::up)),
        )
    }

    /// Waits until link `name` of host `i` is up.
    pub fn wait_link_up(&self, i: usize, name: &str, timeout: Duration) -> Duration {
        wait_for(timeout, &format!("link {name} of h{i} to come up"), || {
            self.link(i, name).up()
        })
    }

    /// A command to run in VM `j`'s namespace.
    pub fn in_vm(&self, j: usize, prog: &str) -> Command {
        in_netns(&self.vm(j).netns, prog)
    }

    /// Pings VM `to` from VM `from` `count` times, `interval` apart, each reply awaited
    /// at most a second; returns (sent, received).
    pub fn ping(&self, from: usize, to: usize, count: u32, interval: Duration) -> (u32, u32) {
        let out = self
            .in_vm(from, "ping")
            .args(["-q", "-n", "-c", &count.to_string(), "-W", "1"])
            .arg("-i")
            .arg(format!("{:.3}", interval.as_secs_f64()))
            .arg(self.vm(to).ip.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("running ping");
        let text = String::from_utf8_lossy(&out.stdout);
        // "5 packets transmitted, 5 received, 0% packet loss, time 803ms"
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| {
                panic!(
                    "ping printed no summary: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let nums: Vec<u32> = line
            .split(',')
            .take(2)
            .map(|part| {
                part.split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            })
            .collect();
        (nums[0], nums[1])
    }

    /// One ping from VM `from` to VM `to` that waits at most `timeout` for its reply.
    pub fn ping_once(&self, from: usize, to: usize, timeout: Duration) -> bool {
        self.in_vm(from, "ping")
            .args(["-q", "-n", "-c", "1", "-W"])
            .arg(format!("{:.3}", timeout.as_secs_f64()))
            .arg(self.vm(to).ip.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits until VM `from` gets a ping reply from VM `to`.
    pub fn wait_ping(&self, from: usize, to: usize, timeout: Duration) -> Duration {
        wait_for(timeout, &format!("a ping reply from vm{to} to vm{from}"), || {
            self.ping_once(from, to, Duration::from_millis(200))
        })
    }

    /// Starts `ping -i INTERVAL` from VM `from` to VM `to` in the background; each reply
    /// line comes through the receiver with its arrival time. Dropping the [`Proc`] stops
    /// the ping.
    pub fn ping_replies(
        &self,
        from: usize,
        to: usize,
        interval: Duration,
    ) -> (Proc, mpsc::Receiver<(String, Instant)>) {
        let mut child = self
            .in_vm(from, "ping")
            .args(["-n", "-W", "1", "-i"])
            .arg(format!("{:.3}", interval.as_secs_f64()))
            .arg(self.vm(to).ip.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ping");
        let stdout = child.stdout.take().expect("ping stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // ping flushes every line, so a line's arrival is the reply's arrival (to
            // within the pipe's latency).
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("bytes from") && tx.send((line, Instant::now())).is_err() {
                    return;
                }
            }
        });
        (Proc(child), rx)
    }

    /// Starts `ping -i INTERVAL` from VM `from` to VM `to` in the background, noting when
    /// each reply arrives.
    pub fn ping_monitor(&self, from: usize, to: usize, interval: Duration) -> PingMonitor {
        let (ping, replies) = self.ping_replies(from, to, interval);
        PingMonitor { _ping: ping, replies }
    }

    /// The MAC VM `from` has learnt for VM `to`'s address (ARP), if any.
    pub fn neighbour_mac(&self, from: usize, to: usize) -> Option<String> {
        let out = run(Command::new("ip").args([
            "-n",
            &self.vm(from).netns,
            "neigh",
            "show",
            &self.vm(to).ip.to_string(),
        ]))
        .ok()?;
        // "198.19.0.2 dev eth0 lladdr 02:00:00:00:00:02 REACHABLE"
        let mut words = out.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_string)
    }

    /// Starts an iperf3 TCP transfer of `secs` seconds from VM `from` to VM `to`: the
    /// server is listening before the client starts.
    pub fn iperf_start(&self, from: usize, to: usize, secs: u32) -> IperfRun {
        self.iperf_start_with(from, to, secs, IPERF_PORT, &[])
    }

    /// A one-shot iperf3 server on `port` in VM `to`, once it listens.
    fn iperf_server(&self, to: usize, port: u16) -> Proc {
        let mut server = self
            .in_vm(to, "iperf3")
            // --forceflush: the "listening" line arrives while the server waits, not at
            // its exit (stdout is a pipe).
            .args(["-s", "-1", "--forceflush", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting iperf3 -s (is iperf3 installed?)");
        let stdout = server.stdout.take().expect("iperf3 stdout");
        let server = Proc(server);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining after "listening", so the server never blocks on its pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("iperf3 server in vm{to} did not start listening"));
        server
    }

    /// Sends `mib` MiB of random bytes from VM `from` to VM `to` over one TCP connection
    /// (e2e-probe send/sink) and checks the receiver got exactly those bytes.
    pub fn transfer_file_verified(&self, from: usize, to: usize, mib: usize) {
        let dir = &self.info.dir;
        let (sent, received) = (dir.join("transfer.in"), dir.join("transfer.out"));
        let data = random_bytes(mib << 20);
        fs::write(&sent, &data).expect("writing the file to send");
        let _ = fs::remove_file(&received);
        let addr = format!("{}:5301", self.vm(to).ip);
        let mut sink = in_netns(&self.vm(to).netns, bin("e2e-probe"))
            .args(["sink", &addr])
            .arg(&received)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting e2e-probe sink");
        let mut lines = BufReader::new(sink.stdout.take().expect("sink stdout")).lines();
        assert_eq!(
            lines.next().and_then(Result::ok).as_deref(),
            Some("listening"),
            "e2e-probe sink"
        );
        let sent_path = sent.to_str().expect("utf-8 path");
        self.probe(&self.vm(from).netns.clone(), &["send", &addr, sent_path], &[]);
        let out = sink.wait_with_output().expect("waiting for the sink");
        assert!(
            out.status.success(),
            "sink: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = fs::read(&received).unwrap_or_default();
        assert!(
            got.len() == data.len() && got == data,
            "vm{to} received {} B that differ from the {} B vm{from} sent",
            got.len(),
            data.len()
        );
    }

    /// An iperf3 TCP transfer of `secs` seconds from VM `from` to VM `to`.
    pub fn iperf(&self, from: usize, to: usize, secs: u32) -> IperfResult {
        self.iperf_start(from, to, secs).finish()
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

    /// Runs `e2e-probe ARGS` inside namespace `ns` with `input` on its stdin; its report.
    pub fn probe(&self, ns: &str, args: &[&str], input: &[u8]) -> String {
        let mut child = in_netns(ns, bin("e2e-probe"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting e2e-probe");
        let mut stdin = child.stdin.take().expect("probe stdin");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("waiting for e2e-probe");
        let _ = writer.join();
        assert!(
            out.status.success(),
            "e2e-probe {args:?} in {ns}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The last `n` lines of a file, for failure messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "last lines of {}:\n{}",
        path.display(),
        lines[lines.len().saturating_sub(n)..].join("\n")
    )
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

/// iperf3's default port, used by [`Lab::iperf_start`].
pub const IPERF_PORT: u16 = 5201;

impl Lab {
    /// Starts an iperf3 transfer of `secs` seconds from VM `from` to VM `to` with its
    /// server on `port` (so that several transfers into one VM run at once) and `extra`
    /// client options (`-P 8` for parallel streams, `-u -b 40M` for UDP at a rate).
    pub fn iperf_start_with(&self, from: usize, to: usize, secs: u32, port: u16, extra: &[&str]) -> IperfRun {
        let server = self.iperf_server(to, port);
        let client = self
            .in_vm(from, "iperf3")
            .args(["-c", &self.vm(to).ip.to_string(), "-t", &secs.to_string(), "-J"])
            .args(["-p", &port.to_string(), "--connect-timeout", "3000"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting iperf3 -c");
        IperfRun {
            client: Some(client),
            server,
            what: format!("iperf3 vm{from} -> vm{to} (port {port})"),
        }
    }
}
