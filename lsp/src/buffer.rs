//! Open documents as the editor sees them: a rope, a version, and positions in the encoding the
//! client and server agreed on (UTF-16 by default, UTF-8 or UTF-32 when offered). Plain data and
//! pure functions: the server feeds edits in, the pipeline reads text out.
//!
//! Lines break at `\n`, `\r\n` and `\r` only, as in LSP (ropey is built with `cr_lines` and
//! without `unicode_lines`).

use ropey::Rope;

/// How a position's `character` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Utf16,
    Utf32,
}

impl Encoding {
    fn width(self, c: char) -> usize {
        match self {
            Encoding::Utf8 => c.len_utf8(),
            Encoding::Utf16 => c.len_utf16(),
            Encoding::Utf32 => 1,
        }
    }
}

/// A position the document cannot take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PositionError {
    PastEnd { line: u32, lines: usize },
    InsideCharacter { line: u32, character: u32 },
    Reversed,
}

impl std::fmt::Display for PositionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PositionError::PastEnd { line, lines } => {
                write!(f, "line {line} is past the end of the document ({lines} lines)")
            }
            PositionError::InsideCharacter { line, character } => write!(
                f,
                "position {line}:{character} falls inside a character (a surrogate pair or a multi-byte sequence)"
            ),
            PositionError::Reversed => write!(f, "range ends before it starts"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Document {
    pub rope: Rope,
    pub version: i32,
    pub language_id: String,
}

impl Document {
    pub fn new(text: &str, version: i32, language_id: &str) -> Self {
        Self {
            rope: Rope::from_str(text),
            version,
            language_id: language_id.to_string(),
        }
    }

    /// Char index of a position. A `character` past the end of its line means the line's end
    /// (as LSP asks); a line past the end of the document, or a position inside a character, is
    /// an error.
    pub fn char_index(
        &self,
        line: u32,
        character: u32,
        enc: Encoding,
    ) -> Result<usize, PositionError> {
        let lines = self.rope.len_lines();
        let l = line as usize;
        if l >= lines {
            // The position just after the last character is line `lines - 1`, never `lines`;
            // clients still send `lines:0` for the end of a document that ends in a newline.
            if l == lines && character == 0 {
                return Ok(self.rope.len_chars());
            }
            return Err(PositionError::PastEnd { line, lines });
        }
        let start = self.rope.line_to_char(l);
        let mut units = 0usize;
        let want = character as usize;
        for (i, c) in self.rope.line(l).chars().enumerate() {
            if c == '\n' || c == '\r' || units >= want {
                if units > want {
                    return Err(PositionError::InsideCharacter { line, character });
                }
                return Ok(start + i);
            }
            units += enc.width(c);
        }
        if units > want {
            return Err(PositionError::InsideCharacter { line, character });
        }
        Ok(start + self.rope.line(l).len_chars())
    }

    /// The position of a char index, in `enc` units.
    pub fn position(&self, char_idx: usize, enc: Encoding) -> (u32, u32) {
        let char_idx = char_idx.min(self.rope.len_chars());
        let line = self.rope.char_to_line(char_idx);
        let start = self.rope.line_to_char(line);
        let units: usize = self
            .rope
            .slice(start..char_idx)
            .chars()
            .map(|c| enc.width(c))
            .sum();
        (line as u32, units as u32)
    }

    /// Applies one content change: the whole text when `range` is `None`, else the text between
    /// two positions `((line, character), (line, character))` replaced.
    pub fn apply_change(
        &mut self,
        range: Option<((u32, u32), (u32, u32))>,
        text: &str,
        enc: Encoding,
    ) -> Result<(), PositionError> {
        match range {
            None => self.rope = Rope::from_str(text),
            Some(((l0, c0), (l1, c1))) => {
                let start = self.char_index(l0, c0, enc)?;
                let end = self.char_index(l1, c1, enc)?;
                if end < start {
                    return Err(PositionError::Reversed);
                }
                self.rope.remove(start..end);
                self.rope.insert(start, text);
            }
        }
        Ok(())
    }

    /// The whole text and the cursor's byte offset in it.
    pub fn text_and_offset(&self, char_idx: usize) -> (String, usize) {
        let char_idx = char_idx.min(self.rope.len_chars());
        (self.rope.to_string(), self.rope.char_to_byte(char_idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_in_each_encoding() {
        // "a😀b" : 😀 is 4 bytes, 2 UTF-16 units, 1 char.
        let d = Document::new("a😀b\r\nxy\n", 1, "rust");
        let cases = [
            (Encoding::Utf8, 5, Ok(2)),
            (Encoding::Utf16, 3, Ok(2)),
            (Encoding::Utf32, 2, Ok(2)),
            (
                Encoding::Utf16,
                2,
                Err(PositionError::InsideCharacter {
                    line: 0,
                    character: 2,
                }),
            ),
            (
                Encoding::Utf8,
                3,
                Err(PositionError::InsideCharacter {
                    line: 0,
                    character: 3,
                }),
            ),
            // Past the line's end: the line's end, before "\r\n".
            (Encoding::Utf16, 99, Ok(3)),
        ];
        for (enc, ch, want) in cases {
            assert_eq!(d.char_index(0, ch, enc), want, "{enc:?} {ch}");
        }
        assert_eq!(d.char_index(1, 1, Encoding::Utf16), Ok(6));
        assert_eq!(d.char_index(2, 0, Encoding::Utf16), Ok(8));
        assert_eq!(d.char_index(3, 0, Encoding::Utf16), Ok(8));
        assert!(matches!(
            d.char_index(4, 0, Encoding::Utf16),
            Err(PositionError::PastEnd { .. })
        ));
        assert_eq!(d.position(2, Encoding::Utf16), (0, 3));
        assert_eq!(d.position(6, Encoding::Utf8), (1, 1));
    }

    #[test]
    fn lone_cr_breaks_a_line_but_unicode_separators_do_not() {
        let d = Document::new("a\rb\u{2028}c\nd", 1, "rust");
        assert_eq!(d.rope.len_lines(), 3);
        assert_eq!(d.char_index(1, 2, Encoding::Utf32), Ok(4));
    }

    #[test]
    fn incremental_edits_with_surrogates_and_crlf() {
        let mut d = Document::new("fn main() {\r\n    😀x\r\n}\r\n", 1, "rust");
        // Replace "x" (after the emoji: UTF-16 column 4 + 2 = 6) with "let y = 1;".
        d.apply_change(Some(((1, 6), (1, 7))), "let y = 1;", Encoding::Utf16)
            .unwrap();
        assert_eq!(
            d.rope.to_string(),
            "fn main() {\r\n    😀let y = 1;\r\n}\r\n"
        );
        // Join two lines by deleting the CRLF between them.
        d.apply_change(Some(((0, 11), (1, 0))), "", Encoding::Utf16)
            .unwrap();
        assert_eq!(d.rope.to_string(), "fn main() {    😀let y = 1;\r\n}\r\n");
        // A change inside the surrogate pair is refused and leaves the text alone.
        let before = d.rope.to_string();
        assert!(d
            .apply_change(Some(((0, 16), (0, 16))), "!", Encoding::Utf16)
            .is_err());
        assert_eq!(d.rope.to_string(), before);
        d.apply_change(None, "new", Encoding::Utf16).unwrap();
        assert_eq!(d.rope.to_string(), "new");
    }

    /// The plain model of a document the rope must agree with: a `String`, lines broken at LF,
    /// CR and CRLF, a position's character clamped to its line's end (before the break), and a
    /// position inside a character an error.
    fn model_offset(text: &str, line: u32, character: u32, enc: Encoding) -> Option<usize> {
        let mut starts = vec![0];
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
                starts.push(i + 2);
                i += 2;
            } else if b[i] == b'\n' || b[i] == b'\r' {
                starts.push(i + 1);
                i += 1;
            } else {
                i += 1;
            }
        }
        let l = line as usize;
        if l == starts.len() && character == 0 {
            return Some(text.len());
        }
        if l >= starts.len() {
            return None;
        }
        let mut units = 0;
        for (off, c) in text[starts[l]..].char_indices() {
            if c == '\n' || c == '\r' || units >= character as usize {
                return (units <= character as usize).then_some(starts[l] + off);
            }
            units += enc.width(c);
        }
        (units <= character as usize).then_some(text.len())
    }

    /// Incremental sync against the plain model: thousands of generated edits (multi-byte and
    /// astral characters, CR/LF/CRLF, positions past the end or inside a character, reversed
    /// ranges) leave the rope equal to the string, and a refused edit changes nothing.
    #[test]
    fn generated_edits_agree_with_a_plain_string() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let pieces = [
            "a",
            "é",
            "😀",
            "\n",
            "\r\n",
            "\r",
            "  ",
            "fn x() {}",
            "",
            "\u{2028}",
            "中",
        ];
        for enc in [Encoding::Utf8, Encoding::Utf16, Encoding::Utf32] {
            let mut model = String::from("fn main() {\r\n    😀\n}\r");
            let mut d = Document::new(&model, 1, "rust");
            for step in 0..3000 {
                let lines = d.rope.len_lines() as u64 + 2;
                let mut pos = || ((next() % lines) as u32, (next() % 12) as u32);
                let (a, b) = (pos(), pos());
                let text: String = (0..next() % 4)
                    .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                    .collect();
                let start = model_offset(&model, a.0, a.1, enc);
                let end = model_offset(&model, b.0, b.1, enc);
                let got = d.apply_change(Some((a, b)), &text, enc);
                match (start, end) {
                    (Some(s), Some(e)) if s <= e => {
                        assert!(got.is_ok(), "{enc:?} step {step}: {got:?}");
                        model.replace_range(s..e, &text);
                    }
                    _ => assert!(got.is_err(), "{enc:?} step {step}: {a:?}..{b:?} accepted"),
                }
                assert_eq!(d.rope.to_string(), model, "{enc:?} step {step}");
                if next() % 500 == 0 {
                    model = text.clone();
                    d.apply_change(None, &text, enc).unwrap();
                }
            }
        }
    }
}
