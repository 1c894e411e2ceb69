//! Offline x86-64 stack unwinding of a dead thread from a copy of its stack:
//! DWARF CFI from the modules' `.eh_frame`, with a frame-pointer fallback.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, EhFrameOffset, EndianSlice, LittleEndian,
    Location, Register, RegisterRule, UnitOffset, UnwindContext, UnwindExpression, UnwindSection,
    UnwindTableRow, Value,
};
use object::elf::{PT_GNU_EH_FRAME, PT_LOAD};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Architecture, Endianness, Object, ObjectSection, ReadCache, ReadRef};

use crate::recorder::maps::{self, MapEntry};
use crate::util::is_uretprobe_trampoline;

/// The registers captured when the thread stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

// DWARF register numbers of the x86-64 psABI.
const RBP: usize = 6;
const RSP: usize = 7;
/// The return-address column, standing in for rip.
const RA: usize = 16;
const NREGS: usize = RA + 1;
/// rbx, rbp, r12-r15: the only registers a call preserves, so the only ones
/// whose value carries over to the caller when the CFI does not mention them.
const CALLEE_SAVED: [usize; 6] = [3, 6, 12, 13, 14, 15];
/// Bound on DWARF expression operations, so that hostile or corrupt CFI
/// (a backwards `DW_OP_skip`) cannot loop forever.
const MAX_EXPR_OPS: u32 = 256;

/// What is known of one frame's registers; `None` is "unknown".
type RegFile = [Option<u64>; NREGS];

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// The thread's stack as copied at capture time: the only memory there is.
struct Stack<'a> {
    base: u64,
    data: &'a [u8],
}

impl Stack<'_> {
    fn read(&self, addr: u64, size: u8) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let bytes = self.data.get(off..off.checked_add(usize::from(size))?)?;
        if bytes.len() > 8 {
            return None;
        }
        let mut word = [0u8; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        Some(u64::from_le_bytes(word))
    }

    fn read_u64(&self, addr: u64) -> Option<u64> {
        self.read(addr, 8)
    }
}

/// A PT_LOAD program header: how file offsets map to ELF virtual addresses.
struct Segment {
    offset: u64,
    filesz: u64,
    vaddr: u64,
}

/// The unwind information of one ELF file, copied out of it so that the
/// file need not stay open or mapped.
struct Module {
    segments: Vec<Segment>,
    eh_frame: Vec<u8>,
    eh_frame_addr: u64,
    eh_frame_hdr_addr: u64,
    text_addr: u64,
    /// (first address covered, offset of the FDE in `.eh_frame`), sorted by
    /// address: taken from the `.eh_frame_hdr` search table when there is a
    /// usable one, else built by walking `.eh_frame` once.
    index: Vec<(u64, usize)>,
}

impl Module {
    fn load(path: &Path) -> Option<Module> {
        // Read through a cache rather than the whole file: the unwind
        // sections are a small part of a large binary.
        let cache = ReadCache::new(File::open(path).ok()?);
        let elf = ElfFile64::<Endianness, _>::parse(&cache).ok()?;
        if elf.architecture() != Architecture::X86_64 || !elf.is_little_endian() {
            return None;
        }
        let endian = elf.endian();
        let data = elf.data();
        let segments: Vec<Segment> = elf
            .elf_program_headers()
            .iter()
            .filter(|ph| ph.p_type(endian) == PT_LOAD)
            .map(|ph| Segment {
                offset: ph.p_offset(endian),
                filesz: ph.p_filesz(endian),
                vaddr: ph.p_vaddr(endian),
            })
            .collect();

        // The program header finds `.eh_frame_hdr` even in files whose
        // section headers were stripped.
        let hdr = match elf.section_by_name(".eh_frame_hdr") {
            Some(s) => s.data().ok().map(|d| (d.to_vec(), s.address())),
            None => elf
                .elf_program_headers()
                .iter()
                .find(|ph| ph.p_type(endian) == PT_GNU_EH_FRAME)
                .and_then(|ph| {
                    let d = ph.data(endian, data).ok()?;
                    Some((d.to_vec(), ph.p_vaddr(endian)))
                }),
        };
        let text_addr = elf.section_by_name(".text").map_or(0, |s| s.address());
        let (hdr_data, hdr_addr) = hdr.unwrap_or_default();
        let mut bases = BaseAddresses::default()
            .set_eh_frame_hdr(hdr_addr)
            .set_text(text_addr);

        let hdr_parsed = EhFrameHdr::new(&hdr_data, LittleEndian)
            .parse(&bases, 8)
            .ok();
        let (eh_frame, eh_frame_addr) = match elf.section_by_name(".eh_frame") {
            Some(s) => (s.data().ok()?.to_vec(), s.address()),
            None => {
                // Without section headers the extent of `.eh_frame` is
                // unknown: take from where the header points to the end of
                // its segment; parsing stops at the zero terminator.
                let addr = hdr_parsed.as_ref()?.eh_frame_ptr().direct().ok()?;
                let seg = segments
                    .iter()
                    .find(|s| s.vaddr <= addr && addr - s.vaddr < s.filesz)?;
                let off = seg.offset.checked_add(addr - seg.vaddr)?;
                let len = seg.filesz - (addr - seg.vaddr);
                (data.read_bytes_at(off, len).ok()?.to_vec(), addr)
            }
        };
        bases = bases.set_eh_frame(eh_frame_addr);

        let mut module = Module {
            segments,
            eh_frame,
            eh_frame_addr,
            eh_frame_hdr_addr: hdr_addr,
            text_addr,
            index: Vec::new(),
        };
        let from_hdr = hdr_parsed.and_then(|h| module.index_from_hdr(&h, &bases));
        module.index = match from_hdr {
            Some(index) => index,
            None => module.index_from_eh_frame(&bases),
        };
        Some(module)
    }

    fn bases(&self) -> BaseAddresses {
        BaseAddresses::default()
            .set_eh_frame_hdr(self.eh_frame_hdr_addr)
            .set_eh_frame(self.eh_frame_addr)
            .set_text(self.text_addr)
    }

    fn eh_frame(&self) -> EhFrame<Slice<'_>> {
        let mut eh_frame = EhFrame::new(&self.eh_frame, LittleEndian);
        eh_frame.set_address_size(8);
        eh_frame
    }

    /// The search table of `.eh_frame_hdr`, checked entry by entry: gimli's
    /// own lookup trusts the table, and a table pointing outside our copy of
    /// `.eh_frame` would send it astray.
    fn index_from_hdr(
        &self,
        hdr: &gimli::ParsedEhFrameHdr<Slice<'_>>,
        bases: &BaseAddresses,
    ) -> Option<Vec<(u64, usize)>> {
        if hdr.eh_frame_ptr().direct().ok()? != self.eh_frame_addr {
            return None;
        }
        let table = hdr.table()?;
        let mut index = Vec::new();
        for entry in table.iter(bases) {
            let (start, fde) = entry.ok()?;
            let start = start.direct().ok()?;
            let off = fde.direct().ok()?.checked_sub(self.eh_frame_addr)?;
            let off = usize::try_from(off).ok()?;
            if off >= self.eh_frame.len() || index.last().is_some_and(|&(s, _)| s > start) {
                return None;
            }
            index.push((start, off));
        }
        Some(index)
    }

    fn index_from_eh_frame(&self, bases: &BaseAddresses) -> Vec<(u64, usize)> {
        let eh_frame = self.eh_frame();
        let mut index = Vec::new();
        let mut entries = eh_frame.entries(bases);
        // A parse error ends the walk: entries have no other way to resync.
        while let Ok(Some(entry)) = entries.next() {
            if let gimli::CieOrFde::Fde(partial) = entry {
                if let Ok(fde) = partial.parse(EhFrame::cie_from_offset) {
                    index.push((fde.initial_address(), fde.offset()));
                }
            }
        }
        index.sort_unstable();
        index
    }

    /// ELF virtual address of a file offset, via the PT_LOAD containing it.
    fn vaddr(&self, file_off: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| s.offset <= file_off && file_off - s.offset < s.filesz)
            .and_then(|s| s.vaddr.checked_add(file_off - s.offset))
    }

    /// Apply the CFI row covering `vaddr` to `regs`.
    fn step(
        &self,
        ctx: &mut UnwindContext<usize>,
        vaddr: u64,
        regs: &RegFile,
        stack: &Stack,
    ) -> Result<Caller, Miss> {
        let i = self.index.partition_point(|&(start, _)| start <= vaddr);
        let Some(&(_, off)) = i.checked_sub(1).and_then(|i| self.index.get(i)) else {
            return Err(Miss::NoFde);
        };
        let eh_frame = self.eh_frame();
        let bases = self.bases();
        let fde =
            match eh_frame.fde_from_offset(&bases, EhFrameOffset(off), EhFrame::cie_from_offset) {
                Ok(fde) if fde.contains(vaddr) => fde,
                _ => return Err(Miss::NoFde),
            };
        let Ok(row) = fde.unwind_info_for_address(&eh_frame, &bases, ctx, vaddr) else {
            return Err(Miss::Stuck);
        };
        let eval = Eval {
            eh_frame: &eh_frame,
            encoding: fde.cie().encoding(),
            regs,
            stack,
        };
        let regs = eval.caller(row).ok_or(Miss::Stuck)?;
        Ok(Caller {
            regs,
            exact_pc: fde.is_signal_trampoline(),
        })
    }
}

/// Why a module's CFI gave no caller.
enum Miss {
    /// No FDE covers the pc.
    NoFde,
    /// There is an FDE, but it cannot be followed with what the copy holds.
    Stuck,
}

/// One step up the stack.
struct Caller {
    regs: RegFile,
    /// Whether the caller's pc is exact: the callee was a signal
    /// trampoline, so the caller was interrupted, not calling.
    exact_pc: bool,
}

/// Evaluation of one CFI row against one frame's registers.
struct Eval<'a> {
    eh_frame: &'a EhFrame<Slice<'a>>,
    encoding: gimli::Encoding,
    regs: &'a RegFile,
    stack: &'a Stack<'a>,
}

impl Eval<'_> {
    fn reg(&self, r: Register) -> Option<u64> {
        *self.regs.get(usize::from(r.0))?
    }

    fn caller(&self, row: &UnwindTableRow<usize>) -> Option<RegFile> {
        let cfa = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => {
                self.reg(*register)?.checked_add_signed(*offset)?
            }
            CfaRule::Expression(e) => self.expr(e, None)?,
        };
        let mut caller = [None; NREGS];
        for (r, slot) in caller.iter_mut().enumerate() {
            let rule = row.register(Register(r as u16));
            *slot = match rule {
                // By definition of the CFA on x86-64, the caller's rsp.
                None if r == RSP => Some(cfa),
                None if CALLEE_SAVED.contains(&r) => self.regs[r],
                None => None,
                Some(rule) => self.rule(r, &rule, cfa),
            };
        }
        Some(caller)
    }

    fn rule(&self, r: usize, rule: &RegisterRule<usize>, cfa: u64) -> Option<u64> {
        match rule {
            RegisterRule::Undefined => None,
            RegisterRule::SameValue => self.regs[r],
            RegisterRule::Offset(n) => self.stack.read_u64(cfa.checked_add_signed(*n)?),
            RegisterRule::ValOffset(n) => cfa.checked_add_signed(*n),
            RegisterRule::Register(r) => self.reg(*r),
            RegisterRule::Expression(e) => self.stack.read_u64(self.expr(e, Some(cfa))?),
            RegisterRule::ValExpression(e) => self.expr(e, Some(cfa)),
            _ => None,
        }
    }

    /// Run a DWARF expression with the registers and stack copy at hand;
    /// register rules start with the CFA pushed, as the standard says.
    fn expr(&self, e: &UnwindExpression<usize>, initial: Option<u64>) -> Option<u64> {
        let mut eval = e.get(self.eh_frame).ok()?.evaluation(self.encoding);
        eval.set_max_iterations(MAX_EXPR_OPS);
        if let Some(v) = initial {
            eval.set_initial_value(v);
        }
        let mut state = eval.evaluate().ok()?;
        // Each request consumes an operation, so MAX_EXPR_OPS bounds this
        // loop too; the explicit bound is belt and braces.
        for _ in 0..MAX_EXPR_OPS {
            state = match state {
                gimli::EvaluationResult::Complete => {
                    return match eval.as_result() {
                        [piece] => match piece.location {
                            Location::Address { address } => Some(address),
                            Location::Value { value } => value.to_u64(u64::MAX).ok(),
                            _ => None,
                        },
                        _ => None,
                    };
                }
                gimli::EvaluationResult::RequiresRegister {
                    register,
                    base_type: UnitOffset(0),
                } => {
                    let v = self.reg(register)?;
                    eval.resume_with_register(Value::Generic(v)).ok()?
                }
                gimli::EvaluationResult::RequiresMemory {
                    address,
                    size,
                    space: None,
                    base_type: UnitOffset(0),
                } => {
                    let v = self.stack.read(address, size)?;
                    eval.resume_with_memory(Value::Generic(v)).ok()?
                }
                _ => return None,
            };
        }
        None
    }
}

/// Unwinds copied stacks; keeps the parsed unwind tables of every module it
/// has seen, so that repeated crashes of one program cost one parse.
pub struct Unwinder {
    /// `None` records a file that could not be used, so it is not retried.
    modules: HashMap<PathBuf, Option<Module>>,
    ctx: UnwindContext<usize>,
    /// Tests turn this off to prove that CFI alone carries the walk.
    fp_fallback: bool,
}

impl Default for Unwinder {
    fn default() -> Self {
        Self::new()
    }
}

impl Unwinder {
    pub fn new() -> Self {
        Unwinder {
            modules: HashMap::new(),
            ctx: UnwindContext::new(),
            fp_fallback: true,
        }
    }

    /// Unwind from `regs` using `stack`, a copy of the thread's memory starting at `regs.sp`.
    /// Returns code addresses, frame 0 = regs.ip, then return addresses, at most `max_frames`.
    /// `real_return` gives the return address a uretprobe replaced with its
    /// trampoline, by the stack slot that holds it.
    pub fn unwind(
        &mut self,
        regs: &Regs,
        stack: &[u8],
        maps: &[MapEntry],
        max_frames: usize,
        real_return: &dyn Fn(u64) -> Option<u64>,
    ) -> Vec<u64> {
        let mut frames = Vec::new();
        if max_frames == 0 {
            return frames;
        }
        frames.push(regs.ip);
        let stack = Stack {
            base: regs.sp,
            data: stack,
        };
        let mut state: RegFile = [None; NREGS];
        state[RSP] = Some(regs.sp);
        state[RBP] = Some(regs.bp);
        state[RA] = Some(regs.ip);
        // Frame 0 was interrupted, not calling: its pc is exact.
        let mut exact_pc = true;
        let mut first = true;
        while frames.len() < max_frames {
            let (Some(pc), Some(sp)) = (state[RA], state[RSP]) else {
                break;
            };
            let Some(Caller {
                regs: caller,
                exact_pc: caller_exact,
            }) = self.step(pc, &state, exact_pc, first, &stack, maps)
            else {
                break;
            };
            let (Some(mut ra), Some(caller_sp)) = (caller[RA], caller[RSP]) else {
                break;
            };
            let mut caller = caller;
            if is_uretprobe_trampoline(ra) {
                // A return-probed call: the real return address was saved
                // at its entry, where the slot (just below the CFA) held it.
                match real_return(caller_sp.wrapping_sub(8)) {
                    Some(real) => {
                        ra = real;
                        caller[RA] = Some(real);
                    }
                    None => break,
                }
            }
            // Stacks grow down, so a caller's frame lies above; anything
            // else is a loop or garbage.
            if ra == 0 || caller_sp <= sp || !is_code(maps, ra) {
                break;
            }
            frames.push(ra);
            state = caller;
            exact_pc = caller_exact;
            first = false;
        }
        frames
    }

    fn step(
        &mut self,
        pc: u64,
        regs: &RegFile,
        exact_pc: bool,
        first: bool,
        stack: &Stack,
        maps: &[MapEntry],
    ) -> Option<Caller> {
        // A return address may be one past a call to a noreturn function,
        // i.e. already in the next function: look up the call instruction.
        let lookup = if exact_pc { pc } else { pc.checked_sub(1)? };
        let Some(m) = maps::find(maps, lookup).filter(|m| m.exec) else {
            return if first {
                call_to_garbage(regs, stack)
            } else {
                None
            };
        };
        let cfi = m.path.as_deref().and_then(|path| {
            // `MapEntry::file_offset` without its overflow on odd entries.
            let off = lookup.checked_sub(m.start)?.checked_add(m.offset)?;
            let module = self
                .modules
                .entry(path.to_path_buf())
                .or_insert_with(|| Module::load(path))
                .as_ref()?;
            let vaddr = module.vaddr(off)?;
            Some(module.step(&mut self.ctx, vaddr, regs, stack))
        });
        match cfi.unwrap_or(Err(Miss::NoFde)) {
            Ok(caller) => Some(caller),
            // The CFI says how, but the copy cannot follow it: guessing with
            // rbp would only invent frames.
            Err(Miss::Stuck) => None,
            // No module file (the vdso, JIT code) or no FDE for this pc.
            Err(Miss::NoFde) if self.fp_fallback => frame_pointer(regs, stack),
            Err(Miss::NoFde) => None,
        }
    }
}

/// The classic rbp chain: `push rbp; mov rbp, rsp` leaves the caller's rbp
/// at [rbp] and the return address above it.
fn frame_pointer(regs: &RegFile, stack: &Stack) -> Option<Caller> {
    let bp = regs[RBP]?;
    let mut caller = [None; NREGS];
    caller[RBP] = Some(stack.read_u64(bp)?);
    caller[RA] = Some(stack.read_u64(bp.checked_add(8)?)?);
    caller[RSP] = Some(bp.checked_add(16)?);
    Some(Caller {
        regs: caller,
        exact_pc: false,
    })
}

/// Frame 0 outside any code is most often a call through a bad pointer
/// (null, freed vtable): the call pushed its return address and nothing ran
/// since, so the caller is one word up.
fn call_to_garbage(regs: &RegFile, stack: &Stack) -> Option<Caller> {
    let sp = regs[RSP]?;
    let mut caller = *regs;
    caller[RA] = Some(stack.read_u64(sp)?);
    caller[RSP] = Some(sp.checked_add(8)?);
    Some(Caller {
        regs: caller,
        exact_pc: false,
    })
}

fn is_code(maps: &[MapEntry], addr: u64) -> bool {
    maps::find(maps, addr).is_some_and(|m| m.exec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::hint::black_box;

    use crate::util::xorshift::Rng;
    use blazesym::symbolize::source::{Process, Source};
    use blazesym::symbolize::{Input, Symbolized, Symbolizer};
    use blazesym::Pid;

    /// What the BPF side hands over: registers and a stack copy.
    struct Capture {
        regs: Regs,
        stack: Vec<u8>,
    }

    /// Registers at the point of use: a macro, so the instructions sit in
    /// the function under test and not in a helper of their own.
    macro_rules! capture_regs {
        () => {{
            let (ip, sp, bp): (u64, u64, u64);
            // SAFETY: reads three registers, touches no memory.
            unsafe {
                core::arch::asm!(
                    "lea {ip}, [rip]",
                    "mov {sp}, rsp",
                    "mov {bp}, rbp",
                    ip = out(reg) ip,
                    sp = out(reg) sp,
                    bp = out(reg) bp,
                    options(nomem, nostack, preserves_flags),
                );
            }
            Regs { ip, sp, bp }
        }};
    }

    /// Copy this thread's stack from `sp` up, as much as the BPF side would
    /// take: at most 16 KiB and never past the end of the stack mapping.
    /// Frames called from here live below `sp`, so the copy sees the
    /// caller's frames as they were at capture.
    fn copy_stack(sp: u64) -> Vec<u8> {
        let maps = maps::read_maps(std::process::id()).expect("read own maps");
        let m = maps::find(&maps, sp).expect("stack mapping");
        assert!(m.read && m.write && !m.exec, "{m:?} is not a stack");
        let len = usize::try_from((m.end - sp).min(16 * 1024)).expect("len");
        let mut copy = vec![0u8; len];
        // SAFETY: [sp, sp+len) lies inside a readable mapping of this
        // thread's stack, and the copy does not overlap it.
        unsafe { std::ptr::copy_nonoverlapping(sp as *const u8, copy.as_mut_ptr(), len) };
        copy
    }

    fn unwind_cfi_only(c: &Capture) -> Vec<u64> {
        let maps = maps::read_maps(std::process::id()).expect("read own maps");
        let mut unwinder = Unwinder::new();
        // Without the rbp fallback, every frame found is CFI's doing.
        unwinder.fp_fallback = false;
        unwinder.unwind(&c.regs, &c.stack, &maps, 64, &|_| None)
    }

    fn names(frames: &[u64]) -> Vec<String> {
        let symbolizer = Symbolizer::new();
        let src = Source::Process(Process::new(Pid::Slf));
        symbolizer
            .symbolize(&src, Input::AbsAddr(frames))
            .expect("symbolize")
            .into_iter()
            .map(|s| match s {
                Symbolized::Sym(sym) => sym.name.into_owned(),
                Symbolized::Unknown(_) => "?".to_string(),
            })
            .collect()
    }

    #[inline(never)]
    fn chain_a(n: u64) -> Capture {
        let c = chain_b(black_box(n + 1));
        // Using the result after the call keeps the call from becoming a
        // tail jump, which would drop this frame from the stack.
        black_box(&c);
        c
    }

    #[inline(never)]
    fn chain_b(n: u64) -> Capture {
        let c = chain_c(black_box(n + 1));
        black_box(&c);
        c
    }

    #[inline(never)]
    fn chain_c(n: u64) -> Capture {
        black_box(n);
        let regs = capture_regs!();
        let stack = copy_stack(regs.sp);
        Capture { regs, stack }
    }

    #[test]
    fn unwinds_own_rust_frames() {
        let c = chain_a(1);
        let frames = unwind_cfi_only(&c);
        let names = names(&frames);
        assert_eq!(frames[0], c.regs.ip);
        assert!(names.len() >= 4, "{names:?}");
        assert!(names[0].contains("chain_c"), "{names:?}");
        assert!(names[1].contains("chain_b"), "{names:?}");
        assert!(names[2].contains("chain_a"), "{names:?}");
        assert!(names[3].contains("unwinds_own_rust_frames"), "{names:?}");
    }

    thread_local! {
        static IN_COMPARE: RefCell<Option<Capture>> = const { RefCell::new(None) };
    }

    /// # Safety
    /// `a` and `b` point to i32s: qsort's elements.
    unsafe extern "C" fn compare(a: *const libc::c_void, b: *const libc::c_void) -> libc::c_int {
        let regs = capture_regs!();
        IN_COMPARE.with(|c| {
            c.borrow_mut().get_or_insert_with(|| Capture {
                regs,
                stack: copy_stack(regs.sp),
            });
        });
        // SAFETY: qsort passes pointers to elements of the i32 array.
        let (a, b) = unsafe { (*a.cast::<i32>(), *b.cast::<i32>()) };
        a.cmp(&b) as libc::c_int
    }

    #[inline(never)]
    fn sort_with_libc(v: &mut [i32; 2]) -> Capture {
        IN_COMPARE.with(|c| c.borrow_mut().take());
        // SAFETY: a valid array of two i32 and a comparator for i32.
        unsafe { libc::qsort(v.as_mut_ptr().cast(), v.len(), 4, Some(compare)) };
        IN_COMPARE
            .with(|c| c.borrow_mut().take())
            .expect("comparator ran")
    }

    #[test]
    fn unwinds_through_glibc_without_frame_pointers() {
        let mut v = [2, 1];
        let c = sort_with_libc(&mut v);
        assert_eq!(v, [1, 2]);
        let frames = unwind_cfi_only(&c);
        let names = names(&frames);
        let maps = maps::read_maps(std::process::id()).expect("read own maps");
        let in_libc = |addr: u64| {
            maps::find(&maps, addr)
                .and_then(|m| m.path.as_ref())
                .is_some_and(|p| p.to_string_lossy().contains("libc.so"))
        };
        assert!(names[0].contains("compare"), "{names:?}");
        let caller = names
            .iter()
            .position(|n| n.contains("sort_with_libc"))
            .unwrap_or_else(|| panic!("qsort's caller missing: {names:?} {frames:x?}"));
        assert!(
            frames[1..caller].iter().all(|&a| in_libc(a)) && caller > 1,
            "expected libc frames between: {names:?} {frames:x?}"
        );
        assert!(
            names[caller + 1].contains("unwinds_through_glibc"),
            "{names:?}"
        );
    }

    thread_local! {
        /// (registers at the signal, registers inside the handler).
        static IN_HANDLER: RefCell<Option<(Capture, Capture)>> = const { RefCell::new(None) };
    }

    extern "C" fn on_usr1(_sig: libc::c_int, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
        let here = capture_regs!();
        // SAFETY: with SA_SIGINFO the third argument is the ucontext_t of
        // the interrupted code.
        let g = unsafe { &(*uc.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
        let at_signal = Regs {
            ip: g[libc::REG_RIP as usize] as u64,
            sp: g[libc::REG_RSP as usize] as u64,
            bp: g[libc::REG_RBP as usize] as u64,
        };
        // Allocating here is fine: the signal comes from raise() on this
        // thread, not at an arbitrary point.
        let captured = (
            Capture {
                regs: at_signal,
                stack: copy_stack(at_signal.sp),
            },
            Capture {
                regs: here,
                stack: copy_stack(here.sp),
            },
        );
        IN_HANDLER.with(|c| *c.borrow_mut() = Some(captured));
    }

    #[inline(never)]
    fn raise_usr1() -> (Capture, Capture) {
        // SAFETY: installs a handler that only records, then restores the
        // previous disposition.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            let mut old: libc::sigaction = std::mem::zeroed();
            assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, &mut old), 0);
            assert_eq!(libc::raise(libc::SIGUSR1), 0);
            libc::sigaction(libc::SIGUSR1, &old, std::ptr::null_mut());
        }
        IN_HANDLER
            .with(|c| c.borrow_mut().take())
            .expect("handler ran")
    }

    /// The shape of a fatal signal: a thread stopped in glibc's
    /// pthread_kill (as abort() does), and, from inside the handler, the
    /// walk back through the kernel's signal frame via `__restore_rt`, whose
    /// CFI is all DWARF expressions.
    #[test]
    fn unwinds_from_and_through_a_signal() {
        let (at_signal, in_handler) = raise_usr1();

        let frames = unwind_cfi_only(&at_signal);
        let names = names(&frames);
        let caller = names
            .iter()
            .position(|n| n.contains("raise_usr1"))
            .unwrap_or_else(|| panic!("raise's caller missing: {names:?} {frames:x?}"));
        assert!(
            names[..caller].iter().any(|n| n.contains("raise")),
            "{names:?}"
        );
        assert!(
            names[caller + 1].contains("unwinds_from_and_through_a_signal"),
            "{names:?}"
        );

        let through = unwind_cfi_only(&in_handler);
        let names = self::names(&through);
        assert!(names[0].contains("on_usr1"), "{names:?}");
        // The interrupted pc comes back exactly, not as a return address,
        // and the walk goes on from it as from frame 0 above.
        let at = through
            .iter()
            .position(|&pc| pc == at_signal.regs.ip)
            .unwrap_or_else(|| panic!("interrupted pc missing: {names:?} {through:x?}"));
        assert_eq!(through[at..], frames[..], "{names:?}");
    }

    fn words(ws: &[u64]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Code without a file (JIT, the vdso) has no CFI to read: the rbp
    /// chain is all there is. A pc outside any code is a call through a bad
    /// pointer, whose return address is still at [sp].
    #[test]
    fn frame_pointer_fallback_and_bad_call() {
        let maps = maps::parse_maps("1000-2000 r-xp 00000000 00:00 0 \n");
        let sp = 0x10_0000;
        #[rustfmt::skip]
        let stack = words(&[
            0xdead, 0x1234, // locals of frame 0
            sp + 48, 0x1200, // frame 0's rbp slot: saved rbp, return address
            0, 0, // locals of frame 1
            sp + 96, 0x1300, // frame 1's rbp slot
        ]);
        let regs = Regs {
            ip: 0x1100,
            sp,
            bp: sp + 16,
        };
        let mut unwinder = Unwinder::new();
        // The third frame's rbp slot lies past the copy: the walk stops.
        assert_eq!(
            unwinder.unwind(&regs, &stack, &maps, 16, &|_| None),
            [0x1100, 0x1200, 0x1300]
        );
        assert_eq!(
            unwinder.unwind(&regs, &stack, &maps, 2, &|_| None),
            [0x1100, 0x1200]
        );
        assert!(unwinder
            .unwind(&regs, &stack, &maps, 0, &|_| None)
            .is_empty());

        // Called from 0x1234 - 5 with a null pointer; from there on, rbp.
        let null_call = Regs {
            ip: 0,
            sp: sp + 8,
            bp: sp + 16,
        };
        assert_eq!(
            unwinder.unwind(&null_call, &stack[8..], &maps, 16, &|_| None),
            [0, 0x1234, 0x1200, 0x1300]
        );
        unwinder.fp_fallback = false;
        assert_eq!(
            unwinder.unwind(&regs, &stack, &maps, 16, &|_| None),
            [0x1100]
        );
    }

    /// A return-probed call's return address is the uretprobe trampoline
    /// until it returns: the real one, saved at the call's entry, is found
    /// by the slot that held it, and the walk goes on from there.
    #[test]
    fn uretprobe_trampoline_is_replaced_by_the_real_return() {
        let maps = maps::parse_maps("1000-2000 r-xp 00000000 00:00 0 \n");
        let sp = 0x10_0000;
        let tramp = 0x7fff_ffff_e000;
        #[rustfmt::skip]
        let stack = words(&[
            0, 0,
            sp + 48, tramp, // frame 0's rbp slot: its return was probed
            0, 0,
            sp + 96, 0x1300,
        ]);
        let regs = Regs {
            ip: 0x1100,
            sp,
            bp: sp + 16,
        };
        let mut unwinder = Unwinder::new();
        let slot = sp + 24;
        let real = |s: u64| (s == slot).then_some(0x1200);
        assert_eq!(
            unwinder.unwind(&regs, &stack, &maps, 16, &real),
            [0x1100, 0x1200, 0x1300]
        );
        // Unknown: stop rather than show the trampoline or go on wrong.
        assert_eq!(
            unwinder.unwind(&regs, &stack, &maps, 16, &|_| None),
            [0x1100]
        );
    }

    /// The two FDE indexes (from `.eh_frame_hdr`, from walking
    /// `.eh_frame`) must describe the same functions.
    #[test]
    fn hdr_index_matches_eh_frame_walk() {
        let maps = maps::read_maps(std::process::id()).expect("read own maps");
        let libc = maps
            .iter()
            .find_map(|m| {
                m.path
                    .as_ref()
                    .filter(|p| p.to_string_lossy().contains("libc.so"))
            })
            .expect("libc mapped");
        let module = Module::load(libc).expect("libc loads");
        let walked = module.index_from_eh_frame(&module.bases());
        assert!(walked.len() > 100);
        let mut from_hdr = module.index.clone();
        from_hdr.sort_unstable();
        assert_eq!(from_hdr, walked);
    }

    #[test]
    fn garbage_does_not_panic() {
        let real = maps::read_maps(std::process::id()).expect("read own maps");
        let code: Vec<&MapEntry> = real.iter().filter(|m| m.exec).collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut unwinder = Unwinder::new();
        let pick_code = |rng: &mut Rng| {
            let m = code[rng.below(code.len() as u64) as usize];
            m.start + rng.below(m.end - m.start)
        };
        for round in 0..3000 {
            let sp = match rng.below(3) {
                0 => rng.next(),
                1 => u64::MAX - rng.below(64),
                _ => 0x7ffd_0000_0000 + rng.below(1 << 20) * 8,
            };
            let len = rng.below(2048) as usize;
            let mut stack = Vec::with_capacity(len);
            while stack.len() < len {
                let word = match rng.below(4) {
                    0 => rng.next(),
                    1 => pick_code(&mut rng),
                    2 => sp.wrapping_add(rng.below(len as u64 + 64)),
                    _ => rng.below(256),
                };
                stack.extend_from_slice(&word.to_le_bytes());
            }
            // Odd lengths exercise reads straddling the end of the copy.
            stack.truncate(len);
            let regs = Regs {
                ip: if rng.below(4) == 0 {
                    rng.next()
                } else {
                    pick_code(&mut rng)
                },
                sp,
                bp: match rng.below(3) {
                    0 => rng.next(),
                    _ => sp.wrapping_add(rng.below(len as u64 + 8)),
                },
            };
            let max = rng.below(48) as usize;
            let frames = unwinder.unwind(&regs, &stack, &real, max, &|_| None);
            assert!(frames.len() <= max, "round {round}");
            assert_eq!(frames.first().copied(), (max > 0).then_some(regs.ip));
        }

        // Mappings that lie: files that are not ELF, do not exist, or come
        // with offsets that overflow.
        let fake = maps::parse_maps(
            "1000-2000 r-xp 00000000 00:00 0 /etc/hostname\n\
             2000-3000 r-xp 00000000 00:00 0 /nonexistent/lib.so\n\
             3000-4000 r-xp ffffffffffffffff 00:00 0 /proc/self/exe\n\
             4000-5000 r-xp 00000000 00:00 0 [vdso]\n",
        );
        for ip in [0x1800, 0x2800, 0x3800, 0x4800, 0] {
            let stack: Vec<u8> = [0x1800u64, 0x2800, 0x3800, 0x4800, 0x1900]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect();
            let regs = Regs {
                ip,
                sp: 0x10_0000,
                bp: 0x10_0000,
            };
            let frames = unwinder.unwind(&regs, &stack, &fake, 16, &|_| None);
            assert!(!frames.is_empty() && frames.len() <= 16);
            assert!(unwinder.unwind(&regs, &[], &fake, 16, &|_| None).len() == 1);
        }
    }
}
