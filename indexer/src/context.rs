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
use std::collections::{BTreeMap, HashMap, HashSet};

/// Items a glob import contributes at most, per imported file.
const GLOB_ITEMS: usize = 12;

/// A similar chunk shares at least this part of the query's identifier weight (and three
/// identifiers).
const MIN_SHARE: f32 = 0.2;

/// Snippets for `path`'s prompt as `(path, text)`, at most `budget` characters in all.
/// `before` is the text before the cursor's line; the last `lines` lines of it are scanned.
/// `read(path)` gives another file's text (the caller's I/O: an open buffer or the disk), where
/// the snippets' headers and doc comments are read; a definition whose file it cannot read, or
/// whose file changed since it was indexed, is left out.
pub fn related_definitions(
    index: &Index,
    path: &str,
    before: &str,
    lines: usize,
    budget: usize,
    read: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    related(index, path, before, lines, budget, &mut Texts::new(read))
}

/// Other files' texts, each read once through the caller's `read` however many snippets come
/// from it.
struct Texts<'a> {
    read: &'a dyn Fn(&str) -> Option<String>,
    seen: HashMap<String, Option<String>>,
}

impl<'a> Texts<'a> {
    fn new(read: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Texts {
            read,
            seen: HashMap::new(),
        }
    }

    fn get(&mut self, path: &str) -> Option<&str> {
        let read = self.read;
        self.seen
            .entry(path.to_string())
            .or_insert_with(|| read(path))
            .as_deref()
    }
}

/// [`related_definitions`], reading files through `texts`.
fn related(
    index: &Index,
    path: &str,
    before: &str,
    lines: usize,
    budget: usize,
    texts: &mut Texts,
) -> Vec<(String, String)> {
    let scanned = last_lines(before, lines);
    // Nearest use first: the budget goes to the names closest to the cursor.
    let mut seen = HashSet::new();
    let mut names: Vec<&str> = Vec::new();
    for w in words(scanned).collect::<Vec<_>>().into_iter().rev() {
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
        let Some(file) = texts.get(p) else {
            return;
        };
        let Some(signature) = s.signature(file) else {
            return;
        };
        let lang = index.files.get(p).map_or(Lang::Rust, |e| e.lang);
        let doc = s.doc(file, lang);
        let mut text = String::new();
        if !doc.is_empty() {
            text.push_str(&format!("{} {doc}\n", lang.line_comment()));
        }
        text.push_str(&signature);
        if used + text.len() > budget {
            return;
        }
        used += text.len() + 1;
        chosen.insert(key, text);
    };
    // A method is only worth showing when its type is used nearby too: `text` or `len` alone
    // would otherwise pull in every method of that name.
    let parent_near = |parent: Option<&str>| parent.is_none_or(|t| seen.contains(t));

    // 1. Names near the cursor, defined in an imported file.
    for &name in &names {
        for d in index.definitions(name) {
            if is_imported(d.path) && parent_near(d.parent) {
                take(d.path, d.symbol, &mut chosen);
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
        for d in defs {
            if parent_near(d.parent) {
                take(d.path, d.symbol, &mut chosen);
            }
        }
    }
    // 3. What the imports bring that is not used yet.
    for (file, what) in &imported {
        let Some(entry) = index.files.get(file) else {
            continue;
        };
        let top = entry.symbols.top_level();
        match what {
            Imported::Names(wanted) => {
                for s in top.filter(|s| wanted.iter().any(|w| **w == *s.name)) {
                    take(file, s, &mut chosen);
                }
            }
            Imported::All => {
                let public = |s: &&Symbol| entry.lang != Lang::Rust || s.public;
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

/// A stretch of another file that resembles the code before the cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarChunk {
    pub path: String,
    /// 0-based, inclusive.
    pub start_line: u32,
    pub end_line: u32,
    pub score: f32,
}

/// Chunks of other files whose identifiers best match those of the last `lines` lines of
/// `before` (the text before the cursor's line), scored BM25-style: each shared identifier
/// weighs its inverse document frequency (rare names count, `self` and `let` hardly), and long
/// chunks are damped. Files are first ranked by the same weights over their whole identifier
/// bags, and only the best few are searched chunk by chunk. At most `max`, best first; a chunk
/// must share at least a fifth of the query's weight and three identifiers.
pub fn similar_chunks(
    index: &Index,
    path: &str,
    before: &str,
    lines: usize,
    max: usize,
) -> Vec<SimilarChunk> {
    let query = crate::symbols::identifiers(last_lines(before, lines));
    // Which of the query's identifiers each file uses, from its bag: once, for both how many
    // files use each identifier (a table of every identifier's count would be tens of megabytes
    // on a large repository) and the files' scores.
    let uses: Vec<(&str, Vec<usize>)> = index
        .files
        .iter()
        .map(|(p, e)| {
            let bag = &e.symbols.idents;
            let hits = (0..query.len())
                .filter(|&j| bag.binary_search(&query[j]).is_ok())
                .collect();
            (p.as_str(), hits)
        })
        .collect();
    let mut df = vec![0u32; query.len()];
    for &j in uses.iter().flat_map(|(_, hits)| hits) {
        df[j] += 1;
    }
    let n = index.files.len().max(1) as f32;
    let weights: Vec<(u32, f32)> = query
        .iter()
        .zip(df)
        .map(|(&h, df)| (h, ((n - df as f32 + 0.5) / (df as f32 + 0.5) + 1.0).ln()))
        .collect();
    let total: f32 = weights.iter().map(|(_, w)| w).sum();
    if weights.is_empty() || total <= 0.0 {
        return Vec::new();
    }
    let shared = |contains: &dyn Fn(u32) -> bool| -> (f32, usize) {
        weights
            .iter()
            .filter(|(h, _)| contains(*h))
            .fold((0.0, 0), |(w, n), (_, x)| (w + x, n + 1))
    };
    // Stage 1: the files.
    let mut files: Vec<(f32, &str)> = uses
        .iter()
        .filter(|(p, hits)| *p != path && !hits.is_empty())
        .map(|(p, hits)| (hits.iter().map(|&j| weights[j].1).sum(), *p))
        .filter(|(s, _)| *s > 0.0)
        .collect();
    files.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    files.truncate(8);
    // Stage 2: their chunks, BM25's length normalisation (k1 = 1.2, b = 0.75) on bag sizes.
    let chunks: Vec<(&str, &crate::symbols::Chunk, crate::symbols::Bag)> = files
        .iter()
        .filter_map(|(_, p)| index.files.get(*p).map(|e| (*p, e)))
        .flat_map(|(p, e)| e.symbols.chunk_bags().map(move |(c, bag)| (p, c, bag)))
        .collect();
    let avg = chunks.iter().map(|(_, _, bag)| bag.len()).sum::<usize>() as f32
        / chunks.len().max(1) as f32;
    let (k1, b) = (1.2f32, 0.75f32);
    let mut scored: Vec<SimilarChunk> = chunks
        .into_iter()
        .map(|(p, c, bag)| {
            let norm = (k1 + 1.0) / (1.0 + k1 * (1.0 - b + b * bag.len() as f32 / avg.max(1.0)));
            let (weight, count) = shared(&|h| bag.contains(h));
            let chunk = SimilarChunk {
                path: p.to_string(),
                start_line: c.start_line,
                end_line: c.end_line,
                score: weight * norm,
            };
            (chunk, weight, count)
        })
        .filter(|(_, weight, count)| *count >= 3 && *weight >= total * MIN_SHARE)
        .map(|(c, _, _)| c)
        .collect();
    scored.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.path.cmp(&b.path))
            .then(a.start_line.cmp(&b.start_line))
    });
    scored.truncate(max);
    scored
}

/// The cross-file part of a prompt: [`related_definitions`] in two thirds of `budget`, then the
/// text of the [`similar_chunks`] in what is left. `read(path)` gives another file's text (the
/// caller's I/O: an open buffer or the disk); a chunk it cannot read is skipped. A chunk of a
/// file that already has snippets joins them.
pub fn cross_file(
    index: &Index,
    path: &str,
    before: &str,
    budget: usize,
    read: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut texts = Texts::new(read);
    let mut files = related(index, path, before, 60, budget * 2 / 3, &mut texts);
    let mut used: usize = files.iter().map(|(p, t)| p.len() + t.len()).sum();
    for c in similar_chunks(index, path, before, 15, 2) {
        let Some(text) = texts
            .get(&c.path)
            .and_then(|t| lines_of(t, c.start_line, c.end_line))
        else {
            continue;
        };
        if used + c.path.len() + text.len() > budget {
            continue;
        }
        used += c.path.len() + text.len();
        match files.iter_mut().find(|(p, _)| *p == c.path) {
            Some((_, body)) => {
                body.push_str("\n...\n");
                body.push_str(&text);
            }
            None => files.push((c.path, text)),
        }
    }
    files
}

/// Lines in one stretch of the file's own text outside the window; stretches start every half
/// of that.
const OWN_LINES: usize = 20;

/// Stretches of the file's own text that [`outside_window`] gives at most.
const OWN_STRETCHES: usize = 2;

/// What a prompt may show of the file's own text outside the window near the cursor, as
/// (pieces above the window, pieces below it), each in file order: the import statements that
/// stand wholly above the window (at most half of `max_chars`), then the stretches of
/// [`OWN_LINES`] lines, above or below the window, whose identifiers best match those of the
/// 15 lines before the cursor's line (each identifier weighted by how few stretches use it, as
/// [`similar_chunks`] weighs other files'; a stretch must share three identifiers and a fifth
/// of the weight). Stretches go best first while they fit in what is left of `max_chars`,
/// [`OWN_STRETCHES`] at most, none overlapping another.
///
/// `window` is the byte range of `text` the prompt shows (whole lines); `cursor` a byte offset
/// in it. Only the text given is read: for a file being edited, its buffer.
pub fn outside_window(
    lang: Lang,
    text: &str,
    window: std::ops::Range<usize>,
    cursor: usize,
    max_chars: usize,
) -> (Vec<String>, Vec<String>) {
    let imports_at = imports::import_statements(lang, &text[..window.start]);
    let mut head = String::new();
    for r in &imports_at {
        if head.len() + r.len() > max_chars / 2 {
            break;
        }
        head.push_str(&text[r.clone()]);
    }
    let mut used = head.len();
    let mut above: Vec<String> = (!head.is_empty()).then_some(head).into_iter().collect();

    // Line starts, and the lines outside the window: above it (below the imports) and below it.
    let starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .filter(|&i| i < text.len())
        .collect();
    let line_of = |byte: usize| starts.partition_point(|&s| s <= byte).saturating_sub(1);
    let first = imports_at
        .last()
        .map_or(0, |r| line_of(r.end.max(1) - 1) + 1);
    let window_first = line_of(window.start);
    let window_end = if window.end >= text.len() {
        starts.len()
    } else {
        line_of(window.end)
    };
    let mut spans = Vec::new();
    for (from, to) in [(first, window_first), (window_end, starts.len())] {
        let mut at = from;
        while at < to {
            spans.push((at, (at + OWN_LINES).min(to)));
            if at + OWN_LINES >= to {
                break;
            }
            at += OWN_LINES / 2;
        }
    }
    let line_start = text[..cursor].rfind('\n').map_or(0, |i| i + 1);
    let query = crate::symbols::identifiers(last_lines(&text[..line_start], 15));
    if spans.is_empty() || query.is_empty() {
        return (above, Vec::new());
    }
    // Each stretch's identifiers among the query's.
    let words = crate::symbols::line_words(text);
    let bags: Vec<Vec<usize>> = spans
        .iter()
        .map(|&(a, b)| {
            let lo = words.partition_point(|&(l, _)| (l as usize) < a);
            let hi = words.partition_point(|&(l, _)| (l as usize) < b);
            let mut hits: Vec<usize> = words[lo..hi]
                .iter()
                .filter_map(|(_, h)| query.binary_search(h).ok())
                .collect();
            hits.sort_unstable();
            hits.dedup();
            hits
        })
        .collect();
    let mut df = vec![0u32; query.len()];
    for &j in bags.iter().flatten() {
        df[j] += 1;
    }
    let n = spans.len() as f32;
    let weight: Vec<f32> = df
        .iter()
        .map(|&d| ((n - d as f32 + 0.5) / (d as f32 + 0.5) + 1.0).ln())
        .collect();
    let total: f32 = weight.iter().sum();
    let mut scored: Vec<(f32, usize)> = bags
        .iter()
        .enumerate()
        .map(|(i, hits)| (hits.iter().map(|&j| weight[j]).sum::<f32>(), i))
        .filter(|&(w, i)| bags[i].len() >= 3 && w >= total * MIN_SHARE)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let text_of = |(a, b): (usize, usize)| {
        let end = starts.get(b).copied().unwrap_or(text.len());
        text[starts[a]..end].trim_matches('\n').to_string() + "\n"
    };
    let mut chosen: Vec<((usize, usize), String)> = Vec::new();
    for (_, i) in scored {
        if chosen.len() == OWN_STRETCHES {
            break;
        }
        let (a, b) = spans[i];
        if chosen.iter().any(|&((c, d), _)| a < d && c < b) {
            continue;
        }
        let piece = text_of((a, b));
        if used + piece.len() > max_chars {
            continue;
        }
        used += piece.len();
        chosen.push(((a, b), piece));
    }
    chosen.sort_unstable();
    let mut below = Vec::new();
    for ((a, _), piece) in chosen {
        if a < window_first {
            above.push(piece);
        } else {
            below.push(piece);
        }
    }
    (above, below)
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> &str {
    let start = text
        .char_indices()
        .rev()
        .filter(|&(_, c)| c == '\n')
        .nth(n)
        .map_or(0, |(i, _)| i + 1);
    &text[start..]
}

/// Lines `first..=last` (0-based) of `text`, joined; `None` when there are none.
pub fn lines_of(text: &str, first: u32, last: u32) -> Option<String> {
    let lines: Vec<&str> = text
        .lines()
        .skip(first as usize)
        .take(last.saturating_sub(first) as usize + 1)
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The imports come whole, in file order, up to half the budget: the first that does not
    /// fit ends them, though a later one would fit.
    #[test]
    fn outside_window_imports_stop_at_the_first_that_does_not_fit() {
        let text = "use a::b;\nuse c::{\n    d,\n};\nuse e;\n";
        let end = text.len();
        let head = |max: usize| outside_window(Lang::Rust, text, end..end, end, max).0;
        assert_eq!(head(18), Vec::<String>::new());
        assert_eq!(head(20), vec!["use a::b;\n".to_string()]);
        assert_eq!(head(40), vec!["use a::b;\n".to_string()]);
        assert_eq!(head(80), vec![text.to_string()]);
    }
}
