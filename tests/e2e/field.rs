//! Field tests: programs nobody here wrote, as Debian builds them (-O2,
//! no frame pointers, stripped with separate debug info), installed by
//! `.ci/run`.

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::support::*;

/// redis-server under redis-benchmark, recorded attached: at least 90% of
/// the heap stacks are complete (walked to the outermost frame, no
/// truncation marker), no frame lies outside a module, nothing is lost.
#[test]
fn redis_heap_stacks_are_complete() {
    if !bpf_or_skip("redis_heap_stacks") {
        return;
    }
    let port = 20_000 + std::process::id() % 10_000;
    let dir = tmp().join("redis");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("run redis-server (.ci/run installs it)");
    let ping = || {
        Command::new("redis-cli")
            .args(["-p", &port.to_string(), "ping"])
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
    };
    for _ in 0..50 {
        if ping() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ping(), "redis-server did not come up");
    let trace = dir.join("redis.tmt");
    // Watchpoints armed ten times as often as by default: a correct
    // server has no finding, and is not harmed.
    let rec = Command::new(bin())
        .args(["record", "--watch-rate", "200", "-o"])
        .arg(&trace)
        .arg(redis.id().to_string())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tm-tui record");
    std::thread::sleep(Duration::from_millis(1500));
    let bench = Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-t", "set,get,lpush", "-n", "5000"])
        .args(["-r", "100000", "-q"])
        .stdout(Stdio::null())
        .status()
        .expect("run redis-benchmark");
    assert!(bench.success());
    kill(Pid::from_raw(rec.id() as i32), Signal::SIGINT).expect("stop the recording");
    let out = rec.wait_with_output().expect("tm-tui record");
    assert!(
        redis.try_wait().expect("poll redis").is_none() && ping(),
        "redis-server did not survive the recording"
    );
    let _ = redis.kill();
    let _ = redis.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let r = report_json(&trace, &["--window", "1s"]);
    assert_no_loss(&r);
    assert_eq!(
        r["findings"].as_array().map(Vec::len),
        Some(0),
        "false findings on redis: {}",
        r["findings"]
    );
    assert_eq!(r["events"]["lost"]["stack_table_full"], 0);
    let heap: Vec<&Value> = r["window"]
        .as_array()
        .expect("window")
        .iter()
        .filter(|e| matches!(e["kind"].as_str(), Some("alloc" | "free" | "realloc")))
        .collect();
    assert!(heap.len() > 1000, "only {} heap events", heap.len());
    let mut complete = 0;
    for e in &heap {
        let stack = e["stack"].as_array().expect("every heap event has a stack");
        for f in stack {
            assert!(f["module"].is_string(), "a frame outside any module: {e}");
        }
        if stack
            .last()
            .is_some_and(|f| f.get("truncated_after").is_none())
        {
            complete += 1;
        }
    }
    eprintln!("redis: {complete} of {} heap stacks complete", heap.len());
    assert!(
        complete * 10 >= heap.len() * 9,
        "{complete} of {} heap stacks complete",
        heap.len()
    );
    // Sites are call paths: a few dozen, not one per stack.
    let sites = r["leaks"].as_array().expect("leaks").len();
    assert!(sites < 200, "{sites} live sites");
}
