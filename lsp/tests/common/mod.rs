//! Shared by the integration tests of nib-lsp.
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

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}
