//! Errors a user can act on. Each message is one line and says what to do where it can.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file not found: {path} (fetch the default model with `nib model pull`)")]
    NotFound { path: PathBuf },
    #[error("cannot read model file {path}: {detail}")]
    Unreadable { path: PathBuf, detail: String },
    #[error("not a GGUF file: {path} (it does not start with the GGUF magic bytes)")]
    NotGguf { path: PathBuf },
    #[error("truncated GGUF file {path}: {detail} (re-download it with `nib model pull`)")]
    Truncated { path: PathBuf, detail: String },
    #[error("corrupt GGUF file {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("unsupported model architecture `{arch}` (supported: qwen2, llama)")]
    UnsupportedArch { arch: String },
    #[error("unsupported tokenizer: {0}")]
    UnsupportedTokenizer(String),
    #[error("model metadata key `{key}` is missing or has the wrong type")]
    Metadata { key: String },
    #[error("model has no fill-in-the-middle tokens: it cannot complete code at a cursor")]
    NoFim,
    #[error("cancelled")]
    Cancelled,
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("backend `{backend}` is unavailable: {detail}")]
    Backend {
        backend: &'static str,
        detail: String,
    },
    #[error("download failed: {0}")]
    Download(String),
    #[error("remote backend: {0}")]
    Remote(String),
}

impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        // candle errors can carry backtraces over several lines: keep the first one.
        let text = e.to_string();
        ModelError::Inference(text.lines().next().unwrap_or("").to_string())
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
