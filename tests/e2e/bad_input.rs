//! Bad input: each a one-line error and a non-zero exit, never a panic.

use std::process::{Command, Output};

use super::support::*;

fn one_line_error(out: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("tm-tui: error: "), "{err}");
    assert!(err.contains(needle), "'{needle}' in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn tm(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run tm-tui")
}

#[test]
fn unknown_flag() {
    one_line_error(&tm(&["record", "--bogus"]), 2, "--bogus");
}

/// --memory holds all of tm-tui: too little for the ring buffer and the
/// tables is refused before anything runs (no root needed to be told).
#[test]
fn memory_too_small_for_the_ring_buffer() {
    let marker = tmp().join("memory-too-small-ran");
    let _ = std::fs::remove_file(&marker);
    one_line_error(
        &tm(&[
            "record",
            "--memory",
            "128MiB",
            "-o",
            "/dev/null",
            "--",
            "/bin/touch",
            &marker.to_string_lossy(),
        ]),
        1,
        "give at least --memory 232MiB, or a smaller --ringbuf",
    );
    assert!(!marker.exists(), "the program ran");
    // The UI's bounds need a trace to bound.
    one_line_error(
        &tm(&["--max-size", "1GiB", "--", "/bin/true"]),
        1,
        "give -o DIR",
    );
}

#[test]
fn file_that_is_not_a_trace() {
    one_line_error(&tm(&["report", "/etc/hostname"]), 1, "not a tm-tui trace");
    one_line_error(&tm(&["report", "/nonexistent.tmt"]), 1, "/nonexistent.tmt");
}

#[test]
fn truncated_trace_reports_what_it_could_read() {
    if !bpf_or_skip("truncated_trace") {
        return;
    }
    let leak = demo("leak");
    let trace = tmp().join("trunc.tmt");
    assert!(
        record_launch(&trace, &[leak.to_str().expect("utf8"), "300", "0"])
            .status
            .success()
    );
    let data = std::fs::read(&trace).expect("read trace");
    let cut = tmp().join("cut.tmt");
    std::fs::write(&cut, &data[..data.len() / 2 + 3]).expect("write cut trace");
    let out = tm(&["report", cut.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DAMAGED"), "{text}");
    let r = report_json(&cut, &[]);
    assert!(r["damage"]["offset"]
        .as_u64()
        .is_some_and(|o| o > 0 && o <= data.len() as u64 / 2 + 3));
    assert!(r["events"]["total"].as_u64().is_some_and(|n| n > 100));
}

#[test]
fn pid_that_does_not_exist() {
    if !bpf_or_skip("no_such_pid") {
        return;
    }
    one_line_error(
        &tm(&["record", "4194303", "-o", "/dev/null"]),
        1,
        "no process with pid 4194303",
    );
}

#[test]
fn kernel_thread_pid() {
    if !bpf_or_skip("kernel_thread") {
        return;
    }
    one_line_error(&tm(&["record", "2", "-o", "/dev/null"]), 1, "kernel thread");
}

#[test]
fn not_root() {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            bin(),
            "record",
            "1",
            "-o",
            "/tmp/x.tmt",
        ])
        .output();
    let Ok(out) = out else {
        eprintln!("SKIPPED not_root: setpriv unavailable");
        return;
    };
    if String::from_utf8_lossy(&out.stderr).contains("setpriv:") {
        eprintln!("SKIPPED not_root: cannot drop privileges here");
        return;
    }
    one_line_error(
        &out,
        1,
        "recording needs CAP_BPF and CAP_PERFMON (missing: CAP_BPF, CAP_PERFMON)",
    );
}

#[test]
fn program_that_cannot_run() {
    if !bpf_or_skip("cannot_run") {
        return;
    }
    one_line_error(
        &tm(&["record", "-o", "/dev/null", "--", "/nonexistent/prog"]),
        1,
        "no such file",
    );
}

#[test]
fn program_whose_exec_fails() {
    if !bpf_or_skip("exec_fails") {
        return;
    }
    // Open for writing, the program passes every check but its exec fails
    // (ETXTBSY).
    let prog = tmp().join("busy_true");
    let _ = std::fs::remove_file(&prog);
    std::fs::copy("/bin/true", &prog).expect("copy /bin/true");
    let _writer = std::fs::OpenOptions::new()
        .append(true)
        .open(&prog)
        .expect("open for writing");
    let prog = prog.to_str().expect("utf8");
    one_line_error(
        &tm(&["record", "-o", "/dev/null", "--", prog]),
        1,
        "cannot execute",
    );
}

#[test]
fn pid_that_exits_while_attaching() {
    if !bpf_or_skip("exits_while_attaching") {
        return;
    }
    // A process that lives a few milliseconds: whichever way the race
    // goes, tm-tui ends promptly with a clean result or one clean line.
    for delay in ["0.001", "0.02", "0.08"] {
        let mut p = Command::new("sleep")
            .arg(delay)
            .spawn()
            .expect("spawn sleep");
        let out = tm(&[
            "record",
            &p.id().to_string(),
            "-o",
            tmp().join("race.tmt").to_str().expect("utf8"),
        ]);
        let _ = p.wait();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        if !out.status.success() {
            one_line_error(&out, 1, "");
            assert!(
                err.contains("exited")
                    || err.contains("no process")
                    || err.contains("no allocator"),
                "{err}"
            );
        }
    }
}

/// A thread's id is named as such; no event family at all is refused; an
/// unwritable trace (a missing directory, a FIFO nobody reads) is refused
/// before the program starts.
#[test]
fn thread_id_empty_families_and_unwritable_output() {
    if !bpf_or_skip("thread_id_empty_families_and_unwritable_output") {
        return;
    }
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import threading, time\nt = threading.Thread(target=time.sleep, args=(30,))\nt.start()\ntime.sleep(30)",
        ])
        .spawn()
        .expect("python3");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = py.id();
    let tid = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .find(|&t| t != pid)
        .expect("a second thread");
    let out = tm(&["record", "-o", "/tmp/tm-tui-never.tmt", &tid.to_string()]);
    let _ = py.kill();
    let _ = py.wait();
    one_line_error(&out, 1, &format!("is a thread of process {pid}"));
    one_line_error(
        &tm(&["record", "--trace", "", "--", "/bin/true"]),
        2,
        "no event family",
    );
    let marker = tmp().join("never-ran");
    let _ = std::fs::remove_file(&marker);
    let touch = format!("touch {}", marker.display());
    one_line_error(
        &tm(&[
            "record",
            "-o",
            "/nonexistent/x.tmt",
            "--",
            "/bin/sh",
            "-c",
            &touch,
        ]),
        1,
        "cannot write the trace to /nonexistent/x.tmt",
    );
    assert!(!marker.exists(), "the program ran");
}
