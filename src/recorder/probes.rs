//! Function probes (`--probe SPEC`): the spec language and its resolution
//! to ELF symbols of the target's executable and libraries.
//!
//! ```text
//! SPEC   = [MODULE ':'] NAME [ '(' TYPES ')' ] [ '->' TYPE ]
//! NAME   = a function name, demangled (`ns::f`) or raw, with * and ? globs
//! TYPES  = empty | TYPE { ',' TYPE }       at most 6, at most 2 strings
//! TYPE   = int | uint | long | ulong | ptr | str | bool | char | C spelling
//! ```
//!
//! Without a signature the first [`DEFAULT_ARGS`] argument registers are
//! shown, untyped.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use blazesym::inspect::source::{Elf, Source};
use blazesym::inspect::Inspector;
use blazesym::SymType;

use crate::event::{Probe, ValueType};
use crate::util::glob_match;

/// Arguments shown for a probe without a signature.
pub const DEFAULT_ARGS: usize = 3;
/// Integer arguments passed in registers (System V x86-64).
pub const MAX_ARGS: usize = 6;
/// String arguments one call record carries.
pub const MAX_STR_ARGS: usize = super::bpf::types::tm_limit::TM_CALL_STRS.0 as usize;
/// Functions one glob may match.
pub const GLOB_LIMIT: usize = 200;
/// Functions probed in all.
pub const TOTAL_LIMIT: usize = 1000;

/// One `--probe` as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub text: String,
    pub module: Option<String>,
    pub name: String,
    /// `None` without parentheses: [`DEFAULT_ARGS`] untyped arguments.
    pub args: Option<Vec<ValueType>>,
    pub ret: ValueType,
    /// Probe the return too (false: `--probe-entry`).
    pub returns: bool,
}

impl Spec {
    /// An entry-only probe (`--probe-entry`): no return probe, so it is
    /// safe on functions a C++ exception or a Rust panic unwinds through.
    pub fn parse_entry(text: &str) -> Result<Spec, String> {
        let mut s = Spec::parse(text)?;
        if s.ret != ValueType::Auto {
            return Err(format!(
                "invalid probe '{text}': an entry-only probe has no return value to type"
            ));
        }
        s.returns = false;
        Ok(s)
    }

    pub fn parse(text: &str) -> Result<Spec, String> {
        let bad = |why: &str| format!("invalid probe '{text}': {why}");
        let t = text.trim();
        let (head, ret) = match t.split_once("->") {
            Some((h, r)) => {
                let r = r.trim();
                if r.is_empty() {
                    return Err(bad("nothing after '->' (expected a return type)"));
                }
                (h.trim(), parse_type(r, false).map_err(|e| bad(&e))?)
            }
            None => (t, ValueType::Auto),
        };
        let (target, args) = match head.find('(') {
            Some(open) => {
                let Some(inner) = head[open + 1..].strip_suffix(')') else {
                    return Err(bad("unbalanced parentheses (expected NAME(TYPE, …))"));
                };
                if inner.contains(['(', ')']) {
                    return Err(bad("nested parentheses in the signature"));
                }
                let inner = inner.trim();
                let types: Vec<ValueType> = if inner.is_empty() || inner == "void" {
                    Vec::new()
                } else {
                    inner
                        .split(',')
                        .map(|a| parse_type(a.trim(), true))
                        .collect::<Result<_, _>>()
                        .map_err(|e| bad(&e))?
                };
                if types.len() > MAX_ARGS {
                    return Err(bad(&format!(
                        "{} arguments; only the first {MAX_ARGS} integer arguments are \
                         passed in registers",
                        types.len()
                    )));
                }
                if types.iter().filter(|t| **t == ValueType::Str).count() > MAX_STR_ARGS {
                    return Err(bad(&format!(
                        "at most {MAX_STR_ARGS} string arguments per probe"
                    )));
                }
                (head[..open].trim(), Some(types))
            }
            None if head.contains(')') => return Err(bad("unbalanced parentheses")),
            None => (head, None),
        };
        let (module, name) = split_module(target);
        if name.is_empty() {
            return Err(bad("no function name"));
        }
        if module.is_some_and(str::is_empty) {
            return Err(bad("empty module name before ':'"));
        }
        if name.contains(char::is_whitespace) && !name.contains(['<', '>']) {
            return Err(bad("spaces in the function name"));
        }
        Ok(Spec {
            text: text.to_string(),
            module: module.map(str::to_string),
            name: name.to_string(),
            args,
            ret,
            returns: true,
        })
    }

    fn is_glob(&self) -> bool {
        self.name.contains(['*', '?'])
    }

    fn arg_types(&self) -> Vec<ValueType> {
        self.args
            .clone()
            .unwrap_or_else(|| vec![ValueType::Auto; DEFAULT_ARGS])
    }
}

/// `libssl.so:SSL_read` → (Some(libssl.so), SSL_read); a `::` is part of
/// a C++/Rust name, not a module separator.
fn split_module(s: &str) -> (Option<&str>, &str) {
    let b = s.as_bytes();
    for (i, c) in b.iter().enumerate() {
        if *c == b':' {
            let prev = i > 0 && b[i - 1] == b':';
            let next = b.get(i + 1) == Some(&b':');
            if !prev && !next {
                return (Some(s[..i].trim()), s[i + 1..].trim());
            }
        }
    }
    (None, s.trim())
}

/// A type name, C spellings accepted (`const char *` is a string).
fn parse_type(s: &str, arg: bool) -> Result<ValueType, String> {
    let norm: String = s
        .split_whitespace()
        .filter(|w| *w != "const" && *w != "volatile")
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" *", "*");
    let t = match norm.as_str() {
        "" => return Err("an empty argument type".into()),
        "str" | "string" | "char*" | "cstr" => ValueType::Str,
        "ptr" | "pointer" | "void*" => ValueType::Ptr,
        "int" | "i32" | "int32_t" | "pid_t" | "short" | "int16_t" | "i16" | "signed" => {
            ValueType::Int
        }
        "uint" | "u32" | "uint32_t" | "unsigned" | "unsigned int" | "unsigned short"
        | "uint16_t" | "u16" => ValueType::Uint,
        "long" | "i64" | "int64_t" | "ssize_t" | "off_t" | "intptr_t" | "long long"
        | "long int" | "isize" => ValueType::Long,
        "ulong" | "u64" | "uint64_t" | "size_t" | "uintptr_t" | "unsigned long"
        | "unsigned long long" | "usize" => ValueType::Ulong,
        "bool" | "_Bool" => ValueType::Bool,
        "char" | "u8" | "i8" | "uint8_t" | "int8_t" | "unsigned char" | "signed char" => {
            ValueType::Char
        }
        "void" if !arg => ValueType::Auto,
        "float" | "double" | "long double" | "f32" | "f64" => {
            return Err(format!(
                "'{s}': floating-point values are passed in SSE registers, which are not captured"
            ))
        }
        "..." => return Err("variadic arguments cannot be typed".into()),
        n if n.ends_with('*') || n.ends_with('&') => ValueType::Ptr,
        _ => {
            return Err(format!(
                "unknown type '{s}' (types: int, uint, long, ulong, ptr, str, bool, char, or C \
                 spellings such as 'const char *', 'size_t')"
            ))
        }
    };
    if !arg && t == ValueType::Str {
        // A returned string is shown as its pointer: reading it at return
        // would be reading memory the callee may have just freed.
        return Ok(ValueType::Ptr);
    }
    Ok(t)
}

/// A demangled name without its parameter list (`ns::f(int) const` →
/// `ns::f`); Rust names without their hash. `None` when not mangled.
pub fn demangle(raw: &str) -> Option<String> {
    if let Ok(d) = rustc_demangle::try_demangle(raw) {
        return Some(format!("{d:#}"));
    }
    if raw.starts_with("_Z") {
        let sym = cpp_demangle::Symbol::new(raw).ok()?;
        let opts = cpp_demangle::DemangleOptions::new()
            .no_params()
            .no_return_type();
        return sym.demangle_with_options(&opts).ok();
    }
    None
}

/// An ELF file mapped (or to be mapped) into the target.
#[derive(Clone, Debug)]
pub struct ModuleFile {
    /// As the target names it.
    pub path: PathBuf,
    /// As tm-tui opens it (through /proc/PID/root for attached targets).
    pub open_path: PathBuf,
}

impl ModuleFile {
    fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// `libssl.so` names `/usr/lib/…/libssl.so.3`; a full path names
    /// itself.
    fn is_named(&self, m: &str) -> bool {
        let f = self.file_name();
        self.path == Path::new(m)
            || f == m
            || f.strip_prefix(m).is_some_and(|rest| rest.starts_with('.'))
    }
}

/// A probe to attach: the table entry and the file to attach it in.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub probe: Probe,
    pub open_path: PathBuf,
}

impl Resolved {
    /// Bit i: argument i is a string read from user memory.
    pub fn str_mask(&self) -> u32 {
        self.probe
            .args
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == ValueType::Str)
            .fold(0, |m, (i, _)| m | 1 << i)
    }
}

/// One function symbol of a module.
struct Func {
    raw: String,
    demangled: Option<String>,
    offset: u64,
}

impl Func {
    fn name(&self) -> &str {
        self.demangled.as_deref().unwrap_or(&self.raw)
    }

    fn matches(&self, spec: &Spec) -> bool {
        if spec.is_glob() {
            glob_match(&spec.name, &self.raw)
                || self
                    .demangled
                    .as_deref()
                    .is_some_and(|d| glob_match(&spec.name, d))
        } else {
            self.raw == spec.name || self.demangled.as_deref() == Some(&spec.name)
        }
    }
}

/// The function symbols (with a file offset) of an ELF file, `.symtab`
/// and `.dynsym`.
fn functions(inspector: &Inspector, path: &Path) -> Vec<Func> {
    let mut elf = Elf::new(path);
    elf.debug_syms = false;
    let src = Source::Elf(elf);
    let mut out = Vec::new();
    let _ = inspector.for_each(&src, |s| {
        // A `.cold` symbol is the unlikely part GCC split out of a
        // function: jumped to from its middle, never called, so not a
        // function to probe (its "calls" would be invented, and it would
        // match a glob under its function's own name).
        if s.sym_type == SymType::Function && s.addr != 0 && !is_cold_part(&s.name) {
            if let Some(offset) = s.file_offset {
                out.push(Func {
                    demangled: demangle(&s.name),
                    raw: s.name.to_string(),
                    offset,
                });
            }
        }
        ControlFlow::Continue(())
    });
    out
}

/// `f.cold`, `f.cold.3`: a function's cold part, split out by the compiler.
fn is_cold_part(raw: &str) -> bool {
    raw.rsplit_once(".cold").is_some_and(|(head, tail)| {
        !head.is_empty()
            && (tail.is_empty()
                || tail
                    .strip_prefix('.')
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
    })
}

/// Resolves every spec against the modules (the executable first); ids
/// are numbered from 0 in order. Errors name the spec and say why.
pub fn resolve(specs: &[Spec], modules: &[ModuleFile]) -> Result<Vec<Resolved>> {
    let mut modules = modules.to_vec();
    let inspector = Inspector::new();
    let mut cache: Vec<Option<Vec<Func>>> = modules.iter().map(|_| None).collect();
    let mut out: Vec<Resolved> = Vec::new();
    // Each probed function: its index in `out` and the spec that set it.
    let mut seen: HashMap<(PathBuf, u64), (usize, usize)> = HashMap::new();
    for (si, spec) in specs.iter().enumerate() {
        let candidates: Vec<usize> = match &spec.module {
            Some(m) => {
                let c: Vec<usize> = (0..modules.len())
                    .filter(|i| modules[*i].is_named(m))
                    .collect();
                // A library by its full path, loaded later (dlopen): uprobes
                // are set on the file, so it can be probed before it maps.
                if c.is_empty() && m.starts_with('/') && Path::new(m).is_file() {
                    modules.push(ModuleFile {
                        path: m.into(),
                        open_path: m.into(),
                    });
                    cache.push(None);
                    vec![modules.len() - 1]
                } else if c.is_empty() {
                    let names: Vec<String> = modules.iter().map(ModuleFile::file_name).collect();
                    bail!(
                        "probe '{}': no module '{m}' in the target (loaded: {}; a library \
                         not loaded yet can be named by its full path)",
                        spec.text,
                        names.join(", ")
                    );
                } else {
                    c
                }
            }
            None => (0..modules.len()).collect(),
        };
        let mut found = 0usize;
        for i in candidates {
            let funcs =
                cache[i].get_or_insert_with(|| functions(&inspector, &modules[i].open_path));
            for f in funcs.iter().filter(|f| f.matches(spec)) {
                found += 1;
                let key = (modules[i].path.clone(), f.offset);
                if let Some(&(o, s0)) = seen.get(&key) {
                    // An alias under this spec, or a glob's match of a
                    // function a spec already covers: keep the first.
                    if s0 == si || spec.is_glob() {
                        continue;
                    }
                    if !specs[s0].is_glob() {
                        bail!(
                            "probe '{}': {} ({}) is already probed by '{}'",
                            spec.text,
                            f.name(),
                            modules[i].file_name(),
                            specs[s0].text
                        );
                    }
                    // A function named precisely wins over a glob's defaults.
                    let p = &mut out[o].probe;
                    p.args = spec.arg_types();
                    p.ret = spec.ret;
                    p.returns = spec.returns;
                    seen.insert(key, (o, si));
                    continue;
                }
                seen.insert(key, (out.len(), si));
                out.push(Resolved {
                    probe: Probe {
                        id: out.len() as u32,
                        func: f.name().to_string(),
                        module: modules[i].path.to_string_lossy().into_owned(),
                        offset: f.offset,
                        args: spec.arg_types(),
                        ret: spec.ret,
                        returns: spec.returns,
                    },
                    open_path: modules[i].open_path.clone(),
                });
            }
        }
        if found == 0 {
            let wher = spec
                .module
                .clone()
                .unwrap_or_else(|| "the executable or its libraries".into());
            let hint = if spec.is_glob() {
                String::new()
            } else {
                suggestion(&spec.name, cache.iter().flatten().flatten())
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default()
            };
            bail!(
                "probe '{}': no function {} '{}' in {wher}{hint}",
                spec.text,
                if spec.is_glob() { "matches" } else { "named" },
                spec.name
            );
        }
        if spec.is_glob() && found > GLOB_LIMIT {
            bail!(
                "probe '{}': the pattern matches {found} functions, more than {GLOB_LIMIT}; \
                 narrow it (or name a module: 'libfoo.so:{}')",
                spec.text,
                spec.name
            );
        }
    }
    if out.len() > TOTAL_LIMIT {
        bail!(
            "{} functions to probe, more than {TOTAL_LIMIT}: narrow the --probe patterns",
            out.len()
        );
    }
    Ok(out)
}

/// Return probes replace the return address on the stack with the
/// kernel's trampoline, which has no unwind information: a C++ exception
/// or a Rust panic unwinding through a return-probed function finds no
/// frame there and terminates the program (SIGABRT; seen on Linux 6.18
/// with g++ 12). A warning when a module with a return-probed function
/// takes part in unwinding: it throws, rethrows, runs cleanups during an
/// unwind or raises one (imports or defines one of [`UNWINDS`]). A C
/// program that merely has libstdc++ loaded is not warned about.
pub fn unwind_warning(probes: &[Resolved]) -> Option<String> {
    let mut checked: Vec<&Path> = Vec::new();
    for p in probes.iter().filter(|p| p.probe.returns) {
        if checked.contains(&p.open_path.as_path()) {
            continue;
        }
        checked.push(&p.open_path);
        if let Some(sym) = unwinding_symbol(&p.open_path) {
            let name = Path::new(&p.probe.module).file_name().map_or_else(
                || p.probe.module.clone(),
                |n| n.to_string_lossy().into_owned(),
            );
            return Some(format!(
                "warning: the target unwinds ({name} uses {sym}): an exception or panic passing \
                 through a function probed with --probe would terminate it; use --probe-entry for those"
            ));
        }
    }
    None
}

/// The symbols of code that an exception or a panic unwinds through.
const UNWINDS: [&str; 5] = [
    "__cxa_throw",
    "__cxa_rethrow",
    "_Unwind_Resume",
    "_Unwind_RaiseException",
    "__rust_start_panic",
];

/// The first of [`UNWINDS`] the ELF file at `path` imports or defines.
fn unwinding_symbol(path: &Path) -> Option<&'static str> {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    file.dynamic_symbols()
        .chain(file.symbols())
        .filter_map(|s| s.name().ok())
        .find_map(|n| UNWINDS.iter().copied().find(|u| *u == n))
}

/// The closest function name within two edits, if any.
fn suggestion<'a>(name: &str, funcs: impl Iterator<Item = &'a Func>) -> Option<String> {
    funcs
        .map(|f| (edit_distance(name, f.name()), f.name()))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.to_string())
}

/// Edits (insert, delete, substitute, swap two neighbours) from a to b;
/// `usize::MAX` without counting when the lengths differ by more than two.
fn edit_distance(a: &str, b: &str) -> usize {
    if a.chars().count().abs_diff(b.chars().count()) > 2 {
        return usize::MAX;
    }
    strsim::osa_distance(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_parts_are_not_functions() {
        assert!(is_cold_part("work.cold"));
        assert!(is_cold_part("_ZN2kv9link_pairEi.cold.12"));
        assert!(!is_cold_part("cold"));
        assert!(!is_cold_part(".cold"));
        assert!(!is_cold_part("work.coldness"));
        assert!(!is_cold_part("work.part.0"));
    }

    /// GCC splits `work`'s unlikely branch into `work.cold`: a glob
    /// probes `work` alone.
    #[test]
    fn a_glob_does_not_probe_a_cold_part() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("tm-tui-cold-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let src = dir.join("cold.c");
        std::fs::write(
            &src,
            "#include <stdio.h>\n#include <stdlib.h>\n\
             __attribute__((cold,noinline)) void complain(int x) { fprintf(stderr, \"%d\", x); }\n\
             __attribute__((noinline)) int work(int x) {\n\
               if (x < 0) { complain(x); fprintf(stderr, \"x\"); abort(); }\n\
               return x * 2;\n}\n\
             int main(int argc, char **argv) { return work(argc) == 3; }\n",
        )?;
        let exe = dir.join("cold");
        let st = std::process::Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(&src)
            .status()?;
        assert!(st.success());
        let all = functions(&Inspector::new(), &exe);
        assert!(all.iter().any(|f| f.raw == "work"));
        let r = resolve(
            &[Spec::parse("work*").map_err(|e| anyhow::anyhow!(e))?],
            &[ModuleFile {
                path: exe.clone(),
                open_path: exe,
            }],
        )?;
        let names: Vec<&str> = r.iter().map(|p| p.probe.func.as_str()).collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(names, ["work"]);
        Ok(())
    }

    #[test]
    fn parses_names_modules_and_signatures() {
        let s = Spec::parse("process_request").expect("spec");
        assert_eq!(
            (s.module, s.name.as_str(), s.args),
            (None, "process_request", None)
        );
        let s = Spec::parse("libssl.so:SSL_read").expect("spec");
        assert_eq!(s.module.as_deref(), Some("libssl.so"));
        assert_eq!(s.name, "SSL_read");
        let s = Spec::parse("myapp::server::handle").expect("spec");
        assert_eq!((s.module, s.name.as_str()), (None, "myapp::server::handle"));
        let s = Spec::parse("libfoo.so:ns::f(int)").expect("spec");
        assert_eq!(s.module.as_deref(), Some("libfoo.so"));
        assert_eq!(s.name, "ns::f");
        let s = Spec::parse("open_file(const char *, int, size_t) -> long").expect("spec");
        assert_eq!(
            s.args,
            Some(vec![ValueType::Str, ValueType::Int, ValueType::Ulong])
        );
        assert_eq!(s.ret, ValueType::Long);
        let s = Spec::parse("f()").expect("spec");
        assert_eq!(s.args, Some(vec![]));
        assert_eq!(s.arg_types(), vec![]);
        let s = Spec::parse("g(struct conn *) -> char *").expect("spec");
        assert_eq!(s.args, Some(vec![ValueType::Ptr]));
        assert_eq!(s.ret, ValueType::Ptr);
        assert_eq!(
            Spec::parse("parse_*").expect("spec").arg_types(),
            vec![ValueType::Auto; DEFAULT_ARGS]
        );
    }

    #[test]
    fn malformed_specs_say_why() {
        for (spec, why) in [
            ("f(int", "unbalanced parentheses"),
            ("f(int))", "nested parentheses"),
            ("f(int, float)", "SSE registers"),
            ("f(widget)", "unknown type 'widget'"),
            ("f(int) ->", "nothing after '->'"),
            ("f(int,int,int,int,int,int,int)", "only the first 6"),
            ("f(str,str,str)", "at most 2 string"),
            (":f", "empty module name"),
            ("lib.so:", "no function name"),
            ("f(int,)", "empty argument type"),
        ] {
            let err = Spec::parse(spec).expect_err("an error");
            assert!(err.contains(why), "{spec}: {err}");
            assert!(err.starts_with(&format!("invalid probe '{spec}'")), "{err}");
        }
    }

    #[test]
    fn demangles_without_params_or_hash() {
        assert_eq!(
            demangle("_ZN5myapp6server6handleEi").as_deref(),
            Some("myapp::server::handle")
        );
        assert_eq!(
            demangle("_ZN5myapp6server6handle17h0123456789abcdefE").as_deref(),
            Some("myapp::server::handle")
        );
        assert_eq!(demangle("process_request"), None);
    }

    #[test]
    fn module_names_match_versions_not_prefixes() {
        let m = ModuleFile {
            path: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
            open_path: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
        };
        assert!(m.is_named("libssl.so"));
        assert!(m.is_named("libssl.so.3"));
        assert!(m.is_named("/usr/lib/x86_64-linux-gnu/libssl.so.3"));
        assert!(!m.is_named("libss"));
        assert!(!m.is_named("libssl.so.1"));
    }

    #[test]
    fn resolves_in_libc_and_explains_misses() {
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("glibc");
        let m = [ModuleFile {
            path: libc.into(),
            open_path: libc.into(),
        }];
        let specs = [Spec::parse("libc.so:getpid").expect("spec")];
        let r = resolve(&specs, &m).expect("resolves");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].probe.func, "getpid");
        assert!(r[0].probe.offset > 0);
        let err = resolve(&[Spec::parse("getpdi").expect("spec")], &m)
            .expect_err("an error")
            .to_string();
        assert!(err.contains("no function named 'getpdi'"), "{err}");
        assert!(err.contains("did you mean 'getpid'"), "{err}");
        let err = resolve(&[Spec::parse("nosuch_*_zz").expect("spec")], &m)
            .expect_err("an error")
            .to_string();
        assert!(err.contains("no function matches 'nosuch_*_zz'"), "{err}");
        let err = resolve(&[Spec::parse("libnope.so:f").expect("spec")], &m)
            .expect_err("an error")
            .to_string();
        assert!(err.contains("no module 'libnope.so'"), "{err}");
        let both = [
            Spec::parse("getpi?").expect("spec"),
            Spec::parse("getpid() -> int").expect("spec"),
        ];
        let r = resolve(&both, &m).expect("resolves");
        assert_eq!(r.len(), 1, "one function, probed once");
        assert_eq!((r[0].probe.args.len(), r[0].probe.ret), (0, ValueType::Int));
        let twice = [
            Spec::parse("getpid()").expect("spec"),
            Spec::parse("getpid(int)").expect("spec"),
        ];
        let err = resolve(&twice, &m).expect_err("an error").to_string();
        assert!(err.contains("already probed by 'getpid()'"), "{err}");
        let err = resolve(&[Spec::parse("*").expect("spec")], &m)
            .expect_err("an error")
            .to_string();
        assert!(err.contains("more than 200"), "{err}");
    }
}
