//! The completion pipeline, one function from (text, cursor) to a completion. The CLI, the server
//! and the eval harness all call [`Completer::complete`].

use crate::postprocess::{cut_at_outer_closer, limit_to_block, postprocess, Surroundings};
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
    /// Whole lines before the cursor's line that go into the middle as well (see
    /// [`Completer::plan`]): the model continues them as its own text. In the editor the
    /// middle keeps its start while the user types on, and starts over with this many lines.
    pub middle_lines: usize,
    /// The text just before the cursor (`middle_lines` lines and the cursor's line so far) goes
    /// after the middle marker ([`PromptParts::middle`]) on a local model, so that a keystroke
    /// recomputes a token or two instead of the suffix.
    pub line_in_middle: bool,
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
            line_in_middle: true,
            middle_lines: 12,
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
    /// Characters of the file's own text from outside the window that may come along: its
    /// imports above the window and the stretches most like the lines before the cursor
    /// ([`nib_indexer::context::outside_window`]). Part of the context: 0 for none.
    pub own_chars: usize,
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
    /// Byte offset in the request's text of the line where the middle begins (its text starts
    /// with the token before that line).
    pub middle_line: usize,
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
    /// Where the last prompt's window began (see `prefill_deadline_ms`).
    kept: Option<KeptStart>,
}

/// Where a file's last prompt began, and its middle: the path, the byte offsets of the window's
/// first line and of the middle's first line, and those lines' starts, which must still be
/// there for the offsets to be kept.
#[derive(Debug, Clone)]
struct KeptStart {
    path: String,
    at: usize,
    probe: String,
    middle: usize,
    middle_probe: String,
}

/// Lines the middle holds at most before the cursor's line while its start is kept, beyond
/// the `middle_lines` it starts with: past them it starts over (the suffix then computed once
/// more).
const MIDDLE_LINES_KEPT: usize = 8;

/// How a window's prefix is chosen.
#[derive(Debug, Clone, Copy)]
enum Prefix {
    /// Up to this many tokens before the cursor ([`nib_indexer::local_window`]).
    Budget(usize),
    /// From this byte offset, a line's start ([`nib_indexer::window_from`]).
    From(usize),
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
            kept: None,
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
            kept: None,
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
    /// block decision, and the exact prompt (what `nib context` prints). The middle begins at
    /// the cursor's line, or `middle_lines` lines above it.
    pub fn plan(&self, req: &CompletionRequest) -> Plan {
        self.plan_from(req, None)
    }

    /// [`Completer::plan`] with the middle beginning at the line that starts at `middle` (a
    /// byte offset at or before the cursor's line; elsewhere it is not used).
    fn plan_from(&self, req: &CompletionRequest, middle: Option<usize>) -> Plan {
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
        let (parts, ids, heal, middle_line) =
            self.prompt(req, Prefix::Budget(self.config.prefix_tokens), middle);
        Plan {
            parts,
            ids,
            multiline,
            max_tokens,
            line_prefix: line_prefix.to_string(),
            heal,
            middle_line,
        }
    }

    /// The local window with its prefix chosen by `prefix`, the prompt laid out from it with
    /// the middle beginning at the line `middle` (see [`Completer::plan_from`]), what token
    /// healing took off its end, and where the middle's line begins: the part of a plan that
    /// depends on the window.
    fn prompt(
        &self,
        req: &CompletionRequest,
        prefix: Prefix,
        middle: Option<usize>,
    ) -> (PromptParts, Vec<u32>, Vec<u8>, usize) {
        let tok = &self.tok;
        let cursor = req.cursor.min(req.text.len());
        let count = |s: &str| tok.encode(s).len();
        let suffix_tokens = self.config.suffix_tokens;
        let window = match prefix {
            Prefix::Budget(n) => {
                nib_indexer::local_window(req.text, cursor, n, suffix_tokens, &count)
            }
            Prefix::From(at) => {
                nib_indexer::window_from(req.text, cursor, at, suffix_tokens, &count)
            }
        };
        let local = matches!(self.runner, Runner::Local { .. });
        let mut prefix = window.prefix;
        let window_start = cursor - prefix.len();
        // The middle's first line in the text: the one given, else `middle_lines` above the
        // cursor's; in the window's prefix, at its start if the window begins below it.
        let cursor_line = req.text[..cursor].rfind('\n').map_or(0, |i| i + 1);
        let middle_line = match middle {
            Some(m) if m <= cursor_line => m,
            _ => {
                let mut at = cursor_line;
                for _ in 0..self.config.middle_lines {
                    if at == 0 {
                        break;
                    }
                    at = req.text[..at - 1].rfind('\n').map_or(0, |i| i + 1);
                }
                at
            }
        };
        let line = middle_line.saturating_sub(window_start);
        let middle = if local && self.config.line_in_middle {
            prefix.split_off(middle_start(tok, &prefix, line))
        } else {
            String::new()
        };
        // The file's own text from outside the window.
        let lang = (req.own_chars > 0)
            .then(|| nib_indexer::Lang::detect(std::path::Path::new(req.path), ""))
            .flatten();
        let (above, below) = match lang {
            Some(lang) => nib_indexer::context::outside_window(
                lang,
                req.text,
                window_start..cursor + window.suffix.len(),
                cursor,
                req.own_chars,
            ),
            None => (Vec::new(), Vec::new()),
        };
        let parts = PromptParts {
            repo_name: req.repo_name.to_string(),
            files: req.files.to_vec(),
            path: req.path.to_string(),
            above: above.iter().map(|p| format!("{p}\n")).collect(),
            prefix,
            below: below.iter().map(|p| format!("\n{p}")).collect(),
            suffix: window.suffix,
            middle,
        };
        let (ids, heal) = self.ids_of(&parts);
        (parts, ids, heal, middle_line)
    }

    /// The prompt's tokens for `parts`, and what token healing took off their end.
    fn ids_of(&self, parts: &PromptParts) -> (Vec<u32>, Vec<u8>) {
        let mut ids = prompt::build(&self.tok, &self.fim, parts);
        let local = matches!(self.runner, Runner::Local { .. });
        let heal = if local && self.config.token_healing {
            heal(&self.tok, &self.fim, &mut ids)
        } else {
            Vec::new()
        };
        (ids, heal)
    }

    /// The plan whose prefill fits `prefill_deadline_ms` at this machine's measured speed: the
    /// full window when its uncached part does; else, without the file's own text from outside
    /// the window (`own_chars`), the full window if that fits; else the window from where this
    /// file's last prompt began, grown by the lines typed since (cached but for them, while it
    /// stays within the full window's size); else the longest of a few shorter prefixes that
    /// fits (the last without other files; or the shortest), the full prompt (without the own
    /// text) then kept for [`Completer::warm_up`].
    fn sized_plan(&mut self, req: &CompletionRequest) -> Plan {
        let (Some(deadline), Runner::Local { .. }) =
            (self.config.prefill_deadline_ms, &self.runner)
        else {
            return self.plan(req);
        };
        // Where this file's last prompt began, and its middle, if they are still there above
        // the cursor's line (not after a jump up); the middle for as many lines as it may hold.
        let cursor = req.cursor.min(req.text.len());
        let line_start = req.text[..cursor].rfind('\n').map_or(0, |i| i + 1);
        let there = |at: usize, probe: &str| {
            at <= line_start && req.text.get(at..at + probe.len()) == Some(probe)
        };
        let kept = self
            .kept
            .as_ref()
            .filter(|k| k.path == req.path && there(k.at, &k.probe));
        let middle = kept
            .filter(|k| {
                there(k.middle, &k.middle_probe)
                    && req.text[k.middle..line_start].matches('\n').count()
                        < self.config.middle_lines + MIDDLE_LINES_KEPT
            })
            .map(|k| k.middle);
        let kept_at = kept.map(|k| k.at);

        let full = self.plan_from(req, middle);
        let Runner::Local { pool, .. } = &self.runner else {
            return full;
        };
        let cost =
            |ids: &[u32]| (ids.len() - pool.best_reuse(ids)) as f64 * self.prefill_ms_per_token;
        if cost(&full.ids) <= deadline {
            self.warm = None;
            self.keep_start(req, &full);
            return full;
        }
        // Over the deadline: the file's own text from outside the window goes first, so that it
        // never costs the window near the cursor, nor the time it takes to make the full window
        // warm (a machine that prefills it within the deadline still gets it).
        // The window stays; only the prompt is laid out again.
        let lean = CompletionRequest {
            own_chars: 0,
            ..*req
        };
        let req = &lean;
        let full = if full.parts.above.is_empty() && full.parts.below.is_empty() {
            full
        } else {
            let parts = PromptParts {
                above: String::new(),
                below: String::new(),
                ..full.parts
            };
            let (ids, heal) = self.ids_of(&parts);
            Plan {
                parts,
                ids,
                heal,
                ..full
            }
        };
        if cost(&full.ids) <= deadline {
            self.warm = None;
            self.keep_start(req, &full);
            return full;
        }
        let mut chosen = None;
        // The window from where the last one began, shorter prefixes, and last of all no
        // other files.
        let bare = CompletionRequest { files: &[], ..*req };
        let candidates = kept_at
            .map(|at| (Prefix::From(at), req))
            .into_iter()
            .chain([
                (Prefix::Budget(512), req),
                (Prefix::Budget(256), req),
                (Prefix::Budget(128), req),
                (Prefix::Budget(128), &bare),
            ]);
        for (prefix, r) in candidates {
            let is_bare = !std::ptr::eq(r, req);
            // A budget no shorter than the configured one, or no files to leave out: nothing
            // to try.
            if let Prefix::Budget(budget) = prefix {
                if (budget >= self.config.prefix_tokens && !is_bare)
                    || (is_bare && req.files.is_empty())
                {
                    continue;
                }
            }
            // The same decision of how much to write; only the prompt is shorter.
            let (parts, ids, heal, middle_line) = self.prompt(r, prefix, middle);
            if ids.len() >= full.ids.len() {
                continue; // the window was not cut: the same prompt, or a longer one
            }
            let p = Plan {
                parts,
                ids,
                multiline: full.multiline,
                max_tokens: full.max_tokens,
                line_prefix: full.line_prefix.clone(),
                heal,
                middle_line,
            };
            let fits = cost(&p.ids) <= deadline;
            chosen = Some(p);
            if fits {
                break;
            }
        }
        let plan = match chosen {
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
        };
        self.keep_start(req, &plan);
        plan
    }

    /// Remembers where the window and the middle of `plan` began in the request's text.
    fn keep_start(&mut self, req: &CompletionRequest, plan: &Plan) {
        let cursor = req.cursor.min(req.text.len());
        let at = cursor - plan.parts.prefix.len() - plan.parts.middle.len();
        let probe = |at: usize| {
            let line = &req.text[at..cursor];
            let mut end = line.find('\n').unwrap_or(line.len()).min(80);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line[..end].to_string()
        };
        self.kept = Some(KeptStart {
            path: req.path.to_string(),
            at,
            probe: probe(at),
            middle: plan.middle_line,
            middle_probe: probe(plan.middle_line),
        });
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
            ..
        } = self.sized_plan(req);
        let tokenize_ms = ms_since(t_plan);

        crate::engine::trace(|| format!("prompt, {} tokens: {:?}", ids.len(), tok.decode(&ids)));
        // 4. Generation, on this machine or on the inference server, with the same stop rules.
        let mut params = GenerateParams::new(&tok, self.fim.stops.clone(), max_tokens, !multiline);
        if multiline {
            // Stop decoding as soon as the block is complete.
            let head = line_prefix;
            let around = Surroundings::of(req.text, cursor, false);
            let (next, closer) = (around.next_code_line(), around.closer_after());
            params.stop_check = Some(Arc::new(move |text: &str| {
                let kept = cut_at_outer_closer(&limit_to_block(text, &head, &next), closer).len();
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
                // A server lays out its own prompt: it gets no middle (`prompt` writes one for
                // a local model only).
                debug_assert!(parts.middle.is_empty());
                let r = remote::complete(
                    config,
                    &RemoteRequest {
                        prompt: &ids,
                        prefix: &parts.server_prefix(),
                        suffix: &parts.server_suffix(),
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
        // A line the model ended gets back the line break the stop took off: it tells
        // post-processing that the line is whole (`postprocess::line_above`).
        let raw: std::borrow::Cow<str> = if !multiline && generation.stop == StopReason::EndOfLine {
            format!("{}\n", generation.text).into()
        } else {
            generation.text.as_str().into()
        };
        let text = postprocess(&raw, &Surroundings::of(req.text, cursor, !multiline));
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

/// Where the prompt's middle begins in the text before the cursor (the window's prefix): at
/// the last token before the line that starts at `line_start` (the cursor's line, or one the
/// user began typing at), so that the middle holds that token and the lines typed so far.
/// Typing on then changes only the middle, the prompt's last tokens; in the
/// prefix-suffix-middle layout every keystroke would recompute the whole suffix. The
/// token before the line goes with it so that a cursor at a line's start gets the same prompt
/// as with no middle at all, healing included (that token, often `:\n` or `{\n`, is the one
/// healing takes off).
fn middle_start(tok: &Tokenizer, prefix: &str, line_start: usize) -> usize {
    // The pre-tokenizer keeps a run of line breaks in one piece: the last line with code
    // holds the last token whole.
    let head = &prefix[..line_start];
    let tail = &head[head.trim_end().rfind('\n').map_or(0, |i| i + 1)..];
    let Some(&last) = tok.encode(tail).last() else {
        return line_start;
    };
    let mut at = line_start - tok.token_bytes(last).len().min(tail.len());
    while !prefix.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Token healing: takes the last token of the text before the cursor off `ids` (the middle's
/// last where the middle holds some, else the one before the suffix marker) and returns its
/// text. A prompt that ends inside what the tokenizer would write as one token (`foo.ba|`,
/// `x = |`, `stmt;|` before a newline) puts the model where it never was in training; written
/// back by the model under a constraint, that token can grow into the one that belongs there.
/// Nothing is taken where that text is empty.
fn heal(tok: &Tokenizer, fim: &FimTokens, ids: &mut Vec<u32>) -> Vec<u8> {
    let at = if ids.last().is_some_and(|&t| t != fim.middle) {
        ids.len()
    } else {
        match ids.iter().rposition(|&t| t == fim.suffix) {
            Some(at) => at,
            None => return Vec::new(),
        }
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
