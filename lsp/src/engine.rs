//! The scheduler between editors and the model. It knows nothing of LSP: the server, the eval
//! harness's replay and the tests submit plain [`Request`]s and get [`Answer`]s back.
//!
//! Rules, in the order a request meets them:
//! 1. **Typing-through**: if the user typed characters that a recent completion (or the one
//!    being generated, once it finishes) predicted, the rest of it is the answer, with no model
//!    call. Recent completions are kept in a small LRU keyed by document, text before and text
//!    after the cursor.
//! 2. Until the model is ready, every request gets an empty answer at once.
//! 3. **One slot**: a newer request replaces the pending one (which gets an empty answer) and
//!    cancels the generation in flight unless it only extends it by typing. There is no queue.
//! 4. **Debounce**: a request waits `debounce` before it starts, so a burst of keystrokes costs
//!    one generation.
//! 5. One generation at a time, on one worker thread that owns the model; callers never wait
//!    for the model while holding anything. A block's first line is answered as soon as it is
//!    written; a running generation whose text contradicts what was typed since stops.
//! 6. **Idle**: the full-window prompt that a request had to do without (its prefill would
//!    have missed the deadline) is computed into another session, given way to by any request.
//!
//! Every request leaves a [`Timing`] (where its time went), for `nib.timings` and `NIB_TRACE`.

use crate::completer::{Completer, CompleterConfig, CompletionRequest, Multiline};
use nib_model::CancelToken;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Other files for the repository-level prompt, as `(path, text)`: given, or gathered on the
/// worker right before the generation, so that a request answered by typing-through or replaced
/// by a newer one never pays for it, and the index search runs neither on the caller's thread
/// nor under the caller's locks.
pub enum Files {
    Given(Vec<(String, String)>),
    Gather(Box<dyn FnOnce() -> Vec<(String, String)> + Send>),
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Files::Given(v) => f.debug_tuple("Given").field(&v.len()).finish(),
            Files::Gather(_) => f.write_str("Gather"),
        }
    }
}

/// Everything a completion needs, owned.
#[derive(Debug)]
pub struct Request {
    /// The document's identity (its URI).
    pub doc: String,
    pub repo_name: String,
    /// Path relative to the workspace root.
    pub path: String,
    pub text: String,
    /// Byte offset of the cursor in `text`.
    pub cursor: usize,
    pub multiline: Multiline,
    pub max_tokens: Option<usize>,
    /// Other files for the repository-level prompt.
    pub files: Files,
    /// Characters of the file's own text from outside the window
    /// ([`CompletionRequest::own_chars`]).
    pub own_chars: usize,
}

impl Request {
    fn prefix(&self) -> &str {
        &self.text[..self.cursor]
    }
    fn suffix(&self) -> &str {
        &self.text[self.cursor..]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Text to insert at the cursor (possibly empty: the model had nothing to add).
    Text {
        text: String,
        /// Served from a recent completion without a model call.
        typed_through: bool,
        /// Milliseconds from submission to answer.
        latency_ms: f64,
    },
    /// No completion: the reason is for logs, not for users.
    Nothing(&'static str),
}

pub use crate::completer::ModelSpec;

/// What the engine tells its owner about the model.
#[derive(Debug, Clone)]
pub enum Status {
    Loading {
        model: PathBuf,
    },
    Ready {
        model: String,
        backend: String,
        /// The kernel path of a local model (see `nib_model::kernels::Path`).
        kernels: Option<String>,
        load_ms: f64,
    },
    Failed {
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub debounce: Duration,
    pub completer: CompleterConfig,
    /// Completions remembered for typing-through.
    pub recent: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            // Measured by `nib-eval replay` (README): 0 ms saved the most keystrokes with the lowest
            // latency; the one pending slot already turns a burst of keystrokes into one
            // generation.
            debounce: Duration::ZERO,
            completer: CompleterConfig::default(),
            recent: 32,
        }
    }
}

/// How a request ended.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The model ran to the end.
    #[default]
    Generated,
    /// Answered from a recent completion, with no model call.
    TypedThrough,
    /// Replaced in the pending slot by a newer request before it started.
    Superseded,
    /// Stopped: cancelled, replaced while running, or contradicted by what was typed.
    Cancelled,
    Failed,
}

/// Where one request's time went: what `nib.timings`, `NIB_TRACE` and `nib-eval replay` report.
/// Times are milliseconds from the request's submission; parts a request never reached stay 0.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Timing {
    pub id: u64,
    /// Byte offset of the cursor.
    pub cursor: usize,
    pub outcome: Outcome,
    /// Submission → the worker takes it: debounce, and the generation before it finishing.
    pub queue_ms: f64,
    /// Gathering other files' context (index search, open documents).
    pub context_ms: f64,
    /// Window and prompt: mostly tokenizing.
    pub tokenize_ms: f64,
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV entries were reused (the rest were computed).
    pub reused_tokens: usize,
    pub prefill_ms: f64,
    pub generated_tokens: usize,
    pub decode_ms: f64,
    pub postprocess_ms: f64,
    /// Submission → answer: the first line of a block is answered as soon as it is written.
    pub answer_ms: f64,
    /// Whether the answer was a block's first line, sent while the block went on.
    pub first_line_early: bool,
    /// Submission → the end of the work (the whole block, for an early answer).
    pub total_ms: f64,
}

impl Timing {
    /// Prompt tokens computed, not reused.
    pub fn new_tokens(&self) -> usize {
        self.prompt_tokens.saturating_sub(self.reused_tokens)
    }
}

/// Timings kept for `Engine::take_timings`, at most (the oldest go first).
const TIMINGS_KEPT: usize = 4096;

/// Counters, for tests and `nib bench`-style reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub submitted: u64,
    pub typed_through: u64,
    pub generations: u64,
    pub cancelled: u64,
    pub superseded: u64,
}

struct Pending {
    id: u64,
    req: Request,
    at: Instant,
    reply: oneshot::Sender<Answer>,
}

struct Running {
    id: u64,
    doc: String,
    prefix: String,
    suffix: String,
    cancel: CancelToken,
    /// What was typed since its prefix, by the newest request that extends it: the generation
    /// stops as soon as its text contradicts that (typing-through could no longer use it).
    typed: Arc<Mutex<Option<String>>>,
}

/// A recent completion and where it was made, in bounded memory whatever the document's size:
/// the text around the cursor is kept as lengths and hashes (with its nearest bytes, compared
/// exactly), not as copies of the document.
struct Recent {
    doc: String,
    prefix: Digest,
    suffix: Digest,
    text: String,
}

/// A string's length, hash and the end nearest the cursor (the last bytes of a prefix, the
/// first of a suffix).
#[derive(PartialEq)]
struct Digest {
    len: usize,
    hash: u64,
    near: String,
}

impl Digest {
    const NEAR: usize = 256;

    fn of_prefix(s: &str) -> Self {
        let mut at = s.len().saturating_sub(Self::NEAR);
        while !s.is_char_boundary(at) {
            at += 1;
        }
        Digest {
            len: s.len(),
            hash: hash(s),
            near: s[at..].to_string(),
        }
    }

    fn of_suffix(s: &str) -> Self {
        let mut at = s.len().min(Self::NEAR);
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        Digest {
            len: s.len(),
            hash: hash(s),
            near: s[..at].to_string(),
        }
    }
}

fn hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

enum ModelState {
    Loading,
    Ready,
    Failed,
}

struct State {
    model: ModelState,
    reload: Option<ModelSpec>,
    pending: Option<Pending>,
    running: Option<Running>,
    /// The idle warm-up in progress (see rule 6); any request or reload stops it.
    warming: Option<CancelToken>,
    recent: VecDeque<Recent>,
    config: EngineConfig,
    next_id: u64,
    shutdown: bool,
    counters: Counters,
    timings: VecDeque<Timing>,
}

impl State {
    /// Stops the generation and the warm-up in progress.
    fn stop_work(&self) {
        if let Some(r) = &self.running {
            r.cancel.cancel();
        }
        if let Some(w) = &self.warming {
            w.cancel();
        }
    }

    fn record(&mut self, t: Timing) {
        trace(|| {
            format!(
                "timing {}: {:?} total {:.0} ms = queue {:.0} + context {:.1} + tokenize {:.1} + prefill {:.0} ({} new, {} reused) + decode {:.0} ({} tokens) + post {:.1}",
                t.id, t.outcome, t.total_ms, t.queue_ms, t.context_ms, t.tokenize_ms,
                t.prefill_ms, t.new_tokens(), t.reused_tokens, t.decode_ms, t.generated_tokens,
                t.postprocess_ms
            )
        });
        if self.timings.len() >= TIMINGS_KEPT {
            self.timings.pop_front();
        }
        self.timings.push_back(t);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// A handle to the worker; cheap to clone. Dropping the last one stops the worker.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        let mut s = lock(&self.0);
        s.shutdown = true;
        s.stop_work();
        drop(s);
        self.0.wake.notify_all();
    }
}

/// A submitted request: await `answer`; `id` cancels it.
pub struct Ticket {
    pub id: u64,
    pub answer: oneshot::Receiver<Answer>,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic on the worker must not take the server down with a poisoned lock.
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    /// Starts the worker, which loads `spec` in the background and reports through `on_status`.
    pub fn start(
        spec: ModelSpec,
        config: EngineConfig,
        on_status: impl Fn(Status) + Send + 'static,
    ) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                model: ModelState::Loading,
                reload: Some(spec),
                pending: None,
                running: None,
                warming: None,
                recent: VecDeque::new(),
                config,
                next_id: 1,
                shutdown: false,
                counters: Counters::default(),
                timings: VecDeque::new(),
            }),
            wake: Condvar::new(),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("nib-engine".into())
            .spawn(move || run_worker(&worker, &on_status))
            .expect("spawn the engine thread");
        Self {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        }
    }

    /// Submits a request; the answer comes through the ticket.
    pub fn submit(&self, req: Request) -> Ticket {
        let (tx, rx) = oneshot::channel();
        let at = Instant::now();
        let mut s = lock(&self.shared);
        let id = s.next_id;
        s.next_id += 1;
        s.counters.submitted += 1;
        if let Some(text) = typed_through(&s.recent, &req) {
            s.counters.typed_through += 1;
            let total_ms = ms(at.elapsed());
            s.record(Timing {
                id,
                cursor: req.cursor,
                outcome: Outcome::TypedThrough,
                total_ms,
                ..Default::default()
            });
            let _ = tx.send(Answer::Text {
                text,
                typed_through: true,
                latency_ms: total_ms,
            });
            return Ticket { id, answer: rx };
        }
        match s.model {
            ModelState::Ready => {}
            ModelState::Loading => {
                let _ = tx.send(Answer::Nothing("the model is loading"));
                return Ticket { id, answer: rx };
            }
            ModelState::Failed => {
                let _ = tx.send(Answer::Nothing("the model failed to load"));
                return Ticket { id, answer: rx };
            }
        }
        if let Some(old) = s.pending.take() {
            s.counters.superseded += 1;
            s.record(Timing {
                id: old.id,
                cursor: old.req.cursor,
                outcome: Outcome::Superseded,
                queue_ms: ms(old.at.elapsed()),
                total_ms: ms(old.at.elapsed()),
                ..Default::default()
            });
            let _ = old
                .reply
                .send(Answer::Nothing("superseded by a newer request"));
        }
        if let Some(w) = &s.warming {
            w.cancel();
        }
        let extends = s.running.as_ref().is_some_and(|r| extends_running(r, &req));
        if let Some(r) = &s.running {
            if extends {
                let typed = req.prefix()[r.prefix.len()..].to_string();
                *r.typed.lock().unwrap_or_else(|e| e.into_inner()) = Some(typed);
            } else {
                r.cancel.cancel();
            }
        }
        s.pending = Some(Pending {
            id,
            req,
            at,
            reply: tx,
        });
        drop(s);
        self.shared.wake.notify_all();
        Ticket { id, answer: rx }
    }

    /// Cancels a request: dropped if it has not started, stopped if it is running.
    pub fn cancel(&self, id: u64) {
        let mut s = lock(&self.shared);
        if s.pending.as_ref().is_some_and(|p| p.id == id) {
            let p = s.pending.take().unwrap();
            s.counters.cancelled += 1;
            let _ = p.reply.send(Answer::Nothing("cancelled"));
        }
        if let Some(r) = s.running.as_ref().filter(|r| r.id == id) {
            r.cancel.cancel();
        }
    }

    /// Loads another model (or the same one on another backend) in the background.
    pub fn reload(&self, spec: ModelSpec) {
        let mut s = lock(&self.shared);
        s.reload = Some(spec);
        s.stop_work();
        drop(s);
        self.shared.wake.notify_all();
    }

    /// New settings; completions remembered under the old ones are forgotten.
    pub fn set_config(&self, config: EngineConfig) {
        let mut s = lock(&self.shared);
        s.config = config;
        s.recent.clear();
        drop(s);
        self.shared.wake.notify_all();
    }

    pub fn config(&self) -> EngineConfig {
        lock(&self.shared).config.clone()
    }

    pub fn counters(&self) -> Counters {
        lock(&self.shared).counters.clone()
    }

    /// The timings recorded since the last call, oldest first.
    pub fn take_timings(&self) -> Vec<Timing> {
        lock(&self.shared).timings.drain(..).collect()
    }

    /// Forgets a closed document's recent completions.
    pub fn forget(&self, doc: &str) {
        lock(&self.shared).recent.retain(|r| r.doc != doc);
    }
}

/// The rest of a recent completion that the text typed since predicted.
fn typed_through(recent: &VecDeque<Recent>, req: &Request) -> Option<String> {
    let (prefix, suffix) = (req.prefix(), req.suffix());
    recent.iter().rev().find_map(|r| {
        // Cheap tests first; the hashes only for what could match.
        let p = &r.prefix;
        if r.doc != req.doc
            || r.suffix.len != suffix.len()
            || prefix.len() < p.len
            || prefix.len() - p.len > r.text.len()
            || !prefix.is_char_boundary(p.len)
        {
            return None;
        }
        let typed = &prefix[p.len..];
        let rest = r.text.strip_prefix(typed)?;
        if rest.is_empty()
            || !prefix[..p.len].ends_with(&p.near)
            || !suffix.starts_with(&r.suffix.near)
            || Digest::of_suffix(suffix) != r.suffix
            || hash(&prefix[..p.len]) != p.hash
        {
            return None;
        }
        Some(rest.to_string())
    })
}

/// Whether `req` is the running request with a few more characters typed: then the running
/// generation may still answer it by typing-through, and is not cancelled.
fn extends_running(r: &Running, req: &Request) -> bool {
    let prefix = req.prefix();
    r.doc == req.doc
        && r.suffix == req.suffix()
        && prefix.starts_with(&r.prefix)
        && prefix.len() - r.prefix.len() <= 256
}

/// A line on stderr when `NIB_TRACE` is set (editors show it in their LSP log). The variable is
/// read once.
pub(crate) fn trace(msg: impl FnOnce() -> String) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("NIB_TRACE").is_some()) {
        eprintln!("nib: {}", msg());
    }
}

fn run_worker(shared: &Shared, on_status: &dyn Fn(Status)) {
    let mut completer: Option<Completer> = None;
    loop {
        let mut s = lock(shared);
        // Wait for work: a model to load or a request whose debounce has passed.
        let job = loop {
            if s.shutdown {
                return;
            }
            if let Some(spec) = s.reload.take() {
                s.model = ModelState::Loading;
                let config = s.config.completer.clone();
                drop(s);
                drop(completer.take()); // free the old model before the new one comes in
                on_status(Status::Loading {
                    model: spec.path.clone(),
                });
                let (loaded, status) = match load(&spec, config) {
                    Ok((c, status)) => (Some(c), status),
                    Err(status) => (None, status),
                };
                completer = loaded;
                s = lock(shared);
                // A newer reload asked for meanwhile wins; otherwise serve with this model.
                s.model = if completer.is_some() {
                    ModelState::Ready
                } else {
                    ModelState::Failed
                };
                drop(s);
                on_status(status);
                s = lock(shared);
                continue;
            }
            let Some(p) = &s.pending else {
                // Idle: compute the full-window prompt that a request had to do without, in
                // pieces; the next request cancels it (the pieces done stay cached).
                let warm = matches!(s.model, ModelState::Ready)
                    && completer.as_ref().is_some_and(Completer::has_warm_up);
                if warm {
                    let cancel = CancelToken::new();
                    s.warming = Some(cancel.clone());
                    drop(s);
                    let t0 = Instant::now();
                    let done = completer.as_mut().map(|c| {
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            c.warm_up(&cancel)
                        }))
                    });
                    trace(|| format!("warm-up after {:?}: {done:?}", t0.elapsed()));
                    s = lock(shared);
                    s.warming = None;
                    continue;
                }
                s = shared.wake.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let due = p.at + s.config.debounce;
            let now = Instant::now();
            if now < due {
                s = shared
                    .wake
                    .wait_timeout(s, due - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                continue;
            }
            let p = s.pending.take().unwrap();
            // The generation that just finished may have predicted what was typed meanwhile.
            if let Some(text) = typed_through(&s.recent, &p.req) {
                s.counters.typed_through += 1;
                let total_ms = ms(p.at.elapsed());
                s.record(Timing {
                    id: p.id,
                    cursor: p.req.cursor,
                    outcome: Outcome::TypedThrough,
                    queue_ms: total_ms,
                    total_ms,
                    ..Default::default()
                });
                let _ = p.reply.send(Answer::Text {
                    text,
                    typed_through: true,
                    latency_ms: total_ms,
                });
                continue;
            }
            let cancel = CancelToken::new();
            let typed = Arc::new(Mutex::new(None));
            s.running = Some(Running {
                id: p.id,
                doc: p.req.doc.clone(),
                prefix: p.req.prefix().to_string(),
                suffix: p.req.suffix().to_string(),
                cancel: cancel.clone(),
                typed: typed.clone(),
            });
            s.counters.generations += 1;
            if let Some(c) = completer.as_mut() {
                c.config = s.config.completer.clone();
            }
            break (p, cancel, typed);
        };
        drop(s);

        let (mut p, cancel, typed) = job;
        // Once the user typed past what this generation writes, it is wasted work.
        let keep_going: nib_model::generate::KeepGoing = Arc::new(move |text: &str| match &*typed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            Some(t) => text.starts_with(t.as_str()) || t.starts_with(text),
            None => true,
        });
        let queue_ms = ms(p.at.elapsed());
        let mut context_ms = 0.0;
        // The reply goes out once: with a block's first line as soon as it is written (the
        // block is remembered for typing-through when done), else with the whole completion.
        let reply = Arc::new(Mutex::new(Some(p.reply)));
        let early_ms = Arc::new(Mutex::new(None::<f64>));
        let first_line: Arc<dyn Fn(String) + Send + Sync> = {
            let (reply, early_ms, at) = (reply.clone(), early_ms.clone(), p.at);
            Arc::new(move |text: String| {
                if text.trim().is_empty() {
                    return;
                }
                let Some(tx) = reply.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                    return;
                };
                let latency_ms = ms(at.elapsed());
                *early_ms.lock().unwrap_or_else(|e| e.into_inner()) = Some(latency_ms);
                let _ = tx.send(Answer::Text {
                    text,
                    typed_through: false,
                    latency_ms,
                });
            })
        };
        trace(|| format!("start {} ({} bytes before the cursor)", p.id, p.req.cursor));
        let result = match completer.as_mut() {
            Some(c) => {
                let files = std::mem::replace(&mut p.req.files, Files::Given(Vec::new()));
                let req = &p.req;
                // A panic in the pipeline is a bug, but it must cost one answer, not the server.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let t0 = Instant::now();
                    let files = match files {
                        Files::Given(v) => v,
                        Files::Gather(f) => f(),
                    };
                    context_ms = ms(t0.elapsed());
                    let r = CompletionRequest {
                        repo_name: &req.repo_name,
                        path: &req.path,
                        text: &req.text,
                        cursor: req.cursor,
                        multiline: req.multiline,
                        max_tokens: req.max_tokens,
                        files: &files,
                        own_chars: req.own_chars,
                    };
                    let hooks = crate::completer::Hooks {
                        first_line: Some(first_line),
                        keep_going: Some(keep_going),
                    };
                    c.complete_early(&r, &cancel, hooks)
                }))
                .unwrap_or_else(|_| {
                    Err(nib_model::ModelError::Inference(
                        "the completion pipeline panicked".into(),
                    ))
                })
            }
            None => Err(nib_model::ModelError::Inference("no model".into())),
        };

        trace(|| {
            let text = result.as_ref().map(|c| &c.text);
            format!("end {} after {:?}: {text:?}", p.id, p.at.elapsed())
        });
        let mut s = lock(shared);
        s.running = None;
        let early = *early_ms.lock().unwrap_or_else(|e| e.into_inner());
        let total_ms = ms(p.at.elapsed());
        let mut timing = Timing {
            id: p.id,
            cursor: p.req.cursor,
            queue_ms,
            context_ms,
            answer_ms: early.unwrap_or(total_ms),
            first_line_early: early.is_some(),
            total_ms,
            ..Default::default()
        };
        timing.outcome = match &result {
            Ok(c) => {
                timing.tokenize_ms = c.tokenize_ms;
                timing.prompt_tokens = c.prompt_tokens;
                timing.reused_tokens = c.reused_tokens;
                timing.prefill_ms = c.prefill_ms;
                timing.generated_tokens = c.generated_tokens;
                timing.decode_ms = c.decode_ms;
                timing.postprocess_ms = c.postprocess_ms;
                Outcome::Generated
            }
            Err(nib_model::ModelError::Cancelled) => Outcome::Cancelled,
            Err(_) => Outcome::Failed,
        };
        s.record(timing);
        let answer = match result {
            Ok(c) => {
                let cap = s.config.recent.max(1);
                if s.recent.len() >= cap {
                    s.recent.pop_front();
                }
                s.recent.push_back(Recent {
                    doc: p.req.doc.clone(),
                    prefix: Digest::of_prefix(p.req.prefix()),
                    suffix: Digest::of_suffix(p.req.suffix()),
                    text: c.text.clone(),
                });
                Answer::Text {
                    text: c.text,
                    typed_through: false,
                    latency_ms: p.at.elapsed().as_secs_f64() * 1e3,
                }
            }
            Err(nib_model::ModelError::Cancelled) => {
                s.counters.cancelled += 1;
                Answer::Nothing("cancelled")
            }
            Err(_) => Answer::Nothing("the model failed on this request"),
        };
        let tx = reply.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(answer);
        }
    }
}

/// Loads the model. The caller reports the outcome once the engine can serve with it.
fn load(spec: &ModelSpec, config: CompleterConfig) -> Result<(Completer, Status), Status> {
    let t0 = Instant::now();
    let result = Completer::load(spec, config);
    match result {
        Ok(c) => {
            let status = Status::Ready {
                model: c.model_name(),
                backend: spec.backend.name().to_string(),
                kernels: c.kernels().map(str::to_string),
                load_ms: t0.elapsed().as_secs_f64() * 1e3,
            };
            Ok((c, status))
        }
        Err(e) => Err(Status::Failed {
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str, cursor_marker: &str) -> Request {
        let cursor = text.find(cursor_marker).unwrap();
        Request {
            doc: "file:///a.rs".into(),
            repo_name: "r".into(),
            path: "a.rs".into(),
            text: text.replace(cursor_marker, ""),
            cursor,
            multiline: Multiline::Auto,
            max_tokens: None,
            files: Files::Given(Vec::new()),
            own_chars: 0,
        }
    }

    /// A timing goes to the replay as JSON and comes back the same; outcomes by snake-case name.
    #[test]
    fn timings_round_trip_through_json() {
        let t = Timing {
            id: 7,
            outcome: Outcome::TypedThrough,
            prompt_tokens: 10,
            reused_tokens: 7,
            answer_ms: 1.5,
            ..Default::default()
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["outcome"], "typed_through");
        let back: Timing = serde_json::from_value(v).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.new_tokens(), 3);
    }

    #[test]
    fn typing_through_rules() {
        let mut recent = VecDeque::new();
        recent.push_back(Recent {
            doc: "file:///a.rs".into(),
            prefix: Digest::of_prefix("let x = "),
            suffix: Digest::of_suffix(";\n"),
            text: "foo(1)".into(),
        });
        // The same in a long document: an edit far from the cursor (past the bytes kept
        // whole) is still seen, through the hashes.
        let far = "// é\n".repeat(400);
        recent.push_back(Recent {
            doc: "file:///b.rs".into(),
            prefix: Digest::of_prefix(&format!("{far}let z = ")),
            suffix: Digest::of_suffix(&format!(";\n{far}")),
            text: "bar()".into(),
        });
        let mut b = req(&format!("{far}let z = b|;\n{far}"), "|");
        b.doc = "file:///b.rs".into();
        assert_eq!(typed_through(&recent, &b).as_deref(), Some("ar()"));
        let top = far.replacen('/', "#", 1);
        let mut edited = req(&format!("{top}let z = b|;\n{far}"), "|");
        edited.doc = b.doc.clone();
        assert_eq!(typed_through(&recent, &edited), None, "an edit at the top");
        let bottom = far.replacen('/', "#", 1);
        let mut edited = req(&format!("{far}let z = b|;\n{bottom}"), "|");
        edited.doc = b.doc.clone();
        assert_eq!(
            typed_through(&recent, &edited),
            None,
            "an edit at the bottom"
        );
        // (text with cursor, expected rest)
        let cases = [
            ("let x = |;\n", Some("foo(1)")),
            ("let x = f|;\n", Some("oo(1)")),
            ("let x = foo(|;\n", Some("1)")),
            ("let x = foo(1)|;\n", None), // nothing left
            ("let x = g|;\n", None),      // typed something else
            ("let x = f|);\n", None),     // the suffix changed
            ("let y = f|;\n", None),      // the prefix changed
        ];
        for (text, want) in cases {
            let r = req(text, "|");
            assert_eq!(typed_through(&recent, &r).as_deref(), want, "{text:?}");
        }
    }
}
