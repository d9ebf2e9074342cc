//! The `vadapt` binary: solve, eval and gen end to end, and clear errors on bad input.

use std::path::PathBuf;
use std::process::{Command, Output};

fn vadapt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vadapt"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("runs")
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .display()
        .to_string()
}

fn scratch(name: &str, contents: &[u8]) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vadapt-cli");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write scratch file");
    path.display().to_string()
}

#[test]
fn solve_then_eval_agree() {
    let instance = example("two-sites.json");
    for algo in ["greedy", "residual", "anneal", "exact"] {
        let out = vadapt(&[
            "solve", &instance, "--algo", algo, "--moves", "500", "--seed", "3",
        ]);
        assert!(
            out.status.success(),
            "{algo}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
        let plan_path = scratch(&format!("plan-{algo}.json"), &out.stdout);
        let out = vadapt(&["eval", &instance, &plan_path]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let evaluation: serde_json::Value = serde_json::from_slice(&out.stdout).expect("evaluation JSON");
        assert_eq!(evaluation["objective"], plan["objective"], "{algo}");
        assert_eq!(evaluation["feasible"], plan["feasible"], "{algo}");
    }
}

#[test]
fn gen_output_is_a_solvable_instance() {
    let out = vadapt(&[
        "gen",
        "--hosts",
        "6",
        "--vms",
        "9",
        "--pattern",
        "mesh",
        "--seed",
        "4",
    ]);
    assert!(out.status.success());
    let path = scratch("generated.json", &out.stdout);
    let out = vadapt(&["solve", &path, "--algo", "greedy"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_input_is_a_clear_error() {
    let bad_host = scratch(
        "bad-host.json",
        br#"{"hosts":[{"name":"a","compute":1,"size":1}],"vms":[{"name":"v","compute":1,"size":1,"host":"zz"}]}"#,
    );
    let out = vadapt(&["solve", &bad_host]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown host \"zz\""), "{stderr}");
    let broken = scratch("broken.json", b"{ not json");
    let out = vadapt(&["solve", &broken]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed JSON"));
    let out = vadapt(&["gen", "--pattern", "star"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown pattern"));
    let out = vadapt(&["eval", &example("two-sites.json"), &broken]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid plan"));
}
