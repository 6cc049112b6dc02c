//! Rules applied to raw model output before an editor sees it. Each rule is a plain function of
//! strings, tested with small golden cases.

/// What post-processing needs to know about the cursor's surroundings.
#[derive(Debug, Clone, Default)]
pub struct Surroundings<'a> {
    /// Text before the cursor on its line.
    pub line_prefix: &'a str,
    /// Text after the cursor on its line (without the line break).
    pub line_suffix: &'a str,
    pub single_line: bool,
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
    let mut text = raw.to_string();
    if s.single_line {
        text = first_line(&text);
    } else {
        text = limit_to_block(&text, s.line_prefix);
    }
    text = trim_line_ends(&text);
    text = drop_suffix_overlap(&text, s.line_suffix);
    if text.trim().is_empty() {
        return String::new();
    }
    text
}

/// Everything up to the end of the first line that has text (a leading line break is kept, so a
/// completion at the end of a line can start the next one).
pub fn first_line(text: &str) -> String {
    match nib_model::generate::end_of_first_line(text.as_bytes()) {
        Some(end) => text[..end].to_string(),
        None => text.to_string(),
    }
}

/// Cuts a multi-line completion where its block ends: at the first line indented less than the
/// block's first line (that line, usually a closing bracket, is already in the file or is not
/// part of this block).
pub fn limit_to_block(text: &str, line_prefix: &str) -> String {
    let indent = |l: &str| l.len() - l.trim_start_matches([' ', '\t']).len();
    let mut block_indent: Option<usize> = None;
    let mut end = text.len();
    let mut offset = 0;
    for (i, line) in text.split('\n').enumerate() {
        let here = offset;
        offset += line.len() + 1;
        if line.trim().is_empty() {
            continue;
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
            assert_eq!(limit_to_block(raw, prefix), *want, "{raw:?}");
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

    #[test]
    fn golden() {
        // (raw, line suffix, single line, expected)
        let cases: &[(&str, &str, bool, &str)] = &[
            ("foo(x)\nbar()", "", true, "foo(x)"),
            ("\n    foo(x)\n    bar()", "", true, "\n    foo(x)"),
            ("a, b)", ")", true, "a, b"),
            ("a, b);", ");", true, "a, b"),
            ("x + 1   ", "", true, "x + 1"),
            ("   \n  ", "", true, ""),
            ("line1  \nline2\n\n", "", false, "line1\nline2"),
            ("value", ")", true, "value"),
        ];
        for (raw, suffix, single, want) in cases {
            let s = Surroundings {
                line_prefix: "",
                line_suffix: suffix,
                single_line: *single,
            };
            assert_eq!(postprocess(raw, &s), *want, "raw {raw:?} suffix {suffix:?}");
        }
    }
}
