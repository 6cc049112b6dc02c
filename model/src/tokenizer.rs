//! Byte-level BPE rebuilt from GGUF metadata (`tokenizer.ggml.*`): no `tokenizer.json` needed.
//!
//! Text is split by the pre-tokenizer regex named in `tokenizer.ggml.pre`, each piece's bytes are
//! mapped to their byte tokens, and the merges are applied lowest rank first. [`Tokenizer::encode`]
//! treats special-token text (`<|endoftext|>`, …) as plain text, so a source file can never inject
//! control tokens into a prompt; [`Tokenizer::encode_with_special`] parses them, for trusted text.

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use candle_core::quantized::gguf_file::Value;
use fancy_regex::Regex;
use std::collections::HashMap;
use std::sync::Mutex;

/// GGUF token types (llama.cpp's `llama_token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Pre-tokenizer patterns by `tokenizer.ggml.pre` name.
const PRE_QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const PRE_LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const PRE_GPT2: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

pub struct Tokenizer {
    /// Token id → the bytes it stands for (special tokens: their text).
    tokens: Vec<Vec<u8>>,
    types: Vec<i32>,
    to_id: HashMap<Vec<u8>, u32>,
    byte_ids: [u32; 256],
    /// (left, right) → (rank, merged id).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Control and user-defined tokens, longest text first, for `encode_with_special`.
    specials: Vec<(String, u32)>,
    /// Every token that never stands for text (see `is_special`), ascending.
    special_ids: Vec<u32>,
    pre: Regex,
    ignore_merges: bool,
    pub pre_name: String,
    pub eos: Option<u32>,
    pub bos: Option<u32>,
    pub add_bos: bool,
    /// Token ids of the lines encoded lately (see [`Tokenizer::encode`]), so that a keystroke
    /// tokenizes the line it changed and not the whole window again; `None` for GPT-2's
    /// pre-tokenizer, whose whitespace pieces run on past a line break.
    lines: Option<Mutex<LineCache>>,
}

/// A line's text → its token ids.
type LineCache = HashMap<Box<str>, Box<[u32]>>;

/// Lines the cache holds at most before it starts over, and the longest piece it keeps.
const LINE_CACHE_ENTRIES: usize = 1 << 15;
const LINE_CACHE_BYTES: usize = 4096;

impl Tokenizer {
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let model = g.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(ModelError::UnsupportedTokenizer(format!(
                "tokenizer model `{model}` (only byte-level BPE, `gpt2`, is supported)"
            )));
        }
        let pre_name = g.str("tokenizer.ggml.pre").unwrap_or("default").to_string();
        let tokens = string_array(g, "tokenizer.ggml.tokens")?;
        let merges = string_array(g, "tokenizer.ggml.merges")?;
        let types = match g.get("tokenizer.ggml.token_type") {
            Some(Value::Array(vs)) => vs
                .iter()
                .map(|v| v.to_i32().unwrap_or(token_type::NORMAL))
                .collect(),
            _ => vec![token_type::NORMAL; tokens.len()],
        };
        let id = |key: &str| g.usize(key).ok().map(|x| x as u32);
        let add_bos = matches!(
            g.get("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(true))
        );
        Self::new(
            &tokens,
            &merges,
            types,
            &pre_name,
            id("tokenizer.ggml.bos_token_id"),
            id("tokenizer.ggml.eos_token_id"),
            add_bos,
        )
    }

    /// Builds a tokenizer from its GGUF parts: token strings in GPT-2's byte-to-unicode form,
    /// merges as `"left right"`, token types, and the pre-tokenizer's name.
    pub fn new(
        token_strings: &[&str],
        merges: &[&str],
        mut types: Vec<i32>,
        pre_name: &str,
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
    ) -> Result<Self> {
        let pattern = match pre_name {
            "qwen2" => PRE_QWEN2,
            "llama-bpe" | "llama3" | "smaug-bpe" => PRE_LLAMA3,
            "default" | "gpt2" | "gpt-2" => PRE_GPT2,
            other => {
                return Err(ModelError::UnsupportedTokenizer(format!(
                    "pre-tokenizer `{other}` (supported: qwen2, llama-bpe, gpt2)"
                )))
            }
        };
        let pre =
            Regex::new(pattern).map_err(|e| ModelError::UnsupportedTokenizer(e.to_string()))?;
        types.resize(token_strings.len(), token_type::NORMAL);
        let unicode_to_byte = unicode_to_byte();
        let mut tokens = Vec::with_capacity(token_strings.len());
        let mut to_id = HashMap::with_capacity(token_strings.len());
        let mut specials = Vec::new();
        for (i, s) in token_strings.iter().enumerate() {
            let ty = types[i];
            let bytes: Vec<u8> = if ty == token_type::CONTROL || ty == token_type::USER_DEFINED {
                specials.push((s.to_string(), i as u32));
                s.as_bytes().to_vec()
            } else {
                // Byte-level form: every char stands for one byte.
                match s
                    .chars()
                    .map(|c| unicode_to_byte.get(&c).copied())
                    .collect()
                {
                    Some(b) => b,
                    None => s.as_bytes().to_vec(),
                }
            };
            if ty == token_type::NORMAL || ty == token_type::BYTE {
                to_id.entry(bytes.clone()).or_insert(i as u32);
            }
            tokens.push(bytes);
        }
        let special_ids = types
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                matches!(
                    **t,
                    token_type::CONTROL | token_type::USER_DEFINED | token_type::UNUSED
                )
            })
            .map(|(i, _)| i as u32)
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let mut byte_ids = [u32::MAX; 256];
        for b in 0..=255u8 {
            byte_ids[b as usize] = *to_id.get(&vec![b]).ok_or_else(|| {
                ModelError::UnsupportedTokenizer(format!("vocabulary has no token for byte {b}"))
            })?;
        }
        let mut merge_map = HashMap::with_capacity(merges.len());
        let as_bytes = |s: &str| -> Option<Vec<u8>> {
            s.chars()
                .map(|c| unicode_to_byte.get(&c).copied())
                .collect()
        };
        for (rank, m) in merges.iter().enumerate() {
            let Some((l, r)) = m.split_once(' ') else {
                continue;
            };
            let (Some(lb), Some(rb)) = (as_bytes(l), as_bytes(r)) else {
                continue;
            };
            let mut joined = lb.clone();
            joined.extend_from_slice(&rb);
            if let (Some(&li), Some(&ri), Some(&ji)) =
                (to_id.get(&lb), to_id.get(&rb), to_id.get(&joined))
            {
                merge_map.entry((li, ri)).or_insert((rank as u32, ji));
            }
        }
        Ok(Self {
            tokens,
            types,
            to_id,
            byte_ids,
            merges: merge_map,
            specials,
            special_ids,
            pre,
            ignore_merges: pattern == PRE_LLAMA3,
            pre_name: pre_name.to_string(),
            eos,
            bos,
            add_bos,
            lines: (pattern != PRE_GPT2).then(|| Mutex::new(HashMap::new())),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of a token by its text: special tokens by name, others by the bytes they stand for.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.specials
            .iter()
            .find(|(s, _)| s == text)
            .map(|(_, id)| *id)
            .or_else(|| self.to_id.get(text.as_bytes()).copied())
    }

    pub fn token_type(&self, id: u32) -> i32 {
        self.types
            .get(id as usize)
            .copied()
            .unwrap_or(token_type::UNUSED)
    }

    /// True for tokens that never stand for text: control, user-defined and unused ones.
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.binary_search(&id).is_ok() || id as usize >= self.tokens.len()
    }

    /// Ids of every special (non-text) token, ascending.
    pub fn special_ids(&self) -> &[u32] {
        &self.special_ids
    }

    /// Encodes text literally: special-token text is tokenized as ordinary characters.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_into(text, &mut out);
        out
    }

    /// Encodes text, turning the text of control and user-defined tokens into their ids.
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            // The earliest special token in `rest`; at one position the longest wins.
            let mut best: Option<(usize, usize, u32)> = None;
            for (s, id) in &self.specials {
                if let Some(pos) = rest.find(s.as_str()) {
                    if best.is_none_or(|(bp, bl, _)| pos < bp || (pos == bp && s.len() > bl)) {
                        best = Some((pos, s.len(), *id));
                    }
                }
            }
            match best {
                Some((pos, len, id)) => {
                    self.encode_into(&rest[..pos], &mut out);
                    out.push(id);
                    rest = &rest[pos + len..];
                }
                None => {
                    self.encode_into(rest, &mut out);
                    break;
                }
            }
        }
        out
    }

    /// Encodes `text` line by line through the cache of lines seen before: the ids are those
    /// of [`Tokenizer::encode_whole`], since each piece ends where the pre-tokenizer ends one.
    fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        let Some(cache) = &self.lines else {
            return self.encode_whole_into(text, out);
        };
        let mut lines = cache.lock().unwrap_or_else(|e| e.into_inner());
        for piece in pieces(text) {
            if piece.len() > LINE_CACHE_BYTES {
                self.encode_whole_into(piece, out);
                continue;
            }
            if let Some(ids) = lines.get(piece) {
                out.extend_from_slice(ids);
                continue;
            }
            let at = out.len();
            self.encode_whole_into(piece, out);
            if lines.len() >= LINE_CACHE_ENTRIES {
                lines.clear();
            }
            lines.insert(piece.into(), out[at..].into());
        }
    }

    /// Encodes text without the cache of lines: the reference that the cache must agree with.
    pub fn encode_whole(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.encode_whole_into(text, &mut out);
        out
    }

    fn encode_whole_into(&self, text: &str, out: &mut Vec<u32>) {
        for piece in self.pre.find_iter(text) {
            let piece = match piece {
                Ok(m) => m.as_str(),
                // Backtracking limits cannot be hit by these patterns; fall back to bytes anyway.
                Err(_) => text,
            };
            // Llama 3 takes a whole piece that is in the vocabulary as is ("ignore_merges").
            if self.ignore_merges {
                if let Some(&id) = self.to_id.get(piece.as_bytes()) {
                    out.push(id);
                    continue;
                }
            }
            self.bpe(piece.as_bytes(), out);
        }
    }

    /// Applies merges to one pre-token, lowest rank first.
    fn bpe(&self, bytes: &[u8], out: &mut Vec<u32>) {
        let mut syms: Vec<u32> = bytes.iter().map(|&b| self.byte_ids[b as usize]).collect();
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..syms.len().saturating_sub(1) {
                if let Some(&(rank, merged)) = self.merges.get(&(syms[i], syms[i + 1])) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, merged));
                    }
                }
            }
            let Some((_, i, merged)) = best else { break };
            syms[i] = merged;
            syms.remove(i + 1);
        }
        out.extend_from_slice(&syms);
    }

    /// The bytes a token stands for (special tokens: their text).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.tokens.get(id as usize).map(|b| &b[..]).unwrap_or(&[])
    }

    /// Decodes ids to text; invalid UTF-8 (a character split across a cut) becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn string_array<'a>(g: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    match g.get(key) {
        Some(Value::Array(vs)) => vs
            .iter()
            .map(|v| v.to_string().map(|s| s.as_str()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| ModelError::Metadata { key: key.into() }),
        _ => Err(ModelError::Metadata { key: key.into() }),
    }
}

/// GPT-2's reversible map from bytes to printable characters, inverted.
fn unicode_to_byte() -> HashMap<char, u8> {
    byte_to_unicode()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect()
}

/// GPT-2's byte → char table: printable Latin-1 bytes stand for themselves, the rest are shifted
/// past U+0100 in order.
pub fn byte_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u32 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        table[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            let c = char::from_u32(next).unwrap();
            next += 1;
            c
        };
    }
    table
}

/// `text` cut into lines where Qwen's and Llama 3's pre-tokenizers end a piece as well: after
/// the last line break of a run of whitespace that non-whitespace follows. None of the
/// patterns goes on past such a line break (`\s*[\r\n]+` and a punctuation run's `[\r\n]*`
/// end at it, `\s+(?!\S)` cannot end before non-whitespace), and none looks back, so each line
/// encodes alone to the ids it has in the whole text.
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len();
        let mut search = 0;
        while let Some(i) = rest[search..].find('\n') {
            let after = search + i + 1;
            let tail = &rest[after..];
            let blank = tail.len()
                - tail
                    .trim_start_matches(|c: char| c.is_whitespace() && c != '\n' && c != '\r')
                    .len();
            match tail[blank..].chars().next() {
                Some(c) if !c.is_whitespace() => {
                    end = after;
                    break;
                }
                _ => search = after,
            }
        }
        let (piece, next) = rest.split_at(end);
        rest = next;
        Some(piece)
    })
}
