//! `nib serve`: the language server. Protocol glue only: it keeps the open documents, turns
//! positions into byte offsets, and hands [`Request`]s to the [`Engine`]; everything about
//! when and what to complete lives in the engine and the pipeline.
//!
//! Built on tower-lsp-server (the maintained fork of tower-lsp); see docs/ARCHITECTURE.md for why.
//! Its handlers run concurrently; each reads what it needs from the shared state before its
//! first `.await`, and nothing here ever waits on the model while holding a lock.

use crate::buffer::{Document, Encoding};
use crate::engine::{Answer, Engine, ModelSpec, Request, Status};
use crate::postprocess::wants_suggestion;
use crate::settings::Settings;
use crate::stats::Stats;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tower_lsp_server::gen_lsp_types::*;
use tower_lsp_server::jsonrpc::{Error as RpcError, Result as RpcResult};
use tower_lsp_server::{Client, LanguageServer, LspService, Server};

/// Options from the command line that settings may override.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub model: Option<PathBuf>,
    pub backend: Option<String>,
}

struct OpenDoc {
    doc: Document,
    /// Order of opening, to keep other-file context stable.
    opened: u64,
}

struct State {
    docs: HashMap<String, OpenDoc>,
    encoding: Encoding,
    root: Option<PathBuf>,
    settings: Settings,
    engine: Option<Engine>,
    stats: Stats,
    stats_path: PathBuf,
    next_open: u64,
    progress: bool,
    shut_down: bool,
    /// The workspace's repository index (built in the background after `initialized`).
    index: Arc<Mutex<nib_indexer::Index>>,
    /// Open documents edited since the index last parsed them.
    dirty: std::collections::HashSet<String>,
    /// Parses edited documents for the index, incrementally (it keeps their last parse).
    parser: nib_indexer::SymbolParser,
    /// The index's part of the last request's cross-file context. It depends only on the text
    /// before the cursor's line and the index, so keystrokes within a line reuse it.
    index_context: Option<(ContextKey, Vec<(String, String)>)>,
}

/// What the index's cross-file context was derived from.
#[derive(PartialEq)]
struct ContextKey {
    uri: String,
    before_line: u64,
    index_generation: u64,
    budget: usize,
}

pub struct Backend {
    client: Client,
    state: Arc<Mutex<State>>,
    options: ServeOptions,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the server on stdin/stdout until the client says `exit` or goes away. Returns whether
/// the client asked for `shutdown` first (the exit code is 0 then, 1 otherwise).
pub async fn serve(options: ServeOptions) -> bool {
    let stats_path = Stats::default_path();
    let stats = Stats::load(&stats_path).unwrap_or_else(|e| {
        eprintln!("nib: {e}; starting the statistics afresh");
        Stats::default()
    });
    let state = Arc::new(Mutex::new(State {
        docs: HashMap::new(),
        encoding: Encoding::Utf16,
        root: None,
        settings: Settings::default(),
        engine: None,
        stats,
        stats_path,
        next_open: 0,
        progress: false,
        shut_down: false,
        index: Arc::new(Mutex::new(nib_indexer::Index::new())),
        dirty: Default::default(),
        parser: Default::default(),
        index_context: None,
    }));
    let (service, socket) = LspService::build(|client| Backend {
        client,
        state: state.clone(),
        options,
    })
    .custom_method(MALFORMED, Backend::malformed)
    .finish();
    // tower's framed reader stops for good at the first message it cannot decode; the
    // sanitizer in front of it turns such messages into a notification the server logs.
    let (reader, writer) = tokio::io::duplex(1 << 16);
    tokio::spawn(sanitize(tokio::io::stdin(), writer));
    Server::new(reader, tokio::io::stdout(), socket)
        .serve(service)
        .await;
    let mut s = lock(&state);
    let _ = s.stats.save(&s.stats_path);
    s.engine = None;
    s.shut_down
}

const MALFORMED: &str = "nib/malformedMessage";

/// Copies LSP frames from `input` to `output`, replacing each body that is not a JSON-RPC 2.0
/// message with a `nib/malformedMessage` notification that says what was wrong. Header blocks
/// without a usable `Content-Length` are dropped.
async fn sanitize(
    mut input: impl tokio::io::AsyncRead + Unpin,
    mut output: impl tokio::io::AsyncWrite + Unpin,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        // One header block, then its body.
        let frame = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let headers = String::from_utf8_lossy(&buf[..end]).to_string();
                let len = headers.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                });
                if let Some(len) = len {
                    if buf.len() >= end + 4 + len {
                        let body = buf[end + 4..end + 4 + len].to_vec();
                        buf.drain(..end + 4 + len);
                        break Some(body);
                    }
                } else {
                    buf.drain(..end + 4);
                    break Some(malformed_body("a header block without Content-Length"));
                }
            }
            match input.read(&mut chunk).await {
                Ok(0) | Err(_) => break None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let Some(body) = frame else { break };
        let body = match check_message(&body) {
            Ok(()) => body,
            Err(why) => malformed_body(&why),
        };
        let head = format!("Content-Length: {}\r\n\r\n", body.len());
        if output.write_all(head.as_bytes()).await.is_err()
            || output.write_all(&body).await.is_err()
        {
            break;
        }
    }
    let _ = output.shutdown().await;
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn malformed_body(why: &str) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "method": MALFORMED, "params": {"error": why}})
        .to_string()
        .into_bytes()
}

/// Whether a body is a JSON-RPC 2.0 request, notification or response.
fn check_message(body: &[u8]) -> Result<(), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("jsonrpc") != Some(&json!("2.0")) {
        return Err("not a JSON-RPC 2.0 message".into());
    }
    let is_request = v.get("method").is_some_and(Value::is_string);
    let is_response =
        v.get("id").is_some() && (v.get("result").is_some() || v.get("error").is_some());
    if !is_request && !is_response {
        return Err("neither a request nor a response".into());
    }
    Ok(())
}

/// `file:` URI → path, with percent-escapes decoded.
pub fn uri_to_path(uri: &str) -> Option<PathBuf> {
    let rest = uri.strip_prefix("file://")?;
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Some(PathBuf::from(String::from_utf8(out).ok()?))
}

fn relative_path(root: Option<&Path>, uri: &str) -> String {
    let path = uri_to_path(uri);
    match (root, &path) {
        (Some(root), Some(p)) => p
            .strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned(),
        (None, Some(p)) => p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        _ => uri.rsplit('/').next().unwrap_or(uri).to_string(),
    }
}

fn pick_encoding(params: &Value) -> Encoding {
    let offered: Vec<&str> = params
        .pointer("/capabilities/general/positionEncodings")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // UTF-8 is what the text is stored in, so it is the cheapest; UTF-16 is the default.
    if offered.contains(&"utf-8") {
        Encoding::Utf8
    } else if offered.contains(&"utf-32") {
        Encoding::Utf32
    } else {
        Encoding::Utf16
    }
}

fn encoding_name(e: Encoding) -> &'static str {
    match e {
        Encoding::Utf8 => "utf-8",
        Encoding::Utf16 => "utf-16",
        Encoding::Utf32 => "utf-32",
    }
}

impl Backend {
    fn model_spec(&self, settings: &Settings) -> Result<ModelSpec, String> {
        let backend = match &self.options.backend {
            Some(b) if settings.backend == "cpu" => b.clone(),
            _ => settings.backend.clone(),
        };
        let backend = backend.parse().map_err(|e: String| e)?;
        let path = match settings
            .model
            .clone()
            .or_else(|| self.options.model.clone())
        {
            Some(p) => p,
            None => nib_model::fetch::model_from_env().map_err(|e| e.to_string())?,
        };
        let remote = match backend {
            nib_model::BackendKind::Remote => Some(settings.remote_config()?),
            _ => None,
        };
        Ok(ModelSpec {
            path,
            backend,
            remote,
        })
    }

    async fn warn_all(&self, warnings: Vec<String>) {
        for w in warnings {
            self.client
                .show_message(MessageType::Warning, format!("nib: {w}"))
                .await;
        }
    }

    /// Starts the engine (first call) or reloads the model when the settings name another.
    async fn start_or_reload(&self, old: Option<&Settings>) {
        let settings = lock(&self.state).settings.clone();
        let spec = match self.model_spec(&settings) {
            Ok(s) => s,
            Err(e) => {
                self.report(Status::Failed { message: e }).await;
                return;
            }
        };
        let engine = lock(&self.state).engine.clone();
        match engine {
            Some(engine) => {
                engine.set_config(settings.engine_config());
                let changed = old.is_some_and(|o| self.model_spec(o).ok().as_ref() != Some(&spec));
                if changed {
                    engine.reload(spec);
                }
            }
            None => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let engine = Engine::start(spec, settings.engine_config(), move |s| {
                    let _ = tx.send(s);
                });
                lock(&self.state).engine = Some(engine);
                let client = self.client.clone();
                let state = self.state.clone();
                tokio::spawn(async move {
                    let mut token: Option<ProgressToken> = None;
                    while let Some(status) = rx.recv().await {
                        report_status(&client, &state, &mut token, status).await;
                    }
                });
            }
        }
    }

    async fn report(&self, status: Status) {
        let mut token = None;
        report_status(&self.client, &self.state, &mut token, status).await;
    }

    /// The completion at a position, or why there is none.
    async fn complete_at(
        &self,
        uri: &str,
        line: u32,
        character: u32,
    ) -> RpcResult<Option<(String, Position)>> {
        // Everything is read under the lock, before any await.
        let (engine, req, position) = {
            let mut s = lock(&self.state);
            refresh_dirty(&mut s, uri);
            let Some(open) = s.docs.get(uri) else {
                return Err(RpcError::invalid_params(format!(
                    "document {uri} is not open"
                )));
            };
            if is_secret_uri(uri) {
                trace(|| format!("{uri} may hold secrets: never put in a prompt"));
                return Ok(None);
            }
            if !s.settings.enabled_for(&open.doc.language_id) {
                trace(|| format!("off for language {}", open.doc.language_id));
                return Ok(None);
            }
            let Some(engine) = s.engine.clone() else {
                trace(|| "no engine".into());
                return Ok(None);
            };
            let ci = open
                .doc
                .char_index(line, character, s.encoding)
                .map_err(|e| RpcError::invalid_params(e.to_string()))?;
            let (text, cursor) = open.doc.text_and_offset(ci);
            let line_start = text[..cursor].rfind('\n').map_or(0, |i| i + 1);
            let line_end = text[cursor..].find('\n').map_or(text.len(), |i| cursor + i);
            if !s.settings.mid_word
                && !wants_suggestion(&text[line_start..cursor], &text[cursor..line_end])
            {
                trace(|| format!("no suggestion inside {:?}", &text[line_start..line_end]));
                return Ok(None);
            }
            let (l, c) = open.doc.position(ci, s.encoding);
            let files = cross_file_context(&mut s, uri, &text[..line_start]);
            let root = s.root.as_deref();
            let repo_name = root
                .and_then(|r| r.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "workspace".into());
            let req = Request {
                doc: uri.to_string(),
                repo_name,
                path: relative_path(root, uri),
                files,
                text,
                cursor,
                multiline: s.settings.multiline_mode(),
                max_tokens: None,
            };
            (engine, req, Position::new(l, c))
        };
        let ticket = engine.submit(req);
        // If the client cancels the request, tower drops this future: the guard cancels the job.
        let guard = CancelOnDrop {
            engine: engine.clone(),
            id: ticket.id,
            armed: true,
        };
        let answer = ticket
            .answer
            .await
            .unwrap_or(Answer::Nothing("engine stopped"));
        let mut guard = guard;
        guard.armed = false;
        match answer {
            Answer::Text { text, .. } if !text.trim().is_empty() => Ok(Some((text, position))),
            _ => Ok(None),
        }
    }

    /// A suggestion at a position, counted as shown.
    async fn suggest(
        &self,
        p: &TextDocumentPositionParams,
    ) -> RpcResult<Option<(String, Position)>> {
        let found = self
            .complete_at(
                &p.text_document.uri.0,
                p.position.line,
                p.position.character,
            )
            .await?;
        if found.is_some() {
            self.record(|st| st.shown += 1);
        }
        Ok(found)
    }

    async fn malformed(&self, params: Value) {
        let why = params
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        self.client
            .log_message(
                MessageType::Error,
                format!("nib: ignored a malformed message: {why}"),
            )
            .await;
    }

    fn record(&self, f: impl FnOnce(&mut Stats)) {
        let mut s = lock(&self.state);
        f(&mut s.stats);
        let _ = s.stats.save(&s.stats_path);
    }
}

fn is_secret_uri(uri: &str) -> bool {
    uri_to_path(uri).is_some_and(|p| nib_indexer::walk::is_secret(&p))
}

use crate::engine::trace;

/// What the prompt carries from other files: the definitions (in the repository index) of the
/// names used before the cursor's line, then the other open documents (recently opened files
/// are likely to be what the user works with), within the configured character budget.
fn cross_file_context(s: &mut State, uri: &str, before_line: &str) -> Vec<(String, String)> {
    let rel = relative_path(s.root.as_deref(), uri);
    let budget = s.settings.other_files_chars;
    // A file outside the workspace belongs to another project: the index says nothing about it.
    let inside = match (&s.root, uri_to_path(uri)) {
        (Some(root), Some(p)) => p.starts_with(root),
        _ => false,
    };
    let mut files = if inside {
        let shared = s.index.clone();
        let index = shared.lock().unwrap_or_else(|p| p.into_inner());
        let key = ContextKey {
            uri: uri.to_string(),
            before_line: {
                use std::hash::{Hash, Hasher};
                let mut h = std::hash::DefaultHasher::new();
                before_line.hash(&mut h);
                h.finish()
            },
            index_generation: index.generation(),
            budget,
        };
        match &s.index_context {
            Some((k, files)) if *k == key => files.clone(),
            _ => {
                let files = index_context(s, &index, &rel, before_line, budget / 2);
                s.index_context = Some((key, files.clone()));
                files
            }
        }
    } else {
        Vec::new()
    };
    let used: usize = files.iter().map(|(p, t)| p.len() + t.len()).sum();
    for (path, text) in other_files(s, uri, budget.saturating_sub(used)) {
        // An open file replaces its snippets: the whole text says more.
        files.retain(|(p, _)| *p != path);
        files.push((path, text));
    }
    files
}

/// Definitions and similar code from the index; their text is read from the open buffer when
/// there is one, else from the disk.
fn index_context(
    s: &State,
    index: &nib_indexer::Index,
    rel: &str,
    before_line: &str,
    budget: usize,
) -> Vec<(String, String)> {
    let read = |path: &str| -> Option<String> {
        if nib_indexer::walk::is_secret(Path::new(path)) {
            return None;
        }
        let open = s
            .docs
            .iter()
            .find(|(u, _)| relative_path(s.root.as_deref(), u) == path)
            .map(|(_, d)| d.doc.rope.to_string());
        match open {
            Some(t) => Some(t),
            None => nib_indexer::walk::read_source(
                &s.root.as_ref()?.join(path),
                nib_indexer::walk::DEFAULT_MAX_BYTES,
            )
            .ok(),
        }
    };
    nib_indexer::context::cross_file(index, rel, before_line, budget, &read)
}

/// Re-parses the open documents edited since the last request (other than `current`) into the
/// index, so their definitions are current.
fn refresh_dirty(s: &mut State, current: &str) {
    let dirty: Vec<String> = s.dirty.iter().filter(|u| *u != current).cloned().collect();
    if dirty.is_empty() {
        return;
    }
    let shared = s.index.clone();
    let mut index = shared.lock().unwrap_or_else(|p| p.into_inner());
    for uri in dirty {
        s.dirty.remove(&uri);
        if let Some(open) = s.docs.get(&uri) {
            let rel = relative_path(s.root.as_deref(), &uri);
            let lang = nib_indexer::Lang::from_language_id(&open.doc.language_id)
                .or_else(|| nib_indexer::Lang::detect(Path::new(&rel), ""));
            if let (Some(lang), false) = (lang, nib_indexer::walk::is_secret(Path::new(&rel))) {
                let text = open.doc.rope.to_string();
                index.update_incremental(&mut s.parser, &rel, lang, &text);
            }
        }
    }
}

/// Other open documents of the workspace, oldest opened first (the most stable order for the KV
/// cache), cut to the configured character budget at line boundaries.
fn other_files(s: &State, current: &str, budget: usize) -> Vec<(String, String)> {
    let mut budget = budget;
    let mut others: Vec<(&String, &OpenDoc)> = s
        .docs
        .iter()
        .filter(|(u, _)| u.as_str() != current)
        .collect();
    others.sort_by_key(|(_, d)| d.opened);
    let mut files = Vec::new();
    for (uri, open) in others {
        if budget == 0 {
            break;
        }
        // Only the head that fits is copied out of the rope, not the whole document.
        let rope = &open.doc.rope;
        let take = rope.byte_to_char(budget.min(rope.len_bytes()));
        let head = rope.slice(..take).to_string();
        let cut = if take < rope.len_chars() {
            head.rfind('\n').map_or(0, |i| i + 1)
        } else {
            head.len()
        };
        if cut == 0 {
            continue;
        }
        budget -= cut;
        files.push((
            relative_path(s.root.as_deref(), uri),
            head[..cut].to_string(),
        ));
    }
    files
}

/// The command a client runs after inserting a suggestion: reports the accepted characters.
fn accept_command(text: &str) -> Value {
    json!({"title": "nib: accepted", "command": "nib.accept", "arguments": [{"chars": text.chars().count()}]})
}

struct CancelOnDrop {
    engine: Engine,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.engine.cancel(self.id);
        }
    }
}

async fn report_status(
    client: &Client,
    state: &Mutex<State>,
    token: &mut Option<ProgressToken>,
    status: Status,
) {
    let progress = lock(state).progress;
    let (kind, message) = match &status {
        Status::Loading { model } => ("loading", format!("loading {}", model.display())),
        Status::Ready {
            model,
            backend,
            load_ms,
        } => (
            "ready",
            format!("{model} on {backend}, loaded in {:.1} s", load_ms / 1e3),
        ),
        Status::Failed { message } => ("error", message.clone()),
    };
    client
        .send_notification::<NibStatus>(json!({"state": kind, "message": message}))
        .await;
    match status {
        Status::Loading { .. } => {
            if progress {
                let t = ProgressToken::String(format!("nib/load/{}", std::process::id()));
                if client.create_work_done_progress(t.clone()).await.is_ok() {
                    send_progress(
                        client,
                        &t,
                        json!({"kind": "begin", "title": "nib", "message": message}),
                    )
                    .await;
                    *token = Some(t);
                }
            }
        }
        Status::Ready { .. } => {
            if let Some(t) = token.take() {
                send_progress(client, &t, json!({"kind": "end", "message": message})).await;
            }
            client
                .log_message(MessageType::Info, format!("nib: {message}"))
                .await;
        }
        Status::Failed { message } => {
            if let Some(t) = token.take() {
                send_progress(client, &t, json!({"kind": "end", "message": "failed"})).await;
            }
            client
                .show_message(
                    MessageType::Error,
                    format!(
                        "nib: {message}. Fetch the default model with `nib model pull`, or set `model` in nib's settings."
                    ),
                )
                .await;
        }
    }
}

async fn send_progress(client: &Client, token: &ProgressToken, value: Value) {
    client
        .send_notification::<ProgressNotification>(ProgressParams {
            token: token.clone(),
            value,
        })
        .await;
}

/// `nib/index`: progress of the workspace index for status bars:
/// `{state: "indexing", done, total}`, then `{state: "done", done, total, files, symbols, seconds}`.
enum NibIndex {}
impl Notification for NibIndex {
    type Params = Value;
    const METHOD: LspNotificationMethod<'static> = LspNotificationMethod::Custom("nib/index");
    const MESSAGE_DIRECTION: MessageDirection = MessageDirection::ServerToClient;
}

/// `nib/status`: the model's state for status bars (loading, ready, error).
enum NibStatus {}
impl Notification for NibStatus {
    type Params = Value;
    const METHOD: LspNotificationMethod<'static> = LspNotificationMethod::Custom("nib/status");
    const MESSAGE_DIRECTION: MessageDirection = MessageDirection::ServerToClient;
}

impl LanguageServer for Backend {
    async fn initialize(&self, params: InitializeParams) -> RpcResult<InitializeResult> {
        let raw = serde_json::to_value(&params).unwrap_or_default();
        let encoding = pick_encoding(&raw);
        let root = raw
            .pointer("/workspaceFolders/0/uri")
            .or_else(|| raw.get("rootUri"))
            .and_then(Value::as_str)
            .and_then(uri_to_path);
        let progress = raw
            .pointer("/capabilities/window/workDoneProgress")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let warnings = {
            let mut s = lock(&self.state);
            s.encoding = encoding;
            s.root = root;
            s.progress = progress;
            let (settings, warnings) = match raw.get("initializationOptions") {
                Some(v) => s.settings.merged(v),
                None => (s.settings.clone(), Vec::new()),
            };
            s.settings = settings;
            warnings
        };
        self.warn_all(warnings).await;
        let capabilities = json!({
            "positionEncoding": encoding_name(encoding),
            "textDocumentSync": {"openClose": true, "change": 2},
            "inlineCompletionProvider": {},
            "completionProvider": {"triggerCharacters": []},
            "executeCommandProvider": {"commands": ["nib.accept", "nib.shown", "nib.dismissed", "nib.stats", "nib.counters"]},
        });
        Ok(InitializeResult {
            capabilities: serde_json::from_value(capabilities)
                .map_err(|e| RpcError::invalid_params(e.to_string()))?,
            server_info: Some(ServerInfo {
                name: "nib".into(),
                version: Some(env!("CARGO_PKG_VERSION").into()),
            }),
        })
    }

    async fn initialized(&self, _: InitializedParams) {
        self.start_or_reload(None).await;
        let (root, index) = {
            let s = lock(&self.state);
            (s.root.clone(), s.index.clone())
        };
        if let Some(root) = root {
            let client = self.client.clone();
            let handle = tokio::runtime::Handle::current();
            std::thread::Builder::new()
                .name("nib-index".into())
                .spawn(move || {
                    let files = nib_indexer::walk::source_files(&root);
                    let total = files.len();
                    let notify = |value: Value| {
                        let client = client.clone();
                        handle.spawn(async move {
                            client.send_notification::<NibIndex>(value).await;
                        });
                    };
                    notify(json!({"state": "indexing", "done": 0, "total": total}));
                    // Progress at most every 200 ms: a big repo has tens of thousands of files.
                    let done = AtomicUsize::new(0);
                    let last = Mutex::new(Instant::now());
                    let (built, report) = nib_indexer::walk::build_cached(
                        &root,
                        &files,
                        &|_| {
                            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                            let mut at = last.lock().unwrap_or_else(|p| p.into_inner());
                            if at.elapsed() >= Duration::from_millis(200) {
                                *at = Instant::now();
                                notify(json!({"state": "indexing", "done": n, "total": total}));
                            }
                        },
                    );
                    let st = built.stats();
                    let mut shared = index.lock().unwrap_or_else(|p| p.into_inner());
                    shared.crates = built.crates;
                    // Files parsed from open documents meanwhile are newer than the disk.
                    for (path, entry) in built.files {
                        if !shared.files.contains_key(&path) {
                            shared.insert(&path, entry);
                        }
                    }
                    drop(shared);
                    if let Some(note) = &report.cache_note {
                        let (client, note) = (client.clone(), format!("nib: {note}"));
                        handle.spawn(async move { client.log_message(MessageType::Info, note).await });
                    }
                    let msg = format!(
                        "nib: indexed {} files ({} from the cache; {:.1} MB, {} symbols) in {:.2} s; {} skipped",
                        st.files,
                        report.from_cache,
                        st.bytes as f64 / 1e6,
                        st.symbols,
                        report.seconds,
                        report.skipped.len()
                    );
                    notify(json!({
                        "state": "done",
                        "done": total,
                        "total": total,
                        "files": st.files,
                        "symbols": st.symbols,
                        "seconds": report.seconds,
                    }));
                    let client = client.clone();
                    handle.spawn(async move { client.log_message(MessageType::Info, msg).await });
                })
                .ok();
        }
    }

    async fn shutdown(&self) -> RpcResult<()> {
        let mut s = lock(&self.state);
        let _ = s.stats.save(&s.stats_path);
        // Dropping the engine stops the worker and any generation in flight.
        s.engine = None;
        s.shut_down = true;
        Ok(())
    }

    async fn did_open(&self, params: DidOpenTextDocumentParams) {
        let item = params.text_document;
        let language = serde_json::to_value(&item.language_id)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut s = lock(&self.state);
        s.next_open += 1;
        let opened = s.next_open;
        s.dirty.insert(item.uri.0.clone());
        s.docs.insert(
            item.uri.0,
            OpenDoc {
                doc: Document::new(&item.text, item.version, &language),
                opened,
            },
        );
    }

    async fn did_change(&self, params: DidChangeTextDocumentParams) {
        let uri = params.text_document.text_document_identifier.uri.0;
        let version = params.text_document.version;
        let mut problems = Vec::new();
        {
            let mut s = lock(&self.state);
            let enc = s.encoding;
            let mut typed = 0u64;
            match s.docs.get_mut(&uri) {
                None => problems.push(format!("change to {uri}, which is not open: ignored")),
                Some(open) if version <= open.doc.version => problems.push(format!(
                    "stale change to {uri} (version {version}, have {}): ignored",
                    open.doc.version
                )),
                Some(open) => {
                    for change in params.content_changes {
                        let r = match change {
                            TextDocumentContentChangeEvent::TextDocumentContentChangePartial(p) => {
                                let n = p.text.chars().count() as u64;
                                if n <= 3 {
                                    typed += n;
                                }
                                let range = (
                                    (p.range.start.line, p.range.start.character),
                                    (p.range.end.line, p.range.end.character),
                                );
                                open.doc.apply_change(Some(range), &p.text, enc)
                            }
                            TextDocumentContentChangeEvent::TextDocumentContentChangeWholeDocument(w) => {
                                open.doc.apply_change(None, &w.text, enc)
                            }
                        };
                        if let Err(e) = r {
                            problems.push(format!("edit to {uri} ignored: {e}"));
                        }
                    }
                    open.doc.version = version;
                    s.dirty.insert(uri.clone());
                }
            }
            s.stats.typed_chars += typed;
        }
        for p in problems {
            self.client
                .log_message(MessageType::Warning, format!("nib: {p}"))
                .await;
        }
    }

    async fn did_close(&self, params: DidCloseTextDocumentParams) {
        let uri = params.text_document.uri.0;
        let engine = {
            let mut s = lock(&self.state);
            s.docs.remove(&uri);
            let rel = relative_path(s.root.as_deref(), &uri);
            s.parser.forget(&rel);
            s.engine.clone()
        };
        if let Some(e) = engine {
            e.forget(&uri);
        }
    }

    async fn did_change_configuration(&self, params: DidChangeConfigurationParams) {
        let (old, warnings) = {
            let mut s = lock(&self.state);
            let old = s.settings.clone();
            let (settings, warnings) = s.settings.merged(&params.settings);
            s.settings = settings;
            (old, warnings)
        };
        self.warn_all(warnings).await;
        self.start_or_reload(Some(&old)).await;
    }

    async fn did_change_watched_files(&self, params: DidChangeWatchedFilesParams) {
        // Open documents are authoritative; the repository index (nib-indexer) will take these.
        let n = params.changes.len();
        self.client
            .log_message(
                MessageType::Log,
                format!("nib: {n} watched file(s) changed"),
            )
            .await;
    }

    async fn inline_completion(
        &self,
        params: InlineCompletionParams,
    ) -> RpcResult<Option<InlineCompletionResponse>> {
        let Some((text, _)) = self.suggest(&params.text_document_position_params).await? else {
            return Ok(Some(InlineCompletionList::new(Vec::new()).into()));
        };
        // No range: the text goes in at the cursor, and editors show it inline (Neovim overlays
        // the rest of the line when a range is given).
        let item = json!({"insertText": text, "command": accept_command(&text)});
        let item: InlineCompletionItem =
            serde_json::from_value(item).map_err(|e| RpcError::invalid_params(e.to_string()))?;
        Ok(Some(InlineCompletionList::new(vec![item]).into()))
    }

    async fn completion(&self, params: CompletionParams) -> RpcResult<Option<CompletionResponse>> {
        let Some((text, at)) = self.suggest(&params.text_document_position_params).await? else {
            return Ok(None);
        };
        let label = text.lines().next().unwrap_or("").trim().to_string();
        let item = json!({
            "label": label,
            "kind": 1,
            "detail": "nib",
            "insertTextFormat": 1,
            "textEdit": {"range": {"start": at, "end": at}, "newText": text},
            "command": accept_command(&text),
        });
        let item: CompletionItem =
            serde_json::from_value(item).map_err(|e| RpcError::invalid_params(e.to_string()))?;
        Ok(Some(CompletionResponse::CompletionList(CompletionList {
            is_incomplete: true,
            item_defaults: None,
            apply_kind: None,
            items: vec![item],
        })))
    }

    async fn execute_command(&self, params: ExecuteCommandParams) -> RpcResult<Option<LspAny>> {
        let arg = params
            .arguments
            .and_then(|a| a.into_iter().next())
            .unwrap_or(Value::Null);
        let chars = arg.get("chars").and_then(Value::as_u64).unwrap_or(0);
        let partial = arg.get("partial").and_then(Value::as_bool).unwrap_or(false);
        match params.command.as_str() {
            "nib.accept" => self.record(|st| {
                if partial {
                    st.accepted_partial += 1;
                } else {
                    st.accepted += 1;
                }
                st.accepted_chars += chars;
                // The accepted text arrived as edits too; small ones were counted as typed.
                if chars <= 3 {
                    st.typed_chars = st.typed_chars.saturating_sub(chars);
                }
            }),
            "nib.shown" => self.record(|st| st.shown += 1),
            "nib.dismissed" => self.record(|st| st.dismissed += 1),
            "nib.counters" => {
                let c = lock(&self.state)
                    .engine
                    .as_ref()
                    .map(Engine::counters)
                    .unwrap_or_default();
                return Ok(Some(json!({
                    "submitted": c.submitted,
                    "typed_through": c.typed_through,
                    "generations": c.generations,
                    "cancelled": c.cancelled,
                    "superseded": c.superseded,
                })));
            }
            "nib.stats" => {
                let st = lock(&self.state).stats.clone();
                return Ok(Some(serde_json::to_value(st).unwrap_or_default()));
            }
            other => {
                return Err(RpcError::invalid_params(format!(
                    "unknown command `{other}`"
                )));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_to_paths() {
        assert_eq!(
            uri_to_path("file:///a/b%20c.rs"),
            Some(PathBuf::from("/a/b c.rs"))
        );
        assert_eq!(uri_to_path("file:///x%"), Some(PathBuf::from("/x%")));
        assert_eq!(uri_to_path("untitled:1"), None);
        assert_eq!(
            relative_path(Some(Path::new("/a")), "file:///a/src/x.rs"),
            "src/x.rs"
        );
    }

    #[test]
    fn encoding_negotiation() {
        let offer = |e: Value| json!({"capabilities": {"general": {"positionEncodings": e}}});
        assert_eq!(
            pick_encoding(&offer(json!(["utf-16", "utf-8"]))),
            Encoding::Utf8
        );
        assert_eq!(pick_encoding(&offer(json!(["utf-32"]))), Encoding::Utf32);
        assert_eq!(pick_encoding(&json!({})), Encoding::Utf16);
    }
}
