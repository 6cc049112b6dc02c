//! One file's symbols, imports and identifiers, from its tree-sitter syntax tree (for Rust, the
//! tree of its [`skeleton`]) and the grammar's tags query. Takes text, returns plain data; a file
//! with syntax errors still yields every definition tree-sitter could recover.

use crate::lang::{refine_kind, Lang};
use crate::skeleton::{self, Skeleton};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use tree_sitter::{InputEdit, Parser, Point, Query, QueryCursor, StreamingIterator, Tree};

/// One definition. A large repository has a million of them, so a symbol is 32 bytes: the kind
/// is one byte, the header and doc comment stay in the file, read when a prompt or a listing
/// needs them ([`Symbol::signature`], [`Symbol::doc`]), the enclosing item's name is kept aside
/// for the few symbols that have one ([`FileSymbols::parent`]), and the index shares one copy of
/// each name among all the symbols that bear it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symbol {
    pub name: Arc<str>,
    /// One of [`KINDS`]: function, method, class, interface, module, macro, constant, type…
    pub kind: Kind,
    /// The header starts with `pub` (a Rust item visible outside its module).
    pub public: bool,
    /// 0-based, inclusive.
    pub start_line: u32,
    pub end_line: u32,
    /// The header (the definition up to its body) in the file's text: first byte and length.
    pub head_start: u32,
    pub head_len: u16,
}

impl Symbol {
    /// The header up to the body (`pub fn f(x: u32) -> u32`), whitespace runs collapsed, read
    /// from `text`, the file's text. `None` when `text` is not what was indexed any more (the
    /// header is out of range or no longer holds the name).
    pub fn signature(&self, text: &str) -> Option<String> {
        let start = self.head_start as usize;
        let head = text.get(start..start + self.head_len as usize)?;
        head.contains(&*self.name)
            .then(|| truncate(&collapse(head), MAX_SIGNATURE))
    }

    /// The comment lines right above (attributes and decorators in between are skipped), or for
    /// Python the docstring on the lines after the header, without their markers; read from
    /// `text`, the file's text.
    pub fn doc(&self, text: &str, lang: Lang) -> String {
        let start = floor(text, self.head_start as usize);
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        doc_of(text[..line_start].lines().rev(), &text[start..], lang)
    }
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

/// A symbol's kind: one of [`KINDS`], stored as its position there (one byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind(u8);

impl Kind {
    /// The [`KINDS`] entry equal to `kind` (`other` when there is none).
    pub fn new(kind: &str) -> Kind {
        let other = KINDS.len() - 1;
        Kind(KINDS.iter().position(|k| *k == kind).unwrap_or(other) as u8)
    }

    pub fn as_str(self) -> &'static str {
        KINDS[self.0 as usize]
    }
}

impl std::ops::Deref for Kind {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<&str> for Kind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
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
    /// The enclosing definition's name (a method's class or impl) of the symbols that have one:
    /// (index in `symbols`, name), by index.
    pub parents: Vec<(u32, Arc<str>)>,
    /// `use`, `import`, `#include` lines, trimmed.
    pub imports: Vec<String>,
    /// The file's distinct identifiers (2+ characters) as 32-bit hashes ([`ident_hash`]), sorted:
    /// the bag of words for similarity, at 4 bytes a word.
    pub idents: Vec<u32>,
    /// Pieces of the file for similarity search: each top-level item whole when it is short,
    /// else in windows. Their identifier bags lie one after another in `chunk_idents`
    /// ([`FileSymbols::chunk_bags`]): one allocation a file, not one a chunk (a large
    /// repository has a million chunks, most of them one line).
    pub chunks: Vec<Chunk>,
    pub chunk_idents: ChunkIdents,
    /// tree-sitter found syntax errors in what it parsed (for Rust, the skeleton: errors inside
    /// function bodies do not count).
    pub has_errors: bool,
}

/// The chunks' identifier bags, one after another. A chunk's identifiers are some of its file's,
/// so they are kept as positions in the file's bag (`idents`), two bytes each, where the file has
/// at most 65,536 distinct identifiers; else as the hashes themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkIdents {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

impl Default for ChunkIdents {
    fn default() -> Self {
        ChunkIdents::Narrow(Vec::new())
    }
}

/// One chunk's distinct identifiers.
#[derive(Debug, Clone, Copy)]
pub enum Bag<'a> {
    /// Positions (sorted) in `file`, the file's sorted bag of hashes.
    Narrow { file: &'a [u32], at: &'a [u16] },
    /// Hashes, sorted.
    Wide(&'a [u32]),
}

impl Bag<'_> {
    pub fn len(&self) -> usize {
        match self {
            Bag::Narrow { at, .. } => at.len(),
            Bag::Wide(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the identifier with hash `h` is in the bag.
    pub fn contains(&self, h: u32) -> bool {
        match self {
            Bag::Narrow { file, at } => file
                .binary_search(&h)
                .is_ok_and(|i| at.binary_search(&(i as u16)).is_ok()),
            Bag::Wide(b) => b.binary_search(&h).is_ok(),
        }
    }
}

impl FileSymbols {
    /// The name of the item that encloses symbol `i` (a method's class or impl), if any.
    pub fn parent(&self, i: usize) -> Option<&str> {
        let at = self
            .parents
            .binary_search_by_key(&i, |(j, _)| *j as usize)
            .ok()?;
        Some(&self.parents[at].1)
    }

    /// The symbols that no other item encloses.
    pub fn top_level(&self) -> impl Iterator<Item = &Symbol> {
        let mut nested = self.parents.iter().map(|(j, _)| *j as usize).peekable();
        self.symbols.iter().enumerate().filter_map(move |(i, s)| {
            if nested.next_if_eq(&i).is_some() {
                None
            } else {
                Some(s)
            }
        })
    }

    /// Each chunk with its bag of identifiers.
    pub fn chunk_bags(&self) -> impl Iterator<Item = (&Chunk, Bag<'_>)> {
        let mut start = 0;
        self.chunks.iter().map(move |c| {
            let end = c.idents_end as usize;
            let bag = match &self.chunk_idents {
                ChunkIdents::Narrow(v) => Bag::Narrow {
                    file: &self.idents,
                    at: &v[start.min(v.len())..end.clamp(start, v.len())],
                },
                ChunkIdents::Wide(v) => {
                    Bag::Wide(&v[start.min(v.len())..end.clamp(start, v.len())])
                }
            };
            start = end;
            (c, bag)
        })
    }
}

/// A stretch of a file that similarity search can return.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// 0-based, inclusive.
    pub start_line: u32,
    pub end_line: u32,
    /// Where this chunk's identifier bag ends in [`FileSymbols::chunk_idents`] (it starts where
    /// the previous chunk's ends).
    pub idents_end: u32,
}

/// Items up to this many lines are one chunk; longer ones are cut into windows of this size.
const CHUNK_LINES: usize = 40;

/// Parsers and compiled queries, one per language, made on first use. Not `Sync`: one per thread.
/// For files parsed with [`SymbolParser::parse_incremental`] (the documents being edited) it also
/// keeps the last text and syntax tree, so that an edit re-parses incrementally.
#[derive(Default)]
pub struct SymbolParser {
    langs: HashMap<Lang, (Parser, Query)>,
    /// How definitions are found (the tags query for every language in the walk's reference).
    finder: Finder,
    /// Rust files are parsed whole, not as their [`skeleton`] (the skeleton's reference).
    whole_text: bool,
    recent: HashMap<String, Previous>,
    clock: u64,
}

/// A file's last parse, for the next incremental one.
struct Previous {
    lang: Lang,
    /// The text tree-sitter parsed (for Rust, the file's skeleton).
    text: String,
    tree: Tree,
    /// The definitions, in the parsed text's offsets.
    symbols: Vec<Found>,
    used: u64,
}

/// tree-sitter's C core allocates through mimalloc, apart from the Rust heap: a syntax tree is
/// some 35 bytes per byte of source, freed once the file is read, and in the same heap as the
/// symbols that outlive it its holes stayed (65 MB on a 233 MB corpus with glibc).
fn use_own_allocator_for_trees() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut std::ffi::c_void {
        match n.checked_mul(size) {
            // SAFETY: mimalloc's zeroing allocator, for a size that did not overflow.
            Some(bytes) => unsafe { libmimalloc_sys::mi_zalloc(bytes) },
            None => std::ptr::null_mut(),
        }
    }
    // SAFETY: before any parser or query exists (they are made in `SymbolParser::state`, after
    // this), and mimalloc's functions behave as C's `malloc` family.
    ONCE.call_once(|| unsafe {
        tree_sitter::set_allocator(
            Some(libmimalloc_sys::mi_malloc),
            Some(calloc),
            Some(libmimalloc_sys::mi_realloc),
            Some(libmimalloc_sys::mi_free),
        )
    });
}

/// Files whose last parse is kept for incremental re-parsing.
const RECENT_FILES: usize = 16;

const MAX_SIGNATURE: usize = 240;
const MAX_DOC: usize = 400;

impl SymbolParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that finds every language's definitions with its tags query, Rust's too: the
    /// reference that the Rust tree walk is tested against.
    pub fn with_tags_queries() -> Self {
        Self {
            finder: Finder::Query,
            ..Self::default()
        }
    }

    /// This parser, giving tree-sitter the whole text of Rust files, not their [`skeleton`]:
    /// the reference that the skeleton is tested against. Both find the same definitions;
    /// only `has_errors` may differ (the skeleton has no function bodies to be wrong in).
    pub fn whole_text(self) -> Self {
        Self {
            whole_text: true,
            ..self
        }
    }

    /// What tree-sitter should parse for `text`: for Rust its skeleton, unless this parser
    /// reads whole texts or the skeleton's lexer gives up.
    fn skeleton(&self, lang: Lang, text: &str) -> Option<Skeleton> {
        (lang == Lang::Rust && !self.whole_text)
            .then(|| skeleton::rust(text))
            .flatten()
    }

    fn state(&mut self, lang: Lang) -> &mut (Parser, Query) {
        self.langs.entry(lang).or_insert_with(|| {
            use_own_allocator_for_trees();
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
        let finder = self.finder;
        let sk = self.skeleton(lang, text);
        let src = Source {
            file: text,
            skeleton: sk.as_ref(),
        };
        let (parser, query) = self.state(lang);
        let Some(tree) = parser.parse(src.parsed(), None) else {
            return FileSymbols::default();
        };
        let found = definitions(lang, finder, query, tree.root_node(), &src, None);
        finish(found, &src, lang, tree.root_node()).0
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
        let finder = self.finder;
        let sk = self.skeleton(lang, text);
        let src = Source {
            file: text,
            skeleton: sk.as_ref(),
        };
        let parsed = src.parsed();
        let (parser, query) = self.state(lang);
        let (tree, found) = match prev {
            Some(mut prev) => {
                let edit = edit_between(&prev.text, parsed);
                prev.tree.edit(&edit);
                let Some(tree) = parser.parse(parsed, Some(&prev.tree)) else {
                    return FileSymbols::default();
                };
                let found =
                    reread(lang, finder, query, &prev, &tree, &edit, &src).unwrap_or_else(|| {
                        definitions(lang, finder, query, tree.root_node(), &src, None)
                    });
                (tree, found)
            }
            None => {
                let Some(tree) = parser.parse(parsed, None) else {
                    return FileSymbols::default();
                };
                let found = definitions(lang, finder, query, tree.root_node(), &src, None);
                (tree, found)
            }
        };
        let (symbols, kept) = finish(found, &src, lang, tree.root_node());
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
                text: parsed.to_string(),
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

/// How definitions are found: by the grammar's tags query, or for Rust by one walk over the
/// tree that looks for what that query's definition patterns match (a quarter of a cold index
/// went to the query cursor). `Query` for every language is the reference the walk is tested
/// against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Finder {
    #[default]
    Walk,
    Query,
}

/// A definition's name node, tags kind, node and enclosing item's name, as a finder reports it.
type Hit<'t> = (
    tree_sitter::Node<'t>,
    &'static str,
    tree_sitter::Node<'t>,
    Option<String>,
);

/// A definition as found, in the offsets of the text tree-sitter parsed (the skeleton's, for
/// Rust): what an incremental parse keeps and moves, turned into a [`Symbol`] at the end.
#[derive(Debug, Clone)]
struct Found {
    name: Arc<str>,
    kind: Kind,
    /// 0-based, inclusive (a skeleton keeps every line where it was).
    lines: (u32, u32),
    /// The definition node's byte span.
    span: (usize, usize),
    /// The body's first byte, where the definition has a body.
    body: Option<usize>,
    /// The enclosing item's name.
    parent: Option<Arc<str>>,
}

impl Found {
    /// Moved by an edit before it: `bytes` and `lines` added.
    fn moved(&self, bytes: isize, lines: isize) -> Found {
        let by = |x: usize| (x as isize + bytes) as usize;
        Found {
            lines: (
                (self.lines.0 as isize + lines) as u32,
                (self.lines.1 as isize + lines) as u32,
            ),
            span: (by(self.span.0), by(self.span.1)),
            body: self.body.map(by),
            ..self.clone()
        }
    }
}

/// A file's text and the text tree-sitter parsed for it: the same, or the file's [`Skeleton`].
struct Source<'a> {
    file: &'a str,
    skeleton: Option<&'a Skeleton>,
}

impl Source<'_> {
    fn parsed(&self) -> &str {
        self.skeleton.map_or(self.file, |s| &s.text)
    }

    /// The file's offset of the parsed text's byte `at` (a node's start).
    fn start(&self, at: usize) -> usize {
        self.skeleton.map_or(at, |s| s.start(at))
    }

    /// The file's offset for the parsed text's exclusive end `at`.
    fn end(&self, at: usize) -> usize {
        self.skeleton.map_or(at, |s| s.end(at))
    }

    /// A node's text, from the file.
    fn text_of(&self, node: tree_sitter::Node) -> Option<&str> {
        self.file
            .get(self.start(node.start_byte())..self.end(node.end_byte()))
    }
}

/// The definitions in the tree; within `range` only when given (definitions that lie wholly
/// inside it). Rust definitions inside function bodies are not among them: they are local,
/// and a skeleton has no bodies.
fn definitions(
    lang: Lang,
    finder: Finder,
    query: &Query,
    root: tree_sitter::Node,
    src: &Source,
    range: Option<(usize, usize)>,
) -> Vec<Found> {
    let mut found = Vec::new();
    if lang == Lang::Rust && finder == Finder::Walk {
        found = rust_definitions(root, range, src);
    } else {
        let names = query.capture_names();
        let mut cursor = QueryCursor::new();
        if let Some((lo, hi)) = range {
            cursor.set_byte_range(lo..hi);
        }
        let mut matches = cursor.matches(query, root, src.parsed().as_bytes());
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
            if let (Some(name), Some((kind, node))) = (name, def) {
                if lang != Lang::Rust || !in_function_body(node) {
                    let parents = std::iter::successors(node.parent(), |n| n.parent());
                    found.push((name, kind, node, enclosing_name(parents, src)));
                }
            }
        }
    }
    let mut out = Vec::with_capacity(found.len());
    for (name, kind, node, parent) in found {
        if let Some((lo, hi)) = range {
            if node.start_byte() < lo || node.end_byte() > hi {
                continue;
            }
        }
        let Ok(name) = name.utf8_text(src.parsed().as_bytes()) else {
            continue;
        };
        out.push(Found {
            name: name.into(),
            kind: refine_kind(node.kind(), kind),
            lines: (
                node.start_position().row as u32,
                node.end_position().row as u32,
            ),
            span: (node.start_byte(), node.end_byte()),
            body: node.child_by_field_name("body").map(|b| b.start_byte()),
            parent: parent.map(Arc::from),
        });
    }
    out
}

/// Sorts and de-duplicates the definitions, and adds the file's imports and identifiers: the
/// file's symbols, and the spans of their definitions.
fn finish(
    mut found: Vec<Found>,
    src: &Source,
    lang: Lang,
    root: tree_sitter::Node,
) -> (FileSymbols, Vec<Found>) {
    found.sort_by(|a, b| {
        (a.lines.0, std::cmp::Reverse(a.lines.1), &a.name).cmp(&(
            b.lines.0,
            std::cmp::Reverse(b.lines.1),
            &b.name,
        ))
    });
    found.dedup_by(|a, b| a.name == b.name && a.lines.0 == b.lines.0);
    let text = src.file;
    let lines: Vec<&str> = text.lines().collect();
    let mut symbols = Vec::with_capacity(found.len());
    let mut parents = Vec::new();
    for (i, f) in found.iter().enumerate() {
        if let Some(p) = &f.parent {
            parents.push((i as u32, p.clone()));
        }
        // The header, up to the body (or the whole definition), in the file's offsets.
        let head_start = src.start(f.span.0);
        let head_end = f
            .body
            .map_or_else(|| src.end(f.span.1), |b| src.start(b))
            .min(head_start + MAX_SIGNATURE * 4);
        let head = text.get(head_start..floor(text, head_end)).unwrap_or("");
        symbols.push(Symbol {
            name: f.name.clone(),
            kind: f.kind,
            public: head.starts_with("pub"),
            start_line: f.lines.0,
            end_line: f.lines.1,
            head_start: head_start as u32,
            head_len: head.len() as u16,
        });
    }
    // The identifiers with their lines: the file's bag, and its chunks' from their lines.
    let words = line_words(text);
    let idents = bag_of(&words);
    let mut file = FileSymbols {
        symbols,
        parents,
        imports: imports(&lines, lang),
        idents,
        chunks: Vec::new(),
        chunk_idents: ChunkIdents::default(),
        has_errors: root.has_error(),
    };
    (file.chunks, file.chunk_idents) = chunks(file.top_level(), lines.len(), &words, &file.idents);
    (file, found)
}

/// The top-level items as chunks: whole up to [`CHUNK_LINES`] lines, else in windows of that
/// many lines. Code outside any item (scripts, statements at the top) is windowed too.
fn chunks<'a>(
    top: impl Iterator<Item = &'a Symbol>,
    lines: usize,
    words: &[(u32, u32)],
    file_bag: &[u32],
) -> (Vec<Chunk>, ChunkIdents) {
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
    for s in top {
        let (a, b) = (
            s.start_line as usize,
            (s.end_line as usize).min(lines.saturating_sub(1)),
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
    if lines > covered + 2 {
        push_windows(covered, lines - 1, &mut spans);
    }
    let (mut chunks, mut bags, mut bag) = (Vec::new(), Vec::new(), Vec::new());
    for (a, b) in spans {
        let from = words.partition_point(|&(line, _)| (line as usize) < a);
        let to = words.partition_point(|&(line, _)| (line as usize) <= b);
        bag_into(&words[from..to], &mut bag);
        if bag.len() >= 3 {
            bags.extend_from_slice(&bag);
            chunks.push(Chunk {
                start_line: a as u32,
                end_line: b as u32,
                idents_end: bags.len() as u32,
            });
        }
    }
    chunks.shrink_to_fit();
    // Positions in the file's bag, where they fit in two bytes (a chunk's words are the file's).
    let narrow: Option<Vec<u16>> = bags
        .iter()
        .map(|h| {
            let i = file_bag.binary_search(h).ok()?;
            u16::try_from(i).ok()
        })
        .collect();
    let idents = match narrow {
        Some(v) => ChunkIdents::Narrow(v),
        None => {
            bags.shrink_to_fit();
            ChunkIdents::Wide(bags)
        }
    };
    (chunks, idents)
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
    lang: Lang,
    finder: Finder,
    query: &Query,
    prev: &Previous,
    tree: &Tree,
    edit: &InputEdit,
    src: &Source,
) -> Option<Vec<Found>> {
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
    for f in &prev.symbols {
        let (s, e) = f.span;
        if e <= lo {
            out.push(f.clone());
        } else if s >= hi_old {
            out.push(f.moved(delta, line_delta));
        } else if s < lo || e > hi_old {
            return None;
        }
    }
    out.extend(definitions(lang, finder, query, root, src, Some((lo, hi))));
    Some(out)
}

/// What tree-sitter-rust's tags query (with [`crate::lang`]'s additions) calls a definition: per
/// node kind, the tags kind and the kind its `name` field must have.
fn rust_definition(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "struct_item" | "enum_item" | "union_item" | "type_item" => ("class", "type_identifier"),
        "trait_item" => ("interface", "type_identifier"),
        "function_item" => ("function", "identifier"),
        "function_signature_item" => ("method", "identifier"),
        "mod_item" => ("module", "identifier"),
        "macro_definition" => ("macro", "identifier"),
        "const_item" | "static_item" => ("constant", "identifier"),
        _ => return None,
    })
}

/// Rust definitions by one pre-order walk of the tree (iterative, so no depth overflows it):
/// `(name, tags kind, node, enclosing item's name)` for each node [`rust_definition`] names, a
/// function directly in a `declaration_list` (an `impl`, trait or module body) being a method,
/// as in the query. Function bodies are skipped, and with a `range`, subtrees wholly outside it.
fn rust_definitions<'t>(
    root: tree_sitter::Node<'t>,
    range: Option<(usize, usize)>,
    src: &Source,
) -> Vec<Hit<'t>> {
    let mut found = Vec::new();
    let mut cursor = root.walk();
    // The nodes above the cursor's (tree-sitter finds a node's parent from the root down).
    let mut above: Vec<tree_sitter::Node<'t>> = Vec::new();
    let kind_above = |above: &[tree_sitter::Node]| above.last().map(|n| n.kind());
    loop {
        let node = cursor.node();
        let inside = range.is_none_or(|(lo, hi)| node.end_byte() >= lo && node.start_byte() <= hi)
            && !is_function_body(node, kind_above(&above));
        if inside {
            if let Some((kind, name_kind)) = rust_definition(node.kind()) {
                if let Some(name) = node
                    .child_by_field_name("name")
                    .filter(|n| n.kind() == name_kind)
                {
                    let in_list = kind_above(&above) == Some("declaration_list");
                    let kind = if kind == "function" && in_list {
                        "method"
                    } else {
                        kind
                    };
                    let parent = enclosing_name(above.iter().rev().copied(), src);
                    found.push((name, kind, node, parent));
                }
            }
            if cursor.goto_first_child() {
                above.push(node);
                continue;
            }
        }
        loop {
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return found;
            }
            above.pop();
        }
    }
}

/// Whether `node`, under a node of kind `parent`, is a Rust function's body: what the index
/// leaves out (and a skeleton has not).
fn is_function_body(node: tree_sitter::Node, parent: Option<&str>) -> bool {
    node.kind() == "block" && parent == Some("function_item")
}

/// Whether a Rust definition lies inside a function's body.
fn in_function_body(node: tree_sitter::Node) -> bool {
    std::iter::successors(node.parent(), |n| n.parent())
        .any(|n| is_function_body(n, n.parent().as_ref().map(|p| p.kind())))
}

/// The name of the nearest of `ancestors` (innermost first) that is an item with a name: a
/// class, trait or interface by its name, an `impl` block by its type.
fn enclosing_name<'t>(
    ancestors: impl Iterator<Item = tree_sitter::Node<'t>>,
    src: &Source,
) -> Option<String> {
    for n in ancestors {
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
            if let Some(name) = n.child_by_field_name(f).and_then(|c| src.text_of(c)) {
                return Some(truncate(&collapse(name), 80));
            }
        }
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

/// The doc comment from the lines `above` a header (nearest first; attributes and decorators in
/// between are skipped), or for Python the docstring on the lines after the header's first line
/// (`from` is the text from the header on).
fn doc_of<'a>(above: impl Iterator<Item = &'a str>, from: &str, lang: Lang) -> String {
    let marker = lang.line_comment();
    let mut doc: Vec<&str> = Vec::new();
    for l in above {
        let l = l.trim();
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
        if let Some(l) = from
            .lines()
            .skip(1)
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

/// The identifier-like words of two or more characters of `text` as `(line, hash)`, in order
/// (0-based lines, as [`str::lines`] counts them).
pub(crate) fn line_words(text: &str) -> Vec<(u32, u32)> {
    let bytes = text.as_bytes();
    let (mut line, mut at) = (0u32, 0);
    let mut out = Vec::with_capacity(text.len() / 16);
    for w in words(text) {
        // The newlines between the last word and this one.
        let start = w.as_ptr() as usize - bytes.as_ptr() as usize;
        line += bytes[at..start].iter().filter(|&&b| b == b'\n').count() as u32;
        at = start;
        if w.len() >= 2 {
            out.push((line, ident_hash(w)));
        }
    }
    out
}

/// Distinct identifier-like words of two or more characters, as sorted hashes.
pub fn identifiers(text: &str) -> Vec<u32> {
    bag_of(&line_words(text))
}

/// The distinct hashes of `words` (from [`line_words`]), sorted.
fn bag_of(words: &[(u32, u32)]) -> Vec<u32> {
    let mut out = Vec::new();
    bag_into(words, &mut out);
    // Most words repeat: without this the bag keeps room for every occurrence.
    out.shrink_to_fit();
    out
}

/// [`bag_of`] into `out`, a buffer to reuse.
fn bag_into(words: &[(u32, u32)], out: &mut Vec<u32>) {
    out.clear();
    out.extend(words.iter().map(|&(_, h)| h));
    out.sort_unstable();
    out.dedup();
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
    let bytes = text.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    let mut at = 0;
    std::iter::from_fn(move || loop {
        let start = at + bytes.get(at..)?.iter().position(word)?;
        let len = bytes[start..]
            .iter()
            .position(|b| !word(b))
            .unwrap_or(bytes.len() - start);
        at = start + len;
        // ASCII bytes around it: char boundaries.
        if !bytes[start].is_ascii_digit() {
            return Some(&text[start..at]);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `words` as first written, one `char` at a time: the reference for the byte scanner.
    fn words_by_char(text: &str) -> Vec<&str> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
            .collect()
    }

    #[test]
    fn words_are_runs_of_ascii_identifier_bytes() {
        for text in [
            "",
            "fn main() { let x_1 = 9ab + a9; }",
            "héllo wörld _x __ ü_b 7 café_au_lait",
            "tail_without_newline",
            "  \n\t日本語 mixed日本語words\r\nx",
        ] {
            assert_eq!(
                words(text).collect::<Vec<_>>(),
                words_by_char(text),
                "{text:?}"
            );
        }
    }

    /// The file's bag and each chunk's are what [`identifiers`] finds in their text.
    #[test]
    fn bags_hold_the_identifiers_of_their_lines() {
        let mut parser = SymbolParser::new();
        for (lang, text) in [
            (Lang::Rust, include_str!("symbols.rs")),
            (Lang::Rust, include_str!("context.rs")),
            (Lang::Python, "import os\n\ndef f(a, b):\n    return os.path.join(a, b)\n\nclass K:\n    def g(self):\n        return f('x', 'y')\n"),
        ] {
            let fs = parser.parse(lang, text);
            assert_eq!(fs.idents, identifiers(text));
            let lines: Vec<&str> = text.lines().collect();
            assert!(!fs.chunks.is_empty());
            for (c, bag) in fs.chunk_bags() {
                let want = identifiers(&lines[c.start_line as usize..=c.end_line as usize].join("\n"));
                let got: Vec<u32> = match bag {
                    Bag::Narrow { file, at } => at.iter().map(|&i| file[i as usize]).collect(),
                    Bag::Wide(b) => b.to_vec(),
                };
                assert_eq!(got, want, "lines {}..={}", c.start_line, c.end_line);
            }
        }
    }
}
