//! Symbolization of normalized frames with blazesym: works from the
//! module files alone, so it runs after the target has exited.

use std::collections::HashMap;
use std::path::Path;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};

use crate::event::{Frame, Module, ModuleId};

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
                .enable_inlined_fns(false)
                .build(),
            modules: HashMap::new(),
        }
    }

    pub fn add_module(&mut self, m: &Module) {
        self.modules.insert(m.id, m.path.clone());
    }

    /// Fill in function, file and line of `frames`, one blazesym call per
    /// module. Frames of unreadable modules stay module+offset.
    pub fn symbolize(&self, frames: &mut [Frame]) {
        let mut by_module: HashMap<ModuleId, Vec<usize>> = HashMap::new();
        for (i, f) in frames.iter().enumerate() {
            if let Some(m) = f.module {
                by_module.entry(m).or_default().push(i);
            }
        }
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
                if let Symbolized::Sym(sym) = sym {
                    let f = &mut frames[i];
                    f.func = Some(sym.name.into_owned());
                    if let Some(ci) = sym.code_info {
                        f.file = Some(ci.file.to_string_lossy().into_owned());
                        f.line = ci.line.unwrap_or(0);
                    }
                }
            }
        }
    }
}
