/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The few kernel types tm-tui reads, declared with preserve_access_index so
 * CO-RE relocates every field against the running kernel's BTF. A full
 * `bpftool btf dump` is 2.8 MB; this is all the tracer needs.
 */
#ifndef __VMLINUX_H__
#define __VMLINUX_H__

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u8 u8;
typedef __s16 s16;
typedef __u16 u16;
typedef __s32 s32;
typedef __u32 u32;
typedef __s64 s64;
typedef __u64 u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef int pid_t;
typedef _Bool bool;
enum { false = 0, true = 1 };

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
	BPF_MAP_TYPE_TASK_STORAGE = 29,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_F_NO_PREALLOC = 1,
	BPF_LOCAL_STORAGE_GET_F_CREATE = 1,
	BPF_F_USER_STACK = 256,
	BPF_F_MMAPABLE = 1024,
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
	BPF_RB_AVAIL_DATA = 0,
};

struct pt_regs {
	unsigned long r15;
	unsigned long r14;
	unsigned long r13;
	unsigned long r12;
	unsigned long bp;
	unsigned long bx;
	unsigned long r11;
	unsigned long r10;
	unsigned long r9;
	unsigned long r8;
	unsigned long ax;
	unsigned long cx;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
	unsigned long ip;
	unsigned long cs;
	unsigned long flags;
	unsigned long sp;
	unsigned long ss;
} __attribute__((preserve_access_index));

typedef struct {
	int counter;
} atomic_t;

/* A perf event program's context (bpf_user_pt_regs_t is pt_regs on x86). */
struct bpf_perf_event_data {
	struct pt_regs regs;
	__u64 sample_period;
	__u64 addr;
};

struct signal_struct {
	atomic_t live;
	int group_exit_code;
} __attribute__((preserve_access_index));

struct mm_struct {
	unsigned long start_code;
	unsigned long end_code;
} __attribute__((preserve_access_index));

struct qstr {
	const unsigned char *name;
} __attribute__((preserve_access_index));

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
} __attribute__((preserve_access_index));

struct path {
	struct dentry *dentry;
} __attribute__((preserve_access_index));

struct file {
	struct path f_path;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct return_instance {
	unsigned long stack;
	unsigned long orig_ret_vaddr;
	struct return_instance *next;
} __attribute__((preserve_access_index));
struct uprobe_task {
	struct return_instance *return_instances;
} __attribute__((preserve_access_index));
typedef struct {
	unsigned long sig[1];
} sigset_t;

struct task_struct {
	pid_t pid;
	pid_t tgid;
	int exit_code;
	struct signal_struct *signal;
	struct task_struct *real_parent;
	struct mm_struct *mm;
	struct files_struct *files;
	struct uprobe_task *utask;
	sigset_t blocked;
} __attribute__((preserve_access_index));

struct __sifields_sigfault {
	void *_addr;
} __attribute__((preserve_access_index));

struct __sifields_kill {
	int _pid;
	unsigned int _uid;
} __attribute__((preserve_access_index));

union __sifields {
	struct __sifields_kill _kill;
	struct __sifields_sigfault _sigfault;
} __attribute__((preserve_access_index));

struct kernel_siginfo {
	struct {
		int si_signo;
		int si_errno;
		int si_code;
		union __sifields _sifields;
	};
} __attribute__((preserve_access_index));

typedef void __signalfn_t(int);
typedef __signalfn_t *__sighandler_t;

struct sigaction {
	__sighandler_t sa_handler;
} __attribute__((preserve_access_index));

struct k_sigaction {
	struct sigaction sa;
} __attribute__((preserve_access_index));

struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));

#endif /* __VMLINUX_H__ */
