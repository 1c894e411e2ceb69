//! Versions 1 and 2 of the trace format, encoded by hand: read only, frozen
//! as they were when version 3 replaced them, so older recordings open.
//! Integers are LEB128 varints (zigzag for signed ones); strings are a u32
//! length and UTF-8; an optional id is `id + 1`, 0 for `None`. Fields added
//! in later files of a version are optional at the end of their record.

use super::{End, Record, Tag};
use crate::event::{
    AllocFn, Arg, CallInfo, Event, EventKind, ExitStatus, Families, Frame, Lost, Meta, Module,
    Probe, SignalInfo, Stack, SysCall, SysInfo, ValueType,
};

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

/// One record's payload, as versions 1 and 2 wrote it.
pub(super) fn decode(tag: Tag, payload: &[u8]) -> DecResult<Record> {
    let mut d = Dec { buf: payload };
    let rec = match tag {
        Tag::Meta => Record::Meta(Meta {
            follow: true,
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
        Tag::Probe => Record::Probe(Probe {
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
        Tag::Module => Record::Module(Module {
            id: d.u32()?,
            path: d.string()?,
            build_id: None,
            segments: Vec::new(),
        }),
        Tag::Stack => Record::Stack(d.stack()?),
        Tag::Event => Record::Event(d.event()?),
        Tag::Lost => Record::Lost(Lost {
            ringbuf: d.u64()?,
            stack_table: d.u64()?,
            inflight: d.u64()?,
            channel: d.u64()?,
            stackless: d.u64()?,
            // Added after the first files were written: optional.
            undecodable: if d.buf.is_empty() { 0 } else { d.u64()? },
        }),
        Tag::End => Record::End(End {
            end_mono_ns: d.u64()?,
            status: d.opt_status()?,
        }),
        // Written only since version 5.
        Tag::LeakScan => return Err("a leak scan record in a version 1 or 2 file"),
        Tag::Segment | Tag::Carried | Tag::SegmentEnd | Tag::Pad => {
            return Err("a segment record in a version 1 or 2 file")
        }
    };
    if !d.buf.is_empty() {
        return Err("trailing bytes");
    }
    Ok(rec)
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
                inlined: false,
            });
        }
        Ok(Stack {
            id,
            frames,
            end: crate::event::StackEnd::Unknown,
        })
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
                sender: None,
                regs: Vec::new(),
                insn: Vec::new(),
                message: None,
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
        // The process is the recording's root: the reader fills it in.
        Ok(Event {
            ts,
            pid: 0,
            tid,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::xorshift::Rng;

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

    /// Version 3's varints (postcard's) are these: LEB128, zigzag for
    /// signed values.
    #[test]
    fn varints_are_postcards() -> Result<(), postcard::Error> {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let b = postcard::to_stdvec(&v)?;
            assert_eq!(Dec { buf: &b }.u64(), Ok(v));
        }
        let mut b = postcard::to_stdvec(&u64::MAX)?;
        assert_eq!(b.len(), 10);
        b[9] = 2;
        assert!(Dec { buf: &b }.u64().is_err());
        for v in [i64::MIN, -1, 0, 1, i64::MAX] {
            let b = postcard::to_stdvec(&v)?;
            assert_eq!(Dec { buf: &b }.i64(), Ok(v));
        }
        Ok(())
    }
}
