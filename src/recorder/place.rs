//! Where to probe a function so the kernel need not single-step: the
//! first instruction on the path every call takes that the kernel's uprobe
//! code emulates (a push of a register, a relative jump, call or
//! conditional jump, a one-byte nop), reached with the stack pointer as at
//! entry and the arguments still in registers. Anything else the kernel
//! copies out of line and single-steps: ~10 µs a hit here, against ~0.5 µs
//! for an emulated one (jemalloc's malloc begins `cmp $0x1000,%rdi`, its
//! free `mov %rdi,%rax`).
//!
//! The instructions before the probe still run; moving the probe is sound
//! when (1) they cannot branch, so every call reaches it once, (2) nothing
//! in the function jumps back to it or into them, (3) they leave the stack
//! pointer alone, so `[rsp]` is still the return address (the uretprobe
//! goes at the same place) and the caller is found by the entry rule, and
//! (4) each argument is still in a register: its own, or a copy made by a
//! `mov` between registers, and (5) rbp is as at entry (a frame-pointer
//! walk from the probe starts with it). Branches from a function's
//! `.cold` part are not looked at.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess,
    Register,
};

/// The System V argument registers, and the others an argument may be
/// copied to, in the order of the tracer's register numbers (`reg_arg` in
/// `bpf/tracer.bpf.c` lists them in the same order).
pub const REGS: [Register; 15] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R9,
    Register::RAX,
    Register::RBX,
    Register::RBP,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
    Register::R15,
];

/// Instructions looked at past the entry before giving up.
const MAX_INSNS: usize = 24;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Bytes from the entry to the probed instruction.
    pub skipped: u64,
    /// Where each of the first three arguments is at the probe: an index
    /// into [`REGS`].
    pub args: [u8; 3],
    /// Why the probe stays on a single-stepped instruction, if it does.
    pub stepped: Option<String>,
}

impl Placement {
    pub fn entry(why: Option<String>) -> Placement {
        Placement {
            skipped: 0,
            args: [0, 1, 2],
            stepped: why,
        }
    }
}

/// Whether the kernel emulates `bytes`' first instruction instead of
/// single-stepping it (arch/x86/kernel/uprobes.c: branch_setup_xol_ops
/// and push_setup_xol_ops; prefixes other than none send it out of line).
fn emulated(bytes: &[u8]) -> bool {
    matches!(
        bytes,
        [0x50..=0x57, ..]
            | [0x41, 0x50..=0x57, ..]
            | [0x70..=0x7f, ..]
            | [0x0f, 0x80..=0x8f, ..]
            | [0xe8 | 0xe9 | 0xeb, ..]
            | [0x90, ..]
    )
}

/// The placement for a function whose machine code (from its entry) is
/// `code`, at address `ip`, taking `nargs` arguments (at most 3 are
/// tracked). `body` is the whole function (`None` when its size is
/// unknown: then the probe stays at the entry); any branch in it to the
/// skipped instructions or the probe keeps the probe at the entry.
pub fn place(code: &[u8], ip: u64, nargs: usize, body: Option<&[u8]>) -> Placement {
    let nargs = nargs.min(3);
    // For each argument, the registers that hold it (bit i: REGS[i]).
    let mut holds: [u16; 3] = [1, 2, 4];
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut insn = Instruction::default();
    for _ in 0..MAX_INSNS {
        if !decoder.can_decode() {
            break;
        }
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            break;
        }
        let at = insn.ip() - ip;
        let bytes = &code[at as usize..at as usize + insn.len()];
        if emulated(bytes) {
            if at == 0 {
                return Placement::entry(None);
            }
            // Without the function's extent there is no knowing what
            // jumps back to the probe: it stays at the entry.
            let Some(b) = body else {
                return Placement::entry(Some("its size is unknown".into()));
            };
            if branches_into(b, ip, ip + 1..=insn.ip()) {
                return Placement::entry(Some(
                    "a branch inside the function leads past its entry".into(),
                ));
            }
            let mut args = [0u8, 1, 2];
            for (i, a) in args.iter_mut().enumerate().take(nargs) {
                // The argument's own register when it still holds it,
                // else the first copy.
                let h = holds[i];
                *a = if h & (1 << i) != 0 {
                    i as u8
                } else {
                    h.trailing_zeros() as u8
                };
            }
            return Placement {
                skipped: at,
                args,
                stepped: None,
            };
        }
        if insn.flow_control() != FlowControl::Next {
            return Placement::entry(Some(format!(
                "it branches before any instruction the kernel emulates ({:?} at +{at})",
                insn.mnemonic()
            )));
        }
        // A copy between 64-bit registers carries what the source held.
        let copy_from = (insn.code() == Code::Mov_r64_rm64 || insn.code() == Code::Mov_rm64_r64)
            && insn.op0_kind() == iced_x86::OpKind::Register
            && insn.op1_kind() == iced_x86::OpKind::Register;
        let src = copy_from.then(|| insn.op1_register());
        for used in info.info(&insn).used_registers() {
            let written = matches!(
                used.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            );
            if !written {
                continue;
            }
            let r = used.register().full_register();
            // rsp: [rsp] must still be the return address; rbp: the walk
            // from the probe takes it for the caller's frame pointer.
            if r == Register::RSP || r == Register::RBP {
                return Placement::entry(Some(format!(
                    "it changes {r:?} before any instruction the kernel emulates (+{at})"
                )));
            }
            let Some(bit) = REGS.iter().position(|&x| x == r) else {
                continue;
            };
            let src_bit = src.and_then(|s| REGS.iter().position(|&x| x == s.full_register()));
            for h in holds.iter_mut() {
                let had_src = src_bit.is_some_and(|s| *h & (1 << s) != 0);
                *h &= !(1 << bit);
                if had_src {
                    *h |= 1 << bit;
                }
            }
        }
        if holds[..nargs].contains(&0) {
            return Placement::entry(Some(format!(
                "it overwrites an argument before any instruction the kernel emulates (+{at})"
            )));
        }
    }
    Placement::entry(Some(
        "no instruction the kernel emulates near its entry".into(),
    ))
}

/// Whether any branch in `body` (at `ip`) targets an address in `range`.
fn branches_into(body: &[u8], ip: u64, range: std::ops::RangeInclusive<u64>) -> bool {
    let mut decoder = Decoder::with_ip(64, body, ip, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        if matches!(
            insn.flow_control(),
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch | FlowControl::Call
        ) && range.contains(&insn.near_branch_target())
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of the allocators Debian 12 ships (objdump of each).
    const GLIBC_FREE: &[u8] = &[
        0x48, 0x85, 0xff, // test %rdi,%rdi
        0x0f, 0x84, 0xbf, 0x00, 0x00, 0x00, // je +0xbf
        0x55, // push %rbp
    ];
    const JEMALLOC_MALLOC: &[u8] = &[
        0x48, 0x81, 0xff, 0x00, 0x10, 0x00, 0x00, // cmp $0x1000,%rdi
        0x0f, 0x87, 0x93, 0x00, 0x00, 0x00, // ja
        0x48, 0x8d, 0x47, 0x07, // lea 0x7(%rdi),%rax
    ];
    const JEMALLOC_FREE: &[u8] = &[
        0x48, 0x89, 0xf8, // mov %rdi,%rax
        0x48, 0x8b, 0x15, 0x0e, 0x53, 0x0a, 0x00, // mov 0xa530e(%rip),%rdx
        0x48, 0x89, 0xf9, // mov %rdi,%rcx
        0x48, 0xc1, 0xe8, 0x1a, // shr $0x1a,%rax
        0x48, 0x81, 0xe1, 0x00, 0x00, 0x00, 0xc0, // and $-0x40000000,%rcx
        0x25, 0xf0, 0x00, 0x00, 0x00, // and $0xf0,%eax
        0x64, 0x48, 0x03, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00, // add %fs:0,%rax
        0x48, 0x01, 0xd0, // add %rdx,%rax
        0x48, 0x3b, 0x88, 0xb0, 0x01, 0x00, 0x00, // cmp 0x1b0(%rax),%rcx
        0x0f, 0x85, 0x8a, 0x00, 0x00, 0x00, // jne
    ];
    const MIMALLOC_MALLOC: &[u8] = &[
        0x48, 0x8b, 0x05, 0x49, 0xb4, 0x00, 0x00, // mov 0xb449(%rip),%rax
        0x48, 0x89, 0xfe, // mov %rdi,%rsi
        0x64, 0x48, 0x8b, 0x38, // mov %fs:(%rax),%rdi
        0x48, 0x81, 0xfe, 0x00, 0x04, 0x00, 0x00, // cmp $0x400,%rsi
        0x77, 0x10, // ja
    ];
    const TCMALLOC_CALLOC: &[u8] = &[
        0x41, 0x55, // push %r13
        0x48, 0x89, 0xf8, // mov %rdi,%rax
    ];

    #[test]
    fn glibc_free_past_its_null_test() {
        let p = place(GLIBC_FREE, 0x1000, 1, Some(GLIBC_FREE));
        assert_eq!(p.skipped, 3, "{p:?}");
        assert_eq!(p.args[0], 0);
        assert!(p.stepped.is_none());
    }

    #[test]
    fn jemalloc_malloc_at_its_first_jump() {
        let p = place(JEMALLOC_MALLOC, 0x1000, 1, Some(JEMALLOC_MALLOC));
        assert_eq!((p.skipped, p.args[0]), (7, 0), "{p:?}");
    }

    #[test]
    fn jemalloc_free_past_ten_plain_instructions() {
        let p = place(JEMALLOC_FREE, 0x1000, 1, Some(JEMALLOC_FREE));
        assert_eq!((p.skipped, p.args[0]), (48, 0), "{p:?}");
    }

    #[test]
    fn an_argument_moved_to_another_register_is_read_there() {
        let p = place(MIMALLOC_MALLOC, 0x1000, 1, Some(MIMALLOC_MALLOC));
        // rdi was overwritten after its copy to rsi.
        assert_eq!((p.skipped, p.args[0]), (21, 1), "{p:?}");
    }

    #[test]
    fn an_emulated_entry_stays() {
        assert_eq!(
            place(TCMALLOC_CALLOC, 0x1000, 2, None),
            Placement::entry(None)
        );
    }

    #[test]
    fn an_overwritten_argument_keeps_the_entry_and_says_why() {
        // mov $0,%edi; je
        let p = place(&[0xbf, 0, 0, 0, 0, 0x74, 0x02], 0x1000, 1, None);
        assert_eq!(p.skipped, 0);
        assert!(p
            .stepped
            .is_some_and(|w| w.contains("overwrites an argument")));
    }

    #[test]
    fn a_stack_pointer_change_keeps_the_entry() {
        // sub $8,%rsp; je
        let p = place(&[0x48, 0x83, 0xec, 0x08, 0x74, 0x02], 0x1000, 1, None);
        assert_eq!(p.skipped, 0);
        assert!(p.stepped.is_some_and(|w| w.contains("RSP")));
    }

    #[test]
    fn a_frame_pointer_change_or_an_unknown_size_keeps_the_entry() {
        // mov %rsp,%rbp; je
        let code = [0x48, 0x89, 0xe5, 0x74, 0x02];
        let p = place(&code, 0x1000, 1, Some(&code));
        assert!(p.stepped.is_some_and(|w| w.contains("RBP")));
        // test %rdi,%rdi; je: fine, but not without the body.
        let p = place(&GLIBC_FREE[..9], 0x1000, 1, None);
        assert!(p.stepped.is_some_and(|w| w.contains("size is unknown")));
    }

    #[test]
    fn a_branch_back_to_the_probe_keeps_the_entry() {
        // test %rdi,%rdi; je +2; ret; ret; then a jmp back to the je at +3.
        let body = [0x48, 0x85, 0xff, 0x74, 0x02, 0xc3, 0xc3, 0xeb, 0xfa];
        let p = place(&body, 0x1000, 1, Some(&body));
        assert_eq!(p.skipped, 0, "{p:?}");
        assert!(p.stepped.is_some_and(|w| w.contains("branch inside")));
        // Without the jump back, the je is the place.
        assert_eq!(place(&body[..7], 0x1000, 1, Some(&body[..7])).skipped, 3);
    }

    #[test]
    fn garbage_is_not_a_panic() {
        for seed in 0..2000u64 {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let code: Vec<u8> = (0..40)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let p = place(&code, 0x1000, 3, Some(&code));
            assert!(p.skipped < 40);
        }
    }
}
