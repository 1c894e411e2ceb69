//! `tm-tui bench model`: the timeline model on a synthetic recording —
//! ingest rate, heap-at-T, block history, density histogram, resident
//! bytes per event — against the targets of the model issue.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::event::{AllocFn, Event, EventKind, Frame, Meta, Stack};
use crate::model::store::Filter;
use crate::model::summary::Order;
use crate::model::Timeline;
pub(crate) use crate::util::xorshift::Rng;

const THREADS: usize = 8;
/// Sizes handed out, with weights: mostly small, a few large.
const SIZES: [(u64, u64); 10] = [
    (16, 20),
    (32, 20),
    (48, 10),
    (64, 15),
    (128, 10),
    (256, 10),
    (1024, 8),
    (4096, 5),
    (65536, 1),
    (300_000, 1),
];

/// An allocator simulation: per-size free lists so addresses are reused
/// the way a real allocator reuses them; 1% of blocks leak.
pub(crate) struct Synth {
    rng: Rng,
    ts: u64,
    next_addr: u64,
    free: HashMap<u64, Vec<u64>>,
    live: Vec<Vec<(u64, u64)>>,
    leaked: u64,
    leaked_bytes: u64,
    /// Long-lived blocks held at about `keep_target` (`--live`): one event
    /// in ten allocates into or frees from this pool.
    keep: Vec<(u64, u64)>,
    keep_target: usize,
}

impl Synth {
    pub fn new() -> Self {
        Self::with_live(0)
    }

    /// A recording whose live set grows to about `live` long-lived blocks
    /// (and then turns over slowly) besides the churn.
    pub fn with_live(live: u64) -> Self {
        Synth {
            keep: Vec::new(),
            keep_target: live as usize,
            rng: Rng(0x2545_f491_4f6c_dd1d),
            ts: 1_000_000_000,
            next_addr: 0x5555_0000_0000,
            free: HashMap::new(),
            live: vec![Vec::new(); THREADS],
            leaked: 0,
            leaked_bytes: 0,
        }
    }

    fn size(&mut self) -> u64 {
        let total: u64 = SIZES.iter().map(|s| s.1).sum();
        let mut r = self.rng.below(total);
        for (size, w) in SIZES {
            if r < w {
                return size;
            }
            r -= w;
        }
        16
    }

    fn addr(&mut self, size: u64) -> u64 {
        if let Some(a) = self.free.get_mut(&size).and_then(Vec::pop) {
            return a;
        }
        let a = self.next_addr;
        self.next_addr += size.next_multiple_of(16) + 16;
        a
    }

    pub fn event(&mut self) -> Event {
        self.ts += 20 + self.rng.below(160);
        let t = self.rng.below(THREADS as u64) as usize;
        let tid = 1000 + t as u32;
        let n = self.live[t].len();
        let r = self.rng.below(100);
        let kind = if self.keep_target > 0 && r >= 90 {
            self.keep_event()
        } else if n > 0 && r < 2 {
            // realloc a live block to another size.
            let k = self.rng.below(n as u64) as usize;
            let (old, old_size) = self.live[t].swap_remove(k);
            self.free.entry(old_size).or_default().push(old);
            let size = self.size();
            let ptr = self.addr(size);
            self.live[t].push((ptr, size));
            EventKind::Realloc {
                func: AllocFn::Realloc,
                old,
                ptr,
                size,
                stack: Some(300 + self.rng.below(20) as u32),
            }
        } else if n < 32 || (n < 4096 && r < 51) {
            let size = self.size();
            let ptr = self.addr(size);
            let leak = self.rng.below(100) == 0;
            let stack = if leak {
                self.leaked += 1;
                self.leaked_bytes += size;
                100 + self.rng.below(10) as u32
            } else {
                self.live[t].push((ptr, size));
                self.rng.below(100) as u32
            };
            EventKind::Alloc {
                func: AllocFn::Malloc,
                ptr,
                size,
                stack: Some(stack),
            }
        } else {
            let k = self.rng.below(n as u64) as usize;
            let (ptr, size) = self.live[t].swap_remove(k);
            self.free.entry(size).or_default().push(ptr);
            EventKind::Free {
                ptr,
                stack: Some(200 + self.rng.below(50) as u32),
            }
        };
        Event {
            ts: self.ts,
            pid: 0,
            tid,
            kind,
        }
    }

    /// An allocation into the long-lived pool while it is short of its
    /// target, else the free of one of its blocks at random.
    fn keep_event(&mut self) -> EventKind {
        if self.keep.len() < self.keep_target {
            let size = self.size();
            let ptr = self.addr(size);
            self.keep.push((ptr, size));
            EventKind::Alloc {
                func: AllocFn::Malloc,
                ptr,
                size,
                stack: Some(150 + self.rng.below(100) as u32),
            }
        } else {
            let k = self.rng.below(self.keep.len() as u64) as usize;
            let (ptr, size) = self.keep.swap_remove(k);
            self.free.entry(size).or_default().push(ptr);
            EventKind::Free {
                ptr,
                stack: Some(250 + self.rng.below(50) as u32),
            }
        }
    }

    pub(crate) fn live_blocks(&self) -> u64 {
        self.live.iter().map(|v| v.len() as u64).sum::<u64>() + self.leaked + self.keep.len() as u64
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

pub(crate) fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    (p(0.5), p(0.99), v[v.len() - 1])
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

pub fn run(events: u64, queries: usize, memory: Option<usize>, live: u64) -> Result<i32> {
    if events < 1000 {
        bail!("--events must be at least 1000");
    }
    if let Some(m) = memory {
        return retention(events, m);
    }
    let mut tl = Timeline::with_budget(Meta::default(), usize::MAX);
    add_stacks(&mut tl);
    let mut synth = Synth::with_live(live);
    let rss0 = rss_bytes();
    let ingest = fill(&mut tl, &mut synth, events);
    let rss = rss_bytes().saturating_sub(rss0);
    let rate = events as f64 / ingest.as_secs_f64();
    let code = report_model(&tl, &synth, events, queries, rss, rate)?;
    drop(tl);
    calls((events / 5).max(1000), queries);
    Ok(code)
}

/// Probed calls: `events` call and return events on 8 threads, nesting
/// up to 12 deep with recursion, 1% left by longjmp; ingest rate, bytes
/// per event and the call path of random events.
fn calls(events: u64, queries: usize) {
    let mut tl = Timeline::with_budget(Meta::default(), usize::MAX);
    for id in 0..16u32 {
        tl.add_probe(crate::event::Probe {
            id,
            func: format!("f{id}"),
            module: "/bench".into(),
            offset: u64::from(id) * 64,
            args: vec![crate::event::ValueType::Auto; 2],
            ret: crate::event::ValueType::Auto,
            returns: true,
        });
    }
    let mut rng = Rng(7);
    // Per thread: open calls (probe, sp).
    let mut open: Vec<Vec<(u32, u64)>> = vec![Vec::new(); THREADS];
    let mut batch = Vec::with_capacity(events as usize);
    let mut ts = 1_000_000_000u64;
    while (batch.len() as u64) < events {
        ts += 50 + rng.below(500);
        let t = rng.below(THREADS as u64) as usize;
        let tid = 1000 + t as u32;
        let depth = open[t].len();
        let kind = if depth > 0 && (depth >= 12 || rng.below(2) == 0) {
            if rng.below(100) == 0 && depth > 2 {
                // longjmp out of two frames: only the third returns.
                open[t].pop();
                open[t].pop();
            }
            let Some((probe, sp)) = open[t].pop() else {
                continue;
            };
            EventKind::Return {
                probe,
                ret: rng.below(8),
                sp: sp + 8,
            }
        } else {
            let probe = rng.below(16) as u32;
            let sp = 0x7ffd_0000_0000 - 0x100 * (depth as u64 + 1);
            open[t].push((probe, sp));
            EventKind::Call(Box::new(crate::event::CallInfo {
                probe,
                args: vec![
                    crate::event::Arg::Int(rng.below(100) as i64),
                    crate::event::Arg::Ptr(0x5555_0000_0000),
                ],
                sp,
                stack: Some(rng.below(330) as u32),
                ret_addr: 0x40_1000,
            }))
        };
        batch.push(Event {
            ts,
            pid: 0,
            tid,
            kind,
        });
    }
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    for e in &batch {
        tl.push(e);
    }
    let ingest = t0.elapsed();
    let rss = rss_bytes().saturating_sub(rss0);
    let mut times = Vec::with_capacity(queries);
    let mut depth_sum = 0;
    for _ in 0..queries {
        let i = rng.below(events);
        let t = Instant::now();
        depth_sum += tl.call_path(i).len();
        times.push(t.elapsed());
    }
    let (p50, p99, max) = stats(times);
    println!(
        "calls: {events} call/return events, 8 threads, up to 12 deep: ingest {:.2} M events/s, \
         {:.1} B/event resident (model {:.1}); call path p50 {} p99 {} max {} (mean depth {:.1})",
        events as f64 / ingest.as_secs_f64() / 1e6,
        rss as f64 / events as f64,
        tl.bytes() as f64 / events as f64,
        ms(p50),
        ms(p99),
        ms(max),
        depth_sum as f64 / queries.max(1) as f64
    );
}

/// Ingest with the retention budget dropping the oldest chunks, against
/// the same recording kept whole, in one run.
fn retention(events: u64, memory: usize) -> Result<i32> {
    let mut rates = Vec::new();
    for budget in [usize::MAX, memory] {
        let mut tl = Timeline::with_budget(Meta::default(), budget);
        add_stacks(&mut tl);
        let mut synth = Synth::new();
        let t = fill(&mut tl, &mut synth, events);
        let exact = tl.heap().live_blocks() == synth.live_blocks();
        rates.push((events as f64 / t.as_secs_f64(), tl.store().dropped, exact));
    }
    let (whole, _, _) = rates[0];
    let (kept, dropped, exact) = rates[1];
    println!(
        "retention: ingest {:.2} M events/s keeping everything, {:.2} M events/s with a {} MiB budget ({dropped} events dropped; {:.2}x); live blocks exact: {}",
        whole / 1e6,
        kept / 1e6,
        memory >> 20,
        kept / whole,
        verdict(exact)
    );
    Ok(0)
}

/// Interned stacks: 330 sites of 12 frames.
pub(crate) fn add_stacks(tl: &mut Timeline) {
    for id in 0..330u32 {
        tl.add_stack(Stack {
            id,
            frames: (0..12)
                .map(|d| Frame {
                    addr: 0x40_0000 + u64::from(id) * 64 + d,
                    func: Some(format!("site_{id}_{d}")),
                    ..Frame::default()
                })
                .collect(),
            end: crate::event::StackEnd::Complete,
        });
    }
}

/// Pushes `events` synthetic events; returns the time spent in push.
pub(crate) fn fill(tl: &mut Timeline, synth: &mut Synth, events: u64) -> Duration {
    let mut batch = Vec::with_capacity(1 << 16);
    let mut ingest = Duration::ZERO;
    let mut left = events;
    while left > 0 {
        batch.clear();
        let n = left.min(1 << 16);
        batch.extend((0..n).map(|_| synth.event()));
        let t0 = Instant::now();
        for e in &batch {
            tl.push(e);
        }
        ingest += t0.elapsed();
        left -= n;
    }
    ingest
}

fn report_model(
    tl: &Timeline,
    synth: &Synth,
    events: u64,
    queries: usize,
    rss: u64,
    rate: f64,
) -> Result<i32> {
    println!(
        "synthetic recording: {events} allocator events, {THREADS} threads, 1% of blocks leaked, {} long-lived blocks held (--live)",
        synth.keep_target
    );
    println!(
        "exactness: live blocks model {} / generator {}  ({})",
        tl.heap().live_blocks(),
        synth.live_blocks(),
        verdict(tl.heap().live_blocks() == synth.live_blocks())
    );
    let (t_first, t_last) = tl.span().unwrap_or((0, 0));
    let mut rng = Rng(42);

    // Heap at a random instant.
    let mut heap_t = Vec::with_capacity(queries);
    let mut live_seen = 0;
    for _ in 0..queries {
        let i = rng.below(events);
        let t0 = Instant::now();
        let blocks = tl.heap_after(i).unwrap_or_default();
        heap_t.push(t0.elapsed());
        live_seen += blocks.len();
    }
    // What the UI shows of the heap at a random instant: totals, per
    // stack, the first 50 blocks by bytes and by age.
    let mut view_t = Vec::with_capacity(queries);
    let mut fallbacks = 0;
    let mut sites_seen = 0;
    for _ in 0..queries {
        let i = rng.below(events);
        let t0 = Instant::now();
        let v = tl.heap().view_at(tl.store(), i + 1);
        let big = v
            .as_ref()
            .and_then(|v| v.top(tl.heap(), tl.store(), Order::Bytes, 50));
        let old = v
            .as_ref()
            .and_then(|v| v.top(tl.heap(), tl.store(), Order::Age, 50));
        view_t.push(t0.elapsed());
        fallbacks += usize::from(big.is_none()) + usize::from(old.is_none());
        sites_seen += v.map_or(0, |v| v.sites.len());
    }
    // Block history of the address of a random event.
    let mut hist_t = Vec::with_capacity(queries * 10);
    let mut lives = 0;
    for _ in 0..queries * 10 {
        let i = rng.below(events);
        let addr = tl.store().addr(i).unwrap_or(0);
        let t0 = Instant::now();
        let h = tl.block_history(addr);
        hist_t.push(t0.elapsed());
        lives += h.lives.len();
    }
    // Density of the whole range, 200 buckets.
    let mut dens_t = Vec::with_capacity(queries);
    for _ in 0..queries {
        let t0 = Instant::now();
        let h = tl.store().histogram(t_first, t_last, 200);
        dens_t.push(t0.elapsed());
        if h.iter().sum::<u64>() != events {
            bail!("histogram lost events");
        }
    }
    // Next event of one thread from a random point (the UI's `n`).
    let mut find_t = Vec::with_capacity(queries);
    for _ in 0..queries {
        let i = rng.below(events);
        let f = Filter {
            tid: Some(1003),
            ..Filter::default()
        };
        let t0 = Instant::now();
        let _ = tl.store().find_next(i, &f);
        let _ = tl.store().find_prev(i, &f);
        find_t.push(t0.elapsed());
    }
    // The event nearest a random time (a click on the timeline bar).
    let mut near_t = Vec::with_capacity(queries);
    for _ in 0..queries {
        let t = t_first + rng.below((t_last - t_first).max(1));
        let t0 = Instant::now();
        let i = tl.store().nearest(t);
        let j = tl.store().at(t);
        near_t.push(t0.elapsed());
        if i.is_none() || j.is_none() {
            bail!("no event near {t}");
        }
    }
    let t0 = Instant::now();
    let now_blocks = tl.heap().now(tl.store()).len();
    println!(
        "heap now:      {} live blocks listed in {}",
        now_blocks,
        ms(t0.elapsed())
    );
    let t0 = Instant::now();
    let leaks = tl.leak_groups();
    let leak_t = t0.elapsed();

    let (h50, h99, hmax) = stats(heap_t);
    let (v50, v99, vmax) = stats(view_t);
    let (b50, b99, bmax) = stats(hist_t);
    let (d50, d99, dmax) = stats(dens_t);
    let (f50, _, fmax) = stats(find_t);
    let (n50, _, nmax) = stats(near_t);
    let per_event = rss as f64 / events as f64;
    let model_per_event = tl.bytes() as f64 / events as f64;
    println!(
        "ingest:        {:.2} M events/s on one core   (target >= 5)      {}",
        rate / 1e6,
        verdict(rate >= 5e6)
    );
    println!(
        "heap at T (every live block read): median {}  p99 {}  max {}  ({} live blocks on average)",
        ms(h50),
        ms(h99),
        ms(hmax),
        live_seen / queries.max(1),
    );
    println!(
        "heap view at T: median {}  p99 {}  max {}  (totals, {} stacks on average, top 50 by bytes and by age; {fallbacks} of {} lists needed a full read)   (target <= 5 ms)  {}",
        ms(v50),
        ms(v99),
        ms(vmax),
        sites_seen / queries.max(1),
        2 * queries,
        verdict(v99 <= Duration::from_millis(5))
    );
    println!(
        "block history: median {}  p99 {}  max {}  ({:.1} lives on average)   (target <= 1 ms)  {}",
        ms(b50),
        ms(b99),
        ms(bmax),
        lives as f64 / (queries * 10) as f64,
        verdict(b99 <= Duration::from_millis(1))
    );
    println!(
        "density 200:   median {}  p99 {}  max {}   (target <= 5 ms)  {}",
        ms(d50),
        ms(d99),
        ms(dmax),
        verdict(d99 <= Duration::from_millis(5))
    );
    println!(
        "find next+prev: median {}  max {}  (one thread of {THREADS})",
        ms(f50),
        ms(fmax)
    );
    println!("event at time: median {}  max {}", ms(n50), ms(nmax));
    println!(
        "leak groups:   {} groups in {}; {} suspected",
        leaks.len(),
        ms(leak_t),
        leaks.iter().filter(|g| g.suspected).count()
    );
    println!(
        "resident:      {per_event:.1} B/event by RSS growth, {model_per_event:.1} B/event by the model's own count   (target <= 32)  {}",
        verdict(per_event <= 32.0)
    );
    Ok(0)
}
