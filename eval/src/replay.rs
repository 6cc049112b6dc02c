//! Typing replay through a real `nib serve`: a simulated developer types a stretch of a real file
//! into the editor at human pace, one keystroke at a time, asking for a suggestion after each, and
//! accepts a suggestion whenever it matches what comes next (as much of it as matches). What comes
//! out is what a user feels: keystroke → suggestion latency, how often the model runs, how often
//! typing-through answers without it, and the share of characters nib wrote (keystrokes saved).

use nib_lsp::client::{inline_items, LspClient};
pub use nib_lsp::engine::{Outcome, Timing};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ReplayParams {
    /// Characters typed per second.
    pub cps: f64,
    /// Extra pause after a line break, as a developer reads or thinks.
    pub line_pause: Duration,
    /// Characters to type per file, cut at a line end.
    pub chars: usize,
    /// Where typing starts, as a fraction of the file (at a line start).
    pub start: f64,
    /// Partial acceptance needs at least this many matching characters.
    pub min_partial: usize,
}

impl Default for ReplayParams {
    fn default() -> Self {
        Self {
            cps: 8.0,
            line_pause: Duration::from_millis(400),
            chars: 400,
            start: 0.5,
            min_partial: 4,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FileReplay {
    pub path: String,
    /// Characters of the stretch, typed or accepted.
    pub chars: usize,
    pub keystrokes: usize,
    pub accepted_chars: usize,
    pub accepts: usize,
    /// Suggestions that reached the editor while still current.
    pub shown: usize,
    /// Keystroke → suggestion, for every request answered with a suggestion.
    pub latencies_ms: Vec<f64>,
    /// Engine counters over this file (from `nib.counters`).
    pub requests: u64,
    pub typed_through: u64,
    pub generations: u64,
    /// Requests the server answered with an error (the first one's message is kept).
    pub errors: usize,
    pub first_error: Option<String>,
    /// Where each request's time went, from the server (`nib.timings`).
    pub timings: Vec<Timing>,
}

/// One part of the generations' time over a run: mean, median and 95th percentile.
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    pub name: &'static str,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
}

/// The parts of the generations' time (requests that ran the model to the end).
pub fn breakdown(timings: &[Timing]) -> Vec<Part> {
    let generated: Vec<&Timing> = timings
        .iter()
        .filter(|t| t.outcome == Outcome::Generated)
        .collect();
    type Measure = fn(&Timing) -> f64;
    let parts: [(&'static str, Measure); 12] = [
        ("queue ms", |t| t.queue_ms),
        ("context ms", |t| t.context_ms),
        ("tokenize ms", |t| t.tokenize_ms),
        ("prompt tokens", |t| t.prompt_tokens as f64),
        ("prefill tokens reused", |t| t.reused_tokens as f64),
        ("prefill tokens new", |t| t.new_tokens() as f64),
        ("prefill ms", |t| t.prefill_ms),
        ("decode tokens", |t| t.generated_tokens as f64),
        ("decode ms", |t| t.decode_ms),
        ("post-processing ms", |t| t.postprocess_ms),
        ("answer ms", |t| t.answer_ms),
        ("total ms (a block to its end)", |t| t.total_ms),
    ];
    parts
        .into_iter()
        .map(|(name, f)| {
            let xs: Vec<f64> = generated.iter().map(|t| f(t)).collect();
            Part {
                name,
                mean: if xs.is_empty() {
                    0.0
                } else {
                    xs.iter().sum::<f64>() / xs.len() as f64
                },
                p50: quantile(&xs, 0.5),
                p95: quantile(&xs, 0.95),
            }
        })
        .collect()
}

/// How many requests ended each way (`generated`, `typed_through`, `cancelled`, …).
pub fn outcomes(timings: &[Timing]) -> std::collections::BTreeMap<Outcome, usize> {
    let mut m = std::collections::BTreeMap::new();
    for t in timings {
        *m.entry(t.outcome).or_insert(0) += 1;
    }
    m
}

impl FileReplay {
    pub fn keystrokes_saved(&self) -> f64 {
        ratio(self.accepted_chars, self.chars)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The `q`-quantile of `xs` (nearest rank); 0 for none.
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// The stretch to type: `(start, end)` byte offsets, from a line start near `start` of the file,
/// about `chars` long, ending at a line end.
pub fn stretch(text: &str, start: f64, chars: usize) -> (usize, usize) {
    let mut s = ((text.len() as f64 * start) as usize).min(text.len());
    while !text.is_char_boundary(s) {
        s -= 1;
    }
    s = text[..s].rfind('\n').map_or(0, |i| i + 1);
    let mut e = (s + chars).min(text.len());
    while !text.is_char_boundary(e) {
        e -= 1;
    }
    e = text[..e].rfind('\n').map_or(e, |i| i + 1).max(s);
    (s, e)
}

/// LSP position (UTF-16) of the end of `prefix`.
fn position(prefix: &str) -> Value {
    let line = prefix.matches('\n').count();
    let last = prefix.rfind('\n').map_or(prefix, |i| &prefix[i + 1..]);
    json!({"line": line, "character": last.encode_utf16().count()})
}

/// Characters at the start of `a` that `b` starts with too (whole chars, as bytes of `a`).
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or_else(|| a.len().min(b.len()), |((i, _), _)| i)
}

/// Replays typing into one file through `client` (initialized, model ready).
pub fn replay_file(
    client: &mut LspClient,
    path: &Path,
    p: &ReplayParams,
) -> anyhow::Result<FileReplay> {
    let text = std::fs::read_to_string(path)?;
    let (s, e) = stretch(&text, p.start, p.chars);
    // The stretch ends with a line break, which stays in the document: the user types into an
    // empty line with the rest of the file below it.
    let e = if text[s..e].ends_with('\n') { e - 1 } else { e };
    let target = &text[s..e];
    let uri = format!("file://{}", path.canonicalize()?.display());
    let mut prefix = text[..s].to_string();
    let suffix = &text[e..];
    client.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": language_id(path), "version": 1, "text": format!("{prefix}{suffix}")}}),
    );
    let before = counters(client);
    let _ = timings(client); // what came before this file
    let mut r = FileReplay {
        path: path.display().to_string(),
        chars: target.len(),
        ..Default::default()
    };
    let mut version = 1;
    let mut pos = 0usize; // bytes of `target` in the document so far
    let mut latest: Option<(i64, usize)>; // (request id, pos when asked)
    let mut sent: std::collections::HashMap<i64, Instant> = Default::default();
    let keystroke = Duration::from_secs_f64(1.0 / p.cps);
    let insert = |client: &mut LspClient, prefix: &mut String, version: &mut i32, s: &str| {
        let at = position(prefix);
        *version += 1;
        client.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": *version}, "contentChanges": [{"range": {"start": at, "end": at}, "text": s}]}),
        );
        prefix.push_str(s);
    };
    while pos < target.len() {
        // One keystroke, then a request for a suggestion at the new cursor.
        let c = target[pos..].chars().next().unwrap();
        insert(client, &mut prefix, &mut version, &c.to_string());
        pos += c.len_utf8();
        r.keystrokes += 1;
        let id = client.request(
            "textDocument/inlineCompletion",
            json!({"textDocument": {"uri": uri}, "position": position(&prefix), "context": {"triggerKind": 2}}),
        );
        sent.insert(id, Instant::now());
        latest = Some((id, pos));
        let mut next = Instant::now() + keystroke;
        if c == '\n' {
            next += p.line_pause;
        }
        // Until the next keystroke: read answers, accept what matches.
        while Instant::now() < next && pos < target.len() {
            for (at, msg) in client.drain() {
                let Some(id) = msg.get("id").and_then(Value::as_i64) else {
                    continue;
                };
                if msg.get("method").is_some() {
                    continue;
                }
                if let Some(e) = msg.get("error") {
                    r.errors += 1;
                    r.first_error.get_or_insert_with(|| e.to_string());
                }
                let items = inline_items(&msg);
                let Some(text) = items.first() else { continue };
                if let Some(t0) = sent.remove(&id) {
                    r.latencies_ms
                        .push(at.duration_since(t0).as_secs_f64() * 1e3);
                }
                // Only the answer to the latest request is still on screen.
                if latest.map(|(l, lp)| l == id && lp == pos) != Some(true) {
                    continue;
                }
                r.shown += 1;
                let rest = &target[pos..];
                let m = common_prefix(text, rest);
                let whole = m == text.len();
                if m == 0 || (!whole && m < p.min_partial) {
                    continue;
                }
                let accepted = rest[..m].to_string();
                insert(client, &mut prefix, &mut version, &accepted);
                pos += m;
                r.accepted_chars += m;
                r.accepts += 1;
                latest = None;
                client.request(
                    "workspace/executeCommand",
                    json!({"command": "nib.accept", "arguments": [{"chars": accepted.chars().count(), "partial": !whole}]}),
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Let the last answers land, then close the file.
    std::thread::sleep(Duration::from_millis(300));
    for (at, msg) in client.drain() {
        if let (Some(id), false) = (
            msg.get("id").and_then(Value::as_i64),
            inline_items(&msg).is_empty(),
        ) {
            if let Some(t0) = sent.remove(&id) {
                r.latencies_ms
                    .push(at.duration_since(t0).as_secs_f64() * 1e3);
            }
        }
    }
    client.notify(
        "textDocument/didClose",
        json!({"textDocument": {"uri": uri}}),
    );
    let after = counters(client);
    let d = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    r.requests = d("submitted");
    r.typed_through = d("typed_through");
    r.generations = d("generations");
    r.timings = timings(client);
    Ok(r)
}

fn timings(client: &mut LspClient) -> Vec<Timing> {
    let v = client.call(
        "workspace/executeCommand",
        json!({"command": "nib.timings"}),
    )["result"]
        .clone();
    serde_json::from_value(v).unwrap_or_default()
}

fn counters(client: &mut LspClient) -> Value {
    client.call(
        "workspace/executeCommand",
        json!({"command": "nib.counters"}),
    )["result"]
        .clone()
}

fn language_id(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "rs" => "rust",
        "py" => "python",
        "js" => "javascript",
        "ts" => "typescript",
        "go" => "go",
        "java" => "java",
        "c" | "h" => "c",
        "cc" | "cpp" | "hpp" => "cpp",
        _ => "plaintext",
    }
}

/// The summary over all files.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub files: usize,
    pub chars: usize,
    pub keystrokes: usize,
    pub accepted_chars: usize,
    pub keystrokes_saved: f64,
    pub suggestions: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub model_calls_per_keystroke: f64,
    pub typing_through_hit_rate: f64,
    /// The generations' time, part by part.
    pub parts: Vec<Part>,
    /// Requests by how they ended.
    pub outcomes: std::collections::BTreeMap<Outcome, usize>,
}

pub fn summarize(files: &[FileReplay]) -> Summary {
    let lat: Vec<f64> = files
        .iter()
        .flat_map(|f| f.latencies_ms.iter().copied())
        .collect();
    let sum = |f: fn(&FileReplay) -> usize| files.iter().map(f).sum::<usize>();
    let (chars, keys, acc) = (
        sum(|f| f.chars),
        sum(|f| f.keystrokes),
        sum(|f| f.accepted_chars),
    );
    let gens: u64 = files.iter().map(|f| f.generations).sum();
    let reqs: u64 = files.iter().map(|f| f.requests).sum();
    let through: u64 = files.iter().map(|f| f.typed_through).sum();
    let all_timings: Vec<Timing> = files.iter().flat_map(|f| f.timings.clone()).collect();
    Summary {
        files: files.len(),
        chars,
        keystrokes: keys,
        accepted_chars: acc,
        keystrokes_saved: ratio(acc, chars),
        suggestions: lat.len(),
        p50_ms: quantile(&lat, 0.5),
        p95_ms: quantile(&lat, 0.95),
        p99_ms: quantile(&lat, 0.99),
        model_calls_per_keystroke: ratio(gens as usize, keys),
        typing_through_hit_rate: ratio(through as usize, reqs as usize),
        parts: breakdown(&all_timings),
        outcomes: outcomes(&all_timings),
    }
}

/// Starts `nib serve` from `nib` with `model` and waits until it is ready.
pub fn start_server(nib: &Path, model: &Path, root: &Path, settings: Value) -> LspClient {
    let stats = std::env::temp_dir().join(format!("nib-replay-stats-{}.json", std::process::id()));
    let mut c = LspClient::spawn(
        nib,
        &["--model", &model.to_string_lossy()],
        &[("NIB_STATS_FILE", &stats.to_string_lossy())],
    );
    c.initialize(settings, &root.to_string_lossy());
    c.status("ready", Duration::from_secs(120));
    c
}

/// `nib` next to the running executable (both are built into the same target directory).
pub fn default_nib() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|p| p.with_file_name("nib"))
        .unwrap_or_else(|| PathBuf::from("nib"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretches_quantiles_and_prefixes() {
        let text = "a\nbb\nccc\ndddd\n";
        assert_eq!(stretch(text, 0.3, 6), (2, 5)); // "bb\n"
        assert_eq!(stretch(text, 0.0, 100), (0, text.len()));
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 0.5), 2.0);
        assert_eq!(quantile(&[3.0, 1.0, 2.0, 4.0], 0.95), 4.0);
        assert_eq!(common_prefix("foo(bar)", "foo(baz)"), 6);
        assert_eq!(common_prefix("é=1", "é=2"), 3);
        assert_eq!(common_prefix("ab", "abc"), 2);
        assert_eq!(position("fn 😀\n  x"), json!({"line": 1, "character": 3}));
    }
}
