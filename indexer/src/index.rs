//! The repository index: per file, its symbols; across files, name → definitions. Updated one
//! file at a time (`update`, `remove`); takes contents as data.

use crate::lang::Lang;
use crate::symbols::{FileSymbols, Symbol, SymbolParser};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub lang: Lang,
    pub bytes: usize,
    pub symbols: FileSymbols,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Index {
    /// By path relative to the workspace root, in order (deterministic iteration).
    pub files: BTreeMap<String, FileEntry>,
    /// Rust crates of the workspace: name (with `_` for `-`) → its `src/` directory with a
    /// trailing `/` (`""` is the root). Filled by the walk from `Cargo.toml` files; lets `use
    /// other_crate::…` resolve to that crate's files.
    pub crates: BTreeMap<String, String>,
    /// Name → (path, index into that file's symbols).
    #[serde(skip)]
    defs: HashMap<String, Vec<(String, usize)>>,
    /// Identifier hash → the number of files that use it (for similarity weights).
    #[serde(skip)]
    df: HashMap<u32, u32>,
}

/// Counts for `nib index --stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexStats {
    pub files: usize,
    pub bytes: usize,
    pub symbols: usize,
    pub files_with_errors: usize,
    pub by_language: BTreeMap<String, usize>,
    pub by_kind: BTreeMap<String, usize>,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `text` and replaces what the index knew of `path`.
    pub fn update(&mut self, parser: &mut SymbolParser, path: &str, lang: Lang, text: &str) {
        let symbols = parser.parse(lang, text);
        self.put(path, lang, text, symbols);
    }

    /// [`update`](Self::update) for a document being edited: `parser` keeps its last parse
    /// and re-reads only what the edit touched.
    pub fn update_incremental(
        &mut self,
        parser: &mut SymbolParser,
        path: &str,
        lang: Lang,
        text: &str,
    ) {
        let symbols = parser.parse_incremental(path, lang, text);
        self.put(path, lang, text, symbols);
    }

    fn put(&mut self, path: &str, lang: Lang, text: &str, symbols: FileSymbols) {
        let bytes = text.len();
        self.insert(
            path,
            FileEntry {
                lang,
                bytes,
                symbols,
            },
        );
    }

    /// Puts an already parsed file in (replacing any earlier entry).
    pub fn insert(&mut self, path: &str, entry: FileEntry) {
        self.remove(path);
        for (i, s) in entry.symbols.symbols.iter().enumerate() {
            self.defs
                .entry(s.name.clone())
                .or_default()
                .push((path.to_string(), i));
        }
        for &h in &entry.symbols.idents {
            *self.df.entry(h).or_default() += 1;
        }
        self.files.insert(path.to_string(), entry);
    }

    /// How many files use the identifier with hash `h`.
    pub fn files_using(&self, h: u32) -> u32 {
        self.df.get(&h).copied().unwrap_or(0)
    }

    pub fn remove(&mut self, path: &str) {
        if let Some(old) = self.files.remove(path) {
            for h in &old.symbols.idents {
                if let Some(n) = self.df.get_mut(h) {
                    *n -= 1;
                    if *n == 0 {
                        self.df.remove(h);
                    }
                }
            }
            for s in &old.symbols.symbols {
                if let Some(v) = self.defs.get_mut(&s.name) {
                    v.retain(|(p, _)| p != path);
                    if v.is_empty() {
                        self.defs.remove(&s.name);
                    }
                }
            }
        }
    }

    /// Rebuilds the name table (after loading from disk).
    pub fn rebuild_names(&mut self) {
        self.defs.clear();
        self.df.clear();
        for (path, entry) in &self.files {
            for (i, s) in entry.symbols.symbols.iter().enumerate() {
                self.defs
                    .entry(s.name.clone())
                    .or_default()
                    .push((path.clone(), i));
            }
            for &h in &entry.symbols.idents {
                *self.df.entry(h).or_default() += 1;
            }
        }
    }

    /// Every definition of `name`, by path then line.
    pub fn definitions(&self, name: &str) -> Vec<(&str, &Symbol)> {
        let mut out: Vec<(&str, &Symbol)> = self
            .defs
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|(p, i)| Some((p.as_str(), self.files.get(p)?.symbols.symbols.get(*i)?)))
            .collect();
        out.sort_by_key(|(p, s)| (*p, s.start_line));
        out
    }

    pub fn stats(&self) -> IndexStats {
        let mut st = IndexStats::default();
        for e in self.files.values() {
            st.files += 1;
            st.bytes += e.bytes;
            st.symbols += e.symbols.symbols.len();
            st.files_with_errors += usize::from(e.symbols.has_errors);
            *st.by_language.entry(e.lang.name().to_string()).or_default() += 1;
            for s in &e.symbols.symbols {
                *st.by_kind.entry(s.kind.clone()).or_default() += 1;
            }
        }
        st
    }
}
