//! Shared by the integration tests of nib-model.
#![allow(dead_code)]

use std::path::PathBuf;

/// The real default model: `$NIB_MODEL`, else the path `nib model pull` writes. A missing model is
/// a test failure that says how to get it, never a silent skip.
pub fn real_model() -> PathBuf {
    nib_model::fetch::model_from_env().unwrap_or_else(|e| {
        panic!(
            "{e}\nThese tests run the real default model. Fetch it with \
             `cargo run --release -p nib-lsp -- model pull` (or set NIB_MODEL to a GGUF file)."
        )
    })
}

pub fn tiny_model(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("tiny.gguf");
    nib_model::tiny::write(&path, &Default::default()).expect("write tiny model");
    path
}

/// Greedy generation from `ids` in a new session of `backend`, not cancelled.
pub fn generate_fresh(
    backend: &dyn nib_model::Backend,
    tok: &nib_model::Tokenizer,
    ids: &[u32],
    params: &nib_model::GenerateParams,
) -> nib_model::Generation {
    let cancel = nib_model::CancelToken::new();
    nib_model::generate(backend.new_session().as_mut(), tok, ids, params, &cancel)
        .expect("generation")
}
