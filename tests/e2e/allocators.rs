//! Every allocator Debian ships, probed where the kernel does not
//! single-step (tm-tui reads each function's first instructions and moves
//! the probe to the first one the kernel emulates): the program's own
//! calls are counted exactly, with their stacks, linked with glibc,
//! jemalloc, tcmalloc and mimalloc, and linked statically.

use std::path::Path;

use serde_json::Value;

use super::support::*;

/// Known numbers of each call, from one function: 600 mallocs, 100
/// callocs, 100 reallocs (each of a malloc'd block: a realloc, not a new
/// block), 50 posix_memaligns; all freed but 7 of the mallocs.
const WORKLOAD: &str = r#"
#include <stdlib.h>
#include <string.h>

static void *volatile keep[1000];

__attribute__((noinline)) static void work(void)
{
	int n = 0;
	for (int i = 0; i < 600; i++)
		keep[n++] = malloc(100 + i % 50);
	for (int i = 0; i < 100; i++)
		keep[n++] = calloc(3, 40 + i % 8);
	for (int i = 0; i < 100; i++)
		keep[i] = realloc(keep[i], 300 + i);
	for (int i = 0; i < 50; i++) {
		void *p = 0;
		if (posix_memalign(&p, 64, 128 + i) == 0)
			keep[n++] = p;
	}
	/* Free everything but keep[10..16]: 7 blocks of 110..116 bytes. */
	for (int i = 0; i < n; i++)
		if (i < 10 || i > 16)
			free(keep[i]);
}

int main(void)
{
	work();
	return 0;
}
"#;

fn count_in_work(r: &Value, kind: &str) -> usize {
    r["window"]
        .as_array()
        .expect("window")
        .iter()
        .filter(|e| e["kind"] == kind)
        .filter(|e| funcs(&e["stack"]).iter().any(|f| f == "work"))
        .count()
}

fn exact_counts(tag: &str, link: &[&str]) {
    if !bpf_or_skip(tag) {
        return;
    }
    let mut flags = vec!["-g", "-O2", "-fomit-frame-pointer"];
    flags.extend(link);
    let name = format!("alloc_{}", tag.replace(' ', "_"));
    let bin = compile("gcc", &name, "c", WORKLOAD, &flags);
    let trace = tmp().join(format!("{name}.tmt"));
    let out = record_launch(&trace, &[bin.to_str().expect("utf8")]);
    assert_exit(&out, 0);
    let r = report_json(&trace, &["--window", "1h"]);
    assert_no_loss(&r);
    assert_eq!(
        count_in_work(&r, "alloc"),
        750,
        "{tag}: allocations from work()"
    );
    assert_eq!(
        count_in_work(&r, "realloc"),
        100,
        "{tag}: reallocs from work()"
    );
    assert_eq!(count_in_work(&r, "free"), 743, "{tag}: frees from work()");
    // The 7 blocks left: live at the end, allocated in work().
    let live_in_work: u64 = r["leaks"]
        .as_array()
        .expect("leaks")
        .iter()
        .filter(|g| funcs(&g["stack"]).iter().any(|f| f == "work"))
        .map(|g| g["blocks"].as_u64().expect("blocks"))
        .sum();
    assert_eq!(live_in_work, 7, "{tag}: live blocks from work()");
    // Stacks are whole: work is called from main.
    let ev = r["window"]
        .as_array()
        .expect("window")
        .iter()
        .find(|e| e["kind"] == "alloc" && e["size"] == 100)
        .expect("the first malloc");
    let stack = funcs(&ev["stack"]);
    let at = stack.iter().position(|f| f == "work").expect("work");
    assert_eq!(
        stack.get(at + 1).map(String::as_str),
        Some("main"),
        "{tag}: {stack:?}"
    );
}

fn installed(lib: &str) -> Option<&str> {
    let have = Path::new(lib).exists();
    if !have && std::env::var("TM_REQUIRE_BPF").as_deref() == Ok("1") {
        panic!("{lib} is missing (.ci/run installs it)");
    }
    have.then_some(lib)
}

#[test]
fn glibc_counts_exactly() {
    exact_counts("glibc", &[]);
}

#[test]
fn static_glibc_counts_exactly() {
    exact_counts("static", &["-static"]);
}

#[test]
fn jemalloc_counts_exactly() {
    if let Some(lib) = installed("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2") {
        exact_counts("jemalloc", &[lib]);
    }
}

#[test]
fn tcmalloc_counts_exactly() {
    if let Some(lib) = installed("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4") {
        exact_counts("tcmalloc", &[lib]);
    }
}

#[test]
fn mimalloc_counts_exactly() {
    if let Some(lib) = installed("/usr/lib/x86_64-linux-gnu/libmimalloc.so.2") {
        exact_counts("mimalloc", &[lib]);
    }
}
