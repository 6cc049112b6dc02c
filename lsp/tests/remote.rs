//! The remote backend against a real third-party inference server: llama.cpp's `llama-server`
//! (built from the llama-cpp-python sdist by `scripts/get-llama-server.sh`) on loopback, serving
//! the default model behind an API key. Both protocols (OpenAI-compatible `/v1/completions` and
//! llama.cpp's `/infill`) go through `nib complete`, a refused key gives a clear error, a cancel
//! closes the stream and frees the server's slot, and `nib serve` completes through it.
//! (Misbehaving servers: `model/tests/remote_errors.rs`.)

mod common;

use nib_lsp::client::{inline_items, LspClient};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY_VAR: &str = "NIB_TEST_REMOTE_KEY";
const KEY: &str = "nib-test-key";

fn llama_server() -> PathBuf {
    common::tool(
        "NIB_LLAMA_SERVER",
        common::nib_cache().join("llama-server/bin/llama-server"),
        "llama-server",
        "scripts/get-llama-server.sh",
    )
}

struct Server {
    child: Child,
    base: String,
    /// One llama-server at a time: two would share the 2 cores and miss the timeouts.
    _turn: std::sync::MutexGuard<'static, ()>,
}

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Server {
    fn start(model: &Path) -> Self {
        let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(llama_server())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("-m")
            .arg(model)
            .args(["-c", "4096", "-np", "1", "-t", "2", "--api-key", KEY])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama-server");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _turn: turn,
        };
        let t0 = Instant::now();
        while server.get("/health").is_none_or(|v| v["status"] != "ok") {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "llama-server did not become healthy in 120 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    fn get(&self, path: &str) -> Option<Value> {
        ureq::get(&format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {KEY}"))
            .timeout(Duration::from_secs(5))
            .call()
            .ok()?
            .into_json()
            .ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nib complete` on the demo's cursor through the server; the JSON answer, or stderr on failure.
fn complete(url: &str, key_var: &str) -> Result<Value, String> {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/wordcount.rs");
    let out = Command::new(env!("CARGO_BIN_EXE_nib"))
        .arg("complete")
        .arg(format!("{}:7:9", demo.display()))
        .args(["--json", "--backend", "remote", "--remote-url", url])
        .args(["--remote-api-key-env", KEY_VAR, "--model"])
        .arg(common::real_model())
        .env(KEY_VAR, key_var)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn completions_from_a_real_llama_cpp_server() {
    let model = common::real_model();
    let server = Server::start(&model);

    // 1. OpenAI-compatible: nib lays out the FIM prompt, the server tokenizes it.
    let open = complete(&server.base, KEY).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("openai: {open}");
    let text = open["completion"].as_str().unwrap();
    // `counts.entry(…)…` or `*counts.entry(…)…`: the prompt carries cross-file context from
    // this repository's index, which may tip the model either way.
    assert!(
        text.trim_start_matches('*').starts_with("counts.entry("),
        "{text:?}"
    );
    assert!(
        open["model"].as_str().unwrap().contains(&server.base),
        "{open}"
    );

    // 2. llama.cpp /infill: the server lays out the prompt from the parts.
    let infill =
        complete(&format!("{}/infill", server.base), KEY).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("infill: {infill}");
    let text = infill["completion"].as_str().unwrap();
    assert!(text.contains("counts"), "{text:?}");

    // 3. A wrong key is refused with an error that says so.
    let refused = complete(&server.base, "wrong-key").expect_err("a wrong key must fail");
    assert!(
        refused.contains("401") && refused.contains("API key"),
        "{refused}"
    );

    // 4. A cancel ends the request at once and closes the stream: the server's slot goes idle
    //    long before the 2,000 tokens it was asked for.
    std::env::set_var(KEY_VAR, KEY);
    let cfg = nib_model::remote::RemoteConfig::new(
        &format!("{}/infill", server.base),
        None,
        Some(KEY_VAR),
        Duration::from_secs(60),
    )
    .unwrap();
    let cancel = nib_model::CancelToken::new();
    let c2 = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        c2.cancel();
    });
    let prefix = "// The numbers from 1 to 1000, one per line:\nconst NUMBERS: [u32; 1000] = [\n    1,\n    2,\n    3,\n";
    let t0 = Instant::now();
    let r = nib_model::remote::complete(
        &cfg,
        &nib_model::remote::RemoteRequest {
            prompt: &[],
            prefix,
            suffix: "];\n",
            files: &[],
            max_tokens: 2000,
            single_line: false,
            stop_check: None,
            stop_text: vec![],
        },
        &cancel,
    );
    let took = t0.elapsed();
    assert!(matches!(r, Err(nib_model::ModelError::Cancelled)), "{r:?}");
    assert!(
        took < Duration::from_millis(1800),
        "the cancel took effect after {took:?}"
    );
    let t1 = Instant::now();
    loop {
        let slots = server
            .get("/slots")
            .expect("llama-server's /slots endpoint");
        let busy = slots
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["is_processing"] == true));
        if !busy {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(5),
            "the server still generates 5 s after the cancel: {slots}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("slot idle {:?} after the cancel", t1.elapsed());

    // 5. The language server completes through the remote backend.
    let ws = tempfile::tempdir().unwrap();
    let root = ws.path().to_string_lossy().into_owned();
    let mut c = LspClient::spawn(
        Path::new(env!("CARGO_BIN_EXE_nib")),
        &["--model", model.to_str().unwrap()],
        &[(KEY_VAR, KEY)],
    );
    c.initialize(
        json!({"backend": "remote", "remoteUrl": server.base, "remoteApiKeyEnv": KEY_VAR}),
        &root,
    );
    let ready = c.status("ready", Duration::from_secs(60));
    assert!(
        ready["params"]["message"]
            .as_str()
            .unwrap()
            .contains("remote"),
        "{ready}"
    );
    let uri = format!("file://{root}/main.rs");
    let demo = include_str!("../demo/wordcount.rs");
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": "rust", "version": 1, "text": demo}}),
    );
    let id = c.request(
        "textDocument/inlineCompletion",
        json!({"textDocument": {"uri": uri}, "position": {"line": 6, "character": 8}, "context": {"triggerKind": 2}}),
    );
    let items = inline_items(&c.response(id, Duration::from_secs(60)));
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(items[0].contains("counts"), "{items:?}");
}

/// A recording HTTP proxy on loopback in front of a server: each request body it forwards and
/// each response it passes back, byte for byte as they crossed it.
struct Proxy {
    base: String,
    log: Exchanges,
}

/// Request and response bodies, as they crossed the proxy.
type Exchanges = std::sync::Arc<std::sync::Mutex<Vec<(Vec<u8>, Vec<u8>)>>>;

impl Proxy {
    fn start(upstream: &str) -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log: Exchanges = Default::default();
        let shared = log.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().take(200) {
                let Ok(mut client) = client else { continue };
                let (upstream, log) = (upstream.clone(), shared.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(client.try_clone().unwrap());
                    let mut head = String::new();
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if !lower.starts_with("connection:") {
                            head.push_str(&line);
                        }
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let Ok(mut up) = std::net::TcpStream::connect(&upstream) else {
                        return;
                    };
                    let _ = up.write_all(head.as_bytes());
                    let _ = up.write_all(b"Connection: close\r\n\r\n");
                    let _ = up.write_all(&body);
                    let mut response = Vec::new();
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = up.read(&mut buf) {
                        if n == 0 || client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        response.extend_from_slice(&buf[..n]);
                    }
                    log.lock().unwrap().push((body, response));
                });
            }
        });
        Proxy { base, log }
    }

    /// The `n` exchanges that crossed it since the last call (request body as JSON, response as
    /// text), waiting up to 30 s for them: one is logged when the server has closed it.
    fn take(&self, n: usize) -> Vec<(Value, String)> {
        let t0 = Instant::now();
        while self.log.lock().unwrap().len() < n && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::mem::take(&mut *self.log.lock().unwrap())
            .into_iter()
            .map(|(req, resp)| {
                (
                    serde_json::from_slice(&req).unwrap_or(Value::Null),
                    String::from_utf8_lossy(&resp).into_owned(),
                )
            })
            .collect()
    }
}

/// Text that would steer a model if it were read as control tokens.
const CONTROL: &str = "<|fim_middle|> <|file_sep|> <|endoftext|> <|fim_prefix|> <|fim_suffix|> <|repo_name|> <|im_start|>";

fn control_file(clean: bool) -> String {
    let c = if clean { "plain words only" } else { CONTROL };
    format!("// {c}\nfn main() {{\n    let s = \"{c}\";\n    let n = s.len();\n    \n}}\n// {c}\n")
}

fn nib_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_nib"))
        .args(args)
        .env(KEY_VAR, KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nib {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A file full of control-token text reaches a real llama.cpp server as nib tokenized it, over
/// both protocols: as token ids (OpenAI-compatible), and as data fields that llama.cpp tokenizes
/// without parsing special tokens (`/infill`: the count it reports equals nib's own count of
/// its layout).
#[test]
fn control_token_text_in_a_file_stays_text_on_a_real_server() {
    let model = common::real_model();
    let m = model.to_str().unwrap();
    let server = Server::start(&model);
    let proxy = Proxy::start(&server.base);
    let g = nib_model::gguf::GgufFile::open(&model).unwrap();
    let tok = nib_model::Tokenizer::from_gguf(&g).unwrap();

    let ws = tempfile::tempdir().unwrap();
    let file = ws.path().join("main.rs");
    let at = format!("{}:5:5", file.display());
    let root = ws.path().to_str().unwrap();
    let specials = |ids: &[u32]| ids.iter().filter(|&&i| tok.is_special(i)).count();

    // `nib CMD` at the cursor with the remote backend at `url`.
    let remote = |cmd: &str, url: &str| {
        nib_json(&[
            cmd,
            &at,
            "--json",
            "--root",
            root,
            "--model",
            m,
            "--backend",
            "remote",
            "--remote-url",
            url,
            "--remote-api-key-env",
            KEY_VAR,
        ])
    };
    // The prompt a remote server gets (no token healing: a server cannot be constrained).
    let context = |url: &str| remote("context", url);
    std::fs::write(&file, control_file(true)).unwrap();
    let clean = context(&proxy.base);
    std::fs::write(&file, control_file(false)).unwrap();
    let dirty = context(&proxy.base);
    assert_eq!(dirty["heal"], "", "{dirty}");
    let ids: Vec<u32> = serde_json::from_value(dirty["prompt_ids"].clone()).unwrap();
    let clean_ids: Vec<u32> = serde_json::from_value(clean["prompt_ids"].clone()).unwrap();
    assert_eq!(
        specials(&ids),
        specials(&clean_ids),
        "file text became control tokens"
    );
    assert!(dirty["prompt"].as_str().unwrap().contains(CONTROL));

    // 1. OpenAI-compatible: the prompt goes as those very ids, and the server takes them.
    let through = |url: &str| remote("complete", url);
    let r = through(&proxy.base);
    eprintln!("openai: {r}");
    let seen = proxy.take(1);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].0["prompt"],
        json!(ids),
        "the body sent: {}",
        seen[0].0
    );
    assert!(seen[0].1.starts_with("HTTP/1.1 200"), "{}", seen[0].1);

    // 2. /infill: the parts as text; the server reports how many tokens its prompt had.
    let url = format!("{}/infill", proxy.base);
    let r = through(&url);
    eprintln!("infill: {r}");
    let seen = proxy.take(1);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (body, response) = &seen[0];
    assert!(
        body["input_prefix"].as_str().unwrap().contains(CONTROL),
        "{body}"
    );
    assert!(body.get("prompt").is_none(), "{body}");
    // llama.cpp's format_prompt_infill, counted with nib's tokenizer and no special parsing:
    // [repo] "myproject\n" ([sep] name "\n" text)* [sep] "filename\n" [pre] prefix [suf] suffix [mid]
    let n = |s: &str| tok.encode(s).len();
    let mut want = 1 + n("myproject\n") + 1 + n("filename\n") + 3;
    for f in body["input_extra"].as_array().unwrap() {
        want += 1
            + n(&format!("{}\n", f["filename"].as_str().unwrap()))
            + n(f["text"].as_str().unwrap());
    }
    want += n(body["input_prefix"].as_str().unwrap()) + n(body["input_suffix"].as_str().unwrap());
    let served: usize = response
        .split("\"tokens_evaluated\":")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no tokens_evaluated in the answer:\n{response}"));
    eprintln!(
        "infill: llama.cpp evaluated {served} prompt tokens; nib counts {want} for its layout"
    );
    assert_eq!(
        served, want,
        "llama.cpp's prompt is not nib's text tokenized without specials"
    );
    // Were the control strings parsed as special tokens, each would be 1 token instead of ~5.
    assert!(n(CONTROL) > 7 * 3, "{}", n(CONTROL));
}

/// With the remote backend, what a real inference server receives holds nothing of the secret,
/// ignored or switched-off files open beside the code, over either protocol.
#[test]
fn no_secret_reaches_a_real_server() {
    let model = common::real_model();
    let server = Server::start(&model);
    let proxy = Proxy::start(&server.base);
    let g = nib_model::gguf::GgufFile::open(&model).unwrap();
    let tok = nib_model::Tokenizer::from_gguf(&g).unwrap();
    let ws = tempfile::tempdir().unwrap();
    let r = ws.path();
    let files = [
        (".env", "dotenv", "API_TOKEN=MARKER_ENV_1234\n"),
        ("id_rsa", "plaintext", "MARKER_RSA_5678\n"),
        (
            "credentials.json",
            "json",
            "{\"t\": \"MARKER_CRED_9012\"}\n",
        ),
        ("server.pem", "plaintext", "MARKER_PEM_3456\n"),
        (
            "local/notes.rs",
            "rust",
            "pub fn helper() -> &'static str { \"MARKER_IGNORED_7890\" }\n",
        ),
        (
            "gen.py",
            "python",
            "def read_token():\n    return \"MARKER_PY_2468\"\n",
        ),
        ("main.rs", "rust", include_str!("../demo/wordcount.rs")),
    ];
    std::fs::write(r.join(".gitignore"), "local/\n").unwrap();
    for (rel, _, text) in files {
        std::fs::create_dir_all(r.join(rel).parent().unwrap()).unwrap();
        std::fs::write(r.join(rel), text).unwrap();
    }
    let root = r.to_string_lossy().into_owned();
    for url in [proxy.base.clone(), format!("{}/infill", proxy.base)] {
        let mut c = LspClient::spawn(
            Path::new(env!("CARGO_BIN_EXE_nib")),
            &["--model", model.to_str().unwrap()],
            &[(KEY_VAR, KEY)],
        );
        c.initialize(
            json!({"backend": "remote", "remoteUrl": url, "remoteApiKeyEnv": KEY_VAR, "languages": {"python": false}}),
            &root,
        );
        c.status("ready", Duration::from_secs(60));
        for (rel, language, text) in files {
            c.notify(
                "textDocument/didOpen",
                json!({"textDocument": {"uri": format!("file://{root}/{rel}"), "languageId": language, "version": 1, "text": text}}),
            );
        }
        let id = c.request(
            "textDocument/inlineCompletion",
            json!({"textDocument": {"uri": format!("file://{root}/main.rs")}, "position": {"line": 6, "character": 8}, "context": {"triggerKind": 2}}),
        );
        let items = inline_items(&c.response(id, Duration::from_secs(60)));
        assert!(
            items.iter().any(|t| t.contains("counts")),
            "{url}: {items:?}"
        );
        let seen = proxy.take(1);
        assert_eq!(seen.len(), 1, "{url}: {seen:?}");
        let body = &seen[0].0;
        let sent = match body["prompt"].as_array() {
            Some(ids) => {
                let ids: Vec<u32> = ids.iter().map(|i| i.as_u64().unwrap() as u32).collect();
                tok.decode(&ids)
            }
            None => body.to_string(),
        };
        assert!(sent.contains("fn main"), "{url}: {sent}");
        for m in common::MARKERS {
            assert!(!sent.contains(m), "{url}: the server received {m}:\n{sent}");
        }
        c.call("shutdown", json!(null));
        c.notify("exit", json!(null));
        c.wait_exit(Duration::from_secs(10));
    }
}
