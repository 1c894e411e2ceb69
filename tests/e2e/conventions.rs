//! What users of perf, strace, heaptrack and valgrind expect of a
//! command-line tool: --version with the commit, --log, a man page and
//! shell completions, -c "CMD ARGS", traces through pipes, capabilities
//! instead of root, the launched program run as the user who ran sudo.

use std::process::{Command, Output};

use super::support::*;

fn tm(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("run tm-tui")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn version_names_the_commit_and_bench_is_hidden() {
    let out = tm(&["--version"]);
    assert_exit(&out, 0);
    let v = stdout(&out);
    // "tm-tui 0.1.0 (1f536b4)", or "(unknown)" built outside git.
    let inner = v
        .trim()
        .strip_prefix(concat!("tm-tui ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("version line: {v}"));
    assert!(
        inner == "unknown" || (inner.len() >= 7 && inner.chars().all(|c| c.is_ascii_hexdigit())),
        "{v}"
    );
    let help = stdout(&tm(&["--help"]));
    assert!(help.contains("record"), "{help}");
    assert!(!help.contains("bench"), "bench is hidden: {help}");
    // Still there for those who know it.
    assert_exit(&tm(&["bench", "--help"]), 0);
}

#[test]
fn log_file_gets_libbpf_messages_and_the_error() {
    if !bpf_or_skip("log_file") {
        return;
    }
    let dir = tmp().join("log_file");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let log = dir.join("tm.log");
    let trace = dir.join("t.tmt");
    // Before the subcommand as after it.
    let out = Command::new(bin())
        .arg("--log")
        .arg(&log)
        .arg("record")
        .arg("-o")
        .arg(&trace)
        .args(["--", "/bin/true"])
        .output()
        .expect("run tm-tui");
    assert_exit(&out, 0);
    let text = std::fs::read_to_string(&log).expect("the log is written");
    assert!(text.contains("] info: tm-tui "), "{text}");
    assert!(text.contains("] libbpf debug: libbpf: "), "{text}");
    assert!(text.contains("] info: exit status 0"), "{text}");
    // libbpf's messages go to the log, not the terminal.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("libbpf:"));
    let out = Command::new(bin())
        .arg("report")
        .arg("--log")
        .arg(&log)
        .arg("/etc/hostname")
        .output()
        .expect("run tm-tui");
    assert_exit(&out, 1);
    let text = std::fs::read_to_string(&log).expect("the log is written");
    assert!(
        text.contains("] error: /etc/hostname: not a tm-tui trace"),
        "{text}"
    );
    let out = tm(&["--log", "/nonexistent/dir/x.log", "report", "/etc/hostname"]);
    assert_exit(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("tm-tui: error: cannot write the log /nonexistent/dir/x.log"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// `tm-tui man` renders without a warning and names every subcommand but
/// the hidden one; each subcommand has its page.
#[test]
fn man_page_renders_and_names_the_subcommands() {
    let page = tm(&["man"]);
    assert_exit(&page, 0);
    assert!(stdout(&page).starts_with(".ie \\n(.g"), "roff expected");
    // As a user reads it: man, which runs groff with preconv (.ci/run
    // installs man-db).
    let render = |roff: &[u8]| -> String {
        use std::io::Write;
        let mut man = Command::new("man")
            .args(["--warnings=w", "-l", "-"])
            .env("MANWIDTH", "100")
            .env("MAN_KEEP_FORMATTING", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("man is installed (.ci/run installs man-db)");
        man.stdin
            .take()
            .expect("stdin")
            .write_all(roff)
            .expect("write the page to man");
        let out = man.wait_with_output().expect("man ran");
        assert_exit(&out, 0);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.trim().is_empty(), "man warned: {err}");
        // Bold and underline as overstrikes: plain text.
        let text = String::from_utf8_lossy(&out.stdout);
        let mut plain = String::new();
        for c in text.chars() {
            if c == '\u{8}' {
                plain.pop();
            } else {
                plain.push(c);
            }
        }
        plain
    };
    let text = render(&page.stdout);
    assert!(text.contains("SUBCOMMANDS"), "{text}");
    for sub in ["record", "report", "demo", "open", "man", "completions"] {
        assert!(
            text.contains(&format!("tm-tui-{sub}(1)")),
            "{sub} in: {text}"
        );
    }
    assert!(!text.contains("bench"), "{text}");
    assert!(text.contains("--log"), "{text}");
    let record = tm(&["man", "record"]);
    assert_exit(&record, 0);
    let text = render(&record.stdout);
    assert!(text.contains("tm-tui-record"), "{text}");
    assert!(text.contains("--duration"), "{text}");
    let dir = tmp().join("man_pages");
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(bin())
        .arg("man")
        .arg("--dir")
        .arg(&dir)
        .output()
        .expect("run tm-tui");
    assert_exit(&out, 0);
    for page in [
        "tm-tui.1",
        "tm-tui-record.1",
        "tm-tui-report.1",
        "tm-tui-open.1",
    ] {
        assert!(dir.join(page).is_file(), "{page} written");
    }
    assert!(!dir.join("tm-tui-bench.1").exists());
    let out = tm(&["man", "bench"]);
    assert_exit(&out, 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("tm-tui: error: no subcommand 'bench'")
    );
}

/// The bash completion script sources without a word and completes
/// subcommands and their options; zsh and fish scripts are there too.
#[test]
fn bash_completion_completes_subcommands_and_options() {
    let script = tm(&["completions", "bash"]);
    assert_exit(&script, 0);
    let dir = tmp().join("completions");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("tm-tui.bash");
    std::fs::write(&path, &script.stdout).expect("write the script");
    let complete = |words: &[&str]| -> String {
        let cword = words.len() - 1;
        let probe = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={cword}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; \
             COMP_POINT=${{#COMP_LINE}}; _tm__tui tm-tui \"${{COMP_WORDS[{cword}]}}\" \"${{COMP_WORDS[{}]}}\"; \
             echo \"${{COMPREPLY[*]}}\"",
            path.display(),
            words.join(" "),
            cword - 1
        );
        let out = Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &probe])
            .output()
            .expect("run bash");
        assert_exit(&out, 0);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.is_empty(), "bash said: {err}");
        stdout(&out).trim().to_string()
    };
    assert_eq!(complete(&["tm-tui", "rec"]), "record");
    assert_eq!(complete(&["tm-tui", "record", "--no-f"]), "--no-follow");
    assert_eq!(complete(&["tm-tui", "completions", "fi"]), "fish");
    // Hidden from --help, hidden from completion.
    assert_eq!(complete(&["tm-tui", "ben"]), "");
    for shell in ["zsh", "fish"] {
        let out = tm(&["completions", shell]);
        assert_exit(&out, 0);
        assert!(stdout(&out).contains("record"), "{shell}");
    }
    let out = tm(&["completions", "ksh"]);
    assert_exit(&out, 2);
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("tm-tui: error: invalid value 'ksh'"));
}

/// `record -o -` writes the trace to stdout and everything else (tm-tui's
/// lines, the program's output) to stderr; `report -` reads it from a
/// pipe; `-c "CMD ARGS"` is split as a shell would, into the same argv as
/// `-- CMD ARGS`.
#[test]
fn trace_through_a_pipe_and_command_as_one_string() {
    use std::process::Stdio;
    if !bpf_or_skip("trace_through_a_pipe") {
        return;
    }
    let mut rec = Command::new(bin())
        .args([
            "record",
            "-o",
            "-",
            "-c",
            "printf '%s|' one 'two words' three",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tm-tui record");
    let trace = rec.stdout.take().expect("stdout");
    let report = Command::new(bin())
        .args(["report", "--json", "-"])
        .stdin(Stdio::from(trace))
        .output()
        .expect("run tm-tui report");
    let rec = rec.wait_with_output().expect("record ran");
    assert_exit(&rec, 0);
    assert_exit(&report, 0);
    let err = String::from_utf8_lossy(&rec.stderr);
    // The program's output, with ours on stderr: its three arguments.
    assert!(err.contains("one|two words|three|"), "{err}");
    assert!(err.contains("into stdout"), "{err}");
    assert!(err.contains("trace stdout"), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&report.stdout).expect("report is JSON");
    assert_eq!(r["target"]["command"], "printf %s| one two words three");
    assert_eq!(r["exit"]["code"], 0);
    assert!(r["damage"].is_null(), "{r}");
    assert!(r["events"]["by_kind"]["exec"].as_u64() >= Some(1), "{r}");
    // The same program with -- gives the same argv.
    let file = tmp().join("pipe_same.tmt");
    let out = Command::new(bin())
        .arg("record")
        .arg("-o")
        .arg(&file)
        .args(["--", "printf", "%s|", "one", "two words", "three"])
        .output()
        .expect("run tm-tui record");
    assert_exit(&out, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one|two words|three|");
    assert_eq!(
        report_json(&file, &[])["target"]["command"],
        r["target"]["command"]
    );
}

/// Bad input to -c and to `-`: one line, no panic.
#[test]
fn bad_command_strings_and_stdin_that_is_not_a_trace() {
    use std::process::Stdio;
    let one_line = |out: &Output, code: i32, needle: &str| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.starts_with("tm-tui: error: ") && err.contains(needle),
            "{needle}: {err}"
        );
    };
    one_line(&tm(&["record", "-c", "prog 'a"]), 1, "unbalanced quotes");
    one_line(&tm(&["record", "-c", "  "]), 1, "no program");
    one_line(
        &tm(&["record", "-c", "prog", "--", "prog"]),
        2,
        "cannot be used with",
    );
    one_line(
        &tm(&["record", "-c", "prog", "-p", "1"]),
        2,
        "cannot be used with",
    );
    one_line(&tm(&["-c", "prog", "--", "prog"]), 2, "cannot be used with");
    for sub in ["report", "open"] {
        let out = Command::new(bin())
            .args([sub, "-"])
            .stdin(Stdio::from(
                std::fs::File::open("/etc/hostname").expect("open"),
            ))
            .output()
            .expect("run tm-tui");
        one_line(&out, 1, "stdin: not a tm-tui trace");
        let out = Command::new(bin())
            .args([sub, "-"])
            .stdin(Stdio::null())
            .output()
            .expect("run tm-tui");
        one_line(&out, 1, "stdin: not a tm-tui trace");
    }
    one_line(
        &tm(&["demo", "uaf", "--no-ui", "-o", "-"]),
        1,
        "give -o FILE",
    );
}

/// A folder in /tmp that user 65534 can use: tm-tui and `programs`
/// copied into it (the build's own folders may be closed to others).
fn nobody_dir(programs: &[&std::path::Path]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("tm-tui-caps-")
        .tempdir_in("/tmp")
        .expect("a temporary folder");
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).expect("chown");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for p in std::iter::once(std::path::Path::new(bin())).chain(programs.iter().copied()) {
        let to = dir.path().join(p.file_name().expect("a file name"));
        std::fs::copy(p, &to).expect("copy");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

/// `setpriv` as user 65534 with exactly `caps` (ambient, so they survive
/// the exec of tm-tui, as `setcap` on the binary would give them).
fn as_nobody(caps: &str, argv: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    if !caps.is_empty() {
        c.arg(format!("--inh-caps={caps}"))
            .arg(format!("--ambient-caps={caps}"));
    }
    c.args(argv);
    c
}

const CAPS_PROG: &str = r#"
#include <stdlib.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 1;
    for (int r = 0; r < rounds; r++) {
        void *keep[10];
        for (int i = 0; i < 10; i++)
            keep[i] = malloc(4242); /* CAPS_ALLOC */
        for (int i = 0; i < 10; i++)
            free(keep[i]);
        if (rounds > 1)
            usleep(20000);
    }
    printf("uid %d\n", (int)getuid());
    return 0;
}
"#;

/// Not root, with CAP_BPF and CAP_PERFMON only: a launched program is
/// recorded as root would record it, and so is a running process of the
/// same user; another user's process needs CAP_SYS_PTRACE, said in one
/// line; without CAP_BPF nothing runs and the line names it.
#[test]
fn capabilities_instead_of_root() {
    if !bpf_or_skip("capabilities_instead_of_root") {
        return;
    }
    let prog = compile(
        "gcc",
        "caps_prog",
        "c",
        CAPS_PROG,
        &["-g", "-O0", "-fno-omit-frame-pointer"],
    );
    let dir = nobody_dir(&[&prog]);
    let tm = dir.path().join("tm-tui").display().to_string();
    let prog = dir.path().join("caps_prog").display().to_string();
    let trace = dir.path().join("launched.tmt");
    let out = as_nobody(
        "+bpf,+perfmon",
        &[
            &tm,
            "record",
            "-o",
            &trace.display().to_string(),
            "--",
            &prog,
        ],
    )
    .output()
    .expect("run setpriv");
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "uid 65534\n");
    let r = report_json(&trace, &[]);
    assert_eq!(r["exit"]["code"], 0, "{r}");
    assert!(r["events"]["by_kind"]["alloc"].as_u64() >= Some(10), "{r}");
    assert_no_loss(&r);
    let text = stdout(
        &Command::new(bin())
            .arg("report")
            .arg(&trace)
            .output()
            .expect("report"),
    );
    let at = format!("main (caps_prog.c:{})", line(CAPS_PROG, "CAPS_ALLOC"));
    assert!(
        text.contains("size=4242") && text.contains(&at),
        "{at} in: {text}"
    );

    // Attached to a process of the same user.
    let mut target = as_nobody("", &[&prog, "150"])
        .spawn()
        .expect("start the target");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let attached = dir.path().join("attached.tmt");
    let out = as_nobody(
        "+bpf,+perfmon",
        &[
            &tm,
            "record",
            "-d",
            "1s",
            "-o",
            &attached.display().to_string(),
            &target.id().to_string(),
        ],
    )
    .output()
    .expect("run setpriv");
    let _ = target.kill();
    let _ = target.wait();
    assert_exit(&out, 0);
    let r = report_json(&attached, &[]);
    assert!(r["events"]["by_kind"]["alloc"].as_u64() >= Some(10), "{r}");

    let one_line = |out: &Output, needle: &str| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.starts_with("tm-tui: error: ") && err.contains(needle),
            "{needle}: {err}"
        );
    };
    // pid 1 is root's.
    let out = as_nobody("+bpf,+perfmon", &[&tm, "record", "-o", "/dev/null", "1"])
        .output()
        .expect("run setpriv");
    one_line(
        &out,
        "attaching to pid 1, a process of user 0, needs CAP_SYS_PTRACE (missing: CAP_SYS_PTRACE)",
    );
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let out = as_nobody(
        "+perfmon,+sys_ptrace",
        &[
            &tm,
            "record",
            "-o",
            "/dev/null",
            "--",
            "/bin/sh",
            "-c",
            &touch,
        ],
    )
    .output()
    .expect("run setpriv");
    one_line(
        &out,
        "recording needs CAP_BPF and CAP_PERFMON (missing: CAP_BPF); run as root or `",
    );
    assert!(!marker.exists(), "the program ran");
}

/// Under sudo (SUDO_UID, SUDO_GID, SUDO_USER as sudo sets them) a
/// launched program runs as the user who ran sudo, with that user's
/// groups and home, and is traced all the same (a root tracer, a tracee of
/// another user); --as-root keeps root; a malformed SUDO_UID is one line.
#[test]
fn under_sudo_the_program_runs_as_the_user() {
    if !bpf_or_skip("under_sudo") {
        return;
    }
    let dir = tmp().join("under_sudo");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let sudo = [
        ("SUDO_UID", "65534"),
        ("SUDO_GID", "65534"),
        ("SUDO_USER", "nobody"),
    ];
    let who = ["/bin/sh", "-c", "id -u; id -G; echo \"$HOME $USER\""];
    let trace = dir.join("as_user.tmt");
    let out = record_with(&trace, &[], &who, &sudo);
    assert_exit(&out, 0);
    let home = std::str::from_utf8(
        &Command::new("getent")
            .args(["passwd", "nobody"])
            .output()
            .expect("getent")
            .stdout,
    )
    .expect("utf8")
    .split(':')
    .nth(5)
    .expect("a home field")
    .to_string();
    assert_eq!(stdout(&out), format!("65534\n65534\n{home} nobody\n"));
    // Traced through the exec of sh and its children (id).
    let r = report_json(&trace, &[]);
    assert_eq!(r["exit"]["code"], 0, "{r}");
    assert!(r["events"]["by_kind"]["exec"].as_u64() >= Some(3), "{r}");
    assert!(r["events"]["by_kind"]["alloc"].as_u64() >= Some(10), "{r}");
    assert!(
        r["processes"].as_array().is_some_and(|p| p.len() >= 3),
        "{r}"
    );

    let out = record_with(
        &dir.join("as_root.tmt"),
        &["--as-root"],
        &["/usr/bin/id", "-u"],
        &sudo,
    );
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "0\n");
    let out = record_with(
        &dir.join("bad.tmt"),
        &[],
        &["/usr/bin/id", "-u"],
        &[("SUDO_UID", "nobody")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("tm-tui: error: SUDO_UID=\"nobody\" is not a numeric id"),
        "{err}"
    );
}
