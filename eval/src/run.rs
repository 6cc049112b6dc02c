//! What every benchmark run shares: choosing the tasks (`--limit`, `--shard`, `--seed`), a
//! results file of JSON lines that an interrupted run resumes from (a first line records what the
//! run is, so results of another model or setting are never mixed in), and progress with an ETA.

use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

/// Reads a gzipped JSON-lines file of records of type `T`.
pub fn load_jsonl_gz<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let file = std::fs::File::open(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot open {}: {e} (the benchmark data lives in ../shared/benchmarks; pass --data)",
            path.display()
        )
    })?;
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));
    let mut rows = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        rows.push(
            serde_json::from_str(&line)
                .map_err(|e| anyhow::anyhow!("{}: line {}: {e}", path.display(), i + 1))?,
        );
    }
    Ok(rows)
}

/// Which tasks of a benchmark to run.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selection {
    /// Only tasks whose index (in the benchmark's own order) is `I` modulo `N`: `--shard 0/5` is
    /// every fifth task, a fixed subset that keeps the benchmark's mix.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// Shuffle the (sharded) tasks with this seed before `--limit`; without it, file order.
    #[arg(long)]
    pub seed: Option<u64>,
    /// At most this many tasks.
    #[arg(long)]
    pub limit: Option<usize>,
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s.split_once('/').ok_or("expected I/N, e.g. 0/5")?;
    let i: usize = i.parse().map_err(|e| format!("{e}"))?;
    let n: usize = n.parse().map_err(|e| format!("{e}"))?;
    if n == 0 || i >= n {
        return Err(format!("shard {i}/{n}: need I < N"));
    }
    Ok((i, n))
}

impl Selection {
    pub fn apply<T>(&self, tasks: Vec<T>) -> Vec<T> {
        let mut tasks: Vec<T> = match self.shard {
            Some((i, n)) => tasks
                .into_iter()
                .enumerate()
                .filter(|(k, _)| k % n == i)
                .map(|(_, t)| t)
                .collect(),
            None => tasks,
        };
        if let Some(seed) = self.seed {
            // A small deterministic shuffle (SplitMix64-driven Fisher–Yates): the same seed gives
            // the same order on every machine.
            let mut state = seed;
            for i in (1..tasks.len()).rev() {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                tasks.swap(i, (z % (i as u64 + 1)) as usize);
            }
        }
        if let Some(n) = self.limit {
            tasks.truncate(n);
        }
        tasks
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((i, n)) = self.shard {
            parts.push(format!("--shard {i}/{n}"));
        }
        if let Some(s) = self.seed {
            parts.push(format!("--seed {s}"));
        }
        if let Some(l) = self.limit {
            parts.push(format!("--limit {l}"));
        }
        parts.join(" ")
    }
}

/// A result line: it knows which task it answers.
pub trait Record: Serialize + DeserializeOwned {
    fn id(&self) -> String;
}

/// Runs `work` on every task whose result is not yet in `out`, appending each result as it comes;
/// returns the results of all `tasks` (earlier and new), in task order. `meta` describes the run
/// (model, settings): a results file written under another `meta` is refused, with the way out.
pub fn run_tasks<T, R: Record>(
    out: &Path,
    meta: &serde_json::Value,
    tasks: &[T],
    id: impl Fn(&T) -> String,
    mut work: impl FnMut(&T) -> anyhow::Result<R>,
    progress_line: impl Fn(&[R]) -> String,
) -> anyhow::Result<Vec<R>> {
    run_batches(
        out,
        meta,
        tasks,
        id,
        1,
        |batch| work(batch[0]).map(|r| vec![r]),
        progress_line,
    )
}

/// [`run_tasks`] for work that is cheaper in batches (compiling many programs at once): `work`
/// gets up to `batch` unfinished tasks and returns their results in the same order.
pub fn run_batches<T, R: Record>(
    out: &Path,
    meta: &serde_json::Value,
    tasks: &[T],
    id: impl Fn(&T) -> String,
    batch: usize,
    mut work: impl FnMut(&[&T]) -> anyhow::Result<Vec<R>>,
    progress_line: impl Fn(&[R]) -> String,
) -> anyhow::Result<Vec<R>> {
    let mut done: Vec<R> = Vec::new();
    match std::fs::read_to_string(out) {
        Ok(text) => {
            let mut lines = text.lines();
            let first: serde_json::Value = lines
                .next()
                .and_then(|l| serde_json::from_str(l).ok())
                .unwrap_or_default();
            if first.get("meta") != Some(meta) {
                anyhow::bail!(
                    "{} holds results of another run ({}); pass another --out or delete it",
                    out.display(),
                    first.get("meta").unwrap_or(&serde_json::Value::Null)
                );
            }
            // A line cut short by an interruption is skipped: its task runs again.
            done.extend(lines.filter_map(|l| serde_json::from_str(l).ok()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(out, format!("{}\n", serde_json::json!({ "meta": meta })))?;
        }
        Err(e) => return Err(e.into()),
    }
    let finished: HashSet<String> = done.iter().map(Record::id).collect();
    let todo: Vec<&T> = tasks
        .iter()
        .filter(|t| !finished.contains(&id(t)))
        .collect();
    eprintln!(
        "{}: {} tasks, {} already done, {} to run",
        out.display(),
        tasks.len(),
        tasks.len() - todo.len(),
        todo.len()
    );
    if !todo.is_empty() {
        let mut file = std::fs::OpenOptions::new().append(true).open(out)?;
        // A run killed mid-line leaves a partial line: start ours on a fresh one.
        let ends_clean = std::fs::read(out)?.last().is_none_or(|&b| b == b'\n');
        if !ends_clean {
            writeln!(file)?;
        }
        let bar = indicatif::ProgressBar::new(todo.len() as u64);
        let tty = std::io::stderr().is_terminal();
        if tty {
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} [{elapsed_precise} eta {eta_precise}] {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
        } else {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let start = Instant::now();
        let mut new: Vec<R> = Vec::new();
        let mut reported = 0;
        for chunk in todo.chunks(batch.max(1)) {
            let rs = work(chunk)?;
            anyhow::ensure!(
                rs.len() == chunk.len(),
                "a batch returned {} results for {} tasks",
                rs.len(),
                chunk.len()
            );
            for r in rs {
                writeln!(file, "{}", serde_json::to_string(&r)?)?;
                new.push(r);
            }
            bar.inc(chunk.len() as u64);
            let line = progress_line(&new);
            bar.set_message(line.clone());
            let n = new.len();
            if !tty && (n >= reported + 25 || n == todo.len()) {
                reported = n;
                let per = start.elapsed().as_secs_f64() / n as f64;
                eprintln!(
                    "  {n}/{} done, {per:.2} s/task, eta {:.0} s, {line}",
                    todo.len(),
                    per * (todo.len() - n) as f64
                );
            }
        }
        bar.finish_and_clear();
        done.extend(new);
    }
    // In task order, only the selected tasks (an earlier, larger run may have done more).
    let mut by_id: std::collections::HashMap<String, R> =
        done.into_iter().map(|r| (r.id(), r)).collect();
    Ok(tasks.iter().filter_map(|t| by_id.remove(&id(t))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct R {
        id: String,
        v: u32,
    }
    impl Record for R {
        fn id(&self) -> String {
            self.id.clone()
        }
    }

    #[test]
    fn shards_seeds_and_limits() {
        let all: Vec<u32> = (0..20).collect();
        let sel = |shard, seed, limit| Selection { shard, seed, limit }.apply(all.clone());
        assert_eq!(sel(Some((1, 5)), None, None), vec![1, 6, 11, 16]);
        assert_eq!(sel(None, None, Some(3)), vec![0, 1, 2]);
        let a = sel(None, Some(7), Some(5));
        assert_eq!(a, sel(None, Some(7), Some(5)), "a seed gives one order");
        assert_ne!(a, sel(None, Some(8), Some(5)));
        assert_ne!(a, vec![0, 1, 2, 3, 4]);
        assert!(parse_shard("5/5").is_err() && parse_shard("0/0").is_err());
    }

    #[test]
    fn an_interrupted_run_resumes_without_redoing_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("r.jsonl");
        let meta = serde_json::json!({"bench": "t"});
        let tasks: Vec<u32> = (0..6).collect();
        let id = |t: &u32| t.to_string();
        // The first run dies after three tasks.
        let mut calls = 0;
        let first = run_tasks(
            &out,
            &meta,
            &tasks,
            id,
            |t| {
                calls += 1;
                if *t == 3 {
                    anyhow::bail!("interrupted")
                }
                Ok(R {
                    id: t.to_string(),
                    v: t * 10,
                })
            },
            |_| String::new(),
        );
        assert!(first.is_err());
        assert_eq!(calls, 4);
        // And left half a line behind.
        let mut f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
        write!(f, "{{\"id\":\"3\",\"v\"").unwrap();
        let mut ran = Vec::new();
        let all = run_tasks(
            &out,
            &meta,
            &tasks,
            id,
            |t| {
                ran.push(*t);
                Ok(R {
                    id: t.to_string(),
                    v: t * 10,
                })
            },
            |_| String::new(),
        )
        .unwrap();
        assert_eq!(ran, vec![3, 4, 5], "only unfinished tasks run again");
        assert_eq!(
            all.iter().map(|r| r.v).collect::<Vec<_>>(),
            vec![0, 10, 20, 30, 40, 50]
        );
        // Another run's file is refused.
        let other = run_tasks(
            &out,
            &serde_json::json!({"bench": "other"}),
            &tasks,
            id,
            |t| {
                Ok(R {
                    id: t.to_string(),
                    v: 0,
                })
            },
            |_| String::new(),
        );
        assert!(other.unwrap_err().to_string().contains("another run"));
    }
}
