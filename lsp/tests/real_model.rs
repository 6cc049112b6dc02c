//! The completion pipeline with the real default model, greedy and deterministic.

mod common;

use nib_lsp::{Completer, CompleterConfig, CompletionRequest, Multiline};
use nib_model::{load_backend, BackendKind, CancelToken};
use std::sync::{Mutex, OnceLock};

/// One model for the whole test binary; tests take turns.
fn completer() -> std::sync::MutexGuard<'static, Completer> {
    static C: OnceLock<Mutex<Completer>> = OnceLock::new();
    C.get_or_init(|| {
        let backend = load_backend(BackendKind::Cpu, &common::real_model()).expect("load model");
        Mutex::new(Completer::new(backend, CompleterConfig::default()).expect("completer"))
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

/// A request in a repository named `demo`, with no other files.
fn request<'a>(
    path: &'a str,
    text: &'a str,
    cursor: usize,
    multiline: Multiline,
) -> CompletionRequest<'a> {
    CompletionRequest {
        repo_name: "demo",
        path,
        text,
        cursor,
        multiline,
        max_tokens: None,
        files: &[],
        own_chars: 0,
    }
}

/// Completes at the `|` marker of `src`.
fn complete_at(path: &str, src: &str, multiline: Multiline) -> nib_lsp::Completion {
    complete_with(&mut completer(), path, src, multiline)
}

fn complete_with(
    c: &mut Completer,
    path: &str,
    src: &str,
    multiline: Multiline,
) -> nib_lsp::Completion {
    let cursor = src.find('|').expect("cursor marker");
    let text = src.replacen('|', "", 1);
    let req = request(path, &text, cursor, multiline);
    c.complete(&req, &CancelToken::new()).expect("completion")
}

#[test]
fn rust_word_count_uses_the_entry_api() {
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/wordcount.rs")).unwrap();
    // Cursor at the end of the blank line inside the loop.
    let at = src.find("{\n        \n").unwrap() + "{\n        ".len();
    let marked = format!("{}|{}", &src[..at], &src[at..]);
    let c = complete_at("src/main.rs", &marked, Multiline::Auto);
    assert!(c.text.contains("counts.entry("), "{:?}", c.text);
    assert!(c.generated_tokens > 0 && c.prompt_tokens > 50);
}

#[test]
fn python_block_fills_the_loop_body() {
    let src = std::fs::read_to_string(common::fixture("walk.py")).unwrap();
    let at = src.find("filenames in os.walk(root):\n        ").unwrap()
        + "filenames in os.walk(root):\n        ".len();
    let marked = format!("{}|{}", &src[..at], &src[at..]);
    let c = complete_at("tools/walk.py", &marked, Multiline::Always);
    assert!(c.text.contains("filenames"), "{:?}", c.text);
    assert!(c.text.contains("result.append("), "{:?}", c.text);
    // Limited to the loop's block: nothing at the function's own indentation or less.
    assert!(!c.text.contains("\n    return"), "{:?}", c.text);
}

#[test]
fn single_line_mode_stops_at_the_end_of_the_line() {
    let src = std::fs::read_to_string(common::fixture("walk.py")).unwrap();
    let at = src.find("filenames in os.walk(root):\n        ").unwrap()
        + "filenames in os.walk(root):\n        ".len();
    let marked = format!("{}|{}", &src[..at], &src[at..]);
    let c = complete_at("tools/walk.py", &marked, Multiline::Never);
    assert!(!c.text.trim().is_empty());
    assert!(!c.text.trim_start().contains('\n'), "{:?}", c.text);
    assert_eq!(c.stop, nib_model::StopReason::EndOfLine);
}

#[test]
fn completing_twice_reuses_the_cache_and_gives_the_same_text() {
    let src = "fn add(a: i32, b: i32) -> i32 {\n    |\n}\n";
    let mut c = completer();
    let first = complete_with(&mut c, "src/lib.rs", src, Multiline::Never);
    let second = complete_with(&mut c, "src/lib.rs", src, Multiline::Never);
    assert_eq!(first.text, second.text);
    assert!(
        second.reused_tokens + 1 >= second.prompt_tokens,
        "{second:?}"
    );
}

/// A block's first line is told as soon as it is written, once, before the block ends; it is
/// the start of the whole block, which is the same as without the hook.
#[test]
fn a_blocks_first_line_comes_early() {
    let src = std::fs::read_to_string(common::fixture("walk.py")).unwrap();
    let at = src.find("filenames in os.walk(root):\n        ").unwrap()
        + "filenames in os.walk(root):\n        ".len();
    let text = format!("{}{}", &src[..at], &src[at..]);
    let req = request("tools/walk.py", &text, at, Multiline::Always);
    let mut c = completer();
    let plain = c.complete(&req, &CancelToken::new()).unwrap();
    let told = std::sync::Arc::new(Mutex::new(Vec::new()));
    let hook = {
        let told = told.clone();
        std::sync::Arc::new(move |line: String| told.lock().unwrap().push(line))
    };
    let block = c
        .complete_early(
            &req,
            &CancelToken::new(),
            nib_lsp::completer::Hooks {
                first_line: Some(hook),
                keep_going: None,
            },
        )
        .unwrap();
    assert_eq!(block.text, plain.text);
    let told = told.lock().unwrap().clone();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(block.text.contains('\n'), "{:?}", block.text);
    assert!(
        !told[0].trim().is_empty() && !told[0].contains('\n'),
        "{told:?}"
    );
    assert!(
        block.text.starts_with(&told[0]),
        "{told:?} vs {:?}",
        block.text
    );
}

/// A generation whose text is no longer wanted stops as cancelled at the next token, and the
/// session stays usable: the next completion is the same as a fresh one.
#[test]
fn a_generation_stops_when_its_text_is_no_longer_wanted() {
    let src = "fn add(a: i32, b: i32) -> i32 {\n    |\n}\n";
    let cursor = src.find('|').unwrap();
    let text = src.replacen('|', "", 1);
    let req = request("src/lib.rs", &text, cursor, Multiline::Never);
    let mut c = completer();
    let hooks = nib_lsp::completer::Hooks {
        first_line: None,
        // The user typed `zzz`: whatever the model writes first contradicts it.
        keep_going: Some(std::sync::Arc::new(|t: &str| {
            t.starts_with("zzz") || "zzz".starts_with(t)
        })),
    };
    let stopped = c.complete_early(&req, &CancelToken::new(), hooks);
    assert!(
        matches!(stopped, Err(nib_model::ModelError::Cancelled)),
        "{stopped:?}"
    );
    let after = c.complete(&req, &CancelToken::new()).unwrap();
    assert!(!after.text.trim().is_empty(), "{after:?}");
}

/// A completer of its own (its KV caches and prefill speed start fresh) whose prompts are
/// sized to a prefill deadline of `ms`.
fn with_deadline(ms: f64) -> Completer {
    let backend = load_backend(BackendKind::Cpu, &common::real_model()).expect("load model");
    let config = CompleterConfig {
        prefill_deadline_ms: Some(ms),
        ..CompleterConfig::default()
    };
    Completer::new(backend, config).unwrap()
}

/// A prompt whose prefill would miss the deadline gets a shorter prefix, and the full window
/// is computed in the background (`warm_up`); the next request then takes the full window,
/// and its completion is the one a completer without a deadline gives.
#[test]
fn a_cold_prompt_is_sized_to_the_deadline_and_the_full_window_follows() {
    let text = include_str!("../src/completer.rs");
    let cursor = text.find("    fn sized_plan(").unwrap();
    let req = request("lsp/src/completer.rs", text, cursor, Multiline::Never);
    let mut c = with_deadline(100.0);
    let full = c.plan(&req).ids.len();
    let cold = c.complete(&req, &CancelToken::new()).unwrap();
    assert!(
        cold.prompt_tokens < full / 2,
        "{} of {full}",
        cold.prompt_tokens
    );
    assert!(c.has_warm_up());
    c.warm_up(&CancelToken::new()).unwrap();
    assert!(!c.has_warm_up());
    let warm = c.complete(&req, &CancelToken::new()).unwrap();
    assert_eq!(warm.prompt_tokens, full);
    assert!(warm.reused_tokens + 1 >= full, "{warm:?}");
    let plain = completer().complete(&req, &CancelToken::new()).unwrap();
    assert_eq!(warm.text, plain.text);
}

/// Over the deadline, the file's own text from outside the window is the first thing to go:
/// the full window without it is what the background makes warm and what the next request
/// gets, so the extra text never costs the window near the cursor on a slow machine.
#[test]
fn over_the_deadline_the_files_own_text_yields_to_the_window() {
    let text = include_str!("../src/completer.rs");
    let cursor = text.find("    fn sized_plan(").unwrap();
    let lean = request("lsp/src/completer.rs", text, cursor, Multiline::Never);
    let req = CompletionRequest {
        own_chars: 1500,
        ..lean
    };
    let mut c = with_deadline(100.0);
    let with_own = c.plan(&req).ids.len();
    let without = c.plan(&lean).ids.len();
    assert!(with_own > without + 100, "{with_own} vs {without}");
    let cold = c.complete(&req, &CancelToken::new()).unwrap();
    assert!(cold.prompt_tokens < without / 2, "{cold:?}");
    c.warm_up(&CancelToken::new()).unwrap();
    let warm = c.complete(&req, &CancelToken::new()).unwrap();
    assert_eq!(warm.prompt_tokens, without, "{warm:?}");
    assert!(warm.reused_tokens + 1 >= without, "{warm:?}");
}

/// One case of a golden file: a line `text with | as the cursor => expected`, where `\n` in
/// either half is an escape; lines starting with `#` are comments.
struct Golden {
    line: String,
    text: String,
    cursor: usize,
    want: String,
}

fn golden_cases(name: &str) -> Vec<Golden> {
    let cases = std::fs::read_to_string(common::fixture(name)).unwrap();
    cases
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (src, want) = line.split_once(" => ").expect("`text => expected`");
            let src = src.replace("\\n", "\n");
            let cursor = src.find('|').expect("cursor marker");
            Golden {
                line: line.to_string(),
                text: src.replacen('|', "", 1),
                cursor,
                want: want.replace("\\n", "\n"),
            }
        })
        .collect()
}

/// Token healing takes the prompt's last token off for the model to write back
/// (`fixtures/heal.txt`), and a completion started mid-word finishes the word.
#[test]
fn token_healing_golden_cases() {
    let c = completer();
    let mut failed = Vec::new();
    for case in golden_cases("heal.txt") {
        let plan = c.plan(&request(
            "src/lib.rs",
            &case.text,
            case.cursor,
            Multiline::Never,
        ));
        let got = String::from_utf8_lossy(&plan.heal).into_owned();
        if got != case.want {
            failed.push(format!("{:?}: took off {got:?}", case.line));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// The end of the text before the cursor goes after the middle marker
/// (`fixtures/middle.txt`): the token before the cursor's line and the line so far, and with
/// `middle_lines` (the default's) as many whole lines before it.
#[test]
fn the_middle_holds_the_line_typed_so_far() {
    let backend = load_backend(BackendKind::Cpu, &common::real_model()).expect("load model");
    let one_line = CompleterConfig {
        middle_lines: 0,
        ..CompleterConfig::default()
    };
    let c = Completer::new(backend, one_line).unwrap();
    let lines = CompleterConfig::default().middle_lines;
    let text: String = (0..lines + 3)
        .map(|i| format!("let x{i} = {i};\n"))
        .collect();
    let plan = completer().plan(&request("src/lib.rs", &text, text.len(), Multiline::Never));
    assert_eq!(
        plan.parts.middle.matches('\n').count(),
        lines + 1,
        "{plan:?}"
    );
    let mut failed = Vec::new();
    for case in golden_cases("middle.txt") {
        let plan = c.plan(&request(
            "src/lib.rs",
            &case.text,
            case.cursor,
            Multiline::Never,
        ));
        let whole = format!("{}{}", plan.parts.prefix, plan.parts.middle);
        if plan.parts.middle != case.want || whole != case.text[..case.cursor] {
            failed.push(format!("{:?}: middle {:?}", case.line, plan.parts.middle));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Typing on, within a line and across line breaks, recomputes a few tokens a keystroke: the
/// middle keeps its start, so the prefix and the suffix after the cursor keep their KV cache
/// (with the prefix-suffix-middle layout each keystroke recomputed the suffix, 64 tokens and
/// more in the editor).
#[test]
fn typing_on_recomputes_a_few_tokens_a_keystroke() {
    let file = include_str!("../src/buffer.rs");
    let start = file.find("\n    pub fn ").unwrap() + 1;
    let typed = "    let a = 1;\n    let b = a + 1;\n    b\n";
    let backend = load_backend(BackendKind::Cpu, &common::real_model()).expect("load model");
    let config = CompleterConfig {
        // The editor's settings: a short suffix, prompts sized to a deadline.
        suffix_tokens: 64,
        prefill_deadline_ms: Some(1000.0),
        ..CompleterConfig::default()
    };
    let mut c = Completer::new(backend, config).unwrap();
    let mut new_tokens = Vec::new();
    for n in 0..=typed.len() {
        let text = format!("{}{}{}", &file[..start], &typed[..n], &file[start..]);
        let mut req = request("lsp/src/buffer.rs", &text, start + n, Multiline::Never);
        req.max_tokens = Some(1);
        let done = c.complete(&req, &CancelToken::new()).unwrap();
        new_tokens.push(done.prompt_tokens - done.reused_tokens);
    }
    // The first request computes the prompt; each keystroke after it a token or two.
    assert!(new_tokens[0] > 64, "{new_tokens:?}");
    assert!(new_tokens[1..].iter().all(|&n| n <= 4), "{new_tokens:?}");
}

/// Cursors in the middle of a word: without healing the model continued `.sq` as `rd()`,
/// `.pa` as `and_then(…)` and `names.it` as `erator()` (measured 2026-12-05).
#[test]
fn a_word_started_before_the_cursor_is_finished() {
    let cases = [
        (
            "src/lib.rs",
            "pub struct Point { pub x: f64, pub y: f64 }\n\nimpl Point {\n    pub fn norm(&self) -> f64 {\n        (self.x * self.x + self.y * self.y).sq|\n    }\n}\n",
            "rt()",
        ),
        (
            "src/lib.rs",
            "pub fn parse(s: &str) -> Result<i32, std::num::ParseIntError> {\n    s.trim().pa|\n}\n",
            "rse",
        ),
        (
            "src/main.rs",
            "fn main() {\n    let names = vec![\"a\", \"b\"];\n    for n in names.it|\n}\n",
            "er()",
        ),
    ];
    let mut c = completer();
    for (path, src, want) in cases {
        let got = complete_with(&mut c, path, src, Multiline::Never);
        assert!(got.text.starts_with(want), "{src:?}: {:?}", got.text);
    }
}
