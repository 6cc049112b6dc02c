//! Golden symbol lists, one per fixture file in `tests/fixtures/symbols/`: the file's
//! definitions (kind, name, lines, parent, signature, doc), imports, and whether it parsed
//! cleanly. `NIB_UPDATE_GOLDEN=1 cargo test -p nib-indexer --test symbols` rewrites the
//! `.golden` files; review the diff before committing it.

use nib_indexer::{Lang, SymbolParser};
use std::path::Path;

fn render(path: &Path, text: &str, parser: &mut SymbolParser) -> String {
    let lang = Lang::detect(path, text).expect("a fixture in a known language");
    let fs = parser.parse(lang, text);
    let mut out = format!("language: {}\nerrors: {}\n", lang.name(), fs.has_errors);
    for i in &fs.imports {
        out.push_str(&format!("import: {i}\n"));
    }
    for (i, s) in fs.symbols.iter().enumerate() {
        out.push_str(&format!(
            "{} {} {}-{}",
            s.kind,
            s.name,
            s.start_line + 1,
            s.end_line + 1
        ));
        if let Some(p) = fs.parent(i) {
            out.push_str(&format!(" in {p}"));
        }
        let sig = s
            .signature(text)
            .expect("the header lies in the parsed text");
        out.push_str(&format!("\n    sig: {sig}\n"));
        let doc = s.doc(text, lang);
        if !doc.is_empty() {
            out.push_str(&format!("    doc: {doc}\n"));
        }
    }
    out
}

#[test]
fn golden_symbols_per_language() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/symbols");
    let update = std::env::var_os("NIB_UPDATE_GOLDEN").is_some();
    let mut parser = SymbolParser::new();
    let mut failures = Vec::new();
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.extension().is_some_and(|e| e == "golden") {
            continue;
        }
        n += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let got = render(&path, &text, &mut parser);
        let golden = path.with_file_name(format!(
            "{}.golden",
            path.file_name().unwrap().to_string_lossy()
        ));
        if update {
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
            panic!(
                "{} is missing: run with NIB_UPDATE_GOLDEN=1",
                golden.display()
            )
        });
        if got != want {
            failures.push(format!(
                "{}:\n--- want\n{want}--- got\n{got}",
                path.display()
            ));
        }
    }
    assert!(n >= 7, "only {n} fixtures");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn deep_nesting_and_huge_lines_do_not_overflow() {
    let mut parser = SymbolParser::new();
    // 20,000 nested blocks: tree-sitter and nib's own walk are iterative.
    let deep = format!("fn f() {{{}{}}}\n", "{".repeat(20_000), "}".repeat(20_000));
    let fs = parser.parse(Lang::Rust, &deep);
    assert_eq!(&*fs.symbols[0].name, "f");
    // One line of 50 MB.
    let long = format!("fn g() {{ let x = \"{}\"; }}\n", "a".repeat(50 << 20));
    let fs = parser.parse(Lang::Rust, &long);
    assert_eq!(&*fs.symbols[0].name, "g");
    assert!(fs.symbols[0].signature(&long).unwrap().len() < 300);
}

/// Incremental re-parsing gives exactly what a full parse gives, edit after edit: random
/// insertions (characters, newlines, braces, whole items, doc comments) and deletions, on every
/// fixture and on real Rust sources of this repository.
#[test]
fn incremental_parse_equals_full_parse_after_random_edits() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/symbols");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x != "golden"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    for src in ["src/context.rs", "src/walk.rs", "src/imports.rs"] {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(src);
        files.push((
            p.display().to_string(),
            std::fs::read_to_string(&p).unwrap(),
        ));
    }
    let pieces = [
        "x",
        "\n",
        "}",
        "{",
        " ",
        "/// doc\n",
        "fn added(a: u32) -> u32 { a }\n",
        "struct S { f: u8 }\n",
        "def g():\n    pass\n",
        "class K {}\n",
        "\"",
        "é",
        "// c\n",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n.max(1) as u64) as usize
    };
    for (path, original) in files {
        let lang = Lang::detect(Path::new(&path), &original).unwrap();
        let mut incremental = SymbolParser::new();
        let mut full = SymbolParser::new();
        let mut text = original.clone();
        let mut clean = 0;
        assert_eq!(
            incremental.parse_incremental(&path, lang, &text),
            full.parse(lang, &text)
        );
        for step in 0..120 {
            let at = {
                let mut i = next(text.len() + 1);
                while !text.is_char_boundary(i) {
                    i -= 1;
                }
                i
            };
            if next(3) == 0 && !text.is_empty() {
                let mut end = (at + 1 + next(40)).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                text.replace_range(at..end, "");
            } else {
                text.insert_str(at, pieces[next(pieces.len())]);
            }
            // Every few edits, repair: back to the original text, which parses cleanly.
            if step % 7 == 6 {
                text = original.clone();
            }
            let got = incremental.parse_incremental(&path, lang, &text);
            let want = full.parse(lang, &text);
            // Broken code: tree-sitter's incremental error recovery may settle differently from
            // a fresh parse; once the file parses cleanly again the two must agree exactly.
            if !want.has_errors {
                assert_eq!(got, want, "{path}, edit {step} at byte {at}");
                clean += 1;
            }
        }
        if !full.parse(lang, &original).has_errors {
            assert!(clean >= 17, "{path}: only {clean} clean states compared");
        }
    }
}

/// Every Rust file of this workspace (its own code, the tokenizer fixtures' third-party files,
/// the editors' demo) and the fixtures, with their texts.
fn workspace_rust_files() -> Vec<(std::path::PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() && !name.starts_with('.') && name != "target" && name != "node_modules" {
                dirs.push(p);
            } else if name.ends_with(".rs") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 50, "only {} Rust files found", files.len());
    files
        .into_iter()
        .filter_map(|p| Some((p.clone(), std::fs::read_to_string(&p).ok()?)))
        .collect()
}

/// Rust definitions come from one walk over the tree, not from the tags query; the query is the
/// reference. Both find the same symbols on every Rust file of the workspace.
#[test]
fn rust_tree_walk_finds_what_the_tags_query_finds() {
    let (mut walk, mut query) = (SymbolParser::new(), SymbolParser::with_tags_queries());
    let mut symbols = 0;
    for (p, text) in workspace_rust_files() {
        let a = walk.parse(Lang::Rust, &text);
        let b = query.parse(Lang::Rust, &text);
        assert_eq!(a, b, "{}", p.display());
        symbols += a.symbols.len();
    }
    assert!(symbols >= 1000, "only {symbols} symbols compared");
}

/// tree-sitter parses a Rust file's skeleton (no function bodies, attributes, comments or
/// macro input), and finds what it finds in the whole text: the same symbols, headers, parents,
/// chunks and identifiers, on every Rust file of the workspace, by the walk and by the query.
/// Only `has_errors` may differ, since the skeleton has no bodies to be wrong in.
#[test]
fn the_skeleton_yields_what_the_whole_text_yields() {
    let mut parsers = [
        (SymbolParser::new(), SymbolParser::new().whole_text()),
        (
            SymbolParser::with_tags_queries(),
            SymbolParser::with_tags_queries().whole_text(),
        ),
    ];
    let mut symbols = 0;
    for (p, text) in workspace_rust_files() {
        for (skeleton, whole) in &mut parsers {
            let mut a = skeleton.parse(Lang::Rust, &text);
            let mut b = whole.parse(Lang::Rust, &text);
            (a.has_errors, b.has_errors) = (false, false);
            assert_eq!(a, b, "{}", p.display());
            symbols += a.symbols.len();
        }
    }
    assert!(symbols >= 2000, "only {symbols} symbols compared");
}
