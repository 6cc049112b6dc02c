//! The HumanEval infilling builders give the reference tasks, and the harness validates itself:
//! every canonical middle passes its tests in the sandbox.

use nib_eval::humaneval::{self, Kind, Problem, Task};
use nib_eval::sandbox::{Sandbox, Verdict};
use std::path::PathBuf;

fn problems() -> Vec<Problem> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/benchmarks/HumanEval.jsonl.gz");
    nib_eval::run::load_jsonl_gz(&path).expect("HumanEval.jsonl.gz in ../shared/benchmarks")
}

/// Runs every task's canonical middle, on all cores; returns the ids that did not pass.
fn failures(tasks: &[Task]) -> Vec<String> {
    let sandbox = Sandbox::new();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(t) = tasks.get(i) else { break };
                let r = humaneval::execute(&sandbox, t, &t.middle);
                if r.verdict != Verdict::Passed {
                    failed
                        .lock()
                        .unwrap()
                        .push(format!("{} {:?}: {}", t.id, r.verdict, r.output));
                }
            });
        }
    });
    failed.into_inner().unwrap()
}

#[test]
fn single_line_tasks_are_the_reference_set_and_canonical_middles_pass() {
    let tasks = humaneval::tasks(&problems(), Kind::Single);
    assert_eq!(tasks.len(), 1033);
    assert_eq!(tasks[0].id, "SingleLineInfilling/HumanEval/0/L0");
    assert_eq!(tasks[1032].id.split('/').nth(2), Some("163"));
    let ids: std::collections::HashSet<_> = tasks.iter().map(|t| &t.id).collect();
    assert_eq!(ids.len(), 1033);
    // A wrong middle fails: the tests are really run.
    let broken = humaneval::execute(&Sandbox::new(), &tasks[0], "    return 42\n");
    assert_ne!(broken.verdict, Verdict::Passed);
    assert_eq!(failures(&tasks), Vec::<String>::new());
}

#[test]
fn multi_line_tasks_are_the_reference_set_and_canonical_middles_pass() {
    let tasks = humaneval::tasks(&problems(), Kind::Multi);
    assert_eq!(tasks.len(), 5815);
    assert_eq!(tasks[0].id, "MultiLineInfilling/HumanEval/0/L0_L0");
    let ids: std::collections::HashSet<_> = tasks.iter().map(|t| &t.id).collect();
    assert_eq!(ids.len(), 5815);
    assert_eq!(failures(&tasks), Vec::<String>::new());
}
