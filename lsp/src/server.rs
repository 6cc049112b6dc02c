//! `nib serve`: the language server. Protocol glue only: it keeps the open documents, turns
//! positions into byte offsets, and hands [`Request`]s to the [`Engine`]; everything about
//! when and what to complete lives in the engine and the pipeline.
//!
//! Built on tower-lsp-server (the maintained fork of tower-lsp); see docs/ARCHITECTURE.md for why.
//! Its handlers run concurrently; each reads what it needs from the shared state before its
//! first `.await`, and nothing here ever waits on the model while holding a lock.

use crate::buffer::{Document, Encoding};
use crate::engine::{Answer, Engine, Files, ModelSpec, Request, Status};
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
    /// Why this document must never reach a prompt (a secret, an ignored file), if it must not:
    /// decided when it is opened and again whenever an ignore file changes.
    excluded: Option<nib_indexer::walk::Exclusion>,
}

/// One workspace folder and its repository index (built in the background).
struct Folder {
    root: PathBuf,
    index: Arc<Mutex<nib_indexer::Index>>,
    /// The index's part of the last request's context (see `context::Cache`).
    context: Arc<crate::context::Cache>,
}

struct State {
    docs: HashMap<String, OpenDoc>,
    encoding: Encoding,
    /// The workspace folders, each with its index; a document belongs to the innermost one.
    folders: Vec<Folder>,
    settings: Settings,
    engine: Option<Engine>,
    /// Counts not yet added to the stats file (other servers write it too).
    stats: Stats,
    stats_path: PathBuf,
    next_open: u64,
    progress: bool,
    shut_down: bool,
    /// Open documents edited since the index last parsed them.
    dirty: std::collections::HashSet<String>,
    /// Parses edited documents for the index, incrementally (it keeps their last parse).
    parser: nib_indexer::SymbolParser,
    /// Whether the client reports files changed on disk (`workspace/didChangeWatchedFiles`,
    /// registered dynamically); else the server watches each folder itself.
    watch_by_client: bool,
    /// The server's own watchers, one per folder, where the client does not watch.
    watchers: HashMap<PathBuf, notify::RecommendedWatcher>,
    /// Paths changed on disk, from either kind of watcher, to the thread that re-indexes them.
    disk_changes: std::sync::mpsc::Sender<PathBuf>,
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
    map_large_blocks();
    let stats_path = Stats::default_path();
    if let Err(e) = Stats::load(&stats_path) {
        eprintln!("nib: {e}; it is left as it is, and this session's statistics are not kept");
    }
    let stats = Stats::default();
    let (disk_tx, disk_rx) = std::sync::mpsc::channel();
    let state = Arc::new(Mutex::new(State {
        docs: HashMap::new(),
        encoding: Encoding::Utf16,
        folders: Vec::new(),
        settings: Settings::default(),
        engine: None,
        stats,
        stats_path,
        next_open: 0,
        progress: false,
        shut_down: false,
        dirty: Default::default(),
        parser: Default::default(),
        watch_by_client: false,
        watchers: HashMap::new(),
        disk_changes: disk_tx,
    }));
    let client_slot: Arc<Mutex<Option<Client>>> = Arc::default();
    let (service, socket) = LspService::build(|client| {
        *client_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
        Backend {
            client,
            state: state.clone(),
            options,
        }
    })
    .custom_method(MALFORMED, Backend::malformed)
    .finish();
    let client = client_slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(client) = client {
        let (weak, handle) = (Arc::downgrade(&state), tokio::runtime::Handle::current());
        std::thread::Builder::new()
            .name("nib-disk".into())
            .spawn(move || reindex_changes(weak, disk_rx, client, handle))
            .ok();
    }
    // tower's framed reader stops for good at the first message it cannot decode; the
    // sanitizer in front of it turns such messages into a notification the server logs.
    let (reader, writer) = tokio::io::duplex(1 << 16);
    tokio::spawn(sanitize(tokio::io::stdin(), writer));
    Server::new(reader, tokio::io::stdout(), socket)
        .serve(CatchPanic {
            inner: service,
            initializing: Arc::default(),
        })
        .await;
    let mut s = lock(&state);
    let _ = flush_stats(&mut s);
    s.engine = None;
    s.shut_down
}

const MALFORMED: &str = "nib/malformedMessage";

/// Wraps the service so that a handler that panics costs its own request only: the request is
/// answered with an internal error that names the method, and the server goes on (unwinding
/// into tower's loop would end the session). The state's locks recover from poisoning.
///
/// It also holds back every message behind `initialize` until that has been answered:
/// tower-lsp-server would pass such a message on while its state is still "uninitialized" and
/// silently drop it (a client that sends `initialized` right behind `initialize` got a server
/// that never loaded its model nor indexed).
struct CatchPanic<S> {
    inner: S,
    initializing: Arc<std::sync::atomic::AtomicBool>,
}

type Reply<E> = Result<Option<tower_lsp_server::jsonrpc::Response>, E>;

impl<S> tower_service::Service<tower_lsp_server::jsonrpc::Request> for CatchPanic<S>
where
    S: tower_service::Service<
        tower_lsp_server::jsonrpc::Request,
        Response = Option<tower_lsp_server::jsonrpc::Response>,
    >,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Option<tower_lsp_server::jsonrpc::Response>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Reply<S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        if self.initializing.load(Ordering::Acquire) {
            // `initialize` is answered within milliseconds: ask to be polled again.
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tower_lsp_server::jsonrpc::Request) -> Self::Future {
        use futures_util::FutureExt;
        let id = req.id().cloned();
        let method = req.method().to_string();
        let initializing = (method == "initialize").then(|| {
            self.initializing.store(true, Ordering::Release);
            self.initializing.clone()
        });
        let failed = move |panic: Box<dyn std::any::Any + Send>| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            eprintln!("nib: handling {method} failed: {why}");
            id.map(|id| {
                let mut e = RpcError::internal_error();
                e.message = format!("nib: handling {method} failed (a bug): {why}").into();
                tower_lsp_server::jsonrpc::Response::from_error(id, e)
            })
        };
        let done = move || {
            if let Some(flag) = initializing {
                flag.store(false, Ordering::Release);
            }
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(fut) => Box::pin(async move {
                let reply = match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(reply) => reply,
                    Err(panic) => Ok(failed(panic)),
                };
                done();
                reply
            }),
            Err(panic) => {
                let reply = failed(panic);
                done();
                Box::pin(async move { Ok(reply) })
            }
        }
    }
}

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
    // Where the header search resumes, and the header block found with its body's length:
    // a 20 MB body is read once, not searched again at every read.
    let mut searched = 0;
    let mut header: Option<(usize, Option<usize>)> = None;
    loop {
        // One header block, then its body.
        let frame = loop {
            if header.is_none() {
                if let Some(at) = find(&buf[searched..], b"\r\n\r\n") {
                    let end = searched + at;
                    let headers = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len = headers.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    });
                    header = Some((end, len));
                } else {
                    searched = buf.len().saturating_sub(3);
                }
            }
            match header {
                Some((end, Some(len))) if buf.len() >= end + 4 + len => {
                    let body = buf[end + 4..end + 4 + len].to_vec();
                    buf.drain(..end + 4 + len);
                    // A 20 MB message must not pin 20 MB here for the rest of the session.
                    if buf.capacity() > 4 << 20 {
                        buf.shrink_to(1 << 17);
                    }
                    (header, searched) = (None, 0);
                    break Some(body);
                }
                Some((end, None)) => {
                    buf.drain(..end + 4);
                    (header, searched) = (None, 0);
                    break Some(malformed_body("a header block without Content-Length"));
                }
                _ => {}
            }
            match input.read(&mut chunk).await {
                Ok(0) | Err(_) => break None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let Some(body) = frame else { break };
        // A large message leaves large freed buffers behind once it is handled (here, in tower,
        // in the document it replaced): give them back a moment later.
        if body.len() > 1 << 20 {
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                release_freed_memory();
            });
        }
        let body = match check_message(&body) {
            Ok(()) => body,
            Err(why) => malformed_request(&body, &why),
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

/// The stand-in for a malformed message. One that asked something (an object with a usable id
/// and no result or error) keeps its id, so that it is answered, with an "invalid request"
/// error (tower's answer to a notification method called with an id).
fn malformed_request(body: &[u8], why: &str) -> Vec<u8> {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let id = v.as_ref().and_then(|v| {
        let id = v.get("id")?;
        let asks = v.get("result").is_none() && v.get("error").is_none();
        (asks && (id.is_i64() || id.is_string())).then(|| id.clone())
    });
    match id {
        Some(id) => {
            json!({"jsonrpc": "2.0", "id": id, "method": MALFORMED, "params": {"error": why}})
                .to_string()
                .into_bytes()
        }
        None => malformed_body(why),
    }
}

/// Whether a body is a JSON-RPC 2.0 request, notification or response that tower's decoder
/// takes: an id (if any) that is an integer, a string or null; params (if any) that are an
/// object, an array or null; a response's error an object with an integer code and a message.
fn check_message(body: &[u8]) -> Result<(), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("jsonrpc") != Some(&json!("2.0")) {
        return Err("not a JSON-RPC 2.0 message".into());
    }
    if let Some(id) = v.get("id") {
        if !(id.is_i64() || id.is_string() || id.is_null()) {
            return Err(format!("an id that is not an integer or a string: {id}"));
        }
    }
    if let Some(method) = v.get("method") {
        if !method.is_string() {
            return Err("a method that is not a string".into());
        }
        if v.get("result").is_some() || v.get("error").is_some() {
            return Err("both a request and a response".into());
        }
        return match v.get("params") {
            None | Some(Value::Object(_) | Value::Array(_) | Value::Null) => Ok(()),
            Some(_) => Err("params that are neither an object nor an array".into()),
        };
    }
    if v.get("id").is_none() {
        return Err("neither a request nor a response".into());
    }
    match (v.get("result"), v.get("error")) {
        (Some(_), None) => Ok(()),
        (None, Some(e))
            if e.get("code").is_some_and(Value::is_i64)
                && e.get("message").is_some_and(Value::is_string) =>
        {
            Ok(())
        }
        (None, Some(_)) => Err("an error without an integer code and a message".into()),
        _ => Err("neither a request nor a response".into()),
    }
}

/// `file:` URI → path, through the `url` crate (percent-escapes decoded, `localhost` hosts, and
/// on Windows drive letters and UNC hosts). A drive letter is lower-cased (`file:///C:/x` and VS
/// Code's `file:///c%3A/x` are one file), so paths from two clients compare equal.
pub fn uri_to_path(uri: &str) -> Option<PathBuf> {
    let url = url::Url::parse(uri).ok()?;
    if url.scheme() != "file" {
        return None;
    }
    let path = url.to_file_path().ok()?;
    let s = path.to_str()?;
    // `/C:/…` on Unix, `C:\…` on Windows.
    let at = usize::from(s.starts_with('/'));
    let b = s.as_bytes();
    if b.len() >= at + 2 && b[at].is_ascii_uppercase() && b[at + 1] == b':' {
        let mut s = s.to_string();
        s[at..at + 1].make_ascii_lowercase();
        return Some(PathBuf::from(s));
    }
    Some(path)
}

/// A document's path relative to its folder's root (`/` separated), else its file name.
fn relative_path(root: Option<&Path>, uri: &str) -> String {
    let path = uri_to_path(uri);
    let rel = match (root, &path) {
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
    };
    rel.replace('\\', "/")
}

impl State {
    /// The innermost workspace folder that holds `uri`.
    fn folder_of(&self, uri: &str) -> Option<&Folder> {
        let path = uri_to_path(uri)?;
        self.folders
            .iter()
            .filter(|f| path.starts_with(&f.root))
            .max_by_key(|f| f.root.as_os_str().len())
    }

    fn root_of(&self, uri: &str) -> Option<&Path> {
        self.folder_of(uri).map(|f| f.root.as_path())
    }

    /// Why a document must stay out of prompts: its name, its folder's ignore files.
    fn exclusion(&self, uri: &str) -> Option<nib_indexer::walk::Exclusion> {
        let path = uri_to_path(uri)?;
        nib_indexer::walk::exclusion(self.root_of(uri), &path)
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

    /// Starts the server's own watcher on a folder, unless the client watches for us.
    fn watch_folder(&self, root: &Path) {
        use notify::Watcher;
        let mut s = lock(&self.state);
        if s.watch_by_client || s.watchers.contains_key(root) {
            return;
        }
        let tx = s.disk_changes.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                if !event.kind.is_access() {
                    for p in event.paths {
                        let _ = tx.send(p);
                    }
                }
            }
        });
        match watcher.and_then(|mut w| w.watch(root, notify::RecursiveMode::Recursive).map(|()| w))
        {
            Ok(w) => {
                s.watchers.insert(root.to_path_buf(), w);
            }
            Err(e) => {
                let (client, root) = (self.client.clone(), root.display().to_string());
                tokio::spawn(async move {
                    let msg = format!("nib: cannot watch {root} for changes ({e}); the index follows edits in the editor only");
                    client.log_message(MessageType::Warning, msg).await;
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
            if let Some(why) = &open.excluded {
                trace(|| format!("{uri} {why}: never put in a prompt"));
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
            // Gathered on the engine's worker, outside this lock and off the async runtime,
            // and only if no typing-through answer or newer request makes it moot.
            let gather = context_job(&s, uri, text[..line_start].to_string());
            let files = Files::Gather(Box::new(gather));
            let root = s.root_of(uri);
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
                own_chars: s.settings.own_file_chars(),
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

    /// `nib.context` `{uri, line, character}`: the other-file context a completion there gets, as
    /// `{files: [{path, text}]}`, or `{excluded: why}` for a document that never reaches a prompt.
    fn context_command(&self, arg: &Value) -> Value {
        let uri = arg.get("uri").and_then(Value::as_str).unwrap_or("");
        let line = arg.get("line").and_then(Value::as_u64).unwrap_or(0) as u32;
        let character = arg.get("character").and_then(Value::as_u64).unwrap_or(0) as u32;
        let mut s = lock(&self.state);
        refresh_dirty(&mut s, uri);
        let Some(open) = s.docs.get(uri) else {
            return json!({"error": format!("document {uri} is not open")});
        };
        if let Some(why) = &open.excluded {
            return json!({"excluded": why.to_string()});
        }
        let ci = match open.doc.char_index(line, character, s.encoding) {
            Ok(ci) => ci,
            Err(e) => return json!({"error": e.to_string()}),
        };
        let (text, cursor) = open.doc.text_and_offset(ci);
        let line_start = text[..cursor].rfind('\n').map_or(0, |i| i + 1);
        let gather = context_job(&s, uri, text[..line_start].to_string());
        drop(s);
        let files: Vec<Value> = gather()
            .into_iter()
            .map(|(path, text)| json!({"path": path, "text": text}))
            .collect();
        json!({"files": files})
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
        let _ = flush_stats(&mut s);
    }
}

use crate::engine::trace;

/// What the prompt carries from other files (`context::gather`: the definitions, in the
/// repository index, of the names used before the cursor's line and similar code, then the other
/// open documents, within the configured character budget), as a job that needs no lock on the
/// server's state: the documents' ropes and the settings are snapshots (a rope clones in O(1)).
/// Nothing of a secret or ignored file, nor of a language switched off, ever comes in.
fn context_job(
    s: &State,
    uri: &str,
    before_line: String,
) -> impl FnOnce() -> Vec<(String, String)> + Send + 'static {
    let budget = s.settings.other_files_chars;
    let settings = s.settings.clone();
    // A file outside the workspace belongs to another project: the index says nothing about it.
    let folder = s
        .folder_of(uri)
        .map(|f| (f.root.clone(), f.index.clone(), f.context.clone()));
    let rel = folder
        .as_ref()
        .map(|(root, ..)| relative_path(Some(root), uri))
        .unwrap_or_default();
    // Open documents of the folder by relative path: the index reads them from the buffer (or
    // not at all, for one that must stay out), never from the disk.
    let buffers: HashMap<String, Option<ropey::Rope>> = match &folder {
        Some((root, ..)) => s
            .docs
            .iter()
            .filter(|(u, _)| s.root_of(u) == Some(root.as_path()))
            .map(|(u, d)| {
                let path = relative_path(Some(root), u);
                let allowed = d.excluded.is_none()
                    && language_enabled(&settings, &path, Some(&d.doc.language_id));
                (path, allowed.then(|| d.doc.rope.clone()))
            })
            .collect(),
        None => HashMap::new(),
    };
    let mut others: Vec<(&String, &OpenDoc)> = s
        .docs
        .iter()
        .filter(|(u, d)| {
            u.as_str() != uri && d.excluded.is_none() && settings.enabled_for(&d.doc.language_id)
        })
        .collect();
    others.sort_by_key(|(_, d)| d.opened);
    let open: Vec<crate::context::OpenFile> = others
        .into_iter()
        .map(|(u, d)| crate::context::OpenFile {
            path: display_path(s, uri, u),
            text: d.doc.rope.clone(),
        })
        .collect();
    move || {
        let read = |path: &str| -> Option<String> {
            if let Some(buffer) = buffers.get(path) {
                return buffer.as_ref().map(ropey::Rope::to_string);
            }
            let root = &folder.as_ref()?.0;
            if nib_indexer::walk::exclusion(Some(root), Path::new(path)).is_some()
                || !language_enabled(&settings, path, None)
            {
                return None;
            }
            nib_indexer::walk::read_source(&root.join(path), nib_indexer::walk::DEFAULT_MAX_BYTES)
                .ok()
        };
        let index = folder
            .as_ref()
            .map(|(_, index, _)| index.lock().unwrap_or_else(|p| p.into_inner()));
        let empty = crate::context::Cache::default();
        let cache = folder.as_ref().map_or(&empty, |(.., c)| c.as_ref());
        crate::context::gather(
            &crate::context::Sources {
                index: index.as_deref().map(|i| (i, rel.as_str())),
                before_line: &before_line,
                read: &read,
                open: &open,
                budget,
            },
            cache,
        )
    }
}

/// Whether the settings let a file of this path (and editor language id, if open) into prompts.
fn language_enabled(settings: &Settings, rel: &str, language_id: Option<&str>) -> bool {
    match language_id {
        Some(id) if !id.is_empty() => settings.enabled_for(id),
        _ => nib_indexer::Lang::detect(Path::new(rel), "")
            .is_none_or(|l| settings.enabled_for(l.language_id())),
    }
}

/// Re-parses the open documents edited since the last request (other than `current`) into
/// their folder's index, so their definitions are current. Excluded documents stay out.
fn refresh_dirty(s: &mut State, current: &str) {
    let dirty: Vec<String> = s.dirty.iter().filter(|u| *u != current).cloned().collect();
    for uri in dirty {
        s.dirty.remove(&uri);
        let Some(folder) = s.folder_of(&uri) else {
            continue;
        };
        let (root, shared) = (folder.root.clone(), folder.index.clone());
        let Some(open) = s.docs.get(&uri) else {
            continue;
        };
        if open.excluded.is_some() {
            continue;
        }
        let rel = relative_path(Some(&root), &uri);
        let lang = nib_indexer::Lang::from_language_id(&open.doc.language_id)
            .or_else(|| nib_indexer::Lang::detect(Path::new(&rel), ""));
        if let Some(lang) = lang {
            let text = open.doc.rope.to_string();
            let mut index = shared.lock().unwrap_or_else(|p| p.into_inner());
            index.update_incremental(&mut s.parser, &rel, lang, &text);
        }
    }
}

/// How a prompt names another open document: relative to its folder, and a document of another
/// workspace folder after that folder's name (two folders may both have `src/main.rs`).
fn display_path(s: &State, current: &str, uri: &str) -> String {
    let root = s.root_of(uri);
    let rel = relative_path(root, uri);
    match root {
        Some(r) if Some(r) != s.root_of(current) => {
            let name = r.file_name().map(|n| n.to_string_lossy().into_owned());
            format!("{}/{rel}", name.unwrap_or_default())
        }
        _ => rel,
    }
}

/// Blocks of 1 MiB and more are mapped and unmapped on their own (glibc would otherwise raise
/// that threshold after the first large free, and keep a 20 MB message's buffers in its heap).
fn map_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter, under glibc's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Hands memory freed by a large document back to the system: glibc keeps freed heap pages
/// (a closed 20 MB document's rope is thousands of small blocks) unless asked.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own heap to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Adds the counts not yet written to the shared stats file; returns the file's totals.
fn flush_stats(s: &mut State) -> Result<Stats, String> {
    let total = Stats::add_to_file(&s.stats, &s.stats_path)?;
    s.stats = Stats::default();
    Ok(total)
}

/// Adds a workspace folder (once) and returns its new, empty index.
fn add_folder(s: &mut State, root: PathBuf) -> Option<Arc<Mutex<nib_indexer::Index>>> {
    if s.folders.iter().any(|f| f.root == root) {
        return None;
    }
    let index = Arc::new(Mutex::new(nib_indexer::Index::new()));
    s.folders.push(Folder {
        context: Arc::default(),
        root,
        index: index.clone(),
    });
    Some(index)
}

/// Decides again, for every open document, whether it must stay out of prompts (after an
/// ignore file or the folders changed).
fn refresh_exclusions(s: &mut State) {
    let verdicts: Vec<(String, Option<nib_indexer::walk::Exclusion>)> =
        s.docs.keys().map(|u| (u.clone(), s.exclusion(u))).collect();
    for (uri, excluded) in verdicts {
        if let Some(open) = s.docs.get_mut(&uri) {
            if open.excluded.is_some() && excluded.is_none() {
                s.dirty.insert(uri.clone());
            }
            open.excluded = excluded;
        }
    }
    forget_context(s);
}

/// Drops every folder's cached context (what may enter a prompt changed).
fn forget_context(s: &mut State) {
    for f in &mut s.folders {
        f.context = Arc::default();
    }
}

/// Indexes a workspace folder on a thread of its own (from the on-disk cache where it can),
/// reporting progress as `nib/index` notifications that name the folder.
fn spawn_index(client: Client, root: PathBuf, index: Arc<Mutex<nib_indexer::Index>>) {
    let handle = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name("nib-index".into())
        .spawn(move || {
            let files = nib_indexer::walk::source_files(&root);
            let total = files.len();
            let folder = root.to_string_lossy().into_owned();
            let notify = |mut value: Value| {
                value["folder"] = json!(folder);
                let client = client.clone();
                handle.spawn(async move {
                    client.send_notification::<NibIndex>(value).await;
                });
            };
            notify(json!({"state": "indexing", "done": 0, "total": total}));
            // Progress at most every 200 ms: a big repo has tens of thousands of files.
            let done = AtomicUsize::new(0);
            let last = Mutex::new(Instant::now());
            let (built, report) = nib_indexer::walk::build_cached(&root, &files, &|_| {
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                let mut at = last.lock().unwrap_or_else(|p| p.into_inner());
                if at.elapsed() >= Duration::from_millis(200) {
                    *at = Instant::now();
                    notify(json!({"state": "indexing", "done": n, "total": total}));
                }
            });
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
                "nib: indexed {} ({} files, {} from the cache; {:.1} MB, {} symbols) in {:.2} s; {} skipped",
                root.display(),
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
        });
    if let Err(e) = spawned {
        eprintln!("nib: cannot start the indexer thread: {e}");
    }
}

/// Whether a file's change can change what the walk takes in.
fn is_ignore_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    matches!(name, ".gitignore" | ".ignore" | ".nibignore") || path.ends_with(".git/info/exclude")
}

/// The thread that keeps the indexes current with the disk: it takes the paths both kinds of
/// watcher report, waits until they stop coming for a moment (a `git checkout` changes many
/// files at once), applies them, and says so in a `nib/index` notification (`updated`). Ends
/// with the server.
fn reindex_changes(
    state: std::sync::Weak<Mutex<State>>,
    rx: std::sync::mpsc::Receiver<PathBuf>,
    client: Client,
    handle: tokio::runtime::Handle,
) {
    // Blocks without waking while nothing changes; ends when the state (which holds every
    // sender) is gone.
    while let Ok(first) = rx.recv() {
        let mut paths = std::collections::BTreeSet::from([first]);
        while let Ok(p) = rx.recv_timeout(Duration::from_millis(150)) {
            paths.insert(p);
        }
        let Some(state) = state.upgrade() else { return };
        let n = paths.len();
        let changed = apply_disk_changes(&state, paths.into_iter().collect());
        let client = client.clone();
        handle.spawn(async move {
            let value = json!({"state": "updated", "reported": n, "changed": changed});
            client.send_notification::<NibIndex>(value).await;
        });
    }
}

/// Parses a file read from the disk into an index entry.
fn entry_of(
    parser: &mut nib_indexer::SymbolParser,
    lang: nib_indexer::Lang,
    text: &str,
) -> nib_indexer::index::FileEntry {
    nib_indexer::index::FileEntry {
        lang,
        bytes: text.len(),
        symbols: parser.parse(lang, text),
    }
}

/// Brings each folder's index up to date with files changed on disk: a changed file is parsed
/// again from the disk (unless it is open: the editor's text is authoritative), a file gone,
/// or now excluded, leaves the index, and a changed ignore file re-walks its folder and
/// re-decides every open document. Parsing happens outside every lock. Returns how many index
/// entries changed.
fn apply_disk_changes(state: &Mutex<State>, paths: Vec<PathBuf>) -> usize {
    use nib_indexer::walk::{exclusion, read_source, DEFAULT_MAX_BYTES};
    type Work = (
        PathBuf,
        Arc<Mutex<nib_indexer::Index>>,
        Vec<(String, PathBuf)>,
        bool,
    );
    let work: Vec<Work> = {
        let s = lock(state);
        let open: std::collections::HashSet<PathBuf> =
            s.docs.keys().filter_map(|u| uri_to_path(u)).collect();
        let mut by_folder: Vec<Work> = Vec::new();
        for path in paths {
            let Some(f) = s
                .folders
                .iter()
                .filter(|f| path.starts_with(&f.root))
                .max_by_key(|f| f.root.as_os_str().len())
            else {
                continue;
            };
            let at = match by_folder.iter().position(|w| w.0 == f.root) {
                Some(i) => i,
                None => {
                    by_folder.push((f.root.clone(), f.index.clone(), Vec::new(), false));
                    by_folder.len() - 1
                }
            };
            if is_ignore_file(&path) {
                by_folder[at].3 = true;
            } else if !open.contains(&path) {
                let Ok(rel) = path.strip_prefix(&f.root) else {
                    continue;
                };
                let rel = rel.to_string_lossy().replace('\\', "/");
                by_folder[at].2.push((rel, path));
            }
        }
        by_folder
    };
    let mut parser = nib_indexer::SymbolParser::new();
    let mut changed = 0usize;
    let mut ignores_changed = false;
    for (root, index, files, rewalk) in work {
        let mut parsed = Vec::new();
        let mut gone = Vec::new();
        for (rel, abs) in files {
            let text = match exclusion(Some(&root), &abs) {
                None => read_source(&abs, DEFAULT_MAX_BYTES).ok(),
                Some(_) => None,
            };
            let lang = text
                .as_deref()
                .and_then(|t| nib_indexer::Lang::detect(&abs, t));
            match (lang, text) {
                (Some(lang), Some(text)) => parsed.push((rel, entry_of(&mut parser, lang, &text))),
                // Gone, excluded, or no longer a source file (a directory is its files).
                _ if !abs.is_dir() => gone.push(rel),
                _ => {}
            }
        }
        // After an ignore file changed, the walk says what belongs to the folder now.
        let walked = rewalk.then(|| nib_indexer::walk::source_files(&root));
        let mut shared = index.lock().unwrap_or_else(|p| p.into_inner());
        for rel in gone {
            // A directory that went away takes its files along.
            let prefix = format!("{rel}/");
            let under: Vec<String> = (shared.files.keys())
                .filter(|p| **p == rel || p.starts_with(&prefix))
                .cloned()
                .collect();
            for p in under {
                shared.remove(&p);
                changed += 1;
            }
        }
        for (rel, entry) in parsed {
            shared.insert(&rel, entry);
            changed += 1;
        }
        let Some(walked) = walked else { continue };
        ignores_changed = true;
        let keep: std::collections::HashSet<&str> =
            walked.iter().map(|(_, r)| r.as_str()).collect();
        let stale: Vec<String> = (shared.files.keys())
            .filter(|p| !keep.contains(p.as_str()))
            .cloned()
            .collect();
        for p in stale {
            shared.remove(&p);
            changed += 1;
        }
        let missing: Vec<(PathBuf, String)> = walked
            .into_iter()
            .filter(|(_, r)| !shared.files.contains_key(r))
            .collect();
        drop(shared);
        for (abs, rel) in missing {
            let Ok(text) = read_source(&abs, DEFAULT_MAX_BYTES) else {
                continue;
            };
            let Some(lang) = nib_indexer::Lang::detect(&abs, &text) else {
                continue;
            };
            let entry = entry_of(&mut parser, lang, &text);
            index
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(&rel, entry);
            changed += 1;
        }
    }
    let mut s = lock(state);
    if ignores_changed {
        refresh_exclusions(&mut s);
    }
    forget_context(&mut s);
    trace(|| format!("re-indexed {changed} file(s) changed on disk"));
    changed
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
    let (kind, message, kernels) = match &status {
        Status::Loading { model } => ("loading", format!("loading {}", model.display()), None),
        Status::Ready {
            model,
            backend,
            kernels,
            load_ms,
        } => {
            let on = match kernels {
                Some(k) => format!("{backend} ({k} kernels)"),
                None => backend.clone(),
            };
            let message = format!("{model} on {on}, loaded in {:.1} s", load_ms / 1e3);
            ("ready", message, kernels.clone())
        }
        Status::Failed { message } => ("error", message.clone(), None),
    };
    client
        .send_notification::<NibStatus>(
            json!({"state": kind, "message": message, "kernels": kernels}),
        )
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
        // Every workspace folder; `rootUri` only where the client names none.
        let mut roots: Vec<PathBuf> = raw
            .get("workspaceFolders")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| f.get("uri").and_then(Value::as_str).and_then(uri_to_path))
            .collect();
        if roots.is_empty() {
            roots.extend(
                raw.get("rootUri")
                    .and_then(Value::as_str)
                    .and_then(uri_to_path),
            );
        }
        let watch_by_client = raw
            .pointer("/capabilities/workspace/didChangeWatchedFiles/dynamicRegistration")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let progress = raw
            .pointer("/capabilities/window/workDoneProgress")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let warnings = {
            let mut s = lock(&self.state);
            s.encoding = encoding;
            for root in roots {
                add_folder(&mut s, root);
            }
            s.watch_by_client = watch_by_client;
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
            "executeCommandProvider": {"commands": ["nib.accept", "nib.shown", "nib.dismissed", "nib.stats", "nib.counters", "nib.timings", "nib.context"]},
            "workspace": {"workspaceFolders": {"supported": true, "changeNotifications": true}},
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
        let (folders, by_client) = {
            let s = lock(&self.state);
            let folders: Vec<_> = s
                .folders
                .iter()
                .map(|f| (f.root.clone(), f.index.clone()))
                .collect();
            (folders, s.watch_by_client)
        };
        for (root, index) in &folders {
            spawn_index(self.client.clone(), root.clone(), index.clone());
        }
        // Files changed outside the editor (a `git checkout`, a build): the client watches for
        // us where it can; otherwise the server's own watcher does.
        if by_client {
            let watchers = json!({"watchers": [{"globPattern": "**/*"}]});
            let registration = Registration {
                id: "nib/watch".into(),
                method: "workspace/didChangeWatchedFiles".into(),
                register_options: Some(watchers),
            };
            if let Err(e) = self.client.register_capability(vec![registration]).await {
                self.client
                    .log_message(
                        MessageType::Warning,
                        format!("nib: the client refused file watching ({e}); watching on our own"),
                    )
                    .await;
                lock(&self.state).watch_by_client = false;
            }
        }
        for (root, _) in &folders {
            self.watch_folder(root);
        }
    }

    async fn did_change_workspace_folders(&self, params: DidChangeWorkspaceFoldersParams) {
        let mut added = Vec::new();
        {
            let mut s = lock(&self.state);
            for f in &params.event.removed {
                if let Some(root) = uri_to_path(&f.uri.0) {
                    s.folders.retain(|x| x.root != root);
                    s.watchers.remove(&root);
                }
            }
            for f in &params.event.added {
                if let Some(root) = uri_to_path(&f.uri.0) {
                    if let Some(index) = add_folder(&mut s, root.clone()) {
                        added.push((root, index));
                    }
                }
            }
            refresh_exclusions(&mut s);
        }
        for (root, index) in added {
            self.watch_folder(&root);
            spawn_index(self.client.clone(), root, index);
        }
    }

    async fn shutdown(&self) -> RpcResult<()> {
        let mut s = lock(&self.state);
        let _ = flush_stats(&mut s);
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
        let excluded = s.exclusion(&item.uri.0);
        if let Some(why) = &excluded {
            trace(|| format!("{} {why}: it stays out of every prompt", item.uri.0));
        }
        let replaced = s.docs.insert(
            item.uri.0,
            OpenDoc {
                doc: Document::new(&item.text, item.version, &language),
                opened,
                excluded,
            },
        );
        if replaced.is_some_and(|d| d.doc.rope.len_bytes() > 1 << 20) {
            release_freed_memory();
        }
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
            s.stats.typed_chars = s.stats.typed_chars.saturating_add(typed);
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
            let rel = relative_path(s.root_of(&uri), &uri);
            let closed = s.docs.remove(&uri);
            s.parser.forget(&rel);
            if closed.is_some_and(|d| d.doc.rope.len_bytes() > 1 << 20) {
                release_freed_memory();
            }
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
        // The re-indexing thread takes them (open documents stay authoritative).
        let tx = lock(&self.state).disk_changes.clone();
        for change in params.changes {
            if let Some(p) = uri_to_path(&change.uri.0) {
                let _ = tx.send(p);
            }
        }
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
        // No suggestion is a megabyte long: such a count is a client's bug, not an acceptance.
        if chars > 1 << 20 {
            return Err(RpcError::invalid_params(format!(
                "`chars` {chars} is not the length of a suggestion"
            )));
        }
        let partial = arg.get("partial").and_then(Value::as_bool).unwrap_or(false);
        match params.command.as_str() {
            "nib.accept" => self.record(|st| {
                if partial {
                    st.accepted_partial += 1;
                } else {
                    st.accepted += 1;
                }
                st.accepted_chars = st.accepted_chars.saturating_add(chars);
                // The accepted text arrived as edits too; small ones were counted as typed.
                if chars <= 3 {
                    st.typed_chars = st.typed_chars.saturating_sub(chars);
                }
            }),
            // A fault injected by the tests (only with NIB_TEST_FAULTS=1): a bug in a handler.
            "nib.testPanic" if std::env::var_os("NIB_TEST_FAULTS").is_some() => {
                let _held = lock(&self.state);
                panic!("injected fault");
            }
            "nib.context" => return Ok(Some(self.context_command(&arg))),
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
            // Where each request's time went since the last call (the replay's breakdown).
            "nib.timings" => {
                let engine = lock(&self.state).engine.clone();
                let t = engine
                    .as_ref()
                    .map(Engine::take_timings)
                    .unwrap_or_default();
                return Ok(Some(serde_json::to_value(t).unwrap_or_default()));
            }
            "nib.stats" => {
                let st = flush_stats(&mut lock(&self.state)).map_err(RpcError::invalid_params)?;
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

    /// xorshift64*, for the generated cases below.
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn uris_through_the_url_crate() {
        let cases = [
            ("file:///a/b%20c.rs", Some("/a/b c.rs")),
            (
                "file:///home/u/My%20Project/%C3%A9t%C3%A9.rs",
                Some("/home/u/My Project/été.rs"),
            ),
            ("file://localhost/etc/x.rs", Some("/etc/x.rs")),
            ("file:///a/100%25.rs", Some("/a/100%.rs")),
            ("untitled:Untitled-1", None),
            ("https://example.com/x.rs", None),
            ("not a uri", None),
        ];
        for (uri, want) in cases {
            assert_eq!(uri_to_path(uri), want.map(PathBuf::from), "{uri}");
        }
        // Windows drive letters, as VS Code (`c%3A`, lower case) and others (`C:`) write them,
        // are one path; on Windows itself the url crate gives `c:\…`.
        let a = uri_to_path("file:///c%3A/Users/a%20b/x.rs").unwrap();
        let b = uri_to_path("file:///C:/Users/a%20b/x.rs").unwrap();
        assert_eq!(a, b);
        #[cfg(not(windows))]
        assert_eq!(a, PathBuf::from("/c:/Users/a b/x.rs"));
        #[cfg(windows)]
        assert_eq!(a, PathBuf::from("c:\\Users\\a b\\x.rs"));
        let root = uri_to_path("file:///c%3A/work").unwrap();
        assert_eq!(
            relative_path(Some(&root), "file:///C:/work/src/x.rs"),
            "src/x.rs"
        );
        assert_eq!(
            relative_path(Some(Path::new("/a")), "file:///a/src/x.rs"),
            "src/x.rs"
        );
    }

    /// The sanitizer, fed generated frames in random pieces: every frame comes out once and in
    /// order, a valid one byte for byte, an invalid one as the malformed-message stand-in
    /// (keeping a request's usable id); a header block without Content-Length is dropped.
    #[test]
    fn the_sanitizer_frames_whatever_it_is_fed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bodies: [&[u8]; 10] = [
            br#"{"jsonrpc":"2.0","id":1,"method":"x","params":{}}"#,
            br#"{"jsonrpc":"2.0","method":"n"}"#,
            br#"{"jsonrpc":"2.0","id":"s","result":null}"#,
            br#"{"jsonrpc":"2.0","id":7,"method":"x","params":3}"#,
            br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":2,"error":{"code":"x"}}"#,
            br#"{"jsonrpc":"2.0","method":"x","params":"\ud800"}"#,
            b"[1,2]",
            b"\xff\xfe garbage",
            b"",
        ];
        let mut seed = 0x1234_5678_9abc_def1u64;
        for round in 0..200 {
            let mut input = Vec::new();
            let mut want: Vec<Option<&[u8]>> = Vec::new();
            for _ in 0..(1 + rng(&mut seed) % 12) {
                if rng(&mut seed).is_multiple_of(10) {
                    input.extend_from_slice(b"X-Nothing: 1\r\n\r\n");
                    want.push(None);
                }
                let body = bodies[(rng(&mut seed) % bodies.len() as u64) as usize];
                input.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                );
                input.extend_from_slice(body);
                want.push(Some(body));
            }
            let out = rt.block_on(async {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let (mut tx, rx) = tokio::io::duplex(1 << 20);
                let (wtx, mut wrx) = tokio::io::duplex(1 << 20);
                let task = tokio::spawn(sanitize(rx, wtx));
                let mut at = 0;
                while at < input.len() {
                    let n = (1 + rng(&mut seed) % 40) as usize;
                    let end = (at + n).min(input.len());
                    tx.write_all(&input[at..end]).await.unwrap();
                    at = end;
                }
                drop(tx);
                let mut out = Vec::new();
                wrx.read_to_end(&mut out).await.unwrap();
                task.await.unwrap();
                out
            });
            let mut frames = Vec::new();
            let mut rest = &out[..];
            while !rest.is_empty() {
                let end = find(rest, b"\r\n\r\n").expect("a header");
                let head = std::str::from_utf8(&rest[..end]).unwrap();
                let len: usize = head
                    .strip_prefix("Content-Length: ")
                    .unwrap()
                    .parse()
                    .unwrap();
                frames.push(rest[end + 4..end + 4 + len].to_vec());
                rest = &rest[end + 4 + len..];
            }
            assert_eq!(frames.len(), want.len(), "round {round}");
            for (got, want) in frames.iter().zip(&want) {
                let v: Value = serde_json::from_slice(got).unwrap();
                match want {
                    Some(body) if check_message(body).is_ok() => assert_eq!(got, body),
                    Some(body) => {
                        assert_eq!(v["method"], MALFORMED, "round {round}");
                        let orig: Option<Value> = serde_json::from_slice(body).ok();
                        let asks = orig
                            .as_ref()
                            .is_some_and(|o| o.get("result").is_none() && o.get("error").is_none());
                        let id = (orig.as_ref())
                            .and_then(|o| o.get("id"))
                            .filter(|i| asks && (i.is_i64() || i.is_string()));
                        assert_eq!(v.get("id"), id, "{v}");
                    }
                    None => {
                        assert_eq!(v["method"], MALFORMED);
                        assert!(v.get("id").is_none());
                    }
                }
            }
        }
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
