//! # nib-indexer: what the model should see besides the cursor
//!
//! This crate decides which text goes into a completion prompt: the local window around the cursor
//! (prefix and suffix, cut at line boundaries under a token budget) and snippets from other files
//! of the workspace: [`lang`] (tree-sitter grammars and tags queries), [`symbols`] (one file's
//! definitions, imports, identifiers), [`index`] (name → definitions, updated file by file),
//! [`walk`] (the workspace's source files, ignore rules, secrets), [`imports`] (a file's imports
//! resolved to files of the index) and [`context`] (what the imported files offer and the
//! definitions of names used near the cursor).
//!
//! ## What this crate must not do
//! It never calls a model and knows nothing of LSP or editors. Its core takes file contents as data
//! (`&str`) and a token counter as a function; reading the disk is a thin layer on top. Token
//! counts come from the caller, so the same code budgets for any tokenizer.

pub mod cache;
pub mod context;
pub mod extent;
pub mod imports;
pub mod index;
pub mod lang;
pub mod skeleton;
pub mod symbols;
pub mod walk;
pub mod window;

pub use index::Index;
pub use lang::Lang;
pub use symbols::SymbolParser;
pub use window::{local_window, window_from, Window};
