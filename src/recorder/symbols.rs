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

/// A separate debug file on this machine for a module with build-id
/// `build_id` (and the debuglink name `link`, whose file sat at `path`):
/// the build-id directories, the debuginfod client's cache, then the
/// debuglink's places (GDB's order), each checked to carry the same
/// build-id.
pub fn find_local_debug(
    build_id: Option<&str>,
    link: Option<&str>,
    path: &Path,
) -> Option<PathBuf> {
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
    if let Some(id) = build_id {
        // What debuginfod-find (here or by gdb) fetched before.
        if let Some(dir) = debuginfod_cache() {
            candidates.push(dir.join(id).join("debuginfo"));
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
    candidates.into_iter().find(|c| {
        c != path && c.is_file() && (build_id.is_none() || build_id_of(c).as_deref() == build_id)
    })
}

/// The debuginfod client's cache, as elfutils places it.
fn debuginfod_cache() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DEBUGINFOD_CACHE_PATH").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("debuginfod_client"))
}

/// Whether debuginfod is to be asked: DEBUGINFOD_URLS is set, as the
/// elfutils and gdb clients decide.
fn debuginfod_on() -> bool {
    std::env::var_os("DEBUGINFOD_URLS").is_some_and(|u| !u.is_empty())
}

/// `debuginfod-find debuginfo ID` (elfutils): it honours DEBUGINFOD_URLS,
/// DEBUGINFOD_TIMEOUT and friends and keeps the cache gdb shares.
fn debuginfod(build_id: &str) -> Result<Option<PathBuf>, String> {
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

/// A module whose debug info debuginfod is fetching, on a thread of its
/// own: symbolizing never waits for a download (a live recording would
/// stall and its ring buffer fill).
struct Pending {
    module: Module,
    done: crossbeam_channel::Receiver<Result<Option<PathBuf>, String>>,
}

pub struct Symbols {
    inner: Symbolizer,
    modules: HashMap<ModuleId, SymSource>,
    pending: Vec<Pending>,
    /// Modules found without symbols since the last [`Symbols::take_notes`].
    notes: Vec<NoSymbols>,
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
            pending: Vec::new(),
            notes: Vec::new(),
            _open: Vec::new(),
        }
    }

    /// Takes a module, and its file as the target had it mapped (`None`:
    /// found by its path, as when a trace is opened later, used only if
    /// its build-id is the recorded one). A module that turns out to have
    /// no symbols is told by [`Symbols::take_notes`].
    pub fn add_module(&mut self, m: &Module, file: Option<File>) {
        let given = file.is_some();
        let (path, info) = match file {
            Some(f) => {
                let info = ElfInfo::read(&f);
                // The file stays open in `_open`: its fd names it.
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
        let own = |p: PathBuf| SymSource {
            path: p,
            debug_of: None,
        };
        if info.as_ref().is_some_and(|i| i.own_symbols) || (given && info.is_none()) {
            // Named by itself, or not an ELF file we can read (nothing to
            // advise about).
            if let Some(p) = path {
                self.modules.insert(m.id, own(p));
            }
            return;
        }
        let build_id = m
            .build_id
            .clone()
            .or_else(|| info.as_ref()?.build_id.clone());
        let link = info.as_ref().and_then(|i| i.debuglink.clone());
        let mut m = m.clone();
        if m.segments.is_empty() {
            m.segments = info.map(|i| i.segments).unwrap_or_default();
        }
        if m.segments.is_empty() {
            return;
        }
        if let Some(debug) =
            find_local_debug(build_id.as_deref(), link.as_deref(), Path::new(&m.path))
        {
            self.modules.insert(
                m.id,
                SymSource {
                    path: debug,
                    debug_of: Some(m),
                },
            );
            return;
        }
        if let Some(p) = path {
            // Its exported symbols (.dynsym) name some frames meanwhile.
            self.modules.insert(m.id, own(p));
        }
        match build_id {
            Some(id) if debuginfod_on() => {
                let (tx, done) = crossbeam_channel::bounded(1);
                let spawned = std::thread::Builder::new()
                    .name("tm-debuginfod".into())
                    .spawn(move || {
                        let _ = tx.send(debuginfod(&id));
                    });
                match spawned {
                    Ok(_) => self.pending.push(Pending { module: m, done }),
                    Err(e) => self.notes.push(NoSymbols {
                        path: m.path,
                        debuginfod_said: Some(format!("debuginfod could not be asked: {e}")),
                    }),
                }
            }
            _ => self.notes.push(NoSymbols {
                path: m.path,
                debuginfod_said: None,
            }),
        }
    }

    /// Takes the debug files debuginfod has brought since (all of them,
    /// waiting, when `wait`).
    fn poll_pending(&mut self, wait: bool) {
        let mut still = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            let got = if wait {
                p.done.recv().ok()
            } else {
                match p.done.try_recv() {
                    Ok(r) => Some(r),
                    Err(crossbeam_channel::TryRecvError::Empty) => {
                        still.push(p);
                        continue;
                    }
                    Err(crossbeam_channel::TryRecvError::Disconnected) => None,
                }
            };
            match got {
                Some(Ok(Some(debug))) => {
                    self.modules.insert(
                        p.module.id,
                        SymSource {
                            path: debug,
                            debug_of: Some(p.module),
                        },
                    );
                }
                Some(Ok(None)) => self.notes.push(NoSymbols {
                    path: p.module.path,
                    debuginfod_said: Some("the debuginfod servers gave no file".into()),
                }),
                Some(Err(why)) => self.notes.push(NoSymbols {
                    path: p.module.path,
                    debuginfod_said: Some(why),
                }),
                None => {}
            }
        }
        self.pending = still;
    }

    /// Waits for every debuginfod download under way (for `report` and
    /// `open`, which name what they show once).
    pub fn wait_pending(&mut self) {
        self.poll_pending(true);
    }

    /// Modules found without symbols since the last call; `ending`: also
    /// those whose debug info is still on its way (said so).
    pub fn take_notes(&mut self, ending: bool) -> Vec<NoSymbols> {
        self.poll_pending(false);
        if ending {
            for p in std::mem::take(&mut self.pending) {
                self.notes.push(NoSymbols {
                    path: p.module.path,
                    debuginfod_said: Some(
                        "its debug info was still downloading (debuginfod) when the recording ended; \
                         `tm-tui report` and `open` name its frames once it is in the cache"
                            .into(),
                    ),
                });
            }
        }
        std::mem::take(&mut self.notes)
    }

    /// Fill in function, file and line of `frames`, one blazesym call per
    /// module; where the compiler inlined calls at a frame's address, the
    /// inlined functions become frames of their own before it (marked
    /// `inlined`, same address), innermost first as the stack is. Frames of
    /// unreadable modules stay module+offset; frames with a file and line
    /// already are left as they are (one named by an exported symbol alone
    /// is looked up again: debug info may have come since).
    pub fn symbolize(&mut self, frames: &mut Vec<Frame>) {
        self.poll_pending(false);
        let mut by_module: HashMap<ModuleId, Vec<usize>> = HashMap::new();
        for (i, f) in frames.iter().enumerate() {
            if let (Some(m), None) = (f.module, &f.file) {
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
