//! Repository-level Rust line completion, in the style of CrossCodeEval, built from real crates.
//!
//! The crates are a pinned list (`eval/repo-rust-crates.txt`) fetched by cargo into its registry.
//! A task is a line of a crate's `src/` that uses an identifier defined in another file of the
//! same crate (and not in its own file): the cursor stands before that identifier and the target
//! is the rest of the line. Filters: at least 10 lines before the line, 3 to 30 target tokens, no
//! two tasks with the same line text in a crate, no imports, attributes or comments. The same
//! tasks run under three conditions: no cross-file context, nib's context builder (exactly what
//! the server gives), and an oracle (the defining item itself). Scores: exact match, edit
//! similarity, identifier exact match and identifier F1.

use nib_indexer::Index;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One crate of the pinned list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrateSpec {
    pub name: String,
    pub version: String,
}

/// Reads `name version` lines (`#` starts a comment).
pub fn read_list(text: &str) -> anyhow::Result<Vec<CrateSpec>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(v), None) => out.push(CrateSpec {
                name: n.into(),
                version: v.into(),
            }),
            _ => anyhow::bail!("line {}: expected `name version`, got {line:?}", i + 1),
        }
    }
    Ok(out)
}

/// Fetches the crates with cargo (a manifest in `scratch` that depends on each, pinned) and
/// returns each crate's unpacked source directory in cargo's registry.
pub fn fetch(specs: &[CrateSpec], scratch: &Path) -> anyhow::Result<Vec<(CrateSpec, PathBuf)>> {
    std::fs::create_dir_all(scratch.join("src"))?;
    let mut manifest = String::from(
        "[package]\nname = \"nib-repo-rust-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[dependencies]\n",
    );
    for s in specs {
        manifest.push_str(&format!("{} = \"={}\"\n", s.name, s.version));
    }
    std::fs::write(scratch.join("Cargo.toml"), manifest)?;
    std::fs::write(scratch.join("src/lib.rs"), "")?;
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["fetch", "--quiet"])
        .current_dir(scratch)
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "cargo fetch of the repo-rust crates failed (crates.io is needed once):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".cargo")))
        .ok_or_else(|| anyhow::anyhow!("no CARGO_HOME and no home directory"))?;
    let registries: Vec<PathBuf> = std::fs::read_dir(home.join("registry/src"))?
        .flatten()
        .map(|e| e.path())
        .collect();
    let mut found = Vec::new();
    for s in specs {
        let dir = registries
            .iter()
            .map(|r| r.join(format!("{}-{}", s.name, s.version)))
            .find(|d| d.join("Cargo.toml").exists())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} {} is not in cargo's registry after fetch",
                    s.name,
                    s.version
                )
            })?;
        found.push((s.clone(), dir));
    }
    Ok(found)
}

/// A lexical token of one line of Rust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tok {
    pub start: usize,
    pub text: String,
    pub ident: bool,
}

/// Splits one line into tokens: identifiers, numbers, string and char literals (one token each),
/// lifetimes, and single punctuation characters; a `//` comment ends the line.
pub fn lex(line: &str) -> Vec<Tok> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            break;
        }
        let ident = c == b'_' || c.is_ascii_alphabetic() || c >= 0x80;
        if ident || c.is_ascii_digit() {
            while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric() || b[i] >= 0x80) {
                i += 1;
            }
            // A raw or byte string starts like an identifier.
            if i < b.len() && b[i] == b'"' && matches!(&line[start..i], "r" | "b" | "br") {
                i = skip_string(b, i);
            } else if i < b.len() && b[i] == b'#' && matches!(&line[start..i], "r" | "br") {
                while i < b.len() && b[i] != b'"' {
                    i += 1;
                }
                i = skip_string(b, i);
                while i < b.len() && b[i] == b'#' {
                    i += 1;
                }
            }
            let text = &line[start..i];
            out.push(Tok {
                start,
                text: text.to_string(),
                ident: ident && !text.contains('"') && !KEYWORDS.contains(&text),
            });
            continue;
        }
        if c == b'"' {
            i = skip_string(b, i);
        } else if c == b'\'' {
            // A char literal ('a', '\n') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
            } else {
                let ch_len = line[i + 1..].chars().next().map_or(0, char::len_utf8);
                if b.get(i + 1 + ch_len) == Some(&b'\'') {
                    i += 2 + ch_len;
                } else {
                    i += 1;
                    while i < b.len() && (b[i] == b'_' || b[i].is_ascii_alphanumeric()) {
                        i += 1;
                    }
                }
            }
        } else {
            i += line[i..].chars().next().map_or(1, char::len_utf8);
        }
        let end = i.min(b.len());
        out.push(Tok {
            start,
            text: line[start..end].to_string(),
            ident: false,
        });
        i = end;
    }
    out
}

fn skip_string(b: &[u8], mut i: usize) -> usize {
    i += 1; // the opening quote
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "type",
    "unsafe", "use", "where", "while", "Some", "None", "Ok", "Err",
];

/// One completion task.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Task {
    /// `crate-version/path:line:column` (1-based).
    pub id: String,
    pub krate: String,
    /// The file, relative to the crate's root.
    pub path: String,
    /// Byte offsets in the file: the cursor, and the end of its line.
    pub cursor: usize,
    pub line_end: usize,
    pub target: String,
    /// The identifier at the cursor, and where it is defined: (path, first line, last line).
    pub ident: String,
    pub definition: (String, u32, u32),
}

impl Task {
    /// The file as the model sees it: the rest of the cursor's line is gone.
    pub fn text(&self, file: &str) -> String {
        format!("{}{}", &file[..self.cursor], &file[self.line_end..])
    }
}

/// The items a use can refer to across files: top-level ones (methods and associated items are
/// left out: their names collide with everything).
const ITEM_KINDS: &[&str] = &[
    "function", "struct", "enum", "union", "type", "constant", "static", "trait", "macro",
];

/// Lines that are not code to complete: imports, module declarations, attributes, comments.
fn skipped_line(trimmed: &str) -> bool {
    let t = trimmed
        .strip_prefix("pub(crate) ")
        .or_else(|| trimmed.strip_prefix("pub "))
        .unwrap_or(trimmed);
    t.is_empty()
        || ["//", "/*", "*", "#", "use ", "mod ", "extern crate"]
            .iter()
            .any(|p| t.starts_with(p))
}

/// Every task of one crate: `files` are its `src/` files (relative path, text) and `index` their
/// index; at most `per_crate`, chosen by `seed` and returned in file order.
pub fn crate_tasks(
    krate: &str,
    files: &[(String, String)],
    index: &Index,
    per_crate: usize,
    seed: u64,
) -> Vec<Task> {
    let mut candidates = Vec::new();
    let mut seen_lines: HashSet<String> = HashSet::new();
    let mut def_cache: HashMap<String, Vec<(String, u32, u32)>> = HashMap::new();
    for (path, text) in files {
        let mut offset = 0;
        // Inside a `use` that spans lines: its continuation lines are imports too.
        let mut in_use = false;
        for (n, line) in text.split_inclusive('\n').enumerate() {
            let line_start = offset;
            offset += line.len();
            let body = line.trim_end_matches(['\n', '\r']);
            let trimmed = body.trim();
            let starts_use = skipped_line(trimmed) && trimmed.contains("use ");
            if in_use || starts_use {
                in_use = !trimmed.contains(';');
                continue;
            }
            if n < 10 || skipped_line(trimmed) {
                continue;
            }
            let toks = lex(body);
            for (k, tok) in toks.iter().enumerate() {
                if !tok.ident {
                    continue;
                }
                // A method call or field (`.name`) or a binding (`name: T`) is not a use of an
                // item: its name only looks like one.
                let after = &body[tok.start + tok.text.len()..];
                let before = body[..tok.start].trim_end();
                // Nor is a name being defined (`fn name`), a one-letter name (generic
                // parameters), or the tail of a path (`Type::name`, resolved through `Type`).
                let defining = [
                    "fn", "struct", "enum", "trait", "type", "const", "static", "mod", "let",
                    "union", "mut",
                ]
                .iter()
                .any(|k| {
                    before.ends_with(k)
                        && !before[..before.len() - k.len()]
                            .ends_with(|c: char| c == '_' || c.is_alphanumeric())
                });
                if before.ends_with('.')
                    || before.ends_with("::")
                    || defining
                    || tok.text.len() < 2
                    || (after.starts_with(':') && !after.starts_with("::"))
                {
                    continue;
                }
                let defs = def_cache.entry(tok.text.clone()).or_insert_with(|| {
                    index
                        .definitions(&tok.text)
                        .into_iter()
                        .filter(|d| {
                            d.parent.is_none() && ITEM_KINDS.contains(&d.symbol.kind.as_str())
                        })
                        .map(|d| (d.path.to_string(), d.symbol.start_line, d.symbol.end_line))
                        .collect()
                });
                let here = defs.iter().any(|(p, _, _)| p == path);
                let elsewhere = defs
                    .iter()
                    .find(|(p, _, _)| p != path && p.starts_with("src/"));
                let Some(def) = elsewhere else { continue };
                if here {
                    continue;
                }
                let target_toks = toks.len() - k;
                let target = body[tok.start..].trim_end().to_string();
                if (3..=30).contains(&target_toks) && seen_lines.insert(trimmed.to_string()) {
                    candidates.push(Task {
                        id: format!("{krate}/{path}:{}:{}", n + 1, tok.start + 1),
                        krate: krate.to_string(),
                        path: path.clone(),
                        cursor: line_start + tok.start,
                        line_end: line_start + body.len(),
                        target,
                        ident: tok.text.clone(),
                        definition: def.clone(),
                    });
                }
                // One task a line: the first identifier that qualifies decides.
                break;
            }
        }
    }
    let picked = crate::run::Selection {
        shard: None,
        seed: Some(seed),
        limit: Some(per_crate),
    }
    .apply((0..candidates.len()).collect());
    let mut picked: Vec<usize> = picked;
    picked.sort_unstable();
    picked.into_iter().map(|i| candidates[i].clone()).collect()
}

/// Whether the task's name already stands in its file before the cursor (in an import or an
/// earlier use): where it does, the model can take it from the prompt and cross-file context
/// has less to add.
pub fn name_seen_before(task: &Task, file: &str) -> bool {
    nib_indexer::symbols::words(&file[..task.cursor]).any(|w| w == task.ident)
}

/// Whether the rest of the task's line stands word for word in another of the crate's `files`
/// (path → text): the tasks that retrieving lines from other files could answer by copying.
pub fn target_elsewhere(task: &Task, files: &std::collections::HashMap<String, String>) -> bool {
    let target = task.target.trim();
    !target.is_empty()
        && files
            .iter()
            .any(|(path, text)| *path != task.path && text.contains(target))
}

/// The oracle's context: the defining item's lines, at most `budget` characters (cut at a line).
pub fn oracle_context(task: &Task, def_file: &str, budget: usize) -> Vec<(String, String)> {
    let (path, first, last) = &task.definition;
    let mut text = String::new();
    for line in def_file
        .split('\n')
        .skip(*first as usize)
        .take((*last - *first + 1) as usize)
    {
        if text.len() + line.len() + 1 > budget {
            break;
        }
        text.push_str(line);
        text.push('\n');
    }
    vec![(path.clone(), text)]
}

/// The scores of one prediction against its target.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    pub exact: bool,
    /// 1 − Levenshtein distance / the longer length, in characters.
    pub edit_similarity: f64,
    /// The identifiers, in order, are the target's.
    pub identifier_exact: bool,
    pub identifier_f1: f64,
}

/// Scores the first line of `prediction` against `target`, both trimmed.
pub fn score(prediction: &str, target: &str) -> Scores {
    let pred = prediction.split('\n').next().unwrap_or("").trim();
    let target = target.trim();
    let a: Vec<char> = pred.chars().collect();
    let b: Vec<char> = target.chars().collect();
    let longest = a.len().max(b.len());
    let edit_similarity = if longest == 0 {
        1.0
    } else {
        1.0 - levenshtein(&a, &b) as f64 / longest as f64
    };
    let ids = |s: &str| -> Vec<String> {
        lex(s)
            .into_iter()
            .filter(|t| {
                t.text.starts_with(|c: char| c == '_' || c.is_alphabetic())
                    && !t.text.contains(['"', '\''])
            })
            .map(|t| t.text)
            .collect()
    };
    let (pi, ti) = (ids(pred), ids(target));
    let identifier_f1 = {
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for t in &ti {
            *counts.entry(t).or_default() += 1;
        }
        let mut common = 0;
        for p in &pi {
            if let Some(c) = counts.get_mut(p.as_str()) {
                if *c > 0 {
                    *c -= 1;
                    common += 1;
                }
            }
        }
        if pi.is_empty() && ti.is_empty() {
            1.0
        } else if common == 0 {
            0.0
        } else {
            let p = common as f64 / pi.len() as f64;
            let r = common as f64 / ti.len() as f64;
            2.0 * p * r / (p + r)
        }
    };
    Scores {
        exact: pred == target,
        edit_similarity,
        identifier_exact: pi == ti,
        identifier_f1,
    }
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexing_a_line() {
        let toks: Vec<String> = lex(r#"let x = foo::bar("a \" b", 'c', '\n') + 1.5; // Tail"#)
            .into_iter()
            .map(|t| t.text)
            .collect();
        assert_eq!(
            toks,
            [
                "let",
                "x",
                "=",
                "foo",
                ":",
                ":",
                "bar",
                "(",
                "\"a \\\" b\"",
                ",",
                "'c'",
                ",",
                "'\\n'",
                ")",
                "+",
                "1",
                ".",
                "5",
                ";"
            ]
        );
        let t = lex("fn f<'a>(s: &'a str) -> r#\"raw\"#");
        assert!(t.iter().any(|t| t.text == "'a" && !t.ident));
        assert!(t.iter().any(|t| t.text == "r#\"raw\"#" && !t.ident));
        assert!(!lex("self.len()")
            .iter()
            .any(|t| t.text == "self" && t.ident));
    }

    #[test]
    fn scores_are_the_usual_ones() {
        // (prediction, target, exact, edit similarity, identifier exact, identifier F1)
        let cases = [
            ("parse(input)?;", "parse(input)?;", true, 1.0, true, 1.0),
            (
                "parse(input)?;\nmore",
                "parse(input)?;",
                true,
                1.0,
                true,
                1.0,
            ),
            (
                "parse(inp)?;",
                "parse(input)?;",
                false,
                12.0 / 14.0,
                false,
                0.5,
            ),
            ("", "parse(x)", false, 0.0, false, 0.0),
            (
                "render(x, y)",
                "parse(x)",
                false,
                1.0 - 8.0 / 12.0,
                false,
                0.4,
            ),
        ];
        for (p, t, exact, es, ie, f1) in cases {
            let s = score(p, t);
            assert_eq!(s.exact, exact, "{p:?}");
            assert!(
                (s.edit_similarity - es).abs() < 1e-9,
                "{p:?}: {}",
                s.edit_similarity
            );
            assert_eq!(s.identifier_exact, ie, "{p:?}");
            assert!(
                (s.identifier_f1 - f1).abs() < 1e-9,
                "{p:?}: {}",
                s.identifier_f1
            );
        }
    }

    #[test]
    fn tasks_use_names_from_other_files() {
        let files = vec![
            (
                "src/lib.rs".to_string(),
                "pub mod shapes;\nuse crate::shapes::{\n    Shape,\n    shape_area,\n};\n".to_string() + &"// filler\n".repeat(12)
                    + "pub fn area_of_all(v: &[Shape]) -> f64 {\n    v.iter().map(|s| shape_area(s)).sum()\n}\npub fn local() {}\nfn g() { local(); }\n",
            ),
            (
                "src/shapes.rs".to_string(),
                "pub struct Shape { pub w: f64 }\npub fn shape_area(s: &Shape) -> f64 { s.w * s.w }\n".to_string(),
            ),
        ];
        let mut index = Index::new();
        let mut parser = nib_indexer::symbols::SymbolParser::new();
        for (p, t) in &files {
            index.update(&mut parser, p, nib_indexer::lang::Lang::Rust, t);
        }
        let tasks = crate_tasks("demo-0.1.0", &files, &index, 10, 0);
        let got: Vec<(&str, &str, &str)> = tasks
            .iter()
            .map(|t| (t.path.as_str(), t.ident.as_str(), t.target.as_str()))
            .collect();
        // `Shape` in the signature, `shape_area` in the body; `local` is defined in its own file.
        assert_eq!(
            got,
            vec![
                ("src/lib.rs", "Shape", "Shape]) -> f64 {"),
                ("src/lib.rs", "shape_area", "shape_area(s)).sum()"),
            ]
        );
        let t = &tasks[1];
        let text = t.text(&files[0].1);
        assert!(text.contains("|s| \n}"), "{text}");
        assert_eq!(t.definition, ("src/shapes.rs".to_string(), 1, 1));
        // Both names are imported above their lines; without the import, `Shape` is unseen.
        assert!(tasks.iter().all(|t| name_seen_before(t, &files[0].1)));
        let unimported = files[0].1.replacen("    Shape,\n", "", 1);
        let mut t0 = tasks[0].clone();
        t0.cursor -= files[0].1.len() - unimported.len();
        assert!(!name_seen_before(&t0, &unimported));
        // `Shape]) -> f64 {` stands only in its own file; `shape_area(s)).sum()` nowhere else
        // until another file copies it.
        let mut by_path: std::collections::HashMap<String, String> =
            files.iter().cloned().collect();
        assert!(!tasks.iter().any(|t| target_elsewhere(t, &by_path)));
        by_path.insert(
            "src/more.rs".into(),
            "fn h() { shape_area(s)).sum() }".into(),
        );
        assert!(!target_elsewhere(&tasks[0], &by_path));
        assert!(target_elsewhere(&tasks[1], &by_path));
        let oracle = oracle_context(t, &files[1].1, 1000);
        assert_eq!(
            oracle[0].1,
            "pub fn shape_area(s: &Shape) -> f64 { s.w * s.w }\n"
        );
    }
}
