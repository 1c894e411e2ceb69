//! `tm-tui record`: attach to (or launch) a target, stream its events into
//! a trace file, and print the crash the moment it happens.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use crossbeam_channel::RecvTimeoutError;

use crate::cmd::report;
use crate::cmd::session::{self, ProbeMode, Target, Tracing};
use crate::event::{Family, Probe};
use crate::model::Timeline;
use crate::recorder::{now_mono_ns, pause, EndReason};
use crate::trace::TraceWriter;

pub struct RecordArgs {
    pub target: Target,
    pub output: PathBuf,
    pub ringbuf_bytes: u64,
    /// How the allocator is probed (other than `Normal` only to measure).
    pub probes: ProbeMode,
    /// Budget of the in-memory timeline behind the live diagnosis.
    pub memory: usize,
    /// Print the crash and its diagnosis the moment it happens (off when
    /// a full report follows anyway).
    pub print_crash: bool,
    pub tracing: Tracing,
    /// Attached: pause the target at the end to scan it for leak kinds.
    pub leak_check: bool,
    /// Attached: exit with the target's status, when it ended.
    pub exit_status: bool,
    /// Stop recording after this long (a launched program is killed then,
    /// as quitting the UI does).
    pub duration: Option<Duration>,
    /// A bounded recording (`--max-size`, `--keep`): a directory of segments.
    pub limits: crate::trace::Limits,
}

pub fn run(mut args: RecordArgs) -> Result<i32> {
    session::install_sigint()?;
    let timeline = session::timeline_budget(args.memory, args.ringbuf_bytes)?;
    if args.leak_check && matches!(args.target, Target::Pid(_)) && args.tracing.follow {
        // The pause for the scan ptraces the target: the follower cannot.
        eprintln!("tm-tui: note: --leak-check records the attached process alone (children are not followed)");
        args.tracing.follow = false;
    }
    let mut held = None;
    if args.limits.bounded() {
        if crate::trace::is_std(&args.output) {
            anyhow::bail!("--max-size and --keep write a directory of segments, not stdout");
        }
        session::check_ring_output(&args.output)?;
    } else {
        held = session::check_output(&args.output)?;
    }
    // `-o -`: the trace is stdout, so a launched program's output goes to
    // stderr with ours (it would corrupt the trace).
    let to_stdout = crate::trace::is_std(&args.output);
    let stdio = if to_stdout && matches!(args.target, Target::Command(_)) {
        use std::os::fd::AsFd;
        let err = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .context("cannot duplicate stderr")?;
        Some(crate::recorder::launch::Stdio {
            stdin: None,
            output: std::fs::File::from(err),
        })
    } else {
        None
    };
    let out_name = crate::trace::name(&args.output, true);
    let mut session = session::start(
        &args.target,
        args.ringbuf_bytes,
        args.probes,
        stdio,
        &args.tracing,
    )?;
    for w in &session.warnings {
        eprintln!("tm-tui: {w}");
    }
    let writer = match held {
        _ if args.limits.bounded() => {
            TraceWriter::create_ring(&args.output, &session.meta, args.limits)?
        }
        Some(fifo) => TraceWriter::create_on(fifo, &args.output, &session.meta)?,
        None => {
            let mut w = TraceWriter::create(&args.output, &session.meta)?;
            w.checkpoint_every(&session.meta, args.limits.checkpoint);
            w
        }
    };
    let (mut ing, mut tl) = session.ingest(Some(writer), timeline)?;
    let meta = session.meta.clone();
    eprintln!(
        "tm-tui: recording pid {} ({}) into {}{}, {}; Ctrl-C stops",
        meta.pid,
        meta.command,
        out_name,
        session::bound_words(&args.limits)
            .map(|b| format!(", {b}"))
            .unwrap_or_default(),
        if meta.allocator.is_empty() {
            "heap not traced".to_string()
        } else {
            format!("allocator {}", meta.allocator)
        }
    );
    if !tl.probes().is_empty() {
        eprintln!("tm-tui: {}", probes_line(tl.probes()));
    }
    let mut crashed = false;
    let attached = session.child.is_none();
    if args.leak_check && !attached {
        eprintln!("tm-tui: note: --leak-check is for attached processes; a launched program is scanned at its exit anyway");
    }
    // The target is paused, then the recorder sends all it had (every
    // event made before the pause), then its memory is read and it runs
    // on; only then does the recording stop (detaching probes is slow).
    let mut paused: Option<pause::Paused> = None;
    let mut pause_tried = false;
    let deadline = args.duration.map(|d| std::time::Instant::now() + d);
    let mut timed_out = false;
    let end = loop {
        // The trace could not be written on: the probes are detached (the
        // target runs on untraced), the recording ends.
        if ing.failure().is_some() {
            session.recorder.stop();
        }
        if !timed_out && deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            timed_out = true;
            if let Some(c) = session.child.as_mut() {
                c.terminate();
            }
        }
        if (session::interrupted() || timed_out) && paused.is_none() {
            if args.leak_check && attached && !pause_tried {
                pause_tried = true;
                match pause::pause(meta.pid) {
                    Ok(p) => {
                        paused = Some(p);
                        ing.synced = 0;
                        session.recorder.sync();
                    }
                    Err(e) => eprintln!("tm-tui: no leak scan: {e:#}"),
                }
            }
            if paused.is_none() {
                session.recorder.stop();
            }
        }
        let msg = match session.rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                ing.idle();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break EndReason::TargetGone,
        };
        if let Some(reason) = ing.handle(&mut tl, msg)? {
            break reason;
        }
        if ing.synced > 0 {
            if let Some(p) = paused.take() {
                scan_paused(&mut ing, &mut tl, p)?;
                session.recorder.stop();
            }
        }
        if let (Some(c), false) = (tl.crash(), crashed) {
            crashed = true;
            if args.print_crash {
                print_crash(&tl, c, to_stdout);
            }
        }
    };
    if let Some(p) = paused {
        // The recording ended before the recorder synced (the target
        // exited meanwhile): the model has all there was.
        scan_paused(&mut ing, &mut tl, p)?;
    } else if args.leak_check && attached && !pause_tried {
        eprintln!(
            "tm-tui: no leak scan: pid {} ended before the recording was stopped",
            meta.pid
        );
    }
    // A launched child ends with us (Ctrl-C reaches its process group too).
    let launched = session.child.is_some();
    let watcher = session.watcher.clone();
    let (exit_status, written) = session.finish(&mut ing, &mut tl, true)?;
    let failed = ing.failure_line(&meta);
    for n in &ing.notes {
        eprintln!("tm-tui: note: {n}");
    }
    let lost = &tl.lost();
    let secs = (now_mono_ns() - meta.start_mono_ns) as f64 / 1e9;
    eprintln!(
        "tm-tui: {} events in {secs:.3}s, lost {}{}; {}; {}; trace {} ({}{})",
        tl.store().end(),
        lost.summary(),
        if lost.events() + lost.stacks() > 0 {
            " (see tm-tui report)"
        } else {
            ""
        },
        if meta.families.has(Family::Alloc) {
            format!(
                "heap at end: {} live blocks, {} bytes",
                tl.processes()[0].heap.live_blocks,
                tl.processes()[0].heap.live_bytes
            )
        } else {
            "heap not traced (no alloc in --trace)".to_string()
        },
        match (exit_status, &end) {
            (Some(s), _) => format!("target {s}"),
            (None, EndReason::Stopped) if failed.is_some() => "detached".to_string(),
            (None, EndReason::Stopped) => "stopped by user".to_string(),
            (None, _) => "target gone".to_string(),
        },
        out_name,
        // What reached the file is not known once its writer gave up
        // (the queue's bytes were handed on, not written): the error
        // line says where the trace ends.
        if failed.is_some() {
            "cut short".to_string()
        } else {
            format!("{} KiB", written / 1024)
        },
        match ing.segments_dropped() {
            None => String::new(),
            Some(0) => ", bounded: nothing dropped".to_string(),
            Some(n) => format!(", bounded: {n} oldest segment(s) dropped"),
        }
    );
    if let Some(st) = watcher.as_ref().and_then(|c| c.get()).map(|w| w.stats()) {
        let findings = tl.findings();
        eprintln!(
            "tm-tui: watchpoints: {} armed (mean {:.0} µs from claim to armed, the thread stopped), on {} thread(s){}; {} finding(s){}",
            st.arms,
            st.arm_ns as f64 / st.arms.max(1) as f64 / 1e3,
            st.threads,
            if st.threads_failed > 0 {
                format!(
                    ", {} without (no debug register or file descriptor left)",
                    st.threads_failed
                )
            } else {
                String::new()
            },
            findings.len(),
            findings
                .first()
                .map(|f| format!(": {}", f.diagnosis.summary))
                .unwrap_or_default()
        );
    }
    if let Some(k) = tl.leak_scan() {
        use strum::IntoEnumIterator;
        let kinds: Vec<String> = crate::event::LeakKind::iter()
            .map(|kind| {
                let t = k.total(kind);
                format!("{} {} B in {} blocks", kind.words(), t.bytes, t.blocks)
            })
            .collect();
        eprintln!(
            "tm-tui: leak scan of pid {}: {}",
            k.scan.pid,
            kinds.join(", ")
        );
    }
    if let Some(line) = failed {
        anyhow::bail!("{line}");
    }
    Ok(match (launched || args.exit_status, exit_status) {
        (true, Some(s)) => s.shell_code(),
        // Ctrl-C before the launched program's end was known: as a shell
        // says of an interrupted command.
        (true, None) if session::interrupted() => 130,
        _ => 0,
    })
}

/// Scans the paused target, lets it go and says for how long it stopped.
fn scan_paused(ing: &mut session::Ingest, tl: &mut Timeline, p: pause::Paused) -> Result<()> {
    let r = ing.leak_scan(tl, &p.request());
    let pid = p.pid;
    let took = p.resume();
    eprintln!(
        "tm-tui: pid {pid} was paused {} to scan its memory for leaks, and runs on",
        crate::model::diagnose::fmt_ns(took.as_nanos() as u64)
    );
    r
}

/// `probing 3 functions: f (prog), g (libx.so.1), …` (the first 8).
pub fn probes_line(probes: &[Probe]) -> String {
    let shown: Vec<String> = probes
        .iter()
        .take(8)
        .map(|p| {
            format!(
                "{} ({}{})",
                p.func,
                p.module_name(),
                if p.returns { "" } else { ", entry only" }
            )
        })
        .collect();
    format!(
        "probing {} function{}: {}{}",
        probes.len(),
        if probes.len() == 1 { "" } else { "s" },
        shown.join(", "),
        if probes.len() > 8 { ", …" } else { "" }
    )
}

/// The crash block and its diagnosis, on stdout the moment it happens
/// (on stderr when stdout is the trace).
fn print_crash(tl: &Timeline, crash: u64, to_stderr: bool) {
    let Some(ev) = tl.store().get(crash) else {
        return;
    };
    let from = crash
        .saturating_sub(report::DEFAULT_LAST as u64)
        .max(tl.store().first());
    let before: Vec<_> = (from..crash)
        .filter_map(|i| Some((i, tl.store().get(i)?)))
        .collect();
    let mut text = report::crash_block(tl, crash, &ev, &before);
    if let Some(d) = tl.diagnosis() {
        text.push('\n');
        text.push_str(&d.text(tl));
    }
    if to_stderr {
        eprintln!("{text}");
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}
