//! # nib-model: from a GGUF file to generated tokens
//!
//! This crate owns everything between a model file and the text a model writes:
//!
//! - [`gguf`]: opening GGUF files with clear errors (missing, not GGUF, truncated, corrupt) and
//!   reading their metadata;
//! - [`tokenizer`]: the byte-level BPE tokenizer rebuilt from GGUF metadata alone (no
//!   `tokenizer.json`);
//! - [`prompt`]: fill-in-the-middle and repo-level prompt layouts, chosen per model family from the
//!   vocabulary, never from the file name;
//! - [`transformer`]: the decoder (Qwen2 and Llama families), one file, read top to bottom;
//! - [`backend`]: the `Backend`/`Session` traits every device implements, and the CPU backend;
//! - [`generate`]: greedy decoding with stop rules, KV-cache prefix reuse and cancellation;
//! - [`pool`]: a few sessions (LRU) so that switching files keeps each file's cache;
//! - [`remote`]: completions from an inference server (OpenAI-compatible or llama.cpp `/infill`);
//! - [`fetch`]: finding and downloading models (Hugging Face, with a package-registry fallback).
//!
//! ## What this crate must not do
//! It knows nothing about repositories, files being edited, editors, LSP or JSON-RPC. Its inputs
//! are token ids, strings and model paths; its outputs are tokens, text and timings. Choosing *what*
//! goes into a prompt is the indexer's and the server's business; this crate only lays it out.

pub mod backend;
pub mod bench;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod kernels;
pub mod pool;
pub mod prompt;
pub mod remote;
pub mod tiny;
pub mod tokenizer;
pub mod transformer;

pub use backend::{load_backend, Backend, BackendKind, Session};
pub use error::ModelError;
pub use generate::{
    generate, generate_with_draft, CancelToken, GenerateParams, Generation, StopReason,
};
pub use pool::SessionPool;
pub use prompt::{FimFamily, FimTokens, PromptParts};
pub use tokenizer::Tokenizer;
