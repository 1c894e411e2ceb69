//! Leak kinds (definitely, indirectly, possibly lost, still reachable) of a
//! launched program's blocks, scanned at its exit, against valgrind's
//! memcheck on the same binary: its LEAK SUMMARY and its loss records.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use super::support::*;

/// One block of each kind, and the cases that trip a native scanner.
const SOURCE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node { struct node *child; char pad[40]; };

void *reachable;          /* a global start pointer */
char *interior;           /* a global pointer into the middle of a block */
struct node *ring;        /* a start pointer to a list of two */

__attribute__((noinline)) static void make(void) {
    void *p = malloc(100);                          /* LOST_OVERWRITTEN */
    memset(p, 1, 100);
    p = malloc(48);                                 /* LOST_SECOND */
    memset(p, 2, 48);
    p = NULL;
    struct node *parent = malloc(sizeof *parent);   /* LOST_PARENT */
    parent->child = malloc(sizeof *parent->child);  /* INDIRECT_CHILD */
    parent->child->child = malloc(sizeof *parent);  /* INDIRECT_GRANDCHILD */
    parent->child->child->child = NULL;
    parent = NULL;
    reachable = malloc(200);                        /* REACHABLE_GLOBAL */
    memset(reachable, 0, 200);
    char *q = malloc(64);                           /* POSSIBLE_INTERIOR */
    memset(q, 3, 64);
    interior = q + 24;
    q = NULL;
    /* A block reached only from a possibly lost one is possibly lost. */
    ((struct node *)(interior - 24))->child = malloc(16); /* POSSIBLE_CHILD */
    ring = malloc(sizeof *ring);                    /* REACHABLE_RING */
    ring->child = malloc(sizeof *ring);             /* REACHABLE_RING_CHILD */
    ring->child->child = ring;
}

/* Old frames above the stack pointer at exit keep whatever make() left
   there, natively and under valgrind, but what valgrind's own malloc
   leaves differs from glibc's: clear them, as valgrind's manual advises
   for exact results. */
__attribute__((noinline)) static void scrub(void) {
    volatile char buf[16384];
    memset((char *)buf, 0, sizeof buf);
}

int main(void) {
    make();
    scrub();
    printf("%p\n", reachable);     /* stdio's buffer: still reachable */
    /* The last block before glibc's top chunk, filling its chunk: the
       main arena's top pointer (in libc's data) points into its last word. */
    void *last = malloc(24);                        /* LOST_BEFORE_TOP */
    memset(last, 4, 24);
    last = NULL;
    scrub();
    return 0;
}
"#;

/// (kind, blocks, bytes) per kind, from valgrind's LEAK SUMMARY.
fn summary(err: &str) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for kind in [
        "definitely lost",
        "indirectly lost",
        "possibly lost",
        "still reachable",
    ] {
        let line = err
            .lines()
            .skip_while(|l| !l.contains("LEAK SUMMARY"))
            .find(|l| l.contains(&format!("{kind}:")))
            .unwrap_or_else(|| panic!("no '{kind}' in valgrind's summary:\n{err}"));
        let n = numbers(line.split_once(':').map_or("", |x| x.1));
        out.insert(kind.replace(' ', "_"), (n[1], n[0]));
    }
    out
}

fn numbers(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit() && c != ',')
        .filter_map(|w| w.replace(',', "").parse().ok())
        .collect()
}

/// valgrind's loss records by (source line of the allocation in the test
/// program, kind): (blocks, bytes). "80 (48 direct, 32 indirect) bytes in
/// 1 blocks are definitely lost": the direct bytes are the block's own.
fn loss_records(err: &str, file: &str) -> BTreeMap<(u64, String), (u64, u64)> {
    let lines: Vec<&str> = err.lines().collect();
    let mut out = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        let Some((head, rest)) = l.split_once(" blocks are ") else {
            continue;
        };
        let Some(kind) = [
            "definitely lost",
            "indirectly lost",
            "possibly lost",
            "still reachable",
        ]
        .into_iter()
        .find(|k| rest.starts_with(k)) else {
            continue;
        };
        let head = head.split("==").last().unwrap_or(head);
        let n = numbers(head);
        // bytes [(direct, indirect)] in blocks
        let (bytes, blocks) = if head.contains("direct") {
            (n[1], n[3])
        } else {
            (n[0], n[1])
        };
        let line = lines[i + 1..]
            .iter()
            .take_while(|l| l.contains(" at ") || l.contains(" by "))
            .find_map(|l| {
                let (_, loc) = l.rsplit_once(&format!("({file}:"))?;
                loc.trim_end_matches(')').parse::<u64>().ok()
            })
            .unwrap_or_else(|| panic!("loss record without a frame in {file}: {l}"));
        let e = out.entry((line, kind.replace(' ', "_"))).or_insert((0, 0));
        e.0 += blocks;
        e.1 += bytes;
    }
    out
}

/// tm-tui's leak groups the same way: by the first frame in `file`.
fn tm_records(r: &Value, file: &str) -> BTreeMap<(u64, String), (u64, u64)> {
    let mut out = BTreeMap::new();
    for leak in r["leaks"].as_array().expect("leaks") {
        let line = leak["stack"]
            .as_array()
            .expect("stack")
            .iter()
            .find(|f| f["file"].as_str().is_some_and(|p| p.ends_with(file)))
            .and_then(|f| f["line"].as_u64())
            .unwrap_or_else(|| panic!("leak without a frame in {file}: {leak}"));
        for (kind, t) in leak["kinds"].as_object().expect("kinds") {
            let e = out.entry((line, kind.clone())).or_insert((0, 0));
            e.0 += t["blocks"].as_u64().expect("blocks");
            e.1 += t["bytes"].as_u64().expect("bytes");
        }
    }
    out
}

fn kinds_equal_valgrind(opt: &str) {
    let name = format!("leakkinds{opt}");
    let prog = compile("cc", &name, "c", SOURCE, &["-g", opt]);
    let cmd = [prog.to_str().expect("utf8")];
    let trace = tmp().join(format!("{name}.tmt"));
    let out = record_launch(&trace, &cmd);
    assert_exit(&out, 0);
    let r = report_json(&trace, &[]);
    assert_no_loss(&r);
    let s = &r["leak_summary"];
    assert!(s.is_object(), "no leak scan in the trace: {r}");
    assert_eq!(s["trigger"], "exit");
    assert_eq!(s["caveats"], serde_json::json!([]), "caveats: {s}");

    let vg = Command::new("valgrind")
        .args([
            "--leak-check=full",
            "--show-leak-kinds=all",
            "--run-libc-freeres=no",
            "--run-cxx-freeres=no",
        ])
        .args(cmd)
        .output()
        .expect("valgrind is installed (.ci/run installs it)");
    let err = String::from_utf8_lossy(&vg.stderr);
    let want = summary(&err);
    for (kind, (blocks, bytes)) in &want {
        assert_eq!(
            (s[kind]["blocks"].as_u64(), s[kind]["bytes"].as_u64()),
            (Some(*blocks), Some(*bytes)),
            "{opt}: {kind} (blocks, bytes) vs valgrind's\n{err}"
        );
    }
    // Every kind occurs, so the comparison above compares something.
    assert!(want.values().all(|&(b, _)| b > 0), "{want:?}");

    let file = format!("{name}.c");
    assert_eq!(
        tm_records(&r, &file),
        loss_records(&err, &file),
        "{opt}: by allocation line and kind, tm-tui (left) vs valgrind (right)"
    );

    // The text report of the file says the same.
    let text = Command::new(bin())
        .arg("report")
        .arg(&trace)
        .output()
        .expect("run tm-tui report");
    let text = String::from_utf8_lossy(&text.stdout);
    let (blocks, bytes) = want["definitely_lost"];
    assert!(
        text.contains(&format!(
            "definitely lost: {bytes} bytes in {blocks} blocks"
        )),
        "{text}"
    );
}

#[test]
fn leak_kinds_equal_valgrind_at_o0() {
    if !bpf_or_skip("leak_kinds_o0") {
        return;
    }
    kinds_equal_valgrind("-O0");
}

#[test]
fn leak_kinds_equal_valgrind_at_o2() {
    if !bpf_or_skip("leak_kinds_o2") {
        return;
    }
    kinds_equal_valgrind("-O2");
}

/// Blocks of each kind made a second after the start (once tm-tui is
/// attached); with an argument it then waits for ever, without one it
/// exits (valgrind's run).
const ATTACH_SOURCE: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
struct node { struct node *child; char pad[40]; };
void *reachable;
char *interior;
__attribute__((noinline)) static void make(void) {
    void *p = malloc(100);
    memset(p, 1, 100);
    p = NULL;
    struct node *parent = malloc(sizeof *parent);
    parent->child = malloc(sizeof *parent->child);
    parent->child->child = NULL;
    parent = NULL;
    reachable = malloc(200);
    memset(reachable, 0, 200);
    char *q = malloc(64);
    memset(q, 3, 64);
    interior = q + 24;
    q = NULL;
}
__attribute__((noinline)) static void scrub(void) {
    volatile char buf[16384];
    memset((char *)buf, 0, sizeof buf);
}
int main(int argc, char **argv) {
    if (argc > 1)
        sleep(1);
    make();
    scrub();
    if (argc > 1)
        for (;;)
            pause();
    return 0;
}
"#;

#[test]
fn attached_leak_check_pauses_scans_and_resumes() {
    if !bpf_or_skip("attached_leak_check") {
        return;
    }
    let prog = compile("cc", "leakattach", "c", ATTACH_SOURCE, &["-g", "-O0"]);
    let mut target = Command::new(&prog)
        .arg("wait")
        .spawn()
        .expect("start the target");
    let pid = target.id();
    let trace = tmp().join("leakattach.tmt");
    let rec = Command::new(bin())
        .args(["record", "-o"])
        .arg(&trace)
        .args(["--leak-check", &pid.to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tm-tui record");
    // The target makes its blocks 1 s after its start.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(rec.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT tm-tui");
    let out = rec.wait_with_output().expect("tm-tui record ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_exit(&out, 0);
    // Let go, running (sleeping in pause()), not stopped.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("target alive");
    let state = stat.rsplit_once(") ").map(|x| &x.1[..1]);
    let _ = target.kill();
    let _ = target.wait();
    assert_eq!(state, Some("S"), "target state after the scan: {stat}");
    let paused = stderr
        .lines()
        .find(|l| l.contains("was paused"))
        .unwrap_or_else(|| panic!("no pause reported: {stderr}"));
    eprintln!("{paused}");

    let r = report_json(&trace, &[]);
    let s = &r["leak_summary"];
    assert_eq!(s["trigger"], "paused", "{r}");
    assert!(s["paused_ns"].as_u64().unwrap_or(0) > 0);
    let vg = Command::new("valgrind")
        .args([
            "--leak-check=full",
            "--show-leak-kinds=all",
            "--run-libc-freeres=no",
            "--run-cxx-freeres=no",
        ])
        .arg(&prog)
        .output()
        .expect("valgrind is installed (.ci/run installs it)");
    let err = String::from_utf8_lossy(&vg.stderr);
    let want = summary(&err);
    assert!(want.values().all(|&(b, _)| b > 0), "{want:?}");
    for (kind, (blocks, bytes)) in &want {
        assert_eq!(
            (s[kind]["blocks"].as_u64(), s[kind]["bytes"].as_u64()),
            (Some(*blocks), Some(*bytes)),
            "attached: {kind} (blocks, bytes) vs valgrind's\n{err}"
        );
    }
}

/// A thread blocked for ever holds a block only in its stack when the
/// program exits; glibc's thread descriptor keeps an interior pointer to
/// the thread's TLS block (valgrind's classic "possibly lost" 272 bytes).
const THREAD_SOURCE: &str = r#"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static pthread_barrier_t b;
static void *run(void *a) {
    (void)a;
    char *volatile p = malloc(77);
    memset(p, 0, 77);
    char *volatile lost = malloc(55);
    lost = NULL;
    pthread_barrier_wait(&b);
    for (;;)
        pause();
    return p;
}
int main(void) {
    pthread_t t;
    pthread_barrier_init(&b, NULL, 2);
    pthread_create(&t, NULL, run, NULL);
    pthread_barrier_wait(&b);
    usleep(100000);
    return 0;
}
"#;

#[test]
fn thread_stacks_are_roots_as_for_valgrind() {
    if !bpf_or_skip("leak_kinds_threads") {
        return;
    }
    let prog = compile(
        "cc",
        "leakthreads",
        "c",
        THREAD_SOURCE,
        &["-g", "-O0", "-pthread"],
    );
    let cmd = [prog.to_str().expect("utf8")];
    let trace = tmp().join("leakthreads.tmt");
    assert_exit(&record_launch(&trace, &cmd), 0);
    let r = report_json(&trace, &[]);
    let s = &r["leak_summary"];
    let vg = Command::new("valgrind")
        .args([
            "--leak-check=full",
            "--run-libc-freeres=no",
            "--run-cxx-freeres=no",
        ])
        .args(cmd)
        .output()
        .expect("valgrind is installed (.ci/run installs it)");
    let err = String::from_utf8_lossy(&vg.stderr);
    let want = summary(&err);
    assert!(want["still_reachable"].0 > 0 && want["definitely_lost"].0 > 0);
    for (kind, (blocks, bytes)) in &want {
        assert_eq!(
            (s[kind]["blocks"].as_u64(), s[kind]["bytes"].as_u64()),
            (Some(*blocks), Some(*bytes)),
            "threads: {kind} (blocks, bytes) vs valgrind's\n{err}"
        );
    }
}
