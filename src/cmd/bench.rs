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
use crate::cmd::session::{require_root, ProbeMode, Target};
use crate::event::EventKind;
use crate::trace::read_trace;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds the target ran, from exec to exit, as the recording saw it.
fn traced_run(bin: &str, pairs: u64, probes: ProbeMode) -> Result<(f64, u64, u64)> {
    let out = std::env::temp_dir().join("tm-tui-bench.tmt");
    record::run(RecordArgs {
        target: Target::Command(vec![bin.to_string(), "1".into(), pairs.to_string()]),
        output: out.clone(),
        ringbuf_bytes: 64 << 20,
        probes,
        memory: crate::model::DEFAULT_MEMORY,
        print_crash: true,
        tracing: Default::default(),
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

/// Medians of one churner's runs: untraced, recorded, recorded with free
/// probed at entry, bare traps.
struct Churner {
    name: &'static str,
    bin: String,
    base: Vec<f64>,
    traced: Vec<f64>,
    naive: Vec<f64>,
    bare: Vec<f64>,
}

pub fn run(pairs: u64, runs: usize) -> Result<i32> {
    require_root()?;
    let runs = runs.max(1);
    let demo = demo::find("threads")?;
    let mut churners = Vec::new();
    for (name, flavor) in [
        ("-O0, frame pointers", demo::Flavor::Lab),
        ("-O2, no frame pointers", demo::Flavor::Distro),
    ] {
        churners.push(Churner {
            name,
            bin: demo::build_as(demo, None, flavor)?
                .to_string_lossy()
                .into_owned(),
            base: Vec::new(),
            traced: Vec::new(),
            naive: Vec::new(),
            bare: Vec::new(),
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
                .push(traced_run(&c.bin, pairs, ProbeMode::FreeAtEntry)?.0);
            c.bare.push(traced_run(&c.bin, pairs, ProbeMode::Bare)?.0);
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
            "  recorded (free past NULL test) {t:8.3} s  +{:6.3} µs/pair  ({:.1}x untraced, {:.2}x the bare traps)",
            per_pair(t),
            t / b,
            per_pair(t) / per_pair(z).max(1e-9)
        );
        println!(
            "  recorded (free at entry)       {n:8.3} s  +{:6.3} µs/pair  ({:.1}x untraced)",
            per_pair(n),
            n / b
        );
        println!(
            "  tm-tui's own work (recorded - bare): {:.3} µs/pair",
            per_pair(t) - per_pair(z)
        );
    }
    println!("  events per recorded run {events}, lost in all runs {lost}");
    Ok(0)
}
