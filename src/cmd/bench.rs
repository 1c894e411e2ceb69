//! `tm-tui bench`: what recording costs the target, per malloc+free pair
//! with stacks, measured against the same program untraced in the same
//! run (these machines are noisy: compare within a run, not across runs).

pub mod model;
pub mod probes;
pub mod trace;
pub mod ui;

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cmd::demo;
use crate::cmd::record::{self, RecordArgs};
use crate::cmd::session::{require_caps, ProbeMode, Target};
use crate::event::EventKind;
use crate::trace::read_trace;

/// Allocator libraries the churner is also linked with, where present.
const ALLOCATORS: [(&str, &str); 4] = [
    ("jemalloc", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
    (
        "tcmalloc",
        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    ),
    ("mimalloc", "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"),
    ("static glibc", "-static"),
];

/// Where each allocator probe sits: "malloc +7" past its entry, "+0
/// stepped" where the kernel single-steps it.
fn placements(bin: &str) -> String {
    match crate::recorder::discover::for_program(std::path::Path::new(bin)) {
        Ok(a) => a
            .probes
            .iter()
            .map(|p| {
                format!(
                    "{} +{}{}",
                    p.name,
                    p.skipped,
                    if p.stepped.is_some() { " stepped" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => format!("({e})"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds the target ran, from exec to exit, as the recording saw it.
fn traced_run(bin: &str, pairs: u64, probes: ProbeMode) -> Result<(f64, u64, u64)> {
    traced_with(
        bin,
        pairs,
        probes,
        crate::cmd::session::Tracing {
            as_root: true,
            ..Default::default()
        },
    )
}

/// As [`traced_run`], with `tracing`'s options (following, watchpoints).
fn traced_with(
    bin: &str,
    pairs: u64,
    probes: ProbeMode,
    tracing: crate::cmd::session::Tracing,
) -> Result<(f64, u64, u64)> {
    let out = std::env::temp_dir().join("tm-tui-bench.tmt");
    record::run(RecordArgs {
        limits: crate::trace::Limits::default(),
        target: Target::Command(vec![bin.to_string(), "1".into(), pairs.to_string()]),
        output: out.clone(),
        ringbuf_bytes: 64 << 20,
        probes,
        memory: crate::model::DEFAULT_MEMORY,
        print_crash: true,
        leak_check: false,
        exit_status: false,
        duration: None,
        tracing,
    })?;
    let t = read_trace(&out)?;
    let _ = std::fs::remove_file(&out);
    let exec = t
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Exec { .. }));
    let exit = t
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::ProcessExit { .. }));
    let (Some(a), Some(b)) = (exec, exit) else {
        bail!("the benchmark run recorded no exec/exit");
    };
    Ok((
        (b.ts - a.ts) as f64 / 1e9,
        t.events.len() as u64,
        t.lost.events(),
    ))
}

fn untraced_run(bin: &str, pairs: u64) -> Result<f64> {
    let start = Instant::now();
    let st = Command::new(bin)
        .args(["1", &pairs.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("run the churner")?;
    if !st.success() {
        bail!("the churner failed: {st}");
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Medians of one churner's runs: untraced, recorded, recorded with every
/// probe at its function's entry, bare traps.
struct Churner {
    name: String,
    bin: String,
    base: Vec<f64>,
    traced: Vec<f64>,
    naive: Vec<f64>,
    bare: Vec<f64>,
    /// The churn's own seconds untraced, and under bpftrace (if it ran).
    base_self: Vec<f64>,
    peer: Vec<f64>,
    /// Recorded with children followed, watchpoints off and on (the
    /// default rate): what watching adds.
    follow: Vec<f64>,
    watch: Vec<f64>,
}

/// The churn's own seconds, written by the churner to `file`.
fn churn_secs(file: &std::path::Path) -> Option<f64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// The churner's own time untraced and under bpftrace recording what
/// memleak does (every live block with its user stack in a map, freed
/// blocks deleted) for the allocator at `lib`: `None` where bpftrace is
/// missing or refuses the script.
fn peer_runs(bin: &str, pairs: u64, lib: &str) -> Option<(f64, f64)> {
    let file = std::env::temp_dir().join("tm-tui-bench-churn-secs");
    let _ = std::fs::remove_file(&file);
    let args = [
        "1".to_string(),
        pairs.to_string(),
        file.display().to_string(),
    ];
    let st = Command::new(bin)
        .args(&args)
        .stdout(Stdio::null())
        .status()
        .ok()?;
    let base = st.success().then(|| churn_secs(&file)).flatten()?;
    let _ = std::fs::remove_file(&file);
    let script = format!(
        "uprobe:{lib}:malloc /pid == cpid/ {{ @sz[tid] = arg0; }}
         uretprobe:{lib}:malloc /pid == cpid && @sz[tid]/ {{ @live_sz[retval] = @sz[tid]; @live_st[retval] = ustack; delete(@sz[tid]); }}
         uprobe:{lib}:free /pid == cpid/ {{ delete(@live_sz[arg0]); delete(@live_st[arg0]); }}"
    );
    let st = Command::new("bpftrace")
        .args([
            "-q",
            "-e",
            &script,
            "-c",
            &format!("{bin} {}", args.join(" ")),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    let peer = st.success().then(|| churn_secs(&file)).flatten()?;
    Some((base, peer))
}

pub fn run(pairs: u64, runs: usize) -> Result<i32> {
    require_caps(None)?;
    let runs = runs.max(1);
    let demo = demo::find("threads")?;
    let mut churners = Vec::new();
    let mut flavors = vec![
        ("-O0, frame pointers".to_string(), demo::Flavor::Lab),
        ("-O2, no frame pointers".to_string(), demo::Flavor::Distro),
    ];
    // The allocators Debian ships, where installed (apt install
    // libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0), and glibc linked
    // statically (libc6-dev): -O2, no frame pointers, linked with each.
    for (tag, lib) in ALLOCATORS {
        if lib.starts_with('-') || std::path::Path::new(lib).exists() {
            flavors.push((format!("-O2, {tag}"), demo::Flavor::Linked { lib, tag }));
        }
    }
    for (name, flavor) in flavors {
        let bin = demo::build_as(demo, None, flavor)?;
        churners.push(Churner {
            name,
            bin: bin.to_string_lossy().into_owned(),
            base: Vec::new(),
            traced: Vec::new(),
            naive: Vec::new(),
            bare: Vec::new(),
            base_self: Vec::new(),
            peer: Vec::new(),
            follow: Vec::new(),
            watch: Vec::new(),
        });
    }
    let mut events = 0;
    let mut lost = 0;
    // Interleave the variants so drift in machine load hits all alike.
    for _ in 0..runs {
        for c in &mut churners {
            c.base.push(untraced_run(&c.bin, pairs)?);
            let (t, ev, l) = traced_run(&c.bin, pairs, ProbeMode::Normal)?;
            c.traced.push(t);
            events = ev;
            lost += l;
            c.naive
                .push(traced_run(&c.bin, pairs, ProbeMode::AtEntry)?.0);
            c.bare.push(traced_run(&c.bin, pairs, ProbeMode::Bare)?.0);
            let followed = |watch| crate::cmd::session::Tracing {
                follow: true,
                watch,
                as_root: true,
                ..Default::default()
            };
            c.follow
                .push(traced_with(&c.bin, pairs, ProbeMode::Normal, followed(None))?.0);
            c.watch.push(
                traced_with(
                    &c.bin,
                    pairs,
                    ProbeMode::Normal,
                    followed(Some(crate::cmd::session::DEFAULT_WATCH_RATE)),
                )?
                .0,
            );
            let lib = crate::recorder::discover::for_program(std::path::Path::new(&c.bin))
                .map(|a| a.path.display().to_string());
            if let Some((b, p)) = lib.ok().and_then(|l| peer_runs(&c.bin, pairs, &l)) {
                c.base_self.push(b);
                c.peer.push(p);
            }
        }
    }
    println!("tm-tui bench: {pairs} malloc+free pairs, 1 thread, median of {runs} runs");
    for c in churners {
        let (b, t, n, z) = (
            median(c.base),
            median(c.traced),
            median(c.naive),
            median(c.bare),
        );
        let per_pair = |x: f64| (x - b) / pairs as f64 * 1e6;
        println!("churner built {}:", c.name);
        println!("  probes at: {}", placements(&c.bin));
        println!(
            "  untraced                       {b:8.3} s  {:7.3} µs/pair",
            b / pairs as f64 * 1e6
        );
        println!(
            "  bare probes (kernel traps)     {z:8.3} s  +{:6.3} µs/pair  ({:.1}x untraced)",
            per_pair(z),
            z / b
        );
        println!(
            "  recorded (probes placed)      {t:8.3} s  +{:6.3} µs/pair  ({:.1}x untraced, {:.2}x the bare traps)",
            per_pair(t),
            t / b,
            per_pair(t) / per_pair(z).max(1e-9)
        );
        println!(
            "  recorded (probes at entry)    {n:8.3} s  +{:6.3} µs/pair  ({:.1}x untraced)",
            per_pair(n),
            n / b
        );
        println!(
            "  tm-tui's own work (recorded - bare): {:.3} µs/pair",
            per_pair(t) - per_pair(z)
        );
        let (f, w) = (median(c.follow), median(c.watch));
        println!(
            "  recorded, followed, --watch off {f:8.3} s; watch on (default rate) {w:8.3} s: {:+.1}% ({:.3}x)",
            (w / f - 1.0) * 100.0,
            w / f
        );
        if c.peer.is_empty() {
            println!("  bpftrace (memleak's shape): not available or refused the script");
        } else {
            let p = (median(c.peer) - median(c.base_self)) / pairs as f64 * 1e6;
            println!(
                "  bpftrace, memleak's shape (ustack into a map, no events out): +{p:6.3} µs/pair ({:.2}x tm-tui recorded)",
                p / per_pair(t).max(1e-9)
            );
        }
    }
    println!("  events per recorded run {events}, lost in all runs {lost}");
    Ok(0)
}
