//! The recording as Trace Event Format JSON (the object form), which
//! Perfetto's UI and chrome://tracing open: a track per thread (pid/tid),
//! named by metadata events; probed calls (paired by the model's spans),
//! traced system calls and off-CPU stretches as complete events (`X`);
//! heap events, signals, the crash, watchpoint hits and the lifecycle as
//! instant events (`i`) with their symbolized stacks in `args`.
//! Timestamps are µs from the start of the recording.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;

use anyhow::Result;
use serde_json::{json, Map, Value};

use super::process_label;
use crate::cmd::report::json::ArgValue;
use crate::cmd::report::{crash_headline, Summary};
use crate::event::{signal_name, sys_result, Event, EventKind, StackId};
use crate::model::names::{frame_label, module_path};
use crate::model::present::{probe_name, watch_what};
use crate::model::spans::Outcome;
use crate::model::store::Idx;
use crate::trace::Trace;

/// µs from the start, as the format's `ts` and `dur` are.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

struct Out<'a> {
    sum: &'a Summary,
    start: u64,
    /// Where the `traceEvents` array is written, one event at a time.
    w: &'a mut dyn Write,
    /// Events written so far.
    written: u64,
    /// Each stack's frames as labels, innermost first, made once.
    stacks: HashMap<StackId, Value>,
}

impl Out<'_> {
    fn stack(&mut self, id: Option<StackId>) -> Option<Value> {
        let id = id?;
        if let Some(v) = self.stacks.get(&id) {
            return Some(v.clone());
        }
        let tl = &self.sum.tl;
        let mp = module_path(tl.modules());
        let st = tl.stack(Some(id))?;
        let mut frames: Vec<Value> = st
            .frames
            .iter()
            .map(|f| {
                let l = frame_label(f, &mp);
                Value::String(if f.inlined {
                    format!("{l} (inlined)")
                } else {
                    l
                })
            })
            .collect();
        let last = st.frames.last().and_then(|f| f.module).and_then(&mp);
        if let Some(m) = st.end.marker(last.as_deref()) {
            frames.push(Value::String(format!("… {m}")));
        }
        let v = Value::Array(frames);
        self.stacks.insert(id, v.clone());
        Some(v)
    }

    fn emit(&mut self, v: &Value) -> Result<()> {
        if self.written > 0 {
            self.w.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut *self.w, v)?;
        self.written += 1;
        Ok(())
    }

    /// A complete event from `begin` to `end` (CLOCK_MONOTONIC ns).
    fn span(
        &mut self,
        e: &Event,
        name: String,
        cat: &str,
        begin: u64,
        end: u64,
        args: Value,
    ) -> Result<()> {
        self.emit(&json!({
            "name": name,
            "cat": cat,
            "ph": "X",
            "ts": us(begin.saturating_sub(self.start)),
            "dur": us(end.saturating_sub(begin)),
            "pid": e.pid,
            "tid": e.tid,
            "args": args,
        }))
    }

    /// An instant event on its thread's track (`scope` "t"), or across its
    /// process (`"p"`).
    fn instant(
        &mut self,
        e: &Event,
        name: String,
        cat: &str,
        scope: &str,
        args: Value,
    ) -> Result<()> {
        self.emit(&json!({
            "name": name,
            "cat": cat,
            "ph": "i",
            "s": scope,
            "ts": us(e.ts.saturating_sub(self.start)),
            "pid": e.pid,
            "tid": e.tid,
            "args": args,
        }))
    }
}

/// `args` with `stack` added when there is one.
fn with_stack(mut args: Value, stack: Option<Value>) -> Value {
    if let (Some(st), Value::Object(m)) = (stack, &mut args) {
        m.insert("stack".into(), st);
    }
    args
}

fn hex(a: u64) -> String {
    format!("{a:#x}")
}

/// Writes the document to `w`, an event at a time.
pub fn export(t: &Trace, sum: &Summary, w: &mut dyn Write) -> Result<()> {
    let tl = &sum.tl;
    let start = t.meta.start_mono_ns;
    // The object's other members first, then the array, so that each
    // event goes out as it is made.
    let mut other = Map::new();
    other.insert("command".into(), json!(t.meta.command));
    other.insert("pid".into(), json!(t.meta.pid));
    other.insert("recorder".into(), json!("tm-tui"));
    w.write_all(b"{\"displayTimeUnit\":\"ns\",\"otherData\":")?;
    serde_json::to_writer(&mut *w, &other)?;
    w.write_all(b",\"traceEvents\":[\n")?;
    let mut out = Out {
        sum,
        start,
        w,
        written: 0,
        stacks: HashMap::new(),
    };
    let findings: HashMap<Idx, String> = tl
        .findings()
        .into_iter()
        .map(|f| (f.idx, f.diagnosis.summary))
        .collect();
    let crash_summary = tl.diagnosis().map(|d| d.summary);
    let mut threads: BTreeSet<(u32, u32)> = BTreeSet::new();
    for (i, e) in sum.events(t) {
        let e: &crate::event::Event = &e;
        let i = i as Idx;
        if !matches!(
            e.kind,
            EventKind::Inherit { .. } | EventKind::Discard { .. }
        ) {
            threads.insert((e.pid, e.tid));
        }
        match &e.kind {
            EventKind::Call(c) => {
                let span = tl.spans().of_call(i);
                let end = match span {
                    Some(s) if s.outcome == Outcome::EntryOnly => e.ts,
                    Some(s) => s.end_ts.unwrap_or(sum.end_ns),
                    None => e.ts,
                };
                let args: Vec<ArgValue> = c.args.iter().map(ArgValue::from).collect();
                let mut a = json!({ "args": args });
                if let Some(s) = span {
                    a["outcome"] = json!(s.outcome.name());
                    a["depth"] = json!(s.depth);
                    if let Some(r) = s.ret {
                        let v = match tl.probe(c.probe) {
                            Some(p) => p.ret_value(r),
                            None => crate::event::Arg::guess(r),
                        };
                        a["ret"] = serde_json::to_value(ArgValue::from(&v))?;
                    }
                }
                let st = out.stack(c.stack);
                out.span(
                    e,
                    probe_name(tl, c.probe),
                    "call",
                    e.ts,
                    end,
                    with_stack(a, st),
                )?;
            }
            EventKind::Sys(s) => {
                let mut a = json!({
                    "fd": s.fd,
                    "ret": s.ret,
                    "result": sys_result(s.ret),
                });
                if let Some(target) = &s.target {
                    a["target"] = json!(target);
                }
                if s.len > 0 {
                    a["len"] = json!(s.len);
                }
                let st = out.stack(s.stack);
                out.span(
                    e,
                    s.call.name().to_string(),
                    s.call.family().name(),
                    e.ts.saturating_sub(s.dur_ns),
                    e.ts,
                    with_stack(a, st),
                )?;
            }
            EventKind::OffCpu {
                dur_ns,
                preempted,
                stack,
            } => {
                let a = json!({ "preempted": preempted });
                let st = out.stack(*stack);
                out.span(
                    e,
                    if *preempted {
                        "off-cpu (preempted)"
                    } else {
                        "off-cpu"
                    }
                    .to_string(),
                    "sched",
                    e.ts.saturating_sub(*dur_ns),
                    e.ts,
                    with_stack(a, st),
                )?;
            }
            EventKind::Alloc {
                func,
                ptr,
                size,
                stack,
            } => {
                let a = json!({ "addr": hex(*ptr), "size": size });
                let st = out.stack(*stack);
                let name = if *ptr == 0 {
                    format!("{} failed", func.name())
                } else {
                    func.name().to_string()
                };
                out.instant(e, name, "heap", "t", with_stack(a, st))?;
            }
            EventKind::Realloc {
                func,
                old,
                ptr,
                size,
                stack,
            } => {
                let a = json!({ "old_addr": hex(*old), "addr": hex(*ptr), "size": size });
                let st = out.stack(*stack);
                out.instant(e, func.name().to_string(), "heap", "t", with_stack(a, st))?;
            }
            EventKind::Free { ptr, stack } => {
                let a = json!({ "addr": hex(*ptr) });
                let st = out.stack(*stack);
                out.instant(e, "free".into(), "heap", "t", with_stack(a, st))?;
            }
            EventKind::Mmap { addr, len, ret, .. } => {
                let a = json!({ "addr": hex(*addr), "len": len, "ret": hex(*ret as u64) });
                out.instant(e, "mmap".into(), "memory", "t", a)?;
            }
            EventKind::Munmap { addr, len, ret } => {
                let a = json!({ "addr": hex(*addr), "len": len, "ret": ret });
                out.instant(e, "munmap".into(), "memory", "t", a)?;
            }
            EventKind::Mremap {
                old,
                old_len,
                new_len,
                ret,
                ..
            } => {
                let a = json!({
                    "old_addr": hex(*old), "old_len": old_len, "new_len": new_len,
                    "ret": hex(*ret as u64),
                });
                out.instant(e, "mremap".into(), "memory", "t", a)?;
            }
            EventKind::Brk { req, ret } => {
                let a = json!({ "req": hex(*req), "ret": hex(*ret as u64) });
                out.instant(e, "brk".into(), "memory", "t", a)?;
            }
            EventKind::Signal(s) => {
                let crash = tl.crash() == Some(i);
                let mut a = json!({
                    "signal": signal_name(s.signo),
                    "ip": hex(s.ip),
                    "headline": crash_headline(s, e.pid, e.tid, e.ts, start),
                });
                if crash {
                    if let Some(d) = &crash_summary {
                        a["diagnosis"] = json!(d);
                    }
                }
                let st = out.stack(s.stack);
                let name = if crash {
                    format!("CRASH {}", signal_name(s.signo))
                } else {
                    signal_name(s.signo).to_string()
                };
                out.instant(e, name, "signal", "p", with_stack(a, st))?;
            }
            EventKind::Watch(w) => {
                let mut a = json!({ "what": watch_what(w), "addr": hex(w.addr) });
                if let Some(d) = findings.get(&i) {
                    a["diagnosis"] = json!(d);
                }
                let st = out.stack(w.stack);
                let name = if findings.contains_key(&i) {
                    "finding".to_string()
                } else {
                    "watch".to_string()
                };
                out.instant(e, name, "watch", "t", with_stack(a, st))?;
            }
            EventKind::Spawn { child, thread } => {
                let name = if *thread { "thread" } else { "fork" };
                out.instant(e, name.into(), "lifecycle", "t", json!({ "child": child }))?;
            }
            EventKind::Exec { filename } => {
                let a = json!({ "filename": filename });
                out.instant(e, "exec".into(), "lifecycle", "p", a)?;
            }
            EventKind::ThreadExit { code } => {
                let a = json!({ "code": code });
                out.instant(e, "thread exit".into(), "lifecycle", "t", a)?;
            }
            EventKind::ProcessExit { status } => {
                let a = json!({ "status": status.to_string() });
                out.instant(e, "process exit".into(), "lifecycle", "p", a)?;
            }
            // Part of their call's span; made by the model, not recorded.
            EventKind::Return { .. } | EventKind::Inherit { .. } | EventKind::Discard { .. } => {}
        }
    }
    // Names of the tracks: each process by its command, each thread by
    // its number (the main thread says so).
    let mut pids: Vec<u32> = threads.iter().map(|(p, _)| *p).collect();
    pids.dedup();
    for pid in pids {
        out.emit(&json!({
            "name": "process_name", "ph": "M", "pid": pid, "tid": pid,
            "args": { "name": process_label(sum, pid) },
        }))?;
    }
    for (pid, tid) in &threads {
        let name = if pid == tid {
            format!("main thread {tid}")
        } else {
            format!("thread {tid}")
        };
        out.emit(&json!({
            "name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
            "args": { "name": name },
        }))?;
        out.emit(&json!({
            "name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid,
            "args": { "sort_index": tid },
        }))?;
    }
    out.w.write_all(b"\n]}\n")?;
    Ok(())
}
