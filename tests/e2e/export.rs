//! `tm-tui export`: real recordings of small C programs, exported, and
//! read back as the tools that consume each format read them (serde_json
//! for the Trace Event Format, `go tool pprof` for the profile).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::support::*;

const FLAGS: [&str; 3] = ["-g", "-O0", "-fno-omit-frame-pointer"];

/// Blocks `leak_some` leaves live, and their size; allocations (and
/// frees) of `churn` per call; the block `hold` keeps until the end.
const LEAKS: u64 = 7;
const LEAK_SIZE: u64 = 1000;
const CHURN: u64 = 200;
const HOLD_SIZE: u64 = 300;

fn leaker() -> PathBuf {
    let src = format!(
        r#"#include <stdlib.h>
#include <unistd.h>

void *volatile sink;

__attribute__((noinline)) void leak_some(void) {{
    for (int i = 0; i < {LEAKS}; i++)
        sink = malloc({LEAK_SIZE});
}}

__attribute__((noinline)) void churn(void) {{
    for (int i = 0; i < {CHURN}; i++) {{
        void *p = malloc(64 + i);
        sink = p;
        free(p);
    }}
}}

__attribute__((noinline)) void *hold(void) {{
    return malloc({HOLD_SIZE});
}}

int main(void) {{
    void *held = hold();
    churn();
    usleep(200000);
    leak_some();
    churn();
    free(held);
    return 0;
}}
"#
    );
    compile("cc", "export_leaker", "c", &src, &FLAGS)
}

fn export(trace: &Path, format: &str, out: &Path, extra: &[&str]) -> Output {
    Command::new(bin())
        .arg("export")
        .arg("--format")
        .arg(format)
        .arg(trace)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .expect("run tm-tui export")
}

fn export_ok(trace: &Path, format: &str, out: &Path, extra: &[&str]) {
    let o = export(trace, format, out, extra);
    assert_exit(&o, 0);
    assert!(out.exists(), "{} written", out.display());
}

/// A recording of the leaker (and its report).
fn record_leaker(name: &str) -> (PathBuf, Value) {
    let prog = leaker();
    let trace = tmp().join(format!("{name}.tmt"));
    let out = record_launch(&trace, &[prog.to_str().expect("utf8")]);
    assert_exit(&out, 0);
    let r = report_json(&trace, &["--window", "1000s"]);
    assert_no_loss(&r);
    (trace, r)
}

/// `go tool pprof`, or `None` to skip (a failure when TM_REQUIRE_BPF=1:
/// CI installs golang-go).
fn go_or_skip(test: &str) -> Option<&'static str> {
    let found = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("go");
    }
    if std::env::var("TM_REQUIRE_BPF").as_deref() == Ok("1") {
        panic!("{test}: `go` (golang-go, for go tool pprof) required with TM_REQUIRE_BPF=1 but not found");
    }
    eprintln!("SKIPPED {test}: needs `go` (apt-get install golang-go)");
    None
}

/// `go tool pprof -top ARGS FILE`: the rows (flat, flat%, sum%, cum,
/// cum%, name) after the header.
fn pprof_top(go: &str, profile: &Path, args: &[&str]) -> Vec<Vec<String>> {
    let out = Command::new(go)
        .args(["tool", "pprof", "-top"])
        .args(args)
        .arg(profile)
        .output()
        .expect("run go tool pprof");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go tool pprof: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<String>> = text
        .lines()
        .skip_while(|l| !l.contains("flat%"))
        .skip(1)
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert!(!rows.is_empty(), "no rows in\n{text}");
    rows
}

#[test]
fn export_pprof_names_the_leak_with_its_bytes() {
    if !bpf_or_skip("export_pprof") {
        return;
    }
    let Some(go) = go_or_skip("export_pprof") else {
        return;
    };
    let (trace, _) = record_leaker("export_pprof");
    let prof = tmp().join("export_pprof.pb.gz");
    export_ok(&trace, "pprof", &prof, &[]);
    // inuse_space is the default: the leak at the top, to the byte.
    let rows = pprof_top(go, &prof, &["-unit=B"]);
    let top = &rows[0];
    assert_eq!(
        top.last().map(String::as_str),
        Some("leak_some"),
        "{rows:?}"
    );
    assert_eq!(top[0], format!("{}B", LEAKS * LEAK_SIZE), "{rows:?}");
    // alloc_objects counts every allocation up to the moment: churn's two
    // calls, freed or not.
    let rows = pprof_top(go, &prof, &["-sample_index=alloc_objects"]);
    let churn = rows
        .iter()
        .find(|r| r.last().map(String::as_str) == Some("churn"))
        .unwrap_or_else(|| panic!("no churn in {rows:?}"));
    assert_eq!(churn[0], (2 * CHURN).to_string(), "{rows:?}");
    // Lines: leak_some's malloc call is at its line of the source.
    let rows = pprof_top(go, &prof, &["-lines", "-unit=B"]);
    assert!(
        rows[0].iter().any(|w| w.contains("export_leaker.c:")),
        "{rows:?}"
    );
}

/// `bytes` of each `stack bytes` line, checked to be the format.
fn folded_lines(path: &Path) -> Vec<(Vec<String>, u64)> {
    let text = std::fs::read_to_string(path).expect("read folded");
    text.lines()
        .map(|l| {
            let (stack, n) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no count: {l:?}"));
            let n = n.parse().unwrap_or_else(|_| panic!("bad count: {l:?}"));
            (stack.split(';').map(String::from).collect(), n)
        })
        .collect()
}

#[test]
fn export_folded_sums_to_the_live_heap() {
    if !bpf_or_skip("export_folded") {
        return;
    }
    let (trace, r) = record_leaker("export_folded");
    // At the end: every live byte, the leak among them.
    let out = tmp().join("export_folded.txt");
    export_ok(&trace, "folded", &out, &[]);
    let lines = folded_lines(&out);
    let total: u64 = lines.iter().map(|(_, n)| n).sum();
    assert_eq!(Some(total), r["heap"]["live_bytes"].as_u64(), "{lines:?}");
    let leak = lines
        .iter()
        .find(|(s, _)| s.last().map(String::as_str) == Some("leak_some"))
        .unwrap_or_else(|| panic!("no leak_some leaf in {lines:?}"));
    assert_eq!(leak.1, LEAKS * LEAK_SIZE);
    assert!(leak.0.iter().any(|f| f == "main"), "root first: {leak:?}");
    // During the sleep, before leak_some: what `report --at` says is live
    // then (a window from the start): hold's block, no leak_some yet.
    let w = r["window"].as_array().expect("window");
    let first_leak = w
        .iter()
        .find(|e| e["kind"] == "alloc" && e["size"] == LEAK_SIZE)
        .and_then(|e| e["time_ns"].as_u64())
        .expect("leak_some's first malloc");
    let at = format!("{}ns", first_leak - 1_000_000);
    let mid = tmp().join("export_folded_mid.txt");
    export_ok(&trace, "folded", &mid, &["--at", &at]);
    let lines = folded_lines(&mid);
    let r_at = report_json(&trace, &["--at", &at, "--window", "1000s"]);
    let live: u64 = r_at["window_live"]
        .as_array()
        .expect("window_live")
        .iter()
        .filter_map(|g| g["bytes"].as_u64())
        .sum();
    assert_eq!(lines.iter().map(|(_, n)| n).sum::<u64>(), live, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|(s, n)| s.last().map(String::as_str) == Some("hold") && *n == HOLD_SIZE),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|(s, _)| s.iter().any(|f| f == "leak_some")),
        "{lines:?}"
    );
}

#[test]
fn export_chrome_trace_events() {
    if !bpf_or_skip("export_chrome") {
        return;
    }
    let src = r#"#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) char *make_buffer(int n, const char *tag) {
    char *p = malloc(n);
    memset(p, 0, n);
    strncpy(p, tag, n - 1);
    return p;
}

int main(void) {
    int fd = open("/dev/null", O_WRONLY);
    for (int i = 0; i < 3; i++) {
        char *p = make_buffer(100 + i, "export-tag");
        write(fd, p, 10);
        free(p);
    }
    close(fd);
    return 0;
}
"#;
    let prog = compile("cc", "export_chrome", "c", src, &FLAGS);
    let trace = tmp().join("export_chrome.tmt");
    let out = record_with(
        &trace,
        &[
            "--probe",
            "make_buffer(int, str) -> ptr",
            "--trace",
            "alloc,io",
        ],
        &[prog.to_str().expect("utf8")],
        &[],
    );
    assert_exit(&out, 0);
    let json = tmp().join("export_chrome.json");
    export_ok(&trace, "chrome", &json, &[]);
    let doc: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("read json")).expect("valid JSON");
    assert_eq!(doc["displayTimeUnit"], "ns");
    let evs = doc["traceEvents"].as_array().expect("traceEvents");
    let pid = report_json(&trace, &[])["target"]["pid"].clone();

    // The probed calls: complete events with their arguments and value.
    let calls: Vec<&Value> = evs
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == "make_buffer")
        .collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    for (i, c) in calls.iter().enumerate() {
        assert_eq!(c["pid"], pid, "{c}");
        assert_eq!(
            c["args"]["args"],
            serde_json::json!([100 + i, "export-tag"]),
            "{c}"
        );
        assert!(
            c["args"]["ret"]
                .as_str()
                .is_some_and(|r| r.starts_with("0x")),
            "returns a pointer: {c}"
        );
        assert_eq!(c["args"]["outcome"], "returned", "{c}");
        assert!(c["dur"].as_f64().is_some_and(|d| d > 0.0), "{c}");
    }
    // Each malloc: an instant inside its make_buffer call, on its thread,
    // its stack naming make_buffer.
    for (i, c) in calls.iter().enumerate() {
        let (ts, dur) = (
            c["ts"].as_f64().expect("ts"),
            c["dur"].as_f64().expect("dur"),
        );
        let alloc = evs
            .iter()
            .find(|e| e["ph"] == "i" && e["name"] == "malloc" && e["args"]["size"] == 100 + i)
            .unwrap_or_else(|| panic!("no malloc({})", 100 + i));
        assert_eq!((&alloc["pid"], &alloc["tid"]), (&c["pid"], &c["tid"]));
        let at = alloc["ts"].as_f64().expect("ts");
        assert!(ts <= at && at <= ts + dur, "{alloc} in {c}");
        let stack = alloc["args"]["stack"].as_array().expect("stack");
        assert!(
            stack
                .iter()
                .any(|f| f.as_str().is_some_and(|f| f.starts_with("make_buffer"))),
            "{alloc}"
        );
    }
    // The writes: complete events of the io family, 10 bytes to /dev/null.
    let writes: Vec<&Value> = evs
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == "write" && e["cat"] == "io")
        .collect();
    assert_eq!(writes.len(), 3, "{writes:?}");
    for w in &writes {
        assert_eq!(w["args"]["ret"], 10, "{w}");
        assert_eq!(w["args"]["target"], "/dev/null", "{w}");
    }
    // Every track named: the process, and each thread with an event.
    let named = |kind: &str, e: &Value| {
        evs.iter().any(|m| {
            m["ph"] == "M"
                && m["name"] == kind
                && m["pid"] == e["pid"]
                && (kind == "process_name" || m["tid"] == e["tid"])
                && m["args"]["name"].as_str().is_some_and(|n| !n.is_empty())
        })
    };
    for e in evs.iter().filter(|e| e["ph"] != "M") {
        assert!(named("thread_name", e), "no thread name for {e}");
        assert!(named("process_name", e), "no process name for {e}");
    }
    // Times are µs from the recording's start.
    let dur_us = report_json(&trace, &[])["duration_ns"]
        .as_f64()
        .expect("duration_ns")
        / 1000.0;
    for e in evs.iter().filter(|e| e["ph"] != "M") {
        let ts = e["ts"].as_f64().expect("ts");
        assert!((0.0..=dur_us).contains(&ts), "{e} within {dur_us} µs");
    }
}

/// Nothing left in `dir` but `keep` (no output, no temporary file).
fn only(dir: &Path, keep: &[&str]) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn one_line_error(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("tm-tui: error: "), "{err}");
    assert!(err.contains(needle), "'{needle}' in: {err}");
    assert!(out.stdout.is_empty(), "no output on stdout");
}

#[test]
fn export_bad_input_leaves_no_file() {
    let dir = tmp().join("export_bad");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let out = dir.join("out");
    let not_trace = dir.join("hostname.tmt");
    std::fs::write(&not_trace, "not a trace at all\n").expect("write");
    for format in ["chrome", "pprof", "folded"] {
        one_line_error(
            &export(&not_trace, format, &out, &[]),
            1,
            "not a tm-tui trace",
        );
        one_line_error(
            &export(Path::new("/nonexistent.tmt"), format, &out, &[]),
            1,
            "/nonexistent.tmt",
        );
        // Standard output too: nothing written.
        one_line_error(
            &export(&not_trace, format, Path::new("-"), &[]),
            1,
            "not a tm-tui trace",
        );
    }
    one_line_error(&export(&not_trace, "svg", &out, &[]), 2, "svg");
    // A directory named as the output: the error, and no temporary file.
    let trace = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/snap.tmt");
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).expect("mkdir");
    one_line_error(&export(&trace, "folded", &sub, &[]), 1, "cannot write");
    // A moment is for the heap formats.
    one_line_error(&export(&trace, "chrome", &out, &["--at", "1s"]), 1, "--at");
    only(&dir, &["hostname.tmt", "sub"]);
    only(&sub, &[]);
}

/// `-o` names what is written, never what is replaced: a device or a
/// FIFO is written in place, a link's target is written (the link stays),
/// and the recording being exported is refused.
#[test]
fn export_writes_through_devices_fifos_and_links() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tmp().join("export_targets");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let snap = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/snap.tmt");
    let trace = dir.join("copy.tmt");
    std::fs::copy(&snap, &trace).expect("copy");
    export_ok(&trace, "folded", Path::new("/dev/null"), &[]);
    assert!(std::fs::metadata("/dev/null")
        .expect("/dev/null")
        .file_type()
        .is_char_device());
    let link = dir.join("link.folded");
    std::os::unix::fs::symlink(dir.join("target.folded"), &link).expect("symlink");
    export_ok(&trace, "folded", &link, &[]);
    assert!(std::fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
    assert!(
        std::fs::metadata(dir.join("target.folded"))
            .expect("target")
            .len()
            > 0
    );
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).expect("read the fifo"))
    };
    export_ok(&trace, "folded", &fifo, &[]);
    assert!(!reader.join().expect("reader").is_empty());
    assert!(std::fs::symlink_metadata(&fifo)
        .expect("fifo")
        .file_type()
        .is_fifo());
    let before = std::fs::read(&trace).expect("trace");
    one_line_error(
        &export(&trace, "folded", &trace, &[]),
        1,
        "is the recording being exported",
    );
    assert_eq!(std::fs::read(&trace).expect("trace"), before);
}

#[test]
fn export_of_a_damaged_trace_says_so() {
    if !bpf_or_skip("export_damaged") {
        return;
    }
    let (trace, _) = record_leaker("export_damaged");
    let data = std::fs::read(&trace).expect("read trace");
    let cut = tmp().join("export_damaged_cut.tmt");
    std::fs::write(&cut, &data[..data.len() * 2 / 3]).expect("write cut");
    for format in ["chrome", "pprof", "folded"] {
        let out = tmp().join(format!("export_damaged.{format}"));
        let o = export(&cut, format, &out, &[]);
        assert_exit(&o, 0);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("is damaged from byte") && err.contains("exported what comes before it"),
            "{err}"
        );
        let bytes = std::fs::read(&out).expect("output written");
        match format {
            "chrome" => {
                let doc: Value = serde_json::from_slice(&bytes).expect("valid JSON");
                let n = doc["traceEvents"].as_array().map_or(0, Vec::len);
                assert!(n > 100, "{n} events");
            }
            // gzip's magic.
            "pprof" => assert_eq!(bytes.get(..2), Some(&[0x1f, 0x8b][..])),
            // What was live where the file stops (maybe nothing), in the
            // format.
            _ => {
                folded_lines(&out);
            }
        }
    }
}
