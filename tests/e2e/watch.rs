//! Watchpoints: the use after free and the overflow that do not crash.
//! The corpus in tests/data/watch (bad-*.c, good-*.c) is built here, run
//! under valgrind (the truth) and recorded with tm-tui: every bad program's
//! bug is a finding of the kind valgrind names, at an offset valgrind
//! names, in the function and line valgrind names; a good program has none.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::support::*;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/watch")
}

fn build(name: &str) -> PathBuf {
    let src = std::fs::read_to_string(corpus().join(format!("{name}.c"))).expect("corpus source");
    compile("gcc", name, "c", &src, &["-g", "-O0", "-pthread", "-w"])
}

/// One of valgrind's heap errors: kind, read or write, offset from the
/// block's start, and the first frame in the program's own source (line).
#[derive(Debug, PartialEq)]
struct VgError {
    kind: &'static str,
    write: bool,
    offset: i64,
    line: Option<u64>,
}

/// valgrind memcheck's Invalid read/write errors on heap blocks.
fn valgrind_errors(bin: &Path, source: &str) -> Vec<VgError> {
    let out = Command::new("valgrind")
        .args(["--run-libc-freeres=no", "--run-cxx-freeres=no"])
        .arg(bin)
        .output()
        .expect("valgrind is installed (.ci/run installs it)");
    let log = String::from_utf8_lossy(&out.stderr);
    let num = |s: &str, after: &str| -> Option<i64> {
        let rest = s.split(after).nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    };
    let mut errs = Vec::new();
    let mut cur: Option<(bool, Option<u64>)> = None;
    for l in log.lines() {
        let l = l.split_once("== ").map_or(l, |(_, r)| r);
        if l.starts_with("Invalid read") || l.starts_with("Invalid write") {
            cur = Some((l.starts_with("Invalid write"), None));
        } else if let Some((write, line)) = cur.as_mut() {
            // "   at 0x...: main (bad-x.c:12)"
            if line.is_none() && l.contains(&format!("({source}:")) {
                *line = l
                    .rsplit(':')
                    .next()
                    .and_then(|n| n.trim_end_matches(')').parse().ok());
            }
            if l.contains("bytes inside") || l.contains("bytes after") || l.contains("bytes before")
            {
                let n = num(l, " is ").unwrap_or(0);
                let size = num(l, "block of size ").unwrap_or(0);
                let offset = if l.contains("bytes inside") {
                    n
                } else if l.contains("bytes after") {
                    size + n
                } else {
                    -n
                };
                errs.push(VgError {
                    kind: if l.contains("free'd") {
                        "use-after-free"
                    } else {
                        "heap-buffer-overflow"
                    },
                    write: *write,
                    offset,
                    line: *line,
                });
                cur = None;
            }
        }
    }
    errs
}

fn record(bin: &Path, name: &str) -> Value {
    let trace = tmp().join(format!("watch-{name}.tmt"));
    let out = record_launch(&trace, &[bin.to_str().expect("utf-8 path")]);
    assert_exit(&out, 0);
    report_json(&trace, &[])
}

/// The line of the first frame of `stack` in file `source`.
fn line_in(stack: &Value, source: &str) -> Option<u64> {
    stack
        .as_array()?
        .iter()
        .find(|f| f["file"] == source)
        .and_then(|f| f["line"].as_u64())
}

fn names(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("corpus")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with(prefix) && n.ends_with(".c"))
        .map(|n| n.trim_end_matches(".c").to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn each_bug_of_the_corpus_is_the_finding_valgrind_reports() {
    if !bpf_or_skip("each_bug_of_the_corpus_is_the_finding_valgrind_reports") {
        return;
    }
    let bad = names(&corpus(), "bad-");
    assert!(bad.len() >= 10, "corpus: {bad:?}");
    let mut failures = Vec::new();
    for name in &bad {
        let bin = build(name);
        let source = format!("{name}.c");
        let truth = valgrind_errors(&bin, &source);
        assert!(!truth.is_empty(), "{name}: valgrind reports nothing");
        let r = record(&bin, name);
        assert_no_loss(&r);
        let findings = r["findings"].as_array().expect("findings");
        let Some(f) = findings.first() else {
            failures.push(format!("{name}: no finding (valgrind: {truth:?})"));
            continue;
        };
        // The finding is one of valgrind's errors: kind, access and an
        // offset within the bytes the watchpoint covered.
        let kind = f["kind"].as_str().unwrap_or("");
        let offset = f["offset"].as_i64().unwrap_or(i64::MIN);
        let write = f["summary"].as_str().unwrap_or("").contains(": WRITE");
        let line = line_in(&f["access_stack"], &source);
        let matched = truth.iter().any(|t| {
            t.kind == kind
                && t.write == write
                && (offset..offset + 8).contains(&t.offset)
                && t.line == line
        });
        if !matched {
            failures.push(format!(
                "{name}: finding {kind} write={write} offset {offset} line {line:?} is none of valgrind's {truth:?}: {}",
                f["summary"]
            ));
        }
        // The block's allocation (and free) are named, in the program.
        if line_in(&f["alloc_stack"], &source).is_none() {
            failures.push(format!(
                "{name}: allocation not in {source}: {}",
                f["alloc_stack"]
            ));
        }
        if kind == "use-after-free" && line_in(&f["free_stack"], &source).is_none() {
            failures.push(format!("{name}: free not in {source}: {}", f["free_stack"]));
        }
        assert_eq!(
            findings.len(),
            1,
            "{name}: one bug, one finding: {findings:?}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn correct_programs_have_no_finding() {
    if !bpf_or_skip("correct_programs_have_no_finding") {
        return;
    }
    for name in names(&corpus(), "good-") {
        let bin = build(&name);
        assert!(
            valgrind_errors(&bin, &format!("{name}.c")).is_empty(),
            "{name}: valgrind found errors"
        );
        for rate in ["100", "100000"] {
            let trace = tmp().join(format!("watch-{name}-{rate}.tmt"));
            let out = record_with(
                &trace,
                &["--watch-rate", rate],
                &[bin.to_str().expect("utf-8 path")],
                &[],
            );
            assert_exit(&out, 0);
            let r = report_json(&trace, &[]);
            let findings = r["findings"].as_array().expect("findings");
            assert!(
                findings.is_empty(),
                "{name} at --watch-rate {rate}: {}",
                findings
                    .iter()
                    .map(|f| f["summary"].to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// A program that handles SIGURG never sees the tracer's (it stops the
/// thread to arm and is suppressed); `--watch off` records no hit.
#[test]
fn the_program_never_sees_the_arming_signal_and_off_is_off() {
    if !bpf_or_skip("the_program_never_sees_the_arming_signal_and_off_is_off") {
        return;
    }
    let src = r#"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static volatile sig_atomic_t urgs;
static void on_urg(int s) { (void)s; urgs++; }
int main(void) {
    signal(SIGURG, on_urg);
    for (int i = 0; i < 20000; i++) {
        char *p = malloc(32 + i % 200);
        memset(p, 1, 32);
        free(p);
    }
    volatile char *q = malloc(64);
    free((void *)q);
    char c = q[0]; /* BUG: read after free */
    (void)c;
    printf("urgs %d\n", (int)urgs);
    return urgs == 0 ? 0 : 3;
}
"#;
    let bin = compile("gcc", "watch-sigurg", "c", src, &["-g", "-O0", "-w"]);
    let trace = tmp().join("watch-sigurg.tmt");
    // Every free is a claim: the most arming stops a program can get.
    let out = record_with(
        &trace,
        &["--watch-rate", "100000"],
        &[bin.to_str().expect("utf-8 path")],
        &[],
    );
    assert_exit(&out, 0);
    let r = report_json(&trace, &[]);
    assert_eq!(
        r["findings"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r["findings"]
    );
    // A thread that blocks every signal (as servers' workers do) is not
    // signalled at all: nothing is left pending for it to find.
    let blocked = r#"
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
static int pending;
static void *work(void *a) {
    (void)a;
    sigset_t s;
    sigfillset(&s);
    pthread_sigmask(SIG_BLOCK, &s, 0);
    for (int i = 0; i < 20000; i++) {
        char *p = malloc(64);
        p[0] = 1;
        free(p);
    }
    sigpending(&s);
    pending = sigismember(&s, SIGURG);
    return 0;
}
int main(void) {
    pthread_t t;
    pthread_create(&t, 0, work, 0);
    pthread_join(t, 0);
    return pending ? 3 : 0;
}
"#;
    let bin2 = compile(
        "gcc",
        "watch-blocked",
        "c",
        blocked,
        &["-g", "-O0", "-pthread", "-w"],
    );
    let out = record_with(
        &tmp().join("watch-blocked.tmt"),
        &["--watch-rate", "100000"],
        &[bin2.to_str().expect("utf-8 path")],
        &[],
    );
    assert_exit(&out, 0);
    let off = tmp().join("watch-sigurg-off.tmt");
    let out = record_with(
        &off,
        &["--watch", "off"],
        &[bin.to_str().expect("utf-8 path")],
        &[],
    );
    assert_exit(&out, 0);
    let r = report_json(&off, &[]);
    assert_eq!(r["findings"].as_array().map(Vec::len), Some(0));
    assert_eq!(r["events"]["by_kind"]["watch"].as_u64().unwrap_or(0), 0);
}

/// A crash on a block a watchpoint saw misused before says so: the read
/// after free is a finding, and the double free that aborts refers to it.
#[test]
fn a_crash_on_a_watched_block_refers_to_its_finding() {
    if !bpf_or_skip("a_crash_on_a_watched_block_refers_to_its_finding") {
        return;
    }
    let src = r#"
#include <stdlib.h>
int main(void) {
    char *p = malloc(48);
    p[0] = 'a';
    free(p);
    volatile char c = p[0]; /* BUG: read after free */
    (void)c;
    free(p); /* BUG: double free: glibc aborts */
    return 0;
}
"#;
    let bin = compile("gcc", "watch-then-crash", "c", src, &["-g", "-O0", "-w"]);
    let trace = tmp().join("watch-then-crash.tmt");
    let out = record_launch(&trace, &[bin.to_str().expect("utf-8 path")]);
    assert_exit(&out, 134);
    let r = report_json(&trace, &[]);
    let findings = r["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["kind"], "use-after-free");
    let d = &r["crash"]["diagnosis"];
    assert_eq!(d["kind"], "double-free", "{d}");
    assert_eq!(d["block"]["addr"], findings[0]["block"]["addr"]);
    let notes = d["notes"].to_string();
    assert!(
        notes.contains("a watchpoint saw this block misused"),
        "{notes}"
    );
}

/// `--watch-var` records every write to a global with its stack and the
/// values, as gdb's `watch` (and with `:rw` its reads); `--watch-addr`
/// refuses an address not aligned to its length.
#[test]
fn an_asked_variable_records_every_write() {
    if !bpf_or_skip("an_asked_variable_records_every_write") {
        return;
    }
    let src = r#"
#include <stdio.h>
long hits_total;
int config_level = 3;
static void bump(int i) { hits_total += i; } /* WRITE */
int main(void) {
    for (int i = 1; i <= 5; i++)
        bump(i);
    if (config_level > 2) /* READ */
        config_level = 1;
    printf("%ld %d\n", hits_total, config_level);
    return 0;
}
"#;
    let bin = compile("gcc", "watch-var", "c", src, &["-g", "-O0", "-w"]);
    let trace = tmp().join("watch-var.tmt");
    let out = record_with(
        &trace,
        &[
            "--watch-var",
            "hits_total",
            "--watch-var",
            "config_level:rw",
        ],
        &[bin.to_str().expect("utf-8 path")],
        &[],
    );
    assert_exit(&out, 0);
    let r = report_json(&trace, &["--filter", "kind=watch", "--window", "100s"]);
    let rows: Vec<&Value> = r["window"]
        .as_array()
        .expect("window")
        .iter()
        .filter(|e| e["kind"] == "watch")
        .collect();
    let in_bump = rows
        .iter()
        .filter(|e| e["line"].as_u64() == Some(line(src, "WRITE")))
        .count();
    assert_eq!(in_bump, 5, "one row per write of hits_total: {rows:?}");
    let reads = rows
        .iter()
        .filter(|e| e["line"].as_u64() == Some(line(src, "READ")))
        .count();
    assert!(reads >= 1, "the read of config_level: {rows:?}");
    assert_eq!(r["findings"].as_array().map(Vec::len), Some(0));
    let out = record_with(
        &tmp().join("watch-addr-bad.tmt"),
        &["--watch-addr", "0x1001:8"],
        &[bin.to_str().expect("utf-8 path")],
        &[],
    );
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not aligned"), "{err}");
}
