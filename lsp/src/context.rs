//! The other-file context of a prompt, gathered by one function ([`gather`]) that the server,
//! `nib complete` / `nib context` and `nib-eval` all call, so that they build the same prompt.
//!
//! It reads no file itself: the caller says which open documents may be used and gives a
//! function that reads another file's text (from an open buffer or the disk), having decided
//! what must stay out (secrets, ignored files, languages switched off).

use std::sync::Mutex;

/// Other files as `(path, text)`, what a prompt carries before the current file.
pub type OtherFiles = Vec<(String, String)>;

/// An open document other than the one being completed, as a prompt may name it.
#[derive(Debug, Clone)]
pub struct OpenFile {
    pub path: String,
    pub text: ropey::Rope,
}

/// What feeds the context of one request.
pub struct Sources<'a> {
    /// The file's folder index, and the file's path relative to that folder. None outside any
    /// workspace folder: the index says nothing about such a file.
    pub index: Option<(&'a nib_indexer::Index, &'a str)>,
    /// The text before the cursor's line.
    pub before_line: &'a str,
    /// Reads a file of the index by its relative path; None for a file that must stay out.
    pub read: &'a dyn Fn(&str) -> Option<String>,
    /// Other open documents that may be used, the most stable first (oldest opened).
    pub open: &'a [OpenFile],
    /// Characters of context, at most: half for the index's definitions and similar code,
    /// the rest (with what the index left) for the open documents.
    pub budget: usize,
}

/// The index's part of the last context: it depends only on the file, the text before the
/// cursor's line, the index's generation and the budget, so keystrokes within a line reuse it.
#[derive(Default)]
pub struct Cache {
    last: Mutex<Option<(u64, OtherFiles)>>,
}

/// Other files for the repository-level prompt, as `(path, text)`: the definitions (from the
/// index) of the names used before the cursor's line and code similar to it, then the other
/// open documents' heads, within the budget. An open document replaces its own snippets.
pub fn gather(src: &Sources, cache: &Cache) -> OtherFiles {
    let mut files = match src.index {
        Some((index, rel)) => {
            let key = {
                use std::hash::{Hash, Hasher};
                let mut h = std::hash::DefaultHasher::new();
                (rel, src.before_line, index.generation(), src.budget).hash(&mut h);
                h.finish()
            };
            let mut last = cache.last.lock().unwrap_or_else(|p| p.into_inner());
            match &*last {
                Some((k, files)) if *k == key => files.clone(),
                _ => {
                    let files = nib_indexer::context::cross_file(
                        index,
                        rel,
                        src.before_line,
                        src.budget / 2,
                        src.read,
                    );
                    *last = Some((key, files.clone()));
                    files
                }
            }
        }
        None => Vec::new(),
    };
    let used: usize = files.iter().map(|(p, t)| p.len() + t.len()).sum();
    let mut budget = src.budget.saturating_sub(used);
    for open in src.open {
        if budget == 0 {
            break;
        }
        // Only the head that fits is copied out of the rope, whole lines only.
        let rope = &open.text;
        let take = rope.byte_to_char(budget.min(rope.len_bytes()));
        let head = rope.slice(..take).to_string();
        let cut = if take < rope.len_chars() {
            head.rfind('\n').map_or(0, |i| i + 1)
        } else {
            head.len()
        };
        if cut == 0 {
            continue;
        }
        budget -= cut;
        files.retain(|(p, _)| *p != open.path);
        files.push((open.path.clone(), head[..cut].to_string()));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_documents_fill_what_the_index_leaves_whole_lines_only() {
        let open = [
            OpenFile {
                path: "a.rs".into(),
                text: "fn a() {}\nfn b() {}\n".into(),
            },
            OpenFile {
                path: "b.rs".into(),
                text: "const X: u8 = 1;\nconst Y: u8 = 2;\n".into(),
            },
        ];
        let read = |_: &str| None;
        let src = |budget| Sources {
            index: None,
            before_line: "",
            read: &read,
            open: &open,
            budget,
        };
        let cache = Cache::default();
        assert_eq!(
            gather(&src(1000), &cache),
            vec![
                ("a.rs".to_string(), "fn a() {}\nfn b() {}\n".to_string()),
                (
                    "b.rs".to_string(),
                    "const X: u8 = 1;\nconst Y: u8 = 2;\n".to_string()
                ),
            ]
        );
        // 20 + 25 characters: the second file's first line only.
        assert_eq!(
            gather(&src(45), &cache),
            vec![
                ("a.rs".to_string(), "fn a() {}\nfn b() {}\n".to_string()),
                ("b.rs".to_string(), "const X: u8 = 1;\n".to_string()),
            ]
        );
        assert_eq!(gather(&src(5), &cache), vec![]);
    }
}
