//! `nib serve` over stdio, as an editor drives it: a real session with the real model, and the
//! bad input a server meets in the wild. The server must answer everything and never die.

mod common;

use nib_lsp::client::{inline_items, LspClient};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const WORDCOUNT: &str = include_str!("../demo/wordcount.rs");
const MIN: Duration = Duration::from_secs(60);

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/main.rs"), WORDCOUNT).unwrap();
        Self { dir }
    }
    fn root(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }
    fn uri(&self, rel: &str) -> String {
        format!("file://{}/{rel}", self.root())
    }
    fn stats_file(&self) -> String {
        self.dir
            .path()
            .join("stats.json")
            .to_string_lossy()
            .into_owned()
    }
}

fn start(ws: &Workspace, init: Value) -> LspClient {
    let model = common::real_model();
    let stats = ws.stats_file();
    let mut c = LspClient::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_nib")),
        &["--model", model.to_str().unwrap()],
        &[("NIB_STATS_FILE", stats.as_str())],
    );
    let r = c.initialize(init, &ws.root());
    assert_eq!(r["result"]["capabilities"]["positionEncoding"], "utf-16");
    assert!(r["result"]["capabilities"]["inlineCompletionProvider"].is_object());
    c.status("ready", MIN);
    c
}

fn open(c: &mut LspClient, uri: &str, text: &str) {
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "rust", "version": 1, "text": text}}),
    );
}

fn insert(c: &mut LspClient, uri: &str, version: i32, line: u32, ch: u32, text: &str) {
    c.notify(
        "textDocument/didChange",
        json!({
            "textDocument": {"uri": uri, "version": version},
            "contentChanges": [{"range": {"start": {"line": line, "character": ch}, "end": {"line": line, "character": ch}}, "text": text}],
        }),
    );
}

fn inline(c: &mut LspClient, uri: &str, line: u32, ch: u32) -> i64 {
    c.request(
        "textDocument/inlineCompletion",
        json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": ch}, "context": {"triggerKind": 2}}),
    )
}

#[test]
fn a_session_with_the_real_model() {
    let ws = Workspace::new();
    let mut c = start(&ws, json!({"debounceMs": 0}));
    let uri = ws.uri("src/main.rs");
    // The workspace index reports its progress for status bars, then its totals.
    let first = c.wait_for("nib/index", MIN, |m| m["method"] == "nib/index");
    assert_eq!(first["params"]["state"], "indexing", "{first}");
    assert_eq!(first["params"]["total"], 1, "{first}");
    let done = c.wait_for("nib/index done", MIN, |m| {
        m["method"] == "nib/index" && m["params"]["state"] == "done"
    });
    assert_eq!(done["params"]["files"], 1, "{done}");
    assert!(done["params"]["symbols"].as_u64() >= Some(1), "{done}");
    open(&mut c, &uri, WORDCOUNT);

    // The demo's cursor: inside the loop body (line 7, column 9 counted from 1).
    let id = inline(&mut c, &uri, 6, 8);
    let resp = c.response(id, MIN);
    eprintln!("{resp}");
    let first = inline_items(&resp);
    assert_eq!(first.len(), 1, "{first:?}");
    let full = first[0].clone();
    assert!(full.starts_with("counts.entry("), "{full:?}");

    // Typing what the suggestion predicted is answered from it, without the model.
    insert(&mut c, &uri, 2, 6, 8, "cou");
    let t0 = Instant::now();
    let id = inline(&mut c, &uri, 6, 11);
    let rest = inline_items(&c.response(id, MIN));
    eprintln!("typing-through answer in {:?}", t0.elapsed());
    assert_eq!(rest, vec![full[3..].to_string()]);

    // A request cancelled by the client is answered (cancelled or empty), and the next works.
    insert(&mut c, &uri, 3, 6, 11, "nt");
    let id = inline(&mut c, &uri, 6, 13);
    c.notify("$/cancelRequest", json!({"id": id}));
    let r = c.response(id, MIN);
    assert!(
        r.get("error").is_some_and(|e| e["code"] == -32800) || r.get("result").is_some(),
        "{r}"
    );

    // The completion fallback for clients without inline completion.
    let id = c.request(
        "textDocument/completion",
        json!({"textDocument": {"uri": uri}, "position": {"line": 6, "character": 13}}),
    );
    let r = c.response(id, MIN);
    let new_text = r["result"]["items"][0]["textEdit"]["newText"]
        .as_str()
        .unwrap_or("");
    assert!(!new_text.is_empty(), "{r}");

    // A configuration change applies to the next request: at most 2 tokens.
    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"nib": {"maxTokens": 2, "multiline": "never"}}}),
    );
    insert(&mut c, &uri, 4, 6, 13, "s");
    let id = inline(&mut c, &uri, 6, 14);
    let short = inline_items(&c.response(id, MIN));
    assert!(short.iter().all(|s| s.len() <= 16), "{short:?}");

    // Acceptance reported by the client lands in the local statistics.
    c.call(
        "workspace/executeCommand",
        json!({"command": "nib.accept", "arguments": [{"chars": 12}]}),
    );
    let st = c.call("workspace/executeCommand", json!({"command": "nib.stats"}));
    assert_eq!(st["result"]["accepted"], 1, "{st}");
    assert!(st["result"]["shown"].as_u64().unwrap() >= 3, "{st}");

    let r = c.call("shutdown", Value::Null);
    assert!(r.get("error").is_none(), "{r}");
    c.notify("exit", Value::Null);
    assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(0));
    let saved: Value =
        serde_json::from_slice(&std::fs::read(ws.stats_file()).expect("stats saved")).unwrap();
    assert_eq!(saved["accepted_chars"], 12);
}

#[test]
fn bad_input_never_kills_the_server() {
    let ws = Workspace::new();
    let mut c = start(&ws, json!({"nib": {"debounceMs": 30}}));
    let uri = ws.uri("src/main.rs");

    // Malformed JSON, then an unknown method: errors, and the server carries on.
    c.send_raw(b"{this is not json");
    let id = c.request("nib/noSuchMethod", json!({}));
    assert_eq!(c.response(id, MIN)["error"]["code"], -32601);

    // A document that was never opened.
    let id = inline(&mut c, &ws.uri("src/never.rs"), 0, 0);
    assert_eq!(c.response(id, MIN)["error"]["code"], -32602);

    // Positions past the end, and inside a surrogate pair.
    open(&mut c, &uri, "// 😀 emoji\nfn main() {}\n");
    let id = inline(&mut c, &uri, 40, 0);
    assert_eq!(c.response(id, MIN)["error"]["code"], -32602);
    let id = inline(&mut c, &uri, 0, 4);
    assert_eq!(c.response(id, MIN)["error"]["code"], -32602);

    // A stale version is ignored; so is an edit at an impossible position.
    insert(&mut c, &uri, 1, 0, 0, "stale ");
    insert(&mut c, &uri, 2, 99, 0, "nowhere");
    c.notify(
        "textDocument/didChange",
        json!({"textDocument": {"uri": uri}}),
    );

    // 1,000 inline requests within a second while typing: only the newest is worth answering.
    // One completion first, so the baseline includes the buffers inference allocates once.
    open(&mut c, &uri, WORDCOUNT);
    let id = inline(&mut c, &uri, 6, 8);
    assert_eq!(inline_items(&c.response(id, MIN)).len(), 1);
    let rss_before = c.rss_kib();
    let typed = "let total: usize = counts.values().sum();  ";
    let mut ids = Vec::new();
    let (mut ch, mut version) = (8u32, 2);
    let t0 = Instant::now();
    for i in 0..1000 {
        let k = typed.as_bytes()[i % typed.len()] as char;
        insert(&mut c, &uri, version, 6, ch, &k.to_string());
        version += 1;
        ch += 1;
        ids.push(inline(&mut c, &uri, 6, ch));
    }
    let sent_in = t0.elapsed();
    let mut answered = 0;
    for id in &ids {
        let r = c.response(*id, MIN);
        assert!(
            r.get("error").is_none() || r["error"]["code"] == -32800,
            "{r}"
        );
        if !inline_items(&r).is_empty() {
            answered += 1;
        }
    }
    let rss_after = c.rss_kib();
    eprintln!(
        "1000 requests sent in {sent_in:?}; {answered} got a completion; RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(sent_in < Duration::from_secs(2), "sending took {sent_in:?}");
    assert!(answered <= 3, "{answered} of 1000 requests ran the model");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );

    // The client goes away without shutdown: the server exits on its own.
    c.close_stdin();
    assert!(c.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn a_missing_model_is_reported_and_the_server_stays_up() {
    let ws = Workspace::new();
    let stats = ws.stats_file();
    let mut c = LspClient::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_nib")),
        &["--model", "/nonexistent/model.gguf"],
        &[("NIB_STATS_FILE", stats.as_str())],
    );
    c.initialize(json!({}), &ws.root());
    let msg = c.wait_for("an error message", MIN, |v| {
        v["method"] == "window/showMessage" && v["params"]["type"] == 1
    });
    let text = msg["params"]["message"].as_str().unwrap();
    assert!(text.contains("nib model pull"), "{text}");
    let uri = ws.uri("src/main.rs");
    open(&mut c, &uri, WORDCOUNT);
    let id = inline(&mut c, &uri, 6, 8);
    assert!(inline_items(&c.response(id, MIN)).is_empty());
    // A bad setting is reported, not fatal; a good model path then loads.
    c.notify(
        "workspace/didChangeConfiguration",
        json!({"settings": {"maxTokens": "many", "model": common::real_model()}}),
    );
    c.wait_for("a warning about the bad setting", MIN, |v| {
        v["method"] == "window/showMessage"
            && v["params"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("maxTokens"))
    });
    c.status("ready", MIN);
    let id = inline(&mut c, &uri, 6, 8);
    assert_eq!(inline_items(&c.response(id, MIN)).len(), 1);
    let r = c.call("shutdown", Value::Null);
    assert!(r.get("error").is_none(), "{r}");
}
