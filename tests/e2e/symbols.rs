//! Names for the binaries people run: a stripped program named from its
//! separate debug file (found by build-id through a real debuginfod
//! server on loopback, when recording and when a trace is opened later),
//! and a program that exists only in another mount namespace.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::*;

const WORKER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* static and noinline: only a symbol table or DWARF names them */
static __attribute__((noinline)) char *fill_order(int n)
{
	char *p = malloc(333);
	memset(p, 'a' + n % 26, 333);
	return p;
}

static __attribute__((noinline)) long settle_orders(int rounds)
{
	long sum = 0;
	for (int i = 0; i < rounds; i++) {
		char *p = fill_order(i);
		sum += p[i % 333];
		free(p);
		usleep(2000);
	}
	return sum;
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 10;
	printf("%ld\n", settle_orders(rounds));
	return 0;
}
"#;

/// A free loopback port (a race with another process is possible but
/// harmless here: the server would then fail to start and say so).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind loopback")
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn build_id(bin: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(bin)
        .output()
        .expect("readelf");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .expect("a build-id note")
}

/// The worker built -O2 -g, its DWARF moved to `debug/`, the program
/// stripped of every symbol (no debuglink: only the build-id leads to it).
fn stripped_worker() -> (PathBuf, PathBuf) {
    let bin = compile(
        "gcc",
        "stripped_worker",
        "c",
        WORKER,
        &["-g", "-O2", "-fomit-frame-pointer", "-Wl,--build-id"],
    );
    let debug_dir = bin.with_file_name("debug");
    let _ = std::fs::remove_dir_all(&debug_dir);
    std::fs::create_dir_all(&debug_dir).expect("mkdir");
    let debug = debug_dir.join("stripped_worker.debug");
    for args in [
        vec![
            "--only-keep-debug",
            bin.to_str().expect("utf8"),
            debug.to_str().expect("utf8"),
        ],
        vec!["--strip-all", bin.to_str().expect("utf8")],
    ] {
        let ok = Command::new("objcopy")
            .args(&args)
            .status()
            .expect("objcopy");
        assert!(ok.success(), "objcopy {args:?}");
    }
    (bin, debug_dir)
}

/// elfutils' debuginfod serving `dir` on loopback, once it has indexed
/// `build_id` (asked the way every client asks).
fn debuginfod(dir: &Path, build_id: &str, cache: &Path) -> (Server, String) {
    let port = free_port();
    let db = dir.with_file_name("debuginfod.sqlite");
    let _ = std::fs::remove_file(&db);
    let server = Server(
        Command::new("debuginfod")
            .args(["-F", "-p", &port.to_string(), "-t", "1"])
            .arg("-d")
            .arg(&db)
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("debuginfod is installed (.ci/run installs it)"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    loop {
        // A miss is cached by the client: ask each time with no cache.
        let _ = std::fs::remove_dir_all(cache);
        let ok = Command::new("debuginfod-find")
            .args(["debuginfo", build_id])
            .env("DEBUGINFOD_URLS", &url)
            .env("XDG_CACHE_HOME", cache)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "debuginfod did not index {build_id}"
        );
        sleep(Duration::from_millis(200));
    }
    // The client's cache now has it: the recording must fetch its own.
    let _ = std::fs::remove_dir_all(cache);
    (server, url)
}

/// The 333-byte allocation (fill_order's).
fn order_alloc(r: &Value) -> &Value {
    r["window"]
        .as_array()
        .expect("window")
        .iter()
        .find(|e| e["kind"] == "alloc" && e["size"] == 333)
        .expect("an allocation of fill_order")
}

/// The function names of the 333-byte allocation's stack.
fn order_stack(r: &Value) -> Vec<String> {
    funcs(&order_alloc(r)["stack"])
}

/// fill_order ← settle_orders ← main, innermost first.
fn assert_order_path(stack: &[String]) {
    assert_eq!(
        stack.get(..3),
        Some(
            &[
                "fill_order".to_string(),
                "settle_orders".into(),
                "main".into()
            ][..]
        ),
        "{stack:?}"
    );
}

#[test]
fn a_stripped_program_is_named_from_debuginfod_by_its_build_id() {
    if !bpf_or_skip("debuginfod") {
        return;
    }
    let (prog, debug_dir) = stripped_worker();
    let id = build_id(&prog);
    let cache = tmp().join("debuginfod-cache");
    let (_server, url) = debuginfod(&debug_dir, &id, &cache);
    let cmd = [prog.to_str().expect("utf8"), "5"];

    // Without a server: frames are module+offset, and tm-tui says how to
    // get names.
    let bare = tmp().join("stripped-bare.tmt");
    let out = record_with(&bare, &[], &cmd, &[("DEBUGINFOD_URLS", "")]);
    assert_exit(&out, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no symbols for")
            && err.contains("stripped_worker")
            && err.contains("DEBUGINFOD_URLS"),
        "{err}"
    );
    let without = order_stack(&report_json(&bare, &[]));
    assert!(!without.iter().any(|f| f == "fill_order"), "{without:?}");

    // With the server: debug info is fetched in the background while the
    // program runs (a recording never waits on a download), and nothing is
    // said to be missing. The recording names what came after it arrived;
    // the report names everything, from debuginfod's cache alone (no
    // server asked: DEBUGINFOD_URLS unset), lines included.
    let long = [prog.to_str().expect("utf8"), "300"];
    let named = tmp().join("stripped-named.tmt");
    let cache_env = cache.to_str().expect("utf8");
    let out = record_with(
        &named,
        &[],
        &long,
        &[("DEBUGINFOD_URLS", &url), ("XDG_CACHE_HOME", cache_env)],
    );
    assert_exit(&out, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("no symbols for"), "{err}");
    let report = |trace: &Path, env: &[(&str, &str)]| -> Value {
        let mut c = Command::new(bin());
        c.args(["report", "--json"]).arg(trace);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("report");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let r = report(
        &named,
        &[("DEBUGINFOD_URLS", ""), ("XDG_CACHE_HOME", cache_env)],
    );
    let with = order_stack(&r);
    assert_order_path(&with);
    let ev = order_alloc(&r);
    assert_eq!(ev["stack"][0]["line"], 10, "{ev}");
    // The recording itself named the stacks it met after the download
    // (free's: the allocation's was met before).
    let last = String::from_utf8_lossy(
        &Command::new(bin())
            .args(["report"])
            .arg(&named)
            .env("DEBUGINFOD_URLS", "")
            .env("XDG_CACHE_HOME", tmp().join("no-such-cache"))
            .output()
            .expect("report")
            .stdout,
    )
    .into_owned();
    assert!(
        last.contains("FREE") && last.contains("settle_orders (stripped_worker.c:21)"),
        "{last}"
    );

    // The trace recorded without names carries the build-id: opened where
    // the debug info can be had, its frames are named.
    let _ = std::fs::remove_dir_all(&cache);
    let later = report(
        &bare,
        &[("DEBUGINFOD_URLS", &url), ("XDG_CACHE_HOME", cache_env)],
    );
    assert_eq!(order_stack(&later).get(..3), with.get(..3));
}

#[test]
fn a_program_in_another_mount_namespace_is_unwound_and_named() {
    if !bpf_or_skip("mount_namespace") {
        return;
    }
    let prog = compile(
        "gcc",
        "ns_worker",
        "c",
        WORKER,
        &["-g", "-O2", "-fomit-frame-pointer"],
    );
    // The program lives in a tmpfs mounted over an empty folder in its own
    // mount namespace: the same path on the host has nothing.
    let root = tmp().join("ns_root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("mkdir");
    let inner = root.join("ns_worker");
    let script = format!(
        "mount -t tmpfs tm-tui-test {r} && cp {b} {i} && exec {i} 1500",
        r = root.display(),
        b = prog.display(),
        i = inner.display()
    );
    let mut target = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .expect("unshare (util-linux)");
    let pid = target.id();
    // Wait for the exec into the namespaced program.
    let t0 = Instant::now();
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p != inner)
        .unwrap_or(true)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the namespaced program did not start"
        );
        sleep(Duration::from_millis(20));
    }
    assert!(!inner.exists(), "the host must not see the program");
    let trace = tmp().join("ns.tmt");
    let out = Command::new(bin())
        .arg("record")
        .arg(pid.to_string())
        .arg("-o")
        .arg(&trace)
        .output()
        .expect("record");
    assert!(target.wait().expect("wait").success());
    assert_exit(&out, 0);
    let r = report_json(&trace, &[]);
    assert_no_loss(&r);
    assert_order_path(&order_stack(&r));
}
