//! Folded stacks: `root;caller;…;allocator-caller bytes`, one line per
//! stack, of the bytes live at the moment — what flamegraph.pl and
//! inferno-flamegraph draw. Inlined calls are frames of their own; a
//! truncated stack starts at `[stack truncated]`; with several processes
//! each stack starts at its process.

use std::collections::BTreeMap;

use super::{func_name, process_label, truncated_root, Heap};
use crate::cmd::report::Summary;

/// A frame name the format can carry: `;` separates frames and a line
/// ends a stack.
fn clean(name: &str) -> String {
    name.replace(';', ":").replace(['\n', '\r'], " ")
}

pub fn export(sum: &Summary, heap: &Heap) -> String {
    let several = heap.processes() > 1;
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for ((pid, site), g) in &heap.groups {
        if g.inuse_bytes == 0 {
            continue;
        }
        let mut frames: Vec<String> = Vec::new();
        if several {
            frames.push(clean(&process_label(sum, *pid)));
        }
        match sum.tl.stack(*site) {
            Some(st) => {
                frames.extend(truncated_root(st.end).map(String::from));
                frames.extend(st.frames.iter().rev().map(|f| clean(&func_name(f, sum))));
            }
            None => frames.push("[no stack]".to_string()),
        }
        *lines.entry(frames.join(";")).or_default() += g.inuse_bytes;
    }
    let mut out = String::new();
    for (stack, bytes) in lines {
        out.push_str(&stack);
        out.push(' ');
        out.push_str(&bytes.to_string());
        out.push('\n');
    }
    out
}
