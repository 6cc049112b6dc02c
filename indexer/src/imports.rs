//! Following a file's imports to the files of the index they name: Rust `use` paths (`crate::`,
//! `self::`, `super::`, the crate's own name, sibling workspace crates), Python modules
//! (absolute and relative), JavaScript/TypeScript relative specifiers, C/C++ quoted includes and
//! Java imports. Plain data in, plain data out: the index is the only file system it sees.

use crate::index::Index;
use crate::lang::Lang;

/// What a file takes from an imported file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// The whole module (`use m::*`, `from m import *`, `import m`, `#include "m.h"`).
    All,
    /// These names (`use m::{a, b}`, `from m import a`, `import {a} from './m'`).
    Names(Vec<String>),
}

/// The files of `index` that `text` (the file at `path`, in `lang`) imports, in the order of its
/// import statements, each with what it takes from them. Unresolvable imports (the standard
/// library, external packages) are left out.
pub fn resolve(index: &Index, path: &str, lang: Lang, text: &str) -> Vec<(String, Imported)> {
    let mut out: Vec<(String, Imported)> = Vec::new();
    let mut add = |file: String, what: Imported| {
        if file == path || !index.files.contains_key(&file) {
            return;
        }
        match out.iter_mut().find(|(f, _)| *f == file) {
            Some((_, Imported::All)) => {}
            Some((_, existing)) if what == Imported::All => *existing = Imported::All,
            Some((_, Imported::Names(names))) => {
                if let Imported::Names(more) = what {
                    for n in more {
                        if !names.contains(&n) {
                            names.push(n);
                        }
                    }
                }
            }
            _ => out.push((file, what)),
        }
    };
    match lang {
        Lang::Rust => {
            for stmt in rust_use_statements(text) {
                for (segments, what) in expand_use_tree(&stmt) {
                    if let Some((file, what)) = resolve_rust(index, path, &segments, what) {
                        add(file, what);
                    }
                }
            }
        }
        Lang::Python => {
            for line in text.lines().map(str::trim) {
                if let Some((module, what)) = python_import(line) {
                    for file in python_module_files(index, path, &module) {
                        add(file, what.clone());
                    }
                }
            }
        }
        Lang::JavaScript | Lang::TypeScript | Lang::Tsx => {
            for line in text.lines().map(str::trim) {
                if let Some((spec, what)) = js_import(line) {
                    if let Some(file) = js_file(index, path, &spec) {
                        add(file, what);
                    }
                }
            }
        }
        Lang::C | Lang::Cpp => {
            for line in text.lines().map(str::trim) {
                let Some(rest) = line.strip_prefix("#include") else {
                    continue;
                };
                let Some(name) = rest
                    .trim()
                    .strip_prefix('"')
                    .and_then(|r| r.split('"').next())
                else {
                    continue;
                };
                let here = join(parent(path), name);
                if index.files.contains_key(&here) {
                    add(here, Imported::All);
                } else if let Some(f) = ends_with(index, name) {
                    add(f, Imported::All);
                }
            }
        }
        Lang::Java => {
            for line in text.lines().map(str::trim) {
                let Some(rest) = line.strip_prefix("import ") else {
                    continue;
                };
                let rest = rest
                    .trim_start_matches("static ")
                    .trim_end_matches(';')
                    .trim();
                let path_part = rest.replace('.', "/");
                if let Some(dir) = path_part.strip_suffix("/*") {
                    for f in index.files.keys() {
                        if parent(f).ends_with(dir) && f.ends_with(".java") {
                            add(f.clone(), Imported::All);
                        }
                    }
                } else if let Some(f) = ends_with(index, &format!("{path_part}.java")) {
                    add(f, Imported::All);
                }
            }
        }
        Lang::Go => {}
    }
    out
}

/// Where the file's own import statements stand in `text`, whole and in file order: byte ranges
/// of whole lines (each with its newline; the last line of `text` may lack one). Only
/// unindented statements count (an import inside a function or a nested module is local to it);
/// one that `text` cuts off is left out.
pub fn import_statements(lang: Lang, text: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut lines = text.split_inclusive('\n').scan(0, |at, line| {
        *at += line.len();
        Some((*at - line.len(), line.trim_end_matches(['\n', '\r'])))
    });
    while let Some((start, line)) = lines.next() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        // Whether a line closes the statement: its first line, then a continuation line.
        let closes: fn(&str, bool) -> bool = match lang {
            Lang::Rust if rust_import(line) => |l, _| l.trim_end().ends_with(';'),
            Lang::Python if line.starts_with("import ") || line.starts_with("from ") => {
                |l, first| l.contains(')') || (first && !l.contains('('))
            }
            Lang::Go if line.starts_with("import ") => {
                |l, first| l.contains(')') || (first && !l.contains('('))
            }
            Lang::JavaScript | Lang::TypeScript | Lang::Tsx if line.starts_with("import ") => {
                |l, first| l.contains('}') || (first && !l.contains('{'))
            }
            Lang::Java if line.starts_with("import ") => |_, _| true,
            Lang::C | Lang::Cpp if line.starts_with("#include") => |_, _| true,
            _ => continue,
        };
        let mut end = start + line.len();
        let mut closed = closes(line, true);
        while !closed {
            // A statement the text cuts off is left out.
            let Some((at, next)) = lines.next() else {
                return out;
            };
            end = at + next.len();
            closed = closes(next, false);
        }
        // With its newline.
        if text[end..].starts_with("\r\n") {
            end += 2;
        } else if text[end..].starts_with('\n') {
            end += 1;
        }
        out.push(start..end);
    }
    out
}

/// A Rust line that begins a `use` or `extern crate` item (any visibility).
fn rust_import(line: &str) -> bool {
    let t = line
        .strip_prefix("pub ")
        .or_else(|| line.strip_prefix("pub(crate) "))
        .or_else(|| line.strip_prefix("pub(super) "))
        .unwrap_or(line);
    t.starts_with("use ") || t.starts_with("extern crate ")
}

/// Whole `use …;` statements (they may span lines), without `pub`, `use` and the `;`.
fn rust_use_statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if current.is_none() {
            let t = t.strip_prefix("pub ").unwrap_or(t);
            let t = t
                .strip_prefix("pub(crate) ")
                .or_else(|| t.strip_prefix("pub(super) "))
                .unwrap_or(t);
            if let Some(rest) = t.strip_prefix("use ") {
                current = Some(String::new());
                if let Some(c) = current.as_mut() {
                    c.push_str(rest);
                }
            } else {
                continue;
            }
        } else if let Some(c) = current.as_mut() {
            c.push(' ');
            c.push_str(t);
        }
        if let Some(c) = &current {
            if let Some(end) = c.find(';') {
                out.push(c[..end].trim().to_string());
                current = None;
            } else if c.len() > 4000 {
                current = None;
            }
        }
    }
    out
}

/// `a::b::{c, d::e, f::*}` → (`[a, b]`, Names[c]), (`[a, b, d]`, Names[e]), (`[a, b, f]`, All).
/// The last element of each path is the imported name; `self` imports the module itself.
fn expand_use_tree(tree: &str) -> Vec<(Vec<String>, Imported)> {
    let mut out = Vec::new();
    expand_into(&[], tree.trim(), &mut out);
    out
}

fn expand_into(prefix: &[String], tree: &str, out: &mut Vec<(Vec<String>, Imported)>) {
    let tree = tree.trim().trim_start_matches("::");
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = segments(&tree[..open]);
        let close = tree.rfind('}').unwrap_or(tree.len());
        let inner = &tree[open + 1..close];
        let mut base = prefix.to_vec();
        base.extend(head);
        for part in split_top_level(inner) {
            expand_into(&base, part, out);
        }
        return;
    }
    let tree = tree.split(" as ").next().unwrap_or(tree).trim();
    if tree.is_empty() {
        return;
    }
    let mut segs = prefix.to_vec();
    segs.extend(segments(tree));
    match segs.last().map(String::as_str) {
        Some("*") | Some("self") => {
            segs.pop();
            out.push((segs, Imported::All));
        }
        Some(_) => {
            let name = segs.pop().unwrap_or_default();
            out.push((segs, Imported::Names(vec![name])));
        }
        None => {}
    }
}

fn segments(s: &str) -> Vec<String> {
    s.split("::")
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits at commas outside braces.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// The module file of a `use` path, and what it takes from it: the longest prefix of `module`
/// that names a file; a rest that names a submodule-less item turns into a name.
fn resolve_rust(
    index: &Index,
    path: &str,
    module: &[String],
    what: Imported,
) -> Option<(String, Imported)> {
    let (first, mut rest) = module.split_first()?;
    let src = crate_src_dir(path);
    // The directory whose `<seg>.rs` / `<seg>/mod.rs` are the children of the starting module,
    // and the starting module's own file.
    let (mut dir, mut file) = match first.as_str() {
        "crate" => (src.clone(), crate_root_file(index, &src)?),
        "self" => (module_dir(path), path.to_string()),
        "super" => {
            // One directory up per `super`.
            let mut dir = module_dir(path);
            let mut supers = 1 + rest.iter().take_while(|s| *s == "super").count();
            rest = &rest[supers - 1..];
            while supers > 0 {
                let up = parent(dir.trim_end_matches('/')).to_string();
                dir = if up.is_empty() { up } else { format!("{up}/") };
                supers -= 1;
            }
            let file = module_file(index, &dir).or_else(|| crate_root_file(index, &dir))?;
            (dir, file)
        }
        name => {
            // A crate of the workspace (the file's own, used from its binaries and tests, or a
            // sibling); anything else is an external crate, not in the index.
            let dir = index.crates.get(name)?.clone();
            let lib = format!("{dir}lib.rs");
            index.files.contains_key(&lib).then_some(())?;
            (dir, lib)
        }
    };
    let mut rest = rest.iter();
    let mut pending: Vec<String> = Vec::new();
    for seg in rest.by_ref() {
        let as_file = format!("{dir}{seg}.rs");
        let as_mod = format!("{dir}{seg}/mod.rs");
        if index.files.contains_key(&as_file) {
            file = as_file;
            dir = format!("{dir}{seg}/");
        } else if index.files.contains_key(&as_mod) {
            file = as_mod;
            dir = format!("{dir}{seg}/");
        } else {
            // An item (a type, an enum) inside `file`: what follows is taken from it.
            pending.push(seg.clone());
            break;
        }
    }
    let what = match (pending.first(), what) {
        (Some(item), _) => Imported::Names(vec![item.clone()]),
        (None, w) => w,
    };
    Some((file, what))
}

/// `…/src/` of the crate `path` belongs to ("" at the top when there is none).
fn crate_src_dir(path: &str) -> String {
    match path.rfind("src/") {
        Some(i) if i == 0 || path[..i].ends_with('/') => path[..i + 4].to_string(),
        _ => String::new(),
    }
}

fn crate_root_file(index: &Index, src: &str) -> Option<String> {
    ["lib.rs", "main.rs"]
        .iter()
        .map(|f| format!("{src}{f}"))
        .find(|f| index.files.contains_key(f))
}

/// The directory holding the children of the module that `path` defines.
fn module_dir(path: &str) -> String {
    let dir = parent(path);
    let stem = path
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .trim_end_matches(".rs");
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    if ["mod", "lib", "main"].contains(&stem) {
        prefix
    } else {
        format!("{prefix}{stem}/")
    }
}

/// The file of the module whose children live in `dir` (`dir.rs` or `dir/mod.rs`).
fn module_file(index: &Index, dir: &str) -> Option<String> {
    let d = dir.trim_end_matches('/');
    [format!("{d}.rs"), format!("{d}/mod.rs")]
        .into_iter()
        .find(|f| index.files.contains_key(f))
}

/// `from a.b import c, d` → (`a.b`, Names[c, d]); `import a.b as x` → (`a.b`, All).
fn python_import(line: &str) -> Option<(String, Imported)> {
    if let Some(rest) = line.strip_prefix("from ") {
        let (module, names) = rest.split_once(" import ")?;
        let names = names.trim().trim_matches(['(', ')']);
        if names == "*" {
            return Some((module.trim().to_string(), Imported::All));
        }
        let names = names
            .split(',')
            .map(|n| n.split(" as ").next().unwrap_or(n).trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        return Some((module.trim().to_string(), Imported::Names(names)));
    }
    let rest = line.strip_prefix("import ")?;
    let module = rest.split([',', ' ']).next()?.trim();
    Some((module.to_string(), Imported::All))
}

/// The files a Python module path may be: relative (leading dots) to the importing file's
/// package, else from the root or a `src/` directory. `from pkg import mod` also tries `pkg/mod`.
fn python_module_files(index: &Index, path: &str, module: &str) -> Vec<String> {
    let dots = module.chars().take_while(|&c| c == '.').count();
    let rel = module[dots..].replace('.', "/");
    let bases: Vec<String> = if dots > 0 {
        let mut dir = parent(path).to_string();
        for _ in 1..dots {
            dir = parent(&dir).to_string();
        }
        vec![dir]
    } else {
        vec![String::new(), "src".to_string(), parent(path).to_string()]
    };
    let mut out = Vec::new();
    for base in bases {
        let stem = join(&base, &rel);
        for f in [format!("{stem}.py"), format!("{stem}/__init__.py")] {
            if index.files.contains_key(&f) && !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

/// `import {a, b as c} from './x'` → (`./x`, Names[a, b]); `import * as m from '../y'` → All.
fn js_import(line: &str) -> Option<(String, Imported)> {
    let (head, spec) = if let Some(i) = line.find(" from ") {
        (&line[..i], &line[i + 6..])
    } else if let Some(i) = line.find("require(") {
        (&line[..i], &line[i + 8..])
    } else {
        return None;
    };
    let spec = spec.trim().trim_start_matches(['\'', '"', '`']);
    let spec = spec.split(['\'', '"', '`']).next()?.to_string();
    if !spec.starts_with('.') {
        return None;
    }
    let what = match (head.find('{'), head.find('}')) {
        (Some(a), Some(b)) if a < b => Imported::Names(
            head[a + 1..b]
                .split(',')
                .map(|n| n.split(" as ").next().unwrap_or(n).trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
        ),
        _ => Imported::All,
    };
    Some((spec, what))
}

fn js_file(index: &Index, path: &str, spec: &str) -> Option<String> {
    let base = join(parent(path), spec);
    let stem = base.trim_end_matches(".js");
    [
        "",
        ".ts",
        ".tsx",
        ".js",
        ".jsx",
        ".mjs",
        "/index.ts",
        "/index.tsx",
        "/index.js",
    ]
    .iter()
    .map(|ext| format!("{stem}{ext}"))
    .chain(std::iter::once(base.clone()))
    .find(|f| index.files.contains_key(f))
}

fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// `dir` + `rel`, with `.` and `..` segments applied.
fn join(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    for seg in rel.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// The one file of the index whose path ends with `/suffix` (or is `suffix`).
fn ends_with(index: &Index, suffix: &str) -> Option<String> {
    let mut hits = index
        .files
        .keys()
        .filter(|f| *f == suffix || f.ends_with(&format!("/{suffix}")));
    let first = hits.next()?.clone();
    hits.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::FileEntry;

    fn index(files: &[&str]) -> Index {
        let mut idx = Index::new();
        idx.crates.insert("wordstats".into(), "src/".into());
        idx.crates
            .insert("text_utils".into(), "crates/text-utils/src/".into());
        for f in files {
            let lang = Lang::detect(std::path::Path::new(f), "").unwrap();
            idx.insert(
                f,
                FileEntry {
                    lang,
                    bytes: 0,
                    symbols: Default::default(),
                },
            );
        }
        idx
    }

    fn names(v: &[&str]) -> Imported {
        Imported::Names(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn rust_use_paths() {
        let idx = index(&[
            "src/lib.rs",
            "src/main.rs",
            "src/stats.rs",
            "src/stats/words.rs",
            "src/io/mod.rs",
            "src/io/read.rs",
            "crates/text-utils/src/lib.rs",
        ]);
        // (file, text, expected)
        type Case<'a> = (&'a str, &'a str, Vec<(&'a str, Imported)>);
        let cases: Vec<Case> = vec![
            (
                "src/main.rs",
                "use wordstats::*;",
                vec![("src/lib.rs", Imported::All)],
            ),
            (
                "src/main.rs",
                "use crate::stats::{Summary, words::count as c};\nuse std::io;",
                vec![
                    ("src/stats.rs", names(&["Summary"])),
                    ("src/stats/words.rs", names(&["count"])),
                ],
            ),
            (
                "src/io/read.rs",
                "use super::Reader;\nuse super::super::stats::*;",
                vec![
                    ("src/io/mod.rs", names(&["Reader"])),
                    ("src/stats.rs", Imported::All),
                ],
            ),
            (
                "src/lib.rs",
                "pub use crate::{\n    io::{self, read::Line},\n    stats::Summary,\n};",
                vec![
                    ("src/io/mod.rs", Imported::All),
                    ("src/io/read.rs", names(&["Line"])),
                    ("src/stats.rs", names(&["Summary"])),
                ],
            ),
            (
                "src/main.rs",
                "use text_utils::wrap;",
                vec![("crates/text-utils/src/lib.rs", names(&["wrap"]))],
            ),
            (
                "src/main.rs",
                "use serde::Deserialize;\nuse std::collections::HashMap;",
                vec![],
            ),
        ];
        for (file, text, want) in cases {
            let got = resolve(&idx, file, Lang::Rust, text);
            let want: Vec<(String, Imported)> =
                want.into_iter().map(|(f, w)| (f.to_string(), w)).collect();
            assert_eq!(got, want, "{file}: {text}");
        }
    }

    #[test]
    fn python_js_c_and_java_imports() {
        let idx = index(&[
            "app/models.py",
            "app/util/__init__.py",
            "app/views.py",
            "web/src/api.ts",
            "web/src/components/index.tsx",
            "web/src/main.ts",
            "native/include/buf.h",
            "native/src/buf.c",
            "java/com/acme/Store.java",
            "java/com/acme/App.java",
        ]);
        let py = resolve(
            &idx,
            "app/views.py",
            Lang::Python,
            "from .models import User, Post\nfrom app.util import *\nimport os",
        );
        assert_eq!(
            py,
            vec![
                ("app/models.py".to_string(), names(&["User", "Post"])),
                ("app/util/__init__.py".to_string(), Imported::All)
            ]
        );
        let ts = resolve(
            &idx,
            "web/src/main.ts",
            Lang::TypeScript,
            "import { fetchUser } from './api';\nimport * as ui from \"./components\";\nimport React from 'react';",
        );
        assert_eq!(
            ts,
            vec![
                ("web/src/api.ts".to_string(), names(&["fetchUser"])),
                ("web/src/components/index.tsx".to_string(), Imported::All)
            ]
        );
        let c = resolve(
            &idx,
            "native/src/buf.c",
            Lang::C,
            "#include <stdio.h>\n#include \"buf.h\"",
        );
        assert_eq!(c, vec![("native/include/buf.h".to_string(), Imported::All)]);
        let java = resolve(
            &idx,
            "java/com/acme/App.java",
            Lang::Java,
            "import com.acme.Store;\nimport java.util.List;",
        );
        assert_eq!(
            java,
            vec![("java/com/acme/Store.java".to_string(), Imported::All)]
        );
    }

    /// (language, file text, the text of its `import_statements`).
    const IMPORT_LINES: &[(Lang, &str, &str)] = &[
        (
            Lang::Rust,
            "//! Docs.\nuse std::fmt;\npub use crate::a::{\n    B,\n    C,\n};\n#[cfg(test)]\nextern crate alloc;\n\nfn f() {\n    use x::y;\n}\nmod m {\n    use super::*;\n}\npub(crate) use self::d::E;\n",
            "use std::fmt;\npub use crate::a::{\n    B,\n    C,\n};\nextern crate alloc;\npub(crate) use self::d::E;\n",
        ),
        (
            Lang::Python,
            "import os\nfrom .a import (\n    b,\n    c,\n)\n\ndef f():\n    import json\nfrom x import y\n",
            "import os\nfrom .a import (\n    b,\n    c,\n)\nfrom x import y\n",
        ),
        (
            Lang::TypeScript,
            "import {\n  a,\n  b,\n} from './m';\nimport * as fs from 'fs';\nconst x = 1;\n",
            "import {\n  a,\n  b,\n} from './m';\nimport * as fs from 'fs';\n",
        ),
        (
            Lang::Go,
            "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\nimport \"io\"\n\nfunc main() {}\n",
            "import (\n\t\"fmt\"\n\t\"os\"\n)\nimport \"io\"\n",
        ),
        (
            Lang::Java,
            "package a;\nimport java.util.List;\nimport static b.C.d;\nclass X {}\n",
            "import java.util.List;\nimport static b.C.d;\n",
        ),
        (
            Lang::C,
            "#include <stdio.h>\n#include \"m.h\"\n#define N 3\nint main() {}\n",
            "#include <stdio.h>\n#include \"m.h\"\n",
        ),
        // A statement the text cuts off is left out.
        (Lang::Rust, "use a;\nuse b::{\n    c,", "use a;\n"),
        (Lang::Rust, "fn main() {}\n", ""),
    ];

    #[test]
    fn import_statements_are_whole_unindented_statements() {
        for (lang, text, want) in IMPORT_LINES {
            let got: String = import_statements(*lang, text)
                .into_iter()
                .map(|r| &text[r])
                .collect();
            assert_eq!(got, *want, "{lang:?}: {text:?}");
        }
    }
}
