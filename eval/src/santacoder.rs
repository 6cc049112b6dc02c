//! SantaCoder FIM (the set the Qwen2.5-Coder report calls HumanEval-FIM), scored as that report
//! does: the plain `<prefix>…<suffix>…<middle>` prompt, greedy, 64 tokens at most, the first line
//! of the output (the second when the output starts with a line break), exact match after trimming.

use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Task {
    pub name: String,
    pub language: String,
    pub prompt: String,
    pub suffix: String,
    pub canonical_solution: String,
}

impl Task {
    /// Names repeat across languages; this pair does not.
    pub fn key(&self) -> (&str, &str) {
        (&self.language, &self.name)
    }
}

/// One scored task, as written to the results file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub name: String,
    pub language: String,
    pub completion: String,
    pub exact: bool,
    pub prompt_tokens: usize,
    pub latency_ms: f64,
}

impl crate::run::Record for Outcome {
    fn id(&self) -> String {
        format!("{}/{}", self.language, self.name)
    }
}

/// Reads the gzipped JSON-lines task file.
pub fn load(path: &Path) -> anyhow::Result<Vec<Task>> {
    crate::run::load_jsonl_gz(path)
}

/// The first `per_language` tasks of each language, in file order.
pub fn subset(tasks: Vec<Task>, per_language: Option<usize>) -> Vec<Task> {
    let Some(n) = per_language else { return tasks };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    tasks
        .into_iter()
        .filter(|t| {
            let c = seen.entry(t.language.clone()).or_default();
            *c += 1;
            *c <= n
        })
        .collect()
}

/// The report's rule: the completion's first line, or its second when it starts with a line
/// break; equal to the canonical line after trimming both.
pub fn score(completion: &str, canonical: &str) -> bool {
    let lines: Vec<&str> = completion.split('\n').collect();
    let first = if completion.starts_with('\n') || completion.starts_with(" \n") {
        lines.get(1).copied().unwrap_or("")
    } else {
        lines[0]
    };
    first.trim() == canonical.trim()
}

/// Exact match per language and overall (weighted by count): `(language, done, exact)`.
pub fn table(outcomes: &[Outcome]) -> Vec<(String, usize, usize)> {
    let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for o in outcomes {
        let e = by.entry(o.language.clone()).or_default();
        e.0 += 1;
        e.1 += usize::from(o.exact);
    }
    let mut rows: Vec<_> = by.into_iter().map(|(l, (n, x))| (l, n, x)).collect();
    let (n, x) = rows.iter().fold((0, 0), |(a, b), r| (a + r.1, b + r.2));
    rows.push(("all".into(), n, x));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_follows_the_report() {
        // (completion, canonical, exact)
        let cases = [
            ("        }\n    }", "        }", true),
            ("\n        }\n", "        }", true),
            (" \n  return x;", "return x;", true),
            ("return y;", "return x;", false),
            ("", "return x;", false),
            ("x = 1  \nmore", "  x = 1", true),
        ];
        for (completion, canonical, want) in cases {
            assert_eq!(score(completion, canonical), want, "{completion:?}");
        }
    }

    #[test]
    fn loads_the_whole_set() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/benchmarks/santacoder-fim.jsonl.gz");
        let tasks = load(&path).expect("benchmark data in ../shared/benchmarks");
        assert_eq!(tasks.len(), 4792);
        let t = table(
            &tasks
                .iter()
                .map(|t| Outcome {
                    name: t.name.clone(),
                    language: t.language.clone(),
                    completion: t.canonical_solution.clone(),
                    exact: score(&t.canonical_solution, &t.canonical_solution),
                    prompt_tokens: 0,
                    latency_ms: 0.0,
                })
                .collect::<Vec<_>>(),
        );
        // Canonical middles score 100%, and the languages have the published counts.
        assert_eq!(
            t,
            vec![
                ("java".to_string(), 1780, 1780),
                ("js".to_string(), 1969, 1969),
                ("py".to_string(), 1043, 1043),
                ("all".to_string(), 4792, 4792)
            ]
        );
        let keys: std::collections::HashSet<_> = tasks.iter().map(Task::key).collect();
        assert_eq!(keys.len(), 4792, "language and name identify a task");
        let sub = subset(tasks, Some(150));
        assert_eq!(sub.len(), 450);
    }
}
