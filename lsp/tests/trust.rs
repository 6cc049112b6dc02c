//! What a user must be able to trust of `nib serve` and `nib context`: no secret, ignored file or
//! switched-off language reaches a prompt; a bug in one handler costs one answer; the index
//! follows the disk (a real `git checkout`) and every workspace folder; two servers on one
//! machine share the statistics file and the index cache without losing or corrupting anything.
//! (The prompt an inference server receives: `remote.rs`; random input: `fuzz.rs`.)

mod common;

use nib_lsp::client::LspClient;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIN: Duration = Duration::from_secs(60);
const NIB: &str = env!("CARGO_BIN_EXE_nib");

use common::MARKERS;

const LIB: &str = "mod config;\nuse crate::config::load_settings;\n\npub fn run() -> u32 {\n    let settings = load_settings();\n    let token = read_token();\n    let helper = local_helper();\n    \n}\n";

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A workspace with a code file that uses names defined in a normal file, in a `.gitignore`d
/// file and in a Python file, beside secret files, all of them holding markers.
fn secrets_workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    // A repository, as most workspaces are (`nib context` finds its root by `.git`).
    git(r, &["init", "-q"]);
    write(r, "src/lib.rs", LIB);
    write(
        r,
        "src/config.rs",
        "/// The settings.\npub fn load_settings() -> u32 {\n    7\n}\n",
    );
    write(r, ".gitignore", "src/local/\n");
    write(
        r,
        "src/local/mod.rs",
        "pub fn local_helper() -> &'static str {\n    \"MARKER_IGNORED_7890\"\n}\n",
    );
    write(
        r,
        "tools/gen.py",
        "def read_token():\n    return \"MARKER_PY_2468\"\n",
    );
    write(r, ".env", "API_TOKEN=MARKER_ENV_1234\n");
    write(
        r,
        "id_rsa",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nMARKER_RSA_5678\n",
    );
    write(r, "credentials.json", "{\"token\": \"MARKER_CRED_9012\"}\n");
    write(
        r,
        "certs/server.pem",
        "-----BEGIN CERTIFICATE-----\nMARKER_PEM_3456\n",
    );
    dir
}

/// Runs a `nib` command that must succeed and print JSON.
fn nib_json(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn no_marker(what: &str, text: &str, markers: &[&str]) {
    for m in markers {
        assert!(!text.contains(m), "{what} holds {m}:\n{text}");
    }
}

fn open(c: &mut LspClient, uri: &str, language: &str, text: &str) {
    c.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": uri, "languageId": language, "version": 1, "text": text}}),
    );
}

fn context(c: &mut LspClient, uri: &str, line: u32, character: u32) -> Value {
    let r = c.call(
        "workspace/executeCommand",
        json!({"command": "nib.context", "arguments": [{"uri": uri, "line": line, "character": character}]}),
    );
    assert!(r.get("error").is_none(), "{r}");
    r["result"].clone()
}

fn context_text(c: &mut LspClient, uri: &str, line: u32, character: u32) -> String {
    let r = context(c, uri, line, character);
    let files = r["files"].as_array().unwrap_or_else(|| panic!("{r}"));
    files
        .iter()
        .map(|f| {
            format!(
                "--- {}\n{}",
                f["path"].as_str().unwrap(),
                f["text"].as_str().unwrap()
            )
        })
        .collect()
}

fn index_done(c: &mut LspClient, folder: &Path) {
    let folder = folder.to_string_lossy().into_owned();
    c.wait_for("the index of the folder", MIN, |v| {
        v["method"] == "nib/index"
            && v["params"]["state"] == "done"
            && v["params"]["folder"] == folder
    });
}

#[test]
fn secrets_ignored_files_and_switched_off_languages_never_reach_a_prompt() {
    let ws = secrets_workspace();
    let root = ws.path();
    let model = common::real_model();

    // 1. `nib context`: the exact prompt a completion at the empty line would use.
    let v = nib_json(
        Command::new(NIB)
            .arg("context")
            .arg(format!("{}:8:5", root.join("src/lib.rs").display()))
            .args(["--json", "--model", model.to_str().unwrap()]),
    );
    let prompt = v["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("pub fn load_settings"),
        "no context at all:\n{prompt}"
    );
    // The CLI has no language switches: the Python file may come in there.
    no_marker("nib context's prompt", prompt, &MARKERS[..5]);
    // Nor is any of them completed itself.
    for (rel, why) in [
        (".env", "secrets"),
        ("id_rsa", "secrets"),
        ("credentials.json", "secrets"),
        ("certs/server.pem", "secrets"),
        ("src/local/mod.rs", "ignored"),
    ] {
        let out = Command::new(NIB)
            .args(["context", &format!("{}:1:1", root.join(rel).display())])
            .args(["--model", model.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{rel}: {err}");
        no_marker(rel, &String::from_utf8_lossy(&out.stdout), &MARKERS);
    }

    // 2. The server, with every one of those files open and Python switched off.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut c = LspClient::spawn_with_stderr(
        Path::new(NIB),
        &["--model", model.to_str().unwrap()],
        &[("NIB_TRACE", "1")],
        Stdio::from(log.reopen().unwrap()),
    );
    c.initialize(
        json!({"languages": {"python": false}}),
        &root.to_string_lossy(),
    );
    index_done(&mut c, root);
    c.status("ready", MIN);
    let uri = |rel: &str| format!("file://{}/{rel}", root.display());
    for (rel, language) in [
        (".env", "dotenv"),
        ("id_rsa", "plaintext"),
        ("credentials.json", "json"),
        ("certs/server.pem", "plaintext"),
        ("src/local/mod.rs", "rust"),
        ("tools/gen.py", "python"),
        ("src/lib.rs", "rust"),
    ] {
        let text = std::fs::read_to_string(root.join(rel)).unwrap();
        open(&mut c, &uri(rel), language, &text);
    }
    let ctx = context_text(&mut c, &uri("src/lib.rs"), 7, 4);
    assert!(
        ctx.contains("pub fn load_settings"),
        "no context at all:\n{ctx}"
    );
    no_marker("the server's other-file context", &ctx, &MARKERS);
    for rel in [
        ".env",
        "id_rsa",
        "credentials.json",
        "certs/server.pem",
        "src/local/mod.rs",
    ] {
        let r = context(&mut c, &uri(rel), 0, 0);
        assert!(r["excluded"].is_string(), "{rel}: {r}");
        let id = c.request(
            "textDocument/inlineCompletion",
            json!({"textDocument": {"uri": uri(rel)}, "position": {"line": 0, "character": 0}, "context": {"triggerKind": 1}}),
        );
        let r = c.response(id, MIN);
        assert_eq!(r["result"]["items"], json!([]), "{rel}: {r}");
    }
    // A real completion: its prompt, as NIB_TRACE logs it, holds none of them.
    let id = c.request(
        "textDocument/inlineCompletion",
        json!({"textDocument": {"uri": uri("src/lib.rs")}, "position": {"line": 7, "character": 4}, "context": {"triggerKind": 1}}),
    );
    c.response(id, MIN);
    c.call("shutdown", json!(null));
    c.notify("exit", json!(null));
    c.wait_exit(Duration::from_secs(10));
    let trace = std::fs::read_to_string(log.path()).unwrap();
    let prompts: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("nib: prompt, "))
        .collect();
    assert_eq!(prompts.len(), 1, "{trace}");
    assert!(prompts[0].contains("load_settings"), "{}", prompts[0]);
    no_marker("the server's prompt", &trace, &MARKERS);
}

#[test]
fn a_panicking_handler_costs_one_answer() {
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "src/lib.rs", "pub fn one() -> u32 {\n    1\n}\n");
    let mut c = LspClient::spawn(
        Path::new(NIB),
        &[],
        &[
            ("NIB_TEST_FAULTS", "1"),
            ("NIB_MODEL", "/nonexistent/nib-test.gguf"),
        ],
    );
    c.initialize(json!({}), &ws.path().to_string_lossy());
    for _ in 0..3 {
        // The injected fault panics while it holds the server's state lock.
        let r = c.call(
            "workspace/executeCommand",
            json!({"command": "nib.testPanic"}),
        );
        assert_eq!(r["error"]["code"], -32603, "{r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("injected fault"),
            "{r}"
        );
    }
    // The server goes on, its state intact.
    let uri = format!("file://{}/src/lib.rs", ws.path().display());
    open(&mut c, &uri, "rust", "pub fn one() -> u32 {\n    1\n}\n");
    let r = context(&mut c, &uri, 1, 4);
    assert!(r["files"].is_array(), "{r}");
    let r = c.call(
        "workspace/executeCommand",
        json!({"command": "nib.counters"}),
    );
    assert!(r["error"].is_null(), "{r}");
    c.call("shutdown", json!(null));
    c.notify("exit", json!(null));
    assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(0));
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.email=nib@test",
            "-c",
            "user.name=nib",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git (Debian's git package) must be installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A repository whose `main` defines `alpha_only` and whose `other` defines `beta_only`, with
/// `main` checked out.
fn two_branch_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    git(r, &["init", "-q"]);
    write(
        r,
        "src/main.rs",
        "fn main() {\n    let x = alpha_only() + beta_only();\n    \n}\n",
    );
    write(
        r,
        "src/a.rs",
        "/// Main's own.\npub fn alpha_only() -> u32 {\n    1\n}\n",
    );
    git(r, &["add", "."]);
    git(r, &["commit", "-q", "-m", "main"]);
    git(r, &["checkout", "-q", "-b", "other"]);
    git(r, &["rm", "-q", "src/a.rs"]);
    write(
        r,
        "src/b.rs",
        "/// The other branch's.\npub fn beta_only() -> u32 {\n    2\n}\n",
    );
    git(r, &["add", "."]);
    git(r, &["commit", "-q", "-m", "other"]);
    git(r, &["checkout", "-q", "main"]);
    dir
}

/// After a `git checkout`, the next completion's context has the new branch's definitions,
/// whether the client watches the files (dynamic registration) or the server does.
#[test]
fn the_index_follows_a_git_checkout() {
    for client_watches in [false, true] {
        let repo = two_branch_repo();
        let root = repo.path();
        let mut c = LspClient::spawn(
            Path::new(NIB),
            &[],
            &[("NIB_MODEL", "/nonexistent/nib-test.gguf")],
        );
        let folder = format!("file://{}", root.display());
        c.initialize_with(json!({
            "processId": null,
            "workspaceFolders": [{"uri": folder, "name": "repo"}],
            "capabilities": {"workspace": {"didChangeWatchedFiles": {"dynamicRegistration": client_watches}}},
        }));
        if client_watches {
            let reg = c.wait_for("the watcher registration", MIN, |v| {
                v["method"] == "client/registerCapability"
            });
            let r = &reg["params"]["registrations"][0];
            assert_eq!(r["method"], "workspace/didChangeWatchedFiles", "{reg}");
        }
        index_done(&mut c, root);
        let uri = format!("{folder}/src/main.rs");
        open(
            &mut c,
            &uri,
            "rust",
            &std::fs::read_to_string(root.join("src/main.rs")).unwrap(),
        );
        let before = context_text(&mut c, &uri, 2, 4);
        assert!(
            before.contains("fn alpha_only") && !before.contains("fn beta_only"),
            "{before}"
        );

        git(root, &["checkout", "-q", "other"]);
        if client_watches {
            c.notify(
                "workspace/didChangeWatchedFiles",
                json!({"changes": [{"uri": format!("{folder}/src/a.rs"), "type": 3}, {"uri": format!("{folder}/src/b.rs"), "type": 1}]}),
            );
        }
        let t0 = Instant::now();
        let after = loop {
            let ctx = context_text(&mut c, &uri, 2, 4);
            if ctx.contains("fn beta_only") && !ctx.contains("fn alpha_only") {
                break ctx;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "client_watches={client_watches}: the context still is, 20 s after the checkout:\n{ctx}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        eprintln!(
            "client_watches={client_watches}: current after {:?}:\n{after}",
            t0.elapsed()
        );
        c.call("shutdown", json!(null));
        c.notify("exit", json!(null));
        c.wait_exit(Duration::from_secs(10));
    }
}

#[test]
fn every_workspace_folder_is_indexed_and_folders_added_later_too() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for (i, d) in dirs.iter().enumerate() {
        write(
            d.path(),
            "src/defs.rs",
            &format!("/// Folder {i}'s.\npub fn only_in_folder_{i}() -> u32 {{\n    {i}\n}}\n"),
        );
    }
    let folder = |i: usize| format!("file://{}", dirs[i].path().display());
    let mut c = LspClient::spawn(
        Path::new(NIB),
        &[],
        &[("NIB_MODEL", "/nonexistent/nib-test.gguf")],
    );
    let init = c.initialize_with(json!({
        "processId": null,
        "workspaceFolders": [{"uri": folder(0), "name": "a"}, {"uri": folder(1), "name": "b"}],
        "capabilities": {},
    }));
    assert_eq!(
        init["result"]["capabilities"]["workspace"]["workspaceFolders"]["changeNotifications"],
        true,
        "{init}"
    );
    index_done(&mut c, dirs[0].path());
    index_done(&mut c, dirs[1].path());
    c.notify(
        "workspace/didChangeWorkspaceFolders",
        json!({"event": {"added": [{"uri": folder(2), "name": "c"}], "removed": []}}),
    );
    index_done(&mut c, dirs[2].path());
    for i in 0..3 {
        let uri = format!("{}/src/main.rs", folder(i));
        let text = format!("fn main() {{\n    let x = only_in_folder_{i}();\n    \n}}\n");
        open(&mut c, &uri, "rust", &text);
        let ctx = context_text(&mut c, &uri, 2, 4);
        assert!(
            ctx.contains(&format!("pub fn only_in_folder_{i}")),
            "folder {i}:\n{ctx}"
        );
        // Other folders' definitions stay in their own index (their open files may come in,
        // named by their folder).
        for j in (0..3).filter(|&j| j != i) {
            assert!(
                !ctx.contains(&format!("pub fn only_in_folder_{j}")),
                "folder {i} got {j}'s:\n{ctx}"
            );
        }
    }
    c.call("shutdown", json!(null));
    c.notify("exit", json!(null));
    c.wait_exit(Duration::from_secs(10));
}

/// Two windows on one machine: two servers on one workspace, counting into one stats file and
/// writing one index cache at the same time.
#[test]
fn two_servers_at_once_lose_no_stats_and_keep_the_cache_whole() {
    let ws = tempfile::tempdir().unwrap();
    for i in 0..200 {
        write(
            ws.path(),
            &format!("src/m{i}.rs"),
            &format!("pub fn f{i}() -> u32 {{\n    {i}\n}}\n"),
        );
    }
    let home = tempfile::tempdir().unwrap();
    let stats = home.path().join("stats.json");
    let cache = home.path().join("cache");
    let env = [
        ("NIB_MODEL", "/nonexistent/nib-test.gguf"),
        ("NIB_STATS_FILE", stats.to_str().unwrap()),
        ("XDG_CACHE_HOME", cache.to_str().unwrap()),
    ];
    let root = ws.path().to_string_lossy().into_owned();
    let mut servers: Vec<LspClient> = (0..2)
        .map(|_| {
            let mut c = LspClient::spawn(Path::new(NIB), &[], &env);
            c.initialize(json!({}), &root);
            c
        })
        .collect();
    const N: usize = 150;
    let mut ids = vec![Vec::new(), Vec::new()];
    for _ in 0..N {
        for (c, ids) in servers.iter_mut().zip(&mut ids) {
            ids.push(c.request("workspace/executeCommand", json!({"command": "nib.shown"})));
        }
    }
    for (c, ids) in servers.iter_mut().zip(&ids) {
        for &id in ids {
            let r = c.response(id, MIN);
            assert!(r.get("error").is_none(), "{r}");
        }
        index_done(c, ws.path());
    }
    let r = servers[0].call("workspace/executeCommand", json!({"command": "nib.stats"}));
    assert_eq!(r["result"]["shown"], (2 * N) as u64, "{r}");
    for c in &mut servers {
        c.call("shutdown", json!(null));
        c.notify("exit", json!(null));
        assert_eq!(c.wait_exit(Duration::from_secs(10)), Some(0));
    }
    let saved: Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(saved["shown"], (2 * N) as u64, "{saved}");
    // The cache both wrote is whole: a third reader takes every file from it.
    let v = nib_json(
        Command::new(NIB)
            .args(["index", &root, "--json"])
            .env("XDG_CACHE_HOME", &cache),
    );
    assert_eq!(v["from_cache"], 200, "{v}");
    let leftovers: Vec<_> = walkdir(home.path())
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".tmp")
                || name
                    .rsplit('.')
                    .next()
                    .is_some_and(|x| x.starts_with("tmp"))
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A client that sends `initialized` (and more) right behind `initialize`, before its answer,
/// is served all the same: tower-lsp-server's "not ready" during `initialize` once left such a
/// message waiting for the next one to arrive.
#[test]
fn messages_right_behind_initialize_are_handled() {
    let ws = tempfile::tempdir().unwrap();
    write(ws.path(), "src/lib.rs", "pub fn one() -> u32 {\n    1\n}\n");
    let mut c = LspClient::spawn(
        Path::new(NIB),
        &[],
        &[("NIB_MODEL", "/nonexistent/nib-test.gguf")],
    );
    let root = format!("file://{}", ws.path().display());
    c.send(&json!({"jsonrpc": "2.0", "id": 1000, "method": "initialize", "params": {"processId": null, "rootUri": root, "capabilities": {}}}));
    c.notify("initialized", json!({}));
    let id = c.request(
        "workspace/executeCommand",
        json!({"command": "nib.counters"}),
    );
    c.response(1000, MIN);
    index_done(&mut c, ws.path());
    c.status("error", MIN);
    let r = c.response(id, MIN);
    assert!(r["error"].is_null(), "{r}");
}
