//! Prompt-lookup speculation with the real model: the same greedy output, fewer passes.

mod common;

use nib_model::prompt::{self, FimTokens, PromptParts};
use nib_model::{load_backend, BackendKind, GenerateParams};

#[test]
fn same_output_with_and_without_speculation() {
    let backend = load_backend(BackendKind::Cpu, &common::real_model()).expect("load model");
    let tok = backend.tokenizer().clone();
    let fim = FimTokens::detect(&tok).unwrap();
    // Code that repeats itself, as code does: the next match arm mirrors the earlier ones.
    let prefix = "fn name(op: Op) -> &'static str {\n    match op {\n        Op::Add => \"add\",\n        Op::Sub => \"sub\",\n        Op::Mul => \"mul\",\n        Op::Div => \"div\",\n    }\n}\n\nfn symbol(op: Op) -> &'static str {\n    match op {\n";
    let parts = PromptParts {
        prefix: prefix.into(),
        suffix: "\n".into(),
        ..Default::default()
    };
    let ids = prompt::build(&tok, &fim, &parts);
    let plain = GenerateParams::new(&tok, fim.stops.clone(), 48, false);
    let mut spec = plain.clone();
    spec.draft_len = 8;
    let a = common::generate_fresh(backend.as_ref(), &tok, &ids, &plain);
    let b = common::generate_fresh(backend.as_ref(), &tok, &ids, &spec);
    assert_eq!(a.text, b.text);
    assert!(b.accepted > 0, "no draft token was kept: {:?}", b.text);
    assert!(a.text.contains("Op::Sub"), "{:?}", a.text);
}
