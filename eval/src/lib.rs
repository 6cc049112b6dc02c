//! # nib-eval: the numbers that say whether nib is good
//!
//! The offline harness. Today: the SantaCoder FIM exact-match benchmark ([`santacoder`]) through
//! the `Completer`, and a typing replay against a running `nib serve` ([`replay`]). To come
//! (issue 6): HumanEval infilling with execution, HumanEval-X Rust, repository-level Rust.
//!
//! ## What this crate must not do
//! It never reimplements the completion pipeline: every task goes through `nib_lsp::Completer`
//! or a spawned `nib serve`, so what it measures is what an editor gets. Benchmark data is read from `../shared/benchmarks`
//! or a path given by flag, never copied into the repository. Results are appended to a JSON-lines
//! file as they come, so an interrupted run resumes where it stopped.

pub mod humaneval;
pub mod humaneval_rust;
pub mod replay;
pub mod repo_rust;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod santacoder;
