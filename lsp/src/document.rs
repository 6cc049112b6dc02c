//! Checks on a source buffer before it reaches the pipeline, and LINE:COL → byte offset.

/// Why a buffer or a position cannot be completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocError {
    Binary {
        offset: usize,
    },
    InvalidUtf8 {
        offset: usize,
    },
    PastEnd {
        line: usize,
        lines: usize,
    },
    PastLineEnd {
        line: usize,
        col: usize,
        chars: usize,
    },
    Zero,
}

impl std::fmt::Display for DocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocError::Binary { offset } => write!(
                f,
                "looks like a binary file (NUL byte at offset {offset}); nib completes text only"
            ),
            DocError::InvalidUtf8 { offset } => {
                write!(f, "is not valid UTF-8 (bad byte at offset {offset})")
            }
            DocError::PastEnd { line, lines } => {
                write!(f, "line {line} is past the end of the file ({lines} lines)")
            }
            DocError::PastLineEnd { line, col, chars } => write!(
                f,
                "column {col} is past the end of line {line} ({chars} characters; the last column is {})",
                chars + 1
            ),
            DocError::Zero => write!(f, "lines and columns count from 1"),
        }
    }
}

/// Accepts UTF-8 text; rejects binary content (a NUL byte in the first 8 KiB) and invalid UTF-8.
pub fn decode_text(bytes: &[u8]) -> Result<&str, DocError> {
    if let Some(offset) = bytes.iter().take(8192).position(|&b| b == 0) {
        return Err(DocError::Binary { offset });
    }
    std::str::from_utf8(bytes).map_err(|e| DocError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })
}

/// Byte offset of 1-based `line` and `col`, the column counted in characters. The column just
/// past the last character of a line (before its `\r\n` or `\n`) is valid.
pub fn offset_of(text: &str, line: usize, col: usize) -> Result<usize, DocError> {
    if line == 0 || col == 0 {
        return Err(DocError::Zero);
    }
    let mut start = 0;
    for _ in 1..line {
        match text[start..].find('\n') {
            Some(i) => start += i + 1,
            None => {
                return Err(DocError::PastEnd {
                    line,
                    lines: text.split('\n').count(),
                })
            }
        }
    }
    let rest = &text[start..];
    let content = rest.split('\n').next().unwrap_or("");
    let content = content.strip_suffix('\r').unwrap_or(content);
    let chars = content.chars().count();
    if col > chars + 1 {
        return Err(DocError::PastLineEnd { line, col, chars });
    }
    let byte = content
        .char_indices()
        .nth(col - 1)
        .map_or(content.len(), |(i, _)| i);
    Ok(start + byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let text = "ab\r\nçd€\n\nlast";
        assert_eq!(offset_of(text, 1, 1), Ok(0));
        assert_eq!(offset_of(text, 1, 3), Ok(2)); // end of line 1, before \r\n
        assert_eq!(offset_of(text, 2, 2), Ok(6)); // after 'ç' (2 bytes)
        assert_eq!(offset_of(text, 2, 4), Ok(10)); // after '€' (3 bytes)
        assert_eq!(offset_of(text, 3, 1), Ok(11));
        assert_eq!(offset_of(text, 4, 5), Ok(16));
        assert!(matches!(
            offset_of(text, 5, 1),
            Err(DocError::PastEnd { .. })
        ));
        assert!(matches!(
            offset_of(text, 1, 4),
            Err(DocError::PastLineEnd { .. })
        ));
        assert_eq!(offset_of(text, 0, 1), Err(DocError::Zero));
    }

    #[test]
    fn rejects_binary_and_bad_utf8() {
        assert_eq!(decode_text(b"ab\0c"), Err(DocError::Binary { offset: 2 }));
        assert_eq!(
            decode_text(b"ok \xff\xfe"),
            Err(DocError::InvalidUtf8 { offset: 3 })
        );
        assert_eq!(decode_text("héllo".as_bytes()), Ok("héllo"));
    }
}
