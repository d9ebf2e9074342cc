//! The crate graph states the layers (ARCHITECTURE.md): nothing depends upward, and the
//! pure crates pull in no I/O stack, even transitively. This test asks cargo itself, so
//! a dependency added anywhere that breaks either rule fails CI.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Each workspace crate's layer: a crate may depend (normally, not as a dev-dependency)
/// only on crates of lower layers.
const LAYERS: &[(&str, u32)] = &[
    ("vnet-core", 0),
    ("vnet-sys", 0),
    ("vttif", 1),
    ("lang", 1),
    ("vnet-seal", 1),
    ("vnet-control", 2),
    ("vadapt", 2),
    ("vnet-client", 3),
    ("vnet-sim", 3),
    ("vnetd", 4),
    ("vnet-lab", 4),
    ("vadapt-service", 5),
    ("vnet-cli", 6),
    ("vnet-e2e", 7),
];

/// Crates that never touch sockets, threads, the clock or randomness of their own.
const PURE: &[&str] = &["vnet-core", "vnet-control", "vttif", "lang", "vadapt", "vnet-sim"];

/// What a pure crate must not depend on, even transitively: async runtimes, network and
/// TLS stacks, libc and the OS random source (ring links libc through getrandom).
const IMPURE: &[&str] = &[
    "tokio",
    "mio",
    "quinn",
    "rustls",
    "libc",
    "socket2",
    "signal-hook",
    "getrandom",
    "ring",
];

fn cargo() -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    c
}

fn run(c: &mut Command) -> String {
    let out = c.output().expect("running cargo");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host's target triple, so platform-specific dependencies of other platforms (libc
/// under cpufeatures on aarch64, say) do not count.
fn host() -> String {
    let out = run(Command::new("rustc").arg("-vV"));
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_string()
}

/// Normal dependency edges between workspace members, by package name.
fn member_edges() -> BTreeMap<String, Vec<String>> {
    let text = run(cargo().args(["metadata", "--format-version", "1", "--no-deps"]));
    let meta: serde_json::Value = serde_json::from_str(&text).expect("cargo metadata prints JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let members: Vec<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    packages
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap_or_default().to_string();
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                // `kind` is null for normal dependencies, "dev" or "build" otherwise.
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str().map(str::to_string))
                .filter(|d| members.contains(d))
                .collect();
            (name, deps)
        })
        .collect()
}

fn layer(name: &str) -> u32 {
    LAYERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, l)| *l)
        .unwrap_or_else(|| panic!("crate {name} has no layer in tests/tests/layers.rs (and ARCHITECTURE.md)"))
}

#[test]
fn nothing_depends_upward() {
    let edges = member_edges();
    let mut wrong = Vec::new();
    for (from, deps) in &edges {
        for to in deps {
            if layer(to) >= layer(from) {
                wrong.push(format!(
                    "{from} (layer {}) depends on {to} (layer {})",
                    layer(from),
                    layer(to)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies against the layers:\n{}",
        wrong.join("\n")
    );
}

/// The line that makes clippy hold a pure crate to the rules (no clock, threads or sleep:
/// `disallowed-methods` in clippy.toml; no unwrap or expect outside tests).
const PURE_LINTS: &str = "#![deny(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]";

#[test]
fn pure_crates_deny_what_purity_forbids() {
    let text = run(cargo().args(["metadata", "--format-version", "1", "--no-deps"]));
    let meta: serde_json::Value = serde_json::from_str(&text).expect("cargo metadata prints JSON");
    let mut checked = Vec::new();
    for p in meta["packages"].as_array().expect("packages") {
        let Some(name) = p["name"].as_str().filter(|n| PURE.contains(n)) else {
            continue;
        };
        let lib = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "lib")))
            .and_then(|t| t["src_path"].as_str())
            .unwrap_or_else(|| panic!("{name} has no library target"));
        let source = std::fs::read_to_string(lib).unwrap_or_else(|e| panic!("{lib}: {e}"));
        assert!(
            source.lines().any(|l| l.trim() == PURE_LINTS),
            "the pure crate {name} lacks `{PURE_LINTS}` in {lib}"
        );
        checked.push(name);
    }
    assert_eq!(checked.len(), PURE.len(), "pure crates found: {checked:?}");
}

#[test]
fn pure_crates_pull_in_no_io_stack() {
    let edges = member_edges();
    let host = host();
    for pure in PURE.iter().filter(|p| edges.contains_key(**p)) {
        // `cargo tree -p` resolves features for this crate alone, as a build of it would.
        let tree = run(cargo().args([
            "tree", "-p", pure, "-e", "normal", "--prefix", "none", "--target", &host,
        ]));
        let found: Vec<&str> = tree
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| IMPURE.contains(name))
            .collect();
        assert!(
            found.is_empty(),
            "the pure crate {pure} depends on {found:?}; see `cargo tree -p {pure} -e normal -i {}`",
            found[0]
        );
    }
}
