//! # nib-eval: the numbers that say whether nib is good
//!
//! The offline harness: completion quality on public benchmarks ([`santacoder`] exact match,
//! [`humaneval`] and [`humaneval_rust`] executed), repository awareness ([`repo_rust`]: the same
//! tasks with no cross-file context, nib's, and an oracle's), and editor latency ([`replay`]
//! through a real `nib serve`). [`run`] gives every benchmark the same task selection, resumable
//! results and progress; [`sandbox`] runs the programs models write; [`report`] turns a run into
//! JSON, Markdown and SVG.
//!
//! ## What this crate must not do
//! It never reimplements the completion pipeline: every task goes through `nib_lsp::Completer`
//! or a spawned `nib serve`, so what it measures is what an editor gets; the one exception is
//! the [`anchor`], llama.cpp's server answering the same tasks for comparison. It never runs a
//! generated program outside the sandbox. Benchmark data is read from `../shared/benchmarks`
//! or a path given by flag, never copied into the repository. Results are appended to a JSON-lines
//! file as they come, so an interrupted run resumes where it stopped.

pub mod anchor;
pub mod humaneval;
pub mod humaneval_rust;
pub mod replay;
pub mod repo_rust;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod santacoder;
