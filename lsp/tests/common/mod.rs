//! Shared by the integration tests of nib-lsp.
#![allow(dead_code)]

use std::path::PathBuf;

/// Strings that the privacy tests (`trust.rs`, `remote.rs`) put only in files that must stay
/// out of prompts: a `.env`, an `id_rsa`, a `credentials.json`, a `*.pem`, an ignored file and a
/// file of a switched-off language, in that order.
pub const MARKERS: [&str; 6] = [
    "MARKER_ENV_1234",
    "MARKER_RSA_5678",
    "MARKER_CRED_9012",
    "MARKER_PEM_3456",
    "MARKER_IGNORED_7890",
    "MARKER_PY_2468",
];

/// The real default model: `$NIB_MODEL`, else the path `nib model pull` writes. A missing model is
/// a test failure that says how to get it, never a silent skip.
pub fn real_model() -> PathBuf {
    nib_model::fetch::model_from_env().unwrap_or_else(|e| {
        panic!(
            "{e}\nThese tests run the real default model. Fetch it with \
             `cargo run --release -p nib-lsp -- model pull` (or set NIB_MODEL to a GGUF file)."
        )
    })
}

/// Waits for `child` to exit, killing it (and failing) after `limit`.
pub fn wait_child(
    child: &mut std::process::Child,
    limit: std::time::Duration,
    what: &str,
) -> std::process::ExitStatus {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} did not finish in {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The JSON report an editor test's driver wrote to `out` (printed for the log).
pub fn read_report(
    out: &std::path::Path,
    status: std::process::ExitStatus,
    driver: &str,
) -> serde_json::Value {
    let bytes =
        std::fs::read(out).unwrap_or_else(|e| panic!("no report from {driver} ({status}): {e}"));
    let report: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    report
}

/// The editor tests' check of the saved `src/main.rs`: line 5 got a suggestion that calls
/// `word_histogram` (defined only in `src/lib.rs`), and the file parses.
pub fn assert_histogram_accepted(root: &std::path::Path) {
    let saved = std::fs::read_to_string(root.join("src/main.rs")).unwrap();
    let line = saved.lines().nth(4).unwrap().to_string();
    assert!(line.starts_with("    let histogram = "), "{line:?}");
    assert!(
        line.contains("word_histogram("),
        "the suggestion ignored lib.rs: {line:?}"
    );
    syn::parse_file(&saved)
        .unwrap_or_else(|e| panic!("the saved file does not parse: {e}\n{saved}"));
}

/// nib's cache directory, where the scripts put the tools the tests drive:
/// `$XDG_CACHE_HOME/nib`, else `~/.cache/nib`.
pub fn nib_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs::home_dir().unwrap_or_default().join(".cache"))
        .join("nib")
}

/// A tool a test drives: `$var` when set, else `default`; missing, it fails with the script that
/// fetches it.
pub fn tool(var: &str, default: PathBuf, what: &str, script: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or(default);
    present(path, what, &format!("run `{script}` (or set {var})"))
}

/// `path`, which must exist; missing, the test fails saying how to get it.
pub fn present(path: PathBuf, what: &str, how: &str) -> PathBuf {
    assert!(path.exists(), "no {what} at {}: {how}", path.display());
    path
}

/// `$var` when set, else `name` in nib's cache directory.
pub fn cache_dir(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| nib_cache().join(name))
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The editor tests' workspace: a crate whose `src/lib.rs` defines `word_histogram` and whose
/// `src/main.rs` has an empty line 5 inside `main`, where the tests type `let histogram = `.
pub fn wordstats_workspace() -> tempfile::TempDir {
    let ws = tempfile::tempdir().unwrap();
    let root = ws.path();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(
        root.join("Cargo.toml"),
        "[package]\nname = \"wordstats\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(root.join("src/lib.rs"), LIB_RS).unwrap();
    std::fs::write(root.join("src/main.rs"), MAIN_RS).unwrap();
    ws
}

const LIB_RS: &str = r#"//! Word statistics for plain text.
use std::collections::HashMap;

/// Counts how often each word occurs in `text`, ignoring case.
pub fn word_histogram(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word.to_lowercase()).or_insert(0) += 1;
    }
    counts
}
"#;

const MAIN_RS: &str = r#"use wordstats::*;

fn main() {
    let text = std::fs::read_to_string("input.txt").expect("input.txt");
    
    println!("{} distinct words", histogram.len());
}
"#;
