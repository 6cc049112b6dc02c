//! The `nib` command line. Exit codes: 0 success (an empty completion too), 1 runtime error
//! (model, file, inference), 2 usage error (bad arguments, a position outside the file).
//! Every error is one line on stderr.

use clap::{Parser, Subcommand};
use nib_lsp::document::{decode_text, offset_of};
use nib_lsp::{Completer, CompleterConfig, CompletionRequest, Multiline};
use nib_model::fetch::{self, ModelRef};
use nib_model::{BackendKind, CancelToken};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "nib", version, about = "Local AI code completion")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Complete code at FILE:LINE:COL (1-based; the column counts characters).
    Complete(CompleteArgs),
    /// Measure the engine: prefill and decode throughput, time to first token, memory.
    Bench(BenchArgs),
    /// Fetch and list models.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Print the exact prompt a completion at FILE:LINE:COL would use (context window, snippets
    /// from other files, special tokens), without running the model.
    Context(CompleteArgs),
    /// Run the language server on stdin/stdout.
    Serve(ServeArgs),
    /// Index a workspace with tree-sitter: files, symbols by kind and language, speed, memory.
    Index {
        /// The workspace (default: the current directory).
        path: Option<PathBuf>,
        /// Print the counts (the default unless --query is given).
        #[arg(long)]
        stats: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// List the definitions of NAME instead.
        #[arg(long)]
        query: Option<String>,
        /// Parse every file, neither reading nor writing the on-disk cache.
        #[arg(long)]
        no_cache: bool,
    },
    /// Show local acceptance statistics (suggestions shown and accepted, share of code from nib).
    Stats {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// GGUF model file (the `model` setting overrides it).
    #[arg(long)]
    model: Option<PathBuf>,
    /// cpu, cuda or metal (the `backend` setting overrides it).
    #[arg(long)]
    backend: Option<String>,
    /// Threads for inference (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Accepted for compatibility with clients that always pass it; stdio is the only transport.
    #[arg(long, hide = true)]
    stdio: bool,
}

#[derive(clap::Args)]
struct CompleteArgs {
    /// FILE:LINE:COL
    position: String,
    /// Workspace root (default: the enclosing VCS root, else the file's directory).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Read the buffer from stdin; FILE still names the file.
    #[arg(long)]
    stdin: bool,
    /// Tokens to generate at most.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// auto, always or never.
    #[arg(long, default_value = "auto")]
    multiline: Multiline,
    /// Print one JSON object with timings.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens to generate.
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Speculation: draft tokens at most (0: off); by prompt lookup, or by --draft-model.
    #[arg(long, default_value_t = 0)]
    draft: usize,
    /// Prompt tokens per forward pass while prefilling (a prompt of up to twice that goes in
    /// one pass); 128 is what `nib serve`'s requests use.
    #[arg(long, default_value_t = 128)]
    prefill_chunk: usize,
    /// A smaller model of the same vocabulary that drafts for --model (e.g. the 0.5B for the
    /// 1.5B); --draft defaults to 4 with it.
    #[arg(long)]
    draft_model: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Print the kernel paths this CPU has, fastest first (what NIB_KERNELS may name), and exit.
    #[arg(long)]
    list_kernels: bool,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// GGUF model file (default: $NIB_MODEL, else the default model fetched by `nib model pull`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// cpu; cuda / metal in builds with those features (scripts/build-cuda.sh); remote (with
    /// --remote-url; the model file then only lends its tokenizer).
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
    /// Threads for inference (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// The inference server for --backend remote: an OpenAI-compatible URL
    /// (http://host:8080, …/v1/completions) or llama.cpp's …/infill.
    #[arg(long)]
    remote_url: Option<String>,
    /// The `model` field sent to OpenAI-compatible servers.
    #[arg(long)]
    remote_model: Option<String>,
    /// Environment variable that holds the server's API key.
    #[arg(long)]
    remote_api_key_env: Option<String>,
    /// Milliseconds a remote request may take.
    #[arg(long, default_value_t = 10_000)]
    remote_timeout_ms: u64,
}

impl ModelArgs {
    /// The model these flags name, and where it runs.
    fn spec(&self) -> Result<nib_lsp::completer::ModelSpec, Failure> {
        let remote = match (self.backend, &self.remote_url) {
            (BackendKind::Remote, Some(url)) => Some(
                nib_model::remote::RemoteConfig::new(
                    url,
                    self.remote_model.clone(),
                    self.remote_api_key_env.as_deref(),
                    Duration::from_millis(self.remote_timeout_ms.max(1)),
                )
                .map_err(|e| usage(e.to_string()))?,
            ),
            (BackendKind::Remote, None) => {
                return Err(usage("--backend remote needs --remote-url"));
            }
            (_, Some(_)) => return Err(usage("--remote-url needs --backend remote")),
            (_, None) => None,
        };
        Ok(nib_lsp::completer::ModelSpec {
            path: resolve_model(&self.model)?,
            backend: self.backend,
            remote,
        })
    }
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Download a model: small (default), large, or HF_REPO:FILE[@REVISION].
    Pull {
        #[arg(default_value = "small")]
        model: String,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Show the models present on this machine.
    List,
}

/// An error and the exit code it maps to.
struct Failure(u8, String);

fn usage(msg: impl Into<String>) -> Failure {
    Failure(2, msg.into())
}

fn runtime(msg: impl std::fmt::Display) -> Failure {
    Failure(1, msg.to_string())
}

fn main() -> ExitCode {
    let start = Instant::now();
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!(
            "nib: internal error: {msg} (at {:?})",
            info.location().map(|l| l.to_string())
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = std::panic::catch_unwind(|| match cli.command {
        Command::Complete(args) => complete(args, start),
        Command::Bench(args) => bench(args),
        Command::Model { command } => model(command),
        Command::Serve(args) => serve(args),
        Command::Context(args) => context(args),
        Command::Index {
            path,
            stats,
            json,
            query,
            no_cache,
        } => index(path, stats, json, query, no_cache),
        Command::Stats { json } => stats(json),
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(Failure(code, msg))) => {
            eprintln!("nib: {msg}");
            ExitCode::from(code)
        }
        Err(_) => ExitCode::from(1),
    }
}

fn model(cmd: ModelCommand) -> Result<(), Failure> {
    match cmd {
        ModelCommand::Pull { model, quiet } => {
            let r = ModelRef::parse(&model).map_err(usage)?;
            let path = fetch::pull(&r, !quiet, &mut |m| eprintln!("nib: {m}")).map_err(runtime)?;
            println!("{}", path.display());
            Ok(())
        }
        ModelCommand::List => {
            let models = fetch::list_local();
            if models.is_empty() {
                println!("no models yet: fetch the default one with `nib model pull`");
            }
            for (path, size) in models {
                println!("{:>8.1} MB  {}", size as f64 / 1e6, path.display());
            }
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    set_threads(args.threads)?;
    if let Some(b) = &args.backend {
        b.parse::<BackendKind>().map_err(usage)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(runtime)?;
    let clean = runtime.block_on(nib_lsp::server::serve(nib_lsp::server::ServeOptions {
        model: args.model,
        backend: args.backend,
    }));
    // The stdin reader may still be blocked in a read: do not wait for it.
    runtime.shutdown_background();
    if clean {
        Ok(())
    } else {
        Err(Failure(
            1,
            "the client exited without asking the server to shut down".into(),
        ))
    }
}

fn index(
    path: Option<PathBuf>,
    _stats: bool,
    json: bool,
    query: Option<String>,
    no_cache: bool,
) -> Result<(), Failure> {
    use nib_indexer::walk;
    let root = path.unwrap_or_else(|| PathBuf::from("."));
    if !root.is_dir() {
        return Err(usage(format!("{} is not a directory", root.display())));
    }
    // Ready means walked and indexed: the time counts the walk.
    let t0 = Instant::now();
    let files = walk::source_files(&root);
    let bar = indicatif::ProgressBar::new(walk::total_bytes(&files, walk::DEFAULT_MAX_BYTES));
    if json || query.is_some() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "indexing {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let cache = (!no_cache)
        .then(|| nib_indexer::cache::default_path(&root))
        .flatten();
    let (index, report) = walk::build_files(
        &root,
        &files,
        walk::DEFAULT_MAX_BYTES,
        cache.as_deref(),
        &|n| bar.inc(n),
    );
    let seconds = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    if let Some(note) = &report.cache_note {
        eprintln!("nib: {note}");
    }
    if let Some(name) = query {
        let defs = index.definitions(&name);
        if defs.is_empty() {
            return Err(runtime(format!(
                "no definition of `{name}` under {}",
                root.display()
            )));
        }
        for d in defs {
            let (p, s) = (d.path, d.symbol);
            // Headers and doc comments stay in the files: read them back.
            let text =
                nib_indexer::walk::read_source(&root.join(p), nib_indexer::walk::DEFAULT_MAX_BYTES)
                    .unwrap_or_default();
            let signature = s.signature(&text).unwrap_or_else(|| s.name.to_string());
            if json {
                let lang = index
                    .files
                    .get(p)
                    .map_or(nib_indexer::Lang::Rust, |e| e.lang);
                println!(
                    "{}",
                    serde_json::json!({"path": p, "line": s.start_line + 1, "kind": s.kind, "signature": signature, "doc": s.doc(&text, lang), "parent": d.parent})
                );
            } else {
                println!("{p}:{}: {} {signature}", s.start_line + 1, s.kind);
            }
        }
        return Ok(());
    }
    let st = index.stats();
    let mb = st.bytes as f64 / 1e6;
    let rss = nib_model::bench::peak_rss_mb();
    if json {
        let mut v = serde_json::to_value(&st).map_err(runtime)?;
        v["seconds"] = serde_json::json!(seconds);
        v["mb_per_s"] = serde_json::json!(mb / seconds.max(1e-9));
        v["peak_rss_mb"] = serde_json::json!(rss);
        v["skipped"] = serde_json::json!(report.skipped.len());
        v["from_cache"] = serde_json::json!(report.from_cache);
        println!("{v}");
    } else {
        println!(
            "{} files ({} from the cache), {:.1} MB, {} symbols in {:.2} s ({:.1} MB/s), peak RSS {} MB; {} skipped, {} with syntax errors",
            st.files,
            report.from_cache,
            mb,
            st.symbols,
            seconds,
            mb / seconds.max(1e-9),
            rss.map_or("?".into(), |r| format!("{r:.0}")),
            report.skipped.len(),
            st.files_with_errors
        );
        let line = |m: &std::collections::BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("by language: {}", line(&st.by_language));
        println!("by kind:     {}", line(&st.by_kind));
        for (p, why) in report.skipped.iter().take(10) {
            eprintln!("skipped {p}: {why}");
        }
    }
    Ok(())
}

fn stats(json: bool) -> Result<(), Failure> {
    let path = nib_lsp::stats::Stats::default_path();
    let st = nib_lsp::stats::Stats::load(&path).map_err(runtime)?;
    if json {
        let mut v = serde_json::to_value(&st).map_err(runtime)?;
        v["acceptance_rate"] = serde_json::json!(st.acceptance_rate());
        v["share_from_nib"] = serde_json::json!(st.share_from_nib());
        println!("{v}");
    } else {
        print!("{}", st.report());
        println!(
            "(from {}; nothing here leaves this machine)",
            path.display()
        );
    }
    Ok(())
}

fn set_threads(threads: Option<usize>) -> Result<(), Failure> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(usage("--threads must be at least 1"));
        }
        // candle sizes its thread pool from this on first use.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    Ok(())
}

fn bench(args: BenchArgs) -> Result<(), Failure> {
    if args.list_kernels {
        for p in nib_model::kernels::Path::available() {
            println!("{}", p.name());
        }
        return Ok(());
    }
    if args.prompt_tokens < 8 || args.gen_tokens == 0 {
        return Err(usage(
            "--prompt-tokens must be at least 8 and --gen-tokens at least 1",
        ));
    }
    if args.model.backend == BackendKind::Remote {
        return Err(usage(
            "`nib bench` measures nib's own engine; a remote server has its own benchmarks",
        ));
    }
    set_threads(args.model.threads)?;
    let model_path = resolve_model(&args.model.model)?;
    let t = Instant::now();
    let backend = nib_model::load_backend(args.model.backend, &model_path).map_err(runtime)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let params = nib_model::bench::BenchParams {
        prompt_tokens: args.prompt_tokens,
        gen_tokens: args.gen_tokens,
        draft_len: args.draft,
        prefill_chunk: args.prefill_chunk,
        ..Default::default()
    };
    let drafter = match &args.draft_model {
        Some(p) => {
            let d = nib_model::load_backend(args.model.backend, p).map_err(runtime)?;
            if d.tokenizer().vocab_size() != backend.tokenizer().vocab_size() {
                return Err(usage(format!(
                    "the draft model {} has another vocabulary than the model",
                    p.display()
                )));
            }
            Some(d)
        }
        None => None,
    };
    let mut params = params;
    if drafter.is_some() && params.draft_len == 0 {
        params.draft_len = 4;
    }
    let r =
        nib_model::bench::run(backend.as_ref(), drafter.as_deref(), &params).map_err(runtime)?;
    let info = backend.info();
    let threads = info.threads;
    if args.json {
        let mut v = serde_json::to_value(&r).map_err(runtime)?;
        v["load_ms"] = serde_json::json!(load_ms);
        v["model"] = serde_json::json!(info.model);
        v["backend"] = serde_json::json!(info.backend);
        v["threads"] = serde_json::json!(threads);
        println!("{v}");
    } else {
        println!(
            "model        {} ({}, {threads} threads)",
            info.model, info.backend
        );
        println!("kernels      {}", r.kernels);
        println!("load         {load_ms:.0} ms");
        println!(
            "prefill      {:.1} tok/s ({} tokens)",
            r.prefill_tok_s, r.prompt_tokens
        );
        println!(
            "decode       {:.1} tok/s ({} tokens)",
            r.decode_tok_s, r.gen_tokens
        );
        println!("ttft cold    {:.0} ms", r.ttft_cold_ms);
        println!(
            "ttft reuse   {:.0} ms (one character typed; {} tokens reused)",
            r.ttft_reuse_ms, r.reused_tokens
        );
        println!(
            "memory       {:.1} GB/s read; a token reads {:.0} MB of weights, so decode is bound by {:.1} tok/s ({:.0}% reached)",
            r.mem_read_gb_s,
            r.weight_mb_per_token,
            r.decode_bound_tok_s,
            r.decode_share_of_bound * 100.0
        );
        if let Some(mb) = r.peak_rss_mb {
            println!("peak RSS     {mb:.0} MB");
        }
    }
    Ok(())
}

fn resolve_model(arg: &Option<PathBuf>) -> Result<PathBuf, Failure> {
    match arg {
        Some(p) => Ok(p.clone()),
        None => fetch::model_from_env().map_err(runtime),
    }
}

/// Splits `FILE:LINE:COL` at its last two colons, so paths may contain colons.
fn parse_position(s: &str) -> Result<(PathBuf, usize, usize), Failure> {
    let bad = || usage(format!("expected FILE:LINE:COL, got `{s}`"));
    let (rest, col) = s.rsplit_once(':').ok_or_else(bad)?;
    let (file, line) = rest.rsplit_once(':').ok_or_else(bad)?;
    let line: usize = line.parse().map_err(|_| bad())?;
    let col: usize = col.parse().map_err(|_| bad())?;
    if file.is_empty() {
        return Err(bad());
    }
    Ok((PathBuf::from(file), line, col))
}

/// The enclosing repository root of `file`, else its directory.
fn find_root(file: &Path) -> PathBuf {
    let abs = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    dir.ancestors()
        .find(|d| {
            [".git", ".hg", ".jj", ".svn"]
                .iter()
                .any(|m| d.join(m).exists())
        })
        .map(Path::to_path_buf)
        .unwrap_or(dir)
}

/// A file at a position, read and placed in its workspace, with its cross-file context.
struct Loaded {
    text: String,
    cursor: usize,
    rel: String,
    repo_name: String,
    files: Vec<(String, String)>,
}

impl Loaded {
    fn request<'a>(&'a self, args: &CompleteArgs) -> CompletionRequest<'a> {
        CompletionRequest {
            repo_name: &self.repo_name,
            path: &self.rel,
            text: &self.text,
            cursor: self.cursor,
            multiline: args.multiline,
            max_tokens: args.max_tokens,
            files: &self.files,
            own_chars: nib_lsp::settings::Settings::default().own_file_chars(),
        }
    }
}

fn load_request(args: &CompleteArgs) -> Result<Loaded, Failure> {
    let (file, line, col) = parse_position(&args.position)?;
    let bytes = if args.stdin {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| runtime(format!("cannot read stdin: {e}")))?;
        buf
    } else {
        std::fs::read(&file).map_err(|e| runtime(format!("cannot read {}: {e}", file.display())))?
    };
    let text = decode_text(&bytes).map_err(|e| runtime(format!("{} {e}", file.display())))?;
    let cursor =
        offset_of(text, line, col).map_err(|e| usage(format!("{}: {e}", file.display())))?;

    let root = match &args.root {
        Some(r) => r.clone(),
        None => find_root(&file),
    };
    let abs = std::path::absolute(&file).unwrap_or_else(|_| file.clone());
    let abs_root = std::path::absolute(&root).unwrap_or(root.clone());
    // A secret or ignored file is never put in a prompt, its own completion's included.
    if let Some(why) = nib_indexer::walk::exclusion(Some(&abs_root), &abs) {
        return Err(runtime(format!(
            "{} {why}: nib never puts it in a prompt",
            file.display()
        )));
    }
    let rel = abs
        .strip_prefix(std::path::absolute(&root).unwrap_or(root.clone()))
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| PathBuf::from(file.file_name().unwrap_or_default()));
    let rel = rel.to_string_lossy().replace('\\', "/");
    let repo_name = root
        .canonicalize()
        .ok()
        .and_then(|r| r.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    // The same cross-file context the server gives (`context::gather`, with the server's default
    // budget), from the workspace's index; there are no other open documents here.
    let files = nib_indexer::walk::source_files(&root);
    let (index, _) = nib_indexer::walk::build_cached(&root, &files, &|_| {});
    let line_start = text[..cursor].rfind('\n').map_or(0, |i| i + 1);
    let read = |path: &str| -> Option<String> {
        if nib_indexer::walk::exclusion(Some(&abs_root), Path::new(path)).is_some() {
            return None;
        }
        nib_indexer::walk::read_source(&root.join(path), nib_indexer::walk::DEFAULT_MAX_BYTES).ok()
    };
    let files = nib_lsp::context::gather(
        &nib_lsp::context::Sources {
            index: Some((&index, &rel)),
            before_line: &text[..line_start],
            read: &read,
            open: &[],
            budget: nib_lsp::settings::Settings::default().other_files_chars,
        },
        &Default::default(),
    );
    Ok(Loaded {
        text: text.to_string(),
        cursor,
        rel,
        repo_name,
        files,
    })
}

fn context(args: CompleteArgs) -> Result<(), Failure> {
    let l = load_request(&args)?;
    let completer =
        Completer::load(&args.model.spec()?, CompleterConfig::default()).map_err(runtime)?;
    let plan = completer.plan(&l.request(&args));
    let prompt = completer.prompt_text(&plan.ids);
    if args.json {
        let files: Vec<_> = plan
            .parts
            .files
            .iter()
            .map(|(p, t)| serde_json::json!({"path": p, "text": t}))
            .collect();
        let out = serde_json::json!({
            "repo_name": plan.parts.repo_name,
            "path": plan.parts.path,
            "files": files,
            // The file's own lines from outside the window, before the prefix and after the
            // suffix.
            "above": plan.parts.above,
            "prefix": plan.parts.prefix,
            "suffix": plan.parts.suffix,
            "below": plan.parts.below,
            // The end of the text before the cursor, after the middle marker.
            "middle": plan.parts.middle,
            "multiline": plan.multiline,
            "max_tokens": plan.max_tokens,
            "prompt_tokens": plan.ids.len(),
            "prompt_ids": plan.ids,
            "prompt": prompt,
            // Token healing: the prefix's end taken off the prompt, which the model writes
            // back first.
            "heal": String::from_utf8_lossy(&plan.heal),
        });
        println!("{out}");
    } else {
        println!("{prompt}");
        eprintln!(
            "nib: {} prompt tokens, {} other file(s), {}, at most {} tokens{}",
            plan.ids.len(),
            plan.parts.files.len(),
            if plan.multiline { "block" } else { "one line" },
            plan.max_tokens,
            if plan.heal.is_empty() {
                String::new()
            } else {
                format!(
                    ", {:?} taken off the end for the model to write back",
                    String::from_utf8_lossy(&plan.heal)
                )
            }
        );
    }
    Ok(())
}

fn complete(args: CompleteArgs, start: Instant) -> Result<(), Failure> {
    let l = load_request(&args)?;
    set_threads(args.model.threads)?;
    let spec = args.model.spec()?;
    let t_load = Instant::now();
    let mut completer = Completer::load(&spec, CompleterConfig::default()).map_err(runtime)?;
    let load_ms = t_load.elapsed().as_secs_f64() * 1e3;

    let c = completer
        .complete(&l.request(&args), &CancelToken::new())
        .map_err(runtime)?;
    if let Some(w) = &c.warning {
        eprintln!("nib: warning: {w}");
    }
    if args.json {
        let out = serde_json::json!({
            "completion": c.text,
            "model": completer.model_name(),
            "prompt_tokens": c.prompt_tokens,
            "generated_tokens": c.generated_tokens,
            "multiline": c.multiline,
            "stop": c.stop,
            "latency_ms": {
                "total": start.elapsed().as_secs_f64() * 1e3,
                "load": load_ms,
                "prefill": c.prefill_ms,
                "decode": c.decode_ms,
            }
        });
        println!("{out}");
    } else {
        println!("{}", c.text);
    }
    Ok(())
}
