//! The model on real recordings: crash diagnoses that name the culprit,
//! leak groups, filters and window diffs.

use std::process::Command;

use serde_json::Value;

use super::support::*;

fn first_user_func(stack: &Value) -> String {
    stack
        .as_array()
        .expect("stack array")
        .iter()
        .find(|f| {
            // The demo's own frames: source info, not in a system library.
            f["file"].as_str().is_some()
                && !f["module"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("/usr/lib") || m.starts_with("/lib"))
        })
        .and_then(|f| f["func"].as_str())
        .unwrap_or("")
        .to_string()
}

#[test]
fn use_after_free_is_diagnosed_with_alloc_free_and_access_stacks() {
    if !bpf_or_skip("uaf_diagnosis") {
        return;
    }
    let uaf = demo("uaf");
    let trace = tmp().join("uaf-diag.tmt");
    let out = record_launch(&trace, &[uaf.to_str().expect("utf8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Diagnosed live, the moment the crash arrives.
    assert!(
        stdout.contains("DIAGNOSIS  use-after-free"),
        "record output: {stdout}"
    );
    let r = report_json(&trace, &[]);
    let d = &r["crash"]["diagnosis"];
    assert_eq!(d["kind"], "use-after-free", "{d}");
    assert_eq!(d["block"]["size"], 300000);
    assert_eq!(d["offset"], 16);
    assert_eq!(d["block"]["addr"], {
        let a = u64::from_str_radix(
            r["crash"]["addr"]
                .as_str()
                .expect("addr")
                .trim_start_matches("0x"),
            16,
        )
        .expect("hex");
        Value::from(format!("{:#x}", a - 16))
    });
    assert_eq!(first_user_func(&d["alloc_stack"]), "parse_request");
    assert_eq!(first_user_func(&d["free_stack"]), "drop_conn");
    assert_eq!(first_user_func(&d["access_stack"]), "process_request");
    // The free stack starts at the caller, once (no duplicated frame).
    let fs = funcs(&d["free_stack"]);
    assert_eq!(&fs[..2], ["drop_conn", "handle_conn"], "{fs:?}");
    let summary = d["summary"].as_str().expect("summary");
    assert!(
        summary.contains("16 bytes inside a 300000-byte block allocated at parse_request (uaf.c:")
            && summary.contains("freed at drop_conn (uaf.c:"),
        "{summary}"
    );
    // The text report says the same.
    let text = Command::new(bin())
        .arg("report")
        .arg(&trace)
        .output()
        .expect("report");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("DIAGNOSIS  use-after-free"), "{text}");
    assert!(text.contains("allocated by tid"), "{text}");
}

#[test]
fn double_free_is_diagnosed_with_both_frees() {
    if !bpf_or_skip("double_free_diagnosis") {
        return;
    }
    let df = demo("double-free");
    let trace = tmp().join("df-diag.tmt");
    record_launch(&trace, &[df.to_str().expect("utf8")]);
    let r = report_json(&trace, &[]);
    let d = &r["crash"]["diagnosis"];
    assert_eq!(d["kind"], "double-free", "{d}");
    assert_eq!(d["block"]["size"], 6, "strdup(\"alice\")");
    assert_eq!(first_user_func(&d["free_stack"]), "release_session");
    assert_eq!(first_user_func(&d["access_stack"]), "release_session");
    let line = |s: &Value| {
        s.as_array()
            .expect("stack")
            .iter()
            .find(|f| f["func"] == "release_session")
            .and_then(|f| f["line"].as_u64())
    };
    assert_eq!(
        line(&d["free_stack"]),
        Some(line_of("double_free.c", "\tfree(s->name);"))
    );
    assert_eq!(
        line(&d["access_stack"]),
        Some(line_of("double_free.c", "bug: should free s"))
    );
    // The block came from strdup, which glibc builds without frame
    // pointers: the stack scan past it still finds the program's caller.
    let alloc = funcs(&d["alloc_stack"]);
    assert!(alloc[0].contains("strdup"), "{alloc:?}");
    assert_eq!(
        first_user_func(&d["alloc_stack"]),
        "open_session",
        "{alloc:?}"
    );
    assert!(alloc.iter().any(|f| f == "main"), "{alloc:?}");
    assert!(
        d["summary"]
            .as_str()
            .is_some_and(|s| s.contains("allocated at open_session (double_free.c:")),
        "{d}"
    );
}

#[test]
fn leak_groups_flag_the_leaking_site_only() {
    if !bpf_or_skip("leak_groups") {
        return;
    }
    let leak = demo("leak");
    let trace = tmp().join("leak-groups.tmt");
    let out = record_launch(&trace, &[leak.to_str().expect("utf8"), "300", "200"]);
    assert_eq!(out.status.code(), Some(0));
    let r = report_json(&trace, &[]);
    let leaks = r["leaks"].as_array().expect("leaks");
    let total: u64 = leaks.iter().map(|g| g["bytes"].as_u64().unwrap_or(0)).sum();
    assert_eq!(
        Some(total),
        r["heap"]["live_bytes"].as_u64(),
        "groups add up"
    );
    let suspected: Vec<&Value> = leaks.iter().filter(|g| g["suspected"] == true).collect();
    assert_eq!(suspected.len(), 1, "{leaks:?}");
    let g = suspected[0];
    assert_eq!(first_user_func(&g["stack"]), "remember_request");
    assert_eq!(g["blocks"], 300);
    assert_eq!(g["bytes"], 300 * 64);
    assert_eq!(g["frees"], 0);
    assert!(g["growth_bytes_per_s"].as_f64().is_some_and(|v| v > 0.0));
    assert!(g["site"]
        .as_str()
        .is_some_and(|s| s.starts_with("remember_request (leak.c:")));
}

#[test]
fn filters_and_window_diffs() {
    if !bpf_or_skip("report_filters") {
        return;
    }
    let leak = demo("leak");
    let trace = tmp().join("leak-filter.tmt");
    record_launch(&trace, &[leak.to_str().expect("utf8"), "100", "1000"]);
    let r = report_json(&trace, &["--filter", "kind=free func=handle_request"]);
    let w = r["window"].as_array().expect("window");
    assert_eq!(w.len(), 20);
    assert!(w
        .iter()
        .all(|e| e["kind"] == "free" && e["func"] == "handle_request"));

    // Over the whole run, what was allocated and kept is the leak (and
    // stdout's buffer).
    let r = report_json(&trace, &["--at", "100s", "--window", "100s"]);
    let live = r["window_live"].as_array().expect("window_live");
    let bytes: u64 = live.iter().map(|g| g["bytes"].as_u64().unwrap_or(0)).sum();
    assert_eq!(Some(bytes), r["heap"]["live_bytes"].as_u64());
    assert_eq!(live[0]["blocks"], 100);

    let out = Command::new(bin())
        .args([
            "report",
            trace.to_str().expect("utf8"),
            "--filter",
            "kind=nope",
        ])
        .output()
        .expect("report");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unknown event kind 'nope'"), "{err}");
}
