//! `tm-tui export`: a recording in the formats other tools read —
//! `chrome` (Trace Event Format JSON: Perfetto, chrome://tracing), `pprof`
//! (gzipped profile.proto of the heap at a moment: `go tool pprof`) and
//! `folded` (live bytes by stack, one `root;…;leaf bytes` line each:
//! flamegraph.pl, inferno).
//!
//! The whole output is built in memory and written to a temporary file
//! beside the destination, renamed over it at the end: an error leaves no
//! partial file.

pub mod chrome;
pub mod folded;
pub mod pprof;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::cmd::report::{self, Summary};
use crate::event::{EventKind, Family, Frame, StackEnd, StackId};
use crate::model::names::{frame_label, module_path};
use crate::model::store::{Idx, LiveBlock};
use crate::model::TAG_SHIFT;
use crate::trace::Trace;

/// The formats `export` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Trace Event Format JSON (Perfetto, chrome://tracing): calls,
    /// system calls and off-CPU time as spans, heap events, signals and
    /// watchpoint findings as instants with their stacks, a track per
    /// thread.
    Chrome,
    /// gzipped pprof profile of the heap at --at (go tool pprof):
    /// inuse_space/inuse_objects, alloc_space/alloc_objects by stack.
    Pprof,
    /// Live bytes at --at by stack, `root;…;leaf bytes` lines
    /// (flamegraph.pl, inferno-flamegraph).
    Folded,
}

pub struct Options {
    pub format: Format,
    /// The moment of the heap (pprof, folded), from the start; default:
    /// the end of the recording.
    pub at: Option<Duration>,
    /// With `at`: read the whole recording, not only from its part
    /// before the moment (alloc_space/alloc_objects of all of it).
    pub whole: bool,
    pub memory: usize,
}

/// Exports `file` to `out` (`-`: standard output).
pub fn run(file: &Path, out: &Path, opts: &Options) -> Result<()> {
    if opts.format == Format::Chrome && opts.at.is_some() {
        bail!("--at is for the heap formats (pprof, folded); chrome exports the whole recording");
    }
    // The export would replace the recording it is made from.
    let same = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    };
    if out != Path::new("-") && (same(file, out) || out.is_dir() && file.starts_with(out)) {
        bail!(
            "-o {} is the recording being exported: give another file",
            out.display()
        );
    }
    // Streamed: the events go into the timeline, never all in memory; for
    // a moment, from the trace's part before it up to it, as `report --at`.
    let part = match opts.at {
        Some(at) if !opts.whole => {
            let at = report::nanos(at);
            crate::cmd::load::Part::at(file, at, at, 0)?
        }
        _ => crate::cmd::load::Part::default(),
    };
    let (t, tl) = crate::cmd::load::read_streaming_part(file, opts.memory, part)?;
    if let (Some(first), true) = (t.first_ts, t.part_start().is_some()) {
        if opts.format == Format::Pprof {
            eprintln!(
                "tm-tui: read from {} (the trace's part before --at): alloc_space/alloc_objects \
                 count from there, in-use is exact (--whole counts from the start)",
                crate::model::present::rel(first, t.meta.start_mono_ns)
            );
        }
    }
    let sum = report::summary_of(&t, tl);
    if opts.format != Format::Chrome && !t.meta.families.has(Family::Alloc) {
        eprintln!(
            "tm-tui: warning: {} was recorded without the alloc family: no heap to export",
            file.display()
        );
    }
    // Everything that can fail on the trace fails before a byte is out.
    let heap = match opts.format {
        Format::Chrome => None,
        _ => Some(Heap::of(&t, &sum, opts.at)?),
    };
    if sum.tl.store().dropped > 0 {
        eprintln!(
            "tm-tui: warning: the memory budget dropped the oldest {} events: {} \
             (raise --memory)",
            sum.tl.store().dropped,
            if opts.format == Format::Chrome {
                "the export starts after them"
            } else {
                "alloc_space/alloc_objects count from after them (live blocks stay exact)"
            }
        );
    }
    write_with(out, |w| match (opts.format, &heap) {
        (Format::Pprof, Some(h)) => Ok(w.write_all(&pprof::export(&t, &sum, h)?)?),
        (Format::Folded, Some(h)) => Ok(w.write_all(folded::export(&sum, h).as_bytes())?),
        _ => chrome::export(&t, &sum, w),
    })?;
    crate::cmd::warn_damage(file, &t, "exported what comes before it");
    Ok(())
}

/// Writes `path` whole with `write`, through a temporary file in its
/// directory renamed over it at the end (removed on an error); `-` is
/// standard output.
pub fn write_with(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<()>,
) -> Result<()> {
    let broken_pipe = |e: &anyhow::Error| {
        let kind = match e.downcast_ref::<serde_json::Error>() {
            Some(j) => j.io_error_kind(),
            None => e.downcast_ref::<std::io::Error>().map(std::io::Error::kind),
        };
        kind == Some(std::io::ErrorKind::BrokenPipe)
    };
    if path == Path::new("-") {
        let mut so = std::io::BufWriter::new(std::io::stdout().lock());
        let r = write(&mut so).and_then(|()| Ok(so.flush()?));
        return match r {
            // `| head`: the reader has what it wanted.
            Err(e) if broken_pipe(&e) => Ok(()),
            r => r.context("writing to standard output"),
        };
    }
    // Not a regular file (a device, a FIFO, a socket): written in place,
    // never replaced by a file. A symbolic link: its target is written.
    if let Ok(m) = std::fs::metadata(path) {
        if !m.is_file() {
            if m.is_dir() {
                bail!("cannot write {}: it is a directory", path.display());
            }
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let mut bw = std::io::BufWriter::new(f);
            return write(&mut bw)
                .and_then(|()| Ok(bw.flush()?))
                .with_context(|| format!("cannot write {}", path.display()));
        }
    }
    // A link (even to a file not there yet) is followed, never replaced.
    let mut resolved = path.to_path_buf();
    for _ in 0..16 {
        match std::fs::read_link(&resolved) {
            Ok(to) => {
                resolved = match resolved.parent() {
                    Some(d) if to.is_relative() => d.join(to),
                    _ => to,
                }
            }
            Err(_) => break,
        }
    }
    let path = resolved.as_path();
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tm-tui-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::File::create(&tmp)
        .map_err(anyhow::Error::from)
        .and_then(|f| {
            let mut bw = std::io::BufWriter::new(f);
            write(&mut bw)?;
            let f = bw.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            Ok(std::fs::rename(&tmp, path)?)
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write {}: {e:#}", path.display());
    }
    Ok(())
}

/// One group of the heap at the moment: a process's blocks from one
/// allocation site.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Live at the moment.
    pub inuse_bytes: u64,
    pub inuse_blocks: u64,
    /// Allocated up to the moment (live or not).
    pub alloc_bytes: u64,
    pub alloc_blocks: u64,
}

/// The heap at a moment, by process and allocation site.
pub struct Heap {
    /// The moment (CLOCK_MONOTONIC ns).
    pub at: u64,
    /// (pid, site) → totals; a site is [`crate::model::Timeline::site_of`]
    /// an allocation stack.
    pub groups: BTreeMap<(u32, Option<StackId>), Totals>,
}

impl Heap {
    /// The heap after the last event at or before `at` (from the start),
    /// as `report --at` takes the moment; the end without one.
    pub fn of(t: &Trace, sum: &Summary, at: Option<Duration>) -> Result<Heap> {
        let tl = &sum.tl;
        let start = t.meta.start_mono_ns;
        let at_end = at.is_none();
        let (at, upto) = match at {
            Some(d) => {
                let at = start.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
                // A bounded recording knows the heap from its first held
                // segment on; before it, only the blocks that lived into it.
                if let (Some(_), Some(first)) = (&t.window, t.first_ts) {
                    if at < first {
                        bail!(
                            "--at {} is before the recording held (its events start at {}): \
                             the heap there is not known",
                            crate::model::present::rel(at, start),
                            crate::model::present::rel(first, start)
                        );
                    }
                }
                let upto = sum.partition_point(t, |ts| ts <= at) as Idx;
                // The memory budget dropped the events up to the moment:
                // the heap there is not known (the replay would start at
                // the oldest one held, a later moment).
                let store = tl.store();
                if store.dropped > 0 && upto <= store.first() {
                    bail!(
                        "--at {} is before the oldest event held in memory ({}): the heap \
                         there is not known (raise --memory{})",
                        crate::model::present::rel(at, start),
                        crate::model::present::rel(tl.span().map_or(start, |s| s.0), start),
                        if t.part_start().is_some() {
                            ""
                        } else {
                            ", or without --whole on a trace in parts"
                        }
                    );
                }
                (at, upto)
            }
            None => (sum.end_ns, tl.store().end()),
        };
        let live: Vec<LiveBlock> = tl.heap().at(tl.store(), upto).ok_or_else(|| {
            anyhow!("the moment is before the oldest event held in memory (raise --memory)")
        })?;
        let pid_of_tag = |ptr: u64| {
            let tag = usize::try_from(ptr >> TAG_SHIFT).unwrap_or(usize::MAX);
            tl.processes().get(tag).map_or(t.meta.pid, |p| p.pid)
        };
        let mut groups: BTreeMap<(u32, Option<StackId>), Totals> = BTreeMap::new();
        // At the end, a child gone has no heap (the model keeps its
        // blocks at its exit, having seen no free of them).
        let gone = |ptr: u64| {
            let tag = usize::try_from(ptr >> TAG_SHIFT).unwrap_or(usize::MAX);
            at_end && tag > 0 && tl.processes().get(tag).is_some_and(|p| p.exit.is_some())
        };
        for b in live.iter().filter(|b| !gone(b.ptr)) {
            let g = groups
                .entry((pid_of_tag(b.ptr), tl.site_of(b.stack)))
                .or_default();
            g.inuse_bytes += b.size;
            g.inuse_blocks += 1;
        }
        let held = usize::try_from(tl.store().first()).unwrap_or(usize::MAX);
        let upto = usize::try_from(upto).unwrap_or(usize::MAX);
        for (i, e) in sum.events(t) {
            if i < held {
                continue;
            }
            if i >= upto {
                break;
            }
            let e: &crate::event::Event = &e;
            let (size, stack) = match &e.kind {
                EventKind::Alloc {
                    ptr, size, stack, ..
                }
                | EventKind::Realloc {
                    ptr, size, stack, ..
                } if *ptr != 0 => (*size, *stack),
                _ => continue,
            };
            let g = groups.entry((e.pid, tl.site_of(stack))).or_default();
            g.alloc_bytes += size;
            g.alloc_blocks += 1;
        }
        Ok(Heap { at, groups })
    }

    /// More than one process has blocks: say which in each stack.
    pub fn processes(&self) -> usize {
        let mut pids: Vec<u32> = self.groups.keys().map(|(p, _)| *p).collect();
        pids.dedup();
        pids.len()
    }
}

/// A frame's function as the profile formats name it: its demangled name,
/// else `module+0xoffset`, else its address.
pub fn func_name(f: &Frame, sum: &Summary) -> String {
    match &f.func {
        Some(func) => func.clone(),
        None => frame_label(f, module_path(sum.tl.modules())),
    }
}

/// Why a stack's walk stopped short, as a frame at its root; `None` for
/// a complete walk.
pub fn truncated_root(end: StackEnd) -> Option<&'static str> {
    match end {
        StackEnd::Complete | StackEnd::Unknown => None,
        _ => Some("[stack truncated]"),
    }
}

/// Process `pid` of the recording by its command: `cmd (pid N)`, or
/// `pid N` when it has none.
pub fn process_label(sum: &Summary, pid: u32) -> String {
    let command = sum
        .tl
        .processes()
        .iter()
        .rev()
        .find(|p| p.pid == pid)
        .map_or("", |p| p.command.as_str());
    match command {
        "" => format!("pid {pid}"),
        c => format!("{c} (pid {pid})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/data/snap.tmt`: a real recording with probed calls, system
    /// calls, off-CPU time, leaks and a crash.
    fn snap() -> (Trace, Summary) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/snap.tmt");
        let t = crate::trace::read_trace(&path).unwrap_or_else(|e| panic!("{e:#}"));
        let sum = report::summarize(&t, crate::model::DEFAULT_MEMORY);
        (t, sum)
    }

    #[test]
    fn folded_adds_up_to_the_live_heap() {
        let (t, sum) = snap();
        let heap = Heap::of(&t, &sum, None).unwrap();
        let text = folded::export(&sum, &heap);
        let total: u64 = text
            .lines()
            .map(|l| {
                let (stack, n) = l.rsplit_once(' ').unwrap();
                assert!(!stack.is_empty() && !stack.contains('\n'), "{l}");
                n.parse::<u64>().unwrap()
            })
            .sum();
        let live: u64 = sum.tl.processes().iter().map(|p| p.heap.live_bytes).sum();
        assert!(live > 0);
        assert_eq!(total, live, "{text}");
    }

    /// A trace read under a memory budget that dropped its first events:
    /// the heap at a moment among them is refused, not the heap at the
    /// oldest event held given in its place; a moment held is exact.
    #[test]
    fn a_moment_the_budget_dropped_is_refused() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let n = 200_000u64;
        crate::cmd::load::tests::write_pairs(f.path(), n);
        let part = crate::cmd::load::Part::default();
        let (t, tl) = crate::cmd::load::read_streaming_part(f.path(), 1 << 20, part).unwrap();
        let sum = report::summary_of(&t, tl);
        assert!(sum.tl.store().dropped > 0, "nothing dropped");
        let at = |ns: u64| Some(Duration::from_nanos(ns));
        let e = Heap::of(&t, &sum, at(10_000)).err().expect("an error");
        assert!(
            format!("{e}").contains("before the oldest event held"),
            "{e}"
        );
        // Late, between a pair's alloc and free: the kept block and one.
        let late = (n - 10) * 1_000 + 2_000 + 200;
        let h = Heap::of(&t, &sum, at(late - 1_000)).unwrap();
        let live: u64 = h.groups.values().map(|g| g.inuse_bytes).sum();
        assert_eq!(live, 5 + 8);
    }

    #[test]
    fn chrome_has_a_span_per_probed_call() {
        let (t, sum) = snap();
        let mut json = Vec::new();
        chrome::export(&t, &sum, &mut json).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let evs = doc["traceEvents"].as_array().unwrap();
        for (id, st) in sum.tl.spans().all_stats() {
            let name = crate::model::present::probe_name(&sum.tl, id);
            let n = evs
                .iter()
                .filter(|e| e["ph"] == "X" && e["cat"] == "call" && e["name"] == name.as_str())
                .count() as u64;
            assert_eq!(n, st.calls, "{name}");
        }
        assert!(evs.iter().any(|e| e["ph"] == "i"
            && e["name"].as_str().is_some_and(|n| n.starts_with("CRASH "))
            && e["args"]["stack"].is_array()));
    }

    #[test]
    fn pprof_is_gzipped_protobuf_with_its_sample_types() {
        use std::io::Read as _;
        let (t, sum) = snap();
        let heap = Heap::of(&t, &sum, None).unwrap();
        let gz = pprof::export(&t, &sum, &heap).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        // Field 1 (sample_type), length-delimited, first.
        assert_eq!(raw.first(), Some(&0x0a));
        let has = |s: &str| raw.windows(s.len()).any(|w| w == s.as_bytes());
        for s in [
            "inuse_space",
            "inuse_objects",
            "alloc_space",
            "alloc_objects",
        ] {
            assert!(has(s), "{s}");
        }
    }
}
