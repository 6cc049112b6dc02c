//! # nib-lsp: the `nib` binary and the one completion pipeline
//!
//! [`completer::Completer`] turns (document text, cursor) into a completion: context window
//! (nib-indexer) → prompt layout and generation (nib-model) → post-processing. The CLI
//! (`nib complete`) and, as it lands, the language server (`nib serve`) and the eval harness all
//! call this same pipeline, so every benchmark measures exactly what an editor gets.
//!
//! ## What this crate must not do
//! It holds no model code and no parsing of source files beyond what post-processing needs; those
//! live in nib-model and nib-indexer. It is the only crate that knows editors' protocols (LSP,
//! JSON-RPC) and the command line.

pub mod buffer;
pub mod client;
pub mod completer;
pub mod context;
pub mod document;
pub mod engine;
pub mod postprocess;
pub mod server;
pub mod settings;
pub mod stats;

pub use completer::{Completer, CompleterConfig, Completion, CompletionRequest, Multiline};
