//! The real binary in a real terminal (tmux): the UAF demo opens the UI,
//! freezes on the crash with its diagnosis, scrubs back with the keys, and
//! quits leaving the terminal restored.

use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::support::*;

/// One tmux server per test (its own socket, `-L`): with one shared server,
/// a test's `kill-session` of the server's last session made it exit while
/// another test's `new-session` was connecting to it ("server exited
/// unexpectedly", a CI failure).
struct Tmux(String);

impl Tmux {
    fn start(cmd: &str) -> Tmux {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = Tmux(format!("tm-e2e-{}-{n}", std::process::id()));
        let ok = t
            .tmux()
            .args([
                "new-session",
                "-d",
                "-s",
                &t.0,
                "-x",
                "100",
                "-y",
                "30",
                cmd,
            ])
            .status()
            .expect("run tmux (apt install tmux)")
            .success();
        assert!(ok, "tmux new-session failed");
        t
    }

    /// tmux on this test's own server.
    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.0]);
        c
    }

    fn screen(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.tmux()
                .args(["send-keys", "-t", &self.0, k])
                .status()
                .expect("tmux send-keys");
            sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the screen contains `what`; returns the screen.
    fn wait_for(&self, what: &str, secs: u64) -> String {
        self.wait_for_all(&[what], secs)
    }

    /// Waits until one screen contains all of `what` (a capture can land
    /// in the middle of a frame being drawn); returns it.
    fn wait_for_all(&self, what: &[&str], secs: u64) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if what.iter().all(|w| s.contains(w)) {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "{what:?} did not appear within {secs}s; screen:\n{s}"
            );
            sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

#[test]
fn uaf_demo_freezes_on_the_crash_and_scrubs_back() {
    if !bpf_or_skip("ui_in_tmux") {
        return;
    }
    // Build the demo first so the UI starts at once.
    demo("uaf");
    let cache = tmp().join("cache");
    let cmd = format!(
        "env XDG_CACHE_HOME={} {} demo uaf; echo TM_EXIT=$?; sleep 60",
        cache.display(),
        bin()
    );
    let t = Tmux::start(&cmd);
    let wants = [
        "USE-AFTER-FREE",
        "16 bytes inside a 300000-byte block",
        "parse_request (uaf.c:",
        "drop_conn (uaf.c:",
        "process_request",
        "▶",
        "CRASH",
    ];
    // The frozen frame drawn whole (the diagnosis is drawn last).
    let s = t.wait_for_all(&["FROZEN (crash)", "Heap here:", wants[1]], 30);
    for want in wants {
        assert!(s.contains(want), "'{want}' missing:\n{s}");
    }
    assert!(s.contains("Heap here: 0 B in 0 blocks"), "{s}");
    // Three events back: the 300000-byte block is allocated, not yet freed.
    t.keys(&["Left", "Left", "Left"]);
    let s = t.wait_for("293.0 KiB in 1 block ", 5);
    assert!(s.contains("300000"), "{s}");
    assert!(s.contains("block #1 of 1 that lived"), "{s}");
    // Two more: before it, nothing live.
    t.keys(&["Left", "Left"]);
    t.wait_for("Heap here: 0 B in 0 blocks", 5);
    // c goes back to the crash; q quits and restores the terminal.
    t.keys(&["c"]);
    t.wait_for("USE-AFTER-FREE", 5);
    t.keys(&["q"]);
    // tm-tui exits as the demo program did: killed by SIGSEGV.
    let s = t.wait_for("TM_EXIT=139", 10);
    assert!(!s.contains("Heap here"), "the UI is still on screen:\n{s}");
}

/// Under sudo the UI's launched program runs as the user who ran sudo,
/// and its output goes to a file of that user's, mode 0600, under a name
/// nobody can guess (not /tmp/tm-tui-PID.out).
#[test]
fn program_output_file_is_private_and_the_users() {
    use std::os::unix::fs::MetadataExt;
    if !bpf_or_skip("ui_output_file") {
        return;
    }
    let cmd = format!(
        "env SUDO_UID=65534 SUDO_GID=65534 SUDO_USER=nobody {} -- /bin/sh -c 'id -u; id -G'; echo TM_EXIT=$?; sleep 60",
        bin()
    );
    let t = Tmux::start(&cmd);
    // The program ran and ended: the heap shown is the one at its end.
    t.wait_for("heap at end", 30);
    t.keys(&["q"]);
    let s = t.wait_for("TM_EXIT=0", 10);
    let path = s
        .lines()
        .find_map(|l| l.trim().strip_prefix("tm-tui: the program's output is in "))
        .unwrap_or_else(|| panic!("no output file named:\n{s}"))
        .trim()
        .to_string();
    let name = std::path::Path::new(&path)
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name")
        .to_string();
    let random = name
        .strip_prefix("tm-tui-")
        .and_then(|n| n.strip_suffix(".out"))
        .unwrap_or_else(|| panic!("{name}"));
    assert!(
        random.len() >= 12 && random.parse::<u64>().is_err(),
        "{name}"
    );
    let meta = std::fs::metadata(&path).expect("the output file");
    assert_eq!(meta.mode() & 0o777, 0o600, "{path}");
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{path}");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read it"),
        "65534\n65534\n"
    );
    let _ = std::fs::remove_file(&path);
}

/// `open` shows a saved recording at once and fills it as it is read: a
/// crash's recording ends at the crash with its diagnosis; a recording
/// bigger than `--memory` is read whole, the oldest events dropped, the
/// heap at the end as `report` says.
#[test]
fn open_streams_a_recording_into_the_ui() {
    if !bpf_or_skip("open_streams") {
        return;
    }
    let uaf = tmp().join("open-uaf.tmt");
    let out = Command::new(bin())
        .args(["demo", "uaf", "--no-ui", "-o"])
        .arg(&uaf)
        .output()
        .expect("run tm-tui demo uaf --no-ui");
    assert_exit(&out, 139);
    let t = Tmux::start(&format!("{} open {}; sleep 60", bin(), uaf.display()));
    let s = t.wait_for("REPLAY", 20);
    for want in ["USE-AFTER-FREE", "read ", " events in ", "heap at end"] {
        assert!(s.contains(want), "'{want}' missing:\n{s}");
    }
    t.keys(&["q"]);
    drop(t);

    // About 2 M events: several times a 16 MiB budget.
    let churner = demo("threads");
    let big = tmp().join("open-churn.tmt");
    let out = Command::new(bin())
        .args(["record", "-o"])
        .arg(&big)
        .arg("--")
        .arg(&churner)
        .args(["1", "1000000"])
        .output()
        .expect("record the churner");
    assert_exit(&out, 0);
    let report = Command::new(bin())
        .args(["report", "--json"])
        .arg(&big)
        .output()
        .expect("report");
    assert_exit(&report, 0);
    let j: serde_json::Value = serde_json::from_slice(&report.stdout).expect("json");
    let live = j["heap"]["live_blocks"].as_u64().expect("live_blocks");
    let events = j["events"]["total"].as_u64().expect("events");
    assert!(events > 1_500_000, "{events} events");
    let t = Tmux::start(&format!(
        "{} open --memory 16MiB {}; echo TM_EXIT=$?; sleep 60",
        bin(),
        big.display()
    ));
    let s = t.wait_for("REPLAY", 60);
    assert!(s.contains(&format!("read {events} events")), "{s}");
    assert!(s.contains("dropped to stay within --memory"), "{s}");
    assert!(s.contains(&format!("{events} ev")), "{s}");
    assert!(
        s.contains(&format!("({live})")),
        "heap at end: {live} blocks:\n{s}"
    );
    t.keys(&["q"]);
    t.wait_for("TM_EXIT=0", 10);
}

/// `open --at T` on a file in parts: the view holds at T, read from the
/// part before it, its heap what `report --at T` says.
#[test]
fn open_at_a_moment_starts_at_the_part_before_it() {
    if !bpf_or_skip("open_at") {
        return;
    }
    let churner = demo("threads");
    let trace = tmp().join("open-at.tmt");
    let out = Command::new(bin())
        .args(["record", "--checkpoint", "1MiB", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(&churner)
        .args(["1", "300000"])
        .output()
        .expect("record the churner");
    assert_exit(&out, 0);
    let whole = Command::new(bin())
        .args(["report", "--json"])
        .arg(&trace)
        .output()
        .expect("report");
    let whole: serde_json::Value = serde_json::from_slice(&whole.stdout).expect("json");
    let at_ns = whole["duration_ns"].as_u64().expect("duration") / 2;
    let at = format!("{at_ns}ns");
    let r = Command::new(bin())
        .args(["report", "--json", "--at", &at])
        .arg(&trace)
        .output()
        .expect("report --at");
    let r: serde_json::Value = serde_json::from_slice(&r.stdout).expect("json");
    assert!(
        r["retention"]["read"]["skipped_bytes"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{}",
        r["retention"]
    );
    let live = r["heap"]["live_blocks"].as_u64().expect("live_blocks");
    let t = Tmux::start(&format!(
        "{} open --at {at} {}; sleep 60",
        bin(),
        trace.display()
    ));
    let s = t.wait_for("REPLAY", 30);
    assert!(
        s.contains("(--at), read from the trace's part before it"),
        "{s}"
    );
    let secs = format!("at +{:.3}", at_ns as f64 / 1e9);
    assert!(s.contains(&secs[..secs.len() - 1]), "{secs}:\n{s}");
    assert!(
        s.contains(&format!("in {live} block")),
        "{live} blocks at T:\n{s}"
    );
    // Read from a part: fewer events than the file holds.
    let total = whole["events"]["total"].as_u64().expect("total");
    let shown: u64 = s
        .lines()
        .next()
        .and_then(|l| l.split(" ev ").next())
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in the status line:\n{s}"));
    assert!(
        shown > 0 && shown < total,
        "{shown} of {total} events:\n{s}"
    );
    t.keys(&["q"]);
}

/// Quitting the live UI while a launched program runs ends both at once:
/// the program, killed, was held at its exit for a recorder that had
/// already gone (30 s, half the time, before the holds were closed).
#[test]
fn quitting_the_live_ui_ends_at_once() {
    if !bpf_or_skip("quit_live_ui") {
        return;
    }
    // Two threads allocating about 40,000 times a second each, for ever:
    // a rate even a debug build's model keeps up with, so quitting has
    // no backlog to read.
    let prog = compile(
        "cc",
        "slowchurn",
        "c",
        r#"#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
static void *churn(void *a) {
    (void)a;
    for (;;) {
        for (int i = 0; i < 40; i++) free(malloc(32 + i));
        usleep(1000);
    }
    return 0;
}
int main(void) {
    pthread_t t;
    pthread_create(&t, 0, churn, 0);
    churn(0);
}
"#,
        &["-O2", "-pthread"],
    );
    for run in 0..3 {
        let trace = tmp().join(format!("quit-live-{run}.tmt"));
        let _ = std::fs::remove_file(&trace);
        let t = Tmux::start(&format!(
            "{} -o {} -- {}; echo TM_EXIT=$?; sleep 60",
            bin(),
            trace.display(),
            prog.display()
        ));
        t.wait_for("LIVE", 20);
        sleep(Duration::from_secs(2));
        let limit = 5;
        let t0 = Instant::now();
        t.keys(&["q"]);
        t.wait_for("TM_EXIT=137", limit + 3);
        assert!(
            t0.elapsed() < Duration::from_secs(limit),
            "run {run}: quitting took {:?}",
            t0.elapsed()
        );
    }
}

/// The live UI writing `-o FIFO` whose reader stops: the probes are
/// detached within the writer's stall limit, the status bar says why, the
/// target runs on, and quitting exits 1.
#[test]
fn the_live_ui_says_when_its_trace_cannot_be_written() {
    if !bpf_or_skip("ui_write_failure") {
        return;
    }
    let fifo = tmp().join("ui-writes-fifo");
    let _ = std::fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // Allocates for 60 s, 1 ms apart.
    let mut target = Command::new(demo("leak"))
        .args(["60000", "1000"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the target");
    let pid = target.id();
    let mut cat = Command::new("cat")
        .arg(&fifo)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("cat");
    let t = Tmux::start(&format!(
        "{} {pid} -o {}; echo TM_EXIT=$?; sleep 60",
        bin(),
        fifo.display()
    ));
    t.wait_for("LIVE", 30);
    sleep(Duration::from_secs(1));
    let kill = |p: u32, s| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), s);
    // A failing assertion must not leave the stopped `cat` behind (it
    // holds the test runner's stderr).
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _reap = (Reap(cat.id()), Reap(pid));
    kill(cat.id(), nix::sys::signal::Signal::SIGSTOP).expect("stop cat");
    let s = t.wait_for("the trace's reader stopped reading for 5 s", 15);
    assert!(s.contains(&format!("detached from pid {pid}")), "{s}");
    // Once the recording is over, the why stays (it once turned into
    // "the target exited", which it had not).
    let s = t.wait_for("FROZEN", 10);
    assert!(
        s.contains("the trace's reader stopped reading") && !s.contains("the target exited"),
        "{s}"
    );
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let st = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
    assert!(
        matches!(st, Some('R' | 'S')),
        "the target is {st:?}: {stat}"
    );
    t.keys(&["q"]);
    t.wait_for("TM_EXIT=1", 10);
    let _ = kill(cat.id(), nix::sys::signal::Signal::SIGCONT);
    let _ = cat.kill();
    let _ = cat.wait();
    let _ = target.kill();
    let _ = target.wait();
}
