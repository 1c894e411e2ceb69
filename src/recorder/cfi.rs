//! Compiling a module's DWARF CFI into the tracer's unwind table: one row
//! per address range, "CFA = rsp or rbp + offset, the return address at
//! CFA - 8, the caller's rbp at CFA + n or unchanged", sorted by address so
//! the tracer binary-searches it at every frame of every stack it walks.
//!
//! Anything the tracer cannot evaluate (a DWARF expression other than the
//! PLT's, a return address not at CFA - 8, an offset out of range) becomes
//! a row that ends the stack there, marked truncated: the walk never guesses.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, Register,
    RegisterRule, UnwindContext, UnwindSection,
};
use object::elf::PT_LOAD;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Architecture, Endianness, Object, ObjectSection};

use super::bpf::types::tm_cfa;

const RBP: Register = Register(6);
const RSP: Register = Register(7);
const RA: Register = Register(16);

/// One row: from `pc` (relative to the module's first PT_LOAD, page
/// aligned) to the next row's, the rule `cfa` (a `tm_cfa`) with `off`, and
/// where the caller's rbp is: `rbp` × 8 from the CFA, 0 when unchanged,
/// `RBP_UNKNOWN` when the CFI says nothing usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub pc: u32,
    pub off: u16,
    pub cfa: u8,
    pub rbp: i8,
}

pub const RBP_UNKNOWN: i8 = i8::MIN;

impl Row {
    fn same_rule(&self, o: &Row) -> bool {
        (self.off, self.cfa, self.rbp) == (o.off, o.cfa, o.rbp)
    }
}

/// A module's compiled table and how its addresses relate to the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// The ELF vaddr row pcs are relative to.
    pub base: u64,
    /// (file offset, vaddr, size in the file) of each PT_LOAD.
    pub segments: Vec<(u64, u64, u64)>,
    pub rows: Vec<Row>,
}

impl Table {
    /// The value that turns a runtime address in the mapping that starts at
    /// `start` with file offset `offset` into a row pc: `pc - start + adj`.
    pub fn adj(&self, offset: u64) -> Option<u64> {
        let &(seg_off, vaddr, _) = self
            .segments
            .iter()
            .find(|&&(o, _, size)| o <= offset && offset - o < size.max(1))?;
        (vaddr + (offset - seg_off)).checked_sub(self.base)
    }
}

impl Table {
    /// For each 4 KiB page of row pcs, the first and last row that can
    /// cover an address in it: the tracer searches only those.
    pub fn page_index(&self) -> Vec<(u32, u32)> {
        let starts = self.page_starts();
        let last = self.rows.len().saturating_sub(1) as u32;
        (0..starts.len())
            .map(|k| (starts[k], starts.get(k + 1).copied().unwrap_or(last)))
            .collect()
    }

    /// For each page, the row covering its start (0 before the first row).
    fn page_starts(&self) -> Vec<u32> {
        let Some(last) = self.rows.last() else {
            return Vec::new();
        };
        let pages = (last.pc >> 12) as usize + 1;
        let mut index = Vec::with_capacity(pages);
        let mut i = 0usize;
        for k in 0..pages {
            let start = (k as u64) << 12;
            while i + 1 < self.rows.len() && u64::from(self.rows[i + 1].pc) <= start {
                i += 1;
            }
            index.push(i as u32);
        }
        index
    }
}

/// Why a module has no table.
#[derive(Debug, thiserror::Error)]
pub enum NoTable {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an x86-64 ELF file")]
    NotElf,
    #[error("no .eh_frame or .debug_frame")]
    NoCfi,
    #[error("its code spans more than 4 GiB")]
    TooLarge,
}

/// Compile the CFI of the ELF file at `path`.
#[cfg(test)]
pub fn compile(path: &Path) -> Result<Table, NoTable> {
    let data = std::fs::read(path)?;
    compile_bytes(&data)
}

pub fn compile_bytes(data: &[u8]) -> Result<Table, NoTable> {
    let elf = ElfFile64::<Endianness, _>::parse(data).map_err(|_| NoTable::NotElf)?;
    if elf.architecture() != Architecture::X86_64 || !elf.is_little_endian() {
        return Err(NoTable::NotElf);
    }
    let endian = elf.endian();
    let segments: Vec<(u64, u64, u64)> = elf
        .elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(endian) == PT_LOAD)
        .map(|ph| (ph.p_offset(endian), ph.p_vaddr(endian), ph.p_filesz(endian)))
        .collect();
    let base = segments.iter().map(|s| s.1).min().unwrap_or(0) & !0xfff;
    let top = segments.iter().map(|s| s.1 + s.2).max().unwrap_or(0);
    if top - base > u64::from(u32::MAX) {
        return Err(NoTable::TooLarge);
    }
    let section = |name: &str| {
        elf.section_by_name(name)
            .and_then(|s| Some((s.data().ok()?, s.address())))
    };
    let text = elf.section_by_name(".text").map_or(0, |s| s.address());
    let mut raw = Vec::new();
    if let Some((d, addr)) = section(".eh_frame") {
        let bases = BaseAddresses::default().set_eh_frame(addr).set_text(text);
        let mut s = EhFrame::new(d, LittleEndian);
        s.set_address_size(8);
        collect(&s, &bases, &mut raw);
    }
    if let Some((d, _)) = section(".debug_frame") {
        let mut s = DebugFrame::new(d, LittleEndian);
        s.set_address_size(8);
        collect(&s, &BaseAddresses::default(), &mut raw);
    }
    if raw.is_empty() {
        return Err(NoTable::NoCfi);
    }
    Ok(Table {
        base,
        rows: finish(raw, base),
        segments,
    })
}

/// A row before relocation: [start, end) and the rule.
struct Raw {
    start: u64,
    end: u64,
    row: Row,
}

fn collect<'a, S>(section: &S, bases: &BaseAddresses, out: &mut Vec<Raw>)
where
    S: UnwindSection<EndianSlice<'a, LittleEndian>>,
    S::Offset: gimli::UnwindOffset<usize>,
{
    let mut ctx = UnwindContext::new();
    let mut entries = section.entries(bases);
    // A parse error ends the walk: entries have no other way to resync.
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(S::cie_from_offset) else {
            continue;
        };
        let Ok(mut rows) = fde.rows(section, bases, &mut ctx) else {
            continue;
        };
        loop {
            match rows.next_row() {
                Ok(Some(r)) => out.push(Raw {
                    start: r.start_address(),
                    end: r.end_address(),
                    row: rule(section, r),
                }),
                Ok(None) => break,
                // The rest of this FDE cannot be trusted: end stacks there.
                Err(_) => {
                    out.push(Raw {
                        start: out.last().map_or(fde.initial_address(), |r| r.end),
                        end: fde.end_address(),
                        row: stop(),
                    });
                    break;
                }
            }
        }
    }
}

fn stop() -> Row {
    Row {
        pc: 0,
        off: 0,
        cfa: tm_cfa::TM_CFA_STOP.0 as u8,
        rbp: RBP_UNKNOWN,
    }
}

/// The PLT's CFA: rsp + 8, + 8 more past the push in each 16-byte entry,
/// `DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_litN;
/// DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus`: N, the offset of the jump.
fn plt_threshold(expr: &[u8]) -> Option<u8> {
    match *expr {
        [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, lit, 0x2a, 0x33, 0x24, 0x22]
            if (0x30..0x40).contains(&lit) =>
        {
            Some(lit - 0x30)
        }
        _ => None,
    }
}

fn rule<'a, S>(section: &S, r: &gimli::UnwindTableRow<usize>) -> Row
where
    S: UnwindSection<EndianSlice<'a, LittleEndian>>,
{
    let ra_at_cfa_minus_8 = matches!(r.register(RA), Some(RegisterRule::Offset(-8)));
    if matches!(r.register(RA), Some(RegisterRule::Undefined)) {
        // The outermost frame (_start, a thread's start): the stack ends
        // here, complete.
        return Row {
            cfa: tm_cfa::TM_CFA_END.0 as u8,
            ..stop()
        };
    }
    let (cfa, off) = match r.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let Ok(off) = u16::try_from(*offset) else {
                return stop();
            };
            match *register {
                RSP => (tm_cfa::TM_CFA_RSP, off),
                RBP => (tm_cfa::TM_CFA_RBP, off),
                _ => return stop(),
            }
        }
        CfaRule::Expression(e) => {
            let bytes = e.get(section).ok().map(|x| x.0.slice());
            match bytes.and_then(plt_threshold) {
                Some(n) => (tm_cfa::TM_CFA_PLT, u16::from(n)),
                None => return stop(),
            }
        }
    };
    if !ra_at_cfa_minus_8 {
        return stop();
    }
    let rbp = match r.register(RBP) {
        // Not mentioned: callee-saved, so unchanged.
        None | Some(RegisterRule::SameValue) => 0,
        Some(RegisterRule::Offset(n)) if n % 8 == 0 && n != 0 => i8::try_from(n / 8)
            .ok()
            .filter(|&v| v != RBP_UNKNOWN)
            .unwrap_or(RBP_UNKNOWN),
        Some(_) => RBP_UNKNOWN,
    };
    Row {
        pc: 0,
        off,
        cfa: cfa.0 as u8,
        rbp,
    }
}

/// Rows sorted by address, relative to `base`, with a stop row wherever no
/// FDE covers the code, consecutive equal rules merged.
fn finish(mut raw: Vec<Raw>, base: u64) -> Vec<Row> {
    raw.retain(|r| r.start >= base && r.end > r.start && r.end - base <= u64::from(u32::MAX));
    raw.sort_by_key(|r| r.start);
    let mut rows: Vec<Row> = Vec::with_capacity(raw.len() + raw.len() / 4);
    let mut covered_to = 0u64;
    for r in &raw {
        if !rows.is_empty() && r.start > covered_to {
            rows.push(Row {
                pc: (covered_to - base) as u32,
                ..stop()
            });
        }
        let row = Row {
            pc: (r.start - base) as u32,
            ..r.row
        };
        match rows.last_mut() {
            // Overlapping FDEs (rare: .debug_frame beside .eh_frame): the
            // later start wins from there on.
            Some(last) if last.pc == row.pc => *last = row,
            _ => rows.push(row),
        }
        covered_to = covered_to.max(r.end);
    }
    if !rows.is_empty() {
        rows.push(Row {
            pc: (covered_to - base) as u32,
            ..stop()
        });
    }
    rows.dedup_by(|next, prev| next.same_rule(prev));
    rows
}

/// Compiled tables on disk, keyed by build-id, under the XDG cache dir:
/// a large program's CFI takes tens of milliseconds to compile, a cached
/// table a read.
pub struct Cache {
    dir: Option<PathBuf>,
}

const MAGIC: &[u8; 8] = b"tmcfi\0\0\x01";

impl Cache {
    pub fn new() -> Cache {
        let dir = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("tm-tui").join("cfi"));
        Cache { dir }
    }

    #[cfg(test)]
    pub fn at(dir: PathBuf) -> Cache {
        Cache { dir: Some(dir) }
    }

    fn file(&self, build_id: &[u8]) -> Option<PathBuf> {
        let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
        Some(self.dir.as_ref()?.join(format!("{hex}.rows")))
    }

    /// The table of the file at `path`, from the cache when its build-id
    /// is there, else compiled (and stored when it has a build-id).
    pub fn table(&self, path: &Path) -> Result<Table, NoTable> {
        let data = std::fs::read(path)?;
        let build_id = ElfFile64::<Endianness, _>::parse(&*data)
            .ok()
            .and_then(|e| e.build_id().ok().flatten().map(<[u8]>::to_vec));
        let file = build_id.as_deref().and_then(|b| self.file(b));
        if let Some(t) = file.as_deref().and_then(load) {
            return Ok(t);
        }
        let t = compile_bytes(&data)?;
        if let Some(f) = file {
            // A cache that cannot be written is only slower.
            let _ = store(&f, &t);
        }
        Ok(t)
    }
}

fn store(path: &Path, t: &Table) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(32 + 24 * t.segments.len() + 8 * t.rows.len());
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&t.base.to_le_bytes());
    b.extend_from_slice(&(t.segments.len() as u64).to_le_bytes());
    b.extend_from_slice(&(t.rows.len() as u64).to_le_bytes());
    for &(o, v, s) in &t.segments {
        for x in [o, v, s] {
            b.extend_from_slice(&x.to_le_bytes());
        }
    }
    for r in &t.rows {
        b.extend_from_slice(&r.pc.to_le_bytes());
        b.extend_from_slice(&r.off.to_le_bytes());
        b.push(r.cfa);
        b.push(r.rbp as u8);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write then rename: a reader never sees half a table.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    File::create(&tmp)?.write_all(&b)?;
    std::fs::rename(tmp, path)
}

fn load(path: &Path) -> Option<Table> {
    let mut b = Vec::new();
    File::open(path).ok()?.read_to_end(&mut b).ok()?;
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
    };
    if b.get(..8)? != MAGIC {
        return None;
    }
    let base = word(8)?;
    let nseg = usize::try_from(word(16)?).ok()?;
    let nrows = usize::try_from(word(24)?).ok()?;
    let rows_at = 32usize.checked_add(nseg.checked_mul(24)?)?;
    if b.len() != rows_at.checked_add(nrows.checked_mul(8)?)? {
        return None;
    }
    let segments = (0..nseg)
        .map(|i| Some((word(32 + 24 * i)?, word(40 + 24 * i)?, word(48 + 24 * i)?)))
        .collect::<Option<Vec<_>>>()?;
    let rows = b[rows_at..]
        .chunks_exact(8)
        .map(|c| Row {
            pc: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            off: u16::from_le_bytes([c[4], c[5]]),
            cfa: c[6],
            rbp: c[7] as i8,
        })
        .collect();
    Some(Table {
        base,
        segments,
        rows,
    })
}

/// The row covering row-pc `pc`, as the tracer finds it.
#[cfg(test)]
pub fn lookup(rows: &[Row], pc: u32) -> Option<&Row> {
    let i = rows.partition_point(|r| r.pc <= pc);
    rows.get(i.checked_sub(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libc() -> PathBuf {
        PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6")
    }

    #[test]
    fn compiles_libc_into_sorted_rows_most_of_them_rsp_based() {
        let t = compile(&libc()).unwrap();
        assert!(t.rows.len() > 5000, "{} rows", t.rows.len());
        assert!(t.rows.windows(2).all(|w| w[0].pc < w[1].pc));
        let rsp = t
            .rows
            .iter()
            .filter(|r| r.cfa == tm_cfa::TM_CFA_RSP.0 as u8)
            .count();
        assert!(rsp * 10 > t.rows.len() * 8, "{rsp} of {}", t.rows.len());
        // No two neighbours with one rule: merged.
        assert!(t.rows.windows(2).all(|w| !w[0].same_rule(&w[1])));
    }

    #[test]
    fn function_entry_is_cfa_rsp_plus_8() {
        // Every FDE's first row is the state at a call: CFA = rsp + 8.
        let data = std::fs::read(libc()).unwrap();
        let elf = ElfFile64::<Endianness, _>::parse(&*data).unwrap();
        let sym = elf
            .dynamic_symbols()
            .find(|s| object::ObjectSymbol::name(s) == Ok("malloc"))
            .unwrap();
        let t = compile_bytes(&data).unwrap();
        let addr = object::ObjectSymbol::address(&sym);
        let row = lookup(&t.rows, (addr - t.base) as u32).unwrap();
        assert_eq!((row.cfa, row.off), (tm_cfa::TM_CFA_RSP.0 as u8, 8));
    }

    #[test]
    fn the_page_index_brackets_every_lookup() {
        let t = compile(&libc()).unwrap();
        let index = t.page_index();
        for pc in (0..t.rows.last().unwrap().pc).step_by(97) {
            let want = t.rows.partition_point(|r| r.pc <= pc).checked_sub(1);
            let k = (pc >> 12) as usize;
            let (a, b) = (index[k].0 as usize, index[k].1 as usize);
            let got = t.rows[a..=b].partition_point(|r| r.pc <= pc);
            let got = (got > 0).then(|| a + got - 1);
            assert_eq!(got, want, "pc {pc:#x}");
        }
    }

    #[test]
    fn the_plt_expression_is_recognized() {
        let e = [
            0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
        ];
        assert_eq!(plt_threshold(&e), Some(11));
        assert_eq!(plt_threshold(&e[..10]), None);
    }

    #[test]
    fn cache_round_trips_and_rejects_damage() {
        let dir = std::env::temp_dir().join(format!("tm-cfi-{}", std::process::id()));
        let cache = Cache::at(dir.clone());
        let a = cache.table(&libc()).unwrap();
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(files.len(), 1);
        let b = cache.table(&libc()).unwrap();
        assert_eq!(a, b);
        let f = files[0].path();
        let mut bytes = std::fs::read(&f).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&f, &bytes).unwrap();
        assert!(load(&f).is_none());
        assert_eq!(cache.table(&libc()).unwrap(), a);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(compile_bytes(b"\x7fELF nonsense").is_err());
        assert!(compile_bytes(&[]).is_err());
        let mut data = std::fs::read(libc()).unwrap();
        // Scribble over the middle of the file (the CFI lies in it).
        let n = data.len();
        for (i, b) in data[n / 4..n / 2].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37);
        }
        let _ = compile_bytes(&data);
    }
}
