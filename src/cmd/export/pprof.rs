//! The heap at a moment as a pprof profile (profile.proto, gzipped), for
//! `go tool pprof`: sample types inuse_space, inuse_objects (live at the
//! moment) and alloc_space, alloc_objects (allocated up to it), one sample
//! per process and allocation site; locations with their functions, files
//! and lines (a call inlined at an address is a `Line` of that address's
//! location, innermost first); mappings from the trace's modules.
//!
//! The protobuf is written by hand (a dozen messages of varints and
//! length-delimited fields; see [`Enc`]) rather than with a generated
//! encoder: no protoc, no build script, no proc-macro crate to compile.
//! Field numbers are those of
//! <https://github.com/google/pprof/blob/main/proto/profile.proto>.

use std::collections::HashMap;
use std::io::Write as _;

use anyhow::Result;

use super::{func_name, process_label, truncated_root, Heap};
use crate::cmd::report::Summary;
use crate::event::{Frame, ModuleId};
use crate::trace::Trace;

/// A protobuf message being written: fields appended in any order.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    /// A varint field (uint64, int64, bool); zero, the default, is left
    /// out as proto3 does.
    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v);
        }
    }

    fn int(&mut self, field: u32, v: i64) {
        self.uint(field, v as u64);
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn msg(&mut self, field: u32, m: Enc) {
        self.bytes(field, &m.0);
    }

    /// A packed repeated varint field (zeros kept: they are values).
    fn packed(&mut self, field: u32, vs: impl IntoIterator<Item = u64>) {
        let mut m = Enc::default();
        for v in vs {
            m.varint(v);
        }
        if !m.0.is_empty() {
            self.msg(field, m);
        }
    }
}

/// The profile's string table: index 0 is "".
struct Strings {
    index: HashMap<String, i64>,
    list: Vec<String>,
}

impl Strings {
    fn new() -> Self {
        Strings {
            index: HashMap::from([(String::new(), 0)]),
            list: vec![String::new()],
        }
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.list.len() as i64;
        self.list.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// A module as mapped at one base (a module mapped by two processes at
/// two addresses is two mappings).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct MapKey {
    module: ModuleId,
    base: u64,
}

struct Mapping {
    id: u64,
    key: MapKey,
    /// The lowest and highest addresses seen in it (for a module without
    /// segments in the trace).
    lo: u64,
    hi: u64,
}

const PAGE: u64 = 4096;

/// Where file offset 0 of the frame's module is mapped.
fn base_of(f: &Frame) -> u64 {
    // Mappings start at a page at a page-aligned file offset; a return
    // address's offset was taken one byte back (inside the call).
    f.addr.wrapping_sub(f.offset) & !(PAGE - 1)
}

/// A location's identity: its mapping, its address, and its lines as
/// (function, line), innermost first.
type LocKey = (u64, u64, Vec<(u64, u32)>);

#[derive(Default)]
struct Tables {
    functions: HashMap<(String, Option<String>), u64>,
    locations: HashMap<LocKey, u64>,
    mappings: HashMap<MapKey, Mapping>,
    /// Locations of no address for marks at a stack's root (`[stack
    /// truncated]`, …).
    marks: HashMap<&'static str, u64>,
    /// Locations made, of either sort (their ids are 1…).
    location_count: u64,
}

pub fn export(t: &Trace, sum: &Summary, heap: &Heap) -> Result<Vec<u8>> {
    let mut s = Strings::new();
    let mut tb = Tables::default();
    let mut p = Enc::default();
    // Field 1: sample_type. The inuse pair first; default_sample_type
    // (14) makes inuse_space what pprof shows without -sample_index.
    for (ty, unit) in [
        ("inuse_space", "bytes"),
        ("inuse_objects", "count"),
        ("alloc_space", "bytes"),
        ("alloc_objects", "count"),
    ] {
        let mut vt = Enc::default();
        vt.int(1, s.id(ty));
        vt.int(2, s.id(unit));
        p.msg(1, vt);
    }
    let several = heap.processes() > 1;
    let mut functions = Enc::default();
    let mut locations = Enc::default();
    // Field 2: one sample per (process, site).
    for ((pid, site), g) in &heap.groups {
        let mut locs: Vec<u64> = Vec::new();
        match sum.tl.stack(*site) {
            Some(st) => {
                // Runs of inlined frames with the frame they are inlined
                // into (the same address): one location each.
                let mut run: Vec<&Frame> = Vec::new();
                for f in &st.frames {
                    run.push(f);
                    if !f.inlined {
                        locs.push(location(
                            &run,
                            sum,
                            &mut s,
                            &mut tb,
                            &mut functions,
                            &mut locations,
                        ));
                        run.clear();
                    }
                }
                if !run.is_empty() {
                    locs.push(location(
                        &run,
                        sum,
                        &mut s,
                        &mut tb,
                        &mut functions,
                        &mut locations,
                    ));
                }
                if let Some(m) = truncated_root(st.end) {
                    locs.push(mark(m, &mut s, &mut tb, &mut functions, &mut locations));
                }
            }
            None => locs.push(mark(
                "[no stack]",
                &mut s,
                &mut tb,
                &mut functions,
                &mut locations,
            )),
        }
        let mut sample = Enc::default();
        sample.packed(1, locs);
        sample.packed(
            2,
            [g.inuse_bytes, g.inuse_blocks, g.alloc_bytes, g.alloc_blocks],
        );
        let mut label = Enc::default();
        label.int(1, s.id("pid"));
        label.int(3, i64::from(*pid));
        sample.msg(3, label);
        if several {
            let mut label = Enc::default();
            label.int(1, s.id("process"));
            label.int(2, s.id(&process_label(sum, *pid)));
            sample.msg(3, label);
        }
        p.msg(2, sample);
    }
    // Field 3: mapping. pprof takes the first for the program ("File:"):
    // the root process's last image, other executables, shared libraries,
    // each in order of first use.
    let module_of = |m: &Mapping| t.modules.iter().find(|x| x.id == m.key.module);
    let root_image = sum.tl.processes().first().map(|p| p.command.as_str());
    let root_image = root_image.and_then(|c| c.split_whitespace().next());
    // As mapped: a symlink's target (python3 → python3.11), when this
    // machine has it.
    let root_real = root_image.and_then(|p| std::fs::canonicalize(p).ok());
    let rank = |m: &Mapping| match module_of(m) {
        Some(x)
            if Some(x.path.as_str()) == root_image
                || root_real.as_deref() == Some(std::path::Path::new(&x.path)) =>
        {
            0
        }
        Some(x) if !x.path.contains(".so") => 1,
        _ => 2,
    };
    let mut maps: Vec<&Mapping> = tb.mappings.values().collect();
    maps.sort_by_key(|m| (rank(m), m.id));
    for m in maps {
        let module = module_of(m);
        let (start, limit, offset) = match module.map(|x| &x.segments) {
            Some(segs) if !segs.is_empty() => {
                let lo = segs.iter().map(|[o, _, _]| *o).min().unwrap_or(0) & !(PAGE - 1);
                let hi = segs.iter().map(|[o, _, n]| o + n).max().unwrap_or(lo);
                let hi = hi.div_ceil(PAGE) * PAGE;
                (m.key.base + lo, m.key.base + hi.max(lo + PAGE), lo)
            }
            _ => {
                let lo = m.lo & !(PAGE - 1);
                let hi = (m.hi + 1).div_ceil(PAGE) * PAGE;
                (lo, hi, lo.wrapping_sub(m.key.base))
            }
        };
        let mut e = Enc::default();
        e.uint(1, m.id);
        e.uint(2, start);
        e.uint(3, limit);
        e.uint(4, offset);
        e.int(5, s.id(module.map_or("", |x| x.path.as_str())));
        e.int(
            6,
            s.id(module.and_then(|x| x.build_id.as_deref()).unwrap_or("")),
        );
        // Symbolized here: pprof must not symbolize again.
        for field in 7..=10 {
            e.uint(field, 1);
        }
        p.msg(3, e);
    }
    // Fields 4 and 5: location and function.
    p.0.extend_from_slice(&locations.0);
    p.0.extend_from_slice(&functions.0);
    // Field 6: string_table, after every id is taken but the comment's
    // and the period's.
    let start = t.meta.start_mono_ns;
    let at_rel = heap.at.saturating_sub(start);
    // Read from a part or a bounded recording's window: the allocated
    // counts start there.
    let from = match (&t.window, t.first_ts) {
        (Some(_), Some(f)) => format!(
            "; alloc_space/alloc_objects from +{:.6}s",
            f.saturating_sub(start) as f64 / 1e9
        ),
        _ => String::new(),
    };
    let comment = s.id(&format!(
        "tm-tui: heap of {} at +{:.6}s (pid {}){from}",
        t.meta.command.replace(['\n', '\r'], " "),
        at_rel as f64 / 1e9,
        t.meta.pid
    ));
    let space = s.id("space");
    let bytes = s.id("bytes");
    let inuse = s.id("inuse_space");
    for st in &s.list {
        p.bytes(6, st.as_bytes());
    }
    // time_nanos (9), duration_nanos (10): the moment, on the wall clock,
    // and how far into the recording it is.
    p.int(9, (t.meta.start_wall_ns.saturating_add(at_rel)) as i64);
    p.int(10, at_rel as i64);
    // period_type (11), period (12): as Go's heap profiles, space in bytes.
    let mut pt = Enc::default();
    pt.int(1, space);
    pt.int(2, bytes);
    p.msg(11, pt);
    p.int(12, 1);
    p.packed(13, [comment as u64]);
    p.int(14, inuse);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&p.0)?;
    Ok(gz.finish()?)
}

/// The location of a run of frames at one address: inlined calls then
/// the frame they are inlined into (the last).
fn location(
    run: &[&Frame],
    sum: &Summary,
    s: &mut Strings,
    tb: &mut Tables,
    functions: &mut Enc,
    locations: &mut Enc,
) -> u64 {
    let Some(last) = run.last() else {
        return 0;
    };
    let mapping = match last.module {
        Some(module) => {
            let key = MapKey {
                module,
                base: base_of(last),
            };
            let next = tb.mappings.len() as u64 + 1;
            let m = tb.mappings.entry(key).or_insert(Mapping {
                id: next,
                key,
                lo: last.addr,
                hi: last.addr,
            });
            m.lo = m.lo.min(last.addr);
            m.hi = m.hi.max(last.addr);
            m.id
        }
        None => 0,
    };
    let lines: Vec<(u64, u32)> = run
        .iter()
        .map(|f| {
            let name = func_name(f, sum);
            let fid = function(name, f.file.clone(), s, tb, functions);
            (fid, f.line)
        })
        .collect();
    let key = (mapping, last.addr, lines);
    if let Some(&id) = tb.locations.get(&key) {
        return id;
    }
    tb.location_count += 1;
    let id = tb.location_count;
    let mut e = Enc::default();
    e.uint(1, id);
    e.uint(2, mapping);
    e.uint(3, last.addr);
    for (fid, line) in &key.2 {
        let mut l = Enc::default();
        l.uint(1, *fid);
        l.int(2, i64::from(*line));
        e.msg(4, l);
    }
    locations.msg(4, e);
    tb.locations.insert(key, id);
    id
}

fn function(
    name: String,
    file: Option<String>,
    s: &mut Strings,
    tb: &mut Tables,
    functions: &mut Enc,
) -> u64 {
    let key = (name, file);
    if let Some(&id) = tb.functions.get(&key) {
        return id;
    }
    let id = tb.functions.len() as u64 + 1;
    let mut e = Enc::default();
    e.uint(1, id);
    let name = s.id(&key.0);
    e.int(2, name);
    e.int(3, name);
    e.int(4, s.id(key.1.as_deref().unwrap_or("")));
    functions.msg(5, e);
    tb.functions.insert(key, id);
    id
}

/// A location of no address for a mark at a stack's root.
fn mark(
    name: &'static str,
    s: &mut Strings,
    tb: &mut Tables,
    functions: &mut Enc,
    locations: &mut Enc,
) -> u64 {
    if let Some(&id) = tb.marks.get(name) {
        return id;
    }
    let fid = function(name.to_string(), None, s, tb, functions);
    tb.location_count += 1;
    let id = tb.location_count;
    let mut e = Enc::default();
    e.uint(1, id);
    let mut l = Enc::default();
    l.uint(1, fid);
    e.msg(4, l);
    locations.msg(4, e);
    tb.marks.insert(name, id);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields_as_protobuf_writes_them() {
        let mut e = Enc::default();
        e.varint(1);
        e.varint(300);
        e.varint(u64::MAX);
        assert_eq!(
            e.0,
            [1, 0xac, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        let mut e = Enc::default();
        e.uint(1, 150);
        e.uint(2, 0);
        e.bytes(2, b"testing");
        e.packed(4, [3, 270]);
        e.int(5, -2);
        let mut want = vec![0x08, 0x96, 0x01, 0x12, 7];
        want.extend_from_slice(b"testing");
        want.extend_from_slice(&[0x22, 3, 3, 0x8e, 0x02]);
        want.extend_from_slice(&[
            0x28, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ]);
        assert_eq!(e.0, want);
    }
}
