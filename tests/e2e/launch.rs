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
