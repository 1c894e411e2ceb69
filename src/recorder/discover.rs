//! Allocator discovery: which object really provides malloc for a target,
//! and where in it each allocator entry point is to be probed.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use blazesym::inspect::source::{Elf, Source};
use blazesym::inspect::Inspector;

use crate::event::AllocFn;
use crate::recorder::maps::read_maps;
use crate::recorder::place;
use crate::recorder::probes::ModuleFile;

/// One uprobe to attach: the entry of an allocator function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The function the program calls; aliases (memalign = aligned_alloc)
    /// share one probe, named after the first.
    pub func: AllocFn,
    pub name: &'static str,
    /// File offset of the probed instruction.
    pub offset: u64,
    /// Bytes from the function's entry to the probed instruction, the
    /// first the kernel emulates (see [`super::place`]); the return probe
    /// goes there too.
    pub skipped: u64,
    /// Where the first three arguments are at the probe (indices into
    /// [`super::place::REGS`]): the tracer reads them there.
    pub args: [u8; 3],
    /// Why the probe sits on a single-stepped instruction, if it does.
    pub stepped: Option<String>,
}

impl Probe {
    /// Back to the function's entry, arguments in their own registers.
    pub fn at_entry(&mut self) {
        self.offset -= self.skipped;
        self.skipped = 0;
        self.args = [0, 1, 2];
    }
}

#[derive(Clone, Debug)]
pub struct Allocator {
    /// The path as the target names it (for display and the trace file).
    pub path: PathBuf,
    /// The path tm-tui opens: through /proc/PID/root for attached targets,
    /// so targets in other mount namespaces work.
    pub open_path: PathBuf,
    pub probes: Vec<Probe>,
}

const FUNCS: [(&str, AllocFn); 10] = [
    ("malloc", AllocFn::Malloc),
    ("calloc", AllocFn::Calloc),
    ("realloc", AllocFn::Realloc),
    ("reallocarray", AllocFn::Reallocarray),
    ("posix_memalign", AllocFn::PosixMemalign),
    ("memalign", AllocFn::Memalign),
    ("aligned_alloc", AllocFn::Memalign),
    ("valloc", AllocFn::Valloc),
    ("pvalloc", AllocFn::Pvalloc),
    ("free", AllocFn::Free),
];

/// The allocator of a running process: the executable, a preloaded or
/// linked allocator (jemalloc, tcmalloc, mimalloc, …) or libc, whichever
/// defines malloc first in the dynamic linker's lookup order.
pub fn for_pid(pid: u32) -> Result<Allocator> {
    let objects = objects_of_pid(pid)?;
    let maps = read_maps(pid).unwrap_or_default();
    choose(&objects, |p| open_path_of(pid, p, &maps))
}

/// Where tm-tui opens a process's module: through /proc/PID/root (its
/// mount namespace), or, for a file deleted since it was mapped (a binary
/// upgraded under a running server), through /proc/PID/map_files.
fn open_path_of(pid: u32, path: &Path, maps: &[crate::recorder::maps::MapEntry]) -> PathBuf {
    let via_root =
        PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path));
    if via_root.exists() {
        return via_root;
    }
    maps.iter()
        .filter(|m| m.path.as_deref() == Some(path) && m.name.ends_with(" (deleted)"))
        .min_by_key(|m| m.offset)
        .map(|m| PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)))
        .unwrap_or(via_root)
}

/// The ELF objects mapped into a running process, the executable first.
fn objects_of_pid(pid: u32) -> Result<Vec<PathBuf>> {
    let maps = read_maps(pid).with_context(|| format!("cannot read /proc/{pid}/maps"))?;
    // A deleted executable's link says so; its maps entries do not.
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok().map(|e| {
        let s = e.to_string_lossy();
        s.strip_suffix(" (deleted)")
            .map_or(e.clone(), PathBuf::from)
    });
    let mut objects: Vec<PathBuf> = Vec::new();
    if let Some(exe) = &exe {
        objects.push(exe.clone());
    }
    for m in &maps {
        if let Some(p) = &m.path {
            if !objects.contains(p) && looks_like_elf_object(p) {
                objects.push(p.clone());
            }
        }
    }
    Ok(objects)
}

/// The modules of a running process, opened through /proc/PID/root.
pub fn modules_of_pid(pid: u32) -> Result<Vec<ModuleFile>> {
    let maps = read_maps(pid).unwrap_or_default();
    Ok(objects_of_pid(pid)?
        .into_iter()
        .map(|p| ModuleFile {
            open_path: open_path_of(pid, &p, &maps),
            path: p,
        })
        .collect())
}

/// The modules a program will have once launched (its libraries as its
/// dynamic loader resolves them).
pub fn modules_of_program(exe: &Path) -> Result<Vec<ModuleFile>> {
    Ok(objects_of_program(exe)?
        .into_iter()
        .map(|p| ModuleFile {
            open_path: p.clone(),
            path: p,
        })
        .collect())
}

/// The allocator a program will use once launched: a static executable
/// is its own allocator; a dynamic one gets its libraries resolved by its
/// own dynamic loader (`ld.so --list`, what ldd does), with the caller's
/// environment so LD_PRELOAD and LD_LIBRARY_PATH count.
pub fn for_program(exe: &Path) -> Result<Allocator> {
    choose(&objects_of_program(exe)?, Path::to_path_buf)
}

fn objects_of_program(exe: &Path) -> Result<Vec<PathBuf>> {
    let data = fs::read(exe).with_context(|| format!("cannot read {}", exe.display()))?;
    // A script runs in its interpreter: its objects are the program's.
    if let Some(interp) = script_interpreter(&data) {
        let real = interpreter_path(&interp).with_context(|| {
            format!(
                "{} is a script for {interp}, which is not found",
                exe.display()
            )
        })?;
        return objects_of_program(&real);
    }
    let Some(interp) = elf_interp(&data).map_err(|e| anyhow!("{}: {e}", exe.display()))? else {
        return Ok(vec![exe.to_path_buf()]);
    };
    let out = Command::new(&interp)
        .arg("--list")
        .arg(exe)
        .output()
        .with_context(|| format!("cannot run the dynamic loader {interp} to list libraries"))?;
    if !out.status.success() {
        bail!(
            "{interp} --list {} failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut objects = vec![exe.to_path_buf()];
    objects.extend(parse_ld_list(&String::from_utf8_lossy(&out.stdout)));
    Ok(objects)
}

/// Library paths from `ld.so --list` output, in lookup order.
fn parse_ld_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once(" => ") {
                Some((_, rest)) => rest.split(" (").next()?,
                None => l.split(" (").next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn looks_like_elf_object(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !p.starts_with("/dev") && !p.starts_with("/memfd:") && !name.ends_with(".cache")
}

fn is_system_libc(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    is_glibc(p) || name.starts_with("ld-linux")
}

/// glibc's libc.so (its malloc keeps a header between blocks).
pub fn is_glibc(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.starts_with("libc.so") || name.starts_with("libc-")
}

/// The first object that defines both malloc and free, preferring any
/// object over libc (an allocator that interposes malloc wins).
fn choose(objects: &[PathBuf], open: impl Fn(&Path) -> PathBuf) -> Result<Allocator> {
    let inspector = Inspector::new();
    let ordered = objects
        .iter()
        .filter(|p| !is_system_libc(p))
        .chain(objects.iter().filter(|p| is_system_libc(p)));
    for path in ordered {
        let open_path = open(path);
        if let Some(probes) = probes_in(&inspector, &open_path)? {
            return Ok(Allocator {
                path: path.clone(),
                open_path,
                probes,
            });
        }
    }
    let searched: Vec<String> = objects.iter().map(|p| p.display().to_string()).collect();
    Err(anyhow!(
        "no allocator found: none of [{}] defines both malloc and free (is the target using glibc malloc or a malloc-compatible allocator?)",
        searched.join(", ")
    ))
}

/// The probes for an object that defines malloc and free, or None.
fn probes_in(inspector: &Inspector, path: &Path) -> Result<Option<Vec<Probe>>> {
    let mut elf = Elf::new(path);
    elf.debug_syms = false;
    let src = Source::Elf(elf);
    let names: Vec<&str> = FUNCS.iter().map(|(n, _)| *n).collect();
    let Ok(found) = inspector.lookup(&src, &names) else {
        // Not an ELF file we can read (a font, a locale archive): not it.
        return Ok(None);
    };
    let mut by_offset: HashMap<u64, usize> = HashMap::new();
    let mut probes: Vec<Probe> = Vec::new();
    for ((name, func), syms) in FUNCS.iter().zip(found) {
        let Some(sym) = syms.into_iter().find(|s| s.file_offset.is_some()) else {
            continue;
        };
        let Some(entry) = sym.file_offset else {
            continue;
        };
        // One address, one probe: two would count every call twice.
        if by_offset.contains_key(&entry) {
            continue;
        }
        by_offset.insert(entry, probes.len());
        // The code from the entry, and the whole function (up to 1 MiB)
        // to look for branches back into what the probe skips.
        let body = sym.size.and_then(|n| read_at(path, entry, n.min(1 << 20)));
        let head = read_at(path, entry, 128).unwrap_or_default();
        let placed = place::place(&head, sym.addr, nargs(*func), body.as_deref());
        probes.push(Probe {
            func: *func,
            name,
            offset: entry + placed.skipped,
            skipped: placed.skipped,
            args: placed.args,
            stepped: placed.stepped,
        });
    }
    let has = |f: AllocFn| probes.iter().any(|p| p.func == f);
    if has(AllocFn::Malloc) && has(AllocFn::Free) {
        Ok(Some(probes))
    } else {
        Ok(None)
    }
}

/// Up to `len` bytes at `offset` (fewer at the end of the file).
fn read_at(path: &Path, offset: u64, len: usize) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = Vec::with_capacity(len);
    f.take(len as u64).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// The arguments of an allocator function.
fn nargs(f: AllocFn) -> usize {
    match f {
        AllocFn::Malloc | AllocFn::Valloc | AllocFn::Pvalloc | AllocFn::Free => 1,
        AllocFn::Calloc | AllocFn::Realloc | AllocFn::Memalign => 2,
        AllocFn::Reallocarray | AllocFn::PosixMemalign => 3,
    }
}

/// The interpreter a script names on its `#!` line (for `#!/usr/bin/env
/// NAME`, NAME).
fn script_interpreter(data: &[u8]) -> Option<String> {
    let line = data.strip_prefix(b"#!")?.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let first = words.next()?.to_string();
    if first.ends_with("/env") {
        // `env -S a b`, `env NAME`: the first word not an option.
        return words.find(|w| !w.starts_with('-')).map(str::to_string);
    }
    Some(first)
}

/// An interpreter's executable: a path as is, a bare name through $PATH.
fn interpreter_path(name: &str) -> Result<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if p.exists() {
            Ok(p)
        } else {
            bail!("no {name}")
        };
    }
    super::launch::resolve_program(name)
}

/// The PT_INTERP of an ELF executable, or None for a static one.
pub fn elf_interp(data: &[u8]) -> Result<Option<String>> {
    use object::elf::{FileHeader64, PT_INTERP};
    use object::read::elf::{FileHeader, ProgramHeader};
    use object::Endianness;
    let header = FileHeader64::<Endianness>::parse(data)
        .map_err(|_| anyhow!("not a 64-bit ELF executable"))?;
    let endian = header
        .endian()
        .map_err(|_| anyhow!("not a 64-bit ELF executable"))?;
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|_| anyhow!("corrupt ELF program headers"))?;
    for ph in phdrs {
        if ph.p_type(endian) == PT_INTERP {
            let raw = ph
                .data(endian, data)
                .map_err(|_| anyhow!("corrupt PT_INTERP"))?;
            let s = raw.split(|b| *b == 0).next().unwrap_or_default();
            return Ok(Some(String::from_utf8_lossy(s).into_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's glibc: free past its NULL test (on the je), the others on
    /// an emulated instruction too, every argument in its own register.
    #[test]
    fn places_glibc_probes_on_emulated_instructions() {
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        let Ok(Some(probes)) = probes_in(&Inspector::new(), libc) else {
            panic!("glibc's allocator");
        };
        let free = probes
            .iter()
            .find(|p| p.func == AllocFn::Free)
            .expect("free");
        assert_eq!((free.skipped, free.args[0]), (3, 0), "{free:?}");
        // reallocarray's `mul` overwrites an argument before its jump to
        // realloc (which is probed): the one left on its entry.
        for p in probes.iter().filter(|p| p.func != AllocFn::Reallocarray) {
            assert!(p.stepped.is_none(), "{p:?}");
        }
    }

    #[test]
    fn parses_ld_list() {
        let out = "\tlinux-vdso.so.1 (0x00007ffc)\n\tlibjemalloc.so.2 => /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 (0x00007f1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        assert_eq!(
            parse_ld_list(out),
            vec![
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn finds_libc_malloc_and_dedups_aliases() {
        let a = for_program(Path::new("/bin/true")).expect("allocator of /bin/true");
        assert!(a.path.to_string_lossy().contains("libc.so"), "{:?}", a.path);
        let offsets: std::collections::HashSet<u64> = a.probes.iter().map(|p| p.offset).collect();
        assert_eq!(offsets.len(), a.probes.len(), "one probe per address");
        assert!(a.probes.iter().any(|p| p.func == AllocFn::Free));
    }
}
