//! The part of a Rust file that holds its definitions, for tree-sitter to parse instead of the
//! whole text: function bodies, attributes, comments, the insides of macro invocations and
//! brace-free `const`/`static` initializers are left out, and whitespace runs shrink to one
//! byte (newlines all stay, so lines keep their numbers). tree-sitter spends its time per byte
//! and per token; on the crates of a Cargo registry the skeleton is 40% of the text and parses
//! about three times as fast.
//!
//! Nothing that is left out can define a symbol that another file sees: the index does not
//! keep items declared inside function bodies (the walk skips those bodies in a full parse
//! too), and tree-sitter reads a macro's input as loose tokens. [`Skeleton::start`] and
//! [`Skeleton::end`] map the tree's byte offsets back to the file's.
//!
//! The lexer knows Rust's literals and comments (raw strings, nested block comments, lifetimes
//! against char literals), so braces inside them do not count. Where it cannot make sense of
//! the text (an unterminated literal or comment) there is no skeleton and the caller parses the
//! whole text.

/// A file's skeleton: the text tree-sitter parses, and where its bytes came from.
#[derive(Debug, Clone, Default)]
pub struct Skeleton {
    pub text: String,
    /// `(at, removed)`: from the skeleton's byte `at` on, `removed` bytes of the file lie before
    /// each byte (up to the next entry). Sorted by `at`.
    shifts: Vec<(u32, u32)>,
}

impl Skeleton {
    /// The file offset of the skeleton's byte `at` (the first byte of a node).
    pub fn start(&self, at: usize) -> usize {
        let i = self.shifts.partition_point(|&(p, _)| p as usize <= at);
        at + i.checked_sub(1).map_or(0, |i| self.shifts[i].1 as usize)
    }

    /// The file offset just past the skeleton's byte `at - 1` (a node's exclusive end).
    pub fn end(&self, at: usize) -> usize {
        match at {
            0 => 0,
            _ => self.start(at - 1) + 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Ident,
    /// A literal or a lifetime: one opaque token.
    Lit,
    Punct(u8),
}

/// What the skeleton keeps of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Yes,
    No,
    /// The token becomes a `0` (the first token of a left-out initializer).
    Zero,
}

/// Rust's tokens as far as the skeleton needs them: `(start, end, kind)`, comments left out.
/// `None` at an unterminated literal or block comment.
fn tokens(text: &[u8]) -> Option<Vec<(u32, u32, Tok)>> {
    let n = text.len();
    let at = |i: usize| text.get(i).copied().unwrap_or(0);
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
    let mut out = Vec::with_capacity(n / 5);
    let mut i = 0;
    // A shebang line is not an inner attribute (`#![`).
    if text.starts_with(b"#!") && at(2) != b'[' {
        i = text.iter().position(|&b| b == b'\n').unwrap_or(n);
    }
    // The end of a string whose opening quote is at `q` (escapes honoured).
    let string_end = |q: usize| -> Option<usize> {
        let mut j = q + 1;
        while j < n {
            match text[j] {
                b'\\' => j += 2,
                b'"' => return Some(j + 1),
                _ => j += 1,
            }
        }
        None
    };
    // The end of a raw string whose `#`s (or quote) start at `h`.
    let raw_end = |h: usize| -> Option<usize> {
        let hashes = text[h..].iter().take_while(|&&b| b == b'#').count();
        if at(h + hashes) != b'"' {
            return None;
        }
        let mut j = h + hashes + 1;
        while j < n {
            if text[j] == b'"'
                && text[j + 1..]
                    .iter()
                    .take(hashes)
                    .filter(|&&b| b == b'#')
                    .count()
                    == hashes
            {
                return Some(j + 1 + hashes);
            }
            j += 1;
        }
        None
    };
    while i < n {
        let b = text[i];
        let start = i;
        let kind = match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                i += 1;
                continue;
            }
            b'/' if at(i + 1) == b'/' => {
                i = text[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(n, |p| i + p);
                continue;
            }
            b'/' if at(i + 1) == b'*' => {
                let mut depth = 0usize;
                loop {
                    if i + 1 >= n {
                        return None;
                    }
                    if text[i] == b'/' && text[i + 1] == b'*' {
                        depth += 1;
                        i += 2;
                    } else if text[i] == b'*' && text[i + 1] == b'/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'"' => {
                i = string_end(i)?;
                Tok::Lit
            }
            b'\'' => {
                if at(i + 1) == b'\\' {
                    // An escaped char: `'\n'`, `'\''`, `'\u{1F600}'`.
                    let close = text
                        .get(i + 3..)?
                        .iter()
                        .take(12)
                        .position(|&b| b == b'\'')?;
                    i += 3 + close + 1;
                } else {
                    let c = at(i + 1);
                    let width = match c {
                        0xf0.. => 4,
                        0xe0.. => 3,
                        0xc0.. => 2,
                        _ => 1,
                    };
                    if at(i + 1 + width) == b'\'' {
                        i += 2 + width;
                    } else {
                        // A lifetime or a label.
                        i += 1;
                        while i < n && is_ident(text[i]) {
                            i += 1;
                        }
                    }
                }
                Tok::Lit
            }
            b'0'..=b'9' => {
                while i < n
                    && (is_ident(text[i]) || (text[i] == b'.' && at(i + 1).is_ascii_digit()))
                {
                    i += 1;
                }
                Tok::Lit
            }
            _ if is_ident(b) => {
                // String prefixes: b"", br"", r"", r#""#, c"", cr"", b''.
                let prefix = match (b, at(i + 1)) {
                    (b'b' | b'c', b'r') if matches!(at(i + 2), b'"' | b'#') => Some(i + 2),
                    (b'r', b'"') => Some(i + 1),
                    (b'r', b'#') if matches!(at(i + 2), b'"' | b'#') => Some(i + 1),
                    _ => None,
                };
                if let Some(h) = prefix {
                    i = raw_end(h)?;
                    Tok::Lit
                } else if matches!(b, b'b' | b'c') && at(i + 1) == b'"' {
                    i = string_end(i + 1)?;
                    Tok::Lit
                } else if b == b'b' && at(i + 1) == b'\'' {
                    let skip = if at(i + 2) == b'\\' { 3 } else { 2 };
                    let close = text
                        .get(i + skip..)?
                        .iter()
                        .take(12)
                        .position(|&b| b == b'\'')?;
                    i += skip + close + 1;
                    Tok::Lit
                } else {
                    if b == b'r' && at(i + 1) == b'#' {
                        i += 2; // a raw identifier
                    }
                    while i < n && is_ident(text[i]) {
                        i += 1;
                    }
                    Tok::Ident
                }
            }
            _ => {
                i += 1;
                Tok::Punct(b)
            }
        };
        out.push((start as u32, i as u32, kind));
    }
    Some(out)
}

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "type", "union",
    "unsafe", "use", "where", "while",
];

/// Item keywords: an initializer never holds one outside brackets, so meeting one means the
/// scan ran past its item.
const ITEM_KEYWORDS: &[&str] = &[
    "fn", "struct", "enum", "impl", "mod", "trait", "use", "pub", "const", "static", "type",
];

/// The skeleton of the Rust source `text`, or `None` where its literals or comments do not
/// end.
pub fn rust(text: &str) -> Option<Skeleton> {
    let t = Tokens::new(text)?;
    let (toks, word, punct, mate) = (&t.toks, |k| t.word(k), |k| t.punct(k), |k| t.mate(k));
    let mut keep = vec![Keep::Yes; toks.len()];
    let mut k = 0;
    while k < toks.len() {
        let w = word(k);
        // A function's body: after `fn name`, the first `{` outside parentheses and brackets.
        if w == "fn" && toks.get(k + 1).is_some_and(|t| t.2 == Tok::Ident) {
            let mut depth = 0i32;
            let mut j = k + 2;
            let mut body = None;
            while j < toks.len().min(k + MAX_HEADER) {
                match punct(j) {
                    b'(' | b'[' => depth += 1,
                    b')' | b']' => depth -= 1,
                    b'{' if depth == 0 => {
                        body = Some(j);
                        break;
                    }
                    b';' | b'}' if depth == 0 => break,
                    _ => {}
                }
                if depth < 0 {
                    break;
                }
                j += 1;
            }
            if let Some(open) = body {
                if let Some(close) = mate(open) {
                    keep[open + 1..close].fill(Keep::No);
                    k = close + 1;
                    continue;
                }
            }
            k += 2;
            continue;
        }
        // An attribute, outer or inner: left out whole.
        if punct(k) == b'#' {
            let open = if punct(k + 1) == b'!' { k + 2 } else { k + 1 };
            if punct(open) == b'[' {
                if let Some(close) = mate(open) {
                    keep[k..=close].fill(Keep::No);
                    k = close + 1;
                    continue;
                }
            }
        }
        // `macro_rules! name { … }` stays as it is; another macro's input is left out.
        if !w.is_empty() && punct(k + 1) == b'!' {
            if w == "macro_rules" {
                if let Some(close) = mate(k + 3) {
                    k = close + 1;
                    continue;
                }
            } else if !KEYWORDS.contains(&w) {
                if let Some(close) = mate(k + 2) {
                    keep[k + 3..close].fill(Keep::No);
                    k = close + 1;
                    continue;
                }
            }
        }
        // `const NAME: T = value;`, `static [mut] NAME: T = value;`: a value without braces
        // becomes `0` (one with braces may hold items, and stays).
        if w == "const" || w == "static" {
            let name = if word(k + 1) == "mut" { k + 2 } else { k + 1 };
            if !word(name).is_empty() && punct(name + 1) == b':' {
                if let Some((first, semi)) = initializer(&t, name + 2) {
                    if semi > first + 1 {
                        keep[first] = Keep::Zero;
                        keep[first + 1..semi].fill(Keep::No);
                    }
                    k = semi + 1;
                    continue;
                }
            }
        }
        k += 1;
    }
    emit(text.as_bytes(), toks, &keep)
}

/// A text's tokens ([`tokens`]), with each opening bracket's mate.
struct Tokens<'a> {
    text: &'a str,
    toks: Vec<(u32, u32, Tok)>,
    /// For each opening bracket, the token that closes it (each kind of bracket counted alone),
    /// [`NONE`] where it is not closed or not a bracket.
    mates: Vec<u32>,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Option<Self> {
        let toks = tokens(text.as_bytes())?;
        let mates = mates(&toks);
        Some(Tokens { text, toks, mates })
    }

    /// Token `k`'s text if it is an identifier or keyword, else `""`.
    fn word(&self, k: usize) -> &'a str {
        match self.toks.get(k) {
            Some(&(s, e, Tok::Ident)) => &self.text[s as usize..e as usize],
            _ => "",
        }
    }

    /// Token `k` if it is punctuation, else 0.
    fn punct(&self, k: usize) -> u8 {
        match self.toks.get(k) {
            Some(&(_, _, Tok::Punct(p))) => p,
            _ => 0,
        }
    }

    /// The token that closes the bracket opened at `k`, if it is one and is closed.
    fn mate(&self, k: usize) -> Option<usize> {
        let j = *self.mates.get(k)?;
        (j != NONE).then_some(j as usize)
    }
}

/// Where a token's matching bracket is not.
const NONE: u32 = u32::MAX;

/// A function header longer than this many tokens is not looked through for its body.
const MAX_HEADER: usize = 4096;

/// [`Tokens::mates`].
fn mates(toks: &[(u32, u32, Tok)]) -> Vec<u32> {
    let mut out = vec![NONE; toks.len()];
    let mut open: [Vec<u32>; 3] = Default::default();
    for (j, t) in toks.iter().enumerate() {
        let Tok::Punct(p) = t.2 else { continue };
        match p {
            b'(' => open[0].push(j as u32),
            b'[' => open[1].push(j as u32),
            b'{' => open[2].push(j as u32),
            b')' | b']' | b'}' => {
                let kind = match p {
                    b')' => 0,
                    b']' => 1,
                    _ => 2,
                };
                if let Some(o) = open[kind].pop() {
                    out[o as usize] = j as u32;
                }
            }
            _ => {}
        }
    }
    out
}

/// From the type after `NAME:` at `k`: the initializer's first token and the `;` after it, when
/// the item has one and it holds no braces.
fn initializer(t: &Tokens, mut k: usize) -> Option<(usize, usize)> {
    let (toks, word, punct) = (&t.toks, |k| t.word(k), |k| t.punct(k));
    // `->` is one token to Rust, two here.
    let arrow = |k: usize| k > 0 && punct(k - 1) == b'-' && toks[k - 1].1 == toks[k].0;
    // The type, up to `=`: brackets and angle brackets balance.
    let mut depth = 0i32;
    loop {
        match punct(k) {
            b'(' | b'[' | b'<' => depth += 1,
            b')' | b']' => depth -= 1,
            b'>' if !arrow(k) => depth -= 1,
            b'=' if depth == 0 => break,
            b';' | b'{' | b'}' | b',' if depth == 0 => return None,
            _ if k >= toks.len() => return None,
            // `const`, `mut` and `fn` also belong in types (`*const T`, `fn(u8)`).
            _ if depth == 0
                && ITEM_KEYWORDS.contains(&word(k))
                && !matches!(word(k), "const" | "fn") =>
            {
                return None
            }
            _ => {}
        }
        if depth < 0 {
            return None;
        }
        k += 1;
    }
    // The value, up to `;`: no braces, brackets balance; angle brackets only in a turbofish.
    let first = k + 1;
    let (mut depth, mut angle) = (0i32, 0i32);
    for j in first..toks.len() {
        match punct(j) {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b'{' | b'}' => return None,
            b'<' if punct(j - 1) == b':' => angle += 1,
            b'>' if angle > 0 => angle -= 1,
            b'>' | b',' if depth == 0 => return None,
            b';' if depth == 0 => return Some((first, j)),
            _ if depth == 0 && ITEM_KEYWORDS.contains(&word(j)) && word(j) != "const" => {
                return None
            }
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    None
}

/// The skeleton as it is written, and where each run of its bytes came from.
struct Out {
    text: Vec<u8>,
    shifts: Vec<(u32, u32)>,
    removed: u32,
}

impl Out {
    /// Appends `bytes`, which stand for the file's bytes from offset `from` on.
    fn put(&mut self, bytes: &[u8], from: usize) {
        let removed = (from - self.text.len()) as u32;
        if removed != self.removed {
            self.shifts.push((self.text.len() as u32, removed));
            self.removed = removed;
        }
        self.text.extend_from_slice(bytes);
    }

    /// What stands for the file's bytes `a..b` between two kept tokens: their newlines, or one
    /// byte of separation where there is none.
    fn gap(&mut self, file: &[u8], a: usize, b: usize) {
        let mut newline = false;
        for (i, &c) in file[a..b].iter().enumerate() {
            if c == b'\n' {
                self.put(b"\n", a + i);
                newline = true;
            }
        }
        if !newline && a < b && !self.text.is_empty() {
            self.put(b" ", a);
        }
    }
}

/// The skeleton text from the tokens kept.
fn emit(file: &[u8], toks: &[(u32, u32, Tok)], keep: &[Keep]) -> Option<Skeleton> {
    let mut out = Out {
        text: Vec::with_capacity(file.len() / 2),
        shifts: Vec::new(),
        removed: 0,
    };
    let mut prev = 0usize;
    for (t, k) in toks.iter().zip(keep) {
        let (s, e) = (t.0 as usize, t.1 as usize);
        match k {
            Keep::No => continue,
            Keep::Yes => {
                out.gap(file, prev, s);
                out.put(&file[s..e], s);
            }
            Keep::Zero => {
                out.gap(file, prev, s);
                out.put(b"0", s);
            }
        }
        prev = e;
    }
    out.gap(file, prev, file.len());
    // Whole tokens of the text and ASCII bytes between them: UTF-8 still.
    Some(Skeleton {
        text: String::from_utf8(out.text).ok()?,
        shifts: out.shifts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every identifier of the skeleton maps back onto the same identifier of the file.
    fn assert_maps_back(file: &str, sk: &Skeleton) {
        let t = sk.text.as_bytes();
        let mut i = 0;
        while i < t.len() {
            if t[i].is_ascii_alphabetic() || t[i] == b'_' {
                let j = i + t[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
                assert_eq!(
                    &file[sk.start(i)..sk.end(j)],
                    &sk.text[i..j],
                    "skeleton bytes {i}..{j}"
                );
                i = j;
            } else {
                i += 1;
            }
        }
    }

    #[test]
    fn what_the_skeleton_keeps() {
        let cases: &[(&str, &str)] = &[
            // A body goes, whatever its literals hold; the next item stays.
            (
                "fn f() { let s = \"}\"; }\nfn g() {}",
                "fn f() { }\nfn g() {}",
            ),
            (
                "fn f<'a>(x: &'a u8) -> char {\n    let r = r#\"}\"#;\n    '{'\n}\nstruct S;",
                "fn f<'a>(x: &'a u8) -> char {\n\n\n}\nstruct S;",
            ),
            (
                "fn f() { b'{'; c\"}\"; br##\"}\"## }\nstruct T;",
                "fn f() { }\nstruct T;",
            ),
            (
                "fn f() { '\\''; '\\u{7b}' }\nstruct U;",
                "fn f() { }\nstruct U;",
            ),
            // Comments go, nested ones too.
            ("/* a /* { */ } */ struct A; // }\n", "struct A;\n"),
            // Attributes go whole, inner ones too; a shebang is not one.
            (
                "#![allow(x)]\n#[doc = \"}\"]\npub struct B;",
                "\n\npub struct B;",
            ),
            ("#!/usr/bin/env run\nfn main() {}", "\nfn main() {}"),
            // A macro's input goes; `macro_rules!` stays.
            ("m!{ fn x() {} }\nstruct C;", "m!{ }\nstruct C;"),
            (
                "macro_rules! r { () => { fn y() {} } }",
                "macro_rules! r { () => { fn y() {} } }",
            ),
            // A brace-free initializer becomes `0`; one with braces stays.
            (
                "pub const N: u32 = 1 + size_of::<u8>();",
                "pub const N: u32 = 0 ;",
            ),
            (
                "static mut P: *const u8 = &X as *const u8;",
                "static mut P: *const u8 = 0 ;",
            ),
            ("const Z: u8 = 1;", "const Z: u8 = 1;"),
            ("const B: S = S { a: 1 };", "const B: S = S { a: 1 };"),
            ("const fn k() -> u8 { 1 }", "const fn k() -> u8 { }"),
            // A function without a body, and function pointer types, are not bodies.
            (
                "extern \"C\" { fn e(x: u8); }\ntype F = fn(u8) -> u8;",
                "extern \"C\" { fn e(x: u8); }\ntype F = fn(u8) -> u8;",
            ),
            // Whitespace shrinks to one byte; newlines stay.
            (
                "pub    struct\tD   {\r\n    a: u8,\n}",
                "pub struct D {\na: u8,\n}",
            ),
        ];
        for (file, want) in cases {
            let sk = rust(file).unwrap_or_else(|| panic!("no skeleton for {file:?}"));
            assert_eq!(sk.text, *want, "skeleton of {file:?}");
            assert_maps_back(file, &sk);
        }
    }

    #[test]
    fn unterminated_literals_give_no_skeleton() {
        for file in [
            "fn f() { \"abc }",
            "/* open",
            "const S: &str = r#\"x\";",
            "fn f() { '\\",
            "b'\\",
        ] {
            assert!(rust(file).is_none(), "{file:?}");
        }
    }
}
