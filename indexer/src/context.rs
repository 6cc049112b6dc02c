//! Cross-file context: what the file's imports offer and the definitions, in other files, of the
//! names used near the cursor, as short snippets (doc comment + signature) grouped by file.
//!
//! Imports come first: a name used near the cursor is looked up in the files the current file
//! imports before anywhere else (there it is what the code means, however common the name is
//! elsewhere); then in the rest of the index; then, budget permitting, what the imports bring
//! that is not used yet (a named import's definition, a glob-imported module's public items):
//! the API the user is about to call.
//!
//! Everything is read from the text *before* the cursor's line, so the snippets do not change
//! while the user types within a line, and the prompt's head (with its KV cache) stays. Files
//! come in path order and snippets in line order, so a new name adds a snippet without moving
//! the others. Methods are included only when their type's name is used nearby too.

use crate::imports::{self, Imported};
use crate::index::Index;
use crate::lang::Lang;
use crate::symbols::{words, Symbol};
use std::collections::{BTreeMap, HashSet};

/// Items a glob import contributes at most, per imported file.
const GLOB_ITEMS: usize = 12;

/// Snippets for `path`'s prompt as `(path, text)`, at most `budget` characters in all.
/// `before` is the text before the cursor's line; the last `lines` lines of it are scanned.
pub fn related_definitions(
    index: &Index,
    path: &str,
    before: &str,
    lines: usize,
    budget: usize,
) -> Vec<(String, String)> {
    let start = before
        .char_indices()
        .rev()
        .filter(|&(_, c)| c == '\n')
        .nth(lines)
        .map_or(0, |(i, _)| i + 1);
    // Nearest use first: the budget goes to the names closest to the cursor.
    let mut seen = HashSet::new();
    let mut names: Vec<&str> = Vec::new();
    for w in words(&before[start..])
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        if w.len() >= 3 && seen.insert(w) {
            names.push(w);
        }
    }
    let lang = index
        .files
        .get(path)
        .map(|e| e.lang)
        .or_else(|| Lang::detect(std::path::Path::new(path), ""));
    let imported = match lang {
        Some(lang) => imports::resolve(index, path, lang, before),
        None => Vec::new(),
    };
    let is_imported = |p: &str| imported.iter().any(|(f, _)| f == p);

    let mut chosen: BTreeMap<(String, u32), String> = BTreeMap::new();
    let mut used = 0;
    let mut take = |p: &str, s: &Symbol, chosen: &mut BTreeMap<(String, u32), String>| {
        let key = (p.to_string(), s.start_line);
        if p == path || chosen.contains_key(&key) {
            return;
        }
        let mut text = String::new();
        let comment = index.files.get(p).map_or("//", |e| e.lang.line_comment());
        if !s.doc.is_empty() {
            text.push_str(&format!("{comment} {}\n", s.doc));
        }
        text.push_str(&s.signature);
        if used + text.len() > budget {
            return;
        }
        used += text.len() + 1;
        chosen.insert(key, text);
    };
    // A method is only worth showing when its type is used nearby too: `text` or `len` alone
    // would otherwise pull in every method of that name.
    let parent_near = |s: &Symbol| s.parent.as_deref().is_none_or(|t| seen.contains(t));

    // 1. Names near the cursor, defined in an imported file.
    for &name in &names {
        for (p, s) in index.definitions(name) {
            if is_imported(p) && parent_near(s) {
                take(p, s, &mut chosen);
            }
        }
    }
    // 2. Names near the cursor, defined anywhere (a name defined in many places is too vague
    //    to be worth the tokens).
    for &name in &names {
        let defs = index.definitions(name);
        if defs.is_empty() || defs.len() > 3 {
            continue;
        }
        for (p, s) in defs {
            if parent_near(s) {
                take(p, s, &mut chosen);
            }
        }
    }
    // 3. What the imports bring that is not used yet.
    for (file, what) in &imported {
        let Some(entry) = index.files.get(file) else {
            continue;
        };
        let top = entry.symbols.symbols.iter().filter(|s| s.parent.is_none());
        match what {
            Imported::Names(wanted) => {
                for s in top.filter(|s| wanted.contains(&s.name)) {
                    take(file, s, &mut chosen);
                }
            }
            Imported::All => {
                let public =
                    |s: &&Symbol| entry.lang != Lang::Rust || s.signature.starts_with("pub");
                for s in top.filter(public).take(GLOB_ITEMS) {
                    take(file, s, &mut chosen);
                }
            }
        }
    }
    let mut files: Vec<(String, String)> = Vec::new();
    for ((p, _), text) in chosen {
        match files.last_mut() {
            Some((last, body)) if *last == p => {
                body.push_str("\n...\n");
                body.push_str(&text);
            }
            _ => files.push((p, text)),
        }
    }
    files
}
