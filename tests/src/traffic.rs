//! Traffic through a lab: ping (counted, one-shot, monitored), iperf3 transfers, files
//! sent and verified byte for byte, and `e2e-probe` throwing bytes at daemons.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::lab::Lab;
use crate::process::{bin, in_netns, run, wait_for, Proc};

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

impl Lab {
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
