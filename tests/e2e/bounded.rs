//! Bounded recordings (`record --max-size`, `--keep`): a directory of
//! segments, the oldest deleted whole; what is held reads with the heap
//! exact (the blocks live at its start carried in), equal to valgrind's.

use std::process::Command;

use super::support::*;

/// 64 blocks live all along, then `n` malloc/free pairs, then a leak.
const CHURN: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static void *keep[64];
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 400000;
    long pause_every = argc > 2 ? atol(argv[2]) : 0;
    for (int i = 0; i < 64; i++)
        keep[i] = malloc(100 + i);
    for (long i = 0; i < n; i++) {
        void *p = malloc(32 + i % 64);
        free(p);
        if (pause_every && i % pause_every == 0)
            usleep(1000);
    }
    void *leak = malloc(777);
    (void)leak;
    printf("done\n");
    return 0;
}
"#;

fn dir_bytes(dir: &std::path::Path) -> (u64, usize) {
    let mut total = 0;
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("segments directory") {
        let e = e.expect("entry");
        total += e.metadata().expect("metadata").len();
        n += 1;
    }
    (total, n)
}

#[test]
fn max_size_drops_whole_segments_and_keeps_the_heap_exact() {
    if !bpf_or_skip("bounded_max_size") {
        return;
    }
    let prog = compile("cc", "churn", "c", CHURN, &["-g", "-O0"]);
    let prog = prog.to_str().expect("utf8");
    let want = valgrind(&[prog, "400000"]);
    let dir = tmp().join("churn-ring");
    let _ = std::fs::remove_dir_all(&dir);
    let out = record_with(&dir, &["--max-size", "8MiB"], &[prog, "400000"], &[]);
    assert_exit(&out, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("oldest segment(s) dropped"), "{err}");
    let (bytes, files) = dir_bytes(&dir);
    assert!(bytes <= 8 << 20, "{bytes} bytes held in {files} segments");
    assert!((2..=9).contains(&files), "{files} segments");

    let r = report_json(&dir, &[]);
    assert_no_loss(&r);
    let seg = &r["retention"]["segments"];
    assert!(seg["dropped"].as_u64().unwrap_or(0) > 0, "{seg}");
    assert_eq!(seg["held"].as_u64(), Some(files as u64), "{seg}");
    // The 64 blocks live all along (and stdio's) come from before the
    // window; the heap at the end is valgrind's "in use at exit".
    assert!(seg["carried_blocks"].as_u64().unwrap_or(0) >= 64, "{seg}");
    let heap = &r["heap"];
    assert_eq!(
        (heap["live_bytes"].as_u64(), heap["live_blocks"].as_u64()),
        (Some(want.bytes), Some(want.blocks)),
        "{heap}"
    );
    // The window is the newest part: far fewer allocations than made.
    let allocs = r["events"]["by_kind"]["alloc"].as_u64().unwrap_or(0);
    assert!(
        allocs > 0 && allocs < want.allocs / 2,
        "{allocs} of {}",
        want.allocs
    );
    assert!(r["damage"].is_null() && r["integrity"].as_array().is_some_and(|a| a.is_empty()));

    // A moment before the window: only the carried blocks allocated by
    // then are known, a lower bound, and said so.
    let from = seg["events_from_ns"].as_u64().expect("events_from_ns");
    let b = report_json(&dir, &["--at", &format!("{}ns", from / 2)]);
    let h = &b["heap"];
    assert_eq!(h["partial"], true, "{h}");
    let known = h["live_blocks"].as_u64().unwrap_or(0);
    assert!(
        (64..=seg["carried_blocks"].as_u64().unwrap_or(0)).contains(&known),
        "{h} {seg}"
    );
    assert_eq!(r["heap"]["partial"], false);

    // The text says what the window is.
    let text = Command::new(bin())
        .arg("report")
        .arg(&dir)
        .output()
        .expect("report");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("window    a bounded recording: segments"),
        "{text}"
    );
}

/// `--keep 1s` of a 3 s run: the held events start about 2 s in, and the
/// directory reads at any moment while being written.
#[test]
fn keep_bounds_in_time_and_reads_while_recording() {
    if !bpf_or_skip("bounded_keep") {
        return;
    }
    let prog = compile("cc", "churn-keep", "c", CHURN, &["-g", "-O0"]);
    let prog = prog.to_str().expect("utf8");
    let dir = tmp().join("keep-ring");
    let _ = std::fs::remove_dir_all(&dir);
    // 3000 pauses of ~1 ms: about 3 s.
    let mut rec = Command::new(bin())
        .args(["record", "--keep", "1s", "-o"])
        .arg(&dir)
        .args(["--", prog, "300000", "100"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tm-tui record");
    let mut reads = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while rec.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(300));
        if !dir.is_dir() {
            continue;
        }
        let out = Command::new(bin())
            .args(["report", "--json"])
            .arg(&dir)
            .output()
            .expect("report while recording");
        if !out.status.success() {
            // Only before the first segment has its first record.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(reads == 0, "report while recording failed: {err}");
            continue;
        }
        reads += 1;
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        if r["exit"].is_null() {
            let d = r["damage"]["reason"].as_str().unwrap_or("");
            // Being written: it ends where the writer is, maybe inside
            // a record it has not finished.
            assert!(
                d.starts_with("no end record") || d.starts_with("truncated record"),
                "{d}"
            );
        }
    }
    let out = rec.wait_with_output().expect("record ends");
    assert_exit(&out, 0);
    assert!(reads >= 2, "read {reads} times while recording");
    let r = report_json(&dir, &[]);
    let seg = &r["retention"]["segments"];
    assert!(seg["dropped"].as_u64().unwrap_or(0) > 0, "{seg}");
    let duration = r["duration_ns"].as_u64().unwrap_or(0);
    assert!(duration > 2_000_000_000, "ran {duration} ns");
    // The first event held (after the carried blocks) is at most ~1 s
    // plus a segment (1/8 s) and a closed segment kept before the end.
    let from = seg["events_from_ns"].as_u64().unwrap_or(0);
    assert!(
        from > 0 && duration - from <= 1_700_000_000,
        "events held from {from} of {duration}"
    );
    let heap = &r["heap"];
    assert_eq!(heap["live_blocks"].as_u64(), Some(66), "{heap}");
}

#[test]
fn bounded_bad_input_is_one_line() {
    // `tm-tui record ARGS -- true` refused with one line, which says `why`.
    let refused = |args: &[&str], why: &str| {
        let out = Command::new(bin())
            .arg("record")
            .args(args)
            .args(["--", "true"])
            .output()
            .expect("tm-tui");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_ne!(out.status.code(), Some(0), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(why), "{err}");
        out.status.code()
    };
    // A bad value is a usage error (2), as clap's are.
    assert_eq!(
        refused(&["--max-size", "1MiB", "-o", "/tmp/x"], "below 8MiB"),
        Some(2)
    );
    refused(&["--keep", "10s", "-o", "-"], "not stdout");
    // One segment per event is not a recording.
    refused(&["--keep", "0s", "-o", "/tmp/x"], "at least 1s");
    // A directory that is not there is named as such.
    refused(
        &["--max-size", "8MiB", "-o", "/nonexistent dir/x"],
        "/nonexistent dir does not exist",
    );
    // A directory holding other files is not emptied.
    let d = tmp().join("not-a-ring");
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::write(d.join("precious.txt"), "keep me").expect("write");
    let ds = d.to_str().expect("utf8");
    refused(&["--keep", "10s", "-o", ds], "precious.txt");
    assert!(d.join("precious.txt").exists());
    // An earlier recording's crash window is not deleted by the next one.
    let d = tmp().join("has-kept");
    std::fs::create_dir_all(d.join("kept-1")).expect("mkdir");
    refused(
        &["--max-size", "8MiB", "-o", d.to_str().expect("utf8")],
        "kept-1",
    );
    assert!(d.join("kept-1").is_dir());
}

/// A use-after-free that does not crash, caught by a watchpoint early in a
/// long run: the ring drops that part, the window before the finding is
/// kept apart in DIR/kept-1 and reads as a recording with the finding.
#[test]
fn the_window_before_a_finding_is_kept_apart() {
    if !bpf_or_skip("bounded_crash_keep") {
        return;
    }
    let src = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
__attribute__((noinline)) char peek(char *p) { return *(volatile char *)p; }
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 600000;
    char *p = malloc(64);
    strcpy(p, "hello");
    free(p);
    char c = peek(p);
    for (long i = 0; i < n; i++) {
        void *q = malloc(32 + i % 64);
        free(q);
    }
    printf("%d\n", c);
    return 0;
}
"#;
    let prog = compile("cc", "uafchurn", "c", src, &["-g", "-O0"]);
    let dir = tmp().join("uaf-ring");
    let _ = std::fs::remove_dir_all(&dir);
    let out = record_with(
        &dir,
        &["--max-size", "8MiB", "--watch-rate", "1"],
        &[prog.to_str().expect("utf8"), "600000"],
        &[],
    );
    assert_exit(&out, 0);
    let r = report_json(&dir, &[]);
    let seg = &r["retention"]["segments"];
    assert!(seg["first"].as_u64().unwrap_or(0) > 1, "{seg}");
    let kept = seg["kept"].as_array().cloned().unwrap_or_default();
    assert_eq!(kept.len(), 1, "{seg}");
    // The finding's part of the recording is gone from the ring ...
    assert_eq!(r["findings"].as_array().map(Vec::len), Some(0));
    // ... and kept apart, from the first segment, readable as a recording.
    let k = std::path::PathBuf::from(kept[0].as_str().expect("path"));
    assert!(k.join("seg-00000001.tmt").exists());
    let kr = report_json(&k, &[]);
    assert!(kr["damage"].is_null(), "{}", kr["damage"]);
    let f = kr["findings"].as_array().cloned().unwrap_or_default();
    assert_eq!(f.len(), 1, "{}", kr["findings"]);
    assert_eq!(f[0]["kind"], "use-after-free", "{}", f[0]);
}

/// A single trace file in parts (`--checkpoint`): `report --at T` reads
/// from the part before T up to T, and its heap at T is what a read of
/// the whole file gives (`export --at --whole`, `report --whole`), and
/// `export --at` reads from the part as well.
#[test]
fn at_reads_from_the_part_before_the_moment() {
    if !bpf_or_skip("checkpoint_at") {
        return;
    }
    let prog = compile("cc", "churn", "c", CHURN, &["-g", "-O0"]);
    let prog = prog.to_str().expect("utf8");
    let trace = tmp().join("churn-parts.tmt");
    let out = record_with(&trace, &["--checkpoint", "1MiB"], &[prog, "400000"], &[]);
    assert_exit(&out, 0);
    assert!(trace.is_file(), "one file");
    let whole = report_json(&trace, &[]);
    assert_no_loss(&whole);
    assert!(
        whole["damage"].is_null() && whole["retention"]["read"].is_null(),
        "{}",
        whole["retention"]
    );
    let total = whole["events"]["total"].as_u64().expect("total");
    let dur = whole["duration_ns"].as_u64().expect("duration");
    for frac in [0.3, 0.7] {
        let at = format!("{}ns", (dur as f64 * frac) as u64);
        let r = report_json(&trace, &["--at", &at]);
        assert!(r["damage"].is_null(), "{}", r["damage"]);
        let read = &r["retention"]["read"];
        assert!(
            read["skipped_bytes"].as_u64().unwrap_or(0) >= 1 << 20,
            "{read}"
        );
        assert_eq!(
            read["to_ns"].as_u64(),
            Some((dur as f64 * frac) as u64),
            "{read}"
        );
        let n = r["events"]["total"].as_u64().expect("total");
        assert!(n > 0 && n < total / 4, "{n} of {total} events read");
        // The heap at T: the 64 blocks kept all along carried in, exact.
        // `export --at` reads from the part too: its stacks and bytes are
        // those of a read of the whole file.
        let folded = |extra: &[&str]| {
            let f = tmp().join("churn-parts.folded");
            let ex = Command::new(bin())
                .args(["export", "--format", "folded", "--at", &at, "-o"])
                .arg(&f)
                .args(extra)
                .arg(&trace)
                .output()
                .expect("export");
            assert_exit(&ex, 0);
            let mut lines: Vec<String> = std::fs::read_to_string(&f)
                .expect("folded")
                .lines()
                .map(str::to_string)
                .collect();
            lines.sort();
            lines
        };
        let part = folded(&[]);
        let pprof = Command::new(bin())
            .args(["export", "--format", "pprof", "--at", &at, "-o"])
            .arg(tmp().join("churn-parts.pb.gz"))
            .arg(&trace)
            .output()
            .expect("export pprof");
        assert_exit(&pprof, 0);
        let err = String::from_utf8_lossy(&pprof.stderr);
        assert!(err.contains("the trace's part before --at"), "{err}");
        assert_eq!(part, folded(&["--whole"]), "export --at against --whole");
        let bytes: u64 = part
            .iter()
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum();
        let heap = &r["heap"];
        assert_eq!(heap["live_bytes"].as_u64(), Some(bytes), "{heap}");
        let kept: u64 = (100..164).sum();
        assert!(bytes >= kept, "{bytes} live bytes at {at}");
        let w = report_json(&trace, &["--at", &at, "--whole", "--window", "1000s"]);
        assert!(w["retention"]["read"].is_null());
        let blocks: u64 = w["window_live"]
            .as_array()
            .expect("window_live")
            .iter()
            .filter_map(|g| g["blocks"].as_u64())
            .sum();
        assert_eq!(heap["live_blocks"].as_u64(), Some(blocks), "{heap}");
    }
}

/// A heap of 100,000 live blocks grown through the recording, then
/// churned: `n` rounds of (grow by `grow` blocks, `churn` malloc/free
/// pairs).
const GROW: &str = r#"
#include <stdlib.h>
int main(int argc, char **argv) {
    long rounds = atol(argv[1]), grow = atol(argv[2]), churn = atol(argv[3]);
    void **keep = malloc(sizeof(void *) * rounds * grow);
    long k = 0;
    for (long r = 0; r < rounds; r++) {
        for (long i = 0; i < grow; i++)
            keep[k++] = malloc(48);
        for (long i = 0; i < churn; i++)
            free(malloc(16 + i % 100));
    }
    return 0;
}
"#;

/// `--checkpoint 1MiB` on a program whose live heap grows to 100 k
/// blocks: each part copies the live heap, so the parts are spaced for
/// the copies to stay a small share of the file (it was 10-30× the size
/// of the file without parts), nothing lost, and the widening said.
#[test]
fn a_big_live_heap_spaces_the_parts_apart() {
    if !bpf_or_skip("checkpoint_big_heap") {
        return;
    }
    let prog = compile("cc", "grow", "c", GROW, &["-g", "-O0"]);
    let prog = prog.to_str().expect("utf8");
    let args = [prog, "20", "5000", "20000"];
    let size = |checkpoint: &str| {
        let trace = tmp().join(format!("grow-{checkpoint}.tmt"));
        let out = record_with(&trace, &["--checkpoint", checkpoint], &args, &[]);
        assert_exit(&out, 0);
        let r = report_json(&trace, &[]);
        assert_no_loss(&r);
        assert!(r["damage"].is_null(), "{}", r["damage"]);
        assert_eq!(
            r["heap"]["live_blocks"].as_u64().map(|b| b >= 100_000),
            Some(true)
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (std::fs::metadata(&trace).expect("trace").len(), err)
    };
    let (whole, _) = size("0");
    let (parts, err) = size("1MiB");
    assert!(
        parts * 2 < whole * 3,
        "{parts} bytes in parts against {whole} without"
    );
    assert!(err.contains("parts spaced up to"), "{err}");
}

/// A crash after the ring already dropped segments: the window kept apart
/// is shorter than `--on-crash-keep` asked, and the note says how long it
/// is and why.
#[test]
fn a_kept_window_shorter_than_asked_says_so() {
    if !bpf_or_skip("bounded_short_keep") {
        return;
    }
    let src = r#"
#include <stdlib.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    for (long i = 0; i < n; i++)
        free(malloc(100 + i % 900));
    *(volatile int *)0 = 1;
    return 0;
}
"#;
    let prog = compile("cc", "churncrash", "c", src, &["-g", "-O0"]);
    let dir = tmp().join("short-keep");
    let _ = std::fs::remove_dir_all(&dir);
    let out = record_with(
        &dir,
        &["--max-size", "8MiB", "--on-crash-keep", "60s"],
        &[prog.to_str().expect("utf8"), "1500000"],
        &[],
    );
    assert_exit(&out, 139);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("of the 60.000s asked; older segments were already dropped by --max-size"),
        "{err}"
    );
    assert!(dir.join("kept-1").is_dir());
}
