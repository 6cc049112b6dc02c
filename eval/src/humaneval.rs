//! HumanEval infilling (single-line: 1033 tasks, multi-line: 5815), rebuilt from OpenAI's
//! HumanEval exactly as the reference does (ids included), and scored by running the tests in the
//! [`sandbox`](crate::sandbox): pass@1 with greedy decoding, and exact match of the middle.

use crate::sandbox::{Limits, RunResult, Sandbox};
use std::path::Path;

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Problem {
    pub task_id: String,
    pub prompt: String,
    pub canonical_solution: String,
    pub test: String,
    pub entry_point: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Kind {
    Single,
    Multi,
}

/// One infilling task: the model sees `prefix` and `suffix` and should write `middle`.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub prefix: String,
    pub middle: String,
    pub suffix: String,
    /// What checks a program: the problem's tests and the call that runs them.
    pub check: String,
}

/// The holes of one solution: every non-blank line (single), or every span of lines from a
/// non-blank line to a non-blank line (multi). `(first, last)` line indices, in the reference order.
pub fn holes(solution: &str, kind: Kind) -> Vec<(usize, usize)> {
    let nb: Vec<usize> = solution
        .split('\n')
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, _)| i)
        .collect();
    match kind {
        Kind::Single => nb.iter().map(|&i| (i, i)).collect(),
        Kind::Multi => nb
            .iter()
            .enumerate()
            .flat_map(|(a, &i)| nb[a..].iter().map(move |&j| (i, j)))
            .collect(),
    }
}

/// Splits a solution at a hole: `(before, middle, after)` with the reference's joins (`before`
/// and `middle` end with a line break; `after` does not).
pub fn split_at_hole(solution: &str, (i, j): (usize, usize)) -> (String, String, String) {
    let sol: Vec<&str> = solution.split('\n').collect();
    (
        sol[..i].join("\n") + "\n",
        sol[i..=j].join("\n") + "\n",
        sol[j + 1..].join("\n"),
    )
}

/// Every task of `kind`, with the reference ids, in the reference order.
pub fn tasks(problems: &[Problem], kind: Kind) -> Vec<Task> {
    problems
        .iter()
        .flat_map(|p| {
            let check = format!("{}\ncheck({})", p.test, p.entry_point);
            cut(&p.task_id, &p.prompt, &p.canonical_solution, &check, kind)
        })
        .collect()
}

/// The tasks of one problem: `head` (the prompt, or a declaration) before the solution, a hole at
/// each of [`holes`], and `check` after. Shared with HumanEval-X Rust.
pub fn cut(task_id: &str, head: &str, solution: &str, check: &str, kind: Kind) -> Vec<Task> {
    holes(solution, kind)
        .into_iter()
        .map(|(i, j)| {
            let (before, middle, after) = split_at_hole(solution, (i, j));
            Task {
                id: match kind {
                    Kind::Single => format!("SingleLineInfilling/{task_id}/L{i}"),
                    Kind::Multi => format!("MultiLineInfilling/{task_id}/L{i}_L{j}"),
                },
                prefix: format!("{head}{before}"),
                middle,
                suffix: after,
                check: check.to_string(),
            }
        })
        .collect()
}

/// The program that tests `completion` in the hole.
pub fn program(task: &Task, completion: &str) -> String {
    format!(
        "{}{}{}\n{}\n",
        task.prefix, completion, task.suffix, task.check
    )
}

/// The completion as it goes into the hole: single-line tasks take the first line, and the text
/// ends with a line break, as the middle does.
pub fn fill(kind: Kind, completion: &str) -> String {
    let mut text = match kind {
        Kind::Single => completion.split('\n').next().unwrap_or("").to_string(),
        Kind::Multi => completion.to_string(),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Runs the task's tests on `completion` (already [`fill`]ed) with python3 in the sandbox.
pub fn execute(sandbox: &Sandbox, task: &Task, completion: &str) -> RunResult {
    let source = program(task, completion);
    sandbox.run_with_files(
        Path::new("/usr/bin/python3"),
        &["-I", "task.py"],
        &[("task.py", &source)],
        &Limits::default(),
    )
}

/// Exact match of the middle, ignoring surrounding whitespace.
pub fn exact(task: &Task, filled: &str) -> bool {
    filled.trim() == task.middle.trim()
}

/// A hole whose text is only closing brackets and separators (`}`, `});`): trivial, reported apart.
pub fn brace_only(task: &Task) -> bool {
    let m = task.middle.trim();
    !m.is_empty() && m.chars().all(|c| matches!(c, '}' | ')' | ']' | ';' | ','))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_follow_the_reference() {
        // Blank (and whitespace-only) lines are never a hole's end; split is on '\n' only.
        let sol = "    a = 1\n\n    b = 2\n   \n    return a + b\n";
        assert_eq!(holes(sol, Kind::Single), vec![(0, 0), (2, 2), (4, 4)]);
        assert_eq!(
            holes(sol, Kind::Multi),
            vec![(0, 0), (0, 2), (0, 4), (2, 2), (2, 4), (4, 4)]
        );
        let (b, m, a) = split_at_hole(sol, (2, 4));
        assert_eq!(
            (b.as_str(), m.as_str(), a.as_str()),
            ("    a = 1\n\n", "    b = 2\n   \n    return a + b\n", "")
        );
        let (b, m, a) = split_at_hole(sol, (0, 0));
        assert_eq!((b.as_str(), m.as_str()), ("\n", "    a = 1\n"));
        assert_eq!(a, "\n    b = 2\n   \n    return a + b\n");
    }

    #[test]
    fn filling_cuts_single_lines() {
        assert_eq!(fill(Kind::Single, "    x = 1\n    y = 2"), "    x = 1\n");
        assert_eq!(fill(Kind::Single, ""), "\n");
        assert_eq!(
            fill(Kind::Multi, "    x = 1\n    y = 2"),
            "    x = 1\n    y = 2\n"
        );
    }
}
