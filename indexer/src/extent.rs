//! One line or a block: how much a completion at a cursor should write, decided from the syntax
//! tree around the cursor rather than from the line's last character.
//!
//! The tree's leaf tokens up to the cursor tell which brackets are still open (brackets inside
//! strings and comments are not tokens, so they do not count) and what the last token is:
//! - a cursor before code on its line, or inside a string or a comment: one line;
//! - inside an open `(` or `[` (an argument list, an array, an index): one line, however the
//!   line ends (`return Err(Error::new(` is the middle of an expression, not a new scope);
//! - right after a `{` that opens a block or body, an arrow (`=>`), or in Python a `:` that
//!   ends a compound statement's header: a block;
//! - anywhere else (the end of a statement, a body that already has statements): one line.
//!
//! A cursor on a line that holds only indentation is judged at the end of the nearest line
//! above that holds code (comments aside). Only a window of text around the cursor is parsed.

use crate::lang::Lang;

/// What a completion at a cursor should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    Line,
    Block,
}

/// Bytes parsed before the cursor's line, at most (cut at a line start).
const BEFORE: usize = 16 * 1024;
/// Bytes parsed after it.
const AFTER: usize = 2 * 1024;

/// The extent of a completion at byte offset `cursor` (a char boundary) of `text`, a file of
/// language `lang`.
pub fn extent(lang: Lang, text: &str, cursor: usize) -> Extent {
    let cursor = cursor.min(text.len());
    let line_start = text[..cursor].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[cursor..].find('\n').map_or(text.len(), |i| cursor + i);
    if !text[cursor..line_end].trim().is_empty() {
        return Extent::Line;
    }
    // Where to judge: the cursor, or on an indentation-only line the end of the nearest line
    // above with something on it (a comment-only line is skipped below, by its tokens).
    let at_cursor = !text[line_start..cursor].trim().is_empty();
    let at = if !at_cursor {
        match text[..line_start].trim_end().len() {
            0 => return Extent::Line,
            n => n,
        }
    } else {
        cursor
    };
    let mut start = at.saturating_sub(BEFORE);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    if start > 0 {
        start = text[start..at].find('\n').map_or(at, |i| start + i + 1);
        start = start.min(text[..at].rfind('\n').map_or(0, |i| i + 1));
    }
    let mut end = (line_end + AFTER).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let window = &text[start..end];
    let at = at - start;

    let mut parser = tree_sitter::Parser::new();
    if parser.set_language(&lang.grammar()).is_err() {
        return Extent::Line;
    }
    let Some(tree) = parser.parse(window, None) else {
        return Extent::Line;
    };

    // The leaves that end at or before `at`, in order: open brackets, and the last token that
    // is not a comment.
    let mut open: Vec<&str> = Vec::new();
    let mut last: Option<tree_sitter::Node> = None;
    let mut inside_literal = false;
    let mut cursor_walk = tree.walk();
    'walk: loop {
        let node = cursor_walk.node();
        let is_literal = is_string_or_comment(node.kind());
        if node.start_byte() >= at {
            // Past the point: nothing more to read.
        } else if is_literal
            && node.start_byte() < at
            && (node.end_byte() > at
                || (at_cursor
                    && node.kind().contains("comment")
                    && !window[..node.end_byte()].ends_with("*/")))
        {
            // The point is inside a string or a comment (a line comment runs to the line's
            // end, where the cursor types into it).
            inside_literal = true;
            break 'walk;
        } else if node.child_count() == 0 || (is_literal && node.end_byte() <= at) {
            if node.end_byte() <= at {
                match node.kind() {
                    "(" | "[" | "{" => open.push(node.kind()),
                    ")" | "]" | "}" => {
                        let opener = match node.kind() {
                            ")" => "(",
                            "]" => "[",
                            _ => "{",
                        };
                        if open.last() == Some(&opener) {
                            open.pop();
                        }
                    }
                    _ => {}
                }
                if !node.kind().contains("comment") {
                    last = Some(node);
                }
            }
        } else if cursor_walk.goto_first_child() {
            continue 'walk;
        }
        // Next sibling, or up until there is one.
        loop {
            if cursor_walk.goto_next_sibling() {
                continue 'walk;
            }
            if !cursor_walk.goto_parent() {
                break 'walk;
            }
        }
    }
    if inside_literal {
        return Extent::Line;
    }
    let Some(last) = last else {
        return Extent::Line;
    };
    match open.last() {
        Some(&"(") | Some(&"[") => return Extent::Line,
        _ => {}
    }
    match last.kind() {
        "{" => Extent::Block,
        "=>" => Extent::Block,
        ":" if lang == Lang::Python && open.is_empty() => Extent::Block,
        _ => Extent::Line,
    }
}

/// Node kinds whose text is one piece to the completion: strings, characters, comments.
fn is_string_or_comment(kind: &str) -> bool {
    kind.contains("comment")
        || kind.contains("string")
        || kind == "char_literal"
        || kind == "character_literal"
        || kind == "rune_literal"
        || kind == "template_string"
}
