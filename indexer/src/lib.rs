//! # nib-indexer: what the model should see besides the cursor
//!
//! This crate decides which text goes into a completion prompt: the local window around the cursor
//! (prefix and suffix, cut at line boundaries under a token budget) and, as the repository index
//! grows, snippets from other files of the workspace.
//!
//! ## What this crate must not do
//! It never calls a model and knows nothing of LSP or editors. Its core takes file contents as data
//! (`&str`) and a token counter as a function; reading the disk is a thin layer on top. Token
//! counts come from the caller, so the same code budgets for any tokenizer.

pub mod window;

pub use window::{local_window, Window};
