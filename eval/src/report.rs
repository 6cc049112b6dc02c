//! Reports: each benchmark run ends in a summary written three ways under `eval/reports/` —
//! `NAME.json` (what `nib-eval compare` and the README table read), `NAME.md` (a Markdown table
//! with the command line that produced it) and `NAME.svg` (the headline metric by condition; a
//! latency CDF as `NAME-latency.svg` when the run measured latency).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One line of a summary: a condition or a language, with its task count and metrics (percent
/// for rates, milliseconds for latencies).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub label: String,
    pub tasks: usize,
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// The file stem: `santacoder-fim`, `repo-rust`…
    pub name: String,
    pub title: String,
    /// The command line that produced it.
    pub command: String,
    /// What the results file records about the run (model, settings).
    pub meta: serde_json::Value,
    /// The metric columns, in order; the first is the headline.
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    /// Per-task latencies (ms), for the CDF; empty when not measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latencies_ms: Vec<f64>,
    /// Free text under the table (what the figures mean, a published reference).
    #[serde(default)]
    pub notes: Vec<String>,
    /// For an anchor's run: its task-by-task comparison with nib's run of the same tasks
    /// (`nib-eval compare --save`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versus: Option<String>,
}

/// The command line of this process, as a user would type it: `nib-eval` whatever the binary's
/// own path or name (a copy run from elsewhere while a build replaces the original), paths under
/// the home directory from `~`.
pub fn command_line() -> String {
    std::iter::once("nib-eval".to_string())
        .chain(std::env::args().skip(1).map(|a| {
            // A path under the home directory is written from `~`, not one machine's home.
            let a = match std::env::var("HOME") {
                Ok(home) if !home.is_empty() && a.starts_with(&format!("{home}/")) => {
                    format!("~{}", &a[home.len()..]).replace("//", "/")
                }
                _ => a,
            };
            if a.contains([' ', '"', '\'', '{']) {
                format!("'{a}'")
            } else {
                a
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The flags of a run's command that choose its tasks (`--shard 0/4`, `--seed 1`, ...), in
/// order: two runs answer the same tasks only where these are equal.
pub fn task_selection(command: &str) -> Vec<(String, String)> {
    const SELECTING: &[&str] = &[
        "--shard",
        "--seed",
        "--limit",
        "--per-language",
        "--kind",
        "--crates",
        "--prefix-tokens",
        "--suffix-tokens",
        "--data",
    ];
    let words: Vec<&str> = command.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let (flag, value) = match w.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (*w, words.get(i + 1).copied()),
        };
        if SELECTING.contains(&flag) {
            out.push((flag.to_string(), value.unwrap_or("").to_string()));
        }
    }
    out.sort();
    out
}

impl Summary {
    /// Whether `other` ran the same task selection as this run (see [`task_selection`]).
    pub fn same_tasks_as(&self, other: &Summary) -> bool {
        task_selection(&self.command) == task_selection(&other.command)
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.title);
        let _ = writeln!(s, "| | tasks | {} |", self.columns.join(" | "));
        let _ = writeln!(s, "| --- | ---: |{}", " ---: |".repeat(self.columns.len()));
        for r in &self.rows {
            let cells: Vec<String> = self
                .columns
                .iter()
                .map(|c| {
                    r.metrics
                        .get(c)
                        .map_or("–".into(), |v| format_metric(c, *v))
                })
                .collect();
            let _ = writeln!(s, "| {} | {} | {} |", r.label, r.tasks, cells.join(" | "));
        }
        s.push('\n');
        for n in &self.notes {
            let _ = writeln!(s, "{n}\n");
        }
        let _ = writeln!(s, "`{}`", self.command);
        s
    }

    /// This table with the anchor's figure beside each headline figure (rows matched by label),
    /// and the anchor's command and task-by-task comparison under it.
    pub fn beside(&self, anchor: &Summary, anchor_name: &str) -> Summary {
        let mut out = self.clone();
        let Some(differ) = out.add_headline_of(anchor, anchor_name) else {
            return out;
        };
        // Which server and endpoint answered, as the anchor's run recorded it.
        let who = anchor.meta["model"]["anchor"]
            .as_str()
            .unwrap_or(anchor_name);
        let rules = if anchor.meta["model"]["anchor_rules"].as_bool() == Some(true) {
            ", its text ended and post-processed by nib's rules"
        } else {
            ", its text scored as the server wrote it"
        };
        let mut note = format!(
            "{anchor_name}: the same model file and the same tasks, answered by `{who}`{rules}{} (`{}`).",
            if differ { " (on a different number of tasks: the run is not complete)" } else { "" },
            anchor.command
        );
        if let Some(v) = &anchor.versus {
            note += "\n\n";
            note += v;
        }
        out.notes.push(note);
        out
    }

    /// This table with another model's figure, from its run of the same tasks, beside each
    /// headline figure (rows matched by label), and that run's command under it.
    pub fn beside_model(&self, other: &Summary, model_name: &str) -> Summary {
        let mut out = self.clone();
        let Some(differ) = out.add_headline_of(other, model_name) else {
            return out;
        };
        let file = other.meta["model"]["model"].as_str().unwrap_or(model_name);
        out.notes.push(format!(
            "{model_name}: `{file}`, the same tasks{} (`{}`).",
            if differ {
                " (on a different number of tasks: the run is not complete)"
            } else {
                ""
            },
            other.command
        ));
        out
    }

    /// Adds a column `HEADLINE, NAME` with `other`'s headline figure in each row of the same
    /// label; whether some row's task count differs (`None`: this table has no columns).
    fn add_headline_of(&mut self, other: &Summary, name: &str) -> Option<bool> {
        let headline = self.columns.first().cloned()?;
        let column = format!("{headline}, {name}");
        // After the headline and the columns added beside it before.
        let at = 1 + self.columns[1..]
            .iter()
            .take_while(|c| c.starts_with(&format!("{headline}, ")))
            .count();
        self.columns.insert(at, column.clone());
        let mut differ = false;
        for r in &mut self.rows {
            let a = other.rows.iter().find(|a| a.label == r.label);
            if let Some(v) = a.and_then(|a| a.metrics.get(&headline)) {
                r.metrics.insert(column.clone(), *v);
            }
            differ |= a.is_some_and(|a| a.tasks != r.tasks);
        }
        Some(differ)
    }

    /// Writes `NAME.json`, `NAME.md`, `NAME.svg` (and `NAME-latency.svg`) into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        let mut put = |name: String, text: String| -> anyhow::Result<()> {
            let p = dir.join(name);
            std::fs::write(&p, text)?;
            written.push(p);
            Ok(())
        };
        put(
            format!("{}.json", self.name),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        put(format!("{}.md", self.name), self.markdown())?;
        if let Some(headline) = self.columns.first() {
            put(
                format!("{}.svg", self.name),
                bars_svg(&self.title, headline, &self.rows),
            )?;
        }
        if !self.latencies_ms.is_empty() {
            put(
                format!("{}-latency.svg", self.name),
                cdf_svg(&format!("{}: latency", self.title), &self.latencies_ms),
            )?;
        }
        Ok(written)
    }

    pub fn read(path: &Path) -> anyhow::Result<Summary> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a nib-eval summary: {e}", path.display()))
    }
}

fn format_metric(name: &str, v: f64) -> String {
    if name.ends_with("ms") || name.contains("tokens") {
        format!("{v:.0}")
    } else if name.contains("per keystroke") {
        format!("{v:.3}")
    } else {
        format!("{v:.1}")
    }
}

/// `B` beside `A`, row by row (matched by label) and metric by metric, with the difference.
pub fn compare(a: &Summary, b: &Summary) -> String {
    let mut s = format!(
        "| row | metric | {} | {} | Δ |\n| --- | --- | ---: | ---: | ---: |\n",
        a.name, b.name
    );
    let columns: Vec<&String> = a
        .columns
        .iter()
        .chain(b.columns.iter().filter(|c| !a.columns.contains(c)))
        .collect();
    for ra in &a.rows {
        let rb = b.rows.iter().find(|r| r.label == ra.label);
        for c in &columns {
            let va = ra.metrics.get(*c);
            let vb = rb.and_then(|r| r.metrics.get(*c));
            let cell = |v: Option<&f64>| v.map_or("–".to_string(), |v| format_metric(c, *v));
            let delta = match (va, vb) {
                (Some(x), Some(y)) => format!("{:+.1}", y - x),
                _ => "–".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {c} | {} | {} | {delta} |",
                ra.label,
                cell(va),
                cell(vb)
            );
        }
    }
    for rb in b
        .rows
        .iter()
        .filter(|r| !a.rows.iter().any(|ra| ra.label == r.label))
    {
        let _ = writeln!(s, "| {} | (only in {}) | | | |", rb.label, b.name);
    }
    s
}

/// One task's result as the comparison reads it from a results file, whatever the benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub id: String,
    /// The language or the repo-rust condition, where the benchmark has one.
    pub group: Option<String>,
    /// Passed its tests where it was executed, else an exact match.
    pub right: bool,
    pub completion: String,
}

impl TaskResult {
    /// Reads one result line; `None` for the first line (the run's `meta`).
    pub fn from_json(v: &serde_json::Value) -> Option<TaskResult> {
        if v.get("meta").is_some() {
            return None;
        }
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let id = s("id").or_else(|| Some(format!("{}/{}", s("language")?, s("name")?)))?;
        let right = v
            .get("passed")
            .or_else(|| v.get("exact"))
            .or_else(|| v.get("scores").and_then(|x| x.get("exact")))
            .and_then(|x| x.as_bool())?;
        Some(TaskResult {
            id,
            group: s("condition").or_else(|| s("language")),
            right,
            completion: s("completion").unwrap_or_default(),
        })
    }
}

/// Reads a results file (JSON lines, as the benchmarks write them).
pub fn read_results(path: &Path) -> anyhow::Result<Vec<TaskResult>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        out.extend(TaskResult::from_json(&v));
    }
    Ok(out)
}

/// Wins and losses of `b` against `a` over the tasks both answered.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Versus {
    pub common: usize,
    pub both_right: usize,
    pub both_wrong: usize,
    /// Right in `b` only.
    pub b_only: Vec<(TaskResult, TaskResult)>,
    /// Right in `a` only.
    pub a_only: Vec<(TaskResult, TaskResult)>,
    /// The same counts per group (language, condition).
    pub by_group: BTreeMap<String, GroupCount>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct GroupCount {
    pub common: usize,
    pub b_only: usize,
    pub a_only: usize,
    pub both_right: usize,
}

pub fn versus(a: &[TaskResult], b: &[TaskResult]) -> Versus {
    let by_id: std::collections::HashMap<&str, &TaskResult> =
        b.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut v = Versus::default();
    for ra in a {
        let Some(rb) = by_id.get(ra.id.as_str()) else {
            continue;
        };
        v.common += 1;
        match (ra.right, rb.right) {
            (true, true) => v.both_right += 1,
            (false, false) => v.both_wrong += 1,
            (false, true) => v.b_only.push((ra.clone(), (*rb).clone())),
            (true, false) => v.a_only.push((ra.clone(), (*rb).clone())),
        }
        if let Some(g) = &ra.group {
            let c = v.by_group.entry(g.clone()).or_default();
            c.common += 1;
            match (ra.right, rb.right) {
                (true, true) => c.both_right += 1,
                (false, true) => c.b_only += 1,
                (true, false) => c.a_only += 1,
                (false, false) => {}
            }
        }
    }
    v
}

/// The task-by-task comparison as Markdown: counts (overall and per group) and up to `examples`
/// tasks each way, with both answers' first lines.
pub fn versus_markdown(
    a_name: &str,
    b_name: &str,
    a: &[TaskResult],
    b: &[TaskResult],
    examples: usize,
) -> String {
    let all = versus(a, b);
    let mut s = format!(
        "Task by task, {} tasks answered by both: {b_name} alone right on {}, {a_name} alone right on {} (net {:+}); both right {}, both wrong {}.\n",
        all.common,
        all.b_only.len(),
        all.a_only.len(),
        all.b_only.len() as i64 - all.a_only.len() as i64,
        all.both_right,
        all.both_wrong
    );
    if all.by_group.len() > 1 {
        s += &format!("\n| group | tasks | {b_name} alone | {a_name} alone | both right |\n| --- | ---: | ---: | ---: | ---: |\n");
        for (g, c) in &all.by_group {
            let _ = writeln!(
                s,
                "| {g} | {} | {} | {} | {} |",
                c.common, c.b_only, c.a_only, c.both_right
            );
        }
    }
    let first = |t: &str| -> String {
        let line = t.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let line: String = line.trim().chars().take(80).collect();
        format!("`{}`", line.replace('`', "'"))
    };
    for (title, list) in [
        (format!("{b_name} alone right"), &all.b_only),
        (format!("{a_name} alone right"), &all.a_only),
    ] {
        if list.is_empty() || examples == 0 {
            continue;
        }
        let _ = writeln!(
            s,
            "\n{title}, first {} of {}:\n",
            examples.min(list.len()),
            list.len()
        );
        for (ra, rb) in list.iter().take(examples) {
            let _ = writeln!(
                s,
                "- {}: {a_name} {} · {b_name} {}",
                ra.id,
                first(&ra.completion),
                first(&rb.completion)
            );
        }
    }
    s
}

/// Rewrites the part of `readme` between `<!-- nib-eval:results -->` and
/// `<!-- /nib-eval:results -->` with the Markdown of `summaries`.
pub fn splice_readme(readme: &str, summaries: &[Summary]) -> anyhow::Result<String> {
    const OPEN: &str = "<!-- nib-eval:results -->";
    const CLOSE: &str = "<!-- /nib-eval:results -->";
    let (Some(a), Some(b)) = (readme.find(OPEN), readme.find(CLOSE)) else {
        anyhow::bail!("the README has no {OPEN} … {CLOSE} section");
    };
    anyhow::ensure!(a < b, "{CLOSE} comes before {OPEN}");
    let body: Vec<String> = summaries.iter().map(Summary::markdown).collect();
    Ok(format!(
        "{}{OPEN}\n{}\n{}",
        &readme[..a],
        body.join("\n"),
        &readme[b..]
    ))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar per row: the headline metric.
pub fn bars_svg(title: &str, metric: &str, rows: &[Row]) -> String {
    let heading = format!("{title}: {metric}");
    // Wide enough for the heading (about 8 px a character at 15 px).
    let w = (heading.chars().count() as f64 * 8.0 + 20.0).max(640.0);
    let (bar_h, left, top) = (24.0, 150.0, 40.0);
    let h = top + rows.len() as f64 * (bar_h + 8.0) + 30.0;
    let max = rows
        .iter()
        .filter_map(|r| r.metrics.get(metric))
        .fold(0.0f64, |a, &b| a.max(b))
        .max(1e-9);
    let scale = if max <= 100.0 { 100.0 } else { max };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"22\" font-size=\"15\">{}</text>\n",
        esc(&heading)
    );
    for (i, r) in rows.iter().enumerate() {
        let y = top + i as f64 * (bar_h + 8.0);
        let v = r.metrics.get(metric).copied().unwrap_or(0.0);
        let bw = (w - left - 70.0) * v / scale;
        let _ = writeln!(
            s,
            "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"end\">{}</text><rect x=\"{left}\" y=\"{y:.0}\" width=\"{bw:.1}\" height=\"{bar_h}\" fill=\"#4c78a8\"/><text x=\"{:.1}\" y=\"{:.0}\">{}</text>",
            left - 8.0,
            y + 17.0,
            esc(&r.label),
            left + bw + 6.0,
            y + 17.0,
            format_metric(metric, v)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The share of requests answered within x ms.
pub fn cdf_svg(title: &str, latencies_ms: &[f64]) -> String {
    let mut v: Vec<f64> = latencies_ms
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    v.sort_by(f64::total_cmp);
    let w = (title.chars().count() as f64 * 8.0 + 20.0).max(640.0);
    let (h, left, bottom, top, right) = (360.0, 60.0, 40.0, 40.0, 20.0);
    let max = v.last().copied().unwrap_or(1.0).max(1.0);
    let px = |x: f64| left + (w - left - right) * x / max;
    let py = |q: f64| h - bottom - (h - top - bottom) * q;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"22\" font-size=\"15\">{}</text>\n",
        esc(title)
    );
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for q in [0.0, 0.5, 0.95, 1.0] {
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.0}\" text-anchor=\"end\">{:.0}%</text>",
            left - 6.0,
            py(q) + 4.0,
            q * 100.0
        );
    }
    for k in 0..=4 {
        let x = max * k as f64 / 4.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.0}\" y=\"{}\" text-anchor=\"middle\">{x:.0} ms</text>",
            px(x),
            h - bottom + 18.0
        );
    }
    let n = v.len().max(1) as f64;
    let points: Vec<String> = v
        .iter()
        .enumerate()
        .map(|(i, x)| format!("{:.1},{:.1}", px(*x), py((i + 1) as f64 / n)))
        .collect();
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"#4c78a8\" stroke-width=\"2\" points=\"{}\"/>\n</svg>",
        points.join(" ")
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(name: &str, exact: f64) -> Summary {
        Summary {
            name: name.into(),
            title: format!("{name} title"),
            command: "nib-eval x --limit 3".into(),
            meta: serde_json::json!({}),
            columns: vec!["exact match".into(), "latency ms".into()],
            rows: vec![Row {
                label: "all".into(),
                tasks: 3,
                metrics: [
                    ("exact match".to_string(), exact),
                    ("latency ms".to_string(), 812.4),
                ]
                .into_iter()
                .collect(),
            }],
            latencies_ms: vec![500.0, 812.4, 1200.0],
            notes: vec![],
            versus: None,
        }
    }

    #[test]
    fn markdown_and_files() {
        let s = summary("demo", 66.666);
        assert_eq!(
            s.markdown(),
            "### demo title\n\n| | tasks | exact match | latency ms |\n| --- | ---: | ---: | ---: |\n| all | 3 | 66.7 | 812 |\n\n`nib-eval x --limit 3`\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let files = s.write(dir.path()).unwrap();
        assert_eq!(files.len(), 4);
        assert_eq!(Summary::read(&dir.path().join("demo.json")).unwrap(), s);
        let svg = std::fs::read_to_string(dir.path().join("demo-latency.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    }

    #[test]
    fn comparing_two_runs() {
        let text = compare(&summary("a", 50.0), &summary("b", 62.5));
        assert!(
            text.contains("| all | exact match | 50.0 | 62.5 | +12.5 |"),
            "{text}"
        );
    }

    #[test]
    fn results_of_every_benchmark_are_read_for_the_task_by_task_comparison() {
        // (result line as each benchmark writes it, what the comparison reads)
        let cases = [
            (r#"{"meta":{"bench":"x"}}"#, None),
            (
                r#"{"name":"t1","language":"py","completion":"x = 1","exact":true}"#,
                Some(("py/t1", Some("py"), true)),
            ),
            (
                r#"{"id":"HumanEval/3/L1","completion":"","passed":false,"exact":true}"#,
                Some(("HumanEval/3/L1", None, false)),
            ),
            (
                r#"{"id":"k/a.rs:3#nib","condition":"nib","completion":"y","scores":{"exact":true}}"#,
                Some(("k/a.rs:3#nib", Some("nib"), true)),
            ),
            (r#"{"id":"no verdict"}"#, None),
        ];
        for (line, want) in cases {
            let got = TaskResult::from_json(&serde_json::from_str(line).unwrap());
            let got = got
                .as_ref()
                .map(|r| (r.id.as_str(), r.group.as_deref(), r.right));
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn wins_and_losses_task_by_task() {
        let r = |id: &str, right: bool, text: &str| TaskResult {
            id: id.into(),
            group: Some(id[..1].into()),
            right,
            completion: text.into(),
        };
        let a = [
            r("a1", true, "x"),
            r("a2", false, "y"),
            r("b1", true, "z"),
            r("b2", false, "w"),
            r("c1", true, "only in a"),
        ];
        let b = [
            r("a1", true, "x"),
            r("a2", true, "yy"),
            r("b1", false, "zz"),
            r("b2", false, "ww"),
        ];
        let v = versus(&a, &b);
        assert_eq!((v.common, v.both_right, v.both_wrong), (4, 1, 1));
        assert_eq!(v.b_only.len(), 1);
        assert_eq!(v.a_only[0].0.id, "b1");
        let md = versus_markdown("nib", "llama", &a, &b, 5);
        assert!(md.starts_with("Task by task, 4 tasks answered by both: llama alone right on 1, nib alone right on 1 (net +0)"), "{md}");
        assert!(md.contains("| a | 2 | 1 | 0 | 1 |"), "{md}");
        assert!(md.contains("- a2: nib `y` · llama `yy`"), "{md}");
    }

    #[test]
    fn the_anchor_goes_beside_the_headline() {
        let mut anchor = summary("a-llama", 40.0);
        anchor.meta = serde_json::json!({"model": {"anchor": "llama.cpp /infill"}});
        anchor.versus = Some("Task by task, 3 tasks".into());
        let t = summary("a", 50.0).beside(&anchor, "llama.cpp");
        assert_eq!(
            t.columns[..2],
            [
                "exact match".to_string(),
                "exact match, llama.cpp".to_string()
            ]
        );
        let md = t.markdown();
        assert!(md.contains("| all | 3 | 50.0 | 40.0 | 812 |"), "{md}");
        assert!(
            md.contains("Task by task, 3 tasks") && md.contains("/infill"),
            "{md}"
        );
    }

    #[test]
    fn the_larger_model_goes_after_the_anchor() {
        let anchor = summary("a-llama", 40.0);
        let mut large = summary("a-1.5b", 60.0);
        large.meta = serde_json::json!({"model": {"model": "big.gguf"}});
        let t = summary("a", 50.0)
            .beside(&anchor, "llama.cpp")
            .beside_model(&large, "1.5B");
        assert_eq!(
            t.columns[..3],
            ["exact match", "exact match, llama.cpp", "exact match, 1.5B"].map(String::from)
        );
        let md = t.markdown();
        assert!(
            md.contains("| all | 3 | 50.0 | 40.0 | 60.0 | 812 |"),
            "{md}"
        );
        assert!(md.contains("1.5B: `big.gguf`, the same tasks (`"), "{md}");
    }

    #[test]
    fn only_runs_of_the_same_tasks_go_beside() {
        let mut a = summary("a", 50.0);
        a.command = "nib-eval santacoder-fim --out eval/reports/a.jsonl".into();
        let mut b = summary("a-llama", 40.0);
        b.command = "nib-eval santacoder-fim --llama-server default --out x.jsonl".into();
        assert!(a.same_tasks_as(&b));
        b.command = "nib-eval santacoder-fim --shard 0/4 --seed 1 --out x.jsonl".into();
        assert!(!a.same_tasks_as(&b));
        a.command = "nib-eval santacoder-fim --seed=1 --shard 0/4".into();
        assert!(a.same_tasks_as(&b));
    }

    #[test]
    fn the_readme_section_is_replaced() {
        let readme = "intro\n<!-- nib-eval:results -->\nold\n<!-- /nib-eval:results -->\nrest\n";
        let out = splice_readme(readme, &[summary("a", 1.0)]).unwrap();
        assert!(out.starts_with("intro\n<!-- nib-eval:results -->\n### a title"));
        assert!(out.ends_with("<!-- /nib-eval:results -->\nrest\n") && !out.contains("old"));
        assert!(splice_readme("no markers", &[]).is_err());
    }
}
