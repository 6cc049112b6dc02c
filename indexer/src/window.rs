//! The local context window: the text right before and after the cursor, under a token budget.
//!
//! The prefix is taken nearest line first, the suffix likewise, and both are cut at line
//! boundaries, so a prompt never starts or ends in the middle of a line except at the cursor.

/// The text around the cursor that goes into a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Window {
    pub prefix: String,
    pub suffix: String,
    pub prefix_tokens: usize,
    pub suffix_tokens: usize,
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

    // Suffix: the cursor line's tail, then whole lines downwards.
    let tail_end = after.find('\n').map_or(after.len(), |i| i + 1);
    let mut end = tail_end;
    let mut suffix_tokens = count(&after[..tail_end]);
    while end < after.len() {
        let line_end = after[end..].find('\n').map_or(after.len(), |i| end + i + 1);
        let n = count(&after[end..line_end]);
        if suffix_tokens + n > suffix_budget {
            break;
        }
        suffix_tokens += n;
        end = line_end;
    }

    Window {
        prefix: before[start..].to_string(),
        suffix: after[..end].to_string(),
        prefix_tokens,
        suffix_tokens,
    }
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
    fn cursor_at_ends() {
        let w = local_window("abc\n", 0, 10, 10, &words);
        assert_eq!((w.prefix.as_str(), w.suffix.as_str()), ("", "abc\n"));
        let w = local_window("abc\n", 4, 10, 10, &words);
        assert_eq!((w.prefix.as_str(), w.suffix.as_str()), ("abc\n", ""));
    }
}
