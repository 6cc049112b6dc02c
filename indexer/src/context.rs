//! Cross-file context: the definitions, in other files, of the names used near the cursor, as
//! short snippets (doc comment + signature) grouped by file.
//!
//! The names are read from the lines *before* the cursor's line only, so the snippets do not
//! change while the user types within a line, and the prompt's head (with its KV cache) stays.
//! Files come in path order and snippets in line order, so a new name adds a snippet without
//! moving the others. Methods are included only when their type's name is used nearby too.

use crate::index::Index;
use crate::symbols::words;
use std::collections::{BTreeMap, HashSet};

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
    let mut chosen: BTreeMap<(String, u32), String> = BTreeMap::new();
    let mut used = 0;
    for name in names {
        let defs = index.definitions(name);
        // A name defined in many places is too vague to be worth the tokens.
        if defs.is_empty() || defs.len() > 3 {
            continue;
        }
        for (p, s) in defs {
            // A method is only worth showing when its type is used nearby too: `text` or `len`
            // alone would otherwise pull in every method of that name.
            let parent_near = s.parent.as_deref().is_none_or(|t| seen.contains(t));
            if p == path || !parent_near {
                continue;
            }
            let key = (p.to_string(), s.start_line);
            if chosen.contains_key(&key) {
                continue;
            }
            let mut text = String::new();
            let comment = index.files.get(p).map_or("//", |e| e.lang.line_comment());
            if !s.doc.is_empty() {
                text.push_str(&format!("{comment} {}\n", s.doc));
            }
            text.push_str(&s.signature);
            if used + text.len() > budget {
                continue;
            }
            used += text.len() + 1;
            chosen.insert(key, text);
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
