//! Children followed: every forked child is recorded from its first
//! instruction with its parent's live blocks as its own, each process's
//! heap at its exit equals valgrind's (--trace-children=yes), a child's
//! crash is diagnosed as the root's would be, and an exec drops the old
//! image's heap and probes the new image's allocator.

use std::process::Command;

use serde_json::Value;

use super::support::*;

/// A parent keeps one block (inherited by each child) and forks three
/// children one after the other; each churns, leaks one block, and the
/// third crashes on a NULL dereference.
const FORK_TREE: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

static char *keep;

__attribute__((noinline)) char *child_leak(int n)
{
	char *p = malloc(100 + n);
	memset(p, 'x', 100 + n);
	return p;
}

__attribute__((noinline)) void child_work(int i)
{
	for (int k = 0; k < 10; k++)
		free(malloc(64));
	child_leak(i);
	if (i == 2) {
		volatile int *bad = (int *)16;
		*bad = 1; /* CRASH */
	}
}

int main(void)
{
	keep = malloc(4000);
	for (int i = 0; i < 3; i++) {
		pid_t c = fork();
		if (c == 0) {
			child_work(i);
			exit(0);
		}
		int st;
		waitpid(c, &st, 0);
	}
	free(malloc(10));
	return 0;
}
"#;

/// valgrind's "in use at exit" (bytes, blocks) of each process, in the
/// order the processes ended.
fn valgrind_per_process(cmd: &[&str]) -> Vec<(u64, u64)> {
    let out = Command::new("valgrind")
        .args([
            "--run-libc-freeres=no",
            "--run-cxx-freeres=no",
            "--leak-check=no",
            "--trace-children=yes",
        ])
        .args(cmd)
        .output()
        .expect("valgrind is installed (.ci/run installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .filter_map(|l| l.split("in use at exit:").nth(1))
        .map(|rest| {
            let n: Vec<u64> = rest
                .split(|c: char| !c.is_ascii_digit() && c != ',')
                .filter_map(|w| w.replace(',', "").parse().ok())
                .collect();
            (n[0], n[1])
        })
        .collect()
}

fn processes(r: &Value) -> &Vec<Value> {
    r["processes"].as_array().expect("processes")
}

#[test]
fn fork_tree_each_process_equals_valgrind() {
    if !bpf_or_skip("fork_tree") {
        return;
    }
    let prog = compile("cc", "forktree", "c", FORK_TREE, &["-O0", "-g"]);
    let cmd = [prog.to_str().expect("utf8")];
    let trace = tmp().join("forktree.tmt");
    let out = record_launch(&trace, &cmd);
    // The root exits 0; its crashing child does not make it fail.
    assert_exit(&out, 0);
    let r = report_json(&trace, &[]);
    assert_no_loss(&r);
    let ps = processes(&r);
    assert_eq!(ps.len(), 4, "the root and three children: {ps:#?}");
    let root = ps[0]["pid"].as_u64().expect("pid");
    assert_eq!(root, r["target"]["pid"].as_u64().expect("target pid"));
    assert!(ps[0]["ppid"].is_null());
    for c in &ps[1..] {
        assert_eq!(c["ppid"].as_u64(), Some(root), "forked by the root");
        assert_eq!(c["heap"]["inherited_blocks"], 1, "the parent's block");
        // Ten churned pairs and one leak: all recorded, in the child.
        assert_eq!(c["heap"]["allocs"], 11, "{c:#}");
        assert_eq!(c["heap"]["frees"], 10, "{c:#}");
        let sites: Vec<&str> = c["leaks"]
            .as_array()
            .expect("leaks")
            .iter()
            .filter_map(|l| l["site"].as_str())
            .collect();
        assert!(
            sites.iter().any(|s| s.starts_with("child_leak")),
            "{sites:?}"
        );
        assert!(sites.iter().any(|s| s.starts_with("main")), "{sites:?}");
    }
    // The third child crashed: diagnosed in its own process.
    let crash = &ps[3]["crash"];
    assert_eq!(crash["signal"], "SIGSEGV", "{crash:#}");
    assert_eq!(crash["diagnosis"]["kind"], "null-deref");
    assert_eq!(
        funcs(&crash["stack"]).first().map(String::as_str),
        Some("child_work")
    );
    assert_eq!(ps[3]["exit"]["signal"], "SIGSEGV");
    assert!(ps[0]["crash"].is_null());
    assert_eq!(ps[0]["exit"]["code"], 0);
    // valgrind, following children too: each process's heap at its exit.
    let vg = valgrind_per_process(&cmd);
    assert_eq!(vg.len(), 4, "valgrind's summaries: {vg:?}");
    // The children end first, in fork order; the root last.
    let order = [&ps[1], &ps[2], &ps[3], &ps[0]];
    for (p, (bytes, blocks)) in order.iter().zip(&vg) {
        assert_eq!(
            (
                p["heap"]["live_bytes"].as_u64(),
                p["heap"]["live_blocks"].as_u64()
            ),
            (Some(*bytes), Some(*blocks)),
            "pid {} vs valgrind",
            p["pid"]
        );
    }
}

/// Before its exec the program leaks three blocks; it then becomes a
/// program linked with jemalloc that leaks five.
const EXECS: &str = r#"
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	for (int i = 0; i < 3; i++)
		malloc(50 + i);
	execl(argv[1], argv[1], (char *)0);
	return 127;
}
"#;

const JEMALLOC_LEAKS: &str = r#"
#include <stdlib.h>

static void *volatile keep[5];

__attribute__((noinline)) void new_image_leak(void)
{
	for (int i = 0; i < 5; i++)
		keep[i] = malloc(1000 + i);
	for (int i = 0; i < 20; i++)
		free(malloc(32));
}

int main(void)
{
	new_image_leak();
	return 0;
}
"#;

#[test]
fn exec_drops_the_old_heap_and_probes_the_new_allocator() {
    if !bpf_or_skip("exec_new_allocator") {
        return;
    }
    let jemalloc = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
    assert!(
        std::path::Path::new(jemalloc).exists(),
        "{jemalloc} (libjemalloc2, .ci/run installs it)"
    );
    let after = compile(
        "cc",
        "jemalloc_leaks",
        "c",
        JEMALLOC_LEAKS,
        &["-O2", "-g", jemalloc],
    );
    let before = compile("cc", "execs", "c", EXECS, &["-O0", "-g"]);
    let cmd = [
        before.to_str().expect("utf8"),
        after.to_str().expect("utf8"),
    ];
    let trace = tmp().join("execs.tmt");
    let out = record_launch(&trace, &cmd);
    assert_exit(&out, 0);
    let r = report_json(&trace, &[]);
    assert_no_loss(&r);
    let ps = processes(&r);
    assert_eq!(ps.len(), 1, "an exec is the same process");
    let h = &ps[0]["heap"];
    // The three pre-exec blocks are gone with the old image, not leaked.
    assert_eq!(h["discarded_blocks"], 3, "{h:#}");
    let leaks = ps[0]["leaks"].as_array().expect("leaks");
    let in_new: u64 = leaks
        .iter()
        .filter(|l| funcs(&l["stack"]).iter().any(|f| f == "new_image_leak"))
        .map(|l| l["blocks"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        in_new, 5,
        "jemalloc's blocks, probed after the exec: {leaks:#?}"
    );
    assert!(
        !leaks.iter().any(|l| funcs(&l["stack"])
            .iter()
            .any(|f| f == "main" && l["site"].as_str().is_some_and(|s| s.contains("execs.c")))),
        "nothing of the old image is live: {leaks:#?}"
    );
    assert_eq!(r["heap"]["live_blocks"], h["live_blocks"]);
}

/// A server-like parent: one worker already running when tm-tui attaches,
/// a second forked a second later; each worker allocates and frees 64-byte
/// blocks, the second exactly 100.
const PREFORK: &str = r#"
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>

__attribute__((noinline)) void old_worker(void)
{
	for (int i = 0; i < 150; i++) {
		free(malloc(64));
		usleep(10000);
	}
}

__attribute__((noinline)) void new_worker(void)
{
	for (int i = 0; i < 100; i++)
		free(malloc(64));
}

int main(void)
{
	if (fork() == 0) {
		old_worker();
		_exit(0);
	}
	sleep(1);
	if (fork() == 0) {
		new_worker();
		_exit(0);
	}
	while (wait(0) > 0)
		;
	return 0;
}
"#;

#[test]
fn attached_children_old_and_new() {
    if !bpf_or_skip("attached_children") {
        return;
    }
    let prog = compile("cc", "prefork", "c", PREFORK, &["-O0", "-g"]);
    let mut target = Command::new(&prog).spawn().expect("start prefork");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let trace = tmp().join("prefork.tmt");
    let out = Command::new(bin())
        .args(["record", "--children", "-o"])
        .arg(&trace)
        .arg(target.id().to_string())
        .output()
        .expect("run tm-tui record --children PID");
    assert!(target.wait().expect("wait target").success());
    assert_exit(&out, 0);
    let r = report_json(&trace, &[]);
    assert_no_loss(&r);
    let ps = processes(&r);
    assert_eq!(
        ps.len(),
        3,
        "the root, the running worker, the new one: {ps:#?}"
    );
    let root = u64::from(target.id());
    // The worker already running: recorded from the attach on.
    assert!(ps[1]["ppid"].is_null(), "{:#}", ps[1]);
    let old = ps[1]["heap"]["allocs"].as_u64().expect("allocs");
    assert!(old > 20, "the running worker's allocations: {old}");
    // The worker forked while recording: from its first instruction.
    assert_eq!(ps[2]["ppid"].as_u64(), Some(root));
    assert_eq!(ps[2]["heap"]["allocs"], 100, "{:#}", ps[2]);
    assert_eq!(ps[2]["heap"]["frees"], 100);
    assert_eq!(ps[2]["exit"]["code"], 0);
}

#[test]
fn attached_without_children_says_so() {
    if !bpf_or_skip("attached_children_note") {
        return;
    }
    let prog = compile("cc", "prefork2", "c", PREFORK, &["-O0", "-g"]);
    let mut target = Command::new(&prog).spawn().expect("start prefork");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let trace = tmp().join("prefork2.tmt");
    let out = Command::new(bin())
        .args(["record", "-o"])
        .arg(&trace)
        .arg(target.id().to_string())
        .output()
        .expect("run tm-tui record PID");
    assert!(target.wait().expect("wait target").success());
    assert_exit(&out, 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 child process(es) already running") && err.contains("--children"),
        "{err}"
    );
    // The new worker is followed all the same; the old one is not.
    let r = report_json(&trace, &[]);
    let ps = processes(&r);
    assert_eq!(ps.len(), 2, "{ps:#?}");
    assert_eq!(ps[1]["heap"]["allocs"], 100);
}

/// A child's exit is its own: stopped while the root still runs, tm-tui
/// does not take the child's status for the target's.
#[test]
fn a_childs_exit_status_is_not_the_targets() {
    if !bpf_or_skip("child_exit_status") {
        return;
    }
    let trace = tmp().join("child-exit.tmt");
    let child = Command::new(bin())
        .args(["record", "-o"])
        .arg(&trace)
        .args(["--", "/bin/sh", "-c", "(exit 7); sleep 4"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tm-tui record");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SIGINT to tm-tui alone: the root (sleep) runs on, unrecorded.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().expect("wait tm-tui");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("exited with code 7"), "{err}");
    assert_ne!(out.status.code(), Some(7), "{err}");
    let r = report_json(&trace, &[]);
    assert_ne!(r["exit"]["code"], 7, "{:#}", r["exit"]);
    let ps = processes(&r);
    assert!(ps.len() >= 2, "{ps:#?}");
    assert_eq!(ps[1]["exit"]["code"], 7, "the child's own exit");
}

/// An exec into a program with the same allocator keeps its probes (no
/// hold while links are swapped), and nothing is counted twice: the new
/// image's heap at its exit equals valgrind's.
#[test]
fn exec_with_the_same_allocator_counts_once() {
    if !bpf_or_skip("exec_same_allocator") {
        return;
    }
    let prog = compile(
        "cc",
        "churn_exec",
        "c",
        "#include <stdlib.h>\nstatic void *volatile keep[3];\nint main(void) {\n\tfor (int i = 0; i < 50; i++)\n\t\tfree(malloc(100));\n\tfor (int i = 0; i < 3; i++)\n\t\tkeep[i] = malloc(64);\n\treturn 0;\n}\n",
        &["-O0"],
    );
    let p = prog.to_str().expect("utf8");
    let trace = tmp().join("exec-same.tmt");
    // sh forks, and the child execs the program.
    let out = record_launch(&trace, &["/bin/sh", "-c", &format!("{p}; exit 0")]);
    assert_exit(&out, 0);
    let r = report_json(&trace, &[]);
    assert_no_loss(&r);
    let ps = processes(&r);
    let child = ps
        .iter()
        .find(|x| {
            x["command"]
                .as_str()
                .is_some_and(|c| c.ends_with("churn_exec"))
        })
        .unwrap_or_else(|| panic!("the exec'd child: {ps:#?}"));
    let vg = valgrind(&[p]);
    assert_eq!(child["heap"]["live_blocks"].as_u64(), Some(vg.blocks));
    assert_eq!(child["heap"]["live_bytes"].as_u64(), Some(vg.bytes));
    // Its 50 frees once each (a kept and a new link would count 100).
    assert_eq!(child["heap"]["frees"].as_u64(), Some(vg.frees));
}
