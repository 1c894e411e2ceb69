//! Shared helpers: the binary, the demos, BPF availability, JSON reports.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tm-tui")
}

pub fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Whether this test can use BPF. Without it the test is skipped, unless
/// TM_REQUIRE_BPF=1, where that is a failure.
pub fn bpf_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    if root && btf {
        return true;
    }
    let why = if root {
        "no BTF at /sys/kernel/btf/vmlinux"
    } else {
        "not root"
    };
    if std::env::var("TM_REQUIRE_BPF").as_deref() == Ok("1") {
        panic!("{test}: BPF required (TM_REQUIRE_BPF=1) but unavailable: {why}");
    }
    eprintln!("SKIPPED {test}: needs BPF ({why})");
    false
}

/// Build a demo into the test's cache and return its path.
pub fn demo(name: &str) -> PathBuf {
    let out = Command::new(bin())
        .args(["demo", name, "--build-only"])
        .env("XDG_CACHE_HOME", tmp().join("cache"))
        .output()
        .expect("run tm-tui demo --build-only");
    assert!(
        out.status.success(),
        "building demo {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `tm-tui record -o FILE -- CMD...`
pub fn record_launch(trace: &Path, cmd: &[&str]) -> Output {
    record_with(trace, &[], cmd, &[])
}

/// `tm-tui record -o FILE FLAGS -- CMD...`, with `env` set.
pub fn record_with(trace: &Path, flags: &[&str], cmd: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.arg("record")
        .arg("-o")
        .arg(trace)
        .args(flags)
        .arg("--")
        .args(cmd);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run tm-tui record")
}

/// The run exited with `code`; if not, its stderr says why.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `source` compiled by `compiler` with `flags` into the tests' folder
/// `name` (file `name.ext`); the binary's path.
pub fn compile(compiler: &str, name: &str, ext: &str, source: &str, flags: &[&str]) -> PathBuf {
    let dir = tmp().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let src = dir.join(format!("{name}.{ext}"));
    std::fs::write(&src, source).expect("write source");
    let bin = dir.join(name);
    let ok = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("run {compiler} (.ci/run installs it): {e}"))
        .success();
    assert!(ok, "{compiler} failed on {}", src.display());
    bin
}

pub fn report_json(trace: &Path, extra: &[&str]) -> Value {
    let out = Command::new(bin())
        .arg("report")
        .arg(trace)
        .arg("--json")
        .args(extra)
        .output()
        .expect("run tm-tui report");
    assert!(
        out.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("report --json is JSON")
}

/// The 1-based line of `source` (a program's text) holding `marker`.
pub fn line(source: &str, marker: &str) -> u64 {
    source
        .lines()
        .position(|l| l.contains(marker))
        .map(|i| i as u64 + 1)
        .unwrap_or_else(|| panic!("{marker} not in the source"))
}

/// The 1-based line of the first source line containing `marker`.
pub fn line_of(source: &str, marker: &str) -> u64 {
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets")
            .join(source),
    )
    .expect("read demo source");
    src.lines()
        .position(|l| l.contains(marker))
        .map(|i| i as u64 + 1)
        .unwrap_or_else(|| panic!("{marker} not in {source}"))
}

pub fn funcs(stack: &Value) -> Vec<String> {
    stack
        .as_array()
        .expect("stack is an array")
        .iter()
        .map(|f| f["func"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Every loss counter of a report is zero.
pub fn assert_no_loss(r: &Value) {
    for (reason, n) in r["events"]["lost"].as_object().expect("lost counters") {
        if reason != "events_without_stack" {
            assert_eq!(n.as_u64(), Some(0), "lost {reason}: {n}");
        }
    }
}

/// valgrind's "in use at exit: B bytes in N blocks" and its alloc/free
/// totals for the same program, the reference for exact accounting.
pub struct Valgrind {
    pub bytes: u64,
    pub blocks: u64,
    pub allocs: u64,
    pub frees: u64,
}

pub fn valgrind(cmd: &[&str]) -> Valgrind {
    let out = Command::new("valgrind")
        .args(["--run-libc-freeres=no", "--leak-check=no"])
        .args(cmd)
        .output()
        .expect("valgrind is installed (.ci/run installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    let nums = |line: &str| -> Vec<u64> {
        line.split(|c: char| !c.is_ascii_digit() && c != ',')
            .filter_map(|w| w.replace(',', "").parse().ok())
            .collect()
    };
    let in_use = err
        .lines()
        .find(|l| l.contains("in use at exit"))
        .expect("valgrind summary");
    let usage = err
        .lines()
        .find(|l| l.contains("total heap usage"))
        .expect("valgrind usage");
    // "==PID==     in use at exit: 4,640 bytes in 3 blocks"
    let iu = nums(in_use.split("exit:").nth(1).unwrap_or(""));
    let hu = nums(usage.split("usage:").nth(1).unwrap_or(""));
    Valgrind {
        bytes: iu[0],
        blocks: iu[1],
        allocs: hu[0],
        frees: hu[1],
    }
}
