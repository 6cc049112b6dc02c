//! One file's symbols, imports and identifiers, from its tree-sitter syntax tree and the
//! grammar's tags query. Takes text, returns plain data; a file with syntax errors still yields
//! every definition tree-sitter could recover.

use crate::lang::{refine_kind, Lang};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tree_sitter::{InputEdit, Parser, Point, Query, QueryCursor, StreamingIterator, Tree};

/// Strings are boxed (`Box<str>`: no spare capacity, 16 bytes a field) and the kind is one of
/// [`KINDS`]: a large repository has a million symbols.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symbol {
    pub name: Box<str>,
    /// One of [`KINDS`]: function, method, class, interface, module, macro, constant, type…
    pub kind: Kind,
    /// 0-based, inclusive.
    pub start_line: u32,
    pub end_line: u32,
    /// The header up to the body (`pub fn f(x: u32) -> u32`), whitespace runs collapsed.
    pub signature: Box<str>,
    /// The comment lines right above (or a Python docstring), without their markers.
    pub doc: Box<str>,
    /// The enclosing definition's name (a method's class or impl), if any.
    pub parent: Option<Box<str>>,
}

/// Every kind a symbol can have.
pub const KINDS: &[&str] = &[
    "function",
    "method",
    "class",
    "interface",
    "module",
    "macro",
    "constant",
    "type",
    "struct",
    "enum",
    "union",
    "trait",
    "other",
];

/// A symbol's kind: one of [`KINDS`], stored as a pointer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind(&'static str);

impl Kind {
    /// The [`KINDS`] entry equal to `kind` (`other` when there is none).
    pub fn new(kind: &str) -> Kind {
        Kind(
            KINDS
                .iter()
                .find(|k| **k == kind)
                .copied()
                .unwrap_or("other"),
        )
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl std::ops::Deref for Kind {
    type Target = str;
    fn deref(&self) -> &str {
        self.0
    }
}

impl PartialEq<&str> for Kind {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        Ok(Kind::new(&String::deserialize(d)?))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSymbols {
    pub symbols: Vec<Symbol>,
    /// `use`, `import`, `#include` lines, trimmed.
    pub imports: Vec<String>,
    /// The file's distinct identifiers (2+ characters) as 32-bit hashes ([`ident_hash`]), sorted:
    /// the bag of words for similarity, at 4 bytes a word.
    pub idents: Vec<u32>,
    /// Pieces of the file for similarity search: each top-level item whole when it is short,
    /// else in windows, with their own identifier bags.
    pub chunks: Vec<Chunk>,
    pub has_errors: bool,
}

/// A stretch of a file that similarity search can return.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// 0-based, inclusive.
    pub start_line: u32,
    pub end_line: u32,
    /// Distinct identifier hashes, sorted.
    pub idents: Vec<u32>,
}

/// Items up to this many lines are one chunk; longer ones are cut into windows of this size.
const CHUNK_LINES: usize = 40;

/// Parsers and compiled queries, one per language, made on first use. Not `Sync`: one per thread.
/// For files parsed with [`SymbolParser::parse_incremental`] (the documents being edited) it also
/// keeps the last text and syntax tree, so that an edit re-parses incrementally.
#[derive(Default)]
pub struct SymbolParser {
    langs: HashMap<Lang, (Parser, Query)>,
    recent: HashMap<String, Previous>,
    clock: u64,
}

/// A file's last parse, for the next incremental one.
struct Previous {
    lang: Lang,
    text: String,
    tree: Tree,
    /// The symbols with the byte span of their definition node.
    symbols: Vec<(Symbol, (usize, usize))>,
    used: u64,
}

/// Files whose last parse is kept for incremental re-parsing.
const RECENT_FILES: usize = 16;

const MAX_SIGNATURE: usize = 240;
const MAX_DOC: usize = 400;

impl SymbolParser {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&mut self, lang: Lang) -> &mut (Parser, Query) {
        self.langs.entry(lang).or_insert_with(|| {
            let mut p = Parser::new();
            p.set_language(&lang.grammar())
                .expect("grammar matches tree-sitter");
            let mut q = Query::new(&lang.grammar(), &lang.tags_query())
                .expect("the grammar's own tags query");
            // The tags queries also find references (calls, type uses): most of their matches,
            // none of which the index keeps. Only the patterns that define something stay.
            let defines: Vec<bool> = q
                .capture_names()
                .iter()
                .map(|n| n.starts_with("definition."))
                .collect();
            for pattern in 0..q.pattern_count() {
                let uses_definition = q
                    .capture_quantifiers(pattern)
                    .iter()
                    .zip(&defines)
                    .any(|(quant, def)| *def && *quant != tree_sitter::CaptureQuantifier::Zero);
                if !uses_definition {
                    q.disable_pattern(pattern);
                }
            }
            (p, q)
        })
    }

    pub fn parse(&mut self, lang: Lang, text: &str) -> FileSymbols {
        let (parser, query) = self.state(lang);
        let Some(tree) = parser.parse(text, None) else {
            return FileSymbols::default();
        };
        let found = definitions(query, tree.root_node(), text, None);
        finish(found, text, lang, tree.root_node()).0
    }

    /// Like [`parse`](Self::parse) for the file known as `key`, reusing its last parse: the
    /// edit between the two texts is given to tree-sitter, and only the top-level items it
    /// touched are read again; the symbols after it move by the edit's size. Where the file
    /// parses without errors the result is exactly a full parse's (tested on random edits);
    /// where it has errors, tree-sitter's incremental error recovery may settle differently
    /// from a fresh parse of the same broken text, until the next error-free edit.
    pub fn parse_incremental(&mut self, key: &str, lang: Lang, text: &str) -> FileSymbols {
        self.clock += 1;
        let clock = self.clock;
        let prev = self.recent.remove(key).filter(|p| p.lang == lang);
        let (parser, query) = self.state(lang);
        let (tree, found) = match prev {
            Some(mut prev) => {
                let edit = edit_between(&prev.text, text);
                prev.tree.edit(&edit);
                let Some(tree) = parser.parse(text, Some(&prev.tree)) else {
                    return FileSymbols::default();
                };
                let found = reread(query, &prev, &tree, &edit, text)
                    .unwrap_or_else(|| definitions(query, tree.root_node(), text, None));
                (tree, found)
            }
            None => {
                let Some(tree) = parser.parse(text, None) else {
                    return FileSymbols::default();
                };
                let found = definitions(query, tree.root_node(), text, None);
                (tree, found)
            }
        };
        let (symbols, spans) = finish(found, text, lang, tree.root_node());
        let kept = symbols.symbols.iter().cloned().zip(spans).collect();
        if self.recent.len() >= RECENT_FILES {
            if let Some(oldest) = self
                .recent
                .iter()
                .min_by_key(|(_, p)| p.used)
                .map(|(k, _)| k.clone())
            {
                self.recent.remove(&oldest);
            }
        }
        self.recent.insert(
            key.to_string(),
            Previous {
                lang,
                text: text.to_string(),
                tree,
                symbols: kept,
                used: clock,
            },
        );
        symbols
    }

    /// Forgets the last parse of `key` (its document was closed).
    pub fn forget(&mut self, key: &str) {
        self.recent.remove(key);
    }
}

/// The definitions the tags query finds, with their nodes' byte spans; within `range` only when
/// given (matches whose definition lies wholly inside it).
fn definitions(
    query: &Query,
    root: tree_sitter::Node,
    text: &str,
    range: Option<(usize, usize)>,
) -> Vec<(Symbol, (usize, usize))> {
    let names = query.capture_names();
    let mut symbols = Vec::new();
    let mut cursor = QueryCursor::new();
    if let Some((lo, hi)) = range {
        cursor.set_byte_range(lo..hi);
    }
    let mut matches = cursor.matches(query, root, text.as_bytes());
    while let Some(m) = matches.next() {
        let mut name = None;
        let mut def = None;
        for c in m.captures {
            let cap = names[c.index as usize];
            if cap == "name" {
                name = Some(c.node);
            } else if let Some(kind) = cap.strip_prefix("definition.") {
                def = Some((kind, c.node));
            }
        }
        let (Some(name), Some((kind, node))) = (name, def) else {
            continue;
        };
        if let Some((lo, hi)) = range {
            if node.start_byte() < lo || node.end_byte() > hi {
                continue;
            }
        }
        let Ok(name) = name.utf8_text(text.as_bytes()) else {
            continue;
        };
        let header_end = node
            .child_by_field_name("body")
            .map_or(node.end_byte(), |b| b.start_byte())
            .min(node.start_byte() + MAX_SIGNATURE * 4);
        let signature = collapse(&text[node.start_byte()..floor(text, header_end)]);
        symbols.push((
            Symbol {
                name: name.into(),
                kind: refine_kind(node.kind(), kind),
                parent: parent_of(node, text).map(String::into_boxed_str),
                start_line: node.start_position().row as u32,
                end_line: node.end_position().row as u32,
                signature: truncate(&signature, MAX_SIGNATURE).into(),
                doc: Box::default(),
            },
            (node.start_byte(), node.end_byte()),
        ));
    }
    symbols
}

/// Sorts and de-duplicates the definitions, adds their doc comments, and the file's imports and
/// identifiers: the file's symbols, and the spans of their definitions.
fn finish(
    mut found: Vec<(Symbol, (usize, usize))>,
    text: &str,
    lang: Lang,
    root: tree_sitter::Node,
) -> (FileSymbols, Vec<(usize, usize)>) {
    found.sort_by(|(a, _), (b, _)| {
        (a.start_line, std::cmp::Reverse(a.end_line), &a.name).cmp(&(
            b.start_line,
            std::cmp::Reverse(b.end_line),
            &b.name,
        ))
    });
    found.dedup_by(|(a, _), (b, _)| a.name == b.name && a.start_line == b.start_line);
    let lines: Vec<&str> = text.lines().collect();
    let (mut symbols, spans): (Vec<Symbol>, Vec<(usize, usize)>) = found.into_iter().unzip();
    for sym in &mut symbols {
        sym.doc = doc_above(&lines, sym.start_line as usize, lang).into();
    }
    let chunks = chunks(&symbols, &lines);
    let symbols = FileSymbols {
        symbols,
        imports: imports(&lines, lang),
        idents: identifiers(text),
        chunks,
        has_errors: root.has_error(),
    };
    (symbols, spans)
}

/// The top-level items as chunks: whole up to [`CHUNK_LINES`] lines, else in windows of that
/// many lines. Code outside any item (scripts, statements at the top) is windowed too.
fn chunks(symbols: &[Symbol], lines: &[&str]) -> Vec<Chunk> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut covered = 0usize;
    let push_windows = |from: usize, to: usize, spans: &mut Vec<(usize, usize)>| {
        let mut at = from;
        while at <= to {
            let end = (at + CHUNK_LINES - 1).min(to);
            spans.push((at, end));
            at = end + 1;
        }
    };
    for s in symbols.iter().filter(|s| s.parent.is_none()) {
        let (a, b) = (
            s.start_line as usize,
            (s.end_line as usize).min(lines.len().saturating_sub(1)),
        );
        if a < covered || a > b {
            continue;
        }
        // Loose code before the item.
        if a > covered + 2 {
            push_windows(covered, a - 1, &mut spans);
        }
        push_windows(a, b, &mut spans);
        covered = b + 1;
    }
    if lines.len() > covered + 2 {
        push_windows(covered, lines.len() - 1, &mut spans);
    }
    spans
        .into_iter()
        .map(|(a, b)| Chunk {
            start_line: a as u32,
            end_line: b as u32,
            idents: identifiers(&lines[a..=b].join("\n")),
        })
        .filter(|c| c.idents.len() >= 3)
        .collect()
}

/// The tree-sitter edit that turns `old` into `new`: their common prefix and suffix stay.
fn edit_between(old: &str, new: &str) -> InputEdit {
    let mut start = old
        .bytes()
        .zip(new.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    while !(old.is_char_boundary(start) && new.is_char_boundary(start)) {
        start -= 1;
    }
    let max_suffix = old.len().min(new.len()) - start;
    let mut suffix = old
        .bytes()
        .rev()
        .zip(new.bytes().rev())
        .take(max_suffix)
        .take_while(|(a, b)| a == b)
        .count();
    while !(old.is_char_boundary(old.len() - suffix) && new.is_char_boundary(new.len() - suffix)) {
        suffix -= 1;
    }
    let point = |text: &str, at: usize| {
        let before = &text.as_bytes()[..at];
        let row = before.iter().filter(|&&b| b == b'\n').count();
        let col = at
            - before
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
        Point::new(row, col)
    };
    InputEdit {
        start_byte: start,
        old_end_byte: old.len() - suffix,
        new_end_byte: new.len() - suffix,
        start_position: point(old, start),
        old_end_position: point(old, old.len() - suffix),
        new_end_position: point(new, new.len() - suffix),
    }
}

/// The symbols after an edit from the previous ones: the top-level items the edit (or a
/// syntactic change tree-sitter reports) touches are queried again; symbols before them stay,
/// symbols after them move. `None` where that cannot be done exactly (a symbol straddles the
/// re-read region): the caller then queries the whole tree.
fn reread(
    query: &Query,
    prev: &Previous,
    tree: &Tree,
    edit: &InputEdit,
    text: &str,
) -> Option<Vec<(Symbol, (usize, usize))>> {
    let (mut lo, mut hi) = (edit.start_byte, edit.new_end_byte);
    for r in prev.tree.changed_ranges(tree) {
        lo = lo.min(r.start_byte);
        hi = hi.max(r.end_byte);
    }
    // Widen to whole top-level items, so that each definition is read whole.
    let root = tree.root_node();
    let mut walk = root.walk();
    for child in root.children(&mut walk) {
        if child.end_byte() >= lo && child.start_byte() <= hi {
            lo = lo.min(child.start_byte());
            hi = hi.max(child.end_byte());
        }
    }
    let delta = edit.new_end_byte as isize - edit.old_end_byte as isize;
    let hi_old = (hi as isize - delta) as usize;
    let line_delta = edit.new_end_position.row as isize - edit.old_end_position.row as isize;
    let mut out = Vec::with_capacity(prev.symbols.len());
    for (sym, (s, e)) in &prev.symbols {
        if *e <= lo {
            out.push((sym.clone(), (*s, *e)));
        } else if *s >= hi_old {
            let mut moved = sym.clone();
            moved.start_line = (moved.start_line as isize + line_delta) as u32;
            moved.end_line = (moved.end_line as isize + line_delta) as u32;
            out.push((
                moved,
                (
                    (*s as isize + delta) as usize,
                    (*e as isize + delta) as usize,
                ),
            ));
        } else if *s < lo || *e > hi_old {
            return None;
        }
    }
    out.extend(definitions(query, root, text, Some((lo, hi))));
    Some(out)
}

/// The name of the item that encloses `node`: a class, trait or interface by its name, an `impl`
/// block by its type. Walks up the tree iteratively.
fn parent_of(node: tree_sitter::Node, text: &str) -> Option<String> {
    let mut cur = node.parent();
    while let Some(n) = cur {
        let field = match n.kind() {
            "impl_item" => Some("type"),
            "trait_item"
            | "class_definition"
            | "class_declaration"
            | "class"
            | "interface_declaration"
            | "struct_item"
            | "enum_item"
            | "mod_item"
            | "class_specifier"
            | "struct_specifier"
            | "namespace_definition"
            | "enum_declaration" => Some("name"),
            _ => None,
        };
        if let Some(f) = field {
            if let Some(name) = n
                .child_by_field_name(f)
                .and_then(|c| c.utf8_text(text.as_bytes()).ok())
            {
                return Some(truncate(&collapse(name), 80));
            }
        }
        cur = n.parent();
    }
    None
}

fn floor(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_string()
    } else {
        format!("{}…", &s[..floor(s, max)])
    }
}

/// Comment lines right above line `at` (attributes and decorators in between are skipped), or
/// for Python the docstring on the lines after it.
fn doc_above(lines: &[&str], at: usize, lang: Lang) -> String {
    let marker = lang.line_comment();
    let mut doc: Vec<&str> = Vec::new();
    let mut i = at;
    while i > 0 {
        i -= 1;
        let l = lines[i].trim();
        if l.starts_with("#[") || (l.starts_with('@') && lang != Lang::Rust) {
            continue;
        }
        if let Some(rest) = l.strip_prefix(marker) {
            doc.push(rest.trim_start_matches(['/', '!', '*']).trim());
        } else if l.starts_with("/*") || l.starts_with('*') {
            doc.push(
                l.trim_start_matches(['/', '*'])
                    .trim_end_matches(['*', '/'])
                    .trim(),
            );
        } else {
            break;
        }
    }
    doc.reverse();
    let mut text = doc.join(" ").trim().to_string();
    if text.is_empty() && lang == Lang::Python {
        // The docstring: the first lines after the header that start with a quote.
        if let Some(l) = lines
            .iter()
            .skip(at + 1)
            .take(3)
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
        {
            if l.starts_with("\"\"\"") || l.starts_with("'''") {
                text = l.trim_matches(['"', '\'']).trim().to_string();
            }
        }
    }
    truncate(&text, MAX_DOC)
}

fn imports(lines: &[&str], lang: Lang) -> Vec<String> {
    if lang == Lang::Go {
        // `import "x"`, or the lines of an `import ( … )` block.
        let mut out = Vec::new();
        let mut in_block = false;
        for l in lines.iter().map(|l| l.trim()) {
            if in_block {
                if l.starts_with(')') {
                    in_block = false;
                } else if !l.is_empty() {
                    out.push(format!("import {l}"));
                }
            } else if l == "import (" {
                in_block = true;
            } else if l.starts_with("import ") {
                out.push(l.to_string());
            }
        }
        return out;
    }
    let prefixes: &[&str] = match lang {
        Lang::Rust => &["use ", "pub use ", "mod ", "pub mod "],
        Lang::Python => &["import ", "from "],
        Lang::JavaScript | Lang::TypeScript | Lang::Tsx => &["import ", "export * from", "const "],
        Lang::Go => &["import "],
        Lang::Java => &["import "],
        Lang::C | Lang::Cpp => &["#include"],
    };
    lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .filter(|l| !l.starts_with("const ") || l.contains("require("))
        .filter(|l| !(l.starts_with("mod ") || l.starts_with("pub mod ")) || l.ends_with(';'))
        .map(str::to_string)
        .collect()
}

/// Distinct identifier-like words of two or more characters, as sorted hashes.
pub fn identifiers(text: &str) -> Vec<u32> {
    let mut out: Vec<u32> = words(text)
        .filter(|w| w.len() >= 2)
        .map(ident_hash)
        .collect();
    out.sort_unstable();
    out.dedup();
    // Most words repeat: without this the bag keeps room for every occurrence.
    out.shrink_to_fit();
    out
}

/// FNV-1a, 32 bits: stable across runs and machines (an on-disk cache can keep it).
pub fn ident_hash(word: &str) -> u32 {
    word.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// Identifier-like words of `text`, in order (ASCII letters, digits and `_`, not starting with a
/// digit).
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        })
}
