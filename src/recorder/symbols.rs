//! Symbolization of normalized frames with blazesym: works from the
//! module files alone, so it runs after the target has exited.

use std::collections::HashMap;
use std::path::Path;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};

use crate::event::{Frame, Module, ModuleId};

/// Whether symbolizing `path` can name more than its exported symbols: it
/// has a symbol table or DWARF, or separate debug info by build-id or
/// debuglink under /usr/lib/debug. Unreadable files say yes: nothing to
/// advise about them.
fn has_symbols(path: &Path) -> bool {
    use object::Object;
    let Ok(data) = std::fs::read(path) else {
        return true;
    };
    let Ok(elf) = object::File::parse(&*data) else {
        return true;
    };
    if elf.section_by_name(".symtab").is_some() || elf.section_by_name(".debug_info").is_some() {
        return true;
    }
    let by_id = elf
        .build_id()
        .ok()
        .flatten()
        .filter(|b| b.len() > 1)
        .map(|b| {
            let rest: String = b[1..].iter().map(|x| format!("{x:02x}")).collect();
            format!("/usr/lib/debug/.build-id/{:02x}/{rest}.debug", b[0])
        });
    let by_link = elf.gnu_debuglink().ok().flatten().and_then(|(name, _)| {
        let dir = path.parent()?;
        Some(format!(
            "/usr/lib/debug{}/{}",
            dir.display(),
            String::from_utf8_lossy(name)
        ))
    });
    [by_id, by_link]
        .into_iter()
        .flatten()
        .any(|p| Path::new(&p).exists())
}

pub struct Symbols {
    inner: Symbolizer,
    modules: HashMap<ModuleId, String>,
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
        }
    }

    /// Takes a module; a note when it has no symbols to find.
    pub fn add_module(&mut self, m: &Module) -> Option<String> {
        self.modules.insert(m.id, m.path.clone());
        let path = Path::new(&m.path);
        if has_symbols(path) {
            return None;
        }
        // Debian lists merged-/usr files under /bin, /lib.
        let alias = m.path.strip_prefix("/usr").unwrap_or(&m.path).to_string();
        let pkg = [m.path.clone(), alias].into_iter().find_map(|p| {
            let o = std::process::Command::new("dpkg")
                .args(["-S", &p])
                .output()
                .ok()
                .filter(|o| o.status.success())?;
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            Some(out.split(':').next()?.trim().to_string())
                .filter(|p| !p.is_empty() && !p.contains(' '))
        });
        Some(format!(
            "no symbols for {}: it is stripped; install {} — its frames show as module+offset",
            m.path,
            match pkg {
                Some(p) => format!("{p}-dbgsym (from Debian's debug archive)"),
                None => "its debug symbols under /usr/lib/debug".to_string(),
            }
        ))
    }

    /// Fill in function, file and line of `frames`, one blazesym call per
    /// module; where the compiler inlined calls at a frame's address, the
    /// inlined functions become frames of their own before it (marked
    /// `inlined`, same address), innermost first as the stack is. Frames of
    /// unreadable modules stay module+offset.
    pub fn symbolize(&self, frames: &mut Vec<Frame>) {
        let mut by_module: HashMap<ModuleId, Vec<usize>> = HashMap::new();
        for (i, f) in frames.iter().enumerate() {
            if let Some(m) = f.module {
                by_module.entry(m).or_default().push(i);
            }
        }
        // The inlined frames to put before frame i.
        let mut inlined: HashMap<usize, Vec<Frame>> = HashMap::new();
        for (module, idxs) in by_module {
            let Some(path) = self.modules.get(&module) else {
                continue;
            };
            let src = Source::Elf(Elf::new(Path::new(path)));
            let offsets: Vec<u64> = idxs.iter().map(|&i| frames[i].offset).collect();
            let Ok(syms) = self.inner.symbolize(&src, Input::FileOffset(&offsets)) else {
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
