//! The `.tmt` trace file: a versioned header, then an append-only stream of
//! checksummed records, so a recording cut short still reads up to the cut.
//!
//! Layout: `b"TMTRACE\0"`, u16 version, u16 flags (all little-endian), then
//! records framed as `u8 tag, u32 payload_len, payload, u32 crc32` where the
//! crc covers tag, length and payload. Integers inside payloads are LEB128
//! varints (zigzag for signed ones); strings are a u32 length and UTF-8.
//! An optional id is stored as `id + 1`, with 0 for `None`.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::event::{
    AllocFn, Arg, CallInfo, Event, EventKind, ExitStatus, Families, Frame, Lost, Meta, Module,
    Probe, SignalInfo, Stack, SysCall, SysInfo, ValueType,
};

pub const MAGIC: [u8; 8] = *b"TMTRACE\0";
/// 2 added probes, calls, system calls and off-CPU events; files of
/// version 1 read as before.
pub const FORMAT_VERSION: u16 = 2;
const HEADER_LEN: u64 = 12;
/// Tag + length before the payload.
const FRAME_HEAD: usize = 5;
/// Far above any real record (a deep stack of symbolized frames is a few
/// KiB); a larger length is corruption and must not become an allocation.
pub const MAX_RECORD_LEN: u32 = 16 << 20;
const IO_BUFFER: usize = 256 << 10;
/// A `kill -9` of the recorder loses at most this much of the recording.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

mod tag {
    pub const META: u8 = 1;
    pub const MODULE: u8 = 2;
    pub const STACK: u8 = 3;
    pub const EVENT: u8 = 4;
    pub const LOST: u8 = 5;
    pub const END: u8 = 6;
    pub const PROBE: u8 = 7;
}

mod kind {
    pub const ALLOC: u8 = 0;
    pub const FREE: u8 = 1;
    pub const REALLOC: u8 = 2;
    pub const MMAP: u8 = 3;
    pub const MUNMAP: u8 = 4;
    pub const MREMAP: u8 = 5;
    pub const BRK: u8 = 6;
    pub const SIGNAL: u8 = 7;
    pub const SPAWN: u8 = 8;
    pub const EXEC: u8 = 9;
    pub const THREAD_EXIT: u8 = 10;
    pub const PROCESS_EXIT: u8 = 11;
    pub const CALL: u8 = 12;
    pub const RETURN: u8 = 13;
    pub const SYS: u8 = 14;
    pub const OFF_CPU: u8 = 15;
}

/// How the recording ended, when the recorder got to say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct End {
    pub end_mono_ns: u64,
    pub status: Option<ExitStatus>,
}

/// Where a damaged trace stops being readable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the first record that could not be read.
    pub offset: u64,
    pub reason: String,
}

/// Everything read from a trace file, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
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
}

// ---------------------------------------------------------------------------
// Writing

pub struct TraceWriter {
    out: BufWriter<File>,
    /// Reused for every record so the hot path does not allocate.
    buf: Vec<u8>,
    written: u64,
    last_flush: Instant,
}

impl TraceWriter {
    /// Creates (truncates) `path` and writes the header and `meta`, flushed,
    /// so the file is a readable empty trace from the start.
    pub fn create(path: &Path, meta: &Meta) -> anyhow::Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("cannot create trace {}", path.display()))?;
        let mut w = TraceWriter {
            out: BufWriter::with_capacity(IO_BUFFER, file),
            buf: Vec::with_capacity(4096),
            written: 0,
            last_flush: Instant::now(),
        };
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // Bytes 10..12: flags, none defined yet.
        w.out
            .write_all(&header)
            .with_context(|| format!("cannot write trace {}", path.display()))?;
        w.written = HEADER_LEN;
        w.record(tag::META, |b| put_meta(b, meta))?;
        w.flush()?;
        Ok(w)
    }

    pub fn write_module(&mut self, m: &Module) -> anyhow::Result<()> {
        self.record(tag::MODULE, |b| {
            put_u32(b, m.id);
            put_str(b, &m.path);
        })
    }

    pub fn write_probe(&mut self, p: &Probe) -> anyhow::Result<()> {
        self.record(tag::PROBE, |b| {
            put_u32(b, p.id);
            put_str(b, &p.func);
            put_str(b, &p.module);
            put_u64(b, p.offset);
            b.push(p.ret as u8);
            put_u64(b, p.args.len() as u64);
            b.extend(p.args.iter().map(|t| *t as u8));
            b.push(u8::from(p.returns));
        })
    }

    pub fn write_stack(&mut self, s: &Stack) -> anyhow::Result<()> {
        self.record(tag::STACK, |b| put_stack(b, s))
    }

    pub fn write_event(&mut self, e: &Event) -> anyhow::Result<()> {
        self.record(tag::EVENT, |b| put_event(b, e))
    }

    /// Records a snapshot of the cumulative loss counters.
    pub fn write_lost(&mut self, l: &Lost) -> anyhow::Result<()> {
        self.record(tag::LOST, |b| {
            for v in [
                l.ringbuf,
                l.stack_table,
                l.inflight,
                l.channel,
                l.stackless,
                l.undecodable,
            ] {
                put_u64(b, v);
            }
        })
    }

    /// Marks the recording as finished, and flushes.
    pub fn write_end(
        &mut self,
        end_mono_ns: u64,
        status: Option<ExitStatus>,
    ) -> anyhow::Result<()> {
        self.record(tag::END, |b| {
            put_u64(b, end_mono_ns);
            put_opt_status(b, status);
        })?;
        self.flush()
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.last_flush = Instant::now();
        self.out.flush().context("cannot write trace")
    }

    /// Flushes if a second has passed since the last flush; cheap enough to
    /// call after every event.
    pub fn maybe_flush(&mut self) {
        if self.last_flush.elapsed() >= FLUSH_INTERVAL {
            // A failed flush keeps its data buffered; the error comes back
            // from the next write or from `flush`, so nothing is lost silently.
            let _ = self.flush();
        }
    }

    /// Bytes handed to the file so far (buffered or not), header included.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    fn record(&mut self, tag: u8, encode: impl FnOnce(&mut Vec<u8>)) -> anyhow::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&[tag, 0, 0, 0, 0]);
        encode(&mut self.buf);
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
        let crc = crc32fast::hash(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.out
            .write_all(&self.buf)
            .context("cannot write trace")?;
        self.written += self.buf.len() as u64;
        Ok(())
    }
}

fn put_u64(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    put_u64(b, u64::from(v));
}

fn put_i64(b: &mut Vec<u8>, v: i64) {
    // Zigzag, so small negative numbers (fd -1, errno) stay one byte.
    put_u64(b, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_i32(b: &mut Vec<u8>, v: i32) {
    put_i64(b, i64::from(v));
}

fn put_bool(b: &mut Vec<u8>, v: bool) {
    b.push(u8::from(v));
}

fn put_opt_id(b: &mut Vec<u8>, v: Option<u32>) {
    put_u64(b, v.map_or(0, |id| u64::from(id) + 1));
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    // Anything over u32::MAX is also over MAX_RECORD_LEN: the record is
    // refused before it reaches the file.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_opt_str(b: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => b.push(0),
        Some(s) => {
            b.push(1);
            put_str(b, s);
        }
    }
}

fn put_status(b: &mut Vec<u8>, s: ExitStatus) {
    match s {
        ExitStatus::Code(c) => {
            b.push(1);
            put_i32(b, c);
        }
        ExitStatus::Signal { signo, core } => {
            b.push(2);
            put_i32(b, signo);
            put_bool(b, core);
        }
    }
}

fn put_opt_status(b: &mut Vec<u8>, s: Option<ExitStatus>) {
    match s {
        None => b.push(0),
        Some(s) => put_status(b, s),
    }
}

fn put_meta(b: &mut Vec<u8>, m: &Meta) {
    put_u32(b, m.pid);
    put_str(b, &m.command);
    put_u64(b, m.start_mono_ns);
    put_u64(b, m.start_wall_ns);
    put_str(b, &m.allocator);
    b.push(u8::from(m.launched));
    b.push(m.families.0);
}

fn put_stack(b: &mut Vec<u8>, s: &Stack) {
    put_u32(b, s.id);
    put_u64(b, s.frames.len() as u64);
    for f in &s.frames {
        put_u64(b, f.addr);
        put_opt_id(b, f.module);
        put_u64(b, f.offset);
        put_opt_str(b, f.func.as_deref());
        put_opt_str(b, f.file.as_deref());
        put_u32(b, f.line);
    }
}

fn put_event(b: &mut Vec<u8>, e: &Event) {
    put_u64(b, e.ts);
    put_u32(b, e.tid);
    match &e.kind {
        EventKind::Alloc {
            func,
            ptr,
            size,
            stack,
        } => {
            b.extend_from_slice(&[kind::ALLOC, *func as u8]);
            put_u64(b, *ptr);
            put_u64(b, *size);
            put_opt_id(b, *stack);
        }
        EventKind::Free { ptr, stack } => {
            b.push(kind::FREE);
            put_u64(b, *ptr);
            put_opt_id(b, *stack);
        }
        EventKind::Realloc {
            func,
            old,
            ptr,
            size,
            stack,
        } => {
            b.extend_from_slice(&[kind::REALLOC, *func as u8]);
            put_u64(b, *old);
            put_u64(b, *ptr);
            put_u64(b, *size);
            put_opt_id(b, *stack);
        }
        EventKind::Mmap {
            addr,
            len,
            prot,
            flags,
            fd,
            offset,
            ret,
        } => {
            b.push(kind::MMAP);
            put_u64(b, *addr);
            put_u64(b, *len);
            put_u32(b, *prot);
            put_u32(b, *flags);
            put_i32(b, *fd);
            put_u64(b, *offset);
            put_i64(b, *ret);
        }
        EventKind::Munmap { addr, len, ret } => {
            b.push(kind::MUNMAP);
            put_u64(b, *addr);
            put_u64(b, *len);
            put_i64(b, *ret);
        }
        EventKind::Mremap {
            old,
            old_len,
            new_len,
            flags,
            ret,
        } => {
            b.push(kind::MREMAP);
            put_u64(b, *old);
            put_u64(b, *old_len);
            put_u64(b, *new_len);
            put_u32(b, *flags);
            put_i64(b, *ret);
        }
        EventKind::Brk { req, ret } => {
            b.push(kind::BRK);
            put_u64(b, *req);
            put_i64(b, *ret);
        }
        EventKind::Signal(s) => {
            b.push(kind::SIGNAL);
            put_i32(b, s.signo);
            put_i32(b, s.code);
            put_i32(b, s.errno);
            put_u64(b, s.addr);
            put_bool(b, s.handled);
            put_u64(b, s.ip);
            put_u64(b, s.sp);
            put_opt_id(b, s.stack);
        }
        EventKind::Spawn { child, thread } => {
            b.push(kind::SPAWN);
            put_u32(b, *child);
            put_bool(b, *thread);
        }
        EventKind::Exec { filename } => {
            b.push(kind::EXEC);
            put_str(b, filename);
        }
        EventKind::ThreadExit { code } => {
            b.push(kind::THREAD_EXIT);
            put_i32(b, *code);
        }
        EventKind::ProcessExit { status } => {
            b.push(kind::PROCESS_EXIT);
            put_status(b, *status);
        }
        EventKind::Call(c) => {
            b.push(kind::CALL);
            put_u32(b, c.probe);
            put_u64(b, c.sp);
            put_opt_id(b, c.stack);
            put_u64(b, c.args.len() as u64);
            for a in &c.args {
                put_arg(b, a);
            }
            put_u64(b, c.ret_addr);
        }
        EventKind::Return { probe, ret, sp } => {
            b.push(kind::RETURN);
            put_u32(b, *probe);
            put_u64(b, *ret);
            put_u64(b, *sp);
        }
        EventKind::Sys(s) => {
            b.push(kind::SYS);
            b.push(s.call as u8);
            put_i32(b, s.fd);
            put_i64(b, s.ret);
            put_u64(b, s.dur_ns);
            put_u64(b, s.len);
            put_u64(b, s.arg);
            put_opt_str(b, s.target.as_deref());
            put_opt_id(b, s.stack);
        }
        EventKind::OffCpu {
            dur_ns,
            preempted,
            stack,
        } => {
            b.push(kind::OFF_CPU);
            put_u64(b, *dur_ns);
            put_bool(b, *preempted);
            put_opt_id(b, *stack);
        }
    }
}

fn put_arg(b: &mut Vec<u8>, a: &Arg) {
    match a {
        Arg::Int(v) => {
            b.push(0);
            put_i64(b, *v);
        }
        Arg::Uint(v) => {
            b.push(1);
            put_u64(b, *v);
        }
        Arg::Ptr(v) => {
            b.push(2);
            put_u64(b, *v);
        }
        Arg::Bool(v) => {
            b.push(3);
            put_bool(b, *v);
        }
        Arg::Char(c) => b.extend_from_slice(&[4, *c]),
        Arg::Str(s) => {
            b.push(5);
            put_str(b, s);
        }
        Arg::BadStr(p) => {
            b.push(6);
            put_u64(b, *p);
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
pub fn read_trace(path: &Path) -> anyhow::Result<Trace> {
    let file = File::open(path).with_context(|| format!("cannot open trace {}", path.display()))?;
    read_stream(BufReader::with_capacity(IO_BUFFER, file))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn read_stream<R: Read>(mut r: R) -> Result<Trace, TraceError> {
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
    // The flags (bytes 10..12) are reserved; none are defined in version 1.
    match u16::from_le_bytes([v0, v1]) {
        0 => return Err(TraceError::VersionZero),
        v if v > FORMAT_VERSION => return Err(TraceError::TooNew(v)),
        _ => {}
    }

    let mut records = Records {
        r,
        offset: HEADER_LEN,
        start: HEADER_LEN,
        payload: Vec::new(),
    };
    let meta = match records.next()? {
        Next::Record(Record::Meta(m)) => m,
        Next::Record(other) => {
            return Err(TraceError::NoMeta(format!(
                "the first record is a {} record",
                other.name()
            )))
        }
        Next::Eof => return Err(TraceError::NoMeta("file ends after the header".into())),
        Next::Damage(reason) => return Err(TraceError::NoMeta(reason)),
    };
    let mut trace = Trace {
        meta,
        modules: Vec::new(),
        stacks: Vec::new(),
        probes: Vec::new(),
        events: Vec::new(),
        lost: Lost::default(),
        lost_marks: Vec::new(),
        end: None,
        damage: None,
    };
    loop {
        let reason = match records.next()? {
            Next::Eof => break,
            Next::Damage(reason) => reason,
            Next::Record(Record::Meta(_)) => "a second Meta record".to_string(),
            Next::Record(Record::Module(m)) => {
                trace.modules.push(m);
                continue;
            }
            Next::Record(Record::Stack(s)) => {
                trace.stacks.push(s);
                continue;
            }
            Next::Record(Record::Probe(p)) => {
                trace.probes.push(p);
                continue;
            }
            Next::Record(Record::Event(e)) => {
                trace.events.push(e);
                continue;
            }
            Next::Record(Record::Lost(l)) => {
                trace
                    .lost_marks
                    .push((trace.events.len() as u64, l.clone()));
                trace.lost = l;
                continue;
            }
            Next::Record(Record::End(e)) => {
                trace.end = Some(e);
                continue;
            }
        };
        trace.damage = Some(Damage {
            offset: records.start,
            reason,
        });
        break;
    }
    Ok(trace)
}

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
}

impl Record {
    fn name(&self) -> &'static str {
        match self {
            Record::Meta(_) => "Meta",
            Record::Module(_) => "Module",
            Record::Probe(_) => "Probe",
            Record::Stack(_) => "Stack",
            Record::Event(_) => "Event",
            Record::Lost(_) => "Lost",
            Record::End(_) => "End",
        }
    }
}

enum Next {
    Record(Record),
    Eof,
    Damage(String),
}

const TRUNCATED: &str = "truncated record at end of file (killed while writing?)";

struct Records<R> {
    r: R,
    /// Offset of the next unread byte.
    offset: u64,
    /// Offset of the record last returned (or found damaged).
    start: u64,
    payload: Vec<u8>,
}

impl<R: Read> Records<R> {
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
        // `take` + `read_to_end` grows the buffer only as data arrives, so
        // a corrupt length near the limit costs no more than the file has.
        self.payload.clear();
        (&mut self.r)
            .take(u64::from(len))
            .read_to_end(&mut self.payload)?;
        let mut crc = [0u8; 4];
        if self.payload.len() as u64 != u64::from(len) || read_full(&mut self.r, &mut crc)? != 4 {
            return Ok(Next::Damage(TRUNCATED.into()));
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&head);
        h.update(&self.payload);
        if h.finalize() != u32::from_le_bytes(crc) {
            return Ok(Next::Damage("checksum mismatch".into()));
        }
        let decoded = decode(tag, &self.payload);
        if let Ok(Some(_)) = decoded {
            self.offset += (FRAME_HEAD + 4) as u64 + u64::from(len);
        }
        Ok(match decoded {
            Ok(Some(rec)) => Next::Record(rec),
            Ok(None) => Next::Damage(format!("unknown record type {tag}")),
            Err(why) => Next::Damage(format!("undecodable {} record ({why})", tag_name(tag))),
        })
    }
}

fn tag_name(tag: u8) -> &'static str {
    match tag {
        tag::META => "Meta",
        tag::MODULE => "Module",
        tag::PROBE => "Probe",
        tag::STACK => "Stack",
        tag::EVENT => "Event",
        tag::LOST => "Lost",
        tag::END => "End",
        _ => "unknown",
    }
}

/// `Ok(None)` for an unknown tag.
fn decode(tag: u8, payload: &[u8]) -> Result<Option<Record>, &'static str> {
    let mut d = Dec { buf: payload };
    let rec = match tag {
        tag::META => Record::Meta(Meta {
            pid: d.u32()?,
            command: d.string()?,
            start_mono_ns: d.u64()?,
            start_wall_ns: d.u64()?,
            allocator: d.string()?,
            // Added after the first files were written: optional.
            launched: if d.buf.is_empty() {
                false
            } else {
                d.u8()? != 0
            },
            // Added in version 2: optional.
            families: if d.buf.is_empty() {
                Families::default()
            } else {
                Families(d.u8()?)
            },
        }),
        tag::PROBE => Record::Probe(Probe {
            id: d.u32()?,
            func: d.string()?,
            module: d.string()?,
            offset: d.u64()?,
            ret: d.value_type()?,
            args: {
                let n = d.u64()?;
                if n > 64 {
                    return Err("too many probe arguments");
                }
                (0..n).map(|_| d.value_type()).collect::<DecResult<_>>()?
            },
            returns: d.buf.is_empty() || d.u8()? != 0,
        }),
        tag::MODULE => Record::Module(Module {
            id: d.u32()?,
            path: d.string()?,
        }),
        tag::STACK => Record::Stack(d.stack()?),
        tag::EVENT => Record::Event(d.event()?),
        tag::LOST => Record::Lost(Lost {
            ringbuf: d.u64()?,
            stack_table: d.u64()?,
            inflight: d.u64()?,
            channel: d.u64()?,
            stackless: d.u64()?,
            // Added after the first files were written: optional.
            undecodable: if d.buf.is_empty() { 0 } else { d.u64()? },
        }),
        tag::END => Record::End(End {
            end_mono_ns: d.u64()?,
            status: d.opt_status()?,
        }),
        _ => return Ok(None),
    };
    if !d.buf.is_empty() {
        return Err("trailing bytes");
    }
    Ok(Some(rec))
}

/// A cursor over one payload; every read is bounds-checked.
struct Dec<'a> {
    buf: &'a [u8],
}

type DecResult<T> = Result<T, &'static str>;

impl Dec<'_> {
    fn u8(&mut self) -> DecResult<u8> {
        let (&b, rest) = self.buf.split_first().ok_or("payload too short")?;
        self.buf = rest;
        Ok(b)
    }

    fn u64(&mut self) -> DecResult<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            // The tenth byte holds only bit 63.
            if i == 9 && b > 1 {
                return Err("varint overflow");
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint overflow")
    }

    fn u32(&mut self) -> DecResult<u32> {
        u32::try_from(self.u64()?).map_err(|_| "value out of range")
    }

    fn i64(&mut self) -> DecResult<i64> {
        let v = self.u64()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn i32(&mut self) -> DecResult<i32> {
        i32::try_from(self.i64()?).map_err(|_| "value out of range")
    }

    fn bool(&mut self) -> DecResult<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("invalid bool"),
        }
    }

    fn opt_id(&mut self) -> DecResult<Option<u32>> {
        match self.u64()? {
            0 => Ok(None),
            v => u32::try_from(v - 1)
                .map(Some)
                .map_err(|_| "id out of range"),
        }
    }

    fn string(&mut self) -> DecResult<String> {
        let mut len = [0u8; 4];
        for b in &mut len {
            *b = self.u8()?;
        }
        let len = usize::try_from(u32::from_le_bytes(len)).map_err(|_| "string too long")?;
        if len > self.buf.len() {
            return Err("string longer than its record");
        }
        let (s, rest) = self.buf.split_at(len);
        self.buf = rest;
        String::from_utf8(s.to_vec()).map_err(|_| "invalid UTF-8")
    }

    fn opt_string(&mut self) -> DecResult<Option<String>> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.string().map(Some),
            _ => Err("invalid option"),
        }
    }

    fn value_type(&mut self) -> DecResult<ValueType> {
        ValueType::from_repr(self.u8()?).ok_or("unknown value type")
    }

    fn arg(&mut self) -> DecResult<Arg> {
        Ok(match self.u8()? {
            0 => Arg::Int(self.i64()?),
            1 => Arg::Uint(self.u64()?),
            2 => Arg::Ptr(self.u64()?),
            3 => Arg::Bool(self.bool()?),
            4 => Arg::Char(self.u8()?),
            5 => Arg::Str(self.string()?),
            6 => Arg::BadStr(self.u64()?),
            _ => return Err("unknown argument kind"),
        })
    }

    fn alloc_fn(&mut self) -> DecResult<AllocFn> {
        AllocFn::from_repr(self.u8()?).ok_or("unknown allocator function")
    }

    fn status_tagged(&mut self, tag: u8) -> DecResult<ExitStatus> {
        match tag {
            1 => Ok(ExitStatus::Code(self.i32()?)),
            2 => Ok(ExitStatus::Signal {
                signo: self.i32()?,
                core: self.bool()?,
            }),
            _ => Err("invalid exit status"),
        }
    }

    fn opt_status(&mut self) -> DecResult<Option<ExitStatus>> {
        match self.u8()? {
            0 => Ok(None),
            t => self.status_tagged(t).map(Some),
        }
    }

    fn stack(&mut self) -> DecResult<Stack> {
        let id = self.u32()?;
        let n = self.u64()?;
        // A frame takes at least 9 bytes, so a corrupt count cannot
        // reserve more than the payload could hold.
        let cap = usize::try_from(n).map_or(0, |n| n.min(self.buf.len() / 9));
        let mut frames = Vec::with_capacity(cap);
        for _ in 0..n {
            frames.push(Frame {
                addr: self.u64()?,
                module: self.opt_id()?,
                offset: self.u64()?,
                func: self.opt_string()?,
                file: self.opt_string()?,
                line: self.u32()?,
            });
        }
        Ok(Stack { id, frames })
    }

    fn event(&mut self) -> DecResult<Event> {
        let ts = self.u64()?;
        let tid = self.u32()?;
        let kind = match self.u8()? {
            kind::ALLOC => EventKind::Alloc {
                func: self.alloc_fn()?,
                ptr: self.u64()?,
                size: self.u64()?,
                stack: self.opt_id()?,
            },
            kind::FREE => EventKind::Free {
                ptr: self.u64()?,
                stack: self.opt_id()?,
            },
            kind::REALLOC => EventKind::Realloc {
                func: self.alloc_fn()?,
                old: self.u64()?,
                ptr: self.u64()?,
                size: self.u64()?,
                stack: self.opt_id()?,
            },
            kind::MMAP => EventKind::Mmap {
                addr: self.u64()?,
                len: self.u64()?,
                prot: self.u32()?,
                flags: self.u32()?,
                fd: self.i32()?,
                offset: self.u64()?,
                ret: self.i64()?,
            },
            kind::MUNMAP => EventKind::Munmap {
                addr: self.u64()?,
                len: self.u64()?,
                ret: self.i64()?,
            },
            kind::MREMAP => EventKind::Mremap {
                old: self.u64()?,
                old_len: self.u64()?,
                new_len: self.u64()?,
                flags: self.u32()?,
                ret: self.i64()?,
            },
            kind::BRK => EventKind::Brk {
                req: self.u64()?,
                ret: self.i64()?,
            },
            kind::SIGNAL => EventKind::Signal(Box::new(SignalInfo {
                signo: self.i32()?,
                code: self.i32()?,
                errno: self.i32()?,
                addr: self.u64()?,
                handled: self.bool()?,
                ip: self.u64()?,
                sp: self.u64()?,
                stack: self.opt_id()?,
            })),
            kind::SPAWN => EventKind::Spawn {
                child: self.u32()?,
                thread: self.bool()?,
            },
            kind::EXEC => EventKind::Exec {
                filename: self.string()?,
            },
            kind::THREAD_EXIT => EventKind::ThreadExit { code: self.i32()? },
            kind::PROCESS_EXIT => {
                let t = self.u8()?;
                EventKind::ProcessExit {
                    status: self.status_tagged(t)?,
                }
            }
            kind::CALL => {
                let probe = self.u32()?;
                let sp = self.u64()?;
                let stack = self.opt_id()?;
                let n = self.u64()?;
                if n > 64 {
                    return Err("too many call arguments");
                }
                let args = (0..n).map(|_| self.arg()).collect::<DecResult<_>>()?;
                // Added later: optional.
                let ret_addr = if self.buf.is_empty() { 0 } else { self.u64()? };
                EventKind::Call(Box::new(CallInfo {
                    probe,
                    args,
                    sp,
                    stack,
                    ret_addr,
                }))
            }
            kind::RETURN => EventKind::Return {
                probe: self.u32()?,
                ret: self.u64()?,
                sp: self.u64()?,
            },
            kind::SYS => EventKind::Sys(Box::new(SysInfo {
                call: SysCall::from_repr(self.u8()?).ok_or("unknown system call")?,
                fd: self.i32()?,
                ret: self.i64()?,
                dur_ns: self.u64()?,
                len: self.u64()?,
                arg: self.u64()?,
                target: self.opt_string()?,
                // Added later: optional.
                stack: if self.buf.is_empty() {
                    None
                } else {
                    self.opt_id()?
                },
            })),
            kind::OFF_CPU => EventKind::OffCpu {
                dur_ns: self.u64()?,
                preempted: self.bool()?,
                // Added later: optional.
                stack: if self.buf.is_empty() {
                    None
                } else {
                    self.opt_id()?
                },
            },
            _ => return Err("unknown event kind"),
        };
        Ok(Event { ts, tid, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AllocFn;
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
        }
    }

    fn ev(ts: u64, kind: EventKind) -> Event {
        Event {
            ts,
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
                },
                Frame::default(),
                Frame {
                    addr: u64::MAX,
                    module: Some(u32::MAX),
                    offset: 0,
                    func: Some(String::new()),
                    file: None,
                    line: u32::MAX,
                },
            ],
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
        assert_eq!(t.damage, None);
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
            },
            Module {
                id: 1,
                path: "/usr/lib/libc.so.6".into(),
            },
        ];
        let stacks = [
            stack(0),
            Stack {
                id: 1,
                frames: Vec::new(),
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
    /// event kind (version 1: the kinds it had, and its shorter records).
    fn fixture(version: u16) -> Trace {
        let v1 = version == 1;
        let mut meta = meta();
        if v1 {
            meta.launched = false;
            meta.families = Families::default();
        }
        let events: Vec<Event> = every_kind()
            .into_iter()
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
            meta,
            modules: vec![
                Module {
                    id: 0,
                    path: "/usr/bin/target".into(),
                },
                Module {
                    id: 1,
                    path: "/usr/lib/libc.so.6".into(),
                },
            ],
            stacks: vec![
                stack(0),
                Stack {
                    id: 1,
                    frames: Vec::new(),
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
        }
    }

    /// Files written by earlier versions, checked in: they read as written.
    #[test]
    fn old_versions_still_read() -> anyhow::Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        for v in [1u16, 2] {
            let path = dir.join(format!("every-kind-v{v}.tmt"));
            let bytes = std::fs::read(&path)?;
            assert_eq!(bytes.get(8..10), Some(&v.to_le_bytes()[..]), "version {v}");
            assert_eq!(read_trace(&path)?, fixture(v), "version {v}");
        }
        Ok(())
    }

    /// Writes `tests/data/every-kind-v1.tmt` and `-v2.tmt` with the
    /// version 2 encoder (v1's records by hand, without the fields v2
    /// added). Run once, before version 3: `cargo test write_old_fixtures
    /// -- --ignored`.
    #[test]
    #[ignore]
    fn write_old_fixtures() -> anyhow::Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let t = fixture(2);
        let mut w = TraceWriter::create(&dir.join("every-kind-v2.tmt"), &t.meta)?;
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
        let end = t.end.as_ref().map_or(0, |e| e.end_mono_ns);
        w.write_end(end, t.end.and_then(|e| e.status))?;
        drop(w);
        assert_eq!(read_trace(&dir.join("every-kind-v2.tmt"))?, fixture(2));

        let t = fixture(1);
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        let mut rec = |tag: u8, payload: Vec<u8>| {
            let mut r = vec![tag];
            r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            r.extend_from_slice(&payload);
            let crc = crc32fast::hash(&r);
            r.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&r);
        };
        let mut b = Vec::new();
        put_u32(&mut b, t.meta.pid);
        put_str(&mut b, &t.meta.command);
        put_u64(&mut b, t.meta.start_mono_ns);
        put_u64(&mut b, t.meta.start_wall_ns);
        put_str(&mut b, &t.meta.allocator);
        rec(tag::META, b);
        for m in &t.modules {
            let mut b = Vec::new();
            put_u32(&mut b, m.id);
            put_str(&mut b, &m.path);
            rec(tag::MODULE, b);
        }
        for s in &t.stacks {
            let mut b = Vec::new();
            put_stack(&mut b, s);
            rec(tag::STACK, b);
        }
        let lost = |l: &Lost| {
            let mut b = Vec::new();
            for v in [l.ringbuf, l.stack_table, l.inflight, l.channel, l.stackless] {
                put_u64(&mut b, v);
            }
            b
        };
        rec(tag::LOST, lost(&Lost::default()));
        for e in &t.events {
            let mut b = Vec::new();
            put_event(&mut b, e);
            rec(tag::EVENT, b);
        }
        rec(tag::LOST, lost(&t.lost));
        let mut b = Vec::new();
        put_u64(&mut b, 999);
        put_opt_status(&mut b, t.end.and_then(|e| e.status));
        rec(tag::END, b);
        std::fs::write(dir.join("every-kind-v1.tmt"), &out)?;
        assert_eq!(read_trace(&dir.join("every-kind-v1.tmt"))?, fixture(1));
        Ok(())
    }

    /// A small trace with every record type, and the offset after each record.
    fn sample(path: &Path) -> anyhow::Result<(Vec<u8>, Vec<u64>)> {
        let mut w = TraceWriter::create(path, &meta())?;
        let mut ends = vec![w.bytes_written()];
        w.write_module(&Module {
            id: 0,
            path: "/bin/x".into(),
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
            if len == last {
                assert_eq!(t.damage, None, "cut at {len}");
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

    #[test]
    fn valid_crc_on_bad_payload_is_undecodable() -> anyhow::Result<()> {
        let f = TempFile::new("undecodable");
        let (mut bytes, ends) = sample(&f.0)?;
        let mut push_record = |tag: u8, payload: &[u8]| {
            let mut r = vec![tag];
            r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            r.extend_from_slice(payload);
            let crc = crc32fast::hash(&r);
            r.extend_from_slice(&crc.to_le_bytes());
            bytes.extend_from_slice(&r);
        };
        // An Event whose kind byte is unknown.
        push_record(tag::EVENT, &[1, 1, 200]);
        std::fs::write(&f.0, &bytes)?;
        let t = read_trace(&f.0)?;
        let last = ends.last().copied().unwrap_or_default();
        let d = t.damage.map(|d| (d.offset, d.reason));
        assert_eq!(
            d,
            Some((
                last,
                "undecodable Event record (unknown event kind)".to_string()
            ))
        );
        assert!(t.end.is_some());
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
        bytes[8..10].copy_from_slice(&7u16.to_le_bytes());
        std::fs::write(&f.0, &bytes)?;
        let err = read_trace(&f.0).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e
                    .ends_with("trace format version 7 is newer than this tm-tui supports (2)")),
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
            h.extend_from_slice(&[1, 0, 0, 0]);
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
            for tag in 0..=7 {
                let _ = decode(tag, &p);
            }
        }
        // The extremes of the varint encoding.
        let mut b = Vec::new();
        put_u64(&mut b, u64::MAX);
        assert_eq!(b.len(), 10);
        assert_eq!(Dec { buf: &b }.u64(), Ok(u64::MAX));
        b[9] = 2;
        assert!(Dec { buf: &b }.u64().is_err());
        for v in [i64::MIN, -1, 0, 1, i64::MAX] {
            b.clear();
            put_i64(&mut b, v);
            assert_eq!(Dec { buf: &b }.i64(), Ok(v));
        }
    }
}
