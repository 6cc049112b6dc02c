//! The completion pipeline, one function from (text, cursor) to a completion. The CLI, the server
//! and the eval harness all call [`Completer::complete`].

use crate::postprocess::{limit_to_block, postprocess, Surroundings};
use nib_model::prompt::{self, FimTokens, PromptParts};
use nib_model::remote::{self, RemoteConfig, RemoteRequest};
use nib_model::{
    generate, Backend, BackendKind, CancelToken, GenerateParams, ModelError, SessionPool,
    StopReason, Tokenizer,
};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Whether a completion may span several lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Multiline {
    /// Decided from the cursor's surroundings.
    Auto,
    Always,
    Never,
}

impl FromStr for Multiline {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Multiline::Auto),
            "always" => Ok(Multiline::Always),
            "never" => Ok(Multiline::Never),
            _ => Err(format!("expected auto, always or never, not `{s}`")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompleterConfig {
    /// Tokens of text before the cursor, at most.
    pub prefix_tokens: usize,
    /// Tokens of text after the cursor, at most. Kept small: it sits after the prefix in the
    /// prompt and is recomputed whenever the prefix changes.
    pub suffix_tokens: usize,
    pub max_tokens_single: usize,
    pub max_tokens_multi: usize,
    /// Sessions kept (one KV cache each), so that switching files does not thrash the cache.
    pub session_slots: usize,
    /// Cached tokens of all sessions together, at most (bounds the caches' memory).
    pub cache_budget_tokens: usize,
    /// Milliseconds a prompt's prefill may take, by this machine's measured speed: a prompt
    /// that would take longer (a file just opened, a jump) gets a shorter prefix, the full
    /// one being computed in the background ([`Completer::warm_up`]). None: always the full
    /// window (the CLI and the benchmarks).
    pub prefill_deadline_ms: Option<f64>,
    /// Token healing ([`Plan::heal`]) on a local model.
    pub token_healing: bool,
}

impl Default for CompleterConfig {
    fn default() -> Self {
        Self {
            prefix_tokens: 1024,
            suffix_tokens: 256,
            max_tokens_single: 48,
            max_tokens_multi: 128,
            session_slots: 3,
            cache_budget_tokens: 4096,
            prefill_deadline_ms: None,
            token_healing: true,
        }
    }
}

/// One completion request: plain data.
#[derive(Debug, Clone)]
pub struct CompletionRequest<'a> {
    /// Repository name and the file's path relative to it (tell the model the language).
    pub repo_name: &'a str,
    pub path: &'a str,
    pub text: &'a str,
    /// Byte offset of the cursor in `text`, on a char boundary.
    pub cursor: usize,
    pub multiline: Multiline,
    /// Overrides the configured token limit.
    pub max_tokens: Option<usize>,
    /// Other files of the repository as `(path, text)`, most stable first, for the repo-level
    /// prompt (they come before the current file and change least often, so the KV cache keeps
    /// them between keystrokes).
    pub files: &'a [(String, String)],
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Completion {
    pub text: String,
    pub multiline: bool,
    pub prompt_tokens: usize,
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    pub stop: StopReason,
    /// Building the window and the prompt: mostly tokenizing.
    pub tokenize_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub postprocess_ms: f64,
    /// Set when the prompt had to be cut to fit the model's context.
    pub warning: Option<String>,
}

/// What a caller learns from, and says to, a generation while it runs.
#[derive(Default, Clone)]
pub struct Hooks {
    /// Told a block's post-processed first line as soon as the model has written it, while the
    /// block goes on.
    pub first_line: Option<Arc<dyn Fn(String) + Send + Sync>>,
    /// Asked with the raw text so far before each token; `false` stops the generation as
    /// cancelled.
    pub keep_going: Option<nib_model::generate::KeepGoing>,
}

/// What the pipeline will ask the model, before it asks.
#[derive(Debug, Clone)]
pub struct Plan {
    pub parts: PromptParts,
    pub ids: Vec<u32>,
    pub multiline: bool,
    pub max_tokens: usize,
    pub line_prefix: String,
    /// Token healing: the text of the prefix's last token, taken off the end of `ids`; the
    /// model writes it back first, free to make it part of a longer token (`.` → `.push`,
    /// `pri` → `print`, `;` → `;\n`). Empty where nothing was taken off (a remote server).
    pub heal: Vec<u8>,
}

/// The model to run, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The GGUF file: the weights on a local backend; for a remote one, only its tokenizer is
    /// read (the served model's, or one of its family).
    pub path: PathBuf,
    pub backend: BackendKind,
    /// The inference server, for `BackendKind::Remote`.
    pub remote: Option<RemoteConfig>,
}

/// Where the model runs.
enum Runner {
    /// On this machine: a backend and its sessions, whose KV caches carry over between requests.
    Local {
        backend: Box<dyn Backend>,
        pool: SessionPool,
    },
    /// On an inference server. The local tokenizer only budgets and lays out the prompt.
    Remote { config: RemoteConfig, model: String },
}

pub struct Completer {
    tok: Arc<Tokenizer>,
    fim: FimTokens,
    runner: Runner,
    pub config: CompleterConfig,
    /// This machine's prefill cost, ms per new prompt token (a running average over the
    /// prefills of 16 tokens or more; a first guess until one is measured).
    prefill_ms_per_token: f64,
    /// The full-window prompt a request had to do without (see `prefill_deadline_ms`).
    warm: Option<Vec<u32>>,
}

/// A first guess of the prefill cost before one is measured (2 cores of 2026, the 0.5B).
const FIRST_PREFILL_MS_PER_TOKEN: f64 = 5.0;

impl Completer {
    pub fn new(backend: Box<dyn Backend>, config: CompleterConfig) -> Result<Self, ModelError> {
        let tok = backend.tokenizer().clone();
        let fim = FimTokens::detect(&tok).ok_or(ModelError::NoFim)?;
        let pool = SessionPool::new(config.session_slots, config.cache_budget_tokens);
        Ok(Self {
            tok,
            fim,
            runner: Runner::Local { backend, pool },
            config,
            prefill_ms_per_token: FIRST_PREFILL_MS_PER_TOKEN,
            warm: None,
        })
    }

    /// Completions from an inference server. `tokenizer` is the served model's (or one of its
    /// family): it counts the prompt's tokens and, for OpenAI-compatible servers, writes the
    /// FIM layout that the server's model expects.
    pub fn remote(
        tokenizer: Tokenizer,
        model: String,
        remote: RemoteConfig,
        config: CompleterConfig,
    ) -> Result<Self, ModelError> {
        let fim = FimTokens::detect(&tokenizer).ok_or(ModelError::NoFim)?;
        Ok(Self {
            tok: Arc::new(tokenizer),
            fim,
            runner: Runner::Remote {
                config: remote,
                model,
            },
            config,
            prefill_ms_per_token: FIRST_PREFILL_MS_PER_TOKEN,
            warm: None,
        })
    }

    /// Opens what `spec` names.
    pub fn load(spec: &ModelSpec, config: CompleterConfig) -> Result<Self, ModelError> {
        // A known model is checked whenever its size or mtime moved since its last check.
        nib_model::fetch::check_known(&spec.path)?;
        match (spec.backend, &spec.remote) {
            (BackendKind::Remote, Some(remote)) => {
                let g = nib_model::gguf::GgufFile::open(&spec.path)?;
                let tok = Tokenizer::from_gguf(&g)?;
                let model = remote
                    .model
                    .clone()
                    .unwrap_or_else(|| format!("{} (tokenizer)", g.model_name()));
                Completer::remote(tok, model, remote.clone(), config)
            }
            (BackendKind::Remote, None) => Err(ModelError::Remote(
                "the remote backend needs the server's URL (remoteUrl, --remote-url)".into(),
            )),
            (kind, _) => Completer::new(nib_model::load_backend(kind, &spec.path)?, config),
        }
    }

    /// The kernel path a local model computes with (`avx2`, …, or `candle` off the CPU); none
    /// for a remote server.
    pub fn kernels(&self) -> Option<&'static str> {
        match &self.runner {
            Runner::Local { backend, .. } => Some(backend.info().kernels),
            Runner::Remote { .. } => None,
        }
    }

    pub fn model_name(&self) -> String {
        match &self.runner {
            Runner::Local { backend, .. } => backend.info().model,
            Runner::Remote { config, model } => format!("{model} at {}", config.url),
        }
    }

    /// Steps 1–3 of the pipeline without generating: the context window, the single-line or
    /// block decision, and the exact prompt (what `nib context` prints).
    pub fn plan(&self, req: &CompletionRequest) -> Plan {
        let cursor = req.cursor.min(req.text.len());
        // How much to ask for: one line or a block.
        let line_start = req.text[..cursor].rfind('\n').map_or(0, |i| i + 1);
        let line_end = req.text[cursor..]
            .find('\n')
            .map_or(req.text.len(), |i| cursor + i);
        let line_prefix = &req.text[line_start..cursor];
        let line_suffix = req.text[cursor..line_end].trim_end_matches('\r');
        let multiline = match req.multiline {
            Multiline::Always => true,
            Multiline::Never => false,
            // From the syntax tree at the cursor, for the indexed languages.
            Multiline::Auto => match nib_indexer::Lang::detect(
                std::path::Path::new(req.path),
                req.text.lines().next().unwrap_or(""),
            ) {
                Some(lang) => {
                    nib_indexer::extent::extent(lang, req.text, cursor)
                        == nib_indexer::extent::Extent::Block
                }
                None => wants_block(req.text, line_start, line_prefix, line_suffix),
            },
        };
        let max_tokens = req.max_tokens.unwrap_or(if multiline {
            self.config.max_tokens_multi
        } else {
            self.config.max_tokens_single
        });

        // The window under the token budgets, and the prompt.
        let (parts, ids, heal) = self.prompt(req, self.config.prefix_tokens);
        Plan {
            parts,
            ids,
            multiline,
            max_tokens,
            line_prefix: line_prefix.to_string(),
            heal,
        }
    }

    /// The local window with a prefix budget of `prefix_tokens`, the prompt laid out from it,
    /// and what token healing took off its end: the part of a plan that depends on the budget.
    fn prompt(
        &self,
        req: &CompletionRequest,
        prefix_tokens: usize,
    ) -> (PromptParts, Vec<u32>, Vec<u8>) {
        let tok = &self.tok;
        let cursor = req.cursor.min(req.text.len());
        let count = |s: &str| tok.encode(s).len();
        let window = nib_indexer::local_window(
            req.text,
            cursor,
            prefix_tokens,
            self.config.suffix_tokens,
            &count,
        );
        let parts = PromptParts {
            repo_name: req.repo_name.to_string(),
            files: req.files.to_vec(),
            path: req.path.to_string(),
            prefix: window.prefix,
            suffix: window.suffix,
        };
        let mut ids = prompt::build(tok, &self.fim, &parts);
        let heal = match &self.runner {
            Runner::Local { .. } if self.config.token_healing => heal(tok, &self.fim, &mut ids),
            _ => Vec::new(),
        };
        (parts, ids, heal)
    }

    /// The plan whose prefill fits `prefill_deadline_ms` at this machine's measured speed: the
    /// full window when its uncached part does, else the longest of a few shorter prefixes that
    /// does (the last without other files; or the shortest), the full prompt then kept for
    /// [`Completer::warm_up`].
    fn sized_plan(&mut self, req: &CompletionRequest) -> Plan {
        let full = self.plan(req);
        let (Some(deadline), Runner::Local { pool, .. }) =
            (self.config.prefill_deadline_ms, &self.runner)
        else {
            return full;
        };
        let cost =
            |ids: &[u32]| (ids.len() - pool.best_reuse(ids)) as f64 * self.prefill_ms_per_token;
        if cost(&full.ids) <= deadline {
            self.warm = None;
            return full;
        }
        let mut chosen = None;
        // Shorter prefixes, and last of all no other files.
        let bare = CompletionRequest { files: &[], ..*req };
        for (budget, r) in [(512, req), (256, req), (128, req), (128, &bare)] {
            let is_bare = !std::ptr::eq(r, req);
            // A budget no shorter than the configured one, or no files to leave out: nothing
            // to try.
            if (budget >= self.config.prefix_tokens && !is_bare)
                || (is_bare && req.files.is_empty())
            {
                continue;
            }
            // The same decision of how much to write; only the prompt is shorter.
            let (parts, ids, heal) = self.prompt(r, budget);
            if ids.len() >= full.ids.len() {
                continue; // the window was not cut: the same prompt
            }
            let p = Plan {
                parts,
                ids,
                multiline: full.multiline,
                max_tokens: full.max_tokens,
                line_prefix: full.line_prefix.clone(),
                heal,
            };
            let fits = cost(&p.ids) <= deadline;
            chosen = Some(p);
            if fits {
                break;
            }
        }
        match chosen {
            Some(p) => {
                crate::engine::trace(|| {
                    format!(
                        "prefill deadline: {} of {} prompt tokens now, the full window later",
                        p.ids.len(),
                        full.ids.len()
                    )
                });
                self.warm = Some(full.ids);
                p
            }
            None => {
                self.warm = None;
                full
            }
        }
    }

    /// Whether a full-window prompt waits to be computed ahead of its use.
    pub fn has_warm_up(&self) -> bool {
        self.warm.is_some()
    }

    /// Computes the waiting full-window prompt into a session other than the one serving
    /// requests now, in pieces of 16 tokens (a cancel keeps the pieces done: the gaps between
    /// keystrokes are short). Done or not needed:
    /// `Ok(())` and nothing waits any more.
    pub fn warm_up(&mut self, cancel: &CancelToken) -> Result<(), ModelError> {
        // Taken out for the run: only a cancel puts it back (a failure must not come round
        // again and again).
        let (Some(ids), Runner::Local { backend, pool }) = (self.warm.take(), &mut self.runner)
        else {
            return Ok(());
        };
        let mut params = GenerateParams::new(&self.tok, self.fim.stops.clone(), 0, true);
        params.prefill_chunk = 16;
        let session = pool.pick_background(backend.as_ref(), &ids);
        match generate(session, &self.tok, &ids, &params, cancel) {
            Err(ModelError::Cancelled) => {
                self.warm = Some(ids);
                Err(ModelError::Cancelled)
            }
            r => r.map(|_| ()),
        }
    }

    /// The texts that end a completion wherever they appear (the model's FIM end markers), for
    /// a caller that reads a server's stream itself.
    pub fn stop_text(&self) -> Vec<String> {
        self.fim.stop_text(&self.tok)
    }

    /// The prompt's tokens as text, special tokens written out.
    pub fn prompt_text(&self, ids: &[u32]) -> String {
        self.tok.decode(ids)
    }

    pub fn complete(
        &mut self,
        req: &CompletionRequest,
        cancel: &CancelToken,
    ) -> Result<Completion, ModelError> {
        self.complete_early(req, cancel, Hooks::default())
    }

    /// [`Completer::complete`] with [`Hooks`] into the generation (a local model only).
    pub fn complete_early(
        &mut self,
        req: &CompletionRequest,
        cancel: &CancelToken,
        hooks: Hooks,
    ) -> Result<Completion, ModelError> {
        let Hooks {
            first_line,
            keep_going,
        } = hooks;
        let tok = self.tok.clone();
        let cursor = req.cursor.min(req.text.len());
        let t_plan = std::time::Instant::now();
        let Plan {
            parts,
            ids,
            multiline,
            max_tokens,
            line_prefix,
            heal,
        } = self.sized_plan(req);
        let tokenize_ms = ms_since(t_plan);

        crate::engine::trace(|| format!("prompt, {} tokens: {:?}", ids.len(), tok.decode(&ids)));
        // 4. Generation, on this machine or on the inference server, with the same stop rules.
        let mut params = GenerateParams::new(&tok, self.fim.stops.clone(), max_tokens, !multiline);
        if multiline {
            // Stop decoding as soon as the block is complete.
            let head = line_prefix;
            let next = Surroundings::of(req.text, cursor, false).next_code_line();
            params.stop_check = Some(Arc::new(move |text: &str| {
                let kept = limit_to_block(text, &head, &next).len();
                (kept < text.len()).then_some(kept)
            }));
            if let Some(tell) = first_line {
                // The hook outlives this borrow of the request: it keeps its own copy of the
                // text the post-processing reads.
                let (text, cursor) = (req.text.to_string(), cursor);
                params.on_first_line = Some(Arc::new(move |raw: &str| {
                    tell(postprocess(raw, &Surroundings::of(&text, cursor, false)));
                }));
            }
        }
        params.keep_going = keep_going;
        params.heal = heal;
        let (generation, generated_tokens) = match &mut self.runner {
            Runner::Local { backend, pool } => {
                let session = pool.pick(backend.as_ref(), &ids);
                let g = generate(session, &tok, &ids, &params, cancel)?;
                let new = g.prompt_tokens.saturating_sub(g.reused_tokens);
                if new >= 16 {
                    let rate = g.prefill_ms / new as f64;
                    self.prefill_ms_per_token = 0.7 * self.prefill_ms_per_token + 0.3 * rate;
                }
                let n = g.tokens.len();
                (g, n)
            }
            Runner::Remote { config, .. } => {
                let stop_text = self.fim.stop_text(&tok);
                let r = remote::complete(
                    config,
                    &RemoteRequest {
                        prompt: &ids,
                        prefix: &parts.prefix,
                        suffix: &parts.suffix,
                        files: &parts.files,
                        max_tokens,
                        single_line: !multiline,
                        stop_check: params.stop_check.clone(),
                        stop_text,
                    },
                    cancel,
                )?;
                let g = nib_model::Generation {
                    tokens: Vec::new(),
                    stop: r.stop,
                    prompt_tokens: ids.len(),
                    reused_tokens: 0,
                    prefill_ms: r.first_ms,
                    decode_ms: r.total_ms - r.first_ms,
                    warning: None,
                    drafted: 0,
                    accepted: 0,
                    text: r.text,
                };
                (g, r.pieces)
            }
        };

        // 5. Post-processing.
        let t_post = std::time::Instant::now();
        let text = postprocess(
            &generation.text,
            &Surroundings::of(req.text, cursor, !multiline),
        );
        let postprocess_ms = ms_since(t_post);
        Ok(Completion {
            text,
            multiline,
            prompt_tokens: generation.prompt_tokens,
            reused_tokens: generation.reused_tokens,
            generated_tokens,
            stop: generation.stop,
            tokenize_ms,
            prefill_ms: generation.prefill_ms,
            decode_ms: generation.decode_ms,
            postprocess_ms,
            warning: generation.warning,
        })
    }
}

fn ms_since(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Token healing: takes the prefix's last token off `ids` (the token before the FIM suffix
/// marker) and returns its text. A prompt that ends inside what the tokenizer would write as one
/// token (`foo.ba|`, `x = |`, `stmt;|` before a newline) puts the model where it never was in
/// training; written back by the model under a constraint, that token can grow into the one
/// that belongs there. Nothing is taken where the prefix is empty.
fn heal(tok: &Tokenizer, fim: &FimTokens, ids: &mut Vec<u32>) -> Vec<u8> {
    let Some(at) = ids.iter().rposition(|&t| t == fim.suffix) else {
        return Vec::new();
    };
    match at.checked_sub(1).map(|i| ids[i]) {
        Some(last) if last != fim.prefix && !tok.is_special(last) => {
            ids.remove(at - 1);
            tok.token_bytes(last).to_vec()
        }
        _ => Vec::new(),
    }
}

/// For a file of no indexed language: a block is wanted where a new scope starts, by the
/// characters (the cursor ends a line that opens one, or sits on an empty line right after such
/// a line). Elsewhere one line is enough.
fn wants_block(text: &str, line_start: usize, line_prefix: &str, line_suffix: &str) -> bool {
    if !line_suffix.trim().is_empty() {
        return false;
    }
    let opens = |line: &str| {
        let t = line.trim_end();
        t.ends_with('{') || t.ends_with(':') || t.ends_with("=>") || t.ends_with('(')
    };
    if !line_prefix.trim().is_empty() {
        return opens(line_prefix);
    }
    let previous = text[..line_start.saturating_sub(1)]
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty());
    previous.is_some_and(opens)
}

#[cfg(test)]
mod tests {
    use super::wants_block;

    #[test]
    fn block_only_where_a_scope_opens() {
        // (text, cursor marker '|', expect block)
        let cases = [
            ("fn f() {|\n}", true),
            ("fn f() {\n    |\n}", true),
            ("let x = 1;\n|\n", false),
            ("let x = foo(|);", false),
            ("def f(x):\n    |", true),
            ("    let y = |", false),
        ];
        for (src, want) in cases {
            let cursor = src.find('|').unwrap();
            let text = src.replace('|', "");
            let line_start = text[..cursor].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[cursor..].find('\n').map_or(text.len(), |i| cursor + i);
            let got = wants_block(
                &text,
                line_start,
                &text[line_start..cursor],
                &text[cursor..line_end],
            );
            assert_eq!(got, want, "{src:?}");
        }
    }
}
