/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Every record the tracer sends to user space. Each starts with struct
 * tm_hdr so one ring buffer carries all kinds; Rust decodes them through the
 * skeleton's generated types (never a hand-copied twin).
 */
#ifndef __TM_TRACER_H
#define __TM_TRACER_H

#define TM_MAX_FRAMES 48
#define TM_SIG_STACK_COPY 16384

enum tm_kind {
	TM_K_HEAP = 1,	  /* an allocator call: alloc, free or realloc */
	TM_K_SYSCALL = 2, /* mmap, munmap, mremap, brk, on return */
	TM_K_SIGNAL = 3,  /* a fatal-class signal delivered to a thread */
	TM_K_FORK = 4,	  /* new thread or child process */
	TM_K_EXEC = 5,
	TM_K_EXIT = 6, /* a thread (or, last, the process) exited */
	TM_K_MAX = 7,
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
	__u32 kind;
	__u32 tid;
	__u64 ts; /* CLOCK_MONOTONIC ns */
};

struct tm_heap_rec {
	struct tm_hdr h;
	__u32 fn;
	__u32 _pad;
	__u64 stack; /* key in the stacks map, 0 = none */
	__u64 ptr;   /* result (or the freed pointer for free) */
	__u64 old_ptr; /* realloc's input */
	__u64 size;
	__u64 align;
};

struct tm_syscall_rec {
	struct tm_hdr h;
	__u32 nr;
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
	__u32 copy_len;
	__u32 _pad;
	__u8 copy[TM_SIG_STACK_COPY]; /* raw user stack from sp up */
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

struct tm_stack {
	__u32 nr;
	__u32 _pad;
	__u64 ips[TM_MAX_FRAMES];
};

#endif /* __TM_TRACER_H */
