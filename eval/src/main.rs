//! `nib-eval`: benchmarks through the same completion pipeline the editor uses.

use clap::{Parser, Subcommand};
use nib_eval::humaneval;
use nib_eval::run::{run_batches, run_tasks, Record, Selection};
use nib_eval::santacoder::{self, Outcome};
use nib_lsp::{Completer, CompleterConfig, CompletionRequest, Multiline};
use nib_model::{BackendKind, CancelToken};
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "nib-eval", about = "Offline evaluation of nib")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// SantaCoder FIM exact match (Python, Java, JavaScript), scored as the Qwen2.5-Coder report.
    SantacoderFim {
        /// The task file (default: ../shared/benchmarks/santacoder-fim.jsonl.gz beside the repo).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Only the first N tasks of each language, in file order.
        #[arg(long)]
        per_language: Option<usize>,
        /// Results, one JSON object per task; tasks already there are not run again.
        #[arg(long, default_value = "eval/reports/santacoder-fim.jsonl")]
        out: PathBuf,
        /// GGUF model (default: $NIB_MODEL, else the default model).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value = "cpu")]
        backend: BackendKind,
    },
    /// HumanEval infilling (1033 single-line or 5815 multi-line tasks), executed: pass@1 and exact match.
    HumanevalInfill {
        #[arg(long, value_enum, default_value = "single")]
        kind: humaneval::Kind,
        /// HumanEval.jsonl.gz (default: ../shared/benchmarks beside the repo).
        #[arg(long)]
        data: Option<PathBuf>,
        #[command(flatten)]
        select: Selection,
        /// Results, one JSON object per task (default: eval/reports/humaneval-KIND.jsonl).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// HumanEval-X Rust single-line infilling (2198 tasks), compiled and tested with cargo.
    HumanevalRust {
        /// humaneval-x-rust.jsonl.gz (default: ../shared/benchmarks beside the repo).
        #[arg(long)]
        data: Option<PathBuf>,
        #[command(flatten)]
        select: Selection,
        /// Results (default: eval/reports/humaneval-rust.jsonl).
        #[arg(long, default_value = "eval/reports/humaneval-rust.jsonl")]
        out: PathBuf,
        /// The prepared crate (default: nib's cache dir, eval/humaneval-rust).
        #[arg(long)]
        crate_dir: Option<PathBuf>,
        /// Programs compiled together.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Typing replay through a real `nib serve`: latency, model calls, typing-through, keystrokes saved.
    Replay {
        /// Source files to type into (real files; see the README for the set the figures use).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Characters typed per second.
        #[arg(long, default_value_t = 8.0)]
        cps: f64,
        /// Characters typed per file.
        #[arg(long, default_value_t = 400)]
        chars: usize,
        /// Where typing starts, as a fraction of each file.
        #[arg(long, default_value_t = 0.5)]
        start: f64,
        /// Server settings as JSON (initializationOptions), e.g. '{"debounceMs": 50}'.
        #[arg(long, default_value = "{}")]
        settings: String,
        /// The nib binary (default: next to nib-eval).
        #[arg(long)]
        nib: Option<PathBuf>,
        /// GGUF model (default: $NIB_MODEL, else the default model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Per-file results and the summary, as JSON lines.
        #[arg(long, default_value = "eval/reports/replay.jsonl")]
        out: PathBuf,
    },
}

/// Which model runs the tasks.
#[derive(clap::Args, Clone)]
struct ModelArgs {
    /// GGUF model (default: $NIB_MODEL, else the default model).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
}

impl ModelArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        Ok(match &self.model {
            Some(m) => m.clone(),
            None => nib_model::fetch::model_from_env()?,
        })
    }

    /// What the results file records about the model: its file name and size.
    fn describe(&self) -> anyhow::Result<serde_json::Value> {
        let path = self.path()?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(serde_json::json!({
            "model": path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "model_bytes": size,
            "backend": format!("{:?}", self.backend).to_lowercase(),
        }))
    }

    /// A completer for whole-task prompts: the benchmark's text is never cut.
    fn completer(&self, max_tokens: usize) -> anyhow::Result<Completer> {
        let engine = nib_model::load_backend(self.backend, &self.path()?)?;
        let config = CompleterConfig {
            prefix_tokens: 4096,
            suffix_tokens: 4096,
            max_tokens_single: max_tokens,
            max_tokens_multi: max_tokens,
            ..Default::default()
        };
        Ok(Completer::new(engine, config)?)
    }
}

fn default_data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/benchmarks")
        .join(name)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nib-eval: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::SantacoderFim {
            data,
            per_language,
            out,
            model,
            backend,
        } => santacoder_fim(data, per_language, out, model, backend),
        Command::HumanevalInfill {
            kind,
            data,
            select,
            out,
            model,
        } => humaneval_infill(kind, data, select, out, model),
        Command::HumanevalRust {
            data,
            select,
            out,
            crate_dir,
            batch,
            model,
        } => humaneval_rust(data, select, out, crate_dir, batch, model),
        Command::Replay {
            files,
            cps,
            chars,
            start,
            settings,
            nib,
            model,
            out,
        } => {
            let params = nib_eval::replay::ReplayParams {
                cps,
                chars,
                start,
                ..Default::default()
            };
            replay(files, params, &settings, nib, model, out)
        }
    }
}

fn replay(
    files: Vec<PathBuf>,
    params: nib_eval::replay::ReplayParams,
    settings: &str,
    nib: Option<PathBuf>,
    model: Option<PathBuf>,
    out: PathBuf,
) -> anyhow::Result<()> {
    use nib_eval::replay;
    let settings: serde_json::Value = serde_json::from_str(settings)?;
    let model = match model {
        Some(m) => m,
        None => nib_model::fetch::model_from_env()?,
    };
    let nib = nib.unwrap_or_else(replay::default_nib);
    let root = std::env::current_dir()?;
    let mut client = replay::start_server(&nib, &model, &root, settings.clone());
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)?;
    let mut results = Vec::new();
    for (i, path) in files.iter().enumerate() {
        eprintln!("[{}/{}] typing into {}", i + 1, files.len(), path.display());
        let r = replay::replay_file(&mut client, path, &params)?;
        eprintln!(
            "    {} keystrokes, {} of {} chars accepted ({:.1}%), p50 {:.0} ms",
            r.keystrokes,
            r.accepted_chars,
            r.chars,
            100.0 * r.keystrokes_saved(),
            replay::quantile(&r.latencies_ms, 0.5)
        );
        writeln!(f, "{}", serde_json::to_string(&r)?)?;
        results.push(r);
    }
    let s = replay::summarize(&results);
    writeln!(
        f,
        "{}",
        serde_json::json!({"summary": s, "cps": params.cps, "chars": params.chars, "settings": settings})
    )?;
    println!("| files | chars | keystrokes | keystrokes saved | suggestions | p50 ms | p95 ms | p99 ms | model calls / keystroke | typing-through hits |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {} | {} | {:.1}% | {} | {:.0} | {:.0} | {:.0} | {:.3} | {:.1}% |",
        s.files,
        s.chars,
        s.keystrokes,
        100.0 * s.keystrokes_saved,
        s.suggestions,
        s.p50_ms,
        s.p95_ms,
        s.p99_ms,
        s.model_calls_per_keystroke,
        100.0 * s.typing_through_hit_rate
    );
    client.call("shutdown", serde_json::Value::Null);
    client.notify("exit", serde_json::Value::Null);
    Ok(())
}

fn santacoder_fim(
    data: Option<PathBuf>,
    per_language: Option<usize>,
    out: PathBuf,
    model: Option<PathBuf>,
    backend: BackendKind,
) -> anyhow::Result<()> {
    let data = data.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/benchmarks/santacoder-fim.jsonl.gz")
    });
    let tasks = santacoder::subset(santacoder::load(&data)?, per_language);

    // Resume: keep what an earlier run finished.
    let mut outcomes: Vec<Outcome> = match std::fs::read_to_string(&out) {
        Ok(text) => text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    // Task names repeat across languages: a task is its language and its name.
    let wanted: HashSet<(&str, &str)> = tasks.iter().map(|t| t.key()).collect();
    outcomes.retain(|o| wanted.contains(&o.key()));
    let done: HashSet<(String, String)> = outcomes
        .iter()
        .map(|o| (o.language.clone(), o.name.clone()))
        .collect();
    let todo: Vec<_> = tasks
        .iter()
        .filter(|t| !done.contains(&(t.language.clone(), t.name.clone())))
        .collect();
    eprintln!(
        "santacoder-fim: {} tasks, {} already done, {} to run",
        tasks.len(),
        done.len(),
        todo.len()
    );

    if !todo.is_empty() {
        let model = match model {
            Some(m) => m,
            None => nib_model::fetch::model_from_env()?,
        };
        let engine = nib_model::load_backend(backend, &model)?;
        // The benchmark's protocol: whole prompt and suffix, 64 tokens, one line.
        let config = CompleterConfig {
            prefix_tokens: 4096,
            suffix_tokens: 4096,
            max_tokens_single: 64,
            ..Default::default()
        };
        let mut completer = Completer::new(engine, config)?;
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)?;
        let start = Instant::now();
        for (i, task) in todo.iter().enumerate() {
            let text = format!("{}{}", task.prompt, task.suffix);
            let req = CompletionRequest {
                repo_name: "",
                path: "", // the plain FIM layout, as the report used
                text: &text,
                cursor: task.prompt.len(),
                multiline: Multiline::Never,
                max_tokens: None,
                files: &[],
            };
            let t = Instant::now();
            let c = completer.complete(&req, &CancelToken::new())?;
            let outcome = Outcome {
                name: task.name.clone(),
                language: task.language.clone(),
                exact: santacoder::score(&c.text, &task.canonical_solution),
                completion: c.text,
                prompt_tokens: c.prompt_tokens,
                latency_ms: t.elapsed().as_secs_f64() * 1e3,
            };
            writeln!(file, "{}", serde_json::to_string(&outcome)?)?;
            outcomes.push(outcome);
            let n = i + 1;
            if n % 10 == 0 || n == todo.len() {
                let per = start.elapsed().as_secs_f64() / n as f64;
                let exact = outcomes.iter().filter(|o| o.exact).count();
                eprintln!(
                    "  {n}/{} done, {:.1} s/task, eta {:.0} s, exact so far {exact}/{}",
                    todo.len(),
                    per,
                    per * (todo.len() - n) as f64,
                    outcomes.len()
                );
            }
        }
    }

    println!("| language | tasks | exact match |");
    println!("| --- | ---: | ---: |");
    for (lang, n, x) in santacoder::table(&outcomes) {
        println!(
            "| {lang} | {n} | {:.1} |",
            100.0 * x as f64 / n.max(1) as f64
        );
    }
    let mean = outcomes.iter().map(|o| o.latency_ms).sum::<f64>() / outcomes.len().max(1) as f64;
    println!("\nmean latency per task: {:.0} ms", mean);
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct InfillOutcome {
    id: String,
    completion: String,
    passed: bool,
    exact: bool,
    verdict: nib_eval::sandbox::Verdict,
    prompt_tokens: usize,
    latency_ms: f64,
}

impl Record for InfillOutcome {
    fn id(&self) -> String {
        self.id.clone()
    }
}

fn humaneval_infill(
    kind: humaneval::Kind,
    data: Option<PathBuf>,
    select: Selection,
    out: Option<PathBuf>,
    model: ModelArgs,
) -> anyhow::Result<()> {
    let name = match kind {
        humaneval::Kind::Single => "single",
        humaneval::Kind::Multi => "multi",
    };
    let data = data.unwrap_or_else(|| default_data("HumanEval.jsonl.gz"));
    let out = out.unwrap_or_else(|| PathBuf::from(format!("eval/reports/humaneval-{name}.jsonl")));
    let problems: Vec<humaneval::Problem> = humaneval::load_jsonl_gz(&data)?;
    let tasks = select.apply(humaneval::tasks(&problems, kind));
    let max_tokens = match kind {
        humaneval::Kind::Single => 64,
        humaneval::Kind::Multi => 256,
    };
    let meta = serde_json::json!({
        "bench": format!("humaneval-infill-{name}"),
        "model": model.describe()?,
        "max_tokens": max_tokens,
    });
    let sandbox = nib_eval::sandbox::Sandbox::new();
    let mut completer = None;
    let results = run_tasks(
        &out,
        &meta,
        &tasks,
        |t| t.id.clone(),
        |task| {
            let c = match &mut completer {
                Some(c) => c,
                None => completer.insert(model.completer(max_tokens)?),
            };
            let text = format!("{}{}", task.prefix, task.suffix);
            let req = CompletionRequest {
                repo_name: "",
                path: "",
                text: &text,
                cursor: task.prefix.len(),
                multiline: match kind {
                    humaneval::Kind::Single => Multiline::Never,
                    humaneval::Kind::Multi => Multiline::Always,
                },
                max_tokens: None,
                files: &[],
            };
            let t = Instant::now();
            let completion = c.complete(&req, &CancelToken::new())?;
            let latency_ms = t.elapsed().as_secs_f64() * 1e3;
            let filled = humaneval::fill(kind, &completion.text);
            let run = humaneval::execute(&sandbox, task, &filled);
            Ok(InfillOutcome {
                id: task.id.clone(),
                passed: run.verdict == nib_eval::sandbox::Verdict::Passed,
                exact: humaneval::exact(task, &filled),
                verdict: run.verdict,
                completion: completion.text,
                prompt_tokens: completion.prompt_tokens,
                latency_ms,
            })
        },
        |done| {
            let p = done.iter().filter(|r| r.passed).count();
            format!("pass@1 {:.1}%", 100.0 * p as f64 / done.len().max(1) as f64)
        },
    )?;
    let n = results.len().max(1) as f64;
    let passed = results.iter().filter(|r| r.passed).count();
    let exact = results.iter().filter(|r| r.exact).count();
    println!("| benchmark | tasks | pass@1 | exact match |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| humaneval-infill {name} {} | {} | {:.1} | {:.1} |",
        select.describe(),
        results.len(),
        100.0 * passed as f64 / n,
        100.0 * exact as f64 / n
    );
    Ok(())
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RustOutcome {
    id: String,
    completion: String,
    brace_only: bool,
    passed: bool,
    exact: bool,
    verdict: nib_eval::sandbox::Verdict,
    /// The compiler's or the tests' last words when it did not pass.
    why: String,
    prompt_tokens: usize,
    latency_ms: f64,
}

impl Record for RustOutcome {
    fn id(&self) -> String {
        self.id.clone()
    }
}

fn humaneval_rust(
    data: Option<PathBuf>,
    select: Selection,
    out: PathBuf,
    crate_dir: Option<PathBuf>,
    batch: usize,
    model: ModelArgs,
) -> anyhow::Result<()> {
    use nib_eval::humaneval_rust as hr;
    let data = data.unwrap_or_else(|| default_data("humaneval-x-rust.jsonl.gz"));
    let problems: Vec<hr::Problem> = humaneval::load_jsonl_gz(&data)?;
    let tasks = select.apply(hr::tasks(&problems));
    let meta = serde_json::json!({
        "bench": "humaneval-rust-single",
        "model": model.describe()?,
        "max_tokens": 64,
    });
    let krate = hr::Crate::prepare(&crate_dir.unwrap_or_else(hr::default_crate_dir))?;
    let sandbox = nib_eval::sandbox::Sandbox::new();
    let mut completer = None;
    let results = run_batches(
        &out,
        &meta,
        &tasks,
        |t| t.id.clone(),
        batch,
        |chunk| {
            let c = match &mut completer {
                Some(c) => c,
                None => completer.insert(model.completer(64)?),
            };
            let mut done = Vec::new();
            for task in chunk {
                let text = format!("{}{}", task.prefix, task.suffix);
                let req = CompletionRequest {
                    repo_name: "",
                    path: "",
                    text: &text,
                    cursor: task.prefix.len(),
                    multiline: Multiline::Never,
                    max_tokens: None,
                    files: &[],
                };
                let t = Instant::now();
                let completion = c.complete(&req, &CancelToken::new())?;
                done.push((completion, t.elapsed().as_secs_f64() * 1e3));
            }
            let filled: Vec<String> = done
                .iter()
                .map(|(c, _)| humaneval::fill(humaneval::Kind::Single, &c.text))
                .collect();
            let programs: Vec<String> = chunk
                .iter()
                .zip(&filled)
                .map(|(t, f)| hr::program(t, f))
                .collect();
            let checked = krate.check(&sandbox, &programs);
            Ok(chunk
                .iter()
                .zip(done)
                .zip(filled)
                .zip(checked)
                .map(|(((task, (c, ms)), f), (verdict, output))| {
                    let passed = verdict == nib_eval::sandbox::Verdict::Passed;
                    RustOutcome {
                        id: task.id.clone(),
                        brace_only: task.brace_only(),
                        exact: f.trim() == task.middle.trim(),
                        why: if passed { String::new() } else { output },
                        passed,
                        verdict,
                        completion: c.text,
                        prompt_tokens: c.prompt_tokens,
                        latency_ms: ms,
                    }
                })
                .collect())
        },
        |done| {
            let p = done.iter().filter(|r| r.passed).count();
            format!("pass@1 {:.1}%", 100.0 * p as f64 / done.len().max(1) as f64)
        },
    )?;
    let rate = |rs: &[&RustOutcome]| {
        100.0 * rs.iter().filter(|r| r.passed).count() as f64 / rs.len().max(1) as f64
    };
    let all: Vec<&RustOutcome> = results.iter().collect();
    let no_braces: Vec<&RustOutcome> = results.iter().filter(|r| !r.brace_only).collect();
    println!(
        "| benchmark | tasks | pass@1 | tasks without brace-only lines | pass@1 without them |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| humaneval-rust single {} | {} | {:.1} | {} | {:.1} |",
        select.describe(),
        all.len(),
        rate(&all),
        no_braces.len(),
        rate(&no_braces)
    );
    Ok(())
}
