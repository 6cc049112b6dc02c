//! The remote backend: completions from an inference server, for teams that outgrow one machine.
//! Two protocols, chosen by the URL's path:
//!
//! - OpenAI-compatible `/v1/completions` (vLLM, llama.cpp's server, Ollama): the prompt goes as
//!   the array of token ids nib laid out (the API's other prompt form), never as text: servers
//!   parse special-token text in a text prompt, so a file that spells `<|fim_middle|>` would
//!   steer the model;
//! - llama.cpp's `/infill`: prefix, suffix and the other files as data; the server lays out the
//!   prompt with its model's FIM tokens and keeps its own prompt cache. llama.cpp tokenizes
//!   these fields without parsing special tokens (its `format_prompt_infill`), so their text
//!   cannot act as control tokens; nib sends no `prompt` field, the one that it does parse.
//!
//! Answers are streamed (server-sent events) and read on a thread of their own, so a cancel or a
//! deadline returns at once; dropping the reader closes the connection, and the server stops
//! generating. Every failure (refused, slow, garbage) is one line that names the server.
//! Greedy sampling is asked for, so the server's answer is deterministic where the server is.

use crate::error::{ModelError, Result};
use crate::generate::{end_of_first_line, CancelToken, StopCheck, StopReason};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Which protocol the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteApi {
    /// `POST …/v1/completions` with `prompt`, `max_tokens`, `stream`.
    OpenAi,
    /// llama.cpp's `POST …/infill` with `input_prefix`, `input_suffix`, `input_extra`.
    Infill,
}

/// Where and how to reach the server. Plain data; the API key is read once, when it is built.
#[derive(Clone, PartialEq)]
pub struct RemoteConfig {
    /// The endpoint's full URL.
    pub url: String,
    pub api: RemoteApi,
    /// The `model` field of OpenAI requests (vLLM and TGI want the served model's name).
    pub model: Option<String>,
    pub api_key: Option<String>,
    /// A request that has not finished by then fails.
    pub timeout: Duration,
}

/// The key is never printed: logs and error messages carry `Debug` output.
impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("url", &self.url)
            .field("api", &self.api)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RemoteConfig {
    /// Reads an endpoint: a URL that ends in `/infill` speaks llama.cpp's infill protocol, one that
    /// ends in `/completions` the OpenAI one; a bare server URL (`http://host:8080`, or one ending
    /// in `/v1`) gets `/v1/completions` appended. `api_key_env` names the environment variable that
    /// holds the key; naming one that is unset is an error, not a silent request without a key.
    pub fn new(
        url: &str,
        model: Option<String>,
        api_key_env: Option<&str>,
        timeout: Duration,
    ) -> Result<Self> {
        let bad = |why: &str| ModelError::Remote(format!("remote URL `{url}` {why}"));
        let url = url.trim();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| bad("must start with http:// or https://"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad("has no host"));
        }
        let trimmed = url.trim_end_matches('/');
        let (url, api) = if trimmed.ends_with("/infill") {
            (trimmed.to_string(), RemoteApi::Infill)
        } else if trimmed.ends_with("/completions") {
            (trimmed.to_string(), RemoteApi::OpenAi)
        } else if trimmed.ends_with("/v1") {
            (format!("{trimmed}/completions"), RemoteApi::OpenAi)
        } else if !rest.trim_end_matches('/').contains('/') {
            (format!("{trimmed}/v1/completions"), RemoteApi::OpenAi)
        } else {
            return Err(bad(
                "names no known endpoint: end it in /v1/completions (OpenAI-compatible) or /infill (llama.cpp)",
            ));
        };
        let api_key = match api_key_env {
            None | Some("") => None,
            Some(var) => Some(std::env::var(var).map_err(|_| {
                ModelError::Remote(format!(
                    "the API key variable `{var}` is not set in nib's environment"
                ))
            })?),
        };
        Ok(Self {
            url,
            api,
            model,
            api_key,
            timeout,
        })
    }
}

/// What to complete. `prompt` is the full FIM prompt as token ids (OpenAI protocol); the parts
/// are what the infill protocol sends instead.
#[derive(Clone)]
pub struct RemoteRequest<'a> {
    pub prompt: &'a [u32],
    pub prefix: &'a str,
    pub suffix: &'a str,
    pub files: &'a [(String, String)],
    pub max_tokens: usize,
    /// End at the first newline that follows some non-blank text (checked here, as it streams).
    pub single_line: bool,
    /// The caller's stop rule over the text so far, as in local generation.
    pub stop_check: Option<StopCheck>,
    /// Text that ends the completion wherever it appears (the FIM end markers).
    pub stop_text: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RemoteGeneration {
    pub text: String,
    pub stop: StopReason,
    /// Streamed pieces received (about one per token).
    pub pieces: usize,
    /// Milliseconds to the first piece, and in all.
    pub first_ms: f64,
    pub total_ms: f64,
}

/// The JSON body of a request.
pub fn request_body(cfg: &RemoteConfig, req: &RemoteRequest) -> Value {
    match cfg.api {
        RemoteApi::OpenAi => {
            let mut body = json!({
                "prompt": req.prompt,
                "max_tokens": req.max_tokens,
                "temperature": 0.0,
                "top_p": 1.0,
                "stream": true,
                "stop": req.stop_text,
            });
            if let Some(m) = &cfg.model {
                body["model"] = json!(m);
            }
            body
        }
        RemoteApi::Infill => json!({
            "input_prefix": req.prefix,
            "input_suffix": req.suffix,
            "input_extra": req
                .files
                .iter()
                .map(|(path, text)| json!({"filename": path, "text": text}))
                .collect::<Vec<_>>(),
            "n_predict": req.max_tokens,
            "temperature": 0.0,
            "top_k": 1,
            "stream": true,
            "cache_prompt": true,
        }),
    }
}

/// One line of the answer, read: a piece of text, the end of the stream, or nothing (comments,
/// blank lines, events without text).
#[derive(Debug, PartialEq)]
pub enum Event {
    Text(String),
    Done,
    Skip,
}

/// Reads one line of a server-sent-events stream from either protocol. `Err` carries what was
/// wrong with it.
pub fn parse_event(line: &str) -> Result<Event, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.is_empty() || line.starts_with(':') {
        return Ok(Event::Skip);
    }
    let Some(data) = line.strip_prefix("data:") else {
        // `event:`, `id:`, `retry:` fields carry nothing we use.
        return match line.split_once(':') {
            Some((field, _)) if ["event", "id", "retry"].contains(&field) => Ok(Event::Skip),
            _ => Err(format!("not a server-sent event: {}", clip(line))),
        };
    };
    let data = data.trim_start();
    if data == "[DONE]" {
        return Ok(Event::Done);
    }
    let v: Value = serde_json::from_str(data)
        .map_err(|e| format!("bad JSON in event ({e}): {}", clip(data)))?;
    if let Some(err) = v.get("error") {
        return Err(format!(
            "the server reported an error: {}",
            clip(&err.to_string())
        ));
    }
    event_of(&v)
}

/// The text of one streamed object (or of a whole non-streamed answer).
fn event_of(v: &Value) -> Result<Event, String> {
    // OpenAI: {"choices": [{"text": "...", "finish_reason": null}]}
    if let Some(choice) = v.get("choices").and_then(|c| c.get(0)) {
        let text = choice.get("text").and_then(Value::as_str).unwrap_or("");
        let finished = choice.get("finish_reason").is_some_and(|f| !f.is_null());
        return Ok(match (text.is_empty(), finished) {
            (false, _) => Event::Text(text.to_string()),
            (true, true) => Event::Done,
            (true, false) => Event::Skip,
        });
    }
    // llama.cpp: {"content": "...", "stop": false}
    if let Some(content) = v.get("content").and_then(Value::as_str) {
        let stop = v.get("stop").and_then(Value::as_bool).unwrap_or(false);
        return Ok(match (content.is_empty(), stop) {
            (false, _) => Event::Text(content.to_string()),
            (true, true) => Event::Done,
            (true, false) => Event::Skip,
        });
    }
    Err(format!(
        "an answer without completion text: {}",
        clip(&v.to_string())
    ))
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(160).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// What the reader thread passes on.
enum Piece {
    Event(Event),
    Failed(String),
}

/// Sends the request and reads the stream until it ends, a stop rule fires, `cancel` is set or
/// the timeout passes.
pub fn complete(
    cfg: &RemoteConfig,
    req: &RemoteRequest,
    cancel: &CancelToken,
) -> Result<RemoteGeneration> {
    let t0 = Instant::now();
    let deadline = t0 + cfg.timeout;
    let fail = |why: String| ModelError::Remote(format!("{}: {why}", cfg.url));
    let body = request_body(cfg, req);
    let (tx, rx) = mpsc::channel::<Piece>();
    let url = cfg.url.clone();
    let key = cfg.api_key.clone();
    let timeout = cfg.timeout;
    // The reader owns the connection: when the receiver is gone it stops at the next piece and
    // drops the socket, which tells the server to stop.
    std::thread::Builder::new()
        .name("nib-remote".into())
        .spawn(move || read_stream(&url, key.as_deref(), timeout, &body, &tx))
        .map_err(|e| fail(format!("cannot start the reader thread: {e}")))?;

    let mut text = String::new();
    let mut pieces = 0;
    let mut first_ms = 0.0;
    let finish = |text: String, stop, pieces, first_ms| {
        Ok(RemoteGeneration {
            text,
            stop,
            pieces,
            first_ms,
            total_ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    };
    loop {
        if cancel.is_cancelled() {
            return Err(ModelError::Cancelled);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(fail(format!(
                "no complete answer within {} ms (the remote timeout)",
                cfg.timeout.as_millis()
            )));
        }
        let piece = match rx.recv_timeout(left.min(Duration::from_millis(20))) {
            Ok(p) => p,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                return finish(text, StopReason::StopToken, pieces, first_ms)
            }
        };
        match piece {
            Piece::Failed(why) => return Err(fail(why)),
            Piece::Event(Event::Skip) => {}
            Piece::Event(Event::Done) => {
                return finish(text, StopReason::StopToken, pieces, first_ms)
            }
            Piece::Event(Event::Text(t)) => {
                if pieces == 0 {
                    first_ms = t0.elapsed().as_secs_f64() * 1e3;
                }
                pieces += 1;
                text.push_str(&t);
                if let Some(at) = req
                    .stop_text
                    .iter()
                    .filter_map(|s| text.find(s.as_str()))
                    .min()
                {
                    text.truncate(at);
                    return finish(text, StopReason::StopToken, pieces, first_ms);
                }
                if req.single_line {
                    if let Some(end) = end_of_first_line(text.as_bytes()) {
                        text.truncate(end);
                        return finish(text, StopReason::EndOfLine, pieces, first_ms);
                    }
                }
                if let Some(check) = &req.stop_check {
                    if let Some(keep) = check(&text) {
                        text.truncate(keep);
                        return finish(text, StopReason::EndOfBlock, pieces, first_ms);
                    }
                }
                if pieces >= req.max_tokens {
                    return finish(text, StopReason::MaxTokens, pieces, first_ms);
                }
            }
        }
    }
}

/// The reader thread: POST, then pass on each event (or the one failure) until the stream ends or
/// nobody listens.
fn read_stream(
    url: &str,
    key: Option<&str>,
    timeout: Duration,
    body: &Value,
    tx: &mpsc::Sender<Piece>,
) {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(timeout.min(Duration::from_secs(5)))
        .timeout_read(timeout)
        .timeout_write(timeout)
        .user_agent(concat!("nib/", env!("CARGO_PKG_VERSION")))
        .build();
    let mut request = agent
        .post(url)
        .set("Accept", "text/event-stream, application/json");
    if let Some(k) = key {
        request = request.set("Authorization", &format!("Bearer {k}"));
    }
    let response = match request.send_json(body.clone()) {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let detail = r.into_string().unwrap_or_default();
            let hint = match code {
                401 | 403 => " (the server refused the API key: set remoteApiKeyEnv to the variable that holds it)",
                404 => " (no such endpoint: check the URL's path)",
                _ => "",
            };
            let _ = tx.send(Piece::Failed(format!(
                "HTTP {code}{hint}: {}",
                clip(detail.trim())
            )));
            return;
        }
        Err(ureq::Error::Transport(t)) => {
            let _ = tx.send(Piece::Failed(format!("cannot reach the server: {t}")));
            return;
        }
    };
    let streamed = response.content_type().contains("event-stream");
    if !streamed {
        // A server that ignores `stream`: one JSON answer.
        let piece = match response.into_string() {
            Ok(s) => match serde_json::from_str::<Value>(&s) {
                Ok(v) => event_of(&v).map_or_else(Piece::Failed, Piece::Event),
                Err(e) => Piece::Failed(format!("the answer is not JSON ({e}): {}", clip(&s))),
            },
            Err(e) => Piece::Failed(format!("reading the answer failed: {e}")),
        };
        let _ = tx.send(piece);
        let _ = tx.send(Piece::Event(Event::Done));
        return;
    }
    let mut reader = BufReader::new(response.into_reader());
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return, // the end of the stream: the receiver sees the sender go
            Ok(_) => {
                let piece = match parse_event(&line) {
                    Ok(ev) => Piece::Event(ev),
                    Err(why) => Piece::Failed(why),
                };
                let stop = matches!(piece, Piece::Failed(_) | Piece::Event(Event::Done));
                if tx.send(piece).is_err() || stop {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Piece::Failed(format!("the stream broke off: {e}")));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_urls() {
        let t = Duration::from_secs(1);
        // (given, endpoint, api) — None where the URL must be refused.
        let cases: [(&str, Option<(&str, RemoteApi)>); 9] = [
            (
                "http://127.0.0.1:8080",
                Some(("http://127.0.0.1:8080/v1/completions", RemoteApi::OpenAi)),
            ),
            (
                "http://h:1/",
                Some(("http://h:1/v1/completions", RemoteApi::OpenAi)),
            ),
            (
                "https://h/v1",
                Some(("https://h/v1/completions", RemoteApi::OpenAi)),
            ),
            (
                "https://h/api/v1/completions",
                Some(("https://h/api/v1/completions", RemoteApi::OpenAi)),
            ),
            (
                "http://h:8080/infill",
                Some(("http://h:8080/infill", RemoteApi::Infill)),
            ),
            ("ftp://h/infill", None),
            ("http:///v1", None),
            ("h:8080", None),
            ("http://h/generate", None),
        ];
        for (url, want) in cases {
            let got = RemoteConfig::new(url, None, None, t);
            match want {
                Some((endpoint, api)) => {
                    let c = got.unwrap_or_else(|e| panic!("{url}: {e}"));
                    assert_eq!((c.url.as_str(), c.api), (endpoint, api), "{url}");
                }
                None => assert!(got.is_err(), "{url} was accepted"),
            }
        }
        let e =
            RemoteConfig::new("http://h", None, Some("NIB_TEST_SURELY_UNSET_KEY"), t).unwrap_err();
        assert!(e.to_string().contains("NIB_TEST_SURELY_UNSET_KEY"), "{e}");
    }

    #[test]
    fn events_from_both_protocols() {
        use Event::*;
        let cases: [(&str, Result<Event, &str>); 11] = [
            (
                r#"data: {"choices":[{"text":"foo","finish_reason":null}]}"#,
                Ok(Text("foo".into())),
            ),
            (
                r#"data: {"choices":[{"text":"","finish_reason":"length"}]}"#,
                Ok(Done),
            ),
            (
                r#"data:{"content":"bar","stop":false}"#,
                Ok(Text("bar".into())),
            ),
            (r#"data: {"content":"","stop":true}"#, Ok(Done)),
            ("data: [DONE]", Ok(Done)),
            ("", Ok(Skip)),
            (": keep-alive", Ok(Skip)),
            ("event: completion", Ok(Skip)),
            ("data: {nonsense", Err("bad JSON")),
            (
                r#"data: {"error":{"message":"boom"}}"#,
                Err("reported an error"),
            ),
            (
                "<html>502 Bad Gateway</html>",
                Err("not a server-sent event"),
            ),
        ];
        for (line, want) in cases {
            match (parse_event(line), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{line}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{line}: {e}"),
                (got, w) => panic!("{line}: got {got:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn request_bodies() {
        let files = vec![("src/lib.rs".to_string(), "pub fn f() {}".to_string())];
        let req = RemoteRequest {
            prompt: &[151659, 64, 151661, 65, 151660],
            prefix: "a",
            suffix: "b",
            files: &files,
            max_tokens: 7,
            single_line: true,
            stop_check: None,
            stop_text: vec!["<|endoftext|>".into()],
        };
        let t = Duration::from_secs(1);
        let open = RemoteConfig::new("http://h", Some("qwen".into()), None, t).unwrap();
        let b = request_body(&open, &req);
        assert_eq!(b["prompt"], json!(req.prompt));
        assert_eq!(b["model"], "qwen");
        assert_eq!(
            (b["max_tokens"].as_u64(), b["stream"].as_bool()),
            (Some(7), Some(true))
        );
        let infill = RemoteConfig::new("http://h/infill", None, None, t).unwrap();
        let b = request_body(&infill, &req);
        assert_eq!(
            (b["input_prefix"].as_str(), b["input_suffix"].as_str()),
            (Some("a"), Some("b"))
        );
        assert_eq!(b["input_extra"][0]["filename"], "src/lib.rs");
        assert_eq!(b["n_predict"], 7);
        assert!(
            b.get("prompt").is_none(),
            "llama.cpp parses special tokens in `prompt`"
        );
    }

    #[test]
    fn the_key_is_never_printed() {
        std::env::set_var("NIB_REMOTE_DEBUG_TEST_KEY", "sk-very-secret");
        let t = Duration::from_secs(1);
        let cfg =
            RemoteConfig::new("http://h", None, Some("NIB_REMOTE_DEBUG_TEST_KEY"), t).unwrap();
        assert_eq!(cfg.api_key.as_deref(), Some("sk-very-secret"));
        let printed = format!("{cfg:?} {cfg:#?}");
        assert!(!printed.contains("sk-very-secret"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
    }
}
