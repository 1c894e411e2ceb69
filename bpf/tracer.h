/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Every record the tracer sends to user space. Each starts with struct
 * tm_hdr so one ring buffer carries all kinds; Rust decodes them through the
 * skeleton's generated types (never a hand-copied twin).
 */
#ifndef __TM_TRACER_H
#define __TM_TRACER_H

/*
 * Sizes both sides use, as an enum so they are in BTF and the skeleton
 * emits them for Rust (a #define would have to be copied by hand).
 */
enum tm_limit {
	TM_MAX_FRAMES = 48,
	TM_SIG_STACK_COPY = 16384,
	/* String arguments a call record carries, and their length (with NUL). */
	TM_CALL_STRS = 2,
	TM_CALL_STR_LEN = 96,
	/* Path or socket address an io record carries. */
	TM_IO_DATA = 128,
	/* Processes followed at once (the root and its descendants). */
	TM_MAX_PROCS = 1024,
	/* A fatal signal's general registers (rax rbx rcx rdx rsi rdi rbp rsp
	 * r8-r15 rip), the instruction bytes at ip, the abort message. */
	TM_SIG_REGS = 17,
	TM_SIG_INSN = 16,
	TM_SIG_MSG = 256,
	TM_COMM_LEN = 16,
	TM_SIG_RETS = 16, /* pending return probes a signal record carries */
};

enum tm_kind {
	TM_K_HEAP = 1,	  /* an allocator call: alloc, free or realloc */
	TM_K_SYSCALL = 2, /* mmap, munmap, mremap, brk, on return */
	TM_K_SIGNAL = 3,  /* a fatal-class signal delivered to a thread */
	TM_K_FORK = 4,	  /* new thread or child process */
	TM_K_EXEC = 5,
	TM_K_EXIT = 6, /* a thread (or, last, the process) exited */
	TM_K_CALL = 7,	 /* entry of a probed function */
	TM_K_RET = 8,	 /* return of a probed function */
	TM_K_IO = 9,	 /* an io/net/lock system call, on return */
	TM_K_OFFCPU = 10, /* a target thread back on a CPU (sched) */
	TM_K_WATCH = 11,  /* a watched address was accessed (a finding) */
	TM_K_MAX = 12,
};

/* Event families beyond the allocator, bits of the `families` rodata. */
enum tm_family {
	TM_FAM_ALLOC = 1 << 0,
	TM_FAM_IO = 1 << 1,
	TM_FAM_NET = 1 << 2,
	TM_FAM_LOCK = 1 << 3,
	TM_FAM_SCHED = 1 << 4,
};

/*
 * The x86-64 system call numbers the tracer looks at: the tracer filters
 * on them and user space decodes records by them.
 */
enum tm_nr {
	TM_NR_READ = 0,
	TM_NR_WRITE = 1,
	TM_NR_OPEN = 2,
	TM_NR_CLOSE = 3,
	TM_NR_MMAP = 9,
	TM_NR_MUNMAP = 11,
	TM_NR_BRK = 12,
	TM_NR_PREAD = 17,
	TM_NR_PWRITE = 18,
	TM_NR_READV = 19,
	TM_NR_WRITEV = 20,
	TM_NR_MREMAP = 25,
	TM_NR_DUP = 32,
	TM_NR_DUP2 = 33,
	TM_NR_CONNECT = 42,
	TM_NR_ACCEPT = 43,
	TM_NR_SENDTO = 44,
	TM_NR_RECVFROM = 45,
	TM_NR_SENDMSG = 46,
	TM_NR_RECVMSG = 47,
	TM_NR_FCNTL = 72,
	TM_NR_FSYNC = 74,
	TM_NR_FDATASYNC = 75,
	TM_NR_FUTEX = 202,
	TM_NR_OPENAT = 257,
	TM_NR_ACCEPT4 = 288,
	TM_NR_DUP3 = 292,
	TM_NR_FUTEX_WAITV = 449,
};

/* Which allocator entry point produced a TM_K_HEAP record. */
enum tm_fn {
	TM_FN_MALLOC = 0,
	TM_FN_CALLOC = 1,
	TM_FN_REALLOC = 2,
	TM_FN_REALLOCARRAY = 3,
	TM_FN_POSIX_MEMALIGN = 4,
	TM_FN_MEMALIGN = 5, /* memalign and aligned_alloc: (align, size) */
	TM_FN_VALLOC = 6,
	TM_FN_PVALLOC = 7,
	TM_FN_FREE = 8,
	TM_FN_MAX = 9,
};

/* Why something was not recorded; counted in .bss, shown to the user. */
enum tm_loss {
	TM_LOST_RINGBUF = 0,	 /* ring buffer full: the event is gone */
	TM_LOST_STACK_TABLE = 1, /* stack table full: event kept, stack gone */
	TM_LOST_INFLIGHT = 2,	 /* per-thread call table full: event gone */
	TM_LOST_MAX = 3,
};

struct tm_hdr {
	enum tm_kind kind; /* 4 bytes, as an enum is in BPF C */
	__u32 tid;
	__u64 ts; /* CLOCK_MONOTONIC ns */
};

struct tm_heap_rec {
	struct tm_hdr h;
	enum tm_fn fn;
	__u32 _pad;
	__u64 stack; /* key in the stacks map, 0 = none */
	__u64 ptr;   /* result (or the freed pointer for free) */
	__u64 old_ptr; /* realloc's input */
	__u64 size;
	__u64 align;
};

struct tm_syscall_rec {
	struct tm_hdr h;
	enum tm_nr nr;
	__u32 _pad;
	__s64 ret;
	__u64 args[6];
};

struct tm_signal_rec {
	struct tm_hdr h;
	__s32 sig;
	__s32 code;
	__s32 err;
	__u32 handled; /* 1 if the target installed a handler for it */
	__u64 addr;    /* si_addr */
	__u64 ip;
	__u64 sp;
	__u64 bp;
	__u64 stack; /* frame-pointer stack, key in the stacks map */
	/* si_code <= 0 (kill, tkill, sigqueue): si_pid and si_uid, and the
	 * sender's comm when signal_generate saw that process send it. */
	__u32 sender_pid;
	__u32 sender_uid;
	__u32 sender_known; /* sender_comm is the sender's */
	__u32 insn_len;	    /* bytes of insn read at ip */
	char sender_comm[TM_COMM_LEN];
	__u64 regs[TM_SIG_REGS];
	__u8 insn[TM_SIG_INSN];
	__s32 msg_len; /* > 0: msg holds glibc's abort message (with NUL) */
	__u32 nrets;   /* pending return probes of the thread, in rets */
	/* Each: the stack slot a uretprobe's trampoline took over and the
	 * return address it stands for (an allocator call under way). */
	__u64 rets[TM_SIG_RETS][2];
	__u32 copy_len;
	__u32 _pad2;
	char msg[TM_SIG_MSG];
	__u8 copy[TM_SIG_STACK_COPY]; /* raw user stack from sp up */
};

/* Who sent a signal to a traced process, seen by signal_generate in the
 * sender's context; keyed by the receiver's tgid << 8 | signo. */
struct tm_sig_sender {
	__u32 pid; /* the sender's tgid, as si_pid */
	__u32 _pad;
	char comm[TM_COMM_LEN];
};

struct tm_fork_rec {
	struct tm_hdr h;
	__u32 child;
	__u32 is_thread;
};

struct tm_exec_rec {
	struct tm_hdr h;
	char filename[256];
};

struct tm_exit_rec {
	struct tm_hdr h;
	__s32 exit_code;       /* task->exit_code */
	__s32 group_exit_code; /* signal->group_exit_code */
	__u32 group_dead;      /* 1 when the last thread leaves */
	__u32 _pad;
};

/* Entry of a probed function. The attach cookie is the probe id, with the
 * mask of its string arguments in the high 32 bits. */
struct tm_call_rec {
	struct tm_hdr h;
	__u32 probe;
	__u32 str_bad; /* bit i: string slot i could not be read */
	__u64 sp;      /* at entry: the address of the return address */
	__u64 ret_addr; /* [sp] before a return probe replaces it */
	__u64 stack;
	__u64 args[6];
	char strs[TM_CALL_STRS * TM_CALL_STR_LEN]; /* slot i at i * TM_CALL_STR_LEN */
};

struct tm_ret_rec {
	struct tm_hdr h;
	__u32 probe;
	__u32 _pad;
	__u64 sp; /* after the return: the entry's sp + 8 */
	__u64 ret;
};

struct tm_io_rec {
	struct tm_hdr h;
	enum tm_nr nr;
	__u32 data_len; /* bytes of data: a path (with NUL) or a sockaddr */
	__s64 ret;
	__u64 dur; /* entry to return, ns */
	__u64 stack;
	__u64 args[6];
	__u8 data[TM_IO_DATA];
};

struct tm_offcpu_rec {
	struct tm_hdr h;
	__u64 dur;
	__u64 stack; /* user stack when it left the CPU */
	__u32 preempted; /* switched out while runnable */
	__u32 _pad;
};

/*
 * Hardware watchpoints (x86 has four debug registers, so four slots; each
 * slot is one perf breakpoint event per thread, moved in place by user
 * space). A slot is claimed by the tracer at a sampled free (the freed
 * block's first word) or allocation (the bytes just past its end), which
 * stops the thread with TM_WATCH_SIGNAL; the tracer thread, which ptraces
 * it, moves the slot's breakpoints there and resumes it, the signal
 * suppressed. The allocator handing the block out again (or freeing it)
 * releases the slot, at once, in the tracer.
 */
enum tm_watch_limit {
	TM_WATCH_SLOTS = 4,
	TM_WATCH_SIGNAL = 23, /* SIGURG: ignored by default if nobody intercepts it */
	TM_WATCH_REPORTS = 4, /* hits reported per arming (the first few) */
};

enum tm_watch_state {
	TM_WS_FREE = 0,
	TM_WS_CLAIMED = 1,  /* being filled by the tracer (never armed like this) */
	TM_WS_ARMED = 2,    /* filled: user space arms it when the thread stops */
	TM_WS_RELEASED = 3, /* the block was handed out again or freed */
};

enum tm_watch_kind {
	TM_WK_UAF = 1,       /* a freed block's first word */
	TM_WK_OVERFLOW = 2,  /* the bytes just past a live block's end */
	TM_WK_UNDERFLOW = 3, /* the allocator header just before a live block */
	TM_WK_EXPLICIT = 4,  /* --watch-addr / --watch-var */
};

/* bp_type of the breakpoint (HW_BREAKPOINT_W or HW_BREAKPOINT_RW). */
enum tm_watch_rw {
	TM_WATCH_W = 2,
	TM_WATCH_RW = 3,
};

struct tm_watch {
	__u64 state; /* enum tm_watch_state (64 bits: compared and swapped) */
	__u32 kind;  /* enum tm_watch_kind */
	__u32 tgid;
	__u32 tid;  /* the thread that claimed it, stopped for arming */
	__u32 len;  /* the breakpoint: [addr, addr + len), aligned to len */
	__u64 addr;
	__u32 type; /* enum tm_watch_rw */
	__u32 hits; /* reports sent for this arming */
	__u64 block; /* the block's start and requested size (0: unknown) */
	__u64 size;
	__u64 snap; /* the watched bytes as last seen (a read leaves them) */
	__u64 gen;  /* bumped at each claim */
	__u64 claimed_ns;
};

/* An access to a watched slot that was not the allocator's own. */
struct tm_watch_rec {
	struct tm_hdr h;
	__u32 slot;
	__u32 kind; /* enum tm_watch_kind */
	__u64 gen;
	__u64 addr; /* the breakpoint hit: [addr, addr + len) */
	__u32 len;
	__u32 write; /* the bytes changed (a write); 0: left as they were */
	__u64 block;
	__u64 size;
	__u64 ip; /* the instruction after the access (a data breakpoint traps after) */
	__u64 stack;
	__u64 value; /* the watched bytes after the access */
	__u64 before; /* and before it, as last seen */
	/* The registers after the access (as a signal record's) and the 16
	 * code bytes before ip: the access's instruction ends at ip. */
	__u64 regs[TM_SIG_REGS];
	__u8 code[16];
};

/*
 * How a stack walk ended. TM_END_COMPLETE: at the outermost frame (the
 * CFI of _start or a thread's start says so, or a zero return address);
 * every other value marks the stack truncated after its last frame.
 */
enum tm_stack_end {
	TM_END_COMPLETE = 0,
	TM_END_NO_INFO = 1,	/* the last frame's module has no row for its pc */
	TM_END_NOT_CODE = 2,	/* the next return address is in no executable mapping */
	TM_END_NO_TABLE = 3,	/* the process's unwind tables are not loaded yet */
	TM_END_UNREADABLE = 4,	/* the stack memory could not be read */
	TM_END_BAD_FRAME = 5,	/* the caller's frame is not above (a loop, garbage) */
	TM_END_DEPTH = 6,	/* TM_MAX_FRAMES reached */
	TM_END_UNSUPPORTED = 7, /* a CFI rule the tracer cannot evaluate */
	TM_END_MAX = 8,
};

struct tm_stack {
	__u32 nr;
	enum tm_stack_end end;
	__u64 ips[TM_MAX_FRAMES];
};

/*
 * Unwind tables (user space compiles them from each module's DWARF CFI).
 * A row covers [pc, next row's pc) of a module, pc relative to its first
 * PT_LOAD; its rule:
 */
enum tm_cfa {
	TM_CFA_RSP = 0,	 /* CFA = rsp + off */
	TM_CFA_RBP = 1,	 /* CFA = rbp + off */
	TM_CFA_PLT = 2,	 /* CFA = rsp + 8, + 8 if (rip & 15) >= off (a PLT entry) */
	TM_CFA_END = 3,	 /* outermost frame: the stack is complete */
	TM_CFA_STOP = 4, /* no usable rule: the stack ends, truncated */
};

struct tm_cfi_row {
	__u32 pc;
	__u16 off;
	__u8 cfa;  /* enum tm_cfa */
	__s8 rbp;  /* caller's rbp at CFA + 8 * rbp; 0 unchanged; -128 unknown */
};

enum tm_cfi_limit {
	/* Executable mappings of one process the tracer can unwind through. */
	TM_CFI_MAPS = 512,
	/* Binary search steps: tables up to 2^24 rows. */
	TM_CFI_ROW_STEPS = 24,
	TM_CFI_MAP_STEPS = 10,
	/* Nested return probes looked through for a trampoline's address. */
	TM_URETPROBE_DEPTH = 16,
};

/* The rows that can cover a 4 KiB page of row pcs: lo + [first, last]. */
struct tm_cfi_page {
	__u32 first;
	__u32 last;
};

/* One executable mapping: [start, end), row pc = addr - start + adj, rows
 * [lo, hi) of the table; lo == hi: no CFI, frame pointers are followed.
 * Its page index is entries [pg, pg + npg) of cfi_pages. */
struct tm_cfi_map {
	__u64 start;
	__u64 end;
	__u64 adj;
	__u32 lo;
	__u32 hi;
	__u32 pg;
	__u32 npg;
};

/* A process's executable mappings, sorted by start; replaced whole. */
struct tm_cfi_proc {
	__u32 n;
	/* Changes with every update of any process's list: rules the tracer
	 * cached under another generation are not used. */
	__u32 gen;
	struct tm_cfi_map maps[TM_CFI_MAPS];
};

#endif /* __TM_TRACER_H */
