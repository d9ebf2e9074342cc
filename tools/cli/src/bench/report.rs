//! What `vnet bench` measured, its ratios to the references, the targets of issue #6
//! checked against it, and the text rendering. Pure: no lab, no processes.

use anyhow::{Context, Result};
use serde::Serialize;

use super::lookup::{self, LookupFigures};

/// Unencrypted vnet throughput, as a fraction of kernel VXLAN's.
const UNENCRYPTED_X_VXLAN: f64 = 0.60;
/// Unencrypted vnet throughput, as a multiple of tinc's without a cipher.
const UNENCRYPTED_X_TINC: f64 = 10.0;
/// Encrypted vnet throughput, as a multiple of tinc's with its default cipher.
const ENCRYPTED_X_TINC_CIPHER: f64 = 5.0;
/// Most a vnet path's mean RTT may exceed kernel VXLAN's, µs.
const RTT_OVER_VXLAN_US: f64 = 30.0;
/// Cached rule-table lookups per second on one core, millions.
const CACHED_M_PER_S: f64 = 50.0;
/// Uncached rule-table lookups per second on one core, millions.
const UNCACHED_M_PER_S: f64 = 10.0;

/// What carried a measured path's traffic.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// A vnet link between the lab's vnetds.
    Vnet,
    /// Kernel VXLAN between the same hosts (the reference).
    Vxlan,
    /// tinc 1.0 in switch mode, Cipher and Digest none.
    TincPlain,
    /// tinc 1.0 in switch mode with its default cipher and digest.
    TincCipher,
}

/// Ping round-trip times of one path, µs.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Rtt {
    /// Mean (ping's avg).
    pub mean_us: f64,
    /// Median of the replies.
    pub median_us: f64,
    /// Fastest reply.
    pub min_us: f64,
}

/// One measured path.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Measurement {
    /// What carried the traffic, e.g. "vnet tcp sealed", "kernel vxlan".
    pub path: String,
    /// Its kind.
    pub kind: PathKind,
    /// Whether its traffic is encrypted.
    pub encrypted: bool,
    /// iperf3 receiver throughput, one stream, Gbit/s.
    pub gbit_per_s: f64,
    /// iperf3 receiver throughput, four streams, Gbit/s.
    pub gbit_per_s_4: f64,
    /// Ping RTT.
    pub rtt: Rtt,
}

/// A throughput as a multiple of the references' (same stream count).
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Ratios {
    /// × kernel VXLAN.
    pub vxlan: f64,
    /// × tinc without a cipher (none when tinc was not measured).
    pub tinc: Option<f64>,
    /// × tinc with its default cipher: for encrypted paths only.
    pub tinc_cipher: Option<f64>,
}

/// A measured path with its ratios to the references.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Row {
    /// The measurement.
    #[serde(flatten)]
    pub measurement: Measurement,
    /// One stream's throughput over the references' one stream.
    pub x_one_stream: Ratios,
    /// Four streams' throughput over the references' four streams.
    pub x_four_streams: Ratios,
    /// Mean RTT minus kernel VXLAN's, µs.
    pub rtt_minus_vxlan_us: f64,
}

/// How a target compares its measured value with its bound.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// Met when measured ≥ bound.
    #[serde(rename = ">=")]
    AtLeast,
    /// Met when measured ≤ bound.
    #[serde(rename = "<=")]
    AtMost,
}

/// One target of issue #6 checked against one measured figure.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Target {
    /// The target, e.g. "unencrypted >= 0.60x kernel vxlan".
    pub goal: &'static str,
    /// What was measured: a path, "best unencrypted: PATH", or "one core".
    pub subject: String,
    /// iperf3 streams, for throughput targets.
    pub streams: Option<u32>,
    /// The measured value, in `unit`.
    pub measured: f64,
    /// How `measured` must compare with `bound`.
    pub relation: Relation,
    /// The bound.
    pub bound: f64,
    /// "x" (ratio), "us" or "M lookups/s".
    pub unit: &'static str,
    /// Whether the target is met.
    pub pass: bool,
}

/// The targets of issue #6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Goal {
    UnencryptedXVxlan,
    UnencryptedXTinc,
    EncryptedXTincCipher,
    Rtt,
    Cached,
    Uncached,
}

impl Goal {
    fn text(self) -> &'static str {
        match self {
            Goal::UnencryptedXVxlan => "unencrypted >= 0.60x kernel vxlan",
            Goal::UnencryptedXTinc => "unencrypted >= 10x tinc (no cipher)",
            Goal::EncryptedXTincCipher => "encrypted >= 5x tinc (default cipher)",
            Goal::Rtt => "mean RTT <= kernel vxlan + 30 us",
            Goal::Cached => "cached lookups >= 50 M/s per core",
            Goal::Uncached => "uncached lookups >= 10 M/s per core",
        }
    }

    /// Relation, bound and unit.
    fn bound(self) -> (Relation, f64, &'static str) {
        match self {
            Goal::UnencryptedXVxlan => (Relation::AtLeast, UNENCRYPTED_X_VXLAN, "x"),
            Goal::UnencryptedXTinc => (Relation::AtLeast, UNENCRYPTED_X_TINC, "x"),
            Goal::EncryptedXTincCipher => (Relation::AtLeast, ENCRYPTED_X_TINC_CIPHER, "x"),
            Goal::Rtt => (Relation::AtMost, RTT_OVER_VXLAN_US, "us"),
            Goal::Cached => (Relation::AtLeast, CACHED_M_PER_S, "M lookups/s"),
            Goal::Uncached => (Relation::AtLeast, UNCACHED_M_PER_S, "M lookups/s"),
        }
    }
}

impl Target {
    fn new(goal: Goal, subject: String, streams: Option<u32>, measured: f64) -> Target {
        let (relation, bound, unit) = goal.bound();
        let pass = match relation {
            Relation::AtLeast => measured >= bound,
            Relation::AtMost => measured <= bound,
        };
        Target {
            goal: goal.text(),
            subject,
            streams,
            measured,
            relation,
            bound,
            unit,
            pass,
        }
    }
}

/// How the paths were measured.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Setup {
    /// Seconds per iperf3 run.
    pub seconds: u32,
    /// Pings per RTT figure.
    pub pings: u32,
    /// Interval between pings, ms.
    pub ping_interval_ms: u32,
    /// The vnet paths selected (`--paths`), in the order measured.
    pub selected: Vec<String>,
    /// The lab whose namespaces also carried the references (VXLAN, tinc).
    pub references_in: String,
    /// Whether tinc was measured.
    pub tinc: bool,
}

/// Everything one `vnet bench` run measured and checked: what `--json` prints.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Report {
    /// How the paths were measured; none with `--lookup-only`.
    pub setup: Option<Setup>,
    /// vnet paths, then kernel VXLAN and tinc; empty with `--lookup-only`.
    pub paths: Vec<Row>,
    /// The rule-table lookup benchmark.
    pub lookup: LookupFigures,
    /// Every target checked (tinc targets only when tinc was measured).
    pub targets: Vec<Target>,
    /// Whether every target checked is met.
    pub all_targets_met: bool,
}

/// A path's throughput with `streams` iperf3 streams (1 or 4), Gbit/s.
fn per_stream(m: &Measurement, streams: u32) -> f64 {
    if streams == 1 {
        m.gbit_per_s
    } else {
        m.gbit_per_s_4
    }
}

impl Report {
    /// Ratios and targets of `measurements` (which must hold kernel VXLAN unless empty)
    /// and of the lookup figures.
    pub fn new(
        setup: Option<Setup>,
        measurements: Vec<Measurement>,
        lookup: LookupFigures,
    ) -> Result<Report> {
        let mut targets = Vec::new();
        let mut paths = Vec::new();
        if !measurements.is_empty() {
            let find = |kind| measurements.iter().find(|m| m.kind == kind);
            let vxlan = find(PathKind::Vxlan).context("no kernel VXLAN figure to compare with")?;
            let (tinc, tinc_cipher) = (find(PathKind::TincPlain), find(PathKind::TincCipher));
            let ratios = |m: &Measurement, streams| {
                let x = |r: &Measurement| per_stream(m, streams) / per_stream(r, streams);
                Ratios {
                    vxlan: x(vxlan),
                    tinc: tinc.map(x),
                    tinc_cipher: tinc_cipher.filter(|_| m.encrypted).map(x),
                }
            };
            paths = measurements
                .iter()
                .map(|m| Row {
                    measurement: m.clone(),
                    x_one_stream: ratios(m, 1),
                    x_four_streams: ratios(m, 4),
                    rtt_minus_vxlan_us: m.rtt.mean_us - vxlan.rtt.mean_us,
                })
                .collect();
            targets = path_targets(&paths);
        }
        targets.push(Target::new(
            Goal::Cached,
            "one core".into(),
            None,
            lookup.cached_m_per_s,
        ));
        targets.push(Target::new(
            Goal::Uncached,
            "one core".into(),
            None,
            lookup.uncached_m_per_s,
        ));
        let all_targets_met = targets.iter().all(|t| t.pass);
        Ok(Report {
            setup,
            paths,
            lookup,
            targets,
            all_targets_met,
        })
    }
}

/// The throughput and RTT targets, in the order printed: per goal the best path of its
/// class (when the class has several), then every path of the class, each with one and
/// four streams.
fn path_targets(rows: &[Row]) -> Vec<Target> {
    let vnet = |encrypted: bool| {
        rows.iter()
            .filter(move |r| r.measurement.kind == PathKind::Vnet && r.measurement.encrypted == encrypted)
    };
    let ratios = |r: &Row, streams: u32| {
        if streams == 1 {
            r.x_one_stream.clone()
        } else {
            r.x_four_streams.clone()
        }
    };
    type Pick = fn(&Ratios) -> Option<f64>;
    let goals: [(Goal, bool, Pick); 3] = [
        (Goal::UnencryptedXVxlan, false, |r| Some(r.vxlan)),
        (Goal::UnencryptedXTinc, false, |r| r.tinc),
        (Goal::EncryptedXTincCipher, true, |r| r.tinc_cipher),
    ];
    let mut targets = Vec::new();
    for (goal, encrypted, pick) in goals {
        let class = if encrypted { "encrypted" } else { "unencrypted" };
        for streams in [1, 4] {
            let measured = vnet(encrypted).filter_map(|r| Some((r, pick(&ratios(r, streams))?)));
            let (count, best) = measured.fold((0, None), |(n, best): (usize, Option<(&Row, f64)>), b| {
                (n + 1, Some(best.filter(|a| a.1 >= b.1).unwrap_or(b)))
            });
            if let Some((row, x)) = best.filter(|_| count > 1) {
                let subject = format!("best {class}: {}", row.measurement.path);
                targets.push(Target::new(goal, subject, Some(streams), x));
            }
        }
        for r in vnet(encrypted) {
            for streams in [1, 4] {
                if let Some(x) = pick(&ratios(r, streams)) {
                    targets.push(Target::new(goal, r.measurement.path.clone(), Some(streams), x));
                }
            }
        }
    }
    for r in rows.iter().filter(|r| r.measurement.kind == PathKind::Vnet) {
        targets.push(Target::new(
            Goal::Rtt,
            r.measurement.path.clone(),
            None,
            r.rtt_minus_vxlan_us,
        ));
    }
    targets
}

fn cell(x: Option<f64>, width: usize, precision: usize) -> String {
    x.map_or_else(
        || format!("{:>width$}", "-"),
        |x| format!("{x:>width$.precision$}"),
    )
}

fn status(t: &Target) -> &'static str {
    if t.pass {
        "PASS"
    } else {
        "MISS"
    }
}

/// The report as `vnet bench` prints it: the path table, the lookup figures, the targets.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    if let Some(setup) = &r.setup {
        s += &format!(
            "VM -> VM between 2 of 3 emulated hosts (vnet: direct link, a lab per path; VXLAN \
             and tinc in the {} lab); iperf3 TCP for {} s (1 and 4 streams); {} pings {} ms apart\n",
            setup.references_in, setup.seconds, setup.pings, setup.ping_interval_ms
        );
        s += &format!(
            "{:<17}  {:-^32}  {:-^32}  {:-^24}\n",
            "", " 1 stream ", " 4 streams ", " RTT us "
        );
        let ratio_heads = format!(
            "{:>7} {:>7} {:>7} {:>8}",
            "Gbit/s", "x vxlan", "x tinc", "x tinc-c"
        );
        s += &format!(
            "{:<17}  {ratio_heads}  {ratio_heads}  {:>7} {:>7} {:>8}\n",
            "path", "mean", "median", "- vxlan"
        );
        for row in &r.paths {
            let m = &row.measurement;
            let ratios = |gbit: f64, x: &Ratios| {
                format!(
                    "{gbit:>7.2} {:>7.3} {} {}",
                    x.vxlan,
                    cell(x.tinc, 7, 2),
                    cell(x.tinc_cipher, 8, 2)
                )
            };
            s += &format!(
                "{:<17}  {}  {}  {:>7.1} {:>7.1} {:>+8.1}\n",
                m.path,
                ratios(m.gbit_per_s, &row.x_one_stream),
                ratios(m.gbit_per_s_4, &row.x_four_streams),
                m.rtt.mean_us,
                m.rtt.median_us,
                row.rtt_minus_vxlan_us
            );
        }
        s += "\n";
    }
    s += &lookup::render(&r.lookup);
    s += "\ntargets\n";
    let mut rest = r.targets.as_slice();
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take_while(|t| t.goal == first.goal && t.subject == first.subject)
            .count();
        let cells: Vec<String> = rest[..n]
            .iter()
            .map(|t| {
                let value = match t.unit {
                    "x" => format!("{:.3}x", t.measured),
                    "us" => format!("{:+.1} us", t.measured),
                    _ => format!("{:.2} M/s", t.measured),
                };
                let streams = t.streams.map_or(String::new(), |n| format!("{n}s "));
                format!("{streams}{value:>10} {}", status(t))
            })
            .collect();
        s += &format!(
            "  {:<38} {:<34} {}\n",
            first.goal,
            first.subject,
            cells.join("   ")
        );
        rest = &rest[n..];
    }
    if r.setup.as_ref().is_some_and(|setup| !setup.tinc) {
        s += "  (tinc not measured: no tinc targets)\n";
    }
    let met = r.targets.iter().filter(|t| t.pass).count();
    s += &format!("{met} of {} targets met\n", r.targets.len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(path: &str, kind: PathKind, encrypted: bool, gbit: f64, rtt: f64) -> Measurement {
        Measurement {
            path: path.into(),
            kind,
            encrypted,
            gbit_per_s: gbit,
            gbit_per_s_4: gbit * 2.0,
            rtt: Rtt {
                mean_us: rtt,
                median_us: rtt - 1.0,
                min_us: rtt - 5.0,
            },
        }
    }

    fn figures(cached: f64, uncached: f64) -> LookupFigures {
        LookupFigures {
            rules: 10_001,
            flows: 1024,
            cache_entries: 4096,
            rounds: 5,
            uncached_m_per_s: uncached,
            cached_m_per_s: cached,
            naive_m_per_s: 0.05,
            uncached_x_naive: uncached / 0.05,
            debug_build: false,
        }
    }

    fn sample(with_tinc: bool) -> Vec<Measurement> {
        let mut v = vec![
            m("vnet tcp link", PathKind::Vnet, false, 30.0, 110.0),
            m("vnet udp link", PathKind::Vnet, false, 12.0, 150.0),
            m("vnet tcp sealed", PathKind::Vnet, true, 4.0, 120.0),
            m("kernel vxlan", PathKind::Vxlan, false, 40.0, 90.0),
        ];
        if with_tinc {
            v.push(m("tinc (no cipher)", PathKind::TincPlain, false, 1.0, 200.0));
            v.push(m("tinc (default)", PathKind::TincCipher, true, 1.0, 250.0));
        }
        v
    }

    fn find<'a>(r: &'a Report, goal: Goal, subject: &str, streams: Option<u32>) -> &'a Target {
        r.targets
            .iter()
            .find(|t| t.goal == goal.text() && t.subject == subject && t.streams == streams)
            .unwrap_or_else(|| panic!("no target {goal:?} / {subject} / {streams:?}: {:#?}", r.targets))
    }

    #[test]
    fn ratios_and_targets() {
        let r = Report::new(None, sample(true), figures(60.0, 9.0)).unwrap();
        let tcp = &r.paths[0];
        assert_eq!(tcp.x_one_stream.vxlan, 0.75);
        assert_eq!(tcp.x_one_stream.tinc, Some(30.0));
        assert_eq!(
            tcp.x_one_stream.tinc_cipher, None,
            "unencrypted paths get no x tinc-c"
        );
        assert_eq!(tcp.rtt_minus_vxlan_us, 20.0);
        assert_eq!(r.paths[2].x_four_streams.tinc_cipher, Some(4.0));

        let best = find(
            &r,
            Goal::UnencryptedXVxlan,
            "best unencrypted: vnet tcp link",
            Some(1),
        );
        assert!(best.pass && best.measured == 0.75);
        assert!(!find(&r, Goal::UnencryptedXVxlan, "vnet udp link", Some(4)).pass); // 0.3
        assert!(find(&r, Goal::UnencryptedXTinc, "vnet udp link", Some(1)).pass); // 12x
        let sealed = find(&r, Goal::EncryptedXTincCipher, "vnet tcp sealed", Some(1));
        assert!(!sealed.pass && sealed.measured == 4.0 && sealed.relation == Relation::AtLeast);
        // A class of one path has no "best" line.
        assert!(!r.targets.iter().any(|t| t.subject.starts_with("best encrypted")));
        assert!(find(&r, Goal::Rtt, "vnet tcp sealed", None).pass); // +30 is within
        assert!(!find(&r, Goal::Rtt, "vnet udp link", None).pass); // +60
        assert!(find(&r, Goal::Cached, "one core", None).pass);
        assert!(!find(&r, Goal::Uncached, "one core", None).pass);
        assert!(!r.all_targets_met);
        // Every vnet path has an RTT target, the references none.
        assert_eq!(r.targets.iter().filter(|t| t.goal == Goal::Rtt.text()).count(), 3);
    }

    #[test]
    fn without_tinc_only_vxlan_rtt_and_lookup_targets() {
        let r = Report::new(None, sample(false), figures(60.0, 20.0)).unwrap();
        assert_eq!(r.paths[0].x_one_stream.tinc, None);
        assert!(r
            .targets
            .iter()
            .all(|t| t.goal != Goal::UnencryptedXTinc.text() && t.goal != Goal::EncryptedXTincCipher.text()));
        assert!(r.targets.iter().any(|t| t.goal == Goal::UnencryptedXVxlan.text()));
    }

    #[test]
    fn lookup_only_report_has_lookup_targets() {
        let r = Report::new(None, Vec::new(), figures(60.0, 20.0)).unwrap();
        assert!(r.paths.is_empty());
        assert_eq!(r.targets.len(), 2);
        assert!(r.all_targets_met);
        let text = render(&r);
        assert!(text.contains("2 of 2 targets met"), "{text}");
        assert!(!text.contains("Gbit/s"), "{text}");
    }

    #[test]
    fn paths_without_vxlan_are_an_error() {
        let mut v = sample(true);
        v.retain(|m| m.kind != PathKind::Vxlan);
        let e = Report::new(None, v, figures(60.0, 20.0)).unwrap_err();
        assert!(format!("{e:#}").contains("VXLAN"), "{e:#}");
    }

    #[test]
    fn text_has_one_line_per_goal_and_subject() {
        let setup = Setup {
            seconds: 1,
            pings: 10,
            ping_interval_ms: 20,
            selected: vec!["tcp".into(), "udp".into(), "tcp-sealed".into()],
            references_in: "tcp-sealed".into(),
            tinc: true,
        };
        let r = Report::new(Some(setup), sample(true), figures(60.0, 20.0)).unwrap();
        let text = render(&r);
        let lines = |needles: &[&str]| -> Vec<&str> {
            text.lines()
                .filter(|l| needles.iter().all(|n| l.contains(n)))
                .collect()
        };
        let row: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with("vnet tcp link"))
            .unwrap()
            .split_whitespace()
            .collect();
        let expected = "vnet tcp link 30.00 0.750 30.00 - 60.00 0.750 30.00 - 110.0 109.0 +20.0";
        assert_eq!(row.join(" "), expected, "{text}");
        let sealed = text.lines().find(|l| l.starts_with("vnet tcp sealed")).unwrap();
        assert!(
            sealed.split_whitespace().nth(6) == Some("4.00"),
            "x tinc-c of a sealed path: {text}"
        );
        let best = lines(&["best unencrypted: vnet tcp link"]);
        assert_eq!(best.len(), 2, "one line per goal and subject: {text}");
        assert!(
            best.iter().all(|l| l.contains("1s ") && l.contains("4s ")),
            "{text}"
        );
        let rtt = lines(&[Goal::Rtt.text(), "vnet tcp link"]);
        assert_eq!(rtt.len(), 1, "{text}");
        assert!(rtt[0].contains("+20.0 us PASS"), "{text}");
        let misses = r.targets.iter().filter(|t| !t.pass).count();
        let summary = format!("{} of {} targets met", r.targets.len() - misses, r.targets.len());
        assert!(text.contains(&summary), "{text}");
    }

    #[test]
    fn json_carries_everything_in_one_object() {
        let r = Report::new(None, sample(true), figures(60.0, 20.0)).unwrap();
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["paths"][0]["path"], "vnet tcp link");
        assert_eq!(v["paths"][0]["kind"], "vnet");
        assert_eq!(v["paths"][0]["rtt"]["median_us"], 109.0);
        assert_eq!(v["paths"][2]["x_one_stream"]["tinc_cipher"], 4.0);
        assert_eq!(v["lookup"]["cached_m_per_s"], 60.0);
        assert_eq!(v["targets"][0]["relation"], ">=");
        assert!(v["targets"][0]["pass"].is_boolean());
        assert!(v["all_targets_met"].is_boolean());
    }
}
