//! The real binary in a real terminal (tmux): the UAF demo opens the UI,
//! freezes on the crash with its diagnosis, scrubs back with the keys, and
//! quits leaving the terminal restored.

use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::support::*;

struct Tmux(String);

impl Tmux {
    fn start(cmd: &str) -> Tmux {
        let name = format!("tm-e2e-{}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
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
        Tmux(name)
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            Command::new("tmux")
                .args(["send-keys", "-t", &self.0, k])
                .status()
                .expect("tmux send-keys");
            sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the screen contains `what`; returns the screen.
    fn wait_for(&self, what: &str, secs: u64) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(what) {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "'{what}' did not appear within {secs}s; screen:\n{s}"
            );
            sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
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
    let s = t.wait_for("FROZEN (crash)", 30);
    for want in [
        "USE-AFTER-FREE",
        "16 bytes inside a 300000-byte block",
        "parse_request (uaf.c:",
        "drop_conn (uaf.c:",
        "process_request",
        "▶",
        "CRASH",
    ] {
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
