//! Allocation stacks through libraries built without frame pointers:
//! libstdc++'s operator new (leaves %rbp alone, hides its caller's frame)
//! and glibc's strdup (reuses %rbp: the walk breaks) — checked in
//! diagnosis.rs on the double-free demo.

use serde_json::Value;

use super::support::*;

const CPP: &str = r#"
#include <cstdio>
struct Conn { char buf[64]; };
__attribute__((noinline)) Conn *make_conn() { return new Conn(); } // alloc site
int main() { Conn *c = make_conn(); std::printf("%p\n", (void *)c); return 0; }
"#;

#[test]
fn operator_new_is_attributed_to_its_caller() {
    if !bpf_or_skip("operator_new_caller") {
        return;
    }
    let bin = compile(
        "g++",
        "cpp_new",
        "cc",
        CPP,
        &["-g", "-O0", "-fno-omit-frame-pointer"],
    );
    let trace = tmp().join("cpp_new.tmt");
    let out = record_launch(&trace, &[bin.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(0));
    let r = report_json(&trace, &[]);
    let leaks = r["leaks"].as_array().expect("leaks");
    let conn = leaks
        .iter()
        .find(|g| g["bytes"] == 64)
        .unwrap_or_else(|| panic!("no 64-byte group: {leaks:?}"));
    let frames: Vec<&Value> = conn["stack"].as_array().expect("stack").iter().collect();
    let funcs: Vec<&str> = frames.iter().filter_map(|f| f["func"].as_str()).collect();
    assert!(funcs[0].starts_with("operator new"), "{funcs:?}");
    assert!(funcs[1].starts_with("make_conn"), "{funcs:?}");
    assert_eq!(
        frames[1]["line"].as_u64(),
        Some(line_of_text(CPP, "// alloc site")),
        "{frames:?}"
    );
    assert!(funcs.contains(&"main"), "{funcs:?}");
    assert!(
        conn["site"]
            .as_str()
            .is_some_and(|s| s.starts_with("make_conn() (cpp_new.cc:")),
        "{conn}"
    );
}

fn line_of_text(text: &str, marker: &str) -> u64 {
    text.lines()
        .position(|l| l.contains(marker))
        .map(|i| i as u64 + 1)
        .expect("marker in source")
}
