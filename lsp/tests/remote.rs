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
}

impl Server {
    fn start(model: &Path) -> Self {
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
            prompt: "",
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
