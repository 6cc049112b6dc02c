//! A seeded fuzz run against the real `nib serve` with the real model: 20,000 generated
//! messages (random JSON, every method nib handles with mutated params, huge and negative
//! positions, lone surrogates, out-of-order versions, edits past the end, cancels interleaved,
//! documents of 0 bytes and of 20 MB). Afterwards the server must still be running, have
//! answered every request that carried a usable id, hold no more memory than 1.1× what it held
//! before, and give a real completion.
//!
//! `NIB_FUZZ_SEED` and `NIB_FUZZ_MESSAGES` change the run (the defaults are what CI runs).

mod common;

use nib_lsp::client::{inline_items, LspClient};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const WORDCOUNT: &str = include_str!("../demo/wordcount.rs");

/// xorshift64*: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// Numbers that break careless position arithmetic.
fn wild_number(r: &mut Rng) -> Value {
    match r.below(8) {
        0 => json!(-1),
        1 => json!(u32::MAX),
        2 => json!(i64::MAX),
        3 => json!(i64::MIN),
        4 => json!(1.5),
        5 => json!(1e300),
        6 => json!(r.below(5)),
        _ => json!(r.below(200)),
    }
}

fn random_text(r: &mut Rng) -> String {
    let pieces = [
        "fn ",
        "main",
        "() {",
        "}",
        "\n",
        "\r\n",
        "\r",
        "    ",
        "😀",
        "é",
        "\u{2028}",
        "\t",
        "let x = ",
        "counts",
        ".",
        "::",
        "(",
        "\"",
        "'",
        "//",
        "<|fim_middle|>",
        "<|endoftext|>",
        "\0",
        "",
    ];
    (0..r.below(12)).map(|_| *r.pick(&pieces)).collect()
}

/// Replaces one part of `v` with something of another shape.
fn mutate(r: &mut Rng, v: &mut Value) {
    let replacement = match r.below(7) {
        0 => Value::Null,
        1 => wild_number(r),
        2 => json!(random_text(r)),
        3 => json!([]),
        4 => json!({}),
        5 => json!(true),
        _ => json!({"line": wild_number(r), "character": wild_number(r)}),
    };
    match v {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = r.pick(&keys).clone();
            match r.below(3) {
                0 => {
                    map.remove(&key);
                }
                1 => mutate(r, map.get_mut(&key).unwrap()),
                _ => {
                    map.insert(key, replacement);
                }
            }
        }
        Value::Array(xs) if !xs.is_empty() => {
            let i = r.below(xs.len() as u64) as usize;
            mutate(r, &mut xs[i]);
        }
        other => *other = replacement,
    }
}

struct Fuzz {
    rng: Rng,
    uris: Vec<String>,
    versions: Vec<i64>,
    next_id: i64,
    /// Requests that must be answered.
    expected: HashSet<i64>,
    recent: Vec<i64>,
}

impl Fuzz {
    fn position(&mut self) -> Value {
        if self.rng.chance(70) {
            json!({"line": self.rng.below(12), "character": self.rng.below(40)})
        } else {
            json!({"line": wild_number(&mut self.rng), "character": wild_number(&mut self.rng)})
        }
    }

    fn uri(&mut self) -> String {
        self.rng.pick(&self.uris).clone()
    }

    /// One message: its body, and the id it must be answered under, if any.
    fn message(&mut self) -> (Vec<u8>, Option<i64>) {
        let r = &mut self.rng;
        // Bodies that are not JSON-RPC at all.
        if r.chance(10) {
            let garbage: Vec<u8> = match r.below(6) {
                0 => (0..r.below(64)).map(|_| r.next() as u8).collect(),
                1 => b"{\"jsonrpc\": \"2.0\", \"method\": ".to_vec(),
                2 => b"[1, 2, 3]".to_vec(),
                3 => b"{\"jsonrpc\": \"2.0\", \"method\": \"x\", \"params\": \"\\ud800\"}".to_vec(),
                4 => b"{\"jsonrpc\": \"1.0\", \"id\": 1}".to_vec(),
                _ => Vec::new(),
            };
            return (garbage, None);
        }
        let uri = self.uri();
        let method = *self.rng.pick(&[
            "textDocument/didOpen",
            "textDocument/didChange",
            "textDocument/didChange",
            "textDocument/didClose",
            "textDocument/inlineCompletion",
            "textDocument/completion",
            "workspace/executeCommand",
            "workspace/didChangeConfiguration",
            "workspace/didChangeWatchedFiles",
            "workspace/didChangeWorkspaceFolders",
            "$/cancelRequest",
            "textDocument/hover",
            "nib/unknown",
            "nib/malformedMessage",
        ]);
        let which = self.uris.iter().position(|u| *u == uri).unwrap();
        let params = match method {
            "textDocument/didOpen" => {
                let text = if self.rng.chance(10) {
                    String::new()
                } else {
                    format!("{WORDCOUNT}{}", random_text(&mut self.rng))
                };
                let version = self.rng.below(5) as i64;
                json!({"textDocument": {"uri": uri, "languageId": *self.rng.pick(&["rust", "python", "plaintext", ""]), "version": version, "text": text}})
            }
            "textDocument/didChange" => {
                // Versions mostly go up; sometimes back (stale) or repeat.
                let step = [1, 1, 1, 0, -3][self.rng.below(5) as usize];
                self.versions[which] += step;
                let v = self.versions[which];
                let start = self.position();
                let end = if self.rng.chance(80) {
                    start.clone()
                } else {
                    self.position()
                };
                let change = if self.rng.chance(10) {
                    json!({"text": random_text(&mut self.rng)})
                } else {
                    json!({"range": {"start": start, "end": end}, "text": random_text(&mut self.rng)})
                };
                json!({"textDocument": {"uri": uri, "version": v}, "contentChanges": [change]})
            }
            "textDocument/didClose" => json!({"textDocument": {"uri": uri}}),
            "textDocument/inlineCompletion" | "textDocument/completion" | "textDocument/hover" => {
                json!({"textDocument": {"uri": uri}, "position": self.position(), "context": {"triggerKind": 1}})
            }
            "workspace/executeCommand" => {
                let command = *self.rng.pick(&[
                    "nib.accept",
                    "nib.shown",
                    "nib.dismissed",
                    "nib.stats",
                    "nib.counters",
                    "nib.context",
                    "nib.bogus",
                ]);
                let pos = self.position();
                json!({"command": command, "arguments": [{"chars": wild_number(&mut self.rng), "partial": true, "uri": uri, "line": pos["line"], "character": pos["character"]}]})
            }
            "workspace/didChangeConfiguration" => json!({"settings": {"nib": {
                "maxTokens": 8, "maxTokensMultiline": 8, "contextTokens": wild_number(&mut self.rng),
                "multiline": *self.rng.pick(&["auto", "never", "bogus"]), "languages": {"python": false}}}}),
            "workspace/didChangeWatchedFiles" => {
                json!({"changes": [{"uri": uri, "type": wild_number(&mut self.rng)}]})
            }
            "workspace/didChangeWorkspaceFolders" => {
                json!({"event": {"added": [], "removed": [{"uri": "file:///nonexistent", "name": "x"}]}})
            }
            "$/cancelRequest" => {
                let id = self.recent.last().copied().unwrap_or(0);
                json!({"id": id})
            }
            _ => json!({"anything": random_text(&mut self.rng)}),
        };
        let mut params = params;
        if self.rng.chance(15) {
            mutate(&mut self.rng, &mut params);
        }
        let is_request = matches!(
            method,
            "textDocument/inlineCompletion"
                | "textDocument/completion"
                | "textDocument/hover"
                | "workspace/executeCommand"
                | "nib/unknown"
        ) || self.rng.chance(5);
        let mut msg = json!({"jsonrpc": "2.0", "method": method, "params": params});
        let mut id = None;
        if is_request {
            self.next_id += 1;
            msg["id"] = json!(self.next_id);
            id = Some(self.next_id);
            self.recent.push(self.next_id);
            if self.recent.len() > 8 {
                self.recent.remove(0);
            }
        }
        (msg.to_string().into_bytes(), id)
    }
}

/// Sends `count` generated messages (at most `big` documents of 20 MB among them), waits until
/// every request that carried a usable id is answered, checks the server lives, and closes
/// every document it opened. Returns a line for the log.
fn flood(c: &mut LspClient, uris: &[String], seed: u64, count: usize, big: usize) -> String {
    let mut f = Fuzz {
        rng: Rng(seed | 1),
        uris: uris.to_vec(),
        versions: vec![1; uris.len()],
        next_id: 1_000_000 + (seed % 1000) as i64 * 100_000,
        expected: HashSet::new(),
        recent: Vec::new(),
    };
    let t0 = Instant::now();
    let mut answered: HashSet<i64> = HashSet::new();
    let take = |c: &mut LspClient, answered: &mut HashSet<i64>| {
        for (_, v) in c.drain() {
            if v.get("method").is_none() {
                if let Some(id) = v.get("id").and_then(Value::as_i64) {
                    answered.insert(id);
                }
            }
        }
    };
    for i in 0..count {
        // `big` documents of 20 MB, opened at even steps through the run (a Rust one and a
        // plain-text one in turn) and left to the traffic that follows.
        if big > 0 && i % (count / big).max(1) == count / (2 * big) {
            let uri = &uris[i % uris.len()];
            let language = if i % 2 == 0 { "rust" } else { "plaintext" };
            let text = format!("fn f() {{}}\n{}", "x".repeat(20 << 20));
            c.notify(
                "textDocument/didOpen",
                json!({"textDocument": {"uri": uri, "languageId": language, "version": 100, "text": text}}),
            );
        }
        // A header block with no Content-Length, now and then: dropped, the next frame read.
        if f.rng.chance(1) {
            c.send_bytes(b"Content-Type: text/plain\r\n\r\n");
        }
        let (body, id) = f.message();
        c.send_raw(&body);
        if let Some(id) = id {
            f.expected.insert(id);
        }
        if i % 500 == 0 {
            take(c, &mut answered);
        }
    }
    let sent = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !f.expected.is_subset(&answered) {
        assert!(
            Instant::now() < deadline,
            "{} of {} requests unanswered 300 s after the last message (e.g. {:?})",
            f.expected.difference(&answered).count(),
            f.expected.len(),
            f.expected.difference(&answered).take(5).collect::<Vec<_>>()
        );
        assert!(c.child.try_wait().unwrap().is_none(), "the server died");
        std::thread::sleep(Duration::from_millis(50));
        take(c, &mut answered);
    }
    assert!(c.child.try_wait().unwrap().is_none(), "the server died");
    for uri in uris {
        c.notify(
            "textDocument/didClose",
            json!({"textDocument": {"uri": uri}}),
        );
    }
    c.notify("workspace/didChangeConfiguration", json!({"settings": {"nib": {"maxTokens": 8, "multiline": "auto", "languages": {}, "contextTokens": 1024}}}));
    format!(
        "{count} messages (seed {seed:#x}) sent in {sent:?}, {} requests all answered after {:?}",
        f.expected.len(),
        t0.elapsed()
    )
}

#[test]
fn the_server_survives_twenty_thousand_generated_messages() {
    let seed: u64 = std::env::var("NIB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234);
    let count: usize = std::env::var("NIB_FUZZ_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let model = common::real_model();
    let ws = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ws.path().join("src")).unwrap();
    std::fs::write(ws.path().join("src/main.rs"), WORDCOUNT).unwrap();
    let stats = ws.path().join("stats.json");
    let root = ws.path().to_string_lossy().into_owned();
    let mut c = LspClient::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_nib")),
        &["--model", model.to_str().unwrap()],
        &[("NIB_STATS_FILE", stats.to_str().unwrap())],
    );
    c.initialize(json!({"maxTokens": 8, "maxTokensMultiline": 8}), &root);
    c.status("ready", Duration::from_secs(120));
    let main_uri = format!("file://{root}/src/main.rs");
    let complete = |c: &mut LspClient| {
        c.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": main_uri, "languageId": "rust", "version": 1, "text": WORDCOUNT}}),
        );
        let id = c.request(
            "textDocument/inlineCompletion",
            json!({"textDocument": {"uri": main_uri}, "position": {"line": 6, "character": 8}, "context": {"triggerKind": 2}}),
        );
        let items = inline_items(&c.response(id, Duration::from_secs(120)));
        c.notify(
            "textDocument/didClose",
            json!({"textDocument": {"uri": main_uri}}),
        );
        items
    };
    let first = complete(&mut c);
    assert!(first.iter().any(|t| t.contains("counts")), "{first:?}");

    let uris: Vec<String> = (0..6)
        .map(|i| format!("file://{root}/src/f{i}.rs"))
        .chain([
            format!("file://{root}/.env"),
            "untitled:Untitled-1".into(),
            "file:///C%3A/Users/a%20b/x.rs".into(),
        ])
        .collect();
    // A warm-up of the same kind first, so that "before" is the steady state: the KV-cache
    // pool (bounded at 4,096 tokens over 3 sessions), the typing-through history and the
    // allocator's arenas are full; growth after it would be a leak.
    let warm_count: usize = std::env::var("NIB_FUZZ_WARMUP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000);
    let warm = flood(&mut c, &uris, seed ^ 0x00ff_00ff, warm_count, 2);
    eprintln!("RSS after the warm-up: {} KiB", c.rss_kib());
    eprintln!("warm-up: {warm}");
    let warmed = complete(&mut c);
    assert!(
        warmed.iter().any(|t| t.contains("counts")),
        "after the warm-up: {warmed:?}"
    );
    let rss_before = c.rss_kib();
    let report = flood(&mut c, &uris, seed, count, 2);
    eprintln!("{report}");
    let last = complete(&mut c);
    assert!(
        last.iter().any(|t| t.contains("counts")),
        "after the fuzz: {last:?}"
    );
    let rss_after = c.rss_kib();
    eprintln!("RSS before {rss_before} KiB, after {rss_after} KiB");
    assert!(
        rss_after as f64 <= 1.1 * rss_before as f64,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    c.call("shutdown", json!(null));
    c.notify("exit", json!(null));
    assert_eq!(c.wait_exit(Duration::from_secs(20)), Some(0));
}
