//! Prompt layouts for code completion at a cursor, per model family.
//!
//! The family is recognised from the vocabulary (which FIM tokens exist), never from the file
//! name. Every layout puts what changes least first (repository name, other files) and what
//! changes with every keystroke last, so that consecutive prompts share a long token prefix and the
//! KV cache can be reused.

use crate::tokenizer::Tokenizer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FimFamily {
    /// Qwen2.5-Coder: `<|fim_prefix|>`, `<|fim_suffix|>`, `<|fim_middle|>`, plus `<|repo_name|>` and
    /// `<|file_sep|>` for repository-level prompts.
    Qwen,
    /// StarCoder / StarCoder2: `<fim_prefix>`, `<fim_suffix>`, `<fim_middle>`, `<file_sep>`.
    StarCoder,
    /// DeepSeek-Coder: `<｜fim▁begin｜>` prefix `<｜fim▁hole｜>` suffix `<｜fim▁end｜>`.
    DeepSeek,
}

/// The token ids a family's layout needs, and every id that ends a completion.
#[derive(Debug, Clone)]
pub struct FimTokens {
    pub family: FimFamily,
    pub prefix: u32,
    pub suffix: u32,
    pub middle: u32,
    pub repo_name: Option<u32>,
    pub file_sep: Option<u32>,
    pub stops: Vec<u32>,
}

impl FimTokens {
    /// The stop tokens as text: what ends a completion read as text from a server's stream.
    pub fn stop_text(&self, tok: &Tokenizer) -> Vec<String> {
        self.stops.iter().map(|&id| tok.decode(&[id])).collect()
    }

    /// Finds the FIM tokens in a vocabulary; `None` when the model has none.
    pub fn detect(tok: &Tokenizer) -> Option<Self> {
        let id = |s: &str| tok.token_id(s);
        let candidates: [(FimFamily, [&str; 5], &[&str]); 3] = [
            (
                FimFamily::Qwen,
                [
                    "<|fim_prefix|>",
                    "<|fim_suffix|>",
                    "<|fim_middle|>",
                    "<|repo_name|>",
                    "<|file_sep|>",
                ],
                &["<|endoftext|>", "<|im_end|>", "<|fim_pad|>"],
            ),
            (
                FimFamily::StarCoder,
                [
                    "<fim_prefix>",
                    "<fim_suffix>",
                    "<fim_middle>",
                    "<repo_name>",
                    "<file_sep>",
                ],
                &["<|endoftext|>", "<fim_pad>"],
            ),
            (
                FimFamily::DeepSeek,
                ["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "", ""],
                &["<｜end▁of▁sentence｜>", "<|EOT|>"],
            ),
        ];
        for (family, [p, s, m, r, f], extra) in candidates {
            let (Some(prefix), Some(suffix), Some(middle)) = (id(p), id(s), id(m)) else {
                continue;
            };
            let repo_name = id(r).filter(|_| !r.is_empty());
            let file_sep = id(f).filter(|_| !f.is_empty());
            let mut stops: Vec<u32> = [
                Some(prefix),
                Some(suffix),
                Some(middle),
                repo_name,
                file_sep,
            ]
            .into_iter()
            .flatten()
            .chain(extra.iter().filter_map(|s| id(s)))
            .chain(tok.eos)
            .collect();
            stops.sort_unstable();
            stops.dedup();
            return Some(Self {
                family,
                prefix,
                suffix,
                middle,
                repo_name,
                file_sep,
                stops,
            });
        }
        None
    }
}

/// What goes into one completion prompt. Plain data: the caller decides what each part holds.
#[derive(Debug, Clone, Default)]
pub struct PromptParts {
    /// Repository name (repository-level layout only).
    pub repo_name: String,
    /// Other files (or snippets of them) as `(path, text)`, most stable first.
    pub files: Vec<(String, String)>,
    /// Path of the file being edited, relative to the repository root; empty for the plain layout.
    pub path: String,
    /// Lines of the file from above the window (its imports, a stretch like the code at the
    /// cursor), each piece followed by a blank line: written before `prefix`.
    pub above: String,
    /// Text before the cursor, up to where `middle` begins.
    pub prefix: String,
    /// Text after the cursor.
    pub suffix: String,
    /// Lines of the file from below the window, each piece after a blank line: written after
    /// `suffix`.
    pub below: String,
    /// The end of the text before the cursor, written after the middle marker as the start of
    /// the model's own answer (the lines just above the cursor and its line so far). Typing then
    /// changes only the prompt's last tokens, and the prefix and suffix keep their KV cache.
    /// Empty: the whole text before the cursor is `prefix` (what an inference server gets).
    pub middle: String,
}

impl PromptParts {
    /// The text before the cursor for a server that lays out its own prompt: `above`, then
    /// `prefix` (`middle` stays apart: a server writes it after its own middle marker).
    pub fn server_prefix(&self) -> String {
        format!("{}{}", self.above, self.prefix)
    }

    /// The text after the cursor for such a server: `suffix`, then `below`.
    pub fn server_suffix(&self) -> String {
        format!("{}{}", self.suffix, self.below)
    }
}

/// Lays out a FIM prompt. With an empty `path` it is the plain
/// `<prefix>{prefix}<suffix>{suffix}<middle>{middle}` layout; with a path (and a family that has
/// file separators) it is the repository-level layout, which tells the model the file's name and
/// so its language, and carries the other files before it. `above` and `below` (the file's own
/// lines from outside the window) go right before the prefix and right after the suffix.
pub fn build(tok: &Tokenizer, fim: &FimTokens, parts: &PromptParts) -> Vec<u32> {
    let mut ids = Vec::new();
    if let (false, Some(repo), Some(sep)) = (parts.path.is_empty(), fim.repo_name, fim.file_sep) {
        ids.push(repo);
        ids.extend(tok.encode(&format!("{}\n", parts.repo_name)));
        for (path, text) in &parts.files {
            ids.push(sep);
            ids.extend(tok.encode(&format!("{path}\n{text}\n")));
        }
        ids.push(sep);
        ids.extend(tok.encode(&format!("{}\n", parts.path)));
    }
    ids.push(fim.prefix);
    ids.extend(tok.encode(&parts.above));
    ids.extend(tok.encode(&parts.prefix));
    ids.push(fim.suffix);
    ids.extend(tok.encode(&parts.suffix));
    ids.extend(tok.encode(&parts.below));
    ids.push(fim.middle);
    ids.extend(tok.encode(&parts.middle));
    ids
}
