//! Events as versions 3 and 4 wrote them: no process id (every event was
//! the root process's) and signals without sender, registers, instruction
//! bytes or abort message. The shapes mirror [`crate::event::EventKind`]
//! of those versions, variant for variant.

use serde::Deserialize;

use crate::event::{
    AllocFn, CallInfo, Event, EventKind, ExitStatus, ProbeId, SignalInfo, StackId, SysInfo,
};

#[derive(Deserialize)]
pub(super) struct EventV4 {
    ts: u64,
    tid: u32,
    kind: KindV4,
}

#[derive(Deserialize)]
struct SignalV4 {
    signo: i32,
    code: i32,
    errno: i32,
    addr: u64,
    handled: bool,
    ip: u64,
    sp: u64,
    #[serde(with = "crate::event::opt_id")]
    stack: Option<StackId>,
}

#[derive(Deserialize)]
enum KindV4 {
    Alloc {
        func: AllocFn,
        ptr: u64,
        size: u64,
        #[serde(with = "crate::event::opt_id")]
        stack: Option<StackId>,
    },
    Free {
        ptr: u64,
        #[serde(with = "crate::event::opt_id")]
        stack: Option<StackId>,
    },
    Realloc {
        func: AllocFn,
        old: u64,
        ptr: u64,
        size: u64,
        #[serde(with = "crate::event::opt_id")]
        stack: Option<StackId>,
    },
    Mmap {
        addr: u64,
        len: u64,
        prot: u32,
        flags: u32,
        fd: i32,
        offset: u64,
        ret: i64,
    },
    Munmap {
        addr: u64,
        len: u64,
        ret: i64,
    },
    Mremap {
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: u32,
        ret: i64,
    },
    Brk {
        req: u64,
        ret: i64,
    },
    Signal(Box<SignalV4>),
    Spawn {
        child: u32,
        thread: bool,
    },
    Exec {
        filename: String,
    },
    ThreadExit {
        code: i32,
    },
    ProcessExit {
        status: ExitStatus,
    },
    Call(Box<CallInfo>),
    Return {
        probe: ProbeId,
        ret: u64,
        sp: u64,
    },
    Sys(Box<SysInfo>),
    OffCpu {
        dur_ns: u64,
        preempted: bool,
        #[serde(with = "crate::event::opt_id")]
        stack: Option<StackId>,
    },
}

impl EventV4 {
    /// The event, in the root process `pid`.
    pub(super) fn upgrade(self, pid: u32) -> Event {
        use KindV4 as K;
        let kind = match self.kind {
            K::Alloc {
                func,
                ptr,
                size,
                stack,
            } => EventKind::Alloc {
                func,
                ptr,
                size,
                stack,
            },
            K::Free { ptr, stack } => EventKind::Free { ptr, stack },
            K::Realloc {
                func,
                old,
                ptr,
                size,
                stack,
            } => EventKind::Realloc {
                func,
                old,
                ptr,
                size,
                stack,
            },
            K::Mmap {
                addr,
                len,
                prot,
                flags,
                fd,
                offset,
                ret,
            } => EventKind::Mmap {
                addr,
                len,
                prot,
                flags,
                fd,
                offset,
                ret,
            },
            K::Munmap { addr, len, ret } => EventKind::Munmap { addr, len, ret },
            K::Mremap {
                old,
                old_len,
                new_len,
                flags,
                ret,
            } => EventKind::Mremap {
                old,
                old_len,
                new_len,
                flags,
                ret,
            },
            K::Brk { req, ret } => EventKind::Brk { req, ret },
            K::Signal(s) => EventKind::Signal(Box::new(SignalInfo {
                signo: s.signo,
                code: s.code,
                errno: s.errno,
                addr: s.addr,
                handled: s.handled,
                ip: s.ip,
                sp: s.sp,
                stack: s.stack,
                sender: None,
                regs: Vec::new(),
                insn: Vec::new(),
                message: None,
            })),
            K::Spawn { child, thread } => EventKind::Spawn { child, thread },
            K::Exec { filename } => EventKind::Exec { filename },
            K::ThreadExit { code } => EventKind::ThreadExit { code },
            K::ProcessExit { status } => EventKind::ProcessExit { status },
            K::Call(c) => EventKind::Call(c),
            K::Return { probe, ret, sp } => EventKind::Return { probe, ret, sp },
            K::Sys(s) => EventKind::Sys(s),
            K::OffCpu {
                dur_ns,
                preempted,
                stack,
            } => EventKind::OffCpu {
                dur_ns,
                preempted,
                stack,
            },
        };
        Event {
            ts: self.ts,
            pid,
            tid: self.tid,
            kind,
        }
    }
}
