//! Signals by origin: sent by another process, re-raised by the program's
//! own handler, a general-protection fault on a wild pointer, and glibc's
//! heap-corruption abort. Each program is built here and recorded live.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::*;

fn build(name: &str, source: &str) -> PathBuf {
    compile(
        "gcc",
        name,
        "c",
        source,
        &["-g", "-O1", "-fno-omit-frame-pointer", "-w"],
    )
}

fn hex(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("hex string: {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex")
}

/// The first frame of `stack` in function `func`, and its line.
fn frame_line(stack: &Value, func: &str) -> Option<u64> {
    stack
        .as_array()?
        .iter()
        .find(|f| f["func"] == func)
        .and_then(|f| f["line"].as_u64())
}

fn report_text(trace: &Path) -> String {
    let out = Command::new(bin())
        .arg("report")
        .arg(trace)
        .output()
        .expect("run tm-tui report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const SLEEPER: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) {
	char *p = malloc(100);
	printf("ready %d\n", getpid());
	fflush(stdout);
	for (int i = 0; i < 200; i++)
		usleep(50000); /* waiting here */
	free(p);
	return 0;
}
"#;

#[test]
fn kill_segv_from_a_shell_is_a_sent_signal_with_its_sender() {
    if !bpf_or_skip("kill_segv_sent_signal") {
        return;
    }
    let prog = build("sleeper", SLEEPER);
    let trace = tmp().join("sent-signal.tmt");
    let mut rec = Command::new(bin())
        .arg("record")
        .arg("-o")
        .arg(&trace)
        .arg("--")
        .arg(&prog)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tm-tui record");
    let stdout = rec.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid: u32 = loop {
        let l = lines
            .next()
            .expect("the program says it is ready")
            .expect("read");
        if let Some(p) = l.strip_prefix("ready ") {
            break p.trim().parse().expect("pid");
        }
        assert!(Instant::now() < deadline, "program never ready");
    };
    // Let the recorder see the program waiting, then kill it from a shell
    // that prints its own pid.
    std::thread::sleep(Duration::from_millis(300));
    let sh = Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$; kill -SEGV {pid}"))
        .output()
        .expect("run sh");
    let shell: u32 = String::from_utf8_lossy(&sh.stdout)
        .trim()
        .parse()
        .expect("shell pid");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = rec.wait_with_output().expect("record ends");
    assert_eq!(out.status.code(), Some(139), "{rest:?}");

    let r = report_json(&trace, &[]);
    let crash = &r["crash"];
    assert_eq!(crash["signal"], "SIGSEGV");
    assert_eq!(crash["si_code"], "SI_USER");
    assert_eq!(crash["sender"]["pid"], shell, "{crash}");
    assert_eq!(crash["sender"]["comm"], "sh", "{crash}");
    let d = &crash["diagnosis"];
    assert_eq!(d["kind"], "sent-signal", "{d}");
    assert_eq!(d["sender"]["pid"], shell);
    let summary = d["summary"].as_str().expect("summary");
    assert!(
        summary.contains(&format!("SIGSEGV sent by pid {shell} (sh")) && summary.contains("kill()"),
        "{summary}"
    );
    assert!(!summary.contains("NULL"), "{summary}");
    assert!(d["block"].is_null(), "no block for a sent signal: {d}");
    // It was waiting in main's loop when the signal came.
    assert_eq!(
        frame_line(&crash["stack"], "main"),
        Some(line(SLEEPER, "waiting here"))
    );
    let text = report_text(&trace);
    assert!(text.contains("DIAGNOSIS  sent-signal"), "{text}");
    assert!(
        text.contains(&format!("from pid {shell} (sh)")),
        "headline names the sender: {text}"
    );
    assert!(!text.contains("NULL"), "{text}");
}

const RERAISE: &str = r#"#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct conn { int fd; char *buf; };

static void on_segv(int sig) {
	/* Like redis's sigsegvHandler: log, then die of the same signal. */
	char *log = malloc(64);
	strcpy(log, "crashed\n");
	write(2, log, strlen(log));
	signal(sig, SIG_DFL);
	kill(getpid(), sig);
}

__attribute__((noinline)) static int read_conn(struct conn *c) {
	return c->buf[100]; /* c->buf is NULL */
}

int main(void) {
	signal(SIGSEGV, on_segv);
	struct conn *c = calloc(1, sizeof *c);
	return read_conn(c); /* the call */
}
"#;

#[test]
fn a_handler_that_reraises_is_diagnosed_by_the_first_delivery() {
    if !bpf_or_skip("reraise_first_delivery") {
        return;
    }
    let prog = build("reraise", RERAISE);
    let trace = tmp().join("reraise.tmt");
    let out = record_launch(&trace, &[prog.to_str().expect("utf8")]);
    assert_exit(&out, 139);
    let r = report_json(&trace, &[]);
    let crash = &r["crash"];
    // The fatal delivery is the handler's kill() of its own process (held
    // blocked until the handler returned, so delivered in read_conn)...
    assert_eq!(crash["si_code"], "SI_USER", "{crash}");
    assert_eq!(crash["sender"]["pid"], r["target"]["pid"], "{crash}");
    // ...the diagnosis is the fault the handler caught: c->buf[100].
    let d = &crash["diagnosis"];
    assert_eq!(d["kind"], "null-deref", "{d}");
    let summary = d["summary"].as_str().expect("summary");
    assert!(summary.contains("100 bytes past NULL"), "{summary}");
    assert!(summary.contains("read_conn"), "{summary}");
    assert!(summary.contains("handler"), "{summary}");
    assert_eq!(
        frame_line(&d["access_stack"], "read_conn"),
        Some(line(RERAISE, "c->buf is NULL"))
    );
    assert_eq!(
        frame_line(&d["access_stack"], "main"),
        Some(line(RERAISE, "the call"))
    );
    assert!(d["reraised"].is_object(), "{d}");
    let text = report_text(&trace);
    let first = text
        .find("first delivered (caught by the handler)")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(text[first..].contains("read_conn"), "{text}");
}

const WILD: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct item { struct item *next; long value; };

__attribute__((noinline)) static long sum(struct item *it) {
	long s = 0;
	for (; it; it = it->next)
		s += it->value; /* the fault */
	return s;
}

int main(int argc, char **argv) {
	char *name = malloc(24); /* the overflowed block */
	struct item *head = malloc(sizeof *head);
	head->next = NULL;
	head->value = 1;
	/* 24 bytes fit; the rest runs over head's chunk header and head->next. */
	strcpy(name, argv[1]);
	printf("%ld\n", sum(head));
	return 0;
}
"#;

#[test]
fn a_text_pointer_from_a_heap_overflow_is_a_wild_pointer() {
    if !bpf_or_skip("wild_pointer") {
        return;
    }
    let prog = build("wild", WILD);
    // Bytes 32..40 land on head->next (24 of name, 8 of head's size field).
    let text = "a name much longer than twenty-four bytes, AAAAAAAA";
    let trace = tmp().join("wild.tmt");
    let out = record_launch(&trace, &[prog.to_str().expect("utf8"), text]);
    assert_exit(&out, 139);
    let r = report_json(&trace, &[]);
    let crash = &r["crash"];
    assert_eq!(crash["si_code"], "SI_KERNEL");
    let d = &crash["diagnosis"];
    assert_eq!(d["kind"], "wild-pointer", "{d}");
    let op = &d["operand"];
    assert_eq!(op["non_canonical"], true, "{op}");
    assert_eq!(op["value_text"], &text[32..40], "{op}");
    let value = hex(&op["value"]);
    assert_eq!(
        value,
        u64::from_le_bytes(text.as_bytes()[32..40].try_into().expect("8"))
    );
    // it->next or it->value of the bad item: offset 0 or 8.
    let off = hex(&op["addr"]).wrapping_sub(value);
    assert!(off == 0 || off == 8, "{op}");
    let summary = d["summary"].as_str().expect("summary");
    assert!(
        summary.contains(&format!("{:#x}", hex(&op["addr"]))),
        "{summary}"
    );
    assert!(summary.contains(&text[32..40]), "{summary}");
    assert!(summary.contains("non-canonical"), "{summary}");
    assert!(!summary.contains("NULL"), "{summary}");
    assert_eq!(
        frame_line(&crash["stack"], "sum"),
        Some(line(WILD, "the fault"))
    );
    // The overflowed block is named with its allocation site.
    let notes: Vec<&str> = d["notes"]
        .as_array()
        .expect("notes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let site = "the 24-byte block";
    let at = format!(
        "allocated at main (wild.c:{})",
        line(WILD, "the overflowed block")
    );
    assert!(
        notes.iter().any(|n| n.contains(site) && n.contains(&at)),
        "{notes:#?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("gives no fault address")),
        "{notes:#?}"
    );
}

const TOPSIZE: &str = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) static char *make_label(void) {
	return malloc(40); /* the label */
}

int main(void) {
	char *keep = malloc(100);
	char *label = make_label();
	/* 40 bytes asked (48 usable), 56 written: over the top chunk's size. */
	memset(label, 'x', 56);
	char *more = malloc(50000); /* from the top chunk */
	printf("%p %p %p\n", keep, label, more);
	return 0;
}
"#;

#[test]
fn glibc_corrupted_top_size_names_the_overflowing_block() {
    if !bpf_or_skip("corrupted_top_size") {
        return;
    }
    let prog = build("topsize", TOPSIZE);
    let trace = tmp().join("topsize.tmt");
    let out = record_launch(&trace, &[prog.to_str().expect("utf8")]);
    assert_exit(&out, 134);
    let r = report_json(&trace, &[]);
    let crash = &r["crash"];
    assert_eq!(crash["signal"], "SIGABRT");
    assert_eq!(crash["message"], "malloc(): corrupted top size", "{crash}");
    // Unwound through malloc (its return probed) to the call that aborted.
    assert_eq!(
        frame_line(&crash["stack"], "main"),
        Some(line(TOPSIZE, "from the top chunk"))
    );
    let d = &crash["diagnosis"];
    assert_eq!(d["kind"], "heap-corruption", "{d}");
    assert_eq!(d["message"], "malloc(): corrupted top size");
    assert_eq!(d["block"]["size"], 40, "{d}");
    assert_eq!(
        frame_line(&d["alloc_stack"], "make_label"),
        Some(line(TOPSIZE, "the label"))
    );
    let summary = d["summary"].as_str().expect("summary");
    assert!(
        summary.contains(&format!(
            "make_label (topsize.c:{})",
            line(TOPSIZE, "the label")
        )),
        "{summary}"
    );
    assert!(summary.contains("corrupted top size"), "{summary}");
    let text = report_text(&trace);
    assert!(text.contains("DIAGNOSIS  heap-corruption"), "{text}");
}

const NEXTSIZE: &str = r#"#include <stdlib.h>
#include <string.h>
int main(void) {
	void *fill[7];
	for (int i = 0; i < 7; i++)
		fill[i] = malloc(40);
	char *a = malloc(40); /* the overflowing block */
	char *b = malloc(40);
	for (int i = 0; i < 7; i++)
		free(fill[i]); /* the tcache bin is full: a's free checks more */
	memset(a, 'y', 56); /* over b's size field */
	free(a); /* the aborting free */
	free(b);
	return 0;
}
"#;

#[test]
fn glibc_invalid_next_size_names_the_freed_block_that_overflowed() {
    if !bpf_or_skip("invalid_next_size") {
        return;
    }
    // -O0: at -O1 gcc drops the malloc/free pairs of `fill`.
    let prog = compile("gcc", "nextsize", "c", NEXTSIZE, &["-g", "-O0", "-w"]);
    let trace = tmp().join("nextsize.tmt");
    let out = record_launch(&trace, &[prog.to_str().expect("utf8")]);
    assert_exit(&out, 134);
    let r = report_json(&trace, &[]);
    let d = &r["crash"]["diagnosis"];
    assert_eq!(d["kind"], "heap-corruption", "{d}");
    let m = d["message"].as_str().expect("message");
    assert!(m.starts_with("free(): invalid next size"), "{m}");
    assert_eq!(d["block"]["size"], 40, "{d}");
    assert_eq!(
        frame_line(&d["alloc_stack"], "main"),
        Some(line(NEXTSIZE, "the overflowing block"))
    );
    assert_eq!(
        frame_line(&d["free_stack"], "main"),
        Some(line(NEXTSIZE, "the aborting free"))
    );
}
