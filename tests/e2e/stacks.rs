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

/// A -O2 program without frame pointers: allocation sites in its own
/// code, through glibc (strdup, stdio's buffer), in a recursion and in
/// a tail call, so every kind of frame a CFI walk meets is there.
const NOFP: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
__attribute__((noinline)) char *open_order(int n) { char *p = malloc(32 + n); memset(p, n, 32 + n); return p; }
__attribute__((noinline)) char *settle_batch(int n) { char *p = open_order(n); p[3] ^= 1; return p; }
__attribute__((noinline)) long run_ledger(int k) {
	long s = 0;
	for (int i = 0; i < k; i++) { char *p = settle_batch(i); s += p[5]; free(p); }
	return s;
}
char *volatile sink;
volatile long depth_sum;
__attribute__((noinline)) long deep(int d) {
	if (d == 0) { char *p = malloc(100); sink = p; long r = p[0] = 1; free(p); return r; }
	long r = deep(d - 1);
	depth_sum += r; /* after the call: neither a tail call nor a loop */
	return r + d;
}
__attribute__((noinline)) long nightly_job(int k) {
	long r = run_ledger(k) + deep(4);
	char *q = strdup("ledger");
	r += q[0];
	free(q);
	return r;
}
int main(int argc, char **argv) { printf("%ld\n", nightly_job(argc + 2)); return 0; }
"#;

/// An inlined frame, in both lists: gdb prints no address for it (it
/// puts the address on a group's innermost), tm-tui marks it `inlined`
/// (and puts it before the machine frame): compared by count.
static INLINED: (String, u64) = (String::new(), 0);

/// gdb's backtraces at each call of malloc, from frame #1 to main, as
/// (module path, file offset of the call) — what tm-tui's frames give.
fn gdb_malloc_stacks(bin: &str) -> Vec<Vec<(String, u64)>> {
    // At malloc's first instruction (`*malloc`: `malloc` alone also
    // stops inside the callers it was inlined into).
    let script = tmp().join("malloc-bt.gdb");
    std::fs::write(
        &script,
        "break main\nrun\ninfo proc mappings\nbreak *malloc\ncommands\nsilent\nbt\ncontinue\nend\ncontinue\n",
    )
    .expect("write gdb script");
    let out = std::process::Command::new("gdb")
        .args(["-nx", "-batch", "-x"])
        .arg(&script)
        .arg(bin)
        .output()
        .expect("run gdb (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    // Mappings: start, end, file offset, path.
    let mut maps = Vec::new();
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() >= 6 && w[0].starts_with("0x") && w[5].starts_with('/') {
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
            if let (Some(a), Some(b), Some(o)) = (hex(w[0]), hex(w[1]), hex(w[3])) {
                maps.push((a, b, o, w[5].to_string()));
            }
        }
    }
    assert!(!maps.is_empty(), "no mappings from gdb:\n{text}");
    let mut stacks = Vec::new();
    let mut cur: Option<Vec<(String, u64)>> = None;
    for l in text.lines() {
        let Some(rest) = l.strip_prefix('#') else {
            continue;
        };
        let (n, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if n == "0" {
            stacks.extend(cur.take());
            cur = Some(Vec::new());
            continue;
        }
        let Some(frames) = cur.as_mut() else { continue };
        let addr = rest.split_whitespace().next().unwrap_or("");
        let Some(addr) = addr
            .strip_prefix("0x")
            .and_then(|a| u64::from_str_radix(a, 16).ok())
        else {
            frames.push(INLINED.clone());
            continue;
        };
        let (start, _, off, path) = maps
            .iter()
            .find(|m| m.0 <= addr && addr < m.1)
            .unwrap_or_else(|| panic!("{addr:#x} in no mapping"));
        frames.push((path.clone(), addr - 1 - start + off));
    }
    stacks.extend(cur.take());
    stacks
}

#[test]
fn allocation_stacks_without_frame_pointers_equal_gdbs() {
    if !bpf_or_skip("stacks_equal_gdb") {
        return;
    }
    let bin = compile(
        "gcc",
        "nofp_gdb",
        "c",
        NOFP,
        &["-g", "-O2", "-fomit-frame-pointer"],
    );
    let bin = bin.to_str().expect("utf8");
    let gdb = gdb_malloc_stacks(bin);
    // open_order ×3, the recursion, strdup, printf's buffer.
    assert!(gdb.len() >= 6, "gdb saw {} mallocs: {gdb:?}", gdb.len());

    let trace = tmp().join("nofp_gdb.tmt");
    let out = record_launch(&trace, &[bin]);
    assert_eq!(out.status.code(), Some(0));
    let r = report_json(&trace, &[]);
    assert_no_loss(&r);
    let ours: Vec<Vec<(String, u64)>> = r["window"]
        .as_array()
        .expect("window")
        .iter()
        .filter(|e| e["kind"] == "alloc")
        .map(|e| {
            e["stack"]
                .as_array()
                .expect("every allocation has a stack")
                .iter()
                .map(|f| {
                    if f["inlined"] == true {
                        return INLINED.clone();
                    }
                    let off = f["offset"]
                        .as_str()
                        .expect("offset")
                        .trim_start_matches("0x");
                    (
                        f["module"].as_str().expect("module").to_string(),
                        u64::from_str_radix(off, 16).expect("hex offset"),
                    )
                })
                .collect()
        })
        .collect();
    assert_eq!(ours.len(), gdb.len(), "ours {ours:#x?}\ngdb {gdb:#x?}");
    for (i, (o, g)) in ours.iter().zip(&gdb).enumerate() {
        // Machine frames in order, up to main; as many inlined ones.
        let machine = |v: &[(String, u64)]| -> Vec<(String, u64)> {
            v.iter().filter(|f| **f != INLINED).cloned().collect()
        };
        let inlined = |v: &[(String, u64)]| v.iter().filter(|f| **f == INLINED).count();
        let (om, gm) = (machine(o), machine(g));
        // gdb stops at main; the walk goes on to _start, complete.
        assert!(
            om.len() > gm.len() && om[..gm.len()] == gm[..],
            "allocation {i}: ours {o:#x?}\ngdb {g:#x?}"
        );
        let main_at = o.iter().position(|f| *f == gm[gm.len() - 1]).expect("main");
        assert_eq!(
            inlined(&o[..=main_at]),
            inlined(g),
            "inlined frames of allocation {i}: ours {o:#x?}\ngdb {g:#x?}"
        );
    }
    // The recursion is there frame by frame: deep ×5.
    let funcs: Vec<Vec<String>> = r["window"]
        .as_array()
        .expect("window")
        .iter()
        .filter(|e| e["kind"] == "alloc" && e["size"] == 100)
        .map(|e| funcs(&e["stack"]))
        .collect();
    assert_eq!(funcs.len(), 1);
    assert_eq!(
        funcs[0].iter().filter(|f| *f == "deep").count(),
        5,
        "{funcs:?}"
    );
}

/// A function without CFI (hand-written assembly, no .cfi directives) in
/// a module that has CFI for everything else.
const NOINFO: &str = r#"
#include <stdio.h>
#include <stdlib.h>
void *noinfo_alloc(void);
__asm__(".text\n.globl noinfo_alloc\nnoinfo_alloc:\n"
        "\tsub $8, %rsp\n\tmov $77, %edi\n\tcall malloc@PLT\n\tadd $8, %rsp\n\tret\n");
int main(void) { void *p = noinfo_alloc(); printf("%p\n", p); return 0; }
"#;

#[test]
fn a_stack_without_unwind_info_ends_marked_truncated_not_invented() {
    if !bpf_or_skip("stack_truncated") {
        return;
    }
    let bin = compile(
        "gcc",
        "noinfo",
        "c",
        NOINFO,
        &["-g", "-O2", "-fomit-frame-pointer"],
    );
    let trace = tmp().join("noinfo.tmt");
    let out = record_launch(&trace, &[bin.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(0));
    let r = report_json(&trace, &[]);
    let ev = r["window"]
        .as_array()
        .expect("window")
        .iter()
        .find(|e| e["kind"] == "alloc" && e["size"] == 77)
        .expect("the 77-byte allocation");
    let stack = ev["stack"].as_array().expect("stack");
    // Frame 0 (the caller of malloc, from the entry rule) is certain;
    // past it there is no rule: nothing more, and said so.
    assert_eq!(stack.len(), 1, "{stack:#?}");
    assert_eq!(stack[0]["func"], "noinfo_alloc");
    let why = stack[0]["truncated_after"]
        .as_str()
        .expect("marked truncated");
    assert!(
        why.starts_with("stack truncated: no unwind info for"),
        "{why}"
    );
    assert!(why.contains("noinfo"), "{why}");
    // Complete stacks carry no marker.
    let printf_buf = r["window"]
        .as_array()
        .expect("window")
        .iter()
        .find(|e| e["kind"] == "alloc" && e["size"] == 1024 || e["size"] == 4096)
        .expect("stdout's buffer");
    let last = printf_buf["stack"]
        .as_array()
        .expect("stack")
        .last()
        .cloned();
    assert!(
        last.is_some_and(|f| f.get("truncated_after").is_none()),
        "{printf_buf}"
    );
}
