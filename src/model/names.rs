//! Names for display: the frame a user cares about in a stack, labels
//! for frames, and a cache so each unique stack is labelled once.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::util::hash::FxSet;
use crate::util::is_system_path;

use crate::event::{find_stack, Frame, Module, Stack, StackId};

/// The frame a user cares about: the first outside system libraries with
/// source info (their code), else the first outside them at all (a
/// stripped program's own frame, `prog+0x1234`, says more than the libc
/// line that called its main), else the first with source info, else the
/// first with a name, else the first.
pub fn top_user_frame(
    stack: &Stack,
    module_path: impl Fn(u32) -> Option<String>,
) -> Option<&Frame> {
    let user = |f: &&Frame| {
        f.module
            .and_then(&module_path)
            .is_some_and(|p| !is_system_path(&p))
    };
    let mut users = stack.frames.iter().filter(user);
    let first_user = users.clone().next();
    users
        .find(|f| f.file.is_some() && f.func.is_some())
        .or(first_user)
        .or_else(|| {
            stack
                .frames
                .iter()
                .find(|f| f.file.is_some() && f.func.is_some())
        })
        .or_else(|| stack.frames.iter().find(|f| f.func.is_some()))
        .or_else(|| stack.frames.first())
}

pub fn short_file(f: &str) -> &str {
    f.rsplit('/').next().unwrap_or(f)
}

/// `func (file:line)`, `func`, or `module+0xoff`.
pub fn frame_label(f: &Frame, module_path: impl Fn(u32) -> Option<String>) -> String {
    match (&f.func, &f.file) {
        (Some(func), Some(file)) if f.line > 0 => {
            format!("{func} ({}:{})", short_file(file), f.line)
        }
        (Some(func), _) => func.clone(),
        _ => match f.module.and_then(&module_path) {
            Some(m) => format!("{}+{:#x}", short_file(&m), f.offset),
            None => format!("{:#x}", f.addr),
        },
    }
}

/// A stack as aligned lines: `#0  func  file:line` (or module name).
pub fn stack_lines(st: &Stack, module_path: &impl Fn(u32) -> Option<String>) -> Vec<String> {
    let labels: Vec<(String, String)> = st
        .frames
        .iter()
        .map(|f| {
            let name = f
                .func
                .clone()
                .unwrap_or_else(|| frame_label(f, module_path));
            let loc = match &f.file {
                Some(file) if f.line > 0 => format!("{}:{}", short_file(file), f.line),
                _ => f
                    .module
                    .and_then(module_path)
                    .map(|m| short_file(&m).to_string())
                    .unwrap_or_default(),
            };
            let loc = if f.inlined {
                format!("{loc} (inlined)")
            } else {
                loc
            };
            (name, loc)
        })
        .collect();
    let w = labels
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0)
        .min(40);
    labels
        .iter()
        .enumerate()
        .map(|(i, (name, loc))| format!("#{i:<2} {name:<w$}  {loc}").trim_end().to_string())
        .chain(
            st.end
                .marker(
                    st.frames
                        .last()
                        .and_then(|f| f.module)
                        .and_then(module_path)
                        .as_deref(),
                )
                .map(|m| format!("… {m}")),
        )
        .collect()
}

/// Labels of stacks, computed on first use and kept.
#[derive(Default)]
pub struct Names {
    top: RefCell<HashMap<StackId, Option<String>>>,
}

impl Names {
    /// `func (file:line)` of the top user frame of stack `id`.
    pub fn site(&self, stacks: &[Stack], modules: &[Module], id: StackId) -> Option<String> {
        if let Some(v) = self.top.borrow().get(&id) {
            return v.clone();
        }
        let mp = module_path(modules);
        let v = find_stack(stacks, id)
            .and_then(|s| top_user_frame(s, &mp))
            .map(|f| frame_label(f, &mp));
        self.top.borrow_mut().insert(id, v.clone());
        v
    }

    /// Stacks with a frame whose function name contains `func`.
    pub fn stacks_with(stacks: &[Stack], func: &str) -> FxSet<StackId> {
        stacks
            .iter()
            .filter(|s| {
                s.frames
                    .iter()
                    .any(|f| f.func.as_deref().is_some_and(|n| n.contains(func)))
            })
            .map(|s| s.id)
            .collect()
    }
}

/// A lookup from module id to path over a module table.
pub fn module_path(modules: &[Module]) -> impl Fn(u32) -> Option<String> + '_ {
    move |id| modules.iter().find(|m| m.id == id).map(|m| m.path.clone())
}
