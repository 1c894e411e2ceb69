//! Owned events: what the recorder decodes C records into, and all that the
//! trace file, the model and the UI ever see of the kernel side.

use std::fmt;

use serde::{Deserialize, Serialize};
use strum::{EnumCount, EnumIter, FromRepr, IntoEnumIterator, IntoStaticStr};

/// Index of an interned stack in the recording's stack table.
pub type StackId = u32;
/// Index of a module (ELF file) in the recording's module table.
pub type ModuleId = u32;

#[derive(Serialize, Deserialize)]
/// One recorded event. `ts` is CLOCK_MONOTONIC nanoseconds, as the kernel
/// stamped it; [`crate::event::Meta::start_mono_ns`] is the recording's zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub ts: u64,
    /// The process (tgid) the event belongs to: the recording's root or a
    /// child it followed.
    pub pid: u32,
    pub tid: u32,
    pub kind: EventKind,
}

#[derive(Serialize, Deserialize)]
/// The allocator entry point a heap event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumCount, EnumIter, FromRepr, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
#[repr(u8)]
pub enum AllocFn {
    Malloc = 0,
    Calloc = 1,
    Realloc = 2,
    Reallocarray = 3,
    PosixMemalign = 4,
    Memalign = 5,
    Valloc = 6,
    Pvalloc = 7,
    Free = 8,
}

impl AllocFn {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

#[derive(Serialize, Deserialize, EnumCount, Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A block handed out: malloc, calloc, memalign family. `ptr == 0` is a
    /// failed allocation (nothing became live).
    Alloc {
        func: AllocFn,
        ptr: u64,
        size: u64,
        #[serde(with = "opt_id")]
        stack: Option<StackId>,
    },
    /// `free(ptr)` with a non-NULL pointer.
    Free {
        ptr: u64,
        #[serde(with = "opt_id")]
        stack: Option<StackId>,
    },
    /// realloc/reallocarray. `old == 0` is an allocation; a non-zero `ptr`
    /// means `old` (if any) is gone and `ptr` is live with `size` bytes;
    /// `ptr == 0` with `size == 0` freed `old`; `ptr == 0` otherwise failed
    /// and left `old` live.
    Realloc {
        func: AllocFn,
        old: u64,
        ptr: u64,
        size: u64,
        #[serde(with = "opt_id")]
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
    /// A fatal-class signal delivered to a thread.
    Signal(Box<SignalInfo>),
    /// `child` is a new thread of the target (`thread`) or a child process.
    Spawn {
        child: u32,
        thread: bool,
    },
    Exec {
        filename: String,
    },
    /// A thread left; `code` is the kernel's exit code for it.
    ThreadExit {
        code: i32,
    },
    /// The last thread left: the process is gone.
    ProcessExit {
        status: ExitStatus,
    },
    /// Entry of a probed function (`--probe`).
    Call(Box<CallInfo>),
    /// Return of a probed function: `ret` is the raw return register and
    /// `sp` the stack pointer just after the return (the entry's `sp` + 8),
    /// which pairs it with its entry under recursion and longjmp.
    Return {
        probe: ProbeId,
        ret: u64,
        sp: u64,
    },
    /// A traced system call (io, net, lock families), stamped at its
    /// return.
    Sys(Box<SysInfo>),
    /// A thread of the target ran again after `dur_ns` off CPU (sched
    /// family); `preempted` when it was switched out while runnable;
    /// `stack`: where its user code was when it left.
    OffCpu {
        dur_ns: u64,
        preempted: bool,
        #[serde(with = "opt_id")]
        stack: Option<StackId>,
    },
    /// Made by the model at a fork, never recorded: a block live in the
    /// parent (allocated at `stack`) that the child has from its first
    /// instruction.
    Inherit {
        ptr: u64,
        size: u64,
        #[serde(with = "opt_id")]
        stack: Option<StackId>,
    },
    /// Made by the model at an exec, never recorded: a block of the old
    /// image, gone with it (the new image starts with an empty heap).
    Discard {
        ptr: u64,
    },
    /// A watched address was accessed by the program (not by the
    /// allocator): a freed block's word, the bytes past a block's end, or
    /// an address the user asked to watch.
    Watch(Box<WatchHit>),
}

impl WatchHit {
    /// The bytes of `[addr, addr + len)` the access changed, as offsets
    /// from `addr`: where a write landed (empty: a read, or a write of
    /// the value already there).
    pub fn changed(&self) -> std::ops::Range<u32> {
        let diff = self.value ^ self.before;
        let len = self.len.min(8);
        let bytes: Vec<u32> = (0..len).filter(|b| diff >> (b * 8) & 0xff != 0).collect();
        match (bytes.first(), bytes.last()) {
            (Some(&a), Some(&b)) => a..b + 1,
            _ => 0..0,
        }
    }
}

/// What a watchpoint was watching.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, IntoStaticStr)]
#[strum(serialize_all = "kebab-case")]
pub enum WatchWhat {
    /// A word of a freed block: an access is a use after free.
    Freed,
    /// The bytes just past a live block's end: a write is an overflow.
    PastEnd,
    /// The bytes just before a live block's start: a write is an underflow.
    BeforeStart,
    /// An address the user asked to watch (`--watch-addr`, `--watch-var`).
    Asked,
}

/// One access to a watched address, as the breakpoint saw it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WatchHit {
    pub what: WatchWhat,
    /// The watched bytes `[addr, addr + len)` (the access touched some).
    pub addr: u64,
    pub len: u32,
    /// The bytes changed (a write); a write of the value already there
    /// reads as a read.
    pub write: bool,
    /// The block watched (its start; 0 for an asked address) and its size
    /// as allocated (0: the recorder did not know it).
    pub block: u64,
    pub size: u64,
    /// The instruction after the access (a data breakpoint traps after it).
    pub ip: u64,
    /// The watched bytes after the access, and before it (as last seen):
    /// the bytes that changed say where a write landed.
    pub value: u64,
    pub before: u64,
    /// The registers after the access (rax … r15, rip) and the code bytes
    /// just before `ip`: the access's instruction ends at `ip`.
    pub regs: Vec<u64>,
    pub code: Vec<u8>,
    /// The accessing thread's stack; frame 0 is `ip`.
    #[serde(with = "opt_id")]
    pub stack: Option<StackId>,
}

/// What an event is, as filters select it, counts count it and the JSON
/// and the lists name it: [`EventKind`] with spawns split into threads
/// and processes and system calls into their families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumCount, EnumIter, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
#[repr(u8)]
pub enum Kind {
    Alloc,
    Free,
    Realloc,
    Mmap,
    Munmap,
    Mremap,
    Brk,
    Signal,
    ThreadStart,
    ChildProcess,
    Exec,
    ThreadExit,
    Exit,
    Call,
    Return,
    Io,
    Net,
    Lock,
    Sched,
    Inherit,
    Discard,
    Watch,
}

impl Kind {
    /// The stable short name, as in `report --json` (`alloc`, `free`, …).
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The kind a name or a list label (CRASH, RET, THREAD, …) names.
    pub fn from_name(s: &str) -> Option<Kind> {
        let s = match s {
            "crash" => "signal",
            "ret" => "return",
            "thread" => "thread_start",
            "texit" => "thread_exit",
            "fork" => "child_process",
            "offcpu" | "off_cpu" => "sched",
            s => s,
        };
        Kind::iter().find(|k| k.name() == s)
    }

    /// The label of the event lists (report and UI); a fatal signal that
    /// crashed the target is labelled `CRASH` by who knows it.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Alloc => "ALLOC",
            Kind::Free => "FREE",
            Kind::Realloc => "REALLOC",
            Kind::Mmap => "MMAP",
            Kind::Munmap => "MUNMAP",
            Kind::Mremap => "MREMAP",
            Kind::Brk => "BRK",
            Kind::Signal => "SIGNAL",
            Kind::ThreadStart => "THREAD",
            Kind::ChildProcess => "FORK",
            Kind::Exec => "EXEC",
            Kind::ThreadExit => "TEXIT",
            Kind::Exit => "EXIT",
            Kind::Call => "CALL",
            Kind::Return => "RET",
            Kind::Io => "IO",
            Kind::Net => "NET",
            Kind::Lock => "LOCK",
            Kind::Sched => "SCHED",
            Kind::Inherit => "INHERIT",
            Kind::Discard => "DISCARD",
            Kind::Watch => "WATCH",
        }
    }
}

impl EventKind {
    pub fn kind(&self) -> Kind {
        match self {
            EventKind::Alloc { .. } => Kind::Alloc,
            EventKind::Free { .. } => Kind::Free,
            EventKind::Realloc { .. } => Kind::Realloc,
            EventKind::Mmap { .. } => Kind::Mmap,
            EventKind::Munmap { .. } => Kind::Munmap,
            EventKind::Mremap { .. } => Kind::Mremap,
            EventKind::Brk { .. } => Kind::Brk,
            EventKind::Signal(_) => Kind::Signal,
            EventKind::Spawn { thread: true, .. } => Kind::ThreadStart,
            EventKind::Spawn { thread: false, .. } => Kind::ChildProcess,
            EventKind::Exec { .. } => Kind::Exec,
            EventKind::ThreadExit { .. } => Kind::ThreadExit,
            EventKind::ProcessExit { .. } => Kind::Exit,
            EventKind::Call(_) => Kind::Call,
            EventKind::Return { .. } => Kind::Return,
            EventKind::Sys(s) => match s.call.family() {
                Family::Net => Kind::Net,
                Family::Lock => Kind::Lock,
                Family::Alloc | Family::Io | Family::Sched => Kind::Io,
            },
            EventKind::OffCpu { .. } => Kind::Sched,
            EventKind::Inherit { .. } => Kind::Inherit,
            EventKind::Discard { .. } => Kind::Discard,
            EventKind::Watch(_) => Kind::Watch,
        }
    }

    /// The user stack the event carries: where the program allocated,
    /// freed, crashed, called or blocked.
    pub fn stack(&self) -> Option<StackId> {
        match self {
            EventKind::Alloc { stack, .. }
            | EventKind::Free { stack, .. }
            | EventKind::Realloc { stack, .. }
            | EventKind::Inherit { stack, .. }
            | EventKind::OffCpu { stack, .. } => *stack,
            EventKind::Signal(s) => s.stack,
            EventKind::Call(c) => c.stack,
            EventKind::Sys(s) => s.stack,
            EventKind::Watch(w) => w.stack,
            EventKind::Mmap { .. }
            | EventKind::Munmap { .. }
            | EventKind::Mremap { .. }
            | EventKind::Brk { .. }
            | EventKind::Spawn { .. }
            | EventKind::Exec { .. }
            | EventKind::ThreadExit { .. }
            | EventKind::ProcessExit { .. }
            | EventKind::Discard { .. }
            | EventKind::Return { .. } => None,
        }
    }

    /// The address an `addr=` filter and the address column go by: the
    /// block, the mapping, the fault, the futex (0: none).
    pub fn addr(&self) -> u64 {
        match self {
            EventKind::Alloc { ptr, .. }
            | EventKind::Free { ptr, .. }
            | EventKind::Realloc { ptr, .. }
            | EventKind::Inherit { ptr, .. }
            | EventKind::Discard { ptr } => *ptr,
            EventKind::Mmap { ret, .. } => u64::try_from(*ret).unwrap_or(0),
            EventKind::Munmap { addr, .. } => *addr,
            EventKind::Mremap { old, .. } => *old,
            EventKind::Signal(s) => s.fault_addr().unwrap_or(0),
            EventKind::Sys(s) if s.call == SysCall::FutexWait => s.arg,
            EventKind::Watch(w) => w.addr,
            EventKind::Sys(_)
            | EventKind::Brk { .. }
            | EventKind::Spawn { .. }
            | EventKind::Exec { .. }
            | EventKind::ThreadExit { .. }
            | EventKind::ProcessExit { .. }
            | EventKind::Call(_)
            | EventKind::Return { .. }
            | EventKind::OffCpu { .. } => 0,
        }
    }
}

/// Index of a probe in the recording's probe table.
pub type ProbeId = u32;

#[derive(Serialize, Deserialize)]
/// The entry of a probed function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInfo {
    pub probe: ProbeId,
    /// The arguments shown: as many as the probe's signature (or the
    /// default count), typed by it.
    pub args: Vec<Arg>,
    /// The stack pointer at entry (pointing at the return address).
    pub sp: u64,
    #[serde(with = "opt_id")]
    pub stack: Option<StackId>,
    /// `[sp]` at entry: the return address, or the uretprobe trampoline
    /// when this call was tail-called (jumped to) from a return-probed
    /// call that it then returns for (0: not recorded).
    pub ret_addr: u64,
}

impl CallInfo {
    /// Entered by a jump from a return-probed call, at that call's stack
    /// pointer: it is nested in it, not a sibling.
    pub fn tail_called(&self) -> bool {
        crate::util::is_uretprobe_trampoline(self.ret_addr)
    }

    /// Whether this call shows that a call open on its thread, entered at
    /// `open_sp`, is over: its frame is at or below this one's (a longjmp
    /// or an exception left it), unless this call was jumped to from it.
    /// The one pairing rule of the recorder and the model.
    pub fn ends_open_call(&self, open_sp: u64) -> bool {
        open_sp < self.sp || (open_sp == self.sp && !self.tail_called())
    }
}

/// The entry stack pointer of the call a return at `ret_sp` ends (the
/// `ret` popped the return address pushed by the call).
pub fn return_entry_sp(ret_sp: u64) -> u64 {
    ret_sp.wrapping_sub(8)
}

#[derive(Serialize, Deserialize)]
/// One captured argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    Int(i64),
    Uint(u64),
    Ptr(u64),
    Bool(bool),
    Char(u8),
    /// A C string read from user memory (cut at the capture limit).
    Str(String),
    /// A string argument whose pointer could not be read (NULL or bad).
    BadStr(u64),
}

impl Arg {
    /// An untyped register value: small ones read as integers, the rest
    /// as pointers.
    pub fn guess(v: u64) -> Arg {
        let s = v as i64;
        if (-65536..1 << 32).contains(&s) {
            Arg::Int(s)
        } else {
            Arg::Ptr(v)
        }
    }

    pub fn typed(t: ValueType, v: u64) -> Arg {
        match t {
            ValueType::Auto => Arg::guess(v),
            ValueType::Int => Arg::Int(i64::from(v as u32 as i32)),
            ValueType::Uint => Arg::Uint(u64::from(v as u32)),
            ValueType::Long => Arg::Int(v as i64),
            ValueType::Ulong => Arg::Uint(v),
            ValueType::Ptr | ValueType::Str => Arg::Ptr(v),
            ValueType::Bool => Arg::Bool(v as u8 != 0),
            ValueType::Char => Arg::Char(v as u8),
        }
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Int(v) => write!(f, "{v}"),
            Arg::Uint(v) => write!(f, "{v}"),
            Arg::Ptr(0) => write!(f, "NULL"),
            Arg::Ptr(v) => write!(f, "{v:#x}"),
            Arg::Bool(b) => write!(f, "{b}"),
            Arg::Char(c) if c.is_ascii_graphic() || *c == b' ' => write!(f, "'{}'", *c as char),
            Arg::Char(c) => write!(f, "'\\x{c:02x}'"),
            Arg::Str(s) => write!(f, "{s:?}"),
            Arg::BadStr(0) => write!(f, "NULL"),
            Arg::BadStr(p) => write!(f, "{p:#x} (unreadable)"),
        }
    }
}

#[derive(Serialize, Deserialize)]
/// How a probe's argument or return value is read from its register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumCount, EnumIter, FromRepr, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
#[repr(u8)]
pub enum ValueType {
    /// No type given: small values as integers, others as pointers.
    Auto = 0,
    /// 32-bit signed (`int`), the low half of the register.
    Int = 1,
    Uint = 2,
    /// 64-bit signed (`long`, `ssize_t`).
    Long = 3,
    /// 64-bit unsigned (`unsigned long`, `size_t`).
    Ulong = 4,
    Ptr = 5,
    /// A NUL-terminated string read from user memory (arguments only).
    Str = 6,
    Bool = 7,
    Char = 8,
}

impl ValueType {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

#[derive(Serialize, Deserialize)]
/// A probed function, as resolved when the recording started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub id: ProbeId,
    /// The function's name (demangled, without parameters).
    pub func: String,
    /// The ELF file it is in.
    pub module: String,
    /// File offset of its first instruction.
    pub offset: u64,
    /// Argument types; `Auto` for a probe without a signature.
    pub args: Vec<ValueType>,
    pub ret: ValueType,
    /// Its returns are probed too (`--probe`); `false` for entry-only
    /// probes (`--probe-entry`), whose calls have no return or duration.
    pub returns: bool,
}

impl Probe {
    /// The return value as the signature types it.
    pub fn ret_value(&self, ret: u64) -> Arg {
        match self.ret {
            // Untyped: an `int` in a zero-extended register (the common
            // C return) reads as signed; so does a small negative long.
            ValueType::Auto if ret >> 32 == 0 => Arg::Int(i64::from(ret as u32 as i32)),
            ValueType::Str => Arg::Ptr(ret),
            t => Arg::typed(t, ret),
        }
    }

    /// An error return: negative for signed (and untyped) values, NULL
    /// for pointers.
    pub fn is_error(&self, ret: u64) -> bool {
        match self.ret_value(ret) {
            Arg::Int(v) => v < 0,
            Arg::Ptr(0) => matches!(self.ret, ValueType::Ptr | ValueType::Str),
            _ => false,
        }
    }

    /// The module's file name (`libssl.so.3`).
    pub fn module_name(&self) -> &str {
        self.module.rsplit('/').next().unwrap_or(&self.module)
    }
}

#[derive(Serialize, Deserialize)]
/// The system calls the io, net and lock families trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumCount, EnumIter, FromRepr, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
#[repr(u8)]
pub enum SysCall {
    Open = 0,
    Close = 1,
    Read = 2,
    Write = 3,
    Pread = 4,
    Pwrite = 5,
    Readv = 6,
    Writev = 7,
    Fsync = 8,
    Fdatasync = 9,
    Connect = 10,
    Accept = 11,
    Send = 12,
    Recv = 13,
    Sendmsg = 14,
    Recvmsg = 15,
    /// A futex wait (FUTEX_WAIT, _BITSET, LOCK_PI…): a contended lock or
    /// a condition wait; `arg` is the futex address.
    FutexWait = 16,
    /// dup, dup2, dup3, fcntl(F_DUPFD): `fd` is the new descriptor, `arg`
    /// the old one.
    Dup = 17,
}

impl SysCall {
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Whether a result `-errno` is a failure rather than an ordinary
    /// outcome: EAGAIN is "would block" (a non-blocking descriptor, or a
    /// futex whose value changed before the wait: the lock was already
    /// released), and a futex wait that timed out or was interrupted
    /// did what it was asked.
    pub fn failed(self, ret: i64) -> bool {
        const EINTR: i64 = -4;
        const EAGAIN: i64 = -11;
        const ETIMEDOUT: i64 = -110;
        match (self, ret) {
            (_, r) if r >= 0 => false,
            (_, EAGAIN) => false,
            (SysCall::FutexWait, ETIMEDOUT | EINTR) => false,
            _ => true,
        }
    }

    pub fn family(self) -> Family {
        match self {
            SysCall::Connect
            | SysCall::Accept
            | SysCall::Send
            | SysCall::Recv
            | SysCall::Sendmsg
            | SysCall::Recvmsg => Family::Net,
            SysCall::FutexWait => Family::Lock,
            _ => Family::Io,
        }
    }

    /// The result counts bytes moved.
    pub fn moves_bytes(self) -> bool {
        matches!(
            self,
            SysCall::Read
                | SysCall::Write
                | SysCall::Pread
                | SysCall::Pwrite
                | SysCall::Readv
                | SysCall::Writev
                | SysCall::Send
                | SysCall::Recv
                | SysCall::Sendmsg
                | SysCall::Recvmsg
        )
    }
}

#[derive(Serialize, Deserialize)]
/// One traced system call, stamped at its return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysInfo {
    pub call: SysCall,
    /// The file descriptor it acted on (the new one for open and accept,
    /// -1 when none).
    pub fd: i32,
    /// The kernel's return: bytes, a new fd, 0, or `-errno`.
    pub ret: i64,
    /// Entry to return, ns.
    pub dur_ns: u64,
    /// Bytes asked for (read/write/send/recv families), else 0.
    pub len: u64,
    /// pread/pwrite: the offset; open: the flags; futex: the address.
    pub arg: u64,
    /// What the fd is: the path opened, or the peer address; resolved at
    /// open/connect/accept and carried to later calls on the fd.
    pub target: Option<String>,
    /// Where the program made the call.
    #[serde(with = "opt_id")]
    pub stack: Option<StackId>,
}

/// The event families `--trace` turns on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumCount, EnumIter, FromRepr, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
#[repr(u8)]
pub enum Family {
    Alloc = 0,
    Io = 1,
    Net = 2,
    Lock = 3,
    Sched = 4,
}

impl Family {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

#[derive(Serialize, Deserialize)]
/// A set of [`Family`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Families(pub u8);

impl Default for Families {
    /// The allocator only (fatal signals and lifecycle are always on).
    fn default() -> Self {
        Families::none().with(Family::Alloc)
    }
}

impl Families {
    pub fn none() -> Self {
        Families(0)
    }

    pub fn with(self, f: Family) -> Self {
        Families(self.0 | 1 << f as u8)
    }

    pub fn has(self, f: Family) -> bool {
        self.0 & 1 << f as u8 != 0
    }

    /// `alloc,io,net` (or `all`).
    pub fn parse(s: &str) -> Result<Families, String> {
        let mut out = Families::none();
        if s.trim().trim_matches(',').is_empty() {
            return Err(format!(
                "no event family named (families: {}, all)",
                Family::iter()
                    .map(Family::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                out = Family::iter().fold(out, |a, f| a.with(f));
                continue;
            }
            let f = Family::iter().find(|f| f.name() == name).ok_or_else(|| {
                format!(
                    "unknown event family '{name}' (families: {}, all)",
                    Family::iter()
                        .map(Family::name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            out = out.with(f);
        }
        Ok(out)
    }

    pub fn names(self) -> Vec<&'static str> {
        Family::iter()
            .filter(|f| self.has(*f))
            .map(|f| f.name())
            .collect()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SignalInfo {
    pub signo: i32,
    pub code: i32,
    pub errno: i32,
    /// `si_addr`: the faulting address for SIGSEGV/SIGBUS/SIGILL/SIGFPE.
    pub addr: u64,
    /// The target installed a handler (the signal may not be fatal).
    pub handled: bool,
    pub ip: u64,
    pub sp: u64,
    /// The thread's stack at delivery, unwound through `.eh_frame`.
    #[serde(with = "opt_id")]
    pub stack: Option<StackId>,
    /// Who sent it, for a signal a process sent (si_code ≤ 0: kill,
    /// tkill, tgkill, sigqueue); `None` for one the kernel raised.
    pub sender: Option<SignalSender>,
    /// The general registers at delivery, x86-64 order rax rbx rcx rdx
    /// rsi rdi rbp rsp r8–r15 rip (17); empty when not read.
    pub regs: Vec<u64>,
    /// The instruction bytes at `ip` (up to 16); empty when unreadable.
    pub insn: Vec<u8>,
    /// What the program said as it aborted (glibc's `__abort_msg`, e.g.
    /// "malloc(): corrupted top size"), when read.
    pub message: Option<String>,
}

/// The process that sent a signal.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SignalSender {
    pub pid: u32,
    pub uid: u32,
    /// Its command name (`comm`), when known.
    pub comm: String,
}

impl SignalInfo {
    /// `si_addr` when it is a fault address: a fault the kernel raised
    /// (SIGSEGV, SIGBUS, SIGILL, SIGFPE with si_code > 0). For a signal
    /// sent by a process (abort's SIGABRT) the field holds the sender's
    /// pid; with SI_KERNEL (x86's general protection) it is 0, no address.
    pub fn fault_addr(&self) -> Option<u64> {
        (matches!(self.signo, 4 | 7 | 8 | 11) && self.code > 0 && self.code != 128)
            .then_some(self.addr)
    }
}

#[derive(Serialize, Deserialize)]
/// How the process ended, decoded from the kernel's exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal { signo: i32, core: bool },
}

impl ExitStatus {
    pub fn from_kernel(code: i32) -> Self {
        if code & 0x7f == 0 {
            ExitStatus::Code((code >> 8) & 0xff)
        } else {
            ExitStatus::Signal {
                signo: code & 0x7f,
                core: code & 0x80 != 0,
            }
        }
    }

    /// The status a shell would report: the code, or 128 + signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal { signo, .. } => 128 + signo,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exited with code {c}"),
            ExitStatus::Signal { signo, core } => write!(
                f,
                "killed by {}{}",
                signal_name(*signo),
                if *core { " (core dumped)" } else { "" }
            ),
        }
    }
}

pub fn signal_name(signo: i32) -> &'static str {
    match signo {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        31 => "SIGSYS",
        _ => "SIG?",
    }
}

/// The symbolic name of `si_code` for a signal, as in siginfo(2).
pub fn si_code_name(signo: i32, code: i32) -> String {
    let name = match (signo, code) {
        (_, 0) => "SI_USER",
        (_, -6) => "SI_TKILL",
        (_, -1) => "SI_QUEUE",
        (_, 128) => "SI_KERNEL",
        (11, 1) => "SEGV_MAPERR",
        (11, 2) => "SEGV_ACCERR",
        (11, 3) => "SEGV_BNDERR",
        (11, 4) => "SEGV_PKUERR",
        (7, 1) => "BUS_ADRALN",
        (7, 2) => "BUS_ADRERR",
        (7, 3) => "BUS_OBJERR",
        (4, 1) => "ILL_ILLOPC",
        (4, 2) => "ILL_ILLOPN",
        (4, 5) => "ILL_PRVOPC",
        (8, 1) => "FPE_INTDIV",
        (8, 2) => "FPE_INTOVF",
        (5, 1) => "TRAP_BRKPT",
        (5, 2) => "TRAP_TRACE",
        (31, 1) => "SYS_SECCOMP",
        _ => return format!("si_code={code}"),
    };
    name.to_string()
}

/// The symbolic name of a common errno (`ECONNREFUSED`), for results
/// shown as `-111 ECONNREFUSED`.
pub fn errno_name(errno: i64) -> Option<&'static str> {
    Some(match errno {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        6 => "ENXIO",
        9 => "EBADF",
        10 => "ECHILD",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        27 => "EFBIG",
        28 => "ENOSPC",
        29 => "ESPIPE",
        30 => "EROFS",
        32 => "EPIPE",
        35 => "EDEADLK",
        36 => "ENAMETOOLONG",
        38 => "ENOSYS",
        88 => "ENOTSOCK",
        90 => "EMSGSIZE",
        95 => "EOPNOTSUPP",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        100 => "ENETDOWN",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        105 => "ENOBUFS",
        106 => "EISCONN",
        107 => "ENOTCONN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        113 => "EHOSTUNREACH",
        114 => "EALREADY",
        115 => "EINPROGRESS",
        _ => return None,
    })
}

/// A system call's result: the value, or `-errno NAME`.
pub fn sys_result(ret: i64) -> String {
    match ret.checked_neg().and_then(errno_name) {
        Some(name) if ret < 0 => format!("{ret} {name}"),
        _ => ret.to_string(),
    }
}

#[derive(Serialize, Deserialize)]
/// A module (ELF file mapped into the target).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub id: ModuleId,
    /// The path as the target sees it (in its own mount namespace).
    pub path: String,
    /// The GNU build-id note in hex: finds the module's separate debug
    /// info (`/usr/lib/debug/.build-id`, debuginfod) wherever the trace is
    /// opened. `None` for files without one (and traces before version 4).
    pub build_id: Option<String>,
    /// (file offset, vaddr, size in the file) of each PT_LOAD: turns the
    /// frames' file offsets into the addresses a separate debug file is
    /// keyed by (its own program headers keep no file offsets).
    pub segments: Vec<[u64; 3]>,
}

impl Module {
    /// The ELF virtual address of a file offset, if a segment holds it.
    pub fn vaddr_of(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|[o, _, n]| (*o..o + n).contains(&offset))
            .map(|[o, v, _]| offset - o + v)
    }
}

#[derive(Serialize, Deserialize)]
/// One frame of a stack, normalized (module + file offset, valid after the
/// target is gone) and symbolized where symbols were found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// The address in the target's address space.
    pub addr: u64,
    #[serde(with = "opt_id")]
    pub module: Option<ModuleId>,
    /// Offset into the module's file of the instruction to symbolize: for
    /// a return address, one byte back, inside the call instruction.
    pub offset: u64,
    /// Demangled function name.
    pub func: Option<String>,
    pub file: Option<String>,
    pub line: u32,
    /// A call inlined into the next frame: the same machine frame (same
    /// address), one more source-level call (DWARF inline info).
    pub inlined: bool,
}

/// How the walk of a stack ended: complete at the outermost frame, or
/// truncated after its last frame, and why (the tracer's `tm_stack_end`,
/// same numbers).
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    FromRepr,
    EnumCount,
    EnumIter,
)]
#[repr(u8)]
pub enum StackEnd {
    /// Reached the outermost frame (`_start`, a thread's start routine).
    Complete = 0,
    /// The last frame's module has no unwind row for its address.
    NoInfo = 1,
    /// The next return address lies in no executable mapping.
    NotCode = 2,
    /// The process's unwind tables were not loaded yet.
    NoTable = 3,
    /// The stack memory could not be read.
    Unreadable = 4,
    /// The caller's frame was not above the callee's (garbage, a loop).
    BadFrame = 5,
    /// The frame limit was reached.
    Depth = 6,
    /// An unwind rule the tracer cannot evaluate.
    Unsupported = 7,
    /// Not known: a stack unwound in user space, or from an older trace.
    #[default]
    Unknown = 255,
}

impl StackEnd {
    /// What a truncated stack's marker says after its last frame (whose
    /// module is `module`); `None` for a complete or unknown end.
    pub fn marker(self, module: Option<&str>) -> Option<String> {
        let m = module.unwrap_or("its module");
        Some(match self {
            StackEnd::Complete | StackEnd::Unknown => return None,
            StackEnd::NoInfo => format!("stack truncated: no unwind info for {m}"),
            StackEnd::NotCode => {
                "stack truncated: the next return address is in no code mapping".into()
            }
            StackEnd::NoTable => "stack truncated: unwind tables not loaded yet".into(),
            StackEnd::Unreadable => "stack truncated: stack memory unreadable".into(),
            StackEnd::BadFrame => {
                "stack truncated: the caller's frame is not above this one".into()
            }
            StackEnd::Depth => "stack truncated: deeper frames not recorded (frame limit)".into(),
            StackEnd::Unsupported => {
                format!("stack truncated: an unwind rule of {m} tm-tui cannot follow")
            }
        })
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    pub id: StackId,
    pub frames: Vec<Frame>,
    pub end: StackEnd,
}

/// The stack with `id` in a table numbered in order of arrival (id =
/// index); a table from an untrusted file is checked and searched.
pub fn find_stack(stacks: &[Stack], id: StackId) -> Option<&Stack> {
    let at = usize::try_from(id).ok().and_then(|i| stacks.get(i));
    match at {
        Some(s) if s.id == id => Some(s),
        _ => stacks.iter().find(|s| s.id == id),
    }
}

/// Why events were lost; every reason is counted, none is silent.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, EnumCount, EnumIter, IntoStaticStr,
)]
pub enum LossReason {
    /// The kernel ring buffer was full: events gone.
    #[strum(serialize = "ringbuf_full")]
    RingBuffer,
    /// The stack table was full: events kept without their stack.
    #[strum(serialize = "stack_table_full")]
    StackTable,
    /// The per-thread in-flight table was full: events gone.
    #[strum(serialize = "inflight_full")]
    Inflight,
    /// The channel to the consumer was full: events gone.
    #[strum(serialize = "channel_full")]
    Channel,
    /// A record user space could not decode (a tracer/decoder mismatch).
    #[strum(serialize = "undecodable")]
    Undecodable,
}

impl LossReason {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

#[derive(Serialize, Deserialize)]
/// Cumulative loss counters for a recording. `stackless` counts events that
/// were kept but whose stack could not be walked (not a loss of the event).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    pub ringbuf: u64,
    pub stack_table: u64,
    pub inflight: u64,
    pub channel: u64,
    pub stackless: u64,
    pub undecodable: u64,
}

impl Lost {
    /// Events missing from the recording (stack losses keep the event).
    pub fn events(&self) -> u64 {
        self.ringbuf + self.inflight + self.channel + self.undecodable
    }

    /// Events kept without their stack (the stack table was full, or the
    /// walk could not run).
    pub fn stacks(&self) -> u64 {
        self.stack_table + self.stackless
    }

    /// Every loss, by reason: "0", or "12 events (ringbuf_full 12), 40
    /// stacks (stack_table_full 40)".
    pub fn summary(&self) -> String {
        let reasons = |rs: &[LossReason]| -> Vec<String> {
            rs.iter()
                .filter(|r| self.get(**r) > 0)
                .map(|r| format!("{} {}", r.name(), self.get(*r)))
                .collect()
        };
        let mut parts = Vec::new();
        if self.events() > 0 {
            let r = reasons(&[
                LossReason::RingBuffer,
                LossReason::Inflight,
                LossReason::Channel,
                LossReason::Undecodable,
            ]);
            parts.push(format!("{} events ({})", self.events(), r.join(", ")));
        }
        if self.stacks() > 0 {
            let mut r = reasons(&[LossReason::StackTable]);
            if self.stackless > 0 {
                r.push(format!("walk_busy {}", self.stackless));
            }
            parts.push(format!("{} stacks ({})", self.stacks(), r.join(", ")));
        }
        if parts.is_empty() {
            "0".to_string()
        } else {
            parts.join(", ")
        }
    }

    pub fn get(&self, r: LossReason) -> u64 {
        match r {
            LossReason::RingBuffer => self.ringbuf,
            LossReason::StackTable => self.stack_table,
            LossReason::Inflight => self.inflight,
            LossReason::Channel => self.channel,
            LossReason::Undecodable => self.undecodable,
        }
    }

    pub fn set(&mut self, r: LossReason, n: u64) {
        let slot = match r {
            LossReason::RingBuffer => &mut self.ringbuf,
            LossReason::StackTable => &mut self.stack_table,
            LossReason::Inflight => &mut self.inflight,
            LossReason::Channel => &mut self.channel,
            LossReason::Undecodable => &mut self.undecodable,
        };
        *slot = n;
    }
}

#[derive(Serialize, Deserialize)]
/// What a recording is of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub pid: u32,
    /// The target's command line, arguments joined by spaces.
    pub command: String,
    /// CLOCK_MONOTONIC at the start of the recording.
    pub start_mono_ns: u64,
    /// Wall clock (ns since the Unix epoch) at the same instant.
    pub start_wall_ns: u64,
    /// The allocator module that was probed.
    pub allocator: String,
    /// Recorded from the target's first instruction (launch mode): every
    /// block it frees was allocated in the recording.
    pub launched: bool,
    /// The event families recorded.
    pub families: Families,
    /// Child processes were followed (format 6; earlier files: true).
    pub follow: bool,
}

/// How a block live at a leak scan was reached, in valgrind memcheck's
/// terms. The order is the format (and the report's, worst first).
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    EnumCount,
    EnumIter,
    IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum LeakKind {
    /// No pointer to its start or inside it was found from the roots, nor
    /// from other lost blocks.
    DefinitelyLost,
    /// Pointed to only from lost blocks (a lost structure's children).
    IndirectlyLost,
    /// Reached, but somewhere along every chain only through a pointer
    /// into its middle.
    PossiblyLost,
    /// A chain of pointers to block starts leads to it from a root.
    StillReachable,
}

impl LeakKind {
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// As valgrind's LEAK SUMMARY words it.
    pub fn words(self) -> &'static str {
        match self {
            LeakKind::DefinitelyLost => "definitely lost",
            LeakKind::IndirectlyLost => "indirectly lost",
            LeakKind::PossiblyLost => "possibly lost",
            LeakKind::StillReachable => "still reachable",
        }
    }

    pub fn is_lost(self) -> bool {
        self != LeakKind::StillReachable
    }
}

/// What started a leak scan.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ScanTrigger {
    /// A launched target held in its exit.
    Exit,
    /// An attached target paused for it (the UI's key, `--leak-check`).
    Paused,
}

/// A scan of the target's memory for pointers to its live blocks: the
/// kind of each block live when it ran (a trace record of its own).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LeakScan {
    pub pid: u32,
    /// CLOCK_MONOTONIC when the memory was read.
    pub ts: u64,
    pub trigger: ScanTrigger,
    /// How long the target was stopped for it (attach mode), or held
    /// for it in its exit.
    pub paused_ns: u64,
    /// Bytes of roots (data, bss, stacks, other anonymous memory) and of
    /// live blocks read.
    pub root_bytes: u64,
    pub block_bytes: u64,
    /// What makes the kinds less than exact (events lost before the scan,
    /// memory that could not be read); empty when nothing does.
    pub caveats: Vec<String>,
    /// Every block live at the scan, by address.
    pub blocks: Vec<ScannedBlock>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedBlock {
    pub ptr: u64,
    pub size: u64,
    pub kind: LeakKind,
}

/// An optional id in the trace file as `id + 1`, 0 for `None`: one varint
/// where serde's `Option` takes a tag byte and the id.
pub(crate) mod opt_id {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(id.map_or(0, |id| u64::from(id) + 1))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        match u64::deserialize(d)? {
            0 => Ok(None),
            v => u32::try_from(v - 1)
                .map(Some)
                .map_err(|_| D::Error::custom("id out of range")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stack losses are losses too: the summary names every reason.
    #[test]
    fn loss_summary_names_every_reason() {
        assert_eq!(Lost::default().summary(), "0");
        let l = Lost {
            ringbuf: 12,
            stack_table: 40,
            stackless: 2,
            ..Lost::default()
        };
        assert_eq!(
            l.summary(),
            "12 events (ringbuf_full 12), 42 stacks (stack_table_full 40, walk_busy 2)"
        );
        let only_stacks = Lost {
            stack_table: 43467,
            ..Lost::default()
        };
        assert_eq!(only_stacks.events(), 0);
        assert_eq!(
            only_stacks.summary(),
            "43467 stacks (stack_table_full 43467)"
        );
    }

    /// The names are part of the JSON schema and the command line: the
    /// derived ones must stay what they were when written by hand.
    #[test]
    fn derived_names_are_the_stable_ones() {
        let names = |v: Vec<&'static str>| v.join(" ");
        assert_eq!(
            names(AllocFn::iter().map(AllocFn::name).collect()),
            "malloc calloc realloc reallocarray posix_memalign memalign valloc pvalloc free"
        );
        assert_eq!(
            names(ValueType::iter().map(ValueType::name).collect()),
            "auto int uint long ulong ptr str bool char"
        );
        assert_eq!(
            names(SysCall::iter().map(SysCall::name).collect()),
            "open close read write pread pwrite readv writev fsync fdatasync connect accept \
             send recv sendmsg recvmsg futex_wait dup"
        );
        assert_eq!(
            names(Family::iter().map(Family::name).collect()),
            "alloc io net lock sched"
        );
        assert_eq!(
            names(LossReason::iter().map(LossReason::name).collect()),
            "ringbuf_full stack_table_full inflight_full channel_full undecodable"
        );
        for (i, f) in AllocFn::iter().enumerate() {
            assert_eq!(AllocFn::from_repr(i as u8), Some(f));
        }
        assert_eq!(Families::parse("all"), Ok(Families(0b11111)));
        assert!(Families::parse("disk")
            .err()
            .unwrap_or_default()
            .contains("alloc, io, net, lock, sched, all"));
    }
}
