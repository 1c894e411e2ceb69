//! tm-tui: a time-travel crash explorer. This file parses arguments and
//! hands them to a subcommand. The layers, each importing only those
//! above it:
//! - `event` — the vocabulary every layer speaks: owned events, their
//!   kinds and names.
//! - `util` — shared rules: hashing, system libraries, the trampoline.
//! - `recorder` — loads the BPF tracer (bpf/), attaches, polls the ring
//!   buffer and decodes C records into events (all unsafe code); probe
//!   specs, allocator discovery, launch, maps, the unwind tables the
//!   tracer walks stacks with (cfi, tables), signal unwinding, symbols.
//! - `model` — the timeline: heap state and analysis over events, and
//!   their one text rendering (`model::present`); no I/O, no terminal.
//! - `trace` — the append-only `.tmt` file.
//! - `ui` — the terminal UI over a timeline and a feed of updates.
//! - `cmd` — the subcommands wiring them: session, record, live/open,
//!   report, export, demo, bench.

mod cmd;
mod event;
mod model;
// The recorder owns all the unsafe code (BPF maps, ptrace, the launch).
#[allow(unsafe_code)]
mod recorder;
mod trace;
mod ui;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use cmd::{bench, demo, record, report, session};
use recorder::probes;

/// `0.1.0 (1f536b4)`: the version and the git commit built (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TM_GIT_COMMIT"), ")");

/// Record what a live process does with eBPF — allocations, frees, memory
/// maps, fatal signals, with stacks — scrub through it in a terminal UI,
/// and explain its crash.
///
/// `tm-tui PID` attaches and opens the UI; `tm-tui -- CMD ARGS` (or
/// `-c "CMD ARGS"`) launches CMD and opens it. Recording needs CAP_BPF
/// and CAP_PERFMON (root has them); under sudo a launched program runs
/// as the user who ran sudo.
#[derive(Parser, Debug)]
#[command(
    name = "tm-tui",
    version = VERSION,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Write diagnostics to FILE (created or truncated): libbpf's messages,
    /// debug ones included, and tm-tui's warnings, notes and errors, each
    /// stamped with the seconds since the start.
    #[arg(long, value_name = "FILE", global = true)]
    log: Option<PathBuf>,
    /// Process to attach to (opens the UI).
    pid: Option<u32>,
    /// Also write the recording to this trace file (attached: a directory
    /// of segments bounded to 2GiB, see --max-size).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Memory budget of tm-tui (its RSS): the kernel's ring buffer (twice
    /// --ringbuf: it is mapped twice), the unwind tables (40 MiB) and 48 MiB
    /// of its own come out of it, the rest holds the timeline; past it the
    /// oldest events are dropped (live blocks and leak groups stay exact).
    #[arg(long, default_value = "1GiB", value_parser = parse_memory)]
    memory: usize,
    #[command(flatten)]
    bounds: BoundArgs,
    #[command(flatten)]
    tracing: TraceArgs,
    /// Program and arguments to launch, recorded from its first instruction.
    #[arg(last = true)]
    launch: Vec<String>,
    /// The program to launch and its arguments in one string, split as a
    /// shell splits words (quotes, backslashes; no pipes, redirections or
    /// variables): -c "prog a 'b c'" is -- prog a 'b c'.
    #[arg(short = 'c', long = "command", value_name = "\"CMD ARGS\"", conflicts_with_all = ["launch", "pid"])]
    command_line: Option<String>,
}

/// `-c "CMD ARGS"` as words, or the words after `--`.
fn launch_words(line: Option<String>, words: Vec<String>) -> Result<Vec<String>> {
    let Some(line) = line else {
        return Ok(words);
    };
    let words = shlex::split(&line)
        .ok_or_else(|| anyhow::anyhow!("-c {line:?}: unbalanced quotes or a trailing backslash"))?;
    if words.is_empty() {
        bail!("-c: no program in {line:?}");
    }
    Ok(words)
}

/// How much of the recording the trace keeps: a flight recorder's bounds.
#[derive(Args, Debug, Clone)]
struct BoundArgs {
    /// Bound the trace on disk (a flight recorder): -o names a directory
    /// of segments (each 1/8 of the size), the oldest deleted whole past
    /// SIZE. The oldest segment held starts with the blocks live then, so
    /// the heap stays exact. `report`/`open` read the directory. Default:
    /// 2GiB when attaching to a PID (a server runs for days), unbounded
    /// (one file) when launching a program (its recording ends with it)
    /// or writing to stdout, a FIFO or a device. 0: unbounded.
    #[arg(long, value_name = "SIZE", value_parser = parse_max_size)]
    max_size: Option<u64>,
    /// Bound the trace in time: keep the last DURATION (10m, 1h; 1s to
    /// a year) of segments; with --max-size (or its default), whichever
    /// is smaller.
    #[arg(long, value_name = "DURATION", value_parser = parse_keep)]
    keep: Option<std::time::Duration>,
    /// In a bounded recording: the segments holding this long before a
    /// crash or a watchpoint finding are kept apart in DIR/kept-N (a
    /// recording of their own, never deleted by the bounds; at most 8
    /// windows; 0 turns it off; at most a year). Segments the bounds
    /// dropped before the crash are gone: the note then says how much
    /// was kept.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_keep)]
    on_crash_keep: std::time::Duration,
    /// An unbounded trace file restarts as a new part every SIZE,
    /// rounded up to a MiB (parts start on 1 MiB boundaries; a part
    /// that overshoots its boundary runs to the next), each starting
    /// with the blocks live then (as a bounded recording's segments
    /// do): `report --at T` and `open --at T` read from the part before
    /// T, not from the file's start. Each part copies the live heap's
    /// blocks and their stacks, so a part also runs until its events
    /// are 8x that copy (its own and the next one's): with a big live
    /// heap the parts are spaced wider than SIZE, the copies stay
    /// within about 1/9 of the file, and a note says so. 0: never.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_checkpoint)]
    checkpoint: u64,
}

impl BoundArgs {
    /// The bounds of a recording of `target` into `output`: the flags,
    /// or the default (bounded when attached, into a file or directory).
    fn limits(&self, target: &session::Target, output: &std::path::Path) -> Result<trace::Limits> {
        if self
            .keep
            .is_some_and(|k| k < std::time::Duration::from_secs(1))
        {
            bail!("--keep is at least 1s (8 segments of 125 ms)");
        }
        let ns = report::nanos;
        let attached = matches!(target, session::Target::Pid(_));
        let max_bytes = match self.max_size {
            Some(0) => None,
            Some(m) => Some(m),
            None if attached && session::boundable(output) => Some(session::ATTACH_MAX_SIZE),
            None => None,
        };
        let bounded = max_bytes.is_some() || self.keep.is_some();
        if !bounded && self.on_crash_keep != std::time::Duration::from_secs(60) {
            eprintln!("tm-tui: note: --on-crash-keep applies to a bounded recording (--max-size, --keep): ignored");
        }
        Ok(trace::Limits {
            max_bytes,
            // Where a file can be read from a part (not a FIFO or stdout).
            checkpoint: if bounded || !session::boundable(output) {
                0
            } else {
                self.checkpoint
            },
            keep_ns: self.keep.map(ns),
            crash_keep_ns: bounded
                .then_some(self.on_crash_keep)
                .filter(|k| !k.is_zero())
                .map(ns),
        })
    }
}

/// What to trace beyond fatal signals and the process lifecycle, and
/// into how big a kernel buffer.
#[derive(Args, Debug, Clone)]
struct TraceArgs {
    /// Kernel ring buffer size (power of two; e.g. 16MiB, 1GiB).
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    ringbuf: u64,
    /// Probe a function: entry (arguments, stack) and return (value,
    /// duration). NAME, MODULE:NAME (libssl.so:SSL_read), globs (parse_*),
    /// demangled C++/Rust names (ns::server::handle), an optional
    /// signature to type the arguments: 'open_file(str, int) -> long'.
    /// Repeatable. Each probed call costs the target ~3 µs.
    #[arg(long = "probe", value_name = "SPEC", value_parser = probes::Spec::parse)]
    probes: Vec<probes::Spec>,
    /// Probe a function's entry only (arguments, stack; no return value
    /// or duration). Safe on functions that C++ exceptions or Rust panics
    /// unwind through, which a return probe would break. Repeatable.
    #[arg(long = "probe-entry", value_name = "SPEC", value_parser = probes::Spec::parse_entry)]
    probe_entries: Vec<probes::Spec>,
    /// Event families, comma-separated: alloc (malloc & co, ~2.5-5 µs
    /// per malloc+free pair), io (open/read/write/close/fsync/dup…, ~2 µs
    /// per call with its stack), net (connect/accept/send/recv…, as io),
    /// lock (futex waits, as io), sched (off-CPU time: an event per
    /// context switch of the target, the highest rate), or all. Fatal
    /// signals and the process lifecycle are always recorded.
    #[arg(long = "trace", value_name = "FAMILIES", default_value = "alloc",
          value_parser = event::Families::parse)]
    families: event::Families,
    /// Record only the target process, not the children it forks (by
    /// default each child is followed from its first instruction, and
    /// through exec; tm-tui then ptraces the target).
    #[arg(long)]
    no_follow: bool,
    /// Attached: record the target's child processes already running too
    /// (nginx's workers, a prefork server's children), from now on.
    #[arg(long, conflicts_with = "no_follow")]
    children: bool,
    /// Hardware watchpoints on a sample of freed blocks and block ends:
    /// catches a use after free or an overflow that does not crash, as it
    /// happens (on, the default; off). Needs children followed (the
    /// tracer stops a thread for 25-350 µs to arm one).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = ["on", "off"])]
    watch: String,
    /// Watchpoints armed per second at most, of each sort (freed blocks,
    /// block ends): more catches more, at more cost.
    #[arg(long, value_name = "N", default_value_t = session::DEFAULT_WATCH_RATE,
          value_parser = clap::value_parser!(u32).range(1..=100000))]
    watch_rate: u32,
    /// Record every write to ADDR (LEN 1, 2, 4 or 8 bytes, default 8; rw:
    /// reads too) with its stack, as gdb's watch does. Up to 4 addresses
    /// and variables in all; each takes a debug register from sampling.
    #[arg(long = "watch-addr", value_name = "ADDR[:LEN][:w|rw]",
          value_parser = recorder::watch::parse_addr)]
    watch_addrs: Vec<recorder::watch::Asked>,
    /// As --watch-addr, for the global variable NAME of the target's
    /// executable or libraries (its first 8 bytes at most).
    #[arg(long = "watch-var", value_name = "NAME[:w|rw]")]
    watch_vars: Vec<String>,
    /// Under sudo, run a launched program as root. By default it runs as
    /// the user who ran sudo (SUDO_UID, SUDO_GID and that user's groups),
    /// as it would have without tm-tui; tm-tui stays root to trace it.
    #[arg(long)]
    as_root: bool,
}

impl TraceArgs {
    fn tracing(self) -> session::Tracing {
        session::Tracing {
            watch: (self.watch == "on").then_some(self.watch_rate),
            watch_addrs: self.watch_addrs,
            watch_vars: self.watch_vars,
            follow: !self.no_follow,
            children: self.children,
            families: self.families,
            probes: self.probes.into_iter().chain(self.probe_entries).collect(),
            as_root: self.as_root,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Record a running process (PID) or a program you launch (-- CMD ...
    /// or -c "CMD ...") into a trace file (- for stdout), until it exits
    /// or Ctrl-C.
    ///
    /// A process attached is recorded into a directory of segments
    /// bounded to 2GiB (--max-size 0: one unbounded file); a program
    /// launched, into one file. The trace is written by a thread of its
    /// own: when its reader stops reading or its disk stalls for 5 s, or a
    /// write fails (a full disk, a reader gone), tm-tui detaches (the
    /// target runs on, untraced), says why and where the trace ends, and
    /// exits 1.
    Record {
        /// Process to attach to.
        pid: Option<u32>,
        /// Process to attach to (as perf and memleak take it).
        #[arg(short = 'p', long = "pid", value_name = "PID", conflicts_with = "pid")]
        pid_flag: Option<u32>,
        /// Stop after this long (30s, 5m, 1h 30m); a launched program is
        /// killed then, as quitting the UI does.
        #[arg(short = 'd', long, value_parser = report::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Trace file to write; - is stdout (tm-tui's messages, and a
        /// launched program's output, go to stderr).
        #[arg(short, long, default_value = "tm-tui.tmt")]
        output: PathBuf,
        /// Memory budget of tm-tui (its RSS): the kernel's ring buffer (twice
        /// --ringbuf: it is mapped twice), the unwind tables (40 MiB) and 48
        /// MiB of its own come out of it, the rest holds the timeline behind
        /// the live diagnosis (the trace file keeps everything).
        #[arg(long, default_value = "1GiB", value_parser = parse_memory)]
        memory: usize,
        #[command(flatten)]
        tracing: TraceArgs,
        /// Attached (PID): when the recording stops (Ctrl-C), pause the
        /// process (every thread, with ptrace) to scan its memory for leak
        /// kinds, then let it run on; the pause is printed. A launched
        /// program is scanned at its exit without this.
        #[arg(long)]
        leak_check: bool,
        /// Attached (PID): exit with the process's status when it ended
        /// while recorded (128 + the signal when killed, as a shell says);
        /// a launched program's status is always tm-tui's.
        #[arg(long)]
        exit_status: bool,
        #[command(flatten)]
        bounds: BoundArgs,
        /// Program and arguments to launch and record from its first instruction.
        #[arg(last = true)]
        command: Vec<String>,
        /// The program to launch and its arguments in one string, split as
        /// a shell splits words: -c "prog a 'b c'" is -- prog a 'b c'.
        #[arg(short = 'c', long = "command", value_name = "\"CMD ARGS\"",
              conflicts_with_all = ["command", "pid", "pid_flag"])]
        command_line: Option<String>,
    },
    /// Print what a trace file holds: crash, counts, losses, heap, events.
    Report {
        /// Trace file written by `tm-tui record`; - reads stdin.
        file: PathBuf,
        /// The moment to look at, from the start (e.g. 1.250s, 1s 250ms).
        /// Only the recording up to it is read, from the trace's part (or
        /// segment) before it (--window's start): the counts are of that
        /// stretch, the heap at the moment exact (see --checkpoint).
        #[arg(long, value_parser = report::parse_duration)]
        at: Option<std::time::Duration>,
        /// Show the events in this window before the moment (e.g. 200ms).
        #[arg(long, value_parser = report::parse_duration)]
        window: Option<std::time::Duration>,
        /// With --at: read the whole recording (the counts of all of it),
        /// not only the stretch up to the moment.
        #[arg(long, requires = "at")]
        whole: bool,
        /// Machine-readable output (schema in the README).
        #[arg(long)]
        json: bool,
        /// Memory budget for the timeline; past it the oldest events are
        /// dropped (live blocks and leak groups stay exact).
        #[arg(long, default_value = "1GiB", value_parser = parse_memory)]
        memory: usize,
        /// Show only matching events: space-separated terms, all must hold:
        /// kind=free,realloc  tid=4242  func=parse_request  addr=0x7f…
        #[arg(long)]
        filter: Option<String>,
    },
    /// Convert a trace for other tools: `chrome` (Trace Event Format JSON
    /// for Perfetto's UI and chrome://tracing: calls, system calls and
    /// off-CPU time as spans, heap events, signals and findings with their
    /// stacks), `pprof` (the heap at --at for `go tool pprof`: in-use and
    /// allocated bytes and objects by stack), `folded` (live bytes at --at
    /// by stack, for flamegraph.pl and inferno-flamegraph).
    ///
    /// A damaged trace exports what it holds, with a warning.
    #[command(after_help = "Examples:\n  \
        tm-tui export --format chrome app.tmt -o app.json      # open in ui.perfetto.dev\n  \
        tm-tui export --format pprof app.tmt -o heap.pb.gz     # go tool pprof -top heap.pb.gz\n  \
        go tool pprof -http :8080 heap.pb.gz                   # flame graph, sources in a browser\n  \
        tm-tui export --format folded app.tmt -o - | inferno-flamegraph > heap.svg")]
    Export {
        /// Trace file written by `tm-tui record`.
        file: PathBuf,
        /// The output format.
        #[arg(long, value_enum)]
        format: cmd::export::Format,
        /// File to write (`-`: standard output); written whole or not at
        /// all.
        #[arg(short, long)]
        output: PathBuf,
        /// pprof, folded: the heap after the last event at this moment
        /// from the start (as `report --at`: 1.250s, 1s 250ms); default:
        /// the end of the recording.
        /// Only the recording up to it is read, from the trace's part
        /// before it: alloc_space/alloc_objects count from there.
        #[arg(long, value_parser = report::parse_duration)]
        at: Option<std::time::Duration>,
        /// With --at: read the whole recording (alloc_space/alloc_objects
        /// from the start), not only from the part before the moment.
        #[arg(long, requires = "at")]
        whole: bool,
        /// Memory budget for the timeline; past it the oldest events are
        /// dropped (live blocks stay exact).
        #[arg(long, default_value = "1GiB", value_parser = parse_memory)]
        memory: usize,
    },
    /// Benchmarks, measured in one run: `record` — the churner demo
    /// untraced and traced, per malloc+free pair (needs CAP_BPF and CAP_PERFMON); `model` —
    /// the timeline on a synthetic recording (ingest, heap-at-T, history);
    /// `ui` — frame and keypress-to-screen times on that recording;
    /// `probes` — per probed function call and per traced system call
    /// (--pairs of each), against bpftrace; `trace` — encode and decode
    /// cost and bytes per event of the trace file (--events, --runs).
    #[command(hide = true)]
    Bench {
        /// record, model, ui, probes or trace.
        #[arg(default_value = "record", value_parser = ["record", "model", "ui", "probes", "trace"])]
        what: String,
        /// malloc+free pairs per run (record).
        #[arg(long, default_value_t = 300_000)]
        pairs: u64,
        /// Runs of each variant; the median is reported (record, probes,
        /// trace).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Events of the synthetic recording (model, ui, trace).
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Retention: compare ingest with this budget against none (model).
        #[arg(long, value_parser = parse_memory)]
        memory: Option<usize>,
        /// Long-lived blocks the synthetic recording holds besides its
        /// churn (model, ui): one event in ten allocates or frees one.
        #[arg(long, default_value_t = 0)]
        live: u64,
        /// Queries of each kind (model), frames per size (ui).
        #[arg(long, default_value_t = 200)]
        queries: usize,
    },
    /// Build a bundled demo program, launch it and open the UI on it (or,
    /// with --no-ui or without a terminal, record it and print the report).
    Demo {
        /// uaf, double-free, leak, threads, calls (try with --probe) or netio
        /// (try with --trace io,net,lock).
        #[arg(default_value = "uaf")]
        name: String,
        /// Trace file to write.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Only build the demo and print its path.
        #[arg(long)]
        build_only: bool,
        /// Record and print the report instead of opening the UI.
        #[arg(long)]
        no_ui: bool,
        #[command(flatten)]
        tracing: TraceArgs,
    },
    /// Print the manual page (roff): `tm-tui man | man -l -` reads it;
    /// `tm-tui man --dir /usr/local/share/man/man1` installs every page.
    Man {
        /// A subcommand's own page (tm-tui-record(1)) instead of tm-tui(1).
        subcommand: Option<String>,
        /// Write every page (tm-tui.1, tm-tui-record.1, …) into DIR.
        #[arg(long, value_name = "DIR", conflicts_with = "subcommand")]
        dir: Option<PathBuf>,
    },
    /// Print the shell completion script for SHELL: `source <(tm-tui
    /// completions bash)` tries it; the README says where to install it.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Open a saved recording in the UI.
    Open {
        /// Trace file written by `tm-tui record` (or `-o`); - reads stdin
        /// (the keys then come from the terminal).
        file: PathBuf,
        /// Memory budget of the timeline.
        #[arg(long, default_value = "1GiB", value_parser = parse_memory)]
        memory: usize,
        /// Open at this moment, from the start (1.250s, 5m): the reading
        /// starts at the trace's part (or segment) before it, the heap
        /// there exact, and the view holds at the moment.
        #[arg(long, value_parser = report::parse_duration)]
        at: Option<std::time::Duration>,
    },
}

/// Bytes, plain or with a KiB/MiB/GiB (K/M/G) suffix.
fn parse_bytes(s: &str, what: &str, example: &str) -> Result<u64, String> {
    let t = s.trim();
    // Binary units (KiB, MiB, GiB, TiB and K, M, G, T as such) and the
    // decimal ones (KB, MB, GB, TB); a fraction of a unit is allowed.
    let (num, mult) = [
        ("KiB", 1u64 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
        ("KB", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("TB", 1_000_000_000_000),
        ("K", 1 << 10),
        ("M", 1 << 20),
        ("G", 1 << 30),
        ("T", 1 << 40),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suf, m)| t.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((t, 1));
    let num = num.trim();
    let bad = || format!("invalid {what} '{s}' (e.g. {example})");
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| format!("{what} '{s}' is too large"));
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    if !f.is_finite() || f < 0.0 {
        return Err(bad());
    }
    let v = f * mult as f64;
    if v >= u64::MAX as f64 {
        return Err(format!("{what} '{s}' is too large"));
    }
    Ok(v.round() as u64)
}

/// A ring buffer size: a power of two between 4KiB and 2GiB.
/// 0 (unbounded), or at least 8MiB.
fn parse_max_size(s: &str) -> Result<u64, String> {
    let v = parse_bytes(s, "size", "2GiB")?;
    if v != 0 && v < 8 << 20 {
        return Err(format!(
            "--max-size '{s}' is below 8MiB (8 segments of at least 1MiB; 0 is unbounded)"
        ));
    }
    Ok(v)
}

/// The longest `--keep` and `--on-crash-keep`: a year (366 days: `1y`
/// is 365.25). Longer is no time bound at all (a recording's segments
/// would hold no less), and its nanoseconds near u64's end (584 years)
/// would print wrapped.
const MAX_KEEP: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// A duration to keep: at most [`MAX_KEEP`].
fn parse_keep(s: &str) -> Result<std::time::Duration, String> {
    let d = report::parse_duration(s).map_err(|e| format!("{e:#}"))?;
    if d > MAX_KEEP {
        return Err(format!(
            "'{s}' is longer than a year (366d), the most a recording keeps"
        ));
    }
    Ok(d)
}

fn parse_checkpoint(s: &str) -> Result<u64, String> {
    let v = parse_bytes(s, "size", "256MiB")?;
    if v != 0 && v < trace::PART_ALIGN {
        return Err(format!("--checkpoint '{s}' is below 1MiB (0 is never)"));
    }
    Ok(v)
}

fn parse_size(s: &str) -> Result<u64, String> {
    let v = parse_bytes(s, "size", "64MiB")?;
    if !v.is_power_of_two() || !(4096..=(2 << 30)).contains(&v) {
        return Err(format!(
            "size '{s}' must be a power of two between 4KiB and 2GiB"
        ));
    }
    Ok(v)
}

/// A memory budget: at least 16MiB.
fn parse_memory(s: &str) -> Result<usize, String> {
    let v = parse_bytes(s, "memory size", "1GiB, 512MiB")?;
    let v = usize::try_from(v).map_err(|_| format!("memory size '{s}' is too large"))?;
    if v < 16 << 20 {
        return Err(format!("memory size '{s}' is below the minimum of 16MiB"));
    }
    Ok(v)
}

fn run(cli: Cli) -> Result<i32> {
    let Some(command) = cli.command else {
        let launch = launch_words(cli.command_line, cli.launch)?;
        let target = match (cli.pid, launch.is_empty()) {
            (Some(p), true) => session::Target::Pid(p),
            (None, false) => session::Target::Command(launch),
            (Some(_), false) => bail!("give either a PID or -- COMMAND, not both"),
            (None, true) => {
                bail!("nothing to show: give a PID, -- COMMAND ARGS, or a subcommand (see --help)")
            }
        };
        let limits = match &cli.output {
            Some(o) => cli.bounds.limits(&target, o)?,
            None if cli.bounds.max_size.is_some() || cli.bounds.keep.is_some() => {
                bail!("--max-size and --keep bound a trace file: give -o DIR")
            }
            None => trace::Limits::default(),
        };
        cmd::require_tty()?;
        return cmd::live::live(cmd::live::LiveArgs {
            target,
            output: cli.output,
            limits,
            ringbuf_bytes: cli.tracing.ringbuf,
            memory: cli.memory,
            tracing: cli.tracing.tracing(),
        });
    };
    match command {
        Cmd::Man { subcommand, dir } => {
            use clap::CommandFactory;
            cmd::docs::man(Cli::command(), subcommand.as_deref(), dir.as_deref())?;
            Ok(0)
        }
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            cmd::docs::completions(Cli::command(), shell)?;
            Ok(0)
        }
        Cmd::Open { file, memory, at } => {
            cmd::live::open(&file, memory, at)?;
            Ok(0)
        }
        Cmd::Record {
            pid,
            pid_flag,
            duration,
            output,
            memory,
            command,
            command_line,
            tracing,
            leak_check,
            exit_status,
            bounds,
        } => {
            let command = launch_words(command_line, command)?;
            let target = match (pid.or(pid_flag), command.is_empty()) {
                (Some(p), true) => session::Target::Pid(p),
                (None, false) => session::Target::Command(command),
                (Some(_), false) => bail!("give either a PID or -- COMMAND, not both"),
                (None, true) => bail!("nothing to record: give a PID or -- COMMAND ARGS"),
            };
            let limits = bounds.limits(&target, &output)?;
            record::run(record::RecordArgs {
                target,
                output,
                ringbuf_bytes: tracing.ringbuf,
                probes: session::ProbeMode::Normal,
                memory,
                print_crash: true,
                tracing: tracing.tracing(),
                leak_check,
                exit_status,
                duration,
                limits,
            })
        }
        Cmd::Report {
            file,
            at,
            window,
            whole,
            json,
            memory,
            filter,
        } => {
            // Streamed: the events go into the timeline, never all in
            // memory (--memory bounds it whatever the file's size).
            let ns = report::nanos;
            let part = match at {
                Some(at) if !whole => cmd::load::Part::at(
                    &file,
                    ns(at).saturating_sub(window.map_or(0, ns)),
                    ns(at),
                    0,
                )?,
                _ => cmd::load::Part::default(),
            };
            let (t, tl) = cmd::load::read_streaming_part(&file, memory, part)?;
            let sum = report::summary_of(&t, tl);
            let opts = report::Options {
                at,
                window,
                memory,
                filter,
            };
            let text = if json {
                serde_json::to_string_pretty(&report::json_of(&t, &sum, &opts)?)? + "\n"
            } else {
                report::text_of(&t, &sum, &opts)?
            };
            cmd::to_stdout(|w| w.write_all(text.as_bytes()))?;
            cmd::warn_damage(&file, &t, "");
            Ok(0)
        }
        Cmd::Export {
            file,
            format,
            output,
            at,
            whole,
            memory,
        } => {
            let opts = cmd::export::Options {
                format,
                at,
                whole,
                memory,
            };
            cmd::export::run(&file, &output, &opts)?;
            Ok(0)
        }
        Cmd::Bench {
            what,
            pairs,
            runs,
            events,
            queries,
            memory,
            live,
        } => match what.as_str() {
            "model" => bench::model::run(events, queries, memory, live),
            "ui" => bench::ui::run(events, queries, live),
            "probes" => bench::probes::run(pairs, runs),
            "trace" => bench::trace::run(events, runs),
            _ => bench::run(pairs, runs),
        },
        Cmd::Demo {
            name,
            output,
            build_only,
            no_ui,
            tracing,
        } => {
            if output.as_deref().is_some_and(trace::is_std) {
                bail!("demo prints its report on stdout: give -o FILE (or record with `tm-tui record -o -`)");
            }
            let demo = demo::find(&name)?;
            let bin = demo::build(demo, None)?;
            // The demos are built in root's cache, which sudo's user may
            // not reach: they run as root.
            let tracing = TraceArgs {
                as_root: true,
                ..tracing
            };
            if build_only {
                println!("{}", bin.display());
                return Ok(0);
            }
            let ui = !no_ui && cmd::require_tty().is_ok();
            if ui {
                let mut argv = vec![bin.display().to_string()];
                argv.extend(demo.args.iter().map(|a| a.to_string()));
                // Exits as the demo program did (139 for the UAF's SIGSEGV),
                // as `record` does.
                return cmd::live::live(cmd::live::LiveArgs {
                    target: session::Target::Command(argv),
                    output,
                    limits: trace::Limits::default(),
                    ringbuf_bytes: tracing.ringbuf,
                    memory: model::DEFAULT_MEMORY,
                    tracing: tracing.clone().tracing(),
                });
            }
            // Unguessable and private (given to the user who ran sudo).
            let output = match output {
                Some(o) => o,
                None => {
                    let owner = session::sudo_user(false)?.map(|r| (r.uid, r.gid));
                    let prefix = format!("tm-tui-demo-{}-", demo.name);
                    cmd::private_file(&prefix, ".tmt", owner)?.1
                }
            };
            eprintln!("tm-tui: demo '{}': {}", demo.name, demo.about);
            let mut argv = vec![bin.display().to_string()];
            argv.extend(demo.args.iter().map(|a| a.to_string()));
            let status = record::run(record::RecordArgs {
                target: session::Target::Command(argv),
                output: output.clone(),
                ringbuf_bytes: tracing.ringbuf,
                probes: session::ProbeMode::Normal,
                memory: model::DEFAULT_MEMORY,
                print_crash: false,
                leak_check: false,
                exit_status: false,
                duration: None,
                tracing: tracing.tracing(),
                limits: trace::Limits::default(),
            })?;
            let t = trace::read_trace(&output)?;
            println!("\n{}", report::text(&t, &report::Options::default())?);
            eprintln!("tm-tui: trace kept in {}", output.display());
            Ok(status)
        }
    }
}

/// The command line with a leading `--log FILE` (or `--log=FILE`) moved
/// after the subcommand that follows it: `tm-tui --log x record ...`
/// means `tm-tui record --log x ...` (clap refuses any top-level option
/// before a subcommand, the UI's options conflicting with them).
fn hoist_log(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let n = match args.get(1).and_then(|a| a.to_str()) {
        Some("--log") => 2,
        Some(a) if a.starts_with("--log=") => 1,
        _ => return args,
    };
    let cmd = Cli::command();
    let is_sub = args
        .get(1 + n)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a == "help" || cmd.find_subcommand(a).is_some());
    if is_sub && args.len() > 1 + n {
        let log: Vec<_> = args.drain(1..1 + n).collect();
        args.splice(2..2, log);
    }
    args
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(hoist_log(std::env::args_os().collect())) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return ExitCode::from(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    },
                );
            }
            let msg = e.render().to_string();
            let mut lines = msg.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string();
            // "the following required arguments were not provided:" is
            // followed by them, one a line: on the same line here.
            if first.ends_with(':') {
                let named: Vec<&str> = lines
                    .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                    .collect();
                first = format!("{first} {}", named.join(", "));
            }
            eprintln!("tm-tui: error: {first} (see tm-tui --help)");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &cli.log {
        if let Err(e) = util::log::open(path) {
            eprintln!(
                "tm-tui: error: cannot write the log {}: {e}",
                path.display()
            );
            return ExitCode::from(1);
        }
        let args: Vec<String> = std::env::args().collect();
        util::log::line("info", &format!("tm-tui {VERSION}: {}", args.join(" ")));
    }
    match run(cli) {
        Ok(code) => {
            util::log::line("info", &format!("exit status {code}"));
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => {
            util::log::line("error", &format!("{e:#}"));
            eprintln!("tm-tui: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<std::ffi::OsString> {
        v.iter().map(Into::into).collect()
    }

    /// `--keep` past a year is refused in one line, never announced as
    /// a wrapped number; a duration past u64 seconds is an error, not a
    /// panic.
    #[test]
    fn absurd_keeps_are_refused() {
        assert_eq!(parse_keep("1h"), Ok(std::time::Duration::from_secs(3600)));
        assert!(parse_keep("365d").is_ok());
        assert!(parse_keep("1y").is_ok());
        for s in ["999999999h", "367d", "1e300s"] {
            let e = parse_keep(s).unwrap_err();
            assert!(!e.contains('\n') && !e.contains("18446744073"), "{e}");
        }
        let e = Cli::try_parse_from([
            "tm-tui",
            "record",
            "--keep",
            "999999999h",
            "-o",
            "d",
            "--",
            "true",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("longer than a year"), "{e}");
    }

    #[test]
    fn log_before_a_subcommand_moves_after_it() {
        assert_eq!(
            hoist_log(args(&["tm-tui", "--log", "x", "record", "-o", "t"])),
            args(&["tm-tui", "record", "--log", "x", "-o", "t"])
        );
        assert_eq!(
            hoist_log(args(&["tm-tui", "--log=x", "report", "f"])),
            args(&["tm-tui", "report", "--log=x", "f"])
        );
        // The UI's own options stay where they are.
        for kept in [
            &["tm-tui", "--log", "x", "--", "prog"][..],
            &["tm-tui", "--log", "x", "1234"],
            &["tm-tui", "--log"],
            &["tm-tui", "record", "--log", "x"],
        ] {
            assert_eq!(hoist_log(args(kept)), args(kept));
        }
        let cli = Cli::try_parse_from(hoist_log(args(&["tm-tui", "--log", "x", "report", "f"])))
            .expect("parses");
        assert_eq!(cli.log.as_deref(), Some(std::path::Path::new("x")));
        assert!(matches!(cli.command, Some(Cmd::Report { .. })));
    }

    #[test]
    fn sizes_take_binary_and_decimal_units_and_fractions() {
        let p = |s: &str| parse_bytes(s, "size", "2GiB");
        assert_eq!(p("8MiB"), Ok(8 << 20));
        assert_eq!(p("8M"), Ok(8 << 20));
        assert_eq!(p("8MB"), Ok(8_000_000));
        assert_eq!(p("1.5GiB"), Ok(3 << 29));
        assert_eq!(p("1TiB"), Ok(1 << 40));
        assert_eq!(p("4096"), Ok(4096));
        assert_eq!(p("512B"), Ok(512));
        assert!(p("9x").is_err());
        assert!(p("nanMiB").is_err());
        assert!(p("99999999TiB").is_err());
    }

    #[test]
    fn command_string_splits_as_a_shell_does() {
        assert_eq!(
            launch_words(Some(r#"prog a 'b c' "d\"e" f\ g"#.into()), Vec::new()).expect("splits"),
            ["prog", "a", "b c", "d\"e", "f g"]
        );
        assert_eq!(
            launch_words(None, vec!["p".into(), "q".into()]).expect("as given"),
            ["p", "q"]
        );
        assert!(launch_words(Some("prog 'a".into()), Vec::new()).is_err());
        assert!(launch_words(Some("   ".into()), Vec::new()).is_err());
    }
}
