//! The HumanEval-X Rust runner validates itself: the canonical solutions pass (163 of 164: one
//! problem, Rust/50, is written against rand 0.7), and a wrong line fails.

use nib_eval::humaneval_rust::{self, Crate, Problem};
use nib_eval::sandbox::{Sandbox, Verdict};
use std::path::PathBuf;

#[test]
fn canonical_solutions_pass_and_wrong_ones_fail() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/benchmarks/humaneval-x-rust.jsonl.gz");
    let problems: Vec<Problem> = nib_eval::run::load_jsonl_gz(&path)
        .expect("humaneval-x-rust.jsonl.gz in ../shared/benchmarks");
    assert_eq!(problems.len(), 164);
    let tasks = humaneval_rust::tasks(&problems);
    assert_eq!(tasks.len(), 2198);
    // Lines of only closing brackets and separators (`}`, `});`, `},`).
    assert_eq!(
        tasks
            .iter()
            .filter(|t| nib_eval::humaneval::brace_only(t))
            .count(),
        605
    );

    // One task per problem, its canonical line in the hole: the whole canonical solution.
    let mut firsts = Vec::new();
    for p in &problems {
        let prefix = format!("SingleLineInfilling/{}/", p.task_id);
        firsts.push(
            tasks
                .iter()
                .find(|t| t.id.starts_with(&prefix))
                .expect("a task per problem"),
        );
    }
    let mut programs: Vec<String> = firsts
        .iter()
        .map(|t| nib_eval::humaneval::program(t, &t.middle))
        .collect();
    // Three wrong ones in the hole of Rust/0's `return false;`: a type error, a wrong answer
    // and an endless loop.
    let t0 = tasks
        .iter()
        .find(|t| {
            t.id.starts_with("SingleLineInfilling/Rust/0/") && t.middle.trim() == "return false;"
        })
        .expect("Rust/0 ends with return false;");
    programs.push(nib_eval::humaneval::program(
        t0,
        "    let x: u32 = \"text\";\n",
    ));
    programs.push(nib_eval::humaneval::program(t0, "    return true;\n"));
    programs.push(nib_eval::humaneval::program(t0, "    loop {}\n"));

    let dir = tempfile::tempdir().unwrap();
    let krate = Crate::prepare(dir.path()).expect("the crate's dependencies build");
    let results = krate.check(&Sandbox::new(), &programs);
    let failed: Vec<String> = firsts
        .iter()
        .zip(&results)
        .filter(|(_, (v, _))| *v != Verdict::Passed)
        .map(|(t, (v, out))| {
            format!(
                "{} {v:?} {}",
                t.id,
                out.chars().take(300).collect::<String>()
            )
        })
        .collect();
    assert!(failed.len() <= 1, "canonical solutions failed: {failed:#?}");
    let wrong = &results[164..];
    assert!(wrong[0].1.contains("compile error"), "{:?}", wrong[0]);
    assert_ne!(wrong[1].0, Verdict::Passed, "{:?}", wrong[1]);
    assert_eq!(wrong[2].0, Verdict::TimedOut, "{:?}", wrong[2]);
}
