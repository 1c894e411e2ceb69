// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tm-tui's flight recorder: allocator uprobes, memory-map syscalls, fatal
 * signals and lifecycle of one process (tgid), streamed through one ring
 * buffer. Cost matters on every hit: see DESIGN.md for the measured figures
 * that shaped the probe placement and the wakeup policy.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "tracer.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u32 targ_tgid = 0;
/* Follow the target's child processes: a fork adds the child to `procs`
 * (user space holds it under ptrace until its probes are attached). */
const volatile bool follow = false;
/* tm-tui bench: the allocator probes return at once, to measure the
 * kernel's trap cost alone (dead code otherwise: the verifier drops it). */
const volatile bool bare = false;
/* TM_DEBUG=1: count the free probe's hits (an atomic add per free). */
const volatile bool debug = false;
/* enum tm_family bits: which system calls beyond mmap & co are traced. */
const volatile __u32 families = TM_FAM_ALLOC;
/* The page of the kernel's uretprobe trampoline: set by user space from
 * the one definition it shares with the unwinder (util.rs). */
const volatile __u64 uretprobe_page = 0x7fffffffe000ULL;
/* Wake the consumer only once this much is waiting; it polls on a timer. */
const volatile __u64 wakeup_bytes = 1 << 20;

/*
 * Watchpoints (see enum tm_watch_limit). Slots a free may claim for its
 * block's first word, slots an allocation may claim for the bytes past
 * its end (bit masks); the least time between two claims of each sort
 * (the budget); glibc: a freed chunk that was mmapped goes back to the
 * kernel and is not watched, a live one has a header to watch. Watching
 * needs the tracer thread, which intercepts every claim's signal.
 */
const volatile __u32 watch_uaf_slots = 0;
const volatile __u32 watch_ovf_slots = 0;
const volatile __u64 watch_interval_ns = 10000000;
const volatile bool watch_glibc = false;
/* glibc, and the program asks malloc_usable_size: the slack past the size
 * asked is its to use; watch the next chunk's header instead. */
const volatile bool watch_ovf_usable = false;

/* Loss counters, read by user space: [enum tm_loss][enum tm_kind]. */
__u64 lost[TM_LOST_MAX][TM_K_MAX] = {};
/* Events whose stack could not be walked at all (kept, without stack). */
__u64 stack_errors = 0;
/* Watchpoint counters: claims [enum tm_watch_kind], allocator's own
 * accesses ignored, hits of no armed slot, findings reported. */
__u64 watch_claims[TM_WK_EXPLICIT + 1] = {};
__u64 watch_ignored = 0;
__u64 watch_stray = 0;
__u64 watch_reports = 0;
__u64 watch_last_uaf = 0, watch_last_ovf = 0;
/* Bit per slot in TM_WS_ARMED: none, and the allocator probes skip the
 * slots altogether. */
__u64 watch_armed = 0;
/* Each slot's watched bytes [lo, hi) and block as last claimed, mirrored
 * here for the allocator probes' quick look (stale once released: a
 * match only sends them to the slots themselves). */
__u64 watch_lo[TM_WATCH_SLOTS] = {}, watch_hi[TM_WATCH_SLOTS] = {};
__u64 watch_blk[TM_WATCH_SLOTS] = {};
/* Hits of a breakpoint whose slot was released: the thread was stopped
 * for the tracer to take it away. */
__u64 watch_disarm_stops = 0;

/* Hits of the free probe: [0] any process, [1] the target. A diagnostic
 * for "the kernel never ran the probe" vs "the probe filtered it out". */
__u64 free_hits[2] = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 20);
} events SEC(".maps");

/*
 * User stacks keyed by a 64-bit hash of their frames. The kernel's stack
 * map hashes into max_entries buckets and refuses (or overwrites) on a
 * bucket collision; a 64-bit key makes collisions practically impossible.
 * Least recently used entries make room: user space reads a stack once,
 * soon after it is first put here, and keeps it; a stack user space
 * deleted and a walk put back stays until evicted, so a plain hash filled
 * up over a long recording.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, __u64);
	__type(value, struct tm_stack);
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tm_stack);
} stack_scratch SEC(".maps");

/* An allocator call between entry and return, per thread. */
struct inflight {
	__u64 stack;
	__u64 a0, a1, a2;
	/* Stack pointer at entry: a nested call runs deeper (lower). */
	__u64 sp;
	__u32 fn;
	__u32 depth; /* nested allocator calls inside this one (not recorded) */
};

/* Stack keys a thread interned lately: known to be in the stacks map or
 * already read by user space (which never forgets a key), so the map
 * need not be asked again. A small ring, newest overwriting oldest. */
#define TM_KNOWN_STACKS 8

/*
 * What the tracer keeps per thread of the target, in task-local storage:
 * found from the task in a few loads where a hash map costs a lookup, an
 * update and a delete per call; freed by the kernel with the thread.
 */
struct thread_state {
	struct inflight in;
	__u32 in_live; /* `in` holds a call under way */
	__u32 known_next;
	__u64 known[TM_KNOWN_STACKS];
	/* The last free's return-address slot and the address in it (kept
	 * while watching): the thread is inside that free while its stack
	 * still holds them below its stack pointer. */
	__u64 free_slot;
	__u64 free_ret;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread_state);
} threads SEC(".maps");

static __always_inline struct thread_state *thread_state(bool create)
{
	return bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0,
				    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

struct sys_args {
	__u64 nr;
	__u64 ts;
	__u64 args[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct sys_args);
} sys_inflight SEC(".maps");

/* Dummies so the skeleton emits every record type for Rust. */
struct tm_heap_rec _tm_heap_rec = {};
struct tm_syscall_rec _tm_syscall_rec = {};
struct tm_signal_rec _tm_signal_rec = {};
struct tm_sig_sender _tm_sig_sender = {};
struct tm_fork_rec _tm_fork_rec = {};
struct tm_exec_rec _tm_exec_rec = {};
struct tm_exit_rec _tm_exit_rec = {};
struct tm_call_rec _tm_call_rec = {};
struct tm_ret_rec _tm_ret_rec = {};
struct tm_io_rec _tm_io_rec = {};
struct tm_offcpu_rec _tm_offcpu_rec = {};
struct tm_stack _tm_stack = {};
struct tm_cfi_row _tm_cfi_row = {};
struct tm_cfi_page _tm_cfi_page = {};
struct tm_cfi_proc _tm_cfi_proc = {};
/* And the enums Rust reads its constants from. */
enum tm_limit _tm_limit = 0;
enum tm_loss _tm_loss = 0;
enum tm_nr _tm_nr = 0;
enum tm_family _tm_family = 0;
enum tm_cfa _tm_cfa = 0;
enum tm_cfi_limit _tm_cfi_limit = 0;
enum tm_stack_end _tm_stack_end = 0;
enum tm_watch_limit _tm_watch_limit = 0;
enum tm_watch_state _tm_watch_state = 0;
enum tm_watch_kind _tm_watch_kind = 0;
enum tm_watch_rw _tm_watch_rw = 0;
struct tm_watch _tm_watch = {};
struct tm_watch_rec _tm_watch_rec = {};

/* The processes followed besides the root (tgid → 1). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TM_MAX_PROCS);
	__type(key, __u32);
	__type(value, __u32);
} procs SEC(".maps");

static __always_inline bool followed(__u32 tgid)
{
	return tgid == targ_tgid || (follow && bpf_map_lookup_elem(&procs, &tgid));
}

static __always_inline bool is_target(__u32 *tid)
{
	__u64 id = bpf_get_current_pid_tgid();

	*tid = (__u32)id;
	return followed(id >> 32);
}

static __always_inline void count_lost(enum tm_loss why, enum tm_kind kind)
{
	__sync_fetch_and_add(&lost[why][kind], 1);
}

static __always_inline __u64 wakeup_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ?
		       BPF_RB_FORCE_WAKEUP :
		       BPF_RB_NO_WAKEUP;
}

/*
 * Where the program's own text is (set at exec from the mm, and by user
 * space from /proc/PID/maps): an allocator call from there while another is
 * under way on the thread is a signal handler's, whose event is folded in.
 */
__u64 code_exe_lo = 0, code_exe_hi = 0;

/*
 * Set by user space once every allocator probe is attached, cleared
 * before any is detached: a link's probes go in and out one by one,
 * milliseconds apart, and the heap is only consistent if every allocator
 * function is recorded over the same window.
 */
__u32 armed = 0;

static __always_inline bool in_program_text(__u64 addr)
{
	return addr >= code_exe_lo && addr < code_exe_hi;
}

/* uretprobes replace a function's return address with the kernel's
 * trampoline in the [uprobes] page at the top of the address space. */
static __always_inline bool is_uretprobe_trampoline(__u64 addr)
{
	return addr >= uretprobe_page && addr < uretprobe_page + 4096;
}

/*
 * Unwind tables, compiled by user space from each module's DWARF CFI
 * (struct tm_cfi_row, sorted by pc within a module), and per process its
 * executable mappings with the row range of each. User space writes the
 * arrays through mmap.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1 << 22);
	__type(key, __u32);
	__type(value, struct tm_cfi_row);
} cfi_rows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1 << 20);
	__type(key, __u32);
	__type(value, struct tm_cfi_page);
} cfi_pages SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TM_MAX_PROCS);
	__type(key, __u32);
	__type(value, struct tm_cfi_proc);
} cfi_procs SEC(".maps");


/*
 * The walk's scalars live in per-CPU map memory, not on the BPF stack: the
 * verifier does not carry values loaded from a map across the steps of a
 * loop, so the frame loop and the binary searches verify in one pass each.
 * On the stack, every flag and bound it could pin down (the copy's length,
 * is_ret, a search's lo and hi) split its states per value, and Linux
 * 6.18.44 needed 650,000 instructions (2 s) to verify one program, or gave
 * up at the million on an open search loop.
 */
struct walk_vars {
	__u64 ip, sp, bp;
	/* The top of the stack, copied once: [copy_lo, copy_lo + copy_len). */
	__u64 copy_lo, copy_len;
	__u32 bp_ok;
	/* ip is a return address: the call is the byte before. */
	__u32 is_ret;
	/* ip is a function's first instruction: CFA = rsp + 8, by the ABI. */
	__u32 at_entry;
	__u32 end; /* enum tm_stack_end */
	/* 1 + the index of the last frame's mapping (the next frame is often
	 * in it too); 0 for none. */
	__u32 last;
	/* A binary search for the last element <= key in [lo, hi). */
	__u32 lo, hi;
	__u64 key;
};

/* Words of user stack copied at once at the start of a walk: one read
 * instead of one per frame (each costs ~50 ns) for the frames near the top. */
#define TM_STACK_COPY 1024

struct walk_scratch {
	/* A walk is under way on this CPU: a program that preempted it (a
	 * uprobe of another thread, sched_switch of this one) must not reuse
	 * the scratch under it. Plain loads and stores: whoever sees it set
	 * runs on this CPU while the owner is preempted, never beside it. */
	__u32 busy;
	struct walk_vars v;
	__u8 copy[TM_STACK_COPY];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct walk_scratch);
} walk_scratch SEC(".maps");

/*
 * The rule for a pc, once found, cached per CPU: the same call paths are
 * walked over and over, and a hit costs one array slot where a miss costs
 * two binary searches. Keyed by pc and the process list's generation, so
 * a remapped module is never unwound with an old rule; `check` mixes the
 * whole entry, so one torn by a walk that preempted another on this CPU
 * is a miss, not a wrong rule.
 */
#define TM_ROW_CACHE 4096

enum row_kind {
	ROW_CFI = 1, /* the rule is `row` */
	ROW_FP,	     /* in a mapping without CFI: frame pointers */
	ROW_NONE,    /* in a mapping, but no row covers it */
};

struct row_cache_entry {
	__u64 pc;
	__u64 row; /* a struct tm_cfi_row */
	__u64 check;
	__u32 gen;
	__u32 kind;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TM_ROW_CACHE);
	__type(key, __u32);
	__type(value, struct row_cache_entry);
} row_cache SEC(".maps");

static __always_inline __u64 row_check(__u64 pc, __u64 row, __u32 gen, __u32 kind)
{
	__u64 h = (pc ^ 0x9e3779b97f4a7c15ULL) * 0xff51afd7ed558ccdULL;

	h = (h ^ row) * 0xc4ceb9fe1a85ec53ULL;
	return h ^ ((__u64)gen << 32 | kind);
}

/* What the loop callbacks get: pointers only (the verifier keeps their
 * types across steps, and they do not split its states). */
struct walk {
	struct tm_stack *st;
	struct tm_cfi_proc *proc;
	struct walk_scratch *ws;
};


/* One step of the search over a process's mappings (by start). */
static long map_search_step(__u64 i, struct walk *w)
{
	struct walk_vars *v = &w->ws->v;
	__u32 lo = v->lo, hi = v->hi, mid;

	if (lo >= hi)
		return 1;
	mid = lo + (hi - lo) / 2;
	if (w->proc->maps[mid & (TM_CFI_MAPS - 1)].start <= v->key)
		v->lo = mid + 1;
	else
		v->hi = mid;
	return 0;
}

/* One step of the search over a module's rows (by pc). */
static long row_search_step(__u64 i, struct walk *w)
{
	struct walk_vars *v = &w->ws->v;
	__u32 lo = v->lo, hi = v->hi, mid;
	struct tm_cfi_row *r;

	if (lo >= hi)
		return 1;
	mid = lo + (hi - lo) / 2;
	r = bpf_map_lookup_elem(&cfi_rows, &mid);
	if (!r)
		return 1;
	if (r->pc <= v->key)
		v->lo = mid + 1;
	else
		v->hi = mid;
	return 0;
}

/* The index of the executable mapping of `pc`, or -1. */
static __always_inline int find_map(struct walk *w, __u64 pc)
{
	struct walk_vars *v = &w->ws->v;
	struct tm_cfi_map *m;
	__u32 n = w->proc->n, at;

	v->key = pc;
	v->lo = 0;
	v->hi = n > TM_CFI_MAPS ? TM_CFI_MAPS : n;
	bpf_loop(TM_CFI_MAP_STEPS, (void *)map_search_step, w, 0);
	/* lo is the first mapping starting above pc. */
	if (v->lo == 0 || v->lo < v->hi)
		return -1;
	at = (v->lo - 1) & (TM_CFI_MAPS - 1);
	m = &w->proc->maps[at];
	return pc < m->end ? (int)at : -1;
}

/* The row of mapping `m` covering row pc `rel`, or NULL. */
static __always_inline struct tm_cfi_row *find_row(struct walk *w, struct tm_cfi_map *m,
						   __u32 rel)
{
	struct walk_vars *v = &w->ws->v;
	__u32 lo = m->lo, hi = m->hi, page = rel >> 12, at;
	struct tm_cfi_page *pg;

	/* Narrow [lo, hi) to the rows that can cover rel's page. */
	if (page < m->npg) {
		at = m->pg + page;
		pg = bpf_map_lookup_elem(&cfi_pages, &at);
		if (pg && pg->first <= pg->last && pg->last < hi - lo) {
			lo = m->lo + pg->first;
			hi = m->lo + pg->last + 1;
		}
	}
	v->key = rel;
	v->lo = lo;
	v->hi = hi;
	bpf_loop(TM_CFI_ROW_STEPS, (void *)row_search_step, w, 0);
	/* Before every candidate (below the module's first row), or the
	 * search did not finish: no row. */
	if (v->lo == lo || v->lo < v->hi)
		return 0;
	at = v->lo - 1;
	return bpf_map_lookup_elem(&cfi_rows, &at);
}

/*
 * The address a uretprobe's trampoline stands for, from the kernel's list
 * of this thread's pending return probes: the one whose return address
 * slot is `slot`. 0 when none is.
 */
static __always_inline __u64 real_return(__u64 slot)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task_btf();
	struct return_instance *ri = BPF_CORE_READ(t, utask, return_instances);

	for (int i = 0; i < TM_URETPROBE_DEPTH && ri; i++) {
		if (BPF_CORE_READ(ri, stack) == slot)
			return BPF_CORE_READ(ri, orig_ret_vaddr);
		ri = BPF_CORE_READ(ri, next);
	}
	return 0;
}

/* A word of user stack at `addr`: from the copy when it holds it. */
static __always_inline long read_word(struct walk *w, __u64 *out, __u64 addr)
{
	struct walk_vars *v = &w->ws->v;
	__u64 off = addr - v->copy_lo;

	if (addr >= v->copy_lo && off + 8 <= v->copy_len && off + 8 <= TM_STACK_COPY) {
		*out = *(__u64 *)&w->ws->copy[off & (TM_STACK_COPY - 8)];
		return 0;
	}
	return bpf_probe_read_user(out, sizeof(*out), (void *)addr);
}

/* The mapping of `pc`: the last frame's when it holds it (the next
 * frame is often in the same module), else searched. */
static __always_inline struct tm_cfi_map *map_of(struct walk *w, __u64 pc)
{
	struct walk_vars *v = &w->ws->v;
	struct tm_cfi_map *m;
	int at;

	if (v->last) {
		m = &w->proc->maps[(v->last - 1) & (TM_CFI_MAPS - 1)];
		if (pc >= m->start && pc < m->end)
			return m;
	}
	at = find_map(w, pc);
	if (at < 0)
		return 0;
	v->last = at + 1;
	return &w->proc->maps[at & (TM_CFI_MAPS - 1)];
}

/* How to unwind the frame at `pc`: from the cache, else from the tables
 * (and then cached). 0 when `pc` is in no executable mapping. */
static __always_inline __u32 rule_of(struct walk *w, __u64 pc, __u64 *row)
{
	__u32 idx = (__u32)((pc * 0x9e3779b97f4a7c15ULL) >> 52) & (TM_ROW_CACHE - 1);
	struct row_cache_entry *e = bpf_map_lookup_elem(&row_cache, &idx);
	__u32 gen = w->proc->gen, kind;
	struct tm_cfi_map *m;
	struct tm_cfi_row *r;

	if (e && e->pc == pc && e->gen == gen && e->check == row_check(pc, e->row, gen, e->kind)) {
		*row = e->row;
		return e->kind;
	}
	m = map_of(w, pc);
	if (!m)
		return 0;
	*row = 0;
	if (m->lo == m->hi) {
		kind = ROW_FP;
	} else {
		r = find_row(w, m, (__u32)(pc - m->start + m->adj));
		kind = r ? ROW_CFI : ROW_NONE;
		if (r)
			*row = *(__u64 *)r;
	}
	if (e) {
		e->pc = pc;
		e->row = *row;
		e->gen = gen;
		e->kind = kind;
		e->check = row_check(pc, *row, gen, kind);
	}
	return kind;
}

/* One step: the frame at v->ip (a return address when v->is_ret, which
 * is appended once it is known to be code) to its caller: 0 to go on, 1
 * when the walk ends (v->end says how). A bpf_loop callback: the verifier
 * checks it once, not per frame. */
static long walk_step(__u64 i, struct walk *w)
{
	struct walk_vars *v = &w->ws->v;
	struct tm_stack *st = w->st;
	__u64 pc = v->is_ret ? v->ip - 1 : v->ip, cfa, ra = 0, bp = v->bp, bits = 0;
	struct tm_cfi_row row;
	__u32 bp_ok = v->bp_ok, kind = ROW_CFI, n;

	if (!v->at_entry) {
		kind = rule_of(w, pc, &bits);
		if (!kind) {
			v->end = TM_END_NOT_CODE;
			return 1;
		}
	}
	if (v->is_ret) {
		n = st->nr;
		if (n >= TM_MAX_FRAMES) {
			v->end = TM_END_DEPTH;
			return 1;
		}
		st->ips[n] = v->ip;
		st->nr = n + 1;
	}
	__builtin_memcpy(&row, &bits, sizeof(row));
	if (v->at_entry) {
		cfa = v->sp + 8;
	} else if (kind == ROW_FP) {
		/* No CFI: follow the frame pointer if it points up the stack,
		 * nearby. */
		if (!bp_ok || bp <= v->sp || bp - v->sp > (8 << 20)) {
			v->end = TM_END_NO_INFO;
			return 1;
		}
		cfa = bp + 16;
		if (read_word(w, &bp, cfa - 16)) {
			v->end = TM_END_UNREADABLE;
			return 1;
		}
	} else if (kind != ROW_CFI) {
		v->end = TM_END_NO_INFO;
		return 1;
	} else {
		switch (row.cfa) {
		case TM_CFA_RSP:
			cfa = v->sp + row.off;
			break;
		case TM_CFA_RBP:
			if (!bp_ok) {
				v->end = TM_END_UNSUPPORTED;
				return 1;
			}
			cfa = bp + row.off;
			break;
		case TM_CFA_PLT:
			cfa = v->sp + 8 + ((v->ip & 15) >= row.off ? 8 : 0);
			break;
		case TM_CFA_END:
			v->end = TM_END_COMPLETE;
			return 1;
		default:
			v->end = TM_END_NO_INFO;
			return 1;
		}
		if (row.rbp == -128) {
			bp_ok = 0;
		} else if (row.rbp) {
			if (read_word(w, &bp, cfa + 8 * (__s64)row.rbp)) {
				v->end = TM_END_UNREADABLE;
				return 1;
			}
			bp_ok = 1;
		}
	}
	/* The caller's frame lies above: anything else is a loop or garbage. */
	if (cfa < v->sp + 8 || cfa - v->sp > (8 << 20)) {
		v->end = TM_END_BAD_FRAME;
		return 1;
	}
	if (read_word(w, &ra, cfa - 8)) {
		v->end = TM_END_UNREADABLE;
		return 1;
	}
	if (is_uretprobe_trampoline(ra))
		ra = real_return(cfa - 8);
	if (!ra) {
		/* A zero return address ends the outermost frame. */
		v->end = v->is_ret || v->at_entry ? TM_END_COMPLETE : TM_END_BAD_FRAME;
		return 1;
	}
	v->ip = ra;
	v->sp = cfa;
	v->bp = bp;
	v->bp_ok = bp_ok;
	v->is_ret = 1;
	v->at_entry = 0;
	return 0;
}

static __always_inline __u64 intern_stack(struct tm_stack *st);

/*
 * Walk the current thread's user stack from `ip`, `sp`, `bp` with the
 * process's unwind tables into the per-CPU scratch and intern it. At a
 * function's entry (`at_entry`) the function itself is not a frame: frame
 * 0 is its caller. Otherwise frame 0 is `ip` (a system call's).
 */
__attribute__((noinline)) __u64 walk_stack(__u64 ip, __u64 sp, __u64 bp, __u32 at_entry)
{
	__u32 zero = 0, tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 h;
	struct walk w = {};
	struct walk_vars *v;

	w.st = bpf_map_lookup_elem(&stack_scratch, &zero);
	w.ws = bpf_map_lookup_elem(&walk_scratch, &zero);
	if (!w.st || !w.ws)
		return 0;
	if (w.ws->busy) {
		/* Counted as an event without its stack. */
		__sync_fetch_and_add(&stack_errors, 1);
		return 0;
	}
	w.ws->busy = 1;
	w.st->nr = 0;
	w.st->end = TM_END_COMPLETE;
	if (!at_entry) {
		w.st->ips[0] = ip;
		w.st->nr = 1;
	}
	w.proc = bpf_map_lookup_elem(&cfi_procs, &tgid);
	if (!w.proc) {
		/* No tables yet (user space is still reading the maps): the
		 * caller at a function's entry is certain, nothing more is. */
		if (at_entry && !bpf_probe_read_user(&w.st->ips[0], sizeof(__u64), (void *)sp))
			w.st->nr = 1;
		w.st->end = TM_END_NO_TABLE;
	} else {
		v = &w.ws->v;
		v->ip = ip;
		v->sp = sp;
		v->bp = bp;
		v->bp_ok = 1;
		v->is_ret = 0;
		v->at_entry = at_entry;
		v->last = 0;
		v->end = TM_END_DEPTH;
		/* The copy ends at the stack's top: try smaller ones. */
		v->copy_lo = sp;
		v->copy_len = 0;
		if (!bpf_probe_read_user(w.ws->copy, TM_STACK_COPY, (void *)sp))
			v->copy_len = TM_STACK_COPY;
		else if (!bpf_probe_read_user(w.ws->copy, TM_STACK_COPY / 4, (void *)sp))
			v->copy_len = TM_STACK_COPY / 4;
		/* One step more than frames: a step appends the frame before it. */
		bpf_loop(TM_MAX_FRAMES + 1, (void *)walk_step, &w, 0);
		w.st->end = v->end;
	}
	if (!w.st->nr) {
		w.ws->busy = 0;
		__sync_fetch_and_add(&stack_errors, 1);
		return 0;
	}
	h = intern_stack(w.st);
	w.ws->busy = 0;
	return h;
}

/* The stack of the allocator or probed function being entered. */
static __always_inline __u64 capture_entry_stack(struct pt_regs *ctx)
{
	return walk_stack(PT_REGS_IP(ctx), PT_REGS_SP(ctx), PT_REGS_FP(ctx), true);
}

/* The user stack of a system call, from its tracepoint: frame 0 is the
 * instruction after the syscall. */
static __always_inline __u64 capture_syscall_stack(void *ctx, struct pt_regs *regs)
{
	return walk_stack(BPF_CORE_READ(regs, ip), BPF_CORE_READ(regs, sp),
			  BPF_CORE_READ(regs, bp), false);
}

/* A captured stack into the stacks map, keyed by a hash of its frames. */
static __always_inline __u64 intern_stack(struct tm_stack *st)
{
	/* The same addresses mean other code in another process's image: the
	 * process is part of the key. */
	__u64 h = 0xcbf29ce484222325ULL ^ (bpf_get_current_pid_tgid() >> 32);
	struct thread_state *ts;

	for (int i = 0; i < TM_MAX_FRAMES; i++) {
		if (i >= st->nr)
			break;
		h = (h ^ st->ips[i]) * 0x100000001b3ULL;
		h ^= h >> 29;
	}
	h = (h ^ st->end) * 0x100000001b3ULL;
	if (h == 0)
		h = 1;
	ts = thread_state(false);
	if (ts) {
		for (int i = 0; i < TM_KNOWN_STACKS; i++)
			if (ts->known[i] == h)
				return h;
	}
	if (!bpf_map_lookup_elem(&stacks, &h)) {
		long err = bpf_map_update_elem(&stacks, &h, st, BPF_NOEXIST);

		if (err && err != -17 /* EEXIST: another CPU won the race */) {
			count_lost(TM_LOST_STACK_TABLE, TM_K_HEAP);
			return 0;
		}
	}
	if (ts) {
		ts->known[ts->known_next & (TM_KNOWN_STACKS - 1)] = h;
		ts->known_next++;
	}
	return h;
}

/*
 * An in-flight allocator call whose return can still be seen: its return
 * address slot holds the uretprobe trampoline. The kernel refuses return
 * probes past 64 nested ones on a thread (deep recursion through probed
 * functions): such a call never reports, and must not swallow the calls
 * made below it as if nested inside it.
 */
static __always_inline bool inflight_alive(struct inflight *cur)
{
	__u64 slot = 0;

	bpf_probe_read_user(&slot, sizeof(slot), (void *)cur->sp);
	return is_uretprobe_trampoline(slot);
}

/* ---- Watchpoints ---- */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TM_WATCH_SLOTS);
	__type(key, __u32);
	__type(value, struct tm_watch);
} watches SEC(".maps");

/* Threads stopped by the tracer's signal, not yet armed: the tracer
 * suppresses exactly these deliveries (tid → 1). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} watch_signalled SEC(".maps");

static __always_inline bool watching(void)
{
	return watch_uaf_slots | watch_ovf_slots;
}

/* Tell user space a slot's breakpoints can go (the slot is released). */
static __always_inline void watch_released(__u32 slot, struct tm_watch *w, __u32 tid)
{
	struct tm_watch_rec *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);

	if (!r)
		return; /* the next claim moves the breakpoints anyway */
	__builtin_memset(r, 0, sizeof(*r));
	r->h.kind = TM_K_WATCH;
	r->h.tid = tid;
	r->h.ts = bpf_ktime_get_ns();
	r->slot = slot;
	r->kind = w->kind;
	r->gen = w->gen;
	r->addr = w->addr;
	r->len = w->len;
	r->write = 2; /* released */
	r->block = w->block;
	bpf_ringbuf_submit(r, 0);
}

struct watch_release_ctx {
	__u32 tgid, tid;
	__u64 lo, hi;	/* release slots whose watched bytes overlap [lo, hi) */
	__u64 block;	/* or (nonzero) whose block this is (overflow kinds) */
};

static long watch_release_step(__u64 i, struct watch_release_ctx *c)
{
	__u32 slot = i;
	struct tm_watch *w = bpf_map_lookup_elem(&watches, &slot);

	if (!w || w->state != TM_WS_ARMED || w->tgid != c->tgid || w->kind == TM_WK_EXPLICIT)
		return 0;
	if (c->block ? (w->block == c->block && w->kind != TM_WK_UAF) :
		       (w->addr < c->hi && c->lo < w->addr + w->len)) {
		if (__sync_val_compare_and_swap(&w->state, TM_WS_ARMED, TM_WS_RELEASED) ==
		    TM_WS_ARMED) {
			__sync_fetch_and_and(&watch_armed, ~(1ULL << slot));
			watch_released(slot, w, c->tid);
		}
	}
	return 0;
}

/* The allocator handed out [lo, hi) (or is freeing `block`): no watch there
 * is a finding any more. */
static __always_inline void watch_release(__u32 tid, __u64 lo, __u64 hi, __u64 block)
{
	struct watch_release_ctx c;
	bool maybe = false;

	if (!watch_armed)
		return;
	/* Most calls touch no watched block: a look at the mirror first. */
	for (int i = 0; i < TM_WATCH_SLOTS; i++) {
		if (block ? watch_blk[i] == block :
			    (watch_lo[i] < hi && lo < watch_hi[i]))
			maybe = true;
	}
	if (!maybe)
		return;
	c = (struct watch_release_ctx){
		.tgid = bpf_get_current_pid_tgid() >> 32,
		.tid = tid,
		.lo = lo,
		.hi = hi,
		.block = block,
	};

	bpf_loop(TM_WATCH_SLOTS, (void *)watch_release_step, &c, 0);
}

struct watch_claim_ctx {
	__u32 mask;
	__u32 best;
	__u64 oldest;
	__u32 kind;
	__u32 _pad;
};

/* The slot to claim: a free one of the mask, else the one of this kind
 * armed longest ago (watching rotates over the most recent). */
static long watch_pick_step(__u64 i, struct watch_claim_ctx *c)
{
	__u32 slot = i;
	struct tm_watch *w;

	if (!(c->mask & (1u << slot)))
		return 0;
	w = bpf_map_lookup_elem(&watches, &slot);
	if (!w)
		return 0;
	if (w->state == TM_WS_FREE || w->state == TM_WS_RELEASED) {
		c->best = slot;
		c->oldest = 0;
		return 1;
	}
	if (c->kind && w->state == TM_WS_ARMED && w->kind == c->kind && w->claimed_ns < c->oldest) {
		c->best = slot;
		c->oldest = w->claimed_ns;
	}
	return 0;
}

/* Claim a slot for [addr, addr + len) of `block` and have the thread stop
 * for the tracer to arm it. */
static __always_inline void watch_claim(__u32 kind, __u32 steal, __u32 mask, __u64 addr,
					__u32 len, __u32 type, __u64 block, __u64 size, __u32 tid,
					__u64 now)
{
	/* steal: the kind of armed slot that may be taken (0: none). */
	struct watch_claim_ctx c = { .mask = mask, .best = TM_WATCH_SLOTS, .oldest = ~0ULL,
				     .kind = steal };
	struct tm_watch *w;
	__u32 slot, one = 1;
	__u64 old;
	__u64 snap = 0;

	/* A thread that blocks the signal would not stop (and sigwait would
	 * hand the signal to the program): not watched from there. */
	if (BPF_CORE_READ(bpf_get_current_task_btf(), blocked.sig[0]) &
	    (1ULL << (TM_WATCH_SIGNAL - 1)))
		return;
	bpf_loop(TM_WATCH_SLOTS, (void *)watch_pick_step, &c, 0);
	slot = c.best;
	if (slot >= TM_WATCH_SLOTS)
		return;
	w = bpf_map_lookup_elem(&watches, &slot);
	if (!w)
		return;
	old = w->state;
	if (old == TM_WS_CLAIMED || __sync_val_compare_and_swap(&w->state, old, TM_WS_CLAIMED) != old)
		return; /* another CPU took it */
	/* Odd while the fields change: a hit reading them meanwhile sees it. */
	w->gen++;
	bpf_probe_read_user(&snap, sizeof(snap), (void *)addr);
	if (len < 8)
		snap &= (1ULL << (len * 8)) - 1;
	w->kind = kind;
	w->tgid = bpf_get_current_pid_tgid() >> 32;
	w->tid = tid;
	w->addr = addr;
	w->len = len;
	w->type = type;
	w->block = block;
	w->size = size;
	w->snap = snap;
	w->claimed_ns = now;
	w->gen++;
	w->hits = 0;
	if (kind <= TM_WK_EXPLICIT)
		__sync_fetch_and_add(&watch_claims[kind], 1);
	watch_lo[slot] = addr;
	watch_hi[slot] = addr + len;
	watch_blk[slot] = kind == TM_WK_UAF ? 0 : block;
	w->state = TM_WS_ARMED;
	__sync_fetch_and_or(&watch_armed, 1ULL << slot);
	bpf_map_update_elem(&watch_signalled, &tid, &one, BPF_ANY);
	bpf_send_signal_thread(TM_WATCH_SIGNAL);
}

/* The budget: at most one claim of a sort per watch_interval_ns. */
static __always_inline bool watch_due(__u64 *last, __u64 now)
{
	__u64 prev = *last;

	if (now - prev < watch_interval_ns)
		return false;
	return __sync_val_compare_and_swap(last, prev, now) == prev;
}

/* At free(ptr): the block's overflow watches go; the thread's free is
 * remembered (its accesses inside are the allocator's); maybe watch the
 * block's first word from now on. */
static __always_inline void watch_on_free(struct pt_regs *ctx, struct thread_state *ts,
					  __u32 tid, __u64 ptr, __u64 now)
{
	__u64 sp = PT_REGS_SP(ctx), hdr = 0;
	__u32 zero = 0;
	struct tm_stack *st;
	bool due;

	due = watch_uaf_slots && !(ptr & 7) && now - watch_last_uaf >= watch_interval_ns;
	/* The free is remembered even while nothing is watched: a slot armed
	 * by another thread meanwhile may cover what this free touches. */
	if (!ts)
		ts = thread_state(true);
	if (ts) {
		ts->free_slot = sp;
		/* The entry stack just walked begins with free's return address
		 * ([sp]); read it from there when it did. */
		st = bpf_map_lookup_elem(&stack_scratch, &zero);
		if (st && st->nr)
			ts->free_ret = st->ips[0];
		else
			bpf_probe_read_user(&ts->free_ret, sizeof(__u64), (void *)sp);
	}
	watch_release(tid, 0, 0, ptr);
	if (!due || !ts)
		return;
	if (watch_glibc) {
		/* A chunk mmapped on its own goes back to the kernel (whatever is
		 * mapped there next is not this block). */
		bpf_probe_read_user(&hdr, sizeof(hdr), (void *)(ptr - 8));
		if (hdr & 2)
			return;
	}
	if (!watch_due(&watch_last_uaf, now))
		return;
	watch_claim(TM_WK_UAF, TM_WK_UAF, watch_uaf_slots, ptr, 8, TM_WATCH_RW, ptr, 0, tid, now);
}

/* An allocation returned [ptr, ptr + size): watches on those bytes go;
 * maybe watch the bytes just past its end. */
static __always_inline void watch_on_alloc(__u32 tid, __u64 ptr, __u64 size, __u64 now)
{
	__u64 end = ptr + size;
	__u32 len;

	if (!ptr)
		return;
	watch_release(tid, ptr, end ? end : ptr + 1, 0);
	if (!watch_ovf_slots || !size || !watch_due(&watch_last_ovf, now))
		return;
	if (watch_ovf_usable) {
		__u64 hdr = 0;

		bpf_probe_read_user(&hdr, sizeof(hdr), (void *)(ptr - 8));
		if (hdr & 2 || (hdr & ~7ULL) < 16)
			return; /* mmapped on its own: nothing of the heap follows */
		end = ptr + (hdr & ~7ULL) - 8;
	}
	/* The widest aligned breakpoint starting right at the end. */
	len = !(end & 7) ? 8 : !(end & 3) ? 4 : !(end & 1) ? 2 : 1;
	watch_claim(TM_WK_OVERFLOW, TM_WK_OVERFLOW, watch_ovf_slots, end, len, TM_WATCH_W, ptr,
		    size, tid, now);
	/* glibc: the chunk's size word just before the block is the
	 * allocator's alone while the block lives (a write there is an
	 * underflow); a free slot, or the oldest of these. */
	if (watch_glibc && !(ptr & 7))
		watch_claim(TM_WK_UNDERFLOW, TM_WK_UNDERFLOW, watch_ovf_slots, ptr - 8, 8,
			    TM_WATCH_W, ptr, size, tid, now);
}

/* Inside a malloc-family call (its own bookkeeping in a freed block,
 * calloc zeroing, realloc copying): not the program's access. */
static __always_inline bool in_alloc_call(struct thread_state *ts, __u64 sp)
{
	/* At sp == in.sp: a tail call (calloc jumps to memset) runs in the
	 * allocator's frame, which the return probe still holds. */
	return ts->in_live && sp <= ts->in.sp;
}

/* Maybe inside the thread's last free: below its return-address slot,
 * which still holds the address free returns to. A stale copy of that
 * address left in a later, bigger frame looks the same: the walk of the
 * stack decides (see free_in_stack). */
static __always_inline bool maybe_in_free(struct thread_state *ts, __u64 sp)
{
	__u64 ret = 0;

	if (!ts->free_slot || sp > ts->free_slot)
		return false;
	bpf_probe_read_user(&ret, sizeof(ret), (void *)ts->free_slot);
	return ret == ts->free_ret;
}

/* The stack just walked (the per-CPU scratch) returns through `ret`, or
 * ends before it could say (no unwind table yet for a library whose
 * constructor frees before the program's entry): the slot decides. */
static __always_inline bool free_in_stack(__u64 ret)
{
	__u32 zero = 0;
	struct tm_stack *st = bpf_map_lookup_elem(&stack_scratch, &zero);

	if (!st)
		return true;
	for (int i = 1; i < TM_MAX_FRAMES; i++) {
		if (i >= st->nr)
			break;
		if (st->ips[i] == ret)
			return true;
	}
	return st->end != TM_END_COMPLETE;
}

struct watch_find_ctx {
	__u64 addr;
	__u32 tgid;
	__u32 slot;
};

static long watch_find_step(__u64 i, struct watch_find_ctx *c)
{
	__u32 slot = i;
	struct tm_watch *w = bpf_map_lookup_elem(&watches, &slot);

	if (w && w->state == TM_WS_ARMED && w->addr == c->addr && w->tgid == c->tgid) {
		c->slot = slot;
		return 1;
	}
	return 0;
}

/* A hit of a watchpoint (a data breakpoint traps after the access). */
SEC("perf_event")
int tm_watch_hit(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid(), value = 0, gen, sp = ctx->regs.sp;
	struct watch_find_ctx c = { .addr = ctx->addr, .tgid = id >> 32, .slot = TM_WATCH_SLOTS };
	struct thread_state *ts;
	struct tm_watch_rec *r;
	struct tm_watch *w;
	__u32 len, write;
	__u64 before, stack, free_ret;
	bool in_free, asked;

	/* The allocator is no longer recorded (the recording is ending):
	 * what is inside an allocator call cannot be told any more. */
	if (!armed)
		return 0;
	bpf_loop(TM_WATCH_SLOTS, (void *)watch_find_step, &c, 0);
	if (c.slot >= TM_WATCH_SLOTS) {
		/* A breakpoint user space has not taken away yet (its slot was
		 * released: the block is someone's again). Each hit costs a
		 * trap: stop the thread once for the tracer to take it now. */
		__u32 tid = (__u32)id, one = 1;

		__sync_fetch_and_add(&watch_stray, 1);
		if (!bpf_map_lookup_elem(&watch_signalled, &tid)) {
			bpf_map_update_elem(&watch_signalled, &tid, &one, BPF_ANY);
			__sync_fetch_and_add(&watch_disarm_stops, 1);
			bpf_send_signal_thread(TM_WATCH_SIGNAL);
		}
		return 0;
	}
	w = bpf_map_lookup_elem(&watches, &c.slot);
	if (!w)
		return 0;
	gen = w->gen;
	if (gen & 1)
		return 0; /* being claimed anew */
	len = w->len & 15;
	bpf_probe_read_user(&value, sizeof(value), (void *)c.addr);
	if (len < 8)
		value &= (1ULL << (len * 8)) - 1;
	asked = w->kind == TM_WK_EXPLICIT;
	ts = asked ? 0 : thread_state(false);
	if (ts && in_alloc_call(ts, sp)) {
		w->snap = value;
		__sync_fetch_and_add(&watch_ignored, 1);
		return 0;
	}
	/* Past the reports of this arming (an asked address reports every
	 * access, as gdb's watch does): nothing more to tell, no stack to walk. */
	if (!asked && w->hits >= TM_WATCH_REPORTS) {
		w->snap = value;
		return 0;
	}
	in_free = ts && maybe_in_free(ts, sp);
	free_ret = ts ? ts->free_ret : 0;
	stack = walk_stack(ctx->regs.ip, sp, ctx->regs.bp, false);
	/* No stack to tell: the slot says it is inside free (the safe side). */
	if (in_free && (!stack || free_in_stack(free_ret))) {
		w->snap = value;
		__sync_fetch_and_add(&watch_ignored, 1);
		return 0;
	}
	write = w->type == TM_WATCH_W || value != w->snap;
	before = w->snap;
	w->snap = value;
	w->hits++;
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_lost(TM_LOST_RINGBUF, TM_K_WATCH);
		return 0;
	}
	r->h.kind = TM_K_WATCH;
	r->h.tid = (__u32)id;
	r->h.ts = bpf_ktime_get_ns();
	r->slot = c.slot;
	r->kind = w->kind;
	r->gen = gen;
	r->addr = c.addr;
	r->len = len;
	r->write = write;
	r->block = w->block;
	r->size = w->size;
	r->ip = ctx->regs.ip;
	r->value = value;
	r->before = before;
	r->stack = stack;
	r->regs[0] = ctx->regs.ax;
	r->regs[1] = ctx->regs.bx;
	r->regs[2] = ctx->regs.cx;
	r->regs[3] = ctx->regs.dx;
	r->regs[4] = ctx->regs.si;
	r->regs[5] = ctx->regs.di;
	r->regs[6] = ctx->regs.bp;
	r->regs[7] = sp;
	r->regs[8] = ctx->regs.r8;
	r->regs[9] = ctx->regs.r9;
	r->regs[10] = ctx->regs.r10;
	r->regs[11] = ctx->regs.r11;
	r->regs[12] = ctx->regs.r12;
	r->regs[13] = ctx->regs.r13;
	r->regs[14] = ctx->regs.r14;
	r->regs[15] = ctx->regs.r15;
	r->regs[16] = ctx->regs.ip;
	if (bpf_probe_read_user(r->code, sizeof(r->code), (void *)(ctx->regs.ip - 16)))
		__builtin_memset(r->code, 0, sizeof(r->code));
	if (w->gen != gen) {
		/* Claimed again meanwhile: this hit's slot data is not sure. */
		bpf_ringbuf_discard(r, 0);
		return 0;
	}
	__sync_fetch_and_add(&watch_reports, 1);
	bpf_ringbuf_submit(r, wakeup_flags());
	return 0;
}

static __always_inline int alloc_enter(struct pt_regs *ctx, __u32 fn, __u64 a0,
				       __u64 a1, __u64 a2)
{
	struct thread_state *ts;
	struct inflight *cur, in = {};
	__u32 tid;

	if (bare || !armed || !is_target(&tid))
		return 0;
	ts = thread_state(true);
	if (!ts) {
		count_lost(TM_LOST_INFLIGHT, TM_K_HEAP);
		return 0;
	}
	cur = &ts->in;
	if (ts->in_live) {
		/* realloc(NULL, n) calls malloc, reallocarray tail-calls realloc:
		 * the outermost call is the one the program made. */
		__u64 sp = PT_REGS_SP(ctx), ret_addr = 0;

		bpf_probe_read_user(&ret_addr, sizeof(ret_addr), (void *)sp);
		/* A tail call (reallocarray jumps to realloc) enters at the same
		 * stack pointer, its return address already the trampoline of
		 * the outer call's return probe. */
		if ((sp < cur->sp || (sp == cur->sp && is_uretprobe_trampoline(ret_addr))) &&
		    inflight_alive(cur)) {
			/* Called from the program's own code while an allocator
			 * call is under way on this thread: a signal handler
			 * that interrupted it. Folded in, its event is lost:
			 * say so. */
			if (in_program_text(ret_addr))
				count_lost(TM_LOST_INFLIGHT, TM_K_HEAP);
			cur->depth++;
			return 0;
		}
		/* Not nested: an earlier call whose return was never seen (it
		 * began before the return probe was attached, or its thread
		 * died in it). Its event is lost; this call starts afresh
		 * instead of being folded into it forever. */
		count_lost(TM_LOST_INFLIGHT, TM_K_HEAP);
	}
	if (watching() && (fn == TM_FN_REALLOC || fn == TM_FN_REALLOCARRAY) && a0)
		watch_release(tid, 0, 0, a0);
	in.sp = PT_REGS_SP(ctx);
	in.fn = fn;
	in.a0 = a0;
	in.a1 = a1;
	in.a2 = a2;
	in.stack = capture_entry_stack(ctx);
	ts->in = in;
	ts->in_live = 1;
	return 0;
}

static __always_inline int alloc_exit(struct pt_regs *ctx)
{
	struct thread_state *ts;
	struct tm_heap_rec *r;
	struct inflight *in;
	__u64 ret = PT_REGS_RC(ctx), size, now;
	__u32 tid;

	if (bare || !armed || !is_target(&tid))
		return 0;
	ts = thread_state(false);
	if (!ts || !ts->in_live)
		return 0;
	in = &ts->in;
	if (in->depth) {
		in->depth--;
		return 0;
	}
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_lost(TM_LOST_RINGBUF, TM_K_HEAP);
		ts->in_live = 0;
		return 0;
	}
	r->h.kind = TM_K_HEAP;
	r->h.tid = tid;
	r->h.ts = bpf_ktime_get_ns();
	r->fn = in->fn;
	r->stack = in->stack;
	r->old_ptr = 0;
	r->align = 0;
	r->ptr = ret;
	switch (in->fn) {
	case TM_FN_CALLOC:
		r->size = in->a0 * in->a1;
		break;
	case TM_FN_REALLOC:
		r->old_ptr = in->a0;
		r->size = in->a1;
		break;
	case TM_FN_REALLOCARRAY:
		r->old_ptr = in->a0;
		r->size = in->a1 * in->a2;
		break;
	case TM_FN_POSIX_MEMALIGN: {
		/* int posix_memalign(void **out, size_t align, size_t size) */
		__u64 p = 0;

		if (ret == 0)
			bpf_probe_read_user(&p, sizeof(p), (void *)in->a0);
		r->ptr = p;
		r->align = in->a1;
		r->size = in->a2;
		break;
	}
	case TM_FN_MEMALIGN:
		r->align = in->a0;
		r->size = in->a1;
		break;
	default: /* malloc, valloc, pvalloc */
		r->size = in->a0;
		break;
	}
	ts->in_live = 0;
	ret = r->ptr;
	size = r->size;
	now = r->h.ts;
	bpf_ringbuf_submit(r, wakeup_flags());
	if (watching())
		watch_on_alloc(tid, ret, size, now);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(tm_malloc, __u64 size)
{
	return alloc_enter(ctx, TM_FN_MALLOC, size, 0, 0);
}

SEC("uprobe")
int BPF_UPROBE(tm_calloc, __u64 n, __u64 size)
{
	return alloc_enter(ctx, TM_FN_CALLOC, n, size, 0);
}

SEC("uprobe")
int BPF_UPROBE(tm_realloc, __u64 ptr, __u64 size)
{
	return alloc_enter(ctx, TM_FN_REALLOC, ptr, size, 0);
}

SEC("uprobe")
int BPF_UPROBE(tm_reallocarray, __u64 ptr, __u64 n, __u64 size)
{
	return alloc_enter(ctx, TM_FN_REALLOCARRAY, ptr, n, size);
}

SEC("uprobe")
int BPF_UPROBE(tm_posix_memalign, __u64 out, __u64 align, __u64 size)
{
	return alloc_enter(ctx, TM_FN_POSIX_MEMALIGN, out, align, size);
}

SEC("uprobe")
int BPF_UPROBE(tm_memalign, __u64 align, __u64 size)
{
	return alloc_enter(ctx, TM_FN_MEMALIGN, align, size, 0);
}

SEC("uprobe")
int BPF_UPROBE(tm_valloc, __u64 size)
{
	return alloc_enter(ctx, TM_FN_VALLOC, size, 0, 0);
}

SEC("uprobe")
int BPF_UPROBE(tm_pvalloc, __u64 size)
{
	return alloc_enter(ctx, TM_FN_PVALLOC, size, 0, 0);
}

SEC("uretprobe")
int BPF_URETPROBE(tm_alloc_ret)
{
	return alloc_exit(ctx);
}

/*
 * free needs no return probe. It may be attached past a leading
 * `test %rdi,%rdi; je` (free(NULL) is a no-op): those instructions are
 * single-stepped by the kernel, a push is emulated, a 20x difference.
 */
static __always_inline int free_enter(struct pt_regs *ctx, __u64 ptr)
{
	struct thread_state *ts;
	struct tm_heap_rec *r;
	struct inflight *in;
	__u64 sp = PT_REGS_SP(ctx), now;
	__u32 tid;
	bool target;

	if (bare || !armed)
		return 0;
	target = is_target(&tid);
	if (debug)
		__sync_fetch_and_add(&free_hits[target ? 1 : 0], 1);
	if (!target || ptr == 0)
		return 0;
	/* realloc(p, 0) frees through free(): realloc's record says it. A
	 * stale in-flight entry (not below us on the stack) does not count. */
	ts = thread_state(false);
	in = ts && ts->in_live ? &ts->in : 0;
	if (ts && in && sp < in->sp) {
		__u64 ret_addr = 0;

		if (!inflight_alive(in)) {
			/* Its return was never probed: its event is lost, and
			 * this free is not inside it. */
			count_lost(TM_LOST_INFLIGHT, TM_K_HEAP);
			ts->in_live = 0;
			goto record;
		}
		/* From the program's own code, not from inside realloc: a
		 * signal handler freeing while an allocator call is under way.
		 * Its event is lost: say so. */
		bpf_probe_read_user(&ret_addr, sizeof(ret_addr), (void *)sp);
		if (in_program_text(ret_addr))
			count_lost(TM_LOST_INFLIGHT, TM_K_HEAP);
		return 0;
	}
record:
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_lost(TM_LOST_RINGBUF, TM_K_HEAP);
		/* Unrecorded, the block is still freed: its watches go. */
		if (watching())
			watch_release(tid, 0, 0, ptr);
		return 0;
	}
	r->h.kind = TM_K_HEAP;
	r->h.tid = tid;
	r->h.ts = bpf_ktime_get_ns();
	r->fn = TM_FN_FREE;
	r->ptr = ptr;
	r->old_ptr = 0;
	r->size = 0;
	r->align = 0;
	r->stack = capture_entry_stack(ctx);
	now = r->h.ts;
	bpf_ringbuf_submit(r, wakeup_flags());
	if (watching())
		watch_on_free(ctx, ts, tid, ptr, now);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(tm_free, __u64 ptr)
{
	return free_enter(ctx, ptr);
}

/*
 * Every allocator entry point in one program, told apart by the attach
 * cookie (the TM_FN_* value), attached as one uprobe_multi link: the
 * kernel then detaches all of them after a single grace period instead of
 * one per probe (1.8 s at the end of every recording with ~17 links).
 */
/*
 * A register by the placement's number (src/recorder/place.rs, REGS): the
 * probe may sit past the entry, where an argument was copied to another
 * register before its own was reused. The cookie carries fn in its low
 * byte, then the register of each of the first three arguments.
 */
static __always_inline __u64 reg_arg(struct pt_regs *ctx, __u64 r)
{
	/* Loaded one by one: the verifier refuses a computed offset into the
	 * context. */
	__u64 regs[15] = {
		ctx->di, ctx->si, ctx->dx, ctx->cx, ctx->r8, ctx->r9, ctx->ax, ctx->bx,
		ctx->bp, ctx->r10, ctx->r11, ctx->r12, ctx->r13, ctx->r14, ctx->r15,
	};

	r &= 0xff;
	return r < 15 ? regs[r] : 0;
}

SEC("uprobe.multi")
int tm_alloc_multi(struct pt_regs *ctx)
{
	__u64 cookie = bpf_get_attach_cookie(ctx);
	__u32 fn = cookie & 0xff;
	__u64 a0 = PT_REGS_PARM1(ctx), a1 = PT_REGS_PARM2(ctx), a2 = PT_REGS_PARM3(ctx);

	/* rdi, rsi, rdx: 0, 1, 2. Anything else was moved. */
	if ((cookie >> 8 & 0xffffff) != 0x020100) {
		a0 = reg_arg(ctx, cookie >> 8);
		a1 = reg_arg(ctx, cookie >> 16);
		a2 = reg_arg(ctx, cookie >> 24);
	}
	if (fn == TM_FN_FREE)
		return free_enter(ctx, a0);
	return alloc_enter(ctx, fn, a0, a1, a2);
}

SEC("uretprobe.multi")
int tm_alloc_ret_multi(struct pt_regs *ctx)
{
	return alloc_exit(ctx);
}


static __always_inline bool is_mm_syscall(long id)
{
	return id == TM_NR_MMAP || id == TM_NR_MUNMAP || id == TM_NR_BRK || id == TM_NR_MREMAP;
}

/* The system calls of the families turned on (futex: the waits only). */
static __always_inline bool traced_syscall(long id, struct pt_regs *regs)
{
	if (families & TM_FAM_IO) {
		switch (id) {
		case TM_NR_READ: case TM_NR_WRITE: case TM_NR_OPEN: case TM_NR_CLOSE:
		case TM_NR_PREAD: case TM_NR_PWRITE: case TM_NR_READV: case TM_NR_WRITEV:
		case TM_NR_FSYNC: case TM_NR_FDATASYNC: case TM_NR_OPENAT:
		case TM_NR_DUP: case TM_NR_DUP2: case TM_NR_DUP3:
			return true;
		case TM_NR_FCNTL: {
			/* F_DUPFD, F_DUPFD_CLOEXEC: a new fd for an old one. */
			__u64 cmd = BPF_CORE_READ(regs, si);

			return cmd == 0 || cmd == 1030;
		}
		}
	}
	if (families & TM_FAM_NET) {
		switch (id) {
		case TM_NR_CONNECT: case TM_NR_ACCEPT: case TM_NR_ACCEPT4: case TM_NR_SENDTO:
		case TM_NR_RECVFROM: case TM_NR_SENDMSG: case TM_NR_RECVMSG:
			return true;
		}
	}
	if (families & TM_FAM_LOCK) {
		if (id == TM_NR_FUTEX_WAITV)
			return true;
		if (id == TM_NR_FUTEX) {
			/* FUTEX_WAIT, LOCK_PI, WAIT_BITSET, WAIT_REQUEUE_PI,
			 * LOCK_PI2 (without the private/clock flags). */
			__u32 op = BPF_CORE_READ(regs, si) & 0x7f;

			return op == 0 || op == 6 || op == 9 || op == 11 || op == 13;
		}
	}
	return false;
}

/* A user buffer of up to TM_IO_DATA bytes into the record. */
static __always_inline void read_data(struct tm_io_rec *r, __u64 ptr, __u64 len)
{
	if (!ptr)
		return;
	/* 127 bytes hold any socket address (sockaddr_un is 110). */
	if (len > TM_IO_DATA - 1)
		len = TM_IO_DATA - 1;
	if (len && !bpf_probe_read_user(r->data, len & (TM_IO_DATA - 1), (void *)ptr))
		r->data_len = len;
}

/* A socket address behind (ptr, *len_ptr), as accept and recvfrom fill. */
static __always_inline void read_sockaddr_out(struct tm_io_rec *r, __u64 ptr, __u64 len_ptr)
{
	__u32 len = 0;

	if (ptr && len_ptr && !bpf_probe_read_user(&len, sizeof(len), (void *)len_ptr))
		read_data(r, ptr, len);
}

static __always_inline int io_exit(void *ctx, struct pt_regs *regs, struct sys_args *a,
				   __u32 tid, long ret)
{
	struct tm_io_rec *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	__u64 now = bpf_ktime_get_ns();

	if (!r) {
		count_lost(TM_LOST_RINGBUF, TM_K_IO);
		bpf_map_delete_elem(&sys_inflight, &tid);
		return 0;
	}
	r->h.kind = TM_K_IO;
	r->h.tid = tid;
	r->h.ts = now;
	r->nr = a->nr;
	r->ret = ret;
	r->dur = now - a->ts;
	__builtin_memcpy(r->args, a->args, sizeof(r->args));
	r->data_len = 0;
	r->stack = capture_syscall_stack(ctx, regs);
	switch (a->nr) {
	case TM_NR_OPEN:
	case TM_NR_OPENAT: {
		/* Read on return: the kernel has faulted the path in by now. */
		long n = bpf_probe_read_user_str(r->data, TM_IO_DATA,
						 (void *)(a->nr == TM_NR_OPEN ? a->args[0] : a->args[1]));
		if (n > 0)
			r->data_len = n;
		break;
	}
	case TM_NR_CONNECT:
		read_data(r, a->args[1], a->args[2]);
		break;
	case TM_NR_SENDTO:
		read_data(r, a->args[4], a->args[5]);
		break;
	case TM_NR_ACCEPT:
	case TM_NR_ACCEPT4:
		if (ret >= 0)
			read_sockaddr_out(r, a->args[1], a->args[2]);
		break;
	case TM_NR_RECVFROM:
		if (ret >= 0)
			read_sockaddr_out(r, a->args[4], a->args[5]);
		break;
	case TM_NR_SENDMSG:
	case TM_NR_RECVMSG: {
		/* struct msghdr starts with msg_name and msg_namelen (recvmsg
		 * has set the length by now). */
		struct {
			__u64 name;
			__u32 namelen;
		} mh = {};

		if (ret >= 0 && !bpf_probe_read_user(&mh, sizeof(mh), (void *)a->args[1]))
			read_data(r, mh.name, mh.namelen);
		break;
	}
	}
	bpf_map_delete_elem(&sys_inflight, &tid);
	bpf_ringbuf_submit(r, wakeup_flags());
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(tm_sys_enter, struct pt_regs *regs, long id)
{
	struct sys_args a = {};
	__u32 tid;

	if (!is_target(&tid))
		return 0;
	if (!traced_syscall(id, regs))
		return 0;
	a.nr = id;
	a.ts = bpf_ktime_get_ns();
	a.args[0] = BPF_CORE_READ(regs, di);
	a.args[1] = BPF_CORE_READ(regs, si);
	a.args[2] = BPF_CORE_READ(regs, dx);
	a.args[3] = BPF_CORE_READ(regs, r10);
	a.args[4] = BPF_CORE_READ(regs, r8);
	a.args[5] = BPF_CORE_READ(regs, r9);
	if (bpf_map_update_elem(&sys_inflight, &tid, &a, BPF_ANY))
		count_lost(TM_LOST_INFLIGHT, TM_K_SYSCALL);
	return 0;
}

/* The io/net/lock families' entries (above) and returns: loaded only when
 * one is on (they run on every system call of every process, and the
 * stack capture costs the verifier time at every start). */
SEC("tp_btf/sys_exit")
int BPF_PROG(tm_sys_exit_fam, struct pt_regs *regs, long ret)
{
	struct sys_args *a;
	__u32 tid;

	if (!is_target(&tid))
		return 0;
	a = bpf_map_lookup_elem(&sys_inflight, &tid);
	if (!a)
		return 0;
	return io_exit(ctx, regs, a, tid, ret);
}

/*
 * The memory-map system calls, from their return alone: the number is in
 * orig_ax and the arguments are still in the saved registers. No entry
 * program for them: a program on every system call's entry would also run
 * on each uretprobe return (Linux 6.11+ returns from a uretprobe through a
 * system call of its own), for nothing. (fexit on the four syscall
 * functions would be cheaper still, but kernel lockdown refuses BPF
 * trampolines on these machines: EPERM.)
 */
SEC("tp_btf/sys_exit")
int BPF_PROG(tm_sys_exit, struct pt_regs *regs, long ret)
{
	struct tm_syscall_rec *r;
	__u32 tid;
	long nr;

	if (!is_target(&tid))
		return 0;
	nr = BPF_CORE_READ(regs, orig_ax);
	if (!is_mm_syscall(nr))
		return 0;
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_lost(TM_LOST_RINGBUF, TM_K_SYSCALL);
		return 0;
	}
	r->h.kind = TM_K_SYSCALL;
	r->h.tid = tid;
	r->h.ts = bpf_ktime_get_ns();
	r->nr = nr;
	r->ret = ret;
	r->args[0] = BPF_CORE_READ(regs, di);
	r->args[1] = BPF_CORE_READ(regs, si);
	r->args[2] = BPF_CORE_READ(regs, dx);
	r->args[3] = BPF_CORE_READ(regs, r10);
	r->args[4] = BPF_CORE_READ(regs, r8);
	r->args[5] = BPF_CORE_READ(regs, r9);
	/* New code mapped (a library loading): wake user space now so it reads
	 * /proc/PID/maps while the target is alive to be read. */
	bpf_ringbuf_submit(r, (nr == TM_NR_MMAP && (r->args[2] & 4 /* PROT_EXEC */)) ?
				      BPF_RB_FORCE_WAKEUP :
				      wakeup_flags());
	return 0;
}

static __always_inline bool fatal_class(int sig)
{
	/* SIGILL SIGTRAP SIGABRT SIGBUS SIGFPE SIGSEGV SIGSYS */
	return sig == 4 || sig == 5 || sig == 6 || sig == 7 || sig == 8 ||
	       sig == 11 || sig == 31;
}

/* Senders of fatal-class signals to traced processes (see tm_sig_sender). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct tm_sig_sender);
} sig_senders SEC(".maps");

/*
 * Where glibc's `__abort_msg` (a `struct abort_msg_s *`) is in each traced
 * process, by tgid: set by user space from libc's dynamic symbols and load
 * address. abort() after a heap-corruption check (malloc_printerr) or a
 * failed assert() leaves its message there before raising SIGABRT.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} abort_msgs SEC(".maps");

/*
 * A signal generated for a traced process: runs in the sender's context
 * (for kill, tkill, tgkill, sigqueue), the only moment its comm is at
 * hand; signal_deliver, in the receiver, only has si_pid.
 */
SEC("tp_btf/signal_generate")
int BPF_PROG(tm_signal_generate, int sig, struct kernel_siginfo *info,
	     struct task_struct *task, int group, int result)
{
	struct tm_sig_sender s = {};
	__u64 key;
	__u32 tgid;

	if (!fatal_class(sig))
		return 0;
	tgid = BPF_CORE_READ(task, tgid);
	if (!followed(tgid))
		return 0;
	s.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(s.comm, sizeof(s.comm));
	key = (__u64)tgid << 8 | (sig & 0xff);
	bpf_map_update_elem(&sig_senders, &key, &s, BPF_ANY);
	return 0;
}

SEC("tp_btf/signal_deliver")
int BPF_PROG(tm_signal_deliver, int sig, struct kernel_siginfo *info,
	     struct k_sigaction *ka)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct tm_signal_rec *r;
	struct pt_regs *regs;
	__u64 sp, ip, key, *abort_at, msgp;
	struct tm_sig_sender *snd;
	__u32 tid, tgid;

	if (!is_target(&tid) || !fatal_class(sig))
		return 0;
	tgid = bpf_get_current_pid_tgid() >> 32;
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_lost(TM_LOST_RINGBUF, TM_K_SIGNAL);
		return 0;
	}
	r->h.kind = TM_K_SIGNAL;
	r->h.tid = tid;
	r->h.ts = bpf_ktime_get_ns();
	r->sig = sig;
	r->code = BPF_CORE_READ(info, si_code);
	r->err = BPF_CORE_READ(info, si_errno);
	r->addr = (__u64)BPF_CORE_READ(info, _sifields._sigfault._addr);
	r->handled = BPF_CORE_READ(ka, sa.sa_handler) != 0;

	/* Sent by a process: si_pid/si_uid share si_addr's slot. */
	r->sender_pid = 0;
	r->sender_uid = 0;
	r->sender_known = 0;
	__builtin_memset(r->sender_comm, 0, sizeof(r->sender_comm));
	if (r->code <= 0) {
		r->sender_pid = BPF_CORE_READ(info, _sifields._kill._pid);
		r->sender_uid = BPF_CORE_READ(info, _sifields._kill._uid);
		key = (__u64)tgid << 8 | (sig & 0xff);
		snd = bpf_map_lookup_elem(&sig_senders, &key);
		if (snd && snd->pid == r->sender_pid) {
			__builtin_memcpy(r->sender_comm, snd->comm, sizeof(r->sender_comm));
			r->sender_known = 1;
		}
	}

	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	ip = BPF_CORE_READ(regs, ip);
	r->ip = ip;
	sp = BPF_CORE_READ(regs, sp);
	r->sp = sp;
	r->bp = BPF_CORE_READ(regs, bp);
	r->stack = 0;
	r->regs[0] = BPF_CORE_READ(regs, ax);
	r->regs[1] = BPF_CORE_READ(regs, bx);
	r->regs[2] = BPF_CORE_READ(regs, cx);
	r->regs[3] = BPF_CORE_READ(regs, dx);
	r->regs[4] = BPF_CORE_READ(regs, si);
	r->regs[5] = BPF_CORE_READ(regs, di);
	r->regs[6] = r->bp;
	r->regs[7] = sp;
	r->regs[8] = BPF_CORE_READ(regs, r8);
	r->regs[9] = BPF_CORE_READ(regs, r9);
	r->regs[10] = BPF_CORE_READ(regs, r10);
	r->regs[11] = BPF_CORE_READ(regs, r11);
	r->regs[12] = BPF_CORE_READ(regs, r12);
	r->regs[13] = BPF_CORE_READ(regs, r13);
	r->regs[14] = BPF_CORE_READ(regs, r14);
	r->regs[15] = BPF_CORE_READ(regs, r15);
	r->regs[16] = ip;

	/* The faulting instruction (a fault leaves ip on it); it may end a
	 * readable page: then byte by byte up to the first unreadable one. */
	r->insn_len = 0;
	if (!bpf_probe_read_user(r->insn, TM_SIG_INSN, (void *)ip)) {
		r->insn_len = TM_SIG_INSN;
	} else {
		for (int i = 0; i < TM_SIG_INSN; i++) {
			if (bpf_probe_read_user(&r->insn[i], 1, (void *)(ip + i)))
				break;
			r->insn_len = i + 1;
		}
	}

	/* glibc's abort message, set just before abort() raised this. */
	r->msg_len = 0;
	r->msg[0] = 0;
	if (sig == 6) {
		abort_at = bpf_map_lookup_elem(&abort_msgs, &tgid);
		if (abort_at && !bpf_probe_read_user(&msgp, sizeof(msgp), (void *)*abort_at) &&
		    msgp)
			/* struct abort_msg_s { unsigned int size; char msg[]; } */
			r->msg_len = bpf_probe_read_user_str(r->msg, sizeof(r->msg),
							     (void *)(msgp + 4));
	}

	/* Return probes under way (the allocator's uretprobe when the signal
	 * comes from inside malloc): their trampolines stand on the stack
	 * where user space unwinds, so it needs the real return addresses. */
	r->nrets = 0;
	{
		struct return_instance *ri = BPF_CORE_READ(task, utask, return_instances);

		for (int i = 0; i < TM_SIG_RETS && ri; i++) {
			r->rets[i][0] = BPF_CORE_READ(ri, stack);
			r->rets[i][1] = BPF_CORE_READ(ri, orig_ret_vaddr);
			r->nrets = i + 1;
			ri = BPF_CORE_READ(ri, next);
		}
	}

	/* The stack may end closer than the full copy: try smaller reads. */
	r->copy_len = 0;
	if (!bpf_probe_read_user(r->copy, TM_SIG_STACK_COPY, (void *)sp))
		r->copy_len = TM_SIG_STACK_COPY;
	else if (!bpf_probe_read_user(r->copy, TM_SIG_STACK_COPY / 4, (void *)sp))
		r->copy_len = TM_SIG_STACK_COPY / 4;
	else if (!bpf_probe_read_user(r->copy, TM_SIG_STACK_COPY / 16, (void *)sp))
		r->copy_len = TM_SIG_STACK_COPY / 16;
	else if (!bpf_probe_read_user(r->copy, 256, (void *)sp))
		r->copy_len = 256;
	bpf_ringbuf_submit(r, BPF_RB_FORCE_WAKEUP);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(tm_fork, struct task_struct *parent, struct task_struct *child)
{
	struct tm_fork_rec *r;
	__u32 ptgid = BPF_CORE_READ(parent, tgid), ctgid = BPF_CORE_READ(child, tgid);

	if (!followed(ptgid))
		return 0;
	if (ctgid != ptgid) {
		struct tm_cfi_proc *tables;
		__u32 one = 1;

		if (!follow)
			goto record;
		/* Followed from its first instruction: the same mappings as
		 * its parent, so the same unwind tables until it execs. */
		if (bpf_map_update_elem(&procs, &ctgid, &one, BPF_ANY))
			goto record;
		tables = bpf_map_lookup_elem(&cfi_procs, &ptgid);
		if (tables)
			bpf_map_update_elem(&cfi_procs, &ctgid, tables, BPF_ANY);
	}
record:
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_lost(TM_LOST_RINGBUF, TM_K_FORK);
		return 0;
	}
	r->h.kind = TM_K_FORK;
	r->h.tid = BPF_CORE_READ(parent, pid);
	r->h.ts = bpf_ktime_get_ns();
	r->child = BPF_CORE_READ(child, pid);
	r->is_thread = ctgid == ptgid;
	bpf_ringbuf_submit(r, wakeup_flags());
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tm_exec, struct task_struct *p, pid_t old_pid,
	     struct linux_binprm *bprm)
{
	struct tm_exec_rec *r;
	__u32 tid;

	if (!is_target(&tid))
		return 0;
	if (BPF_CORE_READ(p, tgid) == targ_tgid) {
		code_exe_lo = BPF_CORE_READ(p, mm, start_code);
		code_exe_hi = BPF_CORE_READ(p, mm, end_code);
	} else {
		/* A child's new image: its parent's tables no longer apply. */
		__u32 tgid = BPF_CORE_READ(p, tgid);

		bpf_map_delete_elem(&cfi_procs, &tgid);
	}
	/* The old image's watched blocks are gone with it. */
	if (watching())
		watch_release(tid, 0, ~0ULL, 0);
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_lost(TM_LOST_RINGBUF, TM_K_EXEC);
		return 0;
	}
	r->h.kind = TM_K_EXEC;
	r->h.tid = tid;
	r->h.ts = bpf_ktime_get_ns();
	bpf_probe_read_kernel_str(r->filename, sizeof(r->filename),
				  BPF_CORE_READ(bprm, filename));
	bpf_ringbuf_submit(r, BPF_RB_FORCE_WAKEUP);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tm_exit, struct task_struct *p)
{
	struct tm_exit_rec *r;
	__u32 tid;

	if (!is_target(&tid))
		return 0;
	/* A thread that dies inside the allocator leaves no return: its
	 * state goes with the task. */
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_lost(TM_LOST_RINGBUF, TM_K_EXIT);
		return 0;
	}
	r->h.kind = TM_K_EXIT;
	r->h.tid = tid;
	r->h.ts = bpf_ktime_get_ns();
	r->exit_code = BPF_CORE_READ(p, exit_code);
	r->group_exit_code = BPF_CORE_READ(p, signal, group_exit_code);
	r->group_dead = BPF_CORE_READ(p, signal, live.counter) == 0;
	/* Its watched blocks are gone with it. */
	if (r->group_dead && watching())
		watch_release(tid, 0, ~0ULL, 0);
	if (r->group_dead && BPF_CORE_READ(p, tgid) != targ_tgid) {
		/* A followed child is gone: its pid may be reused. */
		__u32 tgid = BPF_CORE_READ(p, tgid);

		bpf_map_delete_elem(&procs, &tgid);
	}
	bpf_ringbuf_submit(r, BPF_RB_FORCE_WAKEUP);
	return 0;
}

/*
 * Function probes (--probe): one program per direction for every probed
 * function, told apart by the attach cookie (the probe id; the entry's
 * cookie also carries the mask of string arguments in its high half).
 * Pairing entry with return (recursion, longjmp, missed returns) is done
 * in user space by stack pointer: the tracer keeps no per-call state.
 */
/* Faults the string in if it is not (Linux 6.12+, sleepable programs). */
extern int bpf_copy_from_user_str(void *dst, __u32 dst__sz, const void *unsafe_ptr__ign,
				  __u64 flags) __weak __ksym;

static __always_inline int call_enter(struct pt_regs *ctx, __u64 cookie, bool sleepable)
{
	struct tm_call_rec *r;
	__u32 tid, mask = cookie >> 32, slot = 0;

	if (!is_target(&tid))
		return 0;
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_lost(TM_LOST_RINGBUF, TM_K_CALL);
		return 0;
	}
	r->h.kind = TM_K_CALL;
	r->h.tid = tid;
	r->h.ts = bpf_ktime_get_ns();
	r->probe = (__u32)cookie;
	r->str_bad = 0;
	r->sp = PT_REGS_SP(ctx);
	/* The entry programs run before the kernel hijacks the return
	 * address for the return probe: this is the real one. */
	r->ret_addr = 0;
	bpf_probe_read_user(&r->ret_addr, sizeof(r->ret_addr), (void *)r->sp);
	r->args[0] = PT_REGS_PARM1(ctx);
	r->args[1] = PT_REGS_PARM2(ctx);
	r->args[2] = PT_REGS_PARM3(ctx);
	r->args[3] = PT_REGS_PARM4(ctx);
	r->args[4] = PT_REGS_PARM5(ctx);
	r->args[5] = PT_REGS_PARM6(ctx);
	if (mask) {
		for (int i = 0; i < 6; i++) {
			if (!(mask & (1 << i)) || slot >= TM_CALL_STRS)
				continue;
			char *dst = r->strs + (slot & 1) * TM_CALL_STR_LEN;
			long n;

			/* A string in a page the program has not touched yet (a
			 * literal in .rodata on its first use) cannot be read
			 * without faulting it in: only a sleepable program can. */
			if (sleepable && bpf_ksym_exists(bpf_copy_from_user_str))
				n = bpf_copy_from_user_str(dst, TM_CALL_STR_LEN,
							   (void *)r->args[i], 0);
			else
				n = bpf_probe_read_user_str(dst, TM_CALL_STR_LEN,
							    (void *)r->args[i]);
			if (n < 0) {
				dst[0] = 0;
				r->str_bad |= 1 << slot;
			}
			slot++;
		}
	}
	r->stack = capture_entry_stack(ctx);
	bpf_ringbuf_submit(r, wakeup_flags());
	return 0;
}

static __always_inline int call_exit(struct pt_regs *ctx, __u64 cookie)
{
	struct tm_ret_rec *r;
	__u32 tid;

	if (!is_target(&tid))
		return 0;
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_lost(TM_LOST_RINGBUF, TM_K_RET);
		return 0;
	}
	r->h.kind = TM_K_RET;
	r->h.tid = tid;
	r->h.ts = bpf_ktime_get_ns();
	r->probe = (__u32)cookie;
	r->sp = PT_REGS_SP(ctx);
	r->ret = PT_REGS_RC(ctx);
	bpf_ringbuf_submit(r, wakeup_flags());
	return 0;
}

SEC("uprobe.multi")
int tm_call_multi(struct pt_regs *ctx)
{
	return call_enter(ctx, bpf_get_attach_cookie(ctx), false);
}

/* Probes with string arguments: sleepable, to fault strings in. */
SEC("uprobe.multi.s")
int tm_call_str_multi(struct pt_regs *ctx)
{
	return call_enter(ctx, bpf_get_attach_cookie(ctx), true);
}

SEC("uprobe.s")
int tm_call_str(struct pt_regs *ctx)
{
	return call_enter(ctx, bpf_get_attach_cookie(ctx), true);
}

SEC("uretprobe.multi")
int tm_call_ret_multi(struct pt_regs *ctx)
{
	return call_exit(ctx, bpf_get_attach_cookie(ctx));
}

SEC("uprobe")
int tm_call(struct pt_regs *ctx)
{
	return call_enter(ctx, bpf_get_attach_cookie(ctx), false);
}

SEC("uretprobe")
int tm_call_ret(struct pt_regs *ctx)
{
	return call_exit(ctx, bpf_get_attach_cookie(ctx));
}

/* sched: when each target thread left the CPU, and whether runnable. */
struct offcpu {
	__u64 ts;
	__u64 stack;
	__u32 preempted;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct offcpu);
} offcpu_since SEC(".maps");

SEC("tp_btf/sched_switch")
int BPF_PROG(tm_sched_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next)
{
	__u64 now;

	bool p_on = followed(prev->tgid), n_on = followed(next->tgid);

	if (!p_on && !n_on)
		return 0;
	now = bpf_ktime_get_ns();
	if (p_on) {
		struct offcpu o = { .ts = now, .preempted = preempt };
		__u32 tid = prev->pid;

		/* prev is still current: its user stack says where it blocked
		 * (or was preempted). Kernel threads have none. */
		if (prev->mm)
			o.stack = capture_syscall_stack(ctx, (struct pt_regs *)bpf_task_pt_regs(prev));
		bpf_map_update_elem(&offcpu_since, &tid, &o, BPF_ANY);
	}
	if (n_on) {
		__u32 tid = next->pid;
		struct offcpu *o = bpf_map_lookup_elem(&offcpu_since, &tid);
		struct tm_offcpu_rec *r;

		if (!o)
			return 0;
		r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
		if (!r) {
			count_lost(TM_LOST_RINGBUF, TM_K_OFFCPU);
		} else {
			r->h.kind = TM_K_OFFCPU;
			r->h.tid = tid;
			r->h.ts = now;
			r->dur = now - o->ts;
			r->stack = o->stack;
			r->preempted = o->preempted;
			bpf_ringbuf_submit(r, wakeup_flags());
		}
		bpf_map_delete_elem(&offcpu_since, &tid);
	}
	return 0;
}
