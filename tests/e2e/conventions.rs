//! What users of perf, strace, heaptrack and valgrind expect of a
//! command-line tool: --version with the commit, --log, a man page and
//! shell completions, -c "CMD ARGS", traces through pipes, capabilities
//! instead of root, the launched program run as the user who ran sudo.

use std::process::{Command, Output};

use super::support::*;

fn tm(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run tm-tui")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn version_names_the_commit_and_bench_is_hidden() {
    let out = tm(&["--version"]);
    assert_exit(&out, 0);
    let v = stdout(&out);
    // "tm-tui 0.1.0 (1f536b4)", or "(unknown)" built outside git.
    let inner = v
        .trim()
        .strip_prefix(concat!("tm-tui ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("version line: {v}"));
    assert!(
        inner == "unknown" || (inner.len() >= 7 && inner.chars().all(|c| c.is_ascii_hexdigit())),
        "{v}"
    );
    let help = stdout(&tm(&["--help"]));
    assert!(help.contains("record"), "{help}");
    assert!(!help.contains("bench"), "bench is hidden: {help}");
    // Still there for those who know it.
    assert_exit(&tm(&["bench", "--help"]), 0);
}

#[test]
fn log_file_gets_libbpf_messages_and_the_error() {
    if !bpf_or_skip("log_file") {
        return;
    }
    let dir = tmp().join("log_file");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let log = dir.join("tm.log");
    let trace = dir.join("t.tmt");
    // Before the subcommand as after it.
    let out = Command::new(bin())
        .arg("--log")
        .arg(&log)
        .arg("record")
        .arg("-o")
        .arg(&trace)
        .args(["--", "/bin/true"])
        .output()
        .expect("run tm-tui");
    assert_exit(&out, 0);
    let text = std::fs::read_to_string(&log).expect("the log is written");
    assert!(text.contains("] info: tm-tui "), "{text}");
    assert!(text.contains("] libbpf debug: libbpf: "), "{text}");
    assert!(text.contains("] info: exit status 0"), "{text}");
    // libbpf's messages go to the log, not the terminal.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("libbpf:"));
    let out = Command::new(bin())
        .arg("report")
        .arg("--log")
        .arg(&log)
        .arg("/etc/hostname")
        .output()
        .expect("run tm-tui");
    assert_exit(&out, 1);
    let text = std::fs::read_to_string(&log).expect("the log is written");
    assert!(
        text.contains("] error: /etc/hostname: not a tm-tui trace"),
        "{text}"
    );
    let out = tm(&["--log", "/nonexistent/dir/x.log", "report", "/etc/hostname"]);
    assert_exit(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("tm-tui: error: cannot write the log /nonexistent/dir/x.log"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
