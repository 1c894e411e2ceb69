//! The subcommands, each wiring the layers below (recorder, model, trace,
//! ui) for one job: `record`, `report`, `demo`, `bench`, and the live and
//! saved-recording UIs.

pub mod bench;
pub mod caps;
pub mod demo;
pub mod docs;
pub mod export;
pub mod leakscan;
pub mod live;
pub mod record;
pub mod report;
pub mod session;

use anyhow::{bail, Context, Result};

use std::collections::HashSet;

use crate::event::ModuleId;
use crate::model::Timeline;
use crate::recorder::symbols::Symbols;
use crate::trace::Trace;

/// Writes `f`'s output to stdout, flushed. A reader gone (`| head`) is
/// not an error: what it wanted it has.
pub fn to_stdout(f: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match f(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// A new file only its owner can read, under a name nobody can guess:
/// `PREFIXxxxxxxxxxxxSUFFIX` in $XDG_RUNTIME_DIR (the user's own folder)
/// if there is one, else the temporary folder; created with O_EXCL, mode
/// 0600 (never a file or link someone put there first), and kept. Given
/// to `owner` (uid, gid): the user who ran sudo reads it after.
pub fn private_file(
    prefix: &str,
    suffix: &str,
    owner: Option<(u32, u32)>,
) -> Result<(std::fs::File, std::path::PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|d| d.is_absolute() && d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let (file, path) = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .rand_bytes(12)
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(&dir)
        .and_then(|f| f.keep().map_err(|e| e.error))
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to uid {uid}", path.display()))?;
    }
    Ok((file, path))
}

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
    // A bounded recording's window starts with the blocks live then.
    for b in t.window.iter().flat_map(|w| &w.carried) {
        tl.carry(b);
    }
    let mut marks = t.lost_marks.iter().peekable();
    let mut scans = t.leak_scans.iter().peekable();
    for (i, e) in t.events.iter().enumerate() {
        while let Some((_, l)) = marks.next_if(|(at, _)| *at <= i as u64) {
            tl.note_lost(l.clone());
        }
        while let Some((_, s)) = scans.next_if(|(at, _)| *at <= i as u64) {
            tl.add_leak_scan(s.clone());
        }
        tl.push(e);
    }
    for (_, l) in marks {
        tl.note_lost(l.clone());
    }
    for (_, s) in scans {
        tl.add_leak_scan(s.clone());
    }
    tl.set_lost(t.lost.clone());
    tl.set_end_ns(t.end.as_ref().map(|e| e.end_mono_ns));
    if let Some(s) = t.end.as_ref().and_then(|e| e.status) {
        tl.set_exit(s);
    }
    tl
}

/// Builds a timeline as a trace is read, never holding its events: the
/// memory is the timeline's budget whatever the file's size. Stacks are
/// named as they come when the recording machine could not name them
/// (see [`read_and_name`]); the tables repeated by a bounded recording's
/// segments are taken once, and only the first segment's carried blocks.
struct TimelineSink {
    memory: usize,
    tl: Option<Timeline>,
    modules: HashSet<ModuleId>,
    stacks: HashSet<crate::event::StackId>,
    probes: HashSet<crate::event::ProbeId>,
    /// The heap's start state is set (carried blocks taken, or an event seen).
    started: bool,
    /// Modules seen (their build-ids name unnamed frames).
    seen: Vec<crate::event::Module>,
    sym: Option<(Symbols, HashSet<ModuleId>)>,
    progress: Option<Progress>,
    /// The segment being read is another recording's.
    foreign: bool,
}

/// `report`'s progress on stderr (a terminal only), once a second.
struct Progress {
    events: u64,
    last: std::time::Instant,
    shown: bool,
}

impl TimelineSink {
    fn stack(&mut self, s: &crate::event::Stack) -> crate::event::Stack {
        let mut s = s.clone();
        let unnamed: HashSet<ModuleId> = s
            .frames
            .iter()
            .filter(|f| f.file.is_none())
            .filter_map(|f| f.module)
            .collect();
        if unnamed.is_empty() {
            return s;
        }
        let (sym, added) = self
            .sym
            .get_or_insert_with(|| (Symbols::new(), HashSet::new()));
        let mut new = false;
        for m in self.seen.iter().filter(|m| unnamed.contains(&m.id)) {
            if added.insert(m.id) {
                sym.add_module(m, None);
                new = true;
            }
        }
        if new {
            // Said when it was recorded: nothing new to say here.
            sym.wait_pending();
            let _ = sym.take_notes(true);
        }
        sym.symbolize(&mut s.frames);
        s
    }
}

impl crate::trace::Sink for TimelineSink {
    fn meta(&mut self, meta: &crate::event::Meta) {
        match &self.tl {
            None => self.tl = Some(Timeline::with_budget(meta.clone(), self.memory)),
            // A segment of another recording (named in `integrity` by the
            // reader): nothing of it is taken.
            Some(tl) => self.foreign = tl.meta() != meta,
        }
    }

    fn item(&mut self, item: crate::trace::Item<'_>) {
        use crate::trace::Item;
        if self.foreign {
            return;
        }
        if let Item::Stack(s) = &item {
            if self.stacks.insert(s.id) {
                let s = self.stack(s);
                if let Some(tl) = &mut self.tl {
                    tl.add_stack(s);
                }
            }
            return;
        }
        let Some(tl) = &mut self.tl else {
            return;
        };
        match item {
            Item::Module(m) => {
                if self.modules.insert(m.id) {
                    self.seen.push(m.clone());
                    tl.add_module(m.clone());
                }
            }
            Item::Stack(_) => {}
            Item::Probe(p) => {
                if self.probes.insert(p.id) {
                    tl.add_probe(p.clone());
                }
            }
            Item::Carried(blocks) => {
                if !self.started {
                    for b in blocks {
                        tl.carry(b);
                    }
                    self.started = true;
                }
            }
            Item::Event(e) => {
                self.started = true;
                tl.push(&e);
                if let Some(p) = &mut self.progress {
                    p.events += 1;
                    if p.events % 65536 == 0
                        && p.last.elapsed() >= std::time::Duration::from_secs(1)
                    {
                        p.last = std::time::Instant::now();
                        p.shown = true;
                        eprint!(
                            "\rtm-tui: reading the trace: {} events, {} held in memory ",
                            p.events,
                            tl.store().end() - tl.store().first()
                        );
                    }
                }
            }
            Item::Lost(l) => tl.note_lost(l.clone()),
            Item::LeakScan(l) => tl.add_leak_scan(l.clone()),
        }
    }
}

/// A trace and its timeline, read in one pass without keeping the events
/// (`Trace::events` stays empty): what `report` and `export` show, in at
/// most `memory` bytes of events and indexes whatever the file's size
/// (the oldest events past it are dropped, the heap and leaks kept exact).
/// Progress goes to stderr when it is a terminal.
pub fn read_streaming(path: &std::path::Path, memory: usize) -> Result<(Trace, Timeline)> {
    use std::io::IsTerminal;
    let progress = std::io::stderr().is_terminal().then(|| Progress {
        events: 0,
        last: std::time::Instant::now(),
        shown: false,
    });
    let mut sink = TimelineSink {
        memory,
        tl: None,
        modules: HashSet::new(),
        stacks: HashSet::new(),
        probes: HashSet::new(),
        started: false,
        seen: Vec::new(),
        sym: None,
        progress,
        foreign: false,
    };
    let mut t = crate::trace::read_trace_into(path, &mut sink)?;
    if sink.progress.as_ref().is_some_and(|p| p.shown) {
        eprint!("\r\x1b[K");
    }
    let mut tl = sink
        .tl
        .take()
        .unwrap_or_else(|| Timeline::with_budget(t.meta.clone(), memory));
    tl.set_lost(t.lost.clone());
    tl.set_end_ns(t.end.as_ref().map(|e| e.end_mono_ns));
    if let Some(s) = t.end.as_ref().and_then(|e| e.status) {
        tl.set_exit(s);
    }
    // The named stacks (the timeline's) for the report's own lookups.
    t.stacks = tl.stacks().to_vec();
    Ok((t, tl))
}

/// A trace file to show: read, and the frames the recording machine could
/// not name (a stripped module without its debug info there) named if this
/// machine has the debug info, found by the build-id the trace recorded.
pub fn read_and_name(path: &std::path::Path) -> Result<Trace> {
    let mut t = crate::trace::read_trace(path)?;
    if let Some(mut sym) = symbols_for_unnamed(&t) {
        for s in &mut t.stacks {
            sym.symbolize(&mut s.frames);
        }
    }
    Ok(t)
}

/// `None` when every frame has its file and line.
fn symbols_for_unnamed(t: &Trace) -> Option<Symbols> {
    let unnamed: HashSet<ModuleId> = t
        .stacks
        .iter()
        .flat_map(|s| &s.frames)
        .filter(|f| f.file.is_none())
        .filter_map(|f| f.module)
        .collect();
    if unnamed.is_empty() {
        return None;
    }
    let mut sym = Symbols::new();
    for m in t.modules.iter().filter(|m| unnamed.contains(&m.id)) {
        sym.add_module(m, None);
    }
    // Said when it was recorded: nothing new to say here.
    sym.wait_pending();
    let _ = sym.take_notes(true);
    Some(sym)
}

/// Warns on stderr that `t`, read from `file`, is damaged or had records
/// skipped; `done` (if not empty) says what was made of it.
pub fn warn_damage(file: &std::path::Path, t: &Trace, done: &str) {
    for w in damage_notes(file, t, done) {
        eprintln!("tm-tui: warning: {w}");
    }
}

/// What is wrong with `t`, read from `file`: the damage (with `done`, if
/// not empty, saying what was made of it), records missing or out of
/// order, records skipped; the worst first.
pub fn damage_notes(file: &std::path::Path, t: &Trace, done: &str) -> Vec<String> {
    let done = if done.is_empty() {
        String::new()
    } else {
        format!("; {done}")
    };
    let name = crate::trace::name(file, false);
    let mut out = Vec::new();
    if let Some(d) = &t.damage {
        out.push(format!(
            "{name} is damaged from byte {}: {}{done}",
            d.offset, d.reason
        ));
    }
    if let Some(first) = t.integrity.first() {
        out.push(format!(
            "{name} has {} record(s) missing, repeated or out of order, the first at byte {}: {}",
            t.integrity.len(),
            first.offset,
            first.reason
        ));
    }
    if let Some(first) = t.skipped.first() {
        out.push(format!(
            "{name} has {} record(s) this version cannot read, skipped, the first at byte {}: {}",
            t.skipped.len(),
            first.offset,
            first.reason
        ));
    }
    out
}
