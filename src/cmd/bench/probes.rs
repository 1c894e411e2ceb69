//! `tm-tui bench probes`: what a probed function call (entry + return +
//! arguments + stack) and a traced system call cost the target, measured
//! as the allocator's are: the same loop untraced and traced in one run,
//! the loop timing itself, medians of interleaved runs; bpftrace with
//! equivalent probes as the peer.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::cmd::demo;
use crate::cmd::record::{self, RecordArgs};
use crate::cmd::session::{require_caps, ProbeMode, Target, Tracing};
use crate::event::{Families, Family};
use crate::recorder::probes::Spec;
use crate::trace::read_trace;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn loop_ns(out: &Path) -> Result<f64> {
    let s = std::fs::read_to_string(out).context("the loop wrote no time")?;
    s.trim()
        .parse::<f64>()
        .context("the loop's time is not a number")
}

/// The loop's ns, events recorded and lost, under tm-tui.
fn traced(bin: &str, mode: &str, n: u64, tracing: Tracing) -> Result<(f64, u64, u64)> {
    let dir = std::env::temp_dir();
    let (trace, out) = (
        dir.join("tm-tui-bench-probes.tmt"),
        dir.join("tm-tui-bench-loop"),
    );
    record::run(RecordArgs {
        limits: crate::trace::Limits::default(),
        target: Target::Command(vec![
            bin.into(),
            mode.into(),
            n.to_string(),
            out.display().to_string(),
        ]),
        output: trace.clone(),
        ringbuf_bytes: 256 << 20,
        probes: ProbeMode::Normal,
        memory: crate::model::DEFAULT_MEMORY,
        print_crash: true,
        leak_check: false,
        exit_status: false,
        duration: None,
        tracing,
    })?;
    let t = read_trace(&trace)?;
    let _ = std::fs::remove_file(&trace);
    Ok((loop_ns(&out)?, t.events.len() as u64, t.lost.events()))
}

fn untraced(bin: &str, mode: &str, n: u64) -> Result<f64> {
    let out = std::env::temp_dir().join("tm-tui-bench-loop");
    let st = Command::new(bin)
        .args([mode, &n.to_string(), &out.display().to_string()])
        .status()
        .context("run the loop")?;
    if !st.success() {
        bail!("the loop failed: {st}");
    }
    loop_ns(&out)
}

/// The loop under bpftrace running `script` (None if bpftrace is missing
/// or refuses the script).
fn bpftrace(bin: &str, mode: &str, n: u64, script: &str) -> Option<f64> {
    let out = std::env::temp_dir().join("tm-tui-bench-loop-bt");
    let _ = std::fs::remove_file(&out);
    let cmd = format!("{bin} {mode} {n} {}", out.display());
    let st = Command::new("bpftrace")
        .args(["-q", "-e", script, "-c", &cmd])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    if !st.success() {
        return None;
    }
    loop_ns(&out).ok()
}

pub fn run(calls: u64, runs: usize) -> Result<i32> {
    require_caps(None)?;
    let runs = runs.max(1);
    let bin = demo::build(demo::find("callbench")?, None)?;
    let bin = bin.to_string_lossy().into_owned();
    let probe =
        |s: &str| -> Result<Vec<Spec>> { Ok(vec![Spec::parse(s).map_err(anyhow::Error::msg)?]) };
    let only = |f: Option<Family>| match f {
        Some(f) => Families::none().with(f),
        None => Families::none(),
    };
    let variants_call: Vec<(&str, Tracing)> = vec![
        (
            "probe work (3 args, stack)",
            Tracing {
                follow: true,
                children: false,
                watch: None,
                watch_addrs: Vec::new(),
                watch_vars: Vec::new(),
                families: only(None),
                probes: probe("work")?,
                // Bench programs are built in root's cache.
                as_root: true,
            },
        ),
        (
            "probe work(str, int) (+ a string)",
            Tracing {
                follow: true,
                children: false,
                watch: None,
                watch_addrs: Vec::new(),
                watch_vars: Vec::new(),
                families: only(None),
                probes: probe("work(str, int)")?,
                // Bench programs are built in root's cache.
                as_root: true,
            },
        ),
    ];
    let variants_write: Vec<(&str, Tracing)> = vec![
        (
            "no family (mmap & co filtered)",
            Tracing {
                follow: true,
                children: false,
                watch: None,
                watch_addrs: Vec::new(),
                watch_vars: Vec::new(),
                families: only(None),
                probes: Vec::new(),
                // Bench programs are built in root's cache.
                as_root: true,
            },
        ),
        (
            "--trace io",
            Tracing {
                follow: true,
                children: false,
                watch: None,
                watch_addrs: Vec::new(),
                watch_vars: Vec::new(),
                families: only(Some(Family::Io)),
                probes: Vec::new(),
                // Bench programs are built in root's cache.
                as_root: true,
            },
        ),
    ];
    let bt_call = format!(
        "uprobe:{bin}:work {{ @s[tid] = nsecs; @c[ustack] = count(); }} \
         uretprobe:{bin}:work /@s[tid]/ {{ @d = hist(nsecs - @s[tid]); delete(@s[tid]); }}"
    );
    let bt_write = "tracepoint:syscalls:sys_enter_write /pid == cpid/ { @s[tid] = nsecs; } \
         tracepoint:syscalls:sys_exit_write /pid == cpid && @s[tid]/ \
         { @d = hist(nsecs - @s[tid]); delete(@s[tid]); }"
        .to_string();
    for (mode, what, variants, bt, bt_what) in [
        (
            "call",
            "calls of work()",
            variants_call,
            bt_call,
            "bpftrace, entry+return+ustack",
        ),
        (
            "write",
            "write(2)s to /dev/null",
            variants_write,
            bt_write,
            "bpftrace, enter+exit tracepoints",
        ),
    ] {
        let mut base = Vec::new();
        let mut got: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        let mut bts = Vec::new();
        let (mut events, mut lost) = (vec![0; variants.len()], 0);
        for _ in 0..runs {
            base.push(untraced(&bin, mode, calls)?);
            for (i, (_, t)) in variants.iter().enumerate() {
                let (ns, ev, l) = traced(&bin, mode, calls, t.clone())?;
                got[i].push(ns);
                events[i] = ev;
                lost += l;
            }
            if let Some(ns) = bpftrace(&bin, mode, calls, &bt) {
                bts.push(ns);
            }
        }
        let b = median(base);
        let per = |ns: f64| (ns - b) / calls as f64 / 1e3;
        println!("tm-tui bench probes: {calls} {what}, median of {runs} runs (loop time only)");
        println!(
            "  untraced                            {:8.3} ms  {:7.3} µs each",
            b / 1e6,
            b / calls as f64 / 1e3
        );
        for (i, (name, _)) in variants.iter().enumerate() {
            let t = median(got[i].clone());
            println!(
                "  {name:<35} {:8.3} ms  +{:6.3} µs each  ({:.1}x untraced, {} events)",
                t / 1e6,
                per(t),
                t / b,
                events[i]
            );
        }
        if bts.is_empty() {
            println!("  {bt_what:<35} (bpftrace not available or refused the script)");
        } else {
            let t = median(bts);
            println!(
                "  {bt_what:<35} {:8.3} ms  +{:6.3} µs each  ({:.1}x untraced)",
                t / 1e6,
                per(t),
                t / b
            );
        }
        println!("  lost in all runs {lost}");
    }
    Ok(0)
}
