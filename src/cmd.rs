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
pub mod load;
pub mod record;
pub mod report;
pub mod session;

use anyhow::{bail, Context, Result};

use crate::model::Timeline;
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
    let mut resyncs = t.resyncs.iter().peekable();
    for (i, e) in t.events.iter().enumerate() {
        while let Some(r) = resyncs.next_if(|r| r.at <= i as u64) {
            tl.resync(&r.carried, r.ts);
        }
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
    for r in resyncs {
        tl.resync(&r.carried, r.ts);
    }
    load::set_end(t, &mut tl);
    tl
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
