//! Symbolization of normalized frames with blazesym: works from the
//! module files alone, so it runs after the target has exited, and from a
//! module's separate debug info (found by build-id under /usr/lib/debug,
//! by debuglink, or fetched with debuginfod) when the file is stripped.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use object::elf::PT_LOAD;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object, ObjectSection};

use crate::event::{Frame, Module, ModuleId};

/// Where debug info is installed (Debian's -dbgsym packages and -dbg
/// packages put it under the first).
const DEBUG_DIRS: [&str; 2] = ["/usr/lib/debug", "/lib/debug"];

/// What symbolization needs to know of a module's ELF file, read once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ElfInfo {
    pub build_id: Option<String>,
    /// (file offset, vaddr, size in the file) of each PT_LOAD.
    pub segments: Vec<[u64; 3]>,
    /// A symbol table or DWARF of its own.
    pub own_symbols: bool,
    /// The file name its `.gnu_debuglink` names.
    pub debuglink: Option<String>,
}

impl ElfInfo {
    /// Reads only the headers and the few sections it needs (through a
    /// read cache: a 100 MB binary is not read whole). `None` for a file
    /// that is not a 64-bit ELF.
    pub fn read(file: &File) -> Option<ElfInfo> {
        let cache = object::ReadCache::new(file);
        let elf = ElfFile64::<Endianness, _>::parse(&cache).ok()?;
        let endian = elf.endian();
        Some(ElfInfo {
            build_id: elf
                .build_id()
                .ok()
                .flatten()
                .filter(|b| !b.is_empty())
                .map(hex),
            segments: elf
                .elf_program_headers()
                .iter()
                .filter(|ph| ph.p_type(endian) == PT_LOAD)
                .map(|ph| [ph.p_offset(endian), ph.p_vaddr(endian), ph.p_filesz(endian)])
                .collect(),
            own_symbols: [".symtab", ".debug_info"].iter().any(|n| {
                elf.section_by_name(n).is_some_and(|s| {
                    s.size() > 0 && s.kind() != object::SectionKind::UninitializedData
                })
            }),
            debuglink: elf
                .gnu_debuglink()
                .ok()
                .flatten()
                .map(|(name, _)| String::from_utf8_lossy(name).into_owned()),
        })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The build-id of the ELF file at `path`, in hex.
fn build_id_of(path: &Path) -> Option<String> {
    ElfInfo::read(&File::open(path).ok()?)?.build_id
}

/// A separate debug file for a module with build-id `build_id` (and the
/// debuglink name `link`, whose file sat at `path`): the build-id
/// directories, then the debuglink's places (GDB's order), each checked to
/// carry the same build-id; then debuginfod, when DEBUGINFOD_URLS is set.
/// `Err` says why debuginfod gave nothing, when it was asked.
pub fn find_debug_file(
    build_id: Option<&str>,
    link: Option<&str>,
    path: &Path,
) -> Result<Option<PathBuf>, String> {
    let mut candidates = Vec::new();
    if let Some(id) = build_id.filter(|id| id.len() > 2) {
        for d in DEBUG_DIRS {
            candidates.push(PathBuf::from(format!(
                "{d}/.build-id/{}/{}.debug",
                &id[..2],
                &id[2..]
            )));
        }
    }
    if let (Some(link), Some(dir)) = (link, path.parent()) {
        candidates.push(dir.join(link));
        candidates.push(dir.join(".debug").join(link));
        for d in DEBUG_DIRS {
            candidates.push(
                Path::new(d)
                    .join(dir.strip_prefix("/").unwrap_or(dir))
                    .join(link),
            );
        }
    }
    for c in candidates {
        if c != path
            && c.is_file()
            && (build_id.is_none() || build_id_of(&c).as_deref() == build_id)
        {
            return Ok(Some(c));
        }
    }
    match build_id {
        Some(id) => debuginfod(id),
        None => Ok(None),
    }
}

/// `debuginfod-find debuginfo ID` (elfutils): it honours DEBUGINFOD_URLS,
/// DEBUGINFOD_TIMEOUT and friends and keeps the cache gdb shares. Asked
/// only when DEBUGINFOD_URLS is set, as the elfutils and gdb clients do.
fn debuginfod(build_id: &str) -> Result<Option<PathBuf>, String> {
    if std::env::var_os("DEBUGINFOD_URLS").is_none_or(|u| u.is_empty()) {
        return Ok(None);
    }
    let mut cmd = Command::new("debuginfod-find");
    cmd.args(["debuginfo", build_id])
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    if std::env::var_os("DEBUGINFOD_TIMEOUT").is_none() {
        // Seconds without progress before it gives up (its default is 90).
        cmd.env("DEBUGINFOD_TIMEOUT", "15");
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(
            "DEBUGINFOD_URLS is set but debuginfod-find is not installed (apt install debuginfod)"
                .into(),
        ),
        Err(e) => return Err(format!("debuginfod-find: {e}")),
    };
    if !out.status.success() {
        return Err("the debuginfod servers in DEBUGINFOD_URLS do not have it".into());
    }
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(p.is_file().then_some(p))
}

/// Where one module's symbols come from.
struct SymSource {
    /// The file blazesym reads: the module itself (opened through the
    /// target, `/proc/self/fd/N`, or by its path), or its debug file.
    path: PathBuf,
    /// `Some`: `path` is a separate debug file, asked by ELF vaddr (its
    /// program headers keep no file offsets); these turn offsets into them.
    debug_of: Option<Module>,
}

pub struct Symbols {
    inner: Symbolizer,
    modules: HashMap<ModuleId, SymSource>,
    /// Module files opened through the target (its mount namespace, its
    /// deleted files): kept open so symbolizing works after it is gone.
    _open: Vec<File>,
}

impl Default for Symbols {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbols {
    pub fn new() -> Self {
        Symbols {
            inner: Symbolizer::builder()
                .enable_demangling(true)
                .enable_code_info(true)
                .enable_inlined_fns(true)
                .build(),
            modules: HashMap::new(),
            _open: Vec::new(),
        }
    }

    /// Takes a module, and its file as the target had it mapped (`None`:
    /// found by its path, as when a trace is opened later, used only if
    /// its build-id is the recorded one). `Some` when no symbols can be
    /// found for it.
    pub fn add_module(&mut self, m: &Module, file: Option<File>) -> Option<NoSymbols> {
        let (path, info) = match file {
            Some(f) => {
                let info = ElfInfo::read(&f);
                // SAFETY-free fd path: the file stays open in `_open`.
                let p = PathBuf::from(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&f)
                ));
                self._open.push(f);
                (Some(p), info)
            }
            None => {
                let p = PathBuf::from(&m.path);
                let info = File::open(&p).ok().and_then(|f| ElfInfo::read(&f));
                // Another file at that path now: only its debug info by
                // the recorded build-id can serve.
                let same = info
                    .as_ref()
                    .is_some_and(|i| m.build_id.is_none() || i.build_id == m.build_id);
                if same {
                    (Some(p), info)
                } else {
                    (None, None)
                }
            }
        };
        let own = info.as_ref().is_some_and(|i| i.own_symbols);
        if let (true, Some(p)) = (own, &path) {
            self.modules.insert(
                m.id,
                SymSource {
                    path: p.clone(),
                    debug_of: None,
                },
            );
            return None;
        }
        let build_id = m
            .build_id
            .clone()
            .or_else(|| info.as_ref()?.build_id.clone());
        let link = info.as_ref().and_then(|i| i.debuglink.clone());
        let found = find_debug_file(build_id.as_deref(), link.as_deref(), Path::new(&m.path));
        let mut m = m.clone();
        if m.segments.is_empty() {
            m.segments = info.map(|i| i.segments).unwrap_or_default();
        }
        match found {
            Ok(Some(debug)) if !m.segments.is_empty() => {
                self.modules.insert(
                    m.id,
                    SymSource {
                        path: debug,
                        debug_of: Some(m),
                    },
                );
                None
            }
            why => {
                if let Some(p) = path {
                    // Its exported symbols (.dynsym) still name some frames.
                    self.modules.insert(
                        m.id,
                        SymSource {
                            path: p,
                            debug_of: None,
                        },
                    );
                }
                Some(NoSymbols {
                    path: m.path.clone(),
                    debuginfod_said: why.err(),
                })
            }
        }
    }

    /// Fill in function, file and line of `frames`, one blazesym call per
    /// module; where the compiler inlined calls at a frame's address, the
    /// inlined functions become frames of their own before it (marked
    /// `inlined`, same address), innermost first as the stack is. Frames of
    /// unreadable modules stay module+offset; frames already named are left
    /// as they are.
    pub fn symbolize(&self, frames: &mut Vec<Frame>) {
        let mut by_module: HashMap<ModuleId, Vec<usize>> = HashMap::new();
        for (i, f) in frames.iter().enumerate() {
            if let (Some(m), None) = (f.module, &f.func) {
                by_module.entry(m).or_default().push(i);
            }
        }
        // The inlined frames to put before frame i.
        let mut inlined: HashMap<usize, Vec<Frame>> = HashMap::new();
        for (module, mut idxs) in by_module {
            let Some(src) = self.modules.get(&module) else {
                continue;
            };
            let elf = Source::Elf(Elf::new(&src.path));
            let syms = match &src.debug_of {
                None => {
                    let offsets: Vec<u64> = idxs.iter().map(|&i| frames[i].offset).collect();
                    self.inner.symbolize(&elf, Input::FileOffset(&offsets))
                }
                Some(m) => {
                    idxs.retain(|&i| m.vaddr_of(frames[i].offset).is_some());
                    let vaddrs: Vec<u64> = idxs
                        .iter()
                        .filter_map(|&i| m.vaddr_of(frames[i].offset))
                        .collect();
                    self.inner.symbolize(&elf, Input::VirtOffset(&vaddrs))
                }
            };
            let Ok(syms) = syms else {
                continue;
            };
            for (&i, sym) in idxs.iter().zip(syms) {
                let Symbolized::Sym(sym) = sym else {
                    continue;
                };
                let f = &mut frames[i];
                f.func = Some(sym.name.into_owned());
                if let Some(ci) = sym.code_info {
                    f.file = Some(ci.file.to_string_lossy().into_owned());
                    f.line = ci.line.unwrap_or(0);
                }
                if sym.inlined.is_empty() {
                    continue;
                }
                // blazesym lists them outermost first, each with the line
                // in it (the innermost's: the address's own).
                let extra: Vec<Frame> = sym
                    .inlined
                    .iter()
                    .rev()
                    .map(|inl| Frame {
                        func: Some(inl.name.to_string()),
                        file: inl
                            .code_info
                            .as_ref()
                            .map(|ci| ci.file.to_string_lossy().into_owned()),
                        line: inl.code_info.as_ref().and_then(|ci| ci.line).unwrap_or(0),
                        inlined: true,
                        ..f.clone()
                    })
                    .collect();
                inlined.insert(i, extra);
            }
        }
        if inlined.is_empty() {
            return;
        }
        let old = std::mem::take(frames);
        for (i, f) in old.into_iter().enumerate() {
            if let Some(extra) = inlined.remove(&i) {
                frames.extend(extra);
            }
            frames.push(f);
        }
    }
}

/// A module whose frames stay module+offset.
pub struct NoSymbols {
    path: String,
    /// Why debuginfod gave nothing, when it was asked.
    debuginfod_said: Option<String>,
}

impl NoSymbols {
    /// "no symbols for X: …", naming the package whose -dbgsym has them
    /// (asks dpkg).
    pub fn note(&self) -> String {
        no_symbols_note(&self.path, self.debuginfod_said.as_deref())
    }
}

fn no_symbols_note(path: &str, debuginfod_said: Option<&str>) -> String {
    // Debian lists merged-/usr files under /bin, /lib.
    let alias = path.strip_prefix("/usr").unwrap_or(path).to_string();
    let pkg = [path.to_string(), alias].into_iter().find_map(|p| {
        let o = Command::new("dpkg")
            .args(["-S", &p])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        Some(out.split(':').next()?.trim().to_string())
            .filter(|p| !p.is_empty() && !p.contains(' '))
    });
    let install = match pkg {
        Some(p) => format!("install {p}-dbgsym (from Debian's debug archive)"),
        None => "install its debug symbols under /usr/lib/debug".to_string(),
    };
    match debuginfod_said {
        Some(why) => format!("no symbols for {path}: it is stripped and {why}; {install} — its frames show as module+offset"),
        None => format!(
            "no symbols for {path}: it is stripped; {install} or set DEBUGINFOD_URLS — its frames show as module+offset"
        ),
    }
}
