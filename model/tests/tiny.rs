//! Loading, tokenizing and generating with a tiny model written by the test (real GGUF format,
//! random weights): no download needed.

mod common;

use nib_model::prompt::{self, FimFamily, FimTokens, PromptParts};
use nib_model::{
    generate, load_backend, Backend, BackendKind, CancelToken, GenerateParams, ModelError,
    Tokenizer,
};
use std::sync::Arc;

#[test]
fn loads_and_detects_fim_tokens() {
    let Tiny { backend, _dir, .. } = tiny();
    let info = backend.info();
    assert_eq!(info.model, "nib tiny test model");
    assert_eq!(info.context_length, 512);
    let fim = FimTokens::detect(backend.tokenizer()).expect("fim tokens");
    assert_eq!(fim.family, FimFamily::Qwen);
    assert!(fim.stops.contains(&fim.prefix) && fim.file_sep.is_some());
}

#[test]
fn tokenizer_applies_merges_and_round_trips() {
    let Tiny { backend, _dir, .. } = tiny();
    let tok = backend.tokenizer();
    // " the" merges to one token (Ġ t → Ġt, h e → he, Ġt he → Ġthe).
    let ids = tok.encode(" the");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(tok.decode(&ids), " the");
    for text in [
        "fn main() {\n    let x = 1;\n}\n",
        "héllo wörld — 你好 🦀\r\n\t\t  ",
        "<|endoftext|> is text here",
        "",
    ] {
        assert_eq!(tok.decode(&tok.encode(text)), text);
    }
}

/// The tiny model, loaded, with what most tests need of it.
struct Tiny {
    _dir: tempfile::TempDir,
    backend: Box<dyn Backend>,
    tok: Arc<Tokenizer>,
    fim: FimTokens,
}

fn tiny() -> Tiny {
    let dir = tempfile::tempdir().unwrap();
    let backend = load_backend(BackendKind::Cpu, &common::tiny_model(dir.path())).unwrap();
    let tok = backend.tokenizer().clone();
    let fim = FimTokens::detect(&tok).unwrap();
    Tiny {
        _dir: dir,
        backend,
        tok,
        fim,
    }
}

/// The largest difference between two logit vectors.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn prompt_ids(tok: &nib_model::Tokenizer, fim: &FimTokens, prefix: &str) -> Vec<u32> {
    let parts = PromptParts {
        repo_name: "demo".into(),
        files: vec![("lib.rs".into(), "pub fn helper() {}".into())],
        path: "main.rs".into(),
        prefix: prefix.into(),
        suffix: "\n}\n".into(),
        ..Default::default()
    };
    prompt::build(tok, fim, &parts)
}

#[test]
fn generation_is_deterministic_and_cache_reuse_changes_nothing() {
    let Tiny {
        backend,
        tok,
        fim,
        _dir,
    } = tiny();
    let params = GenerateParams::new(&tok, fim.stops.clone(), 24, false);
    let cancel = CancelToken::new();

    let a = prompt_ids(&tok, &fim, "fn main() {\n    let x");
    let b = prompt_ids(&tok, &fim, "fn main() {\n    let xy");

    // Fresh sessions.
    let fresh_a = generate(backend.new_session().as_mut(), &tok, &a, &params, &cancel).unwrap();
    let fresh_b = generate(backend.new_session().as_mut(), &tok, &b, &params, &cancel).unwrap();
    // One session reused: a, then b (shares a prefix), then a again.
    let mut s = backend.new_session();
    let reused_a = generate(s.as_mut(), &tok, &a, &params, &cancel).unwrap();
    let reused_b = generate(s.as_mut(), &tok, &b, &params, &cancel).unwrap();
    let again_a = generate(s.as_mut(), &tok, &a, &params, &cancel).unwrap();

    assert!(!fresh_a.tokens.is_empty());
    assert_eq!(fresh_a.tokens, reused_a.tokens);
    assert_eq!(fresh_b.tokens, reused_b.tokens);
    assert_eq!(fresh_a.tokens, again_a.tokens);
    assert_eq!(reused_a.reused_tokens, 0);
    assert!(reused_b.reused_tokens > 0, "b shares a prefix with a");
    assert!(again_a.reused_tokens > 0);
    // Special tokens other than stops are never emitted.
    for t in fresh_a.tokens.iter().chain(&fresh_b.tokens) {
        assert!(!tok.is_special(*t));
    }
}

#[test]
fn chunked_prefill_matches_one_pass() {
    let Tiny {
        backend, tok, _dir, ..
    } = tiny();
    let ids = tok.encode("let counts = HashMap::new();\nfor word in text.split_whitespace() {\n");
    let one = backend
        .new_session()
        .feed(&ids, &CancelToken::new())
        .unwrap();
    let mut s = backend.new_session();
    let mut chunked = Vec::new();
    for c in ids.chunks(5) {
        chunked = s.feed(c, &CancelToken::new()).unwrap();
    }
    let max_diff = max_abs_diff(&one, &chunked);
    assert!(max_diff < 1e-3, "logits differ by {max_diff}");
}

#[test]
fn single_line_mode_stops_at_end_of_line() {
    let Tiny {
        backend,
        tok,
        fim,
        _dir,
    } = tiny();
    let ids = prompt_ids(&tok, &fim, "fn main() {\n    ");
    let params = GenerateParams::new(&tok, fim.stops.clone(), 200, true);
    let g = common::generate_fresh(backend.as_ref(), &tok, &ids, &params);
    let body = g.text.trim_start_matches(['\n', '\r', ' ', '\t']);
    assert!(
        !body.contains('\n'),
        "single-line output spans lines: {:?}",
        g.text
    );
}

#[test]
fn a_healed_prompt_writes_back_what_was_taken_off() {
    let Tiny {
        backend, tok, fim, ..
    } = tiny();
    // (text the prompt ends in, the part taken off it)
    for (text, heal) in [
        ("fn main() {\n    let", "let"),
        ("fn main() {\n    ", "    "),
        ("let s = \"hé", "é"),
        ("x.le", ".le"),
        ("let x = 1;\n", ";\n"),
        ("let x = 1;\n\n", "\n\n"),
    ] {
        let ids = prompt_ids(&tok, &fim, &text[..text.len() - heal.len()]);
        let mut params = GenerateParams::new(&tok, fim.stops.clone(), 12, false);
        params.heal = heal.as_bytes().to_vec();
        let g = common::generate_fresh(backend.as_ref(), &tok, &ids, &params);
        // The model writes the text back first (random weights would rarely pick it freely),
        // and the output starts after it.
        let written = tok.decode(&g.tokens);
        assert!(
            written.starts_with(heal),
            "{text:?}: {written:?} does not begin with {heal:?}"
        );
        assert_eq!(written[heal.len()..], g.text, "{text:?}");
        // A healed line break starts the line the completion goes on: never a blank one.
        if heal.ends_with('\n') {
            let first = g.text.split('\n').next().unwrap();
            assert!(
                !(first.trim().is_empty() && g.text.contains('\n')),
                "{text:?}: {:?} starts with a blank line",
                g.text
            );
        }
    }
}

#[test]
fn cancelled_generation_stops() {
    let Tiny {
        backend,
        tok,
        fim,
        _dir,
    } = tiny();
    let cancel = CancelToken::new();
    cancel.cancel();
    let params = GenerateParams::new(&tok, fim.stops.clone(), 20, false);
    let r = generate(
        backend.new_session().as_mut(),
        &tok,
        &prompt_ids(&tok, &fim, "x"),
        &params,
        &cancel,
    );
    assert!(matches!(r, Err(ModelError::Cancelled)));
}

#[test]
fn llama_architecture_loads_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama.gguf");
    let cfg = nib_model::tiny::TinyConfig {
        arch: "llama",
        ..Default::default()
    };
    nib_model::tiny::write(&path, &cfg).unwrap();
    let backend = load_backend(BackendKind::Cpu, &path).unwrap();
    let tok = backend.tokenizer().clone();
    let logits = backend
        .new_session()
        .feed(&tok.encode("fn main"), &CancelToken::new())
        .unwrap();
    assert_eq!(logits.len(), tok.vocab_size());
    assert!(logits.iter().all(|x| x.is_finite()));
}

#[test]
fn cancelled_feed_leaves_the_session_as_it_was() {
    let Tiny {
        backend, tok, _dir, ..
    } = tiny();
    let mut s = backend.new_session();
    let head = tok.encode("fn main() {");
    let want = s.feed(&head, &CancelToken::new()).unwrap();
    let cancel = CancelToken::new();
    cancel.cancel();
    let r = s.feed(&tok.encode(" let x = 1;"), &cancel);
    assert!(matches!(r, Err(ModelError::Cancelled)));
    assert_eq!(s.tokens(), &head[..]);
    // The cache holds exactly the head again: re-feeding its last token gives the same logits.
    s.truncate(head.len() - 1).unwrap();
    let again = s
        .feed(&head[head.len() - 1..], &CancelToken::new())
        .unwrap();
    let diff = max_abs_diff(&want, &again);
    assert!(diff < 1e-4, "{diff}");
}

#[test]
fn prompt_longer_than_the_context_is_cut_with_a_warning() {
    let Tiny {
        backend,
        tok,
        fim,
        _dir,
    } = tiny();
    let long = "let value = compute(1, 2, 3);\n".repeat(80); // well over 512 tokens
    let ids = prompt_ids(&tok, &fim, &long);
    assert!(ids.len() > 512);
    let params = GenerateParams::new(&tok, fim.stops.clone(), 16, false);
    let g = generate(
        backend.new_session().as_mut(),
        &tok,
        &ids,
        &params,
        &CancelToken::new(),
    )
    .expect("a long prompt still completes");
    assert!(g.prompt_tokens + 16 <= 512, "{}", g.prompt_tokens);
    assert!(g.warning.unwrap().contains("does not fit"));
}

#[test]
fn speculation_changes_nothing_but_the_speed() {
    let Tiny {
        backend,
        tok,
        fim,
        _dir,
    } = tiny();
    // Repetitive text, so that the lookup finds drafts.
    let ids = prompt_ids(
        &tok,
        &fim,
        &"the rest of the text, the rest of the text; ".repeat(6),
    );
    let plain = GenerateParams::new(&tok, fim.stops.clone(), 40, false);
    let mut spec = plain.clone();
    spec.draft_len = 6;
    let a = common::generate_fresh(backend.as_ref(), &tok, &ids, &plain);
    let b = common::generate_fresh(backend.as_ref(), &tok, &ids, &spec);
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.text, b.text);
    assert!(b.drafted > 0, "no draft was tried");
    assert_eq!(a.drafted, 0);
}

/// Switching between files keeps each file's cache: with three slots, going back to the first
/// file reuses its whole prompt; the answers are the same as in fresh sessions; the budget holds.
#[test]
fn session_pool_keeps_each_files_cache() {
    let Tiny {
        backend,
        tok,
        fim,
        _dir,
    } = tiny();
    let params = GenerateParams::new(&tok, fim.stops.clone(), 8, false);
    let cancel = CancelToken::new();
    let file = |name: &str, body: &str| {
        prompt::build(
            &tok,
            &fim,
            &PromptParts {
                repo_name: "demo".into(),
                files: vec![],
                path: name.into(),
                prefix: body.into(),
                suffix: "\n".into(),
                ..Default::default()
            },
        )
    };
    let a = file(
        "a.rs",
        "fn alpha() {\n    let first = 1;\n    let second = 2;\n    ",
    );
    let b = file(
        "b.rs",
        "struct Beta {\n    field: u32,\n    other: String,\n    ",
    );
    let c = file("c.rs", "enum Gamma {\n    One,\n    Two,\n    Three,\n    ");

    let mut pool = nib_model::SessionPool::new(3, 10_000);
    let run = |pool: &mut nib_model::SessionPool, ids: &[u32]| {
        let s = pool.pick(backend.as_ref(), ids);
        generate(s, &tok, ids, &params, &cancel).unwrap()
    };
    let first_a = run(&mut pool, &a);
    run(&mut pool, &b);
    run(&mut pool, &c);
    assert_eq!(pool.len(), 3);
    let back_to_a = run(&mut pool, &a);
    assert_eq!(back_to_a.reused_tokens, a.len() - 1, "a's cache was kept");
    assert_eq!(back_to_a.tokens, first_a.tokens);
    assert_eq!(
        back_to_a.tokens,
        common::generate_fresh(backend.as_ref(), &tok, &a, &params).tokens
    );

    // One slot: every switch starts over (beyond the shared repository header).
    let mut single = nib_model::SessionPool::new(1, 10_000);
    run(&mut single, &a);
    run(&mut single, &b);
    let again = run(&mut single, &a);
    assert!(again.reused_tokens < a.len() / 2, "{}", again.reused_tokens);

    // A budget smaller than three prompts empties the least recently used sessions.
    let budget = a.len() + b.len() + 8;
    let mut tight = nib_model::SessionPool::new(3, budget + 2 * params.max_tokens);
    run(&mut tight, &a);
    run(&mut tight, &b);
    run(&mut tight, &c);
    assert!(
        tight.cached_tokens() <= budget + 2 * params.max_tokens,
        "{}",
        tight.cached_tokens()
    );
    let a_again = run(&mut tight, &a);
    assert!(
        a_again.reused_tokens < a.len() / 2,
        "a was the least recently used: emptied"
    );

    // Work ahead: a prompt computed in the background goes to another session than the one
    // serving requests (which keeps its cache), and the next pick of that prompt finds it.
    let mut ahead = nib_model::SessionPool::new(3, 10_000);
    run(&mut ahead, &a);
    assert_eq!(ahead.best_reuse(&b), common_len(&a, &b));
    let s = ahead.pick_background(backend.as_ref(), &b);
    let mut warm = params.clone();
    warm.max_tokens = 0;
    generate(s, &tok, &b, &warm, &cancel).unwrap();
    assert_eq!(ahead.len(), 2);
    assert_eq!(ahead.best_reuse(&a), a.len(), "the live session kept a");
    assert_eq!(ahead.best_reuse(&b), b.len(), "b was computed ahead");
    let b_now = run(&mut ahead, &b);
    assert_eq!(b_now.reused_tokens, b.len() - 1);
    assert_eq!(
        b_now.tokens,
        common::generate_fresh(backend.as_ref(), &tok, &b, &params).tokens
    );
}

fn common_len(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A draft model (here a second tiny model with other weights, same vocabulary) changes nothing
/// in the output: the target keeps only the draft tokens it would have picked itself. The draft
/// model itself (same weights as the target) is right every time.
#[test]
fn draft_model_speculation_changes_nothing_but_the_speed() {
    let Tiny {
        backend,
        tok,
        fim,
        _dir,
    } = tiny();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.gguf");
    nib_model::tiny::write(
        &other,
        &nib_model::tiny::TinyConfig {
            seed: 7,
            ..Default::default()
        },
    )
    .unwrap();
    let drafter = load_backend(BackendKind::Cpu, &other).unwrap();
    let ids = prompt_ids(&tok, &fim, "fn main() {\n    let total = ");
    let plain = GenerateParams::new(&tok, fim.stops.clone(), 40, false);
    let mut spec = plain.clone();
    spec.draft_len = 4;
    let cancel = CancelToken::new();
    let want = common::generate_fresh(backend.as_ref(), &tok, &ids, &plain);
    for (name, d) in [("other weights", &drafter), ("the same weights", &backend)] {
        let mut draft = d.new_session();
        let got = nib_model::generate_with_draft(
            backend.new_session().as_mut(),
            Some(draft.as_mut()),
            &tok,
            &ids,
            &spec,
            &cancel,
        )
        .unwrap();
        assert_eq!(got.tokens, want.tokens, "{name}");
        assert!(got.drafted > 0, "{name}: no draft was tried");
        if name == "the same weights" {
            assert_eq!(
                got.accepted, got.drafted,
                "a perfect draft model is always right"
            );
        }
    }
}
