//! Crashes: the signal, the faulting address and the symbolized stack.

use serde_json::Value;

use super::support::*;

fn hex(v: &Value) -> u64 {
    let s = v.as_str().expect("hex string");
    u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex")
}

#[test]
fn use_after_free_crash_is_recorded_with_stack_and_address() {
    if !bpf_or_skip("use_after_free") {
        return;
    }
    let uaf = demo("uaf");
    let trace = tmp().join("uaf.tmt");
    let out = record_launch(&trace, &[uaf.to_str().expect("utf8")]);
    // The target's status becomes tm-tui's: 128 + SIGSEGV.
    assert_exit(&out, 139);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CRASH  SIGSEGV"),
        "crash printed at once: {stdout}"
    );

    let r = report_json(&trace, &[]);
    assert_no_loss(&r);
    let crash = &r["crash"];
    assert_eq!(crash["signal"], "SIGSEGV");
    assert_eq!(crash["si_code"], "SEGV_MAPERR");
    // The fault is 16 bytes into the 300000-byte block freed just before.
    let window = r["window"].as_array().expect("window");
    let big = window
        .iter()
        .rev()
        .find(|e| e["kind"] == "alloc" && e["size"] == 300000)
        .expect("the big allocation is in the window");
    assert_eq!(hex(&crash["addr"]), hex(&big["addr"]) + 16);
    assert_eq!(big["func"], "parse_request");
    assert_eq!(
        big["line"].as_u64(),
        Some(line_of("uaf.c", "c->buf = malloc(len)"))
    );
    let free = window
        .iter()
        .rev()
        .find(|e| e["kind"] == "free")
        .expect("a free");
    assert_eq!(free["addr"], big["addr"]);
    assert_eq!(free["func"], "drop_conn");

    let f = funcs(&crash["stack"]);
    assert_eq!(
        &f[..3],
        ["process_request", "handle_conn", "main"],
        "stack {f:?}"
    );
    let top = &crash["stack"][0];
    assert!(top["file"].as_str().is_some_and(|p| p.ends_with("uaf.c")));
    assert_eq!(
        top["line"].as_u64(),
        Some(line_of("uaf.c", "/* use after free */"))
    );
    assert_eq!(crash["tid"], r["target"]["pid"]);
    // Exact heap accounting: three small requests and the big one.
    assert_eq!(r["heap"]["allocs"], 4);
    assert_eq!(r["heap"]["frees"], 4);
    assert_eq!(r["heap"]["live_blocks"], 0);
    assert_eq!(r["exit"]["signal"], "SIGSEGV");
}

#[test]
fn double_free_abort_is_unwound_through_glibc() {
    if !bpf_or_skip("double_free") {
        return;
    }
    let df = demo("double-free");
    let trace = tmp().join("df.tmt");
    let out = record_launch(&trace, &[df.to_str().expect("utf8")]);
    assert_exit(&out, 134);
    let r = report_json(&trace, &[]);
    assert_no_loss(&r);
    assert_eq!(r["crash"]["signal"], "SIGABRT");
    // glibc has no frame pointers: only CFI unwinding gets from raise()
    // back to the program.
    let f = funcs(&r["crash"]["stack"]);
    let pos = |name: &str| {
        f.iter()
            .position(|x| x == name)
            .unwrap_or_else(|| panic!("{name} not in {f:?}"))
    };
    assert!(pos("release_session") < pos("main"));
    let rs = &r["crash"]["stack"][pos("release_session")];
    assert_eq!(
        rs["line"].as_u64(),
        Some(line_of("double_free.c", "bug: should free s"))
    );
    // Both frees of the name are recorded, at the two lines.
    let frees: Vec<&Value> = r["window"]
        .as_array()
        .expect("window")
        .iter()
        .filter(|e| e["kind"] == "free")
        .collect();
    assert_eq!(frees.len(), 2);
    assert_eq!(frees[0]["addr"], frees[1]["addr"]);
    assert_eq!(
        frees[0]["line"].as_u64(),
        Some(line_of("double_free.c", "\tfree(s->name);"))
    );
}

/// The demo exits as its program did (the UAF's SIGSEGV: 139), and an
/// attached recording with --exit-status exits with the process's status.
#[test]
fn demo_and_attached_exit_with_the_targets_status() {
    if !bpf_or_skip("exit_status") {
        return;
    }
    let trace = tmp().join("demo-uaf.tmt");
    let out = std::process::Command::new(bin())
        .args(["demo", "uaf", "--no-ui", "-o"])
        .arg(&trace)
        .output()
        .expect("run tm-tui demo uaf --no-ui");
    assert_exit(&out, 139);
    // Attached: a program that sleeps, then exits 7.
    let prog = compile(
        "cc",
        "exit7",
        "c",
        "#include <unistd.h>\nint main(void) { sleep(1); return 7; }\n",
        &["-O0"],
    );
    let mut target = std::process::Command::new(&prog)
        .spawn()
        .expect("start exit7");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let trace = tmp().join("exit7.tmt");
    let out = std::process::Command::new(bin())
        .args(["record", "--exit-status", "-o"])
        .arg(&trace)
        .arg(target.id().to_string())
        .output()
        .expect("run tm-tui record --exit-status PID");
    assert_eq!(target.wait().expect("wait").code(), Some(7));
    assert_exit(&out, 7);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("target exited with code 7"), "{err}");
}
