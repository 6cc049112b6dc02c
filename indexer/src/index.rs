//! The repository index: per file, its symbols; across files, name → definitions. Updated one
//! file at a time (`update`, `remove`); takes contents as data.

use crate::lang::Lang;
use crate::symbols::{FileSymbols, Symbol, SymbolParser};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub lang: Lang,
    pub bytes: usize,
    pub symbols: FileSymbols,
}

#[derive(Debug, Default)]
pub struct Index {
    /// By path relative to the workspace root, in order (deterministic iteration).
    pub files: BTreeMap<String, FileEntry>,
    /// Rust crates of the workspace: name (with `_` for `-`) → its `src/` directory with a
    /// trailing `/` (`""` is the root). Filled by the walk from `Cargo.toml` files; lets `use
    /// other_crate::…` resolve to that crate's files.
    pub crates: BTreeMap<String, String>,
    /// Name → (file id, index into that file's symbols). A file id, not its path: a large
    /// repository has a million definitions. Its keys are the one copy of each name that every
    /// symbol of that name shares.
    defs: HashMap<Arc<str>, Vec<(u32, u32)>, Fx>,
    /// File id → path, and back. Ids are not reused; a removed file's id just goes unused.
    paths: Vec<String>,
    ids: HashMap<String, u32>,
    /// Bumped by every change, so that callers can keep what they derived from the index.
    generation: u64,
}

/// The hash of the name and identifier tables: FxHash (a multiply and a rotate a word). The keys
/// are the repository's own names, not an attacker's, and SipHash cost a quarter of a warm
/// start.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type Fx = std::hash::BuildHasherDefault<FxHasher>;

/// A definition found by name: where it is, and the name of the item that encloses it.
#[derive(Debug, Clone, Copy)]
pub struct Definition<'a> {
    pub path: &'a str,
    pub symbol: &'a Symbol,
    pub parent: Option<&'a str>,
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

    /// Puts an already parsed file in (replacing any earlier entry). Its symbols' names and
    /// parent names become the index's shared copies.
    pub fn insert(&mut self, path: &str, mut entry: FileEntry) {
        self.remove(path);
        self.generation += 1;
        let id = self.id_of(path);
        for (i, s) in entry.symbols.symbols.iter_mut().enumerate() {
            // One lookup: a name already known gives its key, the one shared copy.
            match self.defs.entry(s.name.clone()) {
                std::collections::hash_map::Entry::Occupied(mut known) => {
                    s.name = known.key().clone();
                    known.get_mut().push((id, i as u32));
                }
                std::collections::hash_map::Entry::Vacant(new) => {
                    new.insert(vec![(id, i as u32)]);
                }
            }
        }
        for (_, p) in &mut entry.symbols.parents {
            if let Some((name, _)) = self.defs.get_key_value(&**p) {
                *p = name.clone();
            }
        }
        self.files.insert(path.to_string(), entry);
    }

    fn id_of(&mut self, path: &str) -> u32 {
        if let Some(&id) = self.ids.get(path) {
            return id;
        }
        let id = self.paths.len() as u32;
        self.paths.push(path.to_string());
        self.ids.insert(path.to_string(), id);
        id
    }

    /// Changes with every insertion or removal.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn remove(&mut self, path: &str) {
        if let Some(old) = self.files.remove(path) {
            self.generation += 1;
            let id = self.ids.get(path).copied();
            for s in &old.symbols.symbols {
                if let Some(v) = self.defs.get_mut(&*s.name) {
                    v.retain(|(f, _)| Some(*f) != id);
                    if v.is_empty() {
                        self.defs.remove(&*s.name);
                    }
                }
            }
        }
    }

    /// Every definition of `name`, by path then line.
    pub fn definitions(&self, name: &str) -> Vec<Definition<'_>> {
        let mut out: Vec<Definition> = self
            .defs
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|&(f, i)| {
                let (p, e) = self.files.get_key_value(self.paths.get(f as usize)?)?;
                Some(Definition {
                    path: p,
                    symbol: e.symbols.symbols.get(i as usize)?,
                    parent: e.symbols.parent(i as usize),
                })
            })
            .collect();
        out.sort_by_key(|d| (d.path, d.symbol.start_line));
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
                *st.by_kind.entry(s.kind.to_string()).or_default() += 1;
            }
        }
        st
    }
}
