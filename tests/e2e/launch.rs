//! Launch mode: a launched program runs as it would from a shell, its
//! job control and signals included.

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::support::*;

/// The state letter of /proc/PID/stat (`t` in a tracing stop).
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

#[test]
fn a_program_that_stops_itself_runs_on_at_sigcont() {
    if !bpf_or_skip("stops_itself") {
        return;
    }
    let dir = tmp().join("stops_itself");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let pid_file = dir.join("pid");
    let _ = std::fs::remove_file(&pid_file);
    let script = format!(
        "echo $$ > {}; kill -STOP $$; echo resumed",
        pid_file.display()
    );
    let mut tm = Command::new(bin())
        .arg("record")
        .arg("-o")
        .arg(dir.join("t.tmt"))
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tm-tui record");
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(p) = pid.filter(|p| matches!(state(*p), Some('t' | 'T'))) {
            break p;
        }
        assert!(Instant::now() < deadline, "the shell never stopped itself");
        sleep(Duration::from_millis(20));
    };
    kill(Pid::from_raw(pid), Signal::SIGCONT).expect("SIGCONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tm.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let st = state(pid);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = tm.wait();
            panic!("still stopped after SIGCONT (state {st:?})");
        }
        sleep(Duration::from_millis(20));
    }
    let out = tm.wait_with_output().expect("tm-tui output");
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("resumed"), "{stdout}");
}

#[test]
fn real_time_signals_reach_the_program() {
    if !bpf_or_skip("real_time_signals") {
        return;
    }
    let trace = tmp().join("rt_signal.tmt");
    let out = record_launch(
        &trace,
        &["sh", "-c", "trap 'echo got 34' 34; kill -34 $$; echo done"],
    );
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("got 34\ndone"), "{stdout}");
}

/// Ctrl-C in the terminal (SIGINT to the whole process group) while tm-tui
/// is still attaching: tm-tui ends at once and so does the program, which
/// never runs on untraced (it used to wait in tm-tui's own signal handler,
/// inherited across the fork, and run to its end).
#[test]
fn ctrl_c_while_attaching_ends_both_at_once() {
    use std::os::unix::process::CommandExt;
    if !bpf_or_skip("ctrl_c_attaching") {
        return;
    }
    let churner = demo("threads");
    for delay_ms in [5u64, 40, 120] {
        let trace = tmp().join("ctrl-c.tmt");
        let mut rec = Command::new(bin())
            .arg("record")
            .arg("-o")
            .arg(&trace)
            .arg("--")
            .arg(&churner)
            .args(["1", "200000000"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("run tm-tui record");
        sleep(Duration::from_millis(delay_ms));
        let group = Pid::from_raw(-(rec.id() as i32));
        kill(group, Signal::SIGINT).expect("SIGINT to the group");
        let t0 = Instant::now();
        while rec.try_wait().expect("poll").is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "tm-tui still running 5 s after Ctrl-C at +{delay_ms} ms"
            );
            sleep(Duration::from_millis(10));
        }
        let out = rec.wait_with_output().expect("output");
        assert_ne!(
            out.status.code(),
            Some(0),
            "Ctrl-C at +{delay_ms} ms: {:?}",
            out.status
        );
        // Nothing of the group is left: not the program, stopped or not
        // (one that got the Ctrl-C as tm-tui let it go dies of it a moment
        // later, on a loaded machine).
        // A zombie is dead: the program, its parent (tm-tui) gone, waits
        // for init to reap it, which a container's pid 1 may be slow to do
        // (CI saw one at +120 ms).
        let alive = || -> Vec<String> {
            std::fs::read_dir("/proc")
                .expect("/proc")
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
                .filter(|&p| {
                    nix::unistd::getpgid(Some(Pid::from_raw(p))).ok()
                        == Some(Pid::from_raw(-group.as_raw()))
                })
                .filter(|&p| state(p) != Some('Z'))
                .map(|p| format!("{p} {:?}", state(p)))
                .collect()
        };
        let t1 = Instant::now();
        while !alive().is_empty() && t1.elapsed() < Duration::from_secs(1) {
            sleep(Duration::from_millis(20));
        }
        let left = alive();
        assert!(
            left.is_empty(),
            "a process of the group outlived tm-tui by 1 s (Ctrl-C at +{delay_ms} ms): {left:?}"
        );
    }
}

/// A launched program that ignores Ctrl-C: tm-tui ends anyway (after a
/// short grace), says so, and leaves the program running, not stopped.
#[test]
fn ctrl_c_ends_the_recording_of_a_program_that_ignores_it() {
    use std::os::unix::process::CommandExt;
    if !bpf_or_skip("ctrl_c_ignored") {
        return;
    }
    let prog = compile(
        "gcc",
        "ignores_sigint",
        "c",
        "#include <signal.h>\n#include <stdlib.h>\n#include <unistd.h>\nstatic void *volatile sink;\nint main(void) { signal(SIGINT, SIG_IGN); for (;;) { void *p = malloc(100); sink = p; free(p); usleep(100); } }\n",
        &["-O2"],
    );
    let trace = tmp().join("ignores.tmt");
    // To a file: the program inherits tm-tui's stderr and outlives it, so
    // a pipe would never reach its end.
    let log = tmp().join("ignores.log");
    let mut rec = Command::new(bin())
        .arg("record")
        .arg("-o")
        .arg(&trace)
        .arg("--")
        .arg(&prog)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .process_group(0)
        .spawn()
        .expect("run tm-tui record");
    sleep(Duration::from_millis(1000));
    kill(Pid::from_raw(-(rec.id() as i32)), Signal::SIGINT).expect("SIGINT to the group");
    let t0 = Instant::now();
    while rec.try_wait().expect("poll").is_none() {
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = kill(Pid::from_raw(-(rec.id() as i32)), Signal::SIGKILL);
            panic!("tm-tui still running 10 s after Ctrl-C");
        }
        sleep(Duration::from_millis(20));
    }
    let err = std::fs::read_to_string(&log).expect("tm-tui's stderr");
    let pid = err
        .split("recording pid ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<i32>().ok())
        .expect("the program's pid");
    sleep(Duration::from_millis(200));
    let st = state(pid);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    assert!(err.contains("runs on, no longer recorded"), "{err}");
    assert!(
        matches!(st, Some('R' | 'S')),
        "the program is {st:?}, not running on: {err}"
    );
    let r = report_json(&trace, &[]);
    assert!(
        r["heap"]["allocs"].as_u64().unwrap_or(0) > 100,
        "{}",
        r["heap"]
    );
}

/// A script is recorded as its interpreter runs it (`#!/bin/sh`, and
/// `#!/usr/bin/env NAME` through $PATH): its allocator is the
/// interpreter's.
#[test]
fn a_script_is_recorded_in_its_interpreter() {
    if !bpf_or_skip("a_script_is_recorded_in_its_interpreter") {
        return;
    }
    let dir = tmp().join("script");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (name, text) in [
        ("s.sh", "#!/bin/sh\necho hi > /dev/null\nexit 3\n"),
        ("e.sh", "#!/usr/bin/env sh\nexit 4\n"),
    ] {
        let script = dir.join(name);
        std::fs::write(&script, text).expect("write the script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let trace = dir.join(format!("{name}.tmt"));
        let out = record_with(&trace, &[], &[script.to_str().expect("utf-8")], &[]);
        let want = if name == "s.sh" { 3 } else { 4 };
        assert_exit(&out, want);
        let r = report_json(&trace, &[]);
        let alloc = r["target"]["allocator"].as_str().unwrap_or("");
        assert!(alloc.contains("libc"), "{name}: allocator {alloc}");
        assert!(
            r["heap"]["allocs"].as_u64().unwrap_or(0) > 0,
            "{name}: {}",
            r["heap"]
        );
    }
}

/// A process whose executable was deleted since it started (a binary
/// upgraded under a running server) is attached through /proc/PID/map_files:
/// its allocator (static glibc, in the deleted file) is probed and its
/// stacks walk with the file's unwind tables.
#[test]
fn a_deleted_static_binary_is_attached() {
    if !bpf_or_skip("a_deleted_static_binary_is_attached") {
        return;
    }
    let src = "#include <stdlib.h>\n#include <unistd.h>\nstatic void *volatile sink;\nstatic void work(void) { void *p = malloc(64); sink = p; free(p); }\nint main(void) { for (int i = 0; i < 3000; i++) { work(); usleep(1000); } return 0; }\n";
    let prog = compile("gcc", "deleted_static", "c", src, &["-O0", "-g", "-static"]);
    let copy = prog.with_file_name("deleted_static_running");
    std::fs::copy(&prog, &copy).expect("copy the binary");
    let mut target = Command::new(&copy).spawn().expect("run the copy");
    sleep(Duration::from_millis(300));
    std::fs::remove_file(&copy).expect("delete the binary");
    let trace = tmp().join("deleted_static.tmt");
    let rec = Command::new(bin())
        .args(["record", "-o"])
        .arg(&trace)
        .arg(target.id().to_string())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tm-tui record");
    sleep(Duration::from_millis(1500));
    kill(Pid::from_raw(rec.id() as i32), Signal::SIGINT).expect("stop the recording");
    let out = rec.wait_with_output().expect("tm-tui record");
    let _ = target.kill();
    let _ = target.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("no unwind info"), "{err}");
    let r = report_json(&trace, &["--window", "100s"]);
    assert!(
        r["heap"]["allocs"].as_u64().unwrap_or(0) > 100,
        "{}",
        r["heap"]
    );
    let in_work = r["window"]
        .as_array()
        .expect("window")
        .iter()
        .filter(|e| e["kind"] == "alloc")
        .all(|e| funcs(&e["stack"]).iter().any(|f| f == "work"));
    assert!(in_work, "every allocation's stack passes through work()");
}

/// kill -9 of tm-tui at any moment of its start-up never leaves the
/// launched program stopped: before its exec it exits (its go pipe
/// closes), after it runs on.
#[test]
fn kill_9_during_start_up_never_leaves_the_program_stopped() {
    if !bpf_or_skip("kill_9_during_start_up_never_leaves_the_program_stopped") {
        return;
    }
    for (i, delay) in [0u64, 30, 80, 150, 300, 600, 1000].into_iter().enumerate() {
        let marker = format!("4.{i}17");
        let rec = Command::new(bin())
            .args(["record", "-o"])
            .arg(tmp().join(format!("k9-{i}.tmt")))
            .args(["--", "/bin/sleep", &marker])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tm-tui record");
        sleep(Duration::from_millis(delay));
        let _ = kill(Pid::from_raw(rec.id() as i32), Signal::SIGKILL);
        let mut rec = rec;
        let _ = rec.wait();
        sleep(Duration::from_millis(400));
        // The program, if it exists, by its unique argument.
        for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmd).contains(&marker) {
                continue;
            }
            let st = state(pid);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            assert!(
                !matches!(st, Some('T' | 't')),
                "killed {delay} ms into start-up, the program is left stopped ({st:?})"
            );
        }
    }
}

/// `-p PID -d 1s` (as perf and memleak take them) records the process
/// for a second and stops on its own, leaving it running.
#[test]
fn pid_and_duration_flags() {
    if !bpf_or_skip("pid_and_duration_flags") {
        return;
    }
    // Allocates for 30 s, whatever tm-tui costs it.
    let prog = compile(
        "gcc",
        "pd_target",
        "c",
        "#include <stdlib.h>\n#include <unistd.h>\nstatic void *volatile sink;\nint main(void) { for (int i = 0; i < 30000; i++) { void *p = malloc(100); sink = p; free(p); usleep(1000); } return 0; }\n",
        &["-O2"],
    );
    let mut target = Command::new(&prog).spawn().expect("the target");
    sleep(Duration::from_millis(200));
    let trace = tmp().join("pd.tmt");
    let t0 = Instant::now();
    let out = Command::new(bin())
        .args(["record", "-p", &target.id().to_string(), "-d", "1s", "-o"])
        .arg(&trace)
        .output()
        .expect("tm-tui record");
    let took = t0.elapsed();
    let alive = target.try_wait().expect("poll").is_none();
    let _ = target.kill();
    let _ = target.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(alive, "the attached process was not left running");
    let r = report_json(&trace, &[]);
    assert!(
        r["heap"]["allocs"].as_u64().unwrap_or(0) > 100,
        "{}",
        r["heap"]
    );
}
