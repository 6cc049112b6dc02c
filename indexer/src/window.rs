//! The local context window: the text right before and after the cursor, under a token budget.
//!
//! The prefix is taken nearest line first, the suffix likewise, and both are cut at line
//! boundaries, so a prompt never starts or ends in the middle of a line except at the cursor.
//!
//! When the budget cuts the prefix, its first line is moved down to a multiple of a stride (up to
//! [`ANCHOR_LINES`] lines, at most a quarter of the window) from the top of the file. Typing then
//! leaves the prompt's head unchanged for many keystrokes, so the model's KV cache for it is
//! reused instead of the whole window being recomputed each time its start slides by a line.

/// The largest stride a cut prefix's first line is aligned to.
pub const ANCHOR_LINES: usize = 32;

/// The text around the cursor that goes into a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Window {
    pub prefix: String,
    pub suffix: String,
}

/// Takes up to `prefix_budget` tokens before `cursor` and `suffix_budget` after it, whole lines
/// only, except for the cursor's own line, whose two halves are always included.
///
/// `cursor` is a byte offset on a char boundary of `text`. `count` returns the token count of a
/// piece of text; counts are summed per line, which slightly overestimates the joined text.
pub fn local_window(
    text: &str,
    cursor: usize,
    prefix_budget: usize,
    suffix_budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> Window {
    let (before, after) = text.split_at(cursor.min(text.len()));

    // Prefix: the cursor line's head, then whole lines upwards.
    let head_start = before.rfind('\n').map_or(0, |i| i + 1);
    let mut start = head_start;
    let mut prefix_tokens = count(&before[head_start..]);
    while start > 0 {
        let line_start = before[..start - 1].rfind('\n').map_or(0, |i| i + 1);
        let n = count(&before[line_start..start]);
        if prefix_tokens + n > prefix_budget {
            break;
        }
        prefix_tokens += n;
        start = line_start;
    }

    // Anchor a cut prefix at a stable line (never past the cursor's line).
    if start > 0 {
        let mut line = before[..start].matches('\n').count();
        let window_lines = before[start..head_start].matches('\n').count();
        let stride = match window_lines / 4 {
            0 => 1,
            n => (1usize << n.ilog2()).min(ANCHOR_LINES),
        };
        while line % stride != 0 && start < head_start {
            let next = before[start..]
                .find('\n')
                .map_or(head_start, |i| start + i + 1);
            start = next;
            line += 1;
        }
    }

    Window {
        prefix: before[start..].to_string(),
        suffix: suffix_of(after, suffix_budget, count),
    }
}

/// The window whose prefix begins at `start` (a line's start at or before the cursor's line,
/// else the cursor line's start), the suffix under `suffix_budget` as in [`local_window`]: a
/// caller that keeps a window's start while the user types downwards, so that the prompt's
/// head stays cached, uses this one.
pub fn window_from(
    text: &str,
    cursor: usize,
    start: usize,
    suffix_budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> Window {
    let (before, after) = text.split_at(cursor.min(text.len()));
    let head_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_start = start == 0 || before.as_bytes().get(start - 1) == Some(&b'\n');
    let start = if start <= head_start && line_start {
        start
    } else {
        head_start
    };
    Window {
        prefix: before[start..].to_string(),
        suffix: suffix_of(after, suffix_budget, count),
    }
}

/// The suffix: the cursor line's tail, then whole lines downwards under `budget`.
fn suffix_of(after: &str, budget: usize, count: &dyn Fn(&str) -> usize) -> String {
    let tail_end = after.find('\n').map_or(after.len(), |i| i + 1);
    let mut end = tail_end;
    let mut tokens = count(&after[..tail_end]);
    while end < after.len() {
        let line_end = after[end..].find('\n').map_or(after.len(), |i| end + i + 1);
        let n = count(&after[end..line_end]);
        if tokens + n > budget {
            break;
        }
        tokens += n;
        end = line_end;
    }
    after[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count().max(usize::from(!s.is_empty()))
    }

    #[test]
    fn keeps_whole_lines_nearest_first() {
        let text = "a b\nc d\ne f\ng| h\ni j\nk l\n";
        let cursor = text.find('|').unwrap();
        let w = local_window(text, cursor, 3, 4, &words);
        assert_eq!(w.prefix, "e f\ng");
        assert_eq!(w.suffix, "| h\ni j\n");
    }

    #[test]
    fn whole_file_when_budget_allows() {
        let text = "fn main() {\n    let x = 1;\n}\n";
        let cursor = text.find("let").unwrap();
        let w = local_window(text, cursor, 1000, 1000, &words);
        assert_eq!(format!("{}{}", w.prefix, w.suffix), text);
    }

    #[test]
    fn cursor_line_kept_even_over_budget() {
        let text = "one two three four five|six seven eight";
        let cursor = text.find('|').unwrap();
        let w = local_window(text, cursor, 0, 0, &words);
        assert_eq!(w.prefix, "one two three four five");
        assert_eq!(w.suffix, "|six seven eight");
    }

    #[test]
    fn a_cut_prefix_starts_at_a_stable_line_while_typing() {
        let text: String = (0..200).map(|i| format!("line{i} x\n")).collect();
        let first_line = |cursor_line: usize, typed: &str| {
            let mut t = text.clone();
            let at = t.match_indices('\n').nth(cursor_line - 1).unwrap().0 + 1;
            t.insert_str(at, typed);
            let w = local_window(&t, at + typed.len(), 160, 10, &words);
            w.prefix.lines().next().unwrap().to_string()
        };
        // 160 "words" is 80 lines: the window would start 80 lines up, sliding with the cursor;
        // anchored, it stays put while typing within a line and across several lines.
        let a = first_line(150, "");
        assert_eq!(a, "line80 x"); // 80 lines up is line 70; the stride is 16
        assert_eq!(first_line(150, "let value = compute("), a);
        assert_eq!(first_line(160, ""), a);
        assert_ne!(first_line(190, ""), a);
    }

    #[test]
    fn a_window_kept_from_a_start_grows_downwards() {
        let text = "a\nb\nc d\ne| f\ng\n";
        let cursor = text.find('|').unwrap();
        let w = window_from(text, cursor, 2, 2, &words);
        assert_eq!(
            (w.prefix.as_str(), w.suffix.as_str()),
            ("b\nc d\ne", "| f\n")
        );
        // Not a line's start, or past the cursor's line: the cursor line's start.
        for start in [3, text.len()] {
            assert_eq!(window_from(text, cursor, start, 2, &words).prefix, "e");
        }
    }

    #[test]
    fn cursor_at_ends() {
        let w = local_window("abc\n", 0, 10, 10, &words);
        assert_eq!((w.prefix.as_str(), w.suffix.as_str()), ("", "abc\n"));
        let w = local_window("abc\n", 4, 10, 10, &words);
        assert_eq!((w.prefix.as_str(), w.suffix.as_str()), ("abc\n", ""));
    }
}
