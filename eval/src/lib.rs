//! # nib-eval: the numbers that say whether nib is good
//!
//! The offline harness: completion benchmarks, keystroke replay and reports. It grows in issue 6.
//!
//! ## What this crate must not do
//! It never reimplements the completion pipeline: every run goes through `nib_lsp::Completer` (or a
//! spawned `nib serve`), so what it measures is what an editor gets. Benchmark data is read from
//! `../shared/benchmarks` or a path given by flag, never copied into the repository.
