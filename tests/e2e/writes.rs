//! Writes never block the recorder: a trace whose reader stops reading
//! detaches the probes within the stall limit, a full disk at once; each
//! says why, leaves the target running, and what was written reads back.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::support::*;

/// The writer's stall limit (src/trace/sink.rs) and the slack allowed
/// after it: the pipe's 64 KiB filling, the detach, the exit.
const LIMIT: Duration = Duration::from_secs(5);
const SLACK: Duration = Duration::from_secs(4);

/// Allocates for 40 s (1 ms apart), whatever tm-tui does.
fn target() -> Child {
    let leak = demo("leak");
    Command::new(leak)
        .args(["40000", "1000"])
        .stdout(Stdio::null())
        .spawn()
        .expect("the target")
}

/// `R`, `S`…: the state letter in /proc/PID/stat.
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .and_then(|(_, r)| r.chars().next())
        .unwrap_or('?')
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("kill");
}

/// Waits for `c` at most `limit`; its exit code, its stderr (in the file
/// `err`: a launched program shares it and may hold it open) and how long.
fn wait_stderr(
    c: &mut Child,
    err: &std::path::Path,
    limit: Duration,
) -> (Option<i32>, String, Duration) {
    let t0 = Instant::now();
    let code = loop {
        if let Some(s) = c.try_wait().expect("poll") {
            break s.code();
        }
        if t0.elapsed() > limit {
            let _ = c.kill();
            let _ = c.wait();
            break None;
        }
        sleep(Duration::from_millis(50));
    };
    let took = t0.elapsed();
    (code, std::fs::read_to_string(err).unwrap_or_default(), took)
}

/// Lets tm-tui record for 2 s, stops the reader `cat`, and waits for
/// tm-tui to give up: its exit code, its stderr (in `err` under tmp())
/// and how long it took after the stop.
fn stop_reader(cat: &Child, tm: &mut Child, err: &str) -> (Option<i32>, String, Duration) {
    sleep(Duration::from_secs(2));
    signal(cat.id(), nix::sys::signal::Signal::SIGSTOP);
    wait_stderr(tm, &tmp().join(err), LIMIT + SLACK + Duration::from_secs(5))
}

/// After the reader stopped: tm-tui exited non-zero within the limit
/// (plus slack) saying why, the target runs on, not stopped.
fn assert_detached(code: Option<i32>, err: &str, took: Duration, pid: u32) {
    assert!(
        took < LIMIT + SLACK,
        "tm-tui took {took:?} to give up: {err}"
    );
    assert_eq!(code, Some(1), "{err}");
    let want = format!(
        "the trace's reader stopped reading for 5 s: detached from pid {pid}; the trace ends at +"
    );
    assert!(err.contains(&want), "{err}");
    assert!(
        err.lines().filter(|l| l.contains("error:")).count() == 1,
        "one line says why: {err}"
    );
    let st = state(pid);
    assert!(matches!(st, 'R' | 'S'), "the target is {st}, not running");
}

/// The trace read back: events, and it says it ended abruptly.
fn assert_reads_back(path: &std::path::Path) {
    let r = report_json(path, &[]);
    assert!(
        r["heap"]["allocs"].as_u64().unwrap_or(0) > 100,
        "{}",
        r["heap"]
    );
    let why = r["damage"]["reason"].as_str().unwrap_or("");
    assert!(
        why.contains("truncated") || why.contains("ended abruptly"),
        "{}",
        r["damage"]
    );
}

#[test]
fn a_fifo_whose_reader_stops_detaches() {
    if !bpf_or_skip("a_fifo_whose_reader_stops_detaches") {
        return;
    }
    let fifo = tmp().join("writes-fifo");
    let out = tmp().join("writes-fifo.tmt");
    let _ = std::fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let mut t = target();
    sleep(Duration::from_millis(300));
    let mut cat = Command::new("cat")
        .arg(&fifo)
        .stdout(File::create(&out).expect("out"))
        .spawn()
        .expect("cat");
    let mut tm = Command::new(bin())
        .args(["record", &t.id().to_string(), "-o"])
        .arg(&fifo)
        .stderr(File::create(tmp().join("writes-fifo.err")).expect("err"))
        .spawn()
        .expect("tm-tui");
    let (code, err, took) = stop_reader(&cat, &mut tm, "writes-fifo.err");
    assert_detached(code, &err, took, t.id());
    signal(cat.id(), nix::sys::signal::Signal::SIGCONT);
    let _ = cat.wait();
    let _ = t.kill();
    let _ = t.wait();
    assert_reads_back(&out);
}

#[test]
fn stdout_into_a_reader_that_stops_detaches() {
    if !bpf_or_skip("stdout_into_a_reader_that_stops_detaches") {
        return;
    }
    let out = tmp().join("writes-stdout.tmt");
    let mut cat = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(File::create(&out).expect("out"))
        .spawn()
        .expect("cat");
    let pipe = cat.stdin.take().expect("cat's stdin");
    let leak = demo("leak");
    let mut tm = Command::new(bin())
        .args(["record", "-o", "-", "--"])
        .arg(&leak)
        .args(["40000", "1000"])
        .stdout(pipe)
        .stderr(File::create(tmp().join("writes-stdout.err")).expect("err"))
        .spawn()
        .expect("tm-tui");
    let (code, err, took) = stop_reader(&cat, &mut tm, "writes-stdout.err");
    // The launched program, from "recording pid N (…)".
    let pid: u32 = err
        .split("recording pid ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {err}"));
    assert_detached(code, &err, took, pid);
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    signal(cat.id(), nix::sys::signal::Signal::SIGCONT);
    let _ = cat.wait();
    assert_reads_back(&out);
}

/// A full disk (a 4 MiB tmpfs in a mount namespace of the test's own):
/// the write's ENOSPC detaches at once and says so in one line, the
/// target (attached, a churner at full rate) runs on to its own end with
/// status 0, and the trace reads back up to where the disk filled.
#[test]
fn a_full_disk_detaches_and_the_target_runs_on() {
    if !bpf_or_skip("a_full_disk_detaches_and_the_target_runs_on") {
        return;
    }
    let threads = demo("threads");
    let mnt = tmp().join("full-disk");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let copy = tmp().join("full-disk.tmt");
    let script = format!(
        "mount -t tmpfs -o size=4m tm-tui-full {m} || exit 90
         {t} 1 200000000 >/dev/null & pid=$!
         sleep 0.5
         {b} record $pid -o {m}/x.tmt --max-size 0
         echo TM=$?
         wait $pid
         echo TARGET=$?
         cp {m}/x.tmt {c}",
        m = mnt.display(),
        t = threads.display(),
        b = bin(),
        c = copy.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("TM=1"), "{stdout}\n{err}");
    assert!(stdout.contains("TARGET=0"), "the target: {stdout}\n{err}");
    assert!(
        err.contains("No space left on device") && err.contains("detached from pid"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("error:")).count(),
        1,
        "one line says why: {err}"
    );
    assert_reads_back(&copy);
}
