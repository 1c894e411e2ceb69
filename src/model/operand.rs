//! The memory operand of a faulting instruction, decoded from its bytes
//! and the registers saved at the signal: for a general-protection fault
//! (SIGSEGV, SI_KERNEL) the kernel gives no address, but the instruction
//! and its registers say what was tried.

use iced_x86::{Decoder, DecoderOptions, Instruction, OpKind, Register};

/// x86-64 register names in the order the tracer saves them.
pub const REG_NAMES: [&str; 17] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip",
];

/// What the faulting instruction tried to access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operand {
    /// `mov [rax+0x8]`: the mnemonic and the memory operand.
    pub text: String,
    /// The address the operand computes to; `None` when it depends on
    /// something not saved (an fs/gs base, a vector index).
    pub addr: Option<u64>,
    /// The base (else index) register and its value: where the bad value
    /// most likely came from.
    pub reg: Option<(&'static str, u64)>,
}

/// Index into the saved registers of a general register of any width.
fn slot(r: Register) -> Option<usize> {
    let full = r.full_register();
    let i = match full {
        Register::RAX => 0,
        Register::RBX => 1,
        Register::RCX => 2,
        Register::RDX => 3,
        Register::RSI => 4,
        Register::RDI => 5,
        Register::RBP => 6,
        Register::RSP => 7,
        Register::R8 => 8,
        Register::R9 => 9,
        Register::R10 => 10,
        Register::R11 => 11,
        Register::R12 => 12,
        Register::R13 => 13,
        Register::R14 => 14,
        Register::R15 => 15,
        Register::RIP => 16,
        _ => return None,
    };
    Some(i)
}

fn value(regs: &[u64], r: Register) -> Option<u64> {
    let v = *regs.get(slot(r)?)?;
    Some(match r.size() {
        8 => v,
        4 => v & 0xffff_ffff,
        2 => v & 0xffff,
        1 => v & 0xff,
        _ => return None,
    })
}

fn reg_name(r: Register) -> &'static str {
    slot(r).map_or("?", |i| REG_NAMES[i])
}

/// Decodes the instruction at `ip` (its bytes `insn`, registers `regs` in
/// [`REG_NAMES`] order) and computes its memory operand. `None` when the
/// bytes do not decode or the instruction has no explicit memory operand.
pub fn decode(ip: u64, insn: &[u8], regs: &[u64]) -> Option<Operand> {
    if insn.is_empty() || regs.len() < REG_NAMES.len() {
        return None;
    }
    let mut dec = Decoder::with_ip(64, insn, ip, DecoderOptions::NONE);
    let ins: Instruction = dec.decode();
    if ins.is_invalid() {
        return None;
    }
    let op = (0..ins.op_count()).find(|&i| {
        matches!(
            ins.op_kind(i),
            OpKind::Memory
                | OpKind::MemorySegRSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegRDI
                | OpKind::MemorySegEDI
                | OpKind::MemoryESRDI
                | OpKind::MemoryESEDI
        )
    })?;
    let addr = ins.virtual_address(op, 0, |r, _, _| match r {
        Register::ES | Register::CS | Register::SS | Register::DS => Some(0),
        // The thread pointer is not saved: an fs/gs operand is unknown.
        Register::FS | Register::GS => None,
        // Relative to the next instruction.
        Register::RIP => Some(ins.next_ip()),
        Register::EIP => Some(ins.next_ip() & 0xffff_ffff),
        r => value(regs, r),
    });
    let mnemonic = format!("{:?}", ins.mnemonic()).to_lowercase();
    let (text, reg) = match ins.op_kind(op) {
        OpKind::Memory => {
            let (base, index) = (ins.memory_base(), ins.memory_index());
            let mut parts = Vec::new();
            if base == Register::RIP || base == Register::EIP {
                parts.push("rip".to_string());
            } else if base != Register::None {
                parts.push(reg_name(base).to_string());
            }
            if index != Register::None {
                let s = ins.memory_index_scale();
                parts.push(if s > 1 {
                    format!("{}*{s}", reg_name(index))
                } else {
                    reg_name(index).to_string()
                });
            }
            let disp = ins.memory_displacement64() as i64;
            // iced folds rip into a rip-relative displacement.
            let disp = if base == Register::RIP {
                disp.wrapping_sub(ins.next_ip() as i64)
            } else {
                disp
            };
            let mut t = parts.join("+");
            if disp != 0 || t.is_empty() {
                if disp < 0 && !t.is_empty() {
                    t.push_str(&format!("-{:#x}", disp.unsigned_abs()));
                } else {
                    if !t.is_empty() {
                        t.push('+');
                    }
                    t.push_str(&format!("{disp:#x}"));
                }
            }
            let seg = match ins.segment_prefix() {
                Register::FS => "fs:",
                Register::GS => "gs:",
                _ => "",
            };
            let reg = [base, index]
                .into_iter()
                .filter(|r| *r != Register::None && *r != Register::RIP && *r != Register::EIP)
                .find_map(|r| Some((reg_name(r), value(regs, r)?)));
            (format!("{mnemonic} {seg}[{t}]"), reg)
        }
        OpKind::MemorySegRSI | OpKind::MemorySegESI => (
            format!("{mnemonic} [rsi]"),
            value(regs, Register::RSI).map(|v| ("rsi", v)),
        ),
        _ => (
            format!("{mnemonic} [rdi]"),
            value(regs, Register::RDI).map(|v| ("rdi", v)),
        ),
    };
    Some(Operand { text, addr, reg })
}

/// The memory access of the instruction that ends at `ip`, from the code
/// bytes just before it (`code` ends at `ip`) and the registers after it:
/// (address, bytes). A data breakpoint traps after the instruction; x86
/// code does not decode backwards, so each start that decodes to one
/// instruction ending exactly at `ip` and touching `watched` is taken.
/// `None` when none does (or the registers it used were overwritten).
/// The third value is the base register's value, when there is one.
pub fn access_before(
    ip: u64,
    code: &[u8],
    regs: &[u64],
    watched: u64,
) -> Option<(u64, u64, Option<u64>)> {
    if regs.len() < REG_NAMES.len() {
        return None;
    }
    // The longest decode first: a shorter one is more often a tail of
    // the real instruction.
    for k in (1..=code.len()).rev() {
        let bytes = &code[code.len() - k..];
        let start = ip - k as u64;
        let mut dec = Decoder::with_ip(64, bytes, start, DecoderOptions::NONE);
        let ins: Instruction = dec.decode();
        if ins.is_invalid() || ins.len() != k {
            continue;
        }
        let Some(op) = (0..ins.op_count()).find(|&i| ins.op_kind(i) == OpKind::Memory) else {
            continue;
        };
        let Some(addr) = ins.virtual_address(op, 0, |r, _, _| match r {
            Register::ES | Register::CS | Register::SS | Register::DS => Some(0),
            Register::FS | Register::GS => None,
            Register::RIP => Some(ins.next_ip()),
            r => value(regs, r),
        }) else {
            continue;
        };
        let size = ins.memory_size().size() as u64;
        if size > 0 && addr <= watched && watched < addr + size {
            let base = ins.memory_base();
            // A load into its own base register (`mov (%rax),%rax`) left
            // no trace of the base: unknown.
            let clobbered = ins.op_count() > 0
                && ins.op_kind(0) == OpKind::Register
                && ins.op_register(0).full_register() == base.full_register();
            let base = (base != Register::None && base != Register::RIP && !clobbered)
                .then(|| value(regs, base))
                .flatten();
            return Some((addr, size, base));
        }
    }
    None
}

/// x86-64 (4-level paging) addresses have bits 63..47 all equal; others
/// fault with a general protection, which the kernel reports without an
/// address.
pub fn non_canonical(a: u64) -> bool {
    let top = a >> 47;
    top != 0 && top != 0x1_ffff
}

/// The value's bytes in memory order as text, when every byte is
/// printable ASCII (or a trailing NUL): a pointer overwritten by a string.
pub fn as_text(v: u64) -> Option<String> {
    let bytes = v.to_le_bytes();
    let n = bytes.iter().position(|&b| b == 0).unwrap_or(8);
    if n < 4 || bytes[n..].iter().any(|&b| b != 0) {
        return None;
    }
    let t = &bytes[..n];
    t.iter()
        .all(|b| (0x20..0x7f).contains(b))
        .then(|| String::from_utf8_lossy(t).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(set: &[(usize, u64)]) -> Vec<u64> {
        let mut r = vec![0u64; 17];
        for &(i, v) in set {
            r[i] = v;
        }
        r
    }

    #[test]
    fn load_through_base_plus_displacement() {
        // mov rax, [rax+0x8]
        let r = regs(&[(0, 0x4141_4141_4141_4141)]);
        let op = decode(0x1000, &[0x48, 0x8b, 0x40, 0x08], &r).expect("decodes");
        assert_eq!(op.text, "mov [rax+0x8]");
        assert_eq!(op.addr, Some(0x4141_4141_4141_4149));
        assert_eq!(op.reg, Some(("rax", 0x4141_4141_4141_4141)));
    }

    #[test]
    fn base_index_scale_and_negative_displacement() {
        // add [rdi+r12*8-0x5aa5edcc], esi
        let r = regs(&[(5, 0x1000_0000), (12, 0x4_0000_0000)]);
        let op = decode(0, b"\x42\x01\xB4\xE7\x34\x12\x5A\xA5", &r).expect("decodes");
        assert_eq!(op.text, "add [rdi+r12*8-0x5aa5edcc]");
        assert_eq!(op.addr, Some(0x0000_001F_B55A_1234));
        assert_eq!(op.reg, Some(("rdi", 0x1000_0000)));
    }

    #[test]
    fn store_of_a_32_bit_value_and_string_moves() {
        // mov dword [rbx], 0x2a
        let r = regs(&[(1, 0x7000)]);
        let op = decode(0, &[0xc7, 0x03, 0x2a, 0, 0, 0], &r).expect("decodes");
        assert_eq!(op.text, "mov [rbx]");
        assert_eq!(op.addr, Some(0x7000));
        // rep movsb: the destination is its first memory operand
        let r = regs(&[(4, 0x10), (5, 0x20)]);
        let op = decode(0, &[0xf3, 0xa4], &r).expect("decodes");
        assert_eq!(op.text, "movsb [rdi]");
        assert_eq!(op.addr, Some(0x20));
        assert_eq!(op.reg, Some(("rdi", 0x20)));
    }

    #[test]
    fn fs_relative_address_is_unknown_and_no_memory_is_none() {
        // mov rax, fs:[0x28]
        let op = decode(
            0,
            &[0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0],
            &regs(&[]),
        )
        .expect("decodes");
        assert_eq!(op.addr, None);
        assert_eq!(op.text, "mov fs:[0x28]");
        // mov rax, rbx: no memory operand
        assert_eq!(decode(0, &[0x48, 0x89, 0xd8], &regs(&[])), None);
        // garbage and short inputs never panic
        assert_eq!(decode(0, &[0x0f], &regs(&[])), None);
        assert_eq!(decode(0, &[0x48, 0x8b, 0x40], &regs(&[])), None);
        assert_eq!(decode(0, &[0x48, 0x8b, 0x40, 0x08], &[1, 2]), None);
    }

    #[test]
    fn canonical_and_text() {
        assert!(non_canonical(0x4141_4141_4141_4141));
        assert!(!non_canonical(0x7fff_ffff_f000));
        assert!(!non_canonical(0xffff_8000_0000_0000));
        assert!(non_canonical(0x0000_8000_0000_0000));
        assert_eq!(as_text(0x4141_4141_4141_4141).as_deref(), Some("AAAAAAAA"));
        assert_eq!(
            as_text(u64::from_le_bytes(*b"overflow")).as_deref(),
            Some("overflow")
        );
        assert_eq!(as_text(0x0000_5555_5555_1234), None);
        assert_eq!(as_text(0), None);
    }
}
