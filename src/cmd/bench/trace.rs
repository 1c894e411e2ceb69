//! `tm-tui bench trace`: what the trace file costs per event — encode
//! (the recorder's hot path: `TraceWriter::write_event` into its reused
//! buffer, framed, checksummed and buffered to a file) and decode
//! (`read_trace`), and bytes per event on disk.

use std::time::Instant;

use anyhow::{bail, Result};

use crate::cmd::bench::median;
use crate::cmd::bench::model::{Rng, Synth};
use crate::event::{Arg, CallInfo, Event, EventKind, Meta};
use crate::trace::{read_trace, TraceWriter, FORMAT_VERSION};

/// Probed calls and their returns, 2 arguments each, on 8 threads.
fn calls(n: u64) -> Vec<Event> {
    let mut rng = Rng(7);
    let mut ts = 1_000_000_000u64;
    (0..n)
        .map(|i| {
            ts += 50 + rng.below(500);
            let tid = 1000 + rng.below(8) as u32;
            let sp = 0x7ffd_0000_0000 - 0x100 * rng.below(12);
            let kind = if i % 2 == 0 {
                EventKind::Call(Box::new(CallInfo {
                    probe: rng.below(16) as u32,
                    args: vec![Arg::Int(rng.below(100) as i64), Arg::Ptr(0x5555_0000_0000)],
                    sp,
                    stack: Some(rng.below(330) as u32),
                    ret_addr: 0x40_1000,
                }))
            } else {
                EventKind::Return {
                    probe: rng.below(16) as u32,
                    ret: rng.below(8),
                    sp: sp + 8,
                }
            };
            Event {
                ts,
                pid: 0,
                tid,
                kind,
            }
        })
        .collect()
}

/// (encode ns/event, decode ns/event, bytes/event) of one run.
fn once(events: &[Event]) -> Result<(f64, f64, f64)> {
    let path = std::env::temp_dir().join(format!("tm-tui-bench-trace-{}.tmt", std::process::id()));
    let n = events.len() as f64;
    let mut w = TraceWriter::create(&path, &Meta::default())?;
    let before = w.bytes_written();
    let t0 = Instant::now();
    for e in events {
        w.write_event(e)?;
    }
    // Ended, or the file reads as cut short (damage).
    w.write_end(0, None)?;
    let enc = t0.elapsed().as_secs_f64() * 1e9 / n;
    let bytes = (w.bytes_written() - before) as f64 / n;
    drop(w);
    let t0 = Instant::now();
    let t = read_trace(&path)?;
    let dec = t0.elapsed().as_secs_f64() * 1e9 / n;
    let _ = std::fs::remove_file(&path);
    if t.events.len() != events.len() || t.damage.is_some() {
        bail!("the trace did not read back whole");
    }
    Ok((enc, dec, bytes))
}

pub fn run(events: u64, runs: usize) -> Result<i32> {
    if events < 1000 {
        bail!("--events must be at least 1000");
    }
    let runs = runs.max(1);
    let mut synth = Synth::new();
    let heap: Vec<Event> = (0..events).map(|_| synth.event()).collect();
    let calls = calls(events);
    println!(
        "tm-tui bench trace: format version {FORMAT_VERSION}, {events} events per mix, median and best of {runs} runs"
    );
    for (name, evs) in [
        ("heap (alloc/free/realloc)", &heap),
        ("calls (call/return)", &calls),
    ] {
        let (mut enc, mut dec, mut bytes) = (Vec::new(), Vec::new(), 0.0);
        for _ in 0..runs {
            let (e, d, b) = once(evs)?;
            enc.push(e);
            dec.push(d);
            bytes = b;
        }
        let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "  {name:<26} encode {:6.1} ns/event (best {:6.1})  decode {:6.1} ns/event (best {:6.1})  \
             {bytes:6.2} bytes/event",
            median(enc.clone()),
            best(&enc),
            median(dec.clone()),
            best(&dec)
        );
    }
    Ok(0)
}
