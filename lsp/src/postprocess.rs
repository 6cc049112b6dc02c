//! Rules applied to raw model output before an editor sees it. Each rule is a plain function of
//! strings, tested with small golden cases.

/// What post-processing needs to know about the cursor's surroundings.
#[derive(Debug, Clone, Default)]
pub struct Surroundings<'a> {
    /// Text before the cursor on its line.
    pub line_prefix: &'a str,
    /// Text after the cursor on its line (without the line break).
    pub line_suffix: &'a str,
    /// A few lines after the cursor's line.
    pub next_lines: &'a str,
    /// The nearest non-blank line above the cursor's line.
    pub previous_line: &'a str,
    /// Whether the file indents with tabs (`Some(true)`), spaces (`Some(false)`), or cannot tell.
    pub indent_tabs: Option<bool>,
    pub single_line: bool,
    /// Brackets opened before the cursor's line that nothing after the cursor closes: closers
    /// the file lacks. Counted only where a line may go in above the cursor's (one line, the
    /// cursor at the start of a line of code); 0 elsewhere.
    pub unclosed: usize,
}

impl<'a> Surroundings<'a> {
    /// The line of code that will follow a block inserted here: the cursor's own line where only
    /// indentation precedes the cursor and code follows it (the block goes in before that code),
    /// else the first non-blank line after the cursor's line.
    pub fn next_code_line(&self) -> String {
        if self.line_prefix.trim().is_empty() && !self.line_suffix.trim().is_empty() {
            format!("{}{}", self.line_prefix, self.line_suffix.trim_end())
        } else {
            first_code_line(self.next_lines).to_string()
        }
    }

    /// The first character after the cursor, past whitespace and line breaks, when it is a
    /// closing bracket: the file closes that bracket already.
    pub fn closer_after(&self) -> Option<char> {
        let c = self
            .line_suffix
            .chars()
            .chain(self.next_lines.chars())
            .find(|c| !c.is_whitespace())?;
        ")]}".contains(c).then_some(c)
    }

    /// Reads the surroundings of byte offset `cursor` in `text`.
    pub fn of(text: &'a str, cursor: usize, single_line: bool) -> Self {
        let line_start = text[..cursor].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[cursor..].find('\n').map_or(text.len(), |i| cursor + i);
        let after = &text[(line_end + 1).min(text.len())..];
        let next_end = after
            .match_indices('\n')
            .nth(9)
            .map_or(after.len(), |(i, _)| i + 1);
        let line_suffix = text[cursor..line_end].trim_end_matches('\r');
        let previous_line = text[..line_start]
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Surroundings {
            line_prefix: &text[line_start..cursor],
            line_suffix,
            next_lines: &after[..next_end],
            previous_line,
            indent_tabs: indent_style(&text[..line_start]),
            single_line,
            // A pass over the whole document, made only where `line_above` reads it.
            unclosed: if single_line && line_start == cursor && !line_suffix.trim().is_empty() {
                unclosed(&text[..line_start], &text[line_start..])
            } else {
                0
            },
        }
    }
}

/// Tabs or spaces, by the majority of the indented lines in `text` (its last 200 lines).
pub fn indent_style(text: &str) -> Option<bool> {
    let (mut tabs, mut spaces) = (0, 0);
    for l in text.lines().rev().take(200) {
        match l.as_bytes().first() {
            Some(b'\t') => tabs += 1,
            Some(b' ') if l.starts_with("  ") => spaces += 1,
            _ => {}
        }
    }
    match (tabs, spaces) {
        (0, 0) => None,
        (t, s) => Some(t > s),
    }
}

/// Whether to suggest at all at this cursor: not in the middle of a line whose rest holds more
/// than closing characters and punctuation (the model would have to guess how to join two
/// pieces of code the user already wrote), and not inside a word.
pub fn wants_suggestion(line_prefix: &str, line_suffix: &str) -> bool {
    let rest = line_suffix.trim_end_matches(['\r', '\n']);
    let word = |c: char| c.is_alphanumeric() || c == '_';
    if line_prefix.chars().last().is_some_and(word) && rest.chars().next().is_some_and(word) {
        return false;
    }
    rest.chars()
        .all(|c| c.is_whitespace() || ")]}>\"'`;,.".contains(c))
}

/// Applies every rule in order.
pub fn postprocess(raw: &str, s: &Surroundings) -> String {
    if let Some(line) = s.single_line.then(|| line_above(raw, s)).flatten() {
        let mut text = line;
        if let Some(tabs) = s.indent_tabs {
            text = match_indentation(&text, tabs, true);
        }
        return if is_repetitive(&text, s.previous_line) {
            String::new()
        } else {
            text + "\n"
        };
    }
    let mut text = drop_repeated_indentation(raw, s.line_prefix);
    if s.single_line {
        text = first_line(&text);
    } else {
        text = limit_to_block(&text, s.line_prefix, &s.next_code_line());
        text = cut_at_outer_closer(&text, s.closer_after());
    }
    text = trim_line_ends(&text);
    text = drop_suffix_overlap(&text, s.line_suffix);
    text = cut_at_closer_the_suffix_has(&text, s.line_prefix, s.line_suffix);
    text = drop_following_overlap(&text, s.next_lines);
    if let Some(tabs) = s.indent_tabs {
        text = match_indentation(&text, tabs, s.line_prefix.is_empty());
    }
    if text.trim().is_empty() || is_repetitive(&text, s.previous_line) {
        return String::new();
    }
    text
}

/// A one-line completion that is a line of its own, to go in above the cursor's line (returned
/// without its line break), or `None` where the completion joins the cursor's line and the other
/// rules apply. The cursor stands at the start of a line that holds code, and the model wrote a
/// whole line and ended it (`raw` keeps that line break). Before a line `    }`, a model's
/// `        }` closes an inner block; cut as a doubled closer, it was nothing. But a line that
/// ends with the cursor's line is the model writing that line again or running into it:
/// - with code (`let x = f();` before `x = f();`, `.chars()` before `.chars()`): the old rules
///   (the overlap is cut and the rest joins the line);
/// - with closers only (`}` before `}`): a line above only where the brackets say a block is
///   left to close: the file lacks a closer ([`Surroundings::unclosed`]), or the model's line
///   closes only what it opened itself (`None => {}`); `}};` before `};` is the line `}`.
///   Brackets, not indentation: HumanEval-X's Rust is often indented wrong.
fn line_above(raw: &str, s: &Surroundings) -> Option<String> {
    if !s.line_prefix.is_empty() || s.line_suffix.trim().is_empty() {
        return None;
    }
    let first = first_line(raw);
    if first.starts_with(['\n', '\r'])
        || first.trim().is_empty()
        || !raw[first.len()..].starts_with(['\n', '\r'])
    {
        return None;
    }
    let line = first.trim_end();
    let code = s.line_suffix.trim();
    let closers_only = |t: &str| t.chars().all(|c| ")]};,".contains(c));
    let self_closed = || unpaired(line).0 == 0;
    let Some(rest) = line.strip_suffix(code) else {
        let overlaps = drop_suffix_overlap(line, s.line_suffix) != line;
        return (!overlaps || self_closed()).then(|| line.to_string());
    };
    if !closers_only(code) {
        return None;
    }
    if rest.trim().is_empty() {
        return (s.unclosed > 0).then(|| line.to_string());
    }
    if self_closed() {
        return Some(line.to_string());
    }
    closers_only(rest.trim()).then(|| rest.trim_end().to_string())
}

/// The brackets of `text` outside string and character literals and `//` comments, with their
/// byte offsets. A literal ends at its line's end at the latest, and a Rust lifetime or label
/// (`'a`, `'outer:`) is not a quote. Lazy: a whole document is scanned without a copy.
fn brackets(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let (mut quote, mut escaped, mut comment) = (None::<char>, false, false);
    text.char_indices().filter(move |&(at, c)| {
        if c == '\n' {
            (quote, escaped, comment) = (None, false, false);
            return false;
        }
        if comment {
            return false;
        }
        let mut ahead = text[at + c.len_utf8()..].chars();
        match quote {
            Some(_) if escaped => escaped = false,
            Some(q) => {
                if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '`' => quote = Some(c),
                '\'' => {
                    let (next1, next2) = (ahead.next(), ahead.next());
                    if !(next1.is_some_and(is_word) && next2 != Some('\'')) {
                        quote = Some(c);
                    }
                }
                '/' if ahead.next() == Some('/') => comment = true,
                '(' | '[' | '{' | ')' | ']' | '}' => return true,
                _ => {}
            },
        }
        false
    })
}

/// The brackets of `text` that pair with nothing in it: (closers of brackets opened before it,
/// openers it leaves open).
fn unpaired(text: &str) -> (usize, usize) {
    let (mut closers, mut open) = (0usize, 0usize);
    for (_, c) in brackets(text) {
        if closer_of(c).is_some() {
            open += 1;
        } else if open > 0 {
            open -= 1;
        } else {
            closers += 1;
        }
    }
    (closers, open)
}

/// How many brackets `before` opens that `after` does not close (`after`'s own pairs aside).
fn unclosed(before: &str, after: &str) -> usize {
    unpaired(before).1.saturating_sub(unpaired(after).0)
}

fn closer_of(open: char) -> Option<char> {
    match open {
        '(' => Some(')'),
        '[' => Some(']'),
        '{' => Some('}'),
        _ => None,
    }
}

/// On one line: when the completion closes a bracket opened before the cursor and the text after
/// the cursor closes it already, the completion stops before its own closer (which would double
/// it): `foo(|)` + `a, b);` → `a, b`.
pub fn cut_at_closer_the_suffix_has(text: &str, line_prefix: &str, line_suffix: &str) -> String {
    if text.contains('\n') {
        return text.to_string();
    }
    let Some(first) = line_suffix.trim_start().chars().next() else {
        return text.to_string();
    };
    // Brackets still open on the cursor's line before the cursor.
    let mut open: Vec<char> = Vec::new();
    for c in line_prefix.chars() {
        if closer_of(c).is_some() {
            open.push(c);
        } else if ")]}".contains(c) {
            open.pop();
        }
    }
    let mut inner: Vec<char> = Vec::new();
    for (i, c) in text.char_indices() {
        if closer_of(c).is_some() {
            inner.push(c);
        } else if ")]}".contains(c) {
            if inner.pop().is_some() {
                continue;
            }
            // This closes a bracket from before the cursor.
            let closes = open.pop().and_then(closer_of);
            if closes == Some(c) && first == c {
                return text[..i].trim_end().to_string();
            }
        }
    }
    text.to_string()
}

/// In a block: where the completion closes a bracket it did not open (one opened before the
/// cursor) with the very closer the file has right after the cursor (`closer_after`), the block
/// ends before it, since the file closes that bracket already: `f(` + `\n    a,\n    b)` before
/// a line `)` gives `\n    a,\n    b`. Brackets in literals and comments do not count
/// ([`brackets`]).
pub fn cut_at_outer_closer(text: &str, closer_after: Option<char>) -> String {
    let Some(closer) = closer_after else {
        return text.to_string();
    };
    if !text.contains('\n') {
        return text.to_string();
    }
    let mut depth = 0usize;
    for (at, c) in brackets(text) {
        if closer_of(c).is_some() {
            depth += 1;
        } else if depth > 0 {
            depth -= 1;
        } else if c == closer {
            return text[..at].trim_end().to_string();
        } else {
            break;
        }
    }
    text.to_string()
}

/// A multi-line completion that ends with the lines already after the cursor loses them:
/// the model rewrote what follows instead of stopping. Lines are compared without their
/// indentation, except lines of closing brackets alone: there the indentation says which block
/// they close (a `}` at 8 spaces before the file's `}` at 4 is the inner block's end, not a
/// rewrite of the outer one).
pub fn drop_following_overlap(text: &str, next_lines: &str) -> String {
    let same = |a: &str, b: &str| {
        let closers = a.trim().chars().all(|c| ")]};,".contains(c));
        a.trim() == b.trim() && (!closers || a.trim_end() == b.trim_end())
    };
    if !text.contains('\n') {
        return text.to_string();
    }
    let ours: Vec<&str> = text.split('\n').collect();
    let theirs: Vec<&str> = next_lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    // The longest run of completion lines, from some line to the end, that the file's next
    // lines start with (whitespace aside).
    for start in 1..ours.len() {
        let tail: Vec<&str> = ours[start..]
            .iter()
            .copied()
            .filter(|l| !l.trim().is_empty())
            .collect();
        if !tail.is_empty()
            && tail.len() <= theirs.len()
            && tail.iter().zip(&theirs).all(|(a, b)| same(a, b))
        {
            return ours[..start].join("\n").trim_end().to_string();
        }
    }
    text.to_string()
}

/// On a line that holds only indentation, a completion whose first line starts with that same
/// indentation repeats it (accepting it would indent twice): the repetition is dropped, any
/// indentation beyond it stays. Later lines are the model's own, from the line's start.
pub fn drop_repeated_indentation(text: &str, line_prefix: &str) -> String {
    let indent_only = !line_prefix.is_empty() && line_prefix.chars().all(|c| c == ' ' || c == '\t');
    match text.strip_prefix(line_prefix) {
        Some(rest) if indent_only => rest.to_string(),
        _ => text.to_string(),
    }
}

/// Re-indents the completion's own lines with the file's indentation style: four spaces per
/// tab, or a tab per four spaces. The first line too where it starts a line (`at_line_start`,
/// the cursor at column 0); elsewhere its leading whitespace follows the cursor's, not the
/// line's start.
pub fn match_indentation(text: &str, tabs: bool, at_line_start: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if i == 0 && !at_line_start {
            out.push_str(line);
            continue;
        }
        let body = line.trim_start_matches([' ', '\t']);
        let lead = &line[..line.len() - body.len()];
        let width: usize = lead.chars().map(|c| if c == '\t' { 4 } else { 1 }).sum();
        if tabs {
            out.push_str(&"\t".repeat(width / 4));
            out.push_str(&" ".repeat(width % 4));
        } else {
            out.push_str(&" ".repeat(width));
        }
        out.push_str(body);
    }
    out
}

/// A suggestion not worth showing: the line above again, or a short piece repeated over and over.
pub fn is_repetitive(text: &str, previous_line: &str) -> bool {
    let t = text.trim();
    if !previous_line.trim().is_empty()
        && t == previous_line.trim()
        && !t.contains('\n')
        && t.len() > 3
    {
        return true;
    }
    let chars: Vec<char> = t.chars().collect();
    let n = chars.len();
    // Periodic text: a unit of 2 to 40 characters repeated at least 4 times and nothing else, or
    // one character 32 times (`0xFFFFFFFF` and `=====` rulers are real code).
    let periodic = |p: usize| (p..n).all(|i| chars[i] == chars[i - p]);
    (n >= 32 && periodic(1)) || (n >= 12 && (2..=40.min(n / 4)).any(periodic))
}

/// Everything up to the end of the first line that has text (a leading line break is kept, so a
/// completion at the end of a line can start the next one).
pub fn first_line(text: &str) -> String {
    match nib_model::generate::end_of_first_line(text.as_bytes()) {
        Some(end) => text[..end].to_string(),
        None => text.to_string(),
    }
}

/// The first line of `lines` that holds more than whitespace (its trailing whitespace dropped),
/// or "".
fn first_code_line(lines: &str) -> &str {
    lines
        .lines()
        .find(|l| !l.trim().is_empty())
        .map_or("", |l| l.trim_end())
}

/// Cuts a multi-line completion where its block ends: at the first line indented less than the
/// block's first line (that line, usually a closing bracket, is already in the file or is not
/// part of this block), or at the first line that is the file's next line of code, `next`
/// (the same text at the same indentation: the model has written its part and goes on with
/// what the file already has).
pub fn limit_to_block(text: &str, line_prefix: &str, next: &str) -> String {
    let indent = |l: &str| l.len() - l.trim_start_matches([' ', '\t']).len();
    let mut block_indent: Option<usize> = None;
    let mut end = text.len();
    let mut offset = 0;
    let blank_prefix = line_prefix.trim().is_empty();
    for (i, line) in text.split('\n').enumerate() {
        let here = offset;
        offset += line.len() + 1;
        if line.trim().is_empty() {
            continue;
        }
        // The line as it would stand in the file (the first continues the cursor's), compared
        // once it is complete (this runs after every token: nothing is allocated).
        let complete = offset <= text.len();
        let is_next = match i {
            0 => blank_prefix && next.strip_prefix(line_prefix) == Some(line.trim_end()),
            _ => line.trim_end() == next,
        };
        if complete && !next.is_empty() && is_next {
            end = here;
            break;
        }
        let width = if i == 0 {
            if !line_prefix.trim().is_empty() {
                continue; // The first line continues code already on the cursor's line.
            }
            line_prefix.len() + indent(line)
        } else {
            indent(line)
        };
        match block_indent {
            None => block_indent = Some(width),
            Some(b) if width < b => {
                end = here;
                break;
            }
            Some(_) => {}
        }
    }
    text[..end].to_string()
}

/// Removes trailing spaces and tabs at the end of each line and of the text.
pub fn trim_line_ends(text: &str) -> String {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.trim_end_matches([' ', '\t']))
        .collect();
    let joined = lines.join("\n");
    joined.trim_end_matches([' ', '\t', '\n', '\r']).to_string()
}

/// When the completion ends with the text that already follows the cursor on its line (closing
/// brackets, a semicolon), that text is dropped from the completion instead of doubled.
pub fn drop_suffix_overlap(text: &str, line_suffix: &str) -> String {
    let rest = line_suffix.trim_end();
    if rest.is_empty() || text.contains('\n') {
        return text.to_string();
    }
    let mut t = text.trim_end();
    let mut r = rest;
    // Match from the end, ignoring whitespace differences at the seam.
    if let Some(stripped) = t.strip_suffix(r.trim_start()) {
        return stripped.to_string();
    }
    // Partial overlap: the completion ends with a head of the suffix's closing characters.
    while let (Some(tc), Some(rc)) = (t.chars().last(), r.chars().next()) {
        if tc == rc && ")]};,".contains(tc) && t.len() > 1 {
            t = &t[..t.len() - tc.len_utf8()];
            r = &r[rc.len_utf8()..];
        } else {
            break;
        }
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_limits() {
        // (raw, line prefix, expected)
        let cases: &[(&str, &str, &str)] = &[
            (
                "let x = 1;\n    x + 1\n}\n\nfn g() {}",
                "    ",
                "let x = 1;\n    x + 1\n",
            ),
            (
                "\n    body();\n}\nfn next() {",
                "fn f() {",
                "\n    body();\n",
            ),
            (
                "\n    if a {\n        b();\n    }\n}",
                "fn f() {",
                "\n    if a {\n        b();\n    }\n",
            ),
            ("one()\ntwo()", "", "one()\ntwo()"),
        ];
        for (raw, prefix, want) in cases {
            assert_eq!(limit_to_block(raw, prefix, ""), *want, "{raw:?}");
        }
    }

    #[test]
    fn a_block_stops_at_the_files_next_line() {
        // (raw, line prefix, the file's next line of code, expected)
        let cases: &[(&str, &str, &str, &str)] = &[
            // The model wrote its lines, then the ones the file already has.
            (
                "total += x\n    return total\n\ndef g():",
                "    ",
                "    return total",
                "total += x\n",
            ),
            // The same text deeper in the block is the model's own.
            (
                "if a:\n        return total\n    b()",
                "    ",
                "    return total",
                "if a:\n        return total\n    b()",
            ),
            // At once on the cursor's (blank) line: nothing of its own to add.
            ("return total\n", "    ", "    return total", ""),
            // After code on the cursor's line the first line is never the next one.
            ("x)\n    y()", "    f(", "    f(x)", "x)\n    y()"),
            // A line still being written is left alone until it is complete.
            (
                "a()\n    return to",
                "    ",
                "    return total",
                "a()\n    return to",
            ),
            // A closer the file has at the same indentation.
            ("a();\n    }\n    else {", "        ", "    }", "a();\n"),
        ];
        for (raw, prefix, next, want) in cases {
            assert_eq!(limit_to_block(raw, prefix, next), *want, "{raw:?}");
        }
    }

    #[test]
    fn when_to_suggest() {
        // (line with the cursor as '|', suggest?)
        let cases = [
            ("let x = |", true),
            ("foo(|)", true),
            ("foo(|);", true),
            ("vec![|]", true),
            ("let s = \"|\";", true),
            ("    |", true),
            ("|", true),
            ("foo(|bar)", false),
            ("let x|y = 1;", false),
            ("let |x = 1;", false),
            ("ab|c", false),
        ];
        for (line, want) in cases {
            let (a, b) = line.split_once('|').unwrap();
            assert_eq!(wants_suggestion(a, b), want, "{line:?}");
        }
    }

    /// The golden cases in `tests/fixtures/postprocess.txt`: each block names a case, gives the
    /// raw model text and the cursor's surroundings, and the text the editor must get.
    #[test]
    fn unclosed_brackets() {
        // (text before the cursor's line, text after the cursor, closers the file lacks)
        let cases: &[(&str, &str, usize)] = &[
            (
                "fn f() {\n    for x in y {\n        if g(x) {\n            h();\n",
                "    }\n}\n",
                1,
            ),
            ("fn f() {\n    for x in y {\n", "    }\n}\n", 0),
            // The text after the cursor closes its own pairs first.
            ("fn f() {\n    if x {\n", "        y(a, [b]);\n    }\n", 1),
            // Brackets in literals and comments do not count; lifetimes are not quotes.
            (
                "fn f<'a>(s: &'a str) {\n    let c = '{';\n    // {\n",
                "    g(\"{\");\n}\n",
                0,
            ),
            ("def f(\n    a,\n", "):\n", 0),
        ];
        for (before, after, want) in cases {
            assert_eq!(unclosed(before, after), *want, "{before:?} {after:?}");
        }
        let text = "fn f() {\n    if x {\n        y();\n}\n";
        let at = text.find("}").unwrap();
        assert_eq!(Surroundings::of(text, at, true).unclosed, 1);
        let text = "fn f() {\n    if x {\n        y();\n    }\n}\n";
        let at = text.find("    }").unwrap();
        assert_eq!(Surroundings::of(text, at, true).unclosed, 0);
    }

    #[test]
    fn golden() {
        let data = include_str!("../tests/fixtures/postprocess.txt");
        let mut n = 0;
        for block in data.split("\n## ").skip(1) {
            let (name, body) = block.split_once('\n').unwrap();
            let field = |k: &str| -> Option<String> {
                body.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}:")))
                    .map(|v| {
                        v.strip_prefix(' ')
                            .unwrap_or(v)
                            .replace("\\n", "\n")
                            .replace("\\t", "\t")
                    })
            };
            let raw = field("raw").unwrap_or_else(|| panic!("{name}: no raw"));
            let want = field("want").unwrap_or_else(|| panic!("{name}: no want"));
            let prefix = field("prefix").unwrap_or_default();
            let suffix = field("suffix").unwrap_or_default();
            let next = field("next").unwrap_or_default();
            let previous = field("previous").unwrap_or_default();
            let s = Surroundings {
                line_prefix: &prefix,
                line_suffix: &suffix,
                next_lines: &next,
                previous_line: &previous,
                indent_tabs: field("tabs").map(|v| v == "true"),
                single_line: field("single").is_none_or(|v| v == "true"),
                unclosed: field("unclosed").map_or(0, |v| v.parse().expect("unclosed: a count")),
            };
            assert_eq!(postprocess(&raw, &s), want, "case {name:?}");
            n += 1;
        }
        assert!(n >= 20, "only {n} cases read");
    }
}
