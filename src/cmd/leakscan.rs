//! Leak scans in a recording session: the live blocks come from the
//! model, the memory from the stopped target (`recorder::scan`); the
//! result goes to the trace file and the model. The same for a launched
//! target held in its exit and an attached one paused for it.

use anyhow::Result;

use crate::event::{LeakScan, ScanTrigger, ScannedBlock};
use crate::model::Timeline;
use crate::recorder::now_mono_ns;
use crate::recorder::scan::{self, Request};

/// Scans the stopped target of `req` for the blocks `tl` holds live.
pub fn run(tl: &Timeline, req: &Request) -> Result<LeakScan> {
    // The scanned process's blocks only (a followed child's carry its tag).
    let blocks: Vec<(u64, u64)> = tl
        .heap()
        .now_of(tl.store(), tl.tag_of(req.pid))
        .iter()
        .filter(|b| b.ptr >> crate::model::TAG_SHIFT == 0)
        .map(|b| (b.ptr, b.size))
        .collect();
    let mut caveats = Vec::new();
    let lost = tl.lost().events();
    if lost > 0 {
        caveats.push(format!(
            "{lost} events were lost before the scan: the live blocks it classified are not exactly the target's"
        ));
    }
    if !tl.meta().launched {
        caveats.push(
            "attached: only blocks allocated since the attach are known and classified; one pointed to only from an older block counts as lost".into(),
        );
    }
    let running = running_threads(req.pid);
    let allocator = &tl.meta().allocator;
    let out = scan::scan(
        req.pid,
        &blocks,
        &req.regs,
        scan::SP_INDEX,
        allocator,
        &|s, e| tl.held_blocks(s, e),
    )?;
    let ts = now_mono_ns();
    if req.trigger == ScanTrigger::Exit && !held(req.pid) {
        caveats.push("the target left its exit hold while it was scanned: its memory may have been read as it went".into());
    }
    if running > 0 && req.trigger == ScanTrigger::Exit {
        caveats.push(format!(
            "{running} other threads were still running: their stacks were read whole and their registers not"
        ));
    }
    let c = &out.classified;
    if c.unreadable > 0 {
        caveats.push(format!(
            "{} bytes of roots or blocks could not be read",
            c.unreadable
        ));
    }
    if !allocator.is_empty() && !allocator.contains("libc.so") {
        caveats.push(format!(
            "{allocator} keeps metadata tm-tui does not know apart from the program's data: blocks it points to may count as reachable"
        ));
    }
    Ok(LeakScan {
        pid: req.pid,
        ts,
        trigger: req.trigger,
        paused_ns: req.since.elapsed().as_nanos() as u64,
        root_bytes: c.root_bytes,
        block_bytes: c.block_bytes,
        caveats,
        blocks: blocks
            .iter()
            .zip(&c.kinds)
            .map(|(&(ptr, size), &kind)| ScannedBlock { ptr, size, kind })
            .collect(),
    })
}

/// The task's state letter from /proc (`t`: stopped by its tracer).
fn state(path: &str) -> Option<char> {
    let stat = std::fs::read_to_string(path).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Whether the target is still stopped by its tracer.
fn held(pid: u32) -> bool {
    matches!(state(&format!("/proc/{pid}/stat")), Some('t' | 'T'))
}

/// Threads of `pid` other than its main one that are not stopped or dead.
fn running_threads(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str() != Some(&pid.to_string()))
        .filter(|e| {
            let path = e.path().join("stat");
            matches!(state(&path.to_string_lossy()), Some('R' | 'S' | 'D'))
        })
        .count()
}
