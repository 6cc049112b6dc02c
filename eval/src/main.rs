//! `nib-eval`: benchmarks through the same completion pipeline the editor uses.

use clap::{Parser, Subcommand};
use nib_eval::anchor::{self, Answerer};
use nib_eval::humaneval;
use nib_eval::report;
use nib_eval::run::{run_batches, run_tasks, Record, Selection};
use nib_eval::santacoder::{self, Outcome};
use nib_lsp::{Completer, CompleterConfig, CompletionRequest, Multiline};
use nib_model::BackendKind;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// How another run's figures go beside a summary (`Summary::beside`, `Summary::beside_model`).
type BesideFn = fn(&report::Summary, &report::Summary, &str) -> report::Summary;

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
        /// Only the first N tasks of each language, in file order (before --shard/--limit).
        #[arg(long)]
        per_language: Option<usize>,
        #[command(flatten)]
        select: Selection,
        /// Results, one JSON object per task; tasks already there are not run again.
        #[arg(long, default_value = "eval/reports/santacoder-fim.jsonl")]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
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
    /// Repository-level Rust line completion (CrossCodeEval style) from real crates, with no
    /// cross-file context, with nib's context builder, and with the defining item (oracle).
    RepoRust {
        #[command(flatten)]
        args: RepoRustArgs,
        #[command(flatten)]
        select: Selection,
        #[arg(long, default_value = "eval/reports/repo-rust.jsonl")]
        out: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Two summaries (`eval/reports/NAME.json`) side by side, with the differences, and task by
    /// task where both results files (`NAME.jsonl`) are there: which tasks each got right alone.
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Tasks shown each way.
        #[arg(long, default_value_t = 5)]
        examples: usize,
        /// Store the task-by-task counts in A's summary, for the README's notes (A the anchor's
        /// run, `NAME-llama.json`, B nib's).
        #[arg(long)]
        save: bool,
    },
    /// Rewrites the README's results section from the summaries in the reports directory.
    Readme {
        #[arg(long, default_value = "README.md")]
        readme: PathBuf,
        #[arg(long, default_value = "eval/reports")]
        reports: PathBuf,
        /// The summaries to include, in order.
        #[arg(default_values_t = ["santacoder-fim".to_string(), "humaneval-single".to_string(), "humaneval-multi".to_string(), "humaneval-rust".to_string(), "repo-rust-1024".to_string(), "repo-rust-2-1024".to_string(), "repo-rust".to_string(), "replay".to_string(), "replay-polyglot".to_string()])]
        names: Vec<String>,
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
    /// Tokens of text after the cursor in the FIM benchmarks' prompts, at most (default: all of
    /// it); the server's window takes `suffixTokens` (64).
    #[arg(long)]
    fim_suffix_tokens: Option<usize>,
    /// Answer through llama.cpp instead of nib (the anchor): starts this `llama-server` on
    /// loopback with the same model file and asks its `/infill`
    /// (`scripts/get-llama-server.sh` builds one; `--llama-server default` takes that one).
    #[arg(long)]
    llama_server: Option<PathBuf>,
    /// Answer through an inference server that is already running: a URL ending in `/infill`
    /// (llama.cpp) or `/v1/completions` (nib's exact prompt tokens).
    #[arg(long, conflicts_with = "llama_server")]
    anchor_url: Option<String>,
    /// Which endpoint of the started `--llama-server` answers.
    #[arg(long, value_enum, default_value_t = anchor::Endpoint::Infill)]
    anchor_endpoint: anchor::Endpoint,
    /// The anchor's text goes through nib's block limit and post-processing, as nib's own does
    /// (default: scored raw, as a llama.cpp user gets it).
    #[arg(long)]
    anchor_rules: bool,
    /// Token healing (nib only): the prompt's last token is taken off and written back by the
    /// model under a constraint.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    token_healing: bool,
    /// The text just before the cursor after the prompt's middle marker (nib only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    line_in_middle: bool,
    /// Whole lines before the cursor's line that go into the middle as well (nib only;
    /// default: the completer's, 12).
    #[arg(long)]
    middle_lines: Option<usize>,
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
        let anchor = self.anchor_name();
        let mut d = serde_json::json!({
            "model": path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "model_bytes": size,
            "backend": format!("{:?}", self.backend).to_lowercase(),
            "fim_suffix_tokens": self.fim_suffix_tokens,
            "anchor": anchor,
        });
        if anchor.is_some() {
            d["anchor_rules"] = self.anchor_rules.into();
        } else {
            d["token_healing"] = self.token_healing.into();
            d["line_in_middle"] = self.line_in_middle.into();
            let middle_lines = self
                .middle_lines
                .unwrap_or(CompleterConfig::default().middle_lines);
            d["middle_lines"] = middle_lines.into();
        }
        Ok(d)
    }

    /// Who answers when it is not nib: `llama.cpp /infill`, or the URL given.
    fn anchor_name(&self) -> Option<String> {
        match (&self.llama_server, &self.anchor_url) {
            (Some(_), _) => Some(format!("llama.cpp {}", self.anchor_endpoint.path())),
            (None, Some(url)) => Some(url.clone()),
            (None, None) => None,
        }
    }

    /// An answerer for whole-task prompts: the benchmark's text is never cut.
    fn completer(&self, max_tokens: usize) -> anyhow::Result<Answerer> {
        self.completer_with(CompleterConfig {
            prefix_tokens: 4096,
            suffix_tokens: self.fim_suffix_tokens.unwrap_or(4096),
            max_tokens_single: max_tokens,
            max_tokens_multi: max_tokens,
            ..Default::default()
        })
    }

    /// nib with `config`, or the anchor windowed by `config`.
    fn completer_with(&self, config: CompleterConfig) -> anyhow::Result<Answerer> {
        let path = self.path()?;
        let config = CompleterConfig {
            token_healing: self.token_healing,
            line_in_middle: self.line_in_middle,
            middle_lines: self.middle_lines.unwrap_or(config.middle_lines),
            ..config
        };
        let (url, server) = match (&self.llama_server, &self.anchor_url) {
            (None, None) => {
                let engine = nib_model::load_backend(self.backend, &path)?;
                return Ok(Answerer::Nib(Completer::new(engine, config)?));
            }
            (Some(bin), _) => {
                let bin = if bin.as_os_str() == "default" {
                    anchor::default_llama_server()
                } else {
                    bin.clone()
                };
                eprintln!("starting {} on loopback", bin.display());
                let server = anchor::LlamaServer::start(&bin, &path)?;
                (server.url(self.anchor_endpoint), Some(server))
            }
            (None, Some(url)) => (url.clone(), None),
        };
        let remote = nib_model::remote::RemoteConfig::new(
            &url,
            None,
            None,
            std::time::Duration::from_secs(600),
        )?;
        let spec = nib_lsp::completer::ModelSpec {
            path,
            backend: BackendKind::Remote,
            remote: Some(remote.clone()),
        };
        Ok(Answerer::Anchor {
            planner: Completer::load(&spec, config)?,
            config: remote,
            rules: self.anchor_rules,
            _server: server,
        })
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
            select,
            out,
            model,
        } => santacoder_fim(data, per_language, select, out, model),
        Command::HumanevalInfill {
            kind,
            data,
            select,
            out,
            model,
        } => humaneval_infill(kind, data, select, out, model),
        Command::RepoRust {
            args,
            select,
            out,
            model,
        } => repo_rust(args, select, out, model),
        Command::Compare {
            a,
            b,
            examples,
            save,
        } => {
            let (mut sa, sb) = (report::Summary::read(&a)?, report::Summary::read(&b)?);
            print!("{}", report::compare(&sa, &sb));
            let (ja, jb) = (a.with_extension("jsonl"), b.with_extension("jsonl"));
            if !(ja.exists() && jb.exists()) {
                eprintln!(
                    "no task-by-task comparison: {} and {} are both needed",
                    ja.display(),
                    jb.display()
                );
                return Ok(());
            }
            let (ra, rb) = (report::read_results(&ja)?, report::read_results(&jb)?);
            println!();
            print!(
                "{}",
                report::versus_markdown(&sa.name, &sb.name, &ra, &rb, examples)
            );
            if save {
                sa.versus = Some(report::versus_markdown(&sa.name, &sb.name, &ra, &rb, 0));
                std::fs::write(&a, serde_json::to_string_pretty(&sa)? + "\n")?;
                eprintln!("stored the comparison in {}", a.display());
            }
            Ok(())
        }
        Command::Readme {
            readme,
            reports,
            names,
        } => {
            let mut summaries = Vec::new();
            for n in &names {
                let p = reports.join(format!("{n}.json"));
                // llama.cpp's run of the same tasks, where there is one, goes beside nib's, and
                // so does the larger model's (`nib model pull large`).
                let besides: [(&str, &str, BesideFn); 2] = [
                    ("llama", "llama.cpp", report::Summary::beside),
                    ("1.5b", "1.5B", report::Summary::beside_model),
                ];
                if p.exists() {
                    let mut s = report::Summary::read(&p)?;
                    // Only a run of the same task selection goes beside (a file of the same
                    // name may hold an older run of another shard).
                    for (suffix, who, put) in besides {
                        let other = reports.join(format!("{n}-{suffix}.json"));
                        if !other.exists() {
                            continue;
                        }
                        let o = report::Summary::read(&other)?;
                        if s.same_tasks_as(&o) {
                            s = put(&s, &o, who);
                        } else {
                            eprintln!(
                                "{} ran other tasks ({}); not put beside {n}",
                                other.display(),
                                o.command
                            );
                        }
                    }
                    summaries.push(s);
                } else {
                    eprintln!("{} is missing: run that benchmark first", p.display());
                }
            }
            let text = std::fs::read_to_string(&readme)?;
            std::fs::write(&readme, report::splice_readme(&text, &summaries)?)?;
            eprintln!("{}: {} summaries", readme.display(), summaries.len());
            Ok(())
        }
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
    let latencies: Vec<f64> = results
        .iter()
        .flat_map(|r| r.latencies_ms.iter().copied())
        .collect();
    let summary = report::Summary {
        // `replay` for the default results file; another file set names its own
        // (`--out eval/reports/replay-polyglot.jsonl` gives `replay-polyglot`).
        name: out
            .file_stem()
            .map_or("replay".into(), |n| n.to_string_lossy().into_owned()),
        title: format!(
            "Typing replay through `nib serve` ({} {} files, {} characters typed at {} chars/s)",
            s.files,
            languages(&files),
            s.chars,
            params.cps
        ),
        command: report::command_line(),
        meta: serde_json::json!({"settings": settings, "cps": params.cps, "chars": params.chars, "start": params.start}),
        columns: vec![
            "keystrokes saved %".into(),
            "p50 ms".into(),
            "p95 ms".into(),
            "p99 ms".into(),
            "model calls per keystroke".into(),
            "typing-through hits %".into(),
        ],
        rows: vec![report::Row {
            label: "all".into(),
            tasks: s.files,
            metrics: [
                ("keystrokes saved %", 100.0 * s.keystrokes_saved),
                ("p50 ms", s.p50_ms),
                ("p95 ms", s.p95_ms),
                ("p99 ms", s.p99_ms),
                ("model calls per keystroke", s.model_calls_per_keystroke),
                ("typing-through hits %", 100.0 * s.typing_through_hit_rate),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        }],
        latencies_ms: latencies,
        versus: None,
        notes: vec![
            format!(
                "{} keystrokes, {} suggestions shown. CodeCompose's multi-line rollout saved 17% of keystrokes.",
                s.keystrokes, s.suggestions
            ),
            replay_breakdown(&s),
        ],
    };
    finish(&out, summary)?;
    client.call("shutdown", serde_json::Value::Null);
    client.notify("exit", serde_json::Value::Null);
    Ok(())
}

/// The languages of `files` (nib's own detection), in order of first appearance: `rust/python`.
fn languages(files: &[PathBuf]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for f in files {
        let name = nib_indexer::Lang::detect(f, "").map_or("other", nib_indexer::Lang::name);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.join("/")
}

/// The generations' time part by part, as a Markdown table, and how requests ended.
fn replay_breakdown(s: &nib_eval::replay::Summary) -> String {
    let mut t = String::from(
        "Where a generation's time goes (server-side, requests that ran the model to the end):\n\n| part | mean | p50 | p95 |\n| --- | ---: | ---: | ---: |\n",
    );
    for p in &s.parts {
        t += &format!(
            "| {} | {:.1} | {:.1} | {:.1} |\n",
            p.name, p.mean, p.p50, p.p95
        );
    }
    // Each outcome by its name in the JSON (`typed_through`).
    let ends: Vec<String> = s
        .outcomes
        .iter()
        .map(|(k, v)| format!("{} {v}", serde_json::json!(k).as_str().unwrap_or("?")))
        .collect();
    t += &format!("\nRequests that reached the engine: {}.", ends.join(", "));
    t
}

fn santacoder_fim(
    data: Option<PathBuf>,
    per_language: Option<usize>,
    select: Selection,
    out: PathBuf,
    model: ModelArgs,
) -> anyhow::Result<()> {
    let data = data.unwrap_or_else(|| default_data("santacoder-fim.jsonl.gz"));
    let tasks = select.apply(santacoder::subset(santacoder::load(&data)?, per_language));
    let meta = serde_json::json!({
        "bench": "santacoder-fim",
        "model": model.describe()?,
        "max_tokens": 64,
    });
    let mut completer = None;
    let outcomes = run_tasks(
        &out,
        &meta,
        &tasks,
        |t| format!("{}/{}", t.language, t.name),
        |task| {
            let c = match &mut completer {
                Some(c) => c,
                None => completer.insert(model.completer(64)?),
            };
            let (c, latency_ms) = fim(c, &task.prompt, &task.suffix, Multiline::Never)?;
            Ok(Outcome {
                name: task.name.clone(),
                language: task.language.clone(),
                exact: santacoder::score(&c.text, &task.canonical_solution),
                completion: c.text,
                prompt_tokens: c.prompt_tokens,
                latency_ms,
            })
        },
        |done| {
            let x = done.iter().filter(|o| o.exact).count();
            format!("exact {:.1}%", 100.0 * x as f64 / done.len().max(1) as f64)
        },
    )?;
    let rows = santacoder::table(&outcomes)
        .into_iter()
        .map(|(lang, n, x)| {
            let lat: Vec<f64> = outcomes
                .iter()
                .filter(|o| lang == "all" || o.language == lang)
                .map(|o| o.latency_ms)
                .collect();
            report::Row {
                label: lang,
                tasks: n,
                metrics: [
                    (
                        "exact match".to_string(),
                        100.0 * x as f64 / n.max(1) as f64,
                    ),
                    ("latency ms".to_string(), mean(&lat)),
                ]
                .into_iter()
                .collect(),
            }
        })
        .collect();
    finish(
        &out,
        report::Summary {
            name: stem(&out, "santacoder-fim"),
            title: format!(
                "SantaCoder FIM exact match ({} tasks{})",
                outcomes.len(),
                match select.describe() {
                    d if d.is_empty() => d,
                    d => format!(", {d}"),
                }
            ),
            command: report::command_line(),
            meta,
            columns: vec!["exact match".into(), "latency ms".into()],
            rows,
            latencies_ms: outcomes.iter().map(|o| o.latency_ms).collect(),
            versus: None,
            notes: vec![
                "Published for Qwen2.5-Coder-0.5B (base, bf16): py 70.3, java 78.1, js 81.2, all 77.7. The shipped file under llama.cpp, first 150 tasks of each language: 56.7 / 61.3 / 63.3 / 60.4 (`../shared/benchmarks/README.md`).".into(),
            ],
        },
    )
}

/// One completion of `prefix`…`suffix` in the plain FIM layout (no path, no other files: the
/// benchmarks' protocol), and its latency in ms.
fn fim(
    c: &mut Answerer,
    prefix: &str,
    suffix: &str,
    multiline: Multiline,
) -> anyhow::Result<(anchor::Answer, f64)> {
    let text = format!("{prefix}{suffix}");
    let req = CompletionRequest {
        repo_name: "",
        path: "",
        text: &text,
        cursor: prefix.len(),
        multiline,
        max_tokens: None,
        files: &[],
        own_chars: 0,
    };
    let t = Instant::now();
    let completion = c.answer(&req)?;
    Ok((completion, t.elapsed().as_secs_f64() * 1e3))
}

/// A summary's name: its results file's stem (`--out eval/reports/humaneval-single-llama.jsonl`
/// gives `humaneval-single-llama`), else the benchmark's own.
fn stem(out: &std::path::Path, default: &str) -> String {
    out.file_stem()
        .map_or(default.into(), |n| n.to_string_lossy().into_owned())
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Writes the summary beside the results file, prints its table and where the files went.
fn finish(out: &std::path::Path, summary: report::Summary) -> anyhow::Result<()> {
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let written = summary.write(dir)?;
    println!("{}", summary.markdown());
    for p in written {
        eprintln!("wrote {}", p.display());
    }
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
    let problems: Vec<humaneval::Problem> = nib_eval::run::load_jsonl_gz(&data)?;
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
            let multiline = match kind {
                humaneval::Kind::Single => Multiline::Never,
                humaneval::Kind::Multi => Multiline::Always,
            };
            let (completion, latency_ms) = fim(c, &task.prefix, &task.suffix, multiline)?;
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
    let rate = |f: &dyn Fn(&InfillOutcome) -> bool| {
        100.0 * results.iter().filter(|r| f(r)).count() as f64 / results.len().max(1) as f64
    };
    let latencies: Vec<f64> = results.iter().map(|r| r.latency_ms).collect();
    let row = report::Row {
        label: "all".into(),
        tasks: results.len(),
        metrics: [
            ("pass@1".to_string(), rate(&|r| r.passed)),
            ("exact match".to_string(), rate(&|r| r.exact)),
            ("latency ms".to_string(), mean(&latencies)),
        ]
        .into_iter()
        .collect(),
    };
    finish(
        &out,
        report::Summary {
            name: stem(&out, &format!("humaneval-{name}")),
            title: format!(
                "HumanEval {name}-line infilling, executed ({} tasks{})",
                results.len(),
                if select.describe().is_empty() { String::new() } else { format!(", {}", select.describe()) }
            ),
            command: report::command_line(),
            meta,
            columns: vec!["pass@1".into(), "exact match".into(), "latency ms".into()],
            rows: vec![row],
            latencies_ms: latencies,
            versus: None,
            notes: vec![
                "Published pass@1 (greedy, Code Llama paper): Code Llama 7B 74.1 single-line, 48.2 multi-line; InCoder-6B 69.0 / 38.6. The shipped file under llama.cpp, every 5th single-line task: 54.6 (`../shared/benchmarks/README.md`).".into(),
            ],
        },
    )
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
    let problems: Vec<hr::Problem> = nib_eval::run::load_jsonl_gz(&data)?;
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
                done.push(fim(c, &task.prefix, &task.suffix, Multiline::Never)?);
            }
            let filled: Vec<String> = done
                .iter()
                .map(|(c, _)| humaneval::fill(humaneval::Kind::Single, &c.text))
                .collect();
            let programs: Vec<String> = chunk
                .iter()
                .zip(&filled)
                .map(|(t, f)| humaneval::program(t, f))
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
                        brace_only: humaneval::brace_only(task),
                        exact: humaneval::exact(task, &f),
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
    let all: Vec<&RustOutcome> = results.iter().collect();
    let no_braces: Vec<&RustOutcome> = results.iter().filter(|r| !r.brace_only).collect();
    let row = |label: &str, rs: &[&RustOutcome]| {
        let n = rs.len().max(1) as f64;
        report::Row {
            label: label.into(),
            tasks: rs.len(),
            metrics: [
                (
                    "pass@1".to_string(),
                    100.0 * rs.iter().filter(|r| r.passed).count() as f64 / n,
                ),
                (
                    "exact match".to_string(),
                    100.0 * rs.iter().filter(|r| r.exact).count() as f64 / n,
                ),
            ]
            .into_iter()
            .collect(),
        }
    };
    finish(
        &out,
        report::Summary {
            name: stem(&out, "humaneval-rust"),
            title: format!(
                "HumanEval-X Rust single-line infilling, compiled and tested ({} tasks)",
                all.len()
            ),
            command: report::command_line(),
            meta,
            columns: vec!["pass@1".into(), "exact match".into()],
            rows: vec![
                row("all", &all),
                row("without brace-only lines", &no_braces),
            ],
            latencies_ms: results.iter().map(|r| r.latency_ms).collect(),
            versus: None,
            notes: vec![
                "Canonical solutions pass 163 of 164 (Rust/50 is written against rand 0.7).".into(),
            ],
        },
    )
}

#[derive(clap::Args)]
struct RepoRustArgs {
    /// The pinned crate list.
    #[arg(long, default_value = "eval/repo-rust-crates.txt")]
    crates: PathBuf,
    /// Tasks per crate, at most.
    #[arg(long, default_value_t = 25)]
    per_crate: usize,
    /// Which candidates of each crate become tasks.
    #[arg(long, default_value_t = 0)]
    task_seed: u64,
    /// Where cargo's fetch manifest is written (default: nib's cache dir, eval/repo-rust).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Tokens of the file before and after the cursor (the server's defaults are 1024/256;
    /// smaller windows keep a 2-core CPU run of 900 completions under an hour).
    #[arg(long, default_value_t = 256)]
    prefix_tokens: usize,
    #[arg(long, default_value_t = 64)]
    suffix_tokens: usize,
    /// Also write the selected tasks (JSON lines) here, to read what is measured.
    #[arg(long)]
    dump_tasks: Option<PathBuf>,
    /// Which conditions run, of `none`, `nib` and `oracle` (an anchor's run may take `none` alone:
    /// llama.cpp as its users get it, without repo context).
    #[arg(long, value_delimiter = ',', default_values_t = CONDITIONS.map(String::from))]
    conditions: Vec<String>,
    /// Characters of other-file context (default: the server's `otherFilesChars`); the index
    /// and the oracle get half, as in the server.
    #[arg(long)]
    context_chars: Option<usize>,
    /// Run no model: say, for each condition with context, how often it shows the definition of
    /// the identifier at the cursor (a snippet of the defining file names it), names that
    /// identifier at all and holds the target word for word, and how large it is. A cheap check
    /// of a context lever before a model run judges it.
    #[arg(long)]
    context_only: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RepoOutcome {
    id: String,
    task: String,
    condition: String,
    target: String,
    completion: String,
    scores: nib_eval::repo_rust::Scores,
    context_files: usize,
    context_chars: usize,
    prompt_tokens: usize,
    latency_ms: f64,
}

impl Record for RepoOutcome {
    fn id(&self) -> String {
        self.id.clone()
    }
}

const CONDITIONS: [&str; 3] = ["none", "nib", "oracle"];

fn repo_rust(
    args: RepoRustArgs,
    select: Selection,
    out: PathBuf,
    model: ModelArgs,
) -> anyhow::Result<()> {
    use nib_eval::repo_rust as rr;
    let specs = rr::read_list(
        &std::fs::read_to_string(&args.crates)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.crates.display()))?,
    )?;
    let scratch = args.scratch.clone().unwrap_or_else(|| {
        dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("nib/eval/repo-rust")
    });
    if let Some(c) = args
        .conditions
        .iter()
        .find(|c| !CONDITIONS.contains(&c.as_str()))
    {
        anyhow::bail!("unknown condition {c:?}: the conditions are {CONDITIONS:?}");
    }
    let crates = rr::fetch(&specs, &scratch)?;
    // Each crate: its src/ files, its index (built as the server builds it), its tasks.
    struct Krate {
        root: PathBuf,
        files: std::collections::HashMap<String, String>,
        index: nib_indexer::Index,
    }
    let mut krates = std::collections::HashMap::new();
    let mut tasks = Vec::new();
    for (spec, root) in &crates {
        let files: Vec<(PathBuf, String)> = nib_indexer::walk::source_files(root)
            .into_iter()
            .filter(|(_, rel)| rel.starts_with("src/") && rel.ends_with(".rs"))
            .collect();
        let (index, _) = nib_indexer::walk::build_files(
            root,
            &files,
            nib_indexer::walk::DEFAULT_MAX_BYTES,
            None,
            &|_| {},
        );
        let texts: Vec<(String, String)> = files
            .iter()
            .filter_map(|(abs, rel)| Some((rel.clone(), std::fs::read_to_string(abs).ok()?)))
            .collect();
        let name = format!("{}-{}", spec.name, spec.version);
        let t = rr::crate_tasks(&name, &texts, &index, args.per_crate, args.task_seed);
        eprintln!(
            "repo-rust: {name}: {} files, {} tasks",
            texts.len(),
            t.len()
        );
        tasks.extend(t);
        krates.insert(
            name,
            Krate {
                root: root.clone(),
                files: texts.into_iter().collect(),
                index,
            },
        );
    }
    let tasks = select.apply(tasks);
    if let Some(path) = &args.dump_tasks {
        let lines: Vec<String> = tasks
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?;
        std::fs::write(path, lines.join("\n") + "\n")?;
    }
    let runs: Vec<(&rr::Task, &str)> = tasks
        .iter()
        .flat_map(|t| args.conditions.iter().map(move |c| (t, c.as_str())))
        .collect();
    // The server's context budget; the index's part of it is half (`context::gather`), and the
    // oracle gets that same half.
    let context_chars = args
        .context_chars
        .unwrap_or(nib_lsp::settings::Settings::default().other_files_chars);
    let budget = context_chars / 2;
    // A task's text as the model sees it, where its line starts, and its other-file context.
    let context_of = |task: &rr::Task, condition: &str| {
        let k = &krates[&task.krate];
        let text = task.text(&k.files[&task.path]);
        let line_start = text[..task.cursor].rfind('\n').map_or(0, |i| i + 1);
        let files = match condition {
            "none" => Vec::new(),
            "nib" => {
                let read = |path: &str| -> Option<String> {
                    nib_indexer::walk::read_source(
                        &k.root.join(path),
                        nib_indexer::walk::DEFAULT_MAX_BYTES,
                    )
                    .ok()
                };
                // The server's own context assembly, its budget, no open files.
                nib_lsp::context::gather(
                    &nib_lsp::context::Sources {
                        index: Some((&k.index, &task.path)),
                        before_line: &text[..line_start],
                        read: &read,
                        open: &[],
                        budget: context_chars,
                    },
                    &Default::default(),
                )
            }
            _ => rr::oracle_context(task, &k.files[&task.definition.0], budget),
        };
        (text, files)
    };
    if args.context_only {
        for c in args.conditions.iter().filter(|c| *c != "none") {
            let (mut shown, mut named, mut chars, mut target_shown) = (0, 0, 0, 0);
            for t in &tasks {
                let (_, files) = context_of(t, c);
                // Shown: a snippet of the defining file names the identifier (snippets are
                // signatures, their whitespace collapsed, so lines are not compared).
                let all: String = files.iter().map(|(p, t)| format!("{p}\n{t}\n")).collect();
                let names = |text: &str| nib_indexer::symbols::words(text).any(|w| w == t.ident);
                shown += usize::from(
                    files
                        .iter()
                        .any(|(p, text)| *p == t.definition.0 && names(text)),
                );
                named += usize::from(names(&all));
                // Target shown: the context holds the rest of the line word for word, to copy.
                target_shown += usize::from(all.contains(t.target.trim()));
                chars += all.len();
            }
            let n = tasks.len().max(1) as f64;
            println!(
                "{c}: {} tasks, definition shown {:.1}%, identifier named {:.1}%, target shown {:.1}%, {:.0} chars",
                tasks.len(),
                100.0 * shown as f64 / n,
                100.0 * named as f64 / n,
                100.0 * target_shown as f64 / n,
                chars as f64 / n
            );
        }
        return Ok(());
    }
    let meta = serde_json::json!({
        "bench": "repo-rust",
        "model": model.describe()?,
        "crates": specs.iter().map(|s| format!("{} {}", s.name, s.version)).collect::<Vec<_>>(),
        "per_crate": args.per_crate,
        "task_seed": args.task_seed,
        "prefix_tokens": args.prefix_tokens,
        "suffix_tokens": args.suffix_tokens,
        "context_chars": budget,
    });
    let mut completer: Option<Answerer> = None;
    let results = run_tasks(
        &out,
        &meta,
        &runs,
        |(t, c)| format!("{}#{c}", t.id),
        |(task, condition)| {
            let c = match &mut completer {
                Some(c) => c,
                None => completer.insert(model.completer_with(CompleterConfig {
                    prefix_tokens: args.prefix_tokens,
                    suffix_tokens: args.suffix_tokens,
                    ..Default::default()
                })?),
            };
            let (text, files) = context_of(task, condition);
            let req = CompletionRequest {
                repo_name: &task.krate,
                path: &task.path,
                text: &text,
                cursor: task.cursor,
                multiline: Multiline::Never,
                max_tokens: None,
                files: &files,
                // The file's own text outside the window is nib's context too.
                own_chars: if *condition == "nib" {
                    nib_lsp::settings::Settings::default().own_file_chars()
                } else {
                    0
                },
            };
            let t = Instant::now();
            let completion = c.answer(&req)?;
            Ok(RepoOutcome {
                id: format!("{}#{condition}", task.id),
                task: task.id.clone(),
                condition: condition.to_string(),
                scores: rr::score(&completion.text, &task.target),
                target: task.target.clone(),
                completion: completion.text,
                context_files: files.len(),
                context_chars: files.iter().map(|(p, t)| p.len() + t.len()).sum(),
                prompt_tokens: completion.prompt_tokens,
                latency_ms: t.elapsed().as_secs_f64() * 1e3,
            })
        },
        |done| {
            let em = |c: &str| {
                let rs: Vec<_> = done.iter().filter(|r| r.condition == c).collect();
                100.0 * rs.iter().filter(|r| r.scores.exact).count() as f64 / rs.len().max(1) as f64
            };
            let ems: Vec<String> = args
                .conditions
                .iter()
                .map(|c| format!("{c} {:.1}", em(c)))
                .collect();
            format!("EM {}", ems.join(" "))
        },
    )?;
    let crates_used: std::collections::BTreeSet<&str> =
        tasks.iter().map(|t| t.krate.as_str()).collect();
    let mut rows = Vec::new();
    for c in &args.conditions {
        let rs: Vec<&RepoOutcome> = results.iter().filter(|r| &r.condition == c).collect();
        let n = rs.len().max(1) as f64;
        let avg = |f: &dyn Fn(&RepoOutcome) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / n;
        rows.push(report::Row {
            label: c.clone(),
            tasks: rs.len(),
            metrics: [
                (
                    "exact match",
                    100.0 * avg(&|r| f64::from(u8::from(r.scores.exact))),
                ),
                (
                    "edit similarity",
                    100.0 * avg(&|r| r.scores.edit_similarity),
                ),
                (
                    "identifier EM",
                    100.0 * avg(&|r| f64::from(u8::from(r.scores.identifier_exact))),
                ),
                ("identifier F1", 100.0 * avg(&|r| r.scores.identifier_f1)),
                ("prompt tokens", avg(&|r| r.prompt_tokens as f64)),
                ("latency ms", avg(&|r| r.latency_ms)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        });
    }
    let metric = |label: &str, key: &str| {
        rows.iter()
            .find(|r: &&report::Row| r.label == label)
            .map_or(0.0, |r| r.metrics[key])
    };
    let em = |label: &str| metric(label, "exact match");
    let es = |label: &str| metric(label, "edit similarity");
    let ran = |c: &str| args.conditions.iter().any(|r| r == c);
    // The tasks each condition answers exactly.
    let right = |c: &str| -> std::collections::HashSet<&str> {
        results
            .iter()
            .filter(|r| r.condition == c && r.scores.exact)
            .map(|r| r.task.as_str())
            .collect()
    };
    let mut notes = Vec::new();
    if ran("none") && ran("nib") {
        let mut lift = format!(
            "Lift of nib's context over none: {:+.1} exact match, {:+.1} edit similarity",
            em("nib") - em("none"),
            es("nib") - es("none"),
        );
        if ran("oracle") {
            lift += &format!(
                " (the oracle: {:+.1} / {:+.1})",
                em("oracle") - em("none"),
                es("oracle") - es("none")
            );
        }
        notes.push(lift + ".");
        // The most a rule that picks, task by task, between no context and nib's could reach:
        // the tasks either condition answers exactly.
        let gained = right("nib").difference(&right("none")).count();
        notes.push(format!(
            "Choosing after the fact, task by task, whichever of none and nib is right: {:+.1} exact match over none (the most a rule that picks between them could add).",
            100.0 * gained as f64 / tasks.len().max(1) as f64
        ));
    }
    // How much room cross-file context has: the tasks whose name the file has not shown
    // before the cursor, and each condition's exact match on them.
    let unseen: std::collections::HashSet<&str> = tasks
        .iter()
        .filter(|t| !rr::name_seen_before(t, &krates[&t.krate].files[&t.path]))
        .map(|t| t.id.as_str())
        .collect();
    let on_unseen: Vec<String> = args
        .conditions
        .iter()
        .map(|c| format!("{c} {}", right(c).intersection(&unseen).count()))
        .collect();
    notes.push(format!(
        "The name at the cursor already stands in its file before the cursor (an import or an earlier use) in {} of {} tasks; on the {} where it does not, right answers: {}.",
        tasks.len() - unseen.len(),
        tasks.len(),
        unseen.len(),
        on_unseen.join(", ")
    ));
    // The most that copying from other files could give: the tasks whose rest of the line
    // stands word for word in another file of the crate, and how many of them no context gets
    // wrong.
    if ran("none") {
        let elsewhere: std::collections::HashSet<&str> = tasks
            .iter()
            .filter(|t| rr::target_elsewhere(t, &krates[&t.krate].files))
            .map(|t| t.id.as_str())
            .collect();
        let wrong_without = elsewhere.difference(&right("none")).count();
        notes.push(format!(
            "The rest of the line stands word for word in another file of the crate in {} of {} tasks, {} of them answered wrongly with no context: the most that copying from other files could add.",
            elsewhere.len(),
            tasks.len(),
            wrong_without
        ));
    }
    finish(
        &out,
        report::Summary {
            name: stem(&out, "repo-rust"),
            title: format!(
                "Repository-level Rust line completion ({} tasks from {} crates of `{}`; {}/{} prefix/suffix tokens)",
                tasks.len(),
                crates_used.len(),
                args.crates.display(),
                args.prefix_tokens,
                args.suffix_tokens
            ),
            command: report::command_line(),
            meta,
            columns: vec![
                "exact match".into(),
                "edit similarity".into(),
                "identifier EM".into(),
                "identifier F1".into(),
                "prompt tokens".into(),
                "latency ms".into(),
            ],
            rows,
            latencies_ms: Vec::new(),
            versus: None,
            notes,
        },
    )
}
