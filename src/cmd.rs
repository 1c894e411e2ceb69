//! The subcommands, each wiring the layers below (recorder, model, trace,
//! ui) for one job: `record`, `report`, `demo`, `bench`, and the live and
//! saved-recording UIs.

pub mod bench;
pub mod demo;
pub mod live;
pub mod record;
pub mod report;
pub mod session;

use anyhow::{bail, Result};

use crate::model::Timeline;
use crate::trace::Trace;

/// The UI needs a terminal on both ends.
pub fn require_tty() -> Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        bail!("the UI needs a terminal; to record without one use `tm-tui record`");
    }
    Ok(())
}

/// A timeline of a whole trace file.
pub fn timeline_of(t: &Trace, memory_budget: usize) -> Timeline {
    let mut tl = Timeline::with_budget(t.meta.clone(), memory_budget);
    for m in &t.modules {
        tl.add_module(m.clone());
    }
    for s in &t.stacks {
        tl.add_stack(s.clone());
    }
    for p in &t.probes {
        tl.add_probe(p.clone());
    }
    let mut marks = t.lost_marks.iter().peekable();
    for (i, e) in t.events.iter().enumerate() {
        while let Some((_, l)) = marks.next_if(|(at, _)| *at <= i as u64) {
            tl.note_lost(l.clone());
        }
        tl.push(e);
    }
    for (_, l) in marks {
        tl.note_lost(l.clone());
    }
    tl.set_lost(t.lost.clone());
    tl.set_end_ns(t.end.as_ref().map(|e| e.end_mono_ns));
    if let Some(s) = t.end.as_ref().and_then(|e| e.status) {
        tl.set_exit(s);
    }
    tl
}
