//! Function probes and the io/net/lock/sched families on the demos calls
//! and netio, whose calls, arguments, results and nesting are known.

use std::process::Command;

use serde_json::Value;

use super::support::*;

const CALL_PROBES: [&str; 4] = [
    "process_request(int, const char *)",
    "parse_body(str, int)",
    "fail_parse(int)",
    "checksum(str, int) -> int",
];

fn probe_flags() -> Vec<&'static str> {
    CALL_PROBES.iter().flat_map(|p| ["--probe", p]).collect()
}

fn probe<'a>(r: &'a Value, func: &str) -> &'a Value {
    r["probes"]
        .as_array()
        .expect("probes array")
        .iter()
        .find(|p| p["func"] == func)
        .unwrap_or_else(|| panic!("no probe {func} in {}", r["probes"]))
}

/// The window's events (the whole recording with a long window).
fn events(trace: &std::path::Path, extra: &[&str]) -> (Value, Vec<Value>) {
    let mut args = vec!["--window", "1000s"];
    args.extend_from_slice(extra);
    let r = report_json(trace, &args);
    let w = r["window"].as_array().expect("window events").clone();
    (r, w)
}

fn check_calls(r: &Value, w: &[Value]) {
    assert_no_loss(r);
    let pr = probe(r, "process_request");
    assert_eq!(pr["calls"], 10, "{pr}");
    assert_eq!(pr["errors"], 2, "ids 5 and 10 return -1: {pr}");
    assert_eq!(pr["unfinished"], 0, "{pr}");
    assert!(
        pr["module"].as_str().is_some_and(|m| m.ends_with("/calls")),
        "{pr}"
    );
    // Each request sleeps 2 ms before parsing.
    let mean = pr["mean_ns"].as_u64().expect("mean_ns");
    assert!(mean >= 2_000_000, "{pr}");
    assert!(pr["p99_ns"].as_u64().expect("p99_ns") >= mean, "{pr}");
    assert!(
        pr["total_ns"].as_u64().expect("total_ns") >= 10 * 2_000_000,
        "{pr}"
    );
    let pb = probe(r, "parse_body");
    assert_eq!(
        (pb["calls"].as_u64(), pb["unfinished"].as_u64()),
        (Some(10), Some(2)),
        "{pb}"
    );
    let fp = probe(r, "fail_parse");
    assert_eq!(
        (fp["calls"].as_u64(), fp["unfinished"].as_u64()),
        (Some(2), Some(2)),
        "{fp}"
    );
    let ck = probe(r, "checksum");
    assert_eq!(
        (ck["calls"].as_u64(), ck["unfinished"].as_u64()),
        (Some(32), Some(0)),
        "{ck}"
    );
    assert_eq!(ck["errors"], 0);

    let calls: Vec<&Value> = w.iter().filter(|e| e["kind"] == "call").collect();
    assert_eq!(calls.len(), 10 + 10 + 2 + 32);
    let requests: Vec<&&Value> = calls
        .iter()
        .filter(|e| e["func"] == "process_request")
        .collect();
    for (i, c) in requests.iter().enumerate() {
        let id = i as i64 + 1;
        let path = if id % 2 == 1 { "/get" } else { "/put" };
        assert_eq!(c["args"], serde_json::json!([id, path]), "{c}");
        assert_eq!(c["depth"], 0, "{c}");
        // checksum returns '/' + 3 through parse_body; failures -1.
        let ret = if id % 5 == 0 { -1 } else { 50 };
        assert_eq!(c["ret"], ret, "{c}");
        assert!(
            c["duration_ns"].as_u64().is_some_and(|d| d >= 2_000_000),
            "{c}"
        );
    }
    // The first request: parse_body("/get?id=1", 1) at depth 1, then
    // checksum recursing 4 deep (depths 2..5), innermost returning '/'.
    let first: Vec<&&Value> = calls
        .iter()
        .skip_while(|c| c["func"] != "parse_body")
        .take(5)
        .collect();
    assert_eq!(first[0]["args"], serde_json::json!(["/get?id=1", 1]));
    assert_eq!(first[0]["depth"], 1);
    for (k, c) in first[1..].iter().enumerate() {
        assert_eq!(c["func"], "checksum", "{c}");
        assert_eq!(c["depth"], 2 + k as u64, "{c}");
        assert_eq!(
            c["args"],
            serde_json::json!(["/get?id=1", 3 - k as i64]),
            "{c}"
        );
        assert_eq!(c["ret"], 50 - k as i64, "{c}");
    }
    // The longjmp: parse_body and fail_parse for id 5 never return.
    let fail = calls
        .iter()
        .find(|c| c["func"] == "fail_parse")
        .expect("fail_parse call");
    assert_eq!(fail["args"], serde_json::json!([5]));
    assert_eq!(fail["depth"], 2);
    assert!(
        fail["ret"].is_null() && fail["duration_ns"].is_null(),
        "{fail}"
    );
    let returns = w.iter().filter(|e| e["kind"] == "return").count();
    assert_eq!(
        returns,
        10 + 8 + 32,
        "every return seen, none for the longjmp'd calls"
    );
}

#[test]
fn function_probes_count_calls_args_returns_nesting_and_longjmp() {
    if !bpf_or_skip("function_probes") {
        return;
    }
    let calls = demo("calls");
    let cmd = [calls.to_str().expect("utf8"), "10"];
    for (name, env) in [
        ("multi", &[][..]),
        ("per-probe", &[("TM_NO_UPROBE_MULTI", "1")][..]),
    ] {
        let trace = tmp().join(format!("calls-{name}.tmt"));
        let out = record_with(&trace, &probe_flags(), &cmd, env);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (r, w) = events(&trace, &[]);
        check_calls(&r, &w);
    }
}

#[test]
fn probes_attach_to_a_running_process() {
    if !bpf_or_skip("probes_attach") {
        return;
    }
    let calls = demo("calls");
    // Long enough to outlast the attach (BPF load and verification take
    // up to a second on a loaded machine with a debug build).
    let mut child = Command::new(&calls)
        .arg("2000")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start calls");
    std::thread::sleep(std::time::Duration::from_millis(150));
    let trace = tmp().join("calls-attach.tmt");
    let out = Command::new(bin())
        .args(["record", "-o"])
        .arg(&trace)
        .args(["--probe", "calls:process_request(int, str)"])
        .arg(child.id().to_string())
        .output()
        .expect("run tm-tui record");
    let _ = child.wait();
    assert_exit(&out, 0);
    let r = report_json(&trace, &[]);
    assert_no_loss(&r);
    let pr = probe(&r, "process_request");
    let n = pr["calls"].as_u64().expect("calls");
    assert!((50..2000).contains(&n), "attached mid-run: {pr}");
    // Every fifth id fails: errors are a fifth of the calls, give or take
    // the call under way at each end.
    let errors = pr["errors"].as_u64().expect("errors");
    assert!(errors.abs_diff(n / 5) <= 1, "{pr}");
    assert_eq!(pr["unfinished"], 0, "{pr}");
}

#[test]
fn io_net_and_lock_families() {
    if !bpf_or_skip("io_net_lock") {
        return;
    }
    let netio = demo("netio");
    let trace = tmp().join("netio.tmt");
    let out = record_with(
        &trace,
        &["--trace", "io,net,lock"],
        &[netio.to_str().expect("utf8")],
        &[],
    );
    assert_exit(&out, 0);
    let (r, w) = events(&trace, &[]);
    assert_no_loss(&r);
    assert_eq!(r["families"], serde_json::json!(["io", "net", "lock"]));
    assert!(
        r["events"]["by_kind"]["alloc"].is_null(),
        "alloc family off: {}",
        r["events"]
    );
    // The text says the heap was not traced, not "0 allocs".
    let text = std::process::Command::new(bin())
        .arg("report")
        .arg(&trace)
        .output()
        .expect("tm-tui report");
    let text = String::from_utf8_lossy(&text.stdout);
    let heap = text
        .lines()
        .find(|l| l.starts_with("heap "))
        .unwrap_or_else(|| panic!("no heap line: {text}"));
    assert!(heap.contains("not traced"), "{heap}");
    let pid = r["target"]["pid"].as_u64().expect("pid");
    let file = format!("/tmp/tm-tui-netio-{pid}.txt");
    let sys = |kind: &str, call: &str| -> Vec<Value> {
        w.iter()
            .filter(|e| e["kind"] == kind && e["call"] == call)
            .cloned()
            .collect()
    };
    let opens: Vec<Value> = sys("io", "open")
        .into_iter()
        .filter(|e| e["target"] == file.as_str())
        .collect();
    assert_eq!(opens.len(), 2, "opened to write, then to read: {opens:?}");
    let fd = opens[0]["fd"].as_i64().expect("fd");
    assert!(fd >= 3 && opens[0]["ret"] == fd, "{:?}", opens[0]);
    let writes: Vec<Value> = sys("io", "write")
        .into_iter()
        .filter(|e| e["target"] == file.as_str())
        .collect();
    assert_eq!(writes.len(), 2, "the fd, then its dup2 copy: {writes:?}");
    // Each call has its stack: the program's function past libc's wrapper.
    assert_eq!(writes[0]["func"], "file_io", "{:?}", writes[0]);
    assert_eq!(writes[0]["line"], line_of("netio.c", "\"hello, file!\\n\""));
    assert_eq!(
        (writes[0]["len"].as_u64(), writes[0]["ret"].as_i64()),
        (Some(13), Some(13))
    );
    assert_eq!(
        (writes[1]["fd"].as_i64(), writes[1]["ret"].as_i64()),
        (Some(100), Some(1))
    );
    let dups = sys("io", "dup");
    assert_eq!(dups.len(), 1, "{dups:?}");
    assert_eq!(
        (dups[0]["fd"].as_i64(), dups[0]["old_fd"].as_i64()),
        (Some(100), Some(fd))
    );
    let reads: Vec<Value> = sys("io", "pread")
        .into_iter()
        .filter(|e| e["target"] == file.as_str())
        .collect();
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(
        (reads[0]["ret"].as_i64(), reads[0]["offset"].as_u64()),
        (Some(14), Some(0))
    );
    let fsyncs = sys("io", "fsync");
    assert_eq!(fsyncs.len(), 1);
    assert_eq!(fsyncs[0]["target"], file.as_str());
    let closes = sys("io", "close");
    assert_eq!(
        closes
            .iter()
            .filter(|e| e["target"] == file.as_str())
            .count(),
        3,
        "{closes:?}"
    );

    let connect = sys("net", "connect");
    assert_eq!(connect.len(), 1, "{connect:?}");
    assert_eq!(connect[0]["ret"], 0);
    let peer = connect[0]["target"].as_str().expect("peer").to_string();
    assert!(
        peer.starts_with("127.0.0.1:") && !peer.ends_with(":0"),
        "{peer}"
    );
    let accept = sys("net", "accept");
    assert_eq!(accept.len(), 1, "{accept:?}");
    assert!(accept[0]["target"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    // The datagram: sendmsg names where it went, recvmsg where it came from.
    let (sm, rm) = (sys("net", "sendmsg"), sys("net", "recvmsg"));
    assert_eq!((sm.len(), rm.len()), (1, 1), "{sm:?} {rm:?}");
    assert_eq!(
        (sm[0]["ret"].as_i64(), rm[0]["ret"].as_i64()),
        (Some(5), Some(5))
    );
    for e in [&sm[0], &rm[0]] {
        let t = e["target"].as_str().unwrap_or("");
        assert!(t.starts_with("127.0.0.1:") && !t.ends_with(":0"), "{e}");
    }
    let sends = sys("net", "send");
    let recvs = sys("net", "recv");
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert_eq!(recvs.len(), 2, "{recvs:?}");
    for e in sends.iter().chain(&recvs) {
        assert_eq!(e["ret"], 4, "{e}");
    }
    assert_eq!(
        sends[0]["target"],
        peer.as_str(),
        "the client's fd names its peer"
    );

    // main waits ~50 ms for the mutex the other thread holds.
    let waits = sys("lock", "futex_wait");
    let long: Vec<&Value> = waits
        .iter()
        .filter(|e| e["duration_ns"].as_u64().is_some_and(|d| d >= 30_000_000))
        .collect();
    assert_eq!(long.len(), 1, "{waits:?}");
    // Seen through pthread_mutex_lock and its futex helper (no frame
    // pointers in glibc): the program's line that locked.
    assert_eq!(long[0]["func"], "main", "{:?}", long[0]);
    assert_eq!(
        long[0]["line"],
        line_of("netio.c", "pthread_mutex_lock(&lock); /* waits")
    );
}

#[test]
fn sched_family_shows_off_cpu_time() {
    if !bpf_or_skip("sched_family") {
        return;
    }
    let netio = demo("netio");
    let trace = tmp().join("netio-sched.tmt");
    let out = record_with(
        &trace,
        &["--trace", "sched"],
        &[netio.to_str().expect("utf8")],
        &[],
    );
    assert_exit(&out, 0);
    let (r, w) = events(&trace, &[]);
    assert_no_loss(&r);
    // The holder thread sleeps 50 ms with the mutex, main waits as long.
    let long: Vec<&Value> = w
        .iter()
        .filter(|e| {
            e["kind"] == "sched" && e["duration_ns"].as_u64().is_some_and(|d| d >= 40_000_000)
        })
        .collect();
    let tids: std::collections::BTreeSet<u64> =
        long.iter().filter_map(|e| e["tid"].as_u64()).collect();
    assert_eq!(tids.len(), 2, "both threads off CPU ~50 ms: {long:?}");
    assert!(
        long.iter().all(|e| e["preempted"] == false),
        "they blocked: {long:?}"
    );
    // Where each blocked: the holder in its nanosleep, main in the lock.
    let sites: std::collections::BTreeSet<(String, u64)> = long
        .iter()
        .map(|e| {
            (
                e["func"].as_str().unwrap_or("?").to_string(),
                e["line"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let expect: std::collections::BTreeSet<(String, u64)> = [
        (
            "holder".to_string(),
            line_of("netio.c", "nanosleep(&t, NULL);"), /* holder's, the first */
        ),
        (
            "main".to_string(),
            line_of("netio.c", "pthread_mutex_lock(&lock); /* waits"),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(sites, expect, "{long:?}");
}

fn bad_probe(spec: &str, needle: &str) {
    let calls = demo("calls");
    let trace = tmp().join("bad-probe.tmt");
    let out = record_with(
        &trace,
        &["--probe", spec],
        &[calls.to_str().expect("utf8"), "1"],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{spec}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("tm-tui: error: "), "{err}");
    assert!(err.contains(needle), "'{needle}' in: {err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("calls:"),
        "the target never ran"
    );
}

#[test]
fn bad_probe_specs_are_one_line_errors() {
    if !bpf_or_skip("bad_probe_specs") {
        return;
    }
    bad_probe("process_requets", "no function named 'process_requets'");
    bad_probe("process_requets", "did you mean 'process_request'");
    bad_probe("libnope.so:f", "no module 'libnope.so'");
    bad_probe("zz_nothing_*", "no function matches 'zz_nothing_*'");
    bad_probe("process_request(int, float)", "SSE registers");
    bad_probe("process_request(int", "unbalanced parentheses");
    bad_probe("*", "more than 200");
}

const CPP_THROW: &str = r#"
#include <cstdio>
#include <stdexcept>
__attribute__((noinline)) int inner(int i) { if (i % 3 == 0) throw std::runtime_error("bad"); return i; }
__attribute__((noinline)) int middle(int i) { return inner(i) + 1; }
int main() {
  int ok = 0, caught = 0;
  for (int i = 1; i <= 9; i++) {
    try { ok += middle(i); } catch (const std::exception &) { caught++; }
  }
  std::printf("ok=%d caught=%d\n", ok, caught);
  return 0;
}
"#;

/// Return probes break C++ unwinding (the trampoline has no unwind
/// info): tm-tui warns, and entry-only probes leave the program intact.
#[test]
fn entry_probes_are_safe_for_cpp_exceptions() {
    if !bpf_or_skip("cpp_exceptions") {
        return;
    }
    let bin = compile(
        "g++",
        "throw",
        "cc",
        CPP_THROW,
        &["-g", "-O0", "-fno-omit-frame-pointer"],
    );
    let trace = tmp().join("throw.tmt");
    let bin = bin.to_str().expect("utf8");
    let out = record_with(
        &trace,
        &["--probe-entry", "middle", "--probe-entry", "inner(int)"],
        &[bin],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_exit(&out, 0);
    assert!(stdout.contains("ok=33 caught=3"), "{stdout}");
    let (r, w) = events(&trace, &[]);
    let inner: Vec<&Value> = w
        .iter()
        .filter(|e| e["kind"] == "call" && e["func"] == "inner")
        .collect();
    assert_eq!(inner.len(), 9);
    assert_eq!(inner[2]["args"], serde_json::json!([3]));
    assert_eq!(probe(&r, "middle")["calls"], 9);
    assert_eq!(w.iter().filter(|e| e["kind"] == "return").count(), 0);
    // With return probes the same program is told it is at risk.
    let out = record_with(&trace, &["--probe", "main"], &[bin], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: the target unwinds (throw uses __cxa_throw)"),
        "{err}"
    );
    // A C program with libstdc++ loaded but no exception in its code is
    // not warned about.
    let c = compile(
        "gcc",
        "cwithcxx",
        "c",
        "int main(void) { return 0; }\n",
        &["-O0", "-Wl,--no-as-needed", "-lstdc++"],
    );
    let out = record_with(
        &trace,
        &["--probe", "main"],
        &[c.to_str().expect("utf8")],
        &[],
    );
    assert_exit(&out, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("unwinds"), "{err}");
}

/// A crash inside return-probed calls: their return addresses on the stack
/// are the kernel's trampoline, yet the crash stack goes through them.
#[test]
fn crash_stack_unwinds_through_probed_calls() {
    if !bpf_or_skip("crash_through_probes") {
        return;
    }
    let uaf = demo("uaf");
    let trace = tmp().join("uaf-probed.tmt");
    let flags = [
        "--probe",
        "handle_conn(int, size_t, int)",
        "--probe",
        "process_request",
    ];
    let out = record_with(&trace, &flags, &[uaf.to_str().expect("utf8")], &[]);
    assert_exit(&out, 139);
    let r = report_json(&trace, &[]);
    let stack = funcs(&r["crash"]["stack"]);
    assert_eq!(
        stack[..3],
        ["process_request", "handle_conn", "main"],
        "{stack:?}"
    );
    assert_eq!(r["crash"]["diagnosis"]["kind"], "use-after-free");
    assert_eq!(probe(&r, "handle_conn")["calls"], 4);
    assert_eq!(
        probe(&r, "handle_conn")["unfinished"],
        1,
        "the crashing call"
    );
}

const TAIL_C: &str = r#"
#include <stdio.h>
__attribute__((noinline)) int inner(int x) { __asm__ volatile("" ::: "memory"); return x * 3 + 1; }
__attribute__((noinline)) int outer(int x) { return inner(x + 1); } /* -O2: jmp inner */
__attribute__((noinline)) int caller(int x) { int r = outer(x); __asm__ volatile("" ::: "memory"); return r + 1; }
int main(int argc, char **argv) { int s = 0; (void)argv; for (int i = 0; i < 10; i++) s += caller(i + argc); printf("s=%d\n", s); return 0; }
"#;

/// `outer` ends in `jmp inner`: inner runs at outer's stack pointer and
/// both return there. Both must pair, inner nested in outer.
#[test]
fn tail_calls_pair_with_their_returns() {
    if !bpf_or_skip("tail_calls") {
        return;
    }
    let bin = compile("gcc", "tail", "c", TAIL_C, &["-O2", "-g"]);
    let trace = tmp().join("tail.tmt");
    let flags = [
        "--probe",
        "caller(int)",
        "--probe",
        "outer(int)",
        "--probe",
        "inner(int)",
    ];
    let out = record_with(&trace, &flags, &[bin.to_str().expect("utf8")], &[]);
    assert_exit(&out, 0);
    let (r, w) = events(&trace, &[]);
    for f in ["caller", "outer", "inner"] {
        let p = probe(&r, f);
        assert_eq!(
            (p["calls"].as_u64(), p["unfinished"].as_u64()),
            (Some(10), Some(0)),
            "{p}"
        );
    }
    // caller(1) → outer(1) → inner(2) = 7.
    let inner = w
        .iter()
        .find(|e| e["kind"] == "call" && e["func"] == "inner")
        .expect("an inner call");
    assert_eq!(
        (inner["args"][0].as_i64(), inner["depth"].as_u64()),
        (Some(2), Some(2)),
        "{inner}"
    );
    assert_eq!(inner["ret"], 7);
    assert!(w
        .iter()
        .filter(|e| e["kind"] == "return")
        .all(|e| !e["depth"].is_null()));
}
