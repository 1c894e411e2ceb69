//! The `.tmt` trace file: a versioned header, then an append-only stream of
//! checksummed records, so a recording cut short still reads up to the cut.
//!
//! Layout: `b"TMTRACE\0"`, u16 version, u16 flags (all little-endian), then
//! records framed as `u8 tag, u32 payload_len, payload, u32 crc32` where the
//! crc covers tag, length and payload. Since version 3 a payload is the
//! [postcard](https://docs.rs/postcard) encoding of the record's type,
//! derived with serde: integers are varints (zigzag for signed ones), enum
//! variants their index, strings a varint length and UTF-8, and an optional
//! id is one varint, `id + 1` with 0 for `None`. Versions 1 and 2 were
//! encoded by hand; [`v2`] still reads them.
//!
//! The order of the fields and variants of the types in [`crate::event`] is
//! the format: a new event kind or record type goes last, and
//! `tests/data/every-kind-v8.tmt` fails when anything else moves. A record
//! whose frame is intact but whose payload this version cannot decode (an
//! event kind or record type of a newer tm-tui) is skipped and reported in
//! [`Trace::skipped`]; reading goes on at the next record.

pub mod sink;
mod v2;
mod v4;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strum::{EnumCount, FromRepr, IntoStaticStr};

use crate::event::{Event, EventKind, ExitStatus, LeakScan, Lost, Meta, Module, Probe, Stack};

pub const MAGIC: [u8; 8] = *b"TMTRACE\0";
/// 8: a single trace file restarts every `--checkpoint` bytes as a new
/// part (the header, Meta, a Segment record with its first event's time,
/// the tables and the blocks live then), each part starting at a multiple
/// of [`PART_ALIGN`] (a Pad record fills the gap), so `--at T` finds the
/// part before T by reading a few headers and starts there with the heap
/// exact; a Segment record holds its first event's time too. 7: each record's checksum covers its sequence number (0 for Meta, then
/// 1, 2, …), so a record dropped, duplicated or moved is told from a
/// clean file without a byte more per record; 6: watchpoint hits (a new event kind), and Meta says whether children
/// were followed; 5: events carry their process id (children are followed), signals
/// their sender, registers, instruction bytes and abort message; 4:
/// modules carry their build-id; 3: payloads derived (postcard); 2 added
/// probes, calls, system calls and off-CPU events. Files of earlier
/// versions read as before.
pub const FORMAT_VERSION: u16 = 8;
/// A trace file's parts (version 8) start at multiples of this: the
/// index of a file is its parts' headers, found by a few reads.
pub const PART_ALIGN: u64 = 1 << 20;
/// How far from the expected sequence number a reader looks for the one
/// a record's checksum was made with (on a mismatch only): a gap, a
/// duplicate or a move of up to this many records is named; a wider one
/// reads as a checksum mismatch (damage, not silence).
const SEQ_WINDOW: u64 = 256;
const HEADER_LEN: u64 = 12;
/// Tag + length before the payload.
const FRAME_HEAD: usize = 5;
/// Far above any real record (a deep stack of symbolized frames is a few
/// KiB); a larger length is corruption and must not become an allocation.
pub const MAX_RECORD_LEN: u32 = 16 << 20;
const IO_BUFFER: usize = 256 << 10;
/// Records are handed to the writer in pieces of this size: where the
/// trace ends, when its reader stops, is known to within one piece (a
/// quarter of a pipe's buffer; at 16 MB/s of events, 1,000 a second).
const PIECE: usize = 16 << 10;
/// A `kill -9` of the recorder loses at most this much of the recording.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// What a record holds: the first byte of its frame, in every version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromRepr, IntoStaticStr)]
#[repr(u8)]
enum Tag {
    Meta = 1,
    Module = 2,
    Stack = 3,
    Event = 4,
    Lost = 5,
    End = 6,
    Probe = 7,
    /// A leak scan's kinds of the blocks live after the events before it.
    LeakScan = 8,
    /// A bounded recording's segment: its number, after Meta.
    Segment = 9,
    /// The blocks live when a segment began (allocated in an earlier one).
    Carried = 10,
    /// A segment closed because the next one began (not the recording's end).
    SegmentEnd = 11,
    /// Filler before a part of a file that starts at a [`PART_ALIGN`]
    /// boundary (version 8): its payload is zeros, not read.
    Pad = 12,
}

impl Tag {
    fn name(self) -> &'static str {
        self.into()
    }
}

/// How the recording ended, when the recorder got to say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    pub end_mono_ns: u64,
    pub status: Option<ExitStatus>,
}

/// What a segment (or a file's part) says of itself after its Meta.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHead {
    /// 1, 2, … in the order written.
    pub number: u64,
    /// Its first event's time (0 before version 8).
    pub first_ts: u64,
    /// Its size before the next begins, at least (0 before version 8): a
    /// file's next part is no nearer.
    pub part_bytes: u64,
}

/// A block live when a segment began, allocated before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedBlock {
    pub pid: u32,
    pub tid: u32,
    /// When it was allocated (before the segment).
    pub ts: u64,
    pub ptr: u64,
    pub size: u64,
    pub stack: Option<crate::event::StackId>,
}

/// Where a damaged trace stops being readable, or a record was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the record that could not be read.
    pub offset: u64,
    pub reason: String,
}

/// Everything read from a trace file, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Events read (all of them in `events`, unless they were handed to a
    /// [`Sink`]).
    pub event_count: u64,
    /// The first event's time.
    pub first_ts: Option<u64>,
    pub meta: Meta,
    pub modules: Vec<Module>,
    pub stacks: Vec<Stack>,
    pub probes: Vec<Probe>,
    pub events: Vec<Event>,
    /// The last loss snapshot in the file (the counters are cumulative).
    pub lost: Lost,
    /// Every loss snapshot with the number of events before it in the
    /// file: where in the timeline losses happened.
    pub lost_marks: Vec<(u64, Lost)>,
    /// `None` when the recorder died before finishing the file.
    pub end: Option<End>,
    /// `Some` when the file is cut short or corrupt; all before it was read.
    pub damage: Option<Damage>,
    /// Records intact in their frames that this version cannot decode (a
    /// newer tm-tui's event kind or record type): left out, and the records
    /// after them read.
    pub skipped: Vec<Damage>,
    /// Leak scans, with the number of events before each in the file.
    pub leak_scans: Vec<(u64, LeakScan)>,
    /// Records missing, duplicated or out of order (version 7 on): each
    /// with the offset where it was found. A duplicate or a record out of
    /// order is not applied.
    pub integrity: Vec<Damage>,
    /// A bounded recording (a directory of segments): the first segment
    /// held and the blocks live when it began, allocated before it.
    pub window: Option<Window>,
    /// Parts (or segments) read after a gap: the heap there is not what
    /// the events before make of it, but the blocks the part carried in.
    pub resyncs: Vec<Resync>,
    /// This file is a segment that was closed for the next one.
    pub closed: bool,
    /// The reader stopped before the end because its sink had enough
    /// (`report --at`: the moment was passed): nothing after was read.
    pub stopped: bool,
}

impl Trace {
    /// Where the read started when it started at a part of the file or a
    /// segment after the oldest held (`--at`), not at the start.
    pub fn part_start(&self) -> Option<PartStart> {
        self.window.as_ref().and_then(|w| w.from_part)
    }
}

/// The heap taken again after parts (or segments) missing: from the
/// event `at` (the number read before) on, the live blocks are `carried`
/// (those of the part read after the gap), not what the events before
/// left.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resync {
    pub at: u64,
    /// The part's first event's time.
    pub ts: u64,
    pub carried: Vec<CarriedBlock>,
}

/// What a bounded recording still holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// The first (oldest) segment held; 1 when none was dropped.
    pub first_segment: u64,
    pub segments: u64,
    /// The last segment (or part) taken: past `first_segment + segments
    /// - 1` when some between were missing.
    pub last_segment: u64,
    pub carried: Vec<CarriedBlock>,
    /// Windows kept before crashes and findings (`DIR/kept-N`).
    pub kept: Vec<std::path::PathBuf>,
    /// This is such a kept window: the recording went on after it.
    pub is_kept: bool,
    /// A single file read from its part `first_segment` on (`--at`), not
    /// from its start: the parts before were not read.
    pub from_part: Option<PartStart>,
}

/// Where a read of a file's part (`--at`) started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartStart {
    /// Bytes of the file before it (not read).
    pub offset: u64,
    /// The file's size.
    pub file_bytes: u64,
    /// Parts of one file (not segments of a directory).
    pub in_file: bool,
}

// ---------------------------------------------------------------------------
// Writing

/// `-` as a trace path: the standard output (writing) or input (reading),
/// as perf, tar and most tools take it.
pub fn is_std(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// How a trace path is said: `-` is stdout or stdin.
pub fn name(path: &Path, writing: bool) -> String {
    match (is_std(path), writing) {
        (true, true) => "stdout".into(),
        (true, false) => "stdin".into(),
        (false, _) => path.display().to_string(),
    }
}

/// The standard output as a file of its own (written through a buffer
/// of the trace's, not std's line buffer); refused when it is a terminal.
pub fn stdout_file() -> anyhow::Result<File> {
    use std::io::IsTerminal;
    use std::os::fd::AsFd;
    let out = io::stdout();
    if out.is_terminal() {
        anyhow::bail!(
            "will not write a binary trace to a terminal: redirect stdout (-o - | tm-tui report -) or give -o FILE"
        );
    }
    let fd = out
        .as_fd()
        .try_clone_to_owned()
        .context("cannot duplicate stdout")?;
    Ok(File::from(fd))
}

/// Writes a trace; the bytes go to a [`sink::Sink`] thread, so no call
/// here waits for the file (a stalled reader or disk comes back as a
/// [`sink::Failure`] from a later call, or from [`TraceWriter::check`]).
pub struct TraceWriter {
    /// A bounded recording: a directory of segments.
    ring: Option<Ring>,
    sink: sink::Sink,
    /// Records not handed to the sink yet (up to [`PIECE`]).
    out: Vec<u8>,
    /// The time of the last event written.
    last_ts: u64,
    /// The next record's sequence number (in its checksum).
    seq: u64,
    /// The recording's id (from its Meta; in every checksum after Meta's),
    /// so records of another recording spliced in do not read as its own.
    recording: u64,
    /// Reused for every record so the hot path does not allocate.
    buf: Vec<u8>,
    written: u64,
    last_flush: Instant,
}

impl TraceWriter {
    /// Creates (truncates) `path` and writes the header and `meta`, handed
    /// to the writer at once, so the file is a readable empty trace from
    /// the start. `-` is the standard output (not a terminal).
    pub fn create(path: &Path, meta: &Meta) -> anyhow::Result<Self> {
        let file = if is_std(path) {
            stdout_file()?
        } else {
            File::create(path).with_context(|| format!("cannot create trace {}", path.display()))?
        };
        Self::create_on(file, path, meta)
    }

    /// As [`Self::create`], on `file` already open (a FIFO the start-up
    /// check opened: its reader waits on it).
    pub fn create_on(file: File, path: &Path, meta: &Meta) -> anyhow::Result<Self> {
        let mut w = TraceWriter {
            ring: None,
            sink: sink::Sink::start(file, &name(path, true))?,
            out: Vec::with_capacity(PIECE),
            last_ts: 0,
            seq: 0,
            recording: 0,
            buf: Vec::with_capacity(4096),
            written: 0,
            last_flush: Instant::now(),
        };
        w.begin(meta)?;
        w.submit()?;
        Ok(w)
    }

    /// The header and `meta`: a file (or segment) begins.
    fn begin(&mut self, meta: &Meta) -> anyhow::Result<()> {
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // Bytes 10..12: flags, none defined yet.
        self.out.extend_from_slice(&header);
        self.written = HEADER_LEN;
        self.seq = 0;
        self.recording = 0;
        self.record(Tag::Meta, meta)?;
        self.recording = recording_id(meta);
        Ok(())
    }

    /// The writer's queue holds at most `bytes` (the default
    /// [`sink::QUEUE_BYTES`]); past it the trace fails as behind.
    pub fn set_queue_limit(&mut self, bytes: u64) {
        self.sink.set_limit(bytes);
    }

    /// The writer's failure, or its being stuck for
    /// [`sink::STALL_LIMIT`]; cheap enough for every message.
    pub fn check(&self) -> Result<(), sink::Failure> {
        self.sink.check()
    }

    /// The time of the last event the file holds whole (0: none yet).
    pub fn written_ts(&self) -> u64 {
        self.sink.written_ts()
    }

    /// A bounded recording into the directory `dir` (made, or emptied of
    /// the segments of an earlier one): segments of `limits.segment_bytes()`
    /// each, the oldest deleted whole past `max_bytes` or older than
    /// `keep_ns`. Each segment is a trace file of its own that starts with
    /// the tables and the blocks live at its start, so the oldest held one
    /// opens with the heap exact.
    pub fn create_ring(dir: &Path, meta: &Meta, limits: Limits) -> anyhow::Result<Self> {
        prepare_ring_dir(dir)?;
        let mut w = Self::create(&segment_path(dir, 1), meta)?;
        w.record(
            Tag::Segment,
            &SegmentHead {
                number: 1,
                first_ts: 0,
                part_bytes: limits.segment_bytes(),
            },
        )?;
        w.submit()?;
        w.ring = Some(Ring::new(
            dir,
            meta,
            limits,
            limits.segment_bytes(),
            w.written,
        ));
        Ok(w)
    }

    /// Makes this single file restart every `every` bytes as a new part
    /// (version 8): the header and Meta again, a Segment record with the
    /// part's first event time, the tables and the blocks live then, at
    /// a [`PART_ALIGN`] boundary. `report --at`/`open --at` start at the
    /// part before the moment instead of the file's start. The first part
    /// is the file as before (no Segment record): read whole, the file is
    /// the same recording.
    ///
    /// A part starts once the one before holds `every` bytes (rounded up
    /// to [`PART_ALIGN`]) and [`PART_COPIES`] times what its own start
    /// took (the tables and the live blocks copied in): see
    /// [`part_spacing`].
    pub fn checkpoint_every(&mut self, meta: &Meta, every: u64) {
        if self.ring.is_some() || every == 0 {
            return;
        }
        // No directory: the parts are this file's.
        let mut ring = Ring::new(
            Path::new(""),
            meta,
            Limits::default(),
            part_spacing(every, 0),
            self.written,
        );
        ring.every = every;
        ring.asked_spacing = part_spacing(every, 0);
        self.ring = Some(ring);
    }

    /// The widest spacing of a file's parts when it was widened past
    /// `--checkpoint` for the copies of a big live heap (`None`: never,
    /// or not a file in parts).
    pub fn widened_parts(&self) -> Option<Widened> {
        self.ring.as_ref().and_then(|r| r.widened)
    }

    /// Whether stack `id` must be written before an event that uses it
    /// (a bounded recording's segment does not have it yet).
    pub fn needs_stack(&self, id: crate::event::StackId) -> bool {
        self.ring.as_ref().is_some_and(|r| !r.stacks.contains(&id))
    }

    /// A crash or a finding at `ts`: the segments holding the
    /// `crash_keep_ns` before it are kept apart, in `DIR/kept-N/`, as a
    /// recording of their own that the ring's limits never delete (hard
    /// links: no copy). At most [`MAX_PINS`] such windows.
    pub fn pin(&mut self, ts: u64) -> Pinned {
        let sink = &self.sink;
        let Some(r) = self.ring.as_mut() else {
            return Pinned::Not;
        };
        let Some(keep) = r.limits.crash_keep_ns else {
            return Pinned::Not;
        };
        let t0 = ts.saturating_sub(keep);
        // A later hit inside a window already kept extends it.
        let (i, made) = match r.pins.iter().position(|p| p.t1 >= t0 && p.t0 <= ts) {
            Some(i) => {
                r.pins[i].t1 = r.pins[i].t1.max(ts);
                (i, false)
            }
            None if r.pins.len() >= MAX_PINS => {
                r.pins_refused += 1;
                return Pinned::Full {
                    first: r.pins_refused == 1,
                };
            }
            None => {
                let dir = r.dir.join(format!("kept-{}", r.pins.len() + 1));
                // By the writer, in order with the segments (a failure
                // leaves the window without its links).
                sink.mkdir(&dir);
                r.pins.push(Pin { t0, t1: ts, dir });
                (r.pins.len() - 1, true)
            }
        };
        // Every segment of the window still held, and the one being
        // written (a link to it sees what is written after: the crash's
        // segment is kept even if tm-tui is killed before it closes).
        let pin = &r.pins[i];
        let mut from = r.first_ts.unwrap_or(ts);
        for &(n, _, first, last) in &r.closed {
            if pin.covers(first, last) {
                pin.link(sink, &r.dir, n);
                from = from.min(first);
            }
        }
        pin.link(sink, &r.dir, r.number);
        if made {
            Pinned::New {
                dir: pin.dir.clone(),
                // Shorter than asked only for segments dropped (not for a
                // recording that began later than the window would).
                short: (from > t0 && r.dropped > 0).then_some(Short {
                    from,
                    asked: keep,
                    by: r.limits,
                }),
            }
        } else {
            Pinned::Extended
        }
    }

    /// Whether crash windows are kept apart (a bounded recording with
    /// `--on-crash-keep`).
    pub fn keeps_windows(&self) -> bool {
        self.ring
            .as_ref()
            .is_some_and(|r| r.limits.crash_keep_ns.is_some())
    }

    /// Written in segments or parts, each starting with what it needs:
    /// [`Self::wants_rotation`] and [`Self::needs_stack`] apply.
    pub fn segmented(&self) -> bool {
        self.ring.is_some()
    }

    /// Whether the segment being written is full (by size or by time)
    /// before an event at `ts`: then [`TraceWriter::rotate`].
    #[cfg(test)]
    pub fn wants_rotation(&mut self, ts: u64) -> bool {
        self.wants_rotation_live(ts, || 0)
    }

    /// [`Self::wants_rotation`], where `live` counts the blocks live now:
    /// a file's next part starts only once this one's events are
    /// [`PART_COPIES`] times the copy of them it would start with (a
    /// heap growing fast would otherwise be copied whole at every part).
    pub fn wants_rotation_live(&mut self, ts: u64, live: impl FnOnce() -> u64) -> bool {
        let written = self.written;
        let Some(r) = &mut self.ring else {
            return false;
        };
        let first = *r.first_ts.get_or_insert(ts);
        r.last_ts = r.last_ts.max(ts);
        if r.in_place() {
            // The part fills up to its spacing (a PART_ALIGN multiple): the
            // Pad and SegmentEnd, and an event or stack written before the
            // next check, fit before that boundary, so the next part starts
            // on it, not a boundary further.
            if written + PART_RESERVE < r.asked_spacing {
                return false;
            }
            let due = written + PART_RESERVE >= r.segment_bytes
                && (written - r.preamble) / PART_COPIES >= live().saturating_mul(r.carried_each);
            // Held past --checkpoint for the copies: said once at the end.
            r.held |= !due;
            return due;
        }
        // Full, and mostly events (a preamble of many carried blocks must
        // not make every event start a segment).
        (written >= r.segment_bytes && written - r.preamble >= r.segment_bytes / 4)
            || r.limits
                .segment_ns()
                .is_some_and(|span| ts.saturating_sub(first) >= span)
    }

    /// Closes the segment and starts the next with the tables so far and
    /// the blocks live now; deletes the oldest segments past the limits
    /// (keeping at least one closed segment besides the new one).
    pub fn rotate(
        &mut self,
        ts: u64,
        tables: Tables<'_>,
        carried: &[CarriedBlock],
    ) -> anyhow::Result<()> {
        let Some(mut ring) = self.ring.take() else {
            return Ok(());
        };
        if ring.in_place() {
            // The next part starts at a PART_ALIGN boundary: a Pad record
            // (its frame alone at the least) and the SegmentEnd end there.
            let frame = (FRAME_HEAD + 4) as u64;
            let at = ring.base + self.written + 2 * frame;
            let pad = (PART_ALIGN - at % PART_ALIGN) % PART_ALIGN;
            self.pad(pad as usize)?;
        }
        self.record(Tag::SegmentEnd, &())?;
        self.submit()?;
        let part_len = self.written;
        let first = ring.first_ts.unwrap_or(ts);
        ring.closed
            .push_back((ring.number, self.written, first, ring.last_ts));
        for p in ring.pins.iter().filter(|p| p.covers(first, ring.last_ts)) {
            p.link(&self.sink, &ring.dir, ring.number);
        }
        ring.number += 1;
        if ring.in_place() {
            ring.base += self.written;
        } else {
            // The writer closes the old file as it opens the next.
            self.sink.open(&segment_path(&ring.dir, ring.number));
        }
        // A part's stated size is its spacing at the least: that of the
        // carried blocks alone (known before they are written; the
        // tables before them only widen it).
        let part_bytes = if ring.in_place() {
            part_spacing(ring.every, carried_bytes(carried)?)
        } else {
            ring.segment_bytes
        };
        self.begin(&ring.meta)?;
        self.record(
            Tag::Segment,
            &SegmentHead {
                number: ring.number,
                first_ts: ts,
                part_bytes,
            },
        )?;
        for m in tables.modules {
            self.write_module(m)?;
        }
        for p in tables.probes {
            self.write_probe(p)?;
        }
        // The stacks of the carried blocks; the events' come as they need them.
        ring.stacks.clear();
        for id in carried.iter().filter_map(|b| b.stack) {
            if ring.stacks.insert(id) {
                if let Some(st) = crate::event::find_stack(tables.stacks, id) {
                    self.write_stack(st)?;
                }
            }
        }
        self.write_lost(tables.lost)?;
        // In records of at most CARRIED_PER_RECORD blocks (~1 MiB): a
        // heap of millions of blocks would pass a record's size limit.
        for chunk in carried.chunks(CARRIED_PER_RECORD) {
            self.record(Tag::Carried, &chunk)?;
        }
        if carried.is_empty() {
            self.record(Tag::Carried, &carried)?;
        }
        self.submit()?;
        ring.preamble = self.written;
        if ring.in_place() {
            // What a live block cost this part's start, its stack and the
            // tables' share included: the next start's is about as much.
            if !carried.is_empty() {
                ring.carried_each = ring.preamble / carried.len() as u64;
            }
            ring.segment_bytes = part_spacing(ring.every, ring.preamble);
            if std::mem::take(&mut ring.held) && ring.widened.is_none_or(|w| part_len > w.spacing) {
                ring.widened = Some(Widened {
                    asked: ring.every,
                    spacing: part_len,
                    copy: ring.preamble,
                });
            }
        }
        ring.first_ts = Some(ts);
        ring.last_ts = ts;
        loop {
            // Room for the new segment to grow full: the bound holds at
            // every moment, not only at a rotation.
            let held: u64 = ring.closed.iter().map(|c| c.1).sum::<u64>()
                + self.written.max(ring.limits.segment_bytes());
            let over_size = ring.limits.max_bytes.is_some_and(|m| held > m);
            let too_old = match (ring.limits.keep_ns, ring.closed.front()) {
                (Some(k), Some(&(_, _, _, last))) => last < ts.saturating_sub(k),
                _ => false,
            };
            if ring.closed.len() < 2 || !(over_size || too_old) {
                break;
            }
            if let Some((n, _, _, _)) = ring.closed.pop_front() {
                self.sink.remove(&segment_path(&ring.dir, n));
                ring.dropped += 1;
            }
        }
        self.ring = Some(ring);
        Ok(())
    }

    /// Segments deleted so far (`None`: not a bounded recording).
    pub fn segments_dropped(&self) -> Option<u64> {
        self.ring
            .as_ref()
            .filter(|r| !r.in_place())
            .map(|r| r.dropped)
    }

    pub fn write_module(&mut self, m: &Module) -> anyhow::Result<()> {
        self.record(Tag::Module, m)
    }

    pub fn write_probe(&mut self, p: &Probe) -> anyhow::Result<()> {
        self.record(Tag::Probe, p)
    }

    pub fn write_stack(&mut self, s: &Stack) -> anyhow::Result<()> {
        if let Some(r) = &mut self.ring {
            r.stacks.insert(s.id);
        }
        self.record(Tag::Stack, s)
    }

    pub fn write_event(&mut self, e: &Event) -> anyhow::Result<()> {
        self.last_ts = e.ts;
        self.record(Tag::Event, e)
    }

    /// Records a snapshot of the cumulative loss counters.
    pub fn write_lost(&mut self, l: &Lost) -> anyhow::Result<()> {
        self.record(Tag::Lost, l)
    }

    /// Records a leak scan of the blocks live after the events written.
    pub fn write_leak_scan(&mut self, l: &LeakScan) -> anyhow::Result<()> {
        self.record(Tag::LeakScan, l)
    }

    /// Marks the recording as finished, and waits until the writer has
    /// written everything (at most [`sink::STALL_LIMIT`] without progress).
    pub fn write_end(
        &mut self,
        end_mono_ns: u64,
        status: Option<ExitStatus>,
    ) -> anyhow::Result<()> {
        self.record(
            Tag::End,
            &End {
                end_mono_ns,
                status,
            },
        )?;
        self.submit()?;
        // The last segment, complete now, into the windows it covers.
        if let Some(r) = &self.ring {
            let first = r.first_ts.unwrap_or(r.last_ts);
            for p in r
                .pins
                .iter()
                .filter(|p| p.covers(first, r.last_ts.max(end_mono_ns)))
            {
                p.link(&self.sink, &r.dir, r.number);
            }
        }
        self.flush()
    }

    /// Hands what is buffered to the writer and waits until it is
    /// written (at most [`sink::STALL_LIMIT`] without progress).
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.submit()?;
        Ok(self.sink.drain()?)
    }

    /// Hands what is buffered to the writer; never waits.
    fn submit(&mut self) -> Result<(), sink::Failure> {
        self.last_flush = Instant::now();
        if self.out.is_empty() {
            return self.sink.check();
        }
        let bytes = std::mem::replace(&mut self.out, Vec::with_capacity(PIECE));
        self.sink.data(bytes, self.last_ts)
    }

    /// Hands the buffer over if a second has passed since the last time;
    /// cheap enough to call after every event. A failure comes back from
    /// [`Self::check`] and every later write.
    pub fn maybe_flush(&mut self) {
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            let _ = self.submit();
        }
    }

    /// Bytes handed to the file so far (buffered or not), header included;
    /// a bounded recording's: of the segments held.
    pub fn bytes_written(&self) -> u64 {
        self.written
            + self
                .ring
                .as_ref()
                .map_or(0, |r| r.closed.iter().map(|c| c.1).sum())
    }

    fn record<T: Serialize>(&mut self, tag: Tag, value: &T) -> anyhow::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(&[tag as u8, 0, 0, 0, 0]);
        // Into the same buffer, taken and given back: no allocation.
        self.buf = postcard::to_extend(value, buf)
            .with_context(|| format!("cannot encode a {} record", tag.name()))?;
        self.seal()
    }

    /// A Pad record of `len` zero bytes.
    fn pad(&mut self, len: usize) -> anyhow::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&[Tag::Pad as u8, 0, 0, 0, 0]);
        self.buf.resize(FRAME_HEAD + len, 0);
        self.seal()
    }

    /// The record in `buf` (frame head, payload) framed: its length and
    /// checksum set, and it is appended to what goes to the file.
    fn seal(&mut self) -> anyhow::Result<()> {
        let payload = self.buf.len() - FRAME_HEAD;
        let len = u32::try_from(payload)
            .ok()
            .filter(|&l| l <= MAX_RECORD_LEN)
            .with_context(|| {
                format!("trace record of {payload} bytes is over the limit of {MAX_RECORD_LEN}")
            })?;
        if let Some(dst) = self.buf.get_mut(1..FRAME_HEAD) {
            dst.copy_from_slice(&len.to_le_bytes());
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&self.seq.to_le_bytes());
        h.update(&self.recording.to_le_bytes());
        h.update(&self.buf);
        let crc = h.finalize();
        self.seq += 1;
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.out.extend_from_slice(&self.buf);
        self.written += self.buf.len() as u64;
        if self.out.len() >= PIECE {
            self.submit()?;
        }
        Ok(())
    }
}

impl Drop for TraceWriter {
    /// What is buffered goes to the writer, which writes it before the
    /// file closes (the sink's drop waits, bounded).
    fn drop(&mut self) {
        let _ = self.submit();
    }
}

/// How much a bounded recording keeps (`--max-size`, `--keep`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: Option<u64>,
    pub keep_ns: Option<u64>,
    /// Keep the segments of this long before a crash or a finding apart
    /// (`--on-crash-keep`; `None`: off).
    pub crash_keep_ns: Option<u64>,
    /// An unbounded trace file restarts every this many bytes as a new
    /// part, where `--at` reads start (`--checkpoint`; 0: never).
    pub checkpoint: u64,
}

/// Carried blocks a record holds at most (~24-40 bytes each).
const CARRIED_PER_RECORD: usize = 32 << 10;

/// A file's part holds at least this many times the bytes its start
/// copies (the tables and the blocks live then) in events: so the copies
/// take at most 1/(PART_COPIES + 1) of the file whatever the live heap
/// (a part after 1 MiB of events re-copying an 8 MB heap made a 67 MB
/// recording 1.9 GB), while `--at` still reads at most PART_COPIES times
/// the heap it must load anyway past the part's start. 8: at most ~11%
/// of the file, and reads of a few times the heap.
pub const PART_COPIES: u64 = 8;

/// The bytes a carried block takes, about (before any was written).
const CARRIED_BYTES: u64 = 32;

/// Room kept at a part's end for the Pad and SegmentEnd frames and the
/// records written after the last check (an event, the stacks that came
/// before it).
const PART_RESERVE: u64 = 64 << 10;

/// How far apart a file's parts start: `every` bytes (`--checkpoint`),
/// or [`PART_COPIES`] + 1 times `copy`, the bytes a part's start takes
/// (its tables and carried blocks), if more; rounded up to
/// [`PART_ALIGN`], where parts start.
pub fn part_spacing(every: u64, copy: u64) -> u64 {
    every
        .max(PART_ALIGN)
        .max(copy.saturating_mul(PART_COPIES + 1))
        .div_ceil(PART_ALIGN)
        .saturating_mul(PART_ALIGN)
}

/// The bytes `carried` takes in Carried records (as
/// [`TraceWriter::rotate`] writes them).
fn carried_bytes(carried: &[CarriedBlock]) -> anyhow::Result<u64> {
    let mut n = 0u64;
    for chunk in carried.chunks(CARRIED_PER_RECORD) {
        let payload = postcard::serialize_with_flavor::<[CarriedBlock], _, usize>(
            chunk,
            postcard::ser_flavors::Size::default(),
        )?;
        n += (FRAME_HEAD + payload + 4) as u64;
    }
    Ok(n)
}

/// A file's parts spaced wider than `--checkpoint` asked: the copies of
/// a big live heap would otherwise dominate the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Widened {
    /// `--checkpoint`.
    pub asked: u64,
    /// The widest spacing of parts.
    pub spacing: u64,
    /// The bytes the start of the part after it copied (tables, live
    /// blocks).
    pub copy: u64,
}

/// A segment is this fraction of the limits: the held window is between
/// 7/8 and all of them.
const SEGMENTS: u64 = 8;
/// The smallest segment (a tiny --max-size still holds whole segments).
const MIN_SEGMENT: u64 = 1 << 20;
/// The largest segment (with --keep alone).
const MAX_SEGMENT: u64 = 256 << 20;

impl Limits {
    pub fn bounded(&self) -> bool {
        self.max_bytes.is_some() || self.keep_ns.is_some()
    }

    /// Event bytes a segment takes before the next one begins.
    pub fn segment_bytes(&self) -> u64 {
        self.max_bytes.map_or(MAX_SEGMENT, |m| {
            (m / SEGMENTS).clamp(MIN_SEGMENT, MAX_SEGMENT)
        })
    }

    /// How long a segment lasts at most (with --keep).
    pub fn segment_ns(&self) -> Option<u64> {
        self.keep_ns.map(|k| (k / SEGMENTS).max(1))
    }
}

/// What every segment starts with, so it reads on its own.
pub struct Tables<'a> {
    pub modules: &'a [Module],
    pub probes: &'a [Probe],
    pub stacks: &'a [Stack],
    pub lost: &'a Lost,
}

struct Ring {
    dir: std::path::PathBuf,
    meta: Meta,
    /// The segment being written.
    number: u64,
    limits: Limits,
    /// Event bytes a segment takes before the next one begins (a file's
    /// part: its spacing, see [`part_spacing`]).
    segment_bytes: u64,
    /// A file's parts: `--checkpoint`.
    every: u64,
    /// `every` as a part's spacing (a [`PART_ALIGN`] multiple), asked on
    /// every event.
    asked_spacing: u64,
    /// A file's parts spaced wider than `every`, at the widest.
    widened: Option<Widened>,
    /// The bytes a carried block took at the last part's start (with
    /// its share of the tables).
    carried_each: u64,
    /// The part being written was held past `every` for the copies.
    held: bool,
    /// Where the part being written starts in the file (`in_place`).
    base: u64,
    /// Bytes of the segment before its first event.
    preamble: u64,
    first_ts: Option<u64>,
    last_ts: u64,
    /// Closed segments held: (number, bytes, first and last event time).
    closed: VecDeque<(u64, u64, u64, u64)>,
    dropped: u64,
    /// The windows kept before crashes and findings.
    pins: Vec<Pin>,
    pins_refused: u64,
    /// Stacks written in the segment being written: a segment holds the
    /// stacks its events and carried blocks use, not every stack so far
    /// (a Python's 16 MB stack table repeated made each segment 18 MB).
    /// Asked for every event with a stack: a cheap hash.
    stacks: crate::util::hash::FxSet<crate::event::StackId>,
}

impl Ring {
    /// Segment 1 of a ring in `dir`, begun with `preamble` bytes; an empty
    /// `dir` makes the segments parts of one file (`--checkpoint`).
    fn new(dir: &Path, meta: &Meta, limits: Limits, segment_bytes: u64, preamble: u64) -> Self {
        Ring {
            dir: dir.to_path_buf(),
            meta: meta.clone(),
            number: 1,
            limits,
            segment_bytes,
            every: 0,
            asked_spacing: 0,
            widened: None,
            carried_each: CARRIED_BYTES,
            held: false,
            base: 0,
            preamble,
            first_ts: None,
            last_ts: 0,
            closed: VecDeque::new(),
            dropped: 0,
            pins: Vec::new(),
            pins_refused: 0,
            stacks: Default::default(),
        }
    }

    /// The segments are parts of one file (`--checkpoint`): nothing is
    /// deleted, nothing kept apart.
    fn in_place(&self) -> bool {
        self.dir.as_os_str().is_empty()
    }
}

/// What [`TraceWriter::pin`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pinned {
    /// Nothing: not a bounded recording, or no window kept.
    Not,
    /// A new window, in `dir`; `short` when the bounds had already
    /// dropped part of it.
    New {
        dir: std::path::PathBuf,
        short: Option<Short>,
    },
    /// A window already kept now reaches this far.
    Extended,
    /// [`MAX_PINS`] windows are kept already (`first`: the first refusal).
    Full { first: bool },
}

/// A window kept shorter than `--on-crash-keep` asked: it starts at
/// `from`, the first event of the oldest segment still held.
#[derive(Debug, PartialEq, Eq)]
pub struct Short {
    pub from: u64,
    pub asked: u64,
    /// The bounds that dropped the older segments.
    pub by: Limits,
}

/// The most windows a recording keeps apart (a finding in a hot loop
/// would otherwise keep everything).
pub const MAX_PINS: usize = 8;

/// A window `[t0, t1]` kept apart in `dir`.
struct Pin {
    t0: u64,
    t1: u64,
    dir: std::path::PathBuf,
}

impl Pin {
    fn covers(&self, first: u64, last: u64) -> bool {
        last >= self.t0 && first <= self.t1
    }

    /// A hard link to segment `n` of the ring in `ring_dir`, by the
    /// writer (a failure only leaves the window shorter).
    fn link(&self, sink: &sink::Sink, ring_dir: &Path, n: u64) {
        sink.hard_link(&segment_path(ring_dir, n), &segment_path(&self.dir, n));
    }
}

fn segment_path(dir: &Path, n: u64) -> std::path::PathBuf {
    dir.join(format!("seg-{n:08}.tmt"))
}

/// What tells a recording from another in its records' checksums: when and
/// whom it started recording.
fn recording_id(meta: &Meta) -> u64 {
    meta.start_wall_ns ^ meta.start_mono_ns.rotate_left(17) ^ u64::from(meta.pid).rotate_left(41)
}

/// `kept-N`: a window kept before a crash or finding.
fn is_kept_dir(name: &str) -> bool {
    name.strip_prefix("kept-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The segment number of a file name `seg-NNNNNNNN.tmt`.
fn segment_number(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?
        .strip_suffix(".tmt")?
        .parse()
        .ok()
}

/// `dir` can hold a bounded recording: it does not exist, is a file (to
/// be replaced, as a trace file would be), or is a directory holding
/// nothing but an earlier recording's segments.
pub fn check_ring_dir(dir: &Path) -> anyhow::Result<()> {
    if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_kept_dir(&name) && e.path().is_dir() {
            anyhow::bail!(
                "{} holds {name}, the window an earlier recording kept before a crash: \
                 move it away (or give another directory) so it is not lost",
                dir.display()
            );
        }
        if segment_number(&name).is_none() {
            anyhow::bail!(
                "{} holds {}, not only a recording's segments: give a new or empty directory",
                dir.display(),
                e.file_name().to_string_lossy()
            );
        }
    }
    Ok(())
}

/// `dir` made, or emptied of an earlier recording's segments; a file
/// there is replaced; a directory holding anything else is refused.
fn prepare_ring_dir(dir: &Path) -> anyhow::Result<()> {
    check_ring_dir(dir)?;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            let entries: Vec<_> = std::fs::read_dir(dir)
                .with_context(|| format!("cannot read {}", dir.display()))?
                .filter_map(Result::ok)
                .collect();
            for e in entries {
                if e.path().is_dir() {
                    std::fs::remove_dir_all(e.path())
                        .with_context(|| format!("cannot remove {}", e.path().display()))?;
                    continue;
                }
                std::fs::remove_file(e.path())
                    .with_context(|| format!("cannot remove {}", e.path().display()))?;
            }
            Ok(())
        }
        Ok(_) => {
            std::fs::remove_file(dir)
                .with_context(|| format!("cannot replace {}", dir.display()))?;
            std::fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))
        }
        Err(_) => {
            std::fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))
        }
    }
}

// ---------------------------------------------------------------------------
// Reading

/// Why a file could not be read as a trace at all.
#[derive(Debug, thiserror::Error)]
enum TraceError {
    #[error("not a tm-tui trace (bad magic)")]
    BadMagic,
    #[error("not a tm-tui trace (too short for a header)")]
    TooShort,
    #[error("trace format version {0} is newer than this tm-tui supports ({FORMAT_VERSION})")]
    TooNew(u16),
    #[error("trace format version 0 is not valid")]
    VersionZero,
    #[error("not a tm-tui trace (no readable Meta record: {0})")]
    NoMeta(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads a whole trace. A file that is not a trace is an error; a trace cut
/// short or corrupted part-way reads up to the damage, which is reported in
/// [`Trace::damage`].
/// `-` is the standard input.
pub fn read_trace(path: &Path) -> anyhow::Result<Trace> {
    read_path(path, None, None, None)
}

/// A trace file or a bounded recording's directory (not `-`, a FIFO or a
/// device): what can be read from a part and left before its end.
pub fn seekable(path: &Path) -> bool {
    !is_std(path) && std::fs::metadata(path).is_ok_and(|m| m.is_file() || m.is_dir())
}

/// The bytes of a trace file, or of a bounded recording's segments (none
/// for stdin): what a reader's progress is measured against.
pub fn size_of(path: &Path) -> Option<u64> {
    if is_std(path) {
        return None;
    }
    let m = std::fs::metadata(path).ok()?;
    if !m.is_dir() {
        return Some(m.len());
    }
    Some(
        std::fs::read_dir(path)
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| segment_number(&e.file_name().to_string_lossy()).is_some())
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum(),
    )
}

/// A reader counting the bytes it read into a shared counter (a loader's
/// progress, read by another thread).
struct Counted<'c, R> {
    inner: R,
    count: Option<&'c std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(c) = self.count {
            c.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(n)
    }
}

/// A trace file, `-` (stdin) or a bounded recording's directory, its
/// events kept or handed to `sink`.
fn read_path<'s>(
    path: &Path,
    sink: Option<&mut (dyn Sink + 's)>,
    count: Option<&std::sync::atomic::AtomicU64>,
    from: Option<Start>,
) -> anyhow::Result<Trace> {
    if let Some(from) = from {
        return read_from(path, sink, count, from);
    }
    if is_std(path) {
        use std::io::IsTerminal;
        let stdin = io::stdin();
        if stdin.is_terminal() {
            anyhow::bail!(
                "stdin is a terminal, not a trace: pipe one in (tm-tui record -o - -- CMD | tm-tui report -)"
            );
        }
        let stdin = Counted {
            inner: stdin.lock(),
            count,
        };
        let mut t = read_parts(BufReader::with_capacity(IO_BUFFER, stdin), sink, 0)
            .map_err(|e| anyhow::anyhow!("stdin: {e}"))?;
        missing_start(&mut t);
        return Ok(t);
    }
    if path.is_dir() {
        return read_ring_into(path, sink, count, 0);
    }
    let file = File::open(path).with_context(|| format!("cannot open trace {}", path.display()))?;
    let file = Counted { inner: file, count };
    let mut t = read_parts(BufReader::with_capacity(IO_BUFFER, file), sink, 0)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    missing_start(&mut t);
    Ok(t)
}

/// A file read from its start that starts with a later part (or segment)
/// of its recording: the ones before are not in it (cut off, or a
/// bounded recording's segment copied out of its directory).
fn missing_start(t: &mut Trace) {
    if let Some(n) = t
        .window
        .as_ref()
        .map(|w| w.first_segment)
        .filter(|&n| n > 1)
    {
        t.integrity.insert(
            0,
            Damage {
                offset: 0,
                reason: format!(
                    "the file starts at part {n} of its recording: parts 1 to {} are not in it",
                    n - 1
                ),
            },
        );
    }
}

/// A bounded recording: its segments held, oldest first, read as one
/// trace that starts with the blocks live at the first one's start. A
/// segment deleted while being listed (the recorder moving on) is passed
/// over; a segment missing between two held is named in `integrity`.
fn read_ring_into<'s>(
    dir: &Path,
    mut sink: Option<&mut (dyn Sink + 's)>,
    count: Option<&std::sync::atomic::AtomicU64>,
    from_segment: u64,
) -> anyhow::Result<Trace> {
    let mut segs: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| Some((segment_number(&e.file_name().to_string_lossy())?, e.path())))
        .filter(|(n, _)| *n >= from_segment)
        .collect();
    segs.sort();
    let mut out: Option<Trace> = None;
    let mut order = Order::default();
    // Every segment opened before any is read: the recorder deleting the
    // oldest while a slow reader is still on an earlier one cannot pull a
    // later one away (an open file reads on). One deleted between the
    // listing and its opening means those before it went too: the held
    // recording starts after it.
    let mut files: Vec<(u64, std::path::PathBuf, File)> = Vec::new();
    // Segments before the first read that were copies of others.
    let mut misnamed: Vec<Damage> = Vec::new();
    for (n, path) in segs {
        match File::open(&path) {
            Ok(f) => files.push((n, path, f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => files.clear(),
            Err(e) => return Err(anyhow::anyhow!("cannot open {}: {e}", path.display())),
        }
    }
    for (n, path, file) in files {
        if out.as_ref().is_some_and(|t| t.stopped) {
            break;
        }
        let mut r = BufReader::with_capacity(IO_BUFFER, Counted { inner: file, count });
        order.named = Some(n);
        let (mut seg, len) = read_part(&mut r, sink.as_deref_mut(), 0, &mut order)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // A segment's file ends with its SegmentEnd.
        if seg.closed && !r.fill_buf()?.is_empty() {
            seg.integrity.push(Damage {
                offset: len,
                reason: "bytes after the segment's end: not read".into(),
            });
        }
        let name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let at = |d: Damage| Damage {
            offset: d.offset,
            reason: format!("{} (in {name})", d.reason),
        };
        let Some(t) = &mut out else {
            let mut seg = seg;
            if let Taken::Misnamed(_) = order.taken {
                // Not the first: the next file's is.
                misnamed.push(at(Damage {
                    offset: 0,
                    reason: misnamed_reason(&seg),
                }));
                continue;
            }
            seg.damage = seg.damage.map(at);
            seg.integrity = seg.integrity.into_iter().map(at).collect();
            seg.skipped = seg.skipped.into_iter().map(at).collect();
            let w = seg.window.get_or_insert_with(Window::default);
            w.first_segment = n;
            w.segments = 1;
            out = Some(seg);
            continue;
        };
        append(t, seg, &order, 0, "segment", at);
    }
    let mut t = out.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no segments of a recording in this directory",
            dir.display()
        )
    })?;
    t.integrity.splice(0..0, misnamed);
    let mut kept: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| is_kept_dir(&e.file_name().to_string_lossy()) && e.path().is_dir())
        .map(|e| e.path())
        .collect();
    kept.sort();
    let is_kept = dir
        .file_name()
        .is_some_and(|n| is_kept_dir(&n.to_string_lossy()));
    if let Some(w) = &mut t.window {
        w.kept = kept;
        w.is_kept = is_kept;
    }
    // The newest segment held was closed for a next one not there (yet):
    // being written, or the recorder was killed between the two (a kept
    // window ends so by design).
    if t.closed && !t.stopped && t.end.is_none() && t.damage.is_none() && !is_kept {
        t.damage = Some(Damage {
            offset: 0,
            reason: format!(
                "{NO_END} (after segment {})",
                order.last.unwrap_or_default()
            ),
        });
    }
    Ok(t)
}

/// What a streaming read hands on, in file order (see [`read_trace_into`]).
pub enum Item<'a> {
    Module(&'a Module),
    Stack(&'a Stack),
    Probe(&'a Probe),
    Event(Event),
    Lost(&'a Lost),
    LeakScan(&'a LeakScan),
    /// A segment's blocks live at its start (each segment of a bounded
    /// recording has its own: only the first held one's start the heap).
    Carried(&'a [CarriedBlock]),
    /// Parts (or segments) are missing before the one read from here, at
    /// its first event's time: the heap is the blocks it carried in (the
    /// `Carried` items that follow), not what the events before left.
    Resync(u64),
}

/// Takes a trace's records as they are read.
pub trait Sink {
    /// The recording's Meta (once per file: each segment of a ring).
    fn meta(&mut self, meta: &Meta);
    fn item(&mut self, item: Item<'_>);
    /// Asked after each event: stop reading here, before that event (it
    /// and the rest are not wanted).
    fn enough(&self) -> bool {
        false
    }
}

/// Reads a trace (file, `-`, or a bounded recording's directory) handing
/// every event to `sink` instead of keeping it: the returned trace has
/// everything else (tables, losses, end, damage) and `events` empty, with
/// `event_count` the number read. Memory is the sink's, not the file's.
/// `count`, when given, is kept to the bytes read so far. From `from` (see
/// [`locate`]) on, or from the start.
pub fn read_trace_into_from(
    path: &Path,
    sink: &mut dyn Sink,
    count: Option<&std::sync::atomic::AtomicU64>,
    from: Option<Start>,
) -> anyhow::Result<Trace> {
    read_path(path, Some(sink), count, from)
}

/// A part of a file (version 8) or a segment of a bounded recording where
/// a read can start with the heap exact: what [`locate`] finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// The part's or segment's number.
    pub number: u64,
    /// Its first event's time.
    pub first_ts: u64,
    /// Where it starts in the file; for a directory, the bytes of the
    /// segments before it.
    pub offset: u64,
    /// The file's (or the segments') size.
    pub total: u64,
}

/// The last part of the file (or segment of the directory) `path` whose
/// first event is at or before `at` after the recording's start:
/// where a read for the heap at `ts` can start. `None`: the start (the
/// first part, a file of an earlier version, stdin). Reads a few headers:
/// the parts start at [`PART_ALIGN`] boundaries and say their size.
pub fn locate(path: &Path, at: u64) -> anyhow::Result<Option<Start>> {
    use std::os::unix::fs::FileExt;
    if is_std(path) {
        return Ok(None);
    }
    if path.is_dir() {
        let mut segs: Vec<(u64, std::path::PathBuf, u64)> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let n = segment_number(&e.file_name().to_string_lossy())?;
                Some((n, e.path(), e.metadata().ok()?.len()))
            })
            .collect();
        segs.sort();
        let total = segs.iter().map(|s| s.2).sum();
        let (mut best, mut before) = (None, 0);
        for (n, p, len) in &segs {
            let Some((version, meta, Some(head))) =
                File::open(p).ok().and_then(|f| part_head(&f, 0))
            else {
                // Deleted since the listing (the recorder moving on).
                before += len;
                continue;
            };
            // Before version 8 a segment does not say when it starts.
            if version < 8 {
                return Ok(None);
            }
            // A copy of another segment under this one's name: the read
            // names it; a read does not start at it.
            if head.number != *n {
                before += len;
                continue;
            }
            if head.first_ts > meta.start_mono_ns.saturating_add(at) {
                break;
            }
            best = Some(Start {
                number: *n,
                first_ts: head.first_ts,
                offset: before,
                total,
            });
            before += len;
        }
        // The oldest held is where a read starts anyway.
        return Ok(best.filter(|b| Some(b.number) != segs.first().map(|s| s.0)));
    }
    // A FIFO is not opened here: its writer would take this open for its
    // reader's, and this one's close for the reader gone.
    if !seekable(path) {
        return Ok(None);
    }
    let file = File::open(path).with_context(|| format!("cannot open trace {}", path.display()))?;
    let total = file.metadata()?.len();
    // Files in parts are version 8 on.
    let Some((8.., meta, _)) = part_head(&file, 0) else {
        return Ok(None);
    };
    let ts = meta.start_mono_ns.saturating_add(at);
    let (mut best, mut at, mut probe) = (None, PART_ALIGN, [0u8; 10]);
    while at + HEADER_LEN < total {
        let is_part = file.read_exact_at(&mut probe, at).is_ok()
            && probe[..8] == MAGIC
            && u16::from_le_bytes([probe[8], probe[9]]) >= 8;
        let head = if is_part { part_head(&file, at) } else { None };
        match head {
            Some((_, m, Some(h))) if m == meta => {
                if h.first_ts > ts {
                    break;
                }
                best = Some(Start {
                    number: h.number,
                    first_ts: h.first_ts,
                    offset: at,
                    total,
                });
                // The next part is at least this one's size further.
                at += (h.part_bytes / PART_ALIGN).max(1) * PART_ALIGN;
            }
            _ => at += PART_ALIGN,
        }
    }
    Ok(best)
}

/// The Meta and Segment record of the part of `file` at `offset` (none for
/// a file's first part), if one starts there.
fn part_head(file: &File, offset: u64) -> Option<(u16, Meta, Option<SegmentHead>)> {
    /// `file` read from `pos` on (positioned reads: the file is shared).
    struct At<'f> {
        file: &'f File,
        pos: u64,
    }
    impl Read for At<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            use std::os::unix::fs::FileExt;
            let n = self.file.read_at(buf, self.pos)?;
            self.pos += n as u64;
            Ok(n)
        }
    }
    // 64 KiB holds a part's head unless its Meta (the command line) is
    // longer: then it reads on.
    let r = BufReader::with_capacity(64 << 10, At { file, pos: offset });
    let mut records = Records::open(r, offset).ok()?;
    let version = records.version;
    let Ok(Next::Record(Record::Meta(meta))) = records.next() else {
        return None;
    };
    let seg = match records.next() {
        Ok(Next::Record(Record::Segment(h))) => Some(h),
        _ => None,
    };
    Some((version, meta, seg))
}

/// A read from the part or segment `from` on.
fn read_from<'s>(
    path: &Path,
    sink: Option<&mut (dyn Sink + 's)>,
    count: Option<&std::sync::atomic::AtomicU64>,
    from: Start,
) -> anyhow::Result<Trace> {
    let in_file = !path.is_dir();
    let mut t = if !in_file {
        read_ring_into(path, sink, count, from.number)?
    } else {
        let mut file =
            File::open(path).with_context(|| format!("cannot open trace {}", path.display()))?;
        file.seek(io::SeekFrom::Start(from.offset))?;
        let file = Counted { inner: file, count };
        read_parts(BufReader::with_capacity(IO_BUFFER, file), sink, from.offset)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    };
    if let Some(w) = &mut t.window {
        w.from_part = Some(PartStart {
            offset: from.offset,
            file_bytes: from.total,
            in_file,
        });
        // The segment found was deleted before it was read (a recorder
        // moving on): what was read starts later than asked.
        if w.first_segment != from.number {
            t.integrity.insert(
                0,
                Damage {
                    offset: 0,
                    reason: format!(
                        "segment {} was deleted (the recording moved on) before it could be \
                         read: the read starts at segment {}, after the moment asked for",
                        from.number, w.first_segment
                    ),
                },
            );
        }
    }
    Ok(t)
}

/// The numbers of the parts (or segments) taken so far: which comes next,
/// which were passed over.
#[derive(Default)]
struct Order {
    /// The last part taken (none before the first).
    last: Option<u64>,
    /// Parts passed over and not found since: (first, end) ranges.
    missing: Vec<(u64, u64)>,
    /// The number the part to read is named with (a segment's file name).
    named: Option<u64>,
    /// What was made of the part read last.
    taken: Taken,
    /// The recording's Meta (its first part's): a part of another is
    /// not taken (its number says nothing of this recording's parts).
    meta: Option<Meta>,
}

/// What is made of a part by its number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Taken {
    /// The next one (or the first).
    #[default]
    Next,
    /// The next after parts missing, `.0` to `.1`: read, its carried
    /// blocks are the heap.
    After(u64, u64),
    /// One passed over earlier (it belongs before part `.0`): not applied.
    Late(u64),
    /// One taken already: not applied.
    Repeat,
    /// A segment whose file is named `.0`: another's copy, not applied.
    Misnamed(u64),
}

impl Taken {
    /// Read but not applied.
    fn skipped(self) -> bool {
        matches!(self, Taken::Late(_) | Taken::Repeat | Taken::Misnamed(_))
    }
}

impl Order {
    /// Takes part `n`'s number: what is made of it.
    fn take(&mut self, n: u64) -> Taken {
        let t = match (self.last, self.named) {
            (_, Some(named)) if named != n => Taken::Misnamed(named),
            (None, _) => Taken::Next,
            (Some(last), _) if n == last + 1 => Taken::Next,
            (Some(last), _) if n > last => {
                self.missing.push((last + 1, n));
                Taken::After(last + 1, n - 1)
            }
            (Some(_), _) => match self.missing.iter().position(|&(a, b)| a <= n && n < b) {
                Some(i) => {
                    let (a, b) = self.missing.remove(i);
                    if a < n {
                        self.missing.push((a, n));
                    }
                    if n + 1 < b {
                        self.missing.push((n + 1, b));
                    }
                    Taken::Late(b)
                }
                None => Taken::Repeat,
            },
        };
        if !t.skipped() {
            self.last = Some(n);
        }
        self.taken = t;
        t
    }
}

/// A file's parts (version 8), read in order from the one at `base` as
/// one trace; the first part's errors (not a trace) are the error.
fn read_parts<'s, R: BufRead>(
    mut r: R,
    mut sink: Option<&mut (dyn Sink + 's)>,
    base: u64,
) -> Result<Trace, TraceError> {
    let mut order = Order::default();
    let (mut t, len) = read_part(&mut r, sink.as_deref_mut(), base, &mut order)?;
    let mut at = base + len;
    // A file's first part has no number.
    order.last.get_or_insert(1);
    while t.closed && !t.stopped && t.damage.is_none() && !r.fill_buf()?.is_empty() {
        match read_part(&mut r, sink.as_deref_mut(), at, &mut order) {
            Ok((part, len)) => {
                if part.window.is_none() {
                    // Only a file's first part has no number.
                    t.damage = Some(Damage {
                        offset: at,
                        reason: "a part without its number (a copy of the file's first?): not read"
                            .into(),
                    });
                    break;
                };
                append(&mut t, part, &order, at, "part", |d| d);
                at += len;
            }
            Err(e) => {
                t.damage = Some(Damage {
                    offset: at,
                    reason: format!("the next part does not read: {e}"),
                });
            }
        }
    }
    // A part closed for a next one not there (yet): the file is being
    // written, or the recorder was killed between the two.
    if t.closed && !t.stopped && t.end.is_none() && t.damage.is_none() {
        t.damage = Some(Damage {
            offset: at,
            reason: NO_END.into(),
        });
    }
    Ok(t)
}

/// Why a segment is not read whose file is named for another.
fn misnamed_reason(seg: &Trace) -> String {
    format!(
        "it holds segment {} (a copy of another?): not read",
        seg.window.as_ref().map_or(0, |w| w.first_segment)
    )
}

/// A segment or part `seg` (at `offset`) of the recording `t` after what
/// `t` holds: its tables, events and end taken in (unless `order` did not
/// take it: a repeat, or one out of order), its gaps named.
fn append(
    t: &mut Trace,
    seg: Trace,
    order: &Order,
    offset: u64,
    unit: &str,
    at: impl Fn(Damage) -> Damage,
) {
    if seg.meta != t.meta {
        t.integrity.push(at(Damage {
            offset,
            reason: format!(
                "a {unit} of another recording (pid {}, started {} ns): not read",
                seg.meta.pid, seg.meta.start_wall_ns
            ),
        }));
        return;
    }
    let n = seg.window.as_ref().map_or(0, |w| w.first_segment);
    let not = match order.taken {
        Taken::Next => None,
        Taken::After(a, b) => {
            t.integrity.push(at(Damage {
                offset,
                reason: format!(
                    "{unit}(s) {a} to {b} missing before it: their events are not in the \
                     recording; the heap is taken again from the blocks it carried in"
                ),
            }));
            t.resyncs.push(Resync {
                at: t.event_count,
                ts: seg.first_ts.or(t.events.last().map(|e| e.ts)).unwrap_or(0),
                carried: seg
                    .window
                    .as_ref()
                    .map(|w| w.carried.clone())
                    .unwrap_or_default(),
            });
            None
        }
        Taken::Late(b) => Some(format!(
            "{unit} {n} is out of order (it belongs before {unit} {b}): not applied"
        )),
        Taken::Repeat => Some(format!("{unit} {n} is repeated: not applied")),
        Taken::Misnamed(_) => Some(misnamed_reason(&seg)),
    };
    if let Some(reason) = not {
        t.integrity.push(at(Damage { offset, reason }));
        if let Some(d) = t.damage.take() {
            t.integrity.push(d);
        }
        t.closed = seg.closed;
        t.stopped = seg.stopped;
        t.damage = seg.damage.map(&at);
        t.integrity.extend(seg.integrity.into_iter().map(&at));
        return;
    }
    if let Some(w) = &mut t.window {
        w.segments += 1;
        w.last_segment = n;
    }
    // A damaged segment before the last one: what was read of it
    // counts, and the damage is said.
    if let Some(d) = t.damage.take() {
        t.integrity.push(d);
    }
    let base = t.event_count;
    t.event_count += seg.event_count;
    t.first_ts = t.first_ts.or(seg.first_ts);
    for m in seg.modules {
        if !t.modules.iter().any(|x| x.id == m.id) {
            t.modules.push(m);
        }
    }
    for p in seg.probes {
        if !t.probes.iter().any(|x| x.id == p.id) {
            t.probes.push(p);
        }
    }
    let known: std::collections::HashSet<crate::event::StackId> =
        t.stacks.iter().map(|s| s.id).collect();
    t.stacks
        .extend(seg.stacks.into_iter().filter(|s| !known.contains(&s.id)));
    t.events.extend(seg.events);
    t.lost_marks
        .extend(seg.lost_marks.into_iter().map(|(i, l)| (i + base, l)));
    t.lost = seg.lost;
    t.leak_scans
        .extend(seg.leak_scans.into_iter().map(|(i, l)| (i + base, l)));
    t.end = seg.end;
    t.closed = seg.closed;
    t.stopped = seg.stopped;
    t.damage = seg.damage.map(&at);
    t.integrity.extend(seg.integrity.into_iter().map(&at));
    t.skipped.extend(seg.skipped.into_iter().map(&at));
}

/// One part of a trace (a file, a bounded recording's segment, or a part
/// of a file from `base`): its header, Meta and records up to its
/// SegmentEnd or the end of the input. Returns it and its length in bytes;
/// the offsets in what it says are the input's (from `base`).
fn read_part<'s, R: Read>(
    r: R,
    mut sink: Option<&mut (dyn Sink + 's)>,
    base: u64,
    order: &mut Order,
) -> Result<(Trace, u64), TraceError> {
    let mut records = Records::open(r, base)?;
    order.taken = Taken::Next;
    // After the first part, a part starts with its number (version 8).
    let mut need_head = order.last.is_some() && records.version >= 8;
    // Read past, not applied (a repeat, one out of order).
    let mut skip = false;
    let meta = match records.next()? {
        Next::Record(Record::Meta(m)) => m,
        Next::Record(other) => {
            return Err(TraceError::NoMeta(format!(
                "the first record is a {} record",
                other.tag().name()
            )))
        }
        Next::Eof => return Err(TraceError::NoMeta("file ends after the header".into())),
        Next::Damage(reason) | Next::Skipped(reason) | Next::OutOfSequence(reason) => {
            return Err(TraceError::NoMeta(reason))
        }
    };
    if let Some(k) = sink.as_deref_mut() {
        k.meta(&meta);
    }
    let foreign = order.meta.get_or_insert_with(|| meta.clone()) != &meta;
    let mut trace = Trace {
        event_count: 0,
        first_ts: None,
        meta,
        modules: Vec::new(),
        stacks: Vec::new(),
        probes: Vec::new(),
        events: Vec::new(),
        lost: Lost::default(),
        lost_marks: Vec::new(),
        end: None,
        damage: None,
        skipped: Vec::new(),
        leak_scans: Vec::new(),
        integrity: Vec::new(),
        window: None,
        resyncs: Vec::new(),
        closed: false,
        stopped: false,
    };
    loop {
        let next = records.next()?;
        if std::mem::take(&mut need_head) && !matches!(next, Next::Record(Record::Segment(_))) {
            trace.damage = Some(Damage {
                offset: records.start,
                reason: "a part without its number (a copy of the file's first?): not read".into(),
            });
            break;
        }
        if skip
            && matches!(
                next,
                Next::Record(
                    Record::Module(_)
                        | Record::Stack(_)
                        | Record::Probe(_)
                        | Record::Event(_)
                        | Record::Lost(_)
                        | Record::LeakScan(_)
                        | Record::Carried(_)
                        | Record::End(_)
                )
            )
        {
            continue;
        }
        let reason = match next {
            Next::Eof => break,
            Next::Damage(reason) => reason,
            Next::OutOfSequence(reason) => {
                trace.integrity.push(Damage {
                    offset: records.start,
                    reason,
                });
                continue;
            }
            Next::Skipped(reason) => {
                trace.skipped.push(Damage {
                    offset: records.start,
                    reason,
                });
                continue;
            }
            Next::Record(Record::Meta(_)) => "a second Meta record".to_string(),
            Next::Record(Record::Module(m)) => {
                if let Some(k) = sink.as_deref_mut() {
                    k.item(Item::Module(&m));
                }
                trace.modules.push(m);
                continue;
            }
            Next::Record(Record::Stack(s)) => {
                if let Some(k) = sink.as_deref_mut() {
                    k.item(Item::Stack(&s));
                }
                trace.stacks.push(s);
                continue;
            }
            Next::Record(Record::Probe(p)) => {
                if let Some(k) = sink.as_deref_mut() {
                    k.item(Item::Probe(&p));
                }
                trace.probes.push(p);
                continue;
            }
            Next::Record(Record::Event(e)) => {
                let ts = e.ts;
                match sink.as_deref_mut() {
                    Some(k) => {
                        k.item(Item::Event(e));
                        // Not taken: the read ends before it (its time
                        // still says where the events read would start).
                        if k.enough() {
                            trace.stopped = true;
                            trace.first_ts.get_or_insert(ts);
                            break;
                        }
                    }
                    None => trace.events.push(e),
                }
                trace.event_count += 1;
                trace.first_ts.get_or_insert(ts);
                continue;
            }
            Next::Record(Record::Lost(l)) => {
                if let Some(k) = sink.as_deref_mut() {
                    k.item(Item::Lost(&l));
                }
                trace.lost_marks.push((trace.event_count, l.clone()));
                trace.lost = l;
                continue;
            }
            Next::Record(Record::End(e)) => {
                trace.end = Some(e);
                continue;
            }
            Next::Record(Record::LeakScan(l)) => {
                if let Some(k) = sink.as_deref_mut() {
                    k.item(Item::LeakScan(&l));
                }
                trace.leak_scans.push((trace.event_count, l));
                continue;
            }
            Next::Record(Record::Segment(head)) if foreign => {
                // Another recording's: read past, its number not taken (the
                // part after it then follows a gap, and resyncs the heap).
                skip = true;
                sink = None;
                trace.window = Some(Window {
                    first_segment: head.number,
                    last_segment: head.number,
                    segments: 1,
                    ..Window::default()
                });
                continue;
            }
            Next::Record(Record::Segment(head)) => {
                match order.take(head.number) {
                    t if t.skipped() => {
                        skip = true;
                        sink = None;
                    }
                    Taken::After(..) => {
                        if let Some(k) = sink.as_deref_mut() {
                            k.item(Item::Resync(head.first_ts));
                        }
                    }
                    _ => {}
                }
                trace.window = Some(Window {
                    first_segment: head.number,
                    last_segment: head.number,
                    segments: 1,
                    ..Window::default()
                });
                continue;
            }
            Next::Record(Record::Carried(blocks)) => {
                if let Some(k) = sink.as_deref_mut() {
                    k.item(Item::Carried(&blocks));
                }
                if let Some(w) = &mut trace.window {
                    w.carried.extend(blocks);
                }
                continue;
            }
            // What follows is the next part (of a file; a segment's file
            // ends here).
            Next::Record(Record::SegmentEnd) => {
                trace.closed = true;
                break;
            }
            Next::Record(Record::Pad) => continue,
        };
        trace.damage = Some(Damage {
            offset: records.start,
            reason,
        });
        break;
    }
    // Records still missing were dropped (those found later were moved).
    for (offset, first, n) in records.gaps() {
        trace.integrity.push(Damage {
            offset,
            reason: if n == 1 {
                format!("record #{first} is missing before this one")
            } else {
                format!("{n} records (#{first} on) are missing before this one")
            },
        });
    }
    trace.integrity.sort_by_key(|d| d.offset);
    // Every recording ends with an End record: without one it was cut
    // (tm-tui killed, or the file copied while being written), maybe at a
    // record boundary, which reads cleanly otherwise.
    if trace.end.is_none() && trace.damage.is_none() && !trace.closed && !trace.stopped {
        trace.damage = Some(Damage {
            offset: records.offset,
            reason: NO_END.into(),
        });
    }
    Ok((trace, records.offset - base))
}

/// The reason given for a trace without its End record.
pub const NO_END: &str =
    "no end record: the recording ended abruptly here (tm-tui killed, or the file still being written or cut)";

/// Fills `buf` as far as the input goes; short only at end of input.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|b| !b.is_empty()) {
        match r.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

enum Record {
    Meta(Meta),
    Module(Module),
    Probe(Probe),
    Stack(Stack),
    Event(Event),
    Lost(Lost),
    End(End),
    LeakScan(LeakScan),
    Segment(SegmentHead),
    Carried(Vec<CarriedBlock>),
    SegmentEnd,
    Pad,
}

impl Record {
    fn tag(&self) -> Tag {
        match self {
            Record::Meta(_) => Tag::Meta,
            Record::Module(_) => Tag::Module,
            Record::Probe(_) => Tag::Probe,
            Record::Stack(_) => Tag::Stack,
            Record::Event(_) => Tag::Event,
            Record::Lost(_) => Tag::Lost,
            Record::End(_) => Tag::End,
            Record::LeakScan(_) => Tag::LeakScan,
            Record::Segment(_) => Tag::Segment,
            Record::Carried(_) => Tag::Carried,
            Record::SegmentEnd => Tag::SegmentEnd,
            Record::Pad => Tag::Pad,
        }
    }
}

enum Next {
    Record(Record),
    Eof,
    /// The file is unreadable from this record on.
    Damage(String),
    /// This record is intact but not understood; the next one is read.
    Skipped(String),
    /// This record is intact but a duplicate or out of order (version 7
    /// on): not applied; the next one is read.
    OutOfSequence(String),
}

const TRUNCATED: &str = "truncated record at end of file (killed while writing?)";

struct Records<R> {
    r: R,
    version: u16,
    /// Offset of the next unread byte.
    offset: u64,
    /// Offset of the record last returned (or found damaged).
    start: u64,
    payload: Vec<u8>,
    /// The recording's root process (from its Meta record): the process
    /// of every event before version 5.
    root_pid: u32,
    /// The sequence number the next record should have (version 7 on).
    seq: u64,
    /// The recording's id, once its Meta is read (version 7 on).
    recording: u64,
    /// Sequence numbers skipped over so far and not found since: (first,
    /// end) ranges.
    missing: Vec<(u64, u64)>,
    /// Where each skip was seen: (offset, first missing).
    gaps: Vec<(u64, u64)>,
}

impl<R: Read> Records<R> {
    /// The records of a part of a trace at `base` in the input: its header
    /// read and checked.
    fn open(mut r: R, base: u64) -> Result<Self, TraceError> {
        let mut header = [0u8; HEADER_LEN as usize];
        let n = read_full(&mut r, &mut header)?;
        let got = header.get(..n.min(MAGIC.len())).unwrap_or_default();
        if !MAGIC.starts_with(got) {
            return Err(TraceError::BadMagic);
        }
        if n < header.len() {
            return Err(TraceError::TooShort);
        }
        let [_, _, _, _, _, _, _, _, v0, v1, _, _] = header;
        // The flags (bytes 10..12) are reserved; none are defined yet.
        let version = match u16::from_le_bytes([v0, v1]) {
            0 => return Err(TraceError::VersionZero),
            v if v > FORMAT_VERSION => return Err(TraceError::TooNew(v)),
            v => v,
        };
        Ok(Records {
            r,
            version,
            offset: base + HEADER_LEN,
            start: base + HEADER_LEN,
            payload: Vec::new(),
            root_pid: 0,
            seq: 0,
            recording: 0,
            missing: Vec::new(),
            gaps: Vec::new(),
        })
    }

    fn next(&mut self) -> io::Result<Next> {
        self.start = self.offset;
        let mut head = [0u8; FRAME_HEAD];
        match read_full(&mut self.r, &mut head)? {
            0 => return Ok(Next::Eof),
            FRAME_HEAD => {}
            _ => return Ok(Next::Damage(TRUNCATED.into())),
        }
        let [tag, l0, l1, l2, l3] = head;
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        if len > MAX_RECORD_LEN {
            return Ok(Next::Damage(format!("impossible record length {len}")));
        }
        // The checksum covers the sequence number and the recording's id
        // (v7), then the frame's head and payload: all put in one buffer
        // so it is hashed in one go (the small updates were a tenth of
        // reading a trace).
        const PRE: usize = 16 + FRAME_HEAD;
        self.payload.clear();
        self.payload.extend_from_slice(&[0; 16]);
        self.payload.extend_from_slice(&head);
        if len <= 1 << 16 {
            self.payload.resize(PRE + len as usize, 0);
            if read_full(&mut self.r, &mut self.payload[PRE..])? != len as usize {
                return Ok(Next::Damage(TRUNCATED.into()));
            }
        } else {
            // `take` + `read_to_end` grows the buffer only as data arrives,
            // so a corrupt length near the limit costs no more than the
            // file has.
            (&mut self.r)
                .take(u64::from(len))
                .read_to_end(&mut self.payload)?;
        }
        let mut crc = [0u8; 4];
        if self.payload.len() - PRE != len as usize || read_full(&mut self.r, &mut crc)? != 4 {
            return Ok(Next::Damage(TRUNCATED.into()));
        }
        let crc = u32::from_le_bytes(crc);
        let recording = self.recording;
        let payload = &mut self.payload;
        let mut sealed = |seq: Option<u64>| match seq {
            Some(seq) => {
                payload[..8].copy_from_slice(&seq.to_le_bytes());
                payload[8..16].copy_from_slice(&recording.to_le_bytes());
                crc32fast::hash(payload) == crc
            }
            None => crc32fast::hash(&payload[16..]) == crc,
        };
        let seq = if self.version < 7 {
            sealed(None).then_some(0)
        } else {
            // The expected number first; then nearer ones before farther.
            let e = self.seq;
            std::iter::once(e)
                .chain(
                    (1..=SEQ_WINDOW)
                        .flat_map(|d| [e.checked_add(d), e.checked_sub(d)])
                        .flatten(),
                )
                .find(|&n| sealed(Some(n)))
        };
        let Some(seq) = seq else {
            return Ok(Next::Damage("checksum mismatch".into()));
        };
        // The frame is whole: whatever its payload, the next record
        // starts after it.
        self.offset += (FRAME_HEAD + 4) as u64 + u64::from(len);
        if self.version >= 7 {
            if let Some(why) = self.sequence(seq) {
                return Ok(Next::OutOfSequence(why));
            }
        }
        let Some(tag) = Tag::from_repr(tag) else {
            return Ok(Next::Skipped(format!("unknown record type {tag}")));
        };
        let body = &self.payload[PRE..];
        let decoded = match self.version {
            ..=2 => v2::decode(tag, body).map_err(str::to_string),
            3 if tag == Tag::Module => from_payload::<ModuleV3>(body).map(|m| {
                Record::Module(Module {
                    id: m.id,
                    path: m.path,
                    build_id: None,
                    segments: Vec::new(),
                })
            }),
            3 | 4 if tag == Tag::Event => from_payload::<v4::EventV4>(body)
                .map(|e| Record::Event(e.upgrade(self.root_pid)))
                .map_err(|e| newer_kind(body, 4).unwrap_or(e)),
            ..=7 if tag == Tag::Segment => from_payload::<u64>(body).map(|number| {
                Record::Segment(SegmentHead {
                    number,
                    ..SegmentHead::default()
                })
            }),
            3..=5 if tag == Tag::Meta => from_payload::<MetaV5>(body).map(|m| {
                Record::Meta(Meta {
                    pid: m.pid,
                    command: m.command,
                    start_mono_ns: m.start_mono_ns,
                    start_wall_ns: m.start_wall_ns,
                    allocator: m.allocator,
                    launched: m.launched,
                    families: m.families,
                    // Following was the default (and before 5 there
                    // were no children to follow).
                    follow: true,
                })
            }),
            _ => decode(tag, body),
        };
        let decoded = decoded.map(|r| match r {
            Record::Meta(m) => {
                self.root_pid = m.pid;
                if self.version >= 7 {
                    self.recording = recording_id(&m);
                }
                Record::Meta(m)
            }
            Record::Event(mut e) if self.version <= 2 => {
                e.pid = self.root_pid;
                Record::Event(e)
            }
            r => r,
        });
        Ok(match decoded {
            Ok(rec) => Next::Record(rec),
            Err(why) => Next::Skipped(format!("undecodable {} record ({why})", tag.name())),
        })
    }
}

impl<R> Records<R> {
    /// Takes a record's sequence number: `None` when it is to be applied
    /// (the expected one, or one after a gap), else why not.
    fn sequence(&mut self, seq: u64) -> Option<String> {
        if seq >= self.seq {
            if seq > self.seq {
                self.missing.push((self.seq, seq));
                self.gaps.push((self.start, self.seq));
            }
            self.seq = seq + 1;
            return None;
        }
        // Behind: a record skipped over earlier, now found, or a repeat.
        match self.missing.iter().position(|&(a, b)| a <= seq && seq < b) {
            Some(i) => {
                let (a, b) = self.missing.remove(i);
                if a < seq {
                    self.missing.push((a, seq));
                }
                if seq + 1 < b {
                    self.missing.push((seq + 1, b));
                }
                Some(format!(
                    "record #{seq} is out of order (it belongs {} records earlier): not applied",
                    self.seq - seq - 1
                ))
            }
            None => Some(format!("record #{seq} is a duplicate: not applied")),
        }
    }

    /// The gaps left: (offset where seen, first missing, how many).
    fn gaps(&self) -> Vec<(u64, u64, u64)> {
        let mut out: Vec<(u64, u64, u64)> = self
            .missing
            .iter()
            .map(|&(a, b)| {
                // Reported at the record after which the first of the
                // range was found missing.
                let offset = self
                    .gaps
                    .iter()
                    .filter(|&&(_, first)| first <= a)
                    .map(|&(o, _)| o)
                    .max()
                    .unwrap_or(0);
                (offset, a, b - a)
            })
            .collect();
        out.sort_unstable();
        out
    }
}

/// Meta as versions 3 to 5 wrote it: not saying whether children were
/// followed.
#[derive(Deserialize)]
struct MetaV5 {
    pid: u32,
    command: String,
    start_mono_ns: u64,
    start_wall_ns: u64,
    allocator: String,
    launched: bool,
    families: crate::event::Families,
}

/// A module as version 3 wrote it: no build-id yet.
#[derive(Deserialize)]
struct ModuleV3 {
    id: crate::event::ModuleId,
    path: String,
}

/// One record's payload in the current version.
fn decode(tag: Tag, payload: &[u8]) -> Result<Record, String> {
    Ok(match tag {
        Tag::Meta => Record::Meta(from_payload(payload)?),
        Tag::Module => Record::Module(from_payload(payload)?),
        Tag::Probe => Record::Probe(from_payload(payload)?),
        Tag::Stack => Record::Stack(from_payload(payload)?),
        Tag::Event => {
            Record::Event(from_payload(payload).map_err(|e| newer_kind(payload, 6).unwrap_or(e))?)
        }
        Tag::Lost => Record::Lost(from_payload(payload)?),
        Tag::End => Record::End(from_payload(payload)?),
        Tag::LeakScan => Record::LeakScan(from_payload(payload)?),
        Tag::Segment => Record::Segment(from_payload(payload)?),
        Tag::Carried => Record::Carried(from_payload(payload)?),
        Tag::SegmentEnd => {
            from_payload::<()>(payload)?;
            Record::SegmentEnd
        }
        Tag::Pad => Record::Pad,
    })
}

fn from_payload<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, String> {
    match postcard::take_from_bytes(payload) {
        Ok((v, [])) => Ok(v),
        Ok(_) => Err("trailing bytes".into()),
        // postcard drops serde's message (an unknown variant index, an id
        // out of range): say what it can be.
        Err(postcard::Error::SerdeDeCustom) => {
            Err("a value out of range or a variant this version does not know".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// "unknown event kind N" when an undecodable event's kind is past the
/// last this version knows: written by a newer tm-tui.
fn newer_kind(payload: &[u8], version: u16) -> Option<String> {
    // An event's derived encoding starts with ts, pid (since version 5),
    // tid and the kind's index.
    let kind = if version >= 5 {
        postcard::take_from_bytes::<(u64, u32, u32, u32)>(payload)
            .ok()?
            .0
             .3
    } else {
        postcard::take_from_bytes::<(u64, u32, u32)>(payload)
            .ok()?
            .0
             .2
    };
    let known = u32::try_from(EventKind::COUNT).ok()?;
    (kind >= known).then(|| format!("unknown event kind {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        AllocFn, Arg, CallInfo, Families, Frame, SignalInfo, SysCall, SysInfo, ValueType,
    };
    use crate::util::xorshift::Rng;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A path unique to this test run and call, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let pid = std::process::id();
            TempFile(std::env::temp_dir().join(format!("tmt-test-{pid}-{n}-{name}.tmt")))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn meta() -> Meta {
        Meta {
            pid: 4242,
            command: "./target --flag ünïcode".into(),
            start_mono_ns: 123_456_789_000,
            start_wall_ns: 1_700_000_000_000_000_000,
            allocator: "/usr/lib/libc.so.6".into(),
            launched: true,
            families: Families::parse("alloc,net,sched").unwrap_or_default(),
            follow: false,
        }
    }

    fn ev(ts: u64, kind: EventKind) -> Event {
        Event {
            ts,
            pid: 4242,
            tid: 4243,
            kind,
        }
    }

    fn signal_all_fields() -> SignalInfo {
        SignalInfo {
            signo: 11,
            code: -6,
            errno: -22,
            addr: 0xdead_beef_0000,
            handled: true,
            ip: 0x5555_5555_1234,
            sp: 0x7ffe_ffff_ff00,
            stack: Some(7),
            sender: Some(crate::event::SignalSender {
                pid: 31337,
                uid: 1000,
                comm: "kïll".into(),
            }),
            regs: (0..17).map(|r| u64::MAX - r).collect(),
            insn: vec![0x48, 0x8b, 0x07],
            message: Some("malloc(): corrupted top size".into()),
        }
    }

    fn every_kind() -> Vec<Event> {
        let mut v = Vec::new();
        for func in <AllocFn as strum::IntoEnumIterator>::iter() {
            v.push(ev(
                1,
                EventKind::Alloc {
                    func,
                    ptr: 0x5555_0000_1000,
                    size: u64::MAX,
                    stack: Some(u32::MAX),
                },
            ));
        }
        v.extend([
            ev(
                2,
                EventKind::Inherit {
                    ptr: 0x5555_0000_2000,
                    size: 77,
                    stack: Some(3),
                },
            ),
            ev(2, EventKind::Discard { ptr: u64::MAX }),
            ev(
                2,
                EventKind::Watch(Box::new(crate::event::WatchHit {
                    what: crate::event::WatchWhat::PastEnd,
                    addr: 0x5555_0000_2000 + 77,
                    len: 1,
                    write: true,
                    block: 0x5555_0000_2000,
                    size: 77,
                    ip: u64::MAX,
                    value: 0x41,
                    before: 0,
                    regs: vec![1, 2, u64::MAX],
                    code: vec![0x90, 0xc3],
                    stack: Some(2),
                })),
            ),
            ev(
                2,
                EventKind::Free {
                    ptr: u64::MAX,
                    stack: None,
                },
            ),
            ev(
                3,
                EventKind::Realloc {
                    func: AllocFn::Reallocarray,
                    old: 1,
                    ptr: 0,
                    size: 0,
                    stack: Some(0),
                },
            ),
            ev(
                4,
                EventKind::Mmap {
                    addr: 0x7f00_0000_0000,
                    len: 4096,
                    prot: u32::MAX,
                    flags: 0x22,
                    fd: -1,
                    offset: u64::MAX,
                    ret: i64::MIN,
                },
            ),
            ev(
                5,
                EventKind::Munmap {
                    addr: 0,
                    len: 1,
                    ret: -22,
                },
            ),
            ev(
                6,
                EventKind::Mremap {
                    old: 1,
                    old_len: 2,
                    new_len: 3,
                    flags: 4,
                    ret: i64::MAX,
                },
            ),
            ev(7, EventKind::Brk { req: 0, ret: -12 }),
            ev(8, EventKind::Signal(Box::new(signal_all_fields()))),
            ev(
                9,
                EventKind::Spawn {
                    child: u32::MAX,
                    thread: true,
                },
            ),
            ev(
                10,
                EventKind::Spawn {
                    child: 0,
                    thread: false,
                },
            ),
            ev(
                11,
                EventKind::Exec {
                    filename: "/bin/ßh".into(),
                },
            ),
            ev(
                12,
                EventKind::Exec {
                    filename: String::new(),
                },
            ),
            ev(13, EventKind::ThreadExit { code: i32::MIN }),
            ev(
                14,
                EventKind::ProcessExit {
                    status: ExitStatus::Code(-1),
                },
            ),
            ev(
                u64::MAX,
                EventKind::ProcessExit {
                    status: ExitStatus::Signal {
                        signo: 11,
                        core: true,
                    },
                },
            ),
            ev(
                20,
                EventKind::Call(Box::new(CallInfo {
                    probe: 3,
                    args: vec![
                        Arg::Int(-42),
                        Arg::Uint(u64::MAX),
                        Arg::Ptr(0x7ffd_0000_1234),
                        Arg::Bool(true),
                        Arg::Char(b'x'),
                        Arg::Str("päth".into()),
                        Arg::BadStr(0),
                    ],
                    sp: 0x7ffd_0000_0008,
                    stack: Some(5),
                    ret_addr: 0x7fff_ffff_e000,
                })),
            ),
            ev(
                21,
                EventKind::Return {
                    probe: 3,
                    ret: u64::MAX,
                    sp: 0x7ffd_0000_0010,
                },
            ),
            ev(
                22,
                EventKind::Sys(Box::new(SysInfo {
                    call: SysCall::Connect,
                    fd: 3,
                    ret: -111,
                    dur_ns: 12_345,
                    len: 0,
                    arg: 0,
                    target: Some("127.0.0.1:9".into()),
                    stack: Some(7),
                })),
            ),
            ev(
                23,
                EventKind::OffCpu {
                    dur_ns: 1_000_000,
                    preempted: true,
                    stack: Some(9),
                },
            ),
        ]);
        v
    }

    fn stack(id: crate::event::StackId) -> Stack {
        Stack {
            id,
            frames: vec![
                Frame {
                    addr: 0x5555_5555_1000,
                    module: Some(0),
                    offset: 0x1000,
                    func: Some("main".into()),
                    file: Some("src/main.c".into()),
                    line: 42,
                    inlined: false,
                },
                Frame::default(),
                Frame {
                    addr: u64::MAX,
                    module: Some(u32::MAX),
                    offset: 0,
                    func: Some(String::new()),
                    file: None,
                    line: u32::MAX,
                    inlined: false,
                },
            ],
            end: crate::event::StackEnd::Unknown,
        }
    }

    fn write_events(path: &Path, events: &[Event]) -> anyhow::Result<()> {
        let mut w = TraceWriter::create(path, &meta())?;
        for e in events {
            w.write_event(e)?;
        }
        w.flush()
    }

    #[test]
    fn every_event_kind_round_trips() -> anyhow::Result<()> {
        let f = TempFile::new("kinds");
        let events = every_kind();
        write_events(&f.0, &events)?;
        let t = read_trace(&f.0)?;
        assert_eq!(t.meta, meta());
        assert_eq!(t.events, events);
        // Written without its End record: said so, where it would be.
        let len = std::fs::metadata(&f.0)?.len();
        assert_eq!(
            t.damage.as_ref().map(|d| (d.offset, d.reason.as_str())),
            Some((len, NO_END))
        );
        assert_eq!(t.end, None);
        Ok(())
    }

    #[test]
    fn signal_with_every_field_round_trips() -> anyhow::Result<()> {
        let f = TempFile::new("signal");
        let mut other = signal_all_fields();
        other.handled = false;
        other.stack = None;
        other.signo = i32::MIN;
        other.code = i32::MAX;
        let events = [
            ev(1, EventKind::Signal(Box::new(signal_all_fields()))),
            ev(2, EventKind::Signal(Box::new(other))),
        ];
        write_events(&f.0, &events)?;
        assert_eq!(read_trace(&f.0)?.events, events);
        Ok(())
    }

    #[test]
    fn stack_none_and_some_zero_differ() -> anyhow::Result<()> {
        let f = TempFile::new("stack-none");
        let alloc = |stack| {
            ev(
                1,
                EventKind::Alloc {
                    func: AllocFn::Malloc,
                    ptr: 16,
                    size: 16,
                    stack,
                },
            )
        };
        let events = [alloc(None), alloc(Some(0)), alloc(Some(1))];
        write_events(&f.0, &events)?;
        let t = read_trace(&f.0)?;
        assert_eq!(t.events, events);
        assert_ne!(t.events.first(), t.events.get(1));
        Ok(())
    }

    #[test]
    fn tables_lost_and_end_round_trip() -> anyhow::Result<()> {
        let f = TempFile::new("tables");
        let modules = [
            Module {
                id: 0,
                path: "/usr/bin/target".into(),
                build_id: None,
                segments: Vec::new(),
            },
            Module {
                id: 1,
                path: "/usr/lib/libc.so.6".into(),
                build_id: None,
                segments: Vec::new(),
            },
        ];
        let stacks = [
            stack(0),
            Stack {
                id: 1,
                frames: Vec::new(),
                end: crate::event::StackEnd::Unknown,
            },
        ];
        let lost = Lost {
            ringbuf: 1,
            stack_table: 2,
            inflight: 3,
            channel: 4,
            stackless: u64::MAX,
            undecodable: 7,
        };
        let mut w = TraceWriter::create(&f.0, &meta())?;
        for m in &modules {
            w.write_module(m)?;
        }
        for s in &stacks {
            w.write_stack(s)?;
        }
        let probes = [Probe {
            id: 0,
            func: "ns::parse_request".into(),
            module: "/usr/bin/target".into(),
            offset: 0x1234,
            args: vec![ValueType::Str, ValueType::Int],
            ret: ValueType::Long,
            returns: false,
        }];
        w.write_probe(&probes[0])?;
        w.write_lost(&Lost::default())?;
        w.write_lost(&lost)?;
        let status = Some(ExitStatus::Signal {
            signo: 6,
            core: false,
        });
        w.write_end(999, status)?;
        drop(w);
        let t = read_trace(&f.0)?;
        assert_eq!(t.modules, modules);
        assert_eq!(t.stacks, stacks);
        assert_eq!(t.probes, probes);
        assert_eq!(t.lost, lost, "the last Lost snapshot wins");
        assert_eq!(
            t.lost_marks,
            vec![(0, Lost::default()), (0, lost.clone())],
            "each snapshot with the events before it"
        );
        assert_eq!(
            t.end,
            Some(End {
                end_mono_ns: 999,
                status
            })
        );
        assert_eq!(t.damage, None);

        let f2 = TempFile::new("end-none");
        let mut w = TraceWriter::create(&f2.0, &Meta::default())?;
        w.write_end(0, None)?;
        let t = read_trace(&f2.0)?;
        assert_eq!(t.meta, Meta::default());
        assert_eq!(
            t.end,
            Some(End {
                end_mono_ns: 0,
                status: None
            })
        );
        Ok(())
    }

    #[test]
    fn stack_lookup_is_by_id() -> anyhow::Result<()> {
        let f = TempFile::new("lookup");
        let mut w = TraceWriter::create(&f.0, &meta())?;
        for id in [0, 1, 5, 2] {
            w.write_stack(&stack(id))?;
        }
        w.flush()?;
        let t = read_trace(&f.0)?;
        for id in [0, 1, 5, 2] {
            assert_eq!(
                crate::event::find_stack(&t.stacks, id).map(|s| s.id),
                Some(id)
            );
        }
        assert!(crate::event::find_stack(&t.stacks, 3).is_none());
        assert!(crate::event::find_stack(&t.stacks, u32::MAX).is_none());
        Ok(())
    }

    #[test]
    fn alloc_event_is_compact() -> anyhow::Result<()> {
        let f = TempFile::new("compact");
        let mut w = TraceWriter::create(&f.0, &meta())?;
        let before = w.bytes_written();
        w.write_event(&Event {
            ts: 86_400_000_000_000 * 30, // a month of uptime
            pid: 123_456,
            tid: 123_456,
            kind: EventKind::Alloc {
                func: AllocFn::Malloc,
                ptr: 0x5555_5557_a2c0,
                size: 4096,
                stack: Some(70_000),
            },
        })?;
        let size = w.bytes_written() - before;
        w.flush()?;
        assert!(size < 48, "{size} bytes");
        assert_eq!(std::fs::metadata(&f.0)?.len(), w.bytes_written());
        Ok(())
    }

    fn fixture_lost() -> Lost {
        Lost {
            ringbuf: 1,
            stack_table: 2,
            inflight: 3,
            channel: 4,
            stackless: u64::MAX,
            undecodable: 7,
        }
    }

    fn fixture_probe() -> Probe {
        Probe {
            id: 0,
            func: "ns::parse_request".into(),
            module: "/usr/bin/target".into(),
            offset: 0x1234,
            args: vec![ValueType::Str, ValueType::Int, ValueType::Char],
            ret: ValueType::Long,
            returns: false,
        }
    }

    /// What `tests/data/every-kind-v*.tmt` hold: every record type, every
    /// event kind (version 1: the kinds it had, and its shorter records;
    /// before 4, modules without build-ids).
    fn fixture(version: u16) -> Trace {
        let v1 = version == 1;
        let mut meta = meta();
        if version < 6 {
            meta.follow = true;
        }
        if v1 {
            meta.launched = false;
            meta.families = Families::default();
        }
        let events: Vec<Event> = every_kind()
            .into_iter()
            .filter(|e| {
                (version >= 5
                    || !matches!(
                        e.kind,
                        EventKind::Inherit { .. } | EventKind::Discard { .. }
                    ))
                    && (version >= 6 || !matches!(e.kind, EventKind::Watch(_)))
            })
            .map(|mut e| {
                if version < 5 {
                    // Only the root process, signals as they were.
                    if let EventKind::Signal(s) = &mut e.kind {
                        s.sender = None;
                        s.regs.clear();
                        s.insn.clear();
                        s.message = None;
                    }
                } else if e.ts == 9 {
                    // A child's event.
                    e.pid = 4300;
                }
                e
            })
            .filter(|e| {
                !v1 || !matches!(
                    e.kind,
                    EventKind::Call(_)
                        | EventKind::Return { .. }
                        | EventKind::Sys(_)
                        | EventKind::OffCpu { .. }
                )
            })
            .collect();
        let mut lost = fixture_lost();
        if v1 {
            lost.undecodable = 0;
        }
        Trace {
            event_count: events.len() as u64,
            first_ts: events.first().map(|e| e.ts),
            meta,
            modules: vec![
                Module {
                    id: 0,
                    path: "/usr/bin/target".into(),
                    build_id: (version >= 4)
                        .then(|| "a50d6825e71f1473372299161f75fe50e80452de".into()),
                    segments: if version >= 4 {
                        vec![[0, 0, 0x3000], [0x3000, 0x4000, 0x1000]]
                    } else {
                        Vec::new()
                    },
                },
                Module {
                    id: 1,
                    path: "/usr/lib/libc.so.6".into(),
                    build_id: None,
                    segments: Vec::new(),
                },
            ],
            stacks: vec![
                stack(0),
                Stack {
                    id: 1,
                    frames: Vec::new(),
                    end: crate::event::StackEnd::Unknown,
                },
            ],
            probes: if v1 {
                Vec::new()
            } else {
                vec![fixture_probe()]
            },
            lost_marks: vec![(0, Lost::default()), (events.len() as u64, lost.clone())],
            events,
            lost,
            end: Some(End {
                end_mono_ns: 999,
                status: Some(ExitStatus::Signal {
                    signo: 6,
                    core: false,
                }),
            }),
            damage: None,
            skipped: Vec::new(),
            leak_scans: Vec::new(),
            integrity: Vec::new(),
            window: None,
            resyncs: Vec::new(),
            closed: false,
            stopped: false,
        }
    }

    /// Files written by earlier versions, checked in: they read as written.
    #[test]
    fn old_versions_still_read() -> anyhow::Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        for v in [1u16, 2, 3, 4, 5, 6, 7] {
            let path = dir.join(format!("every-kind-v{v}.tmt"));
            let bytes = std::fs::read(&path)?;
            assert_eq!(bytes.get(8..10), Some(&v.to_le_bytes()[..]), "version {v}");
            assert_eq!(read_trace(&path)?, fixture(v), "version {v}");
        }
        Ok(())
    }

    /// Writes `t` the way a recording does: tables first, a loss snapshot
    /// before and after the events.
    fn write_fixture(path: &Path, t: &Trace) -> anyhow::Result<()> {
        let mut w = TraceWriter::create(path, &t.meta)?;
        for m in &t.modules {
            w.write_module(m)?;
        }
        for s in &t.stacks {
            w.write_stack(s)?;
        }
        for p in &t.probes {
            w.write_probe(p)?;
        }
        w.write_lost(&Lost::default())?;
        for e in &t.events {
            w.write_event(e)?;
        }
        w.write_lost(&t.lost)?;
        let end = t.end.unwrap_or(End {
            end_mono_ns: 0,
            status: None,
        });
        w.write_end(end.end_mono_ns, end.status)
    }

    /// The format, byte for byte: a change to the order of a type's fields
    /// or variants in `event.rs` (or to a derive) fails here. When the
    /// change is meant (a new kind added last, or a new version),
    /// `TM_BLESS=1 cargo test` rewrites the file.
    #[test]
    fn every_kind_encodes_as_the_checked_in_file() -> anyhow::Result<()> {
        let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/every-kind-v8.tmt");
        let f = TempFile::new("golden");
        write_fixture(&f.0, &fixture(FORMAT_VERSION))?;
        let bytes = std::fs::read(&f.0)?;
        if std::env::var_os("TM_BLESS").is_some() {
            std::fs::write(&golden, &bytes)?;
        }
        let want = std::fs::read(&golden)?;
        let first_diff = bytes.iter().zip(&want).position(|(a, b)| a != b);
        assert!(
            bytes == want,
            "{} differs from this encoder's output (first at byte {first_diff:?}, \
             {} vs {} bytes); TM_BLESS=1 rewrites it if the change is meant",
            golden.display(),
            want.len(),
            bytes.len()
        );
        assert_eq!(read_trace(&golden)?, fixture(FORMAT_VERSION));
        Ok(())
    }

    /// A leak scan reads back where it was written (after the events it
    /// classified); its bytes are pinned here, as the golden file pins the
    /// other records' (the field order is the format).
    #[test]
    fn leak_scans_read_back_in_place() -> anyhow::Result<()> {
        use crate::event::{LeakKind, LeakScan, ScanTrigger, ScannedBlock};
        let t = fixture(FORMAT_VERSION);
        let scan = LeakScan {
            pid: 7,
            ts: 300,
            trigger: ScanTrigger::Paused,
            paused_ns: 2,
            root_bytes: 4096,
            block_bytes: 64,
            caveats: vec!["c".into()],
            blocks: vec![ScannedBlock {
                ptr: 0x10,
                size: 24,
                kind: LeakKind::IndirectlyLost,
            }],
        };
        assert_eq!(
            postcard::to_allocvec(&scan)?,
            [7, 172, 2, 1, 2, 128, 32, 64, 1, 1, b'c', 1, 16, 24, 1]
        );
        let f = TempFile::new("leakscan");
        let mut w = TraceWriter::create(&f.0, &t.meta)?;
        w.write_event(&t.events[0])?;
        w.write_leak_scan(&scan)?;
        w.write_event(&t.events[1])?;
        w.flush()?;
        drop(w);
        let back = read_trace(&f.0)?;
        assert_eq!(back.leak_scans, [(1, scan)]);
        assert_eq!(back.events.len(), 2);
        assert!(back.skipped.is_empty());
        Ok(())
    }

    /// The fixtures hold one event of every kind: a new kind must be added
    /// to `every_kind` (and the golden file blessed).
    #[test]
    fn every_kind_has_every_kind() {
        let kinds: std::collections::HashSet<_> = every_kind()
            .iter()
            .map(|e| std::mem::discriminant(&e.kind))
            .collect();
        assert_eq!(kinds.len(), EventKind::COUNT);
    }

    /// A small trace with every record type, and the offset after each record.
    fn sample(path: &Path) -> anyhow::Result<(Vec<u8>, Vec<u64>)> {
        sample_of(path, &meta())
    }

    /// [`sample`] of the recording `meta` says.
    fn sample_of(path: &Path, meta: &Meta) -> anyhow::Result<(Vec<u8>, Vec<u64>)> {
        let mut w = TraceWriter::create(path, meta)?;
        let mut ends = vec![w.bytes_written()];
        w.write_module(&Module {
            id: 0,
            path: "/bin/x".into(),
            build_id: None,
            segments: Vec::new(),
        })?;
        ends.push(w.bytes_written());
        w.write_stack(&stack(0))?;
        ends.push(w.bytes_written());
        for e in every_kind().iter().take(12) {
            w.write_event(e)?;
            ends.push(w.bytes_written());
        }
        w.write_lost(&Lost::default())?;
        ends.push(w.bytes_written());
        w.write_end(5, Some(ExitStatus::Code(0)))?;
        ends.push(w.bytes_written());
        Ok((std::fs::read(path)?, ends))
    }

    /// A ring's segments read back as one recording; one deleted between
    /// two held is named, not silently skipped.
    /// The events written and, per part after the first, its first event's
    /// time and the blocks live then: a file of `2n` events in 1 MiB parts
    /// (a sliding set of 97 live blocks).
    #[allow(clippy::type_complexity)]
    fn parts_file(
        path: &Path,
        n: u64,
    ) -> anyhow::Result<(Vec<Event>, Vec<(u64, Vec<CarriedBlock>)>)> {
        parts_file_of(path, n, meta())
    }

    /// As [`parts_file`], of the recording `m`.
    #[allow(clippy::type_complexity)]
    fn parts_file_of(
        path: &Path,
        n: u64,
        m: Meta,
    ) -> anyhow::Result<(Vec<Event>, Vec<(u64, Vec<CarriedBlock>)>)> {
        use std::collections::BTreeMap;
        let mut w = TraceWriter::create(path, &m)?;
        w.checkpoint_every(&m, PART_ALIGN);
        w.write_stack(&stack(0))?;
        let stacks = [stack(0)];
        let keep = 97u64;
        let block = |i: u64| CarriedBlock {
            pid: 4242,
            tid: 4243,
            ts: m.start_mono_ns + i,
            ptr: 0x1000 + i * 16,
            size: 16 + i % 7,
            stack: Some(0),
        };
        // The live set at each part's start, by its first event's time.
        let mut live: BTreeMap<u64, CarriedBlock> = BTreeMap::new();
        let mut at_part: Vec<(u64, Vec<CarriedBlock>)> = Vec::new();
        let mut written = Vec::new();
        for i in 0..2 * n {
            let k = i / 2;
            let e = if i % 2 == 0 {
                let b = block(k);
                ev(
                    m.start_mono_ns + i,
                    EventKind::Alloc {
                        func: crate::event::AllocFn::Malloc,
                        ptr: b.ptr,
                        size: b.size,
                        stack: Some(0),
                    },
                )
            } else {
                ev(
                    m.start_mono_ns + i,
                    EventKind::Free {
                        ptr: block(k.saturating_sub(keep)).ptr,
                        stack: Some(0),
                    },
                )
            };
            if w.wants_rotation(e.ts) {
                let carried: Vec<CarriedBlock> = live.values().cloned().collect();
                let tables = Tables {
                    modules: &[],
                    probes: &[],
                    stacks: &stacks,
                    lost: &Lost::default(),
                };
                w.rotate(e.ts, tables, &carried)?;
                at_part.push((e.ts, carried));
            }
            if let Some(id) = e.kind.stack().filter(|&id| w.needs_stack(id)) {
                w.write_stack(&stacks[id as usize])?;
            }
            w.write_event(&e)?;
            match &e.kind {
                EventKind::Alloc { .. } => {
                    live.insert(k, block(k));
                }
                _ => {
                    live.remove(&k.saturating_sub(keep));
                }
            }
            written.push(e);
        }
        w.write_end(m.start_mono_ns + 2 * n, Some(ExitStatus::Code(0)))?;
        drop(w);
        Ok((written, at_part))
    }

    /// A file written in parts (`--checkpoint`) reads whole as the same
    /// recording; `locate` finds the part before a moment by its headers,
    /// and a read from there starts with the blocks live then.
    #[test]
    fn a_file_in_parts_reads_whole_and_from_the_part_before_a_moment() -> anyhow::Result<()> {
        let f = TempFile::new("parts");
        let m = meta();
        let (written, at_part) = parts_file(&f.0, 200_000)?;
        assert!(at_part.len() >= 4, "{} parts", at_part.len() + 1);
        let t = read_trace(&f.0)?;
        assert_eq!(t.events, written, "read whole, the same events");
        assert!(t.damage.is_none() && t.integrity.is_empty() && t.skipped.is_empty());
        assert_eq!(t.window, None, "read whole, no window");
        assert_eq!(t.stacks.len(), 1, "stacks repeated per part are read once");

        // Before the second part: from the start.
        assert_eq!(locate(&f.0, at_part[0].0 - m.start_mono_ns - 1)?, None);
        for (p, (first, carried)) in at_part.iter().enumerate() {
            for at in [*first, *first + 5_000] {
                let s = locate(&f.0, at - m.start_mono_ns)?.expect("a part");
                assert_eq!((s.number, s.first_ts), (p as u64 + 2, *first));
                assert_eq!(s.offset % PART_ALIGN, 0);
                let t = read_path(&f.0, None, None, Some(s))?;
                let from = written.iter().position(|e| e.ts == *first).unwrap();
                assert!(
                    t.events == written[from..],
                    "part {}: the events from it",
                    p + 2
                );
                assert!(t.damage.is_none() && t.integrity.is_empty());
                let w = t.window.expect("a window");
                assert_eq!(&w.carried, carried, "part {}: the blocks live then", p + 2);
                assert_eq!(w.first_segment, p as u64 + 2);
                assert_eq!(w.from_part.map(|f| f.offset), Some(s.offset));
            }
        }

        // Cut in the last part: read up to the cut, the damage said.
        let len = std::fs::metadata(&f.0)?.len();
        let file = std::fs::OpenOptions::new().write(true).open(&f.0)?;
        file.set_len(len - 1000)?;
        let t = read_trace(&f.0)?;
        assert!(t.damage.is_some(), "a cut file is damaged");
        assert!(t.events.len() < written.len() && t.events[..] == written[..t.events.len()]);
        // Cut right after a part's end (its SegmentEnd): no end record.
        let last = locate(&f.0, u64::MAX)?.expect("the last part");
        file.set_len(last.offset)?;
        let t = read_trace(&f.0)?;
        assert_eq!(t.damage.map(|d| d.reason), Some(NO_END.to_string()));
        Ok(())
    }

    #[test]
    fn a_ring_reads_as_one_recording_and_names_a_missing_segment() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("tmt-ring-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let limits = Limits {
            max_bytes: Some(8 << 20),
            ..Limits::default()
        };
        let mut w = TraceWriter::create_ring(&dir, &meta(), limits)?;
        w.write_stack(&stack(0))?;
        let n = 200_000u64;
        let stacks = [stack(0)];
        for i in 0..n {
            let e = ev(
                meta().start_mono_ns + 1_000 + i,
                EventKind::Alloc {
                    func: crate::event::AllocFn::Malloc,
                    ptr: 0x1000 + i * 16,
                    size: 16,
                    stack: Some(0),
                },
            );
            if w.wants_rotation(e.ts) {
                let tables = Tables {
                    modules: &[],
                    probes: &[],
                    stacks: &stacks,
                    lost: &Lost::default(),
                };
                w.rotate(e.ts, tables, &[])?;
            }
            w.write_event(&e)?;
        }
        w.write_end(meta().start_mono_ns + 2_000_000, Some(ExitStatus::Code(0)))?;
        let segs = std::fs::read_dir(&dir)?.count();
        assert!(segs >= 3, "{segs} segments");
        let t = read_trace(&dir)?;
        assert_eq!(t.events.len() as u64, n);
        assert!(
            t.damage.is_none() && t.integrity.is_empty(),
            "{:?}",
            t.integrity
        );
        assert_eq!(
            t.stacks.len(),
            1,
            "stacks repeated per segment are read once"
        );
        assert_eq!(t.window.as_ref().map(|w| w.segments), Some(segs as u64));
        // The segment before a moment, by the segments' heads.
        let all = t.events;
        let at = all[all.len() * 2 / 3].ts;
        let s = locate(&dir, at - meta().start_mono_ns)?.expect("a segment");
        assert!(s.number >= 2 && s.first_ts <= at && s.offset > 0, "{s:?}");
        let from = read_path(&dir, None, None, Some(s))?;
        let i = all
            .iter()
            .position(|e| e.ts == s.first_ts)
            .expect("its first event");
        assert!(from.events == all[i..] && all.len() - i < all.len() / 2);
        assert_eq!(from.window.map(|w| w.first_segment), Some(s.number));
        // A segment replaced by a copy of another: named, not read, the
        // segment it replaced missing.
        for (copy, over) in [(2, 3), (4, 3), (1, 2)] {
            let saved = std::fs::read(segment_path(&dir, over))?;
            std::fs::copy(segment_path(&dir, copy), segment_path(&dir, over))?;
            let t = read_trace(&dir)?;
            let why: Vec<&str> = t.integrity.iter().map(|d| d.reason.as_str()).collect();
            let name = format!("seg-{over:08}.tmt");
            assert!(
                why.iter()
                    .any(|r| r.contains(&format!("holds segment {copy}")) && r.contains(&name)),
                "{copy} over {over}: {why:?}"
            );
            assert!(
                why.iter()
                    .any(|r| r.contains(&format!("segment(s) {over} to {over} missing"))),
                "{copy} over {over}: {why:?}"
            );
            assert!(
                t.events.windows(2).all(|w| w[0].ts < w[1].ts) && (t.events.len() as u64) < n,
                "{copy} over {over}: events read twice"
            );
            // A read never starts at the copy: at a moment in the copied
            // segment's time, the segment located is the real one.
            let head = |k: u64| -> Option<SegmentHead> {
                part_head(&File::open(segment_path(&dir, k)).ok()?, 0)?.2
            };
            let in_copy = head(copy).map(|h| h.first_ts).expect("a head") + 1;
            let s = locate(&dir, in_copy.saturating_sub(meta().start_mono_ns))?;
            assert_ne!(s.map(|s| s.number), Some(over), "{copy} over {over}: {s:?}");
            std::fs::write(segment_path(&dir, over), saved)?;
        }
        std::fs::remove_file(segment_path(&dir, 2))?;
        let t = read_trace(&dir)?;
        assert!(t.events.len() as u64 <= n);
        let why: Vec<&str> = t.integrity.iter().map(|d| d.reason.as_str()).collect();
        assert!(
            why.iter().any(|r| r.contains("segment(s) 2 to 2 missing")),
            "{why:?}"
        );
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    /// The mutants (each written to `path` in turn) that read as clean
    /// files with other content than `original`'s (`bytes`): not an
    /// error, no damage, gap or skipped record said.
    fn silent_mutants(
        path: &Path,
        bytes: &[u8],
        original: &Trace,
        mutants: &[(String, Vec<u8>)],
    ) -> anyhow::Result<Vec<String>> {
        let mut silent = Vec::new();
        for (what, b) in mutants {
            if b == bytes {
                continue;
            }
            std::fs::write(path, b)?;
            let Ok(t) = read_trace(path) else {
                continue;
            };
            let said = t.damage.is_some() || !t.integrity.is_empty() || !t.skipped.is_empty();
            if !said && t != *original {
                silent.push(what.clone());
            }
        }
        Ok(silent)
    }

    /// Whole records dropped, repeated, moved or cut off at a record
    /// boundary, and bytes flipped: every mutant of a recording is an
    /// error or reads with its damage said, never as a clean file with
    /// other content (version 7's sequence numbers; before them, 340 of
    /// 2,250 mutants of real traces read as clean files).
    #[test]
    fn no_mutant_reads_as_a_clean_file() -> anyhow::Result<()> {
        let f = TempFile::new("mutants");
        let (bytes, ends) = sample(&f.0)?;
        let original = read_trace(&f.0)?;
        assert!(original.damage.is_none() && original.integrity.is_empty());
        // Record i spans spans[i] (0: Meta).
        let mut spans = vec![(HEADER_LEN as usize, ends[0] as usize)];
        spans.extend(ends.windows(2).map(|w| (w[0] as usize, w[1] as usize)));
        let n = spans.len();
        let rec = |i: usize| &bytes[spans[i].0..spans[i].1];
        let build = |order: &[usize]| {
            let mut b = bytes[..HEADER_LEN as usize].to_vec();
            for &i in order {
                b.extend_from_slice(rec(i));
            }
            b
        };
        let all: Vec<usize> = (0..n).collect();
        let mut mutants: Vec<(String, Vec<u8>)> = Vec::new();
        for i in 0..n {
            let mut o = all.clone();
            o.remove(i);
            mutants.push((format!("drop {i}"), build(&o)));
            let mut o = all.clone();
            o.insert(i, i);
            mutants.push((format!("repeat {i}"), build(&o)));
            mutants.push((format!("cut after {i}"), build(&all[..=i])));
            for j in 0..n {
                if j != i {
                    let mut o = all.clone();
                    let r = o.remove(i);
                    o.insert(j, r);
                    mutants.push((format!("move {i} to {j}"), build(&o)));
                }
            }
            for k in 2..6 {
                if i + k <= n {
                    let mut o = all.clone();
                    o.drain(i..i + k);
                    mutants.push((format!("drop {k} from {i}"), build(&o)));
                }
            }
        }
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..500 {
            let mut b = bytes.clone();
            let at = rng.below(b.len() as u64) as usize;
            b[at] ^= 1 << rng.below(8);
            mutants.push((format!("flip at {at}"), b));
        }
        let silent = silent_mutants(&f.0, &bytes, &original, &mutants)?;
        assert!(
            silent.is_empty(),
            "{} of {} mutants read as clean files: {silent:?}",
            silent.len(),
            mutants.len()
        );
        Ok(())
    }

    /// Parts land every `--checkpoint` rounded up to a MiB, or 9 times
    /// what a part's start copies if more.
    #[test]
    fn part_spacing_is_the_asked_size_or_nine_copies() {
        const M: u64 = PART_ALIGN;
        assert_eq!(part_spacing(M, 0), M);
        assert_eq!(part_spacing(M + M / 2, 0), 2 * M);
        assert_eq!(part_spacing(256 * M, 8 * M), 256 * M);
        assert_eq!(part_spacing(M, 8 * M), 72 * M);
        assert_eq!(part_spacing(M, 8 * M + 1), 73 * M);
        // Saturates, no overflow.
        assert!(part_spacing(M, u64::MAX / 2) >= u64::MAX / 2);
    }

    /// A big live heap at a 1 MiB checkpoint: the next part waits until
    /// the events are 8 times its copy (not 1 MiB), the part after it
    /// for 9 copies of its start, each on a MiB boundary; the widening
    /// is told.
    /// `n` blocks live, allocated one ns apart from the start of `m`.
    fn live_blocks(m: &Meta, n: u64) -> Vec<CarriedBlock> {
        (0..n)
            .map(|i| CarriedBlock {
                pid: 4242,
                tid: 4243,
                ts: m.start_mono_ns + i,
                ptr: 0x7f00_0000_0000 + i * 64,
                size: 48 + i % 1000,
                stack: None,
            })
            .collect()
    }

    /// The `i`th of a run of frees (of blocks never allocated) 2 ms in.
    fn free_at(m: &Meta, i: u64) -> Event {
        ev(
            m.start_mono_ns + 2_000_000 + i,
            EventKind::Free {
                ptr: 0x10 + i,
                stack: None,
            },
        )
    }

    #[test]
    fn a_big_live_heap_spaces_the_parts_apart() -> anyhow::Result<()> {
        let f = TempFile::new("wide-parts");
        let m = meta();
        let mut w = TraceWriter::create(&f.0, &m)?;
        w.checkpoint_every(&m, PART_ALIGN);
        let live = 100_000u64;
        let carried: Vec<CarriedBlock> = live_blocks(&m, live);
        let free = |i: u64| free_at(&m, i);
        let lost = Lost::default();
        let tables = || Tables {
            modules: &[],
            probes: &[],
            stacks: &[],
            lost: &lost,
        };
        // Part 1: the live heap is its first copy (~32 B a block).
        let mut i = 0;
        while !w.wants_rotation_live(free(i).ts, || live) {
            w.write_event(&free(i))?;
            i += 1;
        }
        assert!(
            w.written >= PART_COPIES * live * CARRIED_BYTES,
            "{}",
            w.written
        );
        w.rotate(free(i).ts, tables(), &carried)?;
        assert!(w.widened_parts().is_some());
        let copy = w.written;
        let base = w.ring.as_ref().map(|r| r.base).unwrap_or_default();
        assert_eq!(base % PART_ALIGN, 0);
        // Part 2: 9 copies of its start, then the next on the boundary.
        while !w.wants_rotation_live(free(i).ts, || live) {
            w.write_event(&free(i))?;
            i += 1;
        }
        assert!(
            w.written - copy >= PART_COPIES * copy,
            "{} {copy}",
            w.written
        );
        w.rotate(free(i).ts, tables(), &carried)?;
        let r = w.ring.as_ref().map(|r| r.base).unwrap_or_default();
        assert_eq!(r - base, part_spacing(PART_ALIGN, copy));
        let wide = w.widened_parts().expect("widened");
        assert_eq!((wide.asked, wide.spacing), (PART_ALIGN, base.max(r - base)));
        w.write_end(m.start_mono_ns + 9_000_000, None)?;
        drop(w);
        let t = read_trace(&f.0)?;
        assert!(t.damage.is_none() && t.integrity.is_empty());
        Ok(())
    }

    /// A part that starts with more live blocks than one record holds
    /// (a million: ~30 MB, over the 16 MiB record limit) writes them in
    /// several records and reads them all back.
    #[test]
    fn a_big_live_heap_carries_in_several_records() -> anyhow::Result<()> {
        let f = TempFile::new("big-carry");
        let m = meta();
        let mut w = TraceWriter::create(&f.0, &m)?;
        w.checkpoint_every(&m, PART_ALIGN);
        let carried: Vec<CarriedBlock> = live_blocks(&m, 1_000_000);
        let free = |i: u64| free_at(&m, i);
        let mut i = 0;
        while !w.wants_rotation(free(i).ts) {
            w.write_event(&free(i))?;
            i += 1;
        }
        let tables = Tables {
            modules: &[],
            probes: &[],
            stacks: &[],
            lost: &Lost::default(),
        };
        w.rotate(free(i).ts, tables, &carried)?;
        w.write_event(&free(i))?;
        w.write_end(m.start_mono_ns + 9_000_000, None)?;
        drop(w);
        let t = read_trace(&f.0)?;
        assert!(
            t.damage.is_none() && t.integrity.is_empty(),
            "{:?}",
            t.damage
        );
        assert_eq!(t.event_count, i + 1);
        let s = locate(&f.0, u64::MAX)?.expect("the second part");
        let t = read_path(&f.0, None, None, Some(s))?;
        assert_eq!(t.window.map(|w| w.carried), Some(carried));
        Ok(())
    }

    /// A file in parts with whole parts dropped, repeated, swapped or cut
    /// at their boundaries, or a part's Segment record or padding changed:
    /// each mutant is an error or reads with its damage said.
    #[test]
    fn no_mutant_of_a_file_in_parts_reads_as_a_clean_file() -> anyhow::Result<()> {
        let f = TempFile::new("part-mutants");
        parts_file(&f.0, 100_000)?;
        let bytes = std::fs::read(&f.0)?;
        let original = read_trace(&f.0)?;
        assert!(original.damage.is_none() && original.integrity.is_empty());
        let mut starts: Vec<usize> = (0..bytes.len())
            .step_by(PART_ALIGN as usize)
            .filter(|&o| bytes[o..].starts_with(&MAGIC))
            .collect();
        assert!(starts.len() >= 3, "{} parts", starts.len());
        starts.push(bytes.len());
        let part = |i: usize| &bytes[starts[i]..starts[i + 1]];
        let n = starts.len() - 1;
        let build = |order: &[usize]| order.iter().flat_map(|&i| part(i).to_vec()).collect();
        let all: Vec<usize> = (0..n).collect();
        let mut mutants: Vec<(String, Vec<u8>)> = Vec::new();
        for i in 0..n {
            let mut o = all.clone();
            o.remove(i);
            mutants.push((format!("drop part {}", i + 1), build(&o)));
            let mut o = all.clone();
            o.insert(i, i);
            mutants.push((format!("repeat part {}", i + 1), build(&o)));
            mutants.push((format!("cut after part {}", i + 1), build(&all[..=i])));
            if i > 0 {
                let mut o = all.clone();
                o[i] = 0;
                mutants.push((format!("part {} replaced by part 1", i + 1), build(&o)));
            }
            if i + 1 < n {
                let mut o = all.clone();
                o.swap(i, i + 1);
                mutants.push((format!("swap parts {} and {}", i + 1, i + 2), build(&o)));
            }
        }
        // Bytes flipped in each part's head (its Meta, Segment record) and
        // in the padding and SegmentEnd before it.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for &o in &starts[1..n] {
            for _ in 0..40 {
                let at = o - 64 + rng.below(192) as usize;
                let mut b = bytes.clone();
                b[at] ^= 1 << rng.below(8);
                mutants.push((format!("flip at {at}"), b));
            }
        }
        let silent = silent_mutants(&f.0, &bytes, &original, &mutants)?;
        assert!(
            silent.is_empty(),
            "{} of {} mutants read as clean files: {silent:?}",
            silent.len(),
            mutants.len()
        );

        // Said is not enough: what is said is what happened, where, and
        // nothing is applied twice; after a gap the heap is exact again.
        let live = |t: &Trace| -> u64 {
            crate::cmd::timeline_of(t, 1 << 30)
                .processes()
                .iter()
                .map(|p| p.heap.live_blocks)
                .sum()
        };
        let clean_live = live(&original);
        let read = |order: &[usize]| -> anyhow::Result<(Trace, Vec<(u64, String)>)> {
            std::fs::write(&f.0, build(order))?;
            let t = read_trace(&f.0)?;
            assert!(t.damage.is_none(), "{order:?}: {:?}", t.damage);
            // Each event once, in order (their times are distinct).
            assert!(
                t.events.windows(2).all(|w| w[0].ts < w[1].ts),
                "{order:?}: events applied twice or out of order"
            );
            let notes = t.integrity.iter().map(|d| (d.offset, d.reason.clone()));
            Ok((t.clone(), notes.collect()))
        };
        // Where part `i` of `order` starts in the mutant.
        let offset = |order: &[usize], i: usize| -> u64 {
            order[..i].iter().map(|&p| part(p).len() as u64).sum()
        };
        let gap = |a: usize, b: usize| {
            format!(
                "part(s) {a} to {b} missing before it: their events are not in the recording; \
                 the heap is taken again from the blocks it carried in"
            )
        };
        // (The last part ends with the End record, no SegmentEnd: what
        // follows it is damage, whatever it is.)
        assert!(n >= 4, "{n} parts");
        for i in 1..n - 1 {
            // Part i + 1 repeated: named where the repeat is, not applied.
            let mut o = all.clone();
            o.insert(i, i);
            let (t, notes) = read(&o)?;
            assert_eq!(
                notes,
                [(
                    offset(&o, i + 1),
                    format!("part {} is repeated: not applied", i + 1)
                )]
            );
            assert_eq!(t.events, original.events, "repeat of part {}", i + 1);
            assert_eq!(live(&t), clean_live);
        }
        for i in 1..n - 1 {
            // Part i + 1 dropped: the gap named at the next part's offset,
            // the heap from there that part's carried blocks.
            let mut o = all.clone();
            o.remove(i);
            let (t, notes) = read(&o)?;
            assert_eq!(notes, [(offset(&o, i), gap(i + 1, i + 1))]);
            assert_eq!(live(&t), clean_live, "part {} dropped", i + 1);
            assert!(t.events.len() < original.events.len());
        }
        for i in 1..n - 2 {
            // Parts i + 1 and i + 2 swapped: i + 2 read after a gap, the
            // late one named and not applied.
            let mut o = all.clone();
            o.swap(i, i + 1);
            let (t, notes) = read(&o)?;
            assert_eq!(
                notes,
                [
                    (offset(&o, i), gap(i + 1, i + 1)),
                    (
                        offset(&o, i + 1),
                        format!(
                            "part {} is out of order (it belongs before part {}): not applied",
                            i + 1,
                            i + 2
                        )
                    )
                ],
                "swap of parts {} and {}",
                i + 1,
                i + 2
            );
            assert_eq!(live(&t), clean_live, "swap of parts {}, {}", i + 1, i + 2);
        }
        // Part i + 1 replaced by the same part of another recording: not
        // read, and the part after it follows a gap (the heap taken again).
        let g = TempFile::new("part-mutants-other");
        let other = Meta {
            start_wall_ns: meta().start_wall_ns + 1,
            ..meta()
        };
        parts_file_of(&g.0, 100_000, other.clone())?;
        let theirs = std::fs::read(&g.0)?;
        for i in 1..n - 1 {
            let mut b = build(&all[..i]);
            let at = b.len() as u64;
            b.extend_from_slice(&theirs[starts[i]..starts[i + 1]]);
            let next = b.len() as u64;
            b.extend_from_slice(&build(&all[i + 1..]));
            std::fs::write(&f.0, &b)?;
            let t = read_trace(&f.0)?;
            let notes: Vec<(u64, String)> = t
                .integrity
                .iter()
                .map(|d| (d.offset, d.reason.clone()))
                .collect();
            assert_eq!(
                notes,
                [
                    (
                        at,
                        format!(
                            "a part of another recording (pid {}, started {} ns): not read",
                            other.pid, other.start_wall_ns
                        )
                    ),
                    (next, gap(i + 1, i + 1))
                ],
                "part {} of another recording",
                i + 1
            );
            assert_eq!(live(&t), clean_live, "part {} of another recording", i + 1);
        }
        Ok(())
    }

    /// The second half of another recording's file spliced after the
    /// first half of this one's, at the same record: its records do not
    /// read as this recording's (their checksums carry its id).
    #[test]
    fn another_recordings_records_are_not_read_as_its_own() -> anyhow::Result<()> {
        let f = TempFile::new("splice-a");
        let g = TempFile::new("splice-b");
        let (a, ends) = sample(&f.0)?;
        let (b, _) = sample_of(
            &g.0,
            &Meta {
                start_wall_ns: meta().start_wall_ns + 1,
                ..meta()
            },
        )?;
        // Same records, same offsets past Meta (the Metas differ only in a
        // varint of the same length).
        assert_eq!(a.len(), b.len());
        let cut = ends[6] as usize;
        let mut spliced = a[..cut].to_vec();
        spliced.extend_from_slice(&b[cut..]);
        std::fs::write(&f.0, &spliced)?;
        let t = read_trace(&f.0)?;
        assert_eq!(
            t.damage.map(|d| (d.offset, d.reason)),
            Some((cut as u64, "checksum mismatch".to_string()))
        );
        Ok(())
    }

    /// Each kind of change to the sequence is named where it is.
    #[test]
    fn gaps_repeats_and_moves_are_named_with_their_offsets() -> anyhow::Result<()> {
        let f = TempFile::new("sequence");
        let (bytes, ends) = sample(&f.0)?;
        let e = |i: usize| ends[i] as usize;
        let read = |b: &[u8]| -> anyhow::Result<Vec<(u64, String)>> {
            std::fs::write(&f.0, b)?;
            let t = read_trace(&f.0)?;
            assert!(t.damage.is_none(), "{:?}", t.damage);
            Ok(t.integrity
                .into_iter()
                .map(|d| (d.offset, d.reason))
                .collect())
        };
        // Records 3 and 4 (events) dropped: named at record 5's offset.
        let mut b = bytes[..e(2)].to_vec();
        b.extend_from_slice(&bytes[e(4)..]);
        assert_eq!(
            read(&b)?,
            [(
                e(2) as u64,
                "2 records (#3 on) are missing before this one".to_string()
            )]
        );
        // Record 3 repeated.
        let mut b = bytes[..e(3)].to_vec();
        b.extend_from_slice(&bytes[e(2)..]);
        assert_eq!(
            read(&b)?,
            [(
                e(3) as u64,
                "record #3 is a duplicate: not applied".to_string()
            )]
        );
        // Records 3 and 4 swapped: 4 is read, then 3 is late.
        let mut b = bytes[..e(2)].to_vec();
        b.extend_from_slice(&bytes[e(3)..e(4)]);
        b.extend_from_slice(&bytes[e(2)..e(3)]);
        b.extend_from_slice(&bytes[e(4)..]);
        assert_eq!(
            read(&b)?,
            [(
                (e(2) + e(4) - e(3)) as u64,
                "record #3 is out of order (it belongs 1 records earlier): not applied".to_string()
            )]
        );
        Ok(())
    }

    #[test]
    fn truncation_at_every_offset_reports_damage() -> anyhow::Result<()> {
        let f = TempFile::new("sample");
        let (bytes, ends) = sample(&f.0)?;
        let full = read_trace(&f.0)?;
        let cut = TempFile::new("cut");
        let meta_end = ends.first().copied().unwrap_or_default();
        for len in 0..=bytes.len() {
            std::fs::write(&cut.0, bytes.get(..len).unwrap_or_default())?;
            let len = len as u64;
            let res = read_trace(&cut.0);
            if len < meta_end {
                assert!(res.is_err(), "cut at {len}");
                continue;
            }
            let t = res?;
            // Records that ended at or before the cut are all there.
            let whole = ends.iter().filter(|&&e| e <= len).count();
            let last = ends.get(whole - 1).copied().unwrap_or_default();
            assert_eq!(t.meta, full.meta);
            assert_eq!(t.modules.len(), full.modules.len().min(whole - 1));
            assert_eq!(
                t.events.as_slice(),
                full.events
                    .get(..whole.saturating_sub(3).min(full.events.len()))
                    .unwrap_or_default()
            );
            if len == last && len == bytes.len() as u64 {
                assert_eq!(t.damage, None, "cut at {len}");
            } else if len == last {
                // Cut at a record boundary: it reads cleanly but for its
                // missing End record, which says so (a kill -9 leaves this).
                let d = t.damage.as_ref().map(|d| (d.offset, d.reason.as_str()));
                assert_eq!(d, Some((last, NO_END)), "cut at {len}");
            } else {
                let d = t.damage.as_ref().map(|d| (d.offset, d.reason.as_str()));
                assert_eq!(d, Some((last, TRUNCATED)), "cut at {len}");
            }
        }
        Ok(())
    }

    #[test]
    fn flipped_byte_is_checksum_damage() -> anyhow::Result<()> {
        let f = TempFile::new("flip");
        let (mut bytes, ends) = sample(&f.0)?;
        // The middle of the fifth event record's payload.
        let (start, end) = (ends[6], ends[7]);
        let mid = usize::try_from((start + end) / 2)?;
        bytes[mid] ^= 0x10;
        std::fs::write(&f.0, &bytes)?;
        let t = read_trace(&f.0)?;
        assert_eq!(
            t.damage,
            Some(Damage {
                offset: start,
                reason: "checksum mismatch".into()
            })
        );
        assert_eq!(t.modules.len(), 1);
        assert_eq!(t.stacks, [stack(0)]);
        assert_eq!(t.events.as_slice(), &every_kind()[..4]);
        assert_eq!(t.end, None);
        Ok(())
    }

    #[test]
    fn impossible_length_is_damage_not_allocation() -> anyhow::Result<()> {
        let f = TempFile::new("len");
        let (mut bytes, ends) = sample(&f.0)?;
        let at = usize::try_from(ends[1])?;
        bytes[at + 1..at + 5].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&f.0, &bytes)?;
        let t = read_trace(&f.0)?;
        let d = t.damage.map(|d| (d.offset, d.reason));
        assert_eq!(
            d,
            Some((ends[1], format!("impossible record length {}", u32::MAX)))
        );
        // Within the limit but past the end of the file: a truncation.
        bytes[at + 1..at + 5].copy_from_slice(&MAX_RECORD_LEN.to_le_bytes());
        std::fs::write(&f.0, &bytes)?;
        let d = read_trace(&f.0)?.damage.map(|d| (d.offset, d.reason));
        assert_eq!(d, Some((ends[1], TRUNCATED.to_string())));
        Ok(())
    }

    /// The checksums of a file's records made again from their order
    /// (sequence numbers 0, 1, …), as a writer that wrote the records in
    /// this order would have made them.
    fn reseal(bytes: &mut [u8]) {
        let mut at = HEADER_LEN as usize;
        let mut seq = 0u64;
        let mut recording = 0u64;
        while at + FRAME_HEAD <= bytes.len() {
            let len =
                u32::from_le_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]])
                    as usize;
            let end = at + FRAME_HEAD + len;
            if end + 4 > bytes.len() {
                break;
            }
            let mut h = crc32fast::Hasher::new();
            h.update(&seq.to_le_bytes());
            h.update(&recording.to_le_bytes());
            h.update(&bytes[at..end]);
            bytes[end..end + 4].copy_from_slice(&h.finalize().to_le_bytes());
            if seq == 0 {
                // Meta: the id in the checksums after it.
                if let Ok(m) = from_payload::<Meta>(&bytes[at + FRAME_HEAD..end]) {
                    recording = recording_id(&m);
                }
            }
            seq += 1;
            at = end + 4;
        }
    }

    /// A record framed as written (its checksum made by [`reseal`]).
    fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
        let mut r = vec![tag];
        r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        r.extend_from_slice(payload);
        let crc = crc32fast::hash(&r);
        r.extend_from_slice(&crc.to_le_bytes());
        r
    }

    /// An event of a kind from a newer tm-tui (the next variant index,
    /// with a payload this version cannot know the shape of).
    fn newer_event() -> Vec<u8> {
        let mut p = Vec::new();
        // ts 1, pid 1, tid 1, then the kind's index as a varint (< 128:
        // one byte).
        p.extend_from_slice(&[1, 1, 1, EventKind::COUNT as u8]);
        p.extend_from_slice(&[0x2a, 0xff, 0x01]);
        frame(Tag::Event as u8, &p)
    }

    #[test]
    fn unknown_event_kind_is_skipped_and_reading_goes_on() -> anyhow::Result<()> {
        let f = TempFile::new("newer-kind");
        let (bytes, ends) = sample(&f.0)?;
        // Between the fourth and fifth events, and again before End.
        let (at, before_end) = (ends[6] as usize, ends[ends.len() - 2] as usize);
        let newer = newer_event();
        let unknown_tag = frame(200, &[1, 2, 3]);
        let mut b = bytes[..at].to_vec();
        b.extend_from_slice(&newer);
        b.extend_from_slice(&bytes[at..before_end]);
        b.extend_from_slice(&unknown_tag);
        b.extend_from_slice(&newer);
        b.extend_from_slice(&bytes[before_end..]);
        reseal(&mut b);
        std::fs::write(&f.0, &b)?;
        let t = read_trace(&f.0)?;
        let kind = format!(
            "undecodable Event record (unknown event kind {})",
            EventKind::COUNT
        );
        let tag_at = (before_end + newer.len()) as u64;
        assert_eq!(
            t.skipped,
            [
                Damage {
                    offset: at as u64,
                    reason: kind.clone()
                },
                Damage {
                    offset: tag_at,
                    reason: "unknown record type 200".into()
                },
                Damage {
                    offset: tag_at + unknown_tag.len() as u64,
                    reason: kind
                },
            ]
        );
        assert_eq!(t.damage, None);
        assert_eq!(t.events.as_slice(), &every_kind()[..12]);
        assert_eq!(t.lost, Lost::default());
        assert_eq!(
            t.end.map(|e| e.status),
            Some(Some(ExitStatus::Code(0))),
            "the records after the skipped ones are read"
        );
        Ok(())
    }

    #[test]
    fn valid_crc_on_bad_payload_is_skipped() -> anyhow::Result<()> {
        let f = TempFile::new("undecodable");
        let (mut bytes, ends) = sample(&f.0)?;
        let last = ends.last().copied().unwrap_or_default();
        // An event cut inside its varint, then an alloc with an allocator
        // function past the last, then a Lost record with a trailing byte.
        bytes.extend(frame(Tag::Event as u8, &[1, 1, 1, 200]));
        bytes.extend(frame(Tag::Event as u8, &[1, 1, 1, 0, 100, 16, 16, 0]));
        bytes.extend(frame(Tag::Lost as u8, &[0, 0, 0, 0, 0, 0, 9]));
        reseal(&mut bytes);
        std::fs::write(&f.0, &bytes)?;
        let t = read_trace(&f.0)?;
        let got: Vec<_> = t.skipped.iter().map(|d| (d.offset, &*d.reason)).collect();
        assert_eq!(
            got,
            [
                (
                    last,
                    "undecodable Event record (Hit the end of buffer, expected more data)"
                ),
                (
                    last + 13,
                    "undecodable Event record (a value out of range or a variant this version \
                     does not know)"
                ),
                (last + 30, "undecodable Lost record (trailing bytes)"),
            ]
        );
        assert!(t.end.is_some());
        assert_eq!(t.damage, None);
        Ok(())
    }

    /// Skipping is the framing's, so it holds for the older versions too.
    #[test]
    fn old_version_skips_an_unknown_kind() -> anyhow::Result<()> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/every-kind-v2.tmt");
        let bytes = std::fs::read(path)?;
        // The End record is last: 5 bytes of payload (999, signal 6).
        let end_at = bytes.len() - (FRAME_HEAD + 5 + 4);
        let mut b = bytes[..end_at].to_vec();
        b.extend(frame(Tag::Event as u8, &[1, 1, 200]));
        b.extend_from_slice(&bytes[end_at..]);
        let f = TempFile::new("v2-skip");
        std::fs::write(&f.0, &b)?;
        let mut t = read_trace(&f.0)?;
        assert_eq!(
            t.skipped,
            [Damage {
                offset: end_at as u64,
                reason: "undecodable Event record (unknown event kind)".into()
            }]
        );
        t.skipped.clear();
        assert_eq!(t, fixture(2));
        Ok(())
    }

    #[test]
    fn wrong_magic_is_an_error() -> anyhow::Result<()> {
        let f = TempFile::new("magic");
        let (mut bytes, _) = sample(&f.0)?;
        bytes[0] = b'X';
        std::fs::write(&f.0, &bytes)?;
        let err = read_trace(&f.0).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.ends_with("not a tm-tui trace (bad magic)")),
            "{err:?}"
        );
        std::fs::write(&f.0, b"hi\n")?;
        let err = read_trace(&f.0).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("bad magic")));
        std::fs::write(&f.0, b"TMTRA")?;
        let err = read_trace(&f.0).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("too short")));
        Ok(())
    }

    #[test]
    fn newer_version_is_an_error() -> anyhow::Result<()> {
        let f = TempFile::new("version");
        let (mut bytes, _) = sample(&f.0)?;
        bytes[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        std::fs::write(&f.0, &bytes)?;
        let err = read_trace(&f.0).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.ends_with(&format!(
                "trace format version {} is newer than this tm-tui supports ({FORMAT_VERSION})",
                FORMAT_VERSION + 1
            ))),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn missing_meta_is_an_error() -> anyhow::Result<()> {
        let f = TempFile::new("nometa");
        let (bytes, ends) = sample(&f.0)?;
        let header = bytes.get(..HEADER_LEN as usize).unwrap_or_default();
        std::fs::write(&f.0, header)?;
        assert!(read_trace(&f.0).is_err());
        // A header followed directly by a Module record.
        let mut no_meta = header.to_vec();
        no_meta.extend_from_slice(&bytes[ends[0] as usize..ends[1] as usize]);
        std::fs::write(&f.0, &no_meta)?;
        let err = read_trace(&f.0).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("Meta")));
        assert!(read_trace(&std::env::temp_dir().join("tmt-test-does-not-exist")).is_err());
        Ok(())
    }

    #[test]
    fn random_bytes_error_without_panic() -> anyhow::Result<()> {
        let f = TempFile::new("random");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..200 {
            let len = (rng.next() % 4096) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            std::fs::write(&f.0, &bytes)?;
            assert!(read_trace(&f.0).is_err(), "round {round}");
            // Past a valid header, noise must be an error or damage.
            let mut h = MAGIC.to_vec();
            h.extend_from_slice(&[[1, 3][round % 2], 0, 0, 0]);
            bytes.splice(0..0, h);
            std::fs::write(&f.0, &bytes)?;
            if let Ok(t) = read_trace(&f.0) {
                assert!(t.damage.is_some() || t.events.is_empty());
            }
        }
        Ok(())
    }

    #[test]
    fn random_corruption_never_panics() -> anyhow::Result<()> {
        let f = TempFile::new("sample2");
        let (bytes, _) = sample(&f.0)?;
        let mut rng = Rng(42);
        let g = TempFile::new("corrupt");
        for _ in 0..2000 {
            let mut b = bytes.clone();
            for _ in 0..=rng.next() % 4 {
                let i = (rng.next() % b.len() as u64) as usize;
                b[i] = rng.next() as u8;
            }
            std::fs::write(&g.0, &b)?;
            let _ = read_trace(&g.0);
        }
        Ok(())
    }

    #[test]
    fn decoder_survives_arbitrary_payloads() {
        let mut rng = Rng(7);
        for _ in 0..20_000 {
            let len = (rng.next() % 64) as usize;
            let p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            for tag in (0..=8).filter_map(Tag::from_repr) {
                let _ = decode(tag, &p);
            }
        }
    }
}
