//! Leak kinds: a stopped target's memory searched for pointers to its live
//! blocks, each block then definitely lost, indirectly lost, possibly lost
//! or still reachable as valgrind's memcheck defines them.
//!
//! Roots are the writable mappings that hold no heap block (modules'
//! data and bss, thread stacks from their stack pointer, other anonymous
//! memory) and the stopped threads' registers. A mapping that holds (or
//! held) heap blocks is the allocator's: its free chunks keep stale
//! pointers, so only the live blocks inside it are read. glibc's own state
//! in libc's data (the main arena's top, bins and remainder) points at
//! chunk headers, which for a block filling its chunk lie in that block's
//! last word: such pointers are not taken as the program's.
//!
//! The classification ([`classify`]) is a pure function of a memory
//! image, the roots, the registers and the blocks, as valgrind's
//! `mc_leakcheck.c` does it: mark from the roots (a pointer to a block's
//! start makes it reachable from a reachable place, any other pointer only
//! possibly), then, for each block still unreached in address order, every
//! unreached block reachable from it joins its clique as indirectly lost,
//! and the leaders are definitely lost.
//!
//! Not done as valgrind does: its heuristics for C++ (std::string,
//! new[] arrays, multiple inheritance, length64) that turn some interior
//! pointers into "reachable via heuristic"; and valgrind skips words it
//! knows are uninitialized, where natively a block's unwritten bytes (and
//! a stack's old frames above the pointer) still hold what was there.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::event::LeakKind;
use crate::recorder::maps::{parse_maps, MapEntry};

const WORD: u64 = 8;
/// Below a stack pointer, the x86-64 ABI's red zone still belongs to the
/// function (valgrind counts it addressable too).
const RED_ZONE: u64 = 128;

/// Reads the target's memory.
pub trait Memory {
    /// Fills `buf` from `addr`; returns how many bytes were read (short at
    /// unreadable memory).
    fn read_at(&mut self, addr: u64, buf: &mut [u8]) -> usize;

    /// Whether the page at `addr`, which could not be read, was never
    /// written (not in memory, not swapped out): it holds no pointer.
    fn untouched(&mut self, _addr: u64) -> bool {
        false
    }
}

/// A range of memory whose words are roots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pub start: u64,
    pub end: u64,
    /// glibc's own data (libc's data and bss): pointers to chunk headers
    /// are the allocator's, not the program's.
    pub allocator_data: bool,
}

/// A block's classification and what was read for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Classified {
    /// The kind of each block, in the order the blocks were given.
    pub kinds: Vec<LeakKind>,
    pub root_bytes: u64,
    pub block_bytes: u64,
    /// Bytes of roots and blocks that could not be read.
    pub unreadable: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Unreached,
    Possible,
    Reachable,
    Indirect,
}

/// The blocks sorted by address, for pointer lookups.
struct Blocks {
    /// (ptr, size, index in the caller's order).
    sorted: Vec<(u64, u64, usize)>,
    lo: u64,
    hi: u64,
}

impl Blocks {
    fn new(blocks: &[(u64, u64)]) -> Self {
        let mut sorted: Vec<(u64, u64, usize)> = blocks
            .iter()
            .enumerate()
            .map(|(i, &(p, s))| (p, s, i))
            .collect();
        sorted.sort_unstable();
        let lo = sorted.first().map_or(u64::MAX, |b| b.0);
        let hi = sorted
            .iter()
            .map(|b| b.0.saturating_add(b.1.max(1)))
            .max()
            .unwrap_or(0);
        Blocks { sorted, lo, hi }
    }

    /// The block `w` points into (by position in `sorted`), and whether it
    /// points at its start. A zero-sized block is pointed to by its start.
    fn find(&self, w: u64) -> Option<(usize, bool)> {
        if w < self.lo || w >= self.hi {
            return None;
        }
        let i = self.sorted.partition_point(|b| b.0 <= w).checked_sub(1)?;
        let (p, s, _) = self.sorted[i];
        (w < p.saturating_add(s.max(1))).then_some((i, w == p))
    }
}

struct Marker<'a, M: Memory> {
    mem: &'a mut M,
    blocks: Blocks,
    state: Vec<State>,
    stack: Vec<usize>,
    glibc: bool,
    buf: Vec<u8>,
    out: Classified,
}

/// How far one read goes: roots and big blocks are read in pieces.
const CHUNK: usize = 1 << 20;

impl<M: Memory> Marker<'_, M> {
    /// The words of `[start, end)`, aligned, read in pieces; `f` gets each
    /// word and its address. Returns the bytes read.
    fn words(&mut self, start: u64, end: u64, mut f: impl FnMut(&mut Self, u64, u64)) -> u64 {
        let mut at = start.next_multiple_of(WORD);
        let end = end & !(WORD - 1);
        let mut read = 0;
        let mut buf = std::mem::take(&mut self.buf);
        while at < end {
            let n = ((end - at) as usize).min(CHUNK);
            buf.resize(n, 0);
            let got = self.mem.read_at(at, &mut buf[..n]) & !(WORD as usize - 1);
            for (k, w) in buf[..got].chunks_exact(WORD as usize).enumerate() {
                let w = u64::from_ne_bytes(w.try_into().unwrap_or_default());
                f(self, at + k as u64 * WORD, w);
            }
            read += got as u64;
            if got < n {
                // Unreadable from here: skip to the next page.
                let bad = at + got as u64;
                let skip = (bad | 0xfff) + 1;
                if !self.mem.untouched(bad) {
                    self.out.unreadable += skip.min(end) - bad;
                }
                at = skip;
            } else {
                at += n as u64;
            }
        }
        self.buf = buf;
        read
    }

    /// Marks what `w` points to, from a place that is reachable
    /// (`definite`) or only possibly so.
    fn mark(&mut self, w: u64, definite: bool) {
        let Some((i, start)) = self.blocks.find(w) else {
            return;
        };
        let new = if definite && start {
            State::Reachable
        } else {
            State::Possible
        };
        let old = self.state[i];
        if old == State::Unreached || (old == State::Possible && new == State::Reachable) {
            self.state[i] = new;
            self.stack.push(i);
        }
    }

    /// A word of glibc's own data that points at the header of the chunk
    /// after a block (the top chunk, a binned free chunk): inside the
    /// block when the block fills its chunk, but the allocator's pointer.
    fn chunk_header(&mut self, w: u64) -> bool {
        let Some((i, false)) = self.blocks.find(w) else {
            return false;
        };
        let ptr = self.blocks.sorted[i].0;
        let mut size = [0u8; 8];
        if self.mem.read_at(ptr.wrapping_sub(8), &mut size) != 8 {
            return false;
        }
        let chunk = u64::from_ne_bytes(size) & !7;
        w == ptr.wrapping_sub(16).wrapping_add(chunk)
    }

    fn root(&mut self, r: &Root) {
        let filter = r.allocator_data && self.glibc;
        let n = self.words(r.start, r.end, |m, _, w| {
            if !(filter && m.chunk_header(w)) {
                m.mark(w, true);
            }
        });
        self.out.root_bytes += n;
    }

    /// Scans marked blocks until none is left to scan.
    fn process(&mut self) {
        while let Some(i) = self.stack.pop() {
            let (p, s, _) = self.blocks.sorted[i];
            let definite = self.state[i] == State::Reachable;
            let n = self.words(p, p.saturating_add(s), |m, _, w| m.mark(w, definite));
            self.out.block_bytes += n;
        }
    }

    /// Every unreached block reachable from `leader` joins its clique.
    fn clique(&mut self, leader: usize) {
        self.stack.push(leader);
        while let Some(i) = self.stack.pop() {
            let (p, s, _) = self.blocks.sorted[i];
            let n = self.words(p, p.saturating_add(s), |m, _, w| {
                if let Some((k, _)) = m.blocks.find(w) {
                    if k != leader && m.state[k] == State::Unreached {
                        m.state[k] = State::Indirect;
                        m.stack.push(k);
                    }
                }
            });
            self.out.block_bytes += n;
        }
    }
}

/// The kind of each of `blocks` (ptr, size), given the memory, the roots
/// and the registers of the stopped threads. `glibc`: the allocator is
/// glibc's malloc, whose chunk headers [`Root::allocator_data`] filters.
pub fn classify(
    mem: &mut impl Memory,
    blocks: &[(u64, u64)],
    roots: &[Root],
    regs: &[u64],
    glibc: bool,
) -> Classified {
    let blocks = Blocks::new(blocks);
    let n = blocks.sorted.len();
    let mut m = Marker {
        mem,
        blocks,
        state: vec![State::Unreached; n],
        stack: Vec::new(),
        glibc,
        buf: Vec::new(),
        out: Classified::default(),
    };
    for &r in regs {
        m.mark(r, true);
    }
    for r in roots {
        m.root(r);
        m.process();
    }
    m.process();
    for i in 0..n {
        if m.state[i] == State::Unreached {
            m.clique(i);
        }
    }
    let mut kinds = vec![LeakKind::StillReachable; n];
    for (i, &(_, _, orig)) in m.blocks.sorted.iter().enumerate() {
        kinds[orig] = match m.state[i] {
            State::Unreached => LeakKind::DefinitelyLost,
            State::Indirect => LeakKind::IndirectlyLost,
            State::Possible => LeakKind::PossiblyLost,
            State::Reachable => LeakKind::StillReachable,
        };
    }
    let mut out = m.out;
    out.kinds = kinds;
    out
}

/// The roots of a process with these mappings: every readable, writable
/// mapping without a block (`blocks` sorted by address) and that never
/// held one (`heap_pages`: whether a block ever started in a range); a
/// stack from its thread's stack pointer (`sps`) on. `allocator`: the
/// allocator module, whose data and bss are the allocator's own.
pub fn roots(
    maps: &[MapEntry],
    blocks: &[(u64, u64)],
    sps: &[u64],
    allocator: Option<&Path>,
    held_blocks: &dyn Fn(u64, u64) -> bool,
) -> Vec<Root> {
    let mut out = Vec::new();
    let mut prev: Option<&MapEntry> = None;
    for m in maps {
        let after = prev.replace(m);
        if !(m.read && m.write) {
            continue;
        }
        // Devices may hang or have side effects when read (valgrind reads
        // /dev/zero mappings only); the kernel's pages are not the program's.
        let device = m
            .path
            .as_ref()
            .is_some_and(|p| p.starts_with("/dev/") && p != Path::new("/dev/zero"));
        if device || m.name.starts_with("[v") {
            continue;
        }
        let i = blocks.partition_point(|b| b.0 < m.start);
        let has_block = blocks.get(i).is_some_and(|b| b.0 < m.end);
        // The brk heap is malloc's even when no block seen is in it (an
        // attached target's blocks from before the attach).
        if has_block || m.name == "[heap]" || held_blocks(m.start, m.end) {
            continue;
        }
        let start = sps
            .iter()
            .filter(|&&sp| m.contains(sp))
            .map(|&sp| sp.saturating_sub(RED_ZONE).max(m.start) & !(WORD - 1))
            .min()
            .unwrap_or(m.start);
        let own = |e: &MapEntry| allocator.is_some_and(|a| e.path.as_deref() == Some(a));
        // A module's bss is the anonymous mapping right after its data.
        let bss = m.path.is_none()
            && m.name.is_empty()
            && after.is_some_and(|p| p.end == m.start && own(p));
        out.push(Root {
            start,
            end: m.end,
            allocator_data: own(m) || bss,
        });
    }
    out
}

/// /proc/PID/mem, read through a cache of 1 MiB pieces bounded by the
/// mappings (a block is a few bytes; reading it alone would cost a system
/// call each).
pub struct ProcMem {
    file: File,
    pagemap: Option<File>,
    maps: Vec<(u64, u64)>,
    cache: HashMap<u64, Vec<u8>>,
    cached: usize,
}

/// Memory the cache may hold before it starts over.
const CACHE_BYTES: usize = 512 << 20;

impl ProcMem {
    pub fn open(pid: u32, maps: &[MapEntry]) -> Result<Self> {
        let path = format!("/proc/{pid}/mem");
        let file = File::open(&path).with_context(|| format!("cannot open {path}"))?;
        Ok(ProcMem {
            file,
            pagemap: File::open(format!("/proc/{pid}/pagemap")).ok(),
            maps: maps
                .iter()
                .filter(|m| m.read)
                .map(|m| (m.start, m.end))
                .collect(),
            cache: HashMap::new(),
            cached: 0,
        })
    }

    /// The piece holding `addr`, read once: the part of its 1 MiB of
    /// address space inside its mapping (keyed by where it starts, as
    /// mappings may share a MiB). A page that cannot be read ends it.
    fn piece(&mut self, addr: u64) -> Option<(u64, &[u8])> {
        let i = self.maps.partition_point(|m| m.1 <= addr);
        let &(ms, me) = self.maps.get(i).filter(|m| m.0 <= addr)?;
        let key = addr / CHUNK as u64;
        let from = (key * CHUNK as u64).max(ms);
        if !self.cache.contains_key(&from) {
            let to = ((key + 1) * CHUNK as u64).min(me);
            let mut v = vec![0u8; (to - from) as usize];
            let mut got = 0;
            while got < v.len() {
                match self.file.read_at(&mut v[got..], from + got as u64) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
            }
            v.truncate(got);
            if self.cached + v.len() > CACHE_BYTES {
                self.cache.clear();
                self.cached = 0;
            }
            self.cached += v.len();
            self.cache.insert(from, v);
        }
        Some((from, self.cache.get(&from)?))
    }

    /// Reads past a page that ended a piece, uncached.
    fn direct(&mut self, addr: u64, buf: &mut [u8]) -> usize {
        let i = self.maps.partition_point(|m| m.1 <= addr);
        let Some(&(_, me)) = self.maps.get(i).filter(|m| m.0 <= addr) else {
            return 0;
        };
        let n = buf.len().min((me - addr) as usize);
        let mut got = 0;
        while got < n {
            match self.file.read_at(&mut buf[got..n], addr + got as u64) {
                Ok(0) | Err(_) => break,
                Ok(k) => got += k,
            }
        }
        got
    }
}

impl Memory for ProcMem {
    /// /proc/PID/pagemap: neither in memory nor swapped out. A read that
    /// fails on such a page (none seen so far) loses no pointer.
    fn untouched(&mut self, addr: u64) -> bool {
        const PRESENT: u64 = 1 << 63;
        const SWAPPED: u64 = 1 << 62;
        let Some(pm) = &self.pagemap else {
            return false;
        };
        let mut e = [0u8; 8];
        match pm.read_at(&mut e, (addr >> 12) * 8) {
            Ok(8) => u64::from_ne_bytes(e) & (PRESENT | SWAPPED) == 0,
            _ => false,
        }
    }

    fn read_at(&mut self, addr: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let at = addr + done as u64;
            let Some((from, data)) = self.piece(at) else {
                break;
            };
            let off = (at - from) as usize;
            let n = data.len().saturating_sub(off).min(buf.len() - done);
            if n > 0 {
                buf[done..done + n].copy_from_slice(&data[off..off + n]);
                done += n;
                continue;
            }
            // Past a page its piece could not read: read alone, uncached.
            let want = (buf.len() - done).min(CHUNK);
            let k = self.direct(at, &mut buf[done..done + want]);
            done += k;
            if k < want {
                break;
            }
        }
        done
    }
}

/// The general registers of a stopped thread, as roots: rax, rbx, rcx,
/// rdx, rsi, rdi, rbp, rsp, r8 to r15 (the stack pointer at [`SP_INDEX`]).
pub fn gp_regs(r: &libc::user_regs_struct) -> Vec<u64> {
    vec![
        r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ]
}

pub const SP_INDEX: usize = 7;

/// A stopped target to scan, for whoever owns the model (it knows the
/// live blocks): answered on `done` once scanned, and only then is the
/// target let go.
#[derive(Debug)]
pub struct Request {
    pub pid: u32,
    /// Each stopped thread's [`gp_regs`].
    pub regs: Vec<Vec<u64>>,
    pub trigger: crate::event::ScanTrigger,
    /// When the target stopped.
    pub since: std::time::Instant,
    pub done: Option<crossbeam_channel::Sender<()>>,
}

/// The outcome of [`scan`].
pub struct Scanned {
    pub classified: Classified,
}

/// Scans the stopped process `pid`: its mappings now, its `blocks` (ptr,
/// size), the registers of its stopped threads (each a set of general
/// registers, the stack pointer at `sp_index`).
pub fn scan(
    pid: u32,
    blocks: &[(u64, u64)],
    regs: &[Vec<u64>],
    sp_index: usize,
    allocator: &str,
    held_blocks: &dyn Fn(u64, u64) -> bool,
) -> Result<Scanned> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("cannot read the memory map of pid {pid}"))?;
    let maps = parse_maps(&text);
    if maps.is_empty() {
        anyhow::bail!("pid {pid} has no memory left to scan (it has exited)");
    }
    let mut sorted = blocks.to_vec();
    sorted.sort_unstable();
    let sps: Vec<u64> = regs
        .iter()
        .filter_map(|r| r.get(sp_index).copied())
        .collect();
    let alloc_path = (!allocator.is_empty())
        .then(|| std::fs::canonicalize(allocator).unwrap_or_else(|_| allocator.into()));
    let roots = roots(&maps, &sorted, &sps, alloc_path.as_deref(), held_blocks);
    let mut mem = ProcMem::open(pid, &maps)?;
    let words: Vec<u64> = regs.iter().flatten().copied().collect();
    let glibc = allocator.contains("libc.so");
    let classified = classify(&mut mem, blocks, &roots, &words, glibc);
    Ok(Scanned { classified })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse memory image: words at addresses.
    #[derive(Default)]
    struct Image(std::collections::BTreeMap<u64, u64>, Vec<(u64, u64)>);

    impl Image {
        fn set(&mut self, addr: u64, w: u64) {
            self.0.insert(addr, w);
        }
        /// Readable ranges (everything else reads short).
        fn map(&mut self, start: u64, end: u64) {
            self.1.push((start, end));
        }
    }

    impl Memory for Image {
        fn read_at(&mut self, addr: u64, buf: &mut [u8]) -> usize {
            let mut n = 0;
            while n < buf.len() {
                let a = addr + n as u64;
                if !self.1.iter().any(|&(s, e)| s <= a && a < e) {
                    break;
                }
                let word = a & !7;
                let w = self.0.get(&word).copied().unwrap_or(0).to_ne_bytes();
                buf[n] = w[(a - word) as usize];
                n += 1;
            }
            n
        }
    }

    const DATA: u64 = 0x1000;
    const HEAP: u64 = 0x10_0000;

    fn root() -> Root {
        Root {
            start: DATA,
            end: DATA + 0x100,
            allocator_data: false,
        }
    }

    fn image() -> Image {
        let mut m = Image::default();
        m.map(DATA, DATA + 0x100);
        m.map(HEAP, HEAP + 0x10000);
        m
    }

    use LeakKind::*;

    #[test]
    fn each_kind_as_valgrind_defines_it() {
        let mut m = image();
        // A: reachable from a global (start pointer); A points to B's
        // start: B reachable too.
        let (a, b) = (HEAP, HEAP + 0x100);
        m.set(DATA, a);
        m.set(a + 8, b);
        // C: only an interior pointer from a global: possibly lost; D,
        // pointed to by C's start pointer, is possibly lost as well.
        let (c, d) = (HEAP + 0x200, HEAP + 0x300);
        m.set(DATA + 8, c + 24);
        m.set(c, d);
        // E: no pointer: definitely lost; F, G: its children (F by start,
        // G by an interior pointer from F): indirectly lost.
        let (e, f, g) = (HEAP + 0x400, HEAP + 0x500, HEAP + 0x600);
        m.set(e + 16, f);
        m.set(f, g + 40);
        // H: definitely lost, pointed to only from below the data (not a
        // root) and from freed memory (not a block).
        let h = HEAP + 0x700;
        m.set(HEAP + 0x900, h);
        let blocks = [
            (a, 64),
            (b, 64),
            (c, 64),
            (d, 64),
            (e, 64),
            (f, 64),
            (g, 64),
            (h, 64),
        ];
        let out = classify(&mut m, &blocks, &[root()], &[], false);
        assert_eq!(
            out.kinds,
            [
                StillReachable,
                StillReachable,
                PossiblyLost,
                PossiblyLost,
                DefinitelyLost,
                IndirectlyLost,
                IndirectlyLost,
                DefinitelyLost
            ]
        );
        assert_eq!(out.root_bytes, 0x100);
        // A, B, C, D scanned in the mark phase; E, F, G in E's clique; H
        // its own clique.
        assert_eq!(out.block_bytes, 8 * 64);
    }

    #[test]
    fn a_start_pointer_upgrades_a_possible_block() {
        let mut m = image();
        let (a, b) = (HEAP, HEAP + 0x100);
        // Interior first (in address order), then the start: reachable,
        // and so is what it points to, even though B was first reached
        // through A while A was only possible.
        m.set(DATA, a + 8);
        m.set(DATA + 8, a);
        m.set(a + 16, b);
        let out = classify(&mut m, &[(a, 32), (b, 32)], &[root()], &[], false);
        assert_eq!(out.kinds, [StillReachable, StillReachable]);
    }

    #[test]
    fn registers_are_roots_and_cycles_have_one_leader() {
        let mut m = image();
        let (a, b, c, d) = (HEAP, HEAP + 0x100, HEAP + 0x200, HEAP + 0x300);
        // A <-> B, nothing else: A leads (lowest address), B is indirect.
        m.set(a, b);
        m.set(b, a);
        // C <- D: D leads its clique, C (lower, examined first as its own
        // leader) becomes indirect in D's.
        m.set(d, c);
        let blocks = [(a, 16), (b, 16), (c, 16), (d, 16), (HEAP + 0x400, 16)];
        let out = classify(&mut m, &blocks, &[root()], &[HEAP + 0x400], false);
        assert_eq!(
            out.kinds,
            [
                DefinitelyLost,
                IndirectlyLost,
                IndirectlyLost,
                DefinitelyLost,
                StillReachable
            ]
        );
    }

    #[test]
    fn zero_sized_blocks_and_ends() {
        let mut m = image();
        let (a, b) = (HEAP, HEAP + 0x100);
        // One past A's end is not A; B (0 bytes) is pointed to by its start.
        m.set(DATA, a + 32);
        m.set(DATA + 8, b);
        let out = classify(&mut m, &[(a, 32), (b, 0)], &[root()], &[], false);
        assert_eq!(out.kinds, [DefinitelyLost, StillReachable]);
    }

    #[test]
    fn glibc_chunk_headers_in_its_data_are_not_pointers() {
        let mut m = image();
        // A 24-byte block fills its 32-byte chunk: the next chunk's header
        // (the top chunk, say) is at A + 16, inside A.
        let a = HEAP + 0x10;
        m.set(a - 8, 32 | 1);
        let libc = Root {
            start: DATA + 0x80,
            end: DATA + 0x100,
            allocator_data: true,
        };
        m.set(DATA + 0x80, a + 16);
        let prog = Root {
            start: DATA,
            end: DATA + 0x80,
            allocator_data: false,
        };
        let out = classify(&mut m, &[(a, 24)], &[prog.clone(), libc.clone()], &[], true);
        assert_eq!(out.kinds, [DefinitelyLost]);
        // Another allocator: the same word is a pointer.
        let out = classify(
            &mut m,
            &[(a, 24)],
            &[prog.clone(), libc.clone()],
            &[],
            false,
        );
        assert_eq!(out.kinds, [PossiblyLost]);
        // The program's own interior pointer to the same place counts.
        m.set(DATA, a + 16);
        let out = classify(&mut m, &[(a, 24)], &[prog, libc], &[], true);
        assert_eq!(out.kinds, [PossiblyLost]);
    }

    #[test]
    fn proc_mem_reads_mappings_sharing_a_mib_and_stops_at_holes() {
        // Two anonymous mappings in the same MiB with a hole between them.
        // SAFETY: fresh private anonymous mappings, unmapped below.
        let (a, hole) = unsafe {
            let len = 3 * 4096;
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let hole = (p as u64) + 4096;
            libc::munmap(hole as *mut libc::c_void, 4096);
            (p as *mut u64, hole)
        };
        // SAFETY: inside the mappings just made.
        unsafe {
            *a = 0x1111;
            *((hole + 4096) as *mut u64) = 0x2222;
        }
        let pid = std::process::id();
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let maps = parse_maps(&text);
        let mut mem = ProcMem::open(pid, &maps).unwrap();
        let mut w = [0u8; 8];
        assert_eq!(mem.read_at(hole + 4096, &mut w), 8);
        assert_eq!(u64::from_ne_bytes(w), 0x2222);
        assert_eq!(mem.read_at(a as u64, &mut w), 8);
        assert_eq!(u64::from_ne_bytes(w), 0x1111);
        // A read across the hole stops at it.
        let mut big = vec![0u8; 8192];
        assert_eq!(mem.read_at(a as u64, &mut big), 4096);
        assert_eq!(mem.read_at(hole, &mut w), 0);
        // SAFETY: the two pages left of the mapping.
        unsafe {
            libc::munmap(a.cast(), 4096);
            libc::munmap((hole + 4096) as *mut libc::c_void, 4096);
        }
    }

    #[test]
    fn unreadable_memory_is_counted_not_fatal() {
        let mut m = Image::default();
        m.map(DATA, DATA + 0x40);
        let r = Root {
            start: DATA,
            end: DATA + 0x2000,
            allocator_data: false,
        };
        let out = classify(&mut m, &[(HEAP, 16)], &[r], &[], false);
        assert_eq!(out.kinds, [DefinitelyLost]);
        assert_eq!(out.root_bytes, 0x40);
        assert!(out.unreadable > 0);
    }

    fn entry(start: u64, end: u64, perms: &str, name: &str) -> MapEntry {
        let line = format!("{start:x}-{end:x} {perms} 00000000 00:00 0 {name}");
        parse_maps(&line).remove(0)
    }

    #[test]
    fn roots_leave_out_the_heap_devices_and_below_the_stack_pointer() {
        let maps = vec![
            entry(0x1000, 0x2000, "r-xp", "/usr/bin/prog"),
            entry(0x2000, 0x3000, "rw-p", "/usr/bin/prog"),
            entry(0x10000, 0x20000, "rw-p", "[heap]"),
            entry(0x30000, 0x31000, "rw-p", "/usr/lib/libc.so.6"),
            entry(0x31000, 0x32000, "rw-p", ""),
            entry(0x40000, 0x41000, "rw-s", "/dev/dri/card0"),
            entry(0x50000, 0x60000, "rw-p", ""),
            entry(0x70000, 0x80000, "rw-p", "[stack]"),
        ];
        let blocks = [(0x10010, 24)];
        // 0x50000.. once held a block (a thread arena emptied since).
        let held = |s: u64, e: u64| s <= 0x50010 && 0x50010 < e;
        let r = roots(
            &maps,
            &blocks,
            &[0x7f000],
            Some(Path::new("/usr/lib/libc.so.6")),
            &held,
        );
        let got: Vec<(u64, u64, bool)> = r
            .iter()
            .map(|r| (r.start, r.end, r.allocator_data))
            .collect();
        assert_eq!(
            got,
            [
                (0x2000, 0x3000, false),
                (0x30000, 0x31000, true),
                (0x31000, 0x32000, true),
                (0x7f000 - RED_ZONE, 0x80000, false)
            ]
        );
    }
}
